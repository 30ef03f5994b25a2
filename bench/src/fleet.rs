//! A fleet of SSE streams, one small tokio task each: opened with bounded concurrency, counted
//! as they open, fail and receive, and closed together. Each stream records every event that
//! carries a send time from this run ([`send_time_in`]) with its delivery latency; the counters
//! let a scenario wait for "everything arrived" without looking at the streams.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Flow, Item, ResponseReader, SseEndpoint, StreamError};

/// How often waits look at the counters.
const POLL: Duration = Duration::from_millis(5);

/// Nanoseconds since the Unix epoch on this machine's clock: the unit of every send time.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// The send time embedded in `data`: the first run of exactly 19 digits (ns since the epoch,
/// good until 2286) whose value lies between `floor` and now. Other numbers in an event (ids,
/// dates, a client id) are shorter or out of range.
pub fn send_time_in(data: &[u8], floor: u64) -> Option<u64> {
    let ceiling = now_ns() + 1_000_000_000;
    let mut rest = data;
    while let Some(start) = rest.iter().position(u8::is_ascii_digit) {
        let digits = rest[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 19 {
            let value = rest[start..start + 19]
                .iter()
                .fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
            if (floor..=ceiling).contains(&value) {
                return Some(value);
            }
        }
        rest = &rest[start + digits..];
    }
    None
}

/// What every stream of a fleet shares.
pub struct FleetConfig {
    pub headers: Arc<Vec<(String, String)>>,
    /// Streams connecting at once; a stream holds its slot until it has opened or failed.
    pub connect_concurrency: usize,
    /// How long one stream may take from getting its slot to its first event.
    pub open_timeout: Duration,
    /// Send times below this are not from this run.
    pub send_time_floor: u64,
}

/// One stream to open.
pub struct StreamSpec {
    pub endpoint: Arc<SseEndpoint>,
    pub source: Option<Ipv4Addr>,
    pub user: Arc<str>,
    pub last_event_id: Option<Vec<u8>>,
}

/// One event with a send time, as a stream received it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub send_time: u64,
    pub latency_ns: u64,
}

/// What one stream saw, handed back when the fleet closes.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// From getting a connect slot to the first event; `None` if it never opened.
    pub open_latency: Option<Duration>,
    pub failure: Option<StreamError>,
    /// The server ended the response, or the connection broke, after it opened.
    pub ended_early: Option<String>,
    pub deliveries: Vec<Delivery>,
    /// Events without a send time from this run (`connected`, say).
    pub other_events: u64,
    /// Comment lines (heartbeats).
    pub comments: u64,
    /// What a reconnect would send as `Last-Event-ID`.
    pub last_event_id: Vec<u8>,
}

/// Counters the streams update as they go.
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    /// Deliveries of a send time the stream had not seen before.
    fresh: AtomicU64,
    /// Nanoseconds from the fleet's start to the latest open.
    last_open_ns: AtomicU64,
}

/// Streams being opened or open; [`Fleet::close`] ends them and returns what each saw.
pub struct Fleet {
    started: Instant,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    handles: Vec<JoinHandle<StreamOutcome>>,
}

/// How the opening went, at the moment every stream had opened or failed (or the wait ended).
pub struct OpenSummary {
    pub opened: u64,
    pub failed: u64,
    /// From the fleet's start to the last stream that opened.
    pub elapsed: Duration,
}

