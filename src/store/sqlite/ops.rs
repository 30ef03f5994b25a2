//! What each write does inside the writer's transaction: the rows it changes and the events it
//! appends to the log (docs/protocol.md#the-notification-lifecycle).

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use super::log::{self, About, Log};
use crate::domain::{
    EventName, IdempotencyKey, NewAnnouncement, NewNotification, Notification, NotificationJson,
    NotificationPatch, UserId, format_unix_ms,
};
use crate::store::{
    Addressed, Archived, Audience, BulkOutcome, Expired, MarkedRead, PublishOutcome, ReadAll,
    Retention, StoreError, payload,
};

/// The `idempotency_keys.user_id` of a publish to many users: no user id is empty.
const MANY_USERS: &str = "";

pub fn publish(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    new: NewNotification,
    key: Option<IdempotencyKey>,
    retention: Retention,
) -> Result<PublishOutcome, StoreError> {
    if let Some(earlier) = earlier_answer(tx, log, user.as_str(), key.as_ref(), retention)? {
        return Ok(PublishOutcome::Repeated(NotificationJson(earlier)));
    }
    let expires_ms = new.expires.as_ref().map(|expiry| expiry.unix_ms);
    let notification = new.into_notification();
    let body = NotificationJson::encode(&notification)?;
    let stored = Stored {
        id: &notification.id,
        category: notification.category.as_ref().map(|c| c.as_str()),
        body: body.as_str(),
        expires_ms,
    };
    let id = Inserts::prepare(tx)?.insert(tx, log, &user, &stored, retention)?;
    if let Some(key) = &key {
        remember_answer(tx, log, user.as_str(), key, body.as_str())?;
    }
    Ok(PublishOutcome::Created(body, id))
}

/// One notification per user, each with its own id, all in the caller's transaction.
pub fn publish_many(
    tx: &Connection,
    log: &mut Log<'_>,
    users: Vec<UserId>,
    new: NewNotification,
    key: Option<IdempotencyKey>,
    retention: Retention,
) -> Result<BulkOutcome, StoreError> {
    if let Some(earlier) = earlier_answer(tx, log, MANY_USERS, key.as_ref(), retention)? {
        return Ok(BulkOutcome::Repeated(serde_json::from_str(&earlier)?));
    }
    let expires_ms = new.expires.as_ref().map(|expiry| expiry.unix_ms);
    let notification = new.into_notification();
    let category = notification.category.as_ref().map(|c| c.as_str());
    // Encoded once: each user's body is this one with its own id in front.
    let after_id = notification.json_after_id()?;
    let mut sent = Vec::with_capacity(users.len());
    let mut last = None;
    let mut body = String::with_capacity(after_id.len() + 48);
    let mut inserts = Inserts::prepare(tx)?;
    for user in users {
        let id = uuid::Uuid::now_v7().to_string();
        body.clear();
        body.push_str(r#"{"id":""#);
        body.push_str(&id);
        body.push('"');
        body.push_str(&after_id);
        let stored = Stored {
            id: &id,
            category,
            body: &body,
            expires_ms,
        };
        last = Some(inserts.insert(tx, log, &user, &stored, retention)?);
        sent.push(Addressed {
            user_id: user.as_str().to_owned(),
            id,
        });
    }
    if let Some(key) = &key {
        remember_answer(tx, log, MANY_USERS, key, &serde_json::to_string(&sent)?)?;
    }
    let last = last.ok_or_else(|| StoreError::Conflict("a publish to no users".into()))?;
    Ok(BulkOutcome::Created(sent, last))
}

/// What an `Idempotency-Key` answered within its window, if it was seen.
fn earlier_answer(
    tx: &Connection,
    log: &Log<'_>,
    scope: &str,
    key: Option<&IdempotencyKey>,
    retention: Retention,
) -> Result<Option<String>, StoreError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let since = log.now_ms - retention.idempotency_window.as_millis() as i64;
    Ok(tx
        .prepare_cached(
            "SELECT notification FROM idempotency_keys
             WHERE user_id = ?1 AND key = ?2 AND created_ms >= ?3",
        )?
        .query_row(params![scope, key.as_str(), since], |row| row.get(0))
        .optional()?)
}

fn remember_answer(
    tx: &Connection,
    log: &Log<'_>,
    scope: &str,
    key: &IdempotencyKey,
    answer: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (user_id, key, notification, created_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![scope, key.as_str(), answer, log.now_ms])?;
    Ok(())
}

/// One notification as it goes into the store.
struct Stored<'a> {
    id: &'a str,
    category: Option<&'a str>,
    /// The notification's JSON, also its `notification` event.
    body: &'a str,
    expires_ms: Option<i64>,
}

/// The two statements that store a notification, prepared once for all the notifications of
/// one command.
struct Inserts<'c> {
    append: CachedStatement<'c>,
    notification: CachedStatement<'c>,
}

