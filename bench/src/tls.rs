//! The hold-tls scenario: idle streams over TLS, through reqwest and rustls, to measure what an
//! idle stream and an idle connection cost a server over `https://`. Over HTTP/1.1 each stream
//! has a connection of its own; over HTTP/2 (`--http2`) `--streams-per-connection` streams
//! share one, as a browser's tabs do. Slower to open than the plain HTTP/1.1 client of
//! [`crate::fleet`], which is what the other scenarios use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::{Report, Sample, add_resources, round};
use crate::setup::Setup;

/// Pause after the last stream opened before reading the server's memory (as in hold).
const SETTLE: Duration = Duration::from_secs(1);

/// Opens `--streams` idle streams at `--tls-url`, holds them while the server's memory is read,
/// and reports it per stream and per connection.
pub async fn hold_tls(setup: &Setup) -> anyhow::Result<Report> {
    let args = &setup.args;
    let (Some(url), Some(ca_path)) = (&args.tls_url, &args.ca_cert) else {
        anyhow::bail!("hold-tls needs --tls-url and --ca-cert");
    };
    let pem =
        std::fs::read(ca_path).with_context(|| format!("cannot read {}", ca_path.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).context("--ca-cert is not a PEM certificate")?;
    let per_connection = if args.http2 {
        args.streams_per_connection
    } else {
        1
    };
    let connections = setup.users.len().div_ceil(per_connection);
    let make = || {
        let builder = reqwest::Client::builder().add_root_certificate(ca.clone());
        let builder = if args.http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        builder.build().context("cannot build the TLS client")
    };
    // HTTP/1.1: one client, which opens a connection per stream it holds. HTTP/2: a client per
    // connection, each stream of a connection going through its client.
    let clients = if args.http2 {
        (0..connections)
            .map(|_| make())
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        vec![make()?]
    };

    let mut report = Report::new("hold-tls", args.label.as_deref());
    report.add("streams", args.streams as u64, "");
    report.add("http", if args.http2 { "2" } else { "1.1" }, "");
    report.add("connections", connections as u64, "");
    report.add("connect_concurrency", args.connect_concurrency as u64, "");
    let before = Sample::take(&args.server_pids);
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let open = |users: Vec<(usize, Arc<str>)>| {
        let mut opening = JoinSet::new();
        for (at, user) in users {
            let client = clients[if args.http2 { at / per_connection } else { 0 }].clone();
            let (url, limit) = (url.replace("{user}", &user), limit.clone());
            let timeout = args.open_timeout;
            opening.spawn(async move {
                let _permit = limit.acquire_owned().await;
                open_stream(&client, &url, timeout).await
            });
        }
        opening
    };
    // Each connection's first stream opens before the others, so that they share it.
    let (first, rest): (Vec<_>, Vec<_>) = setup
        .users
        .iter()
        .cloned()
        .enumerate()
        .partition(|(at, _)| at % per_connection == 0);
    let mut held = Vec::with_capacity(setup.users.len());
    let mut failures: HashMap<String, u64> = HashMap::new();
    for users in [first, rest] {
        let mut opening = open(users);
        while let Some(opened) = opening.join_next().await {
            match opened {
                Ok(Ok(response)) => held.push(response),
                Ok(Err(reason)) => *failures.entry(reason).or_default() += 1,
                Err(error) => *failures.entry(format!("task: {error}")).or_default() += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after = Sample::take(&args.server_pids);
    let opened = held.len() as u64;
    report.add("opened", opened, "");
    report.add("open_failures", failures.values().sum::<u64>(), "");
    report.reasons("failure_reasons", &failures);
    report.seconds("connect_s", elapsed);
    add_resources(&mut report, before, after, Some(opened));
    if let (Some(before), Some(after)) = (before.server_rss_kib, after.server_rss_kib) {
        let each = (after as f64 - before as f64) / connections.max(1) as f64;
        report.add("server_rss_per_connection_kib", round(each, 2), "KiB");
    }
    drop(held);
    Ok(report)
}

/// A stream, once its response is `200` and its first bytes (the greeting) have arrived.
async fn open_stream(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<reqwest::Response, String> {
    let opening = async {
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|error| format!("request: {}", root_cause(&error.without_url())))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("status {}", response.status().as_u16()));
        }
        match response.chunk().await {
            Ok(Some(_)) => Ok(response),
            Ok(None) => Err("closed before the first bytes".to_owned()),
            Err(error) => Err(format!("body: {}", root_cause(&error.without_url()))),
        }
    };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or_else(|_| Err("no first bytes in time".to_owned()))
}

/// The innermost error of `error`'s chain: reqwest's own message ("error sending request")
/// says less than its source's.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
