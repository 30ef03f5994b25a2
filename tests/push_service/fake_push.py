#!/usr/bin/env python3
"""A fake Web Push service for herald's tests: it hands out browser-like subscriptions, checks
every push the way a push service must (VAPID, aes128gcm, TTL/Urgency/Topic) with code that
shares nothing with herald's own (http_ece and cryptography, not Rust), and records what came.

Usage: fake_push.py --port 0 --vapid-public-key KEY --subject SUBJECT
  It binds 127.0.0.1 only, prints one first line `listening http://127.0.0.1:PORT` and exits
  when its stdin closes, so a test that dies never leaves it behind.

  POST /subscriptions   {"behavior": B} (optional) -> 201 {"id", "endpoint", "keys"}
      B: "ok" (201), "gone" (410), "notfound" (404), "hang" (never answers: the connection stays
      open until the client closes it or 120 s pass), or {"status": 429|500|503, "times": N,
      "retryAfter": S (optional)}: N answers of that status (with `Retry-After: S` when given),
      then 201.
  POST /push/ID         a push. A push that fails a check is answered 400 with the reason; a
      valid one per its subscription's behavior. Every push is recorded, an unknown ID (404) too.
  GET /received?after=N&wait=S
      -> 200 [record...]: the records with seq > N, waiting up to S seconds for one to come.

A record: {"seq", "subscription", "status" (null while a "hang" holds it), "error" (null or the
reason for a 400 or a 404), "payload" (the decrypted JSON or null), "bodyBytes",
"headers": {"ttl", "urgency", "topic"}, "jwt": {"aud", "exp", "sub"} (once the signature is
verified, else null), "receivedAtMs"}.

TTL, Urgency and Topic are all required, which is stricter than RFC 8030 (it lets a sender
leave out Urgency and Topic): herald is to send each with every push, so a missing one is a bug
this should show.
"""

import argparse
import base64
import binascii
import json
import os
import re
import secrets
import select
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

URGENCIES = ("very-low", "low", "normal", "high")
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The longest a VAPID token may live: exp at most 24 hours ahead (RFC 8292, section 2).
MAX_JWT_LIFETIME_S = 24 * 60 * 60
# How long a "hang" subscription holds a push before it lets the connection go.
HANG_S = 120
# The aes128gcm header before the key id: salt (16), record size (4), key id length (1).
ECE_HEADER = 21


class Rejected(Exception):
    """A push that fails a check: answered 400 with this reason."""


def b64url_decode(text):
    """Base64url without padding, as JWTs and subscription keys are written; strict, so a
    padded or standard-alphabet value from herald is caught here."""
    if not BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError(f"not unpadded base64url: {text[:40]!r}")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_behavior(body):
    """The behavior a subscription asks for, checked so that a test's typo fails at once."""
    behavior = body.get("behavior", "ok")
    if behavior in ("ok", "gone", "notfound", "hang"):
        return behavior
    if not isinstance(behavior, dict):
        raise ValueError(f"unknown behavior {behavior!r}")
    unknown = set(behavior) - {"status", "times", "retryAfter"}
    if unknown:
        raise ValueError(f"unknown behavior fields {sorted(unknown)}")
    status, times = behavior.get("status"), behavior.get("times")
    retry_after = behavior.get("retryAfter")
    if status not in (429, 500, 503):
        raise ValueError("behavior status must be 429, 500 or 503")
    if not is_int(times) or times < 0:
        raise ValueError("behavior times must be a non-negative integer")
    if retry_after is not None and (not is_int(retry_after) or retry_after < 0):
        raise ValueError("behavior retryAfter must be a non-negative integer")
    return {"status": status, "times": times, "retryAfter": retry_after}


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Subscription:
    """One browser's subscription: its keys and what its push service answers."""

    def __init__(self, sub_id, behavior):
        self.id = sub_id
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.p256dh = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self.auth = secrets.token_bytes(16)
        self.behavior = behavior
        # Failures still owed by a {"status", "times"} behavior; changed under Service.lock.
        self.failures_left = behavior["times"] if isinstance(behavior, dict) else 0


