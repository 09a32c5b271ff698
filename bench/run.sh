#!/bin/sh
# ferry's benchmark: a deterministic mixed image (random, zero and text-like regions), measured
# side by side with sha256sum, cp, the seed's shell pipeline over loopback ssh, and rsync.
# Ratios are computed within one run. Usage: bench/run.sh BIN [SIZE_MIB]
set -eu
BIN=$1
SIZE_MIB=${2:-2048}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /var/tmp/ferry-bench.XXXXXX)
trap 'sh "$HERE/../scripts/sshd-loopback.sh" stop "$WORK/ssh"; rm -rf "$WORK"' EXIT
export FERRY_LEDGER="$WORK/local.db"
SRC="$WORK/src.raw"

drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
results="$WORK/results"
: >"$results"
measure() {  # NAME BYTES CMD...
  name=$1; bytes=$2; shift 2
  drop
  t0=$(now); bash -c "$*" >"$WORK/last.out" 2>"$WORK/last.err" || { echo "FAILED: $name" >&2; cat "$WORK/last.err" >&2; exit 1; }; t1=$(now)
  echo "$name $bytes $(echo "$t1 - $t0" | bc -l)" >>"$results"
}

echo "generating a ${SIZE_MIB} MiB mixed image (seeded) ..." >&2
python3 - "$SRC" "$SIZE_MIB" <<'PY'
import sys, random, hashlib
path, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(20261130)
text = b"".join(b"%08d the quick brown fox jumps over the lazy dog; ferry bench line\n" % i for i in range(16384))
with open(path, "wb") as f:
    for i in range(mib // 8):
        kind = i % 4
        if kind in (0, 1):
            f.write(rnd.randbytes(8 << 20))      # random: incompressible
        elif kind == 2:
            f.write(bytes(8 << 20))               # zeros: holes
        else:
            f.write((text * (8 * 1048576 // len(text) + 1))[: 8 << 20])  # text-like
PY
BYTES=$(stat -c %s "$SRC")

measure "sha256sum" "$BYTES" "sha256sum '$SRC'"
measure "cp+sync" "$BYTES" "cp '$SRC' '$WORK/cp.raw' && sync"
rm -f "$WORK/cp.raw"
measure "ferry-copy-local" "$BYTES" "'$BIN' copy --progress none '$SRC' '$WORK/dst.raw'"
measure "ferry-verify" "$BYTES" "'$BIN' verify --progress none '$WORK/dst.raw'"
rm -f "$WORK/dst.raw"

if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then
  sh "$HERE/../scripts/sshd-loopback.sh" start "$WORK/ssh" >/dev/null
  RSH=$(cat "$WORK/ssh/rsh")
  H=root@127.0.0.1
  measure "seed-pipeline-ssh" "$BYTES" "pv -q '$SRC' | tee >(sha256sum >'$WORK/a.sha') | $RSH $H \"tee >(sha256sum >'$WORK/b.sha') | dd of='$WORK/seed.raw' bs=1M status=none\""
  rm -f "$WORK/seed.raw"
  measure "ferry-copy-ssh" "$BYTES" "'$BIN' copy --progress none -e '$RSH' --remote-ferry '$BIN' --remote-ledger '$WORK/far.db' '$SRC' $H:'$WORK/far.raw'"
  measure "ferry-copy-ssh-aes-gcm" "$BYTES" "'$BIN' copy --progress none -e '$RSH -c aes128-gcm@openssh.com' --remote-ferry '$BIN' --remote-ledger '$WORK/far.db' '$SRC' $H:'$WORK/far2.raw'"
  rm -f "$WORK/far2.raw"
  # Repair: three small damaged spots, then verify + resend vs rsync over the same ssh.
  cp "$WORK/far.raw" "$WORK/rsync.raw"
  for off in 104857600 1073741824 1900000000; do
    [ "$off" -lt "$BYTES" ] || continue
    printf 'XYZ' | dd of="$WORK/far.raw" bs=1 seek=$off conv=notrunc status=none
    printf 'XYZ' | dd of="$WORK/rsync.raw" bs=1 seek=$off conv=notrunc status=none
  done
  measure "ferry-verify+resend-ssh" "$BYTES" "'$BIN' verify --progress none -e '$RSH' --remote-ferry '$BIN' --remote-ledger '$WORK/far.db' $H:'$WORK/far.raw'; '$BIN' resend --json --progress none -e '$RSH' --remote-ferry '$BIN' --remote-ledger '$WORK/far.db' '$SRC' $H:'$WORK/far.raw' >'$WORK/resend.json'"
  sent=$(python3 -c "import json; print(json.load(open('$WORK/resend.json'))['bytesSent'])")
  measure "rsync-inplace-ssh" "$BYTES" "rsync --inplace --no-whole-file --stats -e '$RSH' '$SRC' $H:'$WORK/rsync.raw' >'$WORK/rsync.stats'"
  rsent=$(awk '/Total bytes sent/ {gsub(",","",$4); print $4}' "$WORK/rsync.stats")
  cmp -s "$SRC" "$WORK/far.raw" || { echo "resend did not restore the image" >&2; exit 1; }
else
  echo "sshd not installed: skipping the ssh measurements" >&2
fi

echo "# ferry bench: ${SIZE_MIB} MiB mixed image (1/2 random, 1/4 zeros, 1/4 text), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); page cache dropped before each command (root)"
printf '%-26s %10s %10s %10s\n' "command" "seconds" "MB/s" "x sha256sum"
base=$(awk '$1=="sha256sum" {print $3}' "$results")
while read -r name bytes secs; do
  printf '%-26s %10.2f %10.0f %10.2f\n' "$name" "$secs" "$(echo "$bytes / $secs / 1000000" | bc -l)" "$(echo "$base / $secs" | bc -l)"
done <"$results"
[ -n "${sent:-}" ] && echo "# bytes on the wire for the repair: ferry resend $sent, rsync --inplace --no-whole-file ${rsent:-?} (rsync also read the whole image on both ends)"
exit 0
