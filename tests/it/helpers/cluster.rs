//! A test cluster: herald binaries ([`Node`]) sharing a `redis-server` of the test's own, the
//! ledgers of what publishers were told was stored ([`Acked`]), and the check that a stream
//! carried exactly the acknowledged events, each once and in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::WAIT;
use super::api::{Api, note};
use super::process::ServerProcess;
use super::raw_sse::{Next, Subscription};
use super::redis::{RedisServer, available};
use super::sse::{Received, assert_strictly_increasing, event_ids};

/// The users every publisher of a cluster test writes to, in turn.
pub const USERS: [&str; 2] = ["ann", "bob"];
/// How long "nothing more arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// The cluster

/// One herald binary of a test cluster: its own data directory, the test's Redis and prefix.
pub struct Node {
    dir: TempDir,
    args: Vec<String>,
    /// `None` only while [`Node::start_again`] replaces it.
    process: Option<ServerProcess>,
}

impl Node {
    pub fn start(redis: &RedisServer, prefix: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let url = redis.url();
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &url,
            "--redis-prefix",
            prefix,
            "--shutdown-timeout",
            "2",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let process = Some(Self::spawn(dir.path(), &args));
        Self { dir, args, process }
    }

    fn spawn(dir: &std::path::Path, args: &[String]) -> ServerProcess {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::start_with(dir, &args, &[])
    }

    pub fn process(&self) -> &ServerProcess {
        self.process.as_ref().expect("a running node")
    }

    pub fn process_mut(&mut self) -> &mut ServerProcess {
        self.process.as_mut().expect("a running node")
    }

    /// Requests to this node, at its current address.
    pub fn api(&self) -> Api {
        self.process().api.clone()
    }

    /// Starts the binary again on the same directory (and a new port) after it stopped.
    pub fn start_again(&mut self) {
        // Dropped first: its drop removes the log file the new process writes to.
        drop(self.process.take());
        self.process = Some(Self::spawn(self.dir.path(), &self.args));
    }
}

