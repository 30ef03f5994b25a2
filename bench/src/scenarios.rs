//! Six of the scenarios (push, which opens no streams, is [`crate::push`]'s). Each opens its
//! streams (one user per stream), publishes, waits for the deliveries it expects or for
//! `--deadline`, and reports what arrived: nothing waits forever, and whatever did not arrive
//! in time is counted as lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fleet::{Fleet, OpenSummary, StreamOutcome, StreamSpec, failure_counts};
use crate::floor::{Broadcast, FloorProcess};
use crate::publish::{BatchOutcome, Pick, Plan, add_publishes};
use crate::push::{PushTally, subscribe_all};
use crate::push_service::PushService;
use crate::report::{Report, Sample, add_resources, round};
use crate::setup::{BenchArgs, ReplayWith, Setup};
use crate::tally::{Tally, add_tally, all_received_latencies, send_times_per_user, tally};

/// Pause after the last stream opened before reading the server's memory, so allocations made
/// just after the greeting are counted.
const SETTLE: Duration = Duration::from_secs(1);
/// fanout's and floor's pace when `--rate` is not given.
const DEFAULT_FANOUT_RATE: f64 = 10.0;

/// Opens N idle streams as fast as the connect concurrency allows.
pub async fn hold(setup: &Setup) -> Report {
    let mut report = new_report(setup, "hold");
    let before = Sample::take(&setup.args.server_pids);
    let (fleet, open) = open_fleet(setup, setup.specs(None)).await;
    tokio::time::sleep(SETTLE).await;
    let after = Sample::take(&setup.args.server_pids);
    let outcomes = fleet.close().await;
    add_open(&mut report, "", &open, &outcomes);
    add_resources(&mut report, before, after, Some(open.opened));
    report
}

/// K broadcasts at R/s to N streams, at most C of them in flight; every stream should receive
/// every one.
pub async fn fanout(setup: &Setup) -> anyhow::Result<Report> {
    let args = &setup.args;
    let rate = args.rate.unwrap_or(DEFAULT_FANOUT_RATE);
    let mut report = new_report(setup, "fanout");
    report.add("events", args.events, "");
    report.add("rate", rate, "/s");
    report.add("concurrency", args.concurrency as u64, "in flight");
    let before = Sample::take(&args.server_pids);
    let (fleet, open) = open_fleet(setup, setup.specs(None)).await;
    eprintln!("bench: {} broadcasts at {rate}/s", args.events);
    let sent = setup
        .publisher
        .run(Plan {
            url_template: &args.broadcast_url,
            users: &[],
            pick: Pick::Nobody,
            count: args.events,
            concurrency: args.concurrency,
            rate: Some(rate),
            time_limit: None,
        })
        .await;
    let send_times: Vec<u64> = sent.sent.iter().map(|sent| sent.send_time).collect();
    let (outcomes, after) =
        collect_broadcasts(setup, fleet, &open, send_times.len(), &args.server_pids).await;
    add_open(&mut report, "", &open, &outcomes);
    // A handful of broadcasts: each one's round trip, in sending order, shows a slow one.
    let each_ms: Vec<f64> = sent
        .latencies_ns
        .iter()
        .map(|ns| round(*ns as f64 / 1e6, 3))
        .collect();
    report.add_json_only("broadcast_latencies_ms", each_ms);
    add_publishes(&mut report, "broadcast", sent);
    add_broadcast_deliveries(&mut report, &outcomes, send_times, args)?;
    add_resources(&mut report, before, after, None);
    Ok(report)
}

