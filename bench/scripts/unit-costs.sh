#!/usr/bin/env bash
# Issue 17's unit costs, the inputs of the capacity model in docs/scaling.md:
#  1. SQLite (one node, --sync normal): disk bytes per stored notification, at --history-limit
#     SQ_LIMITS, after SQ_PUBLISHES publishes to SQ_USERS users (herald stopped by SIGTERM, so
#     the WAL is checkpointed, before the files are measured);
#  2. Redis (one node, a redis-server of our own, no persistence): Redis memory per stored
#     notification and per user at --history-limit R_LIMITS (R_USERS users, each sent enough
#     notifications to fill its history past the limit), from `INFO memory` and from
#     `MEMORY USAGE` of every key, grouped by kind (history keys, per-user `events` streams,
#     the shared `log`), and from what `DEL` of each kind frees (herald stopped; then the same
#     fill again for step 3);
#  3. Redis CPU per operation at each limit (`CONFIG RESETSTAT`, a known number of operations,
#     then `INFO commandstats` and `INFO cpu`): publish, broadcast, mark one read, read-all;
#  4. the cost of following the log: two nodes on one Redis, FOLLOW_RATE publishes/s for
#     FOLLOW_SECONDS to node A (the streams of those users are on node A only), and node B's CPU
#     (/proc/PID/stat) per 1,000 events/s, less its idle CPU;
#  5. the SQLite retention sweep: SW_PUBLISHES publishes to SW_USERS users at --history-limit
#     10 and --retention-age 1s, then the sweep (every 30 s) that takes them all past
#     retention: how long the log took to empty, herald's CPU, and the publish latency of a
#     probe at 200/s across it (publishes wait while a sweep step runs).
# Prints one JSON line per measurement, then a markdown table. Loopback only: herald on ports
# 3900-3901, redis-server on 6390; every process started here is killed by its PID on exit.
#   bench/scripts/unit-costs.sh            # STEPS="sqlite redis follow sweep" by default
set -uo pipefail
cd "$(dirname "$0")/../.."
WORK=${TMPDIR:-/tmp}/herald-unit-costs
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
STEPS=${STEPS:-sqlite redis follow sweep}
SQ_USERS=${SQ_USERS:-2000}
SQ_PUBLISHES=${SQ_PUBLISHES:-20000}
SQ_LIMITS=${SQ_LIMITS:-10 1000}
R_USERS=${R_USERS:-100}
R_LIMITS=${R_LIMITS:-10 100 1000}
CPU_PUBLISHES=${CPU_PUBLISHES:-20000}
CPU_BROADCASTS=${CPU_BROADCASTS:-2000}
CPU_READS=${CPU_READS:-2000}
FOLLOW_RATE=${FOLLOW_RATE:-1000}
FOLLOW_SECONDS=${FOLLOW_SECONDS:-20}
SW_USERS=${SW_USERS:-2000}
SW_PUBLISHES=${SW_PUBLISHES:-200000}
# a control run: SW_AGE=1h, and the sweep takes nothing
SW_AGE=${SW_AGE:-1s}
PORT_A=3900
PORT_B=3901
REDIS_PORT=6390
PREFIX=herald
# ~100-character message: the send time (19 digits), a space, 80 x.
PAD=$(printf 'x%.0s' $(seq 80))
BODY="{\"title\":\"t\",\"message\":\"{ts} $PAD\"}"
TICK=$(getconf CLK_TCK)
# Built only when missing: this script does not rebuild them.
[ -x "$HERALD" ] && [ -x "$BENCH" ] || build_binaries

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT

# Stops PID with SIGTERM (herald drains and checkpoints), SIGKILL after 15 s.
stop_pid() { # PID
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}

cat >"$WORK/uc.py" <<'PY'
import http.client, json, os, subprocess, sys, time, re

def rcli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=120).stdout

