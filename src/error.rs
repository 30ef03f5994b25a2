//! The one error type of the HTTP edge. Every error response, whatever produced it, is
//! `{"error": "<what is wrong>"}` with the status below; causes of 5xx are logged, not sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that failed; carries `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such notification, route or page.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: the body is larger than the limit.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 415: the body is not declared as JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: a per-user or per-client limit; retry after the given seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// 503: this node cannot serve now (full, draining, store down).
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// 500: a fault of ours; the cause is logged and a generic message sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound("no such notification for this user".into()),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Self::Unavailable {
                    message: "the store is unavailable; nothing was stored, try again".into(),
                    retry_after: 1,
                }
            }
            other => Self::Internal(format!("{other:#}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Self::TooMany { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