/// fanout against the ideal server of [`crate::floor`] (a child process): the same streams,
/// client, pace and figures, but each broadcast is one frame written straight to every socket.
pub async fn floor(setup: &Setup) -> anyhow::Result<Report> {
    let args = &setup.args;
    let rate = args.rate.unwrap_or(DEFAULT_FANOUT_RATE);
    let server = FloorProcess::start(args.floor_frame)?;
    // The figures are the ideal server's, whatever --server-pid says.
    let server_pids = [server.pid()];
    let mut report = new_report(setup, "floor");
    report.add("events", args.events, "");
    report.add("rate", rate, "/s");
    report.add("writer_threads", server.writer_threads() as u64, "");
    report.add("floor_frame", server.frame().word(), "");
    let before = Sample::take(&server_pids);
    let endpoint = Arc::new(server.endpoint());
    let specs = setup
        .specs(None)
        .into_iter()
        .map(|spec| StreamSpec {
            endpoint: endpoint.clone(),
            ..spec
        })
        .collect();
    let (fleet, open) = open_fleet(setup, specs).await;
    eprintln!(
        "bench: {} broadcasts at {rate}/s from {} writer threads",
        args.events,
        server.writer_threads()
    );
    let server = Arc::new(parking_lot::Mutex::new(server));
    let broadcasts = broadcast_ideal(setup, &server, rate).await?;
    let send_times: Vec<u64> = broadcasts.iter().map(|sent| sent.send_time).collect();
    let (outcomes, after) =
        collect_broadcasts(setup, fleet, &open, send_times.len(), &server_pids).await;
    // The streams are closed; now the server goes (off the runtime's threads: it waits for
    // the child to exit).
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    add_open(&mut report, "", &open, &outcomes);
    let mut write_times: Vec<u64> = broadcasts
        .iter()
        .map(|sent| sent.write_time.as_nanos() as u64)
        .collect();
    report.percentiles("fanout_write", &mut write_times);
    let failed: u64 = broadcasts.iter().map(|sent| sent.failed).sum();
    report.add("fanout_write_failures", failed, "");
    add_broadcast_deliveries(&mut report, &outcomes, send_times, args)?;
    add_resources(&mut report, before, after, None);
    Ok(report)
}

/// M publishes to random users (one stream each) from C concurrent keep-alive publishers.
/// With `--push-subscribe`, each user first gets a subscription to the bench's push service,
/// and every acknowledged publish is owed a push.
pub async fn targeted(setup: &Setup) -> anyhow::Result<Report> {
    let args = &setup.args;
    let mut report = new_report(setup, "targeted");
    report.add("publishes", args.publishes, "");
    report.add("concurrency", args.concurrency as u64, "");
    report.add("rate", args.rate, "/s");
    report.add("idle_streams", args.idle_streams as u64, "(no publishes)");
    report.add("push_subscribe", args.push_subscribe, "");
    let push_service = if args.push_subscribe {
        let service = PushService::start().await?;
        subscribe_all(setup, &service, &mut report).await?;
        Some(service)
    } else {
        None
    };
    let before = Sample::take(&args.server_pids);
    let (fleet, open) = open_fleet(setup, setup.specs(None)).await;
    eprintln!(
        "bench: {} publishes, {} at a time",
        args.publishes, args.concurrency
    );
    let sent = setup
        .publisher
        .run(Plan {
            url_template: &args.pub_url,
            users: &setup.users,
            pick: Pick::Random,
            count: args.publishes,
            concurrency: args.concurrency,
            rate: args.rate,
            time_limit: None,
        })
        .await;
    let acknowledged = sent.sent.len() as u64;
    let deadline = Instant::now() + args.deadline;
    fleet.wait_delivered(acknowledged, deadline).await;
    if let Some(service) = &push_service {
        eprintln!("bench: waiting for {acknowledged} pushes");
        service.wait_received(acknowledged, deadline).await;
    }
    let after = Sample::take(&args.server_pids);
    let outcomes = fleet.close().await;
    let pushes = push_service
        .map(|service| PushTally::count(&sent.sent, &setup.users, &service.arrivals(), false));
    // Idle streams come after the users' and are due nothing.
    let per_user = send_times_per_user(&sent.sent, setup.users.len(), outcomes.len());
    let expected: Vec<&[u64]> = per_user.iter().map(Vec::as_slice).collect();
    add_open(&mut report, "", &open, &outcomes);
    add_publishes(&mut report, "publish", sent);
    let counted = tally(&outcomes, &expected, None);
    write_timeline(args, &counted)?;
    add_tally(&mut report, &counted, true);
    if let Some(pushes) = pushes {
        pushes.add_to(&mut report);
    }
    add_resources(&mut report, before, after, None);
    Ok(report)
}

