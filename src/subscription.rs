//! One subscription as the body of its SSE response: the preamble, then what the log holds
//! after the client's `Last-Event-ID` (in pages), then live frames from the outbox, without a
//! gap or a duplicate, until its outbox closes it: drained, cut as a slow reader, or with
//! `reauth` when its token expires (docs/protocol.md#ids-and-replay).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::future::BoxFuture;

use crate::domain::{EventId, EventName, UserId, now_unix_ms};
use crate::hub::Admission;
use crate::metrics::Metrics;
use crate::sse::encode;
use crate::sse::outbox::{Closing, Popped};
use crate::store::{ReplayPage, Store, StoreError};

/// Events read from the log per page of a replay.
const REPLAY_PAGE: u32 = 500;

/// Where a new stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// Replay everything this user may see after this id, then live.
    After(EventId),
}

/// Why a stream was cut short instead of ending cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StreamAborted {
    #[error("the client read too slowly; its queue was full")]
    SlowReader,
    #[error("replay failed: {0}")]
    Replay(#[from] StoreError),
}

pub struct EventStream {
    admission: Admission,
    /// When the stream's token expires: then `reauth` is sent and the stream ends. Boxed so
    /// that streams without a token pay one pointer for it.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    user: UserId,
    store: Store,
    metrics: Arc<Metrics>,
    phase: Phase,
    /// The newest id written to this stream; nothing at or below it is written again.
    last_sent: EventId,
}

enum Phase {
    Preamble(Bytes, Start),
    Replaying(BoxFuture<'static, Result<ReplayPage, StoreError>>),
    Live,
    Ended,
}

impl EventStream {
    pub fn new(
        admission: Admission,
        user: UserId,
        store: Store,
        metrics: Arc<Metrics>,
        preamble: Bytes,
        start: Start,
        expires_at: Option<u64>,
    ) -> Self {
        let last_sent = match start {
            Start::Live => admission.dispatched_through,
            Start::After(id) => id,
        };
        Self {
            admission,
            expiry: expires_at.map(|exp| Box::pin(tokio::time::sleep_until(instant_of(exp)))),
            user,
            store,
            metrics,
            phase: Phase::Preamble(preamble, start),
            last_sent,
        }
    }

    fn fetch_after(&self, after: EventId) -> Phase {
        let store = self.store.clone();
        let user = self.user.clone();
        let upto = self.admission.dispatched_through;
        Phase::Replaying(Box::pin(async move {
            store.replay_page(user, after, upto, REPLAY_PAGE).await
        }))
    }

    /// Turns one page of the log into one chunk, and decides what comes next.
    fn take_page(&mut self, page: ReplayPage) -> Bytes {
        match page {
            ReplayPage::Events { events, complete } => {
                let mut chunk = BytesMut::new();
                let mut sent = 0;
                let now_ms = now_unix_ms();
                for event in &events {
                    if event.id > self.last_sent {
                        // An expired notification is passed over, never sent.
                        if !event.is_expired(now_ms) {
                            encode::put_event(&mut chunk, Some(event.id), event.name, &event.data);
                            sent += 1;
                        }
                        self.last_sent = event.id;
                    }
                }
                self.metrics.events_replayed.inc_by(sent);
                self.phase = if complete || events.is_empty() {
                    Phase::Live
                } else {
                    self.fetch_after(self.last_sent)
                };
                chunk.freeze()
            }
            ReplayPage::Gone { reason, oldest } => {
                // Go on from the newest id at admission: everything after it arrives live. (The
                // client's own id may be one we never issued, so it is no bound here; and any
                // page already replayed held ids at or below this one.)
                let newest = self.admission.dispatched_through;
                self.last_sent = newest;
                self.metrics.resyncs.inc();
                self.phase = Phase::Live;
                let data = serde_json::json!({
                    "reason": reason,
                    "oldestId": oldest.map(|id| id.to_string()),
                });
                encode::event(Some(newest), EventName::Resync, &data.to_string())
            }
        }
    }
}

/// The monotonic instant at which Unix time reaches `unix_secs`.
fn instant_of(unix_secs: u64) -> tokio::time::Instant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = std::time::Duration::from_secs(unix_secs).saturating_sub(now_unix);
    let now = tokio::time::Instant::now();
    // A token may claim to live for ever; a century is as good.
    now.checked_add(left)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 24 * 3600))
}

impl EventStream {
    /// When the token has expired (once the preamble is out, so the client always learns its
    /// `retry:` and sees `connected` first), asks the outbox to end the stream: its last word
    /// is then `reauth`. No leeway on an open stream.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) {
        let Some(expiry) = &mut self.expiry else {
            return;
        };
        let started = !matches!(self.phase, Phase::Preamble(..) | Phase::Ended);
        if started && expiry.as_mut().poll(cx).is_ready() {
            self.expiry = None;
            self.admission.outbox.close(Closing::TokenExpired);
            // A replay in progress is abandoned: the client reconnects from its last id.
            self.phase = Phase::Live;
        }
    }

    /// The next live frame, or the end the outbox decided.
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAborted>>> {
        // The outbox holds back what this stream has sent already.
        let closing = match ready!(self.admission.outbox.poll_pop(cx, self.last_sent)) {
            Popped::Frame(frame) => {
                if let Some(id) = frame.id {
                    self.last_sent = id;
                }
                return Poll::Ready(Some(Ok(frame.bytes)));
            }
            Popped::Closed(closing) => closing,
        };
        self.phase = Phase::Ended;
        Poll::Ready(match closing {
            Closing::Drain => None,
            Closing::SlowReader => Some(Err(StreamAborted::SlowReader)),
            Closing::TokenExpired => {
                let data = r#"{"reason":"token expired"}"#;
                Some(Ok(encode::event(None, EventName::Reauth, data)))
            }
        })
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, StreamAborted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.poll_expiry(cx);
        loop {
            match &mut this.phase {
                Phase::Preamble(preamble, start) => {
                    let preamble = std::mem::take(preamble);
                    this.phase = match *start {
                        Start::Live => Phase::Live,
                        Start::After(after) => this.fetch_after(after),
                    };
                    this.admission.outbox.touch();
                    return Poll::Ready(Some(Ok(preamble)));
                }
                Phase::Replaying(fetch) => match ready!(fetch.as_mut().poll(cx)) {
                    Ok(page) => {
                        let chunk = this.take_page(page);
                        if !chunk.is_empty() {
                            this.admission.outbox.touch();
                            return Poll::Ready(Some(Ok(chunk)));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, user = %this.user, "replay failed; closing the stream");
                        this.phase = Phase::Ended;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                },
                Phase::Live => return this.poll_live(cx),
                Phase::Ended => return Poll::Ready(None),
            }
        }
    }
}
