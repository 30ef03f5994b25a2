#!/usr/bin/env bash
# A local 3-node herald cluster on loopback, in one command:
#   scripts/cluster.sh            # redis-server on 127.0.0.1:6390, nodes on :3001 :3002 :3003
# Ctrl-C stops everything it started. State lives in ./cluster-data (Redis with AOF,
# appendfsync always: an acknowledged notification survives a crash of Redis too).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6390}
NODE_PORTS=(${NODE_PORTS:-3001 3002 3003})
DATA=${DATA:-./cluster-data}
mkdir -p "$DATA/redis"

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/herald

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA/redis" --save "" \
  --appendonly yes --appendfsync always --logfile redis.log &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

for port in "${NODE_PORTS[@]}"; do
  HERALD_LOG=${HERALD_LOG:-warn} "$BIN" serve --listen "127.0.0.1:$port" \
    --data-dir "$DATA/node-$port" --redis-url "redis://127.0.0.1:$REDIS_PORT" &
  pids+=($!)
done
echo "redis on 127.0.0.1:$REDIS_PORT; nodes: ${NODE_PORTS[*]/#/http://127.0.0.1:}"
echo "try: $BIN subscribe alice --server http://127.0.0.1:${NODE_PORTS[0]} &"
echo "     $BIN publish alice --title Hi --message there --server http://127.0.0.1:${NODE_PORTS[1]}"
wait
