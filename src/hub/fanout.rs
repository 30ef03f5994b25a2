//! The delivery threads, one per core: they push each frame of a job into each receiving
//! stream's outbox (for an idle stream on the HTTP/1 path, the socket write itself). Delivery
//! jobs run strictly in order (a heartbeat job, which carries no event, may be overtaken) and a
//! stream has one delivery per job, so every stream gets its events in id order however the
//! threads share a job out. A broadcast that comes while another is under way joins it for the
//! streams no thread has reached yet (docs/architecture.md#fan-out).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::roster::{SLICE, Slice};
use crate::metrics::Metrics;
use crate::sse::outbox::{Frame, Outbox, PushedFrames, QueueBounds};

/// Deliveries (streams) a thread claims at a time: about a millisecond of socket writes. A
/// slice of the roster is as many streams, so a claim is the same work in either kind of job.
const CHUNK: usize = SLICE;

/// The most frames a job takes in from the jobs queued behind it (see [`absorb_backlog`]).
const MAX_ABSORBED_FRAMES: usize = 64;

/// What one stream receives from one job: its frames (indexes into the job's frames), in id
/// order. A stream has one delivery per job, so however the threads share a job out, no two
/// of them ever push to the same stream at once, and its frames go in order.
pub struct Delivery {
    outbox: Arc<Outbox>,
    frames: FrameIndexes,
}

#[derive(Clone)]
enum FrameIndexes {
    /// The common case (one event, or one of a group for this stream): no allocation.
    One(usize),
    Many(Vec<usize>),
}

impl FrameIndexes {
    /// The frames from `first` on, of `frames` frames.
    fn from(first: usize, frames: usize) -> Self {
        match frames - first {
            1 => Self::One(first),
            _ => Self::Many((first..frames).collect()),
        }
    }

