//! The single writer: one thread owns the writing connection and commits what queued up in
//! groups (one transaction, one fsync). Ids are assigned here, dense and increasing; committed
//! events go to the dispatch thread in id order right after the group's replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::checkpoint::{self, Checkpointer};
use super::dispatch::Dispatcher;
use super::log::Log;
use super::sizes::HistorySizes;
use super::{ops, push, retention, schema};
use crate::domain::{
    EventId, IdempotencyKey, NewAnnouncement, NewNotification, Notification, NotificationPatch,
    UserId,
};
use crate::store::push::PushQueueing;
use crate::store::{
    Archived, BulkOutcome, CommittedEvent, Expired, MarkedRead, PublishOutcome, ReadAll, Retention,
    StoreError,
};

/// The most commands committed in one transaction.
const MAX_GROUP: usize = 512;

/// While commands keep coming, one group in this many also takes a tidy step.
const TIDY_EVERY: u32 = 16;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write the store asks of the writer thread.
pub(super) enum Command {
    Publish {
        user: UserId,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
        reply: Reply<PublishOutcome>,
    },
    PublishMany {
        users: Vec<UserId>,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
        reply: Reply<BulkOutcome>,
    },
    Broadcast {
        announcement: NewAnnouncement,
        reply: Reply<EventId>,
    },
    MarkRead {
        user: UserId,
        id: String,
        reply: Reply<MarkedRead>,
    },
    MarkAllRead {
        user: UserId,
        reply: Reply<ReadAll>,
    },
    Update {
        user: UserId,
        id: String,
        patch: NotificationPatch,
        reply: Reply<(Notification, EventId)>,
    },
    Delete {
        user: UserId,
        id: String,
        reply: Reply<EventId>,
    },
    SetArchived {
        user: UserId,
        id: String,
        archived: bool,
        reply: Reply<Archived>,
    },
    Expire {
        reply: Reply<Expired>,
    },
    Sweep {
        reply: Reply<()>,
    },
    /// Web Push: subscriptions, muted categories, and what became of pushes.
    Push(push::Write),
    /// Stop after everything queued before this; the reply comes once the files are tidy.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Sends a command's result, or the group's failure in its place when the group did not commit.
type SendResult = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A command's result, held until its group commits.
struct Done {
    /// Why the command failed, if it did.
    failure: Option<StoreError>,
    send: SendResult,
}

impl Done {
    fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Self {
        Self {
            failure: result.as_ref().err().cloned(),
            send: Box::new(move |failure| {
                let result = match failure {
                    Some(error) => Err(error.clone()),
                    None => result,
                };
                // A dropped receiver means the caller went away; the write stands regardless.
                let _ = reply.send(result);
            }),
        }
    }
}

pub(super) struct Writer {
    pub conn: Connection,
    pub shared: Arc<Shared>,
    /// Hands each committed group's events to the streams, off this thread.
    pub dispatcher: Dispatcher,
    pub retention: Retention,
    /// The id the next event gets.
    pub next_seq: u64,
    /// How many events the log holds (kept here so stats never count rows).
    pub retained: u64,
    /// Copies the WAL into the database file off this thread.
    pub checkpointer: Checkpointer,
    /// How many notifications each user has, so history is trimmed only when it must be.
    pub history_sizes: HistorySizes,
    /// The page cache is sized for groups with a publish to many (`schema::size_cache_for`).
    pub bulk_cache: bool,
    /// Queues Web Push jobs as notifications are stored; `None` while push is off.
    pub push: Option<PushQueueing>,
    /// Retention has put events past that are still to be deleted (`retention::tidy`): a group
    /// of its own takes a step when no command waits, and a busy writer's every
    /// [`TIDY_EVERY`]th group takes one too.
    pub tidy_left: bool,
    /// Groups committed since the last tidy step.
    pub groups_untidied: u32,
}

impl Writer {
    /// Runs until a `Close` command or until every sender is gone.
    pub fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // However the thread ends (even by a panic), readiness must then report the store gone.
        struct MarkClosed(Arc<Shared>);
        impl Drop for MarkClosed {
            fn drop(&mut self) {
                self.0.closed.store(true, Ordering::Release);
            }
        }
        let _closed_on_exit = MarkClosed(self.shared.clone());
        let mut closed_by = None;
        loop {
            let first = if self.tidy_left {
                match commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match commands.blocking_recv() {
                    Some(command) => Some(command),
                    None => break,
                }
            };
            let mut group = Vec::with_capacity(16);
            let mut next = first;
            while let Some(command) = next.take() {
                if let Command::Close { reply } = command {
                    closed_by = Some(reply);
                    break;
                }
                group.push(command);
                if group.len() < MAX_GROUP {
                    next = commands.try_recv().ok();
                }
            }
            if !group.is_empty() || (self.tidy_left && closed_by.is_none()) {
                self.commit_group(group);
            }
            if closed_by.is_some() {
                break;
            }
        }
        commands.close();
        self.dispatcher.stop();
        self.checkpointer.stop();
        if let Err(error) = self
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;")
        {
            tracing::warn!(%error, "could not checkpoint the write-ahead log on close");
        }
        if let Some(reply) = closed_by {
            let _ = reply.send(());
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let first_seq = self.next_seq;
        let mut events = Vec::new();
        let mut done = Vec::with_capacity(group.len());
        let outcome = self.write_group(group, &mut events, &mut done);
        match outcome {
            Ok((retained, pushes_queued)) => {
                if pushes_queued {
                    if let Some(push) = &self.push {
                        push.queued.notify_one();
                    }
                }
                self.retained = retained;
                self.shared.retained.store(self.retained, Ordering::Relaxed);
                self.shared.healthy.store(true, Ordering::Release);
                // A small group goes out before its replies, so that a publisher finds its
                // event dispatched when it wakes, and need not wait again. For a large one,
                // replies first: the publishers' tasks are then queued ahead of the thousands of
                // streams a broadcast wakes, instead of answering after all of them.
                let dispatched = self.dispatcher.dispatch_here(&events);
                for result in done {
                    (result.send)(None);
                }
                if !dispatched && !self.dispatcher.send(events) {
                    tracing::error!(
                        "the dispatch thread is gone: committed events reach no stream"
                    );
                    self.shared.closed.store(true, Ordering::Release);
                }
                self.checkpointer.nudge(checkpoint::frames_in_log());
                self.checkpointer.finish_if_asked(&self.conn);
            }
            Err(error) => {
                tracing::error!(%error, "a group of writes failed to commit");
                self.next_seq = first_seq;
                self.history_sizes.forget_all();
                // The next sweep starts over; a broken file is not retried in a loop.
                self.tidy_left = false;
                self.shared.healthy.store(false, Ordering::Release);
                for result in done {
                    (result.send)(Some(&error));
                }
            }
        }
    }

