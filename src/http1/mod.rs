//! herald's own HTTP/1 path for plain connections: an idle stream costs ~2 KiB here against
//! ~20 KiB under hyper (docs/architecture.md#the-http1-path). Requests are answered by the same
//! router; anything odd is handed to hyper with the bytes read. What this fence touches outside
//! itself: the router and hyper ([`crate::app::serve_with_hyper`]); the edge's
//! limits and deadlines ([`crate::edge`]), the body limit and the error type of
//! [`crate::http`]; and the direct-write side of [`crate::sse::outbox`]
//! (`EventStreamResponse`, `Outbox::attach`, `DirectSink`).

#[cfg(any(test, feature = "fuzzing"))]
pub mod differential;
mod direct;
mod head;
mod rewind;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::Version;
use axum::response::IntoResponse;
use tokio::time::Instant;

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::Service;

use self::head::Head;
use self::rewind::Rewind;
use crate::app::serve_with_hyper;
use crate::edge::{self, Deadlines};

/// What every plain connection shares.
pub struct Connections {
    app: Router,
    /// Serves the connections this path hands over.
    hyper: auto::Builder<TokioExecutor>,
    /// Cancelled when the drain ends connections: one waiting for a request head closes.
    closing: CancellationToken,
    /// How long heads, bodies and writes may take.
    deadlines: Deadlines,
}

impl Connections {
    pub fn new(
        app: Router,
        hyper: auto::Builder<TokioExecutor>,
        closing: CancellationToken,
        deadlines: Deadlines,
    ) -> Arc<Self> {
        Arc::new(Self {
            app,
            hyper,
            closing,
            deadlines,
        })
    }

    /// Serves one plain connection to its end. `watcher` keeps the drain waiting until then.
    pub fn serve(
        self: Arc<Self>,
        socket: TcpStream,
        remote: SocketAddr,
        watcher: Watcher,
    ) -> impl Future<Output = ()> + Send + 'static {
        // What an idle stream costs is mostly this task, which lives as long as the stream: so
        // everything before the stream starts runs in a box that is gone by then, and the
        // block ends each value's storage before the long await.
        let answering = Box::pin(self.answer_until_stream(socket, remote, watcher));
        async move {
            let (stream, watcher) = {
                let Some(Opened {
                    socket,
                    response,
                    version,
                    watcher,
                }) = answering.await
                else {
                    return;
                };
                (write::event_stream(socket, response, version), watcher)
            };
            stream.await;
            drop(watcher);
        }
    }

    /// Answers requests until one opens an event stream (returned unwritten), or hands the
    /// connection to hyper and serves it there, or the connection ends.
    async fn answer_until_stream(
        self: Arc<Self>,
        mut socket: TcpStream,
        remote: SocketAddr,
        watcher: Watcher,
    ) -> Option<Opened> {
        let mut read = Vec::new();
        let write_timeout = self.deadlines.write;
        loop {
            // One deadline for the next head, idle wait included, whoever ends up reading it.
            let head_deadline = Instant::now() + self.deadlines.head;
            let body_timeout = self.deadlines.body;
            let head = tokio::select! {
                () = self.closing.cancelled() => return None,
                head = head::read(&socket, &mut read, remote, head_deadline, body_timeout) => head,
            };
            let (request, keep_alive) = match head {
                Head::Request {
                    request,
                    keep_alive,
                    rest,
                } => {
                    read = rest;
                    (request, keep_alive)
                }
                Head::Other(read) => {
                    self.hand_to_hyper(socket, remote, read, head_deadline, watcher)
                        .await;
                    return None;
                }
                Head::Refused(error) => {
                    let response = error.into_response();
                    write::whole(
                        &mut socket,
                        response,
                        Version::HTTP_11,
                        false,
                        write_timeout,
                    )
                    .await;
                    return None;
                }
                Head::Closed => return None,
                Head::Idle => {
                    // Answers it has not read would stay in the kernel after a plain close.
                    edge::reset_on_close(&socket);
                    return None;
                }
            };
            let version = request.version();
            let Ok(response) = self.app.clone().call(request).await;
            if write::is_event_stream(&response) {
                return Some(Opened {
                    socket,
                    response,
                    version,
                    watcher,
                });
            }
            if !write::whole(&mut socket, response, version, keep_alive, write_timeout).await {
                return None;
            }
        }
    }

    /// Serves the rest of the connection with hyper, from the bytes already read. The head
    /// they start must still be whole by `head_deadline`.
    async fn hand_to_hyper(
        &self,
        socket: TcpStream,
        remote: SocketAddr,
        read: bytes::Bytes,
        head_deadline: Instant,
        watcher: Watcher,
    ) {
        let io = Rewind::new(read, socket);
        let router = self.app.clone();
        serve_with_hyper(
            &self.hyper,
            router,
            io,
            remote,
            self.deadlines,
            head_deadline,
            watcher,
        )
        .await;
    }
}

/// A connection whose request opened an event stream, not yet written.
struct Opened {
    socket: TcpStream,
    response: axum::response::Response,
    version: axum::http::Version,
    watcher: Watcher,
}

#[cfg(test)]
mod tests;
