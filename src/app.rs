//! The application: shared state, the router, and the router as hyper serves it on one
//! connection. Nothing here binds a socket or waits for a signal, so tests and embedders can
//! drive it however they like.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, Version, header};
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder};

use crate::config::Settings;
use crate::edge::{Activity, Deadlines, EdgeIo, InFlight, OverTcp};
use crate::http;
use crate::http::error::ApiError;
use crate::http::rate_limit::PublishLimiter;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::push::pressure::Publishing;
use crate::store::Store;

/// What every handler can reach. Each piece has one owner: the hub owns the connection index,
/// the store owns ids and durability; handlers own neither.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The per-client budget of publishes and broadcasts; `None` without `--publish-rate`.
    pub publish_limiter: Option<Arc<PublishLimiter>>,
    /// Cancelled when the node starts draining: `/readyz` fails, new streams are turned away.
    pub draining: CancellationToken,
    /// Woken by the store when a commit queued Web Push messages, for the pusher.
    pub pushes_queued: Arc<tokio::sync::Notify>,
    /// Publishes being answered now, for the pusher to make way for.
    pub publishing: Publishing,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(http::events::router())
        .merge(http::notifications::router())
        .merge(http::lifecycle::router())
        .merge(http::ops::router())
        .merge(http::push::router())
        .merge(http::assets::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One `layer` call: axum boxes every route once per call, and clones each box per
        // request (BENCHMARKS.md, "Issue 16, tenth step"). Outermost first.
        .layer(
            ServiceBuilder::new()
                .layer(http::access_log::AccessLog)
                .layer(http::cors::Cors::new(&state.settings.cors_origins))
                .layer(DefaultBodyLimit::max(http::extract::MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// Serves one connection with hyper until it ends: its IO kept to the edge's deadlines
/// ([`EdgeIo`]), its first request head due by `first_head`, and `watcher` letting the drain
/// end it. TLS connections come here after their handshake, plain ones when herald's HTTP/1
/// path hands them over.
pub async fn serve_with_hyper<IO>(
    hyper: &auto::Builder<TokioExecutor>,
    router: Router,
    io: IO,
    remote: SocketAddr,
    deadlines: Deadlines,
    first_head: Instant,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + OverTcp + Unpin + Send + 'static,
{
    let activity = Activity::new(first_head, deadlines.idle);
    let io = TokioIo::new(EdgeIo::new(io, activity.clone(), deadlines.write));
    let service = ConnectionService {
        router,
        remote,
        activity,
    };
    // The auto builder reads the HTTP/2 preface that ALPN `h2` (or prior knowledge) promised.
    let connection = hyper.serve_connection_with_upgrades(io, service);
    if let Err(error) = watcher.watch(connection).await {
        // Clients going away, or connections cut at a deadline.
        tracing::trace!(%error, "connection ended");
    }
}

/// The router as hyper serves it on one connection: each request learns its client's address
/// (for per-client limits), as on herald's own HTTP/1 path, and is counted as in progress on
/// its connection until its response's body is over (for the connection's idle deadline).
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    remote: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.remote));
        let in_flight = self.activity.start();
        // On HTTP/1 hyper closes a connection whose request body is left unread; HTTP/2 resets
        // only that request's stream.
        let body_read = (request.version() < Version::HTTP_2
            && !http_body::Body::is_end_stream(request.body()))
        .then(|| Arc::new(AtomicBool::new(false)));
        let request = match &body_read {
            Some(read) => request.map(|body| {
                Body::new(ReadToEnd {
                    body,
                    read: read.clone(),
                })
            }),
            None => request.map(Body::new),
        };
        let response = self.router.clone().call(request);
        Box::pin(async move {
            let Ok(mut response) = response.await;
            if body_read.is_some_and(|read| !read.load(Ordering::Relaxed)) {
                // Said, so that no client sends its next request into the close
                // (docs/protocol.md#errors).
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| {
                Body::new(Counted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    body: Incoming,
    read: Arc<AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.body.is_end_stream() {
            self.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
struct Counted {
    body: Body,
    /// Held, never read: dropping it ends the request.
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
