#!/bin/sh
# ferry's benchmark: a deterministic mixed image (random, zero and text-like regions) and an
# all-random one, measured side by side with sha256sum, openssl, cp, dd, the seed's shell pipeline
# over loopback ssh (with sha256sum and with openssl), the same without hashes, and rsync's
# repair. Rounds are interleaved (every row once per round) and the table gives medians, so a
# burst of noise moves one sample, not the result; ratios come from the same run. Peak RSS is the
# largest any round saw, of the local process and (ssh rows) of the far ferry. Every sample goes
# to a CSV.
# Usage: bench/run.sh BIN [SIZE_MIB] [ROUNDS]      BENCH_CSV=PATH keeps the CSV.
set -eu
BIN=$1
SIZE_MIB=${2:-2048}
ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /var/tmp/ferry-bench.XXXXXX)
trap 'sh "$HERE/../scripts/sshd-loopback.sh" stop "$WORK/ssh" 2>/dev/null; rm -rf "$WORK"' EXIT
export FERRY_LEDGER="$WORK/local.db"
SRC="$WORK/src.raw"
RND="$WORK/random.raw"
csv="$WORK/runs.csv"
echo "round,name,bytes,seconds,peak_rss_kib,far_peak_rss_kib" >"$csv"

. "$HERE/lib.sh"

