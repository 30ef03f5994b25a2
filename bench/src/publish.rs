//! The publishing side: a keep-alive HTTP client posting the body template with `{user}` (or, for
//! a publish to many users at once, `{users}`) and `{ts}` filled in, from a bounded set of
//! concurrent publishers, optionally paced. Each send is stamped from [`SendClock`], so a send
//! time is unique in a run and names its event.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::fleet::now_ns;
use crate::report::{Report, round};

/// Whole-request limit for one publish.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands out send times: nanoseconds since the epoch, strictly increasing, so no two events of
/// a run share one.
#[derive(Default)]
pub struct SendClock {
    last: AtomicU64,
}

impl SendClock {
    pub fn stamp(&self) -> u64 {
        let now = now_ns();
        let previous = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }
}

/// Which user each publish of a batch goes to.
#[derive(Clone, Copy)]
pub enum Pick {
    /// No user: the URL and body have no `{user}` (broadcasts).
    Nobody,
    /// A user drawn at random (a fixed seed, so runs are comparable).
    Random,
    /// Publish `i` goes to user `i % users`, so every user gets the same number.
    RoundRobin,
    /// Publish `i` goes to this many users at once, from user `i * size` on (wrapping around),
    /// named in the body's `{users}`; the answer must list each of them.
    Batch(usize),
}

/// A batch of publishes.
pub struct Plan<'a> {
    pub url_template: &'a str,
    pub users: &'a [Arc<str>],
    pub pick: Pick,
    pub count: u64,
    pub concurrency: usize,
    /// Publishes per second across all publishers; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    /// No publish starts once this long has passed since the first, even if fewer than `count`
    /// were sent.
    pub time_limit: Option<Duration>,
}

/// One acknowledged publish.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Index into the plan's users of the (first) recipient, `None` for a broadcast.
    pub user: Option<u32>,
    /// Users it went to: `user` and the ones after it, wrapping around the plan's users.
    pub recipients: u32,
    pub send_time: u64,
    /// When its answer had been read, in ns since the epoch.
    pub answer_time: u64,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub sent: Vec<Sent>,
    /// Request round trips of the acknowledged publishes.
    pub latencies_ns: Vec<u64>,
    pub failures: HashMap<String, u64>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
}

/// Posts notifications or broadcasts over keep-alive connections.
pub struct Publisher {
    client: reqwest::Client,
    body_template: String,
    pub clock: SendClock,
}

