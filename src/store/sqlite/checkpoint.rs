//! Copies the write-ahead log back into the database file without making publishes wait: a
//! thread of its own, at a lower priority than request handling, runs small passive
//! checkpoints beside the writer once the log is past a mebibyte, and asks the writer to copy a
//! short tail between two commits so the log can start over
//! (docs/architecture.md#the-sqlite-store).

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use crate::store::StoreError;

/// The least time between two background checkpoints: each one fsyncs the database file. Short
/// enough that one checkpoint's burst of copying and syncing stays small: every 2 s, each one
/// held publishes up for several milliseconds (BENCHMARKS.md, "Issue 16, fifth step").
const MIN_GAP: Duration = Duration::from_millis(250);
/// WAL frames (pages, 4 KiB by default) below which the log is left as it is: 1 MiB. Copying a
/// shorter log gains nothing, and costs three fsyncs instead of none: the checkpoint syncs the
/// log and the database file, and the next commit, starting the log over, syncs its new header
/// before its own frames. At a few commits a second every commit paid all three
/// (BENCHMARKS.md, "Issue 16, fifteenth step").
const MIN_FRAMES: i64 = 256;
/// WAL frames past which the log should start over: 16 MiB.
pub(super) const RESTART_FRAMES: i64 = 4_096;
/// What the writer may have appended during a pass for the tail to count as short: 1 MiB.
const SHORT_TAIL: i64 = 256;
/// Passes per background checkpoint before leaving the rest for the next one.
const MAX_PASSES: u32 = 12;

/// The writer's end: [`Checkpointer::nudge`] after commits, then
/// [`Checkpointer::finish_if_asked`]; [`Checkpointer::stop`] on close.
pub(super) struct Checkpointer {
    nudges: Option<SyncSender<()>>,
    /// When the last nudge was sent: the thread is woken at most once per [`MIN_GAP`].
    last_nudge: Option<Instant>,
    /// Set by the thread when the writer should copy the log's short tail.
    tail_is_short: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to `path` and starts the thread.
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (nudges, received) = mpsc::sync_channel(1);
        let tail_is_short = Arc::new(AtomicBool::new(false));
        let ask_writer = tail_is_short.clone();
        let thread = std::thread::Builder::new()
            .name("herald-checkpoint".into())
            .spawn(move || {
                lower_priority();
                run(&conn, &received, &ask_writer)
            })
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {error}"))
            })?;
        Ok(Self {
            nudges: Some(nudges),
            last_nudge: None,
            tail_is_short,
            thread: Some(thread),
        })
    }

    /// After a commit that left `frames` in the log ([`frames_in_log`]): asks for a checkpoint
    /// soon if the log holds [`MIN_FRAMES`] or more; never blocks. Wakes the thread at most once
    /// per [`MIN_GAP`], the least time between its checkpoints anyway, not after every commit as
    /// it did (BENCHMARKS.md, "Issue 16, fourth step").
    pub fn nudge(&mut self, frames: i64) {
        self.nudge_at(Instant::now(), frames);
    }

    /// [`Self::nudge`] as of `now`.
    fn nudge_at(&mut self, now: Instant, frames: i64) {
        if frames < MIN_FRAMES
            || self
                .last_nudge
                .is_some_and(|last| now.duration_since(last) < MIN_GAP)
        {
            return;
        }
        self.last_nudge = Some(now);
        if let Some(nudges) = &self.nudges {
            match nudges.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the checkpoint thread has stopped; the WAL will grow");
                }
            }
        }
    }

    /// On the writer's connection, between commits: copies the log's short tail when the
    /// thread asked for it, so that the next commit starts the log over.
    pub fn finish_if_asked(&self, writer: &Connection) {
        if self.tail_is_short.swap(false, Ordering::AcqRel) {
            if let Err(error) = passive(writer) {
                tracing::warn!(%error, "could not copy the end of the WAL; the next try will");
            }
        }
    }

    /// Ends the thread after any checkpoint under way.
    pub fn stop(&mut self) {
        self.nudges = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

thread_local! {
    /// The frames in the log after the last commit on this thread, as SQLite's WAL hook gives
    /// them (a thread's, since the hook is a plain function: the writer commits on one thread).
    static FRAMES_IN_LOG: Cell<i64> = const { Cell::new(0) };
}

/// Has SQLite report the log's length after each commit on `conn` ([`frames_in_log`]). Set it
/// after `wal_autocheckpoint`, which replaces the hook.
pub fn count_frames(conn: &Connection) {
    conn.wal_hook(Some(record_frames));
}

fn record_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    FRAMES_IN_LOG.with(|count| count.set(frames.into()));
    Ok(())
}

