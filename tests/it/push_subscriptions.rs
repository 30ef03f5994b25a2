//! docs/protocol.md#web-push: a user's push subscriptions and muted categories, stored durably
//! (create, upsert by endpoint, list, delete, the cap per user, a restart), who may touch them,
//! which endpoints are refused, and `GET /api/presence/{userId}`.

use std::sync::Arc;
use std::time::Duration;

use herald::Settings;
use herald::config::PushSettings;
use herald::push::VapidKey;
use herald::push::endpoint::{EndpointPolicy, HostPattern};
use herald::store::push::PushWhen;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::auth::{client_with, spawn_secured, token_for};

/// Push on, contacting only hosts under `push.example.test` (which never resolve, as `.test`
/// names do not: stored, since DNS may be down for a moment) and `localhost`.
fn push_on(settings: &mut Settings, per_user: u32) {
    settings.push = Some(PushSettings {
        key: Arc::new(VapidKey::generate().unwrap()),
        subject: "mailto:ops@example.com".into(),
        when: PushWhen::Offline,
        ttl: Duration::from_secs(24 * 3600),
        subscriptions_per_user: per_user,
        endpoints: EndpointPolicy::new(
            vec![
                HostPattern::parse("*.push.example.test").unwrap(),
                HostPattern::parse("localhost").unwrap(),
            ],
            false,
        ),
    });
}

/// A browser's `PushSubscription.toJSON()` for `endpoint`, with a real P-256 point.
fn subscription(endpoint: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {
            "p256dh": VapidKey::generate().unwrap().public_key(),
            "auth": "_ordMnz7uTCmrpBTeUV4Bw",
        }
    })
}

fn endpoint(n: u32) -> String {
    format!("https://fcm.push.example.test/send/secret-{n}")
}

