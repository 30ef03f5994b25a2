//! The cluster backend: the log, history, read state and idempotency keys live in Redis,
//! shared by every node with the same `--redis-url` and prefix. Each write is one Lua script
//! (atomic); Redis assigns the ids, so every node sees the same ones. The keys are listed in
//! docs/architecture.md#the-redis-store-cluster-mode.

mod follow;
mod history;
mod lifecycle;
mod push;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};

use super::push::PushQueueing;
use super::{
    EventSink, MarkedRead, PublishOutcome, ReadAll, ReplayPage, Retention, StoreError, StoredEvent,
    payload,
};
use crate::domain::{
    EventId, EventName, IdempotencyKey, NewAnnouncement, NewNotification, NotificationJson, UserId,
};

const LIBRARY: &str = include_str!("scripts.lua");

const PUBLISH: &str = r#"
-- KEYS: log, last, pruned, expiring, idempotency key, then the user's seven (see user_keys)
-- ARGV: user, notification id, json, history limit, idempotency ttl (0: none), max events,
--       age ms, category ('' for none), expires ms ('' for none), then push: prefix, when
--       ('' while push is off), on this node ('1'/'0'), this node, ttl ms (see queue_pushes)
if ARGV[5] ~= '0' then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return {'repeat', earlier, 0} end
end
local u = user_keys(6)
local age_ms = tonumber(ARGV[7])
local id = add_event(KEYS[1], u.own, ARGV[1], 'notification', ARGV[3], ARGV[2], ARGV[9],
  retention_cutoff(age_ms), age_ms)
store_notification(u, KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[8], ARGV[9], tonumber(ARGV[4]))
finish_appends(KEYS[1], KEYS[2], KEYS[3], id, tonumber(ARGV[6]))
if ARGV[5] ~= '0' then redis.call('SET', KEYS[5], ARGV[3], 'EX', ARGV[5]) end
local queued = queue_pushes(ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[1], ARGV[2],
  ARGV[8], ARGV[9])
return {'created', id, queued}
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
return append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'read', ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[2])
"#;

const MARK_ALL_READ: &str = r#"
-- KEYS: log, own stream, last, pruned, unread.  ARGV: user, read-event json, max events, age ms
-- Returns how many were unread, and the read event's id ('' when none were).
local n = redis.call('SCARD', KEYS[5])
local id = ''
if n > 0 then
  redis.call('DEL', KEYS[5])
  id = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], 'read', ARGV[2], tonumber(ARGV[3]),
    tonumber(ARGV[4]))
end
return {n, id}
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
-- XREVRANGE from a point below the log's first entry walks the whole log (20 ms at 220,000
-- entries): ask it only when the first entry is older than the cutoff (BENCHMARKS.md, "The
-- Redis sweep").
local first = first_id(KEYS[1])
if first ~= '' and id_lt(first, cutoff) then
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. cutoff, '-', 'COUNT', 1)
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
    /// Stops the log reader and the heartbeat.
    stop: tokio_util::sync::CancellationToken,
    /// This node's name in the cluster's presence counts, new each start.
    node: String,
    /// Queues Web Push jobs as notifications are stored; `None` while push is off.
    push: Option<PushQueueing>,
    push_scripts: push::PushScripts,
}

struct Scripts {
    publish: Script,
    publish_many: Script,
    update: Script,
    delete: Script,
    set_archived: Script,
    due: Script,
    expire: Script,
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
            publish_many: script(lifecycle::PUBLISH_MANY),
            update: script(lifecycle::UPDATE),
            delete: script(lifecycle::DELETE),
            set_archived: script(lifecycle::SET_ARCHIVED),
            due: script(lifecycle::DUE),
            expire: script(lifecycle::EXPIRE),
            broadcast: script(BROADCAST),
            mark_read: script(MARK_READ),
            mark_all_read: script(MARK_ALL_READ),
            history: script(history::HISTORY),
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
    /// The seven keys of one user's notifications, in the order the scripts' `user_keys`
    /// reads them.
    fn user_state(&self, user: &UserId) -> [String; 7] {
        [
            "events", "list", "bodies", "unread", "archived", "cat", "exp",
        ]
        .map(|part| self.user(user, part))
    }
    /// Every notification that expires, by when (members `user\nid`).
    fn expiring(&self) -> String {
        format!("{}:expiring", self.prefix)
    }
    fn idempotency(&self, user: &UserId, key: &IdempotencyKey) -> String {
        format!("{}:idem:{user}:{}", self.prefix, key.as_str())
    }
    fn idempotency_many(&self, key: &IdempotencyKey) -> String {
        format!("{}:idem-many:{}", self.prefix, key.as_str())
    }
}

/// Starts a call of `script` with the log's three keys (log, last, pruned), which every script
/// that appends to the log takes first.
fn appending<'a>(script: &'a Script, keys: &Keys) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys.log())
        .key(keys.last())
        .key(keys.pruned());
    invocation
}

