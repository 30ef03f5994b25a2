//! Running a node: build its parts ([`Node::start`]), accept connections (`accept`), run the
//! background tasks (`tasks`), and drain on the stop signal (`drain`). Plain connections
//! go to herald's own HTTP/1 path ([`crate::http1`]); TLS connections to hyper, HTTP/2 by ALPN
//! ([`tls`]).

mod accept;
mod drain;
mod tasks;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::accept::Acceptor;
use self::tasks::BackgroundTasks;
use self::tls::TlsError;
use crate::app::AppState;
use crate::config::Settings;
use crate::http::rate_limit::PublishLimiter;
use crate::hub::{Hub, HubLimits};
use crate::metrics::Metrics;
use crate::store::push::PushQueueing;
use crate::store::{RedisStore, SqliteStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start the delivery threads")]
    Threads(#[source] std::io::Error),
}

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
        let tasks = BackgroundTasks::start(&self.state);
        let acceptor = Acceptor::new(&self.state, self.tls);
        acceptor.accept_until(&listener, stop).await;
        drain::drain(&self.state, listener, acceptor, tasks).await;
        Ok(())
    }
}

async fn build_state(settings: Settings) -> Result<AppState, StartError> {
    let metrics = Arc::new(Metrics::new());
    metrics
        .max_streams
        .set(i64::try_from(settings.max_streams).unwrap_or(i64::MAX));
    let hub = Hub::new(
        HubLimits {
            max_streams: settings.max_streams,
            max_streams_per_user: settings.max_streams_per_user,
            queue: settings.queue,
        },
        metrics.clone(),
    )
    .map_err(StartError::Threads)?;
    let pushes_queued = Arc::new(Notify::new());
    let push = settings.push.as_ref().map(|push| PushQueueing {
        when: push.when,
        ttl: push.ttl,
        presence: hub.clone(),
        queued: pushes_queued.clone(),
    });
    // The one place the backend is chosen.
    let store = match &settings.redis {
        Some(redis) => {
            Store::Redis(RedisStore::open(redis, settings.retention, hub.clone(), push).await?)
        }
        None => Store::Sqlite(SqliteStore::open(
            &settings.data_dir,
            settings.sync,
            settings.retention,
            hub.clone(),
            push,
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
        pushes_queued,
        publishing: crate::push::pressure::Publishing::default(),
    })
}
