//! Retention inside the writer's transaction: the replayable log kept within
//! `--retention-events` at every commit, and by age (with old idempotency keys) at each sweep.
//! Events past retention leave the log, except the `notification` events of notifications still
//! in history, which history is read through (see `schema`).

use rusqlite::{Connection, OptionalExtension};

use super::schema;
use crate::store::{Retention, StoreError};

/// Takes the `count` oldest replayable events past retention; returns how many stopped being
/// replayable.
pub(super) fn prune_oldest(tx: &Connection, count: u64) -> Result<u64, StoreError> {
    let pruned_through = schema::meta(tx, "pruned_through")? as i64;
    let newest_pruned: Option<i64> = tx
        .query_row(
            "SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
            [pruned_through, count as i64 - 1],
            |row| row.get(0),
        )
        .optional()?;
    let Some(newest_pruned) = newest_pruned else {
        return Ok(0);
    };
    prune_through(tx, pruned_through, newest_pruned)?;
    // The `count` events after `pruned_through` are the ones up to `newest_pruned`.
    Ok(count)
}

/// Puts events up to `newest_pruned` past retention, removing all but those history needs.
fn prune_through(tx: &Connection, pruned_through: i64, newest_pruned: i64) -> rusqlite::Result<()> {
    delete_unneeded(tx, pruned_through, newest_pruned)?;
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE name = 'pruned_through'",
        [newest_pruned],
    )
    .map(drop)
}

/// The most events, and the most idempotency keys, one tidy step deletes: publishes wait while
/// it runs, so a step takes a few milliseconds however much is due
/// (docs/architecture.md#the-sqlite-store).
pub(super) const TIDY_STEP: i64 = 200;

/// Puts every event older than the retention age past retention at once, by moving the mark
/// replays start from; [`tidy`] deletes the rows later, a step at a time. Returns how many
/// events stopped being replayable.
pub(super) fn sweep(tx: &Connection, now_ms: i64, retention: Retention) -> Result<u64, StoreError> {
    let cutoff = now_ms - retention.max_age.as_millis() as i64;
    let pruned_through = schema::meta(tx, "pruned_through")? as i64;
    let Some(newest_pruned) = newest_older_than(tx, pruned_through, cutoff)? else {
        return Ok(0);
    };
    let pruned: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM events WHERE seq > ?1 AND seq <= ?2")?
        .query_row([pruned_through, newest_pruned], |row| row.get(0))?;
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE name = 'pruned_through'",
        [newest_pruned],
    )?;
    Ok(pruned as u64)
}

/// One step of deleting what retention has put past: up to [`TIDY_STEP`] ids of events after
/// `meta.tidied_through`, up to the mark, that no history needs; and up to as many idempotency
/// keys past their window. Remembers where it got to in `meta`, so a restart goes on from
/// there rather than walking the history's events again. Returns whether more is left.
pub(super) fn tidy(tx: &Connection, now_ms: i64, retention: Retention) -> Result<bool, StoreError> {
    let pruned_through = schema::meta(tx, "pruned_through")? as i64;
    let after = schema::meta(tx, "tidied_through")? as i64;
    let first: Option<i64> = tx
        .prepare_cached("SELECT MIN(seq) FROM events WHERE seq > ?1 AND seq <= ?2")?
        .query_row([after, pruned_through], |row| row.get(0))?;
    let (through, more_events) = match first {
        Some(first) => {
            let through = (first - 1).saturating_add(TIDY_STEP).min(pruned_through);
            delete_unneeded(tx, first - 1, through)?;
            (through, through < pruned_through)
        }
        None => (pruned_through.max(after), false),
    };
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'tidied_through'")?
        .execute([through])?;
    let key_cutoff = now_ms - retention.idempotency_window.as_millis() as i64;
    let keys = tx
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN
             (SELECT user_id, key FROM idempotency_keys WHERE created_ms < ?1 LIMIT ?2)",
        )?
        .execute([key_cutoff, TIDY_STEP])?;
    Ok(more_events || keys as i64 == TIDY_STEP)
}

/// Deletes the events after `after` up to `through` that no history needs.
fn delete_unneeded(tx: &Connection, after: i64, through: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM events WHERE seq > ?1 AND seq <= ?2
         AND seq NOT IN (SELECT seq FROM notifications WHERE seq > ?1 AND seq <= ?2)",
    )?
    .execute([after, through])
    .map(drop)
}

/// The newest event after `after` created before `cutoff`. Ids grow with time, so this bisects `seq` with
/// a few primary-key lookups instead of keeping an index on `created_ms`. (Should the clock
/// step back, the order of ids is the true order, and events go by it.)
fn newest_older_than(tx: &Connection, after: i64, cutoff: i64) -> rusqlite::Result<Option<i64>> {
    let first_from = |seq: i64| -> rusqlite::Result<Option<(i64, i64)>> {
        tx.prepare_cached(
            "SELECT seq, created_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        )?
        .query_row([seq], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
    };
    let (oldest, newest): (Option<i64>, Option<i64>) = tx.query_row(
        "SELECT MIN(seq), MAX(seq) FROM events WHERE seq > ?1",
        [after],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
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
                newest_older_than(&conn, 0, cutoff).expect("query"),
                want,
                "cutoff {cutoff}"
            );
        }
        assert_eq!(
            newest_older_than(&log_with(&[]), 0, 5).expect("query"),
            None
        );
        // Events up to `after` are past retention already, whatever their age.
        assert_eq!(newest_older_than(&conn, 104, 2000).expect("query"), None);
        assert_eq!(
            newest_older_than(&conn, 100, 2000).expect("query"),
            Some(104)
        );
    }
}
