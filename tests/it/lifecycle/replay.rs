//! Replay and the lifecycle: a replay never resurrects a deleted notification nor shows an
//! expired one; an `updated` comes after its `notification`; expiry reaches open streams as
//! `deleted`; changes survive `kill -9` in order; random changes reach their user only.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::answers::{id_of, page_ids};
use crate::helpers::{
    Received, ServerProcess, TestApp, assert_next_is_marker, assert_strictly_increasing, event_ids,
    note,
};

fn path(user: &str, id: &str) -> String {
    format!("/api/notifications/{user}/{id}")
}

/// What a replay from the very start delivers: (event, the notification ids it names).
fn replayed(events: &[Received]) -> Vec<(String, Vec<String>)> {
    events
        .iter()
        .map(|event| {
            let ids = match event.data.get("ids") {
                Some(ids) => ids
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_str().unwrap().to_owned())
                    .collect(),
                None => vec![event.data["id"].as_str().unwrap_or_default().to_owned()],
            };
            (event.event.clone(), ids)
        })
        .collect()
}

fn names(list: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(event, id)| ((*event).to_owned(), vec![(*id).to_owned()]))
        .collect()
}

#[tokio::test]
async fn a_replay_never_resurrects_a_deleted_notification_and_updates_follow_their_notification() {
    let app = TestApp::spawn().await;
    let a = id_of(&app.publish("alice", "a").await).to_owned();
    let b = id_of(&app.publish("alice", "b").await).to_owned();
    let (status, _) = app
        .patch_json(&path("alice", &a), &json!({ "title": "a2" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.mark_read("alice", &a).await;
    app.post_empty(&format!("{}/archive", path("alice", &a)))
        .await;
    let (status, _) = app
        .patch_json(&path("alice", &b), &json!({ "title": "b2" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete(&path("alice", &a)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (mut stream, events) = app.replay("alice", "0", 3).await;
    assert_eq!(
        replayed(&events),
        names(&[("notification", &b), ("updated", &b), ("deleted", &a)]),
        "nothing about a but its deletion; b's update after b"
    );
    assert_eq!(events[1].data["title"], "b2");
    assert_strictly_increasing(&event_ids(&events));
    assert_next_is_marker(&app, "alice", &mut stream).await;
    assert_eq!(page_ids(&app.history("alice", "").await).len(), 2);
}

#[tokio::test]
async fn an_expired_notification_leaves_history_replay_and_open_streams_within_the_sweep() {
    let app = TestApp::spawn_with(|s| s.expire_every = Duration::from_millis(100)).await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let short = app
        .publish_to_many(
            &["alice", "bob"],
            &json!({ "title": "short", "message": "m", "ttl": 1 }),
        )
        .await;
    let kept = app.publish("alice", "kept").await;
    assert_eq!(stream.next_events(2).await.len(), 2);

    let expired = stream.next_event().await;
    assert_eq!(expired.event, "deleted");
    assert_eq!(
        expired.data,
        json!({ "ids": [short[0]], "reason": "expired" })
    );
    assert!(!expired.id.is_empty());
    assert_eq!(page_ids(&app.history("alice", "").await), [id_of(&kept)]);
    assert_eq!(app.history_total("bob").await, 0);
    // Three notifications, then one `deleted` for each of the two users.
    app.wait_for_metric("herald_events_published_total", |n| n == 5.0)
        .await;
    let (_, events) = app.replay("alice", "0", 2).await;
    assert_eq!(
        replayed(&events),
        vec![
            ("notification".to_owned(), vec![id_of(&kept).to_owned()]),
            ("deleted".to_owned(), vec![short[0].clone()]),
        ]
    );
    let (status, _) = app.delete(&path("alice", &short[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn past_its_expiry_and_before_any_sweep_a_notification_is_neither_listed_nor_replayed() {
    let app = TestApp::spawn_with(|s| s.expire_every = Duration::from_secs(3600)).await;
    let short = app
        .publish_body(
            "alice",
            &json!({ "title": "short", "message": "m", "ttl": 1 }),
        )
        .await;
    let kept = app.publish("alice", "kept").await;
    // Waiting for the clock itself: nothing signals that a second has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = app.history("alice", "").await;
    assert_eq!(page_ids(&page), [id_of(&kept)]);
    assert_eq!((&page["total"], &page["unread"]), (&json!(1), &json!(1)));
    let (_, events) = app.replay("alice", "0", 1).await;
    assert_eq!(events[0].data, kept, "the expired one is passed over");
    let mut stream = app.subscribe("alice", Some("0")).await;
    stream.expect_connected().await;
    assert_eq!(stream.next_event().await.data, kept);
    let marker = app.publish("alice", "marker").await;
    assert_eq!(stream.next_event().await.data, marker);
    for change in ["archive", "unarchive"] {
        let (status, _) = app
            .post_empty(&format!("{}/{change}", path("alice", id_of(&short))))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{change}");
    }
    let (status, _) = app
        .patch_json(&path("alice", id_of(&short)), &json!({ "title": "x" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn acknowledged_changes_survive_kill_9_and_replay_in_order() {
    let data = TempDir::new().expect("temp dir");
    let mut first = ServerProcess::start(data.path(), &[]);
    let a = id_of(&first.publish("alice", "a").await).to_owned();
    let b = id_of(&first.publish("alice", "b").await).to_owned();
    let c = id_of(&first.publish("alice", "c").await).to_owned();
    let many = first
        .publish_to_many(&["alice", "bob"], &note("both"))
        .await;
    let (status, _) = first
        .patch_json(&path("alice", &a), &json!({ "title": "a2" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = first
        .post_empty(&format!("{}/archive", path("alice", &b)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = first.delete(&path("alice", &c)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    first.kill_hard();

    let second = ServerProcess::start(data.path(), &[]);
    let (_, events) = second.replay("alice", "0", 6).await;
    assert_eq!(
        replayed(&events),
        names(&[
            ("notification", &a),
            ("notification", &b),
            ("notification", &many[0]),
            ("updated", &a),
            ("archived", &b),
            ("deleted", &c),
        ])
    );
    assert_eq!(events[3].data["title"], "a2");
    assert_eq!(events[4].data, json!({ "ids": [b], "archived": true }));
    let inbox = second.history("alice", "").await;
    assert_eq!(page_ids(&inbox), [many[0].clone(), a.clone()]);
    assert_eq!(
        page_ids(&second.history("alice", "?archived=true").await),
        [b]
    );
    assert_eq!(
        page_ids(&second.history("bob", "").await),
        [many[1].clone()]
    );
}

/// A small deterministic generator, so a failing sequence can be run again from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// What each user's stream must carry, and what a replay from the start must still hold:
/// (event, ids, the notification it is about). Events about a deleted notification leave the log.
#[derive(Default)]
struct Expected {
    live: Vec<(String, Vec<String>)>,
    log: Vec<(String, Vec<String>, Option<String>)>,
}

impl Expected {
    fn record(&mut self, event: &str, id: &str, about: Option<&str>) {
        self.live.push((event.to_owned(), vec![id.to_owned()]));
        self.log.push((
            event.to_owned(),
            vec![id.to_owned()],
            about.map(str::to_owned),
        ));
    }
}

#[tokio::test]
async fn random_changes_reach_their_own_user_only_exactly_and_in_order() {
    const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
    for seed in [1_u64, 7, 42] {
        let app = TestApp::spawn().await;
        let mut rng = SplitMix(seed);
        let mut streams = HashMap::new();
        for user in USERS {
            let mut stream = app.subscribe(user, None).await;
            stream.expect_connected().await;
            streams.insert(user, stream);
        }
        let mut expected: HashMap<&str, Expected> = HashMap::new();
        let mut owned: HashMap<&str, Vec<String>> = HashMap::new();
        let mut archived: HashSet<String> = HashSet::new();
        let mut read: HashSet<String> = HashSet::new();
        for step in 0..40 {
            let user = USERS[rng.below(USERS.len())];
            let mine = owned.get(user).cloned().unwrap_or_default();
            let pick = (!mine.is_empty()).then(|| mine[rng.below(mine.len())].clone());
            match (rng.below(6), pick) {
                (0, _) | (_, None) => {
                    let id = id_of(&app.publish(user, &format!("s{seed}-{step}")).await).to_owned();
                    expected
                        .entry(user)
                        .or_default()
                        .record("notification", &id, Some(&id));
                    owned.entry(user).or_default().push(id);
                }
                (1, _) => {
                    let at = USERS.iter().position(|u| *u == user).unwrap();
                    let other = USERS[(at + 1) % USERS.len()];
                    let ids = app.publish_to_many(&[user, other], &note("pair")).await;
                    for (who, id) in [user, other].into_iter().zip(ids) {
                        expected
                            .entry(who)
                            .or_default()
                            .record("notification", &id, Some(&id));
                        owned.entry(who).or_default().push(id);
                    }
                }
                (2, Some(id)) => {
                    let change = json!({ "message": format!("m{step}") });
                    let (status, _) = app.patch_json(&path(user, &id), &change).await;
                    assert_eq!(status, StatusCode::OK);
                    expected
                        .entry(user)
                        .or_default()
                        .record("updated", &id, Some(&id));
                }
                (3, Some(id)) => {
                    let (status, _) = app.delete(&path(user, &id)).await;
                    assert_eq!(status, StatusCode::NO_CONTENT);
                    owned.get_mut(user).unwrap().retain(|kept| *kept != id);
                    let entry = expected.entry(user).or_default();
                    entry
                        .log
                        .retain(|(_, _, about)| about.as_deref() != Some(id.as_str()));
                    entry.record("deleted", &id, None);
                }
                (4, Some(id)) => {
                    let archive = rng.below(2) == 0;
                    let action = if archive { "archive" } else { "unarchive" };
                    let (status, answer) = app
                        .post_empty(&format!("{}/{action}", path(user, &id)))
                        .await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(answer, json!({ "id": id, "archived": archive }));
                    // Only a change is an event.
                    let changed = if archive {
                        archived.insert(id.clone())
                    } else {
                        archived.remove(&id)
                    };
                    if changed {
                        expected
                            .entry(user)
                            .or_default()
                            .record("archived", &id, Some(&id));
                    }
                }
                (_, Some(id)) => {
                    let (status, _) = app
                        .post_empty(&format!("/api/notifications/{user}/{id}/read"))
                        .await;
                    assert_eq!(status, StatusCode::OK);
                    if read.insert(id.clone()) {
                        expected
                            .entry(user)
                            .or_default()
                            .record("read", &id, Some(&id));
                    }
                }
            }
        }
        for user in USERS {
            let want = expected.remove(user).unwrap_or_default();
            let stream = streams.get_mut(user).unwrap();
            let got = stream.next_events(want.live.len()).await;
            assert_eq!(
                replayed(&got),
                want.live,
                "seed {seed}: {user}'s live stream"
            );
            assert_next_is_marker(&app, user, stream).await;
            let log: Vec<_> = want.log.into_iter().map(|(e, ids, _)| (e, ids)).collect();
            let (_, replay) = app.replay(user, "0", log.len()).await;
            assert_eq!(replayed(&replay), log, "seed {seed}: {user}'s replay");
        }
    }
}
