#!/usr/bin/env bash
# Web Push under load, in one sitting, each case on a fresh herald (SQLite, every 201 fsynced)
# on a free port, killed by its PID; loopback only. Each run, in turn:
#   push      `herald-bench push`: USERS users with no stream, each subscribed to the bench's own
#             push service, one publish each; herald with --vapid-key (pushes to users offline)
#   push-off  `targeted` (TARGETED_USERS streams, PUBLISHES publishes, CONCURRENCY in flight)
#             against herald without push
#   push-on   the same with --push-subscribe (every user also has a subscription) against
#             herald with --push-when always, so each publish also queues and makes a push
# push-off and push-on swap places every other run. Prints each JSON line, then a table of
# medians and spread and the ratio push-on / push-off of publishes per second.
#   bench/scripts/push.sh       RUNS=3 USERS=10000 TARGETED_USERS=5000 PUBLISHES=60000
#                               CONCURRENCY=32 DEADLINE=60s; HERALD_BIN=PATH measures that
#                               herald binary instead of this tree's
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
USERS=${USERS:-10000}
TARGETED_USERS=${TARGETED_USERS:-5000}
PUBLISHES=${PUBLISHES:-60000}
CONCURRENCY=${CONCURRENCY:-32}
DEADLINE=${DEADLINE:-60s}
WORK=${TMPDIR:-/tmp}/herald-push
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
HERALD=$(realpath "${HERALD_BIN:-$HERALD}")
"$HERALD" vapid-key --out "$WORK/vapid.pem" >/dev/null

start_herald() { # off|offline|always
  local push=(--vapid-key "$WORK/vapid.pem" --vapid-subject mailto:bench@example.com
    --push-insecure-endpoints)
  case $1 in
    off) push=() ;;
    always) push+=(--push-when always) ;;
  esac
  SERVER_PORT=$(free_port)
  rm -rf "$WORK/data"
  HERALD_LOG=warn "$HERALD" serve --listen "127.0.0.1:$SERVER_PORT" --data-dir "$WORK/data" \
    --max-connections 20000 --max-connections-per-user 100000 "${push[@]}" \
    >/dev/null 2>>"$WORK/herald.log" &
  SERVER_PID=$!
  wait_for_port "$SERVER_PORT"
}

one() { # LABEL HERALD_PUSH_MODE CASE
  start_herald "$2"
  local base=http://127.0.0.1:$SERVER_PORT
  # shellcheck disable=SC2086
  record "$1" "$3" $3 --deadline "$DEADLINE" --server-pid "$SERVER_PID" \
    --sub-url "$base/events/{user}" --pub-url "$base/api/notifications/{user}" \
    --push-sub-url "$base/api/push/{user}/subscriptions"
  stop_server
}

PUSH="push --users $USERS --concurrency $CONCURRENCY"
TARGETED="targeted --users $TARGETED_USERS --publishes $PUBLISHES --concurrency $CONCURRENCY"
for run in $(seq "$RUNS"); do
  one push offline "$PUSH"
  if [ $((run % 2)) = 1 ]; then
    one push-off off "$TARGETED"
    one push-on always "$TARGETED --push-subscribe"
  else
    one push-on always "$TARGETED --push-subscribe"
    one push-off off "$TARGETED"
  fi
done

cat "$RESULTS"
echo
echo "Machine: $(machine). Versions: $("$HERALD" --version); $(git rev-parse --short HEAD). $RUNS run(s) of each."
echo
python3 bench/scripts/push_table.py "$RESULTS"
