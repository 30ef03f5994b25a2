//! Plain HTTP/1.x clients on the wire: the API, the page and the streams are answered by
//! herald's own HTTP/1 path (`herald::http1`), the odd rest by hyper, and a client
//! cannot tell the seam. A stream on herald's path says `connection: close` (hyper's would
//! not), which is how these tests see which path served it.

use std::time::{Duration, Instant};

use crate::helpers::wire::{RawClient, expect_lean_stream, get_request, post_request};
use crate::helpers::{SseClient, TestApp, h2c_client};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn an_http_1_1_stream_is_chunked_says_it_will_close_and_ends_with_the_last_chunk() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    client.send(&get_request("/events/ann")).await;
    let head = client.read_through("\r\n\r\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "transfer-encoding: chunked",
        "connection: close",
        "date: ",
    ] {
        assert!(head.contains(&format!("\r\n{line}")), "{line} in {head}");
    }
    client.read_through("event: connected\n").await;
    client.read_through("\n\r\n").await;

    app.publish("ann", "over the wire").await;
    let chunk = client.read_through("\n\n\r\n").await;
    let (size, event) = chunk.split_once("\r\n").expect("a chunk-size line");
    assert_eq!(
        usize::from_str_radix(size, 16).unwrap(),
        event.len() - 2,
        "{chunk:?}"
    );
    assert!(event.contains("event: notification\n") && event.contains("over the wire"));

    app.stop().await;
    assert_eq!(client.read_to_end().await, "0\r\n\r\n");
}

#[tokio::test]
async fn an_http_1_0_stream_is_the_bare_event_stream_ended_by_the_close() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    client
        .send("GET /events/ann HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    let head = client.read_through("\r\n\r\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let preamble = client.read_through("\n\n").await;
    assert!(
        preamble.starts_with("retry: 3000\nevent: connected\ndata: "),
        "{preamble:?}"
    );

    app.publish("ann", "plain").await;
    let event = client.read_through("\n\n").await;
    assert!(
        event.starts_with("id: ") && event.contains("\"title\":\"plain\""),
        "{event:?}"
    );
    app.stop().await;
    assert_eq!(client.read_to_end().await, "");
}

#[tokio::test]
async fn a_refused_stream_is_answered_whole_and_its_connection_goes_on_to_the_next_request() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    // Pipelined: a refusal, a stream on the same connection after it.
    client
        .send(&format!(
            "{}{}",
            get_request("/events/no!such!user"),
            get_request("/events/ann")
        ))
        .await;
    let (head, body) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("userId")),
        "{error}"
    );
    let head = client.read_through("\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    client.read_through("event: connected\n").await;
    app.wait_for_streams(1).await;

    // And a refusal followed by a request for hyper.
    let mut client = RawClient::connect(&app).await;
    client
        .send(&format!(
            "{}{}",
            get_request("/events/no!such!user"),
            get_request("/healthz")
        ))
        .await;
    let (head, _) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let (head, _) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[tokio::test]
async fn a_keep_alive_connection_that_began_with_another_request_still_opens_a_stream() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    client.send(&get_request("/healthz")).await;
    let (head, _) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    expect_lean_stream(&mut client, "ann").await;
    app.publish("ann", "same connection").await;
    client.read_through("same connection").await;
}

#[tokio::test]
async fn a_browser_like_connection_reads_the_page_history_and_posts_then_streams_on_the_lean_path()
{
    let app = TestApp::spawn().await;
    let published = app.publish("ann", "before").await;
    let mut client = RawClient::connect(&app).await;
    // What a page does before its EventSource: the page, a preflight, the history, a mark-read,
    // and a publish with a body (pipelined: two requests in one write).
    client.send(&get_request("/")).await;
    let (head, page) = client.read_whole_response().await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("<html"),
        "{head}"
    );
    client
        .send("OPTIONS /api/notifications/ann HTTP/1.1\r\nHost: herald.test\r\nOrigin: http://herald.test\r\nAccess-Control-Request-Method: POST\r\n\r\n")
        .await;
    let (head, _) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    client.send(&get_request("/api/notifications/ann")).await;
    let (head, history) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let history: Value = serde_json::from_str(&history).expect("JSON");
    assert_eq!(history["count"], 1);
    let id = published["id"].as_str().expect("an id");
    client
        .send(&format!(
            "{}{}",
            post_request(&format!("/api/notifications/ann/{id}/read"), ""),
            post_request(
                "/api/notifications/ann",
                r#"{"title":"over the same connection","message":"m"}"#
            )
        ))
        .await;
    let (head, read) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(serde_json::from_str::<Value>(&read).unwrap()["read"], true);
    let (head, created) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
    let created: Value = serde_json::from_str(&created).expect("JSON");
    assert_eq!(created["title"], "over the same connection");

    expect_lean_stream(&mut client, "ann").await;
    app.publish("ann", "live after all that").await;
    client.read_through("live after all that").await;
}

