//! `herald-bench` run as the real binary against a herald server serving from this test process
//! (floor: against the bench's own ideal server): each scenario, with a handful of streams,
//! runs to its end by itself, loses nothing, duplicates nothing and prints its JSON line.
//! Timings are never asserted: they belong to the machine, not the code.

use std::sync::Arc;
use std::time::Duration;

use herald::config::PushSettings;
use herald::push::VapidKey;
use herald::push::endpoint::EndpointPolicy;
use herald::store::push::PushWhen;
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A scenario of this size finishes in a few seconds; this is the ceiling before the test fails.
const BENCH_WAIT: Duration = Duration::from_secs(60);
/// How long the server may take to drain once told to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A herald server to measure, in this process on a port the kernel chose, and the directory it
/// keeps its data in. [`Target::stop`] drains it and fails the test if the server failed.
struct Target {
    url: String,
    /// Sending (or dropping) this tells the server to drain and stop.
    stop: oneshot::Sender<()>,
    /// The server's task; it panics if `herald::run` returns an error.
    task: JoinHandle<()>,
    _data: TempDir,
    /// A TLS server's certificate and key.
    _files: Option<TempDir>,
}

impl Target {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that pushes (`when`) to any endpoint, the bench's push service on loopback
    /// included.
    async fn start_pushing(when: PushWhen) -> Self {
        let push = PushSettings {
            key: Arc::new(VapidKey::generate().expect("a VAPID key")),
            subject: "mailto:bench@example.com".into(),
            when,
            ttl: Duration::from_secs(60),
            subscriptions_per_user: 10,
            endpoints: EndpointPolicy::new(Vec::new(), true),
        };
        Self::start_with(Some(push)).await
    }

    async fn start_with(push: Option<PushSettings>) -> Self {
        Self::start_configured(|settings| settings.push = push).await
    }

    /// A server on HTTPS (HTTP/1.1 and HTTP/2) with a certificate for `localhost`, whose PEM
    /// file is `ca_cert`.
    async fn start_tls() -> (Self, std::path::PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["localhost".to_owned()]).expect("a certificate");
        let files = TempDir::new().expect("temp dir");
        let (cert_path, key_path) = (files.path().join("cert.pem"), files.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("cert written");
        std::fs::write(&key_path, signing_key.serialize_pem()).expect("key written");
        let tls = herald::config::TlsFiles {
            cert: cert_path.clone(),
            key: key_path,
        };
        let mut target = Self::start_configured(|settings| settings.tls = Some(tls)).await;
        target.url = target.url.replace("http://127.0.0.1", "https://localhost");
        target._files = Some(files);
        (target, cert_path)
    }

    async fn start_configured(configure: impl FnOnce(&mut herald::Settings)) -> Self {
        let data = TempDir::new().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut settings = herald::Settings::new(addr, data.path().to_path_buf());
        configure(&mut settings);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            herald::run(listener, settings, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            url: format!("http://{addr}"),
            stop,
            task,
            _data: data,
            _files: None,
        }
    }

    /// Runs `herald-bench ARGS` against this server and returns its JSON line. The server's
    /// memory and CPU are this process's.
    async fn bench(&self, args: &[&str]) -> Value {
        let base = &self.url;
        let targets = [
            "--sub-url".to_owned(),
            format!("{base}/events/{{user}}"),
            "--pub-url".to_owned(),
            format!("{base}/api/notifications/{{user}}"),
            "--broadcast-url".to_owned(),
            format!("{base}/api/broadcast"),
            "--batch-url".to_owned(),
            format!("{base}/api/notifications"),
            "--push-sub-url".to_owned(),
            format!("{base}/api/push/{{user}}/subscriptions"),
            "--server-pid".to_owned(),
            std::process::id().to_string(),
        ];
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        run_bench(&[args, &targets].concat()).await
    }

