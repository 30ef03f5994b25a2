#!/usr/bin/env bash
# Issue 4's cluster benchmark: redis-server (AOF, appendfsync always) and three herald nodes on
# this machine, 15,000 streams spread round-robin over the nodes; fan-out latency of broadcasts
# (20 at 2/s, sent to node 1) and of targeted publishes (20,000 at 2,000/s through node 1).
# Prints one JSON line per scenario. Everything runs on loopback and stops by itself.
set -u
ulimit -n 20000
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p herald -p herald-bench
HERALD=target/release/herald
BENCH=target/release/herald-bench
WORK=${TMPDIR:-/tmp}/herald-cluster-bench
rm -rf "$WORK"; mkdir -p "$WORK"
redis-server --port 16410 --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly yes \
  --appendfsync always --logfile redis.log --daemonize no & RPID=$!
sleep 0.5
PIDS=()
for p in 3201 3202 3203; do
  HERALD_LOG=warn $HERALD serve --listen 127.0.0.1:$p --data-dir "$WORK/n$p" \
    --redis-url redis://127.0.0.1:16410 --redis-prefix cb \
    --max-connections 20000 --max-connections-per-user 100000 >/dev/null 2>"$WORK/n$p.log" &
  PIDS+=($!)
done
sleep 1
SUBS=(--sub-url 'http://127.0.0.1:3201/events/{user}' --sub-url 'http://127.0.0.1:3202/events/{user}'
      --sub-url 'http://127.0.0.1:3203/events/{user}')
SP=(--server-pid "${PIDS[0]}" --server-pid "${PIDS[1]}" --server-pid "${PIDS[2]}")
$BENCH fanout --label cluster3 --streams 15000 --events 20 --rate 2 "${SUBS[@]}" \
  --broadcast-url http://127.0.0.1:3201/api/broadcast "${SP[@]}" \
  --source-addrs 127.21.0.1-127.21.0.4 --connect-concurrency 200 --json
$BENCH targeted --label cluster3 --users 15000 --publishes 20000 --concurrency 32 --rate 2000 \
  "${SUBS[@]}" --pub-url 'http://127.0.0.1:3201/api/notifications/{user}' "${SP[@]}" \
  --source-addrs 127.22.0.1-127.22.0.4 --connect-concurrency 200 --json
kill "${PIDS[@]}" "$RPID"
wait 2>/dev/null
