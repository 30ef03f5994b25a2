//! The embedded backend: one SQLite file in WAL mode. Writes go through a single writer thread
//! (`writer`) that commits in groups; reads run on a small set of read-only connections, each
//! inside one transaction so a page and its counts come from the same snapshot.

mod checkpoint;
mod dispatch;
mod log;
mod ops;
mod push;
mod retention;
mod schema;
mod sizes;
mod wal_file;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::push::{PushJob, PushOutcome, PushQueueing, Subscribed, SubscriptionInfo};
use super::{
    Archived, BulkOutcome, EventSink, Expired, HistoryPage, HistoryQuery, MarkedRead,
    PublishOutcome, ReadAll, ReplayPage, Retention, StoreError, StoredEvent, SyncMode,
};
use crate::domain::PushSubscription;
use crate::domain::{
    EventId, EventName, IdempotencyKey, NewAnnouncement, NewNotification, Notification,
    NotificationPatch, UserId,
};
use writer::{Command, Writer};

/// How many writes may wait for the writer before publishers wait too (backpressure).
const WRITE_QUEUE: usize = 4096;
/// Read-only connections; reads are short, and the machine has few cores.
const READERS: usize = 4;

/// A handle to the SQLite store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    readers: Vec<std::sync::Mutex<Connection>>,
    next_reader: AtomicUsize,
    shared: Arc<Shared>,
    /// What of the push queue this process has handed out (`push::due`).
    push_lease: tokio::sync::Mutex<push::Lease>,
}

/// State the writer publishes for everyone else to read without a query.
#[derive(Default)]
pub(super) struct Shared {
    /// Events in the log now.
    retained: AtomicU64,
    /// False after a failed commit, until one succeeds.
    healthy: AtomicBool,
    /// True once the writer has stopped, or once its dispatch thread has (committed events
    /// then reach no stream).
    closed: AtomicBool,
}

