#!/usr/bin/env bash
# Where a targeted run's slow deliveries come from. Runs the targeted case against a fresh
# server while `perf` records every context switch on the machine, then bench/scripts/tail.py
# lists the slow deliveries (over SLOW_MS) by whether another task (not the server, not the
# bench, not idle) held a core for 0.5 ms or more while they were under way, the tasks that
# did, and the largest bursts of slow deliveries. BENCHMARKS.md, "Issue 16, fifth step".
# Loopback only; the server is started here and killed by its PID.
#   bench/scripts/tail.sh                 # KIND=herald (or nchan, floor), RUNS=1, SLOW_MS=2
#   CASE="targeted --users 5000 --publishes 20000 --concurrency 32 --rate 5000" is the default
set -uo pipefail
cd "$(dirname "$0")/../.."
KIND=${KIND:-herald}
RUNS=${RUNS:-1}
SLOW_MS=${SLOW_MS:-2}
CASE=${CASE:-targeted --users 5000 --publishes 20000 --concurrency 32 --rate 5000}
WORK=${TMPDIR:-/tmp}/herald-tail
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
command -v perf >/dev/null || scripts/apt-install linux-perf
[ "$KIND" = nchan ] && install_nchan

tids() { # PID...: the threads of each process, one per line (no process started: this runs
  # while the run is measured)
  local pid task
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*; do [ -e "$task" ] && echo "${task##*/}"; done
  done
}

for run in $(seq "$RUNS"); do
  out=$WORK/run$run
  mkdir -p "$out"
  server_pids=()
  if [ "$KIND" != floor ]; then
    start_server "$KIND"
    base=http://127.0.0.1:$SERVER_PORT
    server_pids=("${SERVER_PIDS[@]}")
  fi
  # perf's timestamps are CLOCK_MONOTONIC (-k mono); the timeline's are wall-clock.
  python3 -c 'import time; print(time.time() - time.monotonic())' >"$out/clock-offset"
  perf record -q -k mono -e sched:sched_switch -a -o "$out/sched.data" -- sleep 600 \
    >/dev/null 2>"$out/perf.log" &
  perf_pid=$!
  range=$((range % 250 + 1))
  if [ "$KIND" = floor ]; then
    # shellcheck disable=SC2086
    "$BENCH" targeted-floor ${CASE#targeted } --timeline "$out/timeline" --json \
      --source-addrs 127.$range.0.1-127.$range.0.4 --pub-body '{"title":"t","message":"{ts}"}' \
      >"$out/bench.json" 2>"$out/bench.log" &
  else
    pids=()
    for pid in "${server_pids[@]}"; do pids+=(--server-pid "$pid"); done
    # shellcheck disable=SC2086
    "$BENCH" $CASE "${pids[@]}" --sub-url "$base/events/{user}" \
      --pub-url "$base/api/notifications/{user}" --timeline "$out/timeline" --json \
      --source-addrs 127.$range.0.1-127.$range.0.4 --pub-body '{"title":"t","message":"{ts}"}' \
      >"$out/bench.json" 2>"$out/bench.log" &
  fi
  bench_pid=$!
  # The bench's and the server's threads (a floor's server is the bench's child), read once
  # they have all started.
  sleep 3
  children=$(cat /proc/"$bench_pid"/task/*/children 2>/dev/null)
  # shellcheck disable=SC2086
  tids "$bench_pid" "${server_pids[@]}" $children >"$out/ours"
  wait "$bench_pid"
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null
  [ "$KIND" != floor ] && stop_server
  perf script -i "$out/sched.data" -F cpu,time,trace --ns 2>/dev/null >"$out/switches"
  echo "== $KIND, run $run: $CASE"
  python3 bench/scripts/tail.py "$out" "$SLOW_MS"
done
