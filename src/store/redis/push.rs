//! Web Push and presence in the Redis store (docs/protocol.md#web-push): subscriptions, muted
//! categories, the shared queue of pushes owed (queued by the publish scripts, see
//! `queue_pushes` in scripts.lua, where the keys are listed), and each node's count of every
//! user's open streams, which is how a publish on one node knows a user is online on another.

use std::time::Duration;

use redis::{Script, ScriptInvocation};

use super::{RedisStore, corrupt, unavailable};
use crate::domain::{PushSubscription, UserId};
use crate::store::StoreError;
use crate::store::push::{PushJob, PushOutcome, Subscribed, SubscriptionInfo};

/// How long a node is counted as alive after its last heartbeat; its streams count for that
/// long after it dies.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// How often a live node says so.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// How long a job handed to a node is its own before others may try it (longer than a try).
const LEASE: Duration = Duration::from_secs(20);

const SUBSCRIBE: &str = r#"
-- KEYS: the user's subscriptions, endpoints.  ARGV: prefix, user, endpoint, p256dh, auth,
--       a new id, max per user, now ms
local held = redis.call('HGET', KEYS[2], ARGV[3])
local owner, id
if held then
  local cut = string.find(held, '\n', 1, true)
  owner, id = string.sub(held, 1, cut - 1), string.sub(held, cut + 1)
end
local function entry(created)
  return cjson.encode({endpoint = ARGV[3], p256dh = ARGV[4], auth = ARGV[5], createdMs = created})
end
if owner == ARGV[2] then
  local old = redis.call('HGET', KEYS[1], id)
  local created = tonumber(ARGV[8])
  if old then created = cjson.decode(old).createdMs end
  redis.call('HSET', KEYS[1], id, entry(created))
  return {'existing', id}
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then return {'full', ''} end
if owner then redis.call('HDEL', ARGV[1] .. ':push:subs:' .. owner, id) end
redis.call('HSET', KEYS[1], ARGV[6], entry(tonumber(ARGV[8])))
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2] .. '\n' .. ARGV[6])
return {'created', ARGV[6]}
"#;

const UNSUBSCRIBE: &str = r#"
-- KEYS: the user's subscriptions, endpoints.  ARGV: user, id
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then return 0 end
local endpoint = cjson.decode(raw).endpoint
redis.call('HDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], endpoint) == ARGV[1] .. '\n' .. ARGV[2] then
  redis.call('HDEL', KEYS[2], endpoint)
end
return 1
"#;

const SET_MUTED: &str = r#"
-- KEYS: the user's muted set.  ARGV: the categories
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('SADD', KEYS[1], unpack(ARGV)) end
return 1
"#;

const DUE: &str = r#"
-- KEYS: queue, jobs.  ARGV: prefix, now ms, limit, lease ms
-- Leases up to `limit` due jobs to the caller; each comes back with its subscription ('' when
-- gone) and its notification's body ('' when gone, expired or read).
local p, now = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, job in ipairs(due) do
  local raw = redis.call('HGET', KEYS[2], job)
  if raw then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), job)
    local j = cjson.decode(raw)
    local sub = redis.call('HGET', p .. ':push:subs:' .. j.u, j.s) or ''
    local body = ''
    if sub ~= '' then
      local user = p .. ':user:' .. j.u
      local expires = redis.call('ZSCORE', user .. ':exp', j.n)
      if redis.call('SISMEMBER', user .. ':unread', j.n) == 1
          and not (expires and tonumber(expires) <= now) then
        body = redis.call('HGET', user .. ':bodies', j.n) or ''
      end
    end
    out[#out + 1] = {job, j.u, j.s, sub, body, tostring(j.d), tostring(j.a)}
  else
    redis.call('ZREM', KEYS[1], job)
  end
end
return out
"#;

const SETTLE: &str = r#"
-- KEYS: queue, jobs, endpoints.  ARGV: prefix, then triples: job, outcome ('done', 'gone' or
--       the retry time in ms), user
for i = 2, #ARGV, 3 do
  local job, outcome, user = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local raw = redis.call('HGET', KEYS[2], job)
  if outcome == 'done' or not raw then
    redis.call('ZREM', KEYS[1], job)
    redis.call('HDEL', KEYS[2], job)
  elseif outcome == 'gone' then
    local j = cjson.decode(raw)
    local subs = ARGV[1] .. ':push:subs:' .. user
    local sub = redis.call('HGET', subs, j.s)
    if sub then
      local endpoint = cjson.decode(sub).endpoint
      redis.call('HDEL', subs, j.s)
      if redis.call('HGET', KEYS[3], endpoint) == user .. '\n' .. j.s then
        redis.call('HDEL', KEYS[3], endpoint)
      end
    end
    redis.call('ZREM', KEYS[1], job)
    redis.call('HDEL', KEYS[2], job)
  else
    local j = cjson.decode(raw)
    j.a = j.a + 1
    redis.call('HSET', KEYS[2], job, cjson.encode(j))
    redis.call('ZADD', KEYS[1], tonumber(outcome), job)
  end
end
return 1
"#;

const PRESENCE: &str = r#"
-- KEYS: the user's presence.  ARGV: prefix, this node
-- The user's open streams on live nodes other than this one; forgets dead nodes' counts.
local presence = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #presence, 2 do
  local node = presence[i]
  if node ~= ARGV[2] then
    if redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 1 then
      n = n + tonumber(presence[i + 1])
    else
      redis.call('HDEL', KEYS[1], node)
    end
  end
end
return n
"#;

pub(super) struct PushScripts {
    subscribe: Script,
    unsubscribe: Script,
    set_muted: Script,
    due: Script,
    settle: Script,
    presence: Script,
}

impl PushScripts {
    pub fn new(script: impl Fn(&str) -> Script) -> Self {
        Self {
            subscribe: script(SUBSCRIBE),
            unsubscribe: script(UNSUBSCRIBE),
            set_muted: script(SET_MUTED),
            due: script(DUE),
            settle: script(SETTLE),
            presence: script(PRESENCE),
        }
    }
}

/// A stored subscription's JSON (see `SUBSCRIBE`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    endpoint: String,
    p256dh: String,
    auth: String,
    created_ms: i64,
}

