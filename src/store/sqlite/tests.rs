//! The SQLite store's own layout, through its API and its file: history found through the log,
//! the `notification` events retention keeps for it, and files made before that layout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use crate::domain::{EventId, EventName, NewNotification, Notification, NotificationPatch, UserId};
use crate::store::{
    CommittedEvent, EventSink, HistoryQuery, PublishOutcome, ReplayPage, Retention, SyncMode,
};

struct Nowhere;

impl EventSink for Nowhere {
    fn resume_after(&self, _newest: EventId) {}
    fn dispatch(&self, _events: &[CommittedEvent]) {}
}

fn open(dir: &Path, max_events: u64, history_per_user: u64) -> SqliteStore {
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_events,
        history_per_user,
        idempotency_window: Duration::from_secs(3600),
    };
    SqliteStore::open(dir, SyncMode::Normal, retention, Arc::new(Nowhere), None).expect("open")
}

fn hana() -> UserId {
    UserId::parse("hana").unwrap()
}

async fn publish(store: &SqliteStore, title: &str) -> (String, u64) {
    let new = NewNotification::parse(None, Some(title), Some("m"), None).unwrap();
    match store.publish(hana(), new, None).await.expect("publish") {
        PublishOutcome::Created(json, id) => {
            let stored: Notification = serde_json::from_str(json.as_str()).expect("stored JSON");
            (stored.id, id.major)
        }
        PublishOutcome::Repeated(_) => panic!("a publish without a key was repeated"),
    }
}

async fn titles(store: &SqliteStore) -> Vec<String> {
    let query = HistoryQuery {
        limit: 100,
        before: None,
        unread_only: false,
        category: None,
        archived: false,
    };
    let page = store.history(hana(), query).await.expect("history");
    assert_eq!(page.total, page.notifications.len() as u64);
    page.notifications.into_iter().map(|n| n.title).collect()
}

fn seqs(dir: &Path, table: &str) -> Vec<i64> {
    let conn = Connection::open(dir.join("herald.db")).unwrap();
    conn.prepare(&format!("SELECT seq FROM {table} ORDER BY seq"))
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn replay(store: &SqliteStore, after: u64) -> ReplayPage {
    let upto = EventId::from_seq(u64::MAX >> 1);
    store
        .replay_page(hana(), EventId::from_seq(after), upto, 100)
        .await
        .expect("replay")
}

#[tokio::test]
async fn history_past_retention_keeps_its_notification_events_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 3, 4);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(publish(&store, &format!("n{n}")).await);
    }
    // Ids 1..=6. History keeps n2..n5; the log replays 4..=6 and keeps 3 (n2's) for history;
    // n0 and n1 left history, and with them their events past retention.
    assert_eq!(titles(&store).await, ["n5", "n4", "n3", "n2"]);
    assert_eq!(seqs(dir.path(), "events"), [3, 4, 5, 6]);
    assert_eq!(seqs(dir.path(), "notifications"), [3, 4, 5, 6]);
    assert_eq!(store.retained_events(), 3);

    // Changes to notifications past retention: n2 updated (its `updated` is 7; 4 goes past
    // retention and stays for n3), then n3 deleted (its kept event goes; `deleted` is 8, and 5
    // goes past retention, kept for n4).
    let patch = NotificationPatch {
        title: Some("n2 again".into()),
        ..NotificationPatch::default()
    };
    store.update(hana(), ids[2].0.clone(), patch).await.unwrap();
    store.delete(hana(), ids[3].0.clone()).await.unwrap();
    assert_eq!(titles(&store).await, ["n5", "n4", "n2 again"]);
    assert_eq!(seqs(dir.path(), "events"), [3, 5, 6, 7, 8]);
    assert_eq!(seqs(dir.path(), "notifications"), [3, 5, 6]);
    assert_eq!(store.retained_events(), 3);

    // Kept events are never replayed: from 5 on the replay is exact, before it is gone.
    let ReplayPage::Events { events, complete } = replay(&store, 5).await else {
        panic!("a replay from the newest id past retention is exact");
    };
    let names: Vec<(u64, EventName)> = events.iter().map(|e| (e.id.major, e.name)).collect();
    assert_eq!(
        (names, complete),
        (
            vec![
                (6, EventName::Notification),
                (7, EventName::Updated),
                (8, EventName::Deleted)
            ],
            true
        )
    );
    let ReplayPage::Gone { oldest, .. } = replay(&store, 4).await else {
        panic!("a replay from past retention is gone");
    };
    assert_eq!(oldest, Some(EventId::from_seq(6)));

    // The same after a restart: counts come from the file.
    store.close().await;
    let store = open(dir.path(), 3, 4);
    assert_eq!(store.retained_events(), 3);
    assert_eq!(titles(&store).await, ["n5", "n4", "n2 again"]);
    store.close().await;
}

#[tokio::test]
async fn the_history_limit_steps_over_other_events_to_the_next_oldest_notification() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1000, 2);
    // Between notifications the user's log holds `read` events, which the writer's cached
    // "oldest notification" must step over each time the limit takes one.
    for n in 0..5 {
        let (id, _) = publish(&store, &format!("n{n}")).await;
        store.mark_read(hana(), id).await.unwrap();
        let newest: Vec<String> = (n.max(1) - 1..=n).rev().map(|k| format!("n{k}")).collect();
        assert_eq!(titles(&store).await, newest, "after n{n}");
    }
    // Ids: n0 1, read 2, n1 3, read 4, ... n4 9, read 10.
    assert_eq!(seqs(dir.path(), "notifications"), [7, 9]);
    store.close().await;
}

