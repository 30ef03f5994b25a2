#!/usr/bin/env bash
# The many-recipients route under load, with the targeted case before and after it in the same
# sitting: USERS streams (one user each), publishes of BATCH users at a time (CONCURRENCY in
# flight, BATCHES of them), on a fresh herald per case with its default store settings (SQLite,
# every 201 fsynced) and, when `redis` is named, on Redis (AOF, appendfsync always). Prints each
# run's JSON line and a summary table. Loopback only; every server is started here on a free
# port and killed by its PID.
#   bench/scripts/many-recipients.sh [sqlite] [redis]
#   RUNS=1 USERS=5000 BATCH=1000 BATCHES=300 CONCURRENCY=2 by default (2 in flight keep the
#   delivery p99 near one batch round trip; see BENCHMARKS.md)
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-1}
USERS=${USERS:-5000}
BATCH=${BATCH:-1000}
BATCHES=${BATCHES:-300}
CONCURRENCY=${CONCURRENCY:-2}
BACKENDS=("$@")
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(sqlite)
WORK=${TMPDIR:-/tmp}/herald-many-recipients
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries

REDIS_PID=
REDIS_PORT=
start_redis() {
  REDIS_PORT=$(free_port)
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync always --logfile redis.log --daemonize no &
  REDIS_PID=$!
  wait_for_port "$REDIS_PORT"
}

run=0
start_herald() { # sqlite|redis
  local store=()
  run=$((run + 1))
  [ "$1" = redis ] && store=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix "mr$run")
  SERVER_PORT=$(free_port)
  rm -rf "$WORK/data"
  HERALD_LOG=warn "$HERALD" serve --listen "127.0.0.1:$SERVER_PORT" --data-dir "$WORK/data" \
    --max-connections 20000 --max-connections-per-user 100000 "${store[@]}" \
    >/dev/null 2>>"$WORK/herald.log" &
  SERVER_PID=$!
  wait_for_port "$SERVER_PORT"
}

CASES=(
  "targeted --users $USERS --publishes 20000 --concurrency 32"
  "many-recipients --users $USERS --batch-size $BATCH --batches $BATCHES --concurrency $CONCURRENCY"
  "targeted --users $USERS --publishes 20000 --concurrency 32"
)
for backend in "${BACKENDS[@]}"; do
  [ "$backend" = redis ] && start_redis
  for _ in $(seq "$RUNS"); do
    for case in "${CASES[@]}"; do
      start_herald "$backend"
      base=http://127.0.0.1:$SERVER_PORT
      # shellcheck disable=SC2086
      record "$backend" "$case" $case --server-pid "$SERVER_PID" \
        --sub-url "$base/events/{user}" --pub-url "$base/api/notifications/{user}" \
        --batch-url "$base/api/notifications"
      stop_server
    done
  done
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=
  fi
done

cat "$RESULTS"
echo "Machine: $(machine). Versions: $("$HERALD" --version); $(git rev-parse --short HEAD)."
python3 - "$RESULTS" <<'PY'
import json, sys
def show(value):
    return "-" if value is None else str(value)
print("| store | case | notifications/s stored | delivered/s | delivery p50 / p99 / max ms | lost | requests ok / failed | request p50 / p99 ms | server CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    d = json.loads(line)
    many = d["scenario"] == "many-recipients"
    stored = d["stored_per_s"] if many else d["publish_per_s"]
    what = "batch" if many else "publish"
    lat = " / ".join(show(d.get(f"delivery_latency_{q}_ms")) for q in ("p50", "p99", "max"))
    req = " / ".join(show(d.get(f"{what}_latency_{q}_ms")) for q in ("p50", "p99"))
    print(f"| {d['label']} | `{d['case']}` | {stored} | {show(d.get('delivered_per_s'))} | {lat} "
          f"| {d['lost']} of {d['expected']} | {d[what + '_ok']} / {d[what + '_failed']} | {req} "
          f"| {show(d.get('server_cpu_s'))} |")
PY
