#!/usr/bin/env bash
# User-space instructions and heap allocations (calls of malloc) a publish costs herald, counted
# by valgrind's callgrind: the same for the same binary and input whatever else the machine does, where CPU
# seconds on this VM drift by tens of percent (BENCHMARKS.md, "Issue 16, tenth step"). Each
# binary serves two paced targeted runs under callgrind (LOW and HIGH publishes to USERS users,
# one publisher, RATE a second: one publish a commit, never a group); the difference
# divided by HIGH - LOW is one publish's share, start-up and streams taken out. The kernel's
# part (system calls, TCP, the disk) is not counted. Loopback only (port 3997); every server is
# started here and killed by its PID.
#   bench/scripts/instructions.sh [BINARY...]   # target/release/herald by default;
#                                              # LOW=1000 HIGH=3000 USERS=200 RATE=300
set -uo pipefail
cd "$(dirname "$0")/../.."
LOW=${LOW:-1000}
HIGH=${HIGH:-3000}
USERS=${USERS:-200}
RATE=${RATE:-300}
WORK=${TMPDIR:-/tmp}/herald-instructions
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries
command -v valgrind >/dev/null || scripts/apt-install valgrind
[ $# -gt 0 ] || set -- "$HERALD"

# Runs BINARY under callgrind for PUBLISHES publishes; prints "instructions allocations".
counted() { # BINARY PUBLISHES TAG
  local out=$WORK/$3.callgrind pid
  rm -rf "$WORK/data"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" serve --listen 127.0.0.1:3997 \
    --data-dir "$WORK/data" >/dev/null 2>"$WORK/$3.log" &
  pid=$!
  wait_for_port 3997 300   # valgrind starts herald slowly
  "$BENCH" targeted --users "$USERS" --publishes "$2" --concurrency 1 --rate "$RATE" --json \
    --sub-url "http://127.0.0.1:3997/events/{user}" \
    --pub-url "http://127.0.0.1:3997/api/notifications/{user}" \
    --broadcast-url "http://127.0.0.1:3997/api/broadcast" 2>>"$WORK/bench.log" | tail -1 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["lost"]==0 and d["delivered"]==d["expected"], d' \
    || echo "bench: $1 lost deliveries" >&2
  kill "$pid"; wait "$pid" 2>/dev/null
  callgrind_annotate --tree=caller "$out" 2>/dev/null | python3 -c '
import re, sys
total = allocs = calls = 0
for line in sys.stdin:
    if "PROGRAM TOTALS" in line:
        total = int(line.split()[0].replace(",", ""))
    m = re.search(r"  < .* \(([\d,]+)x\)", line)
    if m:
        calls += int(m.group(1).replace(",", ""))  # callers of the function whose line follows
    elif re.search(r"  \*  \S*malloc\.c:malloc \[", line):
        allocs, calls = calls, 0
    elif "  *  " in line:
        calls = 0
print(total, allocs)'
}

echo "| binary | instructions a publish | allocations a publish |"
echo "|---|---|---|"
for binary in "$@"; do
  tag=$(basename "$binary")
  read -r low_ir low_alloc < <(counted "$binary" "$LOW" "$tag-low")
  read -r high_ir high_alloc < <(counted "$binary" "$HIGH" "$tag-high")
  n=$((HIGH - LOW))
  printf '| %s | %s | %s |\n' "$tag ($("$binary" --version | cut -d' ' -f2-))" \
    "$(((high_ir - low_ir) / n))" "$(((high_alloc - low_alloc) / n))"
done