/// `n` nodes on `redis` under one fresh prefix: one cluster.
pub fn start_cluster(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Node> {
    let prefix = format!("cluster-{}", uuid::Uuid::new_v4().simple());
    (0..n).map(|_| Node::start(redis, &prefix, extra)).collect()
}

/// The [`Api`] of each node, in order.
pub fn apis(nodes: &[Node]) -> Vec<Api> {
    nodes.iter().map(Node::api).collect()
}

/// A Redis of this test's own, or `None` (with the reason printed) where none can run.
pub fn own_redis(extra: &[&str]) -> Option<RedisServer> {
    available().then(|| RedisServer::start(extra))
}

/// Closes the connection of the most recently started node's log reader (the newest client
/// blocked in `XREAD`), as a network blip would.
pub async fn kill_newest_log_reader(redis: &RedisServer) {
    let mut conn = ::redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connected to redis");
    let clients: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    let newest_reader = clients
        .lines()
        .filter(|line| line.contains(" cmd=xread "))
        .filter_map(|line| {
            line.strip_prefix("id=")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a node reading the log");
    let _: () = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(newest_reader)
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
}

// ---------------------------------------------------------------------------------------------
// Publishing, and what publishers were told

/// One success a publisher was answered with; each publisher's come in the order it was told.
#[derive(Debug, Clone)]
pub enum Acked {
    Notification { user: String, id: String },
    Announcement { title: String },
    Read { user: String, id: String },
}

impl Acked {
    pub fn notification(user: &str, stored: &Value) -> Self {
        let id = stored["id"].as_str().expect("a notification id").to_owned();
        Self::Notification {
            user: user.to_owned(),
            id,
        }
    }

    /// Whether `viewer`'s streams carry this event.
    pub fn seen_by(&self, viewer: &str) -> bool {
        match self {
            Self::Notification { user, .. } | Self::Read { user, .. } => user == viewer,
            Self::Announcement { .. } => true,
        }
    }

    /// Broadcasts through `api`, asserting `200`; the announcement every stream gets.
    pub async fn broadcast(api: &Api, title: &str) -> Self {
        api.broadcast(title).await;
        Self::Announcement {
            title: title.to_owned(),
        }
    }

    /// Marks an unread notification read through `api`, which sends one `read` event.
    pub async fn mark_read(api: &Api, user: &str, of: &Acked) -> Self {
        let Acked::Notification { id, .. } = of else {
            panic!("only a notification can be read: {of:?}");
        };
        api.mark_read(user, id).await;
        Self::Read {
            user: user.to_owned(),
            id: id.clone(),
        }
    }

    /// What [`key_of`] makes of this event on a stream.
    fn key(&self) -> String {
        match self {
            Self::Notification { id, .. } => format!("notification {id}"),
            Self::Announcement { title } => format!("announcement {title}"),
            Self::Read { id, .. } => format!("read {}", json!([id])),
        }
    }
}

/// An event reduced to what it is about, for comparing streams with what publishers were told.
fn key_of(event: &Received) -> String {
    let data = &event.data;
    match event.event.as_str() {
        "notification" => format!("notification {}", data["id"].as_str().unwrap_or("?")),
        "announcement" => format!("announcement {}", data["title"].as_str().unwrap_or("?")),
        "read" => format!("read {}", data["ids"]),
        other => format!("{other} {data}"),
    }
}

/// Publishes `rounds` notifications, over `USERS` in turn, marking every third read and
/// broadcasting after every fifth; each request goes through another of `apis` than the last,
/// and each round is followed by `pause`.
pub async fn publish_rounds(
    apis: Vec<Api>,
    publisher: usize,
    rounds: usize,
    pause: Duration,
) -> Vec<Acked> {
    let mut turn = publisher;
    let mut next_api = move || {
        turn += 1;
        apis[turn % apis.len()].clone()
    };
    let mut acked = Vec::new();
    for round in 0..rounds {
        let user = USERS[(publisher + round) % USERS.len()];
        let title = format!("p{publisher}-{round}");
        let stored = next_api().publish(user, &title).await;
        let notification = Acked::notification(user, &stored);
        if round % 3 == 2 {
            let read = Acked::mark_read(&next_api(), user, &notification).await;
            acked.extend([notification, read]);
        } else {
            acked.push(notification);
        }
        if round % 5 == 4 {
            acked.push(Acked::broadcast(&next_api(), &format!("b{publisher}-{round}")).await);
        }
        tokio::time::sleep(pause).await;
    }
    acked
}

/// `publishers` running [`publish_rounds`] at once, without pauses; their ledgers.
pub async fn publish_concurrently(
    apis: &[Api],
    publishers: usize,
    rounds: usize,
) -> Vec<Vec<Acked>> {
    let tasks: Vec<_> = (0..publishers)
        .map(|p| tokio::spawn(publish_rounds(apis.to_vec(), p, rounds, Duration::ZERO)))
        .collect();
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.expect("publisher did not panic"));
    }
    ledgers
}

/// What a publisher that keeps going through a Redis outage was told.
pub struct Outcome {
    /// Notifications answered `201`, in order.
    pub acked: Vec<Value>,
    /// Titles answered `503`: maybe stored, maybe not, but nobody was told they were.
    pub refused: Vec<String>,
}

/// Publishes to `ann` through `api` until `target` were acknowledged and one more was
/// acknowledged after `restarted` was set (so it published through the whole outage, however
/// fast the publishes before it were); a refusal must be a `503` with an error body, and is
/// followed by a short pause. Whether any was refused is the caller's to judge: a publish
/// caught by the crash may also be held until Redis is back, and then acknowledged.
pub async fn publish_through_outage(
    api: Api,
    publisher: usize,
    target: usize,
    acked_total: Arc<AtomicUsize>,
    restarted: Arc<AtomicBool>,
) -> Outcome {
    let mut outcome = Outcome {
        acked: Vec::new(),
        refused: Vec::new(),
    };
    let deadline = Instant::now() + 3 * WAIT;
    let mut acked_after_restart = false;
    for n in 0.. {
        if outcome.acked.len() >= target && acked_after_restart {
            break;
        }
        assert!(Instant::now() < deadline, "publisher {publisher} got stuck");
        let title = format!("p{publisher}-{n}");
        let (status, body) = api.post_json("/api/notifications/ann", &note(&title)).await;
        match status {
            StatusCode::CREATED => {
                assert_eq!(body["title"], title.as_str());
                outcome.acked.push(body);
                acked_total.fetch_add(1, Ordering::SeqCst);
                acked_after_restart = restarted.load(Ordering::SeqCst);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(body["error"].is_string(), "{body}");
                outcome.refused.push(title);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{title}: {other} {body}"),
        }
    }
    outcome
}

/// Reads a stream until its node dies, then goes on from its last id on `fallback` until it
/// holds `expected` events (unknown, `usize::MAX`, while publishing goes on). Returns the
/// events and how many times it reconnected.
pub async fn read_across_failover(
    mut stream: Subscription,
    mut cursor: String,
    fallback: Api,
    expected: Arc<AtomicUsize>,
    progress: Arc<AtomicUsize>,
) -> (Vec<Received>, usize) {
    let deadline = Instant::now() + 3 * WAIT;
    let mut events = Vec::new();
    let mut reconnects = 0;
    while events.len() < expected.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "got {} events", events.len());
        match stream.next(Duration::from_millis(200)).await {
            Next::Event(event) => {
                cursor = event.id.clone();
                events.push(event);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Next::Heartbeat | Next::Quiet => {}
            Next::Ended => {
                assert_eq!(reconnects, 0, "the live node's stream ended too");
                reconnects += 1;
                let user = stream.user.clone();
                stream = Subscription::open(&fallback, &user, Some(&cursor)).await;
            }
        }
    }
    stream.expect_no_event(QUIET).await;
    (events, reconnects)
}

// ---------------------------------------------------------------------------------------------
// Checking streams

/// What `user`'s streams must carry: every acknowledged event that user may see.
pub fn expected_for<'a>(user: &str, ledgers: &'a [Vec<Acked>]) -> Vec<&'a Acked> {
    ledgers
        .iter()
        .flatten()
        .filter(|a| a.seen_by(user))
        .collect()
}

/// Asserts `events` is exactly what publishers were told was stored for `user`: each once,
/// nothing else, ids strictly increasing, and each publisher's in the order it was answered.
pub fn assert_exactly_the_acknowledged(user: &str, events: &[Received], ledgers: &[Vec<Acked>]) {
    assert_strictly_increasing(&event_ids(events));
    let position: HashMap<String, usize> = events
        .iter()
        .enumerate()
        .map(|(at, event)| (key_of(event), at))
        .collect();
    assert_eq!(position.len(), events.len(), "{user} got an event twice");
    for (publisher, ledger) in ledgers.iter().enumerate() {
        let places: Vec<usize> = ledger
            .iter()
            .filter(|acked| acked.seen_by(user))
            .map(|acked| {
                *position
                    .get(&acked.key())
                    .unwrap_or_else(|| panic!("{user} never got {acked:?}"))
            })
            .collect();
        assert!(
            places.windows(2).all(|w| w[0] < w[1]),
            "{user} got publisher {publisher}'s events out of the order they were stored"
        );
    }
    assert_eq!(
        events.len(),
        expected_for(user, ledgers).len(),
        "{user} got events nobody published"
    );
}