impl SqliteStore {
    /// Opens (creating if needed) `herald.db` in `data_dir` and starts the writer thread.
    pub fn open(
        data_dir: &Path,
        sync: SyncMode,
        retention: Retention,
        sink: Arc<dyn EventSink>,
        push: Option<PushQueueing>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!("cannot create {}: {error}", data_dir.display()))
        })?;
        let path = data_dir.join("herald.db");
        let conn = Connection::open(&path)?;
        schema::prepare_writer(&conn, sync)?;
        // Only commits that are fsynced pay for growing the file.
        if sync == SyncMode::Full {
            wal_file::reserve(&conn, &path);
        }
        let last_seq = schema::last_seq(&conn)?;
        let retained = schema::replayable_events(&conn)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                schema::prepare_reader(&reader)?;
                Ok(std::sync::Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        let shared = Arc::new(Shared {
            retained: AtomicU64::new(retained),
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        });
        sink.resume_after(EventId::from_seq(last_seq));
        let (commands, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            dispatcher: dispatch::Dispatcher::start(sink)?,
            retention,
            next_seq: last_seq + 1,
            retained,
            checkpointer: checkpoint::Checkpointer::start(&path)?,
            history_sizes: sizes::HistorySizes::default(),
            bulk_cache: false,
            push,
            tidy_left: true,
            groups_untidied: 0,
        };
        std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot start the writer: {error}"))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                readers,
                next_reader: AtomicUsize::new(0),
                shared,
                push_lease: tokio::sync::Mutex::default(),
            }),
        })
    }

    async fn write<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the store is closed".into());
        self.inner
            .commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `read` on a reader connection inside one read transaction (one snapshot).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let index = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers[index]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = conn.unchecked_transaction()?;
            let value = read(&tx)?;
            tx.finish()?;
            Ok(value)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("a read was cancelled: {error}")))?
    }

    pub async fn publish(
        &self,
        user: UserId,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<PublishOutcome, StoreError> {
        self.write(|reply| Command::Publish {
            user,
            notification,
            key,
            reply,
        })
        .await
    }

    pub async fn publish_many(
        &self,
        users: Vec<UserId>,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<BulkOutcome, StoreError> {
        self.write(|reply| Command::PublishMany {
            users,
            notification,
            key,
            reply,
        })
        .await
    }

    pub async fn update(
        &self,
        user: UserId,
        id: String,
        patch: NotificationPatch,
    ) -> Result<(Notification, EventId), StoreError> {
        self.write(|reply| Command::Update {
            user,
            id,
            patch,
            reply,
        })
        .await
    }

    pub async fn delete(&self, user: UserId, id: String) -> Result<EventId, StoreError> {
        self.write(|reply| Command::Delete { user, id, reply })
            .await
    }

    pub async fn set_archived(
        &self,
        user: UserId,
        id: String,
        archived: bool,
    ) -> Result<Archived, StoreError> {
        self.write(|reply| Command::SetArchived {
            user,
            id,
            archived,
            reply,
        })
        .await
    }

    pub async fn expire(&self) -> Result<Expired, StoreError> {
        self.write(|reply| Command::Expire { reply }).await
    }

    pub async fn broadcast(&self, announcement: NewAnnouncement) -> Result<EventId, StoreError> {
        self.write(|reply| Command::Broadcast {
            announcement,
            reply,
        })
        .await
    }

    pub async fn mark_read(&self, user: UserId, id: String) -> Result<MarkedRead, StoreError> {
        self.write(|reply| Command::MarkRead { user, id, reply })
            .await
    }

    pub async fn mark_all_read(&self, user: UserId) -> Result<ReadAll, StoreError> {
        self.write(|reply| Command::MarkAllRead { user, reply })
            .await
    }

    pub async fn sweep(&self) -> Result<(), StoreError> {
        self.write(|reply| Command::Sweep { reply }).await
    }

    pub async fn subscribe_push(
        &self,
        user: UserId,
        subscription: PushSubscription,
        max_per_user: u32,
    ) -> Result<Subscribed, StoreError> {
        self.write(|reply| {
            Command::Push(push::Write::Subscribe {
                user,
                subscription,
                max_per_user,
                reply,
            })
        })
        .await
    }

    pub async fn unsubscribe_push(&self, user: UserId, id: String) -> Result<(), StoreError> {
        self.write(|reply| Command::Push(push::Write::Unsubscribe { user, id, reply }))
            .await
    }

    pub async fn set_push_muted(
        &self,
        user: UserId,
        categories: Vec<String>,
    ) -> Result<(), StoreError> {
        self.write(|reply| {
            Command::Push(push::Write::SetMuted {
                user,
                categories,
                reply,
            })
        })
        .await
    }

    /// Records what became of tried pushes. Their jobs can be handed out again after this,
    /// whether it succeeded or not: a retry that could not be recorded is tried again; a fresh
    /// job whose outcome could not be recorded waits for the next start.
    pub async fn settle_pushes(
        &self,
        outcomes: Vec<(PushJob, PushOutcome)>,
    ) -> Result<(), StoreError> {
        let jobs: Vec<i64> = outcomes
            .iter()
            .filter_map(|(job, _)| job.job.parse().ok())
            .collect();
        let recorded = self
            .write(|reply| Command::Push(push::Write::Settle { outcomes, reply }))
            .await;
        self.inner.push_lease.lock().await.settled(jobs);
        recorded
    }

    pub async fn push_subscriptions(
        &self,
        user: UserId,
    ) -> Result<Vec<SubscriptionInfo>, StoreError> {
        self.read(move |tx| push::subscriptions(tx, &user)).await
    }

    pub async fn push_muted(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        self.read(move |tx| push::muted(tx, &user)).await
    }

    /// Up to `limit` jobs to try, each handed out once until it is settled (`push::Lease`).
    pub async fn due_pushes(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        let mut lease = self.inner.push_lease.lock().await;
        let mut next = lease.clone();
        let (jobs, next) = self
            .read(move |tx| {
                let jobs = push::due(tx, now_ms, limit, &mut next)?;
                Ok((jobs, next))
            })
            .await?;
        *lease = next;
        Ok(jobs)
    }

    pub async fn push_queue_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.read(|tx| push::depth(tx)).await
    }

    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    pub fn retained_events(&self) -> u64 {
        self.inner.shared.retained.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::Acquire)
            && !self.inner.shared.closed.load(Ordering::Acquire)
    }

    pub async fn history(
        &self,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let now_ms = crate::domain::now_unix_ms();
        self.read(move |tx| {
            let last_seq = schema::last_seq(tx)?;
            let before_seq = match &query.before {
                None => i64::MAX,
                Some(id) => tx
                    .prepare_cached("SELECT seq FROM notifications WHERE id = ?1 AND user_id = ?2")?
                    .query_row(params![id, user.as_str()], |row| row.get(0))
                    .optional()?
                    .ok_or(StoreError::UNKNOWN_CURSOR)?,
            };
            let category = query.category.as_ref().map(|c| c.as_str());
            let unread_filter = if query.unread_only {
                " AND n.read = 0"
            } else {
                ""
            };
            let mut page = tx.prepare_cached(&format!(
                "SELECT COALESCE(n.body, e.data), n.read, n.archived FROM {HISTORY}
                 WHERE {SELECTED} AND e.seq < :before{unread_filter}
                 ORDER BY e.seq DESC LIMIT :limit"
            ))?;
            let notifications = page
                .query_map(
                    rusqlite::named_params! {
                        ":user": user.as_str(),
                        ":archived": query.archived,
                        ":now": now_ms,
                        ":category": category,
                        ":before": before_seq,
                        ":limit": query.limit,
                    },
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, bool>(1)?,
                            row.get::<_, bool>(2)?,
                        ))
                    },
                )?
                .map(|row| {
                    let (body, read, archived) = row?;
                    let mut notification: Notification = serde_json::from_str(&body)?;
                    notification.read = read;
                    notification.archived = archived;
                    Ok(notification)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let (total, unread) = tx
                .prepare_cached(&format!(
                    "SELECT COUNT(*), COALESCE(SUM(n.read = 0), 0) FROM {HISTORY} WHERE {SELECTED}"
                ))?
                .query_row(
                    rusqlite::named_params! {
                        ":user": user.as_str(),
                        ":archived": query.archived,
                        ":now": now_ms,
                        ":category": category,
                    },
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )?;
            Ok(HistoryPage {
                notifications,
                total: total.max(0) as u64,
                unread: unread.max(0) as u64,
                last_event_id: EventId::from_seq(last_seq),
            })
        })
        .await
    }

    pub async fn replay_page(
        &self,
        user: UserId,
        after: EventId,
        upto: EventId,
        limit: u32,
    ) -> Result<ReplayPage, StoreError> {
        self.read(move |tx| {
            let last_seq = schema::last_seq(tx)?;
            let pruned_through = schema::meta(tx, "pruned_through")?;
            let oldest = || -> Result<Option<EventId>, StoreError> {
                Ok(schema::oldest_replayable(tx)?.map(EventId::from_seq))
            };
            if after.minor != 0 || after.major > last_seq {
                return Ok(ReplayPage::never_issued(oldest()?));
            }
            if after.major < pruned_through {
                return Ok(ReplayPage::past_retention(oldest()?));
            }
            if after >= upto {
                return Ok(ReplayPage::Events {
                    events: Vec::new(),
                    complete: true,
                });
            }
            let mut events = events_for(tx, &user, after, upto, i64::from(limit) + 1)?;
            let complete = events.len() <= limit as usize;
            events.truncate(limit as usize);
            Ok(ReplayPage::Events { events, complete })
        })
        .await
    }
}

