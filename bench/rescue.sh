#!/bin/sh
# How a rescue copy (--on-read-error=record) fares on a source with a bad stretch: the time it
# takes, the reads that failed, and how the recorded ranges compare with the truly bad bytes.
# The source is a FUSE disk (Tests/Fixtures/badsectors.py) that fails reads of one stretch with
# EIO at once; a real failing disk spends seconds on each failed read, so the count of failed
# reads is the figure that carries over. Needs root (FUSE), /usr/bin/python3 with fusepy.
#   sh bench/rescue.sh /path/to/ferry [image MiB]
set -eu
FERRY=${1:?usage: rescue.sh FERRY [MiB]}
MIB=${2:-256}
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /var/tmp/ferry-rescue-bench.XXXXXX)
cleanup() { umount "$W/mnt" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir "$W/mnt"
head -c $((MIB << 20)) /dev/urandom > "$W/img.raw"
echo > "$W/img.raw.bad"
/usr/bin/python3 "$HERE/Tests/Fixtures/badsectors.py" "$W/img.raw" "$W/mnt" &
for i in $(seq 100); do [ -e "$W/mnt/disk.raw" ] && break; sleep 0.05; done

run() {  # label start end
    printf '%s:%s' "$2" "$3" > "$W/img.raw.bad"
    rm -f "$W/img.raw.failed-reads" "$W/out.raw" "$W/l.db"
    t0=$(date +%s.%N)
    "$FERRY" copy --on-read-error=record --json --progress none --ledger "$W/l.db" "$W/mnt/disk.raw" "$W/out.raw" > "$W/out.json" || true
    t1=$(date +%s.%N)
    failed=0
    [ -e "$W/img.raw.failed-reads" ] && failed=$(wc -l < "$W/img.raw.failed-reads")
    ranges=$(python3 -c "import json,sys; d=json.load(open('$W/out.json')); print(' '.join('%d+%d' % (r['offset'], r['length']) for r in d['source'].get('unreadableRanges', [])))")
    printf '%-28s %8.2f s  failed reads %5s  truly bad %d+%d  recorded %s\n' "$1" "$(echo "$t1 - $t0" | bc)" "$failed" "$2" "$(($3 - $2))" "$ranges"
}
echo "ferry $("$FERRY" --version 2>/dev/null | tr '\n' ' '), $MIB MiB source on a FUSE disk, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
run "no bad bytes"          0 0
M=1048576
run "100 bytes"             $((100 * M + 5000)) $((100 * M + 5100))
run "1 MiB (unaligned)"     $((100 * M + 12345)) $((101 * M + 12345))
run "64 MiB (unaligned)"    $((100 * M + 12345)) $((164 * M + 12345))
