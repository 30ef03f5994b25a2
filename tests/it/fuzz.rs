//! A property test of the whole HTTP surface: a few hundred random requests (random JSON and bytes
//! as bodies, random content types, path segments, queries, `Idempotency-Key` and `Last-Event-ID`
//! values; publishes to many users, patches and archives of real and made-up notifications,
//! deletes of made-up ones) against one real server. None may get a 5xx; every 4xx carries a JSON `{"error"}`
//! (docs/protocol.md#errors); whatever is accepted obeys the rules of docs/protocol.md#publishing;
//! a stream opened from any id starts with `connected` and then sends exactly what the user missed
//! (or `resync`); and at the end the server is alive and delivering.

use std::collections::BTreeMap;

use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;

use crate::helpers::TestApp;
use crate::helpers::fuzz::{Harness, Recorder, USERS, probe, run_probe};

/// How many random requests one run sends.
const CASES: u32 = 300;

#[test]
fn random_requests_never_get_a_5xx_every_4xx_is_a_json_error_and_the_server_keeps_delivering() {
    // Generating these nested strategies takes more stack than a test thread has in a debug
    // build; the server itself runs on the runtime's own threads.
    std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(32 << 20)
        .spawn(fuzz_the_server)
        .expect("thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn fuzz_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let harness = runtime.block_on(async {
        let app = TestApp::spawn_with(|s| {
            // Probes open and drop many streams of the same few users.
            s.max_streams_per_user = 100_000;
            s.max_streams = 100_000;
        })
        .await;
        let mut recorders = BTreeMap::new();
        for user in USERS {
            recorders.insert(user, Recorder::open(&app, user).await);
        }
        Harness { app, recorders }
    });

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let outcome = runner.run(&probe(), |probe| {
        runtime.block_on(run_probe(&harness, probe))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    eprintln!("{CASES} random requests in {:?}", started.elapsed());

    runtime.block_on(async {
        let (status, _) = harness.app.get_json("/healthz").await;
        assert_eq!(status, StatusCode::OK, "the server is alive");
        // Streams opened before all of it still deliver.
        for user in USERS {
            let marker = harness.app.publish(user, "the last word").await;
            let id = marker["id"].as_str().expect("id");
            let seen = harness.recorders[user].wait_for(id).await;
            let last = seen.last().expect("at least the marker");
            assert_eq!(last.data, marker, "{user}'s stream ends with the marker");
        }
    });
}
