//! `POST /api/notifications`: each listed user gets its own notification and event, no one else
//! does, all or nothing, and `Idempotency-Key` covers the whole request.

use std::collections::HashSet;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::helpers::answers::{assert_error, keys, page_ids};
use crate::helpers::{TestApp, assert_next_is_marker, note, send};

#[tokio::test]
async fn every_listed_user_gets_its_own_notification_on_every_stream_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    let mut alice_tabs = [
        app.subscribe("alice", None).await,
        app.subscribe("alice", None).await,
    ];
    let mut bob = app.subscribe("bob", None).await;
    let mut carol = app.subscribe("carol", None).await;
    for stream in alice_tabs.iter_mut().chain([&mut bob, &mut carol]) {
        stream.expect_connected().await;
    }
    let body = json!({ "title": "Maintenance", "message": "at noon", "category": "ops",
                       "data": { "window": 2 } });
    let ids = app.publish_to_many(&["bob", "alice"], &body).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 2, "own ids");

    for (user, id, streams) in [
        ("alice", &ids[1], alice_tabs.iter_mut().collect::<Vec<_>>()),
        ("bob", &ids[0], vec![&mut bob]),
    ] {
        let page = app.history(user, "").await;
        assert_eq!(page_ids(&page), std::slice::from_ref(id), "{user}");
        let stored = &page["notifications"][0];
        assert_eq!(
            keys(stored),
            [
                "category",
                "data",
                "id",
                "message",
                "read",
                "timestamp",
                "title",
                "type"
            ]
        );
        assert_eq!(stored["title"], "Maintenance");
        assert_eq!(stored["data"], json!({ "window": 2 }));
        for stream in streams {
            let event = stream.next_event().await;
            assert_eq!(event.event, "notification");
            assert_eq!(
                &event.data, stored,
                "{user}'s stream carries its own notification"
            );
        }
    }
    // Each has its own read state.
    app.mark_read("bob", &ids[0]).await;
    assert_eq!(app.history("alice", "").await["unread"], 1);
    assert_eq!(app.history("bob", "").await["unread"], 0);

    assert_eq!(app.history_total("carol").await, 0);
    assert_next_is_marker(&app, "carol", &mut carol).await;
}

#[tokio::test]
async fn a_fault_anywhere_in_the_request_stores_nothing_for_anyone() {
    let app = TestApp::spawn().await;
    let mut alice = app.subscribe("alice", None).await;
    alice.expect_connected().await;
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let cases: Vec<(&str, Value)> = vec![
        ("users", json!({ "title": "t", "message": "m" })),
        (
            "users",
            json!({ "users": [], "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": many, "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": ["alice", "bob", "alice"], "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": ["alice", "b c"], "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": ["alice", "me"], "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": ["alice", 7], "title": "t", "message": "m" }),
        ),
        (
            "users",
            json!({ "users": "alice", "title": "t", "message": "m" }),
        ),
        ("title", json!({ "users": ["alice"], "message": "m" })),
        (
            "category",
            json!({ "users": ["alice"], "title": "t", "message": "m", "category": "X" }),
        ),
        (
            "data",
            json!({ "users": ["alice"], "title": "t", "message": "m", "data": [] }),
        ),
    ];
    for (field, body) in cases {
        let (status, answer) = app.post_json("/api/notifications", &body).await;
        let case = format!("{field}: {body}");
        assert_error(&case, StatusCode::BAD_REQUEST, status, &answer);
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{case}: {answer}"
        );
    }
    for user in ["alice", "bob", "u0", "u999"] {
        assert_eq!(app.history_total(user).await, 0, "{user}");
    }
    // The single-user route names its user in the path, never in the body.
    let mut with_users = note("t");
    with_users["users"] = json!(["bob"]);
    let (status, answer) = app.post_json("/api/notifications/alice", &with_users).await;
    assert_error(
        "users on the single route",
        StatusCode::BAD_REQUEST,
        status,
        &answer,
    );
    assert_eq!(app.events_in_log().await, 0);
    assert_next_is_marker(&app, "alice", &mut alice).await;
}

#[tokio::test]
async fn a_thousand_users_are_one_request_and_each_gets_exactly_one_event() {
    let app = TestApp::spawn().await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let watched = ["user-0", "user-499", "user-999"];
    let mut streams = Vec::new();
    for user in watched {
        let mut stream = app.subscribe(user, None).await;
        stream.expect_connected().await;
        streams.push(stream);
    }
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let ids = app.publish_to_many(&names, &note("to all")).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);
    assert_eq!(app.events_in_log().await, 1000);
    for (user, stream) in watched.iter().zip(&mut streams) {
        let event = stream.next_event().await;
        let at = names.iter().position(|name| name == user).unwrap();
        assert_eq!(event.data["id"], ids[at], "{user}");
        assert_next_is_marker(&app, user, stream).await;
    }
    assert_eq!(app.history_total("user-500").await, 1);
}

#[tokio::test]
async fn an_idempotency_key_covers_the_whole_request() {
    let app = TestApp::spawn().await;
    let mut bob = app.subscribe("bob", None).await;
    bob.expect_connected().await;
    let body = json!({ "users": ["alice", "bob"], "title": "once", "message": "m" });
    let post = || {
        send(
            app.client
                .post(app.url("/api/notifications"))
                .header("idempotency-key", "bulk-1")
                .json(&body),
        )
    };
    let first = post().await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = post().await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(
        bob.next_event().await.data["id"],
        first["notifications"][1]["id"]
    );
    assert_next_is_marker(&app, "bob", &mut bob).await;
    assert_eq!(app.history_total("alice").await, 1);
    // A key of a single-user publish is another key.
    let (status, _) = app
        .publish_with_key("alice", HeaderValue::from_static("bulk-1"), &note("single"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}