class Service:
    """The subscriptions and the records, shared by every handler thread under one lock; the
    condition wakes `GET /received` waiters when a record is added."""

    def __init__(self, origin, vapid_key_b64, vapid_key, subject):
        self.origin = origin
        self.vapid_key_b64 = vapid_key_b64
        self.vapid_key = vapid_key
        self.subject = subject
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.subscriptions = {}
        self.records = []

    def subscribe(self, behavior):
        sub = Subscription(secrets.token_hex(8), behavior)
        with self.lock:
            self.subscriptions[sub.id] = sub
        return sub

    def find(self, sub_id):
        with self.lock:
            return self.subscriptions.get(sub_id)

    def record(self, record):
        """Adds `record` with the next seq (from 1) and wakes the waiters."""
        with self.changed:
            record["seq"] = len(self.records) + 1
            self.records.append(record)
            self.changed.notify_all()
        return record["seq"]

    def answer_for(self, sub):
        """The status a valid push to `sub` gets now, and its Retry-After (or None); None for
        the status of a "hang"."""
        behavior = sub.behavior
        if behavior == "ok":
            return 201, None
        if behavior == "gone":
            return 410, None
        if behavior == "notfound":
            return 404, None
        if behavior == "hang":
            return None, None
        with self.lock:
            if sub.failures_left > 0:
                sub.failures_left -= 1
                return behavior["status"], behavior["retryAfter"]
        return 201, None

    def received_after(self, after, wait):
        with self.changed:
            self.changed.wait_for(lambda: len(self.records) > after, timeout=wait)
            return self.records[after:]

    def verify_vapid(self, authorization, record):
        """RFC 8292: `vapid t=JWT, k=KEY`, KEY the server's key, an ES256 JWT signed with it
        whose aud is this origin, exp within 24 h and sub the subject. Sets record["jwt"] once
        the signature holds."""
        if authorization is None:
            raise Rejected("no Authorization header")
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != "vapid":
            raise Rejected(f"Authorization scheme is {scheme!r}, not vapid")
        params = {}
        for part in rest.split(","):
            name, eq, value = part.strip().partition("=")
            name = name.strip().lower()
            if not eq or not name:
                raise Rejected(f"Authorization parameter {part.strip()!r} is not name=value")
            if name in params:
                raise Rejected(f"Authorization has {name} twice")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params[name] = value
        if "t" not in params or "k" not in params:
            raise Rejected("Authorization lacks t= or k=")
        if params["k"] != self.vapid_key_b64:
            raise Rejected(f"k={params['k']} is not the server's VAPID key")

        parts = params["t"].split(".")
        if len(parts) != 3:
            raise Rejected("t is not a JWT of three parts")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError) as e:
            raise Rejected(f"JWT is malformed: {e}") from None
        alg = header.get("alg") if isinstance(header, dict) else None
        if alg != "ES256":
            raise Rejected(f"JWT alg is {alg!r}, not ES256")
        if len(signature) != 64:
            raise Rejected(f"ES256 signature is {len(signature)} bytes, not 64 (r || s)")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            self.vapid_key.verify(
                encode_dss_signature(r, s),
                f"{parts[0]}.{parts[1]}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            raise Rejected("JWT signature does not verify against k") from None
        if not isinstance(claims, dict):
            raise Rejected("JWT claims are not an object")
        aud, exp, sub = claims.get("aud"), claims.get("exp"), claims.get("sub")
        if not isinstance(aud, str) or not isinstance(sub, str):
            raise Rejected("JWT aud and sub must be strings")
        if not is_int(exp) or exp < 0:
            raise Rejected("JWT exp must be a non-negative integer")
        record["jwt"] = {"aud": aud, "exp": exp, "sub": sub}
        if aud != self.origin:
            raise Rejected(f"JWT aud is {aud!r}, not {self.origin!r}")
        now = time.time()
        if exp <= now:
            raise Rejected(f"JWT expired: exp {exp} <= now {now:.0f}")
        if exp > now + MAX_JWT_LIFETIME_S:
            raise Rejected(f"JWT exp {exp} is more than 24 h after now {now:.0f}")
        if sub != self.subject:
            raise Rejected(f"JWT sub is {sub!r}, not {self.subject!r}")

    def decrypt(self, sub, body):
        """RFC 8291: one aes128gcm record whose key id is the sender's 65-byte P-256 point,
        decrypted with the subscription's keys, holding UTF-8 JSON."""
        if len(body) < ECE_HEADER:
            raise Rejected(f"body of {len(body)} bytes is shorter than an aes128gcm header")
        (record_size,) = struct.unpack("!I", body[16:20])
        key_id_len = body[20]
        if key_id_len != 65:
            raise Rejected(f"aes128gcm key id is {key_id_len} bytes, not a 65-byte P-256 point")
        if len(body) - ECE_HEADER - key_id_len > record_size:
            raise Rejected("the body is more than one aes128gcm record")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        except Exception as e:  # http_ece raises its own, cryptography's and ValueError
            reason = getattr(e, "message", None) or str(e) or type(e).__name__
            raise Rejected(f"aes128gcm decryption failed: {reason}") from None
        try:
            return json.loads(plain.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Rejected("the decrypted payload is not UTF-8 JSON") from None


def check_headers(headers, record):
    """TTL, Urgency and Topic (RFC 8030, section 5), after they were copied into record."""
    ttl = headers.get("TTL")
    if ttl is None or not ttl.isascii() or not ttl.isdigit():
        raise Rejected(f"TTL {ttl!r} is not a non-negative integer")
    urgency = headers.get("Urgency")
    if urgency not in URGENCIES:
        raise Rejected(f"Urgency {urgency!r} is not one of {', '.join(URGENCIES)}")
    topic = headers.get("Topic")
    if topic is None or not TOPIC.fullmatch(topic):
        raise Rejected(f"Topic {topic!r} is not 1 to 32 base64url characters")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # herald may open many connections at once under a bench; the default backlog is 5.
    request_queue_size = 128


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, the body's write waits on the client's delayed ACK of the head (~40 ms a push).
    disable_nagle_algorithm = True
    service = None  # the Service, set before serving

    def log_message(self, format, *args):
        pass  # 10,000 pushes of a bench would be 10,000 lines

    def send(self, status, body=b"", content_type="text/plain", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, value):
        self.send(status, json.dumps(value), "application/json")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        path = urlsplit(self.path).path
        body = self.read_body()
        if path == "/subscriptions":
            self.create_subscription(body)
        elif path.startswith("/push/"):
            self.push(path[len("/push/"):], body)
        else:
            self.send(404, "no such route")

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/received":
            self.send(404, "no such route")
            return
        query = parse_qs(url.query)
        try:
            after = int(query.get("after", ["0"])[0])
            wait = float(query.get("wait", ["0"])[0])
        except ValueError:
            self.send(400, "after must be an integer and wait a number of seconds")
            return
        self.send_json(200, self.service.received_after(max(after, 0), max(wait, 0.0)))

    def create_subscription(self, body):
        try:
            request = json.loads(body) if body.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            behavior = parse_behavior(request)
        except ValueError as e:
            self.send(400, str(e))
            return
        sub = self.service.subscribe(behavior)
        self.send_json(
            201,
            {
                "id": sub.id,
                "endpoint": f"{self.service.origin}/push/{sub.id}",
                "keys": {"p256dh": b64url_encode(sub.p256dh), "auth": b64url_encode(sub.auth)},
            },
        )

    def push(self, sub_id, body):
        service = self.service
        ttl = self.headers.get("TTL")
        record = {
            "seq": None,
            "subscription": sub_id,
            "status": None,
            "error": None,
            "payload": None,
            "bodyBytes": len(body),
            "headers": {
                "ttl": int(ttl) if ttl and ttl.isascii() and ttl.isdigit() else None,
                "urgency": self.headers.get("Urgency"),
                "topic": self.headers.get("Topic"),
            },
            "jwt": None,
            "receivedAtMs": int(time.time() * 1000),
        }
        sub = service.find(sub_id)
        if sub is None:
            record["status"], record["error"] = 404, "no such subscription"
            service.record(record)
            self.send(404, "no such subscription")
            return
        try:
            encoding = self.headers.get("Content-Encoding")
            if (encoding or "").strip().lower() != "aes128gcm":
                raise Rejected(f"Content-Encoding is {encoding!r}, not aes128gcm")
            service.verify_vapid(self.headers.get("Authorization"), record)
            check_headers(self.headers, record)
            record["payload"] = service.decrypt(sub, body)
        except Rejected as e:
            record["status"], record["error"] = 400, str(e)
            service.record(record)
            self.send(400, str(e))
            return

        status, retry_after = service.answer_for(sub)
        record["status"] = status
        seq = service.record(record)
        if status is None:
            self.hang()
        elif status == 201:
            self.send(201, headers=[("Location", f"{service.origin}/message/{seq}")])
        elif retry_after is not None:
            self.send(status, headers=[("Retry-After", str(retry_after))])
        else:
            self.send(status)

    def hang(self):
        """Holds the connection without answering until the client closes it or HANG_S pass."""
        self.close_connection = True
        deadline = time.monotonic() + HANG_S
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable and not self.connection.recv(4096):
                return


def read_vapid_key(text):
    try:
        point = b64url_decode(text)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, binascii.Error) as e:
        sys.exit(f"--vapid-public-key is not a base64url uncompressed P-256 point: {e}")


def exit_when_stdin_closes():
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--vapid-public-key", required=True)
    parser.add_argument("--subject", required=True)
    args = parser.parse_args()
    if not args.subject.startswith(("mailto:", "https://")):
        sys.exit("--subject must start with mailto: or https://")
    vapid_key = read_vapid_key(args.vapid_public_key)

    server = Server(("127.0.0.1", args.port), Handler)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    Handler.service = Service(origin, args.vapid_public_key, vapid_key, args.subject)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"listening {origin}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
