//! One span and one log line per request, at `debug`, with secrets taken out: the value of
//! any `token` query parameter is replaced, and headers (which carry keys and cookies) are never
//! logged. A 5xx's [`HiddenCause`] is logged here, always, and taken off the response. A layer
//! of its own rather than tower-http's trace layer and a middleware function: those cost a
//! publish more than the rest of its HTTP handling (BENCHMARKS.md, "Issue 16, tenth step").

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::http::error::HiddenCause;

/// What replaces a secret in a log line.
pub const REDACTED: &str = "[redacted]";

/// The layer: every request in a `request` span naming its method and path (never its query,
/// which may carry a token), and logged when answered.
#[derive(Clone, Copy, Default)]
pub struct AccessLog;

impl<S> Layer<S> for AccessLog {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> AccessLogService<S> {
        AccessLogService { inner }
    }
}

/// [`AccessLog`] over one service.
#[derive(Clone)]
pub struct AccessLogService<S> {
    inner: S,
}

impl<S> Service<Request> for AccessLogService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = tracing::debug_span!("request", method = %request.method(), path = %request.uri().path());
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let method = request.method().clone();
        // The clone shares the target's bytes (making them shareable allocates once); kept for
        // the line a 5xx's cause gets even when `debug` is off.
        let uri = request.uri().clone();
        let inner = span.in_scope(|| self.inner.call(request));
        Logged {
            inner: inner.instrument(span),
            method,
            uri,
            started,
        }
    }
}

pin_project! {
    /// A request's answer, logged as it comes.
    pub struct Logged<F> {
        #[pin]
        inner: Instrumented<F>,
        method: Method,
        uri: Uri,
        // When the request came, if `debug` lines are written.
        started: Option<Instant>,
    }
}

impl<F> Future for Logged<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = ready!(this.inner.as_mut().poll(cx));
        let _entered = this.inner.span().enter();
        log(this.method, this.uri, *this.started, &mut response);
        Poll::Ready(Ok(response))
    }
}

fn log(method: &Method, uri: &Uri, started: Option<Instant>, response: &mut Response) {
    let status = response.status();
    if let Some(HiddenCause(cause)) = response.extensions_mut().remove::<HiddenCause>() {
        if status.is_server_error() && status.as_u16() != 503 {
            tracing::error!(%method, path = uri.path(), status = status.as_u16(), %cause, "request failed");
        } else {
            tracing::warn!(%method, path = uri.path(), status = status.as_u16(), %cause, "request refused");
        }
    }
    if let Some(started) = started {
        tracing::debug!(
            %method,
            target = %redacted_target(uri),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
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
