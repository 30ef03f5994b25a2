//! Extractors that turn raw path, query, body and credentials into domain values, and turn
//! every rejection into the app's own `{"error"}` response.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::UserId;
use crate::http::error::ApiError;

/// The largest request body we read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body; a wrong content type is `415`, an oversized body `413`, bad JSON `400`, a body
/// that does not arrive in time (the body deadline, from when the router took the request)
/// `408`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let read = Bytes::from_request(req, state);
        let deadline = state.settings.deadlines.body;
        let Ok(read) = tokio::time::timeout(deadline, read).await else {
            return Err(ApiError::RequestTimeout);
        };
        let body = match read {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::TooLarge(MAX_BODY_BYTES));
            }
            Err(rejection) => return Err(ApiError::bad_request(rejection.body_text())),
        };
        // Only an object: serde would otherwise fill a struct from an array, by position.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(Self(value)),
            Err(error) if !error.is_data() => {
                Err(ApiError::bad_request("request body is not valid JSON"))
            }
            Err(error) => Err(wrong_shape::<T>(&body, error)),
        }
    }
}

/// The error for a body that is JSON but not of the shape `T` wants, naming the field at
/// fault (`ttl: invalid type: ...`). The path is found by reading the body again, so the
/// common case, a body that fits, pays nothing for it.
fn wrong_shape<T: DeserializeOwned>(body: &[u8], error: serde_json::Error) -> ApiError {
    let mut reader = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut reader) {
        Err(traced) if traced.path().to_string() != "." => {
            let path = traced.path().to_string();
            ApiError::bad_request(format!("{path}: {}", traced.into_inner()))
        }
        _ => ApiError::bad_request(format!("request body has the wrong shape: {error}")),
    }
}

/// `application/json` or any `application/*+json`, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let starts = |prefix: &[u8]| {
        essence
            .get(..prefix.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len()
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    essence.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
}

/// Query parameters; anything unreadable is `400`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => Err(
                ApiError::bad_request(format!("bad query string: {}", error.body_text())),
            ),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// Path parameters as raw strings; anything unreadable (bad percent-encoding) is `400`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => Err(ApiError::bad_request(
                format!("bad path: {}", error.body_text()),
            )),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// Parses a raw `{userId}` path segment.
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(ApiError::BadRequest)
}

/// Who is calling: read from the headers and query once, judged by each handler.
impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::identify(
            &state.settings.auth,
            &parts.headers,
            parts.uri.query(),
        ))
    }
}

/// Admits only publishers (or anyone, when that half is open). It runs before the body is
/// read, so an unauthorised caller learns nothing about validation.
pub struct Publisher;

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = &state.settings.auth;
        Caller::identify(auth, &parts.headers, parts.uri.query()).require_publisher(auth)?;
        Ok(Self)
    }
}

/// Admits whoever may read `/metrics` and `/api/stats`.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = &state.settings.auth;
        Caller::identify(auth, &parts.headers, parts.uri.query()).require_operator(auth)?;
        Ok(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_is_application_json_or_a_json_suffix_in_any_case_parameters_aside() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=1",
            "application/merge-patch+json",
            "APPLICATION/LD+JSON",
        ] {
            assert!(is_json(&with_type(json)), "{json}");
        }
        for other in [
            "text/json",
            "application/jsonx",
            "application/json+xml",
            "application",
            "json",
            "",
            "text/plain; type=application/json",
        ] {
            assert!(!is_json(&with_type(other)), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
