//! Web Push runs (docs/protocol.md, "Web Push"): subscribing the run's users to the bench's own
//! [`PushService`], the `push` scenario (users with no stream, one publish each, the time from
//! each `201` to its push), and [`PushTally`], what the push service received compared with
//! what was published, which targeted's `--push-subscribe` reports too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;

use crate::publish::{BatchOutcome, Pick, Plan, Publisher, Sent, add_publishes};
use crate::push_service::{Arrival, PushService};
use crate::report::{Report, Sample, add_resources, round};
use crate::setup::Setup;

/// The subscriptions' keys, one valid uncompressed P-256 point and 16 bytes of `auth` for every
/// user: the push service never decrypts, so one key pair serves all.
const P256DH: &str =
    "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

/// N users, none with a stream, each subscribed to the bench's push service; one publish to
/// each from C publishers; waits (at most `--deadline` after the last answer) until every
/// user's push arrived.
pub async fn offline_users(setup: &Setup) -> anyhow::Result<Report> {
    let args = &setup.args;
    let service = PushService::start().await?;
    let mut report = Report::new("push", args.label.as_deref());
    report.add("users", args.streams as u64, "(no streams: all away)");
    report.add("concurrency", args.concurrency as u64, "in flight");
    report.add("rate", args.rate, "/s");
    report.add("push_service", service.addr().to_string(), "");
    let subscribed = subscribe_all(setup, &service, &mut report).await?;
    let before = Sample::take(&args.server_pids);
    eprintln!(
        "bench: one publish to each of {} users, {} at a time",
        subscribed.len(),
        args.concurrency
    );
    let sent = setup
        .publisher
        .run(Plan {
            url_template: &args.pub_url,
            users: &subscribed,
            pick: Pick::RoundRobin,
            count: subscribed.len() as u64,
            concurrency: args.concurrency,
            rate: args.rate,
            time_limit: None,
        })
        .await;
    let expected = sent.sent.len() as u64;
    eprintln!("bench: waiting for {expected} pushes");
    service
        .wait_received(expected, Instant::now() + args.deadline)
        .await;
    let after = Sample::take(&args.server_pids);
    let counted = PushTally::count(&sent.sent, &subscribed, &service.arrivals(), true);
    add_publishes(&mut report, "publish", sent);
    counted.add_to(&mut report);
    add_resources(&mut report, before, after, None);
    Ok(report)
}

/// Subscribes each of the run's users to `service` through `--push-sub-url`, `--concurrency`
/// at a time, and reports it (`subscribe_*`); returns the users whose subscription was taken,
/// in order. Fails if none was.
pub async fn subscribe_all(
    setup: &Setup,
    service: &PushService,
    report: &mut Report,
) -> anyhow::Result<Vec<Arc<str>>> {
    let args = &setup.args;
    eprintln!(
        "bench: subscribing {} users to the push service at {}",
        setup.users.len(),
        service.addr()
    );
    // `{user}` in the endpoint is filled in per request, as in the URL.
    let body = format!(
        r#"{{"endpoint":"{}","keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}"#,
        service.endpoint("{user}")
    );
    let subscriber = Arc::new(Publisher::new(&args.headers, body)?);
    let outcome = subscriber
        .run(Plan {
            url_template: &args.push_sub_url,
            users: &setup.users,
            pick: Pick::RoundRobin,
            count: setup.users.len() as u64,
            concurrency: args.concurrency,
            rate: None,
            time_limit: None,
        })
        .await;
    let subscribed = subscribed_users(&outcome, &setup.users);
    if subscribed.is_empty() {
        let reasons: Vec<&String> = outcome.failures.keys().collect();
        bail!(
            "the server took no subscription ({reasons:?}): is push on (herald: --vapid-key, \
             --vapid-subject, --push-insecure-endpoints)?"
        );
    }
    add_publishes(report, "subscribe", outcome);
    Ok(subscribed)
}

