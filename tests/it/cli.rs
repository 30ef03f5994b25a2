//! README.md#try-it: `herald publish`, `broadcast` and `subscribe`, run as the real binary against
//! a real server. Every wait on a child process has a timeout, and a child still running when its
//! test ends is killed.
//!
//! - `publish`: the notification lifecycle's publish flags (`--data`, `--category`, `--ttl`,
//!   `--expires-at`, `--to`) and what the CLI refuses before sending.
//! - `lifecycle`: `update`, `delete` and `archive`, with a publish key and with a user's token.

mod lifecycle;
mod publish;

use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tokio::time::timeout;

use crate::helpers::command::{Herald, assert_distinct_ids, printed_titles};
use crate::helpers::{ServerProcess, TestApp, WAIT, free_port};

/// Long enough for a subscriber to notice a dead server, wait its `retry:` (3 s), back off once
/// and reconnect.
const RECONNECT_WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn publish_prints_the_stored_notification_and_it_is_in_history() {
    let app = TestApp::spawn().await;
    let finished = Herald::run(&[
        "publish",
        "alice",
        "--title",
        "Deploy done",
        "--message",
        "v2 is live",
        "--type",
        "success",
        "--link",
        "/deploys/2",
        "--server",
        &app.url,
    ])
    .await;
    let printed = finished.printed_json();
    assert_eq!(printed["type"], "success");
    assert_eq!(printed["title"], "Deploy done");
    assert_eq!(printed["message"], "v2 is live");
    assert_eq!(printed["link"], "/deploys/2");
    assert_eq!(printed["read"], false);
    assert!(printed["id"].as_str().is_some_and(|id| !id.is_empty()));

    let (_, history) = app.get_json("/api/notifications/alice").await;
    assert_eq!(history["total"], 1);
    assert_eq!(
        history["notifications"][0], printed,
        "history holds what publish printed"
    );
}

#[tokio::test]
async fn publish_with_the_same_idempotency_key_prints_the_first_notification_again() {
    let app = TestApp::spawn().await;
    let mut printed = Vec::new();
    for title in ["first", "retried"] {
        let finished = Herald::run(&[
            "publish",
            "alice",
            "--title",
            title,
            "--message",
            "m",
            "--idempotency-key",
            "order-17",
            "--server",
            &app.url,
        ])
        .await;
        printed.push(finished.printed_json());
    }
    assert_eq!(printed[1], printed[0]);
    let (_, history) = app.get_json("/api/notifications/alice").await;
    assert_eq!(history["total"], 1);
}

