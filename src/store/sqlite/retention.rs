//! Retention inside the writer's transaction: the log kept within `--retention-events` at
//! every commit, and by age (with old idempotency keys) at each sweep.

use rusqlite::{Connection, OptionalExtension};

use crate::store::{Retention, StoreError};

/// Removes the `count` oldest events; returns how many went.
pub(super) fn prune_oldest(tx: &Connection, count: u64) -> Result<u64, StoreError> {
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
pub(super) fn sweep(tx: &Connection, now_ms: i64, retention: Retention) -> Result<(), StoreError> {
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
