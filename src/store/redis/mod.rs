//! The cluster backend: the log, history, read state and idempotency keys live in Redis,
//! shared by every node with the same `--redis-url` and prefix. Each write is one Lua script
//! (atomic); Redis assigns the ids, so every node sees the same ones. The keys are listed in
//! docs/architecture.md#the-redis-store-cluster-mode.

mod follow;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{
    Archived, BulkOutcome, EventSink, HistoryPage, HistoryQuery, MarkedRead, PublishOutcome,
    ReplayPage, Retention, StoreError, StoredEvent,
};
use crate::domain::{
    EventId, EventName, IdempotencyKey, NewAnnouncement, NewNotification, Notification,
    NotificationPatch, UserId,
};

const LIBRARY: &str = include_str!("scripts.lua");

const PUBLISH: &str = r#"
-- KEYS: log, own stream, last, pruned, list, bodies, unread, idempotency key
-- ARGV: user, notification id, json, history limit, idempotency ttl (0: none), max events, age ms
if ARGV[5] ~= '0' then
  local earlier = redis.call('GET', KEYS[8])
  if earlier then return {'repeat', earlier} end
end
local id = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'notification', ARGV[3],
  tonumber(ARGV[6]), tonumber(ARGV[7]))
redis.call('LPUSH', KEYS[5], ARGV[2])
redis.call('HSET', KEYS[6], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[7], ARGV[2])
local limit = tonumber(ARGV[4])
local extra = redis.call('LRANGE', KEYS[5], limit, -1)
if #extra > 0 then
  redis.call('LTRIM', KEYS[5], 0, limit - 1)
  for _, old in ipairs(extra) do
    redis.call('HDEL', KEYS[6], old)
    redis.call('SREM', KEYS[7], old)
  end
end
if ARGV[5] ~= '0' then redis.call('SET', KEYS[8], ARGV[3], 'EX', ARGV[5]) end
return {'created', id}
"#;

const BROADCAST: &str = r#"
-- KEYS: log, announcements stream, last, pruned.  ARGV: json, max events, age ms
return append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], '', 'announcement', ARGV[1],
  tonumber(ARGV[2]), tonumber(ARGV[3]))
"#;

const MARK_READ: &str = r#"
-- KEYS: log, own stream, last, pruned, bodies, unread
-- ARGV: user, notification id, read-event json, max events, age ms
if redis.call('HEXISTS', KEYS[5], ARGV[2]) == 0 then return 'notfound' end
if redis.call('SREM', KEYS[6], ARGV[2]) == 0 then return 'already' end
append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'read', ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]))
return 'changed'
"#;

const MARK_ALL_READ: &str = r#"
-- KEYS: log, own stream, last, pruned, unread.  ARGV: user, read-event json, max events, age ms
local n = redis.call('SCARD', KEYS[5])
if n > 0 then
  redis.call('DEL', KEYS[5])
  append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'read', ARGV[2], tonumber(ARGV[3]),
    tonumber(ARGV[4]))
end
return n
"#;

const HISTORY: &str = r#"
-- KEYS: list, bodies, unread, last.  ARGV: before id ('' for none), limit, unread only ('1')
local start = 0
if ARGV[1] ~= '' then
  local pos = redis.call('LPOS', KEYS[1], ARGV[1])
  if not pos then return {'notfound'} end
  start = pos + 1
end
local limit = tonumber(ARGV[2])
local ids = {}
if ARGV[3] == '1' then
  for _, nid in ipairs(redis.call('LRANGE', KEYS[1], start, -1)) do
    if #ids >= limit then break end
    if redis.call('SISMEMBER', KEYS[3], nid) == 1 then ids[#ids + 1] = nid end
  end
else
  ids = redis.call('LRANGE', KEYS[1], start, start + limit - 1)
end
local bodies, unread = {}, {}
for i, nid in ipairs(ids) do
  bodies[i] = redis.call('HGET', KEYS[2], nid)
  unread[i] = redis.call('SISMEMBER', KEYS[3], nid)
end
return {'ok', redis.call('GET', KEYS[4]) or '0-0', redis.call('LLEN', KEYS[1]),
  redis.call('SCARD', KEYS[3]), bodies, unread}
"#;

const REPLAY: &str = r#"
-- KEYS: log, own stream, announcements stream, last, pruned.  ARGV: after, upto, limit
local last = redis.call('GET', KEYS[4]) or '0-0'
if id_lt(last, ARGV[1]) then return {'never', first_id(KEYS[1])} end
local pruned = redis.call('GET', KEYS[5])
if pruned and id_lt(ARGV[1], pruned) then return {'pruned', first_id(KEYS[1])} end
if not id_lt(ARGV[1], ARGV[2]) then return {'events', {}, {}} end
return {'events',
  redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3]),
  redis.call('XRANGE', KEYS[3], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3])}
