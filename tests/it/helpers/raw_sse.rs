//! SSE read as bytes, for what a parser hides: [`Subscription`] sees the heartbeats (comments,
//! which SSE parsers drop); [`open_raw_stream`] and [`read_to_end`] see a stream's exact
//! preamble and its end; [`ChunkedSse`] checks the chunk framing of a stream read off a socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald::domain::EventId;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::WAIT;
use super::api::Api;
use super::sse::Received;

/// A response body as it arrives.
pub type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

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
    body: Body,
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

// ---------------------------------------------------------------------------------------------
// A stream's exact bytes

/// Opens `/events/{user}` and reads its preamble (`retry:` and `connected`), so the stream is
/// known to be admitted. Returns the rest of the body and the preamble's text.
pub async fn open_raw_stream(api: &Api, user: &str) -> (Body, String) {
    let response = api.get(&format!("/events/{user}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body: Body = Box::pin(response.bytes_stream());
    let mut preamble = String::new();
    while !(preamble.contains("event: connected\n") && preamble.ends_with("\n\n")) {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("preamble in time")
            .expect("stream still open")
            .expect("chunk read");
        preamble.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    (body, preamble)
}

/// Reads `body` to its end: when it ended, and what came after the preamble, or the error that
/// cut it short.
pub async fn read_to_end(
    mut body: Body,
    ended: Arc<AtomicUsize>,
) -> (Instant, Result<String, String>) {
    let mut rest = Vec::new();
    let outcome = loop {
        match tokio::time::timeout(WAIT, body.next()).await {
            Err(_) => break Err("the stream did not end in time".to_owned()),
            Ok(None) => break Ok(String::from_utf8(rest).expect("utf-8")),
            Ok(Some(Err(error))) => break Err(format!("the stream broke: {error:?}")),
            Ok(Some(Ok(chunk))) => rest.extend_from_slice(&chunk),
        }
    };
    ended.fetch_add(1, Ordering::SeqCst);
    (Instant::now(), outcome)
}

/// A `retry:` line, then `connected` with its data, and nothing else.
pub fn assert_preamble(preamble: &str) {
    let connected = preamble
        .strip_prefix("retry: 3000\n")
        .map(|rest| rest.strip_prefix('\n').unwrap_or(rest))
        .unwrap_or_else(|| panic!("no retry line first: {preamble:?}"));
    let data = connected
        .strip_prefix("event: connected\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not a connected event: {preamble:?}"));
    let data: Value = serde_json::from_str(data).expect("connected data is JSON");
    assert!(data["clientId"].is_string(), "{data}");
}

/// `(id, title)` of the complete notification events in a raw SSE body (ids checked to
/// increase), and the id of the last one.
pub fn complete_notifications(raw: &str) -> (Vec<(EventId, usize)>, Option<String>) {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let mut titles = Vec::new();
    let mut last_id = None;
    let mut blocks: Vec<&str> = body.split("\n\n").collect();
    blocks.pop(); // whatever follows the last blank line is incomplete
    for block in blocks {
        let mut id = None;
        let mut data = None;
        let mut is_notification = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if line == "event: notification" {
                is_notification = true;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            }
        }
        if is_notification {
            let data: Value = serde_json::from_str(data.unwrap()).unwrap();
            let id = id.expect("a notification has an id");
            let numeric: EventId = id.parse().unwrap();
            if let Some((previous, _)) = titles.last() {
                assert!(numeric > *previous, "ids increase on the stream");
            }
            titles.push((numeric, data["title"].as_str().unwrap().parse().unwrap()));
            last_id = Some(id);
        }
    }
    (titles, last_id)
}

/// A strict reader of one chunked SSE response: every chunk's size line, data and CRLF must
/// be exactly right, or the test fails.
#[derive(Default)]
pub struct ChunkedSse {
    raw: Vec<u8>,
    head_done: bool,
    /// The decoded body not yet taken as events.
    pub text: String,
}

impl ChunkedSse {
    /// Asks `socket` for `user`'s stream over HTTP/1.1 and reads until it is connected.
    pub async fn open(
        socket: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
        user: &str,
    ) -> Self {
        use tokio::io::AsyncWriteExt;
        let request =
            format!("GET /events/{user} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut reader = Self::default();
        while !reader.text.contains("event: connected") {
            reader.read_some(socket).await;
        }
        reader
    }

    /// Reads what the socket has (at least one byte, within [`WAIT`]) and decodes it.
    pub async fn read_some(&mut self, socket: &mut (impl tokio::io::AsyncRead + Unpin)) {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(n > 0, "the server closed the stream");
        self.raw.extend_from_slice(&buf[..n]);
        self.decode();
    }

    fn decode(&mut self) {
        if !self.head_done {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_line = std::str::from_utf8(&self.raw[..line_end]).expect("a size line");
            let size = usize::from_str_radix(size_line, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            assert!(size > 0, "the stream ended");
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            assert_eq!(
                &self.raw[start + size..start + size + 2],
                b"\r\n",
                "chunk end"
            );
            self.text
                .push_str(std::str::from_utf8(&self.raw[start..start + size]).expect("UTF-8"));
            self.raw.drain(..start + size + 2);
        }
    }

    /// Reads until `total` notifications titled `0` .. `total` have arrived (within four times
    /// [`WAIT`]), and asserts their ids increase and each title comes exactly once.
    pub async fn read_every_notification(
        &mut self,
        socket: &mut (impl tokio::io::AsyncRead + Unpin),
        total: usize,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT * 4;
        let (mut titles, mut previous_id) = (Vec::new(), EventId::ZERO);
        while titles.len() < total {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} arrived",
                titles.len()
            );
            self.read_some(socket).await;
            for (id, title) in self.take_notifications() {
                assert!(id > previous_id, "ids increase on the stream");
                previous_id = id;
                titles.push(title);
            }
        }
        titles.sort_unstable();
        assert_eq!(
            titles,
            (0..total).collect::<Vec<_>>(),
            "every one exactly once"
        );
    }

    /// `(id, title)` of each complete notification decoded so far.
    pub fn take_notifications(&mut self) -> Vec<(EventId, usize)> {
        let complete = self.text.rfind("\n\n").map_or(0, |at| at + 2);
        let blocks: String = self.text.drain(..complete).collect();
        let (seen, _) = complete_notifications(&format!("\r\n\r\n{blocks}"));
        seen
    }
}