/// The users whose subscription was acknowledged, in the order of `users`.
fn subscribed_users(outcome: &BatchOutcome, users: &[Arc<str>]) -> Vec<Arc<str>> {
    let mut indices: Vec<u32> = outcome.sent.iter().filter_map(|sent| sent.user).collect();
    indices.sort_unstable();
    indices.dedup();
    indices
        .into_iter()
        .map(|index| users[index as usize].clone())
        .collect()
}

/// What the push service received compared with the acknowledged publishes, each to one user
/// with one subscription (so one push each).
#[derive(Debug, Default)]
pub struct PushTally {
    /// Acknowledged publishes: each is owed one push.
    expected: u64,
    /// Pushes to a user who was published to, each `Topic` once.
    received: u64,
    /// Pushes of a `Topic` already received.
    duplicates: u64,
    /// Pushes to a user this run never had a `201` for, or to no user at all.
    unexpected: u64,
    /// Why received pushes were malformed, and how many each.
    malformed: HashMap<String, u64>,
    /// From each `201` to its user's first push, when every user got one publish.
    latencies_ns: Option<Vec<u64>>,
    /// Pushes that arrived before the bench had read their `201`.
    before_answer: u64,
    /// Send time of the first publish, arrival of the last push received, and the last `201`,
    /// in ns since the epoch (0: none).
    first_send_ns: u64,
    last_arrival_ns: u64,
    last_answer_ns: u64,
}

impl PushTally {
    /// Compares `arrivals` with the publishes in `sent` (indices into `users`). With
    /// `one_each` (every user was published to once), each user's first push is timed from
    /// its `201`.
    pub fn count(sent: &[Sent], users: &[Arc<str>], arrivals: &[Arrival], one_each: bool) -> Self {
        let index: HashMap<&str, usize> = users
            .iter()
            .enumerate()
            .map(|(index, user)| (&**user, index))
            .collect();
        // Per user: its publishes acknowledged, and (one_each) the time of its 201.
        let mut owed = vec![0u32; users.len()];
        let mut answered = vec![0u64; users.len()];
        for sent in sent {
            if let Some(user) = sent
                .user
                .map(|user| user as usize)
                .filter(|u| *u < users.len())
            {
                owed[user] += 1;
                answered[user] = sent.answer_time;
            }
        }
        let mut tally = Self {
            expected: sent.len() as u64,
            first_send_ns: sent.iter().map(|sent| sent.send_time).min().unwrap_or(0),
            last_answer_ns: sent.iter().map(|sent| sent.answer_time).max().unwrap_or(0),
            ..Self::default()
        };
        let mut latencies = Vec::new();
        let mut timed = vec![false; users.len()];
        for arrival in arrivals {
            if let Some(problem) = arrival.problem {
                *tally.malformed.entry(problem.to_owned()).or_insert(0) += 1;
            }
            let user = index
                .get(arrival.user.as_str())
                .copied()
                .filter(|user| owed[*user] > 0);
            let Some(user) = user else {
                tally.unexpected += 1;
                continue;
            };
            if arrival.repeat {
                tally.duplicates += 1;
                continue;
            }
            tally.received += 1;
            tally.last_arrival_ns = tally.last_arrival_ns.max(arrival.at_ns);
            if one_each && !timed[user] {
                timed[user] = true;
                if arrival.at_ns < answered[user] {
                    tally.before_answer += 1;
                }
                latencies.push(arrival.at_ns.saturating_sub(answered[user]));
            }
        }
        tally.latencies_ns = one_each.then_some(latencies);
        tally
    }

    /// Pushes received per second, from the first publish sent to the last push received.
    pub fn per_second(&self) -> Option<f64> {
        let span_ns = self.last_arrival_ns.checked_sub(self.first_send_ns)?;
        if self.received == 0 || self.first_send_ns == 0 {
            return None;
        }
        Some(round(self.received as f64 * 1e9 / span_ns.max(1) as f64, 1))
    }

