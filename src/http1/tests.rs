//! The path on its own, with a router whose one stream the test feeds: timeouts, the drain,
//! cut streams and clients that leave. The whole app over this path is tested in `tests/it`.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::edge::Deadlines;
use crate::sse::outbox::EventStreamResponse;

const WAIT: Duration = Duration::from_secs(5);

type Frames = mpsc::Sender<Result<Bytes, io::Error>>;

/// A node that serves one plain connection with a router whose `/events/x` streams what the
/// returned sender sends.
struct Node {
    client: TcpStream,
    feed: mpsc::Receiver<Frames>,
    closing: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    _graceful: GracefulShutdown,
}

async fn node(head_timeout: Duration) -> Node {
    let (feeds, feed) = mpsc::channel::<Frames>(1);
    let app = Router::new().route(
        "/events/x",
        get(move || {
            let feeds = feeds.clone();
            async move {
                let (frames, mut rx) = mpsc::channel(8);
                feeds.send(frames).await.unwrap();
                let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .extension(EventStreamResponse(None))
                    .body(Body::from_stream(body))
                    .unwrap()
            }
        }),
    );
    let closing = CancellationToken::new();
    let paths = Connections::new(
        app,
        auto::Builder::new(TokioExecutor::new()),
        closing.clone(),
        Deadlines {
            head: head_timeout,
            ..Deadlines::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, remote) = listener.accept().await.unwrap();
    let graceful = GracefulShutdown::new();
    let first_head = tokio::time::Instant::now() + head_timeout;
    let served = tokio::spawn(paths.serve(socket, remote, first_head, graceful.watcher()));
    Node {
        client,
        feed,
        closing,
        served,
        _graceful: graceful,
    }
}

impl Node {
    /// Opens the stream and returns its sender, once the head and a first frame are read.
    async fn open_stream(&mut self) -> Frames {
        self.client
            .write_all(b"GET /events/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let frames = self.feed.recv().await.unwrap();
        frames.send(Ok(Bytes::from_static(b"hello"))).await.unwrap();
        let seen = read_until(&mut self.client, "5\r\nhello\r\n").await;
        assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
        frames
    }

    async fn served_in_time(self) {
        tokio::time::timeout(WAIT, self.served)
            .await
            .expect("the connection's task ended")
            .unwrap();
    }
}

async fn read_until(client: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

async fn read_to_end(client: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    String::from_utf8(rest).unwrap()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_gets_408_and_is_closed_at_the_timeout() {
    let mut node = node(Duration::from_millis(200)).await;
    node.client
        .write_all(b"GET /events/x HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let answer = read_to_end(&mut node.client).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    node.served_in_time().await;
}

#[tokio::test]
async fn an_idle_connection_is_reset_at_the_head_timeout_without_an_answer() {
    let mut node = node(Duration::from_millis(200)).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, node.client.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Err(ref error) if error.kind() == io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert!(rest.is_empty());
    node.served_in_time().await;
}

#[tokio::test]
async fn a_connection_waiting_for_its_head_closes_when_the_drain_ends_connections() {
    let mut node = node(Duration::from_secs(60)).await;
    node.client.write_all(b"GET /eve").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    node.closing.cancel();
    assert_eq!(read_to_end(&mut node.client).await, "");
    node.served_in_time().await;
}

#[tokio::test]
async fn a_stream_goes_out_in_chunks_and_ends_with_the_last_chunk() {
    let mut node = node(WAIT).await;
    let frames = node.open_stream().await;
    frames
        .send(Ok(Bytes::from_static(b"0123456789abcdef!")))
        .await
        .unwrap();
    read_until(&mut node.client, "11\r\n0123456789abcdef!\r\n").await;
    drop(frames);
    assert_eq!(read_to_end(&mut node.client).await, "0\r\n\r\n");
    node.served_in_time().await;
}

#[tokio::test]
async fn a_failed_stream_cuts_the_connection_without_the_last_chunk() {
    let mut node = node(WAIT).await;
    let frames = node.open_stream().await;
    frames
        .send(Err(io::Error::other("slow reader")))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut node.client).await, "");
    node.served_in_time().await;
}

#[tokio::test]
async fn a_client_that_leaves_drops_its_stream_at_once() {
    let mut node = node(WAIT).await;
    let frames = node.open_stream().await;
    drop(node.client);
    tokio::time::timeout(WAIT, frames.closed())
        .await
        .expect("the body was dropped without waiting for a write");
    tokio::time::timeout(WAIT, node.served)
        .await
        .expect("the connection's task ended")
        .unwrap();
}

#[tokio::test]
async fn an_idle_streams_task_stays_a_few_hundred_bytes() {
    // The task lives as long as its stream: what is in it is paid for every idle stream. (A
    // hyper connection is ~1.7 KiB, its buffers another 16 KiB.)
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = TcpStream::connect(addr).await.unwrap();
    let graceful = GracefulShutdown::new();
    let paths = Connections::new(
        Router::new(),
        auto::Builder::new(TokioExecutor::new()),
        CancellationToken::new(),
        Deadlines::default(),
    );
    let first_head = tokio::time::Instant::now() + Deadlines::default().head;
    let task = paths.serve(socket, addr, first_head, graceful.watcher());
    let size = std::mem::size_of_val(&task);
    assert!(size <= 512, "the connection's future is {size} bytes");
}
