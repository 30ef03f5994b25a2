//! Limits (issue 3, item 9): the per-client publish rate (`--publish-rate`), stream caps and
//! body size. A refused request gets its status, a `{"error"}` body and, where the client should
//! come back, a `Retry-After` in whole seconds; it is never stored and never sent.
//!
//! Covered elsewhere, not repeated here: the 64 KiB boundary of publishes and of broadcasts
//! with a `Content-Length` (api.rs), the basic per-user 429 and node-wide 503 (streams.rs).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, WAIT};

/// A response as these tests look at it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// `Retry-After`, which must be whole seconds when present.
    retry_after: Option<u64>,
    content_type: Option<String>,
    body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let retry_after = headers.get("retry-after").map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("Retry-After is not whole seconds: {value:?}"))
        });
        let content_type = headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            retry_after,
            content_type,
            body,
        }
    }

    /// Asserts a refusal: `status`, a JSON `{"error": "..."}` and a `Retry-After` of at least
    /// one second, which is returned.
    fn assert_refused(&self, case: &str, status: StatusCode) -> u64 {
        assert_eq!(self.status, status, "{case}: {self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{case}: an error, never an event stream"
        );
        let message = self.body["error"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{case}: {self:?}");
        let seconds = self
            .retry_after
            .unwrap_or_else(|| panic!("{case}: no Retry-After"));
        assert!(seconds >= 1, "{case}: Retry-After {seconds}");
        seconds
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Answer {
    let sent = tokio::time::timeout(WAIT, client.post(url).json(&body).send())
        .await
        .expect("answered in time")
        .expect("request sent");
    Answer::read(sent).await
}

fn notification(title: &str) -> Value {
    json!({ "title": title, "message": format!("about {title}") })
}

async fn publish_from(client: &reqwest::Client, app: &TestApp, user: &str, title: &str) -> Answer {
    post(
        client,
        app.url(&format!("/api/notifications/{user}")),
        notification(title),
    )
    .await
}

async fn history_total(app: &TestApp, user: &str) -> u64 {
    let (status, page) = app.get_json(&format!("/api/notifications/{user}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["total"].as_u64().expect("total")
}

async fn events_in_log(app: &TestApp) -> u64 {
    let (status, stats) = app.get_json("/api/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats["eventsBuffered"].as_u64().expect("eventsBuffered")
}

/// A client whose connections come from `local` (any 127.x.y.z works on Linux loopback).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().expect("an address"))
        .build()
        .expect("client")
}

fn limited_to(rate: u32) -> impl FnOnce(&mut herald::Settings) {
    move |s| s.publish_rate = NonZeroU32::new(rate)
}

async fn wait(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

// ---------------------------------------------------------------------------------------------
// The publish rate.

#[tokio::test]
async fn over_the_publish_rate_a_sixth_quick_publish_is_429_and_is_neither_stored_nor_sent() {
    let app = TestApp::spawn_with(limited_to(5)).await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;

    // Six at once, so all six arrive well within the 200 ms in which a budget of 5/s earns one
    // more: exactly one is refused, whichever the server saw last.
    let titles: Vec<String> = (0..6).map(|i| format!("burst {i}")).collect();
    let answers = join_all(
        titles
            .iter()
            .map(|title| publish_from(&app.client, &app, "alice", title)),
    )
    .await;
    let mut accepted = BTreeSet::new();
    let mut refused = Vec::new();
    for (title, answer) in titles.iter().zip(&answers) {
        match answer.status {
            StatusCode::CREATED => {
                accepted.insert(title.clone());
            }
            _ => refused.push((title.clone(), answer)),
        }
    }
    assert_eq!(accepted.len(), 5, "{answers:?}");
    let [(refused_title, refusal)] = refused.as_slice() else {
        panic!("exactly one refusal expected: {answers:?}");
    };
    let retry_after = refusal.assert_refused("the sixth publish", StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(
        history_total(&app, "alice").await,
        5,
        "the refused one is not stored"
    );
    let delivered: BTreeSet<String> = stream
        .next_events(5)
        .await
        .into_iter()
        .map(|event| event.data["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(delivered, accepted);
    assert!(!delivered.contains(refused_title));

    // After the wait it asked for, the client may publish again; that publish is the very next
    // event on the stream, so the refused one was never sent.
    wait(retry_after).await;
    let after = publish_from(&app.client, &app, "alice", "after the wait").await;
    assert_eq!(after.status, StatusCode::CREATED, "{after:?}");
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data),
        ("notification", &after.body)
    );
    assert_eq!(history_total(&app, "alice").await, 6);
}

#[tokio::test]
async fn broadcasts_and_publishes_share_one_budget_per_client() {
    let app = TestApp::spawn_with(limited_to(1)).await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;

    let first = post(
        &app.client,
        app.url("/api/broadcast"),
        notification("first"),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let publish = publish_from(&app.client, &app, "alice", "too soon").await;
    let retry_after =
        publish.assert_refused("a publish after a broadcast", StatusCode::TOO_MANY_REQUESTS);
    let broadcast = post(
        &app.client,
        app.url("/api/broadcast"),
        notification("again"),
    )
    .await;
    broadcast.assert_refused("a second broadcast", StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(history_total(&app, "alice").await, 0);
    assert_eq!(events_in_log(&app).await, 1, "only the first broadcast");
    let announced = stream.next_event().await;
    assert_eq!(
        (announced.event.as_str(), &announced.data["title"]),
        ("announcement", &json!("first"))
    );

    wait(retry_after).await;
    let later = publish_from(&app.client, &app, "alice", "later").await;
    assert_eq!(later.status, StatusCode::CREATED, "{later:?}");
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data),
        ("notification", &later.body)
    );
}

#[tokio::test]
async fn each_client_address_has_a_budget_of_its_own() {
    let app = TestApp::spawn_with(limited_to(1)).await;
    let here = client_from("127.0.0.1");
    let there = client_from("127.0.0.2");

    let ok = publish_from(&here, &app, "alice", "from here").await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    publish_from(&here, &app, "alice", "from here again")
        .await
        .assert_refused("127.0.0.1 over its budget", StatusCode::TOO_MANY_REQUESTS);

    let ok = publish_from(&there, &app, "alice", "from there").await;
    assert_eq!(
        ok.status,
        StatusCode::CREATED,
        "127.0.0.2 is not limited by 127.0.0.1: {ok:?}"
    );
    publish_from(&there, &app, "alice", "from there again")
        .await
        .assert_refused("127.0.0.2 over its budget", StatusCode::TOO_MANY_REQUESTS);
    publish_from(&here, &app, "alice", "from here, still too soon")
        .await
        .assert_refused("127.0.0.1 still over", StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(history_total(&app, "alice").await, 2);
}

#[tokio::test]
async fn the_publish_rate_limits_nothing_but_publishes_and_broadcasts() {
    let app = TestApp::spawn_with(limited_to(1)).await;
    let stored = app.publish("alice", "the one allowed").await;
    publish_from(&app.client, &app, "alice", "over")
        .await
        .assert_refused("over the budget", StatusCode::TOO_MANY_REQUESTS);

    // The same client may still read, mark read and subscribe as much as it likes.
    for _ in 0..5 {
        assert_eq!(history_total(&app, "alice").await, 1);
    }
    let id = stored["id"].as_str().expect("id");
    let (status, body) = app
        .post_empty(&format!("/api/notifications/alice/{id}/read"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.post_empty("/api/notifications/alice/read-all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = app.subscribe("alice", None).await;
        stream.expect_connected().await;
        streams.push(stream);
    }
}

#[tokio::test]
async fn without_a_publish_rate_publishes_are_not_limited() {
    let app = TestApp::spawn().await;
    let titles: Vec<String> = (0..30).map(|i| format!("n{i}")).collect();
    let answers = join_all(
        titles
            .iter()
            .map(|title| publish_from(&app.client, &app, "alice", title)),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    }
    assert_eq!(history_total(&app, "alice").await, 30);
}

// ---------------------------------------------------------------------------------------------
// Stream caps.

/// Opens `user`'s stream, retrying while a just-closed stream still holds its place.
async fn open_when_a_place_frees(app: &TestApp, user: &str) -> SseClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt =
            SseClient::try_open(&app.client, &app.url(&format!("/events/{user}")), None).await;
        if attempt.status == StatusCode::OK {
            return attempt;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed place was never reused ({})",
            attempt.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open(app: &TestApp, user: &str) -> Answer {
    let response = tokio::time::timeout(
        WAIT,
        app.client.get(app.url(&format!("/events/{user}"))).send(),
    )
    .await
    .expect("answered in time")
    .expect("request sent");
    Answer::read(response).await
}

#[tokio::test]
async fn refused_streams_get_a_json_error_with_retry_after_and_take_no_place() {
    let app = TestApp::spawn_with(|s| {
        s.max_streams = 4;
        s.max_streams_per_user = 2;
    })
    .await;
    let mut kim = vec![
        app.subscribe("kim", None).await,
        app.subscribe("kim", None).await,
    ];
    for _ in 0..3 {
        open(&app, "kim")
            .await
            .assert_refused("kim over the per-user cap", StatusCode::TOO_MANY_REQUESTS);
    }
    let lee = [
        app.subscribe("lee", None).await,
        app.subscribe("lee", None).await,
    ];
    for user in ["max", "kim"] {
        open(&app, user)
            .await
            .assert_refused("a full node", StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, stats) = app.get_json("/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats["totalConnections"], 4,
        "refusals hold no place: {stats}"
    );

    // A closed stream gives its user, and the node, exactly one place back.
    drop(kim.pop());
    let mut again = open_when_a_place_frees(&app, "kim").await;
    again.expect_connected().await;
    open(&app, "max")
        .await
        .assert_refused("the node full again", StatusCode::SERVICE_UNAVAILABLE);
    // With room on the node, kim is still held to two (the node's cap is checked first, so
    // wait until lee's closed stream has left).
    drop(lee);
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let answer = open(&app, "kim").await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lee's places never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    refused.assert_refused("kim at the cap again", StatusCode::TOO_MANY_REQUESTS);
}

// ---------------------------------------------------------------------------------------------
// Body size.

#[tokio::test]
async fn an_oversized_broadcast_sent_without_a_length_is_413_and_reaches_no_stream() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let huge = json!({ "title": "t", "message": "m".repeat(200 * 1024) }).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(16 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = app
        .client
        .post(app.url("/api/broadcast"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request sent");
    let answer = Answer::read(response).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert!(
        answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer:?}"
    );
    assert_eq!(events_in_log(&app).await, 0);

    let marker = app.broadcast("the marker").await;
    assert_eq!(marker["sent"], true);
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data["title"]),
        ("announcement", &json!("the marker"))
    );
}
