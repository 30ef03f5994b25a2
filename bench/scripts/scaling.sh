#!/usr/bin/env bash
# How herald's costs grow: the time until every stream has a broadcast as
# the number of streams doubles (herald and the ideal server of `herald-bench floor`), and
# publish throughput as idle streams grow from 1,000 to 15,000. Writes the table into
# BENCHMARKS.md between the bench-scaling markers. Loopback only; servers killed by PID.
#   bench/scripts/scaling.sh                 # RUNS=1 by default; RUNS=3 for medians
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-1}
WORK=${TMPDIR:-/tmp}/herald-scaling
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries

CASES=(
  "fanout --streams 3750 --events 20 --rate 2"
  "fanout --streams 7500 --events 20 --rate 2"
  "fanout --streams 15000 --events 20 --rate 2"
  "targeted --users 1000 --idle-streams 1000 --publishes 20000 --concurrency 32"
  "targeted --users 1000 --idle-streams 5000 --publishes 20000 --concurrency 32"
  "targeted --users 1000 --idle-streams 15000 --publishes 20000 --concurrency 32"
)
for case in "${CASES[@]}"; do
  for _ in $(seq "$RUNS"); do
    run_case herald "$case"
    [ "${case%% *}" = fanout ] && run_floor "$case"
  done
done

python3 bench/scripts/summarize.py scaling "$RESULTS" "$RUNS" "$(machine)" \
  "$("$HERALD" --version); $(git rev-parse --short HEAD)" "${CASES[@]}" >"$WORK/table.md"
write_block bench-scaling "$WORK/table.md"
cat "$WORK/table.md"
