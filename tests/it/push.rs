//! docs/protocol.md#web-push: the VAPID key. `herald vapid-key` makes one (checked against
//! OpenSSL's reading of the file), `serve` takes it with `--vapid-key` and `--vapid-subject`
//! (or their `HERALD_` variables), and `GET /api/push/public-key` serves its public half, or
//! `404` while push is off. And the fake push service (`tests/push_service`) that herald's
//! pushes will be checked against.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::auth::{sign, unix_now};
use crate::helpers::command::{run_herald, run_serve};
use crate::helpers::push_service::{FakePushService, PushHeaders, VapidClaims};
use crate::helpers::{ServerProcess, TestApp, WAIT, send};

/// The uncompressed public point OpenSSL derives from the private key in `pem`, base64url.
fn openssl_public_key(pem: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A P-256 SubjectPublicKeyInfo ends with the 65-byte uncompressed point.
    let point = &out.stdout[out.stdout.len() - 65..];
    assert_eq!(point[0], 0x04);
    URL_SAFE_NO_PAD.encode(point)
}

fn openssl_key(curve: &str, path: &Path) {
    let status = std::process::Command::new("openssl")
        .args(["ecparam", "-name", curve, "-genkey", "-noout", "-out"])
        .arg(path)
        .status()
        .expect("openssl runs");
    assert!(status.success());
}

#[tokio::test]
async fn vapid_key_writes_a_key_only_its_owner_reads_prints_its_public_key_and_never_replaces_one()
{
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("vapid.pem");
    let made = run_herald(&["vapid-key", "--out", path.to_str().unwrap()]).await;
    assert!(made.status.success(), "{made:?}");
    let printed = String::from_utf8(made.stdout).unwrap();
    assert_eq!(printed, format!("{}\n", openssl_public_key(&path)));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let written = std::fs::read(&path).unwrap();
    let again = run_herald(&["vapid-key", "--out", path.to_str().unwrap()]).await;
    assert!(!again.status.success());
    assert_eq!(again.stdout, b"");
    let stderr = String::from_utf8(again.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        written,
        "the key is untouched"
    );
}

#[tokio::test]
async fn the_server_serves_the_public_key_of_its_vapid_key_and_404_without_one() {
    let dir = TempDir::new().expect("temp dir");
    // A key as `herald vapid-key` writes it, and one as OpenSSL does (SEC1).
    let ours = dir.path().join("ours.pem");
    assert!(
        run_herald(&["vapid-key", "--out", ours.to_str().unwrap()])
            .await
            .status
            .success()
    );
    let theirs = dir.path().join("theirs.pem");
    openssl_key("prime256v1", &theirs);
    for key in [&ours, &theirs] {
        let data = TempDir::new().expect("temp dir");
        // Auth on: the public key is still served to anyone, as a page needs it before login.
        let args = [
            "--vapid-key",
            key.to_str().unwrap(),
            "--vapid-subject",
            "mailto:ops@example.com",
            "--publish-key",
            "k",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ];
        let server = ServerProcess::start(data.path(), &args);
        let (status, _) = server.get_json("/api/stats").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "auth is on");
        let (status, body) = server.get_json("/api/push/public-key").await;
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                json!({ "publicKey": openssl_public_key(key) })
            )
        );
        server.stop();
    }

    let app = TestApp::spawn().await;
    let (status, body) = app.get_json("/api/push/public-key").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--vapid-key")),
        "{body}"
    );
}

#[tokio::test]
async fn the_vapid_key_and_subject_may_come_from_the_environment_as_the_flags_do() {
    let dir = TempDir::new().expect("temp dir");
    let key = dir.path().join("p256.pem");
    openssl_key("prime256v1", &key);
    let key = key.to_str().unwrap();
    let data = TempDir::new().expect("temp dir");
    let server = ServerProcess::start_with(
        data.path(),
        &["--listen", "127.0.0.1:0"],
        &[
            ("HERALD_VAPID_KEY", key),
            ("HERALD_VAPID_SUBJECT", "mailto:ops@example.com"),
        ],
    );
    let (status, body) = server.get_json("/api/push/public-key").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({ "publicKey": openssl_public_key(Path::new(key)) })
        )
    );
    server.stop();

    // Checked as the flags are: a key without a subject is refused, naming what is missing.
    run_serve(&[], &[("HERALD_VAPID_KEY", key)]).assert_refused_saying(&["--vapid-subject"]);
    run_serve(
        &[],
        &[
            ("HERALD_VAPID_KEY", key),
            ("HERALD_VAPID_SUBJECT", "ops@example.com"),
        ],
    )
    .assert_refused_saying(&["--vapid-subject", "mailto:"]);
}

