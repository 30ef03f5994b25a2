//! docs/protocol.md#auth, and its `reauth` event (docs/protocol.md#events): subscriber tokens from
//! the header, the cookie and `?token=`; every way a token can be wrong; RS256, ES256 and EdDSA
//! public keys; what a token and a publish key each allow; which routes stay open; and `herald
//! token` / `herald publish --key`.
//!
//! The helpers (a server with both halves of auth on, tokens signed with its secret) are in
//! `helpers::auth`, shared with the isolation, logs and CORS tests.

use std::sync::Arc;
use std::time::Duration;

use herald::auth::TokenVerifier;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::auth::{
    Carrier, KeyPair, PUBLISH_KEY, SECRET, assert_forbidden, assert_unauthorized, base64url,
    client_with, hs256, send_built, sign, spawn_secured, token_for, unix_now,
};
use crate::helpers::command::run_herald;
use crate::helpers::{ServerProcess, SseClient, TestApp, WAIT, read_json, send};

#[tokio::test]
async fn a_token_opens_its_users_stream_from_the_header_the_cookie_or_the_query() {
    let app = spawn_secured(|_| {}).await;
    let token = token_for("alice", 3600);
    let mut streams = Vec::new();
    for carrier in Carrier::ALL {
        let mut stream = carrier.open_stream(&app, "/events/alice", &token).await;
        stream.expect_connected().await;
        streams.push(stream);
    }
    // What issuers usually add (a past `nbf`, `iat`, `iss`, an `aud`) changes nothing.
    let now = unix_now().as_secs();
    let issued = hs256(&json!({
        "sub": "alice", "exp": now + 3600, "nbf": now - 60, "iat": now - 60,
        "iss": "https://issuer.example", "aud": "some-app",
    }));
    let mut stream = Carrier::Header
        .open_stream(&app, "/events/alice", &issued)
        .await;
    stream.expect_connected().await;
    streams.push(stream);
    let sent = app.publish("alice", "for every tab").await;
    for stream in &mut streams {
        let got = stream.next_event().await;
        assert_eq!(got.event, "notification");
        assert_eq!(got.data, sent);
    }
}