"#;

const SWEEP: &str = r#"
-- KEYS: log, announcements stream, pruned.  ARGV: age ms.  Returns the log's length.
local cutoff = string.format('%.0f-0', now_ms() - tonumber(ARGV[1]))
local old = redis.call('XREVRANGE', KEYS[1], '(' .. cutoff, '-', 'COUNT', 1)
if #old > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
  note_pruned(KEYS[3], old[1][1])
end
redis.call('XTRIM', KEYS[2], 'MINID', cutoff)
return redis.call('XLEN', KEYS[1])
"#;

/// How long a Redis command may take before the node treats Redis as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the cluster's state lives.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prepended to every key, so several clusters (or tests) can share one Redis.
    pub prefix: String,
}

/// A handle to the Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    retention: Retention,
    scripts: Scripts,
    /// False while the log reader cannot reach Redis.
    healthy: Arc<AtomicBool>,
    /// Stops the log reader.
    stop: tokio_util::sync::CancellationToken,
}

struct Scripts {
    publish: Script,
    broadcast: Script,
    mark_read: Script,
    mark_all_read: Script,
    history: Script,
    replay: Script,
    sweep: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{LIBRARY}\n{body}"));
        Self {
            publish: script(PUBLISH),
            broadcast: script(BROADCAST),
            mark_read: script(MARK_READ),
            mark_all_read: script(MARK_ALL_READ),
            history: script(HISTORY),
            replay: script(REPLAY),
            sweep: script(SWEEP),
        }
    }
}

/// Every key name, built in one place.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn log(&self) -> String {
        format!("{}:log", self.prefix)
    }
    fn announcements(&self) -> String {
        format!("{}:all", self.prefix)
    }
    fn last(&self) -> String {
        format!("{}:last", self.prefix)
    }
    fn pruned(&self) -> String {
        format!("{}:pruned", self.prefix)
    }
    fn user(&self, user: &UserId, part: &str) -> String {
        format!("{}:user:{user}:{part}", self.prefix)
    }
    fn idempotency(&self, user: &UserId, key: &IdempotencyKey) -> String {
        format!("{}:idem:{user}:{}", self.prefix, key.as_str())
    }
}