    /// Applies every command in one transaction; returns how many events the log then holds,
    /// and whether any push was queued.
    fn write_group(
        &mut self,
        group: Vec<Command>,
        events: &mut Vec<CommittedEvent>,
        done: &mut Vec<Done>,
    ) -> Result<(u64, bool), StoreError> {
        let now_ms = crate::domain::now_unix_ms();
        let retention = self.retention;
        // A group with no command is the writer's own: a tidy step while nothing waits.
        let idle = group.is_empty();
        let bulk = group
            .iter()
            .any(|command| matches!(command, Command::PublishMany { .. }));
        // The cache changes size only when the kind of group does: shrinking it throws its
        // pages away, which the next publish to many would read back in.
        if bulk != self.bulk_cache {
            schema::size_cache_for(&self.conn, bulk)?;
            self.bulk_cache = bulk;
        }
        let tx = Immediate::begin(&self.conn)?;
        let mut log = Log {
            next_seq: self.next_seq,
            events,
            now_ms,
            removed: 0,
            sweep_asked: false,
            history_sizes: &mut self.history_sizes,
            pruned_through: None,
            push: self.push.as_ref(),
            pushes_queued: 0,
        };
        let mut commands = group.into_iter();
        while let Some(command) = commands.next() {
            // Commands share the transaction without savepoints of their own (a savepoint copies
            // every page it touches aside first). A command refused for what it asked (an
            // unknown id, say) has written nothing, so the others stand; one that failed after
            // writing (a full disk, a broken file) fails its whole group instead.
            let before = (tx.total_changes(), log.next_seq, log.removed);
            let result = apply(&tx, &mut log, command, retention);
            let failure = result.failure.clone();
            done.push(result);
            if let Some(error) = failure {
                let wrote =
                    tx.is_autocommit() || (tx.total_changes(), log.next_seq, log.removed) != before;
                if wrote {
                    done.extend(commands.map(|command| refuse(command, error.clone())));
                    return Err(error);
                }
            }
        }
        let next_seq = log.next_seq;
        let appended = next_seq - self.next_seq;
        let mut retained = (self.retained + appended).saturating_sub(log.removed);
        let sweep_asked = log.sweep_asked;
        let pushes_queued = log.pushes_queued > 0;
        // The newest id is the log's largest `seq`; `meta.last_seq` only has to remember it
        // when events are removed (they might be the newest), which saves a page per commit.
        let mut removing = false;
        if appended > 0 && retained > retention.max_events {
            removing = true;
            retained -= retention::prune_oldest(&tx, retained - retention.max_events)?;
        }
        let mut tidy_left = self.tidy_left;
        if sweep_asked {
            removing = true;
            retained = retained.saturating_sub(retention::sweep(&tx, now_ms, retention)?);
            tidy_left = true;
        }
        let tidy_now = tidy_left && (idle || self.groups_untidied.saturating_add(1) >= TIDY_EVERY);
        if tidy_now {
            tidy_left = retention::tidy(&tx, now_ms, retention)?;
        }
        if removing {
            tx.prepare_cached("UPDATE meta SET value = MAX(value, ?1) WHERE name = 'last_seq'")?
                .execute([next_seq as i64 - 1])?;
        }
        tx.commit()?;
        self.next_seq = next_seq;
        self.tidy_left = tidy_left;
        self.groups_untidied = if tidy_now {
            0
        } else {
            self.groups_untidied.saturating_add(1)
        };
        Ok((retained, pushes_queued))
    }
}

/// The writer's transaction. `BEGIN IMMEDIATE` and `COMMIT` run as cached statements: parsed
/// afresh for each group, as rusqlite's `Transaction` does, they cost about 3,800 instructions a
/// commit, and caching them saves about 3,100 (BENCHMARKS.md, "Issue 16, tenth step"). Rolled
/// back if dropped before its commit.
struct Immediate<'c> {
    conn: &'c Connection,
    committed: bool,
}

