//! The single writer: one thread owns the writing connection and commits what queued up in
//! groups (one transaction, one fsync). Ids are assigned here, dense and increasing; committed
//! events go to the sink in id order right after the group's replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::checkpoint::Checkpointer;
use crate::domain::{EventId, EventName, IdempotencyKey, NewAnnouncement, NewNotification, UserId};
use crate::store::{
    Audience, CommittedEvent, EventSink, MarkedRead, PublishOutcome, Retention, StoreError,
};

/// The most commands committed in one transaction.
const MAX_GROUP: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write the store asks of the writer thread.
pub(super) enum Command {
    Publish {
        user: UserId,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
        reply: Reply<PublishOutcome>,
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
        reply: Reply<u64>,
    },
    Sweep {
        reply: Reply<()>,
    },
    /// Stop after everything queued before this; the reply comes once the files are tidy.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A command's result, held until its group commits.
enum Done {
    Publish(Reply<PublishOutcome>, Result<PublishOutcome, StoreError>),
    Broadcast(Reply<EventId>, Result<EventId, StoreError>),
    MarkRead(Reply<MarkedRead>, Result<MarkedRead, StoreError>),
    MarkAllRead(Reply<u64>, Result<u64, StoreError>),
    Sweep(Reply<()>, Result<(), StoreError>),
}

impl Done {
    /// Sends the result, or `failure` in its place when the group did not commit.
    fn send(self, failure: Option<&StoreError>) {
        fn pick<T>(
            result: Result<T, StoreError>,
            failure: Option<&StoreError>,
        ) -> Result<T, StoreError> {
            match failure {
                Some(error) => Err(error.clone()),
                None => result,
            }
        }
        // A dropped receiver means the caller went away; the write stands regardless.
        match self {
            Self::Publish(tx, r) => drop(tx.send(pick(r, failure))),
            Self::Broadcast(tx, r) => drop(tx.send(pick(r, failure))),
            Self::MarkRead(tx, r) => drop(tx.send(pick(r, failure))),
            Self::MarkAllRead(tx, r) => drop(tx.send(pick(r, failure))),
            Self::Sweep(tx, r) => drop(tx.send(pick(r, failure))),
        }
    }
}

pub(super) struct Writer {
    pub conn: Connection,
    pub shared: Arc<Shared>,
    pub sink: Arc<dyn EventSink>,
    pub retention: Retention,
    /// The id the next event gets.
    pub next_seq: u64,
    /// How many events the log holds (kept here so stats never count rows).
    pub retained: u64,
    /// Copies the WAL into the database file off this thread.
    pub checkpointer: Checkpointer,
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
        while let Some(first) = commands.blocking_recv() {
            let mut group = Vec::with_capacity(16);
            let mut next = Some(first);
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
            if !group.is_empty() {
                self.commit_group(group);
            }
            if closed_by.is_some() {
                break;
            }
        }
        commands.close();
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
            Ok(retained) => {
                self.retained = retained;
                self.shared.retained.store(self.retained, Ordering::Relaxed);
                self.shared.healthy.store(true, Ordering::Release);
                // Replies first: the publishers' tasks are then queued ahead of the thousands
                // of streams a broadcast wakes, instead of answering after all of them.
                for result in done {
                    result.send(None);
                }
                self.sink.dispatch(&events);
                self.checkpointer.nudge();
                self.checkpointer.finish_if_asked(&self.conn);
            }
            Err(error) => {
                tracing::error!(%error, "a group of writes failed to commit");
                self.next_seq = first_seq;
                self.shared.healthy.store(false, Ordering::Release);
                for result in done {
                    result.send(Some(&error));
                }
            }
        }
    }

    /// Applies every command in one transaction; returns how many events the log then holds.
    fn write_group(
        &mut self,
        group: Vec<Command>,
        events: &mut Vec<CommittedEvent>,
        done: &mut Vec<Done>,
    ) -> Result<u64, StoreError> {
        let now_ms = unix_ms();
        let retention = self.retention;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut log = Log {
            next_seq: self.next_seq,
            events,
            now_ms,
        };
        for command in group {
            // Each command in its own savepoint: one failing leaves the others standing. (The
            // statements are prepared once: rusqlite's `Savepoint` parses its SQL every time.)
            tx.prepare_cached("SAVEPOINT command")?.execute([])?;
            let mark = (log.next_seq, log.events.len());
            let result = apply(&tx, &mut log, command, retention);
            if result.failed() {
                tx.prepare_cached("ROLLBACK TO command")?.execute([])?;
                log.next_seq = mark.0;
                log.events.truncate(mark.1);
            }
            tx.prepare_cached("RELEASE command")?.execute([])?;
            done.push(result);
        }
        let next_seq = log.next_seq;
        let appended = next_seq - self.next_seq;
        let mut retained = self.retained + appended;
        // The newest id is the log's largest `seq`; `meta.last_seq` only has to remember it
        // when events are removed (they might be the newest), which saves a page per commit.
        let mut removing = false;
        if appended > 0 && retained > retention.max_events {
            removing = true;
            retained -= prune_oldest(&tx, retained - retention.max_events)?;
        }
        if done.iter().any(|d| matches!(d, Done::Sweep(..))) {
            removing = true;
            sweep(&tx, now_ms, retention)?;
            // A sweep may remove any number of rows: count again (once a minute at most).
            retained = tx
                .query_row("SELECT COUNT(*) FROM events", [], |row| {
                    row.get::<_, i64>(0)
                })?
                .max(0) as u64;
        }
        if removing {
            tx.prepare_cached("UPDATE meta SET value = MAX(value, ?1) WHERE name = 'last_seq'")?
                .execute([next_seq as i64 - 1])?;
        }
        tx.commit()?;
        self.next_seq = next_seq;
        Ok(retained)
    }
}

