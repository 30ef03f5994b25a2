//! Hands committed events to the sink in commit order: a large group on a thread of its own, so
//! that the writer starts its next group while the last one's events are still being encoded and
//! handed to the streams; a small one (a few events for single users) on the writer's thread,
//! when nothing is waiting for the dispatch thread, as waking that thread costs more than the
//! dispatch (docs/architecture.md#the-write-path).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::store::{Audience, CommittedEvent, EventSink, StoreError};

/// Groups of events that may wait for the dispatch thread before the writer waits too.
const QUEUE: usize = 64;

/// The most events of a group dispatched on the writer's thread (each for one user).
const SMALL_GROUP: usize = 16;

pub(super) struct Dispatcher {
    sink: Arc<dyn EventSink>,
    groups: Option<SyncSender<Vec<CommittedEvent>>>,
    /// Groups sent to the dispatch thread and not yet dispatched.
    pending: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub fn start(sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let (groups, receiver) = sync_channel::<Vec<CommittedEvent>>(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("herald-dispatch".into())
            .spawn({
                let (sink, pending) = (sink.clone(), pending.clone());
                move || {
                    for events in receiver {
                        sink.dispatch(&events);
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot start the dispatch thread: {error}"))
            })?;
        Ok(Self {
            sink,
            groups: Some(groups),
            pending,
            thread: Some(thread),
        })
    }

    /// Dispatches a small group here and now, if no group is waiting for the dispatch thread
    /// (which would then go after it); true if it did. Only the writer sends groups, so none
    /// can be sent meanwhile.
    pub fn dispatch_here(&self, events: &[CommittedEvent]) -> bool {
        let small = events.len() <= SMALL_GROUP
            && events
                .iter()
                .all(|event| matches!(event.audience, Audience::User(_)));
        if !small || self.pending.load(Ordering::Acquire) != 0 || self.groups.is_none() {
            return false;
        }
        self.sink.dispatch(events);
        true
    }

    /// Queues one committed group's events, after every group committed before it. False if
    /// the dispatch thread is gone (it panicked): events can then reach no stream.
    pub fn send(&self, events: Vec<CommittedEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        let Some(groups) = &self.groups else {
            return false;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        groups.send(events).is_ok()
    }

    /// Returns once everything queued has been dispatched.
    pub fn stop(&mut self) {
        drop(self.groups.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, channel};

    use parking_lot::Mutex;

    use super::*;
    use crate::domain::{EventId, EventName, UserId};

    /// Records each event's id and the thread that dispatched it; a broadcast waits for `gate`
    /// (when set) before it is recorded, holding the dispatch thread.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(u64, String)>>,
        gate: Mutex<Option<Receiver<()>>>,
    }

    impl EventSink for Recorder {
        fn resume_after(&self, _newest: EventId) {}
        fn dispatch(&self, events: &[CommittedEvent]) {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            for event in events {
                if matches!(event.audience, Audience::Everyone) {
                    if let Some(gate) = self.gate.lock().as_ref() {
                        gate.recv().expect("the test opens the gate");
                    }
                }
                self.seen.lock().push((event.id.major, thread.clone()));
            }
        }
    }

    fn event(id: u64, audience: Audience) -> CommittedEvent {
        CommittedEvent {
            id: EventId::from_seq(id),
            audience,
            name: EventName::Notification,
            data: "{}".into(),
        }
    }

    fn to_alice(ids: std::ops::RangeInclusive<u64>) -> Vec<CommittedEvent> {
        let alice = UserId::parse("alice").expect("valid user");
        ids.map(|id| event(id, Audience::User(alice.clone())))
            .collect()
    }

    #[test]
    fn a_small_group_for_single_users_is_dispatched_here_and_the_rest_on_the_thread_in_order() {
        let recorder = Arc::new(Recorder::default());
        let (open, gate) = channel();
        *recorder.gate.lock() = Some(gate);
        let mut dispatcher = Dispatcher::start(recorder.clone()).expect("thread");
        let here = std::thread::current().name().unwrap_or("").to_owned();

        let many = to_alice(100..=100 + SMALL_GROUP as u64);
        assert!(
            !dispatcher.dispatch_here(&many),
            "more than {SMALL_GROUP} events are large"
        );
        assert!(dispatcher.dispatch_here(&to_alice(1..=2)));
        let broadcast = vec![event(3, Audience::Everyone)];
        assert!(
            !dispatcher.dispatch_here(&broadcast),
            "a broadcast is large"
        );
        assert!(dispatcher.send(broadcast));
        // The dispatch thread holds the broadcast: a small group must now go after it.
        assert!(!dispatcher.dispatch_here(&to_alice(4..=4)));
        assert!(dispatcher.send(to_alice(4..=4)));
        open.send(()).expect("the thread waits");
        dispatcher.stop();
        assert!(!dispatcher.dispatch_here(&to_alice(5..=5)), "stopped");

        let thread = "herald-dispatch".to_owned();
        assert_eq!(
            *recorder.seen.lock(),
            [
                (1, here.clone()),
                (2, here),
                (3, thread.clone()),
                (4, thread)
            ]
        );
    }
}
