//! The flags of `herald-bench` and what a run makes of them: [`BenchArgs`] as clap reads them
//! (every target checked to be loopback by [`crate::parse`]), and [`Setup`], the checked settings
//! with the users, source addresses, endpoints and publisher that every scenario shares.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::conn::SseEndpoint;
use crate::fleet::{self, FleetConfig, StreamSpec};
use crate::parse::{
    SourceAddrs, parse_batch_body, parse_body, parse_header, parse_pub_url,
    parse_push_subscription_url, parse_source_addrs, parse_sub_url, parse_tls_url,
};
use crate::publish::Publisher;

/// Streams one source address carries by default: its ephemeral ports (about 28,000) then
/// cover a run's streams, their reconnects and the closed sockets waiting in TIME_WAIT.
const STREAMS_PER_SOURCE: usize = 5_000;
/// Descriptors the bench keeps for itself beyond streams and publishers.
const SPARE_FILES: u64 = 64;

/// Measure an SSE server: open streams, publish, and time what arrives
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Prints a table, then one JSON line with every figure. Targets loopback only."
)]
pub struct BenchArgs {
    /// hold: open idle streams; fanout: broadcasts to every stream; targeted: publishes to
    /// random users; many-recipients: publishes each naming --batch-size users (one notification
    /// each), cycling through the users; replay: drop every stream, publish, reconnect with
    /// Last-Event-ID; floor: fanout against an ideal server the bench starts (one write per
    /// stream per broadcast), the best any server could do on this machine (ignores --sub-url,
    /// --broadcast-url and --server-pid); targeted-floor: targeted against an ideal durable
    /// server the bench starts (each publish in a log file and fdatasynced before it is
    /// delivered and answered), the best any durable server could do here (ignores --sub-url,
    /// --pub-url and --server-pid); push: no streams, each user subscribed to a push
    /// service inside the bench, one publish to each user, and the time from each 201 to its
    /// push; hold-tls: idle streams over TLS at --tls-url (HTTP/1.1, or --http2), and the
    /// server's memory per stream and per connection
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Stream URL template (`{user}` is each stream's user); repeat to spread streams
    /// round-robin over several nodes
    #[arg(long = "sub-url", value_name = "URL", default_value = "http://127.0.0.1:3000/events/{user}", value_parser = parse_sub_url)]
    pub sub_urls: Vec<SseEndpoint>,
    /// Publish URL template
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000/api/notifications/{user}", value_parser = parse_pub_url)]
    pub pub_url: String,
    /// Broadcast URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000/api/broadcast", value_parser = parse_pub_url)]
    pub broadcast_url: String,
    /// push, and targeted with --push-subscribe: URL template of a user's Web Push
    /// subscriptions
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000/api/push/{user}/subscriptions", value_parser = parse_push_subscription_url)]
    pub push_sub_url: String,
    /// many-recipients: URL of a publish to many users at once
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000/api/notifications", value_parser = parse_pub_url)]
    pub batch_url: String,
    /// Body of publishes and broadcasts: `{ts}` becomes the send time (ns since the Unix
    /// epoch, 19 digits), which each stream finds in the event's data; `{user}` the user
    #[arg(long, value_name = "JSON", default_value = r#"{"title":"bench","message":"{ts}"}"#, value_parser = parse_body)]
    pub pub_body: String,
    /// many-recipients: body of a publish to many users; `{users}` becomes the JSON list of
    /// user ids, `{ts}` the send time
    #[arg(long, value_name = "JSON", default_value = r#"{"users":{users},"title":"bench","message":"{ts}"}"#, value_parser = parse_batch_body)]
    pub batch_body: String,
    /// Extra request header, e.g. `Authorization: Bearer K` (repeatable; sent on every request)
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Server process whose memory and CPU to report (repeatable: figures are summed)
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Loopback source addresses for stream sockets, e.g. 127.0.0.2-127.0.0.41 [default: one
    /// per 5,000 streams from 127.0.0.2]
    #[arg(long, value_name = "RANGE", value_parser = parse_source_addrs)]
    pub source_addrs: Option<SourceAddrs>,
    /// Streams (one user each) [many-recipients: 5000 by default; push: users, none of them
    /// with a stream, 10000 by default]
    #[arg(
        long,
        visible_alias = "users",
        value_name = "N",
        default_value_t = 1000,
        default_value_ifs([("scenario", "many-recipients", "5000"), ("scenario", "push", "10000")])
    )]
    pub streams: usize,
    /// fanout and floor: broadcasts; replay: events published to each user while it is away
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub events: u64,
    /// Publishes per second (fanout and floor: default 10; targeted and replay: unpaced by
    /// default)
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// targeted: publishes to random users
    #[arg(long, value_name = "M", default_value_t = 10_000)]
    pub publishes: u64,
    /// many-recipients: users named in one publish (the server takes at most 1,000)
    #[arg(long, value_name = "B", default_value_t = 1000)]
    pub batch_size: usize,
    /// many-recipients: publishes of --batch-size users each
    #[arg(long, value_name = "K", default_value_t = 300)]
    pub batches: u64,
    /// many-recipients: start no publish after this long, even if fewer than --batches went
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// targeted: before publishing, subscribe each user to the bench's own push service, and
    /// count the pushes it receives; the server is to push every notification (herald:
    /// `--push-when always`), so any publish without its push is counted as lost
    #[arg(long)]
    pub push_subscribe: bool,
    /// targeted: extra streams, for users `{prefix}idle-{i}`, that are sent nothing; anything
    /// they receive counts as unexpected
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle_streams: usize,
    /// targeted, fanout, floor: write each first arrival to FILE, a line each, `SEND_NS
    /// LATENCY_NS` (send time in ns since the epoch), by send time: to see when in a run the
    /// slow ones came, or which broadcasts were slow (bench/scripts/tail.sh)
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<std::path::PathBuf>,
    /// Concurrent keep-alive publishers, each with one request in flight (targeted, replay,
    /// many-recipients, fanout and push; push also subscribes with this many) [many-recipients:
    /// 4 by default; fanout: 1, so a broadcast is sent only once the one before it was
    /// answered; with more, a slow answer no longer holds the next broadcasts back and then
    /// sends them in a burst]
    #[arg(
        long,
        value_name = "C",
        default_value_t = 32,
        default_value_if("scenario", "many-recipients", "4"),
        default_value_if("scenario", "fanout", "1")
    )]
    pub concurrency: usize,
    /// Streams connecting at once
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub connect_concurrency: usize,
    /// floor: the frame each broadcast writes: `minimal` (`data: {"message":"..."}`) or
    /// `herald` (the size and shape of herald's announcement frame)
    #[arg(long, value_enum, default_value = "minimal")]
    pub floor_frame: crate::floor::FloorFrame,
    /// replay: `user` publishes K notifications to each user; `broadcast` sends K broadcasts
    #[arg(long, value_enum, default_value = "user")]
    pub replay_with: ReplayWith,
    /// How long to wait for events (or pushes) after the last publish before counting the rest
    /// as lost
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// How long one stream may take to open (connect to first event)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub open_timeout: Duration,
    /// Prefix of user ids [default: `b` and a number from the clock, so runs never share users]
    #[arg(long, value_name = "PREFIX")]
    pub user_prefix: Option<String>,
    /// hold-tls: the stream URL template over TLS, e.g.
    /// `https://localhost:3443/events/{user}` (the name must be in the server's certificate)
    #[arg(long, value_name = "URL", value_parser = parse_tls_url)]
    pub tls_url: Option<String>,
    /// hold-tls: the PEM certificate (or the CA's) that the server's chain is checked against
    #[arg(long, value_name = "PATH")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// hold-tls: streams over HTTP/2 (by prior knowledge), `--streams-per-connection` sharing
    /// each connection; without it, HTTP/1.1 with a connection per stream
    #[arg(long)]
    pub http2: bool,
    /// hold-tls with --http2: streams sharing one connection
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub streams_per_connection: usize,
    /// A name for the server under test, copied into the report
    #[arg(long)]
    pub label: Option<String>,
    /// Print only the JSON line
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Scenario {
    Hold,
    Fanout,
    Targeted,
    ManyRecipients,
    Replay,
    Floor,
    TargetedFloor,
    Push,
    HoldTls,
}