#[tokio::test]
async fn events_me_opens_the_stream_of_the_user_the_token_names() {
    let app = spawn_secured(|_| {}).await;
    for carrier in Carrier::ALL {
        let mut me = carrier
            .open_stream(&app, "/events/me", &token_for("bob", 3600))
            .await;
        me.expect_connected().await;
        app.publish("alice", "not for bob").await;
        let for_bob = app.publish("bob", "for bob").await;
        let got = me.next_event().await;
        assert_eq!(
            (got.event.as_str(), &got.data),
            ("notification", &for_bob),
            "{carrier:?}"
        );
    }
    let anonymous = send(reqwest::Client::new().get(app.url("/events/me"))).await;
    assert_unauthorized(anonymous, "/events/me without a token").await;
    let expired = Carrier::Header
        .get(&app, "/events/me", &token_for("bob", -1))
        .await;
    assert_unauthorized(expired, "/events/me with an expired token").await;
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_401_wherever_it_is_carried() {
    let app = spawn_secured(|_| {}).await;
    let exp = unix_now().as_secs() + 3600;
    let claims = json!({ "sub": "alice", "exp": exp });
    let valid = hs256(&claims);
    let [_, valid_payload, valid_signature]: [&str; 3] = valid
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three parts");
    assert_eq!(
        valid_payload,
        base64url(&serde_json::to_vec(&claims).unwrap()),
        "the hand-made encoding matches the library's"
    );
    let unsigned_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let other_secret = EncodingKey::from_secret(b"some-other-secret-0123456789abcdef");
    let same_secret = EncodingKey::from_secret(SECRET.as_bytes());
    let bob_payload = base64url(&serde_json::to_vec(&json!({ "sub": "bob", "exp": exp })).unwrap());

    let bad_tokens = [
        (
            "a wrong signature",
            sign(Algorithm::HS256, &claims, &other_secret),
        ),
        (
            "alg none, unsigned",
            format!("{unsigned_header}.{valid_payload}."),
        ),
        (
            "alg none with the valid signature",
            format!("{unsigned_header}.{valid_payload}.{valid_signature}"),
        ),
        (
            "HS384 with the same secret",
            sign(Algorithm::HS384, &claims, &same_secret),
        ),
        (
            "HS512 with the same secret",
            sign(Algorithm::HS512, &claims, &same_secret),
        ),
        (
            "a payload swapped under a valid signature",
            format!(
                "{}.{bob_payload}.{valid_signature}",
                valid.split('.').next().unwrap()
            ),
        ),
        ("expired a second ago (no leeway)", token_for("alice", -1)),
        ("no sub", hs256(&json!({ "exp": exp }))),
        ("no exp", hs256(&json!({ "sub": "alice" }))),
        (
            "not valid before an hour from now",
            hs256(&json!({ "sub": "alice", "exp": exp, "nbf": exp })),
        ),
        (
            "exp not a number",
            hs256(&json!({ "sub": "alice", "exp": "later" })),
        ),
        (
            "sub not a user id",
            hs256(&json!({ "sub": "a/b", "exp": exp })),
        ),
        (
            "sub the reserved `me`",
            hs256(&json!({ "sub": "me", "exp": exp })),
        ),
        ("not a JWT", "not-a-token".to_owned()),
        ("three parts of garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in &bad_tokens {
        for carrier in Carrier::ALL {
            let user = if what.starts_with("a payload swapped") {
                "bob"
            } else {
                "alice"
            };
            let response = carrier.get(&app, &format!("/events/{user}"), token).await;
            assert_unauthorized(response, &format!("{what} in the {carrier:?}")).await;
        }
    }
}

#[tokio::test]
async fn a_token_for_another_user_is_403_wherever_it_is_carried() {
    let app = spawn_secured(|_| {}).await;
    let alice = token_for("alice", 3600);
    for carrier in Carrier::ALL {
        let response = carrier.get(&app, "/events/bob", &alice).await;
        assert_forbidden(
            response,
            &format!("alice's token on bob's stream, {carrier:?}"),
        )
        .await;
    }
    let with_key = send(app.client.get(app.url("/events/alice"))).await;
    assert_forbidden(with_key, "a publish key cannot open a stream").await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_against_a_public_key_file() {
    let dir = TempDir::new().expect("temp dir");
    let pairs: Vec<KeyPair> = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        .into_iter()
        .map(|algorithm| KeyPair::generate(algorithm, dir.path()))
        .collect();
    for (index, pair) in pairs.iter().enumerate() {
        let file = dir.path().join(format!("public-{index}.pem"));
        std::fs::write(&file, &pair.public_pem).expect("public key written");
        let verifier = TokenVerifier::from_public_key_pem(&std::fs::read(&file).unwrap())
            .unwrap_or_else(|e| panic!("{:?}: {e}", pair.algorithm));
        let app = TestApp::spawn_with(|s| s.auth.tokens = Some(Arc::new(verifier))).await;

        let mut stream = Carrier::Header
            .open_stream(&app, "/events/alice", &pair.token("alice"))
            .await;
        stream.expect_connected().await;
        let sent = app.publish("alice", "signed elsewhere").await;
        assert_eq!(stream.next_event().await.data, sent, "{:?}", pair.algorithm);

        let same_kind = KeyPair::generate(pair.algorithm, dir.path());
        let mut refused = vec![
            (
                "the same algorithm with another key",
                same_kind.token("alice"),
            ),
            ("HS256 with a secret", token_for("alice", 3600)),
            (
                // The classic key-confusion attack: the public key used as an HMAC secret.
                "HS256 with the public key as its secret",
                sign(
                    Algorithm::HS256,
                    &json!({ "sub": "alice", "exp": unix_now().as_secs() + 3600 }),
                    &EncodingKey::from_secret(pair.public_pem.as_bytes()),
                ),
            ),
        ];
        for other in pairs
            .iter()
            .filter(|other| other.algorithm != pair.algorithm)
        {
            refused.push(("another algorithm", other.token("alice")));
        }
        for (what, token) in refused {
            let response = Carrier::Header.get(&app, "/events/alice", &token).await;
            assert_unauthorized(response, &format!("{:?} server, {what}", pair.algorithm)).await;
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_jwt_public_key_flag_reads_a_pem_file() {
    let dir = TempDir::new().expect("temp dir");
    let pair = KeyPair::generate(Algorithm::EdDSA, dir.path());
    let file = dir.path().join("public.pem");
    std::fs::write(&file, &pair.public_pem).expect("public key written");
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--jwt-public-key", file.to_str().unwrap()],
    );
    let client = client_with(AUTHORIZATION, &format!("Bearer {}", pair.token("alice")));
    let mut stream =
        SseClient::try_open(&client, &format!("{}/events/alice", server.url), None).await;
    assert_eq!(stream.status, StatusCode::OK);
    stream.expect_connected().await;
    let response = send(reqwest::Client::new().get(format!("{}/events/alice", server.url))).await;
    assert_unauthorized(response, "no token").await;
}

#[tokio::test]
async fn a_private_key_given_as_the_public_key_stops_startup_with_one_line() {
    let dir = TempDir::new().expect("temp dir");
    // Writes rsa-private.pem, which jsonwebtoken alone would take for a public key.
    KeyPair::generate(Algorithm::RS256, dir.path());
    let private = dir.path().join("rsa-private.pem");
    let data = dir.path().join("data");
    let output = run_herald(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--jwt-public-key",
        private.to_str().unwrap(),
    ])
    .await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("--jwt-public-key") && stderr.contains("private key"),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn a_users_token_reads_and_marks_that_users_history_and_no_one_elses() {
    let app = spawn_secured(|_| {}).await;
    let first = app.publish("alice", "first").await;
    let second = app.publish("alice", "second").await;
    let bobs = app.publish("bob", "bob's").await;
    let alice = client_with(
        AUTHORIZATION,
        &format!("Bearer {}", token_for("alice", 3600)),
    );

    let (status, page) =
        read_json(send(alice.get(app.url("/api/notifications/alice"))).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["notifications"], json!([second, first]));
    assert_eq!(
        (page["total"].as_u64(), page["unread"].as_u64()),
        (Some(2), Some(2))
    );

    let id = first["id"].as_str().unwrap();
    let (status, body) =
        read_json(send(alice.post(app.url(&format!("/api/notifications/alice/{id}/read")))).await)
            .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "id": id, "read": true }))
    );
    let (status, body) =
        read_json(send(alice.post(app.url("/api/notifications/alice/read-all"))).await).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "updated": 1 })));

    let bob_id = bobs["id"].as_str().unwrap();
    let refused = [
        alice.get(app.url("/api/notifications/bob")),
        alice.post(app.url(&format!("/api/notifications/bob/{bob_id}/read"))),
        alice.post(app.url("/api/notifications/bob/read-all")),
    ];
    for request in refused {
        assert_forbidden(send(request).await, "alice's token on bob's history").await;
    }
    // Refused means unchanged: bob's one notification is still unread.
    let (status, page) = app.get_json("/api/notifications/bob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["notifications"], json!([bobs]));
    assert_eq!(page["unread"], 1);
}

