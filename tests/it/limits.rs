//! Limits: the per-client publish rate (`--publish-rate`), stream caps and
//! body size. A refused request gets its status, a `{"error"}` body and, where the client should
//! come back, a `Retry-After` in whole seconds; it is never stored and never sent.
//!
//! Covered elsewhere, not repeated here: the 64 KiB boundary of publishes and of broadcasts
//! with a `Content-Length` (api.rs), the basic per-user 429 and node-wide 503 (streams.rs).

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::answers::Answer;
use crate::helpers::{TestApp, WAIT, client_from};

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
            .map(|title| app.publish_answer("alice", title)),
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
        app.history_total("alice").await,
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
    let after = app.publish_answer("alice", "after the wait").await;
    assert_eq!(after.status, StatusCode::CREATED, "{after:?}");
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data),
        ("notification", &after.body)
    );
    assert_eq!(app.history_total("alice").await, 6);
}

#[tokio::test]
async fn broadcasts_and_publishes_share_one_budget_per_client() {
    let app = TestApp::spawn_with(limited_to(1)).await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;

    let first = app.broadcast_answer("first").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let publish = app.publish_answer("alice", "too soon").await;
    let retry_after =
        publish.assert_refused("a publish after a broadcast", StatusCode::TOO_MANY_REQUESTS);
    let broadcast = app.broadcast_answer("again").await;
    broadcast.assert_refused("a second broadcast", StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(app.history_total("alice").await, 0);
    assert_eq!(app.events_in_log().await, 1, "only the first broadcast");
    let announced = stream.next_event().await;
    assert_eq!(
        (announced.event.as_str(), &announced.data["title"]),
        ("announcement", &json!("first"))
    );

    wait(retry_after).await;
    let later = app.publish_answer("alice", "later").await;
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
    let here = app.with_client(client_from("127.0.0.1"));
    let there = app.with_client(client_from("127.0.0.2"));

    let ok = here.publish_answer("alice", "from here").await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    here.publish_answer("alice", "from here again")
        .await
        .assert_refused("127.0.0.1 over its budget", StatusCode::TOO_MANY_REQUESTS);

    let ok = there.publish_answer("alice", "from there").await;
    assert_eq!(
        ok.status,
        StatusCode::CREATED,
        "127.0.0.2 is not limited by 127.0.0.1: {ok:?}"
    );
    there
        .publish_answer("alice", "from there again")
        .await
        .assert_refused("127.0.0.2 over its budget", StatusCode::TOO_MANY_REQUESTS);
    here.publish_answer("alice", "from here, still too soon")
        .await
        .assert_refused("127.0.0.1 still over", StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(app.history_total("alice").await, 2);
}

#[tokio::test]
async fn the_publish_rate_limits_nothing_but_publishes_and_broadcasts() {
    let app = TestApp::spawn_with(limited_to(1)).await;
    let stored = app.publish("alice", "the one allowed").await;
    app.publish_answer("alice", "over")
        .await
        .assert_refused("over the budget", StatusCode::TOO_MANY_REQUESTS);

    // The same client may still read, mark read and subscribe as much as it likes.
    for _ in 0..5 {
        assert_eq!(app.history_total("alice").await, 1);
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
            .map(|title| app.publish_answer("alice", title)),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    }
    assert_eq!(app.history_total("alice").await, 30);
}

// ---------------------------------------------------------------------------------------------
// Stream caps.

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
        app.stream_answer("kim")
            .await
            .assert_refused("kim over the per-user cap", StatusCode::TOO_MANY_REQUESTS);
    }
    let lee = [
        app.subscribe("lee", None).await,
        app.subscribe("lee", None).await,
    ];
    for user in ["max", "kim"] {
        app.stream_answer(user)
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
    let mut again = app.subscribe_when_a_place_frees("kim").await;
    again.expect_connected().await;
    app.stream_answer("max")
        .await
        .assert_refused("the node full again", StatusCode::SERVICE_UNAVAILABLE);
    // With room on the node, kim is still held to two (the node's cap is checked first, so
    // wait until lee's closed stream has left).
    drop(lee);
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let answer = app.stream_answer("kim").await;
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
    assert_eq!(app.events_in_log().await, 0);

    let marker = app.broadcast("the marker").await;
    assert_eq!(marker["sent"], true);
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data["title"]),
        ("announcement", &json!("the marker"))
    );
}
