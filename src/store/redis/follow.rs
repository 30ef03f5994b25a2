//! Each node reads the shared log once, with one blocking `XREAD`, and hands it to the hub in
//! id order. When Redis goes away, streams stay open and the node retries, then goes on from
//! the last id it dispatched; it is ready again only once both its connections work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio_util::sync::CancellationToken;

use super::{parse_stream_id, stream_id};
use crate::domain::{EventId, EventName, UserId};
use crate::store::{Audience, CommittedEvent, EventSink};

/// How long one `XREAD` waits for news before asking again.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries dispatched per read at most.
const BATCH: usize = 1000;
/// Waits between attempts to reach Redis again.
const RETRY: Duration = Duration::from_millis(250);

pub(super) struct Follower {
    pub client: redis::Client,
    /// The store's command connection, probed before the node calls itself ready again.
    pub commands: ConnectionManager,
    pub log_key: String,
    pub pruned_key: String,
    /// The newest id dispatched; reading goes on after it.
    pub after: EventId,
    pub sink: Arc<dyn EventSink>,
    pub healthy: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

pub(super) async fn follow_log(mut follower: Follower) {
    let stop = follower.stop.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            outcome = follower.read_until_error() => {
                follower.healthy.store(false, Ordering::Release);
                tracing::warn!(error = %outcome, "lost Redis; streams stay open, retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

impl Follower {
    /// Connects and dispatches until something fails; returns what failed.
    async fn read_until_error(&mut self) -> redis::RedisError {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(3)));
        let mut conn = match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(error) => return error,
        };
        if !self.healthy.load(Ordering::Acquire) {
            // The command connection reconnects only after a command failed on it, so without
            // this probe the first publish after an outage would get a 503 from a ready node.
            // A data command, so that a Redis still loading its AOF does not count as back.
            let probe: Result<u64, _> = self.commands.xlen(&self.log_key).await;
            if let Err(error) = probe {
                return error;
            }
            self.healthy.store(true, Ordering::Release);
            tracing::info!("Redis is back; catching up from {}", self.after);
            self.warn_if_retention_overtook(&mut conn).await;
        }
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(BATCH);
        loop {
            let reply: Result<Option<StreamReadReply>, _> = conn
                .xread_options(&[&self.log_key], &[stream_id(self.after)], &options)
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(error) => return error,
            };
            let Some(reply) = reply else { continue };
            let events: Vec<CommittedEvent> = reply
                .keys
                .into_iter()
                .flat_map(|key| key.ids)
                .filter_map(|entry| decode(&entry.id, &entry.map))
                .collect();
            if let Some(last) = events.last() {
                self.after = last.id;
                self.sink.dispatch(&events);
            }
        }
    }

    /// After an outage, events this node never read may already be trimmed; streams that
    /// reconnect will then get `resync` from replay. Say so in the log.
    async fn warn_if_retention_overtook(&self, conn: &mut redis::aio::MultiplexedConnection) {
        let pruned: Option<String> = conn.get(&self.pruned_key).await.unwrap_or(None);
        if let Some(pruned) = pruned.as_deref().and_then(|p| parse_stream_id(p).ok()) {
            if pruned > self.after {
                tracing::warn!(
                    "retention removed events this node had not read (through {pruned}); \
                     reconnecting clients will be told to resync"
                );
            }
        }
    }
}

/// One log entry as an event; entries that do not decode are skipped with a warning.
fn decode(id: &str, fields: &std::collections::HashMap<String, Value>) -> Option<CommittedEvent> {
    let text = |name: &str| -> Option<String> {
        fields
            .get(name)
            .and_then(|value| redis::from_redis_value(value.clone()).ok())
    };
    let decoded = (|| {
        let id = parse_stream_id(id).ok()?;
        let name = EventName::parse(&text("n")?)?;
        let user = text("u")?;
        let audience = if user.is_empty() {
            Audience::Everyone
        } else {
            Audience::User(UserId::parse(&user).ok()?)
        };
        Some(CommittedEvent {
            id,
            audience,
            name,
            data: text("d")?,
        })
    })();
    if decoded.is_none() {
        tracing::warn!(id, "skipping a log entry that does not decode");
    }
    decoded
}