def info(port, section):
    out = {}
    for line in rcli(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.strip().split(":", 1)
            out[k] = v
    return out

def cpu(port):
    i = info(port, "cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])

def cmdstats(port):
    out = {}
    for k, v in info(port, "commandstats").items():
        f = dict(x.split("=") for x in v.split(","))
        out[k[len("cmdstat_"):]] = (int(f["calls"]), int(f["usec"]))
    return out

def emit(d):
    print(json.dumps(d), flush=True)

def redis_op(port, what, limit, ops, seconds, cpu0, extra):
    """After CONFIG RESETSTAT, CPU0 = used CPU then, OPS operations done in SECONDS."""
    cs = cmdstats(port)
    used = cpu(port) - float(cpu0)
    script = [c for c in ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro") if c in cs]
    s_calls = sum(cs[c][0] for c in script)
    s_usec = sum(cs[c][1] for c in script)
    limit, ops, seconds = int(limit), int(ops), float(seconds)
    d = {"measure": "redis_cpu", "op": what, "history_limit": limit, "ops": ops,
         "seconds": round(seconds, 3), "ops_per_s": round(ops / seconds, 1) if seconds else None,
         "script_calls": s_calls, "script_calls_per_op": round(s_calls / ops, 3) if ops else None,
         "script_usec_per_op": round(s_usec / ops, 2) if ops else None,
         "redis_cpu_s": round(used, 3),
         "redis_cpu_usec_per_op": round(used * 1e6 / ops, 2) if ops else None,
         # every command's calls and usec; those a script runs are counted both in the script
         # (evalsha) and under their own names
         "commandstats": {k: list(v) for k, v in sorted(cs.items(), key=lambda kv: -kv[1][1])}}
    try:
        e = json.load(open(extra))
    except Exception:
        e = {"extra": "no figures from the client"}
    d.update({k: e[k] for k in ("publish_ok", "publish_failed", "publish_per_s", "streams", "ok",
                                "failed", "updated", "statuses") if k in e})
    emit(d)

def keys(port, pattern):
    return [k for k in rcli(port, "--scan", "--pattern", pattern).split() if k]

def pipeline(port, lines):
    """Runs one command per line through redis-cli (no quoting needed: the keys have no spaces)."""
    p = subprocess.run(["redis-cli", "-p", str(port)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=600)
    return p.stdout.splitlines()

LEN = {"list": "LLEN", "hash": "HLEN", "set": "SCARD", "zset": "ZCARD", "stream": "XLEN",
       "string": "STRLEN"}

def redis_mem(port, prefix, limit, users, publishes, used0):
    limit, users, publishes, used0 = int(limit), int(users), int(publishes), int(used0)
    ks = keys(port, prefix + ":*")
    types = pipeline(port, ["TYPE " + k for k in ks])
    mem = pipeline(port, ["MEMORY USAGE %s SAMPLES 0" % k for k in ks])
    lens = pipeline(port, ["%s %s" % (LEN.get(t, "EXISTS"), k) for k, t in zip(ks, types)])
    classes = {}
    for k, t, m, n in zip(ks, types, mem, lens):
        c = re.sub(r"^user:[^:]+:", "user:{u}:", k[len(prefix) + 1:])
        c = re.sub(r"^(node|presence|idem):.*", r"\1:*", c)
        e = classes.setdefault(c, {"type": t, "keys": 0, "bytes": 0, "entries": 0})
        e["keys"] += 1; e["bytes"] += int(m or 0); e["entries"] += int(n or 0)
    used1 = int(info(port, "memory")["used_memory"])
    hist = [c for c in classes if c.startswith("user:{u}:") and c != "user:{u}:events"]
    stored = classes.get("user:{u}:list", {}).get("entries", 0)
    hist_bytes = sum(classes[c]["bytes"] for c in hist)
    ev = classes.get("user:{u}:events", {"bytes": 0, "entries": 0, "keys": 0})
    log = classes.get("log", {"bytes": 0, "entries": 0})
    nusers = classes.get("user:{u}:list", {}).get("keys", 0)
    emit({"measure": "redis_memory", "history_limit": limit, "users": nusers,
          "publishes": publishes, "stored": stored,
          "used_memory_delta": used1 - used0,
          "used_memory_delta_per_stored": round((used1 - used0) / stored, 1) if stored else None,
          # the delta less the log and the per-user streams (bounded by retention, not history)
          "used_memory_delta_less_streams_per_stored":
              round((used1 - used0 - log["bytes"] - ev["bytes"]) / stored, 1) if stored else None,
          "history_key_bytes": hist_bytes,
          "history_bytes_per_stored": round(hist_bytes / stored, 1) if stored else None,
          "history_bytes_per_user": round(hist_bytes / nusers, 1) if nusers else None,
          "user_events_entries": ev["entries"], "user_events_bytes": ev["bytes"],
          "user_events_bytes_per_entry": round(ev["bytes"] / ev["entries"], 1) if ev["entries"] else None,
          "log_entries": log["entries"], "log_bytes": log["bytes"],
          "log_bytes_per_entry": round(log["bytes"] / log["entries"], 1) if log["entries"] else None,
          "keys": classes})

def redis_drop(port, prefix, limit, users):
    """With herald stopped: used_memory freed by DEL of each kind of key in turn, per entry."""
    limit, users = int(limit), int(users)
    ks = keys(port, prefix + ":*")
    kinds = {"user_events": [], "log": [], "history": [], "other": []}
    for k in ks:
        rest = k[len(prefix) + 1:]
        if re.match(r"^user:[^:]+:events$", rest): kinds["user_events"].append(k)
        elif rest == "log": kinds["log"].append(k)
        elif re.match(r"^user:[^:]+:", rest): kinds["history"].append(k)
        else: kinds["other"].append(k)
    stored = sum(int(n or 0) for n in pipeline(port, ["LLEN " + k for k in ks if k.endswith(":list")]))
    d = {"measure": "redis_memory_freed", "history_limit": limit, "users": users, "stored": stored}
    for kind in ("user_events", "log", "history", "other"):
        ks = kinds[kind]
        types = pipeline(port, ["TYPE " + k for k in ks])
        n = sum(int(x or 0) for x in pipeline(port, ["%s %s" % (LEN.get(t, "EXISTS"), k)
                                                      for k, t in zip(ks, types)]))
        before = int(info(port, "memory")["used_memory"])
        for i in range(0, len(ks), 100):
            pipeline(port, ["DEL " + " ".join(ks[i:i + 100])])
        freed = before - int(info(port, "memory")["used_memory"])
        d[kind + "_keys"] = len(ks); d[kind + "_entries"] = n; d[kind + "_freed"] = freed
        if kind in ("user_events", "log"):
            d[kind + "_freed_per_entry"] = round(freed / n, 1) if n else None
    d["history_freed_per_stored"] = round(d["history_freed"] / stored, 1) if stored else None
    d["history_freed_per_user"] = round(d["history_freed"] / users, 1) if users else None
    emit(d)

def ids(base, prefix, port, limit_total):
    """POST lines marking up to LIMIT_TOTAL notifications read, round robin over the users."""
    limit_total = int(limit_total)
    users = sorted(k.split(":")[2] for k in keys(port, prefix + ":user:*:list"))
    conn = http.client.HTTPConnection(base.split(":")[0], int(base.split(":")[1]), timeout=30)
    per = {}
    want = -(-limit_total // max(len(users), 1))
    for u in users:
        got, before = [], None
        while len(got) < want:
            q = "/api/notifications/%s?limit=100%s" % (u, "&before=" + before if before else "")
            conn.request("GET", q); r = conn.getresponse(); d = json.loads(r.read())
            page = [n["id"] for n in d["notifications"] if not n["read"]]
            if not d["notifications"]:
                break
            got += page; before = d["notifications"][-1]["id"]
        per[u] = got[:want]
    out, i = [], 0
    while len(out) < limit_total and any(per.values()):
        for u in users:
            if per[u] and len(out) < limit_total:
                out.append("/api/notifications/%s/%s/read\t" % (u, per[u].pop(0)))
    print("\n".join(out))

def post(base, path):
    """POSTs each line (PATH<TAB>BODY) in turn on one keep-alive connection."""
    lines = [l.rstrip("\n").split("\t", 1) for l in open(path) if l.strip()]
    conn = http.client.HTTPConnection(base.split(":")[0], int(base.split(":")[1]), timeout=30)
    ok = failed = updated = 0; statuses = {}
    t0 = time.monotonic()
    for p, body in lines:
        h = {"content-type": "application/json"} if body else {}
        conn.request("POST", p, body=body or None, headers=h)
        r = conn.getresponse(); data = r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if 200 <= r.status < 300:
            ok += 1
            try: updated += int(json.loads(data).get("updated", 0))
            except Exception: pass
        else:
            failed += 1
    emit({"ok": ok, "failed": failed, "seconds": time.monotonic() - t0, "updated": updated,
          "statuses": statuses})

def sqlite_disk(data, limit, users, publishes, wal_peak, bench):
    limit, users, publishes, wal_peak = int(limit), int(users), int(publishes), int(wal_peak)
    files = {f: os.path.getsize(os.path.join(data, f)) for f in sorted(os.listdir(data))}
    total = sum(files.values())
    db = os.path.join(data, "herald.db")
    def q(sql):
        return subprocess.run(["sqlite3", "-readonly", db, sql], capture_output=True, text=True,
                              timeout=120).stdout.strip()
    tables = {}
    for line in q("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").splitlines():
        n, s = line.split("|"); tables[n] = int(s)
    stored = int(q("SELECT count(*) FROM notifications") or 0)
    events = int(q("SELECT count(*) FROM events") or 0)
    page = int(q("PRAGMA page_size") or 0); free = int(q("PRAGMA freelist_count") or 0)
    notif = sum(v for k, v in tables.items() if k in ("notifications", "sqlite_autoindex_notifications_1",
                                                       "notifications_expiring"))
    ev = sum(v for k, v in tables.items() if k in ("events", "events_by_user"))
    b = json.load(open(bench)) if os.path.getsize(bench) else {}
    emit({"measure": "sqlite_disk", "history_limit": limit, "users": users, "publishes": publishes,
          "publish_ok": b.get("publish_ok"), "publish_per_s": b.get("publish_per_s"),
          "server_cpu_s": b.get("server_cpu_s"), "server_rss_after_kib": b.get("server_rss_after_kib"),
          "stored": stored, "events": events, "files": files, "disk_bytes": total,
          "disk_bytes_per_publish": round(total / publishes, 1),
          "disk_bytes_per_stored": round(total / stored, 1) if stored else None,
          "notifications_table_bytes_per_stored": round(notif / stored, 1) if stored else None,
          "events_table_bytes_per_event": round(ev / events, 1) if events else None,
          "freelist_bytes": free * page, "wal_bytes_before_stop": wal_peak, "tables": tables})

def follow(limit, tick, idle_s, idle_b0, idle_b1, wall_s, b0, b1, a0, a1, bench, rss):
    """Node B's CPU beyond its idle rate, over the bench's whole run (WALL_S), per event."""
    b = json.load(open(bench)) if os.path.getsize(bench) else {}
    tick, wall_s = float(tick), float(wall_s)
    idle = (int(idle_b1) - int(idle_b0)) / tick / float(idle_s)
    cpu_b = (int(b1) - int(b0)) / tick
    extra = cpu_b - idle * wall_s
    ok = b.get("publish_ok") or 0
    rate = ok / b["publish_s"] if b.get("publish_s") else None
    emit({"measure": "follow_log", "history_limit": int(limit), "publishes": ok,
          "publish_s": b.get("publish_s"), "wall_s": round(wall_s, 2),
          "events_per_s": round(rate, 1) if rate else None,
          "node_b_idle_cpu_s_per_s": round(idle, 5), "node_b_cpu_s": round(cpu_b, 3),
          "node_b_cpu_s_beyond_idle": round(extra, 3),
          "node_b_cpu_us_per_event": round(extra / ok * 1e6, 2) if ok else None,
          # CPU seconds per second (cores) at 1,000 events/s
          "node_b_cores_per_1000_events_s": round(extra / ok * 1000, 5) if ok else None,
          "node_a_cpu_s": round((int(a1) - int(a0)) / tick, 3),
          "node_b_rss_kib": int(rss), "delivered_on_a": b.get("delivered"), "lost": b.get("lost")})

def sweep(metrics_before, metrics_after, cpu0, cpu1, tick, first_drop, emptied, publishes, users, fill, probe):
    """A sweep that takes a whole fill past retention: how long the log took to empty (polled
    every 0.1 s), what publishes meanwhile waited (the probe), and herald's CPU."""
    def series(path):
        out = {}
        for line in open(path):
            if line.startswith("herald_retention_sweep_seconds_") and " " in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out
    a, b = series(metrics_before), series(metrics_after)
    # (a herald older than the metric has none: then the count is unknown)
    count = "herald_retention_sweep_seconds_count"
    n = b[count] - a[count] if count in b else None
    first_drop, emptied = float(first_drop), float(emptied)
    removed = int(publishes) - int(users) * 10
    load = lambda path: json.load(open(path)) if os.path.getsize(path) else {}
    f, p = load(fill), load(probe)
    emit({"measure": "sqlite_sweep", "history_limit": 10, "publishes": int(publishes),
          "users": int(users), "events_past_retention": removed,
          "sweeps": int(n) if n is not None else None, "emptied_in_s": round(emptied - first_drop, 2) if first_drop and emptied else None,
          "herald_cpu_s_meanwhile": round((int(cpu1) - int(cpu0)) / float(tick), 3),
          "probe_publishes": p.get("publish_ok"),
          "probe_publish_latency_p99_ms": p.get("publish_latency_p99_ms"),
          "probe_publish_latency_max_ms": p.get("publish_latency_max_ms"),
          "fill_publish_per_s": f.get("publish_per_s")})

def table(path):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    print("| measurement | history limit | figure | value |")
    print("|---|---|---|---|")
    for r in rows:
        m, L = r.get("measure"), r.get("history_limit")
        if m == "sqlite_disk":
            for k in ("stored", "disk_bytes", "disk_bytes_per_publish", "disk_bytes_per_stored",
                      "notifications_table_bytes_per_stored", "events_table_bytes_per_event",
                      "wal_bytes_before_stop", "publish_per_s"):
                print("| SQLite disk (%d publishes, %d users) | %s | %s | %s |" % (r["publishes"], r["users"], L, k, r[k]))
        elif m == "redis_memory":
            for k in ("stored", "used_memory_delta", "used_memory_delta_per_stored",
                      "used_memory_delta_less_streams_per_stored",
                      "history_bytes_per_stored", "history_bytes_per_user",
                      "user_events_bytes_per_entry", "log_bytes_per_entry"):
                print("| Redis memory (%d users, %d publishes) | %s | %s | %s |" % (r["users"], r["publishes"], L, k, r[k]))
        elif m == "redis_memory_freed":
            for k in ("history_freed_per_stored", "history_freed_per_user", "user_events_freed_per_entry",
                      "log_freed_per_entry"):
                print("| Redis memory freed by DEL (%d users, %d stored) | %s | %s | %s |" % (r["users"], r["stored"], L, k, r[k]))
        elif m == "redis_cpu":
            extra = " (%s marked read)" % r["updated"] if r["op"] == "read-all" else ""
            print("| Redis CPU per %s (%d ops%s) | %s | script usec/op; Redis CPU usec/op; scripts/op | %s; %s; %s |"
                  % (r["op"], r["ops"], extra, L, r["script_usec_per_op"], r["redis_cpu_usec_per_op"],
                     r["script_calls_per_op"]))
        elif m == "sqlite_sweep":
            print("| SQLite sweep (%d events past retention, %s sweeps) | %s | log emptied in s; herald CPU s meanwhile; probe publish p99 / max ms | %s; %s; %s / %s |"
                  % (r["events_past_retention"], r["sweeps"], L, r["emptied_in_s"], r["herald_cpu_s_meanwhile"],
                     r["probe_publish_latency_p99_ms"], r["probe_publish_latency_max_ms"]))
        elif m == "follow_log":
            print("| follow the log: node B, no streams (%s events in %s s, %s/s) | %s | node B cores per 1,000 events/s (us per event; idle cores) | %s (%s; %s) |"
                  % (r["publishes"], r["publish_s"], r["events_per_s"], L, r["node_b_cores_per_1000_events_s"],
                     r["node_b_cpu_us_per_event"], r["node_b_idle_cpu_s_per_s"]))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"redis-op": redis_op, "redis-mem": redis_mem, "redis-drop": redis_drop, "ids": ids, "post": post,
     "sqlite-disk": sqlite_disk, "follow": follow, "sweep": sweep, "table": table}[cmd](*args)
PY
UC="python3 $WORK/uc.py"

start_herald() { # PORT DATA-DIR ARGS...: sets HPID
  local port=$1 data=$2; shift 2
  HERALD_LOG=warn "$HERALD" serve --listen 127.0.0.1:$port --data-dir "$data" \
    --max-connections 20000 --max-connections-per-user 100000 --shutdown-timeout 5 "$@" \
    >/dev/null 2>>"$WORK/herald-$port.log" &
  HPID=$!
  PIDS+=($HPID)
  wait_for_port $port
}

range=0
bench_targeted() { # OUT-JSON PORT-SUB PORT-PUB USERS PUBLISHES PREFIX PID [ARGS...]
  local out=$1 sub=$2 pub=$3 users=$4 n=$5 prefix=$6 pid=$7; shift 7
  range=$((range % 250 + 1))
  timeout 600 "$BENCH" targeted --users "$users" --publishes "$n" --concurrency 32 \
    --sub-url "http://127.0.0.1:$sub/events/{user}" --pub-url "http://127.0.0.1:$pub/api/notifications/{user}" \
    --server-pid "$pid" --user-prefix "$prefix" --pub-body "$BODY" --source-addrs 127.$range.0.1-127.$range.0.4 \
    --label unit-costs --json "$@" 2>>"$WORK/bench.log" | tail -1 >"$out"
  [ -s "$out" ] || echo "bench: targeted $prefix produced no figures" >&2
}

proc_cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
redis_cpu() { redis-cli -p $REDIS_PORT INFO cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'; }
now() { date +%s.%N; }
used_memory() { redis-cli -p $REDIS_PORT INFO memory | awk -F: '/^used_memory:/ {print $2+0}'; }

echo "# $(machine); $(redis-server --version | cut -d' ' -f3)" >&2

# --- 1. SQLite: disk bytes per stored notification -------------------------------------------
if [[ " $STEPS " == *" sqlite "* ]]; then
  for limit in $SQ_LIMITS; do
    data=$WORK/sqlite-$limit
    start_herald $PORT_A "$data" --sync normal --history-limit "$limit"
    bench_targeted "$WORK/sq-$limit.json" $PORT_A $PORT_A "$SQ_USERS" "$SQ_PUBLISHES" "sq$limit-" $HPID
    wal=$(stat -c %s "$data/herald.db-wal" 2>/dev/null || echo 0)
    stop_pid $HPID
    $UC sqlite-disk "$data" "$limit" "$SQ_USERS" "$SQ_PUBLISHES" "$wal" "$WORK/sq-$limit.json" | tee -a "$RESULTS"
  done
fi

# --- 2 and 3. Redis: memory per stored notification, CPU per operation ------------------------
start_redis() {
  mkdir -p "$WORK/redis"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly no \
    --logfile redis.log --daemonize no &
  REDIS_PID=$!
  PIDS+=($REDIS_PID)
  wait_for_port $REDIS_PORT
}

# Redis CPU of OPS operations made by `COMMAND...` (run after CONFIG RESETSTAT).
measure_op() { # OP LIMIT OPS EXTRA-JSON-FILE COMMAND...
  local op=$1 limit=$2 ops=$3 extra=$4; shift 4
  local t0 t1 c0
  redis-cli -p $REDIS_PORT CONFIG RESETSTAT >/dev/null
  c0=$(redis_cpu); t0=$(now)
  "$@"
  t1=$(now)
  $UC redis-op $REDIS_PORT "$op" "$limit" "$ops" "$(echo "$t1 - $t0" | bc)" "$c0" "$extra" \
    | tee -a "$RESULTS"
}

post_file() { # FILE OUT: POSTs each line of FILE to node A
  $UC post 127.0.0.1:$PORT_A "$1" >"$2"
}

if [[ " $STEPS " == *" redis "* || " $STEPS " == *" follow "* ]]; then
  start_redis
fi

if [[ " $STEPS " == *" redis "* ]]; then
  for limit in $R_LIMITS; do
    redis-cli -p $REDIS_PORT FLUSHALL >/dev/null
    start_herald $PORT_A "$WORK/r$limit" --redis-url redis://127.0.0.1:$REDIS_PORT/0 --history-limit "$limit"
    sleep 1
    used0=$(used_memory)
    per_user=$((limit * 2 > limit + 100 ? limit * 2 : limit + 100))
    fill=$((R_USERS * per_user))
    bench_targeted "$WORK/fill-$limit.json" $PORT_A $PORT_A "$R_USERS" "$fill" "r$limit-" $HPID
    sleep 1
    $UC redis-mem $REDIS_PORT $PREFIX "$limit" "$R_USERS" "$fill" "$used0" | tee -a "$RESULTS"
    # MEMORY USAGE is an estimate: also what DEL of each kind of key frees, herald stopped
    stop_pid $HPID
    $UC redis-drop $REDIS_PORT $PREFIX "$limit" "$R_USERS" | tee -a "$RESULTS"

    # the same fill again, for the CPU figures on full histories
    redis-cli -p $REDIS_PORT FLUSHALL >/dev/null
    start_herald $PORT_A "$WORK/r$limit" --redis-url redis://127.0.0.1:$REDIS_PORT/0 --history-limit "$limit"
    bench_targeted "$WORK/refill-$limit.json" $PORT_A $PORT_A "$R_USERS" "$fill" "r$limit-" $HPID

    # publish: to the same users, whose histories are full (each publish drops the oldest); the
    # bench also opens and closes one stream per user (a presence script each way)
    measure_op publish "$limit" "$CPU_PUBLISHES" "$WORK/cpu-pub-$limit.json" \
      bench_targeted "$WORK/cpu-pub-$limit.json" $PORT_A $PORT_A "$R_USERS" "$CPU_PUBLISHES" "r$limit-" $HPID

    # broadcast: no streams open
    for _ in $(seq "$CPU_BROADCASTS"); do printf '/api/broadcast\t{"title":"t","message":"%s %s"}\n' "$(date +%s%N)" "$PAD"; done >"$WORK/bc.txt"
    measure_op broadcast "$limit" "$CPU_BROADCASTS" "$WORK/bc-out.json" post_file "$WORK/bc.txt" "$WORK/bc-out.json"

    # mark one read: unread notifications, round robin over the users (ids listed beforehand)
    # at most half of what is stored, so that read-all still has unread notifications to mark
    reads=$CPU_READS; [ "$reads" -gt $((R_USERS * limit / 2)) ] && reads=$((R_USERS * limit / 2))
    $UC ids 127.0.0.1:$PORT_A $PREFIX $REDIS_PORT "$reads" >"$WORK/reads.txt"
    nreads=$(grep -c . "$WORK/reads.txt")
    measure_op read "$limit" "$nreads" "$WORK/read-out.json" post_file "$WORK/reads.txt" "$WORK/read-out.json"

    # read-all: once per user, each with its remaining unread notifications
    redis-cli -p $REDIS_PORT --scan --pattern "$PREFIX:user:*:list" | cut -d: -f3 | sort |
      while read -r u; do printf '/api/notifications/%s/read-all\t\n' "$u"; done >"$WORK/readall.txt"
    nall=$(grep -c . "$WORK/readall.txt")
    measure_op read-all "$limit" "$nall" "$WORK/readall-out.json" post_file "$WORK/readall.txt" "$WORK/readall-out.json"
    stop_pid $HPID
  done
fi

# --- 4. Following the log: node B's CPU for events of users it has no stream of ---------------
if [[ " $STEPS " == *" follow "* ]]; then
  redis-cli -p $REDIS_PORT FLUSHALL >/dev/null
  start_herald $PORT_A "$WORK/fa" --redis-url redis://127.0.0.1:$REDIS_PORT/0 --history-limit 100; A=$HPID
  start_herald $PORT_B "$WORK/fb" --redis-url redis://127.0.0.1:$REDIS_PORT/0 --history-limit 100; B=$HPID
  sleep 2
  i0=$(proc_cpu $B); sleep 10; i1=$(proc_cpu $B)
  b0=$(proc_cpu $B); a0=$(proc_cpu $A); t0=$(now)
  bench_targeted "$WORK/follow.json" $PORT_A $PORT_A 1000 $((FOLLOW_RATE * FOLLOW_SECONDS)) "f-" $A --rate "$FOLLOW_RATE"
  t1=$(now); b1=$(proc_cpu $B); a1=$(proc_cpu $A)
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$B/status)
  $UC follow 100 "$TICK" 10 "$i0" "$i1" "$(echo "$t1 - $t0" | bc)" "$b0" "$b1" "$a0" "$a1" "$WORK/follow.json" "$rss" \
    | tee -a "$RESULTS"
  stop_pid $A; stop_pid $B
fi

# --- 5. The SQLite retention sweep ------------------------------------------------------------
if [[ " $STEPS " == *" sweep "* ]]; then
  start_herald $PORT_A "$WORK/sw" --history-limit 10 --retention-age "$SW_AGE" --sync normal
  bench_targeted "$WORK/sweep-fill.json" $PORT_A $PORT_A "$SW_USERS" "$SW_PUBLISHES" "sw-" $HPID
  scrape() { curl -sf -m 5 "http://127.0.0.1:$PORT_A/metrics" >"$1"; }
  buffered() { curl -sf -m 5 "http://127.0.0.1:$PORT_A/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["eventsBuffered"])'; }
  scrape "$WORK/m0"; c0=$(proc_cpu $HPID)
  # a probe publishing 200/s for 40 s to other users, across the next sweep (every 30 s),
  # which takes everything the fill wrote past retention; meanwhile, when the log empties
  bench_targeted "$WORK/sweep-probe.json" $PORT_A $PORT_A 100 8000 "probe-" $HPID --rate 200 &
  probe=$!
  t0=$(now); first_drop=""; emptied=""
  while kill -0 $probe 2>/dev/null; do
    b=$(buffered)
    if [ -z "$first_drop" ] && [ "$b" -lt "$SW_PUBLISHES" ]; then first_drop=$(now); fi
    if [ -z "$emptied" ] && [ "$b" -lt 10000 ]; then emptied=$(now); fi
    sleep 0.1
  done
  wait $probe
  scrape "$WORK/m1"; c1=$(proc_cpu $HPID)
  $UC sweep "$WORK/m0" "$WORK/m1" "$c0" "$c1" "$TICK" "${first_drop:-0}" "${emptied:-0}" "$SW_PUBLISHES" "$SW_USERS" \
    "$WORK/sweep-fill.json" "$WORK/sweep-probe.json" | tee -a "$RESULTS"
  stop_pid $HPID
fi

echo
$UC table "$RESULTS"
