//! [`FakePushService`]: a Web Push service on loopback, `tests/push_service/fake_push.py`, that
//! checks each push herald sends (VAPID, `aes128gcm`, `TTL`, `Urgency`, `Topic`) with Python's
//! `http_ece` and `cryptography`, code that shares nothing with herald's, and records it as a
//! [`PushRecord`]. Its Python is `HERALD_PUSH_PYTHON`, else `target/push-venv`, which the first
//! test to need it makes from `tests/push_service/requirements.txt` while holding a file lock,
//! so parallel tests make it once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::timeout;

use super::WAIT;
use super::api::{Api, read_json};

/// `fake_push.py` as a child process. It exits when its stdin closes, so it goes with the test
/// even when the test is killed; dropping this kills it too.
pub struct FakePushService {
    /// Killed on drop.
    _child: Child,
    /// Held open for the life of the service: the child exits when it closes.
    _stdin: ChildStdin,
    /// Requests to the service, at the origin it printed.
    api: Api,
}

/// A subscription as the browser's `PushSubscription` holds it, with the id the fake service
/// knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscriptionJson {
    /// The last segment of `endpoint`, as [`PushRecord::subscription`] names it.
    pub id: String,
    /// `http://127.0.0.1:PORT/push/ID`, under [`FakePushService::origin`].
    pub endpoint: String,
    /// The subscription's uncompressed P-256 public key (65 bytes), base64url without padding.
    pub p256dh: String,
    /// The subscription's 16-byte auth secret, base64url without padding.
    pub auth: String,
}

impl PushSubscriptionJson {
    /// What `PushSubscription.toJSON()` gives a page: `{"endpoint", "expirationTime": null,
    /// "keys": {"p256dh", "auth"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh, "auth": self.auth },
        })
    }
}

/// One push the fake service received, valid or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRecord {
    /// Its place among all the pushes the service received, from 1.
    pub seq: u64,
    /// The subscription id of the endpoint it was sent to, known to the service or not.
    pub subscription: String,
    /// What the service answered; `None` for a push a `"hang"` subscription holds unanswered.
    pub status: Option<u16>,
    /// Why it was refused: the failed check of a `400`, or `"no such subscription"` (`404`);
    /// `None` when it passed every check, whatever the subscription's behavior answered.
    pub error: Option<String>,
    /// The decrypted JSON; `None` unless every check before decryption passed.
    pub payload: Option<Value>,
    /// The length of the encrypted body.
    pub body_bytes: usize,
    pub headers: PushHeaders,
    /// The VAPID token's claims, once its signature verified against the server's key.
    pub jwt: Option<VapidClaims>,
    /// When it arrived, Unix milliseconds.
    pub received_at_ms: u64,
}

/// The push headers as sent; `ttl` is `None` when absent or not a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushHeaders {
    pub ttl: Option<u64>,
    pub urgency: Option<String>,
    pub topic: Option<String>,
}

/// The claims of a VAPID token whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VapidClaims {
    pub aud: String,
    /// Unix seconds.
    pub exp: u64,
    pub sub: String,
}

