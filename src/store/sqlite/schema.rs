//! The SQLite schema and connection settings, applied on every open.

use rusqlite::Connection;

use crate::store::SyncMode;

/// Tables: `events` is the replay log (`user_id` NULL for announcements; `subject` the
/// notification an event is about, so a delete can take them all out of the log; `expires_ms`
/// when that notification expires); `notifications` is the per-user history with read and
/// archive state; `idempotency_keys` remembers recent publish keys (`user_id` '' for a
/// publish to many users, which no user id can be);
/// `meta` holds `last_seq` (at least the newest id issued before events were last removed, so
/// ids never repeat even when retention empties the log; see [`last_seq`]) and
/// `pruned_through` (the newest id retention has removed). Events are found by age through
/// `seq`, which grows with time, so the log needs no index on `created_ms`.
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

CREATE TABLE IF NOT EXISTS notifications (
    id      TEXT    PRIMARY KEY,
    user_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    body    TEXT    NOT NULL,
    read    INTEGER NOT NULL DEFAULT 0,
    category   TEXT,
    archived   INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, seq);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    notification TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('last_seq', 0), ('pruned_through', 0);
";

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
    // Checkpoints run on their own thread (`checkpoint`), not inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A log started over keeps its file (reusing it costs nothing; cutting it back stalls the
    // commit that does it), unless an unusual burst grew it past this.
    conn.pragma_update(None, "journal_size_limit", 256 << 20)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    add_missing_columns(conn)?;
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

/// Reads one `meta` value inside the caller's transaction.
pub fn meta(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
        row.get::<_, i64>(0)
    })
    .map(|value| value.max(0) as u64)
}