/// What replay publishes while the streams are away.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayWith {
    User,
    Broadcast,
}

/// A run's validated settings and shared clients.
pub struct Setup {
    pub args: BenchArgs,
    pub sources: Vec<Ipv4Addr>,
    pub users: Vec<Arc<str>>,
    /// targeted's `--idle-streams` users: each gets a stream, after the users', and no publish.
    pub idle_users: Vec<Arc<str>>,
    pub endpoints: Vec<Arc<SseEndpoint>>,
    pub publisher: Arc<Publisher>,
    pub headers: Arc<Vec<(String, String)>>,
    /// Send times from before this (ns since the epoch) are not from this run.
    pub send_time_floor: u64,
}

impl Setup {
    pub fn new(args: BenchArgs) -> anyhow::Result<Self> {
        if args.streams == 0 {
            bail!("--streams must be at least 1");
        }
        if args
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            bail!("--rate must be a positive number");
        }
        if args.idle_streams > 0 && !matches!(args.scenario, Scenario::Targeted) {
            bail!("--idle-streams is for the targeted scenario only");
        }
        if args.timeline.is_some()
            && !matches!(
                args.scenario,
                Scenario::Targeted | Scenario::TargetedFloor | Scenario::Fanout | Scenario::Floor
            )
        {
            bail!("--timeline is for the targeted, fanout and floor scenarios only");
        }
        if args.push_subscribe && !matches!(args.scenario, Scenario::Targeted) {
            bail!("--push-subscribe is for the targeted scenario only (push always subscribes)");
        }
        let hold_tls = matches!(args.scenario, Scenario::HoldTls);
        if !hold_tls && (args.tls_url.is_some() || args.ca_cert.is_some() || args.http2) {
            bail!("--tls-url, --ca-cert and --http2 are for the hold-tls scenario only");
        }
        if hold_tls && (args.tls_url.is_none() || args.ca_cert.is_none()) {
            bail!("hold-tls needs --tls-url and --ca-cert");
        }
        if args.streams_per_connection == 0 || (args.streams_per_connection > 1 && !args.http2) {
            bail!("--streams-per-connection is at least 1, and more than 1 only with --http2");
        }
        let many_recipients = matches!(args.scenario, Scenario::ManyRecipients);
        if args.duration.is_some() && !many_recipients {
            bail!("--duration is for the many-recipients scenario only");
        }
        if many_recipients && (args.batch_size == 0 || args.batch_size > args.streams) {
            bail!(
                "--batch-size must be between 1 and --users ({}): a publish names each user once",
                args.streams
            );
        }
        // push opens no streams: its users are away.
        let streams = match args.scenario {
            Scenario::Push => 0,
            _ => args.streams + args.idle_streams,
        };
        let files_needed = streams as u64 + args.concurrency as u64 + SPARE_FILES;
        if let Some(limit) = open_files_limit() {
            if files_needed > limit {
                bail!(
                    "{streams} streams need about {files_needed} open files, over this process's limit of {limit} (ulimit -n)"
                );
            }
        }
        let sources = match &args.source_addrs {
            Some(SourceAddrs(sources)) => sources.clone(),
            None => (0..streams.div_ceil(STREAMS_PER_SOURCE).max(1) as u32)
                .map(|offset| Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + offset))
                .collect(),
        };
        let prefix = args.user_prefix.clone().unwrap_or_else(|| {
            let clock = fleet::now_ns() / 1_000_000 % 100_000_000;
            format!("b{clock}-")
        });
        let users = (0..args.streams)
            .map(|index| Arc::from(format!("{prefix}{index}")))
            .collect();
        let idle_users = (0..args.idle_streams)
            .map(|index| Arc::from(format!("{prefix}idle-{index}")))
            .collect();
        let body = match args.scenario {
            Scenario::ManyRecipients => args.batch_body.clone(),
            _ => args.pub_body.clone(),
        };
        let publisher = Arc::new(Publisher::new(&args.headers, body)?);
        Ok(Self {
            sources,
            users,
            idle_users,
            endpoints: args.sub_urls.iter().cloned().map(Arc::new).collect(),
            publisher,
            headers: Arc::new(args.headers.clone()),
            send_time_floor: fleet::now_ns().saturating_sub(1_000_000_000),
            args,
        })
    }

    /// One stream per user, then one per idle user: stream `i` goes to node `i % nodes` from
    /// source `i % sources`.
    pub fn specs(&self, last_event_ids: Option<Vec<Vec<u8>>>) -> Vec<StreamSpec> {
        let mut last_event_ids = last_event_ids.map(Vec::into_iter);
        self.users
            .iter()
            .chain(&self.idle_users)
            .enumerate()
            .map(|(index, user)| StreamSpec {
                endpoint: self.endpoints[index % self.endpoints.len()].clone(),
                source: Some(self.sources[index % self.sources.len()]),
                user: user.clone(),
                last_event_id: last_event_ids.as_mut().and_then(Iterator::next),
            })
            .collect()
    }

    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            headers: self.headers.clone(),
            connect_concurrency: self.args.connect_concurrency,
            open_timeout: self.args.open_timeout,
            send_time_floor: self.send_time_floor,
        }
    }

    /// The longest a fleet of `streams` can take to open: each wave of `--connect-concurrency`
    /// streams opens or fails within `--open-timeout`.
    pub fn open_limit(&self, streams: usize) -> Duration {
        let waves = streams.div_ceil(self.args.connect_concurrency.max(1)) as u32;
        self.args.open_timeout * (waves + 1)
    }
}

