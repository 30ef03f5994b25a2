//! The bounded queue between the hub and one open stream. A reader that falls behind the
//! bounds is cut (its client replays from the log). While a live stream idles, an attached
//! connection is written directly by the pusher, under this outbox's lock, so the two writers
//! never interleave (docs/architecture.md#the-per-stream-queue).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::domain::EventId;
use crate::sse::plain::PlainSocket;

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
    /// The stream's token expired: end at once, after any direct write's unwritten end, with
    /// the stream's own last word (its `reauth`); what is queued is dropped (the log has it).
    TokenExpired,
    /// The server drains: send what is queued, then end the response cleanly.
    Drain,
}

/// What the stream gets when it asks for the next thing to write.
#[derive(Debug)]
pub enum Popped {
    Frame(Frame),
    Closed(Closing),
}

/// What a push of several frames did: how many it took, and whether it cut the stream as a
/// slow reader.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushedFrames {
    pub queued: u64,
    pub overflowed: bool,
}

/// A stream's connection as the outbox may write it: frames go out framed as the connection
/// needs (chunked or not), without ever blocking.
pub trait DirectSink: Send + Sync {
    /// Writes `frame` now. Answers the framed bytes the socket did not take (nothing when it
    /// took all), or the error that ended the connection.
    fn write_now(&self, frame: &[u8]) -> io::Result<Option<Bytes>>;

    /// The sink as a plain socket, when it is one: the outbox then writes it by its descriptor
    /// instead of through [`DirectSink::write_now`], reading nothing of the sink's.
    fn plain(self: Arc<Self>) -> Option<PlainSocket> {
        None
    }
}

/// Marks a response as an event stream, in its extensions: a connection writer writes it
/// frame by frame, and may attach to its outbox, when there is one (a draining node's
/// `retry:`-only answer has none). Writers that cannot attach (hyper) ignore it.
#[derive(Clone)]
pub struct EventStreamResponse(pub Option<Arc<Outbox>>);

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
    /// The attached connection, from [`Outbox::attach`] until its guard drops.
    direct: Option<Direct>,
}

/// Direct writes to an attached connection.
struct Direct {
    to: DirectTo,
    /// Whether pushes write directly now (see the module docs).
    armed: bool,
    /// Framed bytes of a direct write the socket did not take all of; the connection writer
    /// writes them before anything else.
    unwritten: Option<Bytes>,
}

/// Where direct writes go.
enum DirectTo {
    /// A plain socket, by its descriptor, without reading the connection's memory.
    Plain(PlainSocket),
    /// Any other connection (TLS), through its sink.
    Sink(Arc<dyn DirectSink>),
}

/// A connection attached to an outbox; dropping it ends direct writes for good.
pub struct Attached {
    outbox: Arc<Outbox>,
}