/// The frames in the log after the last commit on this thread, on a connection given to
/// [`count_frames`].
pub fn frames_in_log() -> i64 {
    FRAMES_IN_LOG.with(Cell::get)
}

fn run(conn: &Connection, nudges: &Receiver<()>, tail_is_short: &AtomicBool) {
    let mut pending = false;
    loop {
        if !pending && nudges.recv().is_err() {
            return;
        }
        match copy_most(conn) {
            Ok(true) => tail_is_short.store(true, Ordering::Release),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "a WAL checkpoint failed; the next one will retry")
            }
        }
        // Wait out the gap, remembering nudges and leaving at once when the writer stops.
        let finished = Instant::now();
        pending = false;
        loop {
            let left = MIN_GAP.saturating_sub(finished.elapsed());
            if left.is_zero() {
                break;
            }
            match nudges.recv_timeout(left) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Puts the calling thread in `SCHED_BATCH` at niceness 10: checkpoints still make progress
/// under full load, but never ahead of a publish. Where the OS refuses, they run at the
/// server's priority, and say so.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    // thread-priority maps its 0..=99 onto niceness 19..=-20: 22 is niceness 10 (the test
    // below reads it back from /proc).
    let lowered = ThreadPriorityValue::try_from(22u8).map(ThreadPriority::Crossplatform);
    let outcome = lowered
        .map_err(|error| format!("{error:?}"))
        .and_then(|priority| {
            set_thread_priority_and_policy(thread_native_id(), priority, batch)
                .map_err(|error| format!("{error:?}"))
        });
    if let Err(error) = outcome {
        tracing::warn!(%error, "checkpoints run at the server's priority: cannot lower it");
    }
}