/// Adds one user's seven keys to a script call.
fn add_user_keys(invocation: &mut ScriptInvocation<'_>, keys: &Keys, user: &UserId) {
    for key in keys.user_state(user) {
        invocation.key(key);
    }
}

impl RedisStore {
    /// Connects, learns where the log ends, and starts following it for `sink`.
    pub async fn open(
        settings: &RedisSettings,
        retention: Retention,
        sink: Arc<dyn EventSink>,
        push: Option<PushQueueing>,
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
        let store = Self {
            inner: Arc::new(Inner {
                conn,
                keys,
                retention,
                scripts: Scripts::new(),
                healthy,
                stop,
                node: uuid::Uuid::new_v4().simple().to_string(),
                push,
                push_scripts: push::PushScripts::new(|body| {
                    Script::new(&format!("{LIBRARY}\n{body}"))
                }),
            }),
        };
        store.heartbeat().await?;
        tokio::spawn(store.clone().beat());
        Ok(store)
    }

    /// Keeps this node counted as alive until the store closes, then stops counting it.
    async fn beat(self) {
        let mut ticks = tokio::time::interval(push::HEARTBEAT);
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => break,
                _ = ticks.tick() => {
                    if let Err(error) = self.heartbeat().await {
                        tracing::warn!(%error, "could not tell Redis this node is alive");
                    }
                }
            }
        }
        if let Err(error) = self.leave().await {
            tracing::warn!(%error, "could not tell Redis this node has left");
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn age_ms(&self) -> u128 {
        self.inner.retention.max_age.as_millis()
    }

    /// How long an `Idempotency-Key` is remembered, in whole seconds.
    fn idempotency_ttl(&self) -> u64 {
        self.inner.retention.idempotency_window.as_secs().max(1)
    }

    pub async fn publish(
        &self,
        user: UserId,
        new: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<PublishOutcome, StoreError> {
        let keys = &self.inner.keys;
        let expires = expires_arg(&new);
        let notification = new.into_notification();
        let body = NotificationJson::encode(&notification)?;
        let idempotency_ttl = match &key {
            Some(_) => self.idempotency_ttl(),
            None => 0,
        };
        // Without a key the script never touches its key; any name will do.
        let idempotency_key = key.as_ref().map_or_else(
            || keys.user(&user, "none"),
            |key| keys.idempotency(&user, key),
        );
        let mut invocation = appending(&self.inner.scripts.publish, keys);
        invocation.key(keys.expiring()).key(idempotency_key);
        add_user_keys(&mut invocation, keys, &user);
        invocation
            .arg(user.as_str())
            .arg(&notification.id)
            .arg(body.as_str())
            .arg(self.inner.retention.history_per_user)
            .arg(idempotency_ttl)
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .arg(category_arg(&notification))
            .arg(&expires);
        self.push_args(&mut invocation);
        invocation.arg(self.online_here(&user));
        invocation.arg(&self.inner.node).arg(self.push_ttl_ms());
        let reply: (String, String, u64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.pushes_queued(reply.2);
        match reply.0.as_str() {
            "repeat" => Ok(PublishOutcome::Repeated(NotificationJson(reply.1))),
            _ => Ok(PublishOutcome::Created(body, parse_stream_id(&reply.1)?)),
        }
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
        let data = payload::read_one(&id);
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
            event => Ok(MarkedRead::Changed(parse_stream_id(event)?)),
        }
    }

    pub async fn mark_all_read(&self, user: UserId) -> Result<ReadAll, StoreError> {
        let keys = &self.inner.keys;
        let (updated, event): (u64, String) = self
            .inner
            .scripts
            .mark_all_read
            .key(keys.log())
            .key(keys.user(&user, "events"))
            .key(keys.last())
            .key(keys.pruned())
            .key(keys.user(&user, "unread"))
            .arg(user.as_str())
            .arg(payload::read_all())
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let event = (!event.is_empty())
            .then(|| parse_stream_id(&event))
            .transpose()?;
        Ok(ReadAll { updated, event })
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
            let expires_ms = field("x")
                .map(|at| {
                    parse_ms(&at).ok_or_else(|| corrupt(format!("entry {id}: expiry {at:?}")))
                })
                .transpose()?;
            Ok(StoredEvent {
                id: parse_stream_id(&id)?,
                name,
                data: field("d").unwrap_or_default(),
                expires_ms,
            })
        })
        .collect()
}

/// A time in Unix ms as a script passes it on: an integer, or a sorted set's score.
fn parse_ms(raw: &str) -> Option<i64> {
    raw.parse::<i64>()
        .ok()
        .or_else(|| raw.parse::<f64>().ok().map(|ms| ms as i64))
}

/// A new notification's expiry as a script argument: Unix ms, or '' for none.
fn expires_arg(new: &NewNotification) -> String {
    new.expires
        .as_ref()
        .map_or_else(String::new, |expiry| expiry.unix_ms.to_string())
}

/// A notification's category as a script argument, '' for none.
fn category_arg(notification: &crate::domain::Notification) -> &str {
    notification.category.as_ref().map_or("", |c| c.as_str())
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from redis: {error}"))
}
