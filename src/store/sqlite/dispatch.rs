//! Hands committed events to the sink on a thread of their own, in commit order, so that the
//! writer starts its next group while the last one's events are still being encoded and handed
//! to the streams.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::store::{CommittedEvent, EventSink, StoreError};

/// Groups of events that may wait for the dispatch thread before the writer waits too.
const QUEUE: usize = 64;

pub(super) struct Dispatcher {
    groups: Option<SyncSender<Vec<CommittedEvent>>>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub fn start(sink: Arc<dyn EventSink>) -> Result<Self, StoreError> {
        let (groups, receiver) = sync_channel::<Vec<CommittedEvent>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("herald-dispatch".into())
            .spawn(move || {
                for events in receiver {
                    sink.dispatch(&events);
                }
            })
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot start the dispatch thread: {error}"))
            })?;
        Ok(Self {
            groups: Some(groups),
            thread: Some(thread),
        })
    }

    /// Queues one committed group's events, after every group committed before it. False if
    /// the dispatch thread is gone (it panicked): events can then reach no stream.
    pub fn send(&self, events: Vec<CommittedEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        self.groups
            .as_ref()
            .is_some_and(|groups| groups.send(events).is_ok())
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