/// Copies the log in passes; answers whether it is long and what is left of it is short.
fn copy_most(conn: &Connection) -> rusqlite::Result<bool> {
    let mut frames = passive(conn)?;
    for _ in 1..MAX_PASSES {
        if frames <= RESTART_FRAMES {
            return Ok(false);
        }
        // A pass copies only the newest version of each page, faster than the writer appends,
        // so each pass leaves a shorter tail than the one before.
        let before = frames;
        frames = passive(conn)?;
        if frames > RESTART_FRAMES && frames - before <= SHORT_TAIL {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One passive pass: copies what no reader still needs, up to where the log ended when the
/// pass began, without blocking the writer; answers how many frames the log then held.
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A database in WAL mode without automatic checkpoints, and its writing connection.
    pub(in crate::store::sqlite) fn wal_database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = Connection::open(dir.path().join("t.db")).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
            )
            .expect("schema");
        (dir, writer)
    }

    /// Rows in [`wal_database`]'s table, as `conn` sees them.
    pub(in crate::store::sqlite) fn rows_in_t(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .expect("count")
    }

    fn frames_after_a_small_write(writer: &Connection) -> i64 {
        writer
            .execute("INSERT INTO t (v) VALUES (randomblob(100))", [])
            .expect("insert");
        writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .expect("checkpoint")
    }

    #[test]
    fn a_long_log_is_copied_in_the_background_and_the_writer_starts_it_over() {
        let (dir, writer) = wal_database();
        // About 40 MiB of log: well past RESTART_FRAMES.
        writer.execute_batch("BEGIN").expect("begin");
        for _ in 0..10_000 {
            writer
                .execute("INSERT INTO t (v) VALUES (randomblob(4000))", [])
                .expect("insert");
        }
        writer.execute_batch("COMMIT").expect("commit");

        let background = Connection::open(dir.path().join("t.db")).expect("open");
        assert!(
            copy_most(&background).expect("copy"),
            "nothing was appended meanwhile, so the tail is short"
        );
        let checkpointer = Checkpointer {
            nudges: None,
            last_nudge: None,
            tail_is_short: Arc::new(AtomicBool::new(true)),
            thread: None,
        };
        checkpointer.finish_if_asked(&writer);
        assert!(!checkpointer.tail_is_short.load(Ordering::Acquire));
        let frames = frames_after_a_small_write(&writer);
        assert!(frames < 10, "the log started over, {frames} frames");
        assert_eq!(rows_in_t(&writer), 10_001);
    }

    /// A checkpointer whose nudges land in the receiver returned, with no thread to wake.
    fn without_thread() -> (Checkpointer, Receiver<()>) {
        let (nudges, received) = mpsc::sync_channel(1);
        let checkpointer = Checkpointer {
            nudges: Some(nudges),
            last_nudge: None,
            tail_is_short: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        (checkpointer, received)
    }

    #[test]
    fn commits_in_a_row_wake_the_thread_once_per_gap() {
        let (mut checkpointer, received) = without_thread();
        // Commits 1,000 times in one gap, at instants given (not read from the clock, which a
        // loaded machine could stretch past the gap).
        let start = Instant::now();
        let mut wakes = 0;
        for n in 0..1_000 {
            checkpointer.nudge_at(start + MIN_GAP * n / 1_000, MIN_FRAMES + i64::from(n));
            wakes += received.try_iter().count();
        }
        assert_eq!(wakes, 1);
        checkpointer.nudge_at(start + MIN_GAP, MIN_FRAMES);
        assert_eq!(
            received.try_iter().count(),
            1,
            "a gap later, the next commit wakes it"
        );
    }

    #[test]
    fn a_log_under_a_mebibyte_does_not_wake_the_thread() {
        let (mut checkpointer, received) = without_thread();
        let start = Instant::now();
        for n in 0..10 {
            checkpointer.nudge_at(start + MIN_GAP * n, MIN_FRAMES - 1);
        }
        assert_eq!(
            received.try_iter().count(),
            0,
            "gaps apart, but a short log"
        );
        checkpointer.nudge_at(start + MIN_GAP * 10, MIN_FRAMES);
        assert_eq!(received.try_iter().count(), 1);
    }

    #[test]
    fn the_hook_counts_the_frames_each_commit_leaves_in_the_log() {
        let (_dir, writer) = wal_database();
        count_frames(&writer);
        let mut seen = Vec::new();
        for rows in [1, 1, 50] {
            writer.execute_batch("BEGIN").expect("begin");
            for _ in 0..rows {
                writer
                    .execute("INSERT INTO t (v) VALUES (randomblob(4000))", [])
                    .expect("insert");
            }
            writer.execute_batch("COMMIT").expect("commit");
            seen.push(frames_in_log());
        }
        // What SQLite itself says the log holds (a checkpoint pass answers it).
        let in_log = passive(&writer).expect("checkpoint");
        assert_eq!(seen.last(), Some(&in_log));
        assert!(
            seen[0] < seen[1] && seen[1] < seen[2],
            "each commit adds frames: {seen:?}"
        );
        assert!(
            seen[2] - seen[1] >= 50,
            "a page for each 4 KB row: {seen:?}"
        );
    }

    #[test]
    fn the_writer_s_connection_reports_its_log_s_length_after_each_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = Connection::open(dir.path().join("herald.db")).expect("open");
        crate::store::sqlite::schema::prepare_writer(&writer, crate::store::SyncMode::Normal)
            .expect("prepare");
        writer
            .execute("INSERT INTO meta (name, value) VALUES ('test', 1)", [])
            .expect("insert");
        let in_log = passive(&writer).expect("checkpoint");
        assert!(in_log > 0);
        assert_eq!(frames_in_log(), in_log);
    }

    #[test]
    fn the_checkpoint_thread_runs_batch_at_niceness_10() {
        let (nice, policy) = std::thread::spawn(|| {
            lower_priority();
            // /proc/thread-self/stat: after the name in parentheses, field 19 is the
            // niceness and field 41 the scheduling policy (3: SCHED_BATCH).
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            let fields: Vec<&str> = stat[stat.rfind(')').expect("name") + 2..]
                .split(' ')
                .collect();
            (fields[19 - 3].to_owned(), fields[41 - 3].to_owned())
        })
        .join()
        .expect("thread");
        assert_eq!((nice.as_str(), policy.as_str()), ("10", "3"));
    }

    #[test]
    fn a_short_log_is_left_alone() {
        let (dir, writer) = wal_database();
        frames_after_a_small_write(&writer);
        let background = Connection::open(dir.path().join("t.db")).expect("open");
        assert!(!copy_most(&background).expect("copy"));
    }
}
