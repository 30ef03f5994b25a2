//! What arrived compared with what should have: each stream's deliveries checked against the
//! send times it was due (sorted), counted once per stream, with the latency of each first
//! arrival. A send time a stream was not due is `unexpected`, never `delivered`.

use std::collections::HashMap;

use crate::fleet::StreamOutcome;
use crate::publish::{Sent, batch_members};
use crate::report::{Report, round};

/// What arrived compared with what should have.
#[derive(Debug, Default)]
pub struct Tally {
    expected: u64,
    /// Expected events that arrived (each counted once per stream).
    delivered: u64,
    /// Arrivals of an event the stream already had (on this connection or an earlier one).
    duplicates: u64,
    /// Arrivals of events this stream should not have had.
    unexpected: u64,
    /// Each first arrival's send time (ns since the epoch) and latency (receive minus send
    /// time), in the order the streams are counted.
    arrivals: Vec<(u64, u64)>,
    /// The latest first arrival of an expected event, in ns since the epoch (0: none).
    last_arrival_ns: u64,
    events_without_send_time: u64,
    comments: u64,
}

/// Compares each stream's deliveries with its expected send times (sorted), counting as
/// duplicates anything already received on an `earlier` connection.
pub fn tally(
    outcomes: &[StreamOutcome],
    expected: &[&[u64]],
    earlier: Option<&[Vec<u64>]>,
) -> Tally {
    let mut tally = Tally::default();
    for (index, outcome) in outcomes.iter().enumerate() {
        let expected = expected.get(index).copied().unwrap_or_default();
        tally.expected += expected.len() as u64;
        tally.events_without_send_time += outcome.other_events;
        tally.comments += outcome.comments;
        let earlier = earlier.and_then(|earlier| earlier.get(index));
        let mut counts: HashMap<u64, (u64, u64)> = HashMap::new();
        for delivery in &outcome.deliveries {
            let entry = counts.entry(delivery.send_time).or_insert((0, u64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(delivery.latency_ns);
        }
        for (send_time, (count, latency)) in counts {
            let seen_before = earlier.is_some_and(|earlier| earlier.contains(&send_time));
            if seen_before {
                tally.duplicates += count;
            } else if expected.binary_search(&send_time).is_ok() {
                tally.delivered += 1;
                tally.duplicates += count - 1;
                tally.arrivals.push((send_time, latency));
                tally.last_arrival_ns = tally.last_arrival_ns.max(send_time + latency);
            } else {
                tally.unexpected += count;
            }
        }
    }
    tally
}

impl Tally {
    /// Every first arrival as `SEND_NS LATENCY_NS` lines, by send time.
    pub fn timeline(&self) -> String {
        let mut arrivals = self.arrivals.clone();
        arrivals.sort_unstable();
        arrivals
            .iter()
            .map(|(send_time, latency)| format!("{send_time} {latency}\n"))
            .collect()
    }

    /// Expected events that arrived, per second from `first_send` (ns since the epoch) to the
    /// last first arrival; `None` when nothing arrived.
    pub fn delivered_per_second(&self, first_send: u64) -> Option<f64> {
        let span_ns = self.last_arrival_ns.checked_sub(first_send)?;
        if self.delivered == 0 {
            return None;
        }
        Some(round(
            self.delivered as f64 * 1e9 / span_ns.max(1) as f64,
            1,
        ))
    }
}

/// Send times of the acknowledged publishes, one sorted list per stream: a publish reaches its
/// `recipients` users from its `user` on, wrapping around the first `users` streams (the users';
/// streams after them, `streams` in all, are due nothing).
pub fn send_times_per_user(sent: &[Sent], users: usize, streams: usize) -> Vec<Vec<u64>> {
    let mut per_user = vec![Vec::new(); streams.max(users)];
    for sent in sent {
        if let Some(first) = sent.user {
            for user in batch_members(first, sent.recipients as usize, users) {
                per_user[user as usize].push(sent.send_time);
            }
        }
    }
    per_user.iter_mut().for_each(|times| times.sort_unstable());
    per_user
}

pub fn add_tally(report: &mut Report, tally: &Tally, with_latency: bool) {
    report.add("expected", tally.expected, "deliveries");
    report.add("delivered", tally.delivered, "");
    report.add("lost", tally.expected - tally.delivered, "");
    report.add("duplicates", tally.duplicates, "");
    report.add("unexpected", tally.unexpected, "");
    report.add(
        "events_without_send_time",
        tally.events_without_send_time,
        "",
    );
    report.add("comments", tally.comments, "(heartbeats)");
    if with_latency {
        let mut latencies: Vec<u64> = tally.arrivals.iter().map(|&(_, latency)| latency).collect();
        report.percentiles("delivery_latency", &mut latencies);
    }
}

/// For each event (by its send time, `send_times` sorted), how long until every opened stream
/// had it: the latency of the last stream's first arrival. An event some opened stream never
/// received is left out, and so is everything when no stream opened.
pub fn all_received_latencies(outcomes: &[StreamOutcome], send_times: &[u64]) -> Vec<u64> {
    let mut opened = outcomes
        .iter()
        .filter(|outcome| outcome.open_latency.is_some())
        .peekable();
    if opened.peek().is_none() {
        return Vec::new();
    }
    // `None` once some stream lacks the event.
    let mut slowest: Vec<Option<u64>> = vec![Some(0); send_times.len()];
    for outcome in opened {
        let mut first: Vec<Option<u64>> = vec![None; send_times.len()];
        for delivery in &outcome.deliveries {
            if let Ok(event) = send_times.binary_search(&delivery.send_time) {
                let latency = first[event].get_or_insert(delivery.latency_ns);
                *latency = (*latency).min(delivery.latency_ns);
            }
        }
        for (slowest, first) in slowest.iter_mut().zip(first) {
            *slowest = slowest
                .zip(first)
                .map(|(slowest, first)| slowest.max(first));
        }
    }
    slowest.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fleet::Delivery;

    fn opened_with(deliveries: &[(u64, u64)]) -> StreamOutcome {
        StreamOutcome {
            open_latency: Some(Duration::from_millis(1)),
            deliveries: deliveries
                .iter()
                .map(|&(send_time, latency_ns)| Delivery {
                    send_time,
                    latency_ns,
                })
                .collect(),
            ..StreamOutcome::default()
        }
    }

    #[test]
    fn each_event_takes_its_slowest_first_arrival_and_events_someone_missed_are_left_out() {
        let outcomes = [
            // A duplicate of 100 arrives later; only the first arrival counts.
            opened_with(&[(100, 5), (200, 7), (100, 50)]),
            opened_with(&[(200, 3), (100, 9), (300, 4)]),
            // Never opened: not waited for.
            StreamOutcome::default(),
        ];
        assert_eq!(all_received_latencies(&outcomes, &[100, 200, 300]), [9, 7]);
    }

    fn sent(user: u32, recipients: u32, send_time: u64) -> Sent {
        Sent {
            user: Some(user),
            recipients,
            send_time,
            answer_time: send_time + 1,
        }
    }

    #[test]
    fn a_batch_is_due_to_each_of_its_users_and_wraps_around_the_users_only() {
        // Three users and one idle stream; the second batch wraps from user 2 to user 0.
        let batches = [sent(0, 2, 30), sent(2, 2, 10), sent(1, 1, 20)];
        let per_user = send_times_per_user(&batches, 3, 4);
        assert_eq!(per_user, [vec![10, 30], vec![20, 30], vec![10], vec![]]);
        let broadcast = Sent {
            user: None,
            recipients: 0,
            send_time: 5,
            answer_time: 6,
        };
        let nobody: [Vec<u64>; 2] = [vec![], vec![]];
        assert_eq!(send_times_per_user(&[broadcast], 2, 2), nobody);
    }

    #[test]
    fn the_delivery_rate_runs_from_the_first_send_to_the_last_first_arrival() {
        // Two events of a batch sent at 1 s; one arrives 0.5 s later, one 1 s later, twice.
        let second = 1_000_000_000;
        let outcomes = [
            opened_with(&[(second, second / 2)]),
            opened_with(&[(second, second), (second, 3 * second)]),
        ];
        let due = [second];
        let counted = tally(&outcomes, &[&due, &due], None);
        assert_eq!((counted.delivered, counted.duplicates), (2, 1));
        assert_eq!(counted.delivered_per_second(second), Some(2.0));
        // Each stream's first arrival, by send time; the duplicate is not in it.
        assert_eq!(
            counted.timeline(),
            format!("{second} {}\n{second} {second}\n", second / 2)
        );
        let nothing = tally(&[StreamOutcome::default()], &[&due], None);
        assert_eq!(nothing.delivered_per_second(second), None);
    }

    #[test]
    fn no_opened_stream_means_no_figure() {
        assert!(all_received_latencies(&[StreamOutcome::default()], &[100]).is_empty());
        assert!(all_received_latencies(&[], &[100]).is_empty());
    }
}