impl Publisher {
    pub fn new(headers: &[(String, String)], body_template: String) -> anyhow::Result<Self> {
        let mut defaults = HeaderMap::new();
        defaults.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("bad header name {name:?}"))?;
            let mut value = HeaderValue::from_str(value)
                .with_context(|| format!("bad value for header {name}"))?;
            value.set_sensitive(true);
            defaults.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(defaults)
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .context("could not set up the HTTP client")?;
        Ok(Self {
            client,
            body_template,
            clock: SendClock::default(),
        })
    }

    /// Sends one publish to `url` for `to`; returns its send time, round trip and answer time.
    /// A publish to many users counts only if its answer lists each of them.
    async fn post(&self, url: &str, to: &Recipients<'_>) -> Result<(u64, Duration, u64), String> {
        let send_time = self.clock.stamp();
        let mut body = self.body_template.replace("{ts}", &send_time.to_string());
        match to {
            Recipients::One(user) => body = body.replace("{user}", user),
            Recipients::Many(users) => {
                // JSON-encoded, so a prefix with a quote in it still makes a valid body.
                let list = serde_json::to_string(users).unwrap_or_default();
                body = body.replace("{users}", &list);
            }
        }
        let began = Instant::now();
        let response = self
            .client
            .post(url)
            .body(body)
            .send()
            .await
            .map_err(|error| root_cause(&error))?;
        let status = response.status();
        // Read the answer to its end so the connection goes back to the pool.
        let read = response.bytes().await;
        let round_trip = began.elapsed();
        let answer_time = now_ns();
        if !status.is_success() {
            return Err(format!("status {}", status.as_u16()));
        }
        let answer = read.map_err(|error| root_cause(&error))?;
        if let Recipients::Many(users) = to {
            check_batch_answer(&answer, users)?;
        }
        Ok((send_time, round_trip, answer_time))
    }

    /// Runs `plan` with `plan.concurrency` publishers sharing one counter of publishes left.
    pub async fn run(self: &Arc<Self>, plan: Plan<'_>) -> BatchOutcome {
        let next = Arc::new(AtomicU64::new(0));
        let began = Instant::now();
        let users: Arc<[Arc<str>]> = plan.users.into();
        let url_template: Arc<str> = plan.url_template.into();
        let workers: Vec<_> = (0..plan.concurrency.max(1))
            .map(|_| {
                let (publisher, next, users, url_template) = (
                    self.clone(),
                    next.clone(),
                    users.clone(),
                    url_template.clone(),
                );
                let (count, rate, pick) = (plan.count, plan.rate, plan.pick);
                let stop_at = plan.time_limit.map(|limit| began + limit);
                tokio::spawn(async move {
                    let mut outcome = BatchOutcome::default();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return outcome;
                        }
                        if let Some(rate) = rate {
                            let due = began + Duration::from_secs_f64(index as f64 / rate);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        if stop_at.is_some_and(|stop_at| Instant::now() >= stop_at) {
                            return outcome;
                        }
                        let user = pick_user(pick, index, users.len());
                        let name = user.map_or("", |user| &*users[user as usize]);
                        let url = url_template.replace("{user}", name);
                        let (to, recipients) = match (pick, user) {
                            (Pick::Batch(size), Some(first)) => {
                                let members = batch_members(first, size, users.len());
                                let names: Vec<&str> =
                                    members.map(|user| &*users[user as usize]).collect();
                                let recipients = names.len() as u32;
                                (Recipients::Many(names), recipients)
                            }
                            _ => (Recipients::One(name), u32::from(user.is_some())),
                        };
                        match publisher.post(&url, &to).await {
                            Ok((send_time, round_trip, answer_time)) => {
                                outcome.sent.push(Sent {
                                    user,
                                    recipients,
                                    send_time,
                                    answer_time,
                                });
                                outcome.latencies_ns.push(round_trip.as_nanos() as u64);
                            }
                            Err(reason) => *outcome.failures.entry(reason).or_insert(0) += 1,
                        }
                    }
                })
            })
            .collect();
        let mut total = BatchOutcome::default();
        for worker in workers {
            let Ok(outcome) = worker.await else {
                *total
                    .failures
                    .entry("publisher panicked".into())
                    .or_insert(0) += 1;
                continue;
            };
            total.sent.extend(outcome.sent);
            total.latencies_ns.extend(outcome.latencies_ns);
            for (reason, count) in outcome.failures {
                *total.failures.entry(reason).or_insert(0) += count;
            }
        }
        total.elapsed = began.elapsed();
        total
    }
}

