//! The log as one group of writes sees it: the events it appends, with the ids they take, and
//! how many it takes out (a delete removes every event about its notification).

use rusqlite::{Connection, Statement, params};

use super::sizes::HistorySizes;
use crate::domain::{EventId, EventName};
use crate::store::push::PushQueueing;
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
    /// `meta.pruned_through` as this group found it, once read (see [`Log::pruned_through`]).
    pub pruned_through: Option<u64>,
    /// How pushes are queued as notifications are stored; `None` while push is off.
    pub push: Option<&'a PushQueueing>,
    /// Push jobs this group queued.
    pub pushes_queued: usize,
}

/// The notification an event is about, so a delete can find the event and an expiry hide it.
#[derive(Clone, Copy)]
pub(super) struct About<'a> {
    pub subject: &'a str,
    pub expires_ms: Option<i64>,
}

/// Appends one event; prepared once by a caller that appends many (see [`Log::append_with`]).
pub(super) const APPEND: &str =
    // OR ROLLBACK: a clash (impossible: the writer hands out `seq`) ends the transaction, so
    // SQLite keeps no statement journal for this insert.
    "INSERT OR ROLLBACK INTO events (seq, user_id, name, data, created_ms, subject, expires_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

impl Log<'_> {
    /// The newest id past retention: events up to it are not replayable, and the only ones
    /// left are `notification` events history still needs. Retention moves it only after the
    /// group's commands, so it holds for all of them.
    pub fn pruned_through(&mut self, tx: &Connection) -> Result<u64, StoreError> {
        if let Some(seq) = self.pruned_through {
            return Ok(seq);
        }
        let seq = super::schema::meta(tx, "pruned_through")?;
        self.pruned_through = Some(seq);
        Ok(seq)
    }

    pub fn append(
        &mut self,
        tx: &Connection,
        audience: Audience,
        name: EventName,
        data: String,
        about: Option<About<'_>>,
    ) -> Result<EventId, StoreError> {
        let mut append = tx.prepare_cached(APPEND)?;
        self.append_with(&mut append, audience, name, data, about)
    }

    /// [`Log::append`] with the statement [`APPEND`] already prepared.
    pub fn append_with(
        &mut self,
        append: &mut Statement<'_>,
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
        append.execute(params![
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