    pub fn add_to(&self, report: &mut Report) {
        report.add("push_expected", self.expected, "(one per 201)");
        report.add("push_received", self.received, "");
        report.add(
            "push_lost",
            self.expected.saturating_sub(self.received),
            "(never arrived in time)",
        );
        report.add("push_duplicates", self.duplicates, "");
        report.add("push_unexpected", self.unexpected, "");
        let malformed: u64 = self.malformed.values().sum();
        report.add("push_malformed", malformed, "");
        report.reasons("push_malformed_reasons", &self.malformed);
        report.add(
            "push_per_s",
            self.per_second(),
            "/s (first publish sent to last push)",
        );
        let trail = self.last_arrival_ns.checked_sub(self.last_answer_ns);
        let trail = trail.filter(|_| self.received > 0 && self.last_answer_ns > 0);
        report.add(
            "push_trail_s",
            trail.map(|ns| round(ns as f64 / 1e9, 3)),
            "s (last 201 to last push)",
        );
        if let Some(latencies) = &self.latencies_ns {
            let mut latencies = latencies.clone();
            report.percentiles_at(
                "push_latency",
                &mut latencies,
                &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)],
            );
            report.add("push_before_201", self.before_answer, "(counted as 0 ms)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|name| Arc::from(*name)).collect()
    }

    fn sent(user: u32, send_time: u64, answer_time: u64) -> Sent {
        Sent {
            user: Some(user),
            recipients: 1,
            send_time,
            answer_time,
        }
    }

    fn arrival(user: &str, at_ns: u64) -> Arrival {
        Arrival {
            user: user.into(),
            at_ns,
            problem: None,
            repeat: false,
        }
    }

    #[test]
    fn each_push_is_timed_from_its_users_201_and_the_rest_is_lost() {
        let users = users(&["a", "b", "c"]);
        let sent = [sent(0, 100, 200), sent(1, 110, 250), sent(2, 120, 300)];
        let arrivals = [
            arrival("b", 260),
            // Before the bench read a's 201: counted as 0 ms.
            arrival("a", 190),
            Arrival {
                repeat: true,
                ..arrival("a", 400)
            },
            Arrival {
                problem: Some("no TTL"),
                ..arrival("stranger", 500)
            },
        ];
        let tally = PushTally::count(&sent, &users, &arrivals, true);
        assert_eq!((tally.expected, tally.received), (3, 2));
        assert_eq!((tally.duplicates, tally.unexpected), (1, 1));
        assert_eq!(tally.malformed.get("no TTL"), Some(&1));
        assert_eq!(tally.latencies_ns, Some(vec![10, 0]));
        assert_eq!(tally.before_answer, 1);
        // Two pushes from the first send (100) to the last arrival (260).
        assert_eq!(tally.per_second(), Some(round(2.0 * 1e9 / 160.0, 1)));

        let mut report = Report::new("push", None);
        tally.add_to(&mut report);
        let mut line = Vec::new();
        serde_json::to_writer(&mut line, &report.json()).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(line["push_lost"], 1);
        assert_eq!(line["push_malformed"], 1);
        assert_eq!(line["push_malformed_reasons"]["no TTL"], 1);
        assert_eq!(line["push_latency_p90_ms"], 0.0);
        assert_eq!(line["push_before_201"], 1);
    }

    #[test]
    fn several_publishes_to_a_user_are_counted_but_not_timed() {
        let users = users(&["a", "b"]);
        let sent = [sent(0, 100, 200), sent(0, 110, 250)];
        let arrivals = [arrival("a", 300), arrival("a", 320), arrival("b", 330)];
        let tally = PushTally::count(&sent, &users, &arrivals, false);
        assert_eq!((tally.expected, tally.received), (2, 2));
        assert_eq!(tally.unexpected, 1, "b was published nothing");
        assert_eq!(tally.latencies_ns, None);
        let nothing = PushTally::count(&sent, &users, &[], false);
        assert_eq!(nothing.per_second(), None);
    }

    #[test]
    fn only_acknowledged_subscriptions_count_in_the_order_of_the_users() {
        let users = users(&["a", "b", "c"]);
        let outcome = BatchOutcome {
            sent: vec![sent(2, 1, 2), sent(0, 1, 2)],
            ..BatchOutcome::default()
        };
        assert_eq!(
            subscribed_users(&outcome, &users),
            [users[0].clone(), users[2].clone()]
        );
    }
}
