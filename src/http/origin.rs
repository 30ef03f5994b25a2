//! Cross-site request forgery: a browser attaches the `herald_token` cookie by itself, even to a
//! request another site makes it send. So a request that changes state and whose only
//! credential is that cookie must say where it comes from (`Origin`, or without one
//! `Referer`), and that must be this server's own origin or a `--cors-origin` listed one
//! (docs/protocol.md#auth). A request with an `Authorization` header, or one without the
//! cookie, is not concerned.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, header};
use url::Url;

use crate::app::AppState;
use crate::auth;
use crate::config::CorsOrigins;
use crate::http::error::ApiError;

/// Admits a state-changing request unless its only credential is the cookie and it comes
/// from another origin, or does not say where it comes from.
pub struct SameOriginIfCookie;

impl FromRequestParts<AppState> for SameOriginIfCookie {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let settings = &state.settings;
        // Without subscriber tokens the cookie is no credential at all.
        if settings.auth.tokens.is_none() || !auth::credential_is_ambient(&parts.headers) {
            return Ok(Self);
        }
        let Some(origin) = claimed_origin(&parts.headers) else {
            return Err(ApiError::Forbidden(
                "a change authenticated by cookie must carry an Origin or Referer header".into(),
            ));
        };
        let own = parts
            .headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .or_else(|| parts.uri.authority().map(Authority::as_str));
        if own.is_some_and(|own| is_authority_of(&origin, own))
            || is_listed(&origin, &settings.cors_origins)
        {
            return Ok(Self);
        }
        Err(ApiError::Forbidden(format!(
            "{} may not make changes with this server's cookie",
            origin.origin().ascii_serialization()
        )))
    }
}

/// The origin the request says it comes from: `Origin`, or the origin of `Referer`. An opaque
/// origin (`null`) is none.
fn claimed_origin(headers: &HeaderMap) -> Option<Url> {
    let raw = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))?
        .to_str()
        .ok()?;
    Url::parse(raw)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}

/// Whether `origin` names `authority` (a `Host` header: host and optional port, the port
/// defaulting to that of the origin's scheme).
fn is_authority_of(origin: &Url, authority: &str) -> bool {
    let Ok(authority) = authority.parse::<Authority>() else {
        return false;
    };
    let (Some(host), Some(port)) = (origin.host_str(), origin.port_or_known_default()) else {
        return false;
    };
    authority.host().eq_ignore_ascii_case(host) && authority.port_u16().unwrap_or(port) == port
}

fn is_listed(origin: &Url, listed: &CorsOrigins) -> bool {
    let CorsOrigins::Listed(origins) = listed else {
        return false;
    };
    let origin = origin.origin().ascii_serialization();
    origins.iter().any(|listed| {
        Url::parse(listed).is_ok_and(|url| url.origin().ascii_serialization() == origin)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> Url {
        Url::parse(raw).unwrap()
    }

    #[test]
    fn an_origin_names_the_host_it_was_sent_to_with_default_ports_filled_in() {
        assert!(is_authority_of(&url("http://herald.test"), "herald.test"));
        assert!(is_authority_of(
            &url("http://herald.test"),
            "HERALD.test:80"
        ));
        assert!(is_authority_of(
            &url("https://herald.test"),
            "herald.test:443"
        ));
        assert!(is_authority_of(
            &url("http://127.0.0.1:3000"),
            "127.0.0.1:3000"
        ));
        assert!(is_authority_of(&url("http://[::1]:3000"), "[::1]:3000"));
        for (origin, host) in [
            ("http://herald.test", "herald.test:8080"),
            ("http://evil.test", "herald.test"),
            ("http://herald.test.evil.test", "herald.test"),
            ("http://127.0.0.1:3001", "127.0.0.1:3000"),
            ("https://herald.test", "herald.test:80"),
        ] {
            assert!(!is_authority_of(&url(origin), host), "{origin} for {host}");
        }
    }

    #[test]
    fn the_claimed_origin_is_origin_else_the_referers_and_null_is_none() {
        let mut headers = HeaderMap::new();
        assert!(claimed_origin(&headers).is_none());
        headers.insert(
            header::REFERER,
            "https://app.test/inbox?x=1".parse().unwrap(),
        );
        assert_eq!(
            claimed_origin(&headers).unwrap().host_str(),
            Some("app.test")
        );
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(claimed_origin(&headers).is_none());
        headers.insert(header::ORIGIN, "http://other.test".parse().unwrap());
        assert_eq!(
            claimed_origin(&headers).unwrap().host_str(),
            Some("other.test")
        );
    }

    #[test]
    fn only_listed_origins_are_listed_and_a_star_lists_none() {
        let listed = CorsOrigins::Listed(vec!["https://app.test".into()]);
        assert!(is_listed(&url("https://app.test"), &listed));
        assert!(is_listed(&url("https://app.test:443"), &listed));
        assert!(!is_listed(&url("http://app.test"), &listed));
        assert!(!is_listed(&url("https://app.test:8443"), &listed));
        assert!(!is_listed(&url("https://app.test"), &CorsOrigins::Any));
    }
}
