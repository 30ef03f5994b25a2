//! Who is connected to this node: user -> open streams. The hub encodes each committed event
//! once and settles, under its lock and in id order, exactly the streams that may see it, then
//! hands the pushes to the delivery threads (`fanout`). The newest id it has dispatched tells
//! a new stream where replay ends and live delivery begins (docs/architecture.md#the-write-path).

mod fanout;
mod roster;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use self::fanout::{Deliveries, FanOut};
use self::roster::Roster;
use crate::domain::{EventId, UserId};
use crate::metrics::Metrics;
use crate::sse::encode::{self, HEARTBEAT};
use crate::sse::outbox::{Closing, Frame, Outbox, QueueBounds};
use crate::store::push::Presence;
use crate::store::{Audience, CommittedEvent, EventSink};

/// Connection limits of this node.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub max_streams: usize,
    pub max_streams_per_user: usize,
    pub queue: QueueBounds,
}

/// Why a stream was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("this node holds its maximum of {0} streams")]
    NodeFull(usize),
    #[error("this user already holds the maximum of {0} streams")]
    UserFull(usize),
}

pub struct Hub {
    limits: HubLimits,
    /// The newest id dispatched, for callers that wait until their event went out here.
    dispatched: tokio::sync::watch::Sender<EventId>,
    metrics: Arc<Metrics>,
    /// Open streams: changed only under `state`'s lock, read without it (a broadcast's
    /// dispatch holds the lock a while).
    stream_count: AtomicUsize,
    /// Pushes each dispatched frame to its streams.
    fanout: FanOut,
    /// Every lock holder does only in-memory work (no I/O, no await), so a blocking mutex is
    /// the cheap and correct choice.
    state: Mutex<HubState>,
    /// Told the user whose count of streams here changed, when someone listens (a cluster
    /// node, to keep its part of the cluster-wide presence current).
    presence_changes: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<UserId>>,
}

#[derive(Default)]
struct HubState {
    /// Open streams by user; a user with no stream has no entry.
    streams: HashMap<UserId, Vec<Arc<Outbox>>>,
    /// The same streams in the order they were admitted, which is near the order their sockets
    /// and outboxes were allocated in: a broadcast walks them so, and its writes touch memory
    /// in order rather than scattered; and it takes them a slice at a time, not a stream at a
    /// time (docs/architecture.md#fan-out).
    roster: Roster,
    /// The newest event id dispatched; every event up to it is already committed.
    dispatched_through: EventId,
    /// Events dispatched since start (each counted once, whatever its audience).
    dispatched_events: u64,
    next_stream_id: u64,
}

/// A stream's place in the hub; dropping it removes the stream from the index.
pub struct Admission {
    hub: Arc<Hub>,
    user: UserId,
    pub outbox: Arc<Outbox>,
    /// Events up to here are in the store; later ones will arrive in `outbox`.
    pub dispatched_through: EventId,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.remove(&self.user, self.outbox.stream_id);
    }
}

/// A point-in-time view for `/api/stats`.
#[derive(Debug, Clone, Copy)]
pub struct HubStats {
    pub streams: usize,
    pub users: usize,
    pub dispatched_events: u64,
}

