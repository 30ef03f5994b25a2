//! The durable event log and notification history. The store owns event ids and durability:
//! an operation's reply is sent only after it is committed, and committed events are handed to
//! an [`EventSink`] (the hub) in id order, exactly once, after the commit.

pub mod push;
pub mod redis;
pub mod sqlite;

use std::time::Duration;

use self::push::{PushJob, PushOutcome, Subscribed, SubscriptionInfo};
use crate::domain::{
    Category, EventId, EventName, IdempotencyKey, NewAnnouncement, NewNotification, Notification,
    NotificationJson, NotificationPatch, PushSubscription, UserId,
};

pub use self::redis::{RedisSettings, RedisStore};
pub use sqlite::SqliteStore;

/// Who may see an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    User(UserId),
    Everyone,
}

/// An event that is in the log: its id, who sees it, and its JSON payload.
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    pub id: EventId,
    pub audience: Audience,
    pub name: EventName,
    pub data: String,
}

/// Receives committed events in strictly increasing id order, each once.
pub trait EventSink: Send + Sync + 'static {
    /// Called once before any dispatch: every event up to `newest` is already in the log.
    fn resume_after(&self, newest: EventId);
    fn dispatch(&self, events: &[CommittedEvent]);
}

/// What a publish did.
#[derive(Debug, Clone)]
pub enum PublishOutcome {
    /// Stored, as the event with this id.
    Created(NotificationJson, EventId),
    /// The Idempotency-Key was seen within 24 h: this is the notification it made then.
    Repeated(NotificationJson),
}

/// What a publish to many users did.
#[derive(Debug, Clone)]
pub enum BulkOutcome {
    /// Stored, one notification per user in the order given; the last event has this id.
    Created(Vec<Addressed>, EventId),
    /// The Idempotency-Key was seen within 24 h: these are the notifications it made then.
    Repeated(Vec<Addressed>),
}

/// One user's notification of a publish to many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Addressed {
    #[serde(rename = "userId")]
    pub user_id: String,
    pub id: String,
}

/// What archiving or unarchiving did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archived {
    /// Changed, as the event with this id.
    Changed(EventId),
    /// It already was.
    Unchanged,
}

/// What one expiry pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Notifications deleted.
    pub notifications: u64,
    /// `deleted` events appended: one per user that had any.
    pub events: u64,
}

/// One page of a user's history.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub limit: u32,
    /// Start after (older than) this notification.
    pub before: Option<String>,
    pub unread_only: bool,
    /// Only this category.
    pub category: Option<Category>,
    /// Only archived notifications (`true`) or only the others (`false`).
    pub archived: bool,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Newest first.
    pub notifications: Vec<Notification>,
    pub total: u64,
    pub unread: u64,
    /// The newest event id when this page was read: a stream opened with it misses nothing.
    pub last_event_id: EventId,
}

/// An event read back from the log for replay.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: EventId,
    pub name: EventName,
    pub data: String,
    /// For a `notification` or `updated` event, when its notification expires (Unix ms): past
    /// that, it is not replayed.
    pub expires_ms: Option<i64>,
}

impl StoredEvent {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The answer to "what did this user miss after that id?"
#[derive(Debug)]
pub enum ReplayPage {
    /// Events after the cursor, oldest first; `complete` when nothing more is due.
    Events {
        events: Vec<StoredEvent>,
        complete: bool,
    },
    /// The log no longer holds (or never held) what was asked for.
    Gone {
        reason: &'static str,
        oldest: Option<EventId>,
    },
}

impl ReplayPage {
    /// The id asked for is above every id issued (or not an id at all).
    pub fn never_issued(oldest: Option<EventId>) -> Self {
        Self::Gone {
            reason: "unknown event id: this server never issued it",
            oldest,
        }
    }

    /// Retention has removed events after the id asked for.
    pub fn past_retention(oldest: Option<EventId>) -> Self {
        Self::Gone {
            reason: "the events after this id are past retention",
            oldest,
        }
    }
}

/// The JSON of the events about a notification's lifecycle, the same from every backend, with
/// its keys in the documented order.
pub mod payload {
    use serde::Serialize;

    #[derive(Serialize)]
    struct Ids<'a> {
        ids: &'a [&'a str],
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        archived: Option<bool>,
    }

    fn ids(ids: &[&str], reason: Option<&'static str>, archived: Option<bool>) -> String {
        serde_json::to_string(&Ids {
            ids,
            reason,
            archived,
        })
        .unwrap_or_default()
    }

    /// `read` for one notification.
    pub fn read_one(id: &str) -> String {
        ids(&[id], None, None)
    }

    /// `read` for all of a user's notifications.
    pub fn read_all() -> String {
        r#"{"all":true}"#.to_owned()
    }

    /// `deleted`: by a request, or (`expired`) by the clock.
    pub fn deleted(deleted: &[&str], expired: bool) -> String {
        ids(deleted, expired.then_some("expired"), None)
    }

    /// `archived` or unarchived.
    pub fn archived(id: &str, archived: bool) -> String {
        ids(&[id], None, Some(archived))
    }
}