impl<'c> Immediate<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self {
            conn,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for Immediate<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        // A statement `OR ROLLBACK` may have ended the transaction already.
        if !self.committed && !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(%error, "could not roll back a failed group");
            }
        }
    }
}

/// A command's answer when its group failed before reaching it.
fn refuse(command: Command, error: StoreError) -> Done {
    match command {
        Command::Publish { reply, .. } => Done::new(reply, Err(error)),
        Command::PublishMany { reply, .. } => Done::new(reply, Err(error)),
        Command::Broadcast { reply, .. } => Done::new(reply, Err(error)),
        Command::MarkRead { reply, .. } => Done::new(reply, Err(error)),
        Command::MarkAllRead { reply, .. } => Done::new(reply, Err(error)),
        Command::Update { reply, .. } => Done::new(reply, Err(error)),
        Command::Delete { reply, .. } => Done::new(reply, Err(error)),
        Command::SetArchived { reply, .. } => Done::new(reply, Err(error)),
        Command::Expire { reply } => Done::new(reply, Err(error)),
        Command::Sweep { reply } => Done::new(reply, Err(error)),
        Command::Push(write) => match write {
            push::Write::Subscribe { reply, .. } => Done::new(reply, Err(error)),
            push::Write::Unsubscribe { reply, .. } => Done::new(reply, Err(error)),
            push::Write::SetMuted { reply, .. } => Done::new(reply, Err(error)),
            push::Write::Settle { reply, .. } => Done::new(reply, Err(error)),
        },
        Command::Close { .. } => unreachable!("Close ends the group before it is applied"),
    }
}

