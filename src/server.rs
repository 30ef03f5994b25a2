//! Running a node: build the parts, accept connections, and drain on the stop signal.
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
use crate::hub::{Hub, HubLimits};
use crate::metrics::Metrics;
use crate::store::{SqliteStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// Serves on `listener` until `stop` completes, then drains within the shutdown timeout.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let state = build_state(settings)?;
    let background = CancellationToken::new();
    tokio::spawn(send_heartbeats(state.clone(), background.clone()));
    tokio::spawn(sweep_retention(state.clone(), background.clone()));

    let app = router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    let accept = |stream: tokio::net::TcpStream, remote: SocketAddr| {
        // Small writes are the whole point of SSE: send them now.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Each request learns its client's address (for per-client limits).
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().call(request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            // Errors here are clients going away or slow readers being cut off.
            if let Err(error) = connection.await {
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

fn build_state(settings: Settings) -> Result<AppState, StartError> {
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(
        HubLimits {
            max_streams: settings.max_streams,
            max_streams_per_user: settings.max_streams_per_user,
            queue: settings.queue,
        },
        metrics.clone(),
    );
    let store = Store::Sqlite(SqliteStore::open(
        &settings.data_dir,
        settings.sync,
        settings.retention,
        hub.clone(),
    )?);
    Ok(AppState {
        settings: Arc::new(settings),
        store,
        hub,
        metrics,
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
