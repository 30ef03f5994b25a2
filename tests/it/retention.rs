//! docs/protocol.md#limits and docs/protocol.md#ids-and-replay (flags: README.md#running-it):
//! retention. The log keeps at most `--retention-events` events and none older than
//! `--retention-age` (a periodic sweep); history keeps `--history-limit` notifications per user; a
//! replay from an id retention removed gets `resync`, never a partial replay; and ids are never
//! reused, even after the log has been emptied and the server restarted.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::answers::{order, page_titles, sample};
use crate::helpers::{TestApp, expect_resync, titles};

/// Retention by age that a test can wait out: events older than a second go at the next sweep.
fn short_age(s: &mut herald::Settings) {
    s.retention.max_age = Duration::from_secs(1);
    s.sweep_every = Duration::from_millis(200);
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest_events_and_a_pruned_id_gets_resync() {
    let app = TestApp::spawn_with(|s| s.retention.max_events = 5).await;
    let mut stream = app.subscribe("rita", None).await;
    stream.expect_connected().await;
    let mut ids = Vec::new();
    for n in 0..12 {
        app.publish("rita", &format!("n{n}")).await;
        ids.push(stream.next_event().await.id);
        let buffered = app.stats().await["eventsBuffered"].clone();
        assert_eq!(buffered, json!((n + 1).min(5)), "after {} publishes", n + 1);
    }
    drop(stream);

    // ids[6] is the newest removed: a replay from it is exact, from anything older it is gone.
    let mut exact = app.subscribe("rita", Some(&ids[6])).await;
    exact.expect_connected().await;
    let replayed = exact.next_events(5).await;
    assert_eq!(titles(&replayed), ["n7", "n8", "n9", "n10", "n11"]);
    drop(exact);
    let mut newest = ids[11].clone();
    for gone in [&ids[0], &ids[5]] {
        let mut stream = expect_resync(&app, "rita", gone, &newest).await;
        app.publish("rita", "live after resync").await;
        let live = stream.next_event().await;
        assert_eq!(live.data["title"], "live after resync");
        newest = live.id;
    }
    assert_eq!(app.stats().await["eventsBuffered"], 5);
    // History has its own limit: every notification is still listed.
    assert_eq!(app.history("rita", "?limit=100").await["total"], 14);
}

#[tokio::test]
async fn retention_by_age_empties_the_log_and_then_an_old_id_gets_resync() {
    let app = TestApp::spawn_with(short_age).await;
    let got = app.publish_and_watch("abe", &["a0", "a1", "a2"]).await;
    app.broadcast("old announcement").await;
    let newest = app.history("abe", "?limit=100").await["lastEventId"]
        .as_str()
        .expect("lastEventId")
        .to_owned();
    assert!(order(&newest) > order(&got[2].id));
    app.wait_until_the_log_is_empty().await;

    let mut stream = expect_resync(&app, "abe", &got[0].id, &newest).await;
    app.publish("abe", "after the sweep").await;
    let live = stream.next_event().await;
    assert_eq!(live.data["title"], "after the sweep");
    assert!(order(&live.id) > order(&newest));

    // A client that had seen everything is not told to resync: it just goes on live.
    let mut current = app.subscribe("abe", Some(&live.id)).await;
    current.expect_connected().await;
    app.publish("abe", "next").await;
    let next = current.next_event().await;
    assert_eq!(
        (next.event.as_str(), &next.data["title"]),
        ("notification", &json!("next"))
    );

    // Age retention is about replay: history still lists every notification.
    let page = app.history("abe", "?limit=100").await;
    assert_eq!(
        page_titles(&page),
        ["next", "after the sweep", "a2", "a1", "a0"]
    );

    // Each sweep's time is in the metrics: the one that emptied the log among them, each
    // within the bucket bounds (a sweep of five events takes well under 5 s).
    let metrics = app.metrics().await;
    let sweeps = sample(&metrics, "herald_retention_sweep_seconds_count");
    assert!(sweeps >= 1.0, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "herald_retention_sweep_seconds_bucket{le=\"5.0\"}"
        ),
        sweeps,
        "{metrics}"
    );
}

