//! Many users' tabs under concurrent publishing: the streams ([`Tab`]), what the publishers
//! were acknowledged ([`Sent`]), and the check that a stream got exactly its own user's
//! notifications and every announcement, in id order, each once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::api::Api;
use super::auth::{Carrier, token_for};
use super::sse::{Received, SseClient};

/// How long a stream may wait for the end marker while thousands of publishes go on.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// xorshift64*: reproducible from the printed seed, and no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The user with this index.
pub fn user(index: usize) -> String {
    format!("user-{index:02}")
}

/// One open stream and whose it is.
pub struct Tab {
    pub user: String,
    pub carrier: Carrier,
    pub stream: SseClient,
}

/// What the publishers sent, as the server acknowledged it.
#[derive(Default)]
pub struct Sent {
    /// Per user: notification id -> the stored notification (from the `201`).
    pub notifications: HashMap<String, HashMap<String, Value>>,
    /// Titles of the announcements that got `200`.
    pub announcements: BTreeSet<String>,
}

/// One publish of the plan.
pub enum Publish {
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

/// Opens `user`'s stream with a token carried by `carrier`, replaying after `after` if given,
/// and reads `connected`.
pub async fn open_with_token(
    app: &Api,
    user: &str,
    carrier: Carrier,
    after: Option<&str>,
) -> SseClient {
    let (client, url) =
        carrier.client_and_url(app, &format!("/events/{user}"), &token_for(user, 3600));
    let mut stream = SseClient::try_open(&client, &url, after).await;
    assert_eq!(stream.status, StatusCode::OK, "{user} {carrier:?}");
    stream.expect_connected().await;
    stream
}

/// Reads every tab concurrently until each has received the announcement titled `marker`;
/// returns, per tab, what came before it (and the marker itself, last).
pub async fn read_until(tabs: Vec<Tab>, marker: &str) -> Vec<(Tab, Vec<Received>)> {
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
pub fn assert_exactly_own(user: &str, events: &[Received], sent: &Sent, seed: u64) {
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
