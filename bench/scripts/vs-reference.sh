#!/usr/bin/env bash
# Runs every `herald-bench` case against herald, against nginx + Nchan (the fastest peer:
# bench/nchan/nginx.conf, installed from Debian's packages when missing) and against the
# original design (../shared/reference/seed-node, `node dist/server.js`) in one go on this
# machine, alternating, fanout also against the ideal server of `herald-bench floor` (twice:
# with the least frame a stream can carry, and with a frame of herald's size and shape, the
# floor under a server that must send herald's announcement) and targeted against the
# durable one of `herald-bench targeted-floor`, and
# writes the table of medians and spreads into
# BENCHMARKS.md between the bench-vs-reference markers, with the machine, versions and exact
# commands. Loopback only; every server is started here and killed by its PID.
#   bench/scripts/vs-reference.sh            # RUNS=1 by default; RUNS=5 for medians;
#                                            # ONLY=fanout (say) runs one kind of case;
#                                            # SERVER_CPUS=0 CLIENT_CPUS=1 pins (lib.sh);
#                                            # KINDS="herald nchan" runs only those servers;
#                                            # CASE="fanout ..." runs only that case
#                                            # KINDS="herald floor floor-herald" (say):
#                                            # herald beside both fanout floors
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-1}
ONLY=${ONLY:-}   # a case's first word (hold, fanout, ...) to run only those
ALL_KINDS="herald nchan reference floor floor-herald"
KINDS=${KINDS:-$ALL_KINDS}
WORK=${TMPDIR:-/tmp}/herald-vs-reference
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
[[ " $KINDS " == *" reference "* ]] && build_reference
install_nchan

CASES=(
  "hold --streams 15000 --connect-concurrency 100"
  "hold --streams 19000"
  "fanout --streams 15000 --events 20 --rate 2"
  "fanout --streams 15000 --events 50 --rate 10"
  # Four in flight: an answer the bench reads late does not hold the next broadcasts back
  # (BENCHMARKS.md, "Issue 16, ninth step").
  "fanout --streams 15000 --events 50 --rate 10 --concurrency 4"
  "targeted --users 5000 --publishes 20000 --concurrency 32"
  "targeted --users 5000 --publishes 20000 --concurrency 32 --rate 5000"
  "replay --streams 10000 --events 10"
)
# CASE="fanout --streams 15000 --events 50 --rate 10" (say) runs that one case instead.
[ -n "${CASE:-}" ] && CASES=("$CASE")
RAN=()
for case in "${CASES[@]}"; do
  [ -n "$ONLY" ] && [ "${case%% *}" != "$ONLY" ] && continue
  RAN+=("$case")
  for _ in $(seq "$RUNS"); do
    for kind in $KINDS; do
      case $kind in
        floor) run_floor "$case" ;;
        floor-herald) run_floor "$case" herald ;;
        *) run_case "$kind" "$case" ;;
      esac
    done
  done
done

python3 bench/scripts/summarize.py vs-reference "$RESULTS" "$RUNS" "$(machine)" \
  "$("$HERALD" --version); $(nginx -v 2>&1 | cut -d' ' -f3) with Nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null); node $(node --version); $(git rev-parse --short HEAD)${SERVER_CPUS:+; servers on CPU $SERVER_CPUS}${CLIENT_CPUS:+, the bench on CPU $CLIENT_CPUS}" \
  "${RAN[@]}" >"$WORK/table.md"
# Only a run of every case on every server replaces the table in BENCHMARKS.md.
[ -z "$ONLY" ] && [ -z "${CASE:-}" ] && [ "$KINDS" = "$ALL_KINDS" ] && write_block bench-vs-reference "$WORK/table.md"
cat "$WORK/table.md"
