//! The pusher: takes the pushes owed from the store's queue, makes each (`message`), and
//! records what became of it (docs/protocol.md#web-push). It runs beside the server and shares
//! nothing with publishing but the queue, so a slow or hanging push service delays only pushes:
//! a publish's `201` never waits for one.
//!
//! It runs on a thread of its own at the OS's idle priority (`SCHED_IDLE`): encrypting and
//! sending pushes takes only CPU that serving streams and publishes leaves over, so pushing
//! never slows publishing, and under a load that takes every core, pushes wait for it to pass
//! (BENCHMARKS.md#web-push). The queue is read and settled on the server's runtime, so the store
//! is never held by a thread that may wait for a core.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::VapidKey;
use super::endpoint::{EndpointPolicy, PublicOnly, literal_is_internal};
use super::message::{self, Notice, Recipient};
use super::pressure::Publishing;
use crate::metrics::Metrics;
use crate::store::push::{PushJob, PushOutcome};
use crate::store::{Store, StoreError};

/// Pushes in flight at once.
const CONCURRENCY: usize = 64;
/// While pushes are in flight, the queue is read once this many can start: each read is a
/// store call, and the store is shared with publishing.
const START_BATCH: usize = 16;
/// While pushes are in flight, outcomes are recorded this many at a time, or each [`POLL`]:
/// each record is a write, and on SQLite writes take turns with publishes (a few large ones
/// cost the writer far less than many small ones).
const SETTLE_BATCH: usize = 1024;
/// While publishes come in a burst, pushes start at most once per this (up to [`CONCURRENCY`]
/// at a time): the rest waits for the burst to pass, and pushes never stop altogether.
const BURST_PACE: Duration = Duration::from_millis(500);
/// The longest one try may take, connecting included.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay without `Retry-After`; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How often the queue is looked at when nothing wakes the pusher (retries falling due, and
/// pushes another node queued).
const POLL: Duration = Duration::from_millis(500);

/// What the pusher needs; built once at start.
pub struct Pusher {
    pub store: Store,
    pub key: Arc<VapidKey>,
    pub subject: String,
    pub endpoints: EndpointPolicy,
    pub metrics: Arc<Metrics>,
    /// Woken by the store when a commit queued pushes.
    pub queued: Arc<Notify>,
    /// The server's runtime, where the store is called.
    pub server: Handle,
    /// Publishes in flight: in a burst, pushes start at [`BURST_PACE`].
    pub publishing: Publishing,
}

