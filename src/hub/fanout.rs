//! The delivery threads, one per core: they push each frame of a job into each receiving
//! stream's outbox (for an idle stream on the HTTP/1 path, the socket write itself). Jobs run
//! strictly in order and a stream has one delivery per job, so every stream gets its events in
//! id order however the threads share a job out (docs/architecture.md#fan-out).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::metrics::Metrics;
use crate::sse::outbox::{Frame, Outbox, Pushed, QueueBounds};

/// Deliveries (streams) a thread claims at a time: about a millisecond of socket writes.
const CHUNK: usize = 128;

/// What one stream receives from one job: its frames (indexes into the job's frames), in id
/// order. A stream has one delivery per job, so however the threads share a job out, no two
/// of them ever push to the same stream at once, and its frames go in order.
pub struct Delivery {
    outbox: Arc<Outbox>,
    frames: FrameIndexes,
}

enum FrameIndexes {
    /// The common case (one event, or one of a group for this stream): no allocation.
    One(usize),
    Many(Vec<usize>),
}

impl FrameIndexes {
    fn push(&mut self, frame: usize) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, frame]),
            Self::Many(frames) => frames.push(frame),
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Self::One(frame) => std::slice::from_ref(frame),
            Self::Many(frames) => frames,
        }
    }
}

/// Builds a job's deliveries: frames must be added in id order.
pub struct Deliveries {
    deliveries: Vec<Delivery>,
    /// Where each stream's delivery is, for a job of several frames (a group of events); a job
    /// of one frame adds each stream once and needs no lookup.
    by_stream: Option<HashMap<u64, usize>>,
}

impl Deliveries {
    /// For a job of `frames` frames.
    pub fn for_frames(frames: usize) -> Self {
        Self {
            deliveries: Vec::new(),
            by_stream: (frames > 1).then(HashMap::new),
        }
    }

    /// `frame` (an index into the job's frames) is for `outbox`.
    pub fn add(&mut self, frame: usize, outbox: &Arc<Outbox>) {
        if let Some(by_stream) = &mut self.by_stream {
            if let Some(&at) = by_stream.get(&outbox.stream_id) {
                self.deliveries[at].frames.push(frame);
                return;
            }
            by_stream.insert(outbox.stream_id, self.deliveries.len());
        }
        self.deliveries.push(Delivery {
            outbox: outbox.clone(),
            frames: FrameIndexes::One(frame),
        });
    }
}

enum Work {
    /// Push each delivery's frames to its outbox.
    Deliver {
        frames: Vec<Frame>,
        deliveries: Vec<Delivery>,
    },
    /// A heartbeat to each of these outboxes that has been quiet for `idle`.
    Heartbeat {
        outboxes: Vec<Arc<Outbox>>,
        now: Instant,
        idle: Duration,
        heartbeat: Bytes,
    },
    /// Answers once every job before it is done (tests wait on it).
    #[cfg(test)]
    Barrier(std::sync::mpsc::Sender<()>),
}

struct Job {
    work: Work,
    len: usize,
    /// Items handed out to threads so far (may run past `len`).
    claimed: AtomicUsize,
    /// Items done; the thread that finishes the last one retires the job.
    finished: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    /// The job at the front is the one being done.
    jobs: VecDeque<Arc<Job>>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job arrives or the front one is retired.
    changed: Condvar,
    bounds: QueueBounds,
    metrics: Arc<Metrics>,
}

/// The delivery threads. Dropping this ends them once the queued jobs are done.
pub struct FanOut {
    shared: Arc<Shared>,
}

