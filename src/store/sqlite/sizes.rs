//! How many notifications each user has stored, as the writer last counted them, so that
//! keeping a user's history within its limit costs a map lookup per insert instead of a walk
//! over that user's index. Only the writer thread uses it; anything it is unsure of (a rolled
//! back command, a failed commit, a removal) it forgets, and counts again when next needed.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::store::StoreError;

/// Past this many users the map starts over, so that it stays small however many users there are.
const MAX_KNOWN: usize = 100_000;

#[derive(Default)]
pub(super) struct HistorySizes {
    known: HashMap<Box<str>, u64>,
}

impl HistorySizes {
    /// Counts one more notification of `user`, already inserted in `tx`; returns how many the
    /// user now has.
    pub fn grew(&mut self, tx: &Connection, user: &str) -> Result<u64, StoreError> {
        if let Some(size) = self.known.get_mut(user) {
            *size += 1;
            return Ok(*size);
        }
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        let size: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM notifications WHERE user_id = ?1")?
            .query_row([user], |row| row.get(0))?;
        let size = size.max(0) as u64;
        self.known.insert(user.into(), size);
        Ok(size)
    }

    /// `user` now has exactly `size`.
    pub fn set(&mut self, user: &str, size: u64) {
        if let Some(known) = self.known.get_mut(user) {
            *known = size;
        }
    }

    /// `user`'s count is no longer known.
    pub fn forget(&mut self, user: &str) {
        self.known.remove(user);
    }

    /// No count is known any more.
    pub fn forget_all(&mut self) {
        self.known.clear();
    }
}