/// N users with a stream each; K publishes of B users each (one notification per user, cycling
/// through the users) from C publishers with one request in flight each, for at most
/// `--duration`. Every 201 must list its B users; each of them is then due that notification.
pub async fn many_recipients(setup: &Setup) -> Report {
    let args = &setup.args;
    let mut report = new_report(setup, "many-recipients");
    report.add("batch_size", args.batch_size as u64, "users per publish");
    report.add("batches", args.batches, "(planned)");
    report.add("concurrency", args.concurrency as u64, "in flight");
    report.add("rate", args.rate, "/s");
    report.add("duration_s", args.duration.map(|d| d.as_secs_f64()), "s");
    let before = Sample::take(&args.server_pids);
    let (fleet, open) = open_fleet(setup, setup.specs(None)).await;
    eprintln!(
        "bench: {} publishes of {} users each, {} at a time",
        args.batches, args.batch_size, args.concurrency
    );
    let sent = setup
        .publisher
        .run(Plan {
            url_template: &args.batch_url,
            users: &setup.users,
            pick: Pick::Batch(args.batch_size),
            count: args.batches,
            concurrency: args.concurrency,
            rate: args.rate,
            time_limit: args.duration,
        })
        .await;
    let stored: u64 = sent
        .sent
        .iter()
        .map(|sent| u64::from(sent.recipients))
        .sum();
    fleet
        .wait_delivered(stored, Instant::now() + args.deadline)
        .await;
    let after = Sample::take(&args.server_pids);
    let outcomes = fleet.close().await;
    let per_user = send_times_per_user(&sent.sent, setup.users.len(), outcomes.len());
    let expected: Vec<&[u64]> = per_user.iter().map(Vec::as_slice).collect();
    let first_send = sent.sent.iter().map(|sent| sent.send_time).min();
    let stored_per_s = stored as f64 / sent.elapsed.as_secs_f64().max(1e-9);
    add_open(&mut report, "", &open, &outcomes);
    add_publishes(&mut report, "batch", sent);
    report.add("stored", stored, "notifications (acknowledged)");
    report.add("stored_per_s", round(stored_per_s, 1), "/s");
    let counted = tally(&outcomes, &expected, None);
    let delivered_per_s = first_send.and_then(|first| counted.delivered_per_second(first));
    report.add(
        "delivered_per_s",
        delivered_per_s,
        "/s (first send to last arrival)",
    );
    add_tally(&mut report, &counted, true);
    add_resources(&mut report, before, after, None);
    report
}

/// N streams get one event each (so they have an id), all drop, K events per user (or K
/// broadcasts) are published, and all reconnect at once with `Last-Event-ID`.
pub async fn replay(setup: &Setup) -> Report {
    let args = &setup.args;
    let mut report = new_report(setup, "replay");
    report.add("events", args.events, "");
    let replay_with = match args.replay_with {
        ReplayWith::User => "user",
        ReplayWith::Broadcast => "broadcast",
    };
    report.add("replay_with", replay_with, "");
    let before = Sample::take(&args.server_pids);
    let (fleet, open) = open_fleet(setup, setup.specs(None)).await;
    warm_up(setup, &fleet, &open, &mut report).await;
    let first = fleet.close().await;
    add_open(&mut report, "", &open, &first);
    eprintln!(
        "bench: every stream dropped; publishing {} events each",
        args.events
    );
    let (sent, per_user) = publish_while_away(setup, first.len()).await;
    let last_ids: Vec<Vec<u8>> = first
        .iter()
        .map(|outcome| outcome.last_event_id.clone())
        .collect();
    let earlier: Vec<Vec<u64>> = first
        .iter()
        .map(|outcome| outcome.deliveries.iter().map(|d| d.send_time).collect())
        .collect();
    add_publishes(&mut report, "publish", sent);
    let (second, after) = reconnect(setup, last_ids, &per_user, &mut report).await;
    let expected: Vec<&[u64]> = per_user.iter().map(Vec::as_slice).collect();
    add_tally(
        &mut report,
        &tally(&second, &expected, Some(&earlier)),
        false,
    );
    add_resources(&mut report, before, after, None);
    report
}

