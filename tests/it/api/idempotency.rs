//! `Idempotency-Key`: the same key again for that user is `200` with the same notification,
//! stored and sent once.

use futures::future::join_all;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::helpers::answers::{assert_error, id_of, page_ids, page_titles};
use crate::helpers::{TestApp, assert_next_is_marker};

#[tokio::test]
async fn the_same_idempotency_key_again_is_200_with_the_same_notification_and_is_sent_once() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let key = HeaderValue::from_static("order-42-shipped");
    let body = json!({ "type": "success", "title": "Shipped", "message": "order 42" });

    let (status, first) = app.publish_with_key("alice", key.clone(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = app.publish_with_key("alice", key.clone(), &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "the identical notification");
    // The key decides, not the body.
    let other_body = json!({ "title": "Something else", "message": "entirely" });
    let (status, third) = app.publish_with_key("alice", key, &other_body).await;
    assert_eq!((status, &third), (StatusCode::OK, &first));

    let sent = stream.next_event().await;
    assert_eq!((sent.event.as_str(), &sent.data), ("notification", &first));
    assert_next_is_marker(&app, "alice", &mut stream).await;
    let page = app.history("alice", "").await;
    assert_eq!(page["total"], 2, "the first and the marker: {page}");
    assert_eq!(page_titles(&page), ["marker", "Shipped"]);
    assert_eq!(page["notifications"][1], first);
    assert_eq!(app.stats().await["eventsBuffered"], 2);
}

#[tokio::test]
async fn concurrent_publishes_with_one_idempotency_key_store_and_send_exactly_one() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let body = json!({ "title": "Paid", "message": "invoice 7" });
    let answers = join_all(
        (0..12)
            .map(|_| app.publish_with_key("alice", HeaderValue::from_static("invoice-7"), &body)),
    )
    .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, n)| n)
        .collect();
    assert_eq!(created.len(), 1, "exactly one 201: {answers:?}");
    for (status, n) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::OK,
            "{status}"
        );
        assert_eq!(n, created[0], "every answer is the one notification");
    }
    assert_eq!(stream.next_event().await.data, *created[0]);
    assert_next_is_marker(&app, "alice", &mut stream).await;
    assert_eq!(app.history("alice", "").await["total"], 2);
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_one_user() {
    let app = TestApp::spawn().await;
    let key = HeaderValue::from_static("same-key");
    let (status, alices) = app
        .publish_with_key(
            "alice",
            key.clone(),
            &json!({ "title": "for alice", "message": "m" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, bobs) = app
        .publish_with_key(
            "bob",
            key.clone(),
            &json!({ "title": "for bob", "message": "m" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another user's key is independent"
    );
    assert_ne!(id_of(&alices), id_of(&bobs));
    assert_eq!(bobs["title"], "for bob");
    assert_eq!(page_ids(&app.history("bob", "").await), [id_of(&bobs)]);
    assert_eq!(page_ids(&app.history("alice", "").await), [id_of(&alices)]);
    // Each user's key still answers with that user's notification.
    let (status, again) = app
        .publish_with_key("bob", key, &json!({ "title": "for bob", "message": "m" }))
        .await;
    assert_eq!((status, again), (StatusCode::OK, bobs));
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let body = json!({ "title": "t", "message": "m" });
    let bad: Vec<(&str, HeaderValue)> = vec![
        (
            "300 characters",
            HeaderValue::from_str(&"k".repeat(300)).unwrap(),
        ),
        (
            "256 characters",
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        ),
        ("empty", HeaderValue::from_static("")),
        ("an inner space", HeaderValue::from_static("two words")),
        ("an inner tab", HeaderValue::from_static("tab\tkey")),
        (
            "non-ASCII bytes",
            HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        ),
    ];
    for (case, key) in bad {
        let (status, answer) = app.publish_with_key("alice", key, &body).await;
        assert_error(case, StatusCode::BAD_REQUEST, status, &answer);
    }
    assert_eq!(app.history("alice", "").await["total"], 0);
    assert_next_is_marker(&app, "alice", &mut stream).await;

    let longest = HeaderValue::from_str(&"k".repeat(255)).unwrap();
    let (status, first) = app.publish_with_key("alice", longest.clone(), &body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "255 visible characters are fine"
    );
    let (status, again) = app.publish_with_key("alice", longest, &body).await;
    assert_eq!((status, again), (StatusCode::OK, first));
}

/// The answers carry the notification as JSON, `Content-Type: application/json`, and a repeat
/// carries the very bytes of the first answer (the store's own encoding, not a second one).
#[tokio::test]
async fn a_publish_and_its_repeat_answer_with_the_same_json_bytes_typed_as_json() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let body = json!({ "title": "Typed", "message": "as json", "category": "orders" });
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/api/notifications/alice"))
            .header("idempotency-key", "typed-1")
            .json(&body)
            .send()
            .await
            .expect("answered");
        let status = response.status();
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        let text = response.text().await.expect("a body");
        answers.push((status, content_type, text));
    }
    let [
        (first_status, first_type, first),
        (again_status, again_type, again),
    ] = <[_; 2]>::try_from(answers).expect("two answers");
    assert_eq!(
        (first_status, again_status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first_type, "application/json");
    assert_eq!(again_type, "application/json");
    assert_eq!(again, first, "the same bytes");
    let notification: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(notification["title"], "Typed");
    assert_eq!(notification["category"], "orders");
    let sent = stream.next_event().await;
    assert_eq!(
        (sent.event.as_str(), &sent.data),
        ("notification", &notification)
    );
}