    /// Drains and stops the server, failing the test if it failed or does not stop in time.
    async fn stop(self) {
        let _ = self.stop.send(());
        timeout(STOP_WAIT, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server ran without failing");
    }
}

/// Runs `herald-bench ARGS` and returns its last stdout line as JSON.
async fn run_bench(args: &[&str]) -> Value {
    let output = timeout(
        BENCH_WAIT,
        Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .args(args)
            .args(["--deadline", "10s"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench ended by itself in time")
    .expect("the bench ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}\n{stdout}");
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|_| panic!("the last line is JSON: {last}"))
}

/// Each of `figures` is in the report, as a number.
fn assert_figures(report: &Value, figures: &[&str]) {
    for figure in figures {
        assert!(report[figure].is_number(), "{figure}: {report}");
    }
}

fn assert_every_event_arrived_once(report: &Value, expected: u64) {
    assert_eq!(report["open_failures"], 0, "{report}");
    assert_eq!(report["expected"], expected, "{report}");
    assert_eq!(report["delivered"], expected, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["unexpected"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_opens_every_stream_and_reports_the_servers_memory() {
    let target = Target::start().await;
    let report = target.bench(&["hold", "--streams", "20"]).await;
    assert_eq!(report["scenario"], "hold");
    assert_eq!(report["opened"], 20, "{report}");
    assert_eq!(report["open_failures"], 0, "{report}");
    assert!(report["server_rss_after_kib"].is_u64(), "{report}");
    assert!(report["streams_per_s"].is_number(), "{report}");
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_tls_holds_every_stream_over_http1_and_shares_http2_connections() {
    let (target, ca_cert) = Target::start_tls().await;
    let ca = ca_cert.to_str().expect("a UTF-8 path");
    let tls_url = format!("{}/events/{{user}}", target.url);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_cert).expect("cert")).expect("pem"),
        )
        .build()
        .expect("client");
    let accepted = || async {
        let metrics = client
            .get(format!("{}/metrics", target.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("herald_connections_accepted_total "))
            .and_then(|value| value.parse::<f64>().ok())
            .expect("the accepted-connections counter")
    };
    let pid = std::process::id().to_string();
    for (mode, http, connections) in [
        (&[][..], "1.1", 12),
        (&["--http2", "--streams-per-connection", "4"][..], "2", 3),
    ] {
        let before = accepted().await;
        let args = [
            &[
                "hold-tls",
                "--streams",
                "12",
                "--tls-url",
                &tls_url,
                "--ca-cert",
                ca,
            ][..],
            mode,
            &["--server-pid", &pid],
        ]
        .concat();
        let report = run_bench(&args).await;
        assert_eq!(report["scenario"], "hold-tls");
        assert_eq!(
            (&report["http"], &report["opened"], &report["open_failures"]),
            (&Value::from(http), &Value::from(12), &Value::from(0)),
            "{report}"
        );
        assert_eq!(report["connections"], connections, "{report}");
        assert_figures(
            &report,
            &["server_rss_per_stream_kib", "server_rss_per_connection_kib"],
        );
        // The metrics client keeps its one connection open between its reads.
        let made = accepted().await - before;
        assert_eq!(
            made,
            f64::from(connections),
            "connections the server accepted: {report}"
        );
    }
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_broadcast_to_every_stream() {
    let target = Target::start().await;
    let report = target
        .bench(&["fanout", "--streams", "10", "--events", "3", "--rate", "20"])
        .await;
    assert_every_event_arrived_once(&report, 30);
    assert!(report["delivery_latency_p99_ms"].is_number(), "{report}");
    assert!(report["all_received_p50_ms"].is_number(), "{report}");
    assert_eq!(
        report["concurrency"], 1,
        "one broadcast in flight by default: {report}"
    );
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_writes_each_stream_s_arrival_of_each_broadcast_to_the_timeline() {
    let target = Target::start().await;
    let timeline = TempDir::new().unwrap();
    let args = broadcasts_with_timeline("fanout", 10, timeline.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = target.bench(&args).await;
    assert_every_event_arrived_once(&report, 30);
    assert_timeline_has_each_broadcast_once_per_stream(timeline.path(), 3, 10, &report);
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_writes_each_stream_s_arrival_of_each_broadcast_to_the_timeline() {
    let timeline = TempDir::new().unwrap();
    let args = broadcasts_with_timeline("floor", 20, timeline.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = run_bench(&args).await;
    assert_every_event_arrived_once(&report, 60);
    assert_timeline_has_each_broadcast_once_per_stream(timeline.path(), 3, 20, &report);
}

/// `scenario` with three broadcasts to `streams` streams, its timeline written in `dir`.
fn broadcasts_with_timeline(scenario: &str, streams: u32, dir: &std::path::Path) -> Vec<String> {
    let path = dir.join("timeline");
    [
        scenario,
        "--streams",
        &streams.to_string(),
        "--events",
        "3",
        "--rate",
        "20",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["--timeline".to_owned(), path.display().to_string()])
    .collect()
}

/// The timeline in `dir` holds one `SEND_NS LATENCY_NS` line per stream and broadcast, in
/// send-time order, and its largest latency is the report's largest.
fn assert_timeline_has_each_broadcast_once_per_stream(
    dir: &std::path::Path,
    broadcasts: usize,
    streams: usize,
    report: &Value,
) {
    let text = std::fs::read_to_string(dir.join("timeline")).expect("the bench wrote the timeline");
    let lines: Vec<(u64, u64)> = text
        .lines()
        .map(|line| {
            let (sent, latency) = line.split_once(' ').expect("two numbers a line");
            (sent.parse().unwrap(), latency.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), broadcasts * streams, "{text}");
    assert!(lines.windows(2).all(|pair| pair[0] <= pair[1]), "{text}");
    let mut sends: Vec<u64> = lines.iter().map(|&(sent, _)| sent).collect();
    sends.dedup();
    assert_eq!(sends.len(), broadcasts, "{text}");
    for sent in sends {
        let arrivals = lines.iter().filter(|&&(at, _)| at == sent).count();
        assert_eq!(arrivals, streams, "broadcast {sent}: {text}");
    }
    let slowest_ms = lines.iter().map(|&(_, latency)| latency).max().unwrap() as f64 / 1e6;
    let reported = report["delivery_latency_max_ms"]
        .as_f64()
        .expect("a max latency");
    assert!(
        (slowest_ms - reported).abs() < 0.01,
        "{slowest_ms} ms against {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_several_broadcasts_in_flight_still_delivers_each_once() {
    let target = Target::start().await;
    let report = target
        .bench(&[
            "fanout",
            "--streams",
            "10",
            "--events",
            "6",
            "--rate",
            "50",
            "--concurrency",
            "3",
        ])
        .await;
    assert_eq!(report["concurrency"], 3, "{report}");
    assert_eq!(report["broadcast_ok"], 6, "{report}");
    assert_every_event_arrived_once(&report, 60);
    target.stop().await;
}

#[tokio::test]
async fn floor_delivers_every_write_of_the_ideal_server_to_every_stream() {
    // No herald here: the ideal server runs in a child of the bench.
    let report = run_bench(&["floor", "--streams", "50", "--events", "3", "--rate", "20"]).await;
    assert_eq!(report["scenario"], "floor");
    assert_eq!(report["floor_frame"], "minimal", "{report}");
    assert_every_event_arrived_once(&report, 150);
    assert_eq!(report["fanout_write_failures"], 0, "{report}");
    assert!(report["writer_threads"].is_u64(), "{report}");
    assert!(report["fanout_write_max_ms"].is_number(), "{report}");
    for figure in ["p50", "p99", "max"] {
        let key = format!("all_received_{figure}_ms");
        assert!(report[&key].is_number(), "{key}: {report}");
    }
}

#[tokio::test]
async fn floor_with_herald_s_frame_delivers_every_event_to_every_stream() {
    let report = run_bench(&[
        "floor",
        "--streams",
        "20",
        "--events",
        "3",
        "--rate",
        "20",
        "--floor-frame",
        "herald",
    ])
    .await;
    assert_eq!(report["floor_frame"], "herald", "{report}");
    assert_every_event_arrived_once(&report, 60);
    assert_eq!(report["fanout_write_failures"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_delivers_every_publish_to_its_user_once() {
    let target = Target::start().await;
    let report = target
        .bench(&[
            "targeted",
            "--users",
            "10",
            "--publishes",
            "50",
            "--concurrency",
            "4",
        ])
        .await;
    assert_eq!(report["publish_ok"], 50, "{report}");
    assert_every_event_arrived_once(&report, 50);
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_sends_idle_streams_nothing_and_still_delivers_every_publish() {
    let target = Target::start().await;
    let report = target
        .bench(&[
            "targeted",
            "--users",
            "10",
            "--idle-streams",
            "20",
            "--publishes",
            "50",
            "--concurrency",
            "4",
        ])
        .await;
    assert_eq!(report["idle_streams"], 20, "{report}");
    assert_eq!(report["opened"], 30, "{report}");
    assert_every_event_arrived_once(&report, 50);
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_recipients_delivers_each_users_notification_of_every_acknowledged_batch_once() {
    let target = Target::start().await;
    // 7 batches of 10 cycle through the 20 users: users 0-9 get 4 notifications, 10-19 get 3.
    let report = target
        .bench(&[
            "many-recipients",
            "--users",
            "20",
            "--batch-size",
            "10",
            "--batches",
            "7",
            "--concurrency",
            "3",
        ])
        .await;
    assert_eq!(report["scenario"], "many-recipients");
    assert_eq!(report["batch_ok"], 7, "{report}");
    assert_eq!(report["batch_failed"], 0, "{report}");
    assert_eq!(report["stored"], 70, "{report}");
    assert_every_event_arrived_once(&report, 70);
    assert_figures(
        &report,
        &[
            "stored_per_s",
            "delivered_per_s",
            "batch_latency_p99_ms",
            "delivery_latency_p99_ms",
        ],
    );
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_every_stream_dropped_delivers_each_missed_event_once() {
    let target = Target::start().await;
    for replay_with in ["user", "broadcast"] {
        let report = target
            .bench(&[
                "replay",
                "--streams",
                "10",
                "--events",
                "3",
                "--replay-with",
                replay_with,
            ])
            .await;
        assert_eq!(report["reconnect_open_failures"], 0, "{report}");
        assert!(report["catchup_s"].is_number(), "{report}");
        assert_every_event_arrived_once(&report, 30);
    }
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_times_every_users_push_from_its_201_and_finds_none_malformed() {
    let target = Target::start_pushing(PushWhen::Offline).await;
    let report = target
        .bench(&["push", "--users", "30", "--concurrency", "4"])
        .await;
    assert_eq!(report["scenario"], "push");
    assert_eq!(report["subscribe_ok"], 30, "{report}");
    assert_eq!(report["publish_ok"], 30, "{report}");
    assert_eq!(report["push_received"], 30, "{report}");
    for zero in [
        "push_lost",
        "push_duplicates",
        "push_unexpected",
        "push_malformed",
    ] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert_figures(
        &report,
        &[
            "push_per_s",
            "push_latency_p50_ms",
            "push_latency_p90_ms",
            "push_latency_p99_ms",
            "push_latency_max_ms",
            "server_cpu_s",
        ],
    );
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_with_push_subscribe_counts_a_push_for_every_publish() {
    let target = Target::start_pushing(PushWhen::Always).await;
    let report = target
        .bench(&[
            "targeted",
            "--users",
            "10",
            "--publishes",
            "40",
            "--concurrency",
            "4",
            "--push-subscribe",
        ])
        .await;
    assert_every_event_arrived_once(&report, 40);
    assert_eq!(report["subscribe_ok"], 10, "{report}");
    assert_eq!(report["push_expected"], 40, "{report}");
    assert_eq!(report["push_received"], 40, "{report}");
    assert_eq!(report["push_malformed"], 0, "{report}");
    assert!(
        report["push_latency_p50_ms"].is_null(),
        "not timed: {report}"
    );
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_against_a_server_without_push_fails_and_says_why() {
    let target = Target::start().await;
    let base = &target.url;
    let output = timeout(
        BENCH_WAIT,
        Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .args(["push", "--users", "3", "--pub-url"])
            .arg(format!("{base}/api/notifications/{{user}}"))
            .arg("--push-sub-url")
            .arg(format!("{base}/api/push/{{user}}/subscriptions"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ends in time")
    .expect("the bench ran");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--vapid-key"), "{stderr}");
    target.stop().await;
}

#[tokio::test]
async fn bench_refuses_targets_outside_loopback() {
    let output = timeout(
        BENCH_WAIT,
        Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .args(["hold", "--sub-url", "http://192.0.2.1:3000/events/{user}"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("refused at once")
    .expect("the bench ran");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

/// A server that greets each stream with a comment and sends no event (as Nchan does with
/// `: hi`): its streams count as opened at that comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_counts_a_stream_greeted_only_by_a_comment_as_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events/{{user}}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let read = stream.read(&mut request).await.unwrap();
            assert!(request[..read].starts_with(b"GET /events/"));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: hi\n\n")
                .await
                .unwrap();
            held.push(stream);
        }
    });
    let report = run_bench(&["hold", "--streams", "5", "--sub-url", &url]).await;
    assert_eq!(report["opened"], 5, "{report}");
    assert_eq!(report["open_failures"], 0, "{report}");
    server.abort();
}
