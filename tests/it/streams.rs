//! docs/protocol.md#streams, docs/protocol.md#events, docs/protocol.md#ids-and-replay,
//! docs/protocol.md#heartbeats-and-slow-readers and docs/protocol.md#limits: stream format, live
//! delivery by user, replay from Last-Event-ID, resync, heartbeats and connection limits.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use herald::domain::EventId;

use crate::helpers::{SseClient, TestApp, WAIT, titles};

#[tokio::test]
async fn a_stream_has_sse_headers_and_opens_with_retry_then_connected() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/events/alice"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut body = response.bytes_stream();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\n\n") || !String::from_utf8_lossy(&seen).contains("connected") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("preamble in time")
            .expect("stream open")
            .expect("chunk");
        seen.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(seen).expect("utf8");
    let lines: Vec<&str> = text
        .strip_suffix("\n\n")
        .expect("one block")
        .lines()
        .collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(lines[0], "retry: 3000");
    assert_eq!(lines[1], "event: connected", "and no id: line");
    let data: serde_json::Value =
        serde_json::from_str(lines[2].strip_prefix("data: ").expect("data line")).unwrap();
    assert!(data["clientId"].as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn notifications_reach_every_stream_of_their_user_and_no_other() {
    let app = TestApp::spawn().await;
    let mut alice_phone = app.subscribe("alice", None).await;
    let mut alice_tab = app.subscribe("alice", None).await;
    let mut bob = app.subscribe("bob", None).await;
    for stream in [&mut alice_phone, &mut alice_tab, &mut bob] {
        stream.expect_connected().await;
    }
    let sent = app.publish("alice", "for alice").await;
    app.publish("bob", "for bob").await;

    for stream in [&mut alice_phone, &mut alice_tab] {
        let got = stream.next_event().await;
        assert_eq!(got.event, "notification");
        assert_eq!(
            got.data, sent,
            "the stream carries the notification as stored"
        );
        assert!(!got.id.is_empty());
    }
    let got = bob.next_event().await;
    assert_eq!(titles(&[got]), ["for bob"]);
    // Bob saw only his own: the next thing on alice's stream is the next thing for alice.
    app.publish("alice", "second").await;
    assert_eq!(titles(&[alice_tab.next_event().await]), ["second"]);
}

#[tokio::test]
async fn announcements_reach_every_stream_with_the_announcement_shape() {
    let app = TestApp::spawn().await;
    let mut a = app.subscribe("a", None).await;
    let mut b = app.subscribe("b", None).await;
    a.expect_connected().await;
    b.expect_connected().await;
    let answer = app.broadcast("maintenance").await;
    assert_eq!(answer, json!({ "sent": true, "connections": 2 }));
    for stream in [&mut a, &mut b] {
        let got = stream.next_event().await;
        assert_eq!(got.event, "announcement");
        assert_eq!(got.data["type"], "info");
        assert_eq!(got.data["title"], "maintenance");
        assert_eq!(got.data["message"], "about maintenance");
        assert!(got.data["id"].is_string() && got.data["timestamp"].is_string());
        let keys: Vec<&String> = got.data.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
    }
}

#[tokio::test]
async fn ids_increase_strictly_and_replay_by_header_sends_exactly_what_was_missed() {
    let app = TestApp::spawn().await;
    let mut first = app.subscribe("carol", None).await;
    first.expect_connected().await;
    for n in 0..3 {
        app.publish("carol", &format!("n{n}")).await;
    }
    let seen = first.next_events(3).await;
    let ids: Vec<EventId> = seen.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    drop(first);

    // Missed while away: two notifications, an announcement, and other users' traffic.
    app.publish("carol", "m1").await;
    app.publish("dave", "not for carol").await;
    app.broadcast("all hands").await;
    app.publish("carol", "m2").await;

    let mut again = app.subscribe("carol", Some(&seen[1].id)).await;
    again.expect_connected().await;
    let replayed = again.next_events(4).await;
    assert_eq!(
        replayed
            .iter()
            .map(|e| e.event.as_str())
            .collect::<Vec<_>>(),
        [
            "notification",
            "notification",
            "announcement",
            "notification"
        ]
    );
    assert_eq!(titles(&replayed), ["n2", "m1", "all hands", "m2"]);
    assert_eq!(replayed[0].id, seen[2].id, "ids are the same on replay");
    // Then live, with nothing repeated.
    app.publish("carol", "live").await;
    assert_eq!(titles(&[again.next_event().await]), ["live"]);
}

#[tokio::test]
async fn replay_by_query_parameter_for_clients_that_cannot_set_headers() {
    let app = TestApp::spawn().await;
    let first = app.publish("erin", "one").await;
    let _ = first;
    let (_, history) = app.get_json("/api/notifications/erin").await;
    let after_one = history["lastEventId"]
        .as_str()
        .expect("lastEventId")
        .to_owned();
    app.publish("erin", "two").await;
    let url = app.url(&format!("/events/erin?lastEventId={after_one}"));
    let mut stream = SseClient::open(&app.client, &url, None).await;
    stream.expect_connected().await;
    assert_eq!(titles(&[stream.next_event().await]), ["two"]);
    // The header wins over the query parameter.
    let mut both = SseClient::open(
        &app.client,
        &format!("{}?lastEventId=0", app.url("/events/erin")),
        Some(&after_one),
    )
    .await;
    both.expect_connected().await;
    assert_eq!(titles(&[both.next_event().await]), ["two"]);
}

#[tokio::test]
async fn a_reconnect_during_concurrent_publishing_has_no_gap_and_no_duplicate() {
    const TOTAL: usize = 400;
    let app = TestApp::spawn().await;
    let publisher = {
        let client = app.client.clone();
        let url = app.url("/api/notifications/frank");
        let stats = app.url("/api/stats");
        tokio::spawn(async move {
            // Not before the first stream is in: it starts live, so it would never see an
            // event published ahead of it, and the test would wait for it forever.
            while client
                .get(&stats)
                .send()
                .await
                .expect("stats sent")
                .json::<serde_json::Value>()
                .await
                .expect("stats")["totalConnections"]
                != 1
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for n in 0..TOTAL {
                let response = client
                    .post(&url)
                    .json(&json!({ "title": format!("{n}"), "message": "m" }))
                    .send()
                    .await
                    .expect("publish sent");
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    };
    let mut received: Vec<usize> = Vec::new();
    let mut ids: Vec<EventId> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    // Connect, read a handful, drop, reconnect with the last id: again and again while the
    // publisher runs, then read to the end.
    while received.len() < TOTAL {
        let mut stream = app.subscribe("frank", last_id.as_deref()).await;
        stream.expect_connected().await;
        let take = if publisher.is_finished() { TOTAL } else { 7 };
        for _ in 0..take {
            if received.len() == TOTAL {
                break;
            }
            let event = stream.next_event().await;
            assert_eq!(event.event, "notification");
            received.push(event.data["title"].as_str().unwrap().parse().unwrap());
            ids.push(event.id.parse().unwrap());
            last_id = Some(event.id);
        }
        reconnects += 1;
    }
    publisher.await.expect("publisher finished");
    assert!(
        reconnects > 3,
        "the test should reconnect several times ({reconnects})"
    );
    assert_eq!(
        received,
        (0..TOTAL).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn an_id_the_server_never_issued_gets_resync_with_the_newest_id_then_live() {
    // Ids beyond anything issued (on either backend), or not ids at all.
    for bogus in [
        "99999999999999999",
        "not-an-id",
        "99999999999999999-5",
        "-1",
        "99999999999999999999999",
    ] {
        let app = TestApp::spawn().await;
        app.publish("gina", "old").await;
        let (_, page) = app.get_json("/api/notifications/gina").await;
        let newest = page["lastEventId"].as_str().unwrap().to_owned();
        let mut stream = app.subscribe("gina", Some(bogus)).await;
        stream.expect_connected().await;
        let resync = stream.next_event().await;
        assert_eq!(resync.event, "resync", "for {bogus}");
        assert_eq!(resync.id, newest, "the newest id at that moment");
        assert!(
            resync.data["reason"]
                .as_str()
                .unwrap()
                .contains("never issued")
        );
        assert_eq!(resync.data["oldestId"], newest.as_str());
        // The stream goes on live, and the next id is above the resync's.
        app.publish("gina", "after").await;
        let live = stream.next_event().await;
        assert_eq!(titles(std::slice::from_ref(&live)), ["after"]);
        assert!(live.id.parse::<EventId>().unwrap() > newest.parse::<EventId>().unwrap());
    }
}

#[tokio::test]
async fn history_past_retention_gets_resync_never_a_partial_replay() {
    let app = TestApp::spawn_with(|s| s.retention.max_events = 3).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let mut stream = app.subscribe("hal", None).await;
        stream.expect_connected().await;
        app.publish("hal", &format!("n{n}")).await;
        ids.push(stream.next_event().await.id);
    }
    // Only the newest three events are kept: asking from the first id means some are gone.
    let mut stream = app.subscribe("hal", Some(&ids[0])).await;
    stream.expect_connected().await;
    let resync = stream.next_event().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.id, ids[5]);
    assert!(
        resync.data["reason"]
            .as_str()
            .unwrap()
            .contains("retention")
    );
    assert_eq!(resync.data["oldestId"], ids[3].as_str());
    // From an id still covered, replay is exact.
    let mut stream = app.subscribe("hal", Some(&ids[3])).await;
    stream.expect_connected().await;
    assert_eq!(titles(&stream.next_events(2).await), ["n4", "n5"]);
}

#[tokio::test]
async fn read_events_reach_the_users_other_streams() {
    let app = TestApp::spawn().await;
    let mut other_tab = app.subscribe("ivy", None).await;
    other_tab.expect_connected().await;
    let n1 = app.publish("ivy", "one").await;
    app.publish("ivy", "two").await;
    other_tab.next_events(2).await;
    let id = n1["id"].as_str().unwrap();
    let (status, body) = app
        .post_empty(&format!("/api/notifications/ivy/{id}/read"))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "id": id, "read": true }))
    );
    let read = other_tab.next_event().await;
    assert_eq!(
        (read.event.as_str(), read.data.clone()),
        ("read", json!({ "ids": [id] }))
    );
    let (_, body) = app.post_empty("/api/notifications/ivy/read-all").await;
    assert_eq!(body, json!({ "updated": 1 }));
    let all = other_tab.next_event().await;
    assert_eq!(
        (all.event.as_str(), all.data),
        ("read", json!({ "all": true }))
    );
    assert!(all.id.parse::<EventId>().unwrap() > read.id.parse::<EventId>().unwrap());
}

