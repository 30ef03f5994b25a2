//! The browser client served by the binary: `/herald.js` (ES module), `/herald.global.js`
//! (classic script), `/herald.d.ts` and the service worker `/herald-sw.js`, with their content
//! types, revalidation, and no auth needed even when both halves of auth are on.

use std::sync::Arc;

use herald::auth::{PublishKeys, TokenVerifier};
use reqwest::StatusCode;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, ORIGIN,
};

use crate::helpers::TestApp;

/// A server on which anonymous callers may read no notifications and open no streams.
async fn spawn_locked() -> TestApp {
    TestApp::spawn_with(|s| {
        s.auth.tokens = Some(Arc::new(TokenVerifier::hs256(
            b"assets-test-secret-0123456789",
        )));
        s.auth.publish_keys = Some(Arc::new(PublishKeys::new(&["assets-test-key"])));
    })
    .await
}

#[tokio::test]
async fn the_client_files_are_served_without_credentials_even_with_auth_on() {
    let app = spawn_locked().await;
    let locked = app
        .client
        .get(app.url("/events/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED, "auth is on");

    let cases = [
        ("/herald.js", "text/javascript; charset=utf-8"),
        ("/herald.global.js", "text/javascript; charset=utf-8"),
        ("/herald.d.ts", "application/typescript; charset=utf-8"),
        ("/herald-sw.js", "text/javascript; charset=utf-8"),
    ];
    let mut bodies = Vec::new();
    for (path, content_type) in cases {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
        assert_eq!(headers[CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key(ETAG), "{path}");
        bodies.push(response.text().await.unwrap());
    }
    let [module, classic, types, worker] = <[String; 4]>::try_from(bodies).unwrap();
    assert!(module.contains(
        "\nexport const { subscribe, SseParser, HeraldError, backoffDelay, enablePush, disablePush, pushStatus } = Herald;"
    ));
    assert!(
        module.starts_with(&classic),
        "the classic script is the module's head"
    );
    assert!(classic.contains("var Herald = "));
    assert!(!classic.lines().any(|line| line.starts_with("export ")));
    assert!(types.contains("export function subscribe(options: SubscribeOptions): Subscription;"));
    for listener in ["'push'", "'notificationclick'", "'pushsubscriptionchange'"] {
        assert!(
            worker.contains(&format!("self.addEventListener({listener},")),
            "the service worker handles {listener}"
        );
    }
}

#[tokio::test]
async fn an_unchanged_client_revalidates_with_304_and_no_body() {
    let app = TestApp::spawn().await;
    let first = app.client.get(app.url("/herald.js")).send().await.unwrap();
    let etag = first.headers()[ETAG].clone();
    let again = app
        .client
        .get(app.url("/herald.js"))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert_eq!(again.text().await.unwrap(), "");
    let stale = app
        .client
        .get(app.url("/herald.js"))
        .header(IF_NONE_MATCH, "\"an-older-build\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_web_app_on_another_origin_may_import_the_module() {
    // Module scripts are fetched with CORS, so the default `--cors-origin *` must cover them.
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/herald.js"))
        .header(ORIGIN, "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}