#[tokio::test]
async fn publishing_broadcasting_and_any_history_need_a_publish_key() {
    let app = spawn_secured(|_| {}).await;
    let body = json!({ "title": "t", "message": "m" });
    let token = format!("Bearer {}", token_for("alice", 3600));
    let credentials: [(&str, Option<String>, StatusCode); 4] = [
        ("a subscriber token", Some(token), StatusCode::FORBIDDEN),
        ("no credentials", None, StatusCode::UNAUTHORIZED),
        (
            "an unknown key",
            Some("Bearer not-the-publish-key".into()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a key differing in one character",
            Some(format!("Bearer {}X", &PUBLISH_KEY[..PUBLISH_KEY.len() - 1])),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    let client = reqwest::Client::new();
    for (what, authorization, expected) in credentials {
        for path in ["/api/notifications/alice", "/api/broadcast"] {
            let mut request = client.post(app.url(path)).json(&body);
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            let response = send(request).await;
            let context = format!("{what} on {path}");
            if expected == StatusCode::FORBIDDEN {
                assert_forbidden(response, &context).await;
            } else {
                assert_unauthorized(response, &context).await;
            }
        }
    }
    let (status, page) = app.get_json("/api/notifications/alice").await;
    assert_eq!(
        (status, &page["total"]),
        (StatusCode::OK, &json!(0)),
        "nothing was stored"
    );

    // With the key: 201, 200, and every user's history.
    let (status, stored) = app.post_json("/api/notifications/alice", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let (status, sent) = app.post_json("/api/broadcast", &body).await;
    assert_eq!(
        (status, &sent["sent"]),
        (StatusCode::OK, &json!(true)),
        "{sent}"
    );
    let (status, page) = app.get_json("/api/notifications/alice").await;
    assert_eq!(
        (status, &page["notifications"]),
        (StatusCode::OK, &json!([stored]))
    );
    let (status, page) = app.get_json("/api/notifications/bob").await;
    assert_eq!((status, &page["total"]), (StatusCode::OK, &json!(0)));
}

#[tokio::test]
async fn a_stream_gets_reauth_when_its_token_expires_and_then_ends() {
    let app = spawn_secured(|_| {}).await;
    // Between 2 and 3 seconds from now, on a whole second as `exp` is.
    let exp = unix_now().as_secs() + 3;
    let token = hs256(&json!({ "sub": "alice", "exp": exp }));
    let client = client_with(AUTHORIZATION, &format!("Bearer {token}"));
    let response = send(client.get(app.url("/events/alice"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The stream is admitted once its head is out: this notification reaches it live.
    let sent = app.publish("alice", "before the token runs out").await;

    let body = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the stream ended in time")
        .expect("the stream ended cleanly");
    let ended_at = unix_now();
    assert!(
        ended_at >= Duration::from_secs(exp),
        "ended at {ended_at:?}, before exp {exp}: no early reauth"
    );
    let blocks: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(blocks.len(), 3, "{body:?}");
    let preamble: Vec<&str> = blocks[0].lines().collect();
    assert_eq!(
        preamble[..2],
        ["retry: 3000", "event: connected"],
        "{body:?}"
    );
    let notification: Vec<&str> = blocks[1].lines().collect();
    assert_eq!(notification.len(), 3, "{body:?}");
    assert!(notification[0].starts_with("id: "), "{body:?}");
    assert_eq!(notification[1], "event: notification");
    let data: Value =
        serde_json::from_str(notification[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data, sent);
    assert_eq!(
        blocks[2], "event: reauth\ndata: {\"reason\":\"token expired\"}",
        "reauth has no id: line"
    );

    // The same token no longer opens a stream.
    let again = send(client.get(app.url("/events/alice"))).await;
    assert_unauthorized(again, "reconnecting with the expired token").await;
}

#[tokio::test]
async fn a_token_in_its_last_moments_still_gets_retry_and_connected_before_reauth() {
    let app = spawn_secured(|_| {}).await;
    // Open the stream in the last fifth of a wall-clock second with a token whose `exp` is the
    // next second. On a busy machine the request may arrive after `exp` and rightly get 401;
    // then try again in a later second.
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        assert!(
            attempts <= 5,
            "never opened a stream in a token's last moments"
        );
        while unix_now().subsec_millis() < 800 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let exp = unix_now().as_secs() + 1;
        let token = hs256(&json!({ "sub": "alice", "exp": exp }));
        let response = Carrier::Query.get(&app, "/events/alice", &token).await;
        if response.status() == StatusCode::OK {
            break response;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(unix_now().as_secs() >= exp, "refused before its exp");
    };
    let body = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the stream ended in time")
        .expect("the stream ended cleanly");
    let blocks: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{body:?}");
    assert!(
        blocks[0].starts_with("retry: 3000\nevent: connected\ndata: {\"clientId\":"),
        "{body:?}"
    );
    assert_eq!(
        blocks[1],
        "event: reauth\ndata: {\"reason\":\"token expired\"}"
    );
}

#[tokio::test]
async fn with_both_halves_on_anonymous_callers_get_401_everywhere_but_the_public_routes() {
    let app = spawn_secured(|_| {}).await;
    let stored = app.publish("x", "exists").await;
    let id = stored["id"].as_str().unwrap();
    let anonymous = reqwest::Client::new();
    let body = json!({ "title": "t", "message": "m" });
    let refused = [
        anonymous.get(app.url("/events/x")),
        anonymous.get(app.url("/events/me")),
        anonymous.get(app.url("/api/notifications/x")),
        anonymous.post(app.url("/api/notifications/x")).json(&body),
        anonymous.post(app.url("/api/broadcast")).json(&body),
        anonymous.post(app.url(&format!("/api/notifications/x/{id}/read"))),
        anonymous.post(app.url("/api/notifications/x/read-all")),
        anonymous.get(app.url("/metrics")),
        anonymous.get(app.url("/api/stats")),
    ];
    for request in refused {
        let request = request.build().expect("request");
        let context = format!("{} {}", request.method(), request.url().path());
        assert_unauthorized(send_built(&anonymous, request).await, &context).await;
    }
    for path in ["/", "/healthz", "/readyz", "/openapi.json"] {
        let response = send(anonymous.get(app.url(path))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The key opens the operator routes.
    for path in ["/metrics", "/api/stats"] {
        let response = send(app.client.get(app.url(path))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path} with the key");
    }
    let (_, page) = app.get_json("/api/notifications/x").await;
    assert_eq!(page["unread"], 1, "the refused read-all changed nothing");
}

#[tokio::test]
async fn metrics_public_opens_metrics_and_stats_and_nothing_else() {
    let app = spawn_secured(|s| s.auth.metrics_public = true).await;
    let anonymous = reqwest::Client::new();
    let metrics = send(anonymous.get(app.url("/metrics"))).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics.text().await.unwrap().contains("# TYPE"),
        "Prometheus text"
    );
    let (status, stats) = read_json(send(anonymous.get(app.url("/api/stats"))).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stats["totalConnections"].is_u64(), "{stats}");
    for request in [
        anonymous.get(app.url("/events/x")),
        anonymous.get(app.url("/api/notifications/x")),
        anonymous
            .post(app.url("/api/broadcast"))
            .json(&json!({ "title": "t", "message": "m" })),
    ] {
        let request = request.build().unwrap();
        let context = format!("{} {}", request.method(), request.url().path());
        assert_unauthorized(send_built(&anonymous, request).await, &context).await;
    }
}

#[tokio::test]
async fn herald_token_mints_a_token_the_server_accepts_for_that_user_only() {
    let app = spawn_secured(|_| {}).await;
    let output = run_herald(&["token", "alice", "--jwt-secret", SECRET, "--ttl", "1h"]).await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout:?}");
    let token = lines[0];

    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("an HS256 token with the secret")
    .claims;
    assert_eq!(claims["sub"], "alice");
    let lifetime = claims["exp"].as_u64().unwrap() as i64 - unix_now().as_secs() as i64;
    assert!(
        (3590..=3600).contains(&lifetime),
        "exp is an hour away: {lifetime}"
    );

    let mut stream = Carrier::Header
        .open_stream(&app, "/events/alice", token)
        .await;
    stream.expect_connected().await;
    let sent = app.publish("alice", "minted").await;
    assert_eq!(stream.next_event().await.data, sent);
    let response = Carrier::Header.get(&app, "/events/bob", token).await;
    assert_forbidden(response, "alice's minted token on bob's stream").await;

    let other = run_herald(&["token", "alice", "--jwt-secret", "another-secret-entirely"]).await;
    assert!(other.status.success());
    let other = String::from_utf8(other.stdout).unwrap();
    let response = Carrier::Header
        .get(&app, "/events/alice", other.trim())
        .await;
    assert_unauthorized(response, "a token minted with another secret").await;
}

#[tokio::test]
async fn herald_publish_with_the_key_succeeds_and_without_it_fails_in_one_line() {
    let app = spawn_secured(|_| {}).await;
    let publish = |key: Option<&'static str>| {
        let url = app.url.clone();
        async move {
            let mut args = vec![
                "publish",
                "alice",
                "--title",
                "from the CLI",
                "--message",
                "hello",
                "--server",
            ];
            args.push(&url);
            if let Some(key) = key {
                args.extend(["--key", key]);
            }
            run_herald(&args).await
        }
    };
    let refused = publish(None).await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("401"), "{stderr:?}");
    let wrong = publish(Some("not-the-key")).await;
    assert!(!wrong.status.success(), "{wrong:?}");
    assert_eq!(
        String::from_utf8(wrong.stderr)
            .unwrap()
            .trim_end()
            .lines()
            .count(),
        1
    );

    let accepted = publish(Some(PUBLISH_KEY)).await;
    assert!(accepted.status.success(), "{accepted:?}");
    let printed: Value = serde_json::from_slice(&accepted.stdout).expect("JSON on stdout");
    let (_, page) = app.get_json("/api/notifications/alice").await;
    assert_eq!(
        page["notifications"],
        json!([printed]),
        "stored exactly once"
    );
    assert_eq!(printed["title"], "from the CLI");
}