    fn push(&mut self, frame: usize) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, frame]),
            Self::Many(frames) => frames.push(frame),
        }
    }

    fn append(&mut self, more: &Self) {
        more.as_slice().iter().for_each(|&frame| self.push(frame));
    }

    /// For frames that moved `by` places on in their job's frames.
    fn shift(&mut self, by: usize) {
        match self {
            Self::One(frame) => *frame += by,
            Self::Many(frames) => frames.iter_mut().for_each(|frame| *frame += by),
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
    /// Push frames to every stream of these slices (every stream the hub held when it
    /// dispatched them), each slice's from its `first` on; an item is a slice.
    Everyone {
        frames: Vec<Frame>,
        slices: Vec<SliceShare>,
    },
    /// A heartbeat to each stream of these slices that has been quiet for `idle`; an item is a
    /// slice.
    Heartbeat {
        slices: Vec<Slice>,
        now: Instant,
        idle: Duration,
        heartbeat: Bytes,
    },
    /// Answers once every job before it is done (tests wait on it).
    #[cfg(test)]
    Barrier(std::sync::mpsc::Sender<()>),
    /// Keeps a thread until the test sends (or hangs up).
    #[cfg(test)]
    Hold(Mutex<std::sync::mpsc::Receiver<()>>),
}

/// A slice of streams in a broadcast job, and the first of the job's frames they get: every
/// frame from it on. A slice that joined the job with a later broadcast starts later.
#[derive(Clone)]
struct SliceShare {
    slice: Slice,
    first: usize,
}

impl Work {
    /// Every frame to every stream of `slices`.
    fn everyone(frames: Vec<Frame>, slices: Vec<Slice>) -> Self {
        let slices = slices
            .into_iter()
            .map(|slice| SliceShare { slice, first: 0 })
            .collect();
        Self::Everyone { frames, slices }
    }

    /// How many items the work has, and how many a thread claims at a time: a slice of
    /// streams is one item, a stream's delivery one of [`CHUNK`].
    fn extent(&self) -> (usize, usize) {
        match self {
            Self::Deliver { deliveries, .. } => (deliveries.len(), CHUNK),
            Self::Everyone { slices, .. } => (slices.len(), 1),
            Self::Heartbeat { slices, .. } => (slices.len(), 1),
            #[cfg(test)]
            Self::Barrier(_) | Self::Hold(_) => (1, 1),
        }
    }

    /// How many frames the work delivers; `None` for work that delivers no event.
    fn frames(&self) -> Option<usize> {
        match self {
            Self::Deliver { frames, .. } | Self::Everyone { frames, .. } => Some(frames.len()),
            _ => None,
        }
    }

    /// The frames a delivery carries, and each stream's share of them; work that delivers no
    /// event is given back.
    fn listed(self) -> Result<(Vec<Frame>, Vec<Delivery>), Self> {
        match self {
            Self::Deliver { frames, deliveries } => Ok((frames, deliveries)),
            Self::Everyone { frames, slices } => {
                let deliveries = slices
                    .iter()
                    .flat_map(|share| {
                        let share_frames = FrameIndexes::from(share.first, frames.len());
                        share.slice.iter().map(move |outbox| Delivery {
                            outbox: outbox.clone(),
                            frames: share_frames.clone(),
                        })
                    })
                    .collect();
                Ok((frames, deliveries))
            }
            other => Err(other),
        }
    }
}

struct Job {
    work: Work,
    len: usize,
    /// Items a thread claims at a time.
    claim: usize,
    /// What the threads have claimed of the job, and what joined it meanwhile.
    claims: Mutex<Claims>,
    /// Items done; the thread that finishes the last one retires the job.
    finished: AtomicUsize,
}

#[derive(Default)]
struct Claims {
    /// The first item no thread has claimed.
    next: usize,
    /// Frames of broadcasts that joined this one under way: every item claimed from now on
    /// gets them too, after its own (see [`join_front`]).
    joined: Vec<Frame>,
}

impl Job {
    /// `work`, not yet started.
    fn new(work: Work) -> Arc<Self> {
        let (len, claim) = work.extent();
        Arc::new(Self {
            work,
            len,
            claim,
            claims: Mutex::new(Claims::default()),
            finished: AtomicUsize::new(0),
        })
    }

    /// The next items for a thread to do, and the frames that joined the job for them; `None`
    /// once every item is claimed.
    fn claim_next(&self) -> Option<(std::ops::Range<usize>, Vec<Frame>)> {
        let mut claims = self.claims.lock();
        let start = claims.next;
        if start >= self.len {
            return None;
        }
        claims.next = (start + self.claim).min(self.len);
        Some((start..claims.next, claims.joined.clone()))
    }
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
        let len = deliveries.len();
        if len == 0 {
            return;
        }
        self.deliver_small_here_or_submit(Work::Deliver { frames, deliveries }, len);
    }

    /// Pushes every frame to every stream of `slices`, after every job handed over before. The
    /// streams a broadcast under way has still to reach get them with it.
    pub fn deliver_to_all(&self, frames: Vec<Frame>, slices: Vec<Slice>) {
        let slices = join_front(&self.shared.queue.lock(), &frames, slices);
        let streams = slices.iter().map(|slice| slice.len()).sum();
        if streams == 0 {
            return;
        }
        self.deliver_small_here_or_submit(Work::everyone(frames, slices), streams);
    }

    /// A job to at most [`CHUNK`] `streams`, when the threads have nothing to do, is done here
    /// and now, on the caller's thread: waking a delivery thread would cost more than the job
    /// (docs/architecture.md#fan-out). Any other is queued.
    fn deliver_small_here_or_submit(&self, work: Work, streams: usize) {
        if streams <= CHUNK {
            // Held while the job is done, so a job handed over meanwhile waits for it.
            let queue = self.shared.queue.lock();
            if queue.jobs.is_empty() {
                do_items(&self.shared, &work, 0..work.extent().0, &[]);
                return;
            }
        }
        self.submit(work);
    }

    /// Sends `heartbeat` to each stream of `slices` that has been quiet for `idle`.
    pub fn heartbeat(&self, slices: Vec<Slice>, idle: Duration, heartbeat: &Bytes) {
        if !slices.is_empty() {
            let work = Work::Heartbeat {
                slices,
                now: Instant::now(),
                idle,
                heartbeat: heartbeat.clone(),
            };
            self.submit(work);
        }
    }

    /// Waits until every job handed over before this call is done.
    #[cfg(test)]
    pub fn flush(&self) {
        let (done, answer) = std::sync::mpsc::channel();
        self.submit(Work::Barrier(done));
        let _ = answer.recv();
    }

    fn submit(&self, work: Work) {
        let job = Job::new(work);
        let one_claim = job.len <= job.claim;
        self.shared.queue.lock().jobs.push_back(job);
        // A job of one claim is one thread's work; a larger one is everyone's.
        if one_claim {
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
        while let Some((items, joined)) = job.claim_next() {
            do_items(shared, &job.work, items.clone(), &joined);
            finish(shared, &job, items.len());
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

/// Counts `items` of the front `job` done; the thread that does its last retires it and merges
/// the backlog into the next.
fn finish(shared: &Shared, job: &Job, items: usize) {
    let done = job.finished.fetch_add(items, Ordering::AcqRel) + items;
    if done == job.len {
        let mut queue = shared.queue.lock();
        queue.jobs.pop_front();
        absorb_backlog(&mut queue.jobs);
        drop(queue);
        shared.changed.notify_all();
    }
}

/// A broadcast that comes while the front job, a broadcast too, is under way: its frames join
/// that job for the slices no thread has claimed yet, which then get both in one write, and
/// what is returned (the rest of `slices`, in order round the roster from where that job ends)
/// still needs them. So under broadcasts faster than the cores write them, a broadcast waits
/// at most for the pass under way to reach each stream, not for the whole pass before its own
/// to end (docs/architecture.md#fan-out).
///
/// Each stream must still get its events in id order, so it joins only when:
/// - every unclaimed slice is one of `slices` (the same `Arc`): no stream of it came or went
///   since, so no newer copy of it is in any job, and none of its streams is in another slice;
/// - no job queued behind the front one holds one of those slices (a job with events for
///   single streams, which cannot be told apart cheaply, stops the join too);
/// - the front job then carries at most [`MAX_ABSORBED_FRAMES`] frames.
///
/// Claims are made under the same lock as the join, so every item is either claimed before it
/// (and the rest gets the frames later) or claimed with them.
fn join_front(queue: &Queue, frames: &[Frame], mut slices: Vec<Slice>) -> Vec<Slice> {
    let Some(front) = queue.jobs.front() else {
        return slices;
    };
    let Work::Everyone {
        frames: own,
        slices: shares,
    } = &front.work
    else {
        return slices;
    };
    let mut claims = front.claims.lock();
    let unclaimed = shares.get(claims.next..).unwrap_or_default();
    if unclaimed.is_empty() || own.len() + claims.joined.len() + frames.len() > MAX_ABSORBED_FRAMES
    {
        return slices;
    }
    let given: HashSet<*const Vec<Arc<Outbox>>> = slices.iter().map(Arc::as_ptr).collect();
    let reached: HashSet<*const Vec<Arc<Outbox>>> = unclaimed
        .iter()
        .map(|share| Arc::as_ptr(&share.slice))
        .collect();
    let held_behind = queue.jobs.iter().skip(1).any(|job| match &job.work {
        Work::Heartbeat { .. } => false,
        Work::Everyone { slices, .. } => slices
            .iter()
            .any(|share| reached.contains(&Arc::as_ptr(&share.slice))),
        _ => true,
    });
    if held_behind || !reached.is_subset(&given) {
        return slices;
    }
    claims.joined.extend(frames.iter().cloned());
    // The rest goes on from where the job under way ends and wraps round to the slices it did
    // before, as one sweep round the roster would: the broadcast then reaches each stream within
    // about one pass (docs/architecture.md#fan-out).
    let last = unclaimed.last().map(|share| Arc::as_ptr(&share.slice));
    let wrap = slices
        .iter()
        .position(|slice| Some(Arc::as_ptr(slice)) == last)
        .map_or(0, |at| at + 1);
    slices.rotate_left(wrap);
    slices
        .into_iter()
        .filter(|slice| !reached.contains(&Arc::as_ptr(slice)))
        .collect()
}

/// When deliveries queue up behind one another (the threads fall behind, say under broadcasts
/// to many streams faster than the cores write them), the job now at the front takes in the
/// delivery jobs queued right behind it, up to [`MAX_ABSORBED_FRAMES`] frames: each stream then
/// gets all of them in one write, which costs little more than one. So a backlog makes the
/// threads cheaper per event, and drains, where one write per event would keep it as long as
/// the load lasts (docs/architecture.md#fan-out). Heartbeat jobs in between are passed over and
/// stay queued in their order: a heartbeat carries no event, so it may go out after deliveries
/// queued behind it, and a heartbeat every tick must not keep a backlog from merging.
///
/// Only jobs no thread has started are changed: the front one is called under the queue's lock
/// as it becomes the front, before any thread can take it, and the ones behind it are never
/// taken before they are at the front.
fn absorb_backlog(jobs: &mut VecDeque<Arc<Job>>) {
    if next_delivery(jobs, 1).is_none() {
        return;
    }
    let Some(mut front) = jobs.pop_front() else {
        return;
    };
    if let Some(job) = Arc::get_mut(&mut front) {
        // Where each stream's delivery is in the front job, once it lists them one by one.
        let mut by_stream = None;
        let mut from = 0;
        while job
            .work
            .frames()
            .is_some_and(|frames| frames < MAX_ABSORBED_FRAMES)
        {
            let Some(at) = next_delivery(jobs, from) else {
                break;
            };
            let Some(next) = jobs.remove(at) else {
                break;
            };
            // No thread takes a job before it is at the front: this one is the queue's alone.
            let next = match Arc::try_unwrap(next) {
                Ok(next) => next.work,
                Err(shared) => {
                    jobs.insert(at, shared);
                    break;
                }
            };
            if let Err(next) = absorb(&mut job.work, next, &mut by_stream) {
                jobs.insert(at, Job::new(next));
                break;
            }
            from = at;
        }
        (job.len, job.claim) = job.work.extent();
    }
    jobs.push_front(front);
}

/// Adds `next`'s frames to `work`'s, each stream's after its own. Two broadcasts stay one
/// broadcast when every slice of `work` is one of `next`'s (none of its streams came or went
/// between them): the slices only `next` has get only its frames. Otherwise `work` becomes a
/// list of each stream's delivery, `by_stream` its index. Work that is not a delivery is given
/// back, unchanged.
fn absorb(
    work: &mut Work,
    next: Work,
    by_stream: &mut Option<HashMap<u64, usize>>,
) -> Result<(), Work> {
    if let (
        Work::Everyone { frames, slices },
        Work::Everyone {
            frames: more_frames,
            slices: more_slices,
        },
    ) = (&mut *work, &next)
    {
        let firsts: HashMap<*const Vec<Arc<Outbox>>, usize> = slices
            .iter()
            .map(|share| (Arc::as_ptr(&share.slice), share.first))
            .collect();
        let covered = more_slices
            .iter()
            .filter(|share| firsts.contains_key(&Arc::as_ptr(&share.slice)))
            .count();
        if covered == firsts.len() && more_slices.iter().all(|share| share.first == 0) {
            let later = frames.len();
            frames.extend(more_frames.iter().cloned());
            *slices = more_slices
                .iter()
                .map(|share| SliceShare {
                    slice: share.slice.clone(),
                    first: firsts
                        .get(&Arc::as_ptr(&share.slice))
                        .copied()
                        .unwrap_or(later),
                })
                .collect();
            return Ok(());
        }
    }
    let (more_frames, more) = next.listed()?;
    if let Work::Everyone { .. } = work {
        let everyone = std::mem::replace(
            work,
            Work::Deliver {
                frames: Vec::new(),
                deliveries: Vec::new(),
            },
        );
        *work = match everyone.listed() {
            Ok((frames, deliveries)) => Work::Deliver { frames, deliveries },
            Err(everyone) => everyone,
        };
    }
    let Work::Deliver { frames, deliveries } = work else {
        return Err(Work::Deliver {
            frames: more_frames,
            deliveries: more,
        });
    };
    let by_stream = by_stream.get_or_insert_with(|| {
        deliveries
            .iter()
            .enumerate()
            .map(|(at, delivery)| (delivery.outbox.stream_id, at))
            .collect()
    });
    let offset = frames.len();
    frames.extend(more_frames);
    for mut delivery in more {
        delivery.frames.shift(offset);
        match by_stream.get(&delivery.outbox.stream_id) {
            Some(&at) => deliveries[at].frames.append(&delivery.frames),
            None => {
                by_stream.insert(delivery.outbox.stream_id, deliveries.len());
                deliveries.push(delivery);
            }
        }
    }
    Ok(())
}

/// Where the first delivery job at or after `from` is, passing over heartbeat jobs; `None` when
/// another kind of job (a test's barrier) or the end of the queue comes first.
fn next_delivery(jobs: &VecDeque<Arc<Job>>, from: usize) -> Option<usize> {
    jobs.iter()
        .enumerate()
        .skip(from)
        .find_map(|(at, job)| match job.work {
            Work::Deliver { .. } | Work::Everyone { .. } => Some(Some(at)),
            Work::Heartbeat { .. } => None,
            #[cfg(test)]
            _ => Some(None),
        })
        .flatten()
}

/// Does `items` of `work`; a broadcast's streams get the `joined` frames after their own.
fn do_items(shared: &Shared, work: &Work, items: std::ops::Range<usize>, joined: &[Frame]) {
    let pushes = match work {
        Work::Deliver { frames, deliveries } => deliveries[items]
            .iter()
            .map(|delivery| {
                let frames = delivery.frames.as_slice().iter().map(|&at| &frames[at]);
                delivery.outbox.push_frames(frames, shared.bounds)
            })
            .fold(Pushes::default(), Pushes::add),
        Work::Everyone { frames, slices } => slices[items]
            .iter()
            .flat_map(|share| {
                let own = &frames[share.first..];
                share.slice.iter().map(move |outbox| (outbox, own))
            })
            .map(|(outbox, own)| outbox.push_frames(own.iter().chain(joined), shared.bounds))
            .fold(Pushes::default(), Pushes::add),
        Work::Heartbeat {
            slices,
            now,
            idle,
            heartbeat,
        } => {
            for outbox in slices[items].iter().flat_map(|slice| slice.iter()) {
                outbox.heartbeat_if_idle(*now, *idle, heartbeat);
            }
            return;
        }
        #[cfg(test)]
        Work::Barrier(done) => {
            let _ = done.send(());
            return;
        }
        #[cfg(test)]
        Work::Hold(gate) => {
            let _ = gate.lock().recv();
            return;
        }
    };
    shared.metrics.events_delivered.inc_by(pushes.delivered);
    if pushes.overflowed > 0 {
        shared.metrics.slow_reader_closes.inc_by(pushes.overflowed);
        tracing::info!(
            streams = pushes.overflowed,
            "closed slow readers whose queues were full"
        );
    }
}

/// What a thread's share of a delivery job did, counted once for the metrics.
#[derive(Default)]
struct Pushes {
    delivered: u64,
    overflowed: u64,
}

impl Pushes {
    fn add(self, pushed: PushedFrames) -> Self {
        Self {
            delivered: self.delivered + pushed.queued,
            overflowed: self.overflowed + u64::from(pushed.overflowed),
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
        let fanout = started(16);
        let outboxes: Vec<Arc<Outbox>> = (0..1000).map(|id| Arc::new(Outbox::new(id))).collect();
        for id in 1..=10u64 {
            let mut deliveries = Deliveries::for_frames(1);
            for outbox in &outboxes {
                deliveries.add(0, outbox);
            }
            fanout.deliver(frames(&[id]), deliveries);
        }
        fanout.flush();
        for outbox in &outboxes {
            let want: Vec<u64> = (1..=10).collect();
            assert_eq!(outbox.take_ids(), want, "stream {}", outbox.stream_id);
        }
    }

    /// The delivery threads, each stream's queue holding up to `max_frames` frames.
    fn started(max_frames: usize) -> FanOut {
        let bounds = QueueBounds {
            max_frames,
            max_bytes: 1 << 20,
        };
        FanOut::start(bounds, Arc::new(Metrics::new())).expect("threads")
    }

    /// A delivery job of frames with these ids, each `(outbox, frame index)` a push.
    fn job(ids: &[u64], pushes: &[(&Arc<Outbox>, usize)]) -> Arc<Job> {
        let frames = frames(ids);
        let mut deliveries = Deliveries::for_frames(ids.len());
        for &(outbox, frame) in pushes {
            deliveries.add(frame, outbox);
        }
        Job::new(Work::Deliver {
            frames,
            deliveries: deliveries.deliveries,
        })
    }

    /// A broadcast job of frames with these ids to every stream of `slices`.
    fn broadcast(ids: &[u64], slices: &[Slice]) -> Arc<Job> {
        Job::new(Work::everyone(frames(ids), slices.to_vec()))
    }

    fn frames(ids: &[u64]) -> Vec<Frame> {
        ids.iter()
            .map(|&id| Frame {
                id: Some(crate::domain::EventId::from_seq(id)),
                bytes: Bytes::from(format!("{id}")),
            })
            .collect()
    }

    /// Each delivery of a job as (stream, the ids of its frames), and the job's `len`.
    fn shape(job: &Job) -> (Vec<(u64, Vec<u64>)>, usize) {
        let Work::Deliver { frames, deliveries } = &job.work else {
            panic!("not a delivery job");
        };
        let deliveries = deliveries
            .iter()
            .map(|d| {
                let ids = d.frames.as_slice().iter();
                let ids = ids
                    .map(|&at| frames[at].id.expect("an event").major)
                    .collect();
                (d.outbox.stream_id, ids)
            })
            .collect();
        (deliveries, job.len)
    }

    #[test]
    fn a_backlog_of_deliveries_becomes_one_job_each_stream_getting_its_frames_in_order() {
        let [a, b, c] = [1, 2, 3].map(|id| Arc::new(Outbox::new(id)));
        let heartbeat = Job::new(Work::Heartbeat {
            slices: vec![Arc::new(vec![a.clone()])],
            now: Instant::now(),
            idle: Duration::from_secs(30),
            heartbeat: Bytes::from_static(b":"),
        });
        let mut jobs = VecDeque::from([
            job(&[1], &[(&a, 0), (&b, 0)]),
            job(&[2, 3], &[(&b, 0), (&c, 0), (&b, 1)]),
            job(&[4], &[(&a, 0), (&c, 0)]),
            heartbeat,
            job(&[5], &[(&a, 0)]),
        ]);
        absorb_backlog(&mut jobs);
        assert_eq!(
            jobs.len(),
            2,
            "the four deliveries became one, past the heartbeat, which stays queued"
        );
        assert_eq!(
            shape(&jobs[0]),
            (
                vec![(1, vec![1, 4, 5]), (2, vec![1, 2, 3]), (3, vec![2, 4])],
                3
            )
        );
        assert!(matches!(jobs[1].work, Work::Heartbeat { .. }));
    }

    #[test]
    fn a_backlog_merges_up_to_a_barrier_and_not_past_it() {
        let a = Arc::new(Outbox::new(1));
        let (done, _answer) = std::sync::mpsc::channel();
        let barrier = Job::new(Work::Barrier(done));
        let mut jobs = VecDeque::from([
            job(&[1], &[(&a, 0)]),
            job(&[2], &[(&a, 0)]),
            barrier,
            job(&[3], &[(&a, 0)]),
        ]);
        absorb_backlog(&mut jobs);
        assert_eq!(jobs.len(), 3);
        assert_eq!(shape(&jobs[0]), (vec![(1, vec![1, 2])], 1));
        assert!(matches!(jobs[1].work, Work::Barrier(_)));
        assert_eq!(shape(&jobs[2]), (vec![(1, vec![3])], 1));
    }

    #[test]
    fn a_job_absorbs_at_most_its_share_of_frames_and_never_one_a_thread_has_taken() {
        let a = Arc::new(Outbox::new(1));
        let mut jobs: VecDeque<Arc<Job>> = (1..=70).map(|id| job(&[id], &[(&a, 0)])).collect();
        absorb_backlog(&mut jobs);
        let merged: Vec<u64> = (1..=MAX_ABSORBED_FRAMES as u64).collect();
        assert_eq!(shape(&jobs[0]), (vec![(1, merged)], 1));
        assert_eq!(jobs.len(), 1 + 70 - MAX_ABSORBED_FRAMES);

        let mut started = VecDeque::from([job(&[1], &[(&a, 0)]), job(&[2], &[(&a, 0)])]);
        let taken = started[0].clone();
        absorb_backlog(&mut started);
        assert_eq!(started.len(), 2);
        assert_eq!(shape(&taken), (vec![(1, vec![1])], 1));
    }

    #[test]
    fn a_small_job_is_done_at_once_when_the_threads_are_idle_and_after_a_busy_one_when_not() {
        let fanout = started(16);

        let alone = Arc::new(Outbox::new(1));
        let mut deliveries = Deliveries::for_frames(1);
        deliveries.add(0, &alone);
        fanout.deliver(frames(&[1]), deliveries);
        assert_eq!(alone.take_ids(), [1], "pushed before deliver returned");

        // While a thread is busy with a job, a small one queues after it.
        let (release, gate) = std::sync::mpsc::channel();
        fanout.submit(Work::Hold(Mutex::new(gate)));
        let mut small = Deliveries::for_frames(1);
        small.add(0, &alone);
        fanout.deliver(frames(&[2]), small);
        assert_eq!(
            alone.take_ids(),
            Vec::<u64>::new(),
            "queued behind the busy thread"
        );
        release.send(()).expect("a thread holds the job");
        fanout.flush();
        assert_eq!(alone.take_ids(), [2]);
    }

    #[test]
    fn a_backlog_of_broadcasts_to_the_same_streams_stays_one_broadcast_of_every_frame() {
        let outboxes: Vec<Arc<Outbox>> = (1..=3).map(|id| Arc::new(Outbox::new(id))).collect();
        let slices: Vec<Slice> = vec![
            Arc::new(outboxes[..2].to_vec()),
            Arc::new(outboxes[2..].to_vec()),
        ];
        let Merged {
            ids,
            shares: took,
            extent,
        } = merged_broadcast([
            broadcast(&[1], &slices),
            broadcast(&[2], &slices),
            broadcast(&[3, 4], &slices),
        ]);
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(
            took.iter()
                .zip(&slices)
                .all(|((a, first), b)| Arc::ptr_eq(a, b) && *first == 0)
        );
        assert_eq!(extent, (2, 1), "a slice a claim");
    }

    /// The one broadcast a backlog became.
    struct Merged {
        /// Its frames' ids.
        ids: Vec<u64>,
        /// Each slice, with the first of the frames it gets.
        shares: Vec<(Slice, usize)>,
        /// The job's `len` and `claim`.
        extent: (usize, usize),
    }

    /// Merges the backlog `jobs`, which must become one broadcast.
    fn merged_broadcast<const N: usize>(jobs: [Arc<Job>; N]) -> Merged {
        let mut jobs = VecDeque::from(jobs);
        absorb_backlog(&mut jobs);
        assert_eq!(jobs.len(), 1);
        let Work::Everyone { frames, slices } = &jobs[0].work else {
            panic!("still one broadcast");
        };
        Merged {
            ids: frames
                .iter()
                .map(|f| f.id.expect("an event").major)
                .collect(),
            shares: slices.iter().map(|s| (s.slice.clone(), s.first)).collect(),
            extent: (jobs[0].len, jobs[0].claim),
        }
    }

    #[test]
    fn a_broadcast_merged_with_one_to_more_slices_gives_those_only_the_later_frames() {
        let slices = forty_a_slice(3);
        let Merged {
            ids, shares: took, ..
        } = merged_broadcast([
            broadcast(&[1], &slices[..1]),
            broadcast(&[2], &slices[..2]),
            broadcast(&[3], &slices),
        ]);
        assert_eq!(ids, [1, 2, 3]);
        let firsts: Vec<usize> = took.iter().map(|(_, first)| *first).collect();
        assert_eq!(firsts, [0, 1, 2]);
        assert!(
            took.iter()
                .zip(&slices)
                .all(|((a, _), b)| Arc::ptr_eq(a, b))
        );

        // The other way round, the first has a slice the second lacks: each stream is listed.
        let mut jobs = VecDeque::from([broadcast(&[1], &slices), broadcast(&[2], &slices[..1])]);
        absorb_backlog(&mut jobs);
        assert_eq!(jobs.len(), 1);
        let (deliveries, _) = shape(&jobs[0]);
        assert_eq!(deliveries.len(), 120);
        assert_eq!(deliveries[0], (1, vec![1, 2]));
        assert_eq!(deliveries[40], (41, vec![1]));
    }

    #[test]
    fn a_broadcast_merged_with_other_deliveries_or_other_streams_lists_each_stream_s_frames() {
        let [a, b, c] = [1, 2, 3].map(|id| Arc::new(Outbox::new(id)));
        let before: Vec<Slice> = vec![Arc::new(vec![a.clone(), b.clone()])];
        // c came and a went between the first broadcast and the second.
        let after: Vec<Slice> = vec![Arc::new(vec![b.clone(), c.clone()])];
        let mut jobs = VecDeque::from([
            broadcast(&[1], &before),
            broadcast(&[2], &after),
            job(&[3], &[(&b, 0)]),
            broadcast(&[4], &after),
        ]);
        absorb_backlog(&mut jobs);
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            shape(&jobs[0]),
            (
                vec![(1, vec![1]), (2, vec![1, 2, 3, 4]), (3, vec![2, 4])],
                3
            )
        );
        assert_eq!(jobs[0].claim, CHUNK);
    }

    /// Delivery threads that do nothing until the test does a claim for them ([`claim_once`]).
    fn unstarted() -> FanOut {
        let bounds = QueueBounds {
            max_frames: 64,
            max_bytes: 1 << 20,
        };
        FanOut {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
                bounds,
                metrics: Arc::new(Metrics::new()),
            }),
        }
    }

    /// Does one claim of the front job as a delivery thread would; false if none is queued.
    fn claim_once(fanout: &FanOut) -> bool {
        let Some(job) = fanout.shared.queue.lock().jobs.front().cloned() else {
            return false;
        };
        if let Some((items, joined)) = job.claim_next() {
            do_items(&fanout.shared, &job.work, items.clone(), &joined);
            finish(&fanout.shared, &job, items.len());
        }
        true
    }

    /// `count` slices of 40 streams each, with ids from 1.
    fn forty_a_slice(count: usize) -> Vec<Slice> {
        (0..count)
            .map(|at| {
                Arc::new(
                    (1..=40)
                        .map(|i| Arc::new(Outbox::new(40 * at as u64 + i)))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_broadcast_under_way_takes_a_later_one_to_the_streams_it_has_not_reached() {
        let fanout = unstarted();
        let slices = forty_a_slice(4);
        fanout.deliver_to_all(frames(&[1]), slices.clone());
        assert!(claim_once(&fanout), "the first slice gets 1");

        fanout.deliver_to_all(frames(&[2]), slices.clone());
        {
            let queue = fanout.shared.queue.lock();
            assert_eq!(queue.jobs.len(), 2, "2 joined the first job");
            assert_eq!(queue.jobs[0].claims.lock().joined.len(), 1);
            let Work::Everyone { slices: rest, .. } = &queue.jobs[1].work else {
                panic!("the rest of 2 is a broadcast");
            };
            assert_eq!(rest.len(), 1, "only the slice already reached waits for 2");
            assert!(Arc::ptr_eq(&rest[0].slice, &slices[0]));
        }

        // The last stream goes: the roster copies its slice, so 3 cannot join the first job,
        // whose last slice still holds that stream.
        let mut changed = slices.clone();
        let mut last = changed[3].to_vec();
        let gone = last.pop().expect("a stream");
        changed[3] = Arc::new(last);
        fanout.deliver_to_all(frames(&[3]), changed);
        assert_eq!(fanout.shared.queue.lock().jobs.len(), 3, "3 waits its turn");

        let mut claims = 0;
        while claim_once(&fanout) {
            claims += 1;
        }
        assert_eq!(
            claims,
            3 + 4,
            "three slices of the first job, then the rest merged"
        );
        for outbox in slices.iter().flat_map(|slice| slice.iter()) {
            let want: &[u64] = if Arc::ptr_eq(outbox, &gone) {
                &[1, 2]
            } else {
                &[1, 2, 3]
            };
            assert_eq!(outbox.take_ids(), want, "stream {}", outbox.stream_id);
        }
    }

    #[test]
    fn the_rest_of_a_joined_broadcast_goes_on_from_where_the_job_under_way_ends() {
        let fanout = unstarted();
        let slices = forty_a_slice(6);
        fanout.deliver_to_all(frames(&[1]), slices.clone());
        for _ in 0..3 {
            assert!(claim_once(&fanout));
        }
        // 2 joins 1 for slices 3-5; slices 0-2 wait for it as a job of their own.
        fanout.deliver_to_all(frames(&[2]), slices.clone());
        for _ in 0..3 {
            assert!(claim_once(&fanout));
        }
        // That job is under way: slice 0 has 2, slices 1 and 2 not yet.
        assert!(claim_once(&fanout));
        fanout.deliver_to_all(frames(&[3]), slices.clone());
        {
            let queue = fanout.shared.queue.lock();
            assert_eq!(queue.jobs.len(), 2, "3 joined the job under way");
            let Work::Everyone { slices: rest, .. } = &queue.jobs[1].work else {
                panic!("the rest of 3 is a broadcast");
            };
            let order: Vec<usize> = rest
                .iter()
                .map(|share| {
                    slices
                        .iter()
                        .position(|slice| Arc::ptr_eq(slice, &share.slice))
                        .expect("a slice of the roster")
                })
                .collect();
            assert_eq!(
                order,
                [3, 4, 5, 0],
                "after slice 2, where the job under way ends, round to slice 0"
            );
        }
        while claim_once(&fanout) {}
        for outbox in slices.iter().flat_map(|slice| slice.iter()) {
            assert_eq!(outbox.take_ids(), [1, 2, 3], "stream {}", outbox.stream_id);
        }
    }

    #[test]
    fn a_broadcast_does_not_join_one_under_way_while_other_events_wait_behind_it() {
        let fanout = unstarted();
        let slices = forty_a_slice(4);
        fanout.deliver_to_all(frames(&[1]), slices.clone());
        assert!(claim_once(&fanout));
        let mut to_one = Deliveries::for_frames(1);
        to_one.add(0, &slices[3][0]);
        fanout.deliver(frames(&[2]), to_one);

        let rest = join_front(&fanout.shared.queue.lock(), &frames(&[3]), slices.clone());
        assert_eq!(rest.len(), 4, "3 goes to every slice after 2");
        assert!(
            fanout.shared.queue.lock().jobs[0]
                .claims
                .lock()
                .joined
                .is_empty()
        );
    }

    #[test]
    fn every_stream_of_a_broadcast_job_gets_its_frames_once_in_order() {
        let fanout = started(64);
        let outboxes: Vec<Arc<Outbox>> = (1..=1000).map(|id| Arc::new(Outbox::new(id))).collect();
        let slices: Vec<Slice> = outboxes
            .chunks(100)
            .map(|chunk| Arc::new(chunk.to_vec()))
            .collect();
        for id in 1..=5 {
            fanout.deliver_to_all(frames(&[2 * id - 1, 2 * id]), slices.clone());
        }
        fanout.flush();
        for outbox in &outboxes {
            let want: Vec<u64> = (1..=10).collect();
            assert_eq!(outbox.take_ids(), want, "stream {}", outbox.stream_id);
        }
    }
}
