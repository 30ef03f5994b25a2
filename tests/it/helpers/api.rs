//! [`Api`], the one HTTP client of the tests. An in-process [`TestApp`](super::TestApp), a
//! spawned [`ServerProcess`](super::ServerProcess) and a cluster node each hand one out (they
//! dereference to it), so every request a helper makes is written once, here, and every wait on
//! an answer fails the test after [`WAIT`].

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::WAIT;
use super::sse::SseClient;

/// One server's HTTP API, as a client sees it.
#[derive(Clone)]
pub struct Api {
    /// Sends every request; [`Api::with_client`] swaps it for one with credentials, a source
    /// address or a TLS trust of its own.
    pub client: reqwest::Client,
    /// The server's base URL, `scheme://host:port`; [`Api::url`] appends a path to it.
    pub url: String,
}

impl Api {
    /// The server at `url`, through a client of its own.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: url.into(),
        }
    }

    /// The same server through `client`.
    pub fn with_client(&self, client: reqwest::Client) -> Self {
        Self {
            client,
            url: self.url.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `GET path`; the response is not read.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        send(self.client.get(self.url(path))).await
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        read_json(self.get(path).await).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        read_json(send(self.client.post(self.url(path)).json(body)).await).await
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        read_json(send(self.client.post(self.url(path))).await).await
    }

    /// Publishes [`note`]`(title)` and asserts it was stored (`201`).
    pub async fn publish(&self, user: &str, title: &str) -> Value {
        let (status, body) = self
            .post_json(&format!("/api/notifications/{user}"), &note(title))
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "publish {title:?} via {}: {body}",
            self.url
        );
        body
    }

    /// Broadcasts [`note`]`(title)` as an announcement and asserts it was accepted (`200`).
    pub async fn broadcast(&self, title: &str) -> Value {
        let (status, body) = self.post_json("/api/broadcast", &note(title)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "broadcast {title:?} via {}: {body}",
            self.url
        );
        body
    }

    /// Marks one of `user`'s notifications read, asserting `200`.
    pub async fn mark_read(&self, user: &str, id: &str) -> Value {
        let path = format!("/api/notifications/{user}/{id}/read");
        let (status, body) = self.post_empty(&path).await;
        assert_eq!(status, StatusCode::OK, "{path} via {}: {body}", self.url);
        body
    }

    /// `GET /api/notifications/{user}{query}`, asserting `200`.
    pub async fn history(&self, user: &str, query: &str) -> Value {
        let (status, body) = self
            .get_json(&format!("/api/notifications/{user}{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "history{query} of {user}: {body}");
        body
    }

    /// The `lastEventId` a history read gives: a stream opened with it misses nothing after.
    pub async fn last_event_id(&self, user: &str) -> String {
        self.history(user, "?limit=1").await["lastEventId"]
            .as_str()
            .expect("lastEventId")
            .to_owned()
    }

    /// Every stored notification of `user`, newest first, read page by page (`limit=100`, then
    /// `before=` the last id of each page). Asserts each page's `count` and `total`.
    pub async fn full_history(&self, user: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let mut path = format!("/api/notifications/{user}?limit=100");
            if let Some(last) = all.last() {
                path.push_str(&format!("&before={}", last["id"].as_str().expect("an id")));
            }
            let (status, page) = self.get_json(&path).await;
            assert_eq!(status, StatusCode::OK, "{}{path}: {page}", self.url);
            let notifications = page["notifications"].as_array().expect("notifications");
            assert_eq!(page["count"], notifications.len(), "{}{path}", self.url);
            let total = page["total"].as_u64().expect("total");
            all.extend(notifications.iter().cloned());
            if notifications.len() < 100 {
                assert_eq!(total, all.len() as u64, "every page together holds `total`");
                return all;
            }
        }
    }

    /// Polls `/readyz` until it answers `want`, each try cut off after 2 s and a failed one
    /// retried; returns how long after `since` that was.
    pub async fn wait_for_readiness(&self, want: StatusCode, since: Instant) -> Duration {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self
                .client
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|response| response.status() == want) {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{}/readyz never answered {want}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens `/events/{user}`, optionally with a `Last-Event-ID` header, and asserts `200`.
    pub async fn subscribe(&self, user: &str, last_event_id: Option<&str>) -> SseClient {
        SseClient::open(
            &self.client,
            &self.url(&format!("/events/{user}")),
            last_event_id,
        )
        .await
    }

    /// Sends one request exactly as written, on a fresh socket: for targets a URL parser would
    /// normalise (`%2E`, `..`) before they reach the server. Reads the response to its end.
    pub async fn raw_request(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.socket_addr();
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            let mut socket = tokio::net::TcpStream::connect(addr).await?;
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(body).await?;
            let mut response = Vec::new();
            socket.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(WAIT, exchange)
            .await
            .expect("raw response in time")
            .expect("raw exchange");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let mut body = response[split + 4..].to_vec();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        if head
            .to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        let text = String::from_utf8(body).expect("utf8 body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, value)
    }

    /// `host:port` of a plain-HTTP server, for requests written on a bare socket.
    pub fn socket_addr(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not a plain HTTP server: {}", self.url))
    }
}

/// The notification body the helpers publish and broadcast: `title`, and a message about it.
pub fn note(title: &str) -> Value {
    json!({ "title": title, "message": format!("about {title}") })
}

/// Sends `request`, failing the test if no response comes within [`WAIT`].
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("answered in time")
        .expect("request sent")
}

/// The status and the body as JSON (`null` when empty); a body that is not JSON fails the test.
pub async fn read_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body read");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, value)
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