/// Limits the store enforces on what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_events: u64,
    pub history_per_user: u64,
    pub idempotency_window: Duration,
}

/// Durability of a commit against power loss: `Full` fsyncs every commit; `Normal` survives a
/// crash of the process but may lose the last commits if the machine loses power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    Full,
    Normal,
}

/// Why a store operation failed. Each kind means one thing to a caller, and the HTTP edge
/// maps each to one status (see `http::error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take the operation now (unreachable, closed, disk full, busy):
    /// nothing was changed, and the same request may succeed later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// What the store holds cannot be read back as herald wrote it (damage or a bug); retrying
    /// will not help.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The write contradicts what is stored (a constraint the backend enforces).
    #[error("the write conflicts with stored data: {0}")]
    Conflict(String),
    /// The thing named does not exist (for this user); the text says what was missing.
    #[error("{0}")]
    NotFound(&'static str),
}

impl StoreError {
    /// A notification id that names nothing of this user.
    pub const UNKNOWN_NOTIFICATION: Self = Self::NotFound("no such notification for this user");
    /// A history `before` cursor that names nothing of this user.
    pub const UNKNOWN_CURSOR: Self = Self::NotFound("`before` names no notification of this user");
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                Self::Corrupt(error.to_string())
            }
            Some(ErrorCode::ConstraintViolation) => Self::Conflict(error.to_string()),
            // Any other failure of SQLite itself (busy, locked, full, I/O, cannot open) is a
            // state of the machine that may pass.
            Some(_) => Self::Unavailable(error.to_string()),
            // Everything else is rusqlite reading back a value it did not expect.
            None => Self::Corrupt(error.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        Self::Corrupt(error.to_string())
    }
}

/// The outcome of marking one notification read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkedRead {
    /// Now read, as the `read` event with this id.
    Changed(EventId),
    AlreadyRead,
}

/// What marking all of a user's notifications read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAll {
    /// How many went from unread to read.
    pub updated: u64,
    /// The `read` event, when any did.
    pub event: Option<EventId>,
}

/// Every backend herald can run on, chosen once at start-up.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Redis(RedisStore),
}

impl Store {
    pub async fn publish(
        &self,
        user: UserId,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<PublishOutcome, StoreError> {
        match self {
            Self::Sqlite(store) => store.publish(user, notification, key).await,
            Self::Redis(store) => store.publish(user, notification, key).await,
        }
    }

    /// One notification for each of `users`, in one transaction.
    pub async fn publish_many(
        &self,
        users: Vec<UserId>,
        notification: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<BulkOutcome, StoreError> {
        match self {
            Self::Sqlite(store) => store.publish_many(users, notification, key).await,
            Self::Redis(store) => store.publish_many(users, notification, key).await,
        }
    }

    /// Applies `patch`; the updated notification is also the `updated` event with this id.
    pub async fn update(
        &self,
        user: UserId,
        id: String,
        patch: NotificationPatch,
    ) -> Result<(Notification, EventId), StoreError> {
        match self {
            Self::Sqlite(store) => store.update(user, id, patch).await,
            Self::Redis(store) => store.update(user, id, patch).await,
        }
    }

    /// Removes the notification and every event about it from the log; the `deleted` event
    /// has this id.
    pub async fn delete(&self, user: UserId, id: String) -> Result<EventId, StoreError> {
        match self {
            Self::Sqlite(store) => store.delete(user, id).await,
            Self::Redis(store) => store.delete(user, id).await,
        }
    }

    pub async fn set_archived(
        &self,
        user: UserId,
        id: String,
        archived: bool,
    ) -> Result<Archived, StoreError> {
        match self {
            Self::Sqlite(store) => store.set_archived(user, id, archived).await,
            Self::Redis(store) => store.set_archived(user, id, archived).await,
        }
    }

    /// Deletes notifications whose expiry has passed, with a `deleted` event (reason
    /// `expired`) for each user that had any.
    pub async fn expire(&self) -> Result<Expired, StoreError> {
        match self {
            Self::Sqlite(store) => store.expire().await,
            Self::Redis(store) => store.expire().await,
        }
    }

    pub async fn broadcast(&self, announcement: NewAnnouncement) -> Result<EventId, StoreError> {
        match self {
            Self::Sqlite(store) => store.broadcast(announcement).await,
            Self::Redis(store) => store.broadcast(announcement).await,
        }
    }

    pub async fn mark_read(&self, user: UserId, id: String) -> Result<MarkedRead, StoreError> {
        match self {
            Self::Sqlite(store) => store.mark_read(user, id).await,
            Self::Redis(store) => store.mark_read(user, id).await,
        }
    }

    pub async fn mark_all_read(&self, user: UserId) -> Result<ReadAll, StoreError> {
        match self {
            Self::Sqlite(store) => store.mark_all_read(user).await,
            Self::Redis(store) => store.mark_all_read(user).await,
        }
    }

    pub async fn history(
        &self,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        match self {
            Self::Sqlite(store) => store.history(user, query).await,
            Self::Redis(store) => store.history(user, query).await,
        }
    }

    /// Events for `user` with ids in `(after, upto]`, at most `limit` of them.
    pub async fn replay_page(
        &self,
        user: UserId,
        after: EventId,
        upto: EventId,
        limit: u32,
    ) -> Result<ReplayPage, StoreError> {
        match self {
            Self::Sqlite(store) => store.replay_page(user, after, upto, limit).await,
            Self::Redis(store) => store.replay_page(user, after, upto, limit).await,
        }
    }

    /// Drops what retention no longer keeps.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.sweep().await,
            Self::Redis(store) => store.sweep().await,
        }
    }

