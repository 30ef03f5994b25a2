//! Running a node: build the parts, accept connections, and drain on the stop signal. Plain
//! connections go to [`crate::http1_streams`], which writes SSE streams itself and hands the
//! rest to hyper; TLS connections go to hyper (HTTP/2 by ALPN).
//!
//! The drain follows SPEC §6: `/readyz` turns 503 and new streams get only a `retry:` line;
//! open streams are ended one by one, spread over the first half of the shutdown window so
//! their clients do not all come back at once; then in-flight requests finish, the store
//! commits what it holds and checkpoints, and `run` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::app::{AppState, router};
use crate::config::Settings;
use crate::http::rate_limit::{self, PublishLimiter};
use crate::http1_streams::Http1Streams;
use crate::hub::{Hub, HubLimits};
use crate::metrics::Metrics;
use crate::store::{RedisStore, SqliteStore, Store, StoreError};
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start the delivery threads")]
    Threads(#[source] std::io::Error),
}

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take: an SSE
/// stream on a dead connection is otherwise found only when its send window fills.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// How long a client may take to send a request head, idle keep-alive waits included.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves on `listener` until `stop` completes, then drains within the shutdown timeout.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    Node::start(settings).await?.serve(listener, stop).await
}

/// A node whose certificate is loaded and whose store is open: everything that can fail at
/// start has, so the caller may announce its address before serving.
pub struct Node {
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Node {
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        // Before the store opens, so a bad certificate leaves the data directory untouched.
        let tls = settings.tls.as_ref().map(tls::acceptor).transpose()?;
        let state = build_state(settings).await?;
        Ok(Self { state, tls })
    }

    /// Serves on `listener` until `stop` completes, then drains within the shutdown timeout.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<(), StartError> {
        serve(self.state, self.tls, listener, stop).await
    }
}

async fn serve(
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let background = CancellationToken::new();
    tokio::spawn(send_heartbeats(state.clone(), background.clone()));
    tokio::spawn(sweep_retention(state.clone(), background.clone()));
    if let Some(limiter) = &state.publish_limiter {
        tokio::spawn(rate_limit::forget_quiet_clients(
            limiter.clone(),
            background.clone(),
        ));
    }

    let app = router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let graceful = GracefulShutdown::new();
    // Ends what still waits for a client when the connections drain: TLS handshakes, and
    // request heads on plain connections.
    let waiting = CancellationToken::new();
    let plain = Http1Streams::new(app.clone(), builder.clone(), waiting.clone(), HEAD_TIMEOUT);
    let accept = |stream: tokio::net::TcpStream, remote: SocketAddr| {
        state.metrics.connections_accepted.inc();
        // Small writes are the whole point of SSE: send them now.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = &tls else {
            tokio::spawn(plain.clone().serve(stream, remote, graceful.watcher()));
            return;
        };
        let service = WithClientAddress {
            app: app.clone(),
            remote,
        };
        // The handshake runs in the connection's own task: a slow client never holds up the
        // accept loop. The watcher is taken now so the drain waits for (or ends) the handshake.
        let (acceptor, builder) = (acceptor.clone(), builder.clone());
        let (watcher, waiting) = (graceful.watcher(), waiting.clone());
        tokio::spawn(async move {
            let stream = tokio::select! {
                () = waiting.cancelled() => return,
                stream = tls::handshake(acceptor, stream) => match stream {
                    Some(stream) => stream,
                    None => return,
                },
            };
            // The auto builder reads the HTTP/2 preface that ALPN `h2` promised.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::trace!(%error, "connection ended");
            }
        });
    };

    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => accept(stream, remote),
                Err(error) => accept_failed(error).await,
            },
        }
    }

    let timeout = state.settings.shutdown_timeout;
    let deadline = Instant::now() + timeout;
    tracing::info!(?timeout, "draining");
    state.draining.cancel();
    let open = state.hub.all_outboxes();
    let closing = Hub::close_spread(open, timeout / 2);
    tokio::pin!(closing);
    // Keep accepting while streams close, so reconnecting clients hear "retry later".
    loop {
        tokio::select! {
            () = &mut closing => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => accept(stream, remote),
                Err(error) => accept_failed(error).await,
            },
        }
    }
    drop(listener);
    // Streams admitted in the instant before the drain began.
    for outbox in state.hub.all_outboxes() {
        outbox.close(crate::sse::outbox::Closing::Drain);
    }
    // Leave a little of the window for the store's final commit.
    let margin = (timeout / 10).min(Duration::from_secs(1));
    let connections_deadline = deadline.checked_sub(margin).unwrap_or(deadline);
    waiting.cancel();
    if tokio::time::timeout_at(connections_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open at the shutdown deadline");
    }
    background.cancel();
    state.store.close().await;
    tracing::info!("drained");
    Ok(())
}

/// The hyper service of one connection: each request learns its client's address (for
/// per-client limits).
#[derive(Clone)]
pub(crate) struct WithClientAddress {
    pub app: axum::Router,
    pub remote: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for WithClientAddress {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.remote));
        self.app.clone().call(request)
    }
}

async fn build_state(settings: Settings) -> Result<AppState, StartError> {
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(
        HubLimits {
            max_streams: settings.max_streams,
            max_streams_per_user: settings.max_streams_per_user,
            queue: settings.queue,
        },
        metrics.clone(),
    )
    .map_err(StartError::Threads)?;
    // The one place the backend is chosen.
    let store = match &settings.redis {
        Some(redis) => {
            Store::Redis(RedisStore::open(redis, settings.retention, hub.clone()).await?)
        }
        None => Store::Sqlite(SqliteStore::open(
            &settings.data_dir,
            settings.sync,
            settings.retention,
            hub.clone(),
        )?),
    };
    let publish_limiter = settings
        .publish_rate
        .map(|rate| Arc::new(PublishLimiter::per_second(rate)));
    Ok(AppState {
        settings: Arc::new(settings),
        store,
        hub,
        metrics,
        publish_limiter,
        draining: CancellationToken::new(),
    })
}

/// Accept errors are usually a full file table: wait a moment rather than spin.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn send_heartbeats(state: AppState, stop: CancellationToken) {
    let idle = state.settings.heartbeat;
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => state.hub.send_heartbeats(idle),
        }
    }
}

async fn sweep_retention(state: AppState, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(state.settings.sweep_every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = state.store.sweep().await {
                    tracing::warn!(%error, "retention sweep failed");
                }
            }
        }
    }
}
