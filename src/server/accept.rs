//! Accepting connections: one function takes each accepted socket, plain or TLS, to the code
//! that serves it, in a task of its own, watched by the graceful shutdown so the drain can
//! wait for (or end) it. At most `--max-open-connections` are open at once (more are reset as
//! they arrive), and a failing accept (a full file table) backs off instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tls;
use crate::app::{AppState, router};
use crate::edge::{self, Deadlines, MAX_HEAD, MAX_HEADERS};
use crate::http1;
use crate::metrics::Metrics;

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take: an SSE
/// stream on a dead connection is otherwise found only when its send window fills.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What every accepted connection is served with.
pub(super) struct Acceptor {
    tls: Option<TlsAcceptor>,
    /// herald's HTTP/1 path, which hands to hyper what it does not serve.
    connections: Arc<http1::Connections>,
    metrics: Arc<Metrics>,
    deadlines: Deadlines,
    /// One permit per open connection, held by its task.
    open: Arc<Semaphore>,
    /// Every connection's task holds a watcher of this until it ends.
    graceful: GracefulShutdown,
    /// Cancelled when connections drain: ends what still waits for a client (TLS handshakes,
    /// request heads on plain connections).
    waiting: CancellationToken,
}

impl Acceptor {
    pub fn new(state: &AppState, tls: Option<TlsAcceptor>) -> Self {
        let deadlines = state.settings.deadlines;
        let router = router(state.clone());
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        // The same bounds as herald's HTTP/1 path (docs/protocol.md#limits).
        hyper
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(deadlines.head)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD);
        hyper
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32)
            .keep_alive_interval(HTTP2_KEEP_ALIVE)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE);
        let waiting = CancellationToken::new();
        let connections =
            http1::Connections::new(router.clone(), hyper.clone(), waiting.clone(), deadlines);
        Self {
            tls,
            connections,
            metrics: state.metrics.clone(),
            deadlines,
            open: Arc::new(Semaphore::new(state.settings.max_open_connections)),
            graceful: GracefulShutdown::new(),
            waiting,
        }
    }

    /// Accepts connections until `until` completes.
    pub async fn accept_until(&self, listener: &TcpListener, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        let mut failures = AcceptFailures::default();
        loop {
            let error = tokio::select! {
                () = &mut until => return,
                accepted = listener.accept() => match accepted {
                    Ok((socket, remote)) => {
                        failures.ended();
                        self.serve(socket, remote);
                        continue;
                    }
                    Err(error) => error,
                },
            };
            self.metrics.accept_failures.inc();
            tokio::select! {
                () = &mut until => return,
                () = failures.back_off(&error) => {}
            }
        }
    }

    /// Serves one accepted connection in a task of its own: plain ones on herald's HTTP/1
    /// path; TLS ones, after the handshake (which a slow client thus never lets hold up the
    /// accept loop), on the same path if they speak TLS 1.3 and HTTP/1, else through hyper
    /// ([`http1::Connections::serve_tls`]). Over the open-connection bound, it is reset at
    /// once: a closed connection makes EventSource retry, where an error status would stop it
    /// for good.
    fn serve(&self, socket: TcpStream, remote: SocketAddr) {
        self.metrics.connections_accepted.inc();
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            self.metrics.connections_refused.inc();
            edge::reset_on_close(&socket);
            return;
        };
        let open = OpenConnection::new(permit, &self.metrics);
        // Small writes are the whole point of SSE: send them now.
        let _ = socket.set_nodelay(true);
        // Taken now, so the drain waits for (or ends) whatever this task does.
        let watcher = self.graceful.watcher();
        // The handshake and the first head share one deadline.
        let first_head = Instant::now() + self.deadlines.head;
        let Some(acceptor) = &self.tls else {
            let served = self
                .connections
                .clone()
                .serve(socket, remote, first_head, watcher);
            tokio::spawn(async move {
                served.await;
                drop(open);
            });
            return;
        };
        let (acceptor, waiting, connections) = (
            acceptor.clone(),
            self.waiting.clone(),
            self.connections.clone(),
        );
        tokio::spawn(async move {
            // Boxed, and so gone once it is done: what an idle stream costs is mostly this
            // task, which is as large as the largest thing it awaits in place.
            let handshake = Box::pin(async move {
                tokio::select! {
                    () = waiting.cancelled() => None,
                    stream = tls::handshake(acceptor, socket) => stream,
                }
            });
            let Some(stream) = handshake.await else {
                return;
            };
            connections
                .serve_tls(stream, remote, first_head, watcher)
                .await;
            drop(open);
        });
    }

    /// Ends what waits for a client, lets requests in flight finish, and waits for every
    /// connection to close, until `deadline`.
    pub async fn finish(self, deadline: Instant) {
        self.waiting.cancel();
        if tokio::time::timeout_at(deadline, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still open at the shutdown deadline");
        }
    }
}

/// One open connection: its place under the bound, given back (and counted) when it ends.
struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl OpenConnection {
    fn new(permit: OwnedSemaphorePermit, metrics: &Metrics) -> Self {
        metrics.connections_open.inc();
        Self {
            _permit: permit,
            open: metrics.connections_open.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Failed accepts in a row. The usual cause, a full file table, clears only as connections
/// close, so the wait doubles while failures go on (10 ms up to 1 s), and the log hears of
/// them at most once per [`AcceptFailures::LOG_EVERY`], and of the recovery once after that.
#[derive(Default)]
struct AcceptFailures {
    in_a_row: u32,
    since_logged: u64,
    logged_at: Option<Instant>,
    /// Whether the last failure logged has been followed by a word that accepts work again.
    recovery_logged: bool,
}

impl AcceptFailures {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    async fn back_off(&mut self, error: &std::io::Error) {
        self.in_a_row += 1;
        self.since_logged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Self::LOG_EVERY)
        {
            tracing::warn!(%error, failures = self.since_logged, "accept failed; backing off");
            self.logged_at = Some(Instant::now());
            self.since_logged = 0;
            self.recovery_logged = false;
        }
        // 10, 20, 40 ... 640 ms, then 1 s.
        let wait = Duration::from_millis(10) * 2u32.pow(self.in_a_row.min(8) - 1);
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }

    /// An accept succeeded.
    fn ended(&mut self) {
        if self.in_a_row > 0 && !self.recovery_logged {
            tracing::info!("accepting connections again");
            self.recovery_logged = true;
        }
        self.in_a_row = 0;
    }
}