    /// How many events the log holds now.
    pub async fn retained_events(&self) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => Ok(store.retained_events()),
            Self::Redis(store) => store.retained_events().await,
        }
    }

    /// Stores a Web Push subscription for `user` (upserted by endpoint), within
    /// `max_per_user`.
    pub async fn subscribe_push(
        &self,
        user: UserId,
        subscription: PushSubscription,
        max_per_user: u32,
    ) -> Result<Subscribed, StoreError> {
        match self {
            Self::Sqlite(store) => store.subscribe_push(user, subscription, max_per_user).await,
            Self::Redis(store) => store.subscribe_push(user, subscription, max_per_user).await,
        }
    }

    /// Removes one of `user`'s subscriptions and the pushes owed to it.
    pub async fn unsubscribe_push(&self, user: UserId, id: String) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.unsubscribe_push(user, id).await,
            Self::Redis(store) => store.unsubscribe_push(user, id).await,
        }
    }

    pub async fn push_subscriptions(
        &self,
        user: UserId,
    ) -> Result<Vec<SubscriptionInfo>, StoreError> {
        match self {
            Self::Sqlite(store) => store.push_subscriptions(user).await,
            Self::Redis(store) => store.push_subscriptions(user).await,
        }
    }

    /// Replaces the categories `user` never wants pushed.
    pub async fn set_push_muted(
        &self,
        user: UserId,
        categories: Vec<String>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.set_push_muted(user, categories).await,
            Self::Redis(store) => store.set_push_muted(user, categories).await,
        }
    }

    pub async fn push_muted(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Sqlite(store) => store.push_muted(user).await,
            Self::Redis(store) => store.push_muted(user).await,
        }
    }

    /// Up to `limit` pushes to try now. A job handed out is not handed out again while it is
    /// being tried: with SQLite until it is settled, with Redis for a lease long enough to try
    /// it (and other nodes skip it meanwhile).
    pub async fn due_pushes(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        match self {
            Self::Sqlite(store) => store.due_pushes(now_ms, limit).await,
            Self::Redis(store) => store.due_pushes(now_ms, limit).await,
        }
    }

    /// Records what became of tried pushes.
    pub async fn settle_pushes(
        &self,
        outcomes: Vec<(PushJob, PushOutcome)>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.settle_pushes(outcomes).await,
            Self::Redis(store) => store.settle_pushes(outcomes).await,
        }
    }

    /// How many pushes are owed, and when the soonest falls due (Unix ms).
    pub async fn push_queue_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        match self {
            Self::Sqlite(store) => store.push_queue_depth().await,
            Self::Redis(store) => store.push_queue_depth().await,
        }
    }

    /// Records how many streams users have open on this node, for the other nodes. Only a
    /// cluster has other nodes: with SQLite there is nothing to record.
    pub async fn set_presence(&self, changes: &[(UserId, usize)]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Redis(store) => store.set_presence(changes).await,
        }
    }

    /// `user`'s open streams on the cluster's other live nodes.
    pub async fn presence_elsewhere(&self, user: &UserId) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(0),
            Self::Redis(store) => store.presence_elsewhere(user).await,
        }
    }

    /// Whether the last write succeeded and the writer is running.
    pub fn is_healthy(&self) -> bool {
        match self {
            Self::Sqlite(store) => store.is_healthy(),
            Self::Redis(store) => store.is_healthy(),
        }
    }

    /// Finishes queued writes and makes the files tidy; later writes fail as unavailable.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            Self::Redis(store) => store.close().await,
        }
    }
}
