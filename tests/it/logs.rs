//! docs/protocol.md#auth: tokens never appear in logs. The real binary runs with
//! `HERALD_LOG=debug`, so every request is logged, and the log is searched for every secret it was
//! given.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE};
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::auth::{PUBLISH_KEY, SECRET, hs256, token_for, unix_now};
use crate::helpers::{ServerProcess, SseClient, read_json, send};

#[tokio::test]
async fn debug_logs_show_every_request_and_no_token_key_or_secret() {
    let dir = TempDir::new().expect("temp dir");
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--publish-key",
            PUBLISH_KEY,
        ],
        &[("HERALD_LOG", "debug")],
    );
    let token = token_for("alice", 3600);
    let cookie_token = token_for("alice", 1800);
    let refused_token = hs256(&json!({ "sub": "alice", "exp": unix_now().as_secs() - 10 }));
    let client = reqwest::Client::new();

    let mut by_query = SseClient::try_open(
        &client,
        &format!("{}/events/alice?token={token}&lastEventId=0", server.url),
        None,
    )
    .await;
    assert_eq!(by_query.status, StatusCode::OK);
    by_query.expect_connected().await;
    let by_cookie = send(
        client
            .get(format!("{}/events/alice", server.url))
            .header(COOKIE, format!("herald_token={cookie_token}")),
    )
    .await;
    assert_eq!(by_cookie.status(), StatusCode::OK);
    let refused =
        send(client.get(format!("{}/events/alice?token={refused_token}", server.url))).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (status, stored) = read_json(
        send(
            client
                .post(format!("{}/api/notifications/alice", server.url))
                .header(AUTHORIZATION, format!("Bearer {PUBLISH_KEY}"))
                .json(&json!({ "title": "logged", "message": "m" })),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(by_query.next_event().await.data, stored);

    // One access-log line per request, the query's token redacted.
    server
        .wait_for_log(
            "request method=GET target=/events/alice?token=[redacted]&lastEventId=0 status=200",
        )
        .await;
    server
        .wait_for_log("request method=GET target=/events/alice status=200")
        .await;
    server
        .wait_for_log("request method=GET target=/events/alice?token=[redacted] status=401")
        .await;
    let log = server
        .wait_for_log("request method=POST target=/api/notifications/alice status=201")
        .await;
    for (what, secret) in [
        ("the query token", token.as_str()),
        ("the cookie token", cookie_token.as_str()),
        ("the refused token", refused_token.as_str()),
        ("the publish key", PUBLISH_KEY),
        ("the JWT secret", SECRET),
    ] {
        assert!(!log.contains(secret), "{what} is in the log:\n{log}");
        // Not even the signature alone, which is what makes a token a credential.
        let tail = secret.rsplit('.').next().unwrap_or(secret);
        assert!(!log.contains(tail), "part of {what} is in the log:\n{log}");
    }
}
