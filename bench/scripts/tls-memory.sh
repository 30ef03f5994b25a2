#!/usr/bin/env bash
# Issue 16's TLS memory: what an idle stream and an idle connection cost herald over HTTPS.
# Each run starts a fresh herald with a self-signed certificate for localhost (openssl), and
# holds STREAMS idle streams: plain HTTP/1.1 (`hold`, the baseline), then over TLS with
# `hold-tls` on HTTP/1.1 (a connection each) and on HTTP/2 with 1 and with 100 streams per
# connection. Prints the JSON lines and a table of medians, with HTTP/2's cost per additional
# stream on a connection. Loopback only; every server is killed by its PID.
#   bench/scripts/tls-memory.sh          # RUNS=3 STREAMS=5000 by default
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
STREAMS=${STREAMS:-5000}
WORK=${TMPDIR:-/tmp}/herald-tls-memory
rm -rf "$WORK"; mkdir -p "$WORK"
source bench/scripts/lib.sh
build_binaries

# A leaf certificate (not a CA: rustls refuses a CA as a server's certificate) for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
TLS="--tls-cert $WORK/cert.pem --tls-key $WORK/key.pem"

MODES=(
  "plain|hold --streams $STREAMS --connect-concurrency 100"
  "tls-h1|hold-tls --streams $STREAMS --connect-concurrency 100"
  "tls-h2-1|hold-tls --streams $STREAMS --connect-concurrency 100 --http2 --streams-per-connection 1"
  "tls-h2-100|hold-tls --streams $STREAMS --connect-concurrency 100 --http2 --streams-per-connection 100"
)
for _ in $(seq "$RUNS"); do
  for mode in "${MODES[@]}"; do
    label=${mode%%|*} case=${mode#*|}
    if [ "$label" = plain ]; then
      HERALD_EXTRA= start_server herald
      # shellcheck disable=SC2086
      record "$label" "$case" $case --server-pid "$SERVER_PID" \
        --sub-url "http://127.0.0.1:$SERVER_PORT/events/{user}"
    else
      HERALD_EXTRA=$TLS start_server herald
      # shellcheck disable=SC2086
      record "$label" "$case" $case --server-pid "$SERVER_PID" \
        --tls-url "https://localhost:$SERVER_PORT/events/{user}" --ca-cert "$WORK/cert.pem"
    fi
    stop_server
  done
done

cat "$RESULTS"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def runs(label, key):
    return [r[key] for r in rows if r["label"] == label and r.get(key) is not None]
def med(label, key):
    values = runs(label, key)
    return statistics.median(values) if values else None
print("\n| mode | streams opened (failures) | connections | RSS per stream KiB | RSS per connection KiB |")
print("|---|---|---|---|---|")
for label in ["plain", "tls-h1", "tls-h2-1", "tls-h2-100"]:
    opened, failed = runs(label, "opened"), runs(label, "open_failures")
    per_stream = med(label, "server_rss_per_stream_kib")
    per_conn = med(label, "server_rss_per_connection_kib")
    conns = med(label, "connections")
    print(f"| {label} | {min(opened, default=0)}-{max(opened, default=0)} ({sum(failed)}) "
          f"| {conns if conns is not None else min(opened, default=0)} "
          f"| {per_stream} (runs {runs(label, 'server_rss_per_stream_kib')}) "
          f"| {per_conn if per_conn is not None else per_stream} |")
# HTTP/2: a connection with one stream costs c1; with 100 streams, the 99 more cost the rest.
c1, s100, n100 = med("tls-h2-1", "server_rss_per_stream_kib"), med("tls-h2-100", "server_rss_per_stream_kib"), med("tls-h2-100", "connections")
if None not in (c1, s100, n100):
    streams = med("tls-h2-100", "opened")
    extra = (streams * s100 - n100 * c1) / (streams - n100)
    print(f"\nHTTP/2, per additional stream on a connection: {extra:.2f} KiB "
          f"(({streams:.0f} x {s100} - {n100:.0f} x {c1}) / ({streams:.0f} - {n100:.0f}))")
PY
