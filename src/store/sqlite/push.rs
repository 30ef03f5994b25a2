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
            PushOutcome::SubscriptionGone => {
                done.execute([&job.job])?;
                remove_subscription(tx, &job.subscription)?;
            }
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

/// Where this process is in the queue: every fresh job up to `after` has been handed out, and
/// `handed` are the retries handed out and not yet settled. A job is handed out once, then
/// again only after it was settled for a retry (or after a restart, which starts from nothing).
#[derive(Debug, Default, Clone)]
pub(super) struct Lease {
    /// The last fresh job handed out: its notification's `seq`, then its `job`.
    after: (i64, i64),
    handed: std::collections::HashSet<i64>,
}

impl Lease {
    /// Forgets settled jobs, so those settled for a retry can be handed out again.
    pub(super) fn settled(&mut self, jobs: impl IntoIterator<Item = i64>) {
        for job in jobs {
            self.handed.remove(&job);
        }
    }
}

/// Up to `limit` jobs to try now: retries that have fallen due, oldest due first, then fresh
/// jobs in the order their notifications were stored. Each read costs what it returns, not
/// what is queued or in flight (BENCHMARKS.md, "Web Push"): fresh jobs are read from where
/// the last read ended (`lease.after`), through an index that holds only them, and retries
/// through one that holds only retries.
pub(super) fn due(
    tx: &Connection,
    now_ms: i64,
    limit: usize,
    lease: &mut Lease,
) -> Result<Vec<PushJob>, StoreError> {
    // A JSON list of the retries in flight.
    let handed: Vec<String> = lease.handed.iter().map(i64::to_string).collect();
    let handed = format!("[{}]", handed.join(","));
    let mut jobs = Vec::new();
    let mut retries = tx.prepare_cached(DUE_RETRIES)?;
    for row in retries.query_map(params![now_ms, limit as i64, handed], job_of_row)? {
        let ((_, key), job) = row?;
        lease.handed.insert(key);
        jobs.push(job);
    }
    let mut fresh = tx.prepare_cached(FRESH)?;
    let (seq, key) = lease.after;
    let room = (limit - jobs.len()) as i64;
    for row in fresh.query_map(params![now_ms, room, seq, key], job_of_row)? {
        let (place, job) = row?;
        lease.after = place;
        jobs.push(job);
    }
    Ok(jobs)
}

/// A job as the pusher takes it, and its place in the queue: its notification's `seq`, then
/// its own key.
fn job_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<((i64, i64), PushJob)> {
    Ok((
        (row.get(9)?, row.get(0)?),
        PushJob {
            job: row.get::<_, i64>(0)?.to_string(),
            user: row.get(1)?,
            subscription: row.get(2)?,
            endpoint: row.get(3)?,
            p256dh: row.get(4)?,
            auth: row.get(5)?,
            notification: row.get(6)?,
            deadline_ms: row.get(7)?,
            attempts: row.get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
        },
    ))
}

/// What a job is tried with. A job whose subscription is gone comes with no notification
/// (nothing is owed). The `LEFT JOIN`s keep the queue the outer loop, walked by its index.
macro_rules! push_job_select {
    ($order:literal) => {
        concat!(
            "SELECT q.job, COALESCE(s.user_id, ''), q.subscription, COALESCE(s.endpoint, ''),
                    COALESCE(s.p256dh, ''), COALESCE(s.auth, ''),
                    CASE WHEN s.id IS NOT NULL AND n.read = 0
                              AND (n.expires_ms IS NULL OR n.expires_ms > ?1)
                         THEN COALESCE(n.body, e.data) END,
                    q.deadline_ms, q.attempts, q.seq
             FROM push_queue q
             LEFT JOIN push_subscriptions s ON s.id = q.subscription
             LEFT JOIN notifications n ON n.seq = q.seq
             LEFT JOIN events e ON e.seq = q.seq
             ",
            $order
        )
    };
}

/// Retries due by `?1`, oldest due first, but those in the JSON list `?3`, at most `?2`.
const DUE_RETRIES: &str = push_job_select!(
    "WHERE q.attempts > 0 AND q.due_ms <= ?1
       AND q.job NOT IN (SELECT value FROM json_each(?3))
     ORDER BY q.due_ms, q.job LIMIT ?2"
);

