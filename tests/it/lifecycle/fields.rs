//! `data`, `category`, `ttl` and `expiresAt` on publish: delivered and returned exactly as
//! given, and every fault refused with the field named and nothing stored or sent.

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::answers::{assert_error, keys};
use crate::helpers::{TestApp, assert_next_is_marker};

fn parse_time(text: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(text.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn data_and_category_are_returned_stored_and_delivered_exactly_as_given() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    // Key order, number spelling and escapes are the publisher's; only whitespace goes.
    let raw = r#"{"title":"Invoice","message":"paid","category":"billing.v2",
        "data": { "z" : 1.50, "a" : [ "x y", {"q":"\"é\""} ], "n": null }}"#;
    let response = app
        .client
        .post(app.url("/api/notifications/alice"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.expect("body");
    assert!(
        text.contains(r#""data":{"z":1.50,"a":["x y",{"q":"\"é\""}],"n":null}"#),
        "data as given, compact: {text}"
    );
    let created: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        keys(&created),
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
    assert_eq!(created["category"], "billing.v2");

    let event = stream.next_event().await;
    assert_eq!(event.event, "notification");
    assert_eq!(event.data, created);
    let page = app.history("alice", "").await;
    assert_eq!(page["notifications"][0], created);
}

#[tokio::test]
async fn a_ttl_or_an_expiry_time_sets_expires_at() {
    let app = TestApp::spawn().await;
    let with_ttl = app
        .publish_body("alice", &json!({ "title": "t", "message": "m", "ttl": 90 }))
        .await;
    let lifetime = parse_time(&with_ttl["expiresAt"]) - parse_time(&with_ttl["timestamp"]);
    assert_eq!(lifetime, time::Duration::seconds(90), "{with_ttl}");

    let at = OffsetDateTime::now_utc() + time::Duration::hours(2);
    let at = at.replace_nanosecond(0).expect("whole second");
    let with_time = app
        .publish_body(
            "alice",
            &json!({ "title": "t", "message": "m", "expiresAt": at.format(&Rfc3339).unwrap() }),
        )
        .await;
    assert_eq!(parse_time(&with_time["expiresAt"]), at);
    assert!(
        with_time["expiresAt"].as_str().unwrap().ends_with(".000Z"),
        "UTC with milliseconds, as timestamps are: {with_time}"
    );
    let page = app.history("alice", "").await;
    assert_eq!(page["total"], 2);
}

#[tokio::test]
async fn each_fault_of_the_new_fields_is_a_400_naming_it_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let big = "x".repeat(8 * 1024);
    let past = (OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .format(&Rfc3339)
        .unwrap();
    let far = (OffsetDateTime::now_utc() + time::Duration::days(2))
        .format(&Rfc3339)
        .unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("data", json!({ "data": [1, 2] })),
        ("data", json!({ "data": "text" })),
        ("data", json!({ "data": 5 })),
        ("data", json!({ "data": { "k": big } })),
        ("category", json!({ "category": "" })),
        ("category", json!({ "category": "Billing" })),
        ("category", json!({ "category": "a b" })),
        ("category", json!({ "category": "c".repeat(65) })),
        ("category", json!({ "category": 7 })),
        ("ttl", json!({ "ttl": 0 })),
        ("ttl", json!({ "ttl": -5 })),
        ("ttl", json!({ "ttl": 1.5 })),
        ("ttl", json!({ "ttl": "1h" })),
        ("ttl", json!({ "ttl": 86_401 })),
        ("expiresAt", json!({ "expiresAt": past })),
        ("expiresAt", json!({ "expiresAt": far })),
        ("expiresAt", json!({ "expiresAt": "tomorrow" })),
        ("ttl", json!({ "ttl": 60, "expiresAt": far })),
    ];
    for (field, extra) in cases {
        let mut body = json!({ "title": "t", "message": "m" });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = app.post_json("/api/notifications/alice", &body).await;
        let case = format!("{field} in {body}");
        assert_error(&case, StatusCode::BAD_REQUEST, status, &answer);
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(field), "{case}: {message}");
    }
    assert_eq!(app.history_total("alice").await, 0);
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

#[tokio::test]
async fn data_of_exactly_8_kib_as_compact_json_is_accepted_however_it_is_spaced() {
    let app = TestApp::spawn().await;
    let at_limit = format!("{{\"k\":\"{}\"}}", "x".repeat(8 * 1024 - 8));
    assert_eq!(at_limit.len(), 8 * 1024);
    let spaced = at_limit.replace(':', " :  ");
    let body = format!(r#"{{"title":"t","message":"m","data":{spaced}}}"#);
    let (status, answer) = app
        .post_bytes("/api/notifications/alice", Some("application/json"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(
        serde_json::to_string(&answer["data"]).unwrap().len(),
        8 * 1024
    );
}