#[tokio::test]
async fn history_keeps_only_the_newest_notifications_of_each_user() {
    let app = TestApp::spawn_with(|s| s.retention.history_per_user = 5).await;
    let mut published = Vec::new();
    for n in 0..8 {
        published.push(app.publish("hana", &format!("n{n}")).await);
    }
    app.publish("ivan", "i0").await;
    app.publish("ivan", "i1").await;

    let page = app.history("hana", "?limit=100").await;
    assert_eq!(page_titles(&page), ["n7", "n6", "n5", "n4", "n3"]);
    assert_eq!(
        (&page["total"], &page["unread"], &page["count"]),
        (&json!(5), &json!(5), &json!(5))
    );
    let small = app.get_json("/api/notifications/hana?limit=2").await.1;
    assert_eq!((&small["count"], &small["total"]), (&json!(2), &json!(5)));
    let ivan = app.history("ivan", "?limit=100").await;
    assert_eq!(
        page_titles(&ivan),
        ["i1", "i0"],
        "other users are unaffected"
    );
    assert_eq!(ivan["total"], 2);

    // What the cap dropped is gone for paging and for read state too.
    let dropped = published[0]["id"].as_str().unwrap();
    let (status, body) = app
        .get_json(&format!("/api/notifications/hana?before={dropped}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post_empty(&format!("/api/notifications/hana/{dropped}/read"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.post_empty("/api/notifications/hana/read-all").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "updated": 5 })));
}

#[tokio::test]
async fn ids_are_never_reused_after_the_log_is_emptied_by_age_nor_after_a_restart() {
    let app = TestApp::spawn_with(short_age).await;
    let first = app.publish_and_watch("ned", &["n0", "n1", "n2"]).await;
    let newest = first[2].id.clone();
    app.wait_until_the_log_is_empty().await;

    let after_sweep = app.publish_and_watch("ned", &["after sweep"]).await;
    assert!(
        order(&after_sweep[0].id) > order(&newest),
        "{after_sweep:?}"
    );
    let newest = after_sweep[0].id.clone();
    let page = app.history("ned", "?limit=100").await;
    assert_eq!(page["lastEventId"], newest);

    // Empty the log again, then restart on the same data: the next id is still higher.
    app.wait_until_the_log_is_empty().await;
    let app = app.restart(short_age).await;
    assert_eq!(app.stats().await["eventsBuffered"], 0);
    assert_eq!(
        app.history("ned", "?limit=100").await["lastEventId"],
        newest
    );
    let after_restart = app.publish_and_watch("ned", &["after restart"]).await;
    assert!(
        order(&after_restart[0].id) > order(&newest),
        "{after_restart:?}"
    );
    // And an id from before the sweep still gets resync, carrying the newest id.
    let mut stream = expect_resync(&app, "ned", &first[0].id, &after_restart[0].id).await;
    app.publish("ned", "live").await;
    let live = stream.next_event().await;
    assert!(order(&live.id) > order(&after_restart[0].id));
}

#[tokio::test]
async fn history_stays_within_its_limit_across_deletes_refused_batches_and_publishes_to_many() {
    let app = TestApp::spawn_with(|s| s.retention.history_per_user = 3).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.publish("hana", &format!("n{n}")).await["id"].clone());
    }
    let (status, _) = app
        .delete(&format!(
            "/api/notifications/hana/{}",
            ids[1].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Two left: one more fits without dropping anything.
    app.publish("hana", "n3").await;
    assert_eq!(
        page_titles(&app.history("hana", "?limit=100").await),
        ["n3", "n2", "n0"]
    );
    // A refused batch (a bad id after hana's) stores nothing and counts nothing.
    let (status, _) = app
        .post_json(
            "/api/notifications",
            &json!({ "users": ["hana", "b c"], "title": "no", "message": "m" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.publish_to_many(
        &["ivan", "hana"],
        &json!({ "title": "many", "message": "m" }),
    )
    .await;
    app.publish("hana", "n4").await;
    let page = app.history("hana", "?limit=100").await;
    assert_eq!(page_titles(&page), ["n4", "many", "n3"]);
    assert_eq!(page["total"], 3);
    assert_eq!(
        page_titles(&app.history("ivan", "?limit=100").await),
        ["many"]
    );
}
