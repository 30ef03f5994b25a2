//! How many notifications each user has stored, and which is the oldest, as the writer last
//! knew them, so that keeping a user's history within its limit costs a map lookup per insert,
//! and a short step along the user's events per notification it removes, instead of a walk over
//! that user's history. Only the writer thread uses it; anything it is unsure of (a rolled back
//! command, a failed commit, a removal) it forgets, and reads again when next needed.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;

/// Past this many users the map starts over, so that it stays small however many users there are.
const MAX_KNOWN: usize = 100_000;

#[derive(Default)]
pub(super) struct HistorySizes {
    known: HashMap<Box<str>, Known>,
}

/// One user's history: how many notifications, and the id (`seq`) of the oldest when there are
/// any.
#[derive(Clone, Copy)]
struct Known {
    count: u64,
    oldest: i64,
}

impl HistorySizes {
    /// Counts one more notification of `user`, `seq`, already inserted in `tx`; returns how many
    /// the user now has.
    pub fn grew(&mut self, tx: &Connection, user: &str, seq: i64) -> Result<u64, StoreError> {
        if let Some(known) = self.known.get_mut(user) {
            known.count += 1;
            if known.count == 1 {
                known.oldest = seq;
            }
            return Ok(known.count);
        }
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        let (count, oldest): (i64, Option<i64>) = tx
            .prepare_cached(
                "SELECT COUNT(*), MIN(e.seq) FROM events e CROSS JOIN notifications n
                 ON n.seq = e.seq WHERE e.user_id = ?1",
            )?
            .query_row([user], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let known = Known {
            count: count.max(0) as u64,
            oldest: oldest.unwrap_or(seq),
        };
        self.known.insert(user.into(), known);
        Ok(known.count)
    }

    /// The id of `user`'s oldest notification; known once [`HistorySizes::grew`] has counted it.
    pub fn oldest(&self, user: &str) -> Option<i64> {
        self.known
            .get(user)
            .filter(|known| known.count > 0)
            .map(|known| known.oldest)
    }

    /// `user`'s oldest notification is gone from `tx`: finds the next oldest; returns how many
    /// the user now has.
    pub fn took_oldest(&mut self, tx: &Connection, user: &str) -> Result<u64, StoreError> {
        let Some(known) = self.known.get_mut(user).filter(|known| known.count > 0) else {
            return Ok(0);
        };
        let next: Option<i64> = tx
            .prepare_cached(
                "SELECT e.seq FROM events e WHERE e.user_id = ?1 AND e.seq > ?2
                 AND EXISTS (SELECT 1 FROM notifications n WHERE n.seq = e.seq)
                 ORDER BY e.seq LIMIT 1",
            )?
            .query_row(params![user, known.oldest], |row| row.get(0))
            .optional()?;
        known.count -= 1;
        match next {
            Some(next) => known.oldest = next,
            None => known.count = 0,
        }
        Ok(known.count)
    }

    /// `user`'s history is no longer known.
    pub fn forget(&mut self, user: &str) {
        self.known.remove(user);
    }

    /// No history is known any more.
    pub fn forget_all(&mut self) {
        self.known.clear();
    }
}