/// The events a group appends, with the ids they take.
struct Log<'a> {
    next_seq: u64,
    events: &'a mut Vec<CommittedEvent>,
    now_ms: i64,
}

impl Log<'_> {
    fn append(
        &mut self,
        tx: &Connection,
        audience: Audience,
        name: EventName,
        data: String,
    ) -> Result<EventId, StoreError> {
        let seq = self.next_seq;
        let user = match &audience {
            Audience::User(user) => Some(user.as_str()),
            Audience::Everyone => None,
        };
        tx.prepare_cached(
            "INSERT INTO events (seq, user_id, name, data, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![seq as i64, user, name.as_str(), data, self.now_ms])?;
        self.next_seq += 1;
        let id = EventId::from_seq(seq);
        self.events.push(CommittedEvent {
            id,
            audience,
            name,
            data,
        });
        Ok(id)
    }
}

impl Done {
    fn failed(&self) -> bool {
        match self {
            Self::Publish(_, r) => r.is_err(),
            Self::Broadcast(_, r) => r.is_err(),
            Self::MarkRead(_, r) => r.is_err(),
            Self::MarkAllRead(_, r) => r.is_err(),
            Self::Sweep(_, r) => r.is_err(),
        }
    }
}

fn apply(tx: &Connection, log: &mut Log<'_>, command: Command, retention: Retention) -> Done {
    match command {
        Command::Publish {
            user,
            notification,
            key,
            reply,
        } => Done::Publish(reply, publish(tx, log, user, notification, key, retention)),
        Command::Broadcast {
            announcement,
            reply,
        } => Done::Broadcast(reply, broadcast(tx, log, announcement)),
        Command::MarkRead { user, id, reply } => {
            Done::MarkRead(reply, mark_read(tx, log, user, &id))
        }
        Command::MarkAllRead { user, reply } => {
            Done::MarkAllRead(reply, mark_all_read(tx, log, user))
        }
        Command::Sweep { reply } => Done::Sweep(reply, Ok(())),
        Command::Close { .. } => unreachable!("Close ends the group before it is applied"),
    }
}

fn publish(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    new: NewNotification,
    key: Option<IdempotencyKey>,
    retention: Retention,
) -> Result<PublishOutcome, StoreError> {
    if let Some(key) = &key {
        let since = log.now_ms - retention.idempotency_window.as_millis() as i64;
        let earlier: Option<String> = tx
            .prepare_cached(
                "SELECT notification FROM idempotency_keys
                 WHERE user_id = ?1 AND key = ?2 AND created_ms >= ?3",
            )?
            .query_row(params![user.as_str(), key.as_str(), since], |row| {
                row.get(0)
            })
            .optional()?;
        if let Some(earlier) = earlier {
            return Ok(PublishOutcome::Repeated(serde_json::from_str(&earlier)?));
        }
    }
    let notification = new.into_notification();
    let body = serde_json::to_string(&notification)?;
    let id = log.append(
        tx,
        Audience::User(user.clone()),
        EventName::Notification,
        body.clone(),
    )?;
    tx.prepare_cached(
        "INSERT INTO notifications (id, user_id, seq, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        notification.id,
        user.as_str(),
        id.major as i64,
        body
    ])?;
    if let Some(key) = &key {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (user_id, key, notification, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![user.as_str(), key.as_str(), body, log.now_ms])?;
    }
    // Keep the newest `history_per_user`; the writer is the only place history grows.
    tx.prepare_cached(
        "DELETE FROM notifications WHERE user_id = ?1 AND seq <= (
             SELECT seq FROM notifications WHERE user_id = ?1
             ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![user.as_str(), retention.history_per_user as i64])?;
    Ok(PublishOutcome::Created(notification, id))
}

fn broadcast(
    tx: &Connection,
    log: &mut Log<'_>,
    new: NewAnnouncement,
) -> Result<EventId, StoreError> {
    let announcement = new.into_announcement();
    let data = serde_json::to_string(&announcement)?;
    log.append(tx, Audience::Everyone, EventName::Announcement, data)
}

