//! The application: shared state and the router. Nothing here binds a socket or waits for a
//! signal, so tests and embedders can drive it however they like.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::{CorsOrigins, Settings};
use crate::http;
use crate::http::error::ApiError;
use crate::http::rate_limit::PublishLimiter;
use crate::hub::Hub;
use crate::metrics::Metrics;
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
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.settings.cors_origins);
    Router::new()
        .merge(http::events::router())
        .merge(http::notifications::router())
        .merge(http::ops::router())
        .merge(http::assets::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(http::extract::MAX_BODY_BYTES))
        .layer(cors)
        .layer(axum::middleware::from_fn(http::access_log::log_request))
        .layer(
            // Spans name the method and path only: query strings may carry tokens.
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER]);
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::Listed(list) => layer
            .allow_origin(AllowOrigin::list(
                list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_credentials(true),
    }
}

/// The router as hyper serves it on one connection: each request learns its client's address
/// (for per-client limits), as on herald's own HTTP/1 path.
#[derive(Clone)]
pub struct ConnectionService {
    pub router: Router,
    pub remote: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.remote));
        self.router.clone().call(request)
    }
}
