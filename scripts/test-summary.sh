#!/bin/sh
# Prints XCTest's totals as one plain closing line ("N passed, N failed, N skipped") and fails
# when any test failed or none ran. `make test` runs it after `swift test`.
set -eu
log=$1
line=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with .*[0-9]+ failures?" "$log" | tail -1)
[ -n "$line" ] || { echo "tests: no XCTest summary in $log" >&2; exit 1; }
executed=$(echo "$line" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failures=$(echo "$line" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
skipped=$(echo "$line" | sed -nE 's/.*with ([0-9]+) tests? skipped.*/\1/p')
skipped=${skipped:-0}
passed=$((executed - failures - skipped))
echo "tests: $passed passed, $failures failed, $skipped skipped"
[ "$failures" -eq 0 ] && [ "$executed" -gt 0 ]
