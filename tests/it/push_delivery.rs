//! docs/protocol.md#web-push: pushes as a push service receives them. Every push here goes to
//! the fake push service (tests/push_service/fake_push.py), which decrypts it with Python's
//! `http_ece` and verifies its VAPID token with `cryptography`, not with the code herald
//! encrypts and signs with. It checks: who is pushed (offline users, or everyone with
//! `always`; never a muted category, an announcement or a change), what (the notification,
//! made to fit), how (TTL, Urgency, Topic), and what becomes of each answer (404/410 delete the
//! subscription, 429/5xx are retried, a hanging service holds no publish, a push owed at a
//! SIGKILL is made after the restart).

use std::sync::Arc;
use std::time::Duration;

use herald::Settings;
use herald::config::PushSettings;
use herald::push::VapidKey;
use herald::push::endpoint::EndpointPolicy;
use herald::store::push::PushWhen;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::Api;
use crate::helpers::answers::sample;
use crate::helpers::cluster::{own_redis, start_cluster};
use crate::helpers::push_service::{FakePushService, PushRecord, PushSubscriptionJson};
use crate::helpers::raw_sse::Subscription;
use crate::helpers::{ServerProcess, TestApp, WAIT};

const SUBJECT: &str = "mailto:ops@example.com";

/// Long enough for a push service to be called twice with `Retry-After: 1` in between.
const RETRIES: Duration = Duration::from_secs(15);

fn push_settings(key: Arc<VapidKey>, when: PushWhen) -> PushSettings {
    PushSettings {
        key,
        subject: SUBJECT.into(),
        when,
        ttl: Duration::from_secs(24 * 3600),
        subscriptions_per_user: 10,
        // The fake push service listens on plain HTTP on loopback.
        endpoints: EndpointPolicy::new(Vec::new(), true),
    }
}

/// A server with push on (`when`) and the push service it pushes to.
async fn spawn_pushing(
    when: PushWhen,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, FakePushService) {
    let key = Arc::new(VapidKey::generate().expect("a key"));
    let service = FakePushService::start(key.public_key(), SUBJECT).await;
    let app = TestApp::spawn_with(|s| {
        s.push = Some(push_settings(key, when));
        configure(s);
    })
    .await;
    (app, service)
}