impl Fleet {
    /// Spawns one task per spec; they connect at most `connect_concurrency` at a time.
    pub fn open(specs: Vec<StreamSpec>, config: &FleetConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
        let started = Instant::now();
        let handles = specs
            .into_iter()
            .map(|spec| {
                let task = StreamTask {
                    spec,
                    headers: config.headers.clone(),
                    open_timeout: config.open_timeout,
                    floor: config.send_time_floor,
                    counters: counters.clone(),
                    cancel: cancel.clone(),
                    started,
                };
                tokio::spawn(task.run(slots.clone()))
            })
            .collect();
        Self {
            started,
            counters,
            cancel,
            handles,
        }
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Waits until every stream has opened or failed, or `limit` has passed.
    pub async fn wait_open(&self, limit: Duration) -> OpenSummary {
        let deadline = self.started + limit;
        loop {
            let opened = self.counters.opened.load(Ordering::Relaxed);
            let failed = self.counters.failed.load(Ordering::Relaxed);
            if opened + failed >= self.len() as u64 || Instant::now() >= deadline {
                let last = self.counters.last_open_ns.load(Ordering::Relaxed);
                return OpenSummary {
                    opened,
                    failed,
                    elapsed: Duration::from_nanos(last),
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fresh deliveries so far (a send time counted once per stream).
    pub fn delivered(&self) -> u64 {
        self.counters.fresh.load(Ordering::Relaxed)
    }

    /// Waits until `target` fresh deliveries have arrived or `deadline` passes; returns when the
    /// target was reached, if it was.
    pub async fn wait_delivered(&self, target: u64, deadline: Instant) -> Option<Instant> {
        loop {
            if self.delivered() >= target {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ends every stream (the client closes its sockets) and returns what each saw, in the
    /// order of the specs.
    pub async fn close(self) -> Vec<StreamOutcome> {
        self.cancel.cancel();
        let mut outcomes = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            outcomes.push(handle.await.unwrap_or_else(|error| StreamOutcome {
                failure: Some(StreamError::Io(format!("stream task failed: {error}"))),
                ..StreamOutcome::default()
            }));
        }
        outcomes
    }
}

/// Failure reasons and how many streams each stopped.
pub fn failure_counts(outcomes: &[StreamOutcome]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for failure in outcomes
        .iter()
        .filter_map(|outcome| outcome.failure.as_ref())
    {
        *counts.entry(failure.to_string()).or_insert(0) += 1;
    }
    counts
}

/// One stream's task and everything it needs.
struct StreamTask {
    spec: StreamSpec,
    headers: Arc<Vec<(String, String)>>,
    open_timeout: Duration,
    floor: u64,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    started: Instant,
}

/// A stream between getting its connect slot and its first event.
struct Opening {
    /// The connect slot, held until the first event arrives; `None` once the stream is open.
    slot: Option<OwnedSemaphorePermit>,
    /// When the slot was granted: the open latency counts from here.
    began: Instant,
    /// The stream fails if its first event has not arrived by then.
    deadline: tokio::time::Instant,
}

impl StreamTask {
    /// Waits for a connect slot, opens the stream, reads it until the fleet closes or the
    /// stream ends, and says what it saw.
    async fn run(self, slots: Arc<Semaphore>) -> StreamOutcome {
        let mut outcome = StreamOutcome::default();
        let Ok(slot) = slots.acquire_owned().await else {
            return outcome;
        };
        let began = Instant::now();
        let mut opening = Opening {
            slot: Some(slot),
            began,
            deadline: tokio::time::Instant::from_std(began + self.open_timeout),
        };
        let socket = match self.connect(opening.deadline).await {
            Ok(socket) => socket,
            Err(error) => return self.fail(outcome, error),
        };
        let mut reader = ResponseReader::new();
        let read = self
            .read_events(&socket, &mut reader, &mut opening, &mut outcome)
            .await;
        if let Err(error) = read {
            return self.fail(outcome, error);
        }
        if opening.slot.is_some() {
            return self.fail(outcome, StreamError::Io("cancelled before open".into()));
        }
        outcome.last_event_id = reader.sse().last_event_id().to_vec();
        outcome.comments = reader.sse().comments();
        outcome
    }

    /// Connects and sends the request, by `deadline` and unless the fleet closes first.
    async fn connect(&self, deadline: tokio::time::Instant) -> Result<TcpStream, StreamError> {
        let connecting = conn::connect(
            &self.spec.endpoint,
            self.spec.source,
            &self.spec.user,
            self.spec.last_event_id.as_deref(),
            &self.headers,
        );
        tokio::select! {
            connected = tokio::time::timeout_at(deadline, connecting) => match connected {
                Ok(connected) => connected,
                Err(_) => Err(StreamError::Io("open timed out".into())),
            },
            () = self.cancel.cancelled() => Err(StreamError::Io("cancelled before open".into())),
        }
    }

    /// Reads events until the fleet closes or the stream ends (said in `ended_early`). An error
    /// is a stream that never opened: no first event by the deadline, or closed or broken
    /// before it.
    async fn read_events(
        &self,
        socket: &TcpStream,
        reader: &mut ResponseReader,
        opening: &mut Opening,
        outcome: &mut StreamOutcome,
    ) -> Result<(), StreamError> {
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => return Ok(()),
                () = tokio::time::sleep_until(opening.deadline), if opening.slot.is_some() => {
                    return Err(StreamError::Io("open timed out".into()));
                }
                ready = socket.readable() => if let Err(error) = ready {
                    outcome.ended_early = Some(error.kind().to_string());
                    return Ok(());
                }
            }
            let mut sink = |item: Item<'_>| {
                if let Item::Event(event) = item {
                    self.receive(event.data, opening, outcome);
                }
            };
            let pumped = conn::pump(socket, reader, &mut sink);
            // A server that greets a stream with a comment, not an event (Nchan's `: hi`), has
            // opened it too.
            if opening.slot.is_some() && reader.sse().comments() > 0 {
                self.opened(opening, outcome);
            }
            match pumped {
                Ok(Flow::Pending) => {}
                Ok(Flow::Ended) if opening.slot.is_some() => {
                    return Err(StreamError::Io("closed before the first event".into()));
                }
                Ok(Flow::Ended) => {
                    outcome.ended_early = Some("server ended the stream".into());
                    return Ok(());
                }
                Err(error) if opening.slot.is_some() => return Err(error),
                Err(error) => {
                    outcome.ended_early = Some(error.to_string());
                    return Ok(());
                }
            }
        }
    }

    /// The stream's first event or comment: it is open, and frees its connect slot.
    fn opened(&self, opening: &mut Opening, outcome: &mut StreamOutcome) {
        if opening.slot.take().is_some() {
            outcome.open_latency = Some(opening.began.elapsed());
            self.counters.opened.fetch_add(1, Ordering::Relaxed);
            let since_start = self.started.elapsed().as_nanos() as u64;
            self.counters
                .last_open_ns
                .fetch_max(since_start, Ordering::Relaxed);
        }
    }

    /// One event with `data`: the first opens the stream; one carrying a send time from this
    /// run is a delivery, counted fresh unless this stream had that send time already.
    fn receive(&self, data: &[u8], opening: &mut Opening, outcome: &mut StreamOutcome) {
        self.opened(opening, outcome);
        match send_time_in(data, self.floor) {
            Some(send_time) => {
                let latency_ns = now_ns().saturating_sub(send_time);
                // Send times mostly arrive in increasing order: check the last first.
                let seen = outcome
                    .deliveries
                    .last()
                    .is_some_and(|last| last.send_time >= send_time)
                    && outcome.deliveries.iter().any(|d| d.send_time == send_time);
                if !seen {
                    self.counters.fresh.fetch_add(1, Ordering::Relaxed);
                }
                outcome.deliveries.push(Delivery {
                    send_time,
                    latency_ns,
                });
            }
            None => outcome.other_events += 1,
        }
    }

    fn fail(&self, mut outcome: StreamOutcome, error: StreamError) -> StreamOutcome {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        outcome.failure = Some(error);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_the_19_digit_number_from_this_run() {
        let now = now_ns();
        let floor = now - 1_000_000_000;
        let data = format!(
            r#"{{"id":"0b7e-1732543000123","title":"t","message":"{now}","timestamp":"2025-01-01T00:00:00Z"}}"#
        );
        assert_eq!(send_time_in(data.as_bytes(), floor), Some(now));
        let old = floor - 1;
        assert_eq!(
            send_time_in(format!("{old} {now}").as_bytes(), floor),
            Some(now)
        );
        assert_eq!(
            send_time_in(format!("x{now}1").as_bytes(), floor),
            None,
            "20 digits"
        );
        assert_eq!(send_time_in(b"{\"connected\":1}", floor), None);
    }
}
