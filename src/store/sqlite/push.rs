//! Web Push in the SQLite store (docs/protocol.md#web-push): subscriptions, muted categories
//! and the queue of pushes owed. Writes run on the writer thread like every other write;
//! `enqueue` runs inside the transaction that stores a notification.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::log::Log;
use crate::domain::{PushSubscription, UserId};
use crate::store::StoreError;
use crate::store::push::{PushJob, PushOutcome, PushWhen, Subscribed, SubscriptionInfo};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A push write the store asks of the writer thread.
pub(super) enum Write {
    Subscribe {
        user: UserId,
        subscription: PushSubscription,
        max_per_user: u32,
        reply: Reply<Subscribed>,
    },
    Unsubscribe {
        user: UserId,
        id: String,
        reply: Reply<()>,
    },
    SetMuted {
        user: UserId,
        categories: Vec<String>,
        reply: Reply<()>,
    },
    Settle {
        outcomes: Vec<(PushJob, PushOutcome)>,
        reply: Reply<()>,
    },
}

/// Stores `subscription` for `user`. An endpoint another user had moves to this one (a browser
/// profile belongs to whoever subscribed last), under a new id.
pub(super) fn subscribe(
    tx: &Connection,
    now_ms: i64,
    user: &UserId,
    subscription: &PushSubscription,
    max_per_user: u32,
) -> Result<Subscribed, StoreError> {
    let endpoint = subscription.endpoint.as_str();
    let held: Option<(String, String)> = tx
        .prepare_cached("SELECT id, user_id FROM push_subscriptions WHERE endpoint = ?1")?
        .query_row([endpoint], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match held {
        Some((id, owner)) if owner == user.as_str() => {
            tx.prepare_cached(
                "UPDATE push_subscriptions SET p256dh = ?2, auth = ?3 WHERE id = ?1",
            )?
            .execute(params![id, subscription.p256dh, subscription.auth])?;
            return Ok(Subscribed::Existing(id));
        }
        Some((id, _)) => remove_subscription(tx, &id)?,
        None => {}
    }
    let count: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?1")?
        .query_row([user.as_str()], |row| row.get(0))?;
    if count >= i64::from(max_per_user) {
        return Ok(Subscribed::Full);
    }
    let id = uuid::Uuid::new_v4().to_string();
    tx.prepare_cached(
        "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        user.as_str(),
        endpoint,
        subscription.p256dh,
        subscription.auth,
        now_ms
    ])?;
    Ok(Subscribed::Created(id))
}

pub(super) fn unsubscribe(tx: &Connection, user: &UserId, id: &str) -> Result<(), StoreError> {
    let owned = tx
        .prepare_cached("SELECT 1 FROM push_subscriptions WHERE id = ?1 AND user_id = ?2")?
        .exists(params![id, user.as_str()])?;
    if !owned {
        return Err(StoreError::NotFound(
            "no such push subscription for this user",
        ));
    }
    remove_subscription(tx, id)
}