impl<'c> Inserts<'c> {
    fn prepare(tx: &'c Connection) -> Result<Self, StoreError> {
        Ok(Self {
            append: tx.prepare_cached(log::APPEND)?,
            // OR ROLLBACK, as for the log: a fresh UUID never clashes, and SQLite keeps no
            // statement journal. No body: the text is its event's until an update.
            notification: tx.prepare_cached(
                "INSERT OR ROLLBACK INTO notifications (seq, id, user_id, category, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
        })
    }

    /// Stores one notification and its `notification` event, keeping the user's history within
    /// its limit (the writer is the only place history grows).
    fn insert(
        &mut self,
        tx: &Connection,
        log: &mut Log<'_>,
        user: &UserId,
        stored: &Stored<'_>,
        retention: Retention,
    ) -> Result<crate::domain::EventId, StoreError> {
        let about = About {
            subject: stored.id,
            expires_ms: stored.expires_ms,
        };
        let id = log.append_with(
            &mut self.append,
            Audience::User(user.clone()),
            EventName::Notification,
            stored.body.to_owned(),
            Some(about),
        )?;
        self.notification.execute(params![
            id.major as i64,
            stored.id,
            user.as_str(),
            stored.category,
            stored.expires_ms,
        ])?;
        log.pushes_queued += super::push::enqueue(
            tx,
            log,
            user,
            id.major as i64,
            stored.category,
            stored.expires_ms,
        )?;
        let limit = retention.history_per_user;
        let mut size = log.history_sizes.grew(tx, user.as_str(), id.major as i64)?;
        while size > limit {
            let Some(oldest) = log.history_sizes.oldest(user.as_str()) else {
                break;
            };
            drop_from_history(tx, log, oldest)?;
            size = log.history_sizes.took_oldest(tx, user.as_str())?;
        }
        Ok(id)
    }
}

/// Takes a notification past the history limit out of history. Its events stay in the log as
/// long as they are replayable; its `notification` event, if past retention, was kept only for
/// history, and goes too.
fn drop_from_history(tx: &Connection, log: &mut Log<'_>, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM notifications WHERE seq = ?1")?
        .execute([seq])?;
    let pruned_through = log.pruned_through(tx)? as i64;
    drop_kept_event(tx, seq, pruned_through)
}

/// Removes the `notification` event `seq` if it is past retention (`pruned_through`), where it
/// was kept only for its notification's history.
fn drop_kept_event(tx: &Connection, seq: i64, pruned_through: i64) -> Result<(), StoreError> {
    if seq <= pruned_through {
        tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?
            .execute([seq])?;
    }
    Ok(())
}

pub fn broadcast(
    tx: &Connection,
    log: &mut Log<'_>,
    new: NewAnnouncement,
) -> Result<crate::domain::EventId, StoreError> {
    let announcement = new.into_announcement();
    let data = serde_json::to_string(&announcement)?;
    log.append(tx, Audience::Everyone, EventName::Announcement, data, None)
}

pub fn mark_read(
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
    let about = About {
        subject: id,
        expires_ms: None,
    };
    let data = payload::read_one(id);
    let event = log.append(tx, Audience::User(user), EventName::Read, data, Some(about))?;
    Ok(MarkedRead::Changed(event))
}

pub fn mark_all_read(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
) -> Result<ReadAll, StoreError> {
    let updated = tx
        .prepare_cached(
            "UPDATE notifications SET read = 1
             WHERE read = 0 AND seq IN (SELECT seq FROM events WHERE user_id = ?1)",
        )?
        .execute([user.as_str()])? as u64;
    let event = if updated > 0 {
        let data = payload::read_all();
        Some(log.append(tx, Audience::User(user), EventName::Read, data, None)?)
    } else {
        None
    };
    Ok(ReadAll { updated, event })
}

/// A user's notification that has not expired, as stored, with its read and archive state.
struct Current {
    notification: Notification,
    expires_ms: Option<i64>,
}

fn current(tx: &Connection, log: &Log<'_>, user: &UserId, id: &str) -> Result<Current, StoreError> {
    let row = tx
        .prepare_cached(
            "SELECT COALESCE(n.body, e.data), n.read, n.archived, n.expires_ms
             FROM notifications n CROSS JOIN events e ON e.seq = n.seq
             WHERE n.id = ?1 AND n.user_id = ?2 AND (n.expires_ms IS NULL OR n.expires_ms > ?3)",
        )?
        .query_row(params![id, user.as_str(), log.now_ms], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })
        .optional()?;
    let (body, read, archived, expires_ms) = row.ok_or(StoreError::UNKNOWN_NOTIFICATION)?;
    let mut notification: Notification = serde_json::from_str(&body)?;
    notification.read = read;
    notification.archived = archived;
    Ok(Current {
        notification,
        expires_ms,
    })
}

