//! herald's own HTTP/1 path, for plain connections and TLS 1.3 ones that did not choose HTTP/2:
//! an idle stream costs ~2 KiB here against ~20 KiB under hyper, and ~3 KiB over TLS against
//! ~28 KiB (docs/architecture.md#the-http1-path). Requests are answered by the same router;
//! anything odd is handed to hyper with the bytes read. What this fence touches outside
//! itself: the router and hyper ([`crate::app::serve_with_hyper`]); the edge's
//! limits and deadlines ([`crate::edge`]), the body limit and the error type of
//! [`crate::http`]; rustls's connection, whose sending key a live TLS stream takes over
//! ([`seal`]); and the direct-write side of [`crate::sse::outbox`] (`EventStreamResponse`,
//! `Outbox::attach`, `DirectSink`).

#[cfg(any(test, feature = "fuzzing"))]
pub mod differential;
mod direct;
mod head;
mod rewind;
mod seal;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::Version;
use axum::response::IntoResponse;
use tokio::time::Instant;

use axum::Router;
use futures::future::Either;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tower::Service;

use self::head::{Head, ReadMore};
use self::rewind::Rewind;
use self::seal::Seal;
use crate::app::serve_with_hyper;
use crate::edge::{self, Deadlines, OverTcp};

/// A connection this path serves: plain TCP, or TLS after its handshake.
pub trait Connection: ReadMore + AsyncRead + AsyncWrite + OverTcp + Unpin + Send + 'static {
    /// Gives the connection up to a live stream: its socket, and on TLS the [`Seal`] that
    /// makes its records. `None` when it cannot go on without its TLS state.
    fn into_live(self) -> Option<(TcpStream, Option<Seal>)>;
}

impl Connection for TcpStream {
    fn into_live(self) -> Option<(TcpStream, Option<Seal>)> {
        Some((self, None))
    }
}

impl Connection for TlsStream<TcpStream> {
    fn into_live(self) -> Option<(TcpStream, Option<Seal>)> {
        let (socket, connection) = self.into_inner();
        Some((socket, Some(Seal::take_over(connection)?)))
    }
}

/// Whether this path serves a TLS connection: one whose sending key a live stream can take
/// over, that did not choose HTTP/2 by ALPN. hyper serves the rest.
fn serves_tls(stream: &TlsStream<TcpStream>) -> bool {
    let (_, connection) = stream.get_ref();
    Seal::can_take_over(connection) && connection.alpn_protocol() != Some(b"h2")
}

/// What every connection on this path shares.
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

    /// Serves one connection to its end; its first head must be whole by `first_head`.
    /// `watcher` keeps the drain waiting until then.
    pub fn serve(
        self: Arc<Self>,
        socket: impl Connection,
        remote: SocketAddr,
        first_head: Instant,
        watcher: Watcher,
    ) -> impl Future<Output = ()> + Send + 'static {
        // What an idle stream costs is mostly this task, which lives as long as the stream: so
        // everything before the stream starts runs in a box that is gone by then, and the
        // block ends each value's storage before the long await.
        let answering = Box::pin(self.answer_until_stream(socket, remote, first_head, watcher));
        async move {
            let (stream, watcher) = {
                let Some(Opened {
                    socket,
                    seal,
                    response,
                    version,
                    watcher,
                }) = answering.await
                else {
                    return;
                };
                (
                    write::event_stream(socket, seal, response, version),
                    watcher,
                )
            };
            stream.await;
            drop(watcher);
        }
    }

    /// Serves one TLS connection after its handshake: on this path if it [`serves_tls`], else
    /// with hyper (boxed: the task that awaits this lives as long as its connection, and is as
    /// large as what it awaits).
    pub fn serve_tls(
        self: Arc<Self>,
        stream: TlsStream<TcpStream>,
        remote: SocketAddr,
        first_head: Instant,
        watcher: Watcher,
    ) -> impl Future<Output = ()> + Send + 'static {
        if serves_tls(&stream) {
            return Either::Left(self.serve(stream, remote, first_head, watcher));
        }
        Either::Right(Box::pin(async move {
            let router = self.app.clone();
            serve_with_hyper(
                &self.hyper,
                router,
                stream,
                remote,
                self.deadlines,
                first_head,
                watcher,
            )
            .await;
        }))
    }

    /// Answers requests until one opens an event stream (returned unwritten), or hands the
    /// connection to hyper and serves it there, or the connection ends.
    async fn answer_until_stream(
        self: Arc<Self>,
        mut socket: impl Connection,
        remote: SocketAddr,
        first_head: Instant,
        watcher: Watcher,
    ) -> Option<Opened> {
        let mut read = Vec::new();
        let write_timeout = self.deadlines.write;
        let mut head_deadline = first_head;
        loop {
            let body_timeout = self.deadlines.body;
            let head = tokio::select! {
                () = self.closing.cancelled() => return None,
                head = head::read(&mut socket, &mut read, remote, head_deadline, body_timeout) => head,
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
                    edge::reset_on_close(socket.tcp());
                    return None;
                }
            };
            let version = request.version();
            let Ok(response) = self.app.clone().call(request).await;
            if write::is_event_stream(&response) {
                // Whatever TLS still holds goes out before a stream takes over the socket.
                let flushed = tokio::time::timeout(write_timeout, socket.flush()).await;
                if !matches!(flushed, Ok(Ok(()))) {
                    return None;
                }
                let (socket, seal) = socket.into_live()?;
                return Some(Opened {
                    socket,
                    seal,
                    response,
                    version,
                    watcher,
                });
            }
            if !write::whole(&mut socket, response, version, keep_alive, write_timeout).await {
                return None;
            }
            // One deadline for the next head, idle wait included, whoever ends up reading it.
            head_deadline = Instant::now() + self.deadlines.head;
        }
    }

    /// Serves the rest of the connection with hyper, from the bytes already read. The head
    /// they start must still be whole by `head_deadline`.
    async fn hand_to_hyper(
        &self,
        socket: impl Connection,
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
    seal: Option<Seal>,
    response: axum::response::Response,
    version: axum::http::Version,
    watcher: Watcher,
}

#[cfg(test)]
mod tests;