/// Subscribes `user` to a new subscription of `service` answering per `behavior`.
async fn subscribe(
    app: &TestApp,
    service: &FakePushService,
    user: &str,
    behavior: Value,
) -> PushSubscriptionJson {
    let subscription = service.subscribe(behavior).await;
    let (status, body) = app
        .post_json(
            &format!("/api/push/{user}/subscriptions"),
            &subscription.to_json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    subscription
}

fn topic_of(notification: &Value) -> String {
    notification["id"].as_str().unwrap().replace('-', "")
}

/// The one push that must come next, after `after`; none other may be with it.
async fn next_push(service: &FakePushService, after: u64) -> PushRecord {
    let records = service.received_after(after, WAIT).await;
    assert_eq!(records.len(), 1, "one push expected: {records:#?}");
    records.into_iter().next().unwrap()
}

fn assert_valid(record: &PushRecord, service: &FakePushService) {
    assert_eq!(record.error, None, "{record:#?}");
    let jwt = record.jwt.as_ref().expect("a verified VAPID token");
    assert_eq!(jwt.aud, service.origin());
    assert_eq!(jwt.sub, SUBJECT);
    let now = crate::helpers::auth::unix_now().as_secs();
    assert!(
        jwt.exp > now + 3600 && jwt.exp <= now + 24 * 3600,
        "exp {} now {now}",
        jwt.exp
    );
}

#[tokio::test]
async fn an_offline_users_notification_is_pushed_encrypted_signed_with_ttl_urgency_and_topic_and_changes_are_not()
 {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    let phone = subscribe(&app, &service, "alice", json!("ok")).await;
    let urgent = app
        .publish_body(
            "alice",
            &json!({
                "type": "error", "title": "Disk full", "message": "sda is at 100%",
                "link": "https://example.com/disks", "data": {"disk": "sda"}, "category": "ops",
            }),
        )
        .await;
    let record = next_push(&service, 0).await;
    assert_valid(&record, &service);
    assert_eq!(record.status, Some(201));
    assert_eq!(record.subscription, phone.id);
    assert_eq!(
        record.payload.as_ref(),
        Some(&urgent),
        "the notification as stored"
    );
    assert_eq!(record.headers.urgency.as_deref(), Some("high"));
    assert_eq!(record.headers.topic, Some(topic_of(&urgent)));
    let ttl = record.headers.ttl.expect("a TTL");
    assert!((24 * 3600 - 60..=24 * 3600).contains(&ttl), "TTL {ttl}");

    // An expiring notification is pushed for what is left of its life.
    let brief = app
        .publish_body(
            "alice",
            &json!({"title": "Code 123456", "message": "valid 5 minutes", "ttl": 300}),
        )
        .await;
    let record = next_push(&service, 1).await;
    assert_valid(&record, &service);
    assert_eq!(record.payload.as_ref(), Some(&brief));
    assert_eq!(record.headers.urgency.as_deref(), Some("normal"));
    assert_eq!(record.headers.topic, Some(topic_of(&brief)));
    let ttl = record.headers.ttl.unwrap();
    assert!((240..=300).contains(&ttl), "TTL {ttl}");

    // Changing, archiving and deleting pushed notifications push nothing; the next
    // notification is the next push.
    let id = urgent["id"].as_str().unwrap();
    let (status, _) = app
        .patch_json(
            &format!("/api/notifications/alice/{id}"),
            &json!({"title": "Disk fixed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.post_empty(&format!("/api/notifications/alice/{id}/archive"))
        .await;
    let brief_id = brief["id"].as_str().unwrap();
    let (status, _) = app
        .delete(&format!("/api/notifications/alice/{brief_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let last = app.publish("alice", "third").await;
    let record = next_push(&service, 2).await;
    assert_eq!(record.payload.as_ref(), Some(&last));

    app.wait_for_metric("herald_pushes_sent_total", |n| n == 3.0)
        .await;
    app.wait_for_metric("herald_push_queue_depth", |n| n == 0.0)
        .await;
    assert_eq!(
        sample(&app.metrics().await, "herald_pushes_failed_total"),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn only_users_with_no_open_stream_are_pushed_unless_push_when_is_always() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(&app, &service, "alice", json!("ok")).await;
    let bobs = subscribe(&app, &service, "bob", json!("ok")).await;
    let mut alice_tab = app.subscribe("alice", None).await;
    alice_tab.expect_connected().await;
    app.publish("alice", "seen in the tab").await;
    assert_eq!(
        alice_tab.next_event().await.data["title"],
        "seen in the tab"
    );
    let for_bob = app.publish("bob", "bob is away").await;
    // The pusher takes jobs oldest first: had alice's been queued, it would come first.
    let record = next_push(&service, 0).await;
    assert_eq!(record.subscription, bobs.id);
    assert_eq!(record.payload.as_ref(), Some(&for_bob));
    assert_eq!(
        service
            .received_after(1, Duration::from_millis(500))
            .await
            .len(),
        0
    );
    // Once alice's tab is closed, she is away too.
    drop(alice_tab);
    app.wait_for_streams(0).await;
    let away = app.publish("alice", "alice is away").await;
    assert_eq!(next_push(&service, 1).await.payload.as_ref(), Some(&away));
    app.stop().await;

    let (app, service) = spawn_pushing(PushWhen::Always, |_| {}).await;
    subscribe(&app, &service, "alice", json!("ok")).await;
    let mut alice_tab = app.subscribe("alice", None).await;
    alice_tab.expect_connected().await;
    let both = app.publish("alice", "tab and phone").await;
    assert_eq!(next_push(&service, 0).await.payload.as_ref(), Some(&both));
    assert_eq!(alice_tab.next_event().await.data["title"], "tab and phone");
    app.stop().await;
}

#[tokio::test]
async fn muted_categories_and_announcements_are_never_pushed() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(&app, &service, "alice", json!("ok")).await;
    let (status, _) = app
        .put_json(
            "/api/push/alice/preferences",
            &json!({"mutedCategories": ["social"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.publish_body(
        "alice",
        &json!({"title": "someone liked a post", "message": "yours", "category": "social"}),
    )
    .await;
    app.broadcast("maintenance tonight").await;
    let bill = app
        .publish_body(
            "alice",
            &json!({"title": "invoice ready", "message": "December", "category": "billing"}),
        )
        .await;
    let record = next_push(&service, 0).await;
    assert_eq!(record.payload.as_ref(), Some(&bill));
    app.stop().await;
}

#[tokio::test]
async fn a_subscription_its_push_service_no_longer_knows_is_deleted() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    let gone = subscribe(&app, &service, "alice", json!("gone")).await;
    let unknown = subscribe(&app, &service, "alice", json!("notfound")).await;
    let kept = subscribe(&app, &service, "alice", json!("ok")).await;
    app.publish("alice", "hello").await;
    let records = service.wait_for(3, WAIT).await;
    let mut answered: Vec<(String, Option<u16>)> = records
        .iter()
        .map(|record| (record.subscription.clone(), record.status))
        .collect();
    answered.sort();
    let mut expected = vec![
        (gone.id.clone(), Some(410)),
        (unknown.id.clone(), Some(404)),
        (kept.id.clone(), Some(201)),
    ];
    expected.sort();
    assert_eq!(answered, expected);
    app.wait_for_metric("herald_push_subscriptions_removed_total", |n| n == 2.0)
        .await;
    let (_, list) = app.get_json("/api/push/alice/subscriptions").await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1, "{list}");
    // Nothing more goes to the deleted ones.
    app.publish("alice", "again").await;
    let record = next_push(&service, 3).await;
    assert_eq!(record.subscription, kept.id);
    app.stop().await;
}

#[tokio::test]
async fn a_push_owed_to_a_deleted_subscription_is_never_made_even_after_its_endpoint_moves() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    let profile = service.subscribe(json!({"status": 503, "times": 1})).await;
    let (status, created) = app
        .post_json("/api/push/alice/subscriptions", &profile.to_json())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    app.publish("alice", "owed to a profile alice leaves").await;
    let first = service.wait_for(1, WAIT).await;
    assert_eq!(first[0].status, Some(503), "{first:#?}");
    // The retry is owed (a second from now) when alice unsubscribes and the browser profile
    // becomes bob's.
    app.wait_for_metric("herald_push_queue_depth", |n| n == 1.0)
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = app
        .delete(&format!("/api/push/alice/subscriptions/{id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, moved) = app
        .post_json("/api/push/bob/subscriptions", &profile.to_json())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{moved}");
    // The retry falls due and leaves the queue without a push.
    app.wait_for_metric("herald_push_queue_depth", |n| n == 0.0)
        .await;
    let for_bob = app.publish("bob", "bob's own").await;
    let record = next_push(&service, first[0].seq).await;
    assert_eq!(record.status, Some(201));
    assert_eq!(record.payload.as_ref(), Some(&for_bob));
    // Counted once herald has the push service's answer, which may be after the service
    // recorded the push.
    app.wait_for_metric("herald_pushes_sent_total", |n| n == 1.0)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_push_service_that_asks_to_wait_is_tried_again_after_retry_after_with_the_same_topic() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(
        &app,
        &service,
        "alice",
        json!({"status": 429, "times": 2, "retryAfter": 1}),
    )
    .await;
    let sent = app.publish("alice", "eventually").await;
    let records = service.wait_for(3, RETRIES).await;
    let statuses: Vec<Option<u16>> = records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(201)]);
    for (record, earlier) in records.iter().skip(1).zip(&records) {
        assert_valid(record, &service);
        assert_eq!(record.payload.as_ref(), Some(&sent));
        assert_eq!(record.headers.topic, Some(topic_of(&sent)));
        let waited = record.received_at_ms - earlier.received_at_ms;
        assert!(
            waited >= 1000,
            "Retry-After: 1 honoured, waited {waited} ms"
        );
    }
    // Without Retry-After, the first retry waits a second.
    subscribe(&app, &service, "bob", json!({"status": 503, "times": 1})).await;
    app.publish("bob", "after a failure").await;
    let records = service.wait_for(5, RETRIES).await;
    assert_eq!(
        records[3..].iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(503), Some(201)]
    );
    assert!(records[4].received_at_ms - records[3].received_at_ms >= 1000);
    app.wait_for_metric("herald_pushes_sent_total", |n| n == 2.0)
        .await;
    assert_eq!(
        sample(&app.metrics().await, "herald_pushes_failed_total"),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_push_still_failing_when_its_notification_expires_is_given_up_and_counted() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(
        &app,
        &service,
        "alice",
        json!({"status": 503, "times": 100}),
    )
    .await;
    // Tries at once, after 1 s and after 2 s more: that last would fall past its 2 s of life.
    app.publish_body(
        "alice",
        &json!({"title": "flash sale", "message": "two seconds", "ttl": 2}),
    )
    .await;
    app.wait_for_metric("herald_pushes_failed_total", |n| n == 1.0)
        .await;
    let records = service.received_after(0, Duration::ZERO).await;
    assert_eq!(
        records.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(503), Some(503)],
        "{records:#?}"
    );
    app.wait_for_metric("herald_push_queue_depth", |n| n == 0.0)
        .await;
    assert_eq!(
        sample(&app.metrics().await, "herald_pushes_sent_total"),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_push_service_that_never_answers_holds_no_publish_and_no_other_push() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(&app, &service, "alice", json!("hang")).await;
    subscribe(&app, &service, "bob", json!("ok")).await;
    app.publish("alice", "into the void").await;
    let held = next_push(&service, 0).await;
    assert_eq!(held.status, None, "the push service holds it: {held:#?}");
    // While it holds that push, publishing goes on at full speed and bob is pushed.
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        app.publish("bob", &format!("bob {n}")).await;
    }
    let publishing = started.elapsed();
    let records = service.wait_for(21, WAIT).await;
    assert!(
        records[1..].iter().all(|r| r.status == Some(201)),
        "{records:#?}"
    );
    assert!(
        publishing < Duration::from_secs(5),
        "20 publishes took {publishing:?} while a push hung"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_notification_too_big_for_one_push_loses_its_data_first_then_part_of_its_message() {
    let (app, service) = spawn_pushing(PushWhen::Offline, |_| {}).await;
    subscribe(&app, &service, "alice", json!("ok")).await;
    let data = json!({"blob": "x".repeat(6000)});
    let roomy = app
        .publish_body(
            "alice",
            &json!({"title": "report", "message": "short", "data": data}),
        )
        .await;
    let record = next_push(&service, 0).await;
    let mut expected = roomy.clone();
    expected.as_object_mut().unwrap().remove("data");
    assert_eq!(record.payload, Some(expected));

    let long = "é".repeat(4000);
    let crowded = app
        .publish_body(
            "alice",
            &json!({"title": "essay", "message": long, "data": data}),
        )
        .await;
    let record = next_push(&service, 1).await;
    assert_valid(&record, &service);
    assert!(record.body_bytes <= 4096, "{}", record.body_bytes);
    let payload = record.payload.expect("decrypted");
    assert!(payload.get("data").is_none());
    assert_eq!(payload["title"], "essay");
    assert_eq!(payload["id"], crowded["id"]);
    let message = payload["message"].as_str().unwrap();
    assert!(message.ends_with('…'), "{message}");
    let kept = message.trim_end_matches('…');
    assert!(
        long.starts_with(kept) && kept.chars().count() > 1000,
        "{}",
        kept.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_push_owed_when_herald_is_killed_is_made_after_the_restart() {
    let dir = TempDir::new().expect("temp dir");
    let key_file = dir.path().join("vapid.pem");
    let key = VapidKey::generate().unwrap();
    std::fs::write(&key_file, key.to_pem().unwrap()).unwrap();
    let data = dir.path().join("data");
    let args = [
        "--vapid-key",
        key_file.to_str().unwrap(),
        "--vapid-subject",
        SUBJECT,
        "--push-insecure-endpoints",
    ];
    let service = FakePushService::start(key.public_key(), SUBJECT).await;
    let mut server = ServerProcess::start(&data, &args);
    assert!(
        server.stderr().contains("--push-insecure-endpoints"),
        "the server warns that any endpoint will do: {}",
        server.stderr()
    );
    let subscription = service
        .subscribe(json!({"status": 503, "times": 1, "retryAfter": 2}))
        .await;
    let (status, _) = server
        .post_json("/api/push/alice/subscriptions", &subscription.to_json())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let sent = server.publish("alice", "owed").await;
    let first = next_push(&service, 0).await;
    assert_eq!(first.status, Some(503));
    server.kill_hard();

    // The retry is owed to the queue, not to the process that was killed.
    let server = ServerProcess::start(&data, &args);
    // On Redis, a push taken by the killed node waits out its lease first.
    let records = service.wait_for(2, Duration::from_secs(40)).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[1].status, Some(201));
    assert_eq!(records[1].payload.as_ref(), Some(&sent));
    assert_eq!(records[1].headers.topic, Some(topic_of(&sent)));
    server.stop();
}

/// Asks `api` for `user`'s presence until it is `expected`, for at most `wait`: presence
/// travels between nodes through Redis, and a dead node is forgotten when its heartbeat lapses.
async fn wait_for_presence(api: &Api, user: &str, expected: Value, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (status, body) = api.get_json(&format!("/api/presence/{user}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user}'s presence is {body}, not {expected}, after {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_on_another_node_keeps_pushes_away_until_that_node_is_killed() {
    let Some(redis) = own_redis(&[]) else { return };
    let dir = TempDir::new().expect("temp dir");
    let key_file = dir.path().join("vapid.pem");
    let key = VapidKey::generate().unwrap();
    std::fs::write(&key_file, key.to_pem().unwrap()).unwrap();
    let service = FakePushService::start(key.public_key(), SUBJECT).await;
    let args = [
        "--vapid-key",
        key_file.to_str().unwrap(),
        "--vapid-subject",
        SUBJECT,
        "--push-insecure-endpoints",
    ];
    let mut nodes = start_cluster(&redis, 2, &args);
    let (a, b) = (nodes[0].api(), nodes[1].api());
    for user in ["alice", "bob"] {
        let subscription = service.subscribe(json!("ok")).await;
        let (status, _) = b
            .post_json(
                &format!("/api/push/{user}/subscriptions"),
                &subscription.to_json(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut tab = Subscription::open(&a, "alice", None).await;
    wait_for_presence(&b, "alice", json!({"online": true, "streams": 1}), WAIT).await;
    wait_for_presence(&a, "alice", json!({"online": true, "streams": 1}), WAIT).await;

    // Published through b: alice is online on a, so only bob (nowhere) is pushed.
    b.publish("alice", "in the tab on node a").await;
    assert_eq!(tab.next_event().await.data["title"], "in the tab on node a");
    let for_bob = b.publish("bob", "bob is away").await;
    let record = next_push(&service, 0).await;
    assert_eq!(record.payload.as_ref(), Some(&for_bob));

    // Node a dies without a word: its stream stops counting once its heartbeat lapses.
    nodes[0].process_mut().kill_hard();
    wait_for_presence(
        &b,
        "alice",
        json!({"online": false, "streams": 0}),
        Duration::from_secs(20),
    )
    .await;
    let away = b.publish("alice", "alice is away now").await;
    let record = next_push(&service, 1).await;
    assert_eq!(record.payload.as_ref(), Some(&away));
    drop(tab);
}
