#!/usr/bin/env python3
"""The fake push service (fake_push.py) checked on its own, before any herald test leans on it:
pushes encrypted here with http_ece and signed here with cryptography are decrypted, verified
and recorded; every behavior answers as it says; every check refuses what it should.

Run: target/push-venv/bin/python tests/push_service/selftest.py  (scripts/test runs it)
"""

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import unittest
from urllib.parse import urlsplit

import http_ece
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FAKE_PUSH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_push.py")
SUBJECT = "mailto:ops@example.com"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_point(private_key):
    return private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def start_fake_push(vapid_public_key):
    """The service as the Rust helper runs it; returns the process and its origin."""
    process = subprocess.Popen(
        [
            sys.executable,
            FAKE_PUSH,
            "--port",
            "0",
            "--vapid-public-key",
            vapid_public_key,
            "--subject",
            SUBJECT,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("listening http://127.0.0.1:"), f"first line: {line!r}"
    return process, line.split()[1]


class FakePushTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.vapid = ec.generate_private_key(ec.SECP256R1())
        cls.vapid_b64 = b64url(public_point(cls.vapid))
        cls.process, cls.origin = start_fake_push(cls.vapid_b64)
        cls.port = urlsplit(cls.origin).port

    @classmethod
    def tearDownClass(cls):
        cls.process.stdin.close()
        cls.process.wait(timeout=5)
        cls.process.stdout.close()

    # -- the client side: what herald does, written independently of herald ---------------

    def request(self, method, path, body=None, headers=None, timeout=5):
        """One request on a fresh connection: (status, headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def subscribe(self, behavior=None):
        body = None if behavior is None else json.dumps({"behavior": behavior})
        status, _, answer = self.request("POST", "/subscriptions", body)
        self.assertEqual(status, 201, answer)
        return json.loads(answer)

    def received(self, after, wait):
        status, _, answer = self.request("GET", f"/received?after={after}&wait={wait}")
        self.assertEqual(status, 200, answer)
        return json.loads(answer)

    def last_seq(self):
        records = self.received(0, 0)
        return records[-1]["seq"] if records else 0

    def jwt(self, aud=None, exp=None, sub=SUBJECT, key=None, alg="ES256"):
        header = b64url(json.dumps({"typ": "JWT", "alg": alg}).encode())
        claims = {"aud": aud or self.origin, "exp": exp or int(time.time()) + 12 * 3600}
        claims["sub"] = sub
        signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
        der = (key or self.vapid).sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def encrypt(self, subscription, plain, rs=4096):
        return http_ece.encrypt(
            plain,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=b64url_decode(subscription["keys"]["p256dh"]),
            auth_secret=b64url_decode(subscription["keys"]["auth"]),
            version="aes128gcm",
            rs=rs,
        )

    def push_headers(self, **overrides):
        headers = {
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": f"vapid t={self.jwt()}, k={self.vapid_b64}",
            "TTL": "60",
            "Urgency": "normal",
            "Topic": "n-0190e0d2",
        }
        for name, value in overrides.items():
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return headers

    def push(self, subscription, payload=None, body=None, **headers):
        """Posts a push to the subscription's endpoint; returns the answer and its record."""
        before = self.last_seq()
        if body is None:
            body = self.encrypt(subscription, json.dumps(payload or {"title": "t"}).encode())
        path = urlsplit(subscription["endpoint"]).path
        status, answer_headers, answer = self.request(
            "POST", path, body, self.push_headers(**headers)
        )
        records = self.received(before, 2)
        self.assertEqual(len(records), 1, records)
        self.assertEqual(records[0]["status"], status, records)
        return status, answer_headers, answer, records[0]

    # -- the tests --------------------------------------------------------------------------

    def test_a_subscription_has_keys_as_a_browser_makes_them(self):
        subscription = self.subscribe()
        self.assertEqual(set(subscription), {"id", "endpoint", "keys"})
        self.assertEqual(subscription["endpoint"], f"{self.origin}/push/{subscription['id']}")
        p256dh = b64url_decode(subscription["keys"]["p256dh"])
        self.assertEqual((len(p256dh), p256dh[0]), (65, 4))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
        self.assertEqual(len(b64url_decode(subscription["keys"]["auth"])), 16)
        self.assertNotEqual(self.subscribe()["keys"], subscription["keys"])

    def test_a_valid_push_is_decrypted_verified_and_recorded(self):
        subscription = self.subscribe("ok")
        payload = {"id": "0190e0d2", "title": "Build failed", "message": "ünïcödé", "n": 3}
        exp = int(time.time()) + 3600
        status, headers, answer, record = self.push(
            subscription,
            payload,
            Authorization=f"vapid t={self.jwt(exp=exp)}, k={self.vapid_b64}",
            TTL="86400",
            Urgency="high",
            Topic="abc-_XYZ0123456789abcdefghijklmn",
        )
        self.assertEqual(status, 201, answer)
        self.assertTrue(headers["Location"].startswith(self.origin))
        self.assertIsNone(record["error"])
        self.assertEqual(record["subscription"], subscription["id"])
        self.assertEqual(record["payload"], payload)
        self.assertEqual(
            record["headers"],
            {"ttl": 86400, "urgency": "high", "topic": "abc-_XYZ0123456789abcdefghijklmn"},
        )
        self.assertEqual(record["jwt"], {"aud": self.origin, "exp": exp, "sub": SUBJECT})
        self.assertGreater(record["bodyBytes"], 86)
        self.assertLess(abs(record["receivedAtMs"] - time.time() * 1000), 5000)

    def test_a_quoted_auth_param_and_any_order_are_accepted(self):
        subscription = self.subscribe()
        authorization = f'vapid k="{self.vapid_b64}", t="{self.jwt()}"'
        status, _, answer, record = self.push(subscription, Authorization=authorization)
        self.assertEqual((status, record["error"]), (201, None), answer)

    def test_retry_behaviors_fail_so_many_times_then_accept(self):
        for behavior, retry_after in [
            ({"status": 429, "times": 2, "retryAfter": 7}, "7"),
            ({"status": 503, "times": 2, "retryAfter": 0}, "0"),
            ({"status": 500, "times": 2}, None),
        ]:
            with self.subTest(behavior=behavior):
                subscription = self.subscribe(behavior)
                for _ in range(2):
                    status, headers, _, record = self.push(subscription)
                    self.assertEqual(status, behavior["status"])
                    self.assertEqual(headers.get("Retry-After"), retry_after)
                    self.assertIsNone(record["error"])
                    self.assertIsNotNone(record["payload"], "a retried push is still checked")
                status, _, _, _ = self.push(subscription)
                self.assertEqual(status, 201)

    def test_a_push_that_fails_a_check_does_not_use_up_a_failure(self):
        subscription = self.subscribe({"status": 503, "times": 1, "retryAfter": 1})
        status, _, _, _ = self.push(subscription, TTL=None)
        self.assertEqual(status, 400)
        self.assertEqual(self.push(subscription)[0], 503)
        self.assertEqual(self.push(subscription)[0], 201)

    def test_gone_and_notfound_answer_so_every_time(self):
        for behavior, want in [("gone", 410), ("notfound", 404)]:
            subscription = self.subscribe(behavior)
            for _ in range(2):
                status, _, _, record = self.push(subscription)
                self.assertEqual((status, record["error"]), (want, None))

    def test_a_push_to_an_unknown_subscription_is_404_and_recorded(self):
        unknown = {"id": "nope", "endpoint": f"{self.origin}/push/nope"}
        unknown["keys"] = self.subscribe()["keys"]
        status, _, _, record = self.push(unknown)
        self.assertEqual(status, 404)
        self.assertEqual(record["subscription"], "nope")
        self.assertEqual(record["error"], "no such subscription")

    def test_hang_never_answers_and_the_client_gives_up(self):
        subscription = self.subscribe("hang")
        body = self.encrypt(subscription, b'{"title":"t"}')
        before = self.last_seq()
        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            self.request("POST", f"/push/{subscription['id']}", body, self.push_headers(),
                         timeout=1.5)
        self.assertLess(time.monotonic() - started, 2.0)
        [record] = self.received(before, 1)
        self.assertIsNone(record["status"])
        self.assertEqual(record["payload"], {"title": "t"})
        # Other pushes are answered meanwhile.
        self.assertEqual(self.push(self.subscribe())[0], 201)

    def test_a_push_that_fails_a_check_is_400_with_the_reason(self):
        subscription = self.subscribe()
        other = self.subscribe()
        stranger = ec.generate_private_key(ec.SECP256R1())
        now = int(time.time())
        good_jwt = self.jwt()
        header, _, signature = good_jwt.split(".")
        claims = {"aud": self.origin, "exp": now + 3600, "sub": "mailto:x@example.com"}
        tampered = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
        vapid = lambda t, k=self.vapid_b64: f"vapid t={t}, k={k}"  # noqa: E731
        cases = [
            ("no Content-Encoding", {"Content-Encoding": None}, "Content-Encoding"),
            ("aesgcm", {"Content-Encoding": "aesgcm"}, "not aes128gcm"),
            ("no Authorization", {"Authorization": None}, "no Authorization"),
            ("Bearer", {"Authorization": f"Bearer {good_jwt}"}, "not vapid"),
            ("no k", {"Authorization": f"vapid t={good_jwt}"}, "lacks t= or k="),
            ("another k", {"Authorization": vapid(good_jwt, b64url(public_point(stranger)))},
             "not the server's VAPID key"),
            ("a bad signature", {"Authorization": vapid(self.jwt(key=stranger))},
             "signature does not verify"),
            ("claims changed after signing", {"Authorization": vapid(tampered)},
             "signature does not verify"),
            ("HS256", {"Authorization": vapid(self.jwt(alg="HS256"))}, "not ES256"),
            ("a padded token", {"Authorization": vapid(good_jwt + "=")}, "malformed"),
            ("another aud", {"Authorization": vapid(self.jwt(aud="http://127.0.0.1:1"))},
             "aud"),
            ("expired", {"Authorization": vapid(self.jwt(exp=now - 1))}, "expired"),
            ("exp past 24 h", {"Authorization": vapid(self.jwt(exp=now + 24 * 3600 + 60))},
             "more than 24 h"),
            ("another sub", {"Authorization": vapid(self.jwt(sub="mailto:x@example.com"))},
             "sub"),
            ("no TTL", {"TTL": None}, "TTL"),
            ("a negative TTL", {"TTL": "-1"}, "TTL"),
            ("a fractional TTL", {"TTL": "1.5"}, "TTL"),
            ("no Urgency", {"Urgency": None}, "Urgency"),
            ("another Urgency", {"Urgency": "urgent"}, "Urgency"),
            ("no Topic", {"Topic": None}, "Topic"),
            ("a long Topic", {"Topic": "a" * 33}, "Topic"),
            ("a Topic outside base64url", {"Topic": "a+b/c="}, "Topic"),
        ]
        for name, headers, reason in cases:
            with self.subTest(name):
                status, _, answer, record = self.push(subscription, **headers)
                self.assertEqual(status, 400, answer)
                self.assertIn(reason, record["error"])
                self.assertEqual(answer.decode(), record["error"])
                self.assertIsNone(record["payload"])

        bodies = [
            ("keys of another subscription", self.encrypt(other, b"{}"), "decryption failed"),
            ("not JSON", self.encrypt(subscription, b"hello"), "not UTF-8 JSON"),
            ("two records", self.encrypt(subscription, b'{"a":"' + b"x" * 100 + b'"}', rs=64),
             "more than one aes128gcm record"),
            ("too short", b"short", "shorter than an aes128gcm header"),
        ]
        for name, body, reason in bodies:
            with self.subTest(name):
                status, _, _, record = self.push(subscription, body=body)
                self.assertEqual(status, 400)
                self.assertIn(reason, record["error"])
                self.assertIsNotNone(record["jwt"], "the JWT was fine")

    def test_received_waits_for_the_next_push_and_is_empty_when_none_comes(self):
        subscription = self.subscribe()
        before = self.last_seq()
        started = time.monotonic()
        self.assertEqual(self.received(before, 0.3), [])
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

        woken = []
        waiter = threading.Thread(target=lambda: woken.append(self.received(before, 5)))
        waiter.start()
        time.sleep(0.2)
        started = time.monotonic()
        self.request("POST", f"/push/{subscription['id']}",
                     self.encrypt(subscription, b"{}"), self.push_headers())
        waiter.join()
        self.assertLess(time.monotonic() - started, 1.0, "woken by the push, not the timeout")
        self.assertEqual([r["seq"] for r in woken[0]], [before + 1])

    def test_pushes_on_one_connection_are_quick(self):
        subscription = self.subscribe()
        body = self.encrypt(subscription, b'{"title":"t"}')
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        started = time.monotonic()
        for _ in range(200):
            connection.request("POST", f"/push/{subscription['id']}", body, self.push_headers())
            response = connection.getresponse()
            response.read()
            self.assertEqual(response.status, 201)
        connection.close()
        # 40 ms a push would mean the head and body wait on a delayed ACK (Nagle).
        self.assertLess(time.monotonic() - started, 4.0)

    def test_the_service_exits_when_its_stdin_closes(self):
        process, _ = start_fake_push(self.vapid_b64)
        process.stdin.close()
        self.assertEqual(process.wait(timeout=5), 0)
        process.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
