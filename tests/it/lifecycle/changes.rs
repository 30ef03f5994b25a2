//! `PATCH`, `DELETE`, archive and unarchive: the answers, the `updated`, `deleted` and
//! `archived` events, history with `category` and `archived`, and who may do what.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE, ORIGIN};
use serde_json::{Value, json};

use crate::helpers::answers::{assert_error, id_of, keys, page_ids};
use crate::helpers::auth::{client_with, spawn_secured, token_for};
use crate::helpers::{TestApp, assert_next_is_marker, note, send};

fn path(user: &str, id: &str) -> String {
    format!("/api/notifications/{user}/{id}")
}

#[tokio::test]
async fn a_patch_answers_the_whole_notification_and_sends_it_as_updated() {
    let app = TestApp::spawn().await;
    let created = app
        .publish_body(
            "alice",
            &json!({ "title": "Build 7", "message": "running", "link": "/builds/7",
                     "category": "ci", "data": { "step": 1 } }),
        )
        .await;
    let id = id_of(&created);
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    app.mark_read("alice", id).await;
    assert_eq!(stream.next_event().await.event, "read");

    let (status, updated) = app
        .patch_json(
            &path("alice", id),
            &json!({ "title": "Build 7 ", "message": " passed", "type": "success",
                     "link": null, "data": { "step": 2, "ok": true } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        keys(&updated),
        [
            "category",
            "data",
            "id",
            "message",
            "read",
            "timestamp",
            "title",
            "type",
            "updatedAt"
        ]
    );
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["timestamp"], created["timestamp"]);
    assert_eq!(
        (&updated["title"], &updated["message"], &updated["type"]),
        (&json!("Build 7"), &json!("passed"), &json!("success"))
    );
    assert_eq!(updated["data"], json!({ "step": 2, "ok": true }));
    assert_eq!(updated["category"], "ci");
    assert_eq!(updated["read"], true, "read state is kept");
    assert!(updated["updatedAt"].as_str().unwrap().ends_with('Z'));

    let event = stream.next_event().await;
    assert_eq!((event.event.as_str(), &event.data), ("updated", &updated));
    assert!(!event.id.is_empty(), "updated has an id: line");
    assert_eq!(app.history("alice", "").await["notifications"][0], updated);

    // `null` removes the optional fields.
    let (_, cleared) = app
        .patch_json(
            &path("alice", id),
            &json!({ "data": null, "category": null }),
        )
        .await;
    assert_eq!(
        keys(&cleared),
        [
            "id",
            "message",
            "read",
            "timestamp",
            "title",
            "type",
            "updatedAt"
        ]
    );
    assert_eq!(stream.next_event().await.data, cleared);
}

#[tokio::test]
async fn a_bad_patch_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let created = app.publish("alice", "original").await;
    let id = id_of(&created);
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    app.broadcast("everyone").await;
    let announcement = stream.next_event().await;
    assert_eq!(announcement.event, "announcement");
    let announcement_id = announcement.data["id"].as_str().unwrap().to_owned();
    let bad: Vec<(StatusCode, &str, Value)> = vec![
        (StatusCode::BAD_REQUEST, id, json!({})),
        (StatusCode::BAD_REQUEST, id, json!({ "title": null })),
        (StatusCode::BAD_REQUEST, id, json!({ "title": "  " })),
        (StatusCode::BAD_REQUEST, id, json!({ "type": "fatal" })),
        (
            StatusCode::BAD_REQUEST,
            id,
            json!({ "link": "javascript:x" }),
        ),
        (StatusCode::BAD_REQUEST, id, json!({ "data": [1] })),
        (StatusCode::BAD_REQUEST, id, json!({ "category": "No" })),
        (StatusCode::BAD_REQUEST, id, json!({ "read": true })),
        (
            StatusCode::BAD_REQUEST,
            id,
            json!({ "title": "ok", "ttl": 5 }),
        ),
        (StatusCode::NOT_FOUND, "no-such-id", json!({ "title": "x" })),
        (
            StatusCode::NOT_FOUND,
            announcement_id.as_str(),
            json!({ "title": "x" }),
        ),
    ];
    for (expected, target, body) in bad {
        let (status, answer) = app.patch_json(&path("alice", target), &body).await;
        assert_error(&format!("{body} on {target}"), expected, status, &answer);
    }
    // Another user's notification is not found under this user.
    let (status, answer) = app
        .patch_json(&path("bob", id), &json!({ "title": "x" }))
        .await;
    assert_error("bob's path", StatusCode::NOT_FOUND, status, &answer);
    assert_eq!(app.history("alice", "").await["notifications"][0], created);
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

#[tokio::test]
async fn a_delete_is_204_sends_deleted_and_the_notification_is_gone() {
    let app = TestApp::spawn().await;
    let kept = app.publish("alice", "kept").await;
    let gone = app.publish("alice", "gone").await;
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;

    let (status, body) = app.delete(&path("alice", id_of(&gone))).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let event = stream.next_event().await;
    assert_eq!(event.event, "deleted");
    assert_eq!(event.data, json!({ "ids": [id_of(&gone)] }));
    let page = app.history("alice", "").await;
    assert_eq!(page_ids(&page), [id_of(&kept)]);
    assert_eq!((&page["total"], &page["unread"]), (&json!(1), &json!(1)));

    app.broadcast("everyone").await;
    let announcement = stream.next_event().await;
    assert_eq!(announcement.event, "announcement");
    let announcement_id = announcement.data["id"].as_str().unwrap().to_owned();
    for (case, target) in [
        ("deleted twice", id_of(&gone)),
        ("unknown", "nope"),
        ("an announcement", announcement_id.as_str()),
    ] {
        let (status, answer) = app.delete(&path("alice", target)).await;
        assert_error(case, StatusCode::NOT_FOUND, status, &answer);
    }
    for action in ["archive", "unarchive", "read"] {
        let (status, answer) = app
            .post_empty(&format!("{}/{action}", path("alice", &announcement_id)))
            .await;
        assert_error(action, StatusCode::NOT_FOUND, status, &answer);
    }
    let (status, answer) = app.delete(&path("bob", id_of(&kept))).await;
    assert_error("bob's path", StatusCode::NOT_FOUND, status, &answer);
    assert_eq!(app.history_total("alice").await, 1);
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

#[tokio::test]
async fn archive_and_unarchive_send_archived_and_move_it_between_the_history_views() {
    let app = TestApp::spawn().await;
    let first = app.publish("alice", "first").await;
    let second = app.publish("alice", "second").await;
    let (id1, id2) = (id_of(&first), id_of(&second));
    let mut stream = app.subscribe("alice", None).await;
    stream.expect_connected().await;
    app.mark_read("alice", id2).await;
    assert_eq!(stream.next_event().await.event, "read");

    let (status, answer) = app
        .post_empty(&format!("{}/archive", path("alice", id2)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({ "id": id2, "archived": true }));
    let event = stream.next_event().await;
    assert_eq!(event.event, "archived");
    assert_eq!(event.data, json!({ "ids": [id2], "archived": true }));

    let inbox = app.history("alice", "").await;
    assert_eq!(page_ids(&inbox), [id1]);
    assert_eq!((&inbox["total"], &inbox["unread"]), (&json!(1), &json!(1)));
    let archived = app.history("alice", "?archived=true").await;
    assert_eq!(page_ids(&archived), [id2]);
    assert_eq!(
        (&archived["total"], &archived["unread"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(archived["notifications"][0]["archived"], true);
    assert_eq!(archived["notifications"][0]["read"], true);
    assert_eq!(app.history("alice", "?archived=false").await["total"], 1);

    // Archiving again changes nothing and sends nothing.
    let (status, again) = app
        .post_empty(&format!("{}/archive", path("alice", id2)))
        .await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &json!({ "id": id2, "archived": true }))
    );
    assert_next_is_marker(&app, "alice", &mut stream).await;

    let (status, answer) = app
        .post_empty(&format!("{}/unarchive", path("alice", id2)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({ "id": id2, "archived": false }));
    let event = stream.next_event().await;
    assert_eq!(event.data, json!({ "ids": [id2], "archived": false }));
    let inbox = app.history("alice", "").await;
    assert_eq!(inbox["total"], 3, "the marker, second and first");
    assert!(
        inbox["notifications"][1].get("archived").is_none(),
        "{inbox}"
    );

    for action in ["archive", "unarchive"] {
        let (status, answer) = app
            .post_empty(&format!("{}/{action}", path("alice", "nope")))
            .await;
        assert_error(action, StatusCode::NOT_FOUND, status, &answer);
    }
}

#[tokio::test]
async fn history_filters_by_category_and_counts_what_it_selects() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for (title, category) in [
        ("a", Some("billing")),
        ("b", None),
        ("c", Some("billing")),
        ("d", Some("security")),
    ] {
        let mut body = note(title);
        if let Some(category) = category {
            body["category"] = json!(category);
        }
        ids.push(id_of(&app.publish_body("alice", &body).await).to_owned());
    }
    app.mark_read("alice", &ids[2]).await;
    let billing = app.history("alice", "?category=billing").await;
    assert_eq!(page_ids(&billing), [ids[2].clone(), ids[0].clone()]);
    assert_eq!(
        (&billing["total"], &billing["unread"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(billing["count"], 2);
    let paged = app
        .history("alice", &format!("?category=billing&before={}", ids[2]))
        .await;
    assert_eq!(page_ids(&paged), [ids[0].clone()]);
    let unread = app.history("alice", "?category=billing&unread=true").await;
    assert_eq!(page_ids(&unread), [ids[0].clone()]);

    app.post_empty(&format!("{}/archive", path("alice", &ids[0])))
        .await;
    let billing = app.history("alice", "?category=billing").await;
    assert_eq!(
        (&billing["total"], &billing["unread"]),
        (&json!(1), &json!(0))
    );
    let archived_billing = app
        .history("alice", "?category=billing&archived=true")
        .await;
    assert_eq!(page_ids(&archived_billing), [ids[0].clone()]);
    assert_eq!(app.history("alice", "?category=none").await["total"], 0);
    for bad in ["category=Billing", "category=", "archived=maybe"] {
        let (status, answer) = app
            .get_json(&format!("/api/notifications/alice?{bad}"))
            .await;
        assert_error(bad, StatusCode::BAD_REQUEST, status, &answer);
    }
}

#[tokio::test]
async fn a_users_token_may_archive_and_delete_its_own_but_never_create_or_update() {
    let app = spawn_secured(|_| {}).await;
    let created = app.publish("alice", "mine").await;
    let id = id_of(&created);
    let alice = app.with_client(client_with(
        AUTHORIZATION,
        &format!("Bearer {}", token_for("alice", 600)),
    ));
    let bob = app.with_client(client_with(
        AUTHORIZATION,
        &format!("Bearer {}", token_for("bob", 600)),
    ));
    let anonymous = app.with_client(reqwest::Client::new());

    // Creating and updating need the publish key.
    let (status, answer) = alice
        .patch_json(&path("alice", id), &json!({ "title": "x" }))
        .await;
    assert_error("alice patches", StatusCode::FORBIDDEN, status, &answer);
    let (status, answer) = alice
        .post_json(
            "/api/notifications",
            &json!({ "users": ["alice"], "title": "t", "message": "m" }),
        )
        .await;
    assert_error(
        "alice publishes to many",
        StatusCode::FORBIDDEN,
        status,
        &answer,
    );
    let (status, answer) = anonymous
        .patch_json(&path("alice", id), &json!({ "title": "x" }))
        .await;
    assert_error("no credential", StatusCode::UNAUTHORIZED, status, &answer);

    // Another user's token may not touch alice's notifications.
    for action in ["archive", "unarchive"] {
        let (status, answer) = bob
            .post_empty(&format!("{}/{action}", path("alice", id)))
            .await;
        assert_error(action, StatusCode::FORBIDDEN, status, &answer);
    }
    let (status, answer) = bob.delete(&path("alice", id)).await;
    assert_error("bob deletes", StatusCode::FORBIDDEN, status, &answer);
    let (status, answer) = anonymous.delete(&path("alice", id)).await;
    assert_error(
        "anonymous deletes",
        StatusCode::UNAUTHORIZED,
        status,
        &answer,
    );
    assert_eq!(app.history("alice", "").await["notifications"][0], created);

    // Alice's own token may archive, unarchive and delete.
    let (status, answer) = alice
        .post_empty(&format!("{}/archive", path("alice", id)))
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "id": id, "archived": true }))
    );
    let (status, _) = alice
        .post_empty(&format!("{}/unarchive", path("alice", id)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = alice.delete(&path("alice", id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.history_total("alice").await, 0);
}

#[tokio::test]
async fn the_token_cookie_alone_may_not_delete_or_archive_from_another_origin() {
    let app = spawn_secured(|_| {}).await;
    let id = id_of(&app.publish("alice", "mine").await).to_owned();
    let cookie = format!("herald_token={}", token_for("alice", 600));
    let client = reqwest::Client::new();
    let from = |request: reqwest::RequestBuilder, origin: &str| {
        send(request.header(COOKIE, &cookie).header(ORIGIN, origin))
    };
    let archive = app.url(&format!("{}/archive", path("alice", &id)));
    let one = app.url(&path("alice", &id));
    let evil = "https://evil.example";
    assert_eq!(
        from(client.delete(&one), evil).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        from(client.post(&archive), evil).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.history_total("alice").await, 1);
    assert!(
        app.history("alice", "").await["notifications"][0]
            .get("archived")
            .is_none()
    );

    let own = app.url("");
    assert_eq!(
        from(client.post(&archive), &own).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        from(client.delete(&one), &own).await.status(),
        StatusCode::NO_CONTENT
    );
}
