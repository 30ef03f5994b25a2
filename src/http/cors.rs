//! CORS on every response (`--cors-origin`, README.md#running-it). tower-http's
//! [`CorsLayer`] decides it. A request with no `Origin` header that is not a preflight
//! (`OPTIONS`) is not a CORS request, and what tower-http adds to its response depends only on
//! the configuration: [`Cors`] asks tower-http for those headers once, at start, and copies
//! them onto such responses, so a server-to-server publish does not pay for a CORS layer built
//! and cloned per request (BENCHMARKS.md, "Issue 16, tenth step").

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use futures::FutureExt;
use futures::future::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{self, AllowOrigin, CorsLayer};

use crate::config::CorsOrigins;

/// The layer: tower-http's for CORS requests, its headers copied for the rest.
#[derive(Clone)]
pub struct Cors {
    shared: Arc<Shared>,
}

struct Shared {
    layer: CorsLayer,
    /// What tower-http adds to the response of a request with no `Origin`.
    plain: PlainHeaders,
}

impl Cors {
    pub fn new(origins: &CorsOrigins) -> Self {
        let layer = tower_http_layer(origins);
        let plain = PlainHeaders::asked_of(&layer);
        Self {
            shared: Arc::new(Shared { layer, plain }),
        }
    }
}

impl<S> Layer<S> for Cors {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> CorsService<S> {
        CorsService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// herald's CORS rules, as tower-http applies them.
fn tower_http_layer(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER]);
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::Listed(list) => layer
            .allow_origin(AllowOrigin::list(
                list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_credentials(true),
    }
}

/// The headers tower-http gives a response to a request without `Origin`, split as it applies
/// them: `Vary` values are appended to the response's own, the others replace any it has.
struct PlainHeaders {
    vary: Vec<HeaderValue>,
    replacing: HeaderMap,
}

impl PlainHeaders {
    /// Runs tower-http's layer once over a service that answers with no headers at all.
    fn asked_of(layer: &CorsLayer) -> Self {
        let bare = tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let probe = Request::get("/")
            .body(Body::empty())
            .expect("a GET of / is a request");
        let mut headers = layer
            .layer(bare)
            .oneshot(probe)
            .now_or_never()
            .expect("tower-http answers a request without Origin at once")
            .unwrap_or_else(|never| match never {})
            .into_parts()
            .0
            .headers;
        let vary = headers.get_all(header::VARY).iter().cloned().collect();
        headers.remove(header::VARY);
        Self {
            vary,
            replacing: headers,
        }
    }

    fn apply(&self, response: &mut Response) {
        let headers = response.headers_mut();
        for value in &self.vary {
            headers.append(header::VARY, value.clone());
        }
        for name in self.replacing.keys() {
            let mut values = self.replacing.get_all(name).iter();
            if let Some(first) = values.next() {
                headers.insert(name.clone(), first.clone());
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// [`Cors`] over one service.
#[derive(Clone)]
pub struct CorsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for CorsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<PlainFuture<S::Future>, cors::ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) || request.method() == Method::OPTIONS {
            // A CORS request or a preflight: tower-http's own layer, over this very service
            // (`call` follows the `poll_ready` it answered, so the ready one is handed on).
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            return Either::Right(self.shared.layer.layer(ready).call(request));
        }
        Either::Left(PlainFuture {
            inner: self.inner.call(request),
            shared: Arc::clone(&self.shared),
        })
    }
}

pin_project! {
    /// The answer to a request that is not CORS, with tower-http's headers for it copied on.
    pub struct PlainFuture<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
    }
}

impl<F> Future for PlainFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        this.shared.plain.apply(&mut response);
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// An inner service that answers with headers CORS also sets, so that what appends and what
    /// replaces shows.
    fn answering()
    -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        tower::service_fn(|request: Request| {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = if request.uri().path() == "/missing" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CREATED
            };
            let headers = response.headers_mut();
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("x-own"),
            );
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            std::future::ready(Ok(response))
        })
    }

    fn request(method: Method, path: &str, origin: Option<&str>) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        builder.body(Body::empty()).unwrap()
    }

    /// Every header of `headers`, by name, each name's values in order.
    fn listed(headers: &HeaderMap) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut names: Vec<&HeaderName> = headers.keys().collect();
        names.sort_by_key(|name| name.as_str());
        names
            .into_iter()
            .map(|name| {
                let values = headers.get_all(name).iter();
                (
                    name.to_string(),
                    values.map(|v| v.as_bytes().to_vec()).collect(),
                )
            })
            .collect()
    }

    async fn answer<S>(service: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let Ok(response) = service.oneshot(request).await;
        response
    }

    #[tokio::test]
    async fn every_request_is_answered_with_the_headers_tower_http_gives_it() {
        let configurations = [
            CorsOrigins::Any,
            CorsOrigins::Listed(vec!["https://app.example".to_owned()]),
        ];
        for origins in &configurations {
            for (method, path, origin) in [
                (Method::POST, "/api/notifications/alice", None),
                (Method::GET, "/events/alice", None),
                (Method::GET, "/missing", None),
                (Method::DELETE, "/api/broadcast", None),
                (Method::OPTIONS, "/api/broadcast", None),
                (
                    Method::POST,
                    "/api/notifications/alice",
                    Some("https://app.example"),
                ),
                (
                    Method::GET,
                    "/events/alice",
                    Some("https://elsewhere.example"),
                ),
                (
                    Method::OPTIONS,
                    "/api/broadcast",
                    Some("https://app.example"),
                ),
            ] {
                let ours = answer(
                    Cors::new(origins).layer(answering()),
                    request(method.clone(), path, origin),
                )
                .await;
                let theirs = answer(
                    tower_http_layer(origins).layer(answering()),
                    request(method.clone(), path, origin),
                )
                .await;
                assert_eq!(ours.status(), theirs.status(), "{method} {path} {origin:?}");
                assert_eq!(
                    listed(ours.headers()),
                    listed(theirs.headers()),
                    "{origins:?}: {method} {path} from {origin:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_request_without_origin_keeps_its_own_vary_and_gets_the_configured_headers() {
        let response = answer(
            Cors::new(&CorsOrigins::Any).layer(answering()),
            request(Method::POST, "/api/notifications/alice", None),
        )
        .await;
        let headers = response.headers();
        let vary: Vec<&[u8]> = headers
            .get_all(header::VARY)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(vary.len(), 2, "{vary:?}");
        assert_eq!(vary[0], b"accept-encoding");
        assert!(
            std::str::from_utf8(vary[1]).unwrap().contains("origin"),
            "{vary:?}"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "retry-after"
        );
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
    }
}