#[tokio::test]
async fn a_body_too_large_is_refused_by_hyper_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    let message = "m".repeat(70_000);
    client
        .send(&post_request(
            "/api/notifications/ann",
            &format!(r#"{{"title":"t","message":"{message}"}}"#),
        ))
        .await;
    let (head, body) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert!(body.contains("error"), "{body}");
    let (_, history) = app.get_json("/api/notifications/ann").await;
    assert_eq!(history["total"], 0);
}

/// hyper closes a connection whose request body the answer left unread. The answer must say so,
/// or a client that pools connections sends its next request into the close and loses it
/// (docs/protocol.md#errors).
#[tokio::test]
async fn an_answer_that_leaves_its_body_unread_says_the_connection_closes_and_it_does() {
    let app = TestApp::spawn().await;
    for (method, target, status) in [
        ("PUT", "/api/notifications/ann", "405"),
        ("PATCH", "/no/such/route", "404"),
        ("DELETE", "/api/notifications", "405"),
    ] {
        let mut client = RawClient::connect(&app).await;
        // The head and the first byte of a body the server is never going to read.
        client
            .send(&format!(
                "{method} {target} HTTP/1.1\r\nHost: herald.test\r\n\
                 Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{"
            ))
            .await;
        let (head, body) = client.read_whole_response().await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{method} {target}: {head}"
        );
        assert!(body.contains("\"error\""), "{method} {target}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{method} {target}: {head}"
        );
        let (rest, _) = client.read_until_closed().await;
        assert_eq!(rest, "", "{method} {target}: nothing after the answer");
    }
}

/// The other side of the rule above: an answer that read its body keeps the connection.
#[tokio::test]
async fn an_answer_that_read_its_body_keeps_the_connection_for_the_next_request() {
    let app = TestApp::spawn().await;
    let published = app.publish("ann", "first").await;
    let id = published["id"].as_str().expect("id");
    let body = r#"{"title":"second"}"#;
    let mut client = RawClient::connect(&app).await;
    client
        .send(&format!(
            "PATCH /api/notifications/ann/{id} HTTP/1.1\r\nHost: herald.test\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ))
        .await;
    client.send(body).await;
    let (head, answer) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(answer.contains(r#""title":"second""#), "{answer}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    client.send(&get_request("/api/notifications/ann")).await;
    let (head, history) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(history.contains(r#""title":"second""#), "{history}");
}

#[tokio::test]
async fn a_stream_whose_client_leaves_gives_back_its_place_without_waiting_for_a_write() {
    let app = TestApp::spawn().await;
    let mut client = RawClient::connect(&app).await;
    client.send(&get_request("/events/ann")).await;
    client.read_through("event: connected\n").await;
    app.wait_for_streams(1).await;
    drop(client);
    // Heartbeats are 30 s apart: the place comes back because the close was seen.
    app.wait_for_streams(0).await;
}

#[tokio::test]
async fn http2_by_prior_knowledge_and_an_oversized_head_are_served_by_hyper() {
    let app = TestApp::spawn().await;
    let h2 = h2c_client();
    let mut stream = SseClient::open(&h2, &app.url("/events/ann"), None).await;
    stream.expect_connected().await;

    let mut client = RawClient::connect(&app).await;
    let padding = "p".repeat(10_000);
    client
        .send(&format!(
            "GET /events/bob HTTP/1.1\r\nHost: herald.test\r\nX-Padding: {padding}\r\n\r\n"
        ))
        .await;
    let head = client.read_through("\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    client.read_through("event: connected\n").await;

    app.publish("ann", "to h2").await;
    let event = stream.next_event().await;
    assert_eq!(event.data["title"], "to h2");
    app.wait_for_streams(2).await;
}

#[tokio::test]
async fn a_client_that_sends_half_a_head_holds_up_neither_other_clients_nor_the_drain() {
    let app = TestApp::spawn().await;
    let mut stalled = RawClient::connect(&app).await;
    stalled.send("GET /events/ann HTTP/1.1\r\nHost: her").await;
    let mut stream = SseClient::open(&app.client, &app.url("/events/bob"), None).await;
    stream.expect_connected().await;
    let (status, _) = app.get_json("/api/stats").await;
    assert_eq!(status, StatusCode::OK);

    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the drain waited {:?} for a head that never came",
        started.elapsed()
    );
    assert_eq!(stalled.read_to_end().await, "");
}
