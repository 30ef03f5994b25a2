#!/usr/bin/env bash
# Two herald binaries, before and after a change, alternating on fresh servers with the same
# herald-bench client: the 15,000-stream fan-out and the targeted case (or the cases given as
# arguments). Writes the table between the BLOCK markers of BENCHMARKS.md (bench-ab by
# default). Loopback only; every server is started here and killed by its PID.
#   bench/scripts/ab.sh BEFORE_BINARY AFTER_BINARY [CASE...]    # RUNS=3, BLOCK=bench-ab
set -uo pipefail
BEFORE=$(realpath "${1:?usage: ab.sh BEFORE_BINARY AFTER_BINARY [CASE...]}")
AFTER=$(realpath "${2:?usage: ab.sh BEFORE_BINARY AFTER_BINARY [CASE...]}")
shift 2
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
WORK=${TMPDIR:-/tmp}/herald-ab
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(
  "fanout --streams 15000 --events 20 --rate 2"
  "targeted --users 5000 --publishes 20000 --concurrency 32"
)
one() { # LABEL BINARY CASE
  HERALD=$2
  start_server herald
  local base=http://127.0.0.1:$SERVER_PORT
  # shellcheck disable=SC2086
  record "$1" "$3" $3 --server-pid "$SERVER_PID" --sub-url "$base/events/{user}" \
    --pub-url "$base/api/notifications/{user}" --broadcast-url "$base/api/broadcast"
  stop_server
}
for case in "${CASES[@]}"; do
  for _ in $(seq "$RUNS"); do
    one before "$BEFORE" "$case"
    one after "$AFTER" "$case"
  done
done

python3 bench/scripts/summarize.py ab "$RESULTS" "$RUNS" "$(machine)" \
  "before $("$BEFORE" --version), after $("$AFTER" --version) at $(git rev-parse --short HEAD)" \
  "${CASES[@]}" >"$WORK/table.md"
write_block "${BLOCK:-bench-ab}" "$WORK/table.md"
cat "$WORK/table.md"