impl FakePushService {
    /// Starts the service for a server whose VAPID public key is `public_key` (base64url, as
    /// `GET /api/push/public-key` gives it) and whose `--vapid-subject` is `subject`, and waits
    /// for its address.
    pub async fn start(public_key: &str, subject: &str) -> Self {
        let python = tokio::task::spawn_blocking(python)
            .await
            .expect("the push service's Python is ready");
        let script = repository().join("tests/push_service/fake_push.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0", "--vapid-public-key", public_key])
            .args(["--subject", subject])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot start: {e}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = timeout(WAIT, BufReader::new(stdout).lines().next_line())
            .await
            .unwrap_or_else(|_| panic!("{} printed no address in {WAIT:?}", script.display()))
            .expect("stdout read")
            .unwrap_or_else(|| {
                panic!(
                    "{} exited before printing its address (its stderr is above)",
                    script.display()
                )
            });
        let origin = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Self {
            _child: child,
            _stdin: stdin,
            api: Api::new(origin),
        }
    }

    /// `http://127.0.0.1:PORT`: what every endpoint starts with and every VAPID `aud` must be.
    pub fn origin(&self) -> &str {
        &self.api.url
    }

    /// A new subscription with fresh keys, whose pushes are answered per `behavior`: `"ok"`
    /// (`201`), `"gone"` (`410`), `"notfound"` (`404`), `"hang"` (no answer), or
    /// `{"status": 429|500|503, "times": N, "retryAfter": S}` (N such answers, with
    /// `Retry-After: S` when given, then `201`). A push that fails a check is `400` whatever
    /// the behavior.
    pub async fn subscribe(&self, behavior: Value) -> PushSubscriptionJson {
        let (status, body) = self
            .api
            .post_json("/subscriptions", &json!({ "behavior": behavior }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "subscribe {behavior}: {body}");
        let text = |value: &Value| value.as_str().expect("a string").to_owned();
        PushSubscriptionJson {
            id: text(&body["id"]),
            endpoint: text(&body["endpoint"]),
            p256dh: text(&body["keys"]["p256dh"]),
            auth: text(&body["keys"]["auth"]),
        }
    }

    /// The pushes after seq `after`, waiting up to `wait` for one to come; empty if none did.
    pub async fn received_after(&self, after: u64, wait: Duration) -> Vec<PushRecord> {
        let url = self.api.url(&format!(
            "/received?after={after}&wait={}",
            wait.as_secs_f64()
        ));
        let response = timeout(wait + WAIT, self.api.client.get(url).send())
            .await
            .unwrap_or_else(|_| panic!("the push service did not answer in {:?}", wait + WAIT))
            .expect("request sent");
        let (status, body) = read_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).expect("push records")
    }

    /// Every push received, once there are at least `count`; fails the test, listing those
    /// that came, when fewer than `count` came within `wait`.
    pub async fn wait_for(&self, count: usize, wait: Duration) -> Vec<PushRecord> {
        let deadline = Instant::now() + wait;
        let mut records: Vec<PushRecord> = Vec::new();
        loop {
            let after = records.last().map_or(0, |record| record.seq);
            let left = deadline.saturating_duration_since(Instant::now());
            records.extend(self.received_after(after, left).await);
            if records.len() >= count {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{count} pushes expected within {wait:?}, {} came:\n{}",
                records.len(),
                records
                    .iter()
                    .map(|r| format!(
                        "  #{} to {}: {:?} {}",
                        r.seq,
                        r.subscription,
                        r.status,
                        r.error.as_deref().unwrap_or("valid")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The worktree, where `tests/push_service` and `target/` are.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that runs the fake service: `HERALD_PUSH_PYTHON`, else the one of
/// `target/push-venv`, made first if it is missing or was made from another
/// `requirements.txt`. Blocks, for as long as pip takes, the first time.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("HERALD_PUSH_PYTHON") {
        return python.into();
    }
    let venv = repository().join("target/push-venv");
    let requirements = repository().join("tests/push_service/requirements.txt");
    // A copy of the requirements the venv was made from, written once pip has finished: while
    // it matches, the venv is whole and current.
    let stamp = venv.join("requirements.txt");
    let python = venv.join("bin/python");
    let wanted = std::fs::read(&requirements).expect("tests/push_service/requirements.txt");
    let ready = || std::fs::read(&stamp).is_ok_and(|made| made == wanted);
    if ready() {
        return python;
    }

    std::fs::create_dir_all(repository().join("target")).expect("target/");
    let lock = File::create(repository().join("target/push-venv.lock")).expect("lock file");
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock target/push-venv.lock: {e}"));
    // Another test may have made it while this one waited for the lock.
    if ready() {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove a stale target/push-venv");
    }
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv));
    run(std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--requirement"])
        .arg(&requirements));
    std::fs::write(&stamp, &wanted).expect("write the venv's stamp");
    python
}

/// Runs `command` to completion, failing the test with its output unless it succeeds.
fn run(command: &mut std::process::Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} cannot start: {e} (or set HERALD_PUSH_PYTHON)"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
