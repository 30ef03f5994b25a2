#!/usr/bin/env bash
# Runs every `herald-bench` case against herald, against nginx + Nchan (the fastest peer:
# bench/nchan/nginx.conf, installed from Debian's packages when missing) and against the
# original design (../shared/reference/seed-node, `node dist/server.js`) in one go on this
# machine, alternating, fanout also against the ideal server of `herald-bench floor`, and
# writes the table of medians and spreads into
# BENCHMARKS.md between the bench-vs-reference markers, with the machine, versions and exact
# commands. Loopback only; every server is started here and killed by its PID.
#   bench/scripts/vs-reference.sh            # RUNS=1 by default; RUNS=5 for medians;
#                                            # ONLY=fanout (say) runs one kind of case;
#                                            # SERVER_CPUS=0 CLIENT_CPUS=1 pins (lib.sh)
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-1}
ONLY=${ONLY:-}   # a case's first word (hold, fanout, ...) to run only those
WORK=${TMPDIR:-/tmp}/herald-vs-reference
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
build_reference
install_nchan

CASES=(
  "hold --streams 15000 --connect-concurrency 100"
  "hold --streams 19000"
  "fanout --streams 15000 --events 20 --rate 2"
  "targeted --users 5000 --publishes 20000 --concurrency 32"
  "targeted --users 5000 --publishes 20000 --concurrency 32 --rate 5000"
  "replay --streams 10000 --events 10"
)
RAN=()
for case in "${CASES[@]}"; do
  [ -n "$ONLY" ] && [ "${case%% *}" != "$ONLY" ] && continue
  RAN+=("$case")
  for _ in $(seq "$RUNS"); do
    run_case herald "$case"
    run_case nchan "$case"
    run_case reference "$case"
    [ "${case%% *}" = fanout ] && run_floor "$case"
  done
done

python3 bench/scripts/summarize.py vs-reference "$RESULTS" "$RUNS" "$(machine)" \
  "$("$HERALD" --version); $(nginx -v 2>&1 | cut -d' ' -f3) with Nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null); node $(node --version); $(git rev-parse --short HEAD)${SERVER_CPUS:+; servers on CPU $SERVER_CPUS}${CLIENT_CPUS:+, the bench on CPU $CLIENT_CPUS}" \
  "${RAN[@]}" >"$WORK/table.md"
# Only a run of every case replaces the table in BENCHMARKS.md.
[ -z "$ONLY" ] && write_block bench-vs-reference "$WORK/table.md"
cat "$WORK/table.md"