/// A user's history as SQL: the user's events (`e`, through the log's per-user index, which is
/// why the join is a `CROSS JOIN`: SQLite then keeps that order) that created a notification
/// still stored (`n`). See `schema` for why history is found through the log.
const HISTORY: &str = "events e CROSS JOIN notifications n ON n.seq = e.seq";

/// What a history query's filters select; `total` and `unread` count the same.
const SELECTED: &str = "e.user_id = :user AND n.archived = :archived
    AND (n.expires_ms IS NULL OR n.expires_ms > :now)
    AND (:category IS NULL OR n.category = :category)";

/// Up to `fetch` events for `user` (its own and announcements) with ids in `(after, upto]`,
/// oldest first: two index ranges merged by id, so the cost follows what this user may see,
/// not the size of the log.
fn events_for(
    tx: &rusqlite::Transaction<'_>,
    user: &UserId,
    after: EventId,
    upto: EventId,
    fetch: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut select = tx.prepare_cached(
        "SELECT seq, name, data, expires_ms FROM (
             SELECT seq, name, data, expires_ms FROM events
             WHERE user_id = ?3 AND seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?4)
         UNION ALL
         SELECT seq, name, data, expires_ms FROM (
             SELECT seq, name, data, expires_ms FROM events
             WHERE user_id IS NULL AND seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?4)
         ORDER BY seq LIMIT ?4",
    )?;
    let rows = select.query_map(
        params![after.major as i64, upto.major as i64, user.as_str(), fetch],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        },
    )?;
    rows.map(|row| {
        let (seq, name, data, expires_ms) = row?;
        let name = EventName::parse(&name).ok_or_else(|| {
            StoreError::Corrupt(format!("unknown event name {name:?} in the log"))
        })?;
        Ok(StoredEvent {
            id: EventId::from_seq(seq.max(0) as u64),
            name,
            data,
            expires_ms,
        })
    })
    .collect()
}