/// replay's first step: one event to each open stream, so every stream has an id to come back
/// with; waits for them (or `--deadline`) and reports how many arrived.
async fn warm_up(setup: &Setup, fleet: &Fleet, open: &OpenSummary, report: &mut Report) {
    let args = &setup.args;
    let warm_up = match args.replay_with {
        ReplayWith::User => {
            setup
                .publisher
                .run(user_plan(setup, args.streams as u64))
                .await
        }
        ReplayWith::Broadcast => setup.publisher.run(broadcast_plan(setup, 1)).await,
    };
    let warm_target = match args.replay_with {
        ReplayWith::User => warm_up.sent.len() as u64,
        ReplayWith::Broadcast => open.opened * warm_up.sent.len() as u64,
    };
    let warmed = fleet
        .wait_delivered(warm_target, Instant::now() + args.deadline)
        .await;
    report.add("warmup_delivered", fleet.delivered(), "");
    if warmed.is_none() {
        eprintln!(
            "bench: warm-up incomplete: {} of {warm_target} arrived",
            fleet.delivered()
        );
    }
}

/// replay's second step, with every stream closed: K events per user (or K broadcasts).
/// Returns the publishes and, for each of the `streams`, the send times it is due (sorted).
async fn publish_while_away(setup: &Setup, streams: usize) -> (BatchOutcome, Vec<Vec<u64>>) {
    let args = &setup.args;
    let sent = match args.replay_with {
        ReplayWith::User => {
            let count = args.streams as u64 * args.events;
            setup.publisher.run(user_plan(setup, count)).await
        }
        ReplayWith::Broadcast => {
            setup
                .publisher
                .run(broadcast_plan(setup, args.events))
                .await
        }
    };
    let per_user = match args.replay_with {
        ReplayWith::User => send_times_per_user(&sent.sent, streams, streams),
        ReplayWith::Broadcast => {
            let mut times: Vec<u64> = sent.sent.iter().map(|sent| sent.send_time).collect();
            times.sort_unstable();
            vec![times; streams]
        }
    };
    (sent, per_user)
}

/// replay's last step: every stream reconnects at once with its `Last-Event-ID` and the run
/// waits until each has the events in `per_user` (or `--deadline`). Reports the reopening and
/// `catchup_s`; returns what the streams saw and the server's figures at the end.
async fn reconnect(
    setup: &Setup,
    last_ids: Vec<Vec<u8>>,
    per_user: &[Vec<u64>],
    report: &mut Report,
) -> (Vec<StreamOutcome>, Sample) {
    let args = &setup.args;
    let target: u64 = per_user.iter().map(|times| times.len() as u64).sum();
    eprintln!(
        "bench: reconnecting {} streams with Last-Event-ID",
        args.streams
    );
    let reconnect_began = Instant::now();
    let (fleet, reopen) = open_fleet(setup, setup.specs(Some(last_ids))).await;
    let caught_up = fleet
        .wait_delivered(target, Instant::now() + args.deadline)
        .await;
    let after = Sample::take(&args.server_pids);
    let second = fleet.close().await;
    add_open(report, "reconnect_", &reopen, &second);
    report.add(
        "catchup_s",
        caught_up.map(|at| round((at - reconnect_began).as_secs_f64(), 3)),
        "s",
    );
    (second, after)
}

fn new_report(setup: &Setup, scenario: &str) -> Report {
    let args = &setup.args;
    let mut report = Report::new(scenario, args.label.as_deref());
    report.add("streams", args.streams as u64, "");
    report.add("users", args.streams as u64, "(one stream each)");
    report.add("nodes", setup.endpoints.len() as u64, "");
    report.add("source_addrs", setup.sources.len() as u64, "");
    report.add("connect_concurrency", args.connect_concurrency as u64, "");
    report
}

/// One notification to each user in turn, `count` in all.
fn user_plan(setup: &Setup, count: u64) -> Plan<'_> {
    Plan {
        url_template: &setup.args.pub_url,
        users: &setup.users,
        pick: Pick::RoundRobin,
        count,
        concurrency: setup.args.concurrency,
        rate: setup.args.rate,
        time_limit: None,
    }
}

