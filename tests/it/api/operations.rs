//! Broadcasts and the operational routes: stats, health, metrics, the OpenAPI document, and
//! what an unknown route or a wrong method gets.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use herald::store::RedisSettings;

use crate::helpers::answers::{assert_error, sample};
use crate::helpers::cluster::own_redis;
use crate::helpers::{SseClient, TestApp, WAIT, h2c_client, padded_body, read_json, titles};

#[tokio::test]
async fn a_broadcast_answers_sent_and_the_number_of_this_nodes_streams() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post_json("/api/broadcast", &json!({ "title": "t", "message": "m" }))
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "sent": true, "connections": 0 }))
    );
    let mut streams = Vec::new();
    for user in ["alice", "alice", "bob"] {
        let mut stream = app.subscribe(user, None).await;
        stream.expect_connected().await;
        streams.push(stream);
    }
    let (status, answer) = app
        .post_json(
            "/api/broadcast",
            &json!({ "title": "  Maintenance ", "message": " at noon " }),
        )
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "sent": true, "connections": 3 }))
    );
    for stream in &mut streams {
        let got = stream.next_event().await;
        assert_eq!(got.event, "announcement");
        assert_eq!(
            (&got.data["title"], &got.data["message"], &got.data["type"]),
            (&json!("Maintenance"), &json!("at noon"), &json!("info"))
        );
    }
}

