//! README.md#running-it `--tls-cert`/`--tls-key`, and docs/protocol.md#streams on HTTP/2: HTTPS
//! with HTTP/2 by ALPN, so one connection carries more than the six streams a browser allows per
//! origin over HTTP/1.1; and HTTP/1.1 over TLS 1.3 on herald's own path, whose live streams
//! seal their records themselves (docs/architecture.md#tls-streams). Each test makes its own
//! self-signed certificate for `localhost` and `127.0.0.1` and trusts only that.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Version};
use tempfile::TempDir;

use crate::helpers::answers::sample;
use crate::helpers::command::run_serve;
use crate::helpers::raw_sse::ChunkedSse;
use crate::helpers::tls::{SelfSigned, spawn_https};
use crate::helpers::wire::{RawClient, expect_lean_stream, get_request};
use crate::helpers::{ServerProcess, SseClient, WAIT, send, titles};

#[tokio::test]
async fn https_serves_a_client_that_trusts_the_certificate_and_plain_http_is_refused() {
    let certificate = SelfSigned::new();
    let app = spawn_https(&certificate).await;

    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);

    let plain = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .get(format!("http://{}/healthz", app.addr))
            .send(),
    )
    .await
    .expect("plain HTTP answered or refused in time");
    assert!(plain.is_err(), "plain HTTP got {plain:?}");

    // A client without the certificate cannot verify the server either.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .resolve("localhost", app.addr)
        .build()
        .expect("client");
    let unverified = tokio::time::timeout(WAIT, untrusting.get(app.url("/healthz")).send())
        .await
        .expect("refused in time");
    assert!(unverified.is_err(), "an unknown certificate was accepted");

    // Neither failed handshake disturbed the server.
    let published = app.publish("alice", "after the refusals").await;
    assert_eq!(published["title"], "after the refusals");
    app.stop().await;
}

#[tokio::test]
async fn https_negotiates_http2_by_alpn() {
    let certificate = SelfSigned::new();
    let app = spawn_https(&certificate).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.version(), Version::HTTP_2);

    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    app.stop().await;
}

