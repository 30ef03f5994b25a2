//! Web Push over HTTP (docs/protocol.md#web-push): the key a browser subscribes with, a user's
//! subscriptions and muted categories, and `GET /api/presence/{userId}`, the cluster-wide count
//! of a user's open streams that decides whether a notification is pushed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Caller;
use crate::config::PushSettings;
use crate::domain::{Category, PushSubscription, format_unix_ms};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, JsonBody, Publisher, user_id};
use crate::http::origin::SameOriginIfCookie;
use crate::push::endpoint::literal_is_internal;
use crate::store::push::Subscribed;

/// How long a subscribe waits for its endpoint's name to resolve; past it, the name is
/// judged as unresolved (stored, and judged again at each push).
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The most categories one user may mute.
const MAX_MUTED: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/push/public-key", get(public_key))
        .route(
            "/api/push/{user_id}/subscriptions",
            get(list_subscriptions).post(subscribe),
        )
        .route(
            "/api/push/{user_id}/subscriptions/{id}",
            delete(unsubscribe),
        )
        .route(
            "/api/push/{user_id}/preferences",
            get(preferences).put(set_preferences),
        )
        .route("/api/presence/{user_id}", get(presence))
}

/// The server's VAPID public key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// The uncompressed P-256 point, base64url without padding: a browser's
    /// `applicationServerKey`.
    public_key: String,
}

fn push_on(state: &AppState) -> Result<&PushSettings, ApiError> {
    state.settings.push.as_ref().ok_or_else(|| {
        ApiError::NotFound("push is off: the server was started without --vapid-key".into())
    })
}

#[utoipa::path(
    get,
    path = "/api/push/public-key",
    responses(
        (status = 200, description = "Push is on: the key to subscribe with", body = PublicKey),
        (status = 404, description = "Push is off (no --vapid-key)")
    ),
    tag = "push"
)]
pub async fn public_key(State(state): State<AppState>) -> Result<Json<PublicKey>, ApiError> {
    let push = push_on(&state)?;
    Ok(Json(PublicKey {
        public_key: push.key.public_key().to_owned(),
    }))
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBody {
    endpoint: String,
    keys: SubscriptionKeys,
    /// Sent by browsers, and ignored: push services say when a subscription ends (404/410).
    #[serde(default)]
    #[schema(value_type = Option<f64>, nullable)]
    #[allow(dead_code)]
    expiration_time: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    p256dh: String,
    auth: String,
}

/// A subscription's id.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionId {
    id: String,
}

#[utoipa::path(
    post,
    path = "/api/push/{userId}/subscriptions",
    params(("userId" = String, Path)),
    request_body = SubscriptionBody,
    responses(
        (status = 201, body = SubscriptionId, description = "stored"),
        (status = 200, body = SubscriptionId, description = "this user already had that endpoint; its keys are updated"),
        (status = 400, description = "not a subscription, or an endpoint herald will not contact"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "push is off"),
        (status = 409, description = "the user holds --push-subscriptions-per-user already"),
    ),
    tag = "push"
)]
pub async fn subscribe(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
    JsonBody(body): JsonBody<SubscriptionBody>,
) -> Result<(StatusCode, Json<SubscriptionId>), ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    let push = push_on(&state)?;
    let subscription = PushSubscription::parse(&body.endpoint, &body.keys.p256dh, &body.keys.auth)
        .map_err(ApiError::BadRequest)?;
    push.endpoints
        .check(&subscription.endpoint)
        .map_err(ApiError::BadRequest)?;
    if !push.endpoints.is_insecure() {
        refuse_internal(&subscription.endpoint).await?;
    }
    let max = push.subscriptions_per_user;
    match state.store.subscribe_push(user, subscription, max).await? {
        Subscribed::Created(id) => Ok((StatusCode::CREATED, Json(SubscriptionId { id }))),
        Subscribed::Existing(id) => Ok((StatusCode::OK, Json(SubscriptionId { id }))),
        Subscribed::Full => Err(ApiError::Conflict(format!(
            "this user already holds {max} push subscriptions (--push-subscriptions-per-user); \
             delete one first"
        ))),
    }
}