/// Removes a subscription. The pushes still owed to it stay queued until they fall due, and
/// are then handed out with nothing to send ([`due`]): the queue has no index by subscription,
/// which every publish would have to keep in order.
fn remove_subscription(tx: &Connection, id: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM push_subscriptions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(super) fn set_muted(
    tx: &Connection,
    user: &UserId,
    categories: &[String],
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM push_muted WHERE user_id = ?1")?
        .execute([user.as_str()])?;
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO push_muted (user_id, category) VALUES (?1, ?2)")?;
    for category in categories {
        insert.execute(params![user.as_str(), category])?;
    }
    Ok(())
}

pub(super) fn settle(
    tx: &Connection,
    outcomes: &[(PushJob, PushOutcome)],
) -> Result<(), StoreError> {
    let mut done = tx.prepare_cached("DELETE FROM push_queue WHERE job = ?1")?;
    let mut retry = tx.prepare_cached(
        "UPDATE push_queue SET due_ms = ?2, attempts = attempts + 1 WHERE job = ?1",
    )?;
    for (job, outcome) in outcomes {
        match outcome {
            PushOutcome::Done => {
                done.execute([&job.job])?;
            }
            PushOutcome::RetryAt(at_ms) => {
                retry.execute(params![job.job, at_ms])?;
            }
            PushOutcome::SubscriptionGone => remove_subscription(tx, &job.subscription)?,
        }
    }
    Ok(())
}

/// Inside the transaction that stores notification `seq` for `user`: queues one push per
/// subscription of the user, unless the category is muted or (with `offline`) the user has a
/// stream open. Returns how many it queued.
pub(super) fn enqueue(
    tx: &Connection,
    log: &Log<'_>,
    user: &UserId,
    seq: i64,
    category: Option<&str>,
    expires_ms: Option<i64>,
) -> Result<usize, StoreError> {
    let Some(push) = log.push else {
        return Ok(0);
    };
    let subscriptions = tx
        .prepare_cached("SELECT id FROM push_subscriptions WHERE user_id = ?1")?
        .query_map([user.as_str()], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if subscriptions.is_empty() {
        return Ok(0);
    }
    if let Some(category) = category {
        let muted = tx
            .prepare_cached("SELECT 1 FROM push_muted WHERE user_id = ?1 AND category = ?2")?
            .exists(params![user.as_str(), category])?;
        if muted {
            return Ok(0);
        }
    }
    if push.when == PushWhen::Offline && push.presence.streams_here(user) > 0 {
        return Ok(0);
    }
    let deadline_ms = push.deadline_ms(log.now_ms, expires_ms);
    let mut insert = tx.prepare_cached(
        "INSERT INTO push_queue (seq, subscription, due_ms, deadline_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for subscription in &subscriptions {
        insert.execute(params![seq, subscription, log.now_ms, deadline_ms])?;
    }
    Ok(subscriptions.len())
}

/// A user's subscriptions, oldest first.
pub(super) fn subscriptions(
    tx: &Connection,
    user: &UserId,
) -> Result<Vec<SubscriptionInfo>, StoreError> {
    let mut select = tx.prepare_cached(
        "SELECT id, endpoint, created_ms FROM push_subscriptions WHERE user_id = ?1
         ORDER BY created_ms, id",
    )?;
    let rows = select.query_map([user.as_str()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (id, endpoint, created_ms) = row?;
        let origin = url::Url::parse(&endpoint)
            .map_err(|error| StoreError::Corrupt(format!("stored endpoint: {error}")))?
            .origin()
            .ascii_serialization();
        Ok(SubscriptionInfo {
            id,
            origin,
            created_ms,
        })
    })
    .collect()
}

pub(super) fn muted(tx: &Connection, user: &UserId) -> Result<Vec<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT category FROM push_muted WHERE user_id = ?1 ORDER BY category")?
        .query_map([user.as_str()], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// The jobs due by `?1`, oldest first, but those in the JSON list `?3`, at most `?2`. A job
/// whose subscription is gone comes with no notification (nothing is owed).
const DUE: &str = "
    SELECT q.job, COALESCE(s.user_id, ''), q.subscription, COALESCE(s.endpoint, ''),
           COALESCE(s.p256dh, ''), COALESCE(s.auth, ''),
           CASE WHEN s.id IS NOT NULL AND n.read = 0
                     AND (n.expires_ms IS NULL OR n.expires_ms > ?1)
                THEN COALESCE(n.body, e.data) END,
           q.deadline_ms, q.attempts
    FROM push_queue q
    LEFT JOIN push_subscriptions s ON s.id = q.subscription
    LEFT JOIN notifications n ON n.seq = q.seq
    LEFT JOIN events e ON e.seq = q.seq
    WHERE q.due_ms <= ?1 AND q.job NOT IN (SELECT value FROM json_each(?3))
    ORDER BY q.due_ms, q.job LIMIT ?2";

/// Up to `limit` jobs due by `now_ms`, oldest first, skipping `busy` ones (being tried).
/// The pusher asks each time a push ends, so this must cost what it returns, not what is
/// queued or subscribed (BENCHMARKS.md, "Web Push"): the queue is walked in `due_ms` order
/// (the `LEFT JOIN`s keep it the outer loop: with the statistics `PRAGMA optimize` leaves after
/// an empty queue, SQLite would scan every subscription and sort the whole queue instead),
/// and the busy jobs, the oldest due, are left out before the joins read their notifications.
pub(super) fn due(
    tx: &Connection,
    now_ms: i64,
    limit: usize,
    busy: &std::collections::HashSet<String>,
) -> Result<Vec<PushJob>, StoreError> {
    let mut select = tx.prepare_cached(DUE)?;
    // A JSON list of the busy jobs, whose names are this store's own integers.
    let busy: Vec<String> = busy
        .iter()
        .filter_map(|job| job.parse::<i64>().ok())
        .map(|job| job.to_string())
        .collect();
    let busy = format!("[{}]", busy.join(","));
    let rows = select.query_map(params![now_ms, limit as i64, busy], |row| {
        Ok(PushJob {
            job: row.get::<_, i64>(0)?.to_string(),
            user: row.get(1)?,
            subscription: row.get(2)?,
            endpoint: row.get(3)?,
            p256dh: row.get(4)?,
            auth: row.get(5)?,
            notification: row.get(6)?,
            deadline_ms: row.get(7)?,
            attempts: row.get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Pushes owed now (jobs in the queue), and when the next one falls due.
pub(super) fn depth(tx: &Connection) -> Result<(u64, Option<i64>), StoreError> {
    Ok(tx
        .prepare_cached("SELECT COUNT(*), MIN(due_ms) FROM push_queue")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?))
        })?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::SyncMode;

    fn store_with_subscriptions(count: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::prepare_writer(&conn, SyncMode::Normal).unwrap();
        let mut insert = conn
            .prepare(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_ms)
                 VALUES (?1, ?1, 'https://push.example/' || ?1, 'k', 'a', 0)",
            )
            .unwrap();
        for index in 0..count {
            insert.execute([format!("s{index}")]).unwrap();
        }
        drop(insert);
        conn
    }

    fn queue(conn: &Connection, job: i64, subscription: &str, due_ms: i64) {
        conn.execute(
            "INSERT INTO push_queue (job, seq, subscription, due_ms, deadline_ms)
             VALUES (?1, ?1, ?2, ?3, 1000000)",
            params![job, subscription, due_ms],
        )
        .unwrap();
    }

    #[test]
    fn the_oldest_due_jobs_come_first_and_busy_ones_are_left_out() {
        let conn = store_with_subscriptions(3);
        queue(&conn, 1, "s0", 10);
        queue(&conn, 2, "s1", 30);
        queue(&conn, 3, "s2", 20);
        queue(&conn, 4, "s0", 20);
        queue(&conn, 5, "s1", 99);
        let jobs = |busy: &[&str], limit| -> Vec<String> {
            let busy: HashSet<String> = busy.iter().map(|job| job.to_string()).collect();
            let due = due(&conn, 50, limit, &busy).unwrap();
            due.into_iter().map(|job| job.job).collect()
        };
        assert_eq!(jobs(&[], 10), ["1", "3", "4", "2"], "by due time, then job");
        assert_eq!(jobs(&["1", "4"], 10), ["3", "2"]);
        assert_eq!(
            jobs(&["1"], 2),
            ["3", "4"],
            "the limit counts jobs returned"
        );
        let first = due(&conn, 50, 1, &HashSet::new()).unwrap();
        assert_eq!(
            (first[0].user.as_str(), first[0].notification.as_deref()),
            ("s0", None)
        );
    }

    #[test]
    fn a_job_whose_subscription_is_gone_is_handed_out_with_nothing_to_send() {
        let conn = store_with_subscriptions(1);
        conn.execute(
            "INSERT INTO notifications (seq, id, user_id, body) VALUES (1, 'n1', 'u', '{}')",
            [],
        )
        .unwrap();
        queue(&conn, 1, "s0", 10);
        queue(&conn, 2, "gone", 20);
        let due = due(&conn, 50, 10, &HashSet::new()).unwrap();
        let seen: Vec<_> = due
            .iter()
            .map(|job| {
                (
                    job.job.as_str(),
                    job.endpoint.as_str(),
                    job.notification.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("1", "https://push.example/s0", Some("{}")),
                ("2", "", None)
            ]
        );
    }

    #[test]
    fn the_queue_is_walked_by_due_time_whatever_the_statistics_say() {
        // What `PRAGMA optimize` leaves after a run that ended with an empty queue.
        let conn = store_with_subscriptions(2000);
        conn.execute_batch("ANALYZE").unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE}"))
            .unwrap()
            .query_map(params![0, 64, "[1]"], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(plan[0], "SEARCH q USING INDEX push_queue_by_due (due_ms<?)");
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|step| step == "SEARCH s USING PRIMARY KEY (id=?) LEFT-JOIN"),
            "{plan:?}"
        );
    }
}