/// The layout of files made before history was found through the log.
const KEYED_BY_ID: &str = "
CREATE TABLE events (seq INTEGER PRIMARY KEY, user_id TEXT, name TEXT NOT NULL,
    data TEXT NOT NULL, created_ms INTEGER NOT NULL, subject TEXT, expires_ms INTEGER);
CREATE INDEX events_by_user ON events (user_id, seq);
CREATE TABLE notifications (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, seq INTEGER NOT NULL,
    body TEXT NOT NULL, read INTEGER NOT NULL DEFAULT 0);
CREATE INDEX notifications_by_user ON notifications (user_id, seq);
CREATE TABLE idempotency_keys (user_id TEXT NOT NULL, key TEXT NOT NULL,
    notification TEXT NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (user_id, key))
    WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('last_seq', 3), ('pruned_through', 1);
";

fn old_body(id: &str, title: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"info","title":"{title}","message":"m","timestamp":"2026-01-01T00:00:00.000Z","read":false}}"#
    )
}

#[tokio::test]
async fn a_file_keyed_by_notification_id_is_moved_to_the_present_layout_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join("herald.db")).unwrap();
        conn.execute_batch(KEYED_BY_ID).unwrap();
        // o0's event is past retention and gone; o1 was updated after its event; o1 is read.
        let (o0, o1, o1_then) = (
            old_body("o0", "first"),
            old_body("o1", "second, corrected"),
            old_body("o1", "second"),
        );
        conn.execute(
            "INSERT INTO events VALUES (2, 'hana', 'notification', ?1, 5, 'o1', NULL),
                                       (3, 'hana', 'read', '{\"id\":\"o1\"}', 6, 'o1', NULL)",
            [&o1_then],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO notifications VALUES ('o0', 'hana', 1, ?1, 0), ('o1', 'hana', 2, ?2, 1)",
            [&o0, &o1],
        )
        .unwrap();
    }
    let store = open(dir.path(), 1000, 100);
    assert_eq!(titles(&store).await, ["second, corrected", "first"]);
    assert_eq!(store.retained_events(), 2);
    let (_, next) = publish(&store, "third").await;
    assert_eq!(next, 4, "ids go on from the old file's");
    assert_eq!(
        titles(&store).await,
        ["third", "second, corrected", "first"]
    );
    store.close().await;

    let conn = Connection::open(dir.path().join("herald.db")).unwrap();
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        ["notifications_expiring", "sqlite_autoindex_notifications_1"]
    );
    let restored: (String, String, String) = conn
        .query_row(
            "SELECT name, subject, data FROM events WHERE seq = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        restored,
        ("notification".into(), "o0".into(), old_body("o0", "first"))
    );
    let read: Vec<(String, bool)> = conn
        .prepare("SELECT id, read FROM notifications ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read[..2], [("o0".into(), false), ("o1".into(), true)]);
}

#[test]
fn history_is_read_through_the_per_user_index_of_the_log() {
    let conn = Connection::open_in_memory().unwrap();
    super::schema::prepare_writer(&conn, SyncMode::Normal).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT COALESCE(n.body, e.data) FROM {}
             WHERE {} AND e.seq < 10 ORDER BY e.seq DESC LIMIT 5",
            super::HISTORY,
            super::SELECTED
                .replace(":user", "'u'")
                .replace(":archived", "0")
                .replace(":now", "0")
                .replace(":category", "NULL"),
        ))
        .unwrap()
        .query_map([], |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        plan,
        [
            "SEARCH e USING INDEX events_by_user (user_id=? AND seq<?)",
            "SEARCH n USING INTEGER PRIMARY KEY (rowid=?)"
        ]
    );
}

#[tokio::test]
async fn a_store_that_fsyncs_each_commit_opens_with_room_in_its_log_and_commits_do_not_grow_it() {
    let wal_length = |dir: &Path| {
        std::fs::metadata(dir.join("herald.db-wal"))
            .expect("wal")
            .len()
    };
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_events: 10_000,
        history_per_user: 1_000,
        idempotency_window: Duration::from_secs(3600),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        SyncMode::Full,
        retention,
        Arc::new(Nowhere),
        None,
    )
    .expect("open");
    // 6,144 frames of a 4 KiB page and its 24-byte header (`wal_file`).
    let reserved = 6_144 * (4_096 + 24);
    assert_eq!(wal_length(dir.path()), reserved);
    for n in 0..50 {
        publish(&store, &format!("n{n}")).await;
    }
    assert_eq!(wal_length(dir.path()), reserved, "a commit grew the log");
    assert_eq!(titles(&store).await.len(), 50);

    // Without an fsync per commit, growing costs a commit nothing: the file is left to SQLite.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000, 1_000);
    publish(&store, "one").await;
    assert!(wal_length(dir.path()) < reserved / 100);
}

/// The writer tells the checkpoint thread how long each commit left the log: once it passes a
/// mebibyte, the thread copies it into the database file, which grows
/// (docs/architecture.md#the-sqlite-store).
#[tokio::test]
async fn a_log_past_a_mebibyte_is_copied_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000, 1_000);
    let db_length = || {
        std::fs::metadata(dir.path().join("herald.db"))
            .expect("database file")
            .len()
    };
    let before = db_length();
    // One commit each, every one at least a frame: past the 256 frames of a mebibyte.
    for n in 0..400 {
        publish(&store, &format!("n{n}")).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db_length() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log was never copied into the database file ({before} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
