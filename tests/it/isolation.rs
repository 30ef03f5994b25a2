//! SPEC §2 and §4 under load: with auth on and many users publishing at once, every stream
//! receives exactly its own user's notifications and every announcement, in id order, each
//! once, and nothing else; a replay from the middle obeys the same rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::auth::{Carrier, spawn_secured, token_for, unix_now};
use crate::helpers::{Received, SseClient, TestApp};

/// Users with open streams; every third one has two.
const USERS: usize = 40;
/// Users who get notifications but have no stream: theirs must reach no one.
const ABSENT_USERS: usize = 5;
const NOTIFICATIONS: usize = 2000;
const ANNOUNCEMENTS: usize = 40;
/// Publish requests in flight at once.
const IN_FLIGHT: usize = 32;
/// How long a stream may wait for the end marker while thousands of publishes go on.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// xorshift64*: reproducible from the printed seed, and no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

fn user(index: usize) -> String {
    format!("user-{index:02}")
}

/// One open stream and whose it is.
struct Tab {
    user: String,
    carrier: Carrier,
    stream: SseClient,
}

/// What the publishers sent, as the server acknowledged it.
#[derive(Default)]
struct Sent {
    /// Per user: notification id -> the stored notification (from the `201`).
    notifications: HashMap<String, HashMap<String, Value>>,
    /// Titles of the announcements that got `200`.
    announcements: BTreeSet<String>,
}

enum Publish {
    Notification { user: String, title: String },
    Announcement { title: String },
}

/// A natural-order key for an event id (`42` or `1732543000123-7`).
fn id_key(id: &str) -> Vec<u64> {
    id.split('-')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("odd event id {id:?}"))
        })
        .collect()
}

async fn open(app: &TestApp, user: &str, carrier: Carrier, after: Option<&str>) -> SseClient {
    let (client, url) =
        carrier.client_and_url(app, &format!("/events/{user}"), &token_for(user, 3600));
    let mut stream = SseClient::try_open(&client, &url, after).await;
    assert_eq!(stream.status, StatusCode::OK, "{user} {carrier:?}");
    stream.expect_connected().await;
    stream
}

/// Reads every tab concurrently until each has received the announcement titled `marker`;
/// returns, per tab, what came before it (and the marker itself, last).
async fn read_until(tabs: Vec<Tab>, marker: &str) -> Vec<(Tab, Vec<Received>)> {
    let readers = tabs.into_iter().map(|mut tab| {
        let marker = marker.to_owned();
        tokio::spawn(async move {
            let mut events = Vec::new();
            loop {
                let event = tab
                    .stream
                    .try_next_event(LONG_WAIT)
                    .await
                    .unwrap_or_else(|| panic!("{}'s stream ended early", tab.user));
                let done = event.event == "announcement" && event.data["title"] == marker;
                events.push(event);
                if done {
                    return (tab, events);
                }
            }
        })
    });
    futures::future::join_all(readers)
        .await
        .into_iter()
        .map(|joined| joined.expect("reader did not panic"))
        .collect()
}

/// Asserts `events` (the marker excluded) are exactly `user`'s notifications and every
/// announcement, ids strictly increasing, each once.
fn assert_exactly_own(user: &str, events: &[Received], sent: &Sent, seed: u64) {
    let context = format!("{user} (seed {seed})");
    for pair in events.windows(2) {
        assert!(
            id_key(&pair[0].id) < id_key(&pair[1].id),
            "{context}: ids {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
    let own = sent.notifications.get(user).cloned().unwrap_or_default();
    let mut notifications = BTreeMap::new();
    let mut announcements = BTreeSet::new();
    for event in events {
        match event.event.as_str() {
            "notification" => {
                let id = event.data["id"]
                    .as_str()
                    .expect("notification id")
                    .to_owned();
                assert_eq!(
                    own.get(&id),
                    Some(&event.data),
                    "{context}: a notification not for this user, or changed"
                );
                assert!(notifications.insert(id, ()).is_none(), "{context}: twice");
            }
            "announcement" => {
                let title = event.data["title"].as_str().expect("title").to_owned();
                assert!(
                    announcements.insert(title),
                    "{context}: an announcement twice"
                );
            }
            other => panic!("{context}: unexpected {other} event"),
        }
    }
    assert_eq!(
        notifications.len(),
        own.len(),
        "{context}: every own notification"
    );
    assert_eq!(
        announcements, sent.announcements,
        "{context}: every announcement"
    );
}

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
            let stream = open(&app, &user(index), carrier, None).await;
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
        let stream = open(&app, &tab.user, tab.carrier, Some(&after)).await;
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
