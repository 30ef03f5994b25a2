//! SPEC §2: a reader that never reads costs the server a bounded amount of memory; its stream
//! is closed (and counted), and a reconnect with the last id it saw replays the rest.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herald::domain::EventId;

use crate::helpers::{ServerProcess, SseClient, WAIT};

const PUBLISHES: usize = 12_000;
const MESSAGE_CHARS: usize = 3_900;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_reads_is_closed_with_bounded_memory_and_replays_on_reconnect() {
    let dir = tempfile::TempDir::new().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--sync", "normal", "--max-queued-bytes", "262144"],
    );
    let client = reqwest::Client::new();
    let addr = server.url.trim_start_matches("http://").to_owned();

    // A subscriber that asks and then never reads, with a tiny receive buffer. HTTP/1.0 keeps
    // the body free of chunk framing so the bytes it did get can be read back simply.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr.parse().unwrap()).await.unwrap();
    stalled
        .write_all(b"GET /events/slowpoke HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    wait_for_streams(&client, &server.url, 1).await;
    let rss_before = server.rss_kib();

    // Far more than any buffer: 12,000 x ~4 KB = ~47 MB for one user.
    let url = format!("{}/api/notifications/slowpoke", server.url);
    let publishers = publish_numbered(&client, &url, PUBLISHES, 8);
    // Sample the server's memory while the flood goes on.
    let mut rss_peak = rss_before;
    while !publishers.iter().all(|p| p.is_finished()) {
        rss_peak = rss_peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    rss_peak = rss_peak.max(server.rss_kib());
    let growth_mib = (rss_peak.saturating_sub(rss_before)) / 1024;
    eprintln!("server RSS before {rss_before} KiB, peak {rss_peak} KiB");
    assert!(
        growth_mib < 16,
        "server memory grew by {growth_mib} MiB while ~47 MB queued for a stalled reader"
    );

    let stats = stats(&client, &server.url).await;
    assert!(stats["slowReaderCloses"].as_u64().unwrap() >= 1, "{stats}");
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_slow_reader_closes_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The stalled client now reads what reached it before the close, up to the end.
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stalled.read_to_end(&mut received))
        .await
        .expect("the closed stream ends")
        .ok();
    let text = String::from_utf8_lossy(&received);
    let (seen, last_id) = complete_notifications(&text);
    assert!(
        seen.len() < PUBLISHES,
        "the stalled reader cannot have had everything"
    );

    // Reconnect with the last id seen: everything after it arrives, once, in id order.
    let mut resumed = SseClient::open(
        &client,
        &format!("{}/events/slowpoke", server.url),
        last_id.as_deref(),
    )
    .await;
    resumed.expect_connected().await;
    let mut titles: Vec<usize> = seen.iter().map(|(_, title)| *title).collect();
    let mut previous_id = seen.last().map_or(EventId::ZERO, |(id, _)| *id);
    while titles.len() < PUBLISHES {
        let event = resumed.next_event().await;
        assert_eq!(event.event, "notification");
        let id: EventId = event.id.parse().unwrap();
        assert!(id > previous_id, "ids increase across the reconnect");
        previous_id = id;
        titles.push(event.data["title"].as_str().unwrap().parse().unwrap());
    }
    titles.sort_unstable();
    assert_eq!(
        titles,
        (0..PUBLISHES).collect::<Vec<_>>(),
        "every notification exactly once"
    );
}

