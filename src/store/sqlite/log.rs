//! The log as one group of writes sees it: the events it appends, with the ids they take, and
//! how many it takes out (a delete removes every event about its notification).

use rusqlite::{Connection, params};

use super::sizes::HistorySizes;
use crate::domain::{EventId, EventName};
use crate::store::{Audience, CommittedEvent, StoreError};

/// The events a group appends, with the ids they take, and what it takes out of the log.
pub(super) struct Log<'a> {
    /// The id the next event gets.
    pub next_seq: u64,
    pub events: &'a mut Vec<CommittedEvent>,
    pub now_ms: i64,
    /// Events removed from the log (deleted notifications) in this group.
    pub removed: u64,
    /// A retention sweep runs before this group commits.
    pub sweep_asked: bool,
    /// How many notifications each user has, as far as the writer knows.
    pub history_sizes: &'a mut HistorySizes,
}

/// The notification an event is about, so a delete can find the event and an expiry hide it.
#[derive(Clone, Copy)]
pub(super) struct About<'a> {
    pub subject: &'a str,
    pub expires_ms: Option<i64>,
}

impl Log<'_> {
    pub fn append(
        &mut self,
        tx: &Connection,
        audience: Audience,
        name: EventName,
        data: String,
        about: Option<About<'_>>,
    ) -> Result<EventId, StoreError> {
        let seq = self.next_seq;
        let user = match &audience {
            Audience::User(user) => Some(user.as_str()),
            Audience::Everyone => None,
        };
        tx.prepare_cached(
            "INSERT INTO events (seq, user_id, name, data, created_ms, subject, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            seq as i64,
            user,
            name.as_str(),
            data,
            self.now_ms,
            about.map(|about| about.subject),
            about.and_then(|about| about.expires_ms),
        ])?;
        self.next_seq += 1;
        let id = EventId::from_seq(seq);
        self.events.push(CommittedEvent {
            id,
            audience,
            name,
            data,
        });
        Ok(id)
    }
}
