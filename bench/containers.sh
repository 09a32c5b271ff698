#!/bin/sh
# Sparse VDI benchmark: ferry reading the disk inside a VDI (locally and over loopback ssh) next
# to the seed's shell pipeline fed by nbdcopy from qemu-nbd, and nbdcopy alone. Interleaved
# rounds, medians, a CSV of every run. Also: bytes ferry read against the VDI's allocated data,
# peak RSS, and the cost of hashing the unallocated zeros (ferry copying an empty VDI of the same
# virtual size). BENCH_CSV=PATH keeps the CSV.
# Usage: bench/containers.sh BIN [VIRTUAL_GIB] [ALLOCATED_MIB] [ROUNDS]
set -eu
BIN=$1
VIRT_GIB=${2:-16}
ALLOC_MIB=${3:-1536}
ROUNDS=${4:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /var/tmp/ferry-bench-vdi.XXXXXX)
trap 'sh "$HERE/../scripts/sshd-loopback.sh" stop "$WORK/ssh" 2>/dev/null; rm -rf "$WORK"' EXIT
export FERRY_LEDGER="$WORK/local.db"
VDI="$WORK/vm.vdi"
csv="$WORK/runs.csv"
echo "round,name,bytes,seconds,peak_rss_kib,far_peak_rss_kib" >"$csv"
. "$HERE/lib.sh"

echo "making a ${VIRT_GIB} GiB VDI with ${ALLOC_MIB} MiB of data in 8 MiB runs ..." >&2
qemu-img create -q -f vdi "$VDI" "${VIRT_GIB}G"
# Spread the data over the disk: 8 MiB runs of random bytes at evenly spaced offsets, written
# by one qemu-io.
head -c $((8 << 20)) /dev/urandom >"$WORK/run.raw"
runs=$((ALLOC_MIB / 8)); stride=$(( (VIRT_GIB * 1024) / runs ))
python3 - "$runs" "$stride" "$WORK/run.raw" "$VDI" >"$WORK/writes" <<'PY'
import sys
runs, stride, data, vdi = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
args = ["-f", "vdi"]
for i in range(runs):
    args += ["-c", f"write -s {data} {i * stride}M 8M"]
print("\0".join(args + [vdi]), end="")
PY
xargs -0 qemu-io <"$WORK/writes" >/dev/null
ALLOCATED=$(qemu-img map --output=json -f vdi "$VDI" | python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')
VIRTUAL=$((VIRT_GIB << 30))
# The same virtual size with nothing allocated: what hashing the unallocated zeros costs ferry.
EMPTY="$WORK/empty.vdi"
qemu-img create -q -f vdi "$EMPTY" "${VIRT_GIB}G"
echo "virtual $VIRTUAL bytes, allocated $ALLOCATED bytes" >&2

sh "$HERE/../scripts/sshd-loopback.sh" start "$WORK/ssh" >/dev/null
RSH=$(cat "$WORK/ssh/rsh")
H=root@127.0.0.1
SOCK="$WORK/nbd.sock"
FARBIN=$(far_ferry "$BIN")
FAR="-e '$RSH' --remote-ferry '$FARBIN' --remote-ledger '$WORK/far.db'"

round=1
while [ $round -le $ROUNDS ]; do
  echo "round $round of $ROUNDS ..." >&2
  measure seed-pipeline-nbdcopy-ssh "$VIRTUAL" "nbdcopy -- [ qemu-nbd -r -f vdi '$VDI' ] - | tee >(sha256sum >'$WORK/a.sha') | $RSH $H \"tee >(sha256sum >'$WORK/b.sha') | dd of='$WORK/seed.raw' bs=1M status=none\""
  rm -f "$WORK/seed.raw"
  measure nbdcopy-to-file "$VIRTUAL" "nbdcopy -- [ qemu-nbd -r -f vdi '$VDI' ] '$WORK/nbdcopy.raw'"
  rm -f "$WORK/nbdcopy.raw"
  measure ferry-copy-vdi-local "$VIRTUAL" "'$BIN' copy --progress none --json '$VDI' '$WORK/local.raw' > '$WORK/local.json'"
  rm -f "$WORK/local.raw"
  measure ferry-copy-vdi-ssh "$VIRTUAL" "'$BIN' copy --progress none --json $FAR '$VDI' $H:'$WORK/far.raw' > '$WORK/ssh.json'"
  rm -f "$WORK/far.raw"
  # Into a qcow2 (a Proxmox directory storage): next to qemu-img convert, which hashes nothing.
  measure qemu-img-convert-vdi-to-qcow2 "$VIRTUAL" "qemu-img convert -f vdi -O qcow2 '$VDI' '$WORK/convert.qcow2'"
  rm -f "$WORK/convert.qcow2"
  measure ferry-copy-vdi-to-qcow2-local "$VIRTUAL" "'$BIN' copy --progress none '$VDI' '$WORK/local.qcow2'"
  rm -f "$WORK/local.qcow2"
  measure ferry-copy-vdi-to-qcow2-ssh "$VIRTUAL" "'$BIN' copy --progress none $FAR '$VDI' $H:'$WORK/far.qcow2'"
  rm -f "$WORK/far.qcow2"
  measure ferry-verify-vdi "$VIRTUAL" "'$BIN' verify --progress none '$VDI'"
  measure ferry-copy-empty-vdi "$VIRTUAL" "'$BIN' copy --progress none '$EMPTY' '$WORK/empty.raw'"
  rm -f "$WORK/empty.raw"
  round=$((round + 1))
done

READ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"]["bytesRead"])' "$WORK/ssh.json")
python3 - "$csv" "$READ" "$ALLOCATED" "$VIRTUAL" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
read, allocated, virtual = map(int, sys.argv[2:5])
names = list(dict.fromkeys(r["name"] for r in rows))
med = {n: statistics.median(float(r["seconds"]) for r in rows if r["name"] == n) for n in names}
rss = {n: max(int(r["peak_rss_kib"]) for r in rows if r["name"] == n) for n in names}
far = {n: max((int(r["far_peak_rss_kib"]) for r in rows if r["name"] == n and r.get("far_peak_rss_kib")), default=0) for n in names}
seed = med["seed-pipeline-nbdcopy-ssh"]
print(f"virtual size {virtual / 2**30:.2f} GiB, allocated {allocated / 2**20:.1f} MiB, rounds {len(rows) // len(names)}")
print(f"{'row':32} {'median s':>9} {'min-max s':>13} {'x seed':>7} {'peak RSS':>10} {'far RSS':>10}")
for n in names:
    lo, hi = min(float(r["seconds"]) for r in rows if r["name"] == n), max(float(r["seconds"]) for r in rows if r["name"] == n)
    farcol = f"{far[n] / 1024:6.1f} MiB" if far[n] else "         -"
    print(f"{n:32} {med[n]:9.2f} {lo:6.2f}-{hi:<6.2f} {med[n] / seed:7.3f} {rss[n] / 1024:6.1f} MiB {farcol}")
print(f"ferry read {read} bytes from the VDI for {allocated} allocated: {read / allocated:.3f}x")
print(f"hashing the unallocated zeros: {med['ferry-copy-empty-vdi'] / (virtual / 2**30):.2f} s per GiB of virtual size (ferry copy of an empty VDI of that size, one end)")
PY
echo "every run: $(cat "$csv" | wc -l) lines" >&2
cp "$csv" "${BENCH_CSV:-/dev/null}" 2>/dev/null || true
