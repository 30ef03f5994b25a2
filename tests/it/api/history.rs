//! History and read state: newest first, `limit`, paging with `before`, `count`/`total`/
//! `unread`, the `unread` filter, `lastEventId`, and marking one or all read.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::answers::{assert_error, id_of, keys, page_ids, page_titles};
use crate::helpers::{TestApp, assert_next_is_marker, titles};

#[tokio::test]
async fn history_is_newest_first_with_a_default_page_of_20() {
    let app = TestApp::spawn().await;
    app.publish_numbered("alice", 25).await;
    app.publish("bob", "not alice's").await;
    let page = app.history("alice", "").await;
    let want: Vec<String> = (5..25).rev().map(|i| format!("n{i}")).collect();
    assert_eq!(page_titles(&page), want);
    assert_eq!(page["count"], 20);
    assert_eq!(page["total"], 25);
    assert_eq!(page["unread"], 25);
    assert!(page["lastEventId"].is_string(), "{page}");
    assert_eq!(
        keys(&page),
        ["count", "lastEventId", "notifications", "total", "unread"]
    );
    let empty = app.history("nobody", "").await;
    assert_eq!(
        (
            &empty["notifications"],
            &empty["count"],
            &empty["total"],
            &empty["unread"]
        ),
        (&json!([]), &json!(0), &json!(0), &json!(0))
    );
}

#[tokio::test]
async fn history_limit_is_1_to_100_and_anything_else_is_400() {
    let app = TestApp::spawn().await;
    let publishes = (0..101).map(|i| {
        let app = &app;
        async move { app.publish("alice", &format!("c{i}")).await }
    });
    join_all(publishes).await;
    for (query, count) in [
        ("?limit=1", 1),
        ("?limit=100", 100),
        ("?limit=42", 42),
        ("", 20),
    ] {
        let page = app.history("alice", query).await;
        assert_eq!(page["count"], count, "{query}");
        assert_eq!(
            page["notifications"].as_array().unwrap().len(),
            count,
            "{query}"
        );
        assert_eq!(page["total"], 101, "{query}");
    }
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=abc",
        "?limit=-1",
        "?limit=1.5",
        "?limit=",
        "?limit=99999999999999999999",
        "?limit=1&limit=2",
    ] {
        let (status, answer) = app
            .get_json(&format!("/api/notifications/alice{query}"))
            .await;
        assert_error(query, StatusCode::BAD_REQUEST, status, &answer);
    }
}

#[tokio::test]
async fn paging_with_before_walks_the_whole_history_with_no_overlap_and_no_gap() {
    let app = TestApp::spawn().await;
    let published = app.publish_numbered("alice", 23).await;
    app.publish("bob", "interleaved").await;
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "?limit=5".to_owned();
    loop {
        let page = app.history("alice", &query).await;
        assert_eq!(page["total"], 23, "total counts everything on every page");
        let ids = page_ids(&page);
        assert_eq!(page["count"], ids.len());
        sizes.push(ids.len());
        let Some(last) = ids.last() else { break };
        query = format!("?limit=5&before={last}");
        seen.extend(ids);
    }
    assert_eq!(sizes, [5, 5, 5, 5, 3, 0]);
    let want: Vec<String> = published
        .iter()
        .rev()
        .map(|n| id_of(n).to_owned())
        .collect();
    assert_eq!(seen, want, "every notification once, newest first");
}

#[tokio::test]
async fn an_unknown_before_is_404() {
    let app = TestApp::spawn().await;
    app.publish("alice", "one").await;
    let bobs = app.publish("bob", "bob's").await;
    for before in [
        uuid::Uuid::new_v4().to_string(),
        id_of(&bobs).to_owned(),
        "not-an-id".to_owned(),
    ] {
        let (status, answer) = app
            .get_json(&format!("/api/notifications/alice?before={before}"))
            .await;
        assert_error(&before, StatusCode::NOT_FOUND, status, &answer);
    }
}

