//! SPEC §1 cluster mode and §2 "on any node of the cluster", against real binaries sharing a
//! real `redis-server` that each test starts, kills and restarts itself: publishes through any
//! node reach every node with the same ids; clients hop between nodes with `Last-Event-ID`; and
//! neither a Redis outage, a Redis crash (with AOF) nor a node's SIGKILL loses anything a
//! publisher was told was stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use herald::domain::EventId;

use crate::helpers::redis::{self as redis_server, RedisServer};
use crate::helpers::{Api, Received, ServerProcess, WAIT, read_json};

const USERS: [&str; 2] = ["ann", "bob"];
/// Redis settings under which an acknowledged write survives a SIGKILL of Redis.
const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);
/// A publisher's pause between rounds where a failure or a client must act mid-run.
const PACE: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_through_any_node_reach_subscribers_on_every_node_with_the_same_increasing_ids() {
    let Some(redis) = own_redis(&[]) else { return };
    let nodes = start_cluster(&redis, 3, &[]);
    let urls = urls(&nodes);
    let mut streams = Vec::new();
    for url in &urls {
        for user in USERS {
            streams.push((user, Subscription::open(url, user, None).await));
        }
    }

    // Three publishers, each sending every request through another node than the last.
    let ledgers = publish_concurrently(&urls, 3, 30).await;

    let mut seen: HashMap<&str, Vec<Received>> = HashMap::new();
    for (user, mut stream) in streams {
        let events = stream.next_events(expected_for(user, &ledgers).len()).await;
        stream.expect_no_event(QUIET).await;
        assert_exactly_the_acknowledged(user, &events, &ledgers);
        match seen.get(user) {
            None => {
                seen.insert(user, events);
            }
            Some(first) => assert_eq!(
                &events, first,
                "{user}'s streams on different nodes got the same events with the same ids"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hopping_between_nodes_with_last_event_id_gets_every_event_exactly_once() {
    let Some(redis) = own_redis(&[]) else { return };
    let nodes = start_cluster(&redis, 3, &[]);
    let urls = urls(&nodes);
    let user = "ann";
    let mut cursor = last_event_id(&urls[0], user).await;
    let mut stayed = Subscription::open(&urls[2], user, Some(&cursor)).await;

    // Publishers write through the first two nodes while the client visits all three, reading
    // a few events on each and going on elsewhere with the id of the last one it got.
    let publishers: Vec<_> = (0..2)
        .map(|p| tokio::spawn(publish_rounds(urls[..2].to_vec(), p, 60, PACE)))
        .collect();
    let mut got: Vec<Received> = Vec::new();
    let mut hops = 0;
    while !publishers.iter().all(|p| p.is_finished()) {
        let mut stream = Subscription::open(&urls[hops % urls.len()], user, Some(&cursor)).await;
        for _ in 0..=hops % 4 {
            match stream.next(Duration::from_millis(300)).await {
                Next::Event(event) => {
                    cursor = event.id.clone();
                    got.push(event);
                }
                Next::Heartbeat => {}
                Next::Quiet => break,
                Next::Ended => panic!("a stream ended on its own"),
            }
        }
        hops += 1;
    }
    let mut ledgers = Vec::new();
    for publisher in publishers {
        ledgers.push(publisher.await.expect("publisher did not panic"));
    }
    let total = expected_for(user, &ledgers).len();
    let missing = total
        .checked_sub(got.len())
        .unwrap_or_else(|| panic!("{} events for {total} published", got.len()));
    let mut last = Subscription::open(&urls[hops % urls.len()], user, Some(&cursor)).await;
    got.extend(last.next_events(missing).await);
    last.expect_no_event(QUIET).await;

    eprintln!("{hops} hops while {total} events were published");
    assert!(
        hops >= 8,
        "only {hops} hops while publishing: the race was not run"
    );
    assert_exactly_the_acknowledged(user, &got, &ledgers);
    assert_eq!(
        got,
        stayed.next_events(total).await,
        "the client that hopped {hops} times got what a client that stayed got, ids included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hops_to_a_node_still_behind_it_gets_nothing_twice() {
    let Some(redis) = own_redis(&[]) else { return };
    let nodes = start_cluster(&redis, 2, &[]);
    let (ahead, behind) = (nodes[0].url(), nodes[1].url());
    let client = reqwest::Client::new();
    let mut lagged = 0;
    for attempt in 0..3 {
        let first = format!("first {attempt}");
        let mut on_ahead = Subscription::open(&ahead, "ann", None).await;
        publish(&client, &ahead, "ann", &first).await;
        let cursor = on_ahead.next_event().await.id;
        // Cut the lagging node's log reader: for a moment (its retry pause) that node has not
        // dispatched what the other one already sent.
        kill_newest_log_reader(&redis).await;
        let sent = [
            publish(&client, &ahead, "ann", &format!("second {attempt}")).await,
            publish(&client, &ahead, "ann", &format!("third {attempt}")).await,
        ];
        let mut hopping = Subscription::open(&ahead, "ann", Some(&cursor)).await;
        let seen = hopping.next_events(2).await;
        assert_eq!(
            seen.iter().map(|e| &e.data).collect::<Vec<_>>(),
            sent.iter().collect::<Vec<_>>()
        );
        let mut hopped = Subscription::open(&behind, "ann", Some(&seen[1].id)).await;
        let (status, _) = get(&client, &behind, "/readyz").await;
        lagged += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
        let fourth = publish(&client, &ahead, "ann", &format!("fourth {attempt}")).await;
        let next = hopped.next_event().await;
        assert_eq!(
            next.data, fourth,
            "the node that caught up sent nothing the client had"
        );
        assert!(event_id(&next) > event_id(&seen[1]));
        hopped.expect_no_event(QUIET).await;
        wait_for_readiness(&client, &behind, StatusCode::OK, Instant::now()).await;
    }
    eprintln!("the node was behind at {lagged} of 3 hops");
    assert!(
        lagged > 0,
        "the node never lagged when the client hopped to it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_redis_goes_down_nodes_refuse_publishes_keep_streams_open_and_recover_by_themselves() {
    let Some(mut redis) = own_redis(&AOF) else {
        return;
    };
    let nodes = start_cluster(&redis, 2, &["--heartbeat", "1"]);
    let urls = urls(&nodes);
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for url in &urls {
        streams.push(Subscription::open(url, "ann", None).await);
    }
    let before = publish(&client, &urls[0], "ann", "before").await;
    for stream in &mut streams {
        assert_eq!(stream.next_event().await.data, before);
    }

    let down = Instant::now();
    redis.kill();
    for (n, url) in urls.iter().enumerate() {
        let took = wait_for_readiness(&client, url, StatusCode::SERVICE_UNAVAILABLE, down).await;
        eprintln!("node {n}: /readyz 503 {took:?} after Redis was killed");
    }
    for (n, url) in urls.iter().enumerate() {
        let title = format!("during via {n}");
        let (status, body) =
            post(&client, url, "/api/notifications/ann", Some(&note(&title))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{title}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        let announcement = json!({ "title": "during", "message": "m" });
        let (status, body) = post(&client, url, "/api/broadcast", Some(&announcement)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "broadcast: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    for stream in &mut streams {
        let beats = stream.expect_no_event(Duration::from_millis(2500)).await;
        assert!(
            beats >= 1,
            "an open stream keeps its heartbeat while Redis is away"
        );
    }

    let back = Instant::now();
    redis.restart();
    // Published as soon as Redis takes writes: some node may not have noticed yet that Redis is
    // back, and must catch up on it by itself.
    let meanwhile = loop {
        let (status, body) = post(
            &client,
            &urls[0],
            "/api/notifications/ann",
            Some(&note("meanwhile")),
        )
        .await;
        match status {
            StatusCode::CREATED => break body,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("{other}: {body}"),
        }
        assert!(
            back.elapsed() < WAIT,
            "no publish went through after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "first publish stored {:?} after Redis restarted",
        back.elapsed()
    );
    for (n, url) in urls.iter().enumerate() {
        let took = wait_for_readiness(&client, url, StatusCode::OK, back).await;
        eprintln!("node {n}: /readyz 200 {took:?} after Redis restarted");
    }
    // Once ready, a node takes publishes at the first try, whatever it answered before.
    let after = publish(&client, &urls[1], "ann", "after").await;
    for stream in &mut streams {
        let events = stream.next_events(2).await;
        assert_eq!(
            events[0].data, meanwhile,
            "the stream that stayed open caught up"
        );
        assert_eq!(events[1].data, after);
        assert!(event_id(&events[0]) < event_id(&events[1]));
        stream.expect_no_event(QUIET).await;
    }
    let titles: Vec<Value> = Api::new(urls[1].clone())
        .full_history("ann")
        .await
        .iter()
        .map(|n| n["title"].clone())
        .collect();
    assert_eq!(
        titles,
        ["after", "meanwhile", "before"],
        "a 503 stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_resumes_from_the_log_and_its_clients_get_what_they_missed() {
    let Some(redis) = own_redis(&[]) else { return };
    let mut nodes = start_cluster(&redis, 2, &[]);
    let client = reqwest::Client::new();
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let mut stayed = Subscription::open(&a, "ann", None).await;
    let mut leaving = Subscription::open(&b, "ann", None).await;
    publish(&client, &a, "ann", "seen").await;
    let seen = leaving.next_event().await;
    assert_eq!(stayed.next_event().await, seen);

    nodes[1].process().signal(nix::sys::signal::Signal::SIGTERM);
    assert!(nodes[1].process_mut().wait_exit(WAIT).success());
    leaving.expect_end().await;
    let mut missed = vec![Acked::notification(
        "ann",
        &publish(&client, &a, "ann", "missed").await,
    )];
    publish(&client, &a, "bob", "not ann's").await;
    missed.push(broadcast(&client, &a, "missed announcement").await);
    missed.push(mark_read(&client, &a, "ann", &missed[0]).await);
    let expected = stayed.next_events(missed.len()).await;

    nodes[1].start_again();
    let b = nodes[1].url();
    let mut back = Subscription::open(&b, "ann", Some(&seen.id)).await;
    assert_eq!(
        back.next_events(missed.len()).await,
        expected,
        "exactly what it missed"
    );
    back.expect_no_event(QUIET).await;
    assert_exactly_the_acknowledged("ann", &expected, &[missed]);
    let live = publish(&client, &a, "ann", "live").await;
    assert_eq!(
        back.next_event().await.data,
        live,
        "the restarted node follows the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_node_killed_with_sigkill_reconnect_to_a_live_node_and_lose_nothing() {
    let Some(redis) = own_redis(&[]) else { return };
    let mut nodes = start_cluster(&redis, 3, &[]);
    let urls = urls(&nodes);
    let (live, victim) = (&urls[..2], &urls[2]);
    let expected: HashMap<&str, Arc<AtomicUsize>> = USERS
        .iter()
        .map(|user| (*user, Arc::new(AtomicUsize::new(usize::MAX))))
        .collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let mut stayed = Vec::new();
    let mut failing_over = Vec::new();
    for user in USERS {
        let cursor = last_event_id(victim, user).await;
        stayed.push((
            user,
            Subscription::open(&live[0], user, Some(&cursor)).await,
        ));
        // Two clients per user on the victim; after the kill one goes to each live node.
        for fallback in live {
            let stream = Subscription::open(victim, user, Some(&cursor)).await;
            failing_over.push((
                user,
                tokio::spawn(read_across_failover(
                    stream,
                    cursor.clone(),
                    fallback.clone(),
                    expected[user].clone(),
                    progress.clone(),
                )),
            ));
        }
    }

    let publishers: Vec<_> = (0..2)
        .map(|p| tokio::spawn(publish_rounds(live.to_vec(), p, 60, PACE)))
        .collect();
    let deadline = Instant::now() + WAIT;
    while progress.load(Ordering::SeqCst) < 40 {
        assert!(
            Instant::now() < deadline,
            "the victim's clients got too little"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    nodes[2].process_mut().kill_hard();
    eprintln!("killed after its clients got {progress:?} events");
    assert!(
        !publishers.iter().all(|p| p.is_finished()),
        "the kill must land while publishes are in flight"
    );
    let mut ledgers = Vec::new();
    for publisher in publishers {
        ledgers.push(
            publisher
                .await
                .expect("every publish through a live node succeeded"),
        );
    }
    for user in USERS {
        expected[user].store(expected_for(user, &ledgers).len(), Ordering::SeqCst);
    }

    let mut reference: HashMap<&str, Vec<Received>> = HashMap::new();
    for (user, mut stream) in stayed {
        let events = stream.next_events(expected_for(user, &ledgers).len()).await;
        assert_exactly_the_acknowledged(user, &events, &ledgers);
        reference.insert(user, events);
    }
    for (user, client) in failing_over {
        let (events, reconnects) = client.await.expect("client did not panic");
        assert_eq!(
            reconnects, 1,
            "{user}'s client reconnected once, when its node died"
        );
        assert_eq!(
            events, reference[user],
            "{user}'s client lost nothing and got nothing twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_aof_a_redis_crash_loses_no_acknowledged_publish() {
    let Some(mut redis) = own_redis(&AOF) else {
        return;
    };
    let nodes = start_cluster(&redis, 2, &[]);
    let urls = urls(&nodes);
    let user = "ann";
    let mut stayed = Subscription::open(&urls[1], user, None).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(p, url)| tokio::spawn(publish_through_outage(url.clone(), p, 80, acked.clone())))
        .collect();
    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "publishers were too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    let mut outcomes = Vec::new();
    for publisher in publishers {
        outcomes.push(publisher.await.expect("publisher did not panic"));
    }
    let refused: usize = outcomes.iter().map(|o| o.refused.len()).sum();
    let acknowledged: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    eprintln!("{acknowledged} publishes acknowledged, {refused} refused while Redis was down");
    assert!(
        refused > 0,
        "the crash must land while publishes are in flight"
    );

    // Newest first; reversed it is the order of the log.
    let mut history = Api::new(urls[0].clone()).full_history(user).await;
    assert_eq!(history, Api::new(urls[1].clone()).full_history(user).await);
    history.reverse();
    let stored: HashMap<&str, &Value> = history
        .iter()
        .map(|n| (n["id"].as_str().expect("an id"), n))
        .collect();
    assert_eq!(stored.len(), history.len(), "nothing stored twice");
    let attempted: HashSet<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.acked
                .iter()
                .map(|n| n["title"].as_str().expect("title").to_owned())
        })
        .chain(outcomes.iter().flat_map(|o| o.refused.iter().cloned()))
        .collect();
    for notification in &history {
        assert!(attempted.contains(notification["title"].as_str().expect("title")));
    }
    for outcome in &outcomes {
        for notification in &outcome.acked {
            let id = notification["id"].as_str().expect("id");
            assert_eq!(
                stored.get(id),
                Some(&notification),
                "acknowledged, then lost"
            );
        }
    }

    // The stream that stayed open through the crash got every stored one once, in log order,
    // and a replay from the start on the other node is the same, ids included.
    let events = stayed.next_events(history.len()).await;
    stayed.expect_no_event(QUIET).await;
    assert_strictly_increasing(&events);
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    assert_eq!(data, history.iter().collect::<Vec<_>>());
    let mut replay = Subscription::open(&urls[0], user, Some("0")).await;
    assert_eq!(replay.next_events(events.len()).await, events);
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// One herald binary of a test cluster: its own data directory, the test's Redis and prefix.
struct Node {
    dir: TempDir,
    args: Vec<String>,
    /// `None` only while [`Node::start_again`] replaces it.
    process: Option<ServerProcess>,
}

impl Node {
    fn start(redis: &RedisServer, prefix: &str, extra: &[&str]) -> Self {
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

    fn process(&self) -> &ServerProcess {
        self.process.as_ref().expect("a running node")
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        self.process.as_mut().expect("a running node")
    }

    fn url(&self) -> String {
        self.process().url.clone()
    }

    /// Starts the binary again on the same directory (and a new port) after it stopped.
    fn start_again(&mut self) {
        // Dropped first: its drop removes the log file the new process writes to.
        drop(self.process.take());
        self.process = Some(Self::spawn(self.dir.path(), &self.args));
    }
}

/// `n` nodes on `redis` under one fresh prefix: one cluster.
fn start_cluster(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Node> {
    let prefix = format!("cluster-{}", uuid::Uuid::new_v4().simple());
    (0..n).map(|_| Node::start(redis, &prefix, extra)).collect()
}

fn urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(Node::url).collect()
}

/// A Redis of this test's own, or `None` (with the reason printed) where none can run.
fn own_redis(extra: &[&str]) -> Option<RedisServer> {
    redis_server::available().then(|| RedisServer::start(extra))
}

/// Closes the connection of the most recently started node's log reader (the newest client
/// blocked in `XREAD`), as a network blip would.
async fn kill_newest_log_reader(redis: &RedisServer) {
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connected to redis");
    let clients: String = redis::cmd("CLIENT")
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
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(newest_reader)
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
}

async fn get(client: &reqwest::Client, url: &str, path: &str) -> (StatusCode, Value) {
    let response = tokio::time::timeout(WAIT, client.get(format!("{url}{path}")).send())
        .await
        .unwrap_or_else(|_| panic!("{url}{path} answered in time"))
        .unwrap_or_else(|error| panic!("{url}{path}: {error}"));
    read_json(response).await
}

/// Polls `/readyz` until it answers `want`; returns how long after `since` that was.
async fn wait_for_readiness(
    client: &reqwest::Client,
    url: &str,
    want: StatusCode,
    since: Instant,
) -> Duration {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = client
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answer.is_ok_and(|response| response.status() == want) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{url}/readyz never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing, and what publishers were told

/// One success a publisher was answered with; each publisher's come in the order it was told.
#[derive(Debug, Clone)]
enum Acked {
    Notification { user: String, id: String },
    Announcement { title: String },
    Read { user: String, id: String },
}

impl Acked {
    fn notification(user: &str, stored: &Value) -> Self {
        let id = stored["id"].as_str().expect("a notification id").to_owned();
        Self::Notification {
            user: user.to_owned(),
            id,
        }
    }

    /// Whether `viewer`'s streams carry this event.
    fn seen_by(&self, viewer: &str) -> bool {
        match self {
            Self::Notification { user, .. } | Self::Read { user, .. } => user == viewer,
            Self::Announcement { .. } => true,
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

fn note(title: &str) -> Value {
    json!({ "title": title, "message": format!("about {title}") })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = client.post(format!("{url}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .unwrap_or_else(|_| panic!("{url}{path} answered in time"))
        .unwrap_or_else(|error| panic!("{url}{path}: {error}"));
    read_json(response).await
}

/// Publishes a notification through `url` and asserts it was stored (`201`).
async fn publish(client: &reqwest::Client, url: &str, user: &str, title: &str) -> Value {
    let path = format!("/api/notifications/{user}");
    let (status, body) = post(client, url, &path, Some(&note(title))).await;
    assert_eq!(status, StatusCode::CREATED, "{title} via {url}: {body}");
    body
}

async fn broadcast(client: &reqwest::Client, url: &str, title: &str) -> Acked {
    let (status, body) = post(client, url, "/api/broadcast", Some(&note(title))).await;
    assert_eq!(status, StatusCode::OK, "{title} via {url}: {body}");
    Acked::Announcement {
        title: title.to_owned(),
    }
}

/// Marks an unread notification read, which sends one `read` event.
async fn mark_read(client: &reqwest::Client, url: &str, user: &str, of: &Acked) -> Acked {
    let Acked::Notification { id, .. } = of else {
        panic!("only a notification can be read: {of:?}");
    };
    let path = format!("/api/notifications/{user}/{id}/read");
    let (status, body) = post(client, url, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{path} via {url}: {body}");
    Acked::Read {
        user: user.to_owned(),
        id: id.clone(),
    }
}

/// Publishes `rounds` notifications, over `USERS` in turn, marking every third read and
/// broadcasting after every fifth; each request goes through another of `urls` than the last,
/// and each round is followed by `pause`.
async fn publish_rounds(
    urls: Vec<String>,
    publisher: usize,
    rounds: usize,
    pause: Duration,
) -> Vec<Acked> {
    let client = reqwest::Client::new();
    let mut turn = publisher;
    let mut next_url = move || {
        turn += 1;
        urls[turn % urls.len()].clone()
    };
    let mut acked = Vec::new();
    for round in 0..rounds {
        let user = USERS[(publisher + round) % USERS.len()];
        let title = format!("p{publisher}-{round}");
        let stored = publish(&client, &next_url(), user, &title).await;
        let notification = Acked::notification(user, &stored);
        if round % 3 == 2 {
            let read = mark_read(&client, &next_url(), user, &notification).await;
            acked.extend([notification, read]);
        } else {
            acked.push(notification);
        }
        if round % 5 == 4 {
            acked.push(broadcast(&client, &next_url(), &format!("b{publisher}-{round}")).await);
        }
        tokio::time::sleep(pause).await;
    }
    acked
}

async fn publish_concurrently(
    urls: &[String],
    publishers: usize,
    rounds: usize,
) -> Vec<Vec<Acked>> {
    let tasks: Vec<_> = (0..publishers)
        .map(|p| tokio::spawn(publish_rounds(urls.to_vec(), p, rounds, Duration::ZERO)))
        .collect();
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.expect("publisher did not panic"));
    }
    ledgers
}

/// What a publisher that keeps going through a Redis outage was told.
struct Outcome {
    /// Notifications answered `201`, in order.
    acked: Vec<Value>,
    /// Titles answered `503`: maybe stored, maybe not, but nobody was told they were.
    refused: Vec<String>,
}

/// Publishes to `ann` through `url` until `target` were acknowledged; a refusal must be a
/// `503` with an error body, and is followed by a short pause.
async fn publish_through_outage(
    url: String,
    publisher: usize,
    target: usize,
    acked_total: Arc<AtomicUsize>,
) -> Outcome {
    let client = reqwest::Client::new();
    let mut outcome = Outcome {
        acked: Vec::new(),
        refused: Vec::new(),
    };
    let deadline = Instant::now() + 3 * WAIT;
    for n in 0.. {
        if outcome.acked.len() == target {
            break;
        }
        assert!(Instant::now() < deadline, "publisher {publisher} got stuck");
        let title = format!("p{publisher}-{n}");
        let (status, body) =
            post(&client, &url, "/api/notifications/ann", Some(&note(&title))).await;
        match status {
            StatusCode::CREATED => {
                assert_eq!(body["title"], title.as_str());
                outcome.acked.push(body);
                acked_total.fetch_add(1, Ordering::SeqCst);
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

/// The `lastEventId` a history read gives: a stream opened with it misses nothing after.
async fn last_event_id(url: &str, user: &str) -> String {
    let path = format!("/api/notifications/{user}?limit=1");
    let (status, page) = get(&reqwest::Client::new(), url, &path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["lastEventId"]
        .as_str()
        .expect("lastEventId")
        .to_owned()
}

/// Reads a stream until its node dies, then goes on from its last id on `fallback` until it
/// holds `expected` events (unknown, `usize::MAX`, while publishing goes on). Returns the
/// events and how many times it reconnected.
async fn read_across_failover(
    mut stream: Subscription,
    mut cursor: String,
    fallback: String,
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
fn expected_for<'a>(user: &str, ledgers: &'a [Vec<Acked>]) -> Vec<&'a Acked> {
    ledgers
        .iter()
        .flatten()
        .filter(|a| a.seen_by(user))
        .collect()
}

fn event_id(event: &Received) -> EventId {
    event
        .id
        .parse()
        .unwrap_or_else(|_| panic!("{:?} is not an event id", event.id))
}

fn assert_strictly_increasing(events: &[Received]) {
    let ids: Vec<EventId> = events.iter().map(event_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must strictly increase: {ids:?}"
    );
}

/// Asserts `events` is exactly what publishers were told was stored for `user`: each once,
/// nothing else, ids strictly increasing, and each publisher's in the order it was answered.
fn assert_exactly_the_acknowledged(user: &str, events: &[Received], ledgers: &[Vec<Acked>]) {
    assert_strictly_increasing(events);
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

// ---------------------------------------------------------------------------------------------
// Reading streams

/// What reading a stream produced next.
#[derive(Debug)]
enum Next {
    Event(Received),
    Heartbeat,
    /// The stream ended (cleanly or not).
    Ended,
    /// Nothing arrived in the time given.
    Quiet,
}

/// An SSE stream read at the byte level, so that heartbeats, which are comments and which SSE
/// parsers drop, are seen too.
struct Subscription {
    user: String,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// Bytes of a block not yet complete.
    buffer: Vec<u8>,
    /// Complete blocks not yet handed out.
    parsed: VecDeque<Next>,
    ended: bool,
}

impl Subscription {
    /// Opens `user`'s stream on `url`, replaying after `after` if given; asserts `200` and
    /// reads `connected`.
    async fn open(url: &str, user: &str, after: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(format!("{url}/events/{user}"));
        if let Some(after) = after {
            request = request.header("last-event-id", after);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opened in time")
            .expect("stream request sent");
        assert_eq!(response.status(), StatusCode::OK, "stream refused by {url}");
        let mut stream = Self {
            user: user.to_owned(),
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            parsed: VecDeque::new(),
            ended: false,
        };
        assert_eq!(stream.next_event().await.event, "connected");
        stream
    }

    async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(next) = self.parsed.pop_front() {
                return next;
            }
            if self.ended {
                return Next::Ended;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::Quiet,
                Ok(None | Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(chunk))) => {
                    self.buffer.extend_from_slice(&chunk);
                    self.parse_blocks();
                }
            }
        }
    }

    fn parse_blocks(&mut self) {
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8(block).expect("utf8 stream");
            let (mut name, mut id, mut data, mut heartbeat) = (None, String::new(), None, false);
            for line in text.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    heartbeat |= comment.trim() == "heartbeat";
                    continue;
                }
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "event" => name = Some(value.to_owned()),
                    "id" => id = value.to_owned(),
                    "data" => data = Some(serde_json::from_str(value).expect("JSON data")),
                    _ => {}
                }
            }
            if let Some(event) = name {
                let data = data.expect("every event has data");
                self.parsed
                    .push_back(Next::Event(Received { event, id, data }));
            } else if heartbeat {
                self.parsed.push_back(Next::Heartbeat);
            }
        }
    }

    /// The next event, heartbeats skipped; fails the test if none comes within [`WAIT`].
    async fn next_event(&mut self) -> Received {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Event(event) => return event,
                Next::Heartbeat => {}
                Next::Ended => panic!("{}'s stream ended before the next event", self.user),
                Next::Quiet => panic!("no event for {} within {WAIT:?}", self.user),
            }
        }
    }

    async fn next_events(&mut self, n: usize) -> Vec<Received> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts that for `wait` the stream stays open and sends no event; returns how many
    /// heartbeats it sent meanwhile.
    async fn expect_no_event(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut heartbeats = 0;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Quiet => return heartbeats,
                Next::Heartbeat => heartbeats += 1,
                Next::Event(event) => panic!("{} got an unexpected {event:?}", self.user),
                Next::Ended => panic!("{}'s stream ended", self.user),
            }
        }
    }

    /// Asserts the stream ends within [`WAIT`], whatever comes before.
    async fn expect_end(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Ended => return,
                Next::Quiet => panic!("{}'s stream did not end", self.user),
                Next::Event(_) | Next::Heartbeat => {}
            }
        }
    }
}
