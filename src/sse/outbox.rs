//! The queue between the hub and one open stream. The hub pushes already-encoded frames; the
//! stream pops them when the socket can take more. It is bounded by frame count and by bytes:
//! when a reader falls that far behind, the queue is emptied and the stream is aborted, so a
//! slow reader costs at most the bound, and its client reconnects and replays from the log.
//!
//! A stream whose connection can be written without blocking (herald's own HTTP/1 path)
//! attaches it as a [`DirectSink`]. While such a stream is live, has nothing queued and has
//! finished its own writes, the outbox is *armed*: a push writes the frame to the socket at
//! once, on the pushing thread, instead of queueing it and waking the stream's task. That is
//! the whole cost of a delivery to an idle stream: one lock and one `write`. What a full
//! socket does not take is kept as `unwritten` wire bytes, the outbox disarms, and the stream
//! writes them before anything else. Every write happens under this outbox's lock, so the two
//! writers never interleave.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
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
    /// Queued for the stream, or written to its socket already.
    Queued,
    /// The outbox was already closing, or the stream had sent this id; nothing to do.
    Ignored,
    /// This push overflowed the bounds and closed the stream as a slow reader.
    Overflowed,
}

/// A stream's connection as the outbox may write it: frames go out framed as the connection
/// needs (chunked or not), without ever blocking.
pub trait DirectSink: Send + Sync {
    /// Writes `frame` now. Answers the framed bytes the socket did not take (nothing when it
    /// took all), or the error that ended the connection.
    fn write_now(&self, frame: &[u8]) -> io::Result<Option<Bytes>>;
}

/// The outbox of the event stream a response carries, in the response's extensions, for a
/// connection writer that can attach a [`DirectSink`] (herald's HTTP/1 path; hyper ignores it).
#[derive(Clone)]
pub struct LiveOutbox(pub Arc<Outbox>);

/// The per-stream queue. A std-style mutex suffices: a critical section is a few pointer moves
/// or one non-blocking `write`, and never awaits.
pub struct Outbox {
    /// Unique within this process; used to remove the stream from the hub's index.
    pub stream_id: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("stream_id", &self.stream_id)
            .finish_non_exhaustive()
    }
}

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
    /// The newest id this stream has sent (by replay, by its task or directly): frames at or
    /// below it are never sent again.
    sent_through: EventId,
    /// The stream's connection, if it can be written from here.
    sink: Option<Arc<dyn DirectSink>>,
    /// Whether pushes write to `sink` now (see the module docs).
    armed: bool,
    /// Framed bytes of a direct write the socket did not take all of; the stream writes them
    /// before anything else.
    unwritten: Option<Bytes>,
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
                sent_through: EventId::ZERO,
                sink: None,
                armed: false,
                unwritten: None,
            }),
        }
    }

    /// Queues a frame for the stream (or writes it at once when armed), or closes the stream
    /// as a slow reader when the bounds are hit.
    pub fn push(&self, frame: &Frame, bounds: QueueBounds) -> Pushed {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return Pushed::Ignored;
        }
        if let Some(id) = frame.id {
            if id <= state.sent_through {
                return Pushed::Ignored;
            }
        }
        if state.armed {
            state.write_directly(frame);
            return Pushed::Queued;
        }
        if state.frames.len() >= bounds.max_frames
            || state.queued_bytes + frame.bytes.len() > bounds.max_bytes
        {
            state.frames = VecDeque::new();
            state.queued_bytes = 0;
            state.closing = Some(Closing::SlowReader);
            state.armed = false;
            wake(&mut state);
            return Pushed::Overflowed;
        }
        state.queued_bytes += frame.bytes.len();
        state.frames.push_back(frame.clone());
        wake(&mut state);
        Pushed::Queued
    }

    /// Asks the stream to end after what is queued (drain) or at once (slow reader).
    pub fn close(&self, closing: Closing) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(closing);
        }
        state.armed = false;
        wake(&mut state);
    }

    /// Sends `heartbeat` if the stream has written nothing for `idle`.
    pub fn heartbeat_if_idle(&self, now: Instant, idle: Duration, heartbeat: &Bytes) {
        let mut state = self.state.lock();
        if state.closing.is_some()
            || !state.frames.is_empty()
            || now.saturating_duration_since(state.last_output) < idle
        {
            return;
        }
        let frame = Frame {
            id: None,
            bytes: heartbeat.clone(),
        };
        if state.armed {
            state.write_directly(&frame);
        } else {
            state.queued_bytes += frame.bytes.len();
            state.frames.push_back(frame);
            wake(&mut state);
        }
    }

    /// Takes the next frame to write, or learns that the stream must end, or parks the task.
    /// `sent_through` is the newest id the stream has written itself (its replay): nothing at
    /// or below it comes out. Call it only once the stream's own writes are done: with nothing
    /// to take, an outbox with a sink arms.
    pub fn poll_pop(&self, cx: &mut Context<'_>, sent_through: EventId) -> Poll<Popped> {
        let mut state = self.state.lock();
        state.sent_through = state.sent_through.max(sent_through);
        if state.closing == Some(Closing::SlowReader) {
            return Poll::Ready(Popped::Closed(Closing::SlowReader));
        }
        if state.unwritten.is_some() {
            // The stream must write the end of a direct write first (`take_unwritten`).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while let Some(frame) = state.frames.pop_front() {
            state.queued_bytes -= frame.bytes.len();
            if state.frames.is_empty() && state.frames.capacity() > 16 {
                // A burst is over: give back its memory so an idle stream stays small.
                state.frames = VecDeque::new();
            }
            if let Some(id) = frame.id {
                if id <= state.sent_through {
                    continue;
                }
                state.sent_through = id;
            }
            state.last_output = Instant::now();
            return Poll::Ready(Popped::Frame(frame));
        }
        if let Some(closing) = state.closing {
            return Poll::Ready(Popped::Closed(closing));
        }
        state.armed = state.sink.is_some();
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Lets pushes write to `sink` directly whenever the stream is armed.
    pub fn attach(&self, sink: Arc<dyn DirectSink>) {
        self.state.lock().sink = Some(sink);
    }

    /// Ends direct writes for good and drops the sink; the stream then owns its socket alone.
    /// Any `unwritten` bytes are dropped: the connection is ending.
    pub fn detach(&self) {
        let mut state = self.state.lock();
        state.armed = false;
        state.unwritten = None;
        state.sink = None;
    }

    /// Stops direct writes so the stream may write something of its own next (its `reauth`).
    /// Answers `false` while a direct write's end is still unwritten: the stream must take and
    /// write that first (`take_unwritten`), then ask again.
    pub fn pause_direct(&self) -> bool {
        let mut state = self.state.lock();
        state.armed = false;
        state.unwritten.is_none()
    }

    /// The framed end of a direct write that the socket did not take, for the stream to write.
    pub fn take_unwritten(&self) -> Option<Bytes> {
        self.state.lock().unwritten.take()
    }

    /// Notes that the stream wrote something outside the queue (its preamble or a replay).
    pub fn touch(&self) {
        self.state.lock().last_output = Instant::now();
    }
}