/// The soft `Max open files` limit of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    // Long only because its command line names every flag once.
    #[test]
    fn every_flag_parses_from_a_command_line() {
        let cli = <Cli as clap::Parser>::try_parse_from([
            "bench",
            "replay",
            "--sub-url",
            "http://127.0.0.1:1/e/{user}",
            "--sub-url",
            "http://127.0.0.2:1/e/{user}",
            "--pub-url",
            "http://127.0.0.1:1/p/{user}",
            "--broadcast-url",
            "http://localhost:1/b",
            "--batch-url",
            "http://localhost:1/p",
            "--push-sub-url",
            "http://localhost:1/api/push/{user}/subscriptions",
            "--push-subscribe",
            "--batch-body",
            "{\"users\":{users},\"m\":\"{ts}\"}",
            "--pub-body",
            "{\"m\":\"{ts}\"}",
            "--header",
            "Authorization: Bearer k",
            "--header",
            "X-A: b",
            "--server-pid",
            "1",
            "--server-pid",
            "2",
            "--source-addrs",
            "127.0.0.2-127.0.0.41",
            "--users",
            "5",
            "--events",
            "2",
            "--rate",
            "3.5",
            "--publishes",
            "7",
            "--idle-streams",
            "9",
            "--batch-size",
            "4",
            "--batches",
            "6",
            "--duration",
            "3s",
            "--concurrency",
            "2",
            "--connect-concurrency",
            "3",
            "--replay-with",
            "broadcast",
            "--deadline",
            "2s",
            "--open-timeout",
            "1s",
            "--user-prefix",
            "x-",
            "--label",
            "l",
            "--json",
        ])
        .expect("parses");
        let args = cli.args;
        assert_eq!(args.sub_urls.len(), 2);
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.server_pids, [1, 2]);
        assert_eq!(
            args.source_addrs.map(|SourceAddrs(addrs)| addrs.len()),
            Some(40)
        );
        assert_eq!((args.streams, args.replay_with), (5, ReplayWith::Broadcast));
        assert_eq!(args.idle_streams, 9);
        assert!(args.push_subscribe);
        assert_eq!(
            args.push_sub_url,
            "http://localhost:1/api/push/{user}/subscriptions"
        );
        assert_eq!((args.batch_size, args.batches), (4, 6));
        assert_eq!(args.duration, Some(Duration::from_secs(3)));
        assert_eq!(args.deadline, Duration::from_secs(2));
    }

    #[test]
    fn many_recipients_and_fanout_have_their_own_defaults_and_explicit_flags_still_win() {
        let parse = |line: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(line)
                .expect("parses")
                .args
        };
        let args = parse(&["bench", "many-recipients"]);
        assert_eq!((args.streams, args.concurrency), (5000, 4));
        assert_eq!((args.batch_size, args.batches), (1000, 300));
        let args = parse(&["bench", "targeted"]);
        assert_eq!((args.streams, args.concurrency), (1000, 32));
        let args = parse(&["bench", "push"]);
        assert_eq!((args.streams, args.concurrency), (10_000, 32));
        let args = parse(&["bench", "fanout"]);
        assert_eq!(args.concurrency, 1);
        let args = parse(&["bench", "fanout", "--concurrency", "4"]);
        assert_eq!(args.concurrency, 4);
        let args = parse(&[
            "bench",
            "many-recipients",
            "--users",
            "20",
            "--concurrency",
            "2",
        ]);
        assert_eq!((args.streams, args.concurrency), (20, 2));
    }

    #[test]
    fn a_batch_larger_than_the_users_or_a_duration_elsewhere_is_refused() {
        let refused = |line: &[&str]| {
            let args = <Cli as clap::Parser>::try_parse_from(line)
                .expect("parses")
                .args;
            Setup::new(args).err().expect("refused").to_string()
        };
        let line = [
            "bench",
            "many-recipients",
            "--users",
            "10",
            "--batch-size",
            "11",
        ];
        assert!(refused(&line).contains("--batch-size"));
        let line = ["bench", "many-recipients", "--batch-size", "0"];
        assert!(refused(&line).contains("--batch-size"));
        let line = ["bench", "targeted", "--duration", "5s"];
        assert!(refused(&line).contains("--duration"));
        let line = ["bench", "push", "--push-subscribe"];
        assert!(refused(&line).contains("--push-subscribe"));
    }

    #[test]
    fn idle_streams_are_refused_outside_the_targeted_scenario() {
        let parse = |scenario: &str| {
            let line = ["bench", scenario, "--streams", "10", "--idle-streams", "3"];
            <Cli as clap::Parser>::try_parse_from(line)
                .expect("parses")
                .args
        };
        let refused = Setup::new(parse("fanout")).err().expect("refused");
        assert!(refused.to_string().contains("--idle-streams"), "{refused}");
        let setup = Setup::new(parse("targeted")).expect("accepted");
        let specs = setup.specs(None);
        assert_eq!(specs.len(), 10 + 3);
        assert!(specs[10].user.ends_with("idle-0"), "idle streams come last");
    }
}
