//! The SQLite schema and connection settings, applied on every open.

use rusqlite::Connection;

use crate::store::SyncMode;

/// Tables: `events` is the log (`user_id` NULL for announcements; `subject` the notification an
/// event is about, so a delete can take them all out of the log; `expires_ms` when that
/// notification expires); `notifications` is the per-user history with read and archive state,
/// keyed by the id (`seq`) of the event that created it. Its text is that event's `data` until
/// an update gives it a `body` of its own, and a user's history is found through the log's one
/// per-user index, `events_by_user`, so that storing a notification touches one per-user index,
/// not two. Retention therefore keeps the `notification` event of every notification still in
/// history, even once it is past retention (`seq` at or below `pruned_through`): such events
/// are never replayed, only read by history (docs/architecture.md#the-sqlite-store).
/// `idempotency_keys` remembers recent publish keys (`user_id` '' for a publish to many users,
/// which no user id can be); `meta` holds `last_seq` (at least the newest id issued before
/// events were last removed, so ids never repeat even when retention empties the log; see
/// [`last_seq`]) and `pruned_through` (the newest id retention has removed: the events after
/// it are the replayable ones). Events are found by age through `seq`, which grows with time,
/// so the log needs no index on `created_ms`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    user_id    TEXT,
    name       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    subject    TEXT,
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
DROP INDEX IF EXISTS events_by_age;


CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    notification TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_ms);

CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('last_seq', 0), ('pruned_through', 0), ('tidied_through', 0);
";

/// Web Push's tables (`push`). `push_queue.seq` is the `notification` event of the notification owed; a job
/// whose notification is gone is found so by the join that reads it, and dropped then.
pub(super) const PUSH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS push_subscriptions (
    id         TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    endpoint   TEXT    NOT NULL UNIQUE,
    p256dh     TEXT    NOT NULL,
    auth       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS push_subscriptions_by_user ON push_subscriptions (user_id);
CREATE TABLE IF NOT EXISTS push_muted (
    user_id  TEXT NOT NULL,
    category TEXT NOT NULL,
    PRIMARY KEY (user_id, category)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_queue (
    job          INTEGER PRIMARY KEY,
    seq          INTEGER NOT NULL,
    subscription TEXT    NOT NULL,
    due_ms       INTEGER NOT NULL,
    deadline_ms  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS push_queue_by_due;
DROP INDEX IF EXISTS push_queue_by_subscription;
CREATE INDEX IF NOT EXISTS push_queue_fresh ON push_queue (seq) WHERE attempts = 0;
CREATE INDEX IF NOT EXISTS push_queue_retries ON push_queue (due_ms) WHERE attempts > 0;
";

/// The columns of `notifications` (made here, not in [`SCHEMA`], so that moving an older file to
/// this layout makes the same table; see [`key_history_by_event`]).
const NOTIFICATIONS_COLUMNS: &str = "(
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    user_id    TEXT    NOT NULL,
    body       TEXT,
    read       INTEGER NOT NULL DEFAULT 0,
    category   TEXT,
    archived   INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER
)";

/// Columns added since the first release, for files made before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("events", "subject", "TEXT"),
    ("events", "expires_ms", "INTEGER"),
    ("notifications", "category", "TEXT"),
    ("notifications", "archived", "INTEGER NOT NULL DEFAULT 0"),
    ("notifications", "expires_ms", "INTEGER"),
];

/// Indexes over added columns. Only notifications that expire are in `notifications_expiring`,
/// so the expiry sweep reads what is due and nothing else.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS notifications_expiring ON notifications (expires_ms)
    WHERE expires_ms IS NOT NULL;
";

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in ADDED_COLUMNS {
        let present = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// Files made before history was keyed by its events had `notifications` keyed by `id`, with
/// its own per-user index and a copy of each text. This moves such a file to the present layout
/// in one transaction: the rows keep their text (as a `body` of their own), and the
/// `notification` event of any notification that retention had already taken out of the log
/// comes back, past retention, so that history can be found through the log.
fn key_history_by_event(conn: &Connection) -> rusqlite::Result<()> {
    let keyed_by_event = conn
        .prepare("SELECT pk FROM pragma_table_info('notifications') WHERE name = 'seq'")?
        .query_row([], |row| row.get::<_, i64>(0))?
        == 1;
    if keyed_by_event {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         CREATE TABLE notifications_by_event {NOTIFICATIONS_COLUMNS};
         INSERT INTO notifications_by_event
             (seq, id, user_id, body, read, category, archived, expires_ms)
             SELECT seq, id, user_id, body, read, category, archived, expires_ms
             FROM notifications;
         INSERT INTO events (seq, user_id, name, data, created_ms, subject, expires_ms)
             SELECT seq, user_id, 'notification', body, 0, id, expires_ms FROM notifications n
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = n.seq);
         DROP TABLE notifications;
         ALTER TABLE notifications_by_event RENAME TO notifications;
         COMMIT;"
    ))
}

/// Settings for the single writing connection; creates the schema.
pub fn prepare_writer(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Statement journals (a statement's undo) in memory, not in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (`checkpoint`), not inside a commit, once the log is
    // long enough, which each commit reports (the hook goes after the pragma, which replaces it).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    super::checkpoint::count_frames(conn);
    // A log started over keeps its file (reusing it costs nothing; cutting it back stalls the
    // commit that does it), unless an unusual burst grew it past this.
    conn.pragma_update(None, "journal_size_limit", 256 << 20)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS notifications {NOTIFICATIONS_COLUMNS}"
    ))?;
    add_missing_columns(conn)?;
    key_history_by_event(conn)?;
    conn.execute_batch(PUSH_SCHEMA)?;
    conn.execute_batch(INDEXES)
}

/// The writer's page cache (KiB) for ordinary groups: SQLite's default.
const CACHE_KIB: i64 = 2_000;
/// The page cache (KiB) while a group holds a publish to many users: one such transaction
/// touches thousands of index pages, which would otherwise be written to the log twice (spilled
/// before the commit, then again at it). A cache this big costs ordinary commits time, so it is
/// only this large for those groups.
const BULK_CACHE_KIB: i64 = 32_768;

/// Sizes the writer's page cache for a group with (`bulk`) or without a publish to many.
pub fn size_cache_for(conn: &Connection, bulk: bool) -> rusqlite::Result<()> {
    let kib = if bulk { BULK_CACHE_KIB } else { CACHE_KIB };
    conn.pragma_update(None, "cache_size", -kib)
}

/// Settings for a reading connection: WAL readers never block the writer.
pub fn prepare_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", "ON")
}

/// The newest id ever issued: the log's largest `seq`, or what `meta` remembers from before
/// retention removed it.
pub fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM events")?
        .query_row([], |row| row.get(0))?;
    Ok(meta(conn, "last_seq")?.max(newest.unwrap_or(0).max(0) as u64))
}

/// How many events are replayable: those after `pruned_through`.
pub fn replayable_events(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM events WHERE seq > (SELECT value FROM meta WHERE name = 'pruned_through')",
    )?
    .query_row([], |row| row.get::<_, i64>(0))
    .map(|count| count.max(0) as u64)
}

/// The oldest replayable event's id, if any.
pub fn oldest_replayable(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT MIN(seq) FROM events WHERE seq > (SELECT value FROM meta WHERE name = 'pruned_through')",
    )?
    .query_row([], |row| row.get::<_, Option<i64>>(0))
    .map(|seq| seq.map(|seq| seq.max(0) as u64))
}

/// Reads one `meta` value inside the caller's transaction.
pub fn meta(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
        row.get::<_, i64>(0)
    })
    .map(|value| value.max(0) as u64)
}