#[tokio::test]
async fn count_is_the_page_while_total_and_unread_count_everything_and_unread_filters() {
    let app = TestApp::spawn().await;
    let n = app.publish_numbered("alice", 5).await;
    for read in [&n[1], &n[3]] {
        let (status, _) = app
            .post_empty(&format!("/api/notifications/alice/{}/read", id_of(read)))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let page = app.history("alice", "?limit=2").await;
    assert_eq!(page_titles(&page), ["n4", "n3"]);
    assert_eq!(
        (&page["count"], &page["total"], &page["unread"]),
        (&json!(2), &json!(5), &json!(3))
    );
    assert_eq!(page["notifications"][0]["read"], false);
    assert_eq!(page["notifications"][1]["read"], true);

    let unread = app.history("alice", "?unread=true").await;
    assert_eq!(page_titles(&unread), ["n4", "n2", "n0"]);
    assert!(
        unread["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == false)
    );
    assert_eq!(
        (&unread["count"], &unread["total"], &unread["unread"]),
        (&json!(3), &json!(5), &json!(3))
    );
    let unread_page = app.history("alice", "?unread=true&limit=2").await;
    assert_eq!(page_titles(&unread_page), ["n4", "n2"]);
    let everything = app.history("alice", "?unread=false").await;
    assert_eq!(page_titles(&everything), ["n4", "n3", "n2", "n1", "n0"]);
    let (status, answer) = app.get_json("/api/notifications/alice?unread=maybe").await;
    assert_error("unread=maybe", StatusCode::BAD_REQUEST, status, &answer);
}

#[tokio::test]
async fn a_stream_opened_with_historys_last_event_id_gets_exactly_what_came_after_the_read() {
    let app = TestApp::spawn().await;
    let before_read = app.publish_numbered("alice", 3).await;
    app.broadcast("old news").await;
    let page = app.history("alice", "").await;
    let last_event_id = page["lastEventId"]
        .as_str()
        .expect("lastEventId is a string")
        .to_owned();

    // After the read: two for alice, one for bob, a broadcast, and a read on another device.
    app.publish("alice", "a3").await;
    app.publish("bob", "not for alice").await;
    app.broadcast("all hands").await;
    app.publish("alice", "a4").await;
    let (status, _) = app
        .post_empty(&format!(
            "/api/notifications/alice/{}/read",
            id_of(&before_read[0])
        ))
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut stream = app.subscribe("alice", Some(&last_event_id)).await;
    stream.expect_connected().await;
    let missed = stream.next_events(4).await;
    let names: Vec<&str> = missed.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        ["notification", "announcement", "notification", "read"]
    );
    assert_eq!(
        titles(&missed[..3]),
        ["a3", "all hands", "a4"],
        "nothing from before the read, nothing of bob's"
    );
    assert_eq!(missed[3].data, json!({ "ids": [id_of(&before_read[0])] }));
    assert_next_is_marker(&app, "alice", &mut stream).await;
}

// ---------------------------------------------------------------------------------------------
// Read state.

#[tokio::test]
async fn marking_one_read_answers_its_id_and_history_shows_it_read() {
    let app = TestApp::spawn().await;
    let n = app.publish_numbered("alice", 3).await;
    let id = id_of(&n[1]);
    let path = format!("/api/notifications/alice/{id}/read");
    let (status, answer) = app.post_empty(&path).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "id": id, "read": true }))
    );
    let page = app.history("alice", "").await;
    let read: Vec<bool> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, true, false], "newest first: n2, n1, n0");
    assert_eq!((&page["total"], &page["unread"]), (&json!(3), &json!(2)));
    // Again: still 200, nothing changes.
    let (status, answer) = app.post_empty(&path).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({ "id": id, "read": true }))
    );
    assert_eq!(app.history("alice", "").await["unread"], 2);
}

#[tokio::test]
async fn marking_an_unknown_or_another_users_notification_read_is_404_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let mut alice = app.subscribe("alice", None).await;
    let mut bob = app.subscribe("bob", None).await;
    alice.expect_connected().await;
    bob.expect_connected().await;
    app.publish("alice", "alice's").await;
    let bobs = app.publish("bob", "bob's").await;
    alice.next_event().await;
    bob.next_event().await;

    for id in [uuid::Uuid::new_v4().to_string(), id_of(&bobs).to_owned()] {
        let (status, answer) = app
            .post_empty(&format!("/api/notifications/alice/{id}/read"))
            .await;
        assert_error(&id, StatusCode::NOT_FOUND, status, &answer);
    }
    let page = app.history("bob", "").await;
    assert_eq!(page["unread"], 1, "bob's notification is still unread");
    assert_eq!(page["notifications"][0]["read"], false);
    assert_eq!(app.history("alice", "").await["unread"], 1);
    assert_next_is_marker(&app, "alice", &mut alice).await;
    assert_next_is_marker(&app, "bob", &mut bob).await;
}

#[tokio::test]
async fn read_all_counts_only_what_went_from_unread_to_read() {
    let app = TestApp::spawn().await;
    let n = app.publish_numbered("alice", 4).await;
    app.publish("bob", "bob's").await;
    let (status, _) = app
        .post_empty(&format!("/api/notifications/alice/{}/read", id_of(&n[2])))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, answer) = app.post_empty("/api/notifications/alice/read-all").await;
    assert_eq!((status, answer), (StatusCode::OK, json!({ "updated": 3 })));
    let (status, answer) = app.post_empty("/api/notifications/alice/read-all").await;
    assert_eq!((status, answer), (StatusCode::OK, json!({ "updated": 0 })));
    let page = app.history("alice", "").await;
    assert_eq!((&page["total"], &page["unread"]), (&json!(4), &json!(0)));
    assert!(
        page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == true)
    );
    assert_eq!(app.history("bob", "").await["unread"], 1, "bob's untouched");
    let (status, answer) = app.post_empty("/api/notifications/nobody/read-all").await;
    assert_eq!((status, answer), (StatusCode::OK, json!({ "updated": 0 })));
}
