//! `herald update`, `delete` and `archive` against a real server: what each prints, what the
//! user's history and open streams then show, who may run which, and the refusals.

use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::auth::{PUBLISH_KEY, client_with, spawn_secured, token_for};
use crate::helpers::command::{Finished, Herald, refusal_line};

/// `herald COMMAND ARGS --server URL` to completion.
async fn herald(app: &TestApp, command: &str, args: &[&str]) -> Finished {
    let mut all = vec![command];
    all.extend_from_slice(args);
    all.extend(["--server", &app.url]);
    Herald::run(&all).await
}

/// Publishes a notification for alice with every optional field, asserting `201`.
async fn publish_full(app: &TestApp) -> Value {
    app.publish_body(
        "alice",
        &json!({
            "type": "warning",
            "title": "Build running",
            "message": "step 3 of 5",
            "link": "/builds/7",
            "data": { "build": 7 },
            "category": "ci",
        }),
    )
    .await
}

fn id_of(notification: &Value) -> &str {
    notification["id"].as_str().expect("an id")
}

/// A notification id the server never issued.
fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn update_changes_only_the_given_fields_and_streams_get_the_printed_json() {
    let app = TestApp::spawn().await;
    let sent = publish_full(&app).await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;

    let finished = herald(
        &app,
        "update",
        &[
            "alice",
            id_of(&sent),
            "--title",
            "Build passed",
            "--type",
            "success",
            "--data",
            r#"{"build":7,"ok":true}"#,
        ],
    )
    .await;
    let printed = finished.printed_json();
    let mut expected = sent.clone();
    expected["title"] = json!("Build passed");
    expected["type"] = json!("success");
    expected["data"] = json!({ "build": 7, "ok": true });
    expected["updatedAt"] = printed["updatedAt"].clone();
    assert_eq!(printed, expected);
    assert!(
        printed["updatedAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );

    let updated = stream.next_event().await;
    assert_eq!(updated.event, "updated");
    assert_eq!(updated.data, printed);
    assert_eq!(
        app.history("alice", "").await["notifications"],
        json!([printed])
    );
}

#[tokio::test]
async fn update_with_the_clear_flags_removes_link_data_and_category() {
    let app = TestApp::spawn().await;
    let sent = publish_full(&app).await;
    let finished = herald(
        &app,
        "update",
        &[
            "alice",
            id_of(&sent),
            "--clear-link",
            "--clear-data",
            "--clear-category",
        ],
    )
    .await;
    let printed = finished.printed_json();
    let mut expected = sent.clone();
    let fields = expected.as_object_mut().unwrap();
    for removed in ["link", "data", "category"] {
        fields.remove(removed);
    }
    fields.insert("updatedAt".to_owned(), printed["updatedAt"].clone());
    assert_eq!(printed, expected);
}

#[tokio::test]
async fn update_refusals_are_one_line_and_change_nothing() {
    let app = TestApp::spawn().await;
    let sent = publish_full(&app).await;
    let id = id_of(&sent);

    herald(&app, "update", &["alice", id])
        .await
        .assert_usage_error(
            "herald: the following required arguments were not provided: <--title <TITLE>|--message <MESSAGE>|--type <TYPE>|--link <URL>|--clear-link|--data <JSON>|--clear-data|--category <CATEGORY>|--clear-category>",
        );
    herald(
        &app,
        "update",
        &["alice", id, "--link", "/x", "--clear-link"],
    )
    .await
    .assert_usage_error("herald: the argument '--link <URL>' cannot be used with '--clear-link'");
    herald(&app, "update", &["alice", id, "--data", "null"])
        .await
        .assert_usage_error(
            r#"herald: invalid value 'null' for '--data <JSON>': must be a JSON object, e.g. {"order":17}"#,
        );

    let too_long = "x".repeat(201);
    let path = format!("/api/notifications/alice/{id}");
    let the_server_says = refusal_line(
        app.client
            .patch(app.url(&path))
            .json(&json!({ "title": too_long })),
    )
    .await;
    herald(&app, "update", &["alice", id, "--title", &too_long])
        .await
        .assert_failed_with(&the_server_says);

    let unknown = unknown_id();
    let the_server_says = refusal_line(
        app.client
            .patch(app.url(&format!("/api/notifications/alice/{unknown}")))
            .json(&json!({ "title": "t" })),
    )
    .await;
    assert!(
        the_server_says.contains("404 Not Found"),
        "{the_server_says}"
    );
    herald(&app, "update", &["alice", &unknown, "--title", "t"])
        .await
        .assert_failed_with(&the_server_says);

    assert_eq!(
        app.history("alice", "").await["notifications"],
        json!([sent]),
        "nothing changed"
    );
}

#[tokio::test]
async fn delete_prints_a_confirmation_and_the_notification_leaves_history_and_streams() {
    let app = TestApp::spawn().await;
    let sent = app.publish("alice", "to delete").await;
    let kept = app.publish("alice", "to keep").await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let id = id_of(&sent);

    let finished = herald(&app, "delete", &["alice", id]).await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id, "deleted": true })
    );
    let deleted = stream.next_event().await;
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.data, json!({ "ids": [id] }));
    assert_eq!(
        app.history("alice", "").await["notifications"],
        json!([kept])
    );

    let the_server_says = refusal_line(
        app.client
            .delete(app.url(&format!("/api/notifications/alice/{id}"))),
    )
    .await;
    assert!(
        the_server_says.contains("404 Not Found"),
        "{the_server_says}"
    );
    herald(&app, "delete", &["alice", id])
        .await
        .assert_failed_with(&the_server_says);
}