fn apply(tx: &Connection, log: &mut Log<'_>, command: Command, retention: Retention) -> Done {
    match command {
        Command::Publish {
            user,
            notification,
            key,
            reply,
        } => Done::new(
            reply,
            ops::publish(tx, log, user, notification, key, retention),
        ),
        Command::PublishMany {
            users,
            notification,
            key,
            reply,
        } => Done::new(
            reply,
            ops::publish_many(tx, log, users, notification, key, retention),
        ),
        Command::Broadcast {
            announcement,
            reply,
        } => Done::new(reply, ops::broadcast(tx, log, announcement)),
        Command::MarkRead { user, id, reply } => {
            Done::new(reply, ops::mark_read(tx, log, user, &id))
        }
        Command::MarkAllRead { user, reply } => Done::new(reply, ops::mark_all_read(tx, log, user)),
        Command::Update {
            user,
            id,
            patch,
            reply,
        } => Done::new(reply, ops::update(tx, log, user, &id, &patch)),
        Command::Delete { user, id, reply } => Done::new(reply, ops::delete(tx, log, user, &id)),
        Command::SetArchived {
            user,
            id,
            archived,
            reply,
        } => Done::new(reply, ops::set_archived(tx, log, user, &id, archived)),
        Command::Expire { reply } => Done::new(reply, ops::expire(tx, log)),
        Command::Sweep { reply } => {
            log.sweep_asked = true;
            Done::new(reply, Ok(()))
        }
        Command::Push(write) => apply_push(tx, log, write),
        Command::Close { .. } => unreachable!("Close ends the group before it is applied"),
    }
}