impl Pusher {
    /// Starts [`Pusher::run`] on its own thread at idle priority (see the module docs); the
    /// receiver is told when it has stopped.
    pub fn start(self, stop: CancellationToken) -> std::io::Result<oneshot::Receiver<()>> {
        let (stopped, told) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("herald-push")
            .build()?;
        std::thread::Builder::new()
            .name("herald-push".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(self.run(stop));
                // In-flight pushes are dropped with the runtime: they stay owed.
                drop(runtime);
                let _ = stopped.send(());
            })?;
        Ok(told)
    }

    /// Pushes until `stop`; what is in flight then is abandoned and stays owed (made after the
    /// next start: at least once).
    pub async fn run(self, stop: CancellationToken) {
        let client = match client(&self.endpoints) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the push client: no pushes will be made");
                return;
            }
        };
        let this = Arc::new(self);
        let mut in_flight: JoinSet<(PushJob, PushOutcome)> = JoinSet::new();
        let mut settled: Vec<(PushJob, PushOutcome)> = Vec::new();
        // Whether the queue may hold jobs not started: it did when last read, or was woken since.
        let mut maybe_due = true;
        let mut last_start = Instant::now() - BURST_PACE;
        let mut polls = tokio::time::interval(POLL);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if settled.len() >= SETTLE_BATCH || (in_flight.is_empty() && !settled.is_empty()) {
                this.settle(std::mem::take(&mut settled)).await;
            }
            let room = CONCURRENCY - in_flight.len();
            let next_start = last_start + BURST_PACE;
            let can_start = room >= START_BATCH || in_flight.is_empty();
            let mut paced = false;
            if maybe_due && can_start {
                paced = this.publishing.in_burst() && Instant::now() < next_start;
                if !paced {
                    let started = this.start_due(&client, room, &mut in_flight).await;
                    maybe_due = started == room;
                    last_start = Instant::now();
                }
            }
            // Woken by commits only when one could start pushes now: otherwise a burst of
            // publishes would wake this thread on every commit, and each wake-up costs the
            // writer, on publishing's path. Unheard, the queue is read when this can start.
            let listen = can_start && !paced;
            if !listen {
                maybe_due = true;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(next_start), if paced => {}
                Some(done) = in_flight.join_next() => {
                    settled.extend(done.ok());
                    while let Some(done) = in_flight.try_join_next() {
                        settled.extend(done.ok());
                    }
                }
                () = this.queued.notified(), if listen => maybe_due = true,
                _ = polls.tick() => {
                    maybe_due = true;
                    this.settle(std::mem::take(&mut settled)).await;
                    this.count_queue().await;
                }
            }
        }
        // What was made is recorded (else it would be made again after the next start).
        this.settle(settled).await;
        in_flight.abort_all();
    }

    /// Starts up to `room` jobs that are due; returns how many it started.
    async fn start_due(
        self: &Arc<Self>,
        client: &reqwest::Client,
        room: usize,
        in_flight: &mut JoinSet<(PushJob, PushOutcome)>,
    ) -> usize {
        let now_ms = crate::domain::now_unix_ms();
        let store = self.store.clone();
        let due = self.on_server(async move { store.due_pushes(now_ms, room).await });
        let jobs = match due.await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "cannot read the push queue");
                return 0;
            }
        };
        let started = jobs.len();
        for job in jobs {
            let this = self.clone();
            let client = client.clone();
            in_flight.spawn(async move {
                let outcome = this.try_push(&client, &job).await;
                (job, outcome)
            });
        }
        started
    }

    async fn settle(&self, settled: Vec<(PushJob, PushOutcome)>) {
        if settled.is_empty() {
            return;
        }
        let removed = settled
            .iter()
            .filter(|(_, outcome)| *outcome == PushOutcome::SubscriptionGone)
            .count();
        let store = self.store.clone();
        match self
            .on_server(async move { store.settle_pushes(settled).await })
            .await
        {
            Ok(()) => {
                self.metrics
                    .push_subscriptions_removed
                    .inc_by(removed as u64);
            }
            // The jobs stay queued and are made again (at least once; `Topic` collapses
            // repeats): retries when they fall due, and on SQLite the rest after the next start.
            Err(error) => tracing::warn!(%error, "cannot record pushes made"),
        }
    }

    async fn count_queue(&self) {
        let store = self.store.clone();
        let depth = self.on_server(async move { store.push_queue_depth().await });
        if let Ok((depth, _)) = depth.await {
            self.metrics.push_queue_depth.set(depth as i64);
        }
    }

    /// Runs a store call on the server's runtime: its reads hold a reader connection, which a
    /// thread at idle priority could keep while it waits for a core.
    async fn on_server<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.server.spawn(call).await.map_err(|error| {
            StoreError::Unavailable(format!("the server's runtime is stopping: {error}"))
        })?
    }

    /// One try of `job`; never fails, only says what to do next.
    async fn try_push(&self, client: &reqwest::Client, job: &PushJob) -> PushOutcome {
        let now_ms = crate::domain::now_unix_ms();
        let Some(json) = &job.notification else {
            // Deleted, expired, read, or its subscription is gone: nothing is owed now.
            return PushOutcome::Done;
        };
        let left_ms = job.deadline_ms - now_ms;
        if left_ms <= 0 {
            self.metrics.pushes_failed.inc();
            return PushOutcome::Done;
        }
        let endpoint = match url::Url::parse(&job.endpoint) {
            Ok(endpoint) => endpoint,
            Err(_) => return self.give_up(job, "its endpoint is not a URL"),
        };
        if let Err(problem) = self.endpoints.check(&endpoint) {
            return self.give_up(job, &problem);
        }
        if !self.endpoints.is_insecure() && literal_is_internal(&endpoint) {
            return self.give_up(job, "its endpoint is an internal address");
        }
        let message = match message::build(
            &Notice {
                json,
                ttl_secs: (left_ms as u64).div_ceil(1000),
            },
            &Recipient {
                endpoint: &job.endpoint,
                p256dh: &job.p256dh,
                auth: &job.auth,
            },
            &self.key,
            &self.subject,
            (now_ms / 1000) as u64,
        ) {
            Ok(message) => message,
            Err(error) => return self.give_up(job, &error.to_string()),
        };
        let sent = client
            .post(message.endpoint)
            .header("TTL", message.ttl_secs)
            .header("Urgency", message.urgency)
            .header("Topic", message.topic)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", message.authorization)
            .body(message.body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, subscription = %job.subscription, "push failed");
                return self.retry(job, None);
            }
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => {
                self.metrics.pushes_sent.inc();
                PushOutcome::Done
            }
            // Counted once the store has removed it (`settle`).
            404 | 410 => PushOutcome::SubscriptionGone,
            429 | 500..=599 => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(retry_after);
                self.retry(job, retry_after)
            }
            _ => self.give_up(job, &format!("the push service answered {status}")),
        }
    }

    /// Schedules the next try, counted from now (the answer, not the request): after
    /// `Retry-After` when the service gave one, else after a delay that doubles with each try;
    /// gives up if that falls past the deadline.
    fn retry(&self, job: &PushJob, retry_after: Option<Duration>) -> PushOutcome {
        let now_ms = crate::domain::now_unix_ms();
        let backoff = retry_after.unwrap_or_else(|| {
            let doubled = FIRST_BACKOFF.saturating_mul(1 << job.attempts.min(16));
            doubled.min(MAX_BACKOFF)
        });
        let at_ms = now_ms.saturating_add(backoff.as_millis() as i64);
        if at_ms >= job.deadline_ms {
            return self.give_up(job, "its push service kept failing until its TTL ran out");
        }
        PushOutcome::RetryAt(at_ms)
    }

    fn give_up(&self, job: &PushJob, why: &str) -> PushOutcome {
        tracing::warn!(subscription = %job.subscription, user = %job.user, "push not made: {why}");
        self.metrics.pushes_failed.inc();
        PushOutcome::Done
    }
}

/// Puts the calling thread in `SCHED_IDLE`; where the OS refuses, pushes are made at the
/// server's priority, and say so once.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::warn!(
            ?error,
            "pushes are made at the server's priority: cannot lower it"
        );
    }
}

/// The HTTP client pushes go out on: no redirects (a push service does not redirect, and a
/// redirect could lead inside), no proxy from the environment, each try within
/// [`TRY_TIMEOUT`], and names resolved to public addresses only ([`PublicOnly`]).
fn client(endpoints: &EndpointPolicy) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(TRY_TIMEOUT)
        .connect_timeout(TRY_TIMEOUT)
        .dns_resolver(PublicOnly::shared(endpoints.is_insecure()))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let parsed = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(retry_after("soon"), None);
    }
}
