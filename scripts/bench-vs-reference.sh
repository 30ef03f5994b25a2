#!/usr/bin/env bash
# Runs every `herald bench` scenario against herald and against the original design
# (../shared/reference/seed-node) in one go, on this machine, and writes the table into
# BENCHMARKS.md between the bench-vs-reference markers, with the machine, the versions and the
# exact commands. Loopback only; every server is started here and killed by its PID.
#   scripts/bench-vs-reference.sh            # RUNS=1 by default; RUNS=3 for medians
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000
RUNS=${RUNS:-1}
REFERENCE=${REFERENCE:-../shared/reference/seed-node}
WORK=${TMPDIR:-/tmp}/herald-vs-reference
rm -rf "$WORK"; mkdir -p "$WORK"

cargo build --release --quiet
BIN=$PWD/target/release/herald
cp -r "$REFERENCE" "$WORK/ref"
(cd "$WORK/ref" && npm install --silent --no-audit --no-fund && npx tsc)

SCENARIOS=(
  "hold --streams 15000 --connect-concurrency 100"
  "fanout --streams 15000 --events 20 --rate 2"
  "targeted --users 5000 --publishes 20000 --concurrency 32"
  "replay --streams 10000 --events 10"
)
range=0
run() { # run KIND SCENARIO ARGS...
  local kind=$1; shift
  local port pid
  if [ "$kind" = herald ]; then
    port=3000; rm -rf "$WORK/data"
    "$BIN" serve --listen 127.0.0.1:$port --data-dir "$WORK/data" --max-connections 20000 \
      --max-connections-per-user 100000 >/dev/null 2>"$WORK/herald.log" &
  else
    port=3999
    (cd "$WORK/ref" && PORT=$port exec node dist/server.js >"$WORK/ref.log" 2>&1) &
  fi
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  range=$((range % 250 + 1))
  local base=http://127.0.0.1:$port
  "$BIN" bench "$@" --label "$kind" --json --server-pid $pid \
    --source-addrs 127.$range.0.1-127.$range.0.4 --sub-url "$base/events/{user}" \
    --pub-url "$base/api/notifications/{user}" --broadcast-url "$base/api/broadcast" \
    --pub-body '{"title":"t","message":"{ts}"}' | tail -1 >>"$WORK/results.jsonl" || true
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  sleep 2   # let closed sockets leave TIME_WAIT on the next range
}
for scenario in "${SCENARIOS[@]}"; do
  for _ in $(seq "$RUNS"); do
    # shellcheck disable=SC2086
    run herald $scenario
    # shellcheck disable=SC2086
    run reference $scenario
  done
done

python3 scripts/bench/summarize.py "$WORK/results.jsonl" "$RUNS" \
  "$(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "$("$BIN" --version); node $(node --version); $(git rev-parse --short HEAD)" \
  "${SCENARIOS[@]}" > "$WORK/table.md"
python3 - "$WORK/table.md" <<'PY'
import re, sys
table = open(sys.argv[1]).read()
doc = open("BENCHMARKS.md").read()
start, end = "<!-- bench-vs-reference:start -->", "<!-- bench-vs-reference:end -->"
block = f"{start}\n{table}\n{end}"
doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S) \
    if start in doc else doc + "\n" + block + "\n"
open("BENCHMARKS.md", "w").write(doc)
PY
cat "$WORK/table.md"
