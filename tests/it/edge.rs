//! The HTTP edge under hostile clients (docs/protocol.md#limits): raw sockets that send
//! lengths two parsers could read differently, pipeline without reading, grow or drip heads,
//! never finish bodies, sit idle on HTTP/2, hold connections by the dozen, or send a
//! cookie-authenticated change from another site. The deadlines are shortened here (the
//! product's are 30 s and 60 s); every test checks that the connection ends, answered or
//! reset, by its deadline, and that nothing was stored.

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::edge::Deadlines;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::tls::{SelfSigned, read_tls_until_closed, spawn_https_with};
use crate::helpers::wire::{RawClient, post_request};
use crate::helpers::{TestApp, h2c_client, send};

/// Deadlines short enough for a test.
const FAST: Deadlines = Deadlines {
    head: Duration::from_secs(1),
    body: Duration::from_secs(1),
    write: Duration::from_secs(1),
    idle: Duration::from_secs(2),
};
/// Slack on every deadline for a busy test machine.
const SLACK: Duration = Duration::from_secs(3);
/// A publish body of 27 bytes.
const BODY: &str = r#"{"title":"t","message":"m"}"#;
const OPEN: &str = "herald_connections_open";

async fn spawn_fast() -> TestApp {
    TestApp::spawn_with(|s| s.deadlines = FAST).await
}

async fn spawn_fast_https(certificate: &SelfSigned) -> TestApp {
    spawn_https_with(certificate, |s| s.deadlines = FAST).await
}

/// A publish for alice whose `Content-Length` field reads `lengths`, body and all.
fn publish_with_length(lengths: &str) -> String {
    format!(
        "POST /api/notifications/alice HTTP/1.1\r\nHost: herald.test\r\nContent-Type: application/json\r\nContent-Length: {lengths}\r\n\r\n{BODY}"
    )
}

const AMBIGUOUS_LENGTHS: [&str; 8] = [
    "+27",
    "-27",
    "0x1b",
    "27, 27",
    "27, 28",
    "27\r\nContent-Length: 28",
    "2.7e1",
    "",
];

