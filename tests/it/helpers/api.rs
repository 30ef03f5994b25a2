//! [`Api`], the one HTTP client of the tests. An in-process [`TestApp`](super::TestApp), a
//! spawned [`ServerProcess`](super::ServerProcess) and a cluster node each hand one out (the
//! first two dereference to it), so every request a helper makes is written once, and every
//! wait on an answer fails the test after [`WAIT`]. Its JSON requests and waits are here; the
//! methods that open streams are in `sse.rs`, those that write on a bare socket in `wire.rs`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::header::{
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderValue, ORIGIN,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::WAIT;
use super::answers::Answer;

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

    pub async fn put_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        read_json(send(self.client.put(self.url(path)).json(body)).await).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        read_json(send(self.client.patch(self.url(path)).json(body)).await).await
    }

    /// `DELETE path`: the status and the body (`null` when empty, as a `204` is).
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        read_json(send(self.client.delete(self.url(path))).await).await
    }

    /// Publishes `body` to `user` and asserts it was stored (`201`).
    pub async fn publish_body(&self, user: &str, body: &Value) -> Value {
        let (status, answer) = self
            .post_json(&format!("/api/notifications/{user}"), body)
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "publish {body} to {user}: {answer}"
        );
        answer
    }

    /// Publishes `body` to every one of `users` in one request and asserts it was stored;
    /// returns each user's notification id, in the order given.
    pub async fn publish_to_many(&self, users: &[&str], body: &Value) -> Vec<String> {
        let mut body = body.clone();
        body["users"] = json!(users);
        let (status, answer) = self.post_json("/api/notifications", &body).await;
        assert_eq!(status, StatusCode::CREATED, "publish to many: {answer}");
        let sent = answer["notifications"].as_array().expect("notifications");
        assert_eq!(sent.len(), users.len(), "{answer}");
        sent.iter()
            .zip(users)
            .map(|(one, user)| {
                assert_eq!(one["userId"], *user, "in the order given: {answer}");
                one["id"].as_str().expect("id").to_owned()
            })
            .collect()
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        read_json(send(self.client.post(self.url(path))).await).await
    }

    /// POSTs `body` as given, with an optional `Content-Type`.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        read_json(send(request).await).await
    }

    /// POSTs `body` as JSON to a server that may be going away: `None` when it never answered
    /// or cut its answer short, else the status and the body's text.
    pub async fn post_json_unless_gone(
        &self,
        path: &str,
        body: &Value,
    ) -> Option<(StatusCode, String)> {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = response.status();
        let text = response.text().await.ok()?;
        Some((status, text))
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

    /// Publishes `n0`, `n1`, ... for `user`, one after the other; returns them in that order.
    pub async fn publish_numbered(&self, user: &str, n: usize) -> Vec<Value> {
        let mut published = Vec::with_capacity(n);
        for i in 0..n {
            published.push(self.publish(user, &format!("n{i}")).await);
        }
        published
    }

    /// Publishes `body` for `user` with an `Idempotency-Key` header.
    pub async fn publish_with_key(
        &self,
        user: &str,
        key: HeaderValue,
        body: &Value,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(&format!("/api/notifications/{user}")))
            .header("idempotency-key", key)
            .json(body);
        read_json(send(request).await).await
    }

    /// Publishes [`note`]`(title)` and returns the whole [`Answer`], whatever it is.
    pub async fn publish_answer(&self, user: &str, title: &str) -> Answer {
        let request = self
            .client
            .post(self.url(&format!("/api/notifications/{user}")))
            .json(&note(title));
        Answer::read(send(request).await).await
    }

    /// Notifications titled `0..total`, each with a message of `message_chars` characters,
    /// posted for `user` by `workers` tasks at once; each task asserts every answer is `201`.
    pub fn publish_flood(
        &self,
        user: &str,
        total: usize,
        workers: usize,
        message_chars: usize,
    ) -> Vec<JoinHandle<()>> {
        let message = "m".repeat(message_chars);
        let path = format!("/api/notifications/{user}");
        (0..workers)
            .map(|worker| {
                let (api, path, message) = (self.clone(), path.clone(), message.clone());
                tokio::spawn(async move {
                    for n in (worker..total).step_by(workers) {
                        let body = json!({ "title": format!("{n}"), "message": message });
                        let (status, answer) = api.post_json(&path, &body).await;
                        assert_eq!(status, StatusCode::CREATED, "{answer}");
                    }
                })
            })
            .collect()
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

    /// Broadcasts [`note`]`(title)` and returns the whole [`Answer`], whatever it is.
    pub async fn broadcast_answer(&self, title: &str) -> Answer {
        let request = self
            .client
            .post(self.url("/api/broadcast"))
            .json(&note(title));
        Answer::read(send(request).await).await
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

    /// The `total` of `user`'s history.
    pub async fn history_total(&self, user: &str) -> u64 {
        self.history(user, "").await["total"]
            .as_u64()
            .expect("total")
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

    /// `GET /api/stats`, asserting `200`.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.get_json("/api/stats").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `eventsBuffered` of the stats: the events in the log, replayable.
    pub async fn events_in_log(&self) -> u64 {
        self.stats().await["eventsBuffered"]
            .as_u64()
            .expect("eventsBuffered")
    }

    /// Polls `/api/stats` until `done` holds for them, failing after [`WAIT`] with `what`.
    pub async fn wait_for_stats(&self, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} never came: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the node holds exactly `n` streams.
    pub async fn wait_for_streams(&self, n: u64) {
        self.wait_for_stats(&format!("{n} open streams"), |stats| {
            stats["totalConnections"] == n
        })
        .await;
    }

    /// Waits until retention has emptied the log.
    pub async fn wait_until_the_log_is_empty(&self) {
        self.wait_for_stats("an empty log", |stats| stats["eventsBuffered"] == 0)
            .await;
    }

    /// Polls `/metrics` until the value of `series` satisfies `done`, failing after [`WAIT`].
    pub async fn wait_for_metric(&self, series: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = super::answers::sample(&self.metrics().await, series);
            if done(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{series} stayed at {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics`, asserting `200` and Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        response.text().await.expect("text")
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

    /// Polls `/readyz` until it answers `503`, returning its body; any other answer but `200`
    /// fails the test, and so does a server still ready after [`WAIT`].
    pub async fn wait_until_not_ready(&self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get_json("/readyz").await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return body;
            }
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(
                Instant::now() < deadline,
                "/readyz never turned 503 after the signal"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A CORS preflight for `method path` from `origin` asking to send `headers`, sent without
    /// this client's credentials as a browser sends it; asserts `200` (a preflight is never
    /// refused for want of credentials) and returns the headers.
    pub async fn preflight(
        &self,
        origin: &str,
        method: &str,
        path: &str,
        headers: &str,
    ) -> HeaderMap {
        let response = send(
            reqwest::Client::new()
                .request(Method::OPTIONS, self.url(path))
                .header(ORIGIN, origin)
                .header(ACCESS_CONTROL_REQUEST_METHOD, method)
                .header(ACCESS_CONTROL_REQUEST_HEADERS, headers),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "a preflight carries no credentials and is never refused for want of them"
        );
        response.headers().clone()
    }
}

/// The notification body the helpers publish and broadcast: `title`, and a message about it.
pub fn note(title: &str) -> Value {
    json!({ "title": title, "message": format!("about {title}") })
}

/// A valid body (title "big", message "m") padded with JSON whitespace to exactly `size` bytes.
pub fn padded_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"title":"big","message":"m"}"#.to_vec();
    body.resize(size, b' ');
    body
}

/// A client whose connections come from `local` (any 127.x.y.z works on Linux loopback).
pub fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().expect("an address"))
        .build()
        .expect("client")
}

/// Sends `request`, failing the test if no response comes within [`WAIT`].
/// A client that speaks HTTP/2 by prior knowledge (h2c) to plain-HTTP servers.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client")
}

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