pub fn update(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    id: &str,
    patch: &NotificationPatch,
) -> Result<(Notification, crate::domain::EventId), StoreError> {
    let Current {
        mut notification,
        expires_ms,
    } = current(tx, log, &user, id)?;
    patch.apply_to(&mut notification, format_unix_ms(log.now_ms));
    let body = serde_json::to_string(&notification)?;
    tx.prepare_cached("UPDATE notifications SET body = ?1, category = ?2 WHERE id = ?3")?
        .execute(params![
            body,
            notification.category.as_ref().map(|c| c.as_str()),
            id
        ])?;
    let about = About {
        subject: id,
        expires_ms,
    };
    let event = log.append(
        tx,
        Audience::User(user),
        EventName::Updated,
        body,
        Some(about),
    )?;
    Ok((notification, event))
}

pub fn delete(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    id: &str,
) -> Result<crate::domain::EventId, StoreError> {
    let seq: i64 = tx
        .prepare_cached("SELECT seq FROM notifications WHERE id = ?1 AND user_id = ?2")?
        .query_row(params![id, user.as_str()], |row| row.get(0))
        .optional()?
        .ok_or(StoreError::UNKNOWN_NOTIFICATION)?;
    remove(tx, log, &user, id, seq)?;
    let data = payload::deleted(&[id], false);
    log.append(tx, Audience::User(user), EventName::Deleted, data, None)
}

/// Takes a notification out of history, and every event about it out of the log, so that no
/// replay delivers it again.
fn remove(
    tx: &Connection,
    log: &mut Log<'_>,
    user: &UserId,
    id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM notifications WHERE id = ?1")?
        .execute([id])?;
    log.history_sizes.forget(user.as_str());
    // Every event about it is at or after the one that created it. Those past retention are not
    // counted as leaving the log: the only one is its `notification` event, kept for history.
    let pruned_through = log.pruned_through(tx)? as i64;
    let replayable = tx
        .prepare_cached("DELETE FROM events WHERE user_id = ?1 AND seq >= ?2 AND subject = ?3")?
        .execute(params![user.as_str(), seq.max(pruned_through + 1), id])?;
    drop_kept_event(tx, seq, pruned_through)?;
    log.removed += replayable as u64;
    Ok(())
}

pub fn set_archived(
    tx: &Connection,
    log: &mut Log<'_>,
    user: UserId,
    id: &str,
    archived: bool,
) -> Result<Archived, StoreError> {
    let Current {
        notification,
        expires_ms,
    } = current(tx, log, &user, id)?;
    if notification.archived == archived {
        return Ok(Archived::Unchanged);
    }
    tx.prepare_cached("UPDATE notifications SET archived = ?1 WHERE id = ?2")?
        .execute(params![archived, id])?;
    let about = About {
        subject: id,
        expires_ms,
    };
    let data = payload::archived(id, archived);
    let event = log.append(
        tx,
        Audience::User(user),
        EventName::Archived,
        data,
        Some(about),
    )?;
    Ok(Archived::Changed(event))
}

/// The most notifications one expiry pass removes; the next pass takes the rest.
const EXPIRE_BATCH: i64 = 5000;

/// Removes notifications whose time has come, with one `deleted` event per user.
pub fn expire(tx: &Connection, log: &mut Log<'_>) -> Result<Expired, StoreError> {
    // Ordered by expiry, so the planner reads only what is due through its partial index
    // (ordered by user, it would rather walk every notification in the user index); grouped
    // by user here.
    let mut due: Vec<(String, String, i64)> = tx
        .prepare_cached(
            "SELECT user_id, id, seq FROM notifications WHERE expires_ms <= ?1
             ORDER BY expires_ms LIMIT ?2",
        )?
        .query_map(params![log.now_ms, EXPIRE_BATCH], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    due.sort_unstable_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let mut events = 0;
    for user_due in due.chunk_by(|a, b| a.0 == b.0) {
        let user = UserId::parse(&user_due[0].0)
            .map_err(|why| StoreError::Corrupt(format!("a stored user id: {why}")))?;
        for (_, id, seq) in user_due {
            remove(tx, log, &user, id, *seq)?;
        }
        let ids: Vec<&str> = user_due.iter().map(|(_, id, _)| id.as_str()).collect();
        let data = payload::deleted(&ids, true);
        log.append(tx, Audience::User(user), EventName::Deleted, data, None)?;
        events += 1;
    }
    Ok(Expired {
        notifications: due.len() as u64,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_sweep_reads_only_what_is_due_through_its_index() {
        let conn = Connection::open_in_memory().expect("open");
        super::super::schema::prepare_writer(&conn, crate::store::SyncMode::Normal)
            .expect("schema");
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT user_id, id, seq FROM notifications
                 WHERE expires_ms <= 1 ORDER BY expires_ms LIMIT 10",
            )
            .expect("explain")
            .query_map([], |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            plan,
            ["SEARCH notifications USING INDEX notifications_expiring (expires_ms<?)"]
        );
    }
}