impl State {
    /// One frame to the armed sink. What the socket does not take stays `unwritten` and the
    /// stream is woken to write it; a failed connection is left to the stream to notice.
    fn write_directly(&mut self, frame: &Frame) {
        let Some(sink) = &self.sink else {
            return;
        };
        let outcome = sink.write_now(&frame.bytes);
        if let Some(id) = frame.id {
            self.sent_through = id;
        }
        self.last_output = Instant::now();
        match outcome {
            Ok(None) => {}
            Ok(Some(rest)) => {
                self.unwritten = Some(rest);
                self.armed = false;
                wake(self);
            }
            Err(_) => {
                // The client went away; its task learns so from the socket and ends. It
                // reconnects (if it ever does) from the last event it fully received.
                self.armed = false;
                wake(self);
            }
        }
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
        outbox.poll_pop(&mut Context::from_waker(&waker), EventId::ZERO)
    }

    const BOUNDS: QueueBounds = QueueBounds {
        max_frames: 4,
        max_bytes: 100,
    };

    /// A socket that takes at most `room` more bytes, then would block; or fails.
    struct TestSink {
        written: Mutex<Vec<u8>>,
        room: Mutex<usize>,
        fail: bool,
    }

    impl TestSink {
        fn with_room(room: usize) -> Arc<Self> {
            Arc::new(Self {
                written: Mutex::new(Vec::new()),
                room: Mutex::new(room),
                fail: false,
            })
        }
    }

    impl DirectSink for TestSink {
        fn write_now(&self, frame: &[u8]) -> io::Result<Option<Bytes>> {
            if self.fail {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let mut room = self.room.lock();
            let taken = frame.len().min(*room);
            *room -= taken;
            self.written.lock().extend_from_slice(&frame[..taken]);
            Ok((taken < frame.len()).then(|| Bytes::copy_from_slice(&frame[taken..])))
        }
    }

