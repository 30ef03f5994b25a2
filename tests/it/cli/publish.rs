//! `herald publish` with the lifecycle's fields: `--data`, `--category`, `--ttl`,
//! `--expires-at` and `--to`; and the mistakes it refuses before sending anything.

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::offset;
use time::{Duration, OffsetDateTime};

use crate::helpers::TestApp;
use crate::helpers::command::{Herald, refusal_line};

/// `herald publish ARGS --server URL` to completion.
async fn publish(app: &TestApp, args: &[&str]) -> crate::helpers::command::Finished {
    let mut all = vec!["publish"];
    all.extend_from_slice(args);
    all.extend(["--server", &app.url]);
    Herald::run(&all).await
}

/// The notification JSON a plain `--title T --message M` publish gets back, with the `id` and
/// `timestamp` the server gave it, plus `extra` fields.
fn expected(printed: &Value, title: &str, message: &str, extra: Value) -> Value {
    let mut expected = json!({
        "id": printed["id"],
        "type": "info",
        "title": title,
        "message": message,
        "timestamp": printed["timestamp"],
        "read": false,
    });
    for (key, value) in extra.as_object().expect("an object") {
        expected[key] = value.clone();
    }
    expected
}

fn parse_time(text: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(text.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn publish_with_data_and_category_prints_them_and_the_data_is_kept_byte_for_byte() {
    let app = TestApp::spawn().await;
    // Keys out of order and numbers a re-encoding would round: they must come back as written.
    let data = r#"{"order":17,"items":["a","b"],"price":1.10,"big":12345678901234567890123}"#;
    let finished = publish(
        &app,
        &[
            "alice",
            "--title",
            "Shipped",
            "--message",
            "2 items",
            "--data",
            data,
            "--category",
            "orders.shipping",
        ],
    )
    .await;
    let printed = finished.printed_json();
    let data_value: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        printed,
        expected(
            &printed,
            "Shipped",
            "2 items",
            json!({ "data": data_value, "category": "orders.shipping" })
        )
    );
    assert!(
        finished.stdout[0].contains(&format!(r#""data":{data}"#)),
        "data printed as given: {}",
        finished.stdout[0]
    );
    let history = app.history("alice", "").await;
    assert_eq!(history["notifications"], json!([printed]));
}

#[tokio::test]
async fn publish_with_ttl_expires_that_many_seconds_after_its_timestamp() {
    let app = TestApp::spawn().await;
    let finished = publish(
        &app,
        &[
            "alice",
            "--title",
            "Code",
            "--message",
            "123456",
            "--ttl",
            "1h 30s",
        ],
    )
    .await;
    let printed = finished.printed_json();
    assert_eq!(
        printed,
        expected(
            &printed,
            "Code",
            "123456",
            json!({ "expiresAt": printed["expiresAt"] })
        )
    );
    let lifetime = parse_time(&printed["expiresAt"]) - parse_time(&printed["timestamp"]);
    assert!(
        (lifetime - Duration::seconds(3630)).abs() <= Duration::seconds(1),
        "expires {lifetime} after its timestamp"
    );
}

#[tokio::test]
async fn publish_with_expires_at_in_any_offset_expires_at_that_instant_in_utc() {
    let app = TestApp::spawn().await;
    let expiry = (OffsetDateTime::now_utc() + Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap();
    let given = expiry.to_offset(offset!(+2)).format(&Rfc3339).unwrap();
    let finished = publish(
        &app,
        &[
            "alice",
            "--title",
            "Sale",
            "--message",
            "ends soon",
            "--expires-at",
            &given,
        ],
    )
    .await;
    let printed = finished.printed_json();
    let in_utc = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        expiry.year(),
        u8::from(expiry.month()),
        expiry.day(),
        expiry.hour(),
        expiry.minute(),
        expiry.second()
    );
    assert_eq!(
        printed,
        expected(
            &printed,
            "Sale",
            "ends soon",
            json!({ "expiresAt": in_utc })
        )
    );
}

#[tokio::test]
async fn publish_to_several_users_prints_each_users_id_in_the_order_given() {
    let app = TestApp::spawn().await;
    let finished = publish(
        &app,
        &[
            "--to",
            "bob,alice",
            "--title",
            "Standup",
            "--message",
            "in 5 min",
            "--category",
            "team",
        ],
    )
    .await;
    let printed = finished.printed_json();
    let ids: Vec<&str> = printed["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|sent| sent["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        printed,
        json!({ "notifications": [
            { "userId": "bob", "id": ids[0] },
            { "userId": "alice", "id": ids[1] },
        ] })
    );
    assert_ne!(ids[0], ids[1], "each user gets a notification of their own");
    for (user, id) in [("bob", ids[0]), ("alice", ids[1])] {
        let history = app.history(user, "").await;
        let stored = &history["notifications"][0];
        assert_eq!(history["total"], 1, "{user}");
        assert_eq!(
            *stored,
            expected(stored, "Standup", "in 5 min", json!({ "category": "team" })),
            "{user}"
        );
        assert_eq!(stored["id"], id, "{user}");
    }
}

#[tokio::test]
async fn publish_to_a_list_with_a_bad_user_id_fails_with_the_servers_message_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let the_server_says = refusal_line(app.client.post(app.url("/api/notifications")).json(
        &json!({ "users": ["alice", "not valid!"], "type": "info", "title": "t", "message": "m" }),
    ))
    .await;
    assert!(
        the_server_says.starts_with("herald: server answered 400 Bad Request: ")
            && the_server_says.contains("users"),
        "{the_server_says}"
    );
    publish(
        &app,
        &["--to", "alice,not valid!", "--title", "t", "--message", "m"],
    )
    .await
    .assert_failed_with(&the_server_says);
    assert_eq!(app.history_total("alice").await, 0, "all or nothing");
}

#[tokio::test]
async fn publish_refuses_bad_flags_with_one_line_before_sending_anything() {
    let app = TestApp::spawn().await;
    let cases: [(&[&str], &str); 7] = [
        (
            &["alice", "--data", "[1]"],
            r#"herald: invalid value '[1]' for '--data <JSON>': must be a JSON object, e.g. {"order":17}"#,
        ),
        (
            &["alice", "--data", "{oops"],
            "herald: invalid value '{oops' for '--data <JSON>': not JSON (key must be a string at line 1 column 2)",
        ),
        (
            &[
                "alice",
                "--ttl",
                "1h",
                "--expires-at",
                "2030-01-01T00:00:00Z",
            ],
            "herald: the argument '--ttl <DURATION>' cannot be used with '--expires-at <TIME>'",
        ),
        (
            &["alice", "--ttl", "1500ms"],
            "herald: invalid value '1500ms' for '--ttl <DURATION>': must be whole seconds (e.g. 90s, 15m, 1h)",
        ),
        (
            &["alice", "--expires-at", "tomorrow"],
            "herald: invalid value 'tomorrow' for '--expires-at <TIME>': the 'year' component could not be parsed (expected RFC 3339, e.g. 2026-12-06T10:00:00Z)",
        ),
        (
            &["alice", "--to", "bob"],
            "herald: the argument '[USER_ID]' cannot be used with '--to <USER_ID,...>'",
        ),
        (
            &[],
            "herald: the following required arguments were not provided: <USER_ID|--to <USER_ID,...>>",
        ),
    ];
    for (flags, line) in cases {
        let mut args = flags.to_vec();
        args.extend(["--title", "t", "--message", "m"]);
        publish(&app, &args).await.assert_usage_error(line);
    }
    assert_eq!(app.history_total("alice").await, 0, "nothing was sent");
    assert_eq!(app.history_total("bob").await, 0, "nothing was sent");
}

#[tokio::test]
async fn publish_with_a_server_side_fault_in_a_new_field_names_the_field() {
    let app = TestApp::spawn().await;
    let cases: [(&[&str], &str); 3] = [
        (&["--category", "Not Lowercase"], "category"),
        (&["--ttl", "0s"], "ttl"),
        (&["--expires-at", "2000-01-01T00:00:00Z"], "expiresAt"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["alice", "--title", "t", "--message", "m"];
        args.extend_from_slice(flags);
        publish(&app, &args)
            .await
            .assert_failed_saying(&["server answered 400 Bad Request", named]);
    }
    assert_eq!(app.history_total("alice").await, 0, "nothing was stored");
}
