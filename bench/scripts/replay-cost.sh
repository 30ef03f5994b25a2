#!/usr/bin/env bash
# Replay cost vs log size: one user's 10 missed events, with the log holding FLOOD other events.
set -u
ulimit -n 20000
HERE=$(cd "$(dirname "$0")" && pwd); cd "$HERE/../.."
HERALD=target/release/herald
BENCH=target/release/herald-bench
FLOOD=${1:?usage: replay-cost.sh FLOOD sqlite|redis}; BACKEND=${2:?usage}
cargo build --release --quiet -p herald -p herald-bench
rm -rf ${TMPDIR:-/tmp}/herald-replay-cost/data ${TMPDIR:-/tmp}/herald-replay-cost/redis; mkdir -p ${TMPDIR:-/tmp}/herald-replay-cost/redis
ARGS=(--data-dir ${TMPDIR:-/tmp}/herald-replay-cost/data --sync normal --retention-events 10000000)
if [ "$BACKEND" = redis ]; then
  redis-server --port 16420 --bind 127.0.0.1 --dir ${TMPDIR:-/tmp}/herald-replay-cost/redis --save "" --appendonly no --logfile redis.log --daemonize no & RPID=$!
  sleep 0.5; ARGS+=(--redis-url redis://127.0.0.1:16420 --redis-prefix rc)
fi
HERALD_LOG=warn $HERALD serve --listen 127.0.0.1:3301 "${ARGS[@]}" >/dev/null 2>${TMPDIR:-/tmp}/herald-replay-cost/h.log & PID=$!
sleep 1
BEFORE=$(curl -s http://127.0.0.1:3301/api/notifications/needle | python3 -c 'import sys,json; print(json.load(sys.stdin)["lastEventId"])')
for i in $(seq 10); do curl -s -XPOST http://127.0.0.1:3301/api/notifications/needle -H 'content-type: application/json' -d "{\"title\":\"n$i\",\"message\":\"m\"}" >/dev/null; done
$BENCH targeted --users 1000 --publishes $FLOOD --concurrency 64 --sub-url 'http://127.0.0.1:3301/events/{user}' --pub-url 'http://127.0.0.1:3301/api/notifications/{user}' --source-addrs 127.31.0.1-127.31.0.1 --json >${TMPDIR:-/tmp}/herald-replay-cost/flood.json 2>/dev/null
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("flood:", d["publish_ok"], "publishes at", d["publish_per_s"], "/s")' "${TMPDIR:-/tmp}/herald-replay-cost/flood.json"
echo -n "$BACKEND, log of $FLOOD others' events: "; python3 "$HERE/replay_time.py" 127.0.0.1 3301 needle "$BEFORE" 10 50
kill $PID; [ "$BACKEND" = redis ] && kill $RPID; wait 2>/dev/null
