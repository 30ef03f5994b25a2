//! Test helpers: a server in this process on port 0 ([`TestApp`]), the real binary as a child
//! process ([`ServerProcess`]), and an SSE client whose waits all have timeouts ([`SseClient`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{Stream, StreamExt};
use herald::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::redis_server::{Backend, backend, prefix_for};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A herald server running inside the test process.
pub struct TestApp {
    pub url: String,
    pub addr: SocketAddr,
    /// Kept for restarts; deleted when the last owner drops.
    pub data_dir: std::sync::Arc<TempDir>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    /// A server with default settings on a fresh data directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose settings `configure` may change first.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = std::sync::Arc::new(TempDir::new().expect("temp dir"));
        Self::spawn_in(data_dir, "127.0.0.1:0".parse().expect("addr"), configure).await
    }

    /// A server on `data_dir`, bound to `addr`.
    pub async fn spawn_in(
        data_dir: std::sync::Arc<TempDir>,
        addr: SocketAddr,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        init_test_log();
        let mut settings = Settings::new(addr, data_dir.path().to_path_buf());
        if let Backend::Redis { url } = backend() {
            settings.redis = Some(herald::store::RedisSettings {
                url: url.clone(),
                prefix: prefix_for(data_dir.path()),
            });
        }
        configure(&mut settings);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
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
            addr,
            data_dir,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Drains and stops the server, waiting until it has finished.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops in time")
                .expect("server task did not panic");
        }
    }

    /// Stops this server and starts another on the same data directory (and a new port).
    pub async fn restart(mut self, configure: impl FnOnce(&mut Settings)) -> Self {
        self.shutdown().await;
        Self::spawn_in(
            self.data_dir.clone(),
            "127.0.0.1:0".parse().unwrap(),
            configure,
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Publishes a notification and asserts it was stored (`201`).
    pub async fn publish(&self, user: &str, title: &str) -> Value {
        let (status, body) = self
            .post_json(
                &format!("/api/notifications/{user}"),
                &json!({ "title": title, "message": format!("about {title}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "publish failed: {body}");
        body
    }

    /// Broadcasts an announcement and asserts it was accepted.
    pub async fn broadcast(&self, title: &str) -> Value {
        let (status, body) = self
            .post_json(
                "/api/broadcast",
                &json!({ "title": title, "message": format!("about {title}") }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "broadcast failed: {body}");
        body
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        read_json(response).await
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .send()
            .await
            .expect("request sent");
        read_json(response).await
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        read_json(response).await
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

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

/// One event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub event: String,
    pub id: String,
    pub data: Value,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

/// A reader of one SSE response; every wait fails the test after [`WAIT`].
pub struct SseClient {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: EventStream,
}

impl SseClient {
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let client = Self::try_open(client, url, last_event_id).await;
        assert_eq!(client.status, StatusCode::OK, "stream refused");
        client
    }

    /// Opens a stream whatever the status (for tests of refusals).
    pub async fn try_open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Self {
        use eventsource_stream::Eventsource;
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opened in time")
            .expect("stream request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|item| item.map_err(|error| error.to_string()));
        Self {
            status,
            headers,
            events: Box::pin(events),
        }
    }

    /// The next event, or a failed test.
    pub async fn next_event(&mut self) -> Received {
        self.try_next_event(WAIT)
            .await
            .expect("the stream ended before the next event")
    }

    /// The next event within `wait`; `None` when the stream ends. Fails on timeout.
    pub async fn try_next_event(&mut self, wait: Duration) -> Option<Received> {
        let next = tokio::time::timeout(wait, self.events.next())
            .await
            .expect("no event arrived in time")?;
        let event = next.ok()?;
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|_| panic!("event data is not JSON: {:?}", event.data));
        Some(Received {
            event: event.event,
            id: event.id,
            data,
        })
    }

    /// Reads `connected`, asserting it has no id.
    pub async fn expect_connected(&mut self) -> Received {
        let connected = self.next_event().await;
        assert_eq!(connected.event, "connected");
        assert!(connected.data["clientId"].is_string());
        connected
    }

    /// The next `n` events.
    pub async fn next_events(&mut self, n: usize) -> Vec<Received> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts the stream ends (cleanly or not) within [`WAIT`].
    pub async fn expect_end(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.events.next())
                .await
                .expect("the stream did not end in time")
            {
                None | Some(Err(_)) => return,
                Some(Ok(event)) => {
                    let _ = event;
                }
            }
        }
    }
}

/// Titles of a list of received notifications, in order.
pub fn titles(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `herald` binary running as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub stderr_log: PathBuf,
}

impl ServerProcess {
    /// Starts `herald serve --listen 127.0.0.1:0 --data-dir DIR EXTRA...` and waits for its
    /// `listening on` line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", listen];
        args.extend_from_slice(extra);
        Self::start_with(data_dir, &args, &[])
    }

    /// Starts `herald serve --data-dir DIR ARGS...` with `envs` set and waits for its
    /// `listening on` line. Nothing else is passed: without `--listen` in `args` or `envs`, the
    /// address comes from `PORT` or the default. `PORT` and `HERALD_*` (but `HERALD_LOG`) are
    /// not inherited from the test's environment.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let stderr_log = data_dir.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("log file");
        let mut command = herald_command(envs);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(args);
        if let Backend::Redis { url } = backend() {
            if !args.contains(&"--redis-url") {
                command
                    .args(["--redis-url", url, "--redis-prefix"])
                    .arg(prefix_for(data_dir));
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("herald starts");
        let stdout = child.stdout.take().expect("stdout");
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = line_tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = line_rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("herald did not print its address; see {stderr_log:?}"));
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Self {
            child,
            url,
            stderr_log,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal sent");
    }

    /// Waits for the process to exit, failing the test after `wait`.
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "herald did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill_hard(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(WAIT);
    }

    /// Resident memory of the process, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// The `herald` binary with `envs` set and none of the test's own `PORT` or `HERALD_*`
/// variables (but `HERALD_LOG`), so what a test passes is all the binary sees.
pub fn herald_command(envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("PORT");
    for (name, _) in std::env::vars_os() {
        let inherited = name.to_string_lossy();
        if inherited.starts_with("HERALD_") && inherited != "HERALD_LOG" {
            command.env_remove(&name);
        }
    }
    command.envs(envs.iter().copied());
    command
}

/// Every stored notification of `user`, newest first, read page by page (`limit=100`, then
/// `before=` the last id of each page). Asserts each page's `count` and `total`.
pub async fn full_history(client: &reqwest::Client, base_url: &str, user: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut url = format!("{base_url}/api/notifications/{user}?limit=100");
        if let Some(last) = all.last() {
            url.push_str(&format!("&before={}", last["id"].as_str().expect("an id")));
        }
        let response = tokio::time::timeout(WAIT, client.get(&url).send())
            .await
            .expect("history answered in time")
            .expect("history request sent");
        let (status, page) = read_json(response).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        let notifications = page["notifications"].as_array().expect("notifications");
        assert_eq!(page["count"], notifications.len(), "{url}");
        let total = page["total"].as_u64().expect("total");
        all.extend(notifications.iter().cloned());
        if notifications.len() < 100 {
            assert_eq!(total, all.len() as u64, "every page together holds `total`");
            return all;
        }
    }
}

fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("herald=debug"))
            .with_test_writer()
            .try_init();
    }
}

impl TestApp {
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
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            let mut socket = tokio::net::TcpStream::connect(self.addr).await?;
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
