//! README.md#cluster-mode-redis, and docs/protocol.md#ids-and-replay "on any node of a cluster",
//! against real binaries sharing a real `redis-server` that each test starts, kills and restarts
//! itself: publishes through any node reach every node with the same ids; clients hop between nodes
//! with `Last-Event-ID`; and neither a Redis outage, a Redis crash (with AOF) nor a node's SIGKILL
//! loses anything a publisher was told was stored.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::cluster::{
    Acked, QUIET, USERS, apis, assert_exactly_the_acknowledged, expected_for,
    kill_newest_log_reader, own_redis, publish_concurrently, publish_rounds,
    publish_through_outage, read_across_failover, start_cluster,
};
use crate::helpers::raw_sse::{Next, Subscription};
use crate::helpers::{Received, WAIT, assert_strictly_increasing, event_id, event_ids, note};

/// Redis settings under which an acknowledged write survives a SIGKILL of Redis.
const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];
/// A publisher's pause between rounds where a failure or a client must act mid-run.
const PACE: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_through_any_node_reach_subscribers_on_every_node_with_the_same_increasing_ids() {
    let Some(redis) = own_redis(&[]) else { return };
    let nodes = start_cluster(&redis, 3, &[]);
    let apis = apis(&nodes);
    let mut streams = Vec::new();
    for api in &apis {
        for user in USERS {
            streams.push((user, Subscription::open(api, user, None).await));
        }
    }

    // Three publishers, each sending every request through another node than the last.
    let ledgers = publish_concurrently(&apis, 3, 30).await;

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
    let apis = apis(&nodes);
    let user = "ann";
    let mut cursor = apis[0].last_event_id(user).await;
    let mut stayed = Subscription::open(&apis[2], user, Some(&cursor)).await;

    // Publishers write through the first two nodes while the client visits all three, reading
    // a few events on each and going on elsewhere with the id of the last one it got.
    let publishers: Vec<_> = (0..2)
        .map(|p| tokio::spawn(publish_rounds(apis[..2].to_vec(), p, 60, PACE)))
        .collect();
    let mut got: Vec<Received> = Vec::new();
    let mut hops = 0;
    while !publishers.iter().all(|p| p.is_finished()) {
        let mut stream = Subscription::open(&apis[hops % apis.len()], user, Some(&cursor)).await;
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
    let mut last = Subscription::open(&apis[hops % apis.len()], user, Some(&cursor)).await;
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
    let (ahead, behind) = (nodes[0].api(), nodes[1].api());
    let mut lagged = 0;
    for attempt in 0..3 {
        let first = format!("first {attempt}");
        let mut on_ahead = Subscription::open(&ahead, "ann", None).await;
        ahead.publish("ann", &first).await;
        let cursor = on_ahead.next_event().await.id;
        // Cut the lagging node's log reader: for a moment (its retry pause) that node has not
        // dispatched what the other one already sent.
        kill_newest_log_reader(&redis).await;
        let sent = [
            ahead.publish("ann", &format!("second {attempt}")).await,
            ahead.publish("ann", &format!("third {attempt}")).await,
        ];
        let mut hopping = Subscription::open(&ahead, "ann", Some(&cursor)).await;
        let seen = hopping.next_events(2).await;
        assert_eq!(
            seen.iter().map(|e| &e.data).collect::<Vec<_>>(),
            sent.iter().collect::<Vec<_>>()
        );
        let mut hopped = Subscription::open(&behind, "ann", Some(&seen[1].id)).await;
        let (status, _) = behind.get_json("/readyz").await;
        lagged += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
        let fourth = ahead.publish("ann", &format!("fourth {attempt}")).await;
        let next = hopped.next_event().await;
        assert_eq!(
            next.data, fourth,
            "the node that caught up sent nothing the client had"
        );
        assert!(event_id(&next) > event_id(&seen[1]));
        hopped.expect_no_event(QUIET).await;
        behind
            .wait_for_readiness(StatusCode::OK, Instant::now())
            .await;
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
    let apis = apis(&nodes);
    let mut streams = Vec::new();
    for api in &apis {
        streams.push(Subscription::open(api, "ann", None).await);
    }
    let before = apis[0].publish("ann", "before").await;
    for stream in &mut streams {
        assert_eq!(stream.next_event().await.data, before);
    }

    let down = Instant::now();
    redis.kill();
    for (n, api) in apis.iter().enumerate() {
        let took = api
            .wait_for_readiness(StatusCode::SERVICE_UNAVAILABLE, down)
            .await;
        eprintln!("node {n}: /readyz 503 {took:?} after Redis was killed");
    }
    for (n, api) in apis.iter().enumerate() {
        let title = format!("during via {n}");
        let (status, body) = api.post_json("/api/notifications/ann", &note(&title)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{title}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        let announcement = json!({ "title": "during", "message": "m" });
        let (status, body) = api.post_json("/api/broadcast", &announcement).await;
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
        let (status, body) = apis[0]
            .post_json("/api/notifications/ann", &note("meanwhile"))
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
    for (n, api) in apis.iter().enumerate() {
        let took = api.wait_for_readiness(StatusCode::OK, back).await;
        eprintln!("node {n}: /readyz 200 {took:?} after Redis restarted");
    }
    // Once ready, a node takes publishes at the first try, whatever it answered before.
    let after = apis[1].publish("ann", "after").await;
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
    let titles: Vec<Value> = apis[1]
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
    let (a, b) = (nodes[0].api(), nodes[1].api());
    let mut stayed = Subscription::open(&a, "ann", None).await;
    let mut leaving = Subscription::open(&b, "ann", None).await;
    a.publish("ann", "seen").await;
    let seen = leaving.next_event().await;
    assert_eq!(stayed.next_event().await, seen);

    nodes[1].process().signal(nix::sys::signal::Signal::SIGTERM);
    assert!(nodes[1].process_mut().wait_exit(WAIT).success());
    leaving.expect_end().await;
    let mut missed = vec![Acked::notification(
        "ann",
        &a.publish("ann", "missed").await,
    )];
    a.publish("bob", "not ann's").await;
    missed.push(Acked::broadcast(&a, "missed announcement").await);
    missed.push(Acked::mark_read(&a, "ann", &missed[0]).await);
    let expected = stayed.next_events(missed.len()).await;

    nodes[1].start_again();
    let b = nodes[1].api();
    let mut back = Subscription::open(&b, "ann", Some(&seen.id)).await;
    assert_eq!(
        back.next_events(missed.len()).await,
        expected,
        "exactly what it missed"
    );
    back.expect_no_event(QUIET).await;
    assert_exactly_the_acknowledged("ann", &expected, &[missed]);
    let live = a.publish("ann", "live").await;
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
    let apis = apis(&nodes);
    let (live, victim) = (&apis[..2], &apis[2]);
    let expected: HashMap<&str, Arc<AtomicUsize>> = USERS
        .iter()
        .map(|user| (*user, Arc::new(AtomicUsize::new(usize::MAX))))
        .collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let mut stayed = Vec::new();
    let mut failing_over = Vec::new();
    for user in USERS {
        let cursor = victim.last_event_id(user).await;
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
    let apis = apis(&nodes);
    let user = "ann";
    let mut stayed = Subscription::open(&apis[1], user, None).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = apis
        .iter()
        .enumerate()
        .map(|(p, api)| {
            let outage =
                publish_through_outage(api.clone(), p, 80, acked.clone(), restarted.clone());
            tokio::spawn(outage)
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "publishers were too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    restarted.store(true, Ordering::SeqCst);
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
    let mut history = apis[0].full_history(user).await;
    assert_eq!(history, apis[1].full_history(user).await);
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
    assert_strictly_increasing(&event_ids(&events));
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    assert_eq!(data, history.iter().collect::<Vec<_>>());
    let mut replay = Subscription::open(&apis[0], user, Some("0")).await;
    assert_eq!(replay.next_events(events.len()).await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_changes_through_one_node_reach_every_node_and_an_expiry_is_sent_once() {
    let Some(redis) = own_redis(&[]) else { return };
    let nodes = start_cluster(&redis, 3, &[]);
    let apis = apis(&nodes);
    let mut streams = Vec::new();
    for api in &apis {
        streams.push(Subscription::open(api, "alice", None).await);
    }
    let short = apis[0]
        .publish_body(
            "alice",
            &json!({ "title": "short", "message": "m", "ttl": 2 }),
        )
        .await;
    let ids = apis[1]
        .publish_to_many(&["alice", "bob"], &note("both"))
        .await;
    let path = format!("/api/notifications/alice/{}", ids[0]);
    let (status, updated) = apis[2]
        .patch_json(&path, &json!({ "title": "changed" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (status, _) = apis[0].post_empty(&format!("{path}/archive")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = apis[1].delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut seen: Option<Vec<Received>> = None;
    for stream in &mut streams {
        // Every node runs the expiry sweep; exactly one `deleted` comes of it.
        let events = stream.next_events(6).await;
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "notification",
                "notification",
                "updated",
                "archived",
                "deleted",
                "deleted"
            ]
        );
        assert_eq!(events[2].data, updated);
        assert_eq!(events[4].data, json!({ "ids": [ids[0]] }));
        assert_eq!(
            events[5].data,
            json!({ "ids": [short["id"]], "reason": "expired" })
        );
        stream.expect_no_event(QUIET).await;
        assert_strictly_increasing(&event_ids(&events));
        match &seen {
            None => seen = Some(events),
            Some(first) => assert_eq!(&events, first, "the same events and ids on every node"),
        }
    }
    for api in &apis {
        assert_eq!(api.history_total("alice").await, 0);
        let (_, replay) = api.replay("alice", "0", 2).await;
        let names: Vec<&str> = replay.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["deleted", "deleted"], "nothing deleted is replayed");
    }
}