/// Who one publish goes to, as the body names them.
enum Recipients<'a> {
    /// `{user}`: one user, or nobody (`""`) for a broadcast.
    One(&'a str),
    /// `{users}`: a JSON list.
    Many(Vec<&'a str>),
}

/// The (first) user of publish `index`.
fn pick_user(pick: Pick, index: u64, users: usize) -> Option<u32> {
    let users = users.max(1) as u64;
    match pick {
        Pick::Nobody => None,
        Pick::RoundRobin => Some((index % users) as u32),
        Pick::Random => Some((splitmix64(index) % users) as u32),
        Pick::Batch(size) => Some((index.wrapping_mul(size as u64) % users) as u32),
    }
}

/// The users of a batch of `size` from user `first` on, wrapping around `users`; no user twice
/// (a batch larger than the users holds each of them once).
pub fn batch_members(first: u32, size: usize, users: usize) -> impl Iterator<Item = u32> {
    let users = users.max(1);
    (0..size.min(users)).map(move |offset| ((first as usize + offset) % users) as u32)
}

/// A batch's answer must be `{"notifications":[{"userId","id"}, ...]}` naming each of `users`,
/// in the order sent, each with an id; anything else is the reason it does not count.
fn check_batch_answer(answer: &[u8], users: &[&str]) -> Result<(), String> {
    let answer: serde_json::Value =
        serde_json::from_slice(answer).map_err(|_| "answer is not JSON".to_owned())?;
    let Some(listed) = answer["notifications"].as_array() else {
        return Err("answer has no notifications list".into());
    };
    if listed.len() != users.len() {
        return Err(format!(
            "answer lists {} of {} users",
            listed.len(),
            users.len()
        ));
    }
    for (entry, user) in listed.iter().zip(users) {
        if entry["userId"].as_str() != Some(user) {
            return Err("answer lists other users or another order".into());
        }
        if entry["id"].as_str().is_none_or(str::is_empty) {
            return Err("answer lists a user without an id".into());
        }
    }
    Ok(())
}

/// A fixed, well-mixed pseudo-random sequence (SplitMix64): good enough to spread publishes.
fn splitmix64(index: u64) -> u64 {
    let mut z = index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The innermost cause of a reqwest error (its outer layers repeat the URL).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.to_string().contains("timed out") {
        return "timed out".into();
    }
    cause.to_string()
}

/// `{what}_ok`, `_failed`, `_s`, `_per_s`, the round trips and the failure reasons of a batch.
pub fn add_publishes(report: &mut Report, what: &str, mut sent: BatchOutcome) {
    let ok = sent.sent.len() as u64;
    report.add(&format!("{what}_ok"), ok, "");
    let failed: u64 = sent.failures.values().sum();
    report.add(&format!("{what}_failed"), failed, "");
    report.seconds(&format!("{what}_s"), sent.elapsed);
    let rate = ok as f64 / sent.elapsed.as_secs_f64().max(1e-9);
    report.add(&format!("{what}_per_s"), round(rate, 1), "/s");
    report.percentiles(&format!("{what}_latency"), &mut sent.latencies_ns);
    report.reasons(&format!("{what}_failure_reasons"), &sent.failures);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_are_unique_and_increasing_even_within_one_nanosecond() {
        let clock = SendClock::default();
        let stamps: Vec<u64> = (0..10_000).map(|_| clock.stamp()).collect();
        assert!(stamps.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn batches_cycle_through_the_users_and_every_user_gets_the_same_share() {
        let (users, size) = (5, 2);
        let mut counts = [0; 5];
        for index in 0..10 {
            let first = pick_user(Pick::Batch(size), index, users).unwrap();
            for member in batch_members(first, size, users) {
                counts[member as usize] += 1;
            }
        }
        assert_eq!(counts, [4; 5]);
        let wrapped: Vec<u32> = batch_members(4, 3, 5).collect();
        assert_eq!(wrapped, [4, 0, 1]);
        let capped: Vec<u32> = batch_members(1, 9, 3).collect();
        assert_eq!(capped, [1, 2, 0], "never a user twice");
    }

    #[test]
    fn a_batch_answer_counts_only_if_it_lists_every_user_in_order_with_an_id() {
        let users = ["a", "b"];
        let good = br#"{"notifications":[{"userId":"a","id":"1"},{"userId":"b","id":"2"}]}"#;
        assert_eq!(check_batch_answer(good, &users), Ok(()));
        let short = br#"{"notifications":[{"userId":"a","id":"1"}]}"#;
        assert_eq!(
            check_batch_answer(short, &users),
            Err("answer lists 1 of 2 users".into())
        );
        let swapped = br#"{"notifications":[{"userId":"b","id":"1"},{"userId":"a","id":"2"}]}"#;
        assert!(check_batch_answer(swapped, &users).is_err());
        let no_id = br#"{"notifications":[{"userId":"a","id":"1"},{"userId":"b","id":""}]}"#;
        assert!(check_batch_answer(no_id, &users).is_err());
        assert!(check_batch_answer(br#"{"id":"1"}"#, &users).is_err());
        assert!(check_batch_answer(b"created", &users).is_err());
    }

    #[test]
    fn round_robin_gives_every_user_the_same_share() {
        let mut counts = [0; 4];
        for index in 0..40 {
            counts[pick_user(Pick::RoundRobin, index, 4).unwrap() as usize] += 1;
        }
        assert_eq!(counts, [10; 4]);
    }
}
