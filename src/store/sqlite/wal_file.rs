//! The write-ahead log's file, made as large at open as one cycle of the log fills, so that a
//! commit overwrites space the file already has. A commit that grows the file changes its size,
//! and its fsync then writes the inode too: one more round trip to the disk before a publish is
//! answered, for every commit of the log's first cycle after each start
//! (docs/architecture.md#the-sqlite-store).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use rusqlite::Connection;

use super::checkpoint::RESTART_FRAMES;

/// Frames the file is made to hold: the log starts over once a checkpoint has copied it past
/// [`RESTART_FRAMES`], and the writer appends meanwhile; at 5,000 publishes a second the file
/// reached about 1.5 times that (BENCHMARKS.md, "Issue 16, seventh step").
const RESERVED_FRAMES: u64 = RESTART_FRAMES as u64 * 3 / 2;
/// A frame's header, before its page.
const FRAME_HEADER: u64 = 24;
/// Zeros written at a time.
const CHUNK: usize = 1 << 20;

/// Grows the log of the database at `database` (which `writer` has open, and no other
/// connection yet) with zeros to [`RESERVED_FRAMES`] frames, and syncs it, if it is shorter.
/// The log stays valid: SQLite reads a log up to its first frame that does not check out, and
/// zeros never do. A log that cannot be grown (a full disk) is left to grow as commits need; the
/// server starts anyway.
pub fn reserve(writer: &Connection, database: &Path) {
    // SQLite names a database's log after it.
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let wal = Path::new(&wal);
    let page_size = match writer.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0)) {
        Ok(size) => size.max(512) as u64,
        Err(error) => {
            tracing::warn!(%error, "cannot read the page size; the WAL grows as it is written");
            return;
        }
    };
    let wanted = RESERVED_FRAMES * (FRAME_HEADER + page_size);
    if let Err(error) = grow_to(wal, wanted) {
        tracing::warn!(%error, path = %wal.display(), "cannot make room in the WAL; it grows as it is written");
    }
}

/// Appends zeros to the file at `path` until it is `wanted` bytes long, then syncs it.
fn grow_to(path: &Path, wanted: u64) -> std::io::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    let mut length = file.metadata()?.len();
    if length >= wanted {
        return Ok(());
    }
    let zeros = vec![0; CHUNK];
    while length < wanted {
        let step = (wanted - length).min(CHUNK as u64) as usize;
        file.write_all(&zeros[..step])?;
        length += step as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::checkpoint::tests::{rows_in_t, wal_database};

    fn file_length(path: &Path) -> u64 {
        std::fs::metadata(path).expect("metadata").len()
    }

    #[test]
    fn a_log_left_by_a_crash_keeps_every_commit_once_grown() {
        let (dir, writer) = wal_database();
        for n in 0..100 {
            writer
                .execute("INSERT INTO t (v) VALUES (?1)", [format!("row {n}")])
                .expect("insert");
        }
        // The files as a crash would leave them, with the writer still open: every commit is in
        // the log and none in the database file.
        let crashed = tempfile::tempdir().expect("temp dir");
        for name in ["t.db", "t.db-wal"] {
            std::fs::copy(dir.path().join(name), crashed.path().join(name)).expect("copy");
        }
        let wal = crashed.path().join("t.db-wal");
        let before = file_length(&wal);
        let wanted = before + 5 * CHUNK as u64 + 123;

        grow_to(&wal, wanted).expect("grow");

        assert_eq!(file_length(&wal), wanted);
        let reopened = Connection::open(crashed.path().join("t.db")).expect("reopen");
        let rows: Vec<String> = reopened
            .prepare("SELECT v FROM t ORDER BY id")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected: Vec<String> = (0..100).map(|n| format!("row {n}")).collect();
        assert_eq!(rows, expected);
        // And it takes new commits after them.
        reopened
            .execute("INSERT INTO t (v) VALUES ('after')", [])
            .expect("insert after");
        assert_eq!(rows_in_t(&reopened), 101);
    }

    #[test]
    fn a_log_already_long_enough_is_left_as_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        std::fs::write(&path, vec![7u8; 3000]).expect("write");

        grow_to(&path, 1000).expect("grow");

        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 3000]);
    }
}
