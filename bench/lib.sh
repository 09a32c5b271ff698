# Shared by the benchmarks (sourced): WORK and csv set by the caller, `round` the current round.
#   drop                      sync and drop the page cache (root), so every command reads the medium
#   far_ferry BIN             write $WORK/far-ferry, which runs BIN under /usr/bin/time: pass it as
#                             --remote-ferry and `measure` records the far ferry's peak RSS too
#   measure NAME BYTES CMD    run CMD under bash once; append
#                             round,name,bytes,seconds,peak_rss_kib,far_peak_rss_kib to $csv
drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
far_ferry() {
  case $1 in /*) set -- "$1" ;; *) set -- "$(pwd)/$1" ;; esac
  printf '#!/bin/sh\nexec /usr/bin/time -f %%M -a -o "%s/far-rss" "%s" "$@"\n' "$WORK" "$1" >"$WORK/far-ferry"
  chmod +x "$WORK/far-ferry"
  echo "$WORK/far-ferry"
}
measure() {
  name=$1; bytes=$2; shift 2
  drop
  rm -f "$WORK/far-rss"
  /usr/bin/time -f "%e %M" -o "$WORK/time" bash -c "$*" >"$WORK/last.out" 2>"$WORK/last.err" \
    || { echo "FAILED: $name" >&2; cat "$WORK/last.err" >&2; exit 1; }
  far=$(sort -n "$WORK/far-rss" 2>/dev/null | tail -1)
  set -- $(tail -1 "$WORK/time")
  echo "$round,$name,$bytes,$1,$2,${far:-}" >>"$csv"
}
