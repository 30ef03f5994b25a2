//! Publishing: the notification JSON, every validation rule of docs/protocol.md#publishing, the
//! body's size and content type, and the user id on every route.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::answers::{assert_error, id_of, keys, page_ids};
use crate::helpers::{TestApp, assert_next_is_marker, padded_body};

#[tokio::test]
async fn a_publish_is_201_with_exactly_the_documented_keys_trimmed_and_info_by_default() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let before = OffsetDateTime::now_utc();

    let (status, plain) = app
        .post_json(
            "/api/notifications/alice",
            &json!({ "title": "  Deploy done \n", "message": "\t all green  " }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(
        keys(&plain),
        ["id", "message", "read", "timestamp", "title", "type"],
        "`link` is omitted when absent"
    );
    assert_eq!(plain["type"], "info");
    assert_eq!(plain["title"], "Deploy done");
    assert_eq!(plain["message"], "all green");
    assert_eq!(plain["read"], false);
    uuid::Uuid::parse_str(id_of(&plain)).expect("the id is a UUID");
    let timestamp = plain["timestamp"].as_str().expect("timestamp");
    assert!(timestamp.ends_with('Z'), "UTC: {timestamp}");
    let at = OffsetDateTime::parse(timestamp, &Rfc3339).expect("RFC 3339");
    assert!(at.offset().is_utc());
    let now = OffsetDateTime::now_utc();
    assert!(
        at >= before - Duration::from_secs(1) && at <= now + Duration::from_secs(1),
        "{timestamp} is not now"
    );

    let (status, linked) = app
        .post_json(
            "/api/notifications/alice",
            &json!({
                "type": "warning",
                "title": "Disk",
                "message": "almost full",
                "link": "https://example.com/disks?id=1#top",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    assert_eq!(
        keys(&linked),
        [
            "id",
            "link",
            "message",
            "read",
            "timestamp",
            "title",
            "type"
        ]
    );
    assert_eq!(linked["type"], "warning");
    assert_eq!(linked["link"], "https://example.com/disks?id=1#top");
    assert_ne!(id_of(&plain), id_of(&linked));

    // The stream carries exactly what was returned, and so does history (newest first).
    let events = stream.next_events(2).await;
    assert_eq!(events[0].event, "notification");
    assert_eq!(events[0].data, plain);
    assert_eq!(events[1].data, linked);
    let page = app.history("alice", "").await;
    assert_eq!(page["notifications"], json!([linked, plain]));
}

#[tokio::test]
async fn every_type_and_every_boundary_length_is_accepted_and_stored_trimmed() {
    let app = TestApp::spawn().await;
    for kind in ["info", "success", "warning", "error"] {
        let (status, stored) = app
            .post_json(
                "/api/notifications/types",
                &json!({ "type": kind, "title": "t", "message": "m" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {stored}");
        assert_eq!(stored["type"], kind);
    }

    let e200 = "é".repeat(200);
    let crab200 = "🦀".repeat(200);
    let x200 = "x".repeat(200);
    let padded200 = format!("  \t{x200}\n ");
    let m4000 = "m".repeat(4000);
    let u4000 = "ü".repeat(4000);
    let padded4000 = format!("\n\n{m4000}   ");
    let cases: Vec<(&str, &str, &str, &str, &str)> = vec![
        // (case, title sent, message sent, title stored, message stored)
        ("200 two-byte characters", &e200, "m", &e200, "m"),
        ("200 four-byte characters", &crab200, "m", &crab200, "m"),
        ("200 characters after trimming", &padded200, "m", &x200, "m"),
        ("a one-character title", " a ", "m", "a", "m"),
        ("4000 characters", "t", &m4000, "t", &m4000),
        ("4000 two-byte characters", "t", &u4000, "t", &u4000),
        ("4000 after trimming", "t", &padded4000, "t", &m4000),
        (
            "text with RTL marks",
            "\u{202e}abc\u{200f}",
            "x\u{0}y",
            "\u{202e}abc\u{200f}",
            "x\u{0}y",
        ),
    ];
    for (case, title, message, want_title, want_message) in cases {
        let (status, stored) = app
            .post_json(
                "/api/notifications/bounds",
                &json!({ "title": title, "message": message }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {stored}");
        assert_eq!(stored["title"], want_title, "{case}");
        assert_eq!(stored["message"], want_message, "{case}");
    }

    for link in [
        "https://example.com/x",
        "http://a.b",
        "https://example.com:8443/a/b?c=d#e",
        "/",
        "/inbox/3?tab=unread#n1",
    ] {
        let (status, stored) = app
            .post_json(
                "/api/notifications/links",
                &json!({ "title": "t", "message": "m", "link": link }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{link}: {stored}");
        assert_eq!(stored["link"], link);
    }
}

/// Publish bodies that break one rule of docs/protocol.md#publishing each, sent as
/// `application/json`: each is a `400`.
#[rustfmt::skip]
const BAD_PUBLISHES: &[(&str, &str)] = &[
    ("no title", r#"{"message":"m"}"#),
    ("no message", r#"{"title":"t"}"#),
    ("an empty object", r#"{}"#),
    ("an empty title", r#"{"title":"","message":"m"}"#),
    ("a blank title", r#"{"title":" \t\n ","message":"m"}"#),
    ("an empty message", r#"{"title":"t","message":""}"#),
    ("a blank message", r#"{"title":"t","message":"\n\n  "}"#),
    ("a null title", r#"{"title":null,"message":"m"}"#),
    ("an unknown type", r#"{"type":"fatal","title":"t","message":"m"}"#),
    ("a type in capitals", r#"{"type":"INFO","title":"t","message":"m"}"#),
    ("an empty type", r#"{"type":"","title":"t","message":"m"}"#),
    ("a // link", r#"{"title":"t","message":"m","link":"//evil.example/x"}"#),
    ("a /\\ link", r#"{"title":"t","message":"m","link":"/\\evil.example"}"#),
    ("a javascript: link", r#"{"title":"t","message":"m","link":"javascript:alert(1)"}"#),
    ("a data: link", r#"{"title":"t","message":"m","link":"data:text/html,<b>x</b>"}"#),
    ("an ftp link", r#"{"title":"t","message":"m","link":"ftp://example.com/f"}"#),
    ("a relative link", r#"{"title":"t","message":"m","link":"inbox/3"}"#),
    ("a link without a host", r#"{"title":"t","message":"m","link":"https://"}"#),
    ("an empty link", r#"{"title":"t","message":"m","link":""}"#),
    ("a link with a space", r#"{"title":"t","message":"m","link":"/a b"}"#),
    ("a numeric title", r#"{"title":5,"message":"m"}"#),
    ("a boolean message", r#"{"title":"t","message":true}"#),
    ("a numeric type", r#"{"type":1,"title":"t","message":"m"}"#),
    ("an object link", r#"{"title":"t","message":"m","link":{"href":"/x"}}"#),
    ("an array title", r#"{"title":["t"],"message":"m"}"#),
    ("a duplicated field", r#"{"title":"t","title":"u","message":"m"}"#),
    ("a string body", r#""title""#),
    ("a null body", "null"),
    ("a number body", "42"),
    ("truncated JSON", r#"{"title":"t""#),
    ("a trailing comma", r#"{"title":"t","message":"m",}"#),
    ("not JSON at all", "title=t&message=m"),
    ("an empty body", ""),
    ("a lone surrogate escape", r#"{"title":"\ud800","message":"m"}"#),
    ("a raw control character", "{\"title\":\"a\u{1}b\",\"message\":\"m\"}"),
    ("JSON then garbage", r#"{"title":"t","message":"m"} x"#),
];

#[tokio::test]
async fn every_invalid_publish_is_refused_with_an_error_and_nothing_is_stored_or_sent() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let path = "/api/notifications/alice";
    let json = Some("application/json");
    for &(case, body) in BAD_PUBLISHES {
        let (status, answer) = app.post_bytes(path, json, body).await;
        assert_error(case, StatusCode::BAD_REQUEST, status, &answer);
    }
    let too_long: [(&str, Value); 3] = [
        (
            "a title of 201",
            json!({ "title": "é".repeat(201), "message": "m" }),
        ),
        (
            "201 after trimming",
            json!({ "title": format!(" {} ", "x".repeat(201)), "message": "m" }),
        ),
        (
            "a message of 4001",
            json!({ "title": "t", "message": "m".repeat(4001) }),
        ),
    ];
    for (case, body) in &too_long {
        let (status, answer) = app.post_json(path, body).await;
        assert_error(case, StatusCode::BAD_REQUEST, status, &answer);
    }
    let invalid_utf8 = b"{\"title\":\"\xff\xfe\",\"message\":\"m\"}".to_vec();
    let (status, answer) = app.post_bytes(path, json, invalid_utf8).await;
    assert_error("invalid UTF-8", StatusCode::BAD_REQUEST, status, &answer);
    let valid = r#"{"title":"t","message":"m"}"#;
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
    ] {
        let (status, answer) = app.post_bytes(path, content_type, valid).await;
        let case = format!("Content-Type {content_type:?}");
        assert_error(&case, StatusCode::UNSUPPORTED_MEDIA_TYPE, status, &answer);
    }

    let page = app.history("alice", "").await;
    assert_eq!((&page["total"], &page["count"]), (&json!(0), &json!(0)));
    assert_eq!(
        app.stats().await["eventsBuffered"],
        0,
        "nothing reached the log"
    );
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

/// docs/protocol.md#errors: the body is a JSON object; an array is bad input (400) and changes
/// nothing. Today serde's derived `Deserialize` also reads a struct from a sequence, so a bare
/// array is taken as the fields in declaration order: `["warning","t","m",null]` publishes,
/// `["t","m"]` broadcasts.
#[tokio::test]
async fn a_json_array_body_is_400_and_not_read_as_the_fields_in_declaration_order() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    for (path, body) in [
        (
            "/api/notifications/alice",
            json!(["warning", "t", "m", null]),
        ),
        ("/api/notifications/alice", json!(["info", "t", "m", "/x"])),
        (
            "/api/notifications/alice",
            json!([{ "title": "t", "message": "m" }]),
        ),
        ("/api/broadcast", json!(["t", "m"])),
    ] {
        let (status, answer) = app.post_json(path, &body).await;
        assert_error(
            &format!("{path} {body}"),
            StatusCode::BAD_REQUEST,
            status,
            &answer,
        );
    }
    assert_eq!(app.history("alice", "").await["total"], 0);
    assert_eq!(app.stats().await["eventsBuffered"], 0);
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_413() {
    let app = TestApp::spawn().await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let (status, stored) = app
        .post_bytes(
            "/api/notifications/alice",
            Some("application/json"),
            padded_body(64 * 1024),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stream.next_event().await.data, stored);

    let (status, answer) = app
        .post_bytes(
            "/api/notifications/alice",
            Some("application/json"),
            padded_body(64 * 1024 + 1),
        )
        .await;
    assert_error("64 KiB + 1", StatusCode::PAYLOAD_TOO_LARGE, status, &answer);

    // A long string inside a body that says nothing of its length up front (chunked).
    let huge = format!(r#"{{"title":"t","message":"{}"}}"#, "m".repeat(200 * 1024));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(16 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let (status, answer) = app
        .post_bytes(
            "/api/notifications/alice",
            Some("application/json"),
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_error(
        "200 KiB chunked",
        StatusCode::PAYLOAD_TOO_LARGE,
        status,
        &answer,
    );

    assert_eq!(app.history("alice", "").await["total"], 1);
    assert_eq!(app.stats().await["eventsBuffered"], 1);
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

#[tokio::test]
async fn a_bad_user_id_is_400_on_every_route_even_where_a_url_parser_would_normalise_it() {
    let app = TestApp::spawn().await;
    let body = br#"{"title":"t","message":"m"}"#;
    let too_long = "x".repeat(129);
    // Sent byte for byte: `%2E` and `..` would otherwise be resolved away by the client.
    let bad: Vec<&str> = vec![
        ".", "..", "%2E", "%2e", "%2E%2E", "%2e.", "me", "%6De", "%6D%65", "a%20b", "a%2Fb",
        "a%5Cb", "%C3%A9", "a%00b", "a%0Ab", "a!b", "a:b", "a%FFb", "a%", &too_long,
    ];
    for user in &bad {
        let (status, answer) = app
            .raw_request(
                "POST",
                &format!("/api/notifications/{user}"),
                Some("application/json"),
                body,
            )
            .await;
        assert_error(
            &format!("publish {user}"),
            StatusCode::BAD_REQUEST,
            status,
            &answer,
        );
        let reads: [(&str, String); 4] = [
            ("GET", format!("/api/notifications/{user}")),
            ("POST", format!("/api/notifications/{user}/read-all")),
            ("POST", format!("/api/notifications/{user}/some-id/read")),
            ("GET", format!("/events/{user}")),
        ];
        for (method, target) in reads {
            let (status, answer) = app.raw_request(method, &target, None, b"").await;
            assert_error(
                &format!("{method} {target}"),
                StatusCode::BAD_REQUEST,
                status,
                &answer,
            );
        }
    }
    assert_eq!(app.stats().await["eventsBuffered"], 0, "nothing was stored");

    // The edges of the alphabet and of the length are fine.
    let longest = "x".repeat(128);
    for user in ["A.b_c~d@e+f-g", "...", ".a", "a..", "0", &longest] {
        let (status, stored) = app
            .raw_request(
                "POST",
                &format!("/api/notifications/{user}"),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}: {stored}");
        let page = app.history(user, "").await;
        assert_eq!(page_ids(&page), [id_of(&stored)], "{user}");
    }
    assert_eq!(app.stats().await["eventsBuffered"], 6);
}