/// Fresh jobs after (`?3` seq, `?4` job), in that order, at most `?2`.
const FRESH: &str = push_job_select!(
    "WHERE q.attempts = 0 AND (q.seq, q.job) > (?3, ?4)
     ORDER BY q.seq, q.job LIMIT ?2"
);

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

    /// Queues job `job` for notification `seq`, fresh (`attempts` 0) or a retry due at `due_ms`.
    fn queue(
        conn: &Connection,
        job: i64,
        seq: i64,
        subscription: &str,
        due_ms: i64,
        attempts: i64,
    ) {
        conn.execute(
            "INSERT INTO push_queue (job, seq, subscription, due_ms, deadline_ms, attempts)
             VALUES (?1, ?2, ?3, ?4, 1000000, ?5)",
            params![job, seq, subscription, due_ms, attempts],
        )
        .unwrap();
    }

    fn jobs(conn: &Connection, limit: usize, lease: &mut Lease) -> Vec<String> {
        let due = due(conn, 50, limit, lease).unwrap();
        due.into_iter().map(|job| job.job).collect()
    }

    #[test]
    fn due_retries_come_first_then_fresh_jobs_in_publish_order_each_handed_out_once() {
        let conn = store_with_subscriptions(3);
        queue(&conn, 1, 7, "s0", 10, 0);
        queue(&conn, 2, 5, "s1", 10, 0);
        queue(&conn, 3, 5, "s2", 10, 0);
        queue(&conn, 4, 2, "s0", 40, 1);
        queue(&conn, 5, 3, "s1", 30, 2);
        queue(&conn, 6, 4, "s2", 99, 1);
        let mut lease = Lease::default();
        assert_eq!(
            jobs(&conn, 3, &mut lease),
            ["5", "4", "2"],
            "retries by due time (6 is not due), then fresh jobs by notification"
        );
        assert_eq!(
            jobs(&conn, 10, &mut lease),
            ["3", "1"],
            "on from the middle of a notification's jobs"
        );
        assert!(jobs(&conn, 10, &mut lease).is_empty(), "all are handed out");
        // Settled: 5 for another retry (now due later), 4 done; 2 done.
        conn.execute_batch(
            "UPDATE push_queue SET due_ms = 60, attempts = 3 WHERE job = 5;
             DELETE FROM push_queue WHERE job IN (2, 4);",
        )
        .unwrap();
        lease.settled([5, 4, 2]);
        queue(&conn, 7, 8, "s1", 45, 0);
        queue(&conn, 8, 9, "s2", 45, 0);
        assert_eq!(jobs(&conn, 1, &mut lease), ["7"], "the limit counts jobs");
        assert_eq!(jobs(&conn, 10, &mut lease), ["8"]);
        lease.settled([8]);
        assert!(
            jobs(&conn, 10, &mut lease).is_empty(),
            "a fresh job settled without a retry is not handed out again"
        );
        let mut restarted = Lease::default();
        assert_eq!(
            jobs(&conn, 10, &mut restarted),
            ["3", "1", "7", "8"],
            "after a restart, every fresh job still queued"
        );
    }

    #[test]
    fn each_outcome_leaves_the_queue_as_it_says() {
        let conn = store_with_subscriptions(3);
        for (job, subscription) in [(1, "s0"), (2, "s1"), (3, "s2")] {
            queue(&conn, job, job, subscription, 10, 0);
        }
        let handed = due(&conn, 50, 10, &mut Lease::default()).unwrap();
        let outcomes: Vec<(PushJob, PushOutcome)> = handed
            .into_iter()
            .zip([
                PushOutcome::Done,
                PushOutcome::RetryAt(90),
                PushOutcome::SubscriptionGone,
            ])
            .collect();
        settle(&conn, &outcomes).unwrap();
        let left: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT job, due_ms, attempts FROM push_queue ORDER BY job")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [(2, 90, 1)], "done and gone leave; a retry waits");
        let subscriptions: Vec<String> = conn
            .prepare("SELECT id FROM push_subscriptions ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(subscriptions, ["s0", "s1"], "the gone one is removed");
    }

    #[test]
    fn a_job_whose_subscription_is_gone_is_handed_out_with_nothing_to_send() {
        let conn = store_with_subscriptions(1);
        conn.execute(
            "INSERT INTO notifications (seq, id, user_id, body) VALUES (1, 'n1', 'u', '{}')",
            [],
        )
        .unwrap();
        queue(&conn, 1, 1, "s0", 10, 0);
        queue(&conn, 2, 1, "gone", 10, 0);
        let due = due(&conn, 50, 10, &mut Lease::default()).unwrap();
        let seen: Vec<_> = due
            .iter()
            .map(|job| {
                (
                    job.job.as_str(),
                    job.user.as_str(),
                    job.endpoint.as_str(),
                    job.notification.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("1", "s0", "https://push.example/s0", Some("{}")),
                ("2", "", "", None)
            ]
        );
    }

    fn plan(conn: &Connection, query: &str, arguments: impl rusqlite::Params) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap()
            .query_map(arguments, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn each_read_walks_only_its_own_index_whatever_the_statistics_say() {
        // What `PRAGMA optimize` leaves after a run that ended with an empty queue.
        let conn = store_with_subscriptions(2000);
        conn.execute_batch("ANALYZE").unwrap();
        let retries = plan(&conn, DUE_RETRIES, params![0, 64, "[1]"]);
        let fresh = plan(&conn, FRESH, params![0, 64, 0, 0]);
        assert_eq!(
            retries[0],
            "SEARCH q USING INDEX push_queue_retries (due_ms<?)"
        );
        assert_eq!(fresh[0], "SEARCH q USING INDEX push_queue_fresh (seq>?)");
        for plan in [retries, fresh] {
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
}