#[test]
fn serve_refuses_a_vapid_key_it_cannot_use_naming_the_flag() {
    let dir = TempDir::new().expect("temp dir");
    let p384 = dir.path().join("p384.pem");
    openssl_key("secp384r1", &p384);
    let p256 = dir.path().join("p256.pem");
    openssl_key("prime256v1", &p256);
    let (p384, p256) = (p384.to_str().unwrap(), p256.to_str().unwrap());
    let subject = "mailto:ops@example.com";
    run_serve(&["--vapid-key", p256], &[]).assert_refused_saying(&["--vapid-subject"]);
    run_serve(&["--vapid-key", p384, "--vapid-subject", subject], &[])
        .assert_refused_saying(&["--vapid-key", "not a P-256 private key"]);
    run_serve(
        &["--vapid-key", p256, "--vapid-subject", "ops@example.com"],
        &[],
    )
    .assert_refused_saying(&["--vapid-subject", "mailto:"]);
    run_serve(
        &[
            "--vapid-key",
            "/nonexistent/vapid.pem",
            "--vapid-subject",
            subject,
        ],
        &[],
    )
    .assert_refused_saying(&["--vapid-key", "cannot read"]);
}

/// A key as `herald vapid-key` writes it in `dir`, its public key, and a fake push service for a
/// server with it.
async fn fake_push_service_for_a_new_key(dir: &Path) -> (FakePushService, PathBuf, String) {
    let key = dir.join("vapid.pem");
    let made = run_herald(&["vapid-key", "--out", key.to_str().unwrap()]).await;
    assert!(made.status.success(), "{made:?}");
    let public_key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let service = FakePushService::start(&public_key, SUBJECT).await;
    (service, key, public_key)
}

const SUBJECT: &str = "mailto:ops@example.com";

#[tokio::test]
async fn the_fake_push_service_hands_out_subscriptions_as_a_browser_makes_them() {
    let dir = TempDir::new().expect("temp dir");
    let (service, _, _) = fake_push_service_for_a_new_key(dir.path()).await;

    let subscription = service.subscribe(json!("ok")).await;
    assert!(service.origin().starts_with("http://127.0.0.1:"));
    assert_eq!(
        subscription.endpoint,
        format!("{}/push/{}", service.origin(), subscription.id)
    );
    let p256dh = URL_SAFE_NO_PAD
        .decode(&subscription.p256dh)
        .expect("base64url");
    assert_eq!(
        (p256dh.len(), p256dh[0]),
        (65, 0x04),
        "an uncompressed point"
    );
    let auth = URL_SAFE_NO_PAD
        .decode(&subscription.auth)
        .expect("base64url");
    assert_eq!(auth.len(), 16);
    assert_eq!(
        subscription.to_json(),
        json!({
            "endpoint": subscription.endpoint,
            "expirationTime": null,
            "keys": { "p256dh": subscription.p256dh, "auth": subscription.auth },
        })
    );
    let another = service
        .subscribe(json!({ "status": 503, "times": 1 }))
        .await;
    assert_ne!(
        (&another.id, &another.p256dh),
        (&subscription.id, &subscription.p256dh)
    );

    let none = service.received_after(0, Duration::from_millis(200)).await;
    assert!(none.is_empty(), "{none:?}");
}

/// The token is signed by jsonwebtoken, as herald signs it; the body is not encrypted, so the
/// push is refused, but only after its VAPID token and headers passed.
#[tokio::test]
async fn the_fake_push_service_verifies_a_vapid_token_signed_by_jsonwebtoken_and_records_the_push()
{
    let dir = TempDir::new().expect("temp dir");
    let (service, key, public_key) = fake_push_service_for_a_new_key(dir.path()).await;
    let subscription = service.subscribe(json!("ok")).await;
    let exp = unix_now().as_secs() + 3600;
    let claims = json!({ "aud": service.origin(), "exp": exp, "sub": SUBJECT });
    let key = EncodingKey::from_ec_pem(&std::fs::read(&key).unwrap()).expect("a P-256 key");
    let token = sign(Algorithm::ES256, &claims, &key);
    let body = vec![0u8; 100];

    let response = send(
        reqwest::Client::new()
            .post(&subscription.endpoint)
            .header("authorization", format!("vapid t={token}, k={public_key}"))
            .header("content-encoding", "aes128gcm")
            .header("ttl", "60")
            .header("urgency", "high")
            .header("topic", "n-1")
            .body(body.clone()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reason = response.text().await.expect("body");

    let records = service.wait_for(1, WAIT).await;
    let [record] = &records[..] else {
        panic!("one push: {records:?}")
    };
    assert_eq!(
        (record.seq, &*record.subscription, record.status),
        (1, &*subscription.id, Some(400))
    );
    assert_eq!(record.error.as_deref(), Some(&*reason));
    assert!(reason.contains("aes128gcm"), "{reason}");
    assert_eq!(record.payload, None);
    assert_eq!(record.body_bytes, body.len());
    assert_eq!(
        record.headers,
        PushHeaders {
            ttl: Some(60),
            urgency: Some("high".into()),
            topic: Some("n-1".into()),
        }
    );
    assert_eq!(
        record.jwt,
        Some(VapidClaims {
            aud: service.origin().to_owned(),
            exp,
            sub: SUBJECT.to_owned(),
        })
    );
    let now_ms = unix_now().as_millis() as u64;
    assert!(record.received_at_ms.abs_diff(now_ms) < 10_000);
}
