//! The one error type of the HTTP edge. Every error response, whatever produced it, is
//! `{"error": "<what is wrong>"}` with the status below (docs/protocol.md#errors). The cause of
//! a 5xx is never sent: it rides on the response as a [`HiddenCause`] for the access log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Denied;
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
    /// 408: the request (its head or its body) did not arrive in time; the connection closes.
    #[error("the request took too long to arrive")]
    RequestTimeout,
    /// 409: the request contradicts what is stored.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the limit.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 431: the request head is larger than 16 KiB or has too many fields; the connection
    /// closes.
    #[error("the request head is too large")]
    HeadTooLarge,
    /// 415: the body is not declared as JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: a per-user or per-client limit; retry after the given seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// 503: this node cannot serve now (full, draining); retry after the given seconds.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// 503: the store could not take the request; nothing was stored. The cause is logged.
    #[error("the store is unavailable; nothing was stored, try again")]
    StoreUnavailable(String),
    /// 500: a fault of ours; the cause is logged and a generic message sent.
    #[error("internal error")]
    Internal(String),
}

/// The cause of a 5xx, for the access log to write ([`crate::http::access_log`]); it never
/// reaches the client.
#[derive(Debug, Clone)]
pub struct HiddenCause(pub String);

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
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooMany { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::StoreUnavailable(_) => Some(1),
            _ => None,
        }
    }

    fn hidden_cause(&self) -> Option<&str> {
        match self {
            Self::StoreUnavailable(cause) | Self::Internal(cause) => Some(cause),
            _ => None,
        }
    }
}

/// The one place a store failure becomes a status.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::NotFound(what.to_owned()),
            StoreError::Conflict(cause) => Self::Conflict(format!("conflict: {cause}")),
            StoreError::Unavailable(cause) => Self::StoreUnavailable(cause),
            corrupt @ StoreError::Corrupt(_) => Self::Internal(corrupt.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthorized(reason) => Self::Unauthorized(reason),
            Denied::Forbidden(reason) => Self::Forbidden(reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        if matches!(self, Self::RequestTimeout | Self::HeadTooLarge) {
            // What is left of the request cannot be told from a next one.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(cause) = self.hidden_cause() {
            response
                .extensions_mut()
                .insert(HiddenCause(cause.to_owned()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_failure_has_one_status_and_5xx_causes_stay_off_the_wire() {
        let cases = [
            (
                StoreError::UNKNOWN_NOTIFICATION,
                StatusCode::NOT_FOUND,
                None,
            ),
            (
                StoreError::Unavailable("disk full".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("disk full"),
            ),
            (
                StoreError::Corrupt("bad json".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("bad json"),
            ),
            (
                StoreError::Conflict("unique".into()),
                StatusCode::CONFLICT,
                None,
            ),
        ];
        for (error, status, hidden) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status(), status);
            let sent = api.to_string();
            let response = api.into_response();
            let cause = response.extensions().get::<HiddenCause>().map(|c| &c.0);
            match hidden {
                Some(text) => {
                    assert!(cause.is_some_and(|c| c.contains(text)), "{cause:?}");
                    assert!(!sent.contains(text), "{sent}");
                }
                None => assert!(cause.is_none()),
            }
        }
    }
}