#[tokio::test]
async fn eight_streams_and_their_publishes_share_one_http2_connection() {
    let certificate = SelfSigned::new();
    let app = spawn_https(&certificate).await;
    // The first request settles the connection as HTTP/2 before the streams race for it.
    let response = app.get("/healthz").await;
    assert_eq!(response.version(), Version::HTTP_2);

    let users: Vec<String> = (0..8).map(|n| format!("user{n}")).collect();
    let urls: Vec<String> = users
        .iter()
        .map(|user| app.url(&format!("/events/{user}")))
        .collect();
    let mut streams = futures::future::join_all(
        urls.iter()
            .map(|url| SseClient::open(&app.client, url, None)),
    )
    .await;
    for stream in &mut streams {
        stream.expect_connected().await;
    }
    for user in &users {
        app.publish(user, &format!("for {user}")).await;
    }
    for (stream, user) in streams.iter_mut().zip(&users) {
        let got = stream.next_event().await;
        assert_eq!(got.event, "notification");
        assert_eq!(titles(&[got]), [format!("for {user}")]);
    }

    let page = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics body");
    assert_eq!(sample(&page, "herald_streams"), 8.0);
    assert_eq!(
        sample(&page, "herald_connections_accepted_total"),
        1.0,
        "8 streams, 8 publishes and this request all on one TCP connection"
    );
    // Closing a stream resets only that HTTP/2 stream, and the server frees its slot.
    drop(streams);
    let started = Instant::now();
    loop {
        let page = app
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics body");
        if sample(&page, "herald_streams") == 0.0 {
            break;
        }
        assert!(started.elapsed() < WAIT, "streams still open:\n{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn the_binary_with_tls_flags_announces_https_and_serves_it() {
    let certificate = SelfSigned::new();
    let data = TempDir::new().expect("temp dir");
    let cert = certificate.cert.to_str().expect("utf8 path");
    let key = certificate.key.to_str().expect("utf8 path");
    let server = ServerProcess::start(data.path(), &["--tls-cert", cert, "--tls-key", key]);
    let addr: SocketAddr = server
        .url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not an https address: {}", server.url))
        .parse()
        .expect("host:port");

    let client = certificate.client(addr);
    let response = send(client.get(format!("https://localhost:{}/healthz", addr.port()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
}

#[tokio::test]
async fn the_binary_exits_naming_the_flag_when_the_certificate_is_missing() {
    let certificate = SelfSigned::new();
    let data = TempDir::new().expect("temp dir");
    let missing = data.path().join("no-such-cert.pem");
    let output = run_serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            missing.to_str().expect("utf8 path"),
            "--tls-key",
            certificate.key.to_str().expect("utf8 path"),
        ],
        &[],
    );

    assert!(
        !output.status.success(),
        "herald exited {:?}",
        output.status
    );
    let stdout = &output.stdout;
    assert!(stdout.is_empty(), "nothing announced: {stdout:?}");
    let stderr = &output.stderr;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("herald: --tls-cert {}: ", missing.display())),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn http_1_1_over_tls_1_3_streams_on_herald_s_path_and_ends_with_a_close_notify() {
    let certificate = SelfSigned::new();
    let app = spawn_https(&certificate).await;
    // A client that asks for HTTP/1.1 by ALPN, and one that names no protocol at all.
    for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
        let tls = certificate.connect_raw(app.addr, alpn).await;
        let mut client = RawClient::over(tls);
        // A request answered whole first: the stream then opens on the same connection.
        client.send(&get_request("/healthz")).await;
        let (head, _) = client.read_whole_response().await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        expect_lean_stream(&mut client, "ann").await;
        client.read_through("\n\r\n").await;
        for n in 0..3 {
            app.publish("ann", &format!("sealed {n}")).await;
        }
        let events = client.read_through("sealed 2").await;
        let at: Vec<usize> = (0..3)
            .map(|n| events.find(&format!("sealed {n}")).expect("each event"))
            .collect();
        assert!(at.is_sorted(), "in order: {events}");
        // The connection's answer and its stream, both over TLS: no stream left behind.
        app.wait_for_streams(1).await;
        drop(client);
        app.wait_for_streams(0).await;
    }

    let tls = certificate.connect_raw(app.addr, &[b"http/1.1"]).await;
    let mut client = RawClient::over(tls);
    expect_lean_stream(&mut client, "ann").await;
    client.read_through("\n\r\n").await;
    app.stop().await;
    // The last chunk, then a close_notify: a TLS client reads a clean end, not a cut.
    assert_eq!(client.read_to_end().await, "0\r\n\r\n");
}

#[tokio::test]
async fn tls_1_2_and_http2_clients_are_served_by_hyper_as_before() {
    let certificate = SelfSigned::new();
    let app = spawn_https(&certificate).await;
    let socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let tls = certificate
        .connect_over(socket, &[b"http/1.1"], &[&rustls::version::TLS12])
        .await;
    let mut client = RawClient::over(tls);
    client.send(&get_request("/events/ann")).await;
    let head = client.read_through("\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // hyper's stream keeps the connection: it never says `connection: close`.
    assert!(!head.contains("connection: close"), "{head}");
    client.read_through("event: connected\n").await;
    app.publish("ann", "over TLS 1.2").await;
    client.read_through("over TLS 1.2").await;

    let response = app.get("/healthz").await;
    assert_eq!(response.version(), Version::HTTP_2);
    app.stop().await;
}

/// A TLS stream whose reader pauses: direct writes stop part-way through a record, the rest
/// and the frames behind it wait, and when it reads again every notification arrives exactly
/// once, in id order, through records the client accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_stream_that_pauses_gets_every_record_and_notification_in_order() {
    const PAUSED_PUBLISHES: usize = 3_000;
    const MESSAGE_CHARS: usize = 3_900;
    let certificate = SelfSigned::new();
    let app = crate::helpers::tls::spawn_https_with(&certificate, |settings| {
        settings.queue.max_bytes = 64 << 20;
        settings.queue.max_frames = 100_000;
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let socket = socket.connect(app.addr).await.unwrap();
    let mut paused = certificate
        .connect_over(socket, &[b"http/1.1"], rustls::DEFAULT_VERSIONS)
        .await;
    let mut reader = ChunkedSse::open(&mut paused, "pauser").await;
    app.wait_for_streams(1).await;

    // ~12 MB while it does not read: more than the socket buffers on both sides hold.
    for publisher in app.publish_flood("pauser", PAUSED_PUBLISHES, 4, MESSAGE_CHARS) {
        publisher.await.unwrap();
    }

    reader
        .read_every_notification(&mut paused, PAUSED_PUBLISHES)
        .await;
    app.stop().await;
}
