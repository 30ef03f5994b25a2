//! One log line per request, at `debug`, with secrets taken out: the value of any `token`
//! query parameter is replaced, and headers (which carry keys and cookies) are never logged.
//! A 5xx's [`HiddenCause`] is logged here, always, and taken off the response.

use std::time::Instant;

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;

use crate::http::error::HiddenCause;

/// What replaces a secret in a log line.
pub const REDACTED: &str = "[redacted]";

pub async fn log_request(request: Request, next: Next) -> Response {
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let method = request.method().clone();
    // Cheap: the parts of a `Uri` are shared, not copied.
    let uri = request.uri().clone();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    if let Some(HiddenCause(cause)) = response.extensions_mut().remove::<HiddenCause>() {
        if status.is_server_error() && status.as_u16() != 503 {
            tracing::error!(%method, path = uri.path(), status = status.as_u16(), %cause, "request failed");
        } else {
            tracing::warn!(%method, path = uri.path(), status = status.as_u16(), %cause, "request refused");
        }
    }
    if debug {
        tracing::debug!(
            %method,
            target = %redacted_target(&uri),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
    response
}

/// The path and query of `uri`, with every `token=` value redacted.
pub fn redacted_target(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            // The name is judged decoded, so `%74oken=` and `token%3D...` are caught too.
            if is_secret(name) {
                format!("{}={REDACTED}", name.split("%3D").next().unwrap_or(name))
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn is_secret(name: &str) -> bool {
    // Decoded, `token%3Dabc` reads `token=abc`: judge only what precedes the `=`.
    let decoded = url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = decoded.split('=').next().unwrap_or_default();
    matches!(name, "token" | "access_token" | "key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_redacted_and_everything_else_kept() {
        let uri: Uri = "/events/alice?lastEventId=42&token=eyJ.secret.sig&x=1"
            .parse()
            .unwrap();
        assert_eq!(
            redacted_target(&uri),
            "/events/alice?lastEventId=42&token=[redacted]&x=1"
        );
        let encoded: Uri = "/events/a?%74oken=secret&TOKEN=again".parse().unwrap();
        let line = redacted_target(&encoded);
        assert!(
            !line.contains("secret") && !line.contains("again"),
            "{line}"
        );
        let smuggled: Uri = "/events/a?token%3Deyj.secret.sig&x=1".parse().unwrap();
        let line = redacted_target(&smuggled);
        assert!(!line.contains("secret"), "{line}");
        assert_eq!(redacted_target(&"/healthz".parse().unwrap()), "/healthz");
    }
}
