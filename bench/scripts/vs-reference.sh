#!/usr/bin/env bash
# Runs every `herald-bench` case against herald and against the original design
# (../shared/reference/seed-node, `node dist/server.js`) in one go on this machine, fanout also
# against the ideal server of `herald-bench floor`, and writes the table of medians into
# BENCHMARKS.md between the bench-vs-reference markers, with the machine, versions and exact
# commands. Loopback only; every server is started here and killed by its PID.
#   bench/scripts/vs-reference.sh            # RUNS=1 by default; RUNS=3 for medians
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-1}
WORK=${TMPDIR:-/tmp}/herald-vs-reference
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
build_reference

CASES=(
  "hold --streams 15000 --connect-concurrency 100"
  "hold --streams 19000"
  "fanout --streams 15000 --events 20 --rate 2"
  "targeted --users 5000 --publishes 20000 --concurrency 32"
  "targeted --users 5000 --publishes 20000 --concurrency 32 --rate 5000"
  "replay --streams 10000 --events 10"
)
for case in "${CASES[@]}"; do
  for _ in $(seq "$RUNS"); do
    run_case herald "$case"
    run_case reference "$case"
    [ "${case%% *}" = fanout ] && run_floor "$case"
  done
done

python3 bench/scripts/summarize.py vs-reference "$RESULTS" "$RUNS" "$(machine)" \
  "$("$HERALD" --version); node $(node --version); $(git rev-parse --short HEAD)" \
  "${CASES[@]}" >"$WORK/table.md"
write_block bench-vs-reference "$WORK/table.md"
cat "$WORK/table.md"