#[tokio::test]
async fn a_length_two_parsers_could_read_differently_gets_400_closes_and_stores_nothing() {
    let app = spawn_fast().await;
    for lengths in AMBIGUOUS_LENGTHS {
        let mut client = RawClient::connect(&app).await;
        client.send(&publish_with_length(lengths)).await;
        let (answer, _) = client.read_until_closed().await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{lengths:?}: {answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(
            answer.ends_with(r#""}"#) && answer.contains(r#"{"error":"#),
            "{answer}"
        );
    }
    // A length both parsers read as one number is taken, repeated or not.
    let mut client = RawClient::connect(&app).await;
    client
        .send(&publish_with_length("27\r\nContent-Length: 27"))
        .await;
    let (head, _) = client.read_whole_response().await;
    assert!(head.starts_with("HTTP/1.1 201 "), "{head}");
    assert_eq!(app.history_total("alice").await, 1);
}

#[tokio::test]
async fn hyper_refuses_the_same_ambiguous_lengths_over_tls_and_stores_nothing() {
    let certificate = SelfSigned::new();
    let app = spawn_fast_https(&certificate).await;
    for lengths in AMBIGUOUS_LENGTHS {
        let mut tls = certificate.connect_raw(app.addr, &[b"http/1.1"]).await;
        tls.write_all(publish_with_length(lengths).as_bytes())
            .await
            .unwrap();
        let answer = read_tls_until_closed(&mut tls).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{lengths:?}: {answer}");
    }
    assert_eq!(app.history_total("alice").await, 0);
}

#[tokio::test]
async fn a_client_that_pipelines_and_never_reads_is_reset_by_its_deadline() {
    let app = spawn_fast().await;
    let base = app.wait_for_metric(OPEN, |_| true).await;
    // A small receive window, so the answers stall at once instead of filling buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket
        .connect(app.socket_addr().parse().unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    client
        .write_all(
            "GET / HTTP/1.1\r\nHost: herald.test\r\n\r\n"
                .repeat(300)
                .as_bytes(),
        )
        .await
        .unwrap();
    app.wait_for_metric(OPEN, |open| open == base + 1.0).await;
    app.wait_for_metric(OPEN, |open| open == base).await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < FAST.write + FAST.head + SLACK,
        "held for {closed_after:?}"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(crate::helpers::WAIT, client.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Err(ref error)) if error.kind() == std::io::ErrorKind::ConnectionReset),
        "not reset: {read:?} after {} bytes",
        rest.len()
    );
}

#[tokio::test]
async fn a_tls_client_that_pipelines_and_never_reads_is_cut_off_at_the_write_deadline() {
    let certificate = SelfSigned::new();
    let app = spawn_fast_https(&certificate).await;
    let base = app.wait_for_metric(OPEN, |_| true).await;
    let mut tls = certificate.connect_raw(app.addr, &[b"http/1.1"]).await;
    let started = Instant::now();
    tls.write_all(
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
            .repeat(300)
            .as_bytes(),
    )
    .await
    .unwrap();
    app.wait_for_metric(OPEN, |open| open == base).await;
    assert!(
        started.elapsed() < FAST.write + SLACK,
        "held for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_head_over_16_kib_gets_431_whoever_would_have_served_it() {
    let certificate = SelfSigned::new();
    let plain = spawn_fast().await;
    let https = spawn_fast_https(&certificate).await;
    let head = |method: &str, padding: usize| {
        format!(
            "{method} /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
            "p".repeat(padding)
        )
    };
    for method in ["GET", "HEAD"] {
        let mut client = RawClient::connect(&plain).await;
        client.send(&head(method, 15 * 1024)).await;
        let answer = client.read_through("\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{method}: {answer}");

        for padding in [20 * 1024, 500 * 1024] {
            let mut client = RawClient::connect(&plain).await;
            client.send(&head(method, padding)).await;
            let (answer, _) = client.read_until_closed().await;
            assert!(
                answer.starts_with("HTTP/1.1 431 "),
                "{method} {padding}: {answer}"
            );

            let mut tls = certificate.connect_raw(https.addr, &[b"http/1.1"]).await;
            // The server may stop reading once it has refused: what it did not read is lost.
            let _ = tls.write_all(head(method, padding).as_bytes()).await;
            let answer = read_tls_until_closed(&mut tls).await;
            assert!(
                answer.starts_with("HTTP/1.1 431 "),
                "TLS {method} {padding}: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_dripped_head_ends_by_its_deadline_whatever_it_grows_to() {
    let app = spawn_fast().await;
    // Dripped past most of its deadline, then made far too long: refused at once.
    let mut client = RawClient::connect(&app).await;
    let started = Instant::now();
    client.send("GET /healthz HTTP/1.1\r\nX-Drip: ").await;
    for _ in 0..6 {
        tokio::time::sleep(FAST.head / 10).await;
        client.send("d").await;
    }
    client.send(&"p".repeat(20 * 1024)).await;
    let (answer, _) = client.read_until_closed().await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(started.elapsed() < FAST.head + SLACK);

    // Dripped and never finished: 408 at the deadline, not before.
    let socket = tokio::net::TcpStream::connect(app.socket_addr())
        .await
        .unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let started = Instant::now();
    writer
        .write_all(b"POST /api/notifications/alice HTTP/1.1\r\n")
        .await
        .unwrap();
    let dripping = async {
        while writer.write_all(b"X-Drip: d\r\n").await.is_ok() {
            tokio::time::sleep(FAST.head / 10).await;
        }
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    let answered = async {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::select! {
        () = dripping => unreachable!(),
        () = answered => {}
        () = tokio::time::sleep(FAST.head + SLACK) => panic!("not closed by the deadline"),
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() >= FAST.head);
    assert_eq!(app.history_total("alice").await, 0);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_by_its_deadline_on_either_path_and_stores_nothing() {
    let certificate = SelfSigned::new();
    let plain = spawn_fast().await;
    let https = spawn_fast_https(&certificate).await;
    let half = &BODY[..10];
    // herald's own path: a Content-Length body that stops half way.
    let mut client = RawClient::connect(&plain).await;
    let started = Instant::now();
    client
        .send(&post_request("/api/notifications/alice", BODY).replace(&BODY[10..], ""))
        .await;
    let (answer, _) = client.read_until_closed().await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() < FAST.body + SLACK);

    // hyper's path on the plain port: a chunked body whose last chunk never comes.
    let mut client = RawClient::connect(&plain).await;
    let started = Instant::now();
    client
        .send(&format!(
            "POST /api/notifications/alice HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{half}\r\n",
            half.len()
        ))
        .await;
    let (answer, _) = client.read_until_closed().await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() < FAST.body + SLACK);

    // hyper's path over TLS: a Content-Length body that stops half way.
    let mut tls = certificate.connect_raw(https.addr, &[b"http/1.1"]).await;
    let started = Instant::now();
    let request = post_request("/api/notifications/alice", BODY).replace(&BODY[10..], "");
    tls.write_all(request.as_bytes()).await.unwrap();
    let answer = read_tls_until_closed(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() < FAST.body + SLACK);

    assert_eq!(plain.history_total("alice").await, 0);
    assert_eq!(https.history_total("alice").await, 0);
}

/// HTTP/2's connection preface and an empty SETTINGS frame: a connection that starts nothing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn an_http2_connection_that_starts_no_request_is_closed_by_the_head_deadline() {
    let app = spawn_fast().await;
    let mut client = RawClient::connect(&app).await;
    let started = Instant::now();
    client.send_bytes(H2_PREFACE).await;
    let _ = client.read_until_closed().await;
    let closed_after = started.elapsed();
    assert!(
        closed_after >= FAST.head - Duration::from_millis(100) && closed_after < FAST.head + SLACK,
        "closed after {closed_after:?}"
    );

    let certificate = SelfSigned::new();
    let https = spawn_fast_https(&certificate).await;
    let mut tls = certificate.connect_raw(https.addr, &[b"h2"]).await;
    let started = Instant::now();
    tls.write_all(H2_PREFACE).await.unwrap();
    let _ = read_tls_until_closed(&mut tls).await;
    assert!(started.elapsed() < FAST.head + SLACK);
}

#[tokio::test]
async fn an_http2_connection_with_no_request_in_progress_is_closed_at_the_idle_deadline() {
    let certificate = SelfSigned::new();
    let plain = spawn_fast().await;
    let https = spawn_fast_https(&certificate).await;
    let h2c = h2c_client();
    let h2 = certificate.client(https.addr);
    for (app, client) in [(&plain, h2c), (&https, h2)] {
        let base = app.wait_for_metric(OPEN, |_| true).await;
        let response = send(client.get(app.url("/healthz"))).await;
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let idle_from = Instant::now();
        app.wait_for_metric(OPEN, |open| open == base + 1.0).await;
        app.wait_for_metric(OPEN, |open| open == base).await;
        let idled = idle_from.elapsed();
        assert!(
            idled >= FAST.idle - Duration::from_millis(100) && idled < FAST.idle + SLACK,
            "closed after {idled:?}"
        );
    }
}

#[tokio::test]
async fn an_open_stream_is_a_request_in_progress_and_its_connection_outlives_the_idle_deadline() {
    let certificate = SelfSigned::new();
    let https = spawn_fast_https(&certificate).await;
    let mut stream = crate::helpers::SseClient::open(
        &certificate.client(https.addr),
        &https.url("/events/ann"),
        None,
    )
    .await;
    stream.expect_connected().await;
    tokio::time::sleep(FAST.idle + Duration::from_millis(500)).await;
    https.publish("ann", "still here").await;
    assert_eq!(stream.next_event().await.data["title"], "still here");
}

#[tokio::test]
async fn connections_over_the_bound_are_reset_on_arrival_and_counted() {
    let app = TestApp::spawn_with(|s| {
        s.deadlines = FAST;
        s.max_streams = 3;
        s.max_open_connections = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(&app).await;
        client
            .send("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            .await;
        client.read_whole_response().await;
        held.push(client);
    }
    let mut over = RawClient::connect(&app).await;
    let (answer, reset) = over.read_until_closed().await;
    assert_eq!((answer.as_str(), reset), ("", true));
    drop(held);
    assert_eq!(
        app.wait_for_metric("herald_connections_refused_total", |n| n >= 1.0)
            .await,
        1.0
    );
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_cookie_authenticated_change_must_come_from_this_servers_origin_or_a_listed_one() {
    use crate::helpers::auth::{spawn_secured, token_for};
    let app = spawn_secured(|s| {
        s.cors_origins = herald::config::CorsOrigins::Listed(vec!["https://app.test".into()])
    })
    .await;
    // A client of its own: the app's carries the publish key in `Authorization`.
    let browser = reqwest::Client::new();
    let own = format!("http://{}", app.socket_addr());
    let cookie = format!("herald_token={}", token_for("alice", 600));
    let id = app.publish("alice", "n").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = |path: String, headers: Vec<(&'static str, String)>| {
        let mut request = browser.post(app.url(&path));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { send(request).await.status() }
    };
    let one = format!("/api/notifications/alice/{id}/read");
    let refused = [
        vec![("origin", "http://evil.test".to_owned())],
        vec![],
        vec![("origin", "null".to_owned())],
        vec![("referer", "http://evil.test/page".to_owned())],
        vec![("origin", "http://app.test".to_owned())],
        vec![("origin", format!("{own}.evil.test"))],
    ];
    for headers in refused {
        let mut with_cookie = headers.clone();
        with_cookie.push(("cookie", cookie.clone()));
        assert_eq!(
            read(one.clone(), with_cookie).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
        let all = vec![
            ("cookie", cookie.clone()),
            ("origin", "http://evil.test".to_owned()),
        ];
        assert_eq!(
            read("/api/notifications/alice/read-all".into(), all).await,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        app.history("alice", "").await["unread"],
        1,
        "nothing changed"
    );
    let allowed = [
        vec![("cookie", cookie.clone()), ("origin", own.clone())],
        vec![
            ("cookie", cookie.clone()),
            ("referer", format!("{own}/?user=alice")),
        ],
        vec![
            ("cookie", cookie.clone()),
            ("origin", "https://app.test".to_owned()),
        ],
        vec![
            (
                "authorization",
                format!("Bearer {}", token_for("alice", 600)),
            ),
            ("origin", "http://evil.test".to_owned()),
        ],
        vec![("origin", "http://evil.test".to_owned())],
    ];
    let mut statuses = Vec::new();
    for headers in allowed {
        statuses.push(read(one.clone(), headers).await);
    }
    // The last has no credential at all: refused as any anonymous call is, whatever its origin.
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::UNAUTHORIZED
        ]
    );
    assert_eq!(app.history("alice", "").await["unread"], 0);
}

#[tokio::test]
async fn at_the_file_limit_accepts_back_off_log_once_and_serve_again_when_files_free_up() {
    let data = tempfile::TempDir::new().unwrap();
    // Far fewer files than the connections below; the connection bound out of the way.
    let server = crate::helpers::ServerProcess::start_with_file_limit(
        &data.path().join("data"),
        64,
        &["--max-open-connections", "100000"],
    );
    assert_eq!(server.get_json("/healthz").await.0, StatusCode::OK);
    let mut clients = Vec::new();
    for _ in 0..100 {
        // The kernel completes the handshake whether or not herald can accept.
        clients.push(
            tokio::net::TcpStream::connect(server.socket_addr())
                .await
                .unwrap(),
        );
    }
    server.wait_for_log("accept failed; backing off").await;
    drop(clients);
    // The queue of closed connections drains, and a new one is served.
    let started = Instant::now();
    loop {
        let answer = reqwest::Client::new()
            .get(server.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answer.is_ok_and(|answer| answer.status() == StatusCode::OK) {
            break;
        }
        assert!(
            started.elapsed() < crate::helpers::WAIT,
            "never served again"
        );
    }
    let log = server.wait_for_log("accepting connections again").await;
    assert_eq!(
        log.matches("accept failed; backing off").count(),
        1,
        "logged once per interval:\n{log}"
    );
    server.stop();
}

#[tokio::test]
async fn an_http2_header_list_over_16_kib_is_refused_and_the_connection_serves_on() {
    let app = spawn_fast().await;
    let h2c = h2c_client();
    let fits = send(
        h2c.get(app.url("/healthz"))
            .header("x-padding", "p".repeat(15 * 1024)),
    )
    .await;
    assert_eq!(fits.status(), StatusCode::OK);
    let refused = tokio::time::timeout(
        crate::helpers::WAIT,
        h2c.get(app.url("/healthz"))
            .header("x-padding", "p".repeat(20 * 1024))
            .send(),
    )
    .await
    .expect("answered in time");
    match refused {
        Ok(answer) => assert_eq!(answer.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(error) => assert!(error.is_request(), "{error:?}"),
    }
    let after = send(h2c.get(app.url("/healthz"))).await;
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_http2_body_that_never_finishes_gets_408_by_its_deadline_and_stores_nothing() {
    let app = spawn_fast().await;
    let h2c = h2c_client();
    let half = futures::stream::iter([Ok::<_, std::io::Error>(BODY[..10].to_owned())])
        .chain(futures::stream::pending());
    let started = Instant::now();
    let answer = send(
        h2c.post(app.url("/api/notifications/alice"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(half)),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < FAST.body + SLACK);
    assert_eq!(app.history_total("alice").await, 0);
}

#[tokio::test]
async fn a_tls_http1_keep_alive_connection_is_closed_by_the_next_heads_deadline() {
    let certificate = SelfSigned::new();
    let app = spawn_fast_https(&certificate).await;
    let mut tls = certificate.connect_raw(app.addr, &[b"http/1.1"]).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(br#"{"status":"ok"}"#) {
        let n = tokio::time::timeout(crate::helpers::WAIT, tls.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }
    // On HTTP/1 the wait for the next head counts toward that head's deadline, as on
    // herald's own path, so an idle connection ends at the head deadline, before the idle one.
    let idle_from = Instant::now();
    let rest = read_tls_until_closed(&mut tls).await;
    let idled = idle_from.elapsed();
    assert_eq!(rest, "");
    assert!(
        idled >= FAST.head - Duration::from_millis(100) && idled < FAST.head + SLACK,
        "closed after {idled:?}"
    );
}
