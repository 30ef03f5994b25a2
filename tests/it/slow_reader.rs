//! docs/protocol.md#heartbeats-and-slow-readers: a reader that never reads costs the server a
//! bounded amount of memory; its stream is closed (and counted), and a reconnect with the last id
//! it saw replays the rest.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herald::domain::EventId;

use crate::helpers::raw_sse::{ChunkedSse, complete_notifications};
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
    server.wait_for_streams(1).await;
    let rss_before = server.rss_kib();

    // Far more than any buffer: 12,000 x ~4 KB = ~47 MB for one user.
    let publishers = server.publish_flood("slowpoke", PUBLISHES, 8, MESSAGE_CHARS);
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

    let stats = server.stats().await;
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
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut paused = socket.connect(addr).await.unwrap();
    let mut reader = ChunkedSse::open(&mut paused, "pauser").await;

    // ~12 MB while it does not read: more than the socket buffers on both sides hold.
    for publisher in server.publish_flood("pauser", PAUSED_PUBLISHES, 4, MESSAGE_CHARS) {
        publisher.await.unwrap();
    }

    reader
        .read_every_notification(&mut paused, PAUSED_PUBLISHES)
        .await;
    let stats = server.stats().await;
    assert_eq!(stats["slowReaderCloses"], 0, "{stats}");
}