    fn named(id: u64, text: &str) -> Frame {
        Frame {
            id: Some(EventId::from_seq(id)),
            bytes: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    #[test]
    fn frames_come_out_in_order_then_the_drain_close() {
        let outbox = Outbox::new(1);
        assert_eq!(outbox.push(&frame(1, 10), BOUNDS), Pushed::Queued);
        assert_eq!(outbox.push(&frame(2, 10), BOUNDS), Pushed::Queued);
        outbox.close(Closing::Drain);
        assert_eq!(outbox.push(&frame(3, 10), BOUNDS), Pushed::Ignored);
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
    fn what_the_stream_sent_already_never_comes_out_again() {
        let outbox = Outbox::new(1);
        for id in [3, 4, 5] {
            outbox.push(&frame(id, 1), BOUNDS);
        }
        let waker = noop_waker();
        let popped = outbox.poll_pop(&mut Context::from_waker(&waker), EventId::from_seq(4));
        assert!(
            matches!(popped, Poll::Ready(Popped::Frame(f)) if f.id == Some(EventId::from_seq(5)))
        );
        assert_eq!(outbox.push(&frame(5, 1), BOUNDS), Pushed::Ignored);
        assert_eq!(outbox.state.lock().sent_through, EventId::from_seq(5));
    }

    #[test]
    fn overflow_by_count_or_bytes_closes_as_slow_reader_and_frees_the_queue() {
        let bounds = QueueBounds {
            max_frames: 2,
            max_bytes: 25,
        };
        let by_count = Outbox::new(1);
        by_count.push(&frame(1, 1), bounds);
        by_count.push(&frame(2, 1), bounds);
        assert_eq!(by_count.push(&frame(3, 1), bounds), Pushed::Overflowed);
        assert!(matches!(
            pop(&by_count),
            Poll::Ready(Popped::Closed(Closing::SlowReader))
        ));

        let by_bytes = Outbox::new(2);
        by_bytes.push(&frame(1, 20), bounds);
        assert_eq!(by_bytes.push(&frame(2, 6), bounds), Pushed::Overflowed);
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

    #[test]
    fn an_armed_outbox_writes_pushes_to_the_socket_at_once() {
        let outbox = Outbox::new(1);
        let sink = TestSink::with_room(1000);
        outbox.attach(sink.clone());
        outbox.push(&named(1, "one;"), BOUNDS);
        assert_eq!(
            &sink.written.lock()[..],
            b"",
            "not armed until the stream waits"
        );
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(f)) if &f.bytes[..] == b"one;"));
        assert!(pop(&outbox).is_pending(), "armed now");
        for (id, text) in [(2, "two;"), (3, "three;")] {
            assert_eq!(outbox.push(&named(id, text), BOUNDS), Pushed::Queued);
        }
        outbox.heartbeat_if_idle(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(30),
            &Bytes::from_static(b"beat;"),
        );
        assert_eq!(&sink.written.lock()[..], b"two;three;beat;");
        assert_eq!(outbox.push(&named(3, "again"), BOUNDS), Pushed::Ignored);
        assert_eq!(outbox.state.lock().sent_through, EventId::from_seq(3));
        assert!(pop(&outbox).is_pending(), "nothing was queued");
    }

    #[test]
    fn what_a_full_socket_does_not_take_is_written_by_the_stream_before_anything_else() {
        let outbox = Outbox::new(1);
        let sink = TestSink::with_room(6);
        outbox.attach(sink.clone());
        assert!(pop(&outbox).is_pending());
        outbox.push(&named(1, "first-frame;"), BOUNDS);
        outbox.push(&named(2, "second;"), BOUNDS);
        assert_eq!(&sink.written.lock()[..], b"first-");
        assert!(
            pop(&outbox).is_pending(),
            "the rest of the first comes first"
        );
        assert!(!outbox.pause_direct(), "an unwritten end is pending");
        assert_eq!(outbox.take_unwritten().as_deref(), Some(&b"frame;"[..]));
        assert!(outbox.pause_direct());
        assert!(
            matches!(pop(&outbox), Poll::Ready(Popped::Frame(f)) if &f.bytes[..] == b"second;")
        );
    }

    #[test]
    fn a_closing_or_detached_outbox_writes_nothing_directly() {
        let outbox = Outbox::new(1);
        let sink = TestSink::with_room(1000);
        outbox.attach(sink.clone());
        assert!(pop(&outbox).is_pending());
        outbox.detach();
        outbox.push(&named(1, "queued;"), BOUNDS);
        assert_eq!(&sink.written.lock()[..], b"");
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(_))));

        let draining = Outbox::new(2);
        draining.attach(sink.clone());
        assert!(pop(&draining).is_pending());
        draining.close(Closing::Drain);
        assert_eq!(draining.push(&named(1, "late;"), BOUNDS), Pushed::Ignored);
        assert_eq!(&sink.written.lock()[..], b"");
    }

    #[test]
    fn a_failed_direct_write_disarms_and_leaves_the_end_to_the_stream() {
        let outbox = Outbox::new(1);
        outbox.attach(Arc::new(TestSink {
            written: Mutex::new(Vec::new()),
            room: Mutex::new(0),
            fail: true,
        }));
        assert!(pop(&outbox).is_pending());
        assert_eq!(outbox.push(&named(1, "lost;"), BOUNDS), Pushed::Queued);
        assert!(!outbox.state.lock().armed);
        assert!(outbox.take_unwritten().is_none());
    }
}
