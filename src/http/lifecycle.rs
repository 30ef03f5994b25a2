//! Changing a notification once it is sent: `PATCH` and `DELETE` on
//! `/api/notifications/{userId}/{id}`, and `.../archive` / `.../unarchive`. Each change is an
//! event in the user's log (docs/protocol.md#the-notification-lifecycle).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::{Notification, NotificationPatch, RawPatch};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, JsonBody, Publisher, user_id};
use crate::http::origin::SameOriginIfCookie;
use crate::store::Archived;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/notifications/{user_id}/{id}",
            patch(update).delete(delete),
        )
        .route("/api/notifications/{user_id}/{id}/archive", post(archive))
        .route(
            "/api/notifications/{user_id}/{id}/unarchive",
            post(unarchive),
        )
}

/// The body of a `PATCH`: any of these; `null` removes `link`, `data` or `category`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(rename = "type", default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::domain::NotificationKind>)]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    message: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    link: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>, nullable)]
    data: Option<Option<Box<RawValue>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    category: Option<Option<String>>,
}

/// A field that is present is `Some`, even when it is `null` (`Some(None)`); an absent one
/// stays `None` through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl PatchBody {
    fn patch(&self) -> Result<NotificationPatch, ApiError> {
        NotificationPatch::parse(RawPatch {
            kind: self.kind.as_ref().map(Option::as_deref),
            title: self.title.as_ref().map(Option::as_deref),
            message: self.message.as_ref().map(Option::as_deref),
            link: self.link.as_ref().map(Option::as_deref),
            data: self.data.as_ref().map(Option::as_deref),
            category: self.category.as_ref().map(Option::as_deref),
        })
        .map_err(ApiError::BadRequest)
    }
}

#[utoipa::path(
    patch,
    path = "/api/notifications/{userId}/{id}",
    params(("userId" = String, Path), ("id" = String, Path)),
    request_body = PatchBody,
    responses(
        (status = 200, body = Notification, description = "the whole updated notification, also sent as the `updated` event"),
        (status = 400, description = "invalid input; nothing changed"),
        (status = 403, description = "a subscriber token: only publishers update"),
        (status = 404, description = "no such notification for this user (or it expired)"),
    ),
    tag = "notifications"
)]
pub async fn update(
    State(state): State<AppState>,
    _: Publisher,
    ApiPath((raw_user, id)): ApiPath<(String, String)>,
    JsonBody(body): JsonBody<PatchBody>,
) -> Result<Json<Notification>, ApiError> {
    let user = user_id(&raw_user)?;
    let patch = body.patch()?;
    let (notification, event) = state.store.update(user, id, patch).await?;
    state.hub.wait_dispatched(event).await;
    state.metrics.events_published.inc();
    Ok(Json(notification))
}

#[utoipa::path(
    delete,
    path = "/api/notifications/{userId}/{id}",
    params(("userId" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "gone from history and from replay; the `deleted` event is sent"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "no such notification for this user"),
    ),
    tag = "notifications"
)]
pub async fn delete(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath((raw_user, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    let event = state.store.delete(user, id).await?;
    state.hub.wait_dispatched(event).await;
    state.metrics.events_published.inc();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/notifications/{userId}/{id}/archive",
    params(("userId" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "{\"id\", \"archived\": true}; the `archived` event is sent when it changed"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "no such notification for this user"),
    ),
    tag = "notifications"
)]
pub async fn archive(
    state: State<AppState>,
    same_origin: SameOriginIfCookie,
    caller: Caller,
    path: ApiPath<(String, String)>,
) -> Result<Json<ArchiveAnswer>, ApiError> {
    set_archived(state, same_origin, caller, path, true).await
}

#[utoipa::path(
    post,
    path = "/api/notifications/{userId}/{id}/unarchive",
    params(("userId" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "{\"id\", \"archived\": false}; the `archived` event is sent when it changed"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "no such notification for this user"),
    ),
    tag = "notifications"
)]
pub async fn unarchive(
    state: State<AppState>,
    same_origin: SameOriginIfCookie,
    caller: Caller,
    path: ApiPath<(String, String)>,
) -> Result<Json<ArchiveAnswer>, ApiError> {
    set_archived(state, same_origin, caller, path, false).await
}

async fn set_archived(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath((raw_user, id)): ApiPath<(String, String)>,
    archived: bool,
) -> Result<Json<ArchiveAnswer>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    if let Archived::Changed(event) = state.store.set_archived(user, id.clone(), archived).await? {
        state.hub.wait_dispatched(event).await;
        state.metrics.events_published.inc();
    }
    Ok(Json(ArchiveAnswer { id, archived }))
}

/// The answer to archive and unarchive.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveAnswer {
    id: String,
    archived: bool,
}
