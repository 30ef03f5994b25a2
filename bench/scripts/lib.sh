# Shared by the benchmark drivers (bench/scripts/*.sh): start a fresh
# server (herald or the reference design), run one `herald-bench` case against it, record its
# JSON line, stop the server by its PID, and write a table into BENCHMARKS.md between markers.
# Loopback only.
# Source it from a driver that has `cd`ed to the repository root.

ulimit -n 20000
WORK=${WORK:?set WORK before sourcing lib.sh}
RESULTS=$WORK/results.jsonl
HERALD=$PWD/target/release/herald
BENCH=$PWD/target/release/herald-bench
REFERENCE=${REFERENCE:-../shared/reference/seed-node}
# SERVER_CPUS=0 CLIENT_CPUS=1 pins every server to core 0 and the bench to core 1 (taskset), to
# tell a server's own cost from the load client's; unset, both share every core.
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
# Becomes COMMAND (exec), so the PID of a background `on_cpus ... &` is the server's own: call
# it only in a background job or a pipeline, never as a plain command of the script.
on_cpus() { # CPUS COMMAND...: runs COMMAND on CPUS, or anywhere when CPUS is empty
  local cpus=$1; shift
  if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi
}
SERVER_PID=
SERVER_PIDS=()
SERVER_PORT=
range=0

build_binaries() {
  cargo build --release --quiet -p herald -p herald-bench
}

build_reference() {
  rm -rf "$WORK/ref"
  cp -r "$REFERENCE" "$WORK/ref"
  (cd "$WORK/ref" && npm install --silent --no-audit --no-fund && npx tsc)
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # PORT [TENTHS]: up to TENTHS tenths of a second (100 by default)
  for _ in $(seq "${2:-100}"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# nginx with the Nchan module (Debian's nginx-light and libnginx-mod-nchan), installed here
# when missing; bench/nchan/nginx.conf with this run's port and directory.
install_nchan() {
  [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && return 0
  scripts/apt-install nginx-light libnginx-mod-nchan   # the system's nginx stays stopped
}

# bench/nchan/nginx.conf for one nginx, in DIR: its port; each stream's channels (its user's
# and the broadcast channel; NCHAN_CHANNELS=broadcast for the broadcast channel alone); and,
# given REDIS_URL, messages kept in that Redis (cluster.sh) rather than in memory.
nchan_config() { # PORT DIR [REDIS_URL]
  local redis="# in memory"
  [ -n "${3:-}" ] && redis="nchan_redis_url \"$3\"; nchan_use_redis on;"
  mkdir -p "$2"
  sed -e "s|@PORT@|$1|g" -e "s|@DIR@|$2|g" -e "s|@CHANNELS@|${NCHAN_CHANNELS:-\$1 broadcast}|" \
    -e "s|# @REDIS@|$redis|" bench/nchan/nginx.conf >"$2/nginx.conf"
}

start_server() { # herald|reference|nchan
  case $1 in
    herald)
      SERVER_PORT=3000
      rm -rf "$WORK/data"
      on_cpus "$SERVER_CPUS" "$HERALD" serve --listen 127.0.0.1:$SERVER_PORT --data-dir "$WORK/data" \
        --max-connections 20000 --max-connections-per-user 100000 ${HERALD_EXTRA:-} >/dev/null 2>"$WORK/herald.log" &
      ;;
    nchan)
      SERVER_PORT=3888
      rm -rf "$WORK/nchan"
      nchan_config $SERVER_PORT "$WORK/nchan"
      on_cpus "$SERVER_CPUS" nginx -p "$WORK/nchan" -c "$WORK/nchan/nginx.conf" -g 'daemon off;' \
        2>>"$WORK/nchan/stderr.log" &
      ;;
    *)
      SERVER_PORT=3999
      (cd "$WORK/ref" && PORT=$SERVER_PORT on_cpus "$SERVER_CPUS" node dist/server.js >"$WORK/ref.log" 2>&1) &
      ;;
  esac
  SERVER_PID=$!
  wait_for_port $SERVER_PORT
  # nginx's worker holds the connections: it is measured beside its master (herald and node
  # have no child processes).
  SERVER_PIDS=("$SERVER_PID" $(pgrep -P "$SERVER_PID"))
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null || true
  sleep 2   # let the closed sockets of this run leave TIME_WAIT
}

# Runs `herald-bench ARGS` and appends its JSON line, tagged with CASE and LABEL, to RESULTS.
record() { # LABEL CASE ARGS...
  local label=$1 case=$2; shift 2
  range=$((range % 250 + 1))
  on_cpus "$CLIENT_CPUS" "$BENCH" "$@" --label "$label" --json --source-addrs 127.$range.0.1-127.$range.0.4 \
    --pub-body '{"title":"t","message":"{ts}"}' 2>>"$WORK/bench.log" | tail -1 |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["case"]=sys.argv[1]; print(json.dumps(d))' "$case" \
    >>"$RESULTS" || echo "bench: $label $case produced no figures" >&2
}

# One case against a fresh server of KIND: herald, reference or nchan.
run_case() { # KIND CASE
  local kind=$1 case=$2 base pid pids=()
  start_server "$kind"
  base=http://127.0.0.1:$SERVER_PORT
  for pid in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$pid"); done
  # shellcheck disable=SC2086
  record "$kind" "$case" $case "${pids[@]}" --sub-url "$base/events/{user}" \
    --pub-url "$base/api/notifications/{user}" --broadcast-url "$base/api/broadcast"
  stop_server
}

# The same client against the ideal server of `herald-bench floor` (a fanout case; its frame
# FRAME, else FLOOR_FRAME, else the minimal one) or of `herald-bench targeted-floor` (a targeted
# case, the durable floor); no server to start. Recorded as `floor`, or `floor-FRAME` when FRAME
# is given: the floor sending herald's frame (FRAME=herald) stands beside the minimal one in
# the table, and has no targeted counterpart.
run_floor() { # CASE [FRAME] (a fanout or targeted case: its flags are the floor's)
  local frame=${2:-${FLOOR_FRAME:-}} label=floor${2:+-$2}
  case ${1%% *} in
    # shellcheck disable=SC2086
    fanout) record "$label" "$1" floor ${1#fanout } ${frame:+--floor-frame "$frame"} ;;
    # shellcheck disable=SC2086
    targeted) [ -z "${2:-}" ] || return 0; record floor "$1" targeted-floor ${1#targeted } ;;
    *) return 0 ;;
  esac
  sleep 2
}

machine() {
  echo "$(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
}

# Replaces what lies between `<!-- NAME:start -->` and `<!-- NAME:end -->` in BENCHMARKS.md
# with the contents of FILE (appending the block if the markers are not there yet).
write_block() { # NAME FILE
  python3 - "$1" "$2" <<'PY'
import re, sys
name, table = sys.argv[1], open(sys.argv[2]).read()
doc = open("BENCHMARKS.md").read()
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
block = f"{start}\n{table}\n{end}"
doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S) \
    if start in doc else doc + "\n" + block + "\n"
open("BENCHMARKS.md", "w").write(doc)
PY
}
