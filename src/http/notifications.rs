//! Publishing, history and read state: `/api/notifications/...` and `/api/broadcast`.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::{
    Category, IdempotencyKey, NewAnnouncement, NewNotification, Notification, NotificationJson,
    Recipients,
};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, JsonBody, Publisher, user_id};
use crate::http::origin::SameOriginIfCookie;
use crate::http::rate_limit::WithinPublishRate;
use crate::store::{Addressed, BulkOutcome, HistoryQuery, MarkedRead, PublishOutcome, ReadAll};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", post(publish_many))
        .route("/api/notifications/{user_id}", post(publish).get(history))
        .route("/api/notifications/{user_id}/read-all", post(mark_all_read))
        .route("/api/notifications/{user_id}/{id}/read", post(mark_read))
        .route("/api/broadcast", post(broadcast))
}

/// The body of a publish. Fields are read as loosely typed options so that every problem gets
/// a message naming the field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PublishBody {
    /// Only for `POST /api/notifications`: 1..=1000 distinct user ids, each of whom gets its
    /// own notification.
    users: Option<Vec<String>>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<crate::domain::NotificationKind>)]
    kind: Option<String>,
    title: Option<String>,
    message: Option<String>,
    link: Option<String>,
    /// A JSON object of your own, at most 8 KiB as compact JSON, returned exactly as given.
    #[schema(value_type = Option<Object>)]
    data: Option<Box<RawValue>>,
    /// 1..=64 characters of `a-z 0-9 . _ -`.
    category: Option<String>,
    /// Seconds until the notification expires, 1..=the retention age.
    ttl: Option<u64>,
    /// When the notification expires (RFC 3339, in the future, within the retention age); not
    /// with `ttl`.
    #[serde(rename = "expiresAt")]
    expires_at: Option<String>,
}

impl PublishBody {
    fn notification(&self, state: &AppState) -> Result<NewNotification, ApiError> {
        NewNotification::parse(
            self.kind.as_deref(),
            self.title.as_deref(),
            self.message.as_deref(),
            self.link.as_deref(),
        )
        .and_then(|new| {
            new.with_extras(
                self.data.as_deref(),
                self.category.as_deref(),
                self.ttl,
                self.expires_at.as_deref(),
                state.settings.retention.max_age,
            )
        })
        .map_err(ApiError::BadRequest)
    }
}

/// The `Idempotency-Key` header, read where it lies: taking the whole `HeaderMap` would copy
/// every header of every publish (BENCHMARKS.md, "Issue 16, tenth step"). A bad key is refused by
/// the handler after the body's own checks, as before.
pub struct IdempotencyHeader(Result<Option<IdempotencyKey>, String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let key = parts
            .headers
            .get("idempotency-key")
            .map(|raw| IdempotencyKey::parse(raw.as_bytes()))
            .transpose();
        Ok(Self(key))
    }
}

impl IdempotencyHeader {
    fn key(self) -> Result<Option<IdempotencyKey>, ApiError> {
        self.0.map_err(ApiError::BadRequest)
    }
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
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let user = user_id(&raw_user)?;
    if body.users.is_some() {
        return Err(ApiError::bad_request(
            "users belongs to POST /api/notifications; this route names its user in the path",
        ));
    }
    let notification = body.notification(&state)?;
    let key = idempotency.key()?;
    let _publishing = state.publishing.enter();
    let outcome = state.store.publish(user, notification, key).await?;
    state
        .metrics
        .publish_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(match outcome {
        PublishOutcome::Created(json, id) => {
            state.hub.wait_dispatched(id).await;
            state.metrics.events_published.inc();
            answer_json(StatusCode::CREATED, json)
        }
        PublishOutcome::Repeated(json) => answer_json(StatusCode::OK, json),
    })
}

/// A notification's stored JSON as an answer, not encoded again.
fn answer_json(status: StatusCode, json: NotificationJson) -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (status, content_type, json.0).into_response()
}

/// The answer to a publish to many users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishedToMany {
    /// One per user, in the order given.
    notifications: Vec<Addressed>,
}

#[utoipa::path(
    post,
    path = "/api/notifications",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "covers the whole request: the same key again within 24 h returns the first answer"),
    ),
    request_body(content = PublishBody, description = "`users` and the fields of a single publish"),
    responses(
        (status = 201, body = PublishedToMany, description = "every user's notification stored durably, in one transaction, and sent"),
        (status = 200, body = PublishedToMany, description = "a repeat of an Idempotency-Key: the first answer, nothing sent again"),
        (status = 400, description = "invalid input (a fault anywhere in `users` names `users`); nothing stored"),
        (status = 413, description = "body over 64 KiB"),
        (status = 415, description = "not JSON"),
        (status = 429, description = "over --publish-rate for this client address; nothing stored (see Retry-After)"),
        (status = 503, description = "the store is unavailable; nothing stored"),
    ),
    tag = "notifications"
)]
pub async fn publish_many(
    State(state): State<AppState>,
    _: WithinPublishRate,
    _: Publisher,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let users = Recipients::parse(body.users.as_deref()).map_err(ApiError::BadRequest)?;
    let notification = body.notification(&state)?;
    let key = idempotency.key()?;
    let _publishing = state.publishing.enter();
    let outcome = state
        .store
        .publish_many(users.into_vec(), notification, key)
        .await?;
    state
        .metrics
        .publish_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(match outcome {
        BulkOutcome::Created(notifications, last) => {
            state.hub.wait_dispatched(last).await;
            state
                .metrics
                .events_published
                .inc_by(notifications.len() as u64);
            (StatusCode::CREATED, Json(PublishedToMany { notifications })).into_response()
        }
        BulkOutcome::Repeated(notifications) => {
            (StatusCode::OK, Json(PublishedToMany { notifications })).into_response()
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    unread: Option<String>,
    category: Option<String>,
    archived: Option<String>,
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
        ("category" = Option<String>, Query, description = "only this category"),
        ("archived" = Option<bool>, Query, description = "true: only archived notifications; by default archived ones are left out"),
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
    let unread_only = flag("unread", params.unread.as_deref())?;
    let archived = flag("archived", params.archived.as_deref())?;
    let category = params
        .category
        .as_deref()
        .map(Category::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let before = params.before.filter(|b| !b.is_empty());
    let page = state
        .store
        .history(
            user,
            HistoryQuery {
                limit,
                before,
                unread_only,
                category,
                archived,
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

/// A yes/no query parameter: absent, `false` or `0` is no; `true`, `1` or empty is yes.
fn flag(name: &str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be true or false"
        ))),
    }
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
    if let MarkedRead::Changed(event) = state.store.mark_read(user, id.clone()).await? {
        state.hub.wait_dispatched(event).await;
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
    let ReadAll { updated, event } = state.store.mark_all_read(user).await?;
    if let Some(event) = event {
        state.hub.wait_dispatched(event).await;
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