impl FanOut {
    /// Starts one thread per core (at least one).
    pub fn start(bounds: QueueBounds, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let fanout = Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
                bounds,
                metrics,
            }),
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        for index in 0..threads {
            let shared = fanout.shared.clone();
            // Should one not start, dropping `fanout` ends those that did.
            std::thread::Builder::new()
                .name(format!("herald-fanout-{index}"))
                .spawn(move || run(&shared))?;
        }
        Ok(fanout)
    }

    /// Pushes each delivery's frames to its outbox, after every job handed over before.
    pub fn deliver(&self, frames: Vec<Frame>, deliveries: Deliveries) {
        let deliveries = deliveries.deliveries;
        if !deliveries.is_empty() {
            let len = deliveries.len();
            self.submit(Work::Deliver { frames, deliveries }, len);
        }
    }

    /// Sends `heartbeat` to each of `outboxes` that has been quiet for `idle`.
    pub fn heartbeat(&self, outboxes: Vec<Arc<Outbox>>, idle: Duration, heartbeat: &Bytes) {
        if !outboxes.is_empty() {
            let len = outboxes.len();
            let work = Work::Heartbeat {
                outboxes,
                now: Instant::now(),
                idle,
                heartbeat: heartbeat.clone(),
            };
            self.submit(work, len);
        }
    }

    /// Waits until every job handed over before this call is done.
    #[cfg(test)]
    pub fn flush(&self) {
        let (done, answer) = std::sync::mpsc::channel();
        self.submit(Work::Barrier(done), 1);
        let _ = answer.recv();
    }

    fn submit(&self, work: Work, len: usize) {
        let job = Arc::new(Job {
            work,
            len,
            claimed: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        self.shared.queue.lock().jobs.push_back(job);
        // A small job is one thread's work; a large one is everyone's.
        if len <= CHUNK {
            self.shared.changed.notify_one();
        } else {
            self.shared.changed.notify_all();
        }
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        self.shared.queue.lock().stopping = true;
        self.shared.changed.notify_all();
    }
}

fn run(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue.lock();
            loop {
                if let Some(job) = queue.jobs.front() {
                    break job.clone();
                }
                if queue.stopping {
                    return;
                }
                shared.changed.wait(&mut queue);
            }
        };
        loop {
            let start = job.claimed.fetch_add(CHUNK, Ordering::AcqRel);
            if start >= job.len {
                break;
            }
            let end = (start + CHUNK).min(job.len);
            do_items(shared, &job.work, start..end);
            let done = job.finished.fetch_add(end - start, Ordering::AcqRel) + (end - start);
            if done == job.len {
                let mut queue = shared.queue.lock();
                queue.jobs.pop_front();
                drop(queue);
                shared.changed.notify_all();
            }
        }
        // The next job may send to the same streams: it waits until this one is all done.
        let mut queue = shared.queue.lock();
        while queue
            .jobs
            .front()
            .is_some_and(|front| Arc::ptr_eq(front, &job))
        {
            shared.changed.wait(&mut queue);
        }
    }
}

fn do_items(shared: &Shared, work: &Work, items: std::ops::Range<usize>) {
    match work {
        Work::Deliver { frames, deliveries } => {
            let (mut delivered, mut overflowed) = (0, 0);
            for delivery in &deliveries[items] {
                for &frame in delivery.frames.as_slice() {
                    match delivery.outbox.push(&frames[frame], shared.bounds) {
                        Pushed::Queued => delivered += 1,
                        Pushed::Ignored => {}
                        Pushed::Overflowed => overflowed += 1,
                    }
                }
            }
            shared.metrics.events_delivered.inc_by(delivered);
            if overflowed > 0 {
                shared.metrics.slow_reader_closes.inc_by(overflowed);
                tracing::info!(
                    streams = overflowed,
                    "closed slow readers whose queues were full"
                );
            }
        }
        Work::Heartbeat {
            outboxes,
            now,
            idle,
            heartbeat,
        } => {
            for outbox in &outboxes[items] {
                outbox.heartbeat_if_idle(*now, *idle, heartbeat);
            }
        }
        #[cfg(test)]
        Work::Barrier(done) => {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_gives_each_stream_one_delivery_with_its_frames_in_order() {
        let (a, b) = (Arc::new(Outbox::new(1)), Arc::new(Outbox::new(2)));
        let mut deliveries = Deliveries::for_frames(4);
        for (frame, outbox) in [(0, &a), (0, &b), (1, &a), (2, &b), (3, &a)] {
            deliveries.add(frame, outbox);
        }
        let got: Vec<(u64, Vec<usize>)> = deliveries
            .deliveries
            .iter()
            .map(|d| (d.outbox.stream_id, d.frames.as_slice().to_vec()))
            .collect();
        assert_eq!(got, [(1, vec![0, 1, 3]), (2, vec![0, 2])]);
    }

    #[test]
    fn jobs_run_in_order_and_a_large_one_is_shared_out_whole() {
        let fanout = FanOut::start(
            QueueBounds {
                max_frames: 16,
                max_bytes: 1 << 20,
            },
            Arc::new(Metrics::new()),
        )
        .expect("threads");
        let outboxes: Vec<Arc<Outbox>> = (0..1000).map(|id| Arc::new(Outbox::new(id))).collect();
        for id in 1..=10u64 {
            let frame = Frame {
                id: Some(crate::domain::EventId::from_seq(id)),
                bytes: Bytes::from(format!("{id}")),
            };
            let mut deliveries = Deliveries::for_frames(1);
            for outbox in &outboxes {
                deliveries.add(0, outbox);
            }
            fanout.deliver(vec![frame], deliveries);
        }
        fanout.flush();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for outbox in &outboxes {
            let ids: Vec<u64> = std::iter::from_fn(|| {
                match outbox.poll_pop(&mut cx, crate::domain::EventId::ZERO) {
                    std::task::Poll::Ready(crate::sse::outbox::Popped::Frame(f)) => {
                        f.id.map(|id| id.major)
                    }
                    _ => None,
                }
            })
            .collect();
            assert_eq!(
                ids,
                (1..=10).collect::<Vec<_>>(),
                "stream {}",
                outbox.stream_id
            );
        }
    }
}
