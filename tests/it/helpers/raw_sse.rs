//! SSE read as bytes, for what a parser hides: [`Subscription`] sees the heartbeats, which are
//! comments that SSE parsers drop.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;

use super::WAIT;
use super::api::Api;
use super::sse::Received;

/// What reading a stream produced next.
#[derive(Debug)]
pub enum Next {
    Event(Received),
    Heartbeat,
    /// The stream ended (cleanly or not).
    Ended,
    /// Nothing arrived in the time given.
    Quiet,
}

/// An SSE stream read at the byte level, so that heartbeats, which are comments and which SSE
/// parsers drop, are seen too.
pub struct Subscription {
    /// Whose stream it is, for failure messages and reconnects.
    pub user: String,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// Bytes of a block not yet complete.
    buffer: Vec<u8>,
    /// Complete blocks not yet handed out.
    parsed: VecDeque<Next>,
    ended: bool,
}

impl Subscription {
    /// Opens `user`'s stream on `url`, replaying after `after` if given; asserts `200` and
    /// reads `connected`.
    pub async fn open(api: &Api, user: &str, after: Option<&str>) -> Self {
        let mut request = api.client.get(api.url(&format!("/events/{user}")));
        if let Some(after) = after {
            request = request.header("last-event-id", after);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opened in time")
            .expect("stream request sent");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "stream refused by {}",
            api.url
        );
        let mut stream = Self {
            user: user.to_owned(),
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            parsed: VecDeque::new(),
            ended: false,
        };
        assert_eq!(stream.next_event().await.event, "connected");
        stream
    }

    /// What the stream produces next within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(next) = self.parsed.pop_front() {
                return next;
            }
            if self.ended {
                return Next::Ended;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::Quiet,
                Ok(None | Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(chunk))) => {
                    self.buffer.extend_from_slice(&chunk);
                    self.parse_blocks();
                }
            }
        }
    }

    fn parse_blocks(&mut self) {
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8(block).expect("utf8 stream");
            let (mut name, mut id, mut data, mut heartbeat) = (None, String::new(), None, false);
            for line in text.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    heartbeat |= comment.trim() == "heartbeat";
                    continue;
                }
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "event" => name = Some(value.to_owned()),
                    "id" => id = value.to_owned(),
                    "data" => data = Some(serde_json::from_str(value).expect("JSON data")),
                    _ => {}
                }
            }
            if let Some(event) = name {
                let data = data.expect("every event has data");
                self.parsed
                    .push_back(Next::Event(Received { event, id, data }));
            } else if heartbeat {
                self.parsed.push_back(Next::Heartbeat);
            }
        }
    }

    /// The next event, heartbeats skipped; fails the test if none comes within [`WAIT`].
    pub async fn next_event(&mut self) -> Received {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Event(event) => return event,
                Next::Heartbeat => {}
                Next::Ended => panic!("{}'s stream ended before the next event", self.user),
                Next::Quiet => panic!("no event for {} within {WAIT:?}", self.user),
            }
        }
    }

    /// The next `n` events, heartbeats skipped.
    pub async fn next_events(&mut self, n: usize) -> Vec<Received> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts that for `wait` the stream stays open and sends no event; returns how many
    /// heartbeats it sent meanwhile.
    pub async fn expect_no_event(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut heartbeats = 0;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Quiet => return heartbeats,
                Next::Heartbeat => heartbeats += 1,
                Next::Event(event) => panic!("{} got an unexpected {event:?}", self.user),
                Next::Ended => panic!("{}'s stream ended", self.user),
            }
        }
    }

    /// Asserts the stream ends within [`WAIT`], whatever comes before.
    pub async fn expect_end(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Ended => return,
                Next::Quiet => panic!("{}'s stream did not end", self.user),
                Next::Event(_) | Next::Heartbeat => {}
            }
        }
    }
}
