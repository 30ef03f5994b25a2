//! Operations and the page: `/api/stats`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`
//! and `/` (the notification page, embedded in the binary).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Operator;
use crate::http::openapi;

/// The page at `/`: plain HTML, CSS and JavaScript, no build step.
const PAGE: &str = include_str!("../../web/index.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/api/stats", get(stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::document))
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    // The page needs nothing from elsewhere; say so, so injected markup could not load any.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[utoipa::path(
    get,
    path = "/api/stats",
    responses((status = 200, description = "totalConnections, uniqueUsers, eventsBuffered, totalEventsSent, and more")),
    tag = "operations"
)]
pub async fn stats(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<serde_json::Value>, ApiError> {
    let buffered = state.store.retained_events().await?;
    let hub = state.hub.stats();
    Ok(Json(json!({
        "totalConnections": hub.streams,
        "uniqueUsers": hub.users,
        "eventsBuffered": buffered,
        "totalEventsSent": hub.dispatched_events,
        "eventsDelivered": state.metrics.events_delivered.get(),
        "eventsReplayed": state.metrics.events_replayed.get(),
        "slowReaderCloses": state.metrics.slow_reader_closes.get(),
        "maxConnections": state.settings.max_streams,
        "draining": state.is_draining(),
    })))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is alive")), tag = "operations")]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "ready for traffic"),
        (status = 503, description = "draining, or the store is unreachable"),
    ),
    tag = "operations"
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable {
            message: "draining: this node is shutting down".into(),
            retry_after: 1,
        });
    }
    if !state.store.is_healthy() {
        return Err(ApiError::Unavailable {
            message: "the store is unreachable".into(),
            retry_after: 1,
        });
    }
    Ok(Json(json!({ "status": "ready" })))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")), tag = "operations")]
pub async fn metrics(State(state): State<AppState>, _: Operator) -> Response {
    // Read at each scrape, as `/readyz` reads it, so Prometheus sees what a probe would.
    let healthy = state.store.is_healthy();
    state.metrics.store_healthy.set(i64::from(healthy));
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
