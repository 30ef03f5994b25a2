//! Publishing, history and read state: `/api/notifications/...` and `/api/broadcast`.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::{IdempotencyKey, NewAnnouncement, NewNotification, Notification};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, JsonBody, Publisher, user_id};
use crate::http::origin::SameOriginIfCookie;
use crate::http::rate_limit::WithinPublishRate;
use crate::store::{HistoryQuery, MarkedRead, PublishOutcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications/{user_id}", post(publish).get(history))
        .route("/api/notifications/{user_id}/read-all", post(mark_all_read))
        .route("/api/notifications/{user_id}/{id}/read", post(mark_read))
        .route("/api/broadcast", post(broadcast))
}

/// The body of a publish. Fields are read as loosely typed options so that every problem gets
/// a message naming the field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PublishBody {
    #[serde(rename = "type")]
    #[schema(value_type = Option<crate::domain::NotificationKind>)]
    kind: Option<String>,
    title: Option<String>,
    message: Option<String>,
    link: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BroadcastBody {
    title: Option<String>,
    message: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/notifications/{userId}",
    params(
        ("userId" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key again within 24 h returns the first result"),
    ),
    request_body = PublishBody,
    responses(
        (status = 201, body = Notification, description = "stored durably and sent"),
        (status = 200, body = Notification, description = "a repeat of an Idempotency-Key: the first notification, not sent again"),
        (status = 400, description = "invalid input"),
        (status = 413, description = "body over 64 KiB"),
        (status = 415, description = "not JSON"),
        (status = 429, description = "over --publish-rate for this client address; nothing stored (see Retry-After)"),
        (status = 503, description = "the store is unavailable; nothing stored"),
    ),
    tag = "notifications"
)]
pub async fn publish(
    State(state): State<AppState>,
    _: WithinPublishRate,
    _: Publisher,
    ApiPath(raw_user): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let user = user_id(&raw_user)?;
    let notification = NewNotification::parse(
        body.kind.as_deref(),
        body.title.as_deref(),
        body.message.as_deref(),
        body.link.as_deref(),
    )
    .map_err(ApiError::BadRequest)?;
    let key = headers
        .get("idempotency-key")
        .map(|raw| IdempotencyKey::parse(raw.as_bytes()))
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let outcome = state.store.publish(user, notification, key).await?;
    state
        .metrics
        .publish_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(match outcome {
        PublishOutcome::Created(notification, id) => {
            state.hub.wait_dispatched(id).await;
            state.metrics.events_published.inc();
            (StatusCode::CREATED, Json(notification)).into_response()
        }
        PublishOutcome::Repeated(notification) => {
            (StatusCode::OK, Json(notification)).into_response()
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    unread: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryResponse {
    /// Newest first.
    notifications: Vec<Notification>,
    /// How many are on this page.
    count: usize,
    /// How many this user has stored.
    total: u64,
    /// How many of those are unread.
    unread: u64,
    /// Open the stream with this id and nothing published after this read is missed.
    last_event_id: String,
}

#[utoipa::path(
    get,
    path = "/api/notifications/{userId}",
    params(
        ("userId" = String, Path),
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("before" = Option<String>, Query, description = "a notification id: the page after it (older)"),
        ("unread" = Option<bool>, Query, description = "only unread notifications"),
    ),
    responses(
        (status = 200, body = HistoryResponse),
        (status = 400, description = "invalid query"),
        (status = 404, description = "`before` names no notification of this user"),
    ),
    tag = "notifications"
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    let limit = match params.limit.as_deref() {
        None => 20,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number from 1 to 100"))?,
    };
    let unread_only = match params.unread.as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(_) => return Err(ApiError::bad_request("unread must be true or false")),
    };
    let before = params.before.filter(|b| !b.is_empty());
    let page = state
        .store
        .history(
            user,
            HistoryQuery {
                limit,
                before,
                unread_only,
                category: None,
                archived: false,
            },
        )
        .await?;
    Ok(Json(HistoryResponse {
        count: page.notifications.len(),
        notifications: page.notifications,
        total: page.total,
        unread: page.unread,
        last_event_id: page.last_event_id.to_string(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/notifications/{userId}/{id}/read",
    params(("userId" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "{\"id\", \"read\": true}"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "no such notification for this user"),
    ),
    tag = "notifications"
)]
pub async fn mark_read(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath((raw_user, id)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    if state.store.mark_read(user, id.clone()).await? == MarkedRead::Changed {
        state.metrics.events_published.inc();
    }
    Ok(Json(json!({ "id": id, "read": true })))
}

#[utoipa::path(
    post,
    path = "/api/notifications/{userId}/read-all",
    params(("userId" = String, Path)),
    responses(
        (status = 200, description = "{\"updated\": n}: how many went from unread to read"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
    ),
    tag = "notifications"
)]
pub async fn mark_all_read(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    let updated = state.store.mark_all_read(user).await?;
    if updated > 0 {
        state.metrics.events_published.inc();
    }
    Ok(Json(json!({ "updated": updated })))
}

#[utoipa::path(
    post,
    path = "/api/broadcast",
    request_body = BroadcastBody,
    responses(
        (status = 200, description = "{\"sent\": true, \"connections\": n} (this node's streams)"),
        (status = 400, description = "invalid input"),
        (status = 429, description = "over --publish-rate for this client address; nothing sent (see Retry-After)"),
    ),
    tag = "notifications"
)]
pub async fn broadcast(
    State(state): State<AppState>,
    _: WithinPublishRate,
    _: Publisher,
    JsonBody(body): JsonBody<BroadcastBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let announcement = NewAnnouncement::parse(body.title.as_deref(), body.message.as_deref())
        .map_err(ApiError::BadRequest)?;
    let id = state.store.broadcast(announcement).await?;
    state.hub.wait_dispatched(id).await;
    state.metrics.events_published.inc();
    let connections = state.hub.stream_count();
    Ok(Json(json!({ "sent": true, "connections": connections })))
}