/// Broadcast bodies that break one rule of docs/protocol.md#publishing each, sent as
/// `application/json`: each is a `400`.
#[rustfmt::skip]
const BAD_BROADCASTS: &[(&str, &str)] = &[
    ("no title", r#"{"message":"m"}"#),
    ("no message", r#"{"title":"t"}"#),
    ("a blank title", r#"{"title":"  ","message":"m"}"#),
    ("an empty message", r#"{"title":"t","message":""}"#),
    ("a numeric title", r#"{"title":1,"message":"m"}"#),
    ("a null message", r#"{"title":"t","message":null}"#),
    ("malformed JSON", r#"{"title":"#),
];

#[tokio::test]
async fn an_invalid_broadcast_is_refused_with_an_error_and_reaches_no_stream() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let json = Some("application/json");
    for &(case, body) in BAD_BROADCASTS {
        let (status, answer) = app.post_bytes("/api/broadcast", json, body).await;
        assert_error(case, StatusCode::BAD_REQUEST, status, &answer);
    }
    let cases: Vec<(&str, Option<&str>, String, StatusCode)> = vec![
        (
            "a title of 201",
            json,
            json!({ "title": "é".repeat(201), "message": "m" }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a message of 4001",
            json,
            json!({ "title": "t", "message": "m".repeat(4001) }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            Some("text/plain"),
            r#"{"title":"t","message":"m"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no content type",
            None,
            r#"{"title":"t","message":"m"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "64 KiB + 1",
            json,
            String::from_utf8(padded_body(64 * 1024 + 1)).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (case, content_type, body, expected) in cases {
        let (status, answer) = app.post_bytes("/api/broadcast", content_type, body).await;
        assert_error(case, expected, status, &answer);
    }
    assert_eq!(app.stats().await["eventsBuffered"], 0);
    let answer = app.broadcast("the marker").await;
    assert_eq!(answer["connections"], 1);
    let next = stream.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data["title"]),
        ("announcement", &json!("the marker"))
    );
}

// ---------------------------------------------------------------------------------------------
// Operations.

#[tokio::test]
async fn stats_count_streams_users_buffered_and_sent_events() {
    let app = TestApp::spawn().await;
    let four = |s: &Value| {
        (
            s["totalConnections"].clone(),
            s["uniqueUsers"].clone(),
            s["eventsBuffered"].clone(),
            s["totalEventsSent"].clone(),
        )
    };
    assert_eq!(
        four(&app.stats().await),
        (json!(0), json!(0), json!(0), json!(0))
    );

    let mut alice_phone = app.subscribe("alice", None).await;
    let mut alice_tab = app.subscribe("alice", None).await;
    let mut bob = app.subscribe("bob", None).await;
    for stream in [&mut alice_phone, &mut alice_tab, &mut bob] {
        stream.expect_connected().await;
    }
    assert_eq!(
        four(&app.stats().await),
        (json!(3), json!(2), json!(0), json!(0))
    );

    // Three for alice, one for bob, one for carol (no stream), one broadcast: each event is
    // counted once however many streams receive it.
    for title in ["a1", "a2", "a3"] {
        app.publish("alice", title).await;
    }
    app.publish("bob", "b1").await;
    app.publish("carol", "c1").await;
    app.broadcast("all").await;
    assert_eq!(
        titles(&alice_phone.next_events(4).await),
        ["a1", "a2", "a3", "all"]
    );
    assert_eq!(
        titles(&alice_tab.next_events(4).await),
        ["a1", "a2", "a3", "all"]
    );
    assert_eq!(titles(&bob.next_events(2).await), ["b1", "all"]);
    assert_eq!(
        four(&app.stats().await),
        (json!(3), json!(2), json!(6), json!(6))
    );

    // A closed stream leaves the counts once the server notices.
    drop(bob);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = app.stats().await;
        if now["totalConnections"] == 2 {
            assert_eq!(four(&now), (json!(2), json!(1), json!(6), json!(6)));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream is still counted: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_are_200_while_serving() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.is_object(), "{path}: {body}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_whose_values_follow_the_traffic() {
    let app = TestApp::spawn().await;
    let text = app.metrics().await;
    for series in [
        "herald_streams",
        "herald_events_published_total",
        "herald_events_delivered_total",
        "herald_slow_reader_closes_total",
        "herald_events_replayed_total",
        "herald_publish_latency_seconds_count",
        "herald_publish_latency_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert_eq!(sample(&text, series), 0.0, "{series} starts at 0");
    }
    for family in [
        "# TYPE herald_streams gauge",
        "# TYPE herald_events_published counter",
        "# TYPE herald_publish_latency_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == family), "{family} in:\n{text}");
    }

    let mut a1 = app.subscribe("alice", None).await;
    let mut a2 = app.subscribe("alice", None).await;
    a1.expect_connected().await;
    a2.expect_connected().await;
    for title in ["m1", "m2", "m3"] {
        app.publish("alice", title).await;
    }
    let first = a1.next_events(3).await;
    a2.next_events(3).await;
    app.broadcast("b").await;
    a1.next_event().await;
    a2.next_event().await;

    // A delivery thread counts a job's deliveries once it has written all of them, so a client
    // can read its event a moment before the count moves: wait for it, to a deadline.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = app.metrics().await;
        let delivered = sample(&text, "herald_events_delivered_total");
        assert!(delivered <= 8.0, "more than 4 events x 2 streams: {text}");
        if delivered == 8.0 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "4 events x 2 streams were never all counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&text, "herald_streams"), 2.0);
    assert_eq!(sample(&text, "herald_events_published_total"), 4.0);
    assert_eq!(sample(&text, "herald_events_replayed_total"), 0.0);
    assert_eq!(sample(&text, "herald_publish_latency_seconds_count"), 3.0);
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("herald_publish_latency_seconds_bucket{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.len() > 2, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last(), Some(&3.0), "+Inf holds every publish");

    // A reconnect from the first event replays the other two and the announcement.
    let mut again = app.subscribe("alice", Some(&first[0].id)).await;
    again.expect_connected().await;
    assert_eq!(titles(&again.next_events(3).await), ["m2", "m3", "b"]);
    let text = app.metrics().await;
    assert_eq!(sample(&text, "herald_events_replayed_total"), 3.0);
    assert_eq!(sample(&text, "herald_streams"), 3.0);
    assert_eq!(sample(&text, "herald_slow_reader_closes_total"), 0.0);

    // A queue too small for one event: the first push queued closes that stream as a slow
    // reader. (Over HTTP/2 every frame is queued; on the HTTP/1 path an idle stream's frame
    // goes straight to its socket, and only a full socket makes frames queue: slow_reader.rs.)
    let tiny = TestApp::spawn_with(|s| s.queue.max_bytes = 64).await;
    let h2 = h2c_client();
    let mut slow = SseClient::open(&h2, &tiny.url("/events/sam"), None).await;
    slow.expect_connected().await;
    tiny.publish("sam", "too big for the queue").await;
    slow.expect_end().await;
    assert_eq!(
        sample(&tiny.metrics().await, "herald_slow_reader_closes_total"),
        1.0
    );
}

#[tokio::test]
async fn max_streams_is_the_flag_and_store_healthy_follows_the_store_as_readyz_does() {
    let Some(mut redis) = own_redis(&[]) else {
        return;
    };
    let app = TestApp::spawn_with(|settings| {
        settings.max_streams = 1234;
        settings.redis = Some(RedisSettings {
            url: redis.url(),
            prefix: "herald".into(),
        });
    })
    .await;
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "herald_max_streams"), 1234.0);
    assert_eq!(sample(&metrics, "herald_store_healthy"), 1.0);

    let down = Instant::now();
    redis.kill();
    app.wait_for_readiness(StatusCode::SERVICE_UNAVAILABLE, down)
        .await;
    assert_eq!(sample(&app.metrics().await, "herald_store_healthy"), 0.0);

    let back = Instant::now();
    redis.restart();
    app.wait_for_readiness(StatusCode::OK, back).await;
    assert_eq!(sample(&app.metrics().await, "herald_store_healthy"), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_openapi_3_and_lists_the_api() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/notifications/{userId}", "post"),
        ("/api/notifications/{userId}", "get"),
        ("/api/notifications/{userId}/{id}/read", "post"),
        ("/api/notifications/{userId}/read-all", "post"),
        ("/api/notifications", "post"),
        ("/api/notifications/{userId}/{id}", "patch"),
        ("/api/notifications/{userId}/{id}", "delete"),
        ("/api/notifications/{userId}/{id}/archive", "post"),
        ("/api/notifications/{userId}/{id}/unarchive", "post"),
        ("/api/broadcast", "post"),
        ("/api/stats", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/events/{userId}", "get"),
        ("/api/push/public-key", "get"),
        ("/api/push/{userId}/subscriptions", "post"),
        ("/api/push/{userId}/subscriptions", "get"),
        ("/api/push/{userId}/subscriptions/{id}", "delete"),
        ("/api/push/{userId}/preferences", "get"),
        ("/api/push/{userId}/preferences", "put"),
        ("/api/presence/{userId}", "get"),
    ] {
        assert!(
            paths.get(path).is_some_and(|p| p.get(method).is_some()),
            "{method} {path} is missing; paths: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_is_405_both_with_an_error() {
    let app = TestApp::spawn().await;
    for path in [
        "/nope",
        "/api",
        "/api/nope",
        "/events",
        "/api/notifications/alice/x/y/z",
    ] {
        let (status, answer) = app.get_json(path).await;
        assert_error(path, StatusCode::NOT_FOUND, status, &answer);
    }
    let wrong = [
        (reqwest::Method::DELETE, "/api/broadcast"),
        (reqwest::Method::GET, "/api/broadcast"),
        (reqwest::Method::GET, "/api/notifications"),
        (reqwest::Method::PUT, "/api/notifications/alice/x"),
        (reqwest::Method::PUT, "/api/notifications/alice"),
        (reqwest::Method::DELETE, "/api/notifications/alice"),
        (reqwest::Method::GET, "/api/notifications/alice/read-all"),
        (reqwest::Method::POST, "/api/stats"),
        (reqwest::Method::POST, "/events/alice"),
        (reqwest::Method::PATCH, "/healthz"),
    ];
    for (method, path) in wrong {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("sent");
        let (status, answer) = read_json(response).await;
        assert_error(
            &format!("{method} {path}"),
            StatusCode::METHOD_NOT_ALLOWED,
            status,
            &answer,
        );
    }
}
