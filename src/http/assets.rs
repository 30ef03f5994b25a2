//! The browser client, embedded in the binary: `/herald.js` (an ES module), `/herald.global.js`
//! (the same code as a classic script that sets `window.Herald`), `/herald.d.ts` (its types) and
//! `/herald-sw.js` (the service worker that shows pushed notifications,
//! docs/protocol.md#web-push). Public even with auth on: they hold no data, and a page needs
//! them before it has a token.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// The client module, as written in `web/herald.js`.
const CLIENT_MODULE: &str = include_str!("../../web/herald.js");
/// Its type declarations.
const CLIENT_TYPES: &str = include_str!("../../web/herald.d.ts");
/// The service worker, as written in `web/herald-sw.js`. Served from the root so that its scope
/// is the whole site (a worker controls only paths under its own).
const SERVICE_WORKER: &str = include_str!("../../web/herald-sw.js");
/// Where the module's `export` lines start; the classic script is everything before it.
const EXPORTS_MARKER: &str = "\n// ---- ES module exports";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TYPESCRIPT: &str = "application/typescript; charset=utf-8";

/// One file as served: its body, type and a validator (computed once, on first use).
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header");
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// The body, or `304` when the client already holds this version. `no-cache` makes every
    /// use revalidate, so a new binary's client is picked up at once and an unchanged one
    /// costs no body.
    fn respond(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == self.etag.as_bytes())
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            self.body.into_response()
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

static MODULE: LazyLock<Asset> = LazyLock::new(|| Asset::new(CLIENT_MODULE, JAVASCRIPT));
static CLASSIC: LazyLock<Asset> = LazyLock::new(|| Asset::new(classic_script(), JAVASCRIPT));
static TYPES: LazyLock<Asset> = LazyLock::new(|| Asset::new(CLIENT_TYPES, TYPESCRIPT));
static WORKER: LazyLock<Asset> = LazyLock::new(|| Asset::new(SERVICE_WORKER, JAVASCRIPT));

/// The module without its `export` lines: a classic script whose top-level `var Herald`
/// becomes `window.Herald`.
fn classic_script() -> &'static str {
    CLIENT_MODULE
        .split_once(EXPORTS_MARKER)
        .map_or(CLIENT_MODULE, |(script, _)| script)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/herald.js", get(module))
        .route("/herald.global.js", get(classic))
        .route("/herald.d.ts", get(types))
        .route("/herald-sw.js", get(worker))
}

async fn module(headers: HeaderMap) -> Response {
    let mut response = MODULE.respond(&headers);
    // Where TypeScript-aware loaders (Deno, some bundlers) find the types of this module.
    response.headers_mut().insert(
        "x-typescript-types",
        HeaderValue::from_static("/herald.d.ts"),
    );
    response
}

async fn classic(headers: HeaderMap) -> Response {
    CLASSIC.respond(&headers)
}

async fn types(headers: HeaderMap) -> Response {
    TYPES.respond(&headers)
}

async fn worker(headers: HeaderMap) -> Response {
    WORKER.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_script_is_the_module_without_its_exports() {
        let script = classic_script();
        assert!(CLIENT_MODULE.contains(EXPORTS_MARKER));
        assert!(script.len() < CLIENT_MODULE.len());
        assert!(CLIENT_MODULE.starts_with(script));
        assert!(script.contains("var Herald = "));
        assert!(
            !script
                .lines()
                .any(|line| line.trim_start().starts_with("export ")),
            "a classic script cannot hold an export statement"
        );
    }

    #[test]
    fn a_matching_etag_gets_304_and_any_other_the_body() {
        let asset = Asset::new("console.log(1)", JAVASCRIPT);
        let mut request = HeaderMap::new();
        assert_eq!(asset.respond(&request).status(), StatusCode::OK);
        request.insert(header::IF_NONE_MATCH, asset.etag.clone());
        let response = asset.respond(&request);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], asset.etag);
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset.respond(&request).status(), StatusCode::OK);
    }
}