#[tokio::test]
async fn archive_hides_a_notification_from_history_and_undo_brings_it_back() {
    let app = TestApp::spawn().await;
    let sent = app.publish("alice", "to archive").await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    let id = id_of(&sent);

    let finished = herald(&app, "archive", &["alice", id]).await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id, "archived": true })
    );
    let archived = stream.next_event().await;
    assert_eq!(archived.event, "archived");
    assert_eq!(archived.data, json!({ "ids": [id], "archived": true }));
    assert_eq!(app.history("alice", "").await["notifications"], json!([]));
    let mut shown_archived = sent.clone();
    shown_archived["archived"] = json!(true);
    assert_eq!(
        app.history("alice", "?archived=true").await["notifications"],
        json!([shown_archived])
    );

    let finished = herald(&app, "archive", &["alice", id, "--undo"]).await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id, "archived": false })
    );
    let unarchived = stream.next_event().await;
    assert_eq!(unarchived.event, "archived");
    assert_eq!(unarchived.data, json!({ "ids": [id], "archived": false }));
    assert_eq!(
        app.history("alice", "").await["notifications"],
        json!([sent])
    );

    let unknown = unknown_id();
    let the_server_says = refusal_line(
        app.client
            .post(app.url(&format!("/api/notifications/alice/{unknown}/archive"))),
    )
    .await;
    assert!(
        the_server_says.contains("404 Not Found"),
        "{the_server_says}"
    );
    herald(&app, "archive", &["alice", &unknown])
        .await
        .assert_failed_with(&the_server_says);
}

#[tokio::test]
async fn the_users_own_token_may_archive_and_delete_but_not_update_or_touch_another_user() {
    let app = spawn_secured(|_| {}).await;
    let first = app.publish("alice", "first").await;
    let second = app.publish("alice", "second").await;
    let alices = token_for("alice", 3600);
    let bobs = token_for("bob", 3600);
    let path = |id: &str, action: &str| format!("/api/notifications/alice/{id}{action}");

    let finished = herald(
        &app,
        "archive",
        &["alice", id_of(&first), "--token", &alices],
    )
    .await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id_of(&first), "archived": true })
    );
    let finished = herald(
        &app,
        "delete",
        &["alice", id_of(&first), "--token", &alices],
    )
    .await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id_of(&first), "deleted": true })
    );

    let as_bob = client_with(AUTHORIZATION, &format!("Bearer {bobs}"));
    let forbidden = refusal_line(as_bob.post(app.url(&path(id_of(&second), "/archive")))).await;
    assert!(forbidden.contains("403 Forbidden"), "{forbidden}");
    herald(
        &app,
        "archive",
        &["alice", id_of(&second), "--token", &bobs],
    )
    .await
    .assert_failed_with(&forbidden);
    let forbidden = refusal_line(as_bob.delete(app.url(&path(id_of(&second), "")))).await;
    assert!(forbidden.contains("403 Forbidden"), "{forbidden}");
    herald(&app, "delete", &["alice", id_of(&second), "--token", &bobs])
        .await
        .assert_failed_with(&forbidden);

    // Updating is a publisher's: `update` takes no token at all.
    herald(
        &app,
        "update",
        &["alice", id_of(&second), "--title", "t", "--token", &alices],
    )
    .await
    .assert_usage_error(
        "herald: unexpected argument '--token' found tip: to pass '--token' as a value, use '-- --token'",
    );

    let anonymous =
        refusal_line(reqwest::Client::new().post(app.url(&path(id_of(&second), "/archive")))).await;
    assert!(anonymous.contains("401 Unauthorized"), "{anonymous}");
    herald(&app, "archive", &["alice", id_of(&second)])
        .await
        .assert_failed_with(&anonymous);
    assert_eq!(
        app.history("alice", "").await["notifications"],
        json!([second]),
        "the refused requests changed nothing"
    );

    // With both, the key is sent: bob's token would be refused, the key is not.
    let finished = herald(
        &app,
        "update",
        &[
            "alice",
            id_of(&second),
            "--title",
            "Second",
            "--key",
            PUBLISH_KEY,
        ],
    )
    .await;
    assert_eq!(finished.printed_json()["title"], "Second");
    let finished = herald(
        &app,
        "archive",
        &[
            "alice",
            id_of(&second),
            "--key",
            PUBLISH_KEY,
            "--token",
            &bobs,
        ],
    )
    .await;
    assert_eq!(
        finished.printed_json(),
        json!({ "id": id_of(&second), "archived": true })
    );
}
