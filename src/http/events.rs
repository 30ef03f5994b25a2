//! `GET /events/{userId}`: the SSE stream, with replay from `Last-Event-ID`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::EventId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, user_id};
use crate::hub::AdmitError;
use crate::sse::encode;
use crate::sse::outbox::EventStreamResponse;
use crate::subscription::{EventStream, Start};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events/me", get(subscribe_me))
        .route("/events/{user_id}", get(subscribe))
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// For clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// An id no server issues: where an unreadable `Last-Event-ID` points, so it gets a `resync`.
const UNREADABLE: EventId = EventId::new(u64::MAX, u64::MAX);

#[utoipa::path(
    get,
    path = "/events/{userId}",
    params(
        ("userId" = String, Path, description = "the user whose stream to open"),
        ("lastEventId" = Option<String>, Query, description = "replay after this id (as the Last-Event-ID header)"),
        ("Last-Event-ID" = Option<String>, Header, description = "replay after this id"),
    ),
    responses(
        (status = 200, description = "an SSE stream (text/event-stream)", content_type = "text/event-stream"),
        (status = 400, description = "bad userId"),
        (status = 401, description = "no valid subscriber token (when --jwt-secret or --jwt-public-key is set)"),
        (status = 403, description = "the token belongs to another user"),
        (status = 429, description = "this user holds too many streams"),
        (status = 503, description = "this node holds too many streams"),
    ),
    tag = "streams"
)]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_id(&raw_user)?;
    let expires_at = caller.require_subscriber_of(&state.settings.auth, &user)?;
    open_stream(state, user, expires_at, query, &headers)
}

#[utoipa::path(
    get,
    path = "/events/me",
    params(
        ("lastEventId" = Option<String>, Query, description = "replay after this id"),
        ("Last-Event-ID" = Option<String>, Header, description = "replay after this id"),
    ),
    responses(
        (status = 200, description = "the stream of the user named by the token's `sub`", content_type = "text/event-stream"),
        (status = 401, description = "no valid subscriber token"),
    ),
    tag = "streams"
)]
pub async fn subscribe_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let subscriber = match caller {
        Caller::Subscriber(subscriber) => subscriber,
        Caller::Rejected(reason) => return Err(ApiError::Unauthorized(reason)),
        _ if state.settings.auth.tokens.is_none() => {
            return Err(ApiError::bad_request(
                "/events/me needs subscriber tokens, and this server has no --jwt-secret or --jwt-public-key",
            ));
        }
        _ => {
            return Err(ApiError::Unauthorized(
                "a subscriber token is required".into(),
            ));
        }
    };
    open_stream(
        state,
        subscriber.user,
        Some(subscriber.expires_at),
        query,
        &headers,
    )
}

fn open_stream(
    state: AppState,
    user: crate::domain::UserId,
    expires_at: Option<u64>,
    query: StreamQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let start = match requested_start(headers, query.last_event_id.as_deref()) {
        None => Start::Live,
        Some(raw) => Start::After(raw.parse().unwrap_or(UNREADABLE)),
    };
    let retry_ms = state.settings.retry_ms;
    if state.is_draining() {
        // A status other than 200 would make EventSource give up for good; come back later.
        let body = Body::from(encode::retry_only(retry_ms));
        return Ok(event_stream_response(body, EventStreamResponse(None)));
    }
    let admission = state.hub.admit(&user).map_err(|error| {
        state.metrics.streams_refused.inc();
        match error {
            AdmitError::NodeFull(_) => ApiError::Unavailable {
                message: error.to_string(),
                retry_after: 5,
            },
            AdmitError::UserFull(_) => ApiError::TooMany {
                message: error.to_string(),
                retry_after: 5,
            },
        }
    })?;
    let client_id = format!(
        "{}-{}",
        admission.outbox.stream_id,
        uuid::Uuid::new_v4().simple()
    );
    let marker = EventStreamResponse(Some(admission.outbox.clone()));
    let stream = EventStream::new(
        admission,
        user,
        state.store.clone(),
        state.metrics.clone(),
        encode::preamble(retry_ms, &client_id),
        start,
        expires_at,
    );
    Ok(event_stream_response(Body::from_stream(stream), marker))
}

/// The header wins over the query parameter; an empty value means none (as EventSource sends).
fn requested_start<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("\u{fffd}"));
    header.or(query).filter(|raw| !raw.trim().is_empty())
}

fn event_stream_response(body: Body, marker: EventStreamResponse) -> Response {
    let mut response = Response::new(body);
    response.extensions_mut().insert(marker);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
