//! What both stores keep for Web Push (docs/protocol.md#web-push): each user's subscriptions
//! and muted categories, and the queue of pushes owed. A push is owed from the commit of its
//! notification: the publish that stores a notification for a user who should be pushed to
//! queues one job per subscription in the same transaction (or Lua script), so a push is never
//! lost between the commit and the push service, whatever the process does.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::UserId;

/// How many streams a user has open on this node. The hub knows; the store asks it while
/// committing a notification, to decide whether its user is away.
pub trait Presence: Send + Sync + 'static {
    fn streams_here(&self, user: &UserId) -> usize;
}

/// When a user's notification is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushWhen {
    /// Only while the user has no open stream on any node.
    Offline,
    /// Every notification.
    Always,
}

/// What a store needs to queue pushes as it commits notifications.
#[derive(Clone)]
pub struct PushQueueing {
    pub when: PushWhen,
    /// A push of a notification without an expiry is tried for this long.
    pub ttl: Duration,
    pub presence: Arc<dyn Presence>,
    /// Woken after a commit queued pushes, so the pusher need not poll for new work.
    pub queued: Arc<tokio::sync::Notify>,
}

impl PushQueueing {
    /// Until when a push of a notification made `now_ms` (expiring at `expires_ms`) is tried.
    pub fn deadline_ms(&self, now_ms: i64, expires_ms: Option<i64>) -> i64 {
        expires_ms.unwrap_or_else(|| now_ms.saturating_add(self.ttl.as_millis() as i64))
    }
}

/// One stored subscription as a listing shows it: never its endpoint's path or its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub id: String,
    pub origin: String,
    pub created_ms: i64,
}

/// What storing a subscription did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    /// Stored as new, with this id.
    Created(String),
    /// This user already had that endpoint, under this id (its keys are now the ones given).
    Existing(String),
    /// The user has the most subscriptions allowed; nothing was stored.
    Full,
}

/// A push owed: one notification to one subscription.
#[derive(Debug, Clone)]
pub struct PushJob {
    /// The queue's own name for this job.
    pub job: String,
    pub user: String,
    pub subscription: String,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    /// The notification's JSON now, or `None` once it is gone (deleted, expired, trimmed) or
    /// read: then nothing is pushed.
    pub notification: Option<String>,
    /// Tries stop here (Unix ms).
    pub deadline_ms: i64,
    /// Tries so far.
    pub attempts: u32,
}

/// What became of one try of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Delivered, or no longer owed: the job goes.
    Done,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// The push service no longer knows the subscription: it goes, with all its jobs.
    SubscriptionGone,
}