impl Hub {
    /// A hub and its delivery threads; fails only if the threads cannot be started.
    pub fn new(limits: HubLimits, metrics: Arc<Metrics>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            limits,
            dispatched: tokio::sync::watch::Sender::new(EventId::ZERO),
            fanout: FanOut::start(limits.queue, metrics.clone())?,
            metrics,
            stream_count: AtomicUsize::new(0),
            state: Mutex::new(HubState::default()),
            presence_changes: std::sync::OnceLock::new(),
        }))
    }

    /// From now on, every change in a user's count of streams here names that user on
    /// `changes` (once per node; later calls are ignored).
    pub fn report_presence(&self, changes: tokio::sync::mpsc::UnboundedSender<UserId>) {
        let _ = self.presence_changes.set(changes);
    }

    fn presence_changed(&self, user: &UserId) {
        if let Some(changes) = self.presence_changes.get() {
            let _ = changes.send(user.clone());
        }
    }

    /// How many streams `user` has open here.
    pub fn streams_of(&self, user: &UserId) -> usize {
        self.state.lock().streams.get(user).map_or(0, Vec::len)
    }

    /// Adds a stream for `user`, within the node's and the user's limits.
    pub fn admit(self: &Arc<Self>, user: &UserId) -> Result<Admission, AdmitError> {
        let mut state = self.state.lock();
        let total = self.stream_count.load(Ordering::Relaxed);
        if total >= self.limits.max_streams {
            return Err(AdmitError::NodeFull(self.limits.max_streams));
        }
        let held = state.streams.get(user).map_or(0, Vec::len);
        if held >= self.limits.max_streams_per_user {
            return Err(AdmitError::UserFull(self.limits.max_streams_per_user));
        }
        state.next_stream_id += 1;
        let outbox = Arc::new(Outbox::new(state.next_stream_id));
        state
            .streams
            .entry(user.clone())
            .or_default()
            .push(outbox.clone());
        state.roster.insert(outbox.clone());
        self.stream_count.store(total + 1, Ordering::Relaxed);
        self.metrics.streams.set(total as i64 + 1);
        self.presence_changed(user);
        Ok(Admission {
            hub: self.clone(),
            user: user.clone(),
            outbox,
            dispatched_through: state.dispatched_through,
        })
    }

    fn remove(&self, user: &UserId, stream_id: u64) {
        let mut state = self.state.lock();
        let Some(outboxes) = state.streams.get_mut(user) else {
            return;
        };
        let before = outboxes.len();
        outboxes.retain(|outbox| outbox.stream_id != stream_id);
        let removed = before - outboxes.len();
        if outboxes.is_empty() {
            state.streams.remove(user);
        }
        state.roster.remove(stream_id);
        let total = self.stream_count.load(Ordering::Relaxed) - removed;
        self.stream_count.store(total, Ordering::Relaxed);
        self.metrics.streams.set(total as i64);
        if removed > 0 {
            self.presence_changed(user);
        }
    }

    /// Open streams now, without waiting for the lock.
    pub fn stream_count(&self) -> usize {
        self.stream_count.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> HubStats {
        let state = self.state.lock();
        HubStats {
            streams: self.stream_count(),
            users: state.streams.len(),
            dispatched_events: state.dispatched_events,
        }
    }

    /// Waits until the event `id` has been dispatched to this node's streams, so that a `201`
    /// means "sent here" on every backend (with Redis, this node's reader dispatches it). Gives
    /// up after a while: the event is stored either way and will go out.
    pub async fn wait_dispatched(&self, id: EventId) {
        if *self.dispatched.borrow() >= id {
            return;
        }
        let mut dispatched = self.dispatched.subscribe();
        let reached = dispatched.wait_for(|newest| *newest >= id);
        let _ = tokio::time::timeout(Duration::from_secs(2), reached).await;
    }

    /// Sends a heartbeat to every stream that has been quiet for `idle`.
    pub fn send_heartbeats(&self, idle: Duration) {
        let slices = self.state.lock().roster.slices();
        self.fanout.heartbeat(slices, idle, &HEARTBEAT);
    }

    /// Every open stream, in admission order: for the drain to close one by one.
    pub fn all_outboxes(&self) -> Vec<Arc<Outbox>> {
        self.state.lock().roster.iter().cloned().collect()
    }

    /// Ends every stream whose outbox is in `outboxes`, spread evenly over `window`.
    pub async fn close_spread(outboxes: Vec<Arc<Outbox>>, window: Duration) {
        if outboxes.is_empty() {
            return;
        }
        let step = window / outboxes.len() as u32;
        let mut ticks = tokio::time::interval(step.max(Duration::from_micros(50)));
        for outbox in outboxes {
            ticks.tick().await;
            outbox.close(Closing::Drain);
        }
    }
}

