//! What happens to a notification after its publish, on Redis: a publish to many users, update,
//! delete, archive and the expiry sweep (docs/protocol.md#the-notification-lifecycle). Each
//! write is one script, so each is atomic; the semantics are the SQLite store's.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use super::{
    RedisStore, add_user_keys, appending, category_arg, corrupt, expires_arg, parse_stream_id,
    unavailable,
};
use crate::domain::{
    EventId, IdempotencyKey, NewNotification, Notification, NotificationPatch, UserId,
    format_unix_ms, now_unix_ms,
};
use crate::store::{Addressed, Archived, BulkOutcome, Expired, StoreError, payload};

pub(super) const PUBLISH_MANY: &str = r#"
-- KEYS: log, last, pruned, expiring, idempotency key, then seven per user (see user_keys)
-- ARGV: body tail, history limit, idempotency ttl (0: none), max events, age ms, category
--       ('' for none), expires ms ('' for none), the answer the idempotency key keeps, then
--       push: prefix, when ('' while off), this node, ttl ms (see queue_pushes), then for each
--       user its id, its notification id and whether it has a stream on this node ('1'/'0').
--       A body is '{"id":"' .. notification id .. '"' .. tail.
if ARGV[3] ~= '0' then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return {'repeat', earlier, 0} end
end
local tail, limit, age_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[5])
local cutoff = retention_cutoff(age_ms)
local id
local queued = 0
for i = 0, (#ARGV - 12) / 3 - 1 do
  local user, nid, here = ARGV[13 + 3 * i], ARGV[14 + 3 * i], ARGV[15 + 3 * i]
  local u = user_keys(6 + 7 * i)
  local body = '{"id":"' .. nid .. '"' .. tail
  id = add_event(KEYS[1], u.own, user, 'notification', body, nid, ARGV[7], cutoff, age_ms)
  store_notification(u, KEYS[4], user, nid, body, ARGV[6], ARGV[7], limit)
  queued = queued + queue_pushes(ARGV[9], ARGV[10], here, ARGV[11], ARGV[12], user, nid,
    ARGV[6], ARGV[7])
end
finish_appends(KEYS[1], KEYS[2], KEYS[3], id, tonumber(ARGV[4]))
if ARGV[3] ~= '0' then redis.call('SET', KEYS[5], ARGV[8], 'EX', ARGV[3]) end
return {'created', id, queued}
"#;

pub(super) const UPDATE: &str = r#"
-- KEYS: log, last, pruned, then the user's seven (see user_keys)
-- ARGV: user, notification id, the body read, its unread and archived flags as read (0/1),
--       the new body, its category ('' for none), max events, age ms
-- Writes only if the notification is still as it was read; otherwise 'conflict'.
local u = user_keys(4)
local nid = ARGV[2]
local body = redis.call('HGET', u.bodies, nid)
local expires = redis.call('ZSCORE', u.exp, nid)
if not body or (expires and tonumber(expires) <= now_ms()) then return {'notfound'} end
if body ~= ARGV[3]
    or redis.call('SISMEMBER', u.unread, nid) ~= tonumber(ARGV[4])
    or redis.call('SISMEMBER', u.archived, nid) ~= tonumber(ARGV[5]) then
  return {'conflict'}
end
redis.call('HSET', u.bodies, nid, ARGV[6])
if ARGV[7] ~= '' then
  redis.call('HSET', u.cat, nid, ARGV[7])
else
  redis.call('HDEL', u.cat, nid)
end
return {'updated', append(KEYS[1], u.own, KEYS[2], KEYS[3], ARGV[1], 'updated', ARGV[6],
  tonumber(ARGV[8]), tonumber(ARGV[9]), nid, expires)}
"#;

pub(super) const DELETE: &str = r#"
-- KEYS: log, last, pruned, expiring, then the user's seven (see user_keys)
-- ARGV: user, notification id, deleted-event json, max events, age ms
local u = user_keys(5)
local nid = ARGV[2]
if redis.call('HEXISTS', u.bodies, nid) == 0 then return 'notfound' end
redis.call('LREM', u.list, 1, nid)
forget(u, KEYS[4], ARGV[1], nid)
purge_events(KEYS[1], u.own, {[nid] = true}, 1)
return append(KEYS[1], u.own, KEYS[2], KEYS[3], ARGV[1], 'deleted', ARGV[3],
  tonumber(ARGV[4]), tonumber(ARGV[5]))
"#;

pub(super) const SET_ARCHIVED: &str = r#"
-- KEYS: log, last, pruned, then the user's seven (see user_keys)
-- ARGV: user, notification id, 1 to archive or 0 to unarchive, archived-event json,
--       max events, age ms
local u = user_keys(4)
local nid = ARGV[2]
local expires = redis.call('ZSCORE', u.exp, nid)
if redis.call('HEXISTS', u.bodies, nid) == 0
    or (expires and tonumber(expires) <= now_ms()) then
  return 'notfound'
end
local changed
if ARGV[3] == '1' then
  changed = redis.call('SADD', u.archived, nid)
else
  changed = redis.call('SREM', u.archived, nid)
end
if changed == 0 then return 'unchanged' end
return append(KEYS[1], u.own, KEYS[2], KEYS[3], ARGV[1], 'archived', ARGV[4],
  tonumber(ARGV[5]), tonumber(ARGV[6]), nid, expires)
"#;

pub(super) const DUE: &str = r#"
-- KEYS: expiring.  ARGV: how many at most.  Due by Redis's clock, which every script that
-- checks an expiry reads: nodes whose clocks differ still agree on what is due.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
"#;

pub(super) const EXPIRE: &str = r#"
-- KEYS: log, last, pruned, expiring, then the user's seven (see user_keys)
-- ARGV: user, max events, age ms, the deleted event's json before and after its quoted ids,
--       then the ids that were due. Several nodes may sweep at once: only what is still here
--       and due now is removed, so exactly one of them sends each `deleted`. Returns how many.
local u = user_keys(5)
local user, now = ARGV[1], now_ms()
local gone, removed = {}, {}
for i = 6, #ARGV do
  local nid = ARGV[i]
  local expires = redis.call('ZSCORE', u.exp, nid)
  if expires and tonumber(expires) <= now then
    redis.call('LREM', u.list, 1, nid)
    forget(u, KEYS[4], user, nid)
    gone[nid] = true
    removed[#removed + 1] = nid
  elseif not expires then
    redis.call('ZREM', KEYS[4], expiring_member(user, nid))
  end
end
if #removed == 0 then return 0 end
purge_events(KEYS[1], u.own, gone, #removed)
local data = ARGV[4] .. '"' .. table.concat(removed, '","') .. '"' .. ARGV[5]
append(KEYS[1], u.own, KEYS[2], KEYS[3], user, 'deleted', data, tonumber(ARGV[2]),
  tonumber(ARGV[3]))
return #removed
"#;

/// How often an update reads and tries again when the notification changed meanwhile.
const UPDATE_ATTEMPTS: u32 = 20;
/// The longest pause before an update tries again; the pauses are random up to this, so that
/// updates racing for one notification spread out instead of colliding again.
const UPDATE_BACKOFF_MS: u64 = 32;
/// The most due notifications one expiry pass takes; the next pass takes the rest.
const EXPIRE_BATCH: usize = 5000;
/// Users whose expired notifications are removed at once (each its own script).
const EXPIRE_CONCURRENCY: usize = 16;

/// A random pause of up to 2^attempt ms (at most `UPDATE_BACKOFF_MS`).
fn backoff(attempt: u32) -> std::time::Duration {
    use std::hash::BuildHasher;
    let most = (1u64 << attempt.min(16)).min(UPDATE_BACKOFF_MS);
    let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
    std::time::Duration::from_millis(random % (most + 1))
}

impl RedisStore {
    /// One notification per user in one script: all are stored, or none.
    pub async fn publish_many(
        &self,
        users: Vec<UserId>,
        new: NewNotification,
        key: Option<IdempotencyKey>,
    ) -> Result<BulkOutcome, StoreError> {
        if users.is_empty() {
            return Err(StoreError::Conflict("a publish to no users".into()));
        }
        let keys = &self.inner.keys;
        let expires = expires_arg(&new);
        let notification = new.into_notification();
        // Every body is the same but for the id, which comes first: the script is sent the
        // rest once, not a thousand times.
        let tail = notification.json_after_id()?;
        let sent: Vec<Addressed> = users
            .iter()
            .map(|user| Addressed {
                user_id: user.as_str().to_owned(),
                id: uuid::Uuid::now_v7().to_string(),
            })
            .collect();
        let (idempotency_key, idempotency_ttl) = match &key {
            Some(key) => (keys.idempotency_many(key), self.idempotency_ttl()),
            // Never touched without a key; any name will do.
            None => (format!("{}:idem-many", keys.prefix), 0),
        };
        let mut invocation = appending(&self.inner.scripts.publish_many, keys);
        invocation.key(keys.expiring()).key(idempotency_key);
        for user in &users {
            add_user_keys(&mut invocation, keys, user);
        }
        invocation
            .arg(&tail)
            .arg(self.inner.retention.history_per_user)
            .arg(idempotency_ttl)
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64)
            .arg(category_arg(&notification))
            .arg(&expires)
            // The answer a repeat of the key gets; encoded only when there is a key.
            .arg(match key {
                Some(_) => serde_json::to_string(&sent)?,
                None => String::new(),
            });
        self.push_args(&mut invocation);
        invocation.arg(&self.inner.node).arg(self.push_ttl_ms());
        for (one, user) in sent.iter().zip(&users) {
            invocation
                .arg(&one.user_id)
                .arg(&one.id)
                .arg(self.online_here(user));
        }
        let reply: (String, String, u64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.pushes_queued(reply.2);
        match reply.0.as_str() {
            "repeat" => Ok(BulkOutcome::Repeated(serde_json::from_str(&reply.1)?)),
            _ => Ok(BulkOutcome::Created(sent, parse_stream_id(&reply.1)?)),
        }
    }

    /// Reads the notification, applies `patch` here, and writes it back only if nothing
    /// changed it meanwhile (else reads again).
    pub async fn update(
        &self,
        user: UserId,
        id: String,
        patch: NotificationPatch,
    ) -> Result<(Notification, EventId), StoreError> {
        let keys = &self.inner.keys;
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let (body, unread, archived): (Option<String>, u8, u8) = redis::pipe()
                .cmd("HGET")
                .arg(keys.user(&user, "bodies"))
                .arg(&id)
                .cmd("SISMEMBER")
                .arg(keys.user(&user, "unread"))
                .arg(&id)
                .cmd("SISMEMBER")
                .arg(keys.user(&user, "archived"))
                .arg(&id)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let Some(body) = body else {
                return Err(StoreError::UNKNOWN_NOTIFICATION);
            };
            let mut notification: Notification = serde_json::from_str(&body)?;
            notification.read = unread == 0;
            notification.archived = archived == 1;
            patch.apply_to(&mut notification, format_unix_ms(now_unix_ms()));
            let updated = serde_json::to_string(&notification)?;
            let mut invocation = appending(&self.inner.scripts.update, keys);
            add_user_keys(&mut invocation, keys, &user);
            invocation
                .arg(user.as_str())
                .arg(&id)
                .arg(&body)
                .arg(unread)
                .arg(archived)
                .arg(&updated)
                .arg(category_arg(&notification))
                .arg(self.inner.retention.max_events)
                .arg(self.age_ms() as u64);
            let reply: Vec<String> = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            match reply.as_slice() {
                [status] if status == "notfound" => return Err(StoreError::UNKNOWN_NOTIFICATION),
                [status] if status == "conflict" => continue,
                [_, event] => return Ok((notification, parse_stream_id(event)?)),
                _ => return Err(corrupt(format!("update answered {reply:?}"))),
            }
        }
        Err(StoreError::Unavailable(
            "the notification kept changing while it was updated".into(),
        ))
    }

    /// Removes the notification and every event about it from the log.
    pub async fn delete(&self, user: UserId, id: String) -> Result<EventId, StoreError> {
        let keys = &self.inner.keys;
        let mut invocation = appending(&self.inner.scripts.delete, keys);
        invocation.key(keys.expiring());
        add_user_keys(&mut invocation, keys, &user);
        invocation
            .arg(user.as_str())
            .arg(&id)
            .arg(payload::deleted(&[&id], false))
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64);
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.as_str() {
            "notfound" => Err(StoreError::UNKNOWN_NOTIFICATION),
            event => parse_stream_id(event),
        }
    }

    pub async fn set_archived(
        &self,
        user: UserId,
        id: String,
        archived: bool,
    ) -> Result<Archived, StoreError> {
        let keys = &self.inner.keys;
        let mut invocation = appending(&self.inner.scripts.set_archived, keys);
        add_user_keys(&mut invocation, keys, &user);
        invocation
            .arg(user.as_str())
            .arg(&id)
            .arg(u8::from(archived))
            .arg(payload::archived(&id, archived))
            .arg(self.inner.retention.max_events)
            .arg(self.age_ms() as u64);
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.as_str() {
            "notfound" => Err(StoreError::UNKNOWN_NOTIFICATION),
            "unchanged" => Ok(Archived::Unchanged),
            event => Ok(Archived::Changed(parse_stream_id(event)?)),
        }
    }

    /// Removes what is due in the shared `expiring` set, one script per user (each re-checks,
    /// so nodes sweeping at once never both remove one notification).
    pub async fn expire(&self) -> Result<Expired, StoreError> {
        let keys = &self.inner.keys;
        let due: Vec<String> = self
            .inner
            .scripts
            .due
            .key(keys.expiring())
            .arg(EXPIRE_BATCH)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut by_user: BTreeMap<UserId, Vec<String>> = BTreeMap::new();
        let mut unreadable = Vec::new();
        for member in due {
            match member
                .split_once('\n')
                .and_then(|(user, id)| Some((UserId::parse(user).ok()?, id.to_owned())))
            {
                Some((user, id)) => by_user.entry(user).or_default().push(id),
                None => unreadable.push(member),
            }
        }
        if !unreadable.is_empty() {
            tracing::warn!(
                count = unreadable.len(),
                "dropping unreadable expiry entries"
            );
            let _: u64 = redis::cmd("ZREM")
                .arg(keys.expiring())
                .arg(&unreadable)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        // The `deleted` JSON, written the one way every backend writes it, around the ids.
        let sample = payload::deleted(&["*"], true);
        let (before, after) = sample
            .split_once("\"*\"")
            .ok_or_else(|| corrupt("the deleted payload has no id list"))?;
        futures::stream::iter(by_user)
            .map(|(user, ids)| {
                let mut invocation = appending(&self.inner.scripts.expire, keys);
                invocation.key(keys.expiring());
                add_user_keys(&mut invocation, keys, &user);
                invocation
                    .arg(user.as_str())
                    .arg(self.inner.retention.max_events)
                    .arg(self.age_ms() as u64)
                    .arg(before)
                    .arg(after)
                    .arg(ids);
                let mut conn = self.conn();
                async move {
                    invocation
                        .invoke_async::<u64>(&mut conn)
                        .await
                        .map_err(unavailable)
                }
            })
            .buffer_unordered(EXPIRE_CONCURRENCY)
            .try_fold(Expired::default(), |total, removed| async move {
                Ok(Expired {
                    notifications: total.notifications + removed,
                    events: total.events + u64::from(removed > 0),
                })
            })
            .await
    }
}