/// Refuses an endpoint whose host is, or resolves to, an internal address. The pusher checks
/// again at every connection (docs/protocol.md#web-push); this is so the subscriber hears now.
async fn refuse_internal(endpoint: &url::Url) -> Result<(), ApiError> {
    let refused = || ApiError::BadRequest("endpoint resolves to an internal address".into());
    if literal_is_internal(endpoint) {
        return Err(refused());
    }
    let Some(host) = endpoint.host_str() else {
        return Err(refused());
    };
    let port = endpoint.port_or_known_default().unwrap_or(443);
    // A name that does not resolve now (or not within LOOKUP_TIMEOUT) may later: it is stored,
    // and the pusher judges the addresses it finds then.
    let lookup = tokio::net::lookup_host((host, port));
    let Ok(Ok(addresses)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await else {
        return Ok(());
    };
    let addresses: Vec<_> = addresses.collect();
    if !addresses.is_empty()
        && addresses
            .iter()
            .all(|address| crate::push::endpoint::is_internal(address.ip()))
    {
        return Err(refused());
    }
    Ok(())
}

/// One subscription as listed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSubscription {
    id: String,
    /// The endpoint's origin only: its path is a secret.
    origin: String,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    subscriptions: Vec<ListedSubscription>,
}

#[utoipa::path(
    get,
    path = "/api/push/{userId}/subscriptions",
    params(("userId" = String, Path)),
    responses(
        (status = 200, body = SubscriptionList, description = "oldest first"),
        (status = 403, description = "another user's token"),
        (status = 404, description = "push is off"),
    ),
    tag = "push"
)]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    push_on(&state)?;
    let subscriptions = state
        .store
        .push_subscriptions(user)
        .await?
        .into_iter()
        .map(|info| ListedSubscription {
            id: info.id,
            origin: info.origin,
            created_at: format_unix_ms(info.created_ms),
        })
        .collect();
    Ok(Json(SubscriptionList { subscriptions }))
}

#[utoipa::path(
    delete,
    path = "/api/push/{userId}/subscriptions/{id}",
    params(("userId" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "deleted, with every push still owed to it"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "no such subscription for this user, or push is off"),
    ),
    tag = "push"
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath((raw_user, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    push_on(&state)?;
    state.store.unsubscribe_push(user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a user wants pushed.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preferences {
    /// Categories never pushed (they still reach open streams and history).
    muted_categories: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/push/{userId}/preferences",
    params(("userId" = String, Path)),
    responses(
        (status = 200, body = Preferences),
        (status = 403, description = "another user's token"),
        (status = 404, description = "push is off"),
    ),
    tag = "push"
)]
pub async fn preferences(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
) -> Result<Json<Preferences>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    push_on(&state)?;
    Ok(Json(Preferences {
        muted_categories: state.store.push_muted(user).await?,
    }))
}

#[utoipa::path(
    put,
    path = "/api/push/{userId}/preferences",
    params(("userId" = String, Path)),
    request_body = Preferences,
    responses(
        (status = 200, body = Preferences, description = "the preferences now: categories sorted, each once"),
        (status = 400, description = "not a list of categories"),
        (status = 403, description = "another user's token; or the herald_token cookie alone from another origin"),
        (status = 404, description = "push is off"),
    ),
    tag = "push"
)]
pub async fn set_preferences(
    State(state): State<AppState>,
    _: SameOriginIfCookie,
    caller: Caller,
    ApiPath(raw_user): ApiPath<String>,
    JsonBody(body): JsonBody<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    let user = user_id(&raw_user)?;
    caller.require_reader_of(&state.settings.auth, &user)?;
    push_on(&state)?;
    if body.muted_categories.len() > MAX_MUTED {
        return Err(ApiError::BadRequest(format!(
            "mutedCategories holds at most {MAX_MUTED} categories"
        )));
    }
    let mut muted = body
        .muted_categories
        .iter()
        .map(|raw| {
            Category::parse(raw)
                .map(|category| category.as_str().to_owned())
                .map_err(|problem| ApiError::BadRequest(format!("mutedCategories: {problem}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    muted.sort();
    muted.dedup();
    state.store.set_push_muted(user, muted.clone()).await?;
    Ok(Json(Preferences {
        muted_categories: muted,
    }))
}

/// Whether a user has a stream open anywhere in the cluster.
#[derive(Serialize, ToSchema)]
pub struct Presence {
    online: bool,
    /// Open streams on every live node.
    streams: usize,
}

#[utoipa::path(
    get,
    path = "/api/presence/{userId}",
    params(("userId" = String, Path)),
    responses(
        (status = 200, body = Presence),
        (status = 401, description = "a publish key is required"),
    ),
    tag = "push"
)]
pub async fn presence(
    State(state): State<AppState>,
    _: Publisher,
    ApiPath(raw_user): ApiPath<String>,
) -> Result<Json<Presence>, ApiError> {
    let user = user_id(&raw_user)?;
    let here = state.hub.streams_of(&user);
    let elsewhere = state.store.presence_elsewhere(&user).await?;
    let streams = here + elsewhere;
    Ok(Json(Presence {
        online: streams > 0,
        streams,
    }))
}