impl RedisStore {
    fn push_key(&self, part: &str, user: &UserId) -> String {
        format!("{}:push:{part}:{user}", self.inner.keys.prefix)
    }

    fn push_shared(&self, part: &str) -> String {
        format!("{}:push:{part}", self.inner.keys.prefix)
    }

    /// The publish scripts' first push arguments: the prefix and when to push ('' while off).
    pub(super) fn push_args(&self, invocation: &mut ScriptInvocation<'_>) {
        invocation.arg(&self.inner.keys.prefix);
        invocation.arg(match &self.inner.push {
            None => "",
            Some(push) => match push.when {
                crate::store::push::PushWhen::Offline => "offline",
                crate::store::push::PushWhen::Always => "always",
            },
        });
    }

    /// '1' when `user` has a stream open on this node (asked only while push is on).
    pub(super) fn online_here(&self, user: &UserId) -> &'static str {
        match &self.inner.push {
            Some(push) if push.presence.streams_here(user) > 0 => "1",
            _ => "0",
        }
    }

    pub(super) fn push_ttl_ms(&self) -> u64 {
        self.inner
            .push
            .as_ref()
            .map_or(0, |push| push.ttl.as_millis() as u64)
    }

    /// Wakes this node's pusher when a publish queued pushes.
    pub(super) fn pushes_queued(&self, queued: u64) {
        if queued > 0
            && let Some(push) = &self.inner.push
        {
            push.queued.notify_one();
        }
    }

    pub async fn subscribe_push(
        &self,
        user: UserId,
        subscription: PushSubscription,
        max_per_user: u32,
    ) -> Result<Subscribed, StoreError> {
        let (outcome, id): (String, String) = self
            .inner
            .push_scripts
            .subscribe
            .key(self.push_key("subs", &user))
            .key(self.push_shared("endpoints"))
            .arg(&self.inner.keys.prefix)
            .arg(user.as_str())
            .arg(subscription.endpoint.as_str())
            .arg(&subscription.p256dh)
            .arg(&subscription.auth)
            .arg(uuid::Uuid::new_v4().to_string())
            .arg(max_per_user)
            .arg(crate::domain::now_unix_ms())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match outcome.as_str() {
            "existing" => Subscribed::Existing(id),
            "full" => Subscribed::Full,
            _ => Subscribed::Created(id),
        })
    }

    pub async fn unsubscribe_push(&self, user: UserId, id: String) -> Result<(), StoreError> {
        let removed: u8 = self
            .inner
            .push_scripts
            .unsubscribe
            .key(self.push_key("subs", &user))
            .key(self.push_shared("endpoints"))
            .arg(user.as_str())
            .arg(&id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if removed == 0 {
            return Err(StoreError::NotFound(
                "no such push subscription for this user",
            ));
        }
        Ok(())
    }

    pub async fn push_subscriptions(
        &self,
        user: UserId,
    ) -> Result<Vec<SubscriptionInfo>, StoreError> {
        let raw: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.push_key("subs", &user))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut listed = raw
            .into_iter()
            .map(|(id, json)| {
                let entry: Entry = serde_json::from_str(&json)?;
                let origin = url::Url::parse(&entry.endpoint)
                    .map_err(corrupt)?
                    .origin()
                    .ascii_serialization();
                Ok(SubscriptionInfo {
                    id,
                    origin,
                    created_ms: entry.created_ms,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        listed.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(listed)
    }

    pub async fn set_push_muted(
        &self,
        user: UserId,
        categories: Vec<String>,
    ) -> Result<(), StoreError> {
        let mut invocation = self.inner.push_scripts.set_muted.prepare_invoke();
        invocation.key(self.push_key("muted", &user));
        for category in &categories {
            invocation.arg(category);
        }
        let _: u8 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn push_muted(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        let mut muted: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.push_key("muted", &user))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        muted.sort();
        Ok(muted)
    }

    pub async fn due_pushes(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>, StoreError> {
        type Row = (String, String, String, String, String, String, String);
        let rows: Vec<Row> = self
            .inner
            .push_scripts
            .due
            .key(self.push_shared("queue"))
            .key(self.push_shared("jobs"))
            .arg(&self.inner.keys.prefix)
            .arg(now_ms)
            .arg(limit)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(
                |(job, user, subscription, entry, body, deadline, attempts)| {
                    let number = |raw: &str| {
                        super::parse_ms(raw)
                            .ok_or_else(|| corrupt(format!("push job {job}: {raw:?}")))
                    };
                    let deadline_ms = number(&deadline)?;
                    let attempts = number(&attempts)?.clamp(0, i64::from(u32::MAX)) as u32;
                    // A job whose subscription is gone is owed to no one: it is settled as done.
                    let (endpoint, p256dh, auth, notification) = if entry.is_empty() {
                        (String::new(), String::new(), String::new(), None)
                    } else {
                        let entry: Entry = serde_json::from_str(&entry)?;
                        let body = (!body.is_empty()).then_some(body);
                        (entry.endpoint, entry.p256dh, entry.auth, body)
                    };
                    Ok(PushJob {
                        job,
                        user,
                        subscription,
                        endpoint,
                        p256dh,
                        auth,
                        notification,
                        deadline_ms,
                        attempts,
                    })
                },
            )
            .collect()
    }

    pub async fn settle_pushes(
        &self,
        outcomes: Vec<(PushJob, PushOutcome)>,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut invocation = self.inner.push_scripts.settle.prepare_invoke();
        invocation
            .key(self.push_shared("queue"))
            .key(self.push_shared("jobs"))
            .key(self.push_shared("endpoints"))
            .arg(&self.inner.keys.prefix);
        for (job, outcome) in &outcomes {
            let outcome = match outcome {
                PushOutcome::Done => "done".to_owned(),
                PushOutcome::SubscriptionGone => "gone".to_owned(),
                PushOutcome::RetryAt(at_ms) => at_ms.to_string(),
            };
            invocation.arg(&job.job).arg(outcome).arg(&job.user);
        }
        let _: u8 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn push_queue_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        let (count, first): (u64, Vec<(String, f64)>) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.push_shared("queue"))
            .cmd("ZRANGE")
            .arg(self.push_shared("queue"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((count, first.first().map(|(_, due)| *due as i64)))
    }

    fn presence_key(&self, user: &UserId) -> String {
        format!("{}:presence:{user}", self.inner.keys.prefix)
    }

    fn node_key(&self) -> String {
        format!("{}:node:{}", self.inner.keys.prefix, self.inner.node)
    }

    /// Records that `user` has `streams` open on this node (0: none).
    pub async fn set_presence(&self, changes: &[(UserId, usize)]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (user, streams) in changes {
            if *streams == 0 {
                pipe.cmd("HDEL")
                    .arg(self.presence_key(user))
                    .arg(&self.inner.node)
                    .ignore();
            } else {
                pipe.cmd("HSET")
                    .arg(self.presence_key(user))
                    .arg(&self.inner.node)
                    .arg(*streams)
                    .ignore();
            }
        }
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// `user`'s open streams on the other live nodes.
    pub async fn presence_elsewhere(&self, user: &UserId) -> Result<usize, StoreError> {
        self.inner
            .push_scripts
            .presence
            .key(self.presence_key(user))
            .arg(&self.inner.keys.prefix)
            .arg(&self.inner.node)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Says this node is alive for another [`NODE_TTL`].
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        let _: () = redis::cmd("SET")
            .arg(self.node_key())
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// This node is leaving: its streams no longer count anywhere.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let _: () = redis::cmd("DEL")
            .arg(self.node_key())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