fn mark_read(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    id: &str,
) -> Result<MarkedRead, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE notifications SET read = 1 WHERE id = ?1 AND user_id = ?2 AND read = 0",
        )?
        .execute(params![id, user.as_str()])?;
    if changed == 0 {
        let exists = tx
            .prepare_cached("SELECT 1 FROM notifications WHERE id = ?1 AND user_id = ?2")?
            .exists(params![id, user.as_str()])?;
        return if exists {
            Ok(MarkedRead::AlreadyRead)
        } else {
            Err(StoreError::UNKNOWN_NOTIFICATION)
        };
    }
    let data = serde_json::json!({ "ids": [id] }).to_string();
    log.append(tx, Audience::User(user), EventName::Read, data)?;
    Ok(MarkedRead::Changed)
}

fn mark_all_read(tx: &Connection, log: &mut Log<'_>, user: UserId) -> Result<u64, StoreError> {
    let changed = tx
        .prepare_cached("UPDATE notifications SET read = 1 WHERE user_id = ?1 AND read = 0")?
        .execute([user.as_str()])? as u64;
    if changed > 0 {
        let data = serde_json::json!({ "all": true }).to_string();
        log.append(tx, Audience::User(user), EventName::Read, data)?;
    }
    Ok(changed)
}

/// Removes the `count` oldest events; returns how many went.
fn prune_oldest(tx: &Connection, count: u64) -> Result<u64, StoreError> {
    let newest_removed: Option<i64> = tx
        .query_row(
            "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?1",
            [count as i64 - 1],
            |row| row.get(0),
        )
        .optional()?;
    let Some(newest_removed) = newest_removed else {
        return Ok(0);
    };
    let removed = tx.execute("DELETE FROM events WHERE seq <= ?1", [newest_removed])?;
    note_pruned_through(tx, newest_removed)?;
    Ok(removed as u64)
}

/// Removes events older than the retention age and idempotency keys past their window.
fn sweep(tx: &Connection, now_ms: i64, retention: Retention) -> Result<(), StoreError> {
    let cutoff = now_ms - retention.max_age.as_millis() as i64;
    if let Some(newest_removed) = newest_older_than(tx, cutoff)? {
        tx.execute("DELETE FROM events WHERE seq <= ?1", [newest_removed])?;
        note_pruned_through(tx, newest_removed)?;
    }
    let key_cutoff = now_ms - retention.idempotency_window.as_millis() as i64;
    tx.execute(
        "DELETE FROM idempotency_keys WHERE created_ms < ?1",
        [key_cutoff],
    )?;
    Ok(())
}

/// The newest event created before `cutoff`. Ids grow with time, so this bisects `seq` with
/// a few primary-key lookups instead of keeping an index on `created_ms`. (Should the clock
/// step back, the order of ids is the true order, and events go by it.)
fn newest_older_than(tx: &Connection, cutoff: i64) -> rusqlite::Result<Option<i64>> {
    let first_from = |seq: i64| -> rusqlite::Result<Option<(i64, i64)>> {
        tx.prepare_cached(
            "SELECT seq, created_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        )?
        .query_row([seq], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
    };
    let (oldest, newest): (Option<i64>, Option<i64>) =
        tx.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(None);
    };
    let created = |seq| Ok::<_, rusqlite::Error>(first_from(seq)?.map_or(i64::MAX, |(_, at)| at));
    if created(oldest)? >= cutoff {
        return Ok(None);
    }
    if created(newest)? < cutoff {
        return Ok(Some(newest));
    }
    // `old` is an event before the cutoff; no event at or after `young` is.
    let (mut old, mut young) = (oldest, newest);
    while young - old > 1 {
        let mid = old + (young - old) / 2;
        match first_from(mid)? {
            Some((seq, at)) if seq < young && at < cutoff => old = seq,
            _ => young = mid,
        }
    }
    Ok(Some(old))
}

fn note_pruned_through(tx: &Connection, seq: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE name = 'pruned_through'",
        [seq],
    )
    .map(drop)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(created: &[(i64, i64)]) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY, created_ms INTEGER)")
            .expect("schema");
        for (seq, at) in created {
            conn.execute("INSERT INTO events VALUES (?1, ?2)", [seq, at])
                .expect("insert");
        }
        conn
    }

    #[test]
    fn the_newest_event_before_a_cutoff_is_found_by_bisecting_ids() {
        // Ids 5..=104 with gaps; ten events per millisecond from 1000 on.
        let created: Vec<(i64, i64)> = (5..=104)
            .filter(|seq| seq % 7 != 0)
            .map(|seq| (seq, 1000 + seq / 10))
            .collect();
        let conn = log_with(&created);
        for cutoff in 990..1020 {
            let want = created
                .iter()
                .filter(|(_, at)| *at < cutoff)
                .map(|(seq, _)| *seq)
                .max();
            assert_eq!(
                newest_older_than(&conn, cutoff).expect("query"),
                want,
                "cutoff {cutoff}"
            );
        }
        assert_eq!(newest_older_than(&log_with(&[]), 5).expect("query"), None);
    }
}
