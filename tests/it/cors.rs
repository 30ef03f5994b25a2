//! docs/protocol.md#auth, "From another origin" (`--cors-origin`, README.md#running-it): listed
//! origins may call with credentials (a cookie-authenticated stream works from them), other origins
//! get no grant, and the default `*` never allows credentials.

use herald::config::CorsOrigins;
use reqwest::StatusCode;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, COOKIE, HeaderMap, ORIGIN,
};

use crate::helpers::answers::{header, header_items};
use crate::helpers::auth::{spawn_secured, token_for};
use crate::helpers::{SseClient, TestApp, send};

const APP_ORIGIN: &str = "https://app.example";

/// A [`spawn_secured`] server that lists [`APP_ORIGIN`].
async fn spawn_listing_app_origin() -> TestApp {
    spawn_secured(|s| s.cors_origins = CorsOrigins::Listed(vec![APP_ORIGIN.to_owned()])).await
}

#[tokio::test]
async fn a_listed_origin_gets_its_own_origin_back_with_credentials() {
    let app = spawn_listing_app_origin().await;
    let granted = app
        .preflight(
            APP_ORIGIN,
            "POST",
            "/api/notifications/alice",
            "authorization,content-type,idempotency-key",
        )
        .await;
    assert_eq!(
        header(&granted, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        header(&granted, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        Some("true")
    );
    assert!(header_items(&granted, ACCESS_CONTROL_ALLOW_METHODS).contains(&"post".to_owned()));
    let allowed = header_items(&granted, ACCESS_CONTROL_ALLOW_HEADERS);
    for wanted in ["authorization", "content-type", "idempotency-key"] {
        assert!(
            allowed.contains(&wanted.to_owned()),
            "{wanted}: {allowed:?}"
        );
    }
    // A fetch-based SSE client sends Last-Event-ID itself.
    let stream_preflight = app
        .preflight(APP_ORIGIN, "GET", "/events/alice", "last-event-id")
        .await;
    assert!(
        header_items(&stream_preflight, ACCESS_CONTROL_ALLOW_HEADERS)
            .contains(&"last-event-id".to_owned())
    );

    let response = send(
        reqwest::Client::new()
            .get(app.url("/healthz"))
            .header(ORIGIN, APP_ORIGIN),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        header(response.headers(), &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        Some("true")
    );
    // A refusal is readable by the page too, so it can tell "log in again" from "offline".
    let refused = send(
        reqwest::Client::new()
            .get(app.url("/api/notifications/alice"))
            .header(ORIGIN, APP_ORIGIN),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(refused.headers(), &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
}

#[tokio::test]
async fn a_cookie_authenticated_stream_from_a_listed_origin_receives_events() {
    let app = spawn_listing_app_origin().await;
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, APP_ORIGIN.parse().unwrap());
    let cookie = format!("herald_token={}", token_for("alice", 3600));
    headers.insert(COOKIE, cookie.parse().unwrap());
    let browser = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let mut stream = SseClient::try_open(&browser, &app.url("/events/alice"), None).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(
        header(&stream.headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        header(&stream.headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        Some("true")
    );
    stream.expect_connected().await;
    let sent = app.publish("alice", "across origins").await;
    let got = stream.next_event().await;
    assert_eq!((got.event.as_str(), got.data), ("notification", sent));
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_allow_origin() {
    let app = spawn_listing_app_origin().await;
    let other = "https://evil.example";
    let refused = app
        .preflight(other, "POST", "/api/notifications/alice", "authorization")
        .await;
    assert_eq!(header(&refused, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
    let response = send(
        reqwest::Client::new()
            .get(app.url("/healthz"))
            .header(ORIGIN, other),
    )
    .await;
    assert_eq!(
        header(response.headers(), &ACCESS_CONTROL_ALLOW_ORIGIN),
        None
    );
    // Nor does a near miss: origins compare exactly.
    let near = send(
        reqwest::Client::new()
            .get(app.url("/healthz"))
            .header(ORIGIN, "https://app.example.evil.example"),
    )
    .await;
    assert_eq!(header(near.headers(), &ACCESS_CONTROL_ALLOW_ORIGIN), None);
}

#[tokio::test]
async fn the_default_star_allows_any_origin_and_never_credentials() {
    let app = TestApp::spawn().await;
    let granted = app
        .preflight(
            APP_ORIGIN,
            "POST",
            "/api/notifications/alice",
            "authorization,content-type",
        )
        .await;
    assert_eq!(header(&granted, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
    assert_eq!(header(&granted, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);

    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, APP_ORIGIN.parse().unwrap());
    headers.insert(COOKIE, "herald_token=whatever".parse().unwrap());
    let browser = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let mut stream = SseClient::try_open(&browser, &app.url("/events/alice"), None).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(
        header(&stream.headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("*")
    );
    assert_eq!(
        header(&stream.headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        None
    );
    stream.expect_connected().await;
    let response = send(browser.get(app.url("/api/stats"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("*")
    );
    assert_eq!(
        header(response.headers(), &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        None
    );
}
