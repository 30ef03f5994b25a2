//! Web Push: `GET /api/push/public-key`, the key a browser subscribes with
//! (docs/protocol.md#web-push).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/push/public-key", get(public_key))
}

/// The server's VAPID public key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// The uncompressed P-256 point, base64url without padding: a browser's
    /// `applicationServerKey`.
    public_key: String,
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
    let push = state.settings.push.as_ref().ok_or_else(|| {
        ApiError::NotFound("push is off: the server was started without --vapid-key".into())
    })?;
    Ok(Json(PublicKey {
        public_key: push.key.public_key().to_owned(),
    }))
}
