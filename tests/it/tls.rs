//! README.md#running-it `--tls-cert`/`--tls-key`, and docs/protocol.md#streams on HTTP/2: HTTPS
//! with HTTP/2 by ALPN, so one connection carries more than the six streams a browser allows per
//! origin over HTTP/1.1. Each test makes its own self-signed certificate for `localhost` and
//! `127.0.0.1` and trusts only that.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Version};
use tempfile::TempDir;

use crate::helpers::answers::sample;
use crate::helpers::command::run_serve;
use crate::helpers::tls::{SelfSigned, spawn_https};
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