#[tokio::test]
async fn publish_with_invalid_input_exits_non_zero_with_a_one_line_message() {
    let app = TestApp::spawn().await;
    let too_long = "x".repeat(4001);
    let cases: [(&[&str], &str); 3] = [
        (&["--title", "   ", "--message", "m"], "title"),
        (
            &[
                "--title",
                "t",
                "--message",
                "m",
                "--link",
                "javascript:alert(1)",
            ],
            "link",
        ),
        (&["--title", "t", "--message", &too_long], "message"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["publish", "alice", "--server", &app.url];
        args.extend_from_slice(flags);
        Herald::run(&args)
            .await
            .assert_failed_saying(&["400", named]);
    }
    let (_, history) = app.get_json("/api/notifications/alice").await;
    assert_eq!(history["total"], 0, "nothing was stored");
}

#[tokio::test]
async fn publish_to_an_unreachable_server_names_the_server() {
    // A port that was free a moment ago: nothing listens there.
    let server = format!("http://127.0.0.1:{}", free_port());
    Herald::run(&[
        "publish",
        "alice",
        "--title",
        "t",
        "--message",
        "m",
        "--server",
        &server,
    ])
    .await
    .assert_failed_saying(&[&server]);
}

#[tokio::test]
async fn broadcast_prints_sent_and_the_number_of_streams() {
    let app = TestApp::spawn().await;
    let mut listener = app.subscribe("alice", None).await;
    listener.expect_connected().await;
    let finished = Herald::run(&[
        "broadcast",
        "--title",
        "Maintenance",
        "--message",
        "at noon",
        "--server",
        &app.url,
    ])
    .await;
    assert_eq!(
        finished.printed_json(),
        json!({ "sent": true, "connections": 1 })
    );
    let announcement = listener.next_event().await;
    assert_eq!(announcement.event, "announcement");
    assert_eq!(announcement.data["title"], "Maintenance");
}

#[tokio::test]
async fn subscribe_count_prints_exactly_the_expected_events_in_order() {
    let app = TestApp::spawn().await;
    app.publish("alice", "seen before").await;
    let (_, history) = app.get_json("/api/notifications/alice").await;
    let seen_up_to = history["lastEventId"]
        .as_str()
        .expect("lastEventId")
        .to_owned();
    app.publish("alice", "missed").await;

    let mut subscriber = Herald::start(&[
        "subscribe",
        "alice",
        "--server",
        &app.url,
        "--last-event-id",
        &seen_up_to,
        "--count",
        "3",
    ]);
    subscriber.expect_connected(WAIT).await;
    let mut events = vec![subscriber.next_event(WAIT).await];
    app.publish("bob", "not for alice").await;
    app.broadcast("everyone").await;
    app.publish("alice", "live").await;
    events.push(subscriber.next_event(WAIT).await);
    events.push(subscriber.next_event(WAIT).await);

    assert!(
        subscriber.wait_exit(WAIT).await.success(),
        "--count 3 exits 0"
    );
    assert_eq!(
        subscriber.next_line(WAIT).await,
        None,
        "nothing after the third event"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["notification", "announcement", "notification"]);
    assert_eq!(printed_titles(&events), ["missed", "everyone", "live"]);
    assert_distinct_ids(&events);
    assert!(
        events
            .iter()
            .all(|event| event["id"] != seen_up_to.as_str())
    );
}

#[tokio::test]
async fn subscribe_prints_read_events_with_their_id() {
    let app = TestApp::spawn().await;
    let sent = app.publish("alice", "to read").await;
    let mut subscriber =
        Herald::start(&["subscribe", "alice", "--server", &app.url, "--count", "1"]);
    subscriber.expect_connected(WAIT).await;
    let id = sent["id"].as_str().expect("notification id");
    let (status, _) = app
        .post_empty(&format!("/api/notifications/alice/{id}/read"))
        .await;
    assert!(status.is_success());
    let read = subscriber.next_event(WAIT).await;
    assert_eq!(read["event"], "read");
    assert_eq!(read["data"], json!({ "ids": [id] }));
    assert!(read["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(subscriber.wait_exit(WAIT).await.success());
}

#[tokio::test]
async fn subscribe_refused_by_the_server_fails_at_once_without_retrying() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let finished = Herald::run(&["subscribe", "not valid!", "--server", &app.url]).await;
    finished.assert_failed_saying(&["400"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no retry wait after a 400"
    );
}

#[tokio::test]
async fn subscribe_resumes_with_last_event_id_after_a_server_crash_without_gap_or_duplicate() {
    let data = TempDir::new().expect("temp dir");
    let data_dir = data.path().join("herald");
    let mut server = ServerProcess::start(&data_dir, &[]);
    let address = server.url.trim_start_matches("http://").to_owned();
    // No pooled connections: one to the killed server would fail the first publish after it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let publish = async |server: &ServerProcess, title: &str| {
        let request = http
            .post(format!("{}/api/notifications/alice", server.url))
            .json(&json!({ "title": title, "message": "m" }))
            .send();
        let response = timeout(WAIT, request)
            .await
            .expect("publish in time")
            .expect("sent");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    };

    let mut subscriber = Herald::start(&[
        "subscribe",
        "alice",
        "--server",
        &server.url,
        "--count",
        "4",
    ]);
    subscriber.expect_connected(WAIT).await;
    publish(&server, "before the crash").await;
    let mut events = vec![subscriber.next_event(WAIT).await];

    server.kill_hard();
    let server = ServerProcess::start_on(&address, &data_dir, &[]);
    publish(&server, "while away 1").await;
    publish(&server, "while away 2").await;
    subscriber.expect_connected(RECONNECT_WAIT).await;
    events.push(subscriber.next_event(WAIT).await);
    events.push(subscriber.next_event(WAIT).await);
    publish(&server, "after the reconnect").await;
    events.push(subscriber.next_event(WAIT).await);

    assert!(
        subscriber.wait_exit(WAIT).await.success(),
        "--count 4 exits 0"
    );
    assert_eq!(
        subscriber.next_line(WAIT).await,
        None,
        "nothing after the fourth event"
    );
    assert_eq!(
        printed_titles(&events),
        [
            "before the crash",
            "while away 1",
            "while away 2",
            "after the reconnect"
        ]
    );
    assert_distinct_ids(&events);
    let stderr = subscriber.stderr().await;
    assert!(
        stderr.contains("reconnecting"),
        "the reconnect is reported: {stderr:?}"
    );
    assert!(
        stderr.lines().all(|line| line.starts_with("herald: ")),
        "stderr holds short herald lines: {stderr:?}"
    );
}
