//! The queue between the hub and one open stream. The hub pushes already-encoded frames; the
//! stream pops them when the socket can take more. It is bounded by frame count and by bytes:
//! when a reader falls that far behind, the queue is emptied and the stream is aborted, so a
//! slow reader costs at most the bound, and its client reconnects and replays from the log.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::domain::EventId;

/// How far one stream may fall behind before it is closed as a slow reader.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// One encoded frame waiting to be written; `id` is `None` for heartbeats.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<EventId>,
    pub bytes: Bytes,
}

/// Why a stream is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The queue overflowed: abort at once, dropping what is queued (the log still has it).
    SlowReader,
    /// The server drains: send what is queued, then end the response cleanly.
    Drain,
}

/// What the stream gets when it asks for the next thing to write.
#[derive(Debug)]
pub enum Popped {
    Frame(Frame),
    Closed(Closing),
}

/// Whether a push was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The outbox was already closing; the frame was dropped (the log still has it).
    Ignored,
    /// This push overflowed the bounds and closed the stream as a slow reader.
    Overflowed,
}

/// The per-stream queue. A std-style mutex suffices: every critical section is a few pointer
/// moves and never awaits.
#[derive(Debug)]
pub struct Outbox {
    /// Unique within this process; used to remove the stream from the hub's index.
    pub stream_id: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Frames not yet taken by the stream. Empty and unallocated while the stream is idle.
    frames: VecDeque<Frame>,
    /// Sum of `frames[..].bytes.len()`.
    queued_bytes: usize,
    /// The stream's task, parked until a frame or a close arrives.
    waker: Option<Waker>,
    closing: Option<Closing>,
    /// When the stream last took something to write; drives heartbeats.
    last_output: Instant,
}

impl Outbox {
    pub fn new(stream_id: u64) -> Self {
        Self {
            stream_id,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                queued_bytes: 0,
                waker: None,
                closing: None,
                last_output: Instant::now(),
            }),
        }
    }

    /// Queues a frame for the stream, or closes it as a slow reader when the bounds are hit.
    pub fn push(&self, frame: Frame, bounds: QueueBounds) -> Pushed {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return Pushed::Ignored;
        }
        if state.frames.len() >= bounds.max_frames
            || state.queued_bytes + frame.bytes.len() > bounds.max_bytes
        {
            state.frames = VecDeque::new();
            state.queued_bytes = 0;
            state.closing = Some(Closing::SlowReader);
            wake(&mut state);
            return Pushed::Overflowed;
        }
        state.queued_bytes += frame.bytes.len();
        state.frames.push_back(frame);
        wake(&mut state);
        Pushed::Queued
    }

    /// Asks the stream to end after what is queued (drain) or at once (slow reader).
    pub fn close(&self, closing: Closing) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(closing);
        }
        wake(&mut state);
    }

    /// Queues `heartbeat` if the stream has written nothing for `idle`.
    pub fn heartbeat_if_idle(&self, now: Instant, idle: Duration, heartbeat: &Bytes) {
        let mut state = self.state.lock();
        if state.closing.is_none()
            && state.frames.is_empty()
            && now.saturating_duration_since(state.last_output) >= idle
        {
            state.queued_bytes += heartbeat.len();
            state.frames.push_back(Frame {
                id: None,
                bytes: heartbeat.clone(),
            });
            wake(&mut state);
        }
    }

    /// Takes the next frame, or learns that the stream must end, or parks the task.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Popped> {
        let mut state = self.state.lock();
        if state.closing == Some(Closing::SlowReader) {
            return Poll::Ready(Popped::Closed(Closing::SlowReader));
        }
        if let Some(frame) = state.frames.pop_front() {
            state.queued_bytes -= frame.bytes.len();
            state.last_output = Instant::now();
            if state.frames.is_empty() && state.frames.capacity() > 16 {
                // A burst is over: give back its memory so an idle stream stays small.
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Popped::Frame(frame));
        }
        if let Some(closing) = state.closing {
            return Poll::Ready(Popped::Closed(closing));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Notes that the stream wrote something outside the queue (its preamble or a replay).
    pub fn touch(&self) {
        self.state.lock().last_output = Instant::now();
    }
}

fn wake(state: &mut State) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    fn frame(id: u64, len: usize) -> Frame {
        Frame {
            id: Some(EventId::from_seq(id)),
            bytes: Bytes::from(vec![b'x'; len]),
        }
    }

    fn pop(outbox: &Outbox) -> Poll<Popped> {
        let waker = noop_waker();
        outbox.poll_pop(&mut Context::from_waker(&waker))
    }

    #[test]
    fn frames_come_out_in_order_then_the_drain_close() {
        let outbox = Outbox::new(1);
        let bounds = QueueBounds {
            max_frames: 4,
            max_bytes: 100,
        };
        assert_eq!(outbox.push(frame(1, 10), bounds), Pushed::Queued);
        assert_eq!(outbox.push(frame(2, 10), bounds), Pushed::Queued);
        outbox.close(Closing::Drain);
        assert_eq!(outbox.push(frame(3, 10), bounds), Pushed::Ignored);
        for want in [1, 2] {
            match pop(&outbox) {
                Poll::Ready(Popped::Frame(f)) => assert_eq!(f.id, Some(EventId::from_seq(want))),
                other => panic!("expected frame {want}, got {other:?}"),
            }
        }
        assert!(matches!(
            pop(&outbox),
            Poll::Ready(Popped::Closed(Closing::Drain))
        ));
    }

    #[test]
    fn overflow_by_count_or_bytes_closes_as_slow_reader_and_frees_the_queue() {
        let bounds = QueueBounds {
            max_frames: 2,
            max_bytes: 25,
        };
        let by_count = Outbox::new(1);
        by_count.push(frame(1, 1), bounds);
        by_count.push(frame(2, 1), bounds);
        assert_eq!(by_count.push(frame(3, 1), bounds), Pushed::Overflowed);
        assert!(matches!(
            pop(&by_count),
            Poll::Ready(Popped::Closed(Closing::SlowReader))
        ));

        let by_bytes = Outbox::new(2);
        by_bytes.push(frame(1, 20), bounds);
        assert_eq!(by_bytes.push(frame(2, 6), bounds), Pushed::Overflowed);
        assert_eq!(by_bytes.state.lock().queued_bytes, 0);
    }

    #[test]
    fn an_empty_outbox_parks_and_heartbeats_only_when_idle() {
        let outbox = Outbox::new(1);
        assert!(pop(&outbox).is_pending());
        let now = Instant::now();
        outbox.heartbeat_if_idle(now, Duration::from_secs(30), &crate::sse::encode::HEARTBEAT);
        assert!(pop(&outbox).is_pending(), "not idle long enough");
        outbox.heartbeat_if_idle(
            now + Duration::from_secs(31),
            Duration::from_secs(30),
            &crate::sse::encode::HEARTBEAT,
        );
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(f)) if f.id.is_none()));
    }
}
