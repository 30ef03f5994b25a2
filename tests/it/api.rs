//! SPEC §3: the JSON API, with exact statuses and bodies. Every refused request is checked to
//! have changed nothing: nothing stored (history and the log unchanged) and nothing sent (a
//! marker published afterwards is the next event on the user's open stream).
//!
//! - `publish`: the notification JSON, every validation rule, body size and content type, and
//!   user ids, including those a URL parser would normalise.
//! - `idempotency`: `Idempotency-Key`.
//! - `history`: newest first, `limit`, paging with `before`, counts, `unread`, `lastEventId`,
//!   and read state.
//! - `operations`: broadcast, stats, health, metrics, the OpenAPI document, unknown routes and
//!   methods.

mod history;
mod idempotency;
mod operations;
mod publish;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::Value;

use crate::helpers::{SseClient, TestApp, read_json};

/// Asserts `status` is `expected` and the body is exactly `{"error": "<non-empty text>"}`.
fn assert_error(case: &str, expected: StatusCode, status: StatusCode, body: &Value) {
    assert_eq!(status, expected, "{case}: {body}");
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{case}: the error body is not an object: {body}"));
    assert_eq!(object.len(), 1, "{case}: only `error` is expected: {body}");
    let message = object["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: `error` is not a string: {body}"));
    assert!(!message.trim().is_empty(), "{case}: empty error message");
}

/// The sorted keys of a JSON object.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// POSTs `body` as given, with an optional `Content-Type`.
async fn post_bytes(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    read_json(request.send().await.expect("request sent")).await
}

/// A valid body (title "big", message "m") padded with JSON whitespace to exactly `size` bytes.
fn padded_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"title":"big","message":"m"}"#.to_vec();
    body.resize(size, b' ');
    body
}

/// Publishes `body` for `user` with an `Idempotency-Key` header.
async fn publish_with_key(
    app: &TestApp,
    user: &str,
    key: HeaderValue,
    body: &Value,
) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/notifications/{user}")))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request sent");
    read_json(response).await
}

/// `GET /api/notifications/{user}{query}`, asserting `200`.
async fn history(app: &TestApp, user: &str, query: &str) -> Value {
    let (status, body) = app
        .get_json(&format!("/api/notifications/{user}{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "history{query}: {body}");
    body
}

/// The ids of a history page, in the order given.
fn page_ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The titles of a history page, in the order given.
fn page_titles(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| n["title"].as_str().expect("title").to_owned())
        .collect()
}

async fn stats(app: &TestApp) -> Value {
    let (status, body) = app.get_json("/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// Publishes `n0`, `n1`, ... for `user`, one after the other; returns them in that order.
async fn publish_numbered(app: &TestApp, user: &str, n: usize) -> Vec<Value> {
    let mut published = Vec::with_capacity(n);
    for i in 0..n {
        published.push(app.publish(user, &format!("n{i}")).await);
    }
    published
}

/// Publishes a marker for `user` and asserts it is the very next event on `stream`: whatever
/// was attempted before reached that stream only if it came out earlier.
async fn assert_next_is_marker(app: &TestApp, user: &str, stream: &mut SseClient) {
    let marker = app.publish(user, "marker").await;
    let next = stream.next_event().await;
    assert_eq!(next.event, "notification", "{next:?}");
    assert_eq!(
        next.data, marker,
        "the marker is the next event on the stream"
    );
}

fn id_of(notification: &Value) -> &str {
    notification["id"].as_str().expect("id")
}