#[tokio::test]
async fn an_idle_stream_gets_a_heartbeat_comment() {
    let app = TestApp::spawn_with(|s| s.heartbeat = Duration::from_secs(1)).await;
    let response = app
        .client
        .get(app.url("/events/jo"))
        .send()
        .await
        .expect("sent");
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(": heartbeat\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a heartbeat within 5 s of silence")
            .expect("open")
            .expect("chunk");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        seen.starts_with("retry: 3000\nevent: connected\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn over_the_per_user_cap_is_429_and_over_the_node_cap_is_503_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.max_streams = 3;
        s.max_streams_per_user = 2;
    })
    .await;
    let _a1 = app.subscribe("kim", None).await;
    let _a2 = app.subscribe("kim", None).await;
    let refused = SseClient::try_open(&app.client, &app.url("/events/kim"), None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers.get("retry-after").is_some());
    let _b = app.subscribe("lee", None).await;
    let full = app.client.get(app.url("/events/max")).send().await.unwrap();
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.headers().get("retry-after").is_some());
    let body: serde_json::Value = full.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("maximum"));
    // A closed stream frees its place.
    drop(_b);
    let mut stream = None;
    for _ in 0..100 {
        let attempt = SseClient::try_open(&app.client, &app.url("/events/max"), None).await;
        if attempt.status == StatusCode::OK {
            stream = Some(attempt);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stream.is_some(), "the freed place was never reused");
}

#[tokio::test]
async fn ids_and_replay_survive_a_restart() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("nia", None).await;
    stream.expect_connected().await;
    app.publish("nia", "before").await;
    let before = stream.next_event().await;
    app.publish("nia", "missed").await;
    drop(stream);
    let app = app.restart(|_| {}).await;
    let mut stream = app.subscribe("nia", Some(&before.id)).await;
    stream.expect_connected().await;
    let missed = stream.next_event().await;
    assert_eq!(titles(std::slice::from_ref(&missed)), ["missed"]);
    app.publish("nia", "after").await;
    let after = stream.next_event().await;
    assert!(after.id.parse::<EventId>().unwrap() > missed.id.parse::<EventId>().unwrap());
}

#[tokio::test]
async fn a_bad_user_id_is_refused_before_a_stream_opens() {
    let app = TestApp::spawn().await;
    for path in [
        "/events/a%20b",
        "/events/a%2Fb",
        "/events/%C3%A9",
        "/events/me",
        &format!("/events/{}", "x".repeat(129)),
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body["error"].is_string());
    }
}