impl EventSink for Hub {
    fn resume_after(&self, newest: EventId) {
        let mut state = self.state.lock();
        state.dispatched_through = state.dispatched_through.max(newest);
        self.dispatched.send_replace(state.dispatched_through);
    }

    fn dispatch(&self, events: &[CommittedEvent]) {
        if events.is_empty() {
            return;
        }
        // Encode outside the lock, once per event.
        let frames: Vec<Frame> = events
            .iter()
            .map(|event| Frame {
                id: Some(event.id),
                bytes: encode::event(Some(event.id), event.name, &event.data),
            })
            .collect();
        let everyone = events
            .iter()
            .all(|event| matches!(event.audience, Audience::Everyone));
        let mut deliveries = Deliveries::for_frames(frames.len());
        let mut state = self.state.lock();
        debug_assert!(
            events
                .first()
                .is_some_and(|e| e.id > state.dispatched_through)
                && events.windows(2).all(|pair| pair[0].id < pair[1].id),
            "ids must increase"
        );
        // Who receives what is settled here, under the lock: a stream admitted from now on
        // replays these events from the store, and one admitted before gets them pushed.
        if let Some(newest) = events.last() {
            state.dispatched_through = newest.id;
            self.dispatched.send_replace(newest.id);
        }
        state.dispatched_events += events.len() as u64;
        if everyone {
            // Every stream gets every frame: the roster's slices are the list.
            let slices = state.roster.slices();
            drop(state);
            self.metrics.events_dispatched.inc_by(events.len() as u64);
            self.fanout.deliver_to_all(frames, slices);
            return;
        }
        for (frame, event) in events.iter().enumerate() {
            let mut add = |outbox: &Arc<Outbox>| deliveries.add(frame, outbox);
            match &event.audience {
                Audience::User(user) => {
                    if let Some(outboxes) = state.streams.get(user) {
                        outboxes.iter().for_each(&mut add);
                    }
                }
                Audience::Everyone => state.roster.iter().for_each(&mut add),
            }
        }
        drop(state);
        self.metrics.events_dispatched.inc_by(events.len() as u64);
        self.fanout.deliver(frames, deliveries);
    }
}

