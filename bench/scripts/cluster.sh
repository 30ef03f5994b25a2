#!/usr/bin/env bash
# Issue 4's cluster benchmark, and issue 16's peer beside it: one redis-server (AOF,
# appendfsync always) and three nodes on this machine, 15,000 streams spread round-robin over
# the nodes; fan-out latency of broadcasts (20 at 2/s, sent to node 1) and of targeted publishes
# (20,000 at 2,000/s through node 1). The nodes are herald's, then nginx+Nchan's with messages
# in Redis (bench/nchan/nginx.conf with `nchan_redis_url`), each kind on a fresh Redis.
# Prints one JSON line per scenario and kind. Everything runs on loopback and stops by itself.
#   bench/scripts/cluster.sh            # KINDS="herald nchan" by default
set -uo pipefail
cd "$(dirname "$0")/../.."
WORK=${TMPDIR:-/tmp}/herald-cluster-bench
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
KINDS=${KINDS:-herald nchan}
REDIS_PORT=16410
build_binaries
[[ " $KINDS " == *" nchan "* ]] && install_nchan

start_redis() {
  rm -rf "$WORK/redis"; mkdir -p "$WORK/redis"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync always --logfile redis.log --daemonize no &
  REDIS_PID=$!
  wait_for_port $REDIS_PORT
}

# Starts three nodes of KIND on PORTS, sets NODE_PIDS (every process to measure) and KILL_PIDS.
start_nodes() { # KIND PORT...
  local kind=$1 port; shift
  NODE_PIDS=(); KILL_PIDS=()
  for port in "$@"; do
    case $kind in
      herald)
        HERALD_LOG=warn "$HERALD" serve --listen 127.0.0.1:$port --data-dir "$WORK/n$port" \
          --redis-url redis://127.0.0.1:$REDIS_PORT --redis-prefix cb \
          --max-connections 20000 --max-connections-per-user 100000 >/dev/null 2>"$WORK/n$port.log" &
        ;;
      nchan)
        nchan_config $port "$WORK/n$port" redis://127.0.0.1:$REDIS_PORT
        nginx -p "$WORK/n$port" -c "$WORK/n$port/nginx.conf" -g 'daemon off;' 2>>"$WORK/n$port.log" &
        ;;
    esac
    local pid=$! children=
    KILL_PIDS+=($pid)
    wait_for_port $port
    # nginx's worker holds the connections: measured beside its master, once it is there.
    if [ "$kind" = nchan ]; then
      for _ in $(seq 50); do children=$(pgrep -P $pid) && break; sleep 0.1; done
    fi
    NODE_PIDS+=($pid $children)
  done
}

for kind in $KINDS; do
  start_redis
  ports=(3201 3202 3203)
  start_nodes "$kind" "${ports[@]}"
  subs=(); for port in "${ports[@]}"; do subs+=(--sub-url "http://127.0.0.1:$port/events/{user}"); done
  pids=(); for pid in "${NODE_PIDS[@]}"; do pids+=(--server-pid "$pid"); done
  "$BENCH" fanout --label "cluster3-$kind" --streams 15000 --events 20 --rate 2 "${subs[@]}" \
    --broadcast-url http://127.0.0.1:3201/api/broadcast "${pids[@]}" \
    --pub-body '{"title":"t","message":"{ts}"}' \
    --source-addrs 127.21.0.1-127.21.0.4 --connect-concurrency 200 --json
  "$BENCH" targeted --label "cluster3-$kind" --users 15000 --publishes 20000 --concurrency 32 \
    --rate 2000 "${subs[@]}" --pub-url 'http://127.0.0.1:3201/api/notifications/{user}' "${pids[@]}" \
    --pub-body '{"title":"t","message":"{ts}"}' \
    --source-addrs 127.22.0.1-127.22.0.4 --connect-concurrency 200 --json
  kill "${KILL_PIDS[@]}" "$REDIS_PID"
  wait "${KILL_PIDS[@]}" "$REDIS_PID" 2>/dev/null
  sleep 2   # let the closed sockets of this kind leave TIME_WAIT
done
