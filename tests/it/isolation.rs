//! docs/protocol.md#streams and docs/protocol.md#auth under load: with auth on and many users
//! publishing at once, every stream receives exactly its own user's notifications and every
//! announcement, in id order, each once, and nothing else; a replay from the middle obeys the same
//! rule.

use std::collections::HashMap;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::auth::{Carrier, spawn_secured, unix_now};
use crate::helpers::isolation::{
    Publish, Rng, Sent, Tab, assert_exactly_own, open_with_token, read_until, user,
};

/// Users with open streams; every third one has two.
const USERS: usize = 40;
/// Users who get notifications but have no stream: theirs must reach no one.
const ABSENT_USERS: usize = 5;
const NOTIFICATIONS: usize = 2000;
const ANNOUNCEMENTS: usize = 40;
/// Publish requests in flight at once.
const IN_FLIGHT: usize = 32;
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_load_each_stream_gets_exactly_its_users_events_live_and_on_replay() {
    let seed = unix_now().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let app = spawn_secured(|_| {}).await;

    let mut tabs = Vec::new();
    for index in 0..USERS {
        let streams = if index % 3 == 0 { 2 } else { 1 };
        for n in 0..streams {
            let carrier = Carrier::ALL[(index + n) % 3];
            let stream = open_with_token(&app, &user(index), carrier, None).await;
            tabs.push(Tab {
                user: user(index),
                carrier,
                stream,
            });
        }
    }

    let plan: Vec<Publish> = (0..NOTIFICATIONS + ANNOUNCEMENTS)
        .map(|n| {
            if rng.below(NOTIFICATIONS + ANNOUNCEMENTS) < ANNOUNCEMENTS {
                Publish::Announcement {
                    title: format!("announcement {n}"),
                }
            } else {
                Publish::Notification {
                    user: user(rng.below(USERS + ABSENT_USERS)),
                    title: format!("notification {n}"),
                }
            }
        })
        .collect();
    let app_ref = &app;
    let outcomes: Vec<(Publish, StatusCode, Value)> = futures::stream::iter(plan)
        .map(|item| async move {
            let (status, body) = match &item {
                Publish::Notification { user, title } => {
                    let body = json!({ "title": title, "message": "m" });
                    app_ref
                        .post_json(&format!("/api/notifications/{user}"), &body)
                        .await
                }
                Publish::Announcement { title } => {
                    let body = json!({ "title": title, "message": "m" });
                    app_ref.post_json("/api/broadcast", &body).await
                }
            };
            (item, status, body)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut sent = Sent::default();
    for (item, status, body) in outcomes {
        match item {
            Publish::Notification { user, .. } => {
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let id = body["id"].as_str().expect("id").to_owned();
                sent.notifications.entry(user).or_default().insert(id, body);
            }
            Publish::Announcement { title } => {
                assert_eq!(status, StatusCode::OK, "{body}");
                sent.announcements.insert(title);
            }
        }
    }
    // Everything above was acknowledged before this: it must all come before the marker.
    app.broadcast("end of the live phase").await;
    let live = read_until(tabs, "end of the live phase").await;

    // The same id means the same event on every stream.
    let mut by_id: HashMap<String, (String, Value)> = HashMap::new();
    for (tab, events) in &live {
        assert_exactly_own(&tab.user, &events[..events.len() - 1], &sent, seed);
        for event in events {
            let seen = by_id
                .entry(event.id.clone())
                .or_insert_with(|| (event.event.clone(), event.data.clone()));
            assert_eq!(
                seen,
                &(event.event.clone(), event.data.clone()),
                "id {}",
                event.id
            );
        }
    }
    // Nothing else reached anyone: the distinct ids are the present users' notifications, the
    // announcements and the marker.
    let to_present_users: usize = (0..USERS)
        .filter_map(|i| sent.notifications.get(&user(i)).map(HashMap::len))
        .sum();
    assert_eq!(
        by_id.len(),
        to_present_users + sent.announcements.len() + 1,
        "seed {seed}"
    );

    // Every stream reconnects from the middle of what it saw.
    let mut replays = Vec::new();
    let mut expected = Vec::new();
    for (tab, events) in live {
        let middle = events.len() / 2;
        let after = events[middle - 1].id.clone();
        let stream = open_with_token(&app, &tab.user, tab.carrier, Some(&after)).await;
        expected.push(events[middle..].to_vec());
        replays.push(Tab {
            user: tab.user,
            carrier: tab.carrier,
            stream,
        });
    }
    let end = app.broadcast("end of the replay").await;
    assert_eq!(end["sent"], true);
    let replayed = read_until(replays, "end of the replay").await;
    for ((tab, events), mut expected) in replayed.into_iter().zip(expected) {
        let marker = events.last().expect("the marker").clone();
        expected.push(marker);
        assert_eq!(events, expected, "{}'s replay (seed {seed})", tab.user);
    }
}
