//! docs/protocol.md#publishing "`201` is durable" and docs/protocol.md#ids-and-replay after a
//! restart, against the real binary: publishers race a SIGKILL, and what they were told was stored
//! must be there after a restart, once, with the same ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::durability::{PUBLISHES_EACH, USERS, publish_until_killed};
use crate::helpers::{ServerProcess, SseClient, WAIT, assert_strictly_increasing, event_ids};

const PUBLISHERS: usize = 4;
/// How many publishes must be acknowledged before the server is killed mid-run.
const ACKED_BEFORE_KILL: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_publish_survives_sigkill() {
    let data = TempDir::new().expect("temp dir");
    let mut first = ServerProcess::start(data.path(), &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publish_until_killed(first.api.clone(), p, acked.clone())))
        .collect();

    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::SeqCst) < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "publishers were too slow to reach the kill point"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill_hard();

    let mut logs = Vec::new();
    for publisher in publishers {
        logs.push(
            tokio::time::timeout(WAIT, publisher)
                .await
                .expect("publisher stopped once the server was gone")
                .expect("publisher did not panic"),
        );
    }
    let acknowledged: usize = logs.iter().map(|log| log.acknowledged.len()).sum();
    assert!(
        acknowledged < PUBLISHERS * PUBLISHES_EACH,
        "the kill must land while publishes are in flight ({acknowledged} acknowledged)"
    );
    assert!(logs.iter().any(|log| log.unanswered.is_some()));

    let second = ServerProcess::start(data.path(), &[]);
    let mut replayed_total = 0;
    for user in USERS {
        // Newest first; reversed it is the order of the log.
        let mut history = second.full_history(user).await;
        history.reverse();
        let stored: HashMap<&str, &Value> = history
            .iter()
            .map(|n| (n["id"].as_str().expect("id"), n))
            .collect();
        assert_eq!(stored.len(), history.len(), "no notification appears twice");

        // Every acknowledged one is there, exactly as acknowledged, and each publisher's are in
        // the order it was told they were stored.
        for (publisher, log) in logs.iter().enumerate() {
            let mine: Vec<&Value> = log
                .acknowledged
                .iter()
                .filter(|(to, _)| to == user)
                .map(|(_, n)| n)
                .collect();
            for notification in &mine {
                let id = notification["id"].as_str().expect("id");
                assert_eq!(
                    stored.get(id),
                    Some(notification),
                    "acknowledged but lost or changed"
                );
            }
            let prefix = format!("p{publisher}-");
            let in_history: Vec<&Value> = history
                .iter()
                .filter(|n| n["title"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                .collect();
            assert_eq!(
                &in_history[..mine.len()],
                &mine[..],
                "publisher {publisher}'s notifications to {user}, in order"
            );
            // Beyond what was acknowledged, at most the one publish nobody answered.
            let unacknowledged: Vec<&str> = in_history[mine.len()..]
                .iter()
                .map(|n| n["title"].as_str().expect("title"))
                .collect();
            let allowed: Vec<&str> = log
                .unanswered
                .iter()
                .filter(|(to, _)| to == user)
                .map(|(_, title)| title.as_str())
                .collect();
            assert!(
                unacknowledged.is_empty() || unacknowledged == allowed,
                "{user} holds {unacknowledged:?}, but only {allowed:?} was in flight"
            );
        }

        // A stream replaying from the very beginning sends the same notifications, each once,
        // in log order; the next thing on it is live.
        let (mut stream, events) = second.replay(user, "0", history.len()).await;
        assert!(
            events.iter().all(|e| e.event == "notification"),
            "{events:?}"
        );
        assert_strictly_increasing(&event_ids(&events));
        let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
        assert_eq!(data, history.iter().collect::<Vec<_>>());
        let live = second.publish(user, "after the restart").await;
        assert_eq!(
            stream.next_event().await.data,
            live,
            "nothing more was replayed"
        );
        replayed_total += events.len();
    }
    assert!(replayed_total >= acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_are_stable_and_never_reused_across_restarts() {
    let data = TempDir::new().expect("temp dir");
    let user = "ids-ivo";

    // Three events seen live.
    let mut server = ServerProcess::start(data.path(), &["--shutdown-timeout", "2"]);
    let client = reqwest::Client::new();
    let mut live = SseClient::open(&client, &format!("{}/events/{user}", server.url), None).await;
    live.expect_connected().await;
    for title in ["a1", "a2", "a3"] {
        server.publish(user, title).await;
    }
    let before = live.next_events(3).await;
    let first_ids = event_ids(&before);
    assert_strictly_increasing(&first_ids);
    drop(live);

    // A clean stop: ids go on above the old ones, and the old ones replay unchanged.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(WAIT).success());
    let mut server = ServerProcess::start(data.path(), &["--shutdown-timeout", "2"]);
    for title in ["b1", "b2"] {
        server.publish(user, title).await;
    }
    let (_, all) = server.replay(user, "0", 5).await;
    assert_eq!(
        &all[..3],
        &before[..],
        "the same ids and data as before the restart"
    );
    let after_stop = event_ids(&all);
    assert_strictly_increasing(&after_stop);
    assert!(after_stop[3] > first_ids[2]);

    // SIGKILL: still never an id again, and replay from an old id is the same sequence.
    server.kill_hard();
    let server = ServerProcess::start(data.path(), &["--shutdown-timeout", "2"]);
    server.publish("ids-other", "someone else's").await;
    server.publish(user, "c1").await;
    let (_, from_old) = server.replay(user, &before[1].id, 4).await;
    assert_eq!(
        &from_old[..3],
        &all[2..5],
        "replay from an old id repeats what it sent before"
    );
    assert_eq!(from_old[3].data["title"], "c1");
    let after_kill = event_ids(&from_old);
    assert_strictly_increasing(&after_kill);
    assert!(
        after_kill[3] > after_stop[4],
        "an id from before the kill was issued again"
    );
}