fn broadcast_plan(setup: &Setup, count: u64) -> Plan<'_> {
    Plan {
        url_template: &setup.args.broadcast_url,
        users: &[],
        pick: Pick::Nobody,
        count,
        concurrency: 1,
        rate: setup.args.rate,
        time_limit: None,
    }
}

/// Opens these streams and waits until each opened or failed.
async fn open_fleet(setup: &Setup, specs: Vec<StreamSpec>) -> (Fleet, OpenSummary) {
    eprintln!("bench: opening {} streams", specs.len());
    let fleet = Fleet::open(specs, &setup.fleet_config());
    let open = fleet.wait_open(setup.open_limit(fleet.len())).await;
    eprintln!(
        "bench: {} open, {} failed in {:.2}s",
        open.opened,
        open.failed,
        open.elapsed.as_secs_f64()
    );
    (fleet, open)
}

/// `--events` broadcasts through the ideal server at `rate`, one at a time, each stamped on a
/// blocking thread just before the child is asked to write it.
async fn broadcast_ideal(
    setup: &Setup,
    server: &Arc<parking_lot::Mutex<FloorProcess>>,
    rate: f64,
) -> anyhow::Result<Vec<Broadcast>> {
    let began = Instant::now();
    let mut broadcasts = Vec::new();
    for index in 0..setup.args.events {
        let due = began + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (server, publisher) = (server.clone(), setup.publisher.clone());
        let writing =
            tokio::task::spawn_blocking(move || server.lock().broadcast(publisher.clock.stamp()));
        broadcasts.push(writing.await??);
    }
    Ok(broadcasts)
}

/// Waits until every opened stream has had each of `broadcasts` (or `--deadline`), reads the
/// server's figures, and closes the fleet.
async fn collect_broadcasts(
    setup: &Setup,
    fleet: Fleet,
    open: &OpenSummary,
    broadcasts: usize,
    server_pids: &[u32],
) -> (Vec<StreamOutcome>, Sample) {
    let target = open.opened * broadcasts as u64;
    fleet
        .wait_delivered(target, Instant::now() + setup.args.deadline)
        .await;
    let after = Sample::take(server_pids);
    (fleet.close().await, after)
}

/// What the streams made of a run's broadcasts: the tally, and per broadcast the time until
/// every opened stream had it (`all_received`); each arrival in `--timeline`'s file if asked.
fn add_broadcast_deliveries(
    report: &mut Report,
    outcomes: &[StreamOutcome],
    mut send_times: Vec<u64>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    send_times.sort_unstable();
    let expected = vec![send_times.as_slice(); outcomes.len()];
    let counted = tally(outcomes, &expected, None);
    write_timeline(args, &counted)?;
    add_tally(report, &counted, true);
    let mut all_received = all_received_latencies(outcomes, &send_times);
    report.percentiles("all_received", &mut all_received);
    Ok(())
}

/// Every first arrival of the run, by send time, in `--timeline`'s file when one is given.
fn write_timeline(args: &BenchArgs, counted: &Tally) -> anyhow::Result<()> {
    if let Some(path) = &args.timeline {
        std::fs::write(path, counted.timeline())
            .with_context(|| format!("cannot write the timeline to {}", path.display()))?;
    }
    Ok(())
}

fn add_open(report: &mut Report, prefix: &str, open: &OpenSummary, outcomes: &[StreamOutcome]) {
    report.add(&format!("{prefix}opened"), open.opened, "");
    report.add(&format!("{prefix}open_failures"), open.failed, "");
    report.seconds(&format!("{prefix}connect_s"), open.elapsed);
    let rate = open.opened as f64 / open.elapsed.as_secs_f64().max(1e-9);
    report.add(&format!("{prefix}streams_per_s"), round(rate, 1), "/s");
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .filter_map(|outcome| outcome.open_latency)
        .map(|latency| latency.as_nanos() as u64)
        .collect();
    report.percentiles(&format!("{prefix}open"), &mut latencies);
    report.reasons(
        &format!("{prefix}failure_reasons"),
        &failure_counts(outcomes),
    );
    let ended: u64 = outcomes.iter().filter(|o| o.ended_early.is_some()).count() as u64;
    report.add(&format!("{prefix}ended_by_server"), ended, "");
}