impl Presence for Hub {
    fn streams_here(&self, user: &UserId) -> usize {
        self.streams_of(user)
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use futures::task::noop_waker;

    use super::*;
    use crate::domain::EventName;
    use crate::sse::outbox::Popped;

    fn hub(max_streams: usize, per_user: usize) -> Arc<Hub> {
        Hub::new(
            HubLimits {
                max_streams,
                max_streams_per_user: per_user,
                queue: QueueBounds {
                    max_frames: 8,
                    max_bytes: 1 << 20,
                },
            },
            Arc::new(Metrics::new()),
        )
        .expect("delivery threads")
    }

    /// Dispatches and waits until the delivery threads have pushed everything.
    fn dispatch(hub: &Hub, events: &[CommittedEvent]) {
        hub.dispatch(events);
        hub.fanout.flush();
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid user")
    }

    fn event(id: u64, audience: Audience) -> CommittedEvent {
        CommittedEvent {
            id: EventId::from_seq(id),
            audience,
            name: EventName::Notification,
            data: format!("{{\"n\":{id}}}"),
        }
    }

    fn pop(admission: &Admission) -> Option<Frame> {
        let waker = noop_waker();
        match admission
            .outbox
            .poll_pop(&mut Context::from_waker(&waker), EventId::ZERO)
        {
            Poll::Ready(Popped::Frame(frame)) => Some(frame),
            Poll::Ready(Popped::Closed(closing)) => panic!("closed: {closing:?}"),
            Poll::Pending => None,
        }
    }

    #[test]
    fn an_event_is_encoded_once_and_its_bytes_shared_by_every_receiving_stream() {
        let hub = hub(10, 10);
        let streams: Vec<Admission> = (0..3).map(|_| hub.admit(&user("ann")).unwrap()).collect();
        dispatch(&hub, &[event(1, Audience::User(user("ann")))]);
        let frames: Vec<Frame> = streams.iter().map(|s| pop(s).expect("frame")).collect();
        let first = frames[0].bytes.as_ptr();
        assert!(
            frames.iter().all(|f| f.bytes.as_ptr() == first),
            "one buffer, shared"
        );
        assert_eq!(
            &frames[0].bytes[..],
            b"id: 1\nevent: notification\ndata: {\"n\":1}\n\n"
        );
    }

    #[test]
    fn a_users_event_reaches_only_that_users_streams_and_announcements_reach_all() {
        let hub = hub(10, 10);
        let ann = hub.admit(&user("ann")).unwrap();
        let bob = hub.admit(&user("bob")).unwrap();
        dispatch(
            &hub,
            &[
                event(1, Audience::User(user("ann"))),
                event(2, Audience::Everyone),
            ],
        );
        assert_eq!(pop(&ann).and_then(|f| f.id), Some(EventId::from_seq(1)));
        assert_eq!(pop(&ann).and_then(|f| f.id), Some(EventId::from_seq(2)));
        assert_eq!(pop(&bob).and_then(|f| f.id), Some(EventId::from_seq(2)));
        assert!(pop(&bob).is_none());
        assert_eq!(hub.metrics.events_delivered.get(), 3);
    }

    #[test]
    fn admission_records_the_newest_dispatched_id_and_dropping_frees_the_place() {
        let hub = hub(2, 1);
        hub.resume_after(EventId::from_seq(40));
        let first = hub.admit(&user("ann")).unwrap();
        assert_eq!(first.dispatched_through, EventId::from_seq(40));
        assert_eq!(hub.admit(&user("ann")).err(), Some(AdmitError::UserFull(1)));
        let _second = hub.admit(&user("bob")).unwrap();
        assert_eq!(hub.admit(&user("cat")).err(), Some(AdmitError::NodeFull(2)));
        dispatch(&hub, &[event(41, Audience::Everyone)]);
        drop(first);
        let again = hub.admit(&user("ann")).unwrap();
        assert_eq!(again.dispatched_through, EventId::from_seq(41));
        let stats = hub.stats();
        assert_eq!(
            (stats.streams, stats.users, stats.dispatched_events),
            (2, 2, 1)
        );
    }

    #[test]
    fn a_full_queue_closes_only_the_slow_stream_and_counts_it() {
        let hub = hub(10, 10);
        let slow = hub.admit(&user("ann")).unwrap();
        let fast = hub.admit(&user("ann")).unwrap();
        for id in 1..=9 {
            dispatch(&hub, &[event(id, Audience::User(user("ann")))]);
            while pop(&fast).is_some() {}
        }
        assert_eq!(hub.metrics.slow_reader_closes.get(), 1);
        let waker = noop_waker();
        assert!(matches!(
            slow.outbox
                .poll_pop(&mut Context::from_waker(&waker), EventId::ZERO),
            Poll::Ready(Popped::Closed(Closing::SlowReader))
        ));
        dispatch(&hub, &[event(10, Audience::User(user("ann")))]);
        assert_eq!(pop(&fast).and_then(|f| f.id), Some(EventId::from_seq(10)));
    }

    /// A stream's connection that notes, in a log shared by every stream, when it was written.
    struct OrderSink {
        stream: usize,
        log: Arc<parking_lot::Mutex<Vec<usize>>>,
    }

    impl crate::sse::outbox::DirectSink for OrderSink {
        fn write_now(&self, _frame: &[u8]) -> std::io::Result<Option<bytes::Bytes>> {
            self.log.lock().push(self.stream);
            Ok(None)
        }
    }

    #[test]
    fn a_broadcast_and_the_drain_take_the_streams_in_the_order_they_were_admitted() {
        let hub = hub(200, 1);
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        // 120 users (a job the caller does itself, one write after another), in an order
        // that is not their names' order; every fifth leaves again.
        let mut open = Vec::new();
        for n in 0..120 {
            let admission = hub.admit(&user(&format!("u{}", (n * 37) % 120))).unwrap();
            if n % 5 == 3 {
                continue;
            }
            let attached = admission.outbox.attach(Arc::new(OrderSink {
                stream: n,
                log: log.clone(),
            }));
            assert!(pop(&admission).is_none(), "nothing queued: the outbox arms");
            open.push((n, admission, attached));
        }
        let admitted: Vec<usize> = open.iter().map(|(n, ..)| *n).collect();
        dispatch(&hub, &[event(1, Audience::Everyone)]);
        assert_eq!(*log.lock(), admitted);
        let drained: Vec<u64> = hub.all_outboxes().iter().map(|o| o.stream_id).collect();
        let ids: Vec<u64> = open.iter().map(|(_, a, _)| a.outbox.stream_id).collect();
        assert_eq!(drained, ids);
    }

    #[test]
    fn a_group_of_events_reaches_every_stream_whole_and_in_order() {
        // Enough streams for the delivery threads to split each job between them. (That a
        // stream's frames of one job stay together is pinned down in `fanout`'s tests.)
        let hub = Hub::new(
            HubLimits {
                max_streams: 1000,
                max_streams_per_user: 10,
                queue: QueueBounds {
                    max_frames: 100,
                    max_bytes: 1 << 20,
                },
            },
            Arc::new(Metrics::new()),
        )
        .expect("delivery threads");
        let streams: Vec<Admission> = (0..400)
            .map(|n| hub.admit(&user(&format!("u{}", n % 50))).unwrap())
            .collect();
        let mut next = 0;
        for _ in 0..20 {
            let group: Vec<CommittedEvent> = (0..3)
                .map(|k| {
                    next += 1;
                    let audience = if k == 1 {
                        Audience::User(user("u7"))
                    } else {
                        Audience::Everyone
                    };
                    event(next, audience)
                })
                .collect();
            dispatch(&hub, &group);
        }
        for (n, stream) in streams.iter().enumerate() {
            let ids: Vec<u64> = std::iter::from_fn(|| pop(stream))
                .map(|frame| frame.id.expect("an event").major)
                .collect();
            let want: Vec<u64> = (1..=60).filter(|id| n % 50 == 7 || id % 3 != 2).collect();
            assert_eq!(ids, want, "stream {n}");
        }
    }

    #[test]
    fn each_broadcast_reaches_exactly_the_streams_open_when_it_was_dispatched() {
        let hub = hub(2000, 10_000);
        // (the stream's outbox, its admission while open, the broadcasts it must get)
        let mut streams: Vec<(Arc<Outbox>, Option<Admission>, Vec<u64>)> = Vec::new();
        for broadcast in 1..=6u64 {
            // Before each broadcast 300 streams come, and every seventh open one goes.
            for _ in 0..300 {
                let admission = hub.admit(&user("ann")).unwrap();
                streams.push((admission.outbox.clone(), Some(admission), Vec::new()));
            }
            for (n, stream) in streams.iter_mut().enumerate() {
                if (n + broadcast as usize) % 7 == 0 {
                    stream.1 = None;
                }
            }
            hub.dispatch(&[event(broadcast, Audience::Everyone)]);
            for (_, admission, want) in &mut streams {
                if admission.is_some() {
                    want.push(broadcast);
                }
            }
        }
        hub.fanout.flush();
        for (outbox, _, want) in &streams {
            assert_eq!(&outbox.take_ids(), want, "stream {}", outbox.stream_id);
        }
        assert_eq!(
            hub.metrics.events_delivered.get(),
            streams
                .iter()
                .map(|(_, _, want)| want.len() as u64)
                .sum::<u64>()
        );
    }
}