/// Notifications titled `0..total`, ~4 KB each, posted to `url` by `workers` tasks at once;
/// each task asserts every answer is `201`.
fn publish_numbered(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let message = "m".repeat(MESSAGE_CHARS);
    (0..workers)
        .map(|worker| {
            let (client, url, message) = (client.clone(), url.to_owned(), message.clone());
            tokio::spawn(async move {
                for n in (worker..total).step_by(workers) {
                    let response = client
                        .post(&url)
                        .json(&json!({ "title": format!("{n}"), "message": message }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
        })
        .collect()
}

async fn stats(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(format!("{url}/api/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `/api/stats` until the node holds `n` streams.
async fn wait_for_streams(client: &reqwest::Client, url: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = stats(client, url).await;
        if stats["totalConnections"] == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream not open: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(id, title)` of the complete notification events in a raw SSE body (ids checked to
/// increase), and the id of the last one.
fn complete_notifications(raw: &str) -> (Vec<(EventId, usize)>, Option<String>) {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let mut titles = Vec::new();
    let mut last_id = None;
    let mut blocks: Vec<&str> = body.split("\n\n").collect();
    blocks.pop(); // whatever follows the last blank line is incomplete
    for block in blocks {
        let mut id = None;
        let mut data = None;
        let mut is_notification = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if line == "event: notification" {
                is_notification = true;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            }
        }
        if is_notification {
            let data: serde_json::Value = serde_json::from_str(data.unwrap()).unwrap();
            let id = id.expect("a notification has an id");
            let numeric: EventId = id.parse().unwrap();
            if let Some((previous, _)) = titles.last() {
                assert!(numeric > *previous, "ids increase on the stream");
            }
            titles.push((numeric, data["title"].as_str().unwrap().parse().unwrap()));
            last_id = Some(id);
        }
    }
    (titles, last_id)
}

/// A reader that stops reading for a while, then reads on, below the queue bound: its socket
/// fills (direct writes stop part-way through a frame), frames queue, and when it reads again
/// it gets every notification exactly once, in id order, with the chunked framing intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_gets_everything_intact_when_it_reads_again() {
    const PAUSED_PUBLISHES: usize = 3_000;
    let dir = tempfile::TempDir::new().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--sync",
            "normal",
            "--max-queued-bytes",
            "67108864",
            "--max-queued-events",
            "100000",
        ],
    );
    let client = reqwest::Client::new();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut paused = socket.connect(addr).await.unwrap();
    paused
        .write_all(b"GET /events/pauser HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut reader = ChunkedSse::default();
    while !reader.text.contains("event: connected") {
        reader.read_some(&mut paused).await;
    }

    // ~12 MB while it does not read: more than the socket buffers on both sides hold.
    let url = format!("{}/api/notifications/pauser", server.url);
    for publisher in publish_numbered(&client, &url, PAUSED_PUBLISHES, 4) {
        publisher.await.unwrap();
    }

    let deadline = tokio::time::Instant::now() + WAIT * 4;
    let (mut titles, mut previous_id) = (Vec::new(), EventId::ZERO);
    while titles.len() < PAUSED_PUBLISHES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} arrived",
            titles.len()
        );
        reader.read_some(&mut paused).await;
        for (id, title) in reader.take_notifications() {
            assert!(id > previous_id, "ids increase on the stream");
            previous_id = id;
            titles.push(title);
        }
    }
    titles.sort_unstable();
    assert_eq!(
        titles,
        (0..PAUSED_PUBLISHES).collect::<Vec<_>>(),
        "every one exactly once"
    );
    let stats = stats(&client, &server.url).await;
    assert_eq!(stats["slowReaderCloses"], 0, "{stats}");
}

/// A strict reader of one chunked SSE response: every chunk's size line, data and CRLF must
/// be exactly right, or the test fails.
#[derive(Default)]
struct ChunkedSse {
    raw: Vec<u8>,
    head_done: bool,
    /// The decoded body not yet taken as events.
    text: String,
}

impl ChunkedSse {
    async fn read_some(&mut self, socket: &mut tokio::net::TcpStream) {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(n > 0, "the server closed the stream");
        self.raw.extend_from_slice(&buf[..n]);
        self.decode();
    }

    fn decode(&mut self) {
        if !self.head_done {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_line = std::str::from_utf8(&self.raw[..line_end]).expect("a size line");
            let size = usize::from_str_radix(size_line, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            assert!(size > 0, "the stream ended");
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            assert_eq!(
                &self.raw[start + size..start + size + 2],
                b"\r\n",
                "chunk end"
            );
            self.text
                .push_str(std::str::from_utf8(&self.raw[start..start + size]).expect("UTF-8"));
            self.raw.drain(..start + size + 2);
        }
    }

    /// `(id, title)` of each complete notification decoded so far.
    fn take_notifications(&mut self) -> Vec<(EventId, usize)> {
        let complete = self.text.rfind("\n\n").map_or(0, |at| at + 2);
        let blocks: String = self.text.drain(..complete).collect();
        let (seen, _) = complete_notifications(&format!("\r\n\r\n{blocks}"));
        seen
    }
}