async fn listed(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/push/{user}/subscriptions"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["subscriptions"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn subscriptions_are_stored_once_per_endpoint_listed_without_secrets_deleted_and_kept_across_a_restart()
 {
    let app = TestApp::spawn_with(|s| push_on(s, 10)).await;
    let path = "/api/push/alice/subscriptions";
    let (status, first) = app.post_json(path, &subscription(&endpoint(1))).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first_id = first["id"].as_str().expect("an id").to_owned();
    assert_eq!(first.as_object().unwrap().len(), 1, "{first}");

    // The same endpoint again (new keys, as after a browser's key rotation): the same id.
    let (status, again) = app.post_json(path, &subscription(&endpoint(1))).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &json!(first_id)));

    let (status, second) = app.post_json(path, &subscription(&endpoint(2))).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_ne!(first_id, second_id);

    let list = listed(&app, "alice").await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        [&list[0]["id"], &list[1]["id"]],
        [&json!(first_id), &json!(second_id)],
        "oldest first"
    );
    for entry in &list {
        let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["createdAt", "id", "origin"], "{entry}");
        assert_eq!(entry["origin"], "https://fcm.push.example.test");
        assert!(!entry.to_string().contains("secret"), "{entry}");
        assert!(
            entry["createdAt"].as_str().unwrap().ends_with('Z'),
            "{entry}"
        );
    }
    assert_eq!(listed(&app, "bob").await, Vec::<Value>::new());

    let app = app.restart(|s| push_on(s, 10)).await;
    assert_eq!(listed(&app, "alice").await, list, "durable");

    let (status, _) = app.delete(&format!("{path}/{first_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.delete(&format!("{path}/{first_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .delete(&format!("/api/push/bob/subscriptions/{second_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another user's id: {body}");
    let list = listed(&app, "alice").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], json!(second_id));
    app.stop().await;
}

#[tokio::test]
async fn a_user_holds_at_most_the_cap_and_an_endpoint_moves_to_whoever_subscribed_last() {
    let app = TestApp::spawn_with(|s| push_on(s, 2)).await;
    for n in 1..=2 {
        let (status, _) = app
            .post_json("/api/push/alice/subscriptions", &subscription(&endpoint(n)))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = app
        .post_json("/api/push/alice/subscriptions", &subscription(&endpoint(3)))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--push-subscriptions-per-user"),
        "{body}"
    );
    assert_eq!(listed(&app, "alice").await.len(), 2, "nothing stored");
    // An endpoint alice already has still updates at the cap.
    let (status, _) = app
        .post_json("/api/push/alice/subscriptions", &subscription(&endpoint(2)))
        .await;
    assert_eq!(status, StatusCode::OK);

    // The browser behind endpoint 2 now belongs to bob: alice no longer reaches it.
    let (status, moved) = app
        .post_json("/api/push/bob/subscriptions", &subscription(&endpoint(2)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{moved}");
    let alice = listed(&app, "alice").await;
    assert_eq!(alice.len(), 1);
    let bob = listed(&app, "bob").await;
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["id"], moved["id"]);
    // Alice has room again.
    let (status, _) = app
        .post_json("/api/push/alice/subscriptions", &subscription(&endpoint(3)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn endpoints_herald_must_not_contact_and_malformed_subscriptions_are_refused_storing_nothing()
{
    let app = TestApp::spawn_with(|s| push_on(s, 10)).await;
    let p256dh = VapidKey::generate().unwrap().public_key().to_owned();
    let cases: Vec<(Value, &str)> = vec![
        (subscription("http://fcm.push.example.test/send/x"), "https"),
        (
            subscription("https://push.example.test/send/x"),
            "not an allowed push service",
        ),
        (
            subscription("https://evil.example/send/x"),
            "not an allowed push service",
        ),
        (subscription("https://127.0.0.1/send/x"), "not an address"),
        (subscription("https://[::1]/send/x"), "not an address"),
        // Allowed by name, but it resolves to loopback.
        (subscription("https://localhost/send/x"), "internal address"),
        (subscription("not a url"), "endpoint is not a URL"),
        (
            json!({"endpoint": endpoint(1), "keys": {"p256dh": "BAAA", "auth": "_ordMnz7uTCmrpBTeUV4Bw"}}),
            "keys.p256dh must be 65 bytes",
        ),
        (
            json!({"endpoint": endpoint(1), "keys": {"p256dh": p256dh, "auth": "AAAA"}}),
            "keys.auth must be 16 bytes",
        ),
        (json!({"endpoint": endpoint(1)}), "keys"),
    ];
    for (body, expected) in cases {
        let (status, answer) = app.post_json("/api/push/alice/subscriptions", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{body}: {answer}");
    }
    assert_eq!(listed(&app, "alice").await, Vec::<Value>::new());
    app.stop().await;
}

#[tokio::test]
async fn only_the_user_or_a_publisher_touches_subscriptions_and_preferences() {
    let app = spawn_secured(|s| push_on(s, 10)).await;
    let alice = app.with_client(client_with(
        AUTHORIZATION,
        &format!("Bearer {}", token_for("alice", 3600)),
    ));
    let bob = app.with_client(client_with(
        AUTHORIZATION,
        &format!("Bearer {}", token_for("bob", 3600)),
    ));
    let anonymous = app.with_client(reqwest::Client::new());
    let path = "/api/push/alice/subscriptions";

    let (status, created) = alice.post_json(path, &subscription(&endpoint(1))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _) = bob.post_json(path, &subscription(&endpoint(2))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = anonymous.post_json(path, &subscription(&endpoint(2))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = bob.get_json(path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob.delete(&format!("{path}/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let prefs = "/api/push/alice/preferences";
    let (status, _) = bob
        .put_json(prefs, &json!({"mutedCategories": ["x"]}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Presence is for publishers only: not even alice reads her own.
    let (status, _) = alice.get_json("/api/presence/alice").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The publish key (the app's own server) may do all of it.
    let (status, list) = app.get_json(path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    let (status, _) = alice.get_json(path).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete(&format!("{path}/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.stop().await;
}

#[tokio::test]
async fn muted_categories_are_kept_sorted_once_each_and_bad_ones_change_nothing() {
    let app = TestApp::spawn_with(|s| push_on(s, 10)).await;
    let path = "/api/push/alice/preferences";
    let (status, body) = app.get_json(path).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"mutedCategories": []}))
    );
    let (status, body) = app
        .put_json(
            path,
            &json!({"mutedCategories": ["social", "billing", "social"]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"mutedCategories": ["billing", "social"]})
        )
    );
    for bad in [
        json!({"mutedCategories": ["Not Valid"]}),
        json!({"mutedCategories": "social"}),
        json!({"muted": []}),
    ] {
        let (status, answer) = app.put_json(path, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    let app = app.restart(|s| push_on(s, 10)).await;
    let (_, body) = app.get_json(path).await;
    assert_eq!(body, json!({"mutedCategories": ["billing", "social"]}));
    app.stop().await;
}

#[tokio::test]
async fn push_routes_say_push_is_off_without_a_vapid_key() {
    let app = TestApp::spawn().await;
    for (status, body) in [
        app.post_json("/api/push/alice/subscriptions", &subscription(&endpoint(1)))
            .await,
        app.get_json("/api/push/alice/subscriptions").await,
        app.get_json("/api/push/alice/preferences").await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("push is off"),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn presence_counts_a_users_open_streams_whether_push_is_on_or_not() {
    let app = TestApp::spawn().await;
    let presence = |app: &TestApp| {
        let api = app.api.clone();
        async move { api.get_json("/api/presence/carol").await }
    };
    assert_eq!(
        presence(&app).await,
        (StatusCode::OK, json!({"online": false, "streams": 0}))
    );
    let mut first = app.subscribe("carol", None).await;
    first.expect_connected().await;
    let mut second = app.subscribe("carol", None).await;
    second.expect_connected().await;
    assert_eq!(
        presence(&app).await,
        (StatusCode::OK, json!({"online": true, "streams": 2}))
    );
    drop(first);
    app.wait_for_streams(1).await;
    assert_eq!(
        presence(&app).await,
        (StatusCode::OK, json!({"online": true, "streams": 1}))
    );
    drop(second);
    app.wait_for_streams(0).await;
    assert_eq!(
        presence(&app).await,
        (StatusCode::OK, json!({"online": false, "streams": 0}))
    );
    app.stop().await;
}
