//! [`SseClient`], a parsed SSE stream whose every wait fails the test after [`WAIT`]; the
//! [`Received`] events it yields and what tests ask of them (titles, ids in order, a marker next,
//! a `resync` first); and the [`Api`] methods that open streams.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use herald::domain::EventId;
use reqwest::StatusCode;
use serde_json::Value;

use super::WAIT;
use super::answers::Answer;
use super::api::Api;

/// One event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub event: String,
    pub id: String,
    pub data: Value,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

/// A reader of one SSE response; every wait fails the test after [`WAIT`].
pub struct SseClient {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: EventStream,
}

impl SseClient {
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let client = Self::try_open(client, url, last_event_id).await;
        assert_eq!(client.status, StatusCode::OK, "stream refused");
        client
    }

    /// Opens a stream whatever the status (for tests of refusals).
    pub async fn try_open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opened in time")
            .expect("stream request sent");
        Self::from_response(response)
    }

    /// Reads the events of a stream response the test sent itself (to look at it first).
    pub fn from_response(response: reqwest::Response) -> Self {
        use eventsource_stream::Eventsource;
        let status = response.status();
        let headers = response.headers().clone();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|item| item.map_err(|error| error.to_string()));
        Self {
            status,
            headers,
            events: Box::pin(events),
        }
    }

    /// The next event, or a failed test.
    pub async fn next_event(&mut self) -> Received {
        self.try_next_event(WAIT)
            .await
            .expect("the stream ended before the next event")
    }

    /// The next event within `wait`; `None` when the stream ends. Fails on timeout.
    pub async fn try_next_event(&mut self, wait: Duration) -> Option<Received> {
        let next = tokio::time::timeout(wait, self.events.next())
            .await
            .expect("no event arrived in time")?;
        let event = next.ok()?;
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|_| panic!("event data is not JSON: {:?}", event.data));
        Some(Received {
            event: event.event,
            id: event.id,
            data,
        })
    }

    /// Reads `connected`, asserting it has no id.
    pub async fn expect_connected(&mut self) -> Received {
        let connected = self.next_event().await;
        assert_eq!(connected.event, "connected");
        assert!(connected.data["clientId"].is_string());
        connected
    }

    /// The next `n` events.
    pub async fn next_events(&mut self, n: usize) -> Vec<Received> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts the stream ends (cleanly or not) within [`WAIT`].
    pub async fn expect_end(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.events.next())
                .await
                .expect("the stream did not end in time")
            {
                None | Some(Err(_)) => return,
                Some(Ok(event)) => {
                    let _ = event;
                }
            }
        }
    }
}

/// Opening streams: the [`Api`] methods that return an [`SseClient`] or what one received.
impl Api {
    /// Opens `/events/{user}`, optionally with a `Last-Event-ID` header, and asserts `200`.
    pub async fn subscribe(&self, user: &str, last_event_id: Option<&str>) -> SseClient {
        SseClient::open(
            &self.client,
            &self.url(&format!("/events/{user}")),
            last_event_id,
        )
        .await
    }

    /// Opens `user`'s stream replaying from `after` and reads exactly `n` events after
    /// `connected`.
    pub async fn replay(&self, user: &str, after: &str, n: usize) -> (SseClient, Vec<Received>) {
        let mut stream = self.subscribe(user, Some(after)).await;
        stream.expect_connected().await;
        let events = stream.next_events(n).await;
        (stream, events)
    }

    /// Opens `user`'s stream, retrying while a just-closed stream still holds its place.
    pub async fn subscribe_when_a_place_frees(&self, user: &str) -> SseClient {
        let deadline = Instant::now() + WAIT;
        loop {
            let attempt =
                SseClient::try_open(&self.client, &self.url(&format!("/events/{user}")), None)
                    .await;
            if attempt.status == StatusCode::OK {
                return attempt;
            }
            assert!(
                Instant::now() < deadline,
                "the freed place was never reused ({})",
                attempt.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for `user`'s stream and reads the whole [`Answer`]: for a refusal, which ends at
    /// once (an accepted stream never would).
    pub async fn stream_answer(&self, user: &str) -> Answer {
        Answer::read(self.get(&format!("/events/{user}")).await).await
    }

    /// Publishes `titles` for `user` and returns the events a live stream of that user received.
    pub async fn publish_and_watch(&self, user: &str, titles: &[&str]) -> Vec<Received> {
        let mut stream = self.subscribe(user, None).await;
        stream.expect_connected().await;
        for title in titles {
            self.publish(user, title).await;
        }
        stream.next_events(titles.len()).await
    }
}

/// Titles of a list of received notifications, in order.
pub fn titles(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The id of an event, parsed as the server's ids are.
pub fn event_id(event: &Received) -> EventId {
    event
        .id
        .parse()
        .unwrap_or_else(|_| panic!("{:?} is not an event id", event.id))
}

/// The ids of `events`, in order.
pub fn event_ids(events: &[Received]) -> Vec<EventId> {
    events.iter().map(event_id).collect()
}

pub fn assert_strictly_increasing(ids: &[EventId]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must strictly increase: {ids:?}"
    );
}

/// Publishes a marker for `user` and asserts it is the very next event on `stream`: whatever
/// was attempted before reached that stream only if it came out earlier.
pub async fn assert_next_is_marker(api: &Api, user: &str, stream: &mut SseClient) {
    let marker = api.publish(user, "marker").await;
    let next = stream.next_event().await;
    assert_eq!(next.event, "notification", "{next:?}");
    assert_eq!(
        next.data, marker,
        "the marker is the next event on the stream"
    );
}

/// Opens a stream from `last_event_id` and asserts it starts with `resync` carrying `newest`.
pub async fn expect_resync(api: &Api, user: &str, last_event_id: &str, newest: &str) -> SseClient {
    let mut stream = api.subscribe(user, Some(last_event_id)).await;
    stream.expect_connected().await;
    let resync = stream.next_event().await;
    assert_eq!(resync.event, "resync", "from {last_event_id}: {resync:?}");
    assert_eq!(resync.id, newest, "resync carries the newest id");
    assert!(
        resync.data["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{resync:?}"
    );
    assert!(resync.data.get("oldestId").is_some(), "{resync:?}");
    stream
}
