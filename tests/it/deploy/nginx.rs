//! SECURITY.md, "Deploying behind nginx": `deploy/nginx/herald.conf` in the real nginx (checked
//! with `nginx -t` first), in front of the real herald binary with both halves of auth on. A
//! browser's view: HTTPS and HTTP/2 to nginx, a stream and a publish through it.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH};
use reqwest::{StatusCode, Version};
use tempfile::TempDir;

use crate::helpers::auth::{PUBLISH_KEY, SECRET, token_for};
use crate::helpers::nginx::{self, Nginx};
use crate::helpers::tls::SelfSigned;
use crate::helpers::{Api, ServerProcess, SseClient, note, read_json, send};

const HERALD_CONF: &str = include_str!("../../../deploy/nginx/herald.conf");

/// herald on loopback and nginx in front of it, as SECURITY.md deploys them.
struct Proxied {
    herald: ServerProcess,
    nginx: Nginx,
    /// Requests through nginx, over HTTPS, to `https://localhost:PORT`.
    api: Api,
    _certificate: SelfSigned,
    _data: TempDir,
}

/// `None` when nginx is not installed (and the test is skipped).
fn behind_nginx() -> Option<Proxied> {
    let binary = nginx::binary()?;
    let data = TempDir::new().expect("temp dir");
    let herald = ServerProcess::start(
        &data.path().join("data"),
        &["--jwt-secret", SECRET, "--publish-key", PUBLISH_KEY],
    );
    let herald_addr = herald
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("herald's address");
    let certificate = SelfSigned::new();
    let nginx = Nginx::start(&binary, herald_addr, &certificate);
    let api = Api {
        client: certificate.client(nginx.addr),
        url: format!("https://localhost:{}", nginx.addr.port()),
    };
    Some(Proxied {
        herald,
        nginx,
        api,
        _certificate: certificate,
        _data: data,
    })
}

#[tokio::test]
async fn a_stream_through_nginx_over_http2_gets_a_publish_made_through_nginx_at_once_uncompressed()
{
    let Some(proxied) = behind_nginx() else {
        return;
    };
    let Proxied { api, herald, .. } = &proxied;
    // Asks for gzip, which the wrapper's http {} block turns on for event streams: only the
    // location's `gzip off` keeps the stream as herald wrote it.
    let response = send(
        api.client
            .get(api.url("/events/alice"))
            .header(ACCEPT, "text/event-stream")
            .header(ACCEPT_ENCODING, "gzip")
            .bearer_auth(token_for("alice", 3600)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2, "HTTP/2 to the browser");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert!(headers.get(CONTENT_ENCODING).is_none(), "{headers:?}");
    assert!(headers.get(CONTENT_LENGTH).is_none(), "{headers:?}");
    let mut stream = SseClient::from_response(response);
    stream.expect_connected().await;

    let published = Instant::now();
    let (status, stored) = read_json(
        send(
            api.client
                .post(api.url("/api/notifications/alice"))
                .header(AUTHORIZATION, format!("Bearer {PUBLISH_KEY}"))
                .json(&note("Through nginx")),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let event = stream.next_event().await;
    let took = published.elapsed();
    assert_eq!(event.event, "notification");
    assert_eq!(
        event.data, stored,
        "the event is the notification as stored"
    );
    eprintln!("the event came through nginx {took:?} after the publish was sent");
    // Held back (compressed, cached), it would wait for more bytes: the next heartbeat is 30 s
    // away.
    assert!(took.as_secs() < 5, "the event took {took:?}");

    // To a client that keeps up, nginx passes on what it has read even with buffering on; what
    // buffering would change is a slow client, whose events nginx would take in (up to a 1 GB
    // temporary file) instead of letting herald's bounded queue close it as a slow reader.
    // nginx does not forward the header that turns it off, so ask herald directly.
    let direct = send(
        herald
            .client
            .get(herald.url("/events/alice"))
            .bearer_auth(token_for("alice", 3600)),
    )
    .await;
    assert_eq!(direct.headers()["x-accel-buffering"], "no");
    drop((direct, stream));
}

#[tokio::test]
async fn nginx_logs_requests_without_their_query_so_a_token_in_the_url_stays_out_of_its_log() {
    let Some(proxied) = behind_nginx() else {
        return;
    };
    let Proxied { api, nginx, .. } = &proxied;
    let token = token_for("alice", 3600);
    let response = send(
        api.client
            .get(api.url(&format!("/api/notifications/alice?token={token}&limit=5"))),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the token in the query was accepted"
    );

    let log = nginx
        .wait_for_access_log("\"GET /api/notifications/alice HTTP/2.0\" 200")
        .await;
    assert!(!log.contains(&token) && !log.contains("token="), "{log}");
}

#[test]
fn the_stream_location_turns_off_buffering_caching_and_gzip_and_outwaits_the_heartbeat() {
    let start = HERALD_CONF
        .find("location /events/ {")
        .expect("a location for the streams");
    let block = &HERALD_CONF[start..];
    let block = &block[..block.find('}').expect("the location ends")];
    let directives: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .collect();
    for needed in ["proxy_buffering off;", "proxy_cache off;", "gzip off;"] {
        assert!(
            directives.contains(&needed),
            "{needed} missing in:\n{block}"
        );
    }
    let heartbeat = herald::Settings::new("127.0.0.1:0".parse().unwrap(), ".".into()).heartbeat;
    for timeout in ["proxy_read_timeout", "proxy_send_timeout"] {
        let value = directives
            .iter()
            .find_map(|d| d.strip_prefix(timeout)?.trim().strip_suffix(';'))
            .unwrap_or_else(|| panic!("no {timeout} for the streams:\n{block}"));
        let value = match value.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => *value.parse::<humantime::Duration>().expect("an nginx time"),
        };
        assert!(
            value > heartbeat * 2,
            "{timeout} {value:?}: a quiet stream is cut unless it outlasts the heartbeat"
        );
    }
}