impl Attached {
    /// The framed end of a direct write that the socket did not take, to be written before
    /// anything the stream yields next.
    pub fn take_unwritten(&self) -> Option<Bytes> {
        let mut state = self.outbox.state.lock();
        state.direct.as_mut()?.unwritten.take()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // The connection is ending: whatever is unwritten goes with it.
        self.outbox.state.lock().direct = None;
    }
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
                direct: None,
            }),
        }
    }

    /// Lets pushes write to `sink` directly whenever the stream is armed, until the returned
    /// guard drops.
    pub fn attach(self: &Arc<Self>, sink: Arc<dyn DirectSink>) -> Attached {
        let to = match sink.clone().plain() {
            Some(socket) => DirectTo::Plain(socket),
            None => DirectTo::Sink(sink),
        };
        self.state.lock().direct = Some(Direct {
            to,
            armed: false,
            unwritten: None,
        });
        Attached {
            outbox: self.clone(),
        }
    }

    /// Queues `frames` (in id order) for the stream, or, when armed, writes them at once in one
    /// write; or closes the stream as a slow reader when they overrun the bounds. Frames the
    /// stream has sent already are skipped.
    pub fn push_frames<'a>(
        &self,
        frames: impl IntoIterator<Item = &'a Frame>,
        bounds: QueueBounds,
    ) -> PushedFrames {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return PushedFrames::default();
        }
        let sent_through = state.sent_through;
        let mut fresh = frames
            .into_iter()
            .filter(|frame| frame.id.is_none_or(|id| id > sent_through));
        let Some(first) = fresh.next() else {
            return PushedFrames::default();
        };
        if state.is_armed() {
            let Some(second) = fresh.next() else {
                state.write_directly(&first.bytes, first.id);
                return PushedFrames {
                    queued: 1,
                    overflowed: false,
                };
            };
            // Several frames (a backlog the delivery threads merged, or a group of events): one
            // write for all of them, as one chunk.
            let mut gathered = Vec::with_capacity(first.bytes.len() + second.bytes.len());
            let (mut queued, mut newest) = (0, None);
            for frame in [first, second].into_iter().chain(fresh) {
                gathered.extend_from_slice(&frame.bytes);
                queued += 1;
                newest = frame.id.or(newest);
            }
            state.write_directly(&gathered, newest);
            return PushedFrames {
                queued,
                overflowed: false,
            };
        }
        let mut queued = 0;
        for frame in std::iter::once(first).chain(fresh) {
            if state.frames.len() >= bounds.max_frames
                || state.queued_bytes + frame.bytes.len() > bounds.max_bytes
            {
                state.frames = VecDeque::new();
                state.queued_bytes = 0;
                state.close(Closing::SlowReader);
                return PushedFrames {
                    queued,
                    overflowed: true,
                };
            }
            state.queued_bytes += frame.bytes.len();
            state.frames.push_back(frame.clone());
            queued += 1;
        }
        wake(&mut state);
        PushedFrames {
            queued,
            overflowed: false,
        }
    }

    /// Asks the stream to end: after what is queued (drain) or at once (the others).
    pub fn close(&self, closing: Closing) {
        self.state.lock().close(closing);
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
        if state.is_armed() {
            state.write_directly(&frame.bytes, None);
        } else {
            state.queued_bytes += frame.bytes.len();
            state.frames.push_back(frame);
            wake(&mut state);
        }
    }

    /// Takes the next frame to write, or learns that the stream must end, or parks the task.
    /// `sent_through` is the newest id the stream has written itself (its replay): nothing at
    /// or below it comes out. Call it only once the stream's own writes are done: with nothing
    /// to take, an attached outbox arms.
    pub fn poll_pop(&self, cx: &mut Context<'_>, sent_through: EventId) -> Poll<Popped> {
        let mut state = self.state.lock();
        state.sent_through = state.sent_through.max(sent_through);
        if state.closing == Some(Closing::SlowReader) {
            return Poll::Ready(Popped::Closed(Closing::SlowReader));
        }
        if state.direct.as_ref().is_some_and(|d| d.unwritten.is_some()) {
            // The connection writer takes the end of a direct write first
            // (`Attached::take_unwritten`), then polls again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if state.closing == Some(Closing::TokenExpired) {
            return Poll::Ready(Popped::Closed(Closing::TokenExpired));
        }
        if let Some(frame) = state.pop_unsent() {
            return Poll::Ready(Popped::Frame(frame));
        }
        if let Some(closing) = state.closing {
            return Poll::Ready(Popped::Closed(closing));
        }
        if let Some(direct) = &mut state.direct {
            direct.armed = true;
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

impl State {
    fn is_armed(&self) -> bool {
        self.direct.as_ref().is_some_and(|direct| direct.armed)
    }

    fn close(&mut self, closing: Closing) {
        if self.closing.is_none() {
            self.closing = Some(closing);
        }
        if let Some(direct) = &mut self.direct {
            direct.armed = false;
        }
        wake(self);
    }

    /// The oldest queued frame the stream has not sent yet.
    fn pop_unsent(&mut self) -> Option<Frame> {
        while let Some(frame) = self.frames.pop_front() {
            self.queued_bytes -= frame.bytes.len();
            if self.frames.is_empty() && self.frames.capacity() > 16 {
                // A burst is over: give back its memory so an idle stream stays small.
                self.frames = VecDeque::new();
            }
            if let Some(id) = frame.id {
                if id <= self.sent_through {
                    continue;
                }
                self.sent_through = id;
            }
            self.last_output = Instant::now();
            return Some(frame);
        }
        None
    }

    /// Frames to the armed sink, the newest of them `newest` (`None` for a heartbeat). What the
    /// socket does not take stays `unwritten` and the stream is woken to write it; a failed
    /// connection is left to the stream to notice.
    fn write_directly(&mut self, frames: &[u8], newest: Option<EventId>) {
        let Some(direct) = &mut self.direct else {
            return;
        };
        let outcome = match &direct.to {
            DirectTo::Plain(socket) => socket.write_now(frames),
            DirectTo::Sink(sink) => sink.write_now(frames),
        };
        if let Some(id) = newest {
            self.sent_through = id;
        }
        self.last_output = Instant::now();
        match outcome {
            Ok(None) => return,
            Ok(Some(rest)) => direct.unwritten = Some(rest),
            // The client went away; its task learns so from the socket and ends. It
            // reconnects (if it ever does) from the last event it fully received.
            Err(_) => {}
        }
        direct.armed = false;
        wake(self);
    }
}

fn wake(state: &mut State) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

#[cfg(test)]
impl Outbox {
    /// Takes out every frame queued, as their events' ids, in order (a heartbeat ends the list):
    /// what the stream's task would write next, for tests of whoever pushes.
    pub fn take_ids(&self) -> Vec<u64> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        std::iter::from_fn(|| match self.poll_pop(&mut cx, EventId::ZERO) {
            Poll::Ready(Popped::Frame(frame)) => frame.id.map(|id| id.major),
            _ => None,
        })
        .collect()
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

    /// What one frame's push did.
    #[derive(Debug, PartialEq, Eq)]
    enum Pushed {
        Queued,
        Ignored,
        Overflowed,
    }

    fn push(outbox: &Outbox, frame: &Frame, bounds: QueueBounds) -> Pushed {
        match outbox.push_frames([frame], bounds) {
            PushedFrames {
                overflowed: true, ..
            } => Pushed::Overflowed,
            PushedFrames { queued: 0, .. } => Pushed::Ignored,
            PushedFrames { .. } => Pushed::Queued,
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
        /// Each write's bytes, as handed over.
        writes: Mutex<Vec<Vec<u8>>>,
        room: Mutex<usize>,
        fail: bool,
    }

    impl TestSink {
        fn with_room(room: usize) -> Arc<Self> {
            Arc::new(Self {
                written: Mutex::new(Vec::new()),
                writes: Mutex::new(Vec::new()),
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
            self.writes.lock().push(frame.to_vec());
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
        assert_eq!(push(&outbox, &frame(1, 10), BOUNDS), Pushed::Queued);
        assert_eq!(push(&outbox, &frame(2, 10), BOUNDS), Pushed::Queued);
        outbox.close(Closing::Drain);
        assert_eq!(push(&outbox, &frame(3, 10), BOUNDS), Pushed::Ignored);
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
            push(&outbox, &frame(id, 1), BOUNDS);
        }
        let waker = noop_waker();
        let popped = outbox.poll_pop(&mut Context::from_waker(&waker), EventId::from_seq(4));
        assert!(
            matches!(popped, Poll::Ready(Popped::Frame(f)) if f.id == Some(EventId::from_seq(5)))
        );
        assert_eq!(push(&outbox, &frame(5, 1), BOUNDS), Pushed::Ignored);
        assert_eq!(outbox.state.lock().sent_through, EventId::from_seq(5));
    }

    #[test]
    fn overflow_by_count_or_bytes_closes_as_slow_reader_and_frees_the_queue() {
        let bounds = QueueBounds {
            max_frames: 2,
            max_bytes: 25,
        };
        let by_count = Outbox::new(1);
        push(&by_count, &frame(1, 1), bounds);
        push(&by_count, &frame(2, 1), bounds);
        assert_eq!(push(&by_count, &frame(3, 1), bounds), Pushed::Overflowed);
        assert!(matches!(
            pop(&by_count),
            Poll::Ready(Popped::Closed(Closing::SlowReader))
        ));

        let by_bytes = Outbox::new(2);
        push(&by_bytes, &frame(1, 20), bounds);
        assert_eq!(push(&by_bytes, &frame(2, 6), bounds), Pushed::Overflowed);
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
        let outbox = Arc::new(Outbox::new(1));
        let sink = TestSink::with_room(1000);
        let _attached = outbox.attach(sink.clone());
        push(&outbox, &named(1, "one;"), BOUNDS);
        assert_eq!(
            &sink.written.lock()[..],
            b"",
            "not armed until the stream waits"
        );
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(f)) if &f.bytes[..] == b"one;"));
        assert!(pop(&outbox).is_pending(), "armed now");
        for (id, text) in [(2, "two;"), (3, "three;")] {
            assert_eq!(push(&outbox, &named(id, text), BOUNDS), Pushed::Queued);
        }
        outbox.heartbeat_if_idle(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(30),
            &Bytes::from_static(b"beat;"),
        );
        assert_eq!(&sink.written.lock()[..], b"two;three;beat;");
        assert_eq!(push(&outbox, &named(3, "again"), BOUNDS), Pushed::Ignored);
        assert_eq!(outbox.state.lock().sent_through, EventId::from_seq(3));
        assert!(pop(&outbox).is_pending(), "nothing was queued");
    }

    #[test]
    fn what_a_full_socket_does_not_take_is_written_by_the_stream_before_anything_else() {
        let outbox = Arc::new(Outbox::new(1));
        let sink = TestSink::with_room(6);
        let attached = outbox.attach(sink.clone());
        assert!(pop(&outbox).is_pending());
        push(&outbox, &named(1, "first-frame;"), BOUNDS);
        push(&outbox, &named(2, "second;"), BOUNDS);
        assert_eq!(&sink.written.lock()[..], b"first-");
        assert!(
            pop(&outbox).is_pending(),
            "the rest of the first comes first"
        );
        assert_eq!(attached.take_unwritten().as_deref(), Some(&b"frame;"[..]));
        assert!(
            matches!(pop(&outbox), Poll::Ready(Popped::Frame(f)) if &f.bytes[..] == b"second;")
        );
    }

    #[test]
    fn an_expired_token_ends_the_stream_after_the_unwritten_end_and_before_the_queue() {
        let outbox = Arc::new(Outbox::new(1));
        let sink = TestSink::with_room(6);
        let attached = outbox.attach(sink.clone());
        assert!(pop(&outbox).is_pending());
        push(&outbox, &named(1, "first-frame;"), BOUNDS);
        push(&outbox, &named(2, "queued;"), BOUNDS);
        outbox.close(Closing::TokenExpired);
        assert_eq!(push(&outbox, &named(3, "late;"), BOUNDS), Pushed::Ignored);
        assert!(pop(&outbox).is_pending(), "the unwritten end goes first");
        assert_eq!(attached.take_unwritten().as_deref(), Some(&b"frame;"[..]));
        assert!(matches!(
            pop(&outbox),
            Poll::Ready(Popped::Closed(Closing::TokenExpired))
        ));
        assert_eq!(
            &sink.written.lock()[..],
            b"first-",
            "nothing direct after the close"
        );
    }

    #[test]
    fn a_closing_or_detached_outbox_writes_nothing_directly() {
        let outbox = Arc::new(Outbox::new(1));
        let sink = TestSink::with_room(1000);
        let attached = outbox.attach(sink.clone());
        assert!(pop(&outbox).is_pending());
        drop(attached);
        push(&outbox, &named(1, "queued;"), BOUNDS);
        assert_eq!(&sink.written.lock()[..], b"");
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(_))));

        let draining = Arc::new(Outbox::new(2));
        let _attached = draining.attach(sink.clone());
        assert!(pop(&draining).is_pending());
        draining.close(Closing::Drain);
        assert_eq!(push(&draining, &named(1, "late;"), BOUNDS), Pushed::Ignored);
        assert_eq!(&sink.written.lock()[..], b"");
    }

    #[test]
    fn a_failed_direct_write_disarms_and_leaves_the_end_to_the_stream() {
        let outbox = Arc::new(Outbox::new(1));
        let attached = outbox.attach(Arc::new(TestSink {
            written: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
            room: Mutex::new(0),
            fail: true,
        }));
        assert!(pop(&outbox).is_pending());
        assert_eq!(push(&outbox, &named(1, "lost;"), BOUNDS), Pushed::Queued);
        assert!(!outbox.state.lock().is_armed());
        assert!(attached.take_unwritten().is_none());
    }
    #[test]
    fn an_armed_outbox_writes_several_frames_in_one_write_skipping_what_was_sent() {
        let outbox = Arc::new(Outbox::new(1));
        let sink = TestSink::with_room(1000);
        let _attached = outbox.attach(sink.clone());
        push(&outbox, &named(1, "one;"), BOUNDS);
        assert!(matches!(pop(&outbox), Poll::Ready(Popped::Frame(_))));
        assert!(pop(&outbox).is_pending(), "armed now");
        let frames = [named(1, "one;"), named(2, "two;"), named(3, "three;")];
        assert_eq!(
            outbox.push_frames(&frames, BOUNDS),
            PushedFrames {
                queued: 2,
                overflowed: false
            }
        );
        assert_eq!(*sink.writes.lock(), [b"two;three;".to_vec()]);
        assert_eq!(outbox.state.lock().sent_through, EventId::from_seq(3));
        assert_eq!(
            outbox.push_frames(&frames, BOUNDS),
            PushedFrames::default(),
            "all sent already"
        );
        assert_eq!(sink.writes.lock().len(), 1);
    }

    #[test]
    fn several_frames_queue_in_order_until_they_overrun_the_bounds() {
        let queued = Outbox::new(1);
        let frames: Vec<Frame> = (1..=3).map(|id| frame(id, 10)).collect();
        assert_eq!(
            queued.push_frames(&frames, BOUNDS),
            PushedFrames {
                queued: 3,
                overflowed: false
            }
        );
        for want in 1..=3 {
            assert!(
                matches!(pop(&queued), Poll::Ready(Popped::Frame(f)) if f.id == Some(EventId::from_seq(want)))
            );
        }

        let overrun = Outbox::new(2);
        let frames: Vec<Frame> = (1..=5).map(|id| frame(id, 10)).collect();
        assert_eq!(
            overrun.push_frames(&frames, BOUNDS),
            PushedFrames {
                queued: 4,
                overflowed: true
            },
            "four fit the bounds, the fifth cuts the stream"
        );
        assert!(matches!(
            pop(&overrun),
            Poll::Ready(Popped::Closed(Closing::SlowReader))
        ));
    }
}