fn apply_push(tx: &Connection, log: &Log<'_>, write: push::Write) -> Done {
    match write {
        push::Write::Subscribe {
            user,
            subscription,
            max_per_user,
            reply,
        } => Done::new(
            reply,
            push::subscribe(tx, log.now_ms, &user, &subscription, max_per_user),
        ),
        push::Write::Unsubscribe { user, id, reply } => {
            Done::new(reply, push::unsubscribe(tx, &user, &id))
        }
        push::Write::SetMuted {
            user,
            categories,
            reply,
        } => Done::new(reply, push::set_muted(tx, &user, &categories)),
        push::Write::Settle { outcomes, reply } => Done::new(reply, push::settle(tx, &outcomes)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::store::{EventSink, SyncMode};

    /// Keeps the ids of what it is handed.
    #[derive(Default)]
    struct Ids(Mutex<Vec<EventId>>);

    impl EventSink for Ids {
        fn resume_after(&self, _newest: EventId) {}
        fn dispatch(&self, events: &[CommittedEvent]) {
            let mut ids = self.0.lock().unwrap();
            ids.extend(events.iter().map(|event| event.id));
        }
    }

    fn writer(dir: &std::path::Path, sink: Arc<Ids>) -> Writer {
        let path = dir.join("herald.db");
        let conn = Connection::open(&path).unwrap();
        schema::prepare_writer(&conn, SyncMode::Normal).unwrap();
        Writer {
            conn,
            shared: Arc::new(super::super::Shared::default()),
            dispatcher: Dispatcher::start(sink).unwrap(),
            retention: Retention {
                max_age: Duration::from_secs(3600),
                max_events: 1_000,
                history_per_user: 100,
                idempotency_window: Duration::from_secs(3600),
            },
            next_seq: 1,
            retained: 0,
            checkpointer: Checkpointer::start(&path).unwrap(),
            history_sizes: HistorySizes::default(),
            bulk_cache: false,
            push: None,
            tidy_left: false,
            groups_untidied: 0,
        }
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn note(title: &str) -> NewNotification {
        NewNotification::parse(None, Some(title), Some("body"), None).unwrap()
    }

    fn publish(
        to: &str,
        title: &str,
    ) -> (
        Command,
        oneshot::Receiver<Result<PublishOutcome, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let command = Command::Publish {
            user: user(to),
            notification: note(title),
            key: None,
            reply,
        };
        (command, answer)
    }

    fn rows(writer: &Writer, table: &str) -> i64 {
        writer
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    #[test]
    fn a_command_refused_for_what_it_asked_leaves_the_rest_of_its_group_standing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Ids::default());
        let mut writer = writer(dir.path(), sink.clone());
        let (first, mut first_answer) = publish("alice", "one");
        let (reply, mut refused) = oneshot::channel();
        let unknown = Command::MarkRead {
            user: user("alice"),
            id: "no-such-notification".into(),
            reply,
        };
        let (last, mut last_answer) = publish("bob", "two");

        writer.commit_group(vec![first, unknown, last]);

        assert!(
            matches!(first_answer.try_recv(), Ok(Ok(PublishOutcome::Created(_, id))) if id == EventId::from_seq(1))
        );
        assert!(matches!(
            refused.try_recv(),
            Ok(Err(StoreError::NotFound(_)))
        ));
        assert!(
            matches!(last_answer.try_recv(), Ok(Ok(PublishOutcome::Created(_, id))) if id == EventId::from_seq(2))
        );
        assert_eq!(
            (rows(&writer, "notifications"), rows(&writer, "events")),
            (2, 2)
        );
        writer.dispatcher.stop();
        assert_eq!(
            *sink.0.lock().unwrap(),
            [EventId::from_seq(1), EventId::from_seq(2)]
        );
    }

    #[test]
    fn a_command_that_fails_after_writing_fails_its_whole_group_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Ids::default());
        let mut writer = writer(dir.path(), sink.clone());
        // A real failure halfway through a publish to many: mallory's notification is refused
        // after bob's was written.
        writer
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse_mallory AFTER INSERT ON notifications
                 WHEN NEW.user_id = 'mallory' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let (first, mut first_answer) = publish("alice", "one");
        let (reply, mut many_answer) = oneshot::channel();
        let many = Command::PublishMany {
            users: vec![user("bob"), user("mallory")],
            notification: note("two"),
            key: None,
            reply,
        };
        let (last, mut last_answer) = publish("carol", "three");

        writer.commit_group(vec![first, many, last]);

        assert!(matches!(first_answer.try_recv(), Ok(Err(_))));
        assert!(matches!(many_answer.try_recv(), Ok(Err(_))));
        assert!(matches!(last_answer.try_recv(), Ok(Err(_))));
        assert_eq!(
            (rows(&writer, "notifications"), rows(&writer, "events")),
            (0, 0)
        );

        // The ids the failed group took are given out again, and the next group commits.
        let (again, mut again_answer) = publish("alice", "four");
        writer.commit_group(vec![again]);
        assert!(
            matches!(again_answer.try_recv(), Ok(Ok(PublishOutcome::Created(_, id))) if id == EventId::from_seq(1))
        );
        writer.dispatcher.stop();
        assert_eq!(*sink.0.lock().unwrap(), [EventId::from_seq(1)]);
    }

    fn pruned_through(writer: &Writer) -> i64 {
        schema::meta(&writer.conn, "pruned_through").unwrap() as i64
    }

    /// A writer whose log holds 5,000 events for 100 users, all older than the retention age,
    /// of which history keeps the newest 10 of each user's.
    fn writer_with_old_events(dir: &std::path::Path) -> Writer {
        let mut writer = writer(dir, Arc::new(Ids::default()));
        writer.retention.max_events = 1_000_000;
        writer.retention.history_per_user = 10;
        let group = (0..5_000)
            .map(|n| publish(&format!("u{}", n % 100), "old").0)
            .collect();
        writer.commit_group(group);
        writer
            .conn
            .execute("UPDATE events SET created_ms = 0", [])
            .unwrap();
        writer
    }

    fn sweep() -> Command {
        let (reply, _answer) = oneshot::channel();
        Command::Sweep { reply }
    }

    #[test]
    fn a_sweep_puts_old_events_past_at_once_and_deletes_them_a_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_with_old_events(dir.path());
        assert_eq!(writer.shared.retained.load(Ordering::Relaxed), 5_000);

        writer.commit_group(vec![sweep()]);
        assert_eq!(pruned_through(&writer), 5_000);
        assert_eq!(writer.shared.retained.load(Ordering::Relaxed), 0);
        assert_eq!(schema::replayable_events(&writer.conn).unwrap(), 0);
        assert_eq!(rows(&writer, "events"), 5_000, "nothing deleted yet");

        // A busy writer takes a step with every TIDY_EVERY-th group (counted from here).
        writer.groups_untidied = 0;
        for n in 1..TIDY_EVERY {
            let (fresh, _answer) = publish("alice", &format!("fresh {n}"));
            writer.commit_group(vec![fresh]);
        }
        assert_eq!(rows(&writer, "events"), 5_000 + 15);
        let (fresh, _answer) = publish("alice", "fresh 16");
        writer.commit_group(vec![fresh]);
        // The first step's ids, none of which history needs (it keeps ids 4,001 to 5,000).
        let step = retention::TIDY_STEP;
        assert_eq!(rows(&writer, "events"), 5_000 + 16 - step);

        // The writer's own groups (no command) take the rest, one step each.
        let mut steps = 0;
        while writer.tidy_left {
            writer.commit_group(Vec::new());
            steps += 1;
        }
        assert_eq!(steps, (5_000 - step) / step);
        // Left: history's 10 per user (their events are how history is read), and the 16
        // fresh publishes, still replayable.
        assert_eq!(rows(&writer, "events"), 1_000 + 16);
        assert_eq!(writer.shared.retained.load(Ordering::Relaxed), 16);
        assert_eq!(schema::replayable_events(&writer.conn).unwrap(), 16);
    }

    #[test]
    fn the_writer_s_thread_deletes_what_a_sweep_left_while_nothing_waits() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_old_events(dir.path());
        let (commands, receiver) = mpsc::channel(16);
        let thread = std::thread::spawn(move || writer.run(receiver));
        let (reply, answer) = oneshot::channel();
        commands.blocking_send(Command::Sweep { reply }).unwrap();
        answer.blocking_recv().unwrap().unwrap();
        // The steps go on without another command; the file says where they got to, so a
        // restart goes on from there.
        let reader = Connection::open(dir.path().join("herald.db")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while schema::meta(&reader, "tidied_through").unwrap() != 5_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the deletes stopped at id {}",
                schema::meta(&reader, "tidied_through").unwrap()
            );
            std::thread::yield_now();
        }
        let events: i64 = reader
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(events, 1_000, "history's 10 a user are all that is left");
        let (reply, closed) = oneshot::channel();
        commands.blocking_send(Command::Close { reply }).unwrap();
        closed.blocking_recv().unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn old_idempotency_keys_are_deleted_a_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), Arc::new(Ids::default()));
        writer
            .conn
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
                 INSERT INTO idempotency_keys (user_id, key, notification, created_ms)
                 SELECT 'u', 'k' || i, 'n' || i, 0 FROM n;
                 INSERT INTO idempotency_keys VALUES ('u', 'fresh', 'n', 9223372036854775807);",
            )
            .unwrap();
        writer.commit_group(vec![sweep()]);
        let mut left = vec![rows(&writer, "idempotency_keys")];
        while writer.tidy_left {
            writer.commit_group(Vec::new());
            left.push(rows(&writer, "idempotency_keys"));
        }
        let step = retention::TIDY_STEP;
        let mut want: Vec<i64> = (0..=5_000 / step).map(|n| 5_001 - step * n).collect();
        // The last step took a whole step's worth, so one more looked and found none.
        want.push(1);
        assert_eq!(left, want);
    }
}
