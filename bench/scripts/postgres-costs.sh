#!/usr/bin/env bash
# Issue 17, design C's history store: what herald's history rows would cost in PostgreSQL
# (docs/scaling.md, section 4). A PostgreSQL of our own (initdb in WORK, run as the `postgres`
# user, on port PG_PORT, fsync and synchronous_commit on, as herald's `--sync full`) gets
# herald's SQLite layout (`events` with its per-user index, `notifications` keyed by event),
# then pgbench, on the same two cores:
#  1. publishes: one transaction inserting an event and its notification for a random user
#     of USERS, CLIENTS at once, for SECONDS; then, for each N in BATCHES, transactions of N
#     publishes each, as herald's writer groups them (rows/s = transactions/s x N);
#  2. history reads: the newest 20 notifications of a random user, through the per-user index;
# and the tables' size per stored notification. Loopback only (a Unix socket in WORK); the
# server is stopped by its PID on exit.
#   bench/scripts/postgres-costs.sh        # USERS=200000 CLIENTS=32 DURATION_S=20 BATCHES="4 16"
set -uo pipefail
cd "$(dirname "$0")/../.."
WORK=${TMPDIR:-/tmp}/herald-postgres-costs
USERS=${USERS:-200000}
CLIENTS=${CLIENTS:-32}
SECONDS_EACH=${DURATION_S:-20}
PG_PORT=${PG_PORT:-5499}
BATCHES=${BATCHES:-4 16}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
rm -rf "$WORK"; mkdir -p "$WORK"; chown postgres "$WORK"
as_pg() { runuser -u postgres -- "$@"; }

as_pg "$PG_BIN/initdb" -D "$WORK/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 || {
  echo "initdb failed: $WORK/initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/postgres" -D "$WORK/data" -p "$PG_PORT" -k "$WORK" -c listen_addresses='' \
  -c fsync=on -c synchronous_commit=on -c shared_buffers=256MB >"$WORK/postgres.log" 2>&1 &
PG_PID=$!
# runuser does not pass signals on: pg_ctl stops the server by the PID in its own pid file.
trap 'as_pg "$PG_BIN/pg_ctl" stop -D "$WORK/data" -m fast >/dev/null 2>&1; wait $PG_PID 2>/dev/null' EXIT
for _ in $(seq 100); do as_pg "$PG_BIN/pg_isready" -q -h "$WORK" -p "$PG_PORT" && break; sleep 0.1; done
psql_() { as_pg psql -q -X -h "$WORK" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

# herald's SQLite layout (src/store/sqlite/schema.rs), in PostgreSQL's types.
psql_ <<'SQL'
CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,
    user_id    TEXT,
    name       TEXT   NOT NULL,
    data       TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    subject    TEXT,
    expires_ms BIGINT
);
CREATE INDEX events_by_user ON events (user_id, seq);
CREATE TABLE notifications (
    seq        BIGINT  PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    user_id    TEXT    NOT NULL,
    body       TEXT,
    read       BOOLEAN NOT NULL DEFAULT false,
    category   TEXT,
    archived   BOOLEAN NOT NULL DEFAULT false,
    expires_ms BIGINT
);
CREATE INDEX notifications_expiring ON notifications (expires_ms) WHERE expires_ms IS NOT NULL;
SQL

# A notification's event as herald stores it: ~100 characters of message in its JSON.
cat >"$WORK/publish.sql" <<SQL
\set u random(1, $USERS)
BEGIN;
WITH e AS (
  INSERT INTO events (user_id, name, data, created_ms, subject)
  VALUES ('user' || :u, 'notification',
          '{"id":"' || gen_random_uuid() || '","type":"info","title":"t","message":"' || repeat('x', 100) || '","timestamp":"2026-12-06T00:00:00.000Z","read":false}',
          (extract(epoch from now()) * 1000)::bigint, gen_random_uuid()::text)
  RETURNING seq, user_id, subject)
INSERT INTO notifications (seq, id, user_id) SELECT seq, subject, user_id FROM e;
END;
SQL
for n in $BATCHES; do
  cat >"$WORK/publish-$n.sql" <<SQL
BEGIN;
WITH e AS (
  INSERT INTO events (user_id, name, data, created_ms, subject)
  SELECT 'user' || (1 + floor(random() * $USERS))::int, 'notification',
         '{"id":"' || gen_random_uuid() || '","type":"info","title":"t","message":"' || repeat('x', 100) || '","timestamp":"2026-12-06T00:00:00.000Z","read":false}',
         (extract(epoch from now()) * 1000)::bigint, gen_random_uuid()::text
    FROM generate_series(1, $n)
  RETURNING seq, user_id, subject)
INSERT INTO notifications (seq, id, user_id) SELECT seq, subject, user_id FROM e;
END;
SQL
done
cat >"$WORK/history.sql" <<SQL
\set u random(1, $USERS)
SELECT e.seq, e.data, n.read FROM events e JOIN notifications n ON n.seq = e.seq
 WHERE e.user_id = 'user' || :u ORDER BY e.seq DESC LIMIT 20;
SQL
chown postgres "$WORK"/*.sql

bench() { # LABEL SCRIPT [ROWS PER TRANSACTION]
  as_pg pgbench -n -h "$WORK" -p "$PG_PORT" -U postgres -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" \
    -f "$WORK/$2" postgres 2>&1 | tee "$WORK/$1.log" | grep -E "^tps|latency average"
  if [ -n "${3:-}" ]; then
    awk -v n="$3" '/^tps/ {printf "{\"publishes_per_transaction\": %d, \"publishes_per_s\": %.0f}\n", n, $3 * n}' "$WORK/$1.log"
  fi
}
echo "publishes ($CLIENTS clients, $SECONDS_EACH s, $USERS users):"
bench publish publish.sql 1
for n in $BATCHES; do
  echo "publishes, $n per transaction:"
  bench "publish-$n" "publish-$n.sql" "$n"
done
psql_ -c "CHECKPOINT" >/dev/null
echo "history reads (newest 20 of a user):"
bench history history.sql
psql_ -t -A -F ' ' -c "SELECT count(*), pg_total_relation_size('events'), pg_total_relation_size('notifications') FROM notifications" |
  while read -r rows events notifications; do
    python3 - "$rows" "$events" "$notifications" <<'PY'
import json, sys
rows, events, notes = map(int, sys.argv[1:])
print(json.dumps({"stored": rows, "events_bytes_per_stored": round(events / rows, 1),
                  "notifications_bytes_per_stored": round(notes / rows, 1),
                  "bytes_per_stored": round((events + notes) / rows, 1)}))
PY
  done