impl RedisStore {
    /// Connects, learns where the log ends, and starts following it for `sink`.
    pub async fn open(
        settings: &RedisSettings,
        retention: Retention,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|error| StoreError::Unavailable(format!("bad --redis-url: {error}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        warn_unless_durable(&mut conn).await;
        let keys = Keys {
            prefix: settings.prefix.clone(),
        };
        let newest: Option<String> = redis::cmd("GET")
            .arg(keys.last())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let newest = newest
            .as_deref()
            .map_or(Ok(EventId::ZERO), parse_stream_id)?;
        sink.resume_after(newest);
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(follow::follow_log(follow::Follower {
            client,
            commands: conn.clone(),
            log_key: keys.log(),
            pruned_key: keys.pruned(),
            after: newest,
            sink,
            healthy: healthy.clone(),
            stop: stop.clone(),
        }));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                keys,
                retention,
                scripts: Scripts::new(),
                healthy,
                stop,
            }),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn age_ms(&self) -> u128 {
        self.inner.retention.max_age.as_millis()
    }

    pub async fn publish(
        &self,
        user: UserId,
        new: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<PublishOutcome, StoreError> {
        let keys = &self.inner.keys;
        let notification = new.into_notification();
        let body = serde_json::to_string(&notification)?;
        let idempotency_ttl = match &key {
            Some(_) => self.inner.retention.idempotency_window.as_secs().max(1),
            None => 0,
        };
        // Without a key the script never touches KEYS[8]; any name will do.
        let idempotency_key = key.as_ref().map_or_else(
            || keys.user(&user, "none"),
            |key| keys.idempotency(&user, key),
        );
        let reply: (String, String) = self
            .inner
            .scripts
            .publish
            .key(keys.log())
            .key(keys.user(&user, "events"))
            .key(keys.last())
            .key(keys.pruned())
            .key(keys.user(&user, "list"))
            .key(keys.user(&user, "bodies"))
            .key(keys.user(&user, "unread"))
            .key(idempotency_key)
            .arg(user.as_str())
            .arg(&notification.id)
            .arg(&body)
            .arg(self.inner.retention.history_per_user)
            .arg(idempotency_ttl)
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.0.as_str() {
            "repeat" => Ok(PublishOutcome::Repeated(serde_json::from_str(&reply.1)?)),
            _ => Ok(PublishOutcome::Created(
                notification,
                parse_stream_id(&reply.1)?,
            )),
        }
    }

    pub async fn publish_many(
        &self,
        _users: Vec<UserId>,
        _new: NewNotification,
        _key: Option<IdempotencyKey>,
    ) -> Result<BulkOutcome, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    pub async fn update(
        &self,
        _user: UserId,
        _id: String,
        _patch: NotificationPatch,
    ) -> Result<(Notification, EventId), StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    pub async fn delete(&self, _user: UserId, _id: String) -> Result<EventId, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    pub async fn set_archived(
        &self,
        _user: UserId,
        _id: String,
        _archived: bool,
    ) -> Result<Archived, StoreError> {
        Err(StoreError::Unavailable("not built yet".into()))
    }

    pub async fn expire(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    pub async fn broadcast(&self, new: NewAnnouncement) -> Result<EventId, StoreError> {
        let keys = &self.inner.keys;
        let announcement = new.into_announcement();
        let id: String = self
            .inner
            .scripts
            .broadcast
            .key(keys.log())
            .key(keys.announcements())
            .key(keys.last())
            .key(keys.pruned())
            .arg(serde_json::to_string(&announcement)?)
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        parse_stream_id(&id)
    }

    pub async fn mark_read(&self, user: UserId, id: String) -> Result<MarkedRead, StoreError> {
        let keys = &self.inner.keys;
        let data = serde_json::json!({ "ids": [id] }).to_string();
        let outcome: String = self
            .inner
            .scripts
            .mark_read
            .key(keys.log())
            .key(keys.user(&user, "events"))
            .key(keys.last())
            .key(keys.pruned())
            .key(keys.user(&user, "bodies"))
            .key(keys.user(&user, "unread"))
            .arg(user.as_str())
            .arg(&id)
            .arg(data)
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "notfound" => Err(StoreError::UNKNOWN_NOTIFICATION),
            "already" => Ok(MarkedRead::AlreadyRead),
            _ => Ok(MarkedRead::Changed),
        }
    }

    pub async fn mark_all_read(&self, user: UserId) -> Result<u64, StoreError> {
        let keys = &self.inner.keys;
        self.inner
            .scripts
            .mark_all_read
            .key(keys.log())
            .key(keys.user(&user, "events"))
            .key(keys.last())
            .key(keys.pruned())
            .key(keys.user(&user, "unread"))
            .arg(user.as_str())
            .arg(serde_json::json!({ "all": true }).to_string())
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn history(
        &self,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let keys = &self.inner.keys;
        let reply: Vec<Value> = self
            .inner
            .scripts
            .history
            .key(keys.user(&user, "list"))
            .key(keys.user(&user, "bodies"))
            .key(keys.user(&user, "unread"))
            .key(keys.last())
            .arg(query.before.as_deref().unwrap_or(""))
            .arg(query.limit)
            .arg(if query.unread_only { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [status, last, total, unread, bodies, unread_flags] = reply.as_slice() else {
            return Err(StoreError::UNKNOWN_CURSOR);
        };
        let _: String = redis::from_redis_value(status.clone()).map_err(corrupt)?;
        let last: String = redis::from_redis_value(last.clone()).map_err(corrupt)?;
        let bodies: Vec<Option<String>> =
            redis::from_redis_value(bodies.clone()).map_err(corrupt)?;
        let unread_flags: Vec<i64> =
            redis::from_redis_value(unread_flags.clone()).map_err(corrupt)?;
        let notifications = bodies
            .into_iter()
            .zip(unread_flags)
            .filter_map(|(body, unread)| Some((body?, unread)))
            .map(|(body, unread)| {
                let mut notification: Notification = serde_json::from_str(&body)?;
                notification.read = unread == 0;
                Ok(notification)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(HistoryPage {
            notifications,
            total: redis::from_redis_value(total.clone()).map_err(corrupt)?,
            unread: redis::from_redis_value(unread.clone()).map_err(corrupt)?,
            last_event_id: parse_stream_id(&last)?,
        })
    }

    pub async fn replay_page(
        &self,
        user: UserId,
        after: EventId,
        upto: EventId,
        limit: u32,
    ) -> Result<ReplayPage, StoreError> {
        let keys = &self.inner.keys;
        let reply: Vec<Value> = self
            .inner
            .scripts
            .replay
            .key(keys.log())
            .key(keys.user(&user, "events"))
            .key(keys.announcements())
            .key(keys.last())
            .key(keys.pruned())
            .arg(stream_id(after))
            .arg(stream_id(upto))
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(status) = reply.first() else {
            return Err(corrupt("empty replay reply"));
        };
        let status: String = redis::from_redis_value(status.clone()).map_err(corrupt)?;
        let oldest = || -> Result<Option<EventId>, StoreError> {
            let first: String = reply
                .get(1)
                .map(|value| redis::from_redis_value::<String>(value.clone()))
                .transpose()
                .map_err(corrupt)?
                .unwrap_or_default();
            (!first.is_empty())
                .then(|| parse_stream_id(&first))
                .transpose()
        };
        match status.as_str() {
            "never" => Ok(ReplayPage::never_issued(oldest()?)),
            "pruned" => Ok(ReplayPage::past_retention(oldest()?)),
            _ => {
                let mut own = entries(reply.get(1))?;
                let announcements = entries(reply.get(2))?;
                let full = own.len() >= limit as usize || announcements.len() >= limit as usize;
                own.extend(announcements);
                own.sort_by_key(|event| event.id);
                let complete = !full && own.len() <= limit as usize;
                own.truncate(limit as usize);
                Ok(ReplayPage::Events {
                    events: own,
                    complete,
                })
            }
        }
    }

    pub async fn sweep(&self) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        let _: u64 = self
            .inner
            .scripts
            .sweep
            .key(keys.log())
            .key(keys.announcements())
            .key(keys.pruned())
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn retained_events(&self) -> Result<u64, StoreError> {
        redis::cmd("XLEN")
            .arg(self.inner.keys.log())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    pub async fn close(&self) {
        self.inner.stop.cancel();
    }
}

/// A `201` is only as durable as Redis makes it: say so at start when Redis would lose
/// acknowledged writes in a crash (managed Redis may refuse CONFIG; then say nothing).
async fn warn_unless_durable(conn: &mut ConnectionManager) {
    let setting = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await;
            reply.ok().and_then(|pair| pair.get(1).cloned())
        }
    };
    let (Some(aof), Some(fsync)) = (setting("appendonly").await, setting("appendfsync").await)
    else {
        return;
    };
    if aof != "yes" || fsync != "always" {
        tracing::warn!(
            appendonly = %aof,
            appendfsync = %fsync,
            "Redis may lose acknowledged notifications if it crashes; \
             use appendonly yes and appendfsync always for every 201 to survive"
        );
    }
}

/// Redis spells every id `ms-seq`.
fn stream_id(id: EventId) -> String {
    format!("{}-{}", id.major, id.minor)
}

fn parse_stream_id(raw: &str) -> Result<EventId, StoreError> {
    raw.parse()
        .map_err(|_| corrupt(format!("{raw:?} is not a stream id")))
}

/// Stream entries (`[[id, [field, value, ...]], ...]`) as events.
fn entries(value: Option<&Value>) -> Result<Vec<StoredEvent>, StoreError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let raw: Vec<(String, Vec<String>)> =
        redis::from_redis_value(value.clone()).map_err(corrupt)?;
    raw.into_iter()
        .map(|(id, fields)| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1).cloned())
            };
            let name = field("n")
                .and_then(|n| EventName::parse(&n))
                .ok_or_else(|| corrupt(format!("entry {id} has no known event name")))?;
            Ok(StoredEvent {
                id: parse_stream_id(&id)?,
                name,
                data: field("d").unwrap_or_default(),
                expires_ms: None,
            })
        })
        .collect()
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from redis: {error}"))
}