echo "generating a ${SIZE_MIB} MiB mixed image and a ${SIZE_MIB} MiB random one (seeded) ..." >&2
python3 - "$SRC" "$RND" "$SIZE_MIB" <<'PY'
import sys, random
path, rpath, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
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
with open(rpath, "wb") as f:
    for i in range(mib // 8):
        f.write(rnd.randbytes(8 << 20))
PY
BYTES=$(stat -c %s "$SRC")

SSH=no
if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then
  sh "$HERE/../scripts/sshd-loopback.sh" start "$WORK/ssh" >/dev/null
  RSH=$(cat "$WORK/ssh/rsh")
  H=root@127.0.0.1
  SSH=yes
  FARBIN=$(far_ferry "$BIN")
  FAR="-e '$RSH' --remote-ferry '$FARBIN' --remote-ledger '$WORK/far.db'"
else
  echo "sshd not installed: skipping the ssh measurements" >&2
fi

round=1
while [ $round -le "$ROUNDS" ]; do
  echo "round $round of $ROUNDS ..." >&2
  measure "sha256sum" "$BYTES" "sha256sum '$SRC'"
  measure "openssl-dgst" "$BYTES" "openssl dgst -sha256 '$SRC'"
  measure "cp+sync" "$BYTES" "cp '$SRC' '$WORK/cp.raw' && sync"
  rm -f "$WORK/cp.raw"
  measure "dd-iflag-direct" "$BYTES" "dd if='$SRC' of='$WORK/dd.raw' bs=1M iflag=direct oflag=direct status=none"
  rm -f "$WORK/dd.raw"
  measure "ferry-copy-local" "$BYTES" "'$BIN' copy --progress none '$SRC' '$WORK/dst.raw'"
  measure "ferry-verify" "$BYTES" "'$BIN' verify --progress none '$WORK/dst.raw'"
  rm -f "$WORK/dst.raw"
  if [ $SSH = yes ]; then
    measure "seed-pipeline-ssh" "$BYTES" "pv -q '$SRC' | tee >(sha256sum >'$WORK/a.sha') | $RSH $H \"tee >(sha256sum >'$WORK/b.sha') | dd of='$WORK/seed.raw' bs=1M status=none\""
    rm -f "$WORK/seed.raw"
    measure "seed-pipeline-ssh-openssl" "$BYTES" "pv -q '$SRC' | tee >(openssl dgst -sha256 >'$WORK/a.sha') | $RSH $H \"tee >(openssl dgst -sha256 >'$WORK/b.sha') | dd of='$WORK/seed.raw' bs=1M status=none\""
    rm -f "$WORK/seed.raw"
    measure "cat-ssh-dd-nohash" "$BYTES" "cat '$SRC' | $RSH $H \"dd of='$WORK/seed.raw' bs=1M status=none\""
    rm -f "$WORK/seed.raw"
    rm -f "$WORK/far.raw"
    measure "ferry-copy-ssh" "$BYTES" "'$BIN' copy --progress none $FAR '$SRC' $H:'$WORK/far.raw'"
    measure "ferry-copy-ssh-aes-gcm" "$BYTES" "'$BIN' copy --progress none -e '$RSH -c aes128-gcm@openssh.com' --remote-ferry '$FARBIN' --remote-ledger '$WORK/far.db' '$SRC' $H:'$WORK/far2.raw'"
    rm -f "$WORK/far2.raw"
    measure "seed-pipeline-ssh-random" "$BYTES" "pv -q '$RND' | tee >(sha256sum >'$WORK/a.sha') | $RSH $H \"tee >(sha256sum >'$WORK/b.sha') | dd of='$WORK/seed.raw' bs=1M status=none\""
    rm -f "$WORK/seed.raw"
    measure "ferry-copy-ssh-random" "$BYTES" "'$BIN' copy --progress none $FAR '$RND' $H:'$WORK/far-random.raw'"
    rm -f "$WORK/far-random.raw"
    # Repair: three small damaged spots, then verify + resend vs rsync over the same ssh.
    cp "$WORK/far.raw" "$WORK/rsync.raw"
    for off in 104857600 1073741824 1900000000; do
      [ "$off" -lt "$BYTES" ] || continue
      printf 'XYZ' | dd of="$WORK/far.raw" bs=1 seek=$off conv=notrunc status=none
      printf 'XYZ' | dd of="$WORK/rsync.raw" bs=1 seek=$off conv=notrunc status=none
    done
    measure "ferry-verify+resend-ssh" "$BYTES" "'$BIN' verify --progress none $FAR $H:'$WORK/far.raw'; '$BIN' resend --json --progress none $FAR '$SRC' $H:'$WORK/far.raw' >'$WORK/resend.json'"
    sent=$(python3 -c "import json; print(json.load(open('$WORK/resend.json'))['bytesSent'])")
    measure "rsync-inplace-ssh" "$BYTES" "rsync --inplace --no-whole-file --stats -e '$RSH' '$SRC' $H:'$WORK/rsync.raw' >'$WORK/rsync.stats'"
    rsent=$(awk '/Total bytes sent/ {gsub(",","",$4); print $4}' "$WORK/rsync.stats")
    cmp -s "$SRC" "$WORK/far.raw" || { echo "resend did not restore the image" >&2; exit 1; }
    rm -f "$WORK/rsync.raw"
  fi
  round=$((round + 1))
done

echo "# ferry bench: ${SIZE_MIB} MiB mixed image (1/2 random, 1/4 zeros, 1/4 text) and a random one, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# medians of $ROUNDS interleaved rounds; load after: $(cut -d' ' -f1-3 /proc/loadavg); page cache dropped before each command (root)"
python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
names = list(dict.fromkeys(r["name"] for r in rows))
med = {n: statistics.median(float(r["seconds"]) for r in rows if r["name"] == n) for n in names}
spread = {n: (min(float(r["seconds"]) for r in rows if r["name"] == n), max(float(r["seconds"]) for r in rows if r["name"] == n)) for n in names}
rss = {n: max(int(r["peak_rss_kib"]) for r in rows if r["name"] == n) for n in names}
far = {n: max((int(r["far_peak_rss_kib"]) for r in rows if r["name"] == n and r.get("far_peak_rss_kib")), default=0) for n in names}
size = {n: int(next(r["bytes"] for r in rows if r["name"] == n)) for n in names}
base = med["sha256sum"]
seed = med.get("seed-pipeline-ssh")
print(f"{'command':28} {'median s':>9} {'min-max s':>13} {'MB/s':>7} {'x sha256sum':>11} {'x seed':>7} {'peak RSS':>10} {'far RSS':>10}")
for n in names:
    lo, hi = spread[n]
    ratio = f"{med[n] / seed:7.3f}" if seed else "      -"
    farcol = f"{far[n] / 1024:7.1f} MiB" if far[n] else "         -"
    print(f"{n:28} {med[n]:9.2f} {lo:6.2f}-{hi:<6.2f} {size[n] / med[n] / 1e6:7.0f} {base / med[n]:11.2f} {ratio} {rss[n] / 1024:7.1f} MiB {farcol}")
PY
[ -n "${sent:-}" ] && echo "# bytes on the wire for the repair: ferry resend $sent, rsync --inplace --no-whole-file ${rsent:-?} (rsync also read the whole image on both ends)"
[ -n "${BENCH_CSV:-}" ] && cp "$csv" "$BENCH_CSV"
exit 0
