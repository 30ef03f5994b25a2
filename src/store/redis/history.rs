//! A page of one user's history on Redis, with the filters of the notification lifecycle
//! (category, archived, and expired ones never listed). With nothing to filter out a page
//! costs what it shows; the counts come from set sizes, and only a category filter walks the
//! whole history (at most its per-user limit).

use redis::Value;

use super::{RedisStore, corrupt, parse_stream_id, unavailable};
use crate::domain::{Notification, UserId};
use crate::store::{HistoryPage, HistoryQuery, StoreError};

pub(super) const HISTORY: &str = r#"
-- KEYS: the user's seven (see user_keys), last
-- ARGV: before id ('' for none), limit, unread only (1/0), category ('' for any),
--       archived (1: only archived ones, 0: none of them)
-- Returns {'ok', last, total, unread, bodies, unread flags, archived flags}, or {'notfound'}
-- for an unknown cursor. Every set of the user holds only ids in the list.
local u = user_keys(1)
local start = 0
if ARGV[1] ~= '' then
  local pos = redis.call('LPOS', u.list, ARGV[1])
  if not pos then return {'notfound'} end
  start = pos + 1
end
local limit, unread_only, category = tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local want_archived = ARGV[5] == '1'
-- Expired but not yet swept: normally none, or those of the last seconds.
local expired = redis.call('ZRANGEBYSCORE', u.exp, '-inf', now_ms())
local dead = {}
for _, nid in ipairs(expired) do dead[nid] = true end
local archived_count = redis.call('SCARD', u.archived)
local check_archived = want_archived or archived_count > 0

-- Whether every filter but `unread_only` selects `nid`.
local function selected(nid)
  if dead[nid] then return false end
  if check_archived and (redis.call('SISMEMBER', u.archived, nid) == 1) ~= want_archived then
    return false
  end
  return category == '' or redis.call('HGET', u.cat, nid) == category
end

-- How many members the sets `a` and `b` share (walks the smaller).
local function shared_count(a, b)
  if redis.call('SCARD', a) > redis.call('SCARD', b) then a, b = b, a end
  local members, n = redis.call('SMEMBERS', a), 0
  for i = 1, #members, 500 do
    local flags = redis.call('SMISMEMBER', b, unpack(members, i, math.min(i + 499, #members)))
    for _, flag in ipairs(flags) do n = n + flag end
  end
  return n
end

-- The page: the list from the cursor on, until it is full.
local ids, pos, step = {}, start, math.max(limit, 32)
while #ids < limit do
  local batch = redis.call('LRANGE', u.list, pos, pos + step - 1)
  for _, nid in ipairs(batch) do
    if selected(nid) and (not unread_only or redis.call('SISMEMBER', u.unread, nid) == 1) then
      ids[#ids + 1] = nid
      if #ids == limit then break end
    end
  end
  if #batch < step then break end
  pos = pos + step
end

local total, unread = 0, 0
if category ~= '' then
  for _, nid in ipairs(redis.call('LRANGE', u.list, 0, -1)) do
    if selected(nid) then
      total = total + 1
      unread = unread + redis.call('SISMEMBER', u.unread, nid)
    end
  end
else
  local unread_archived = 0
  if archived_count > 0 then unread_archived = shared_count(u.archived, u.unread) end
  local dead_archived, dead_unread, dead_both = 0, 0, 0
  for _, nid in ipairs(expired) do
    local a = redis.call('SISMEMBER', u.archived, nid)
    local r = redis.call('SISMEMBER', u.unread, nid)
    dead_archived, dead_unread, dead_both = dead_archived + a, dead_unread + r, dead_both + a * r
  end
  if want_archived then
    total = archived_count - dead_archived
    unread = unread_archived - dead_both
  else
    total = redis.call('LLEN', u.list) - archived_count - (#expired - dead_archived)
    unread = redis.call('SCARD', u.unread) - unread_archived - (dead_unread - dead_both)
  end
end

local bodies, unread_flags, archived_flags = {}, {}, {}
for i, nid in ipairs(ids) do
  bodies[i] = redis.call('HGET', u.bodies, nid)
  unread_flags[i] = redis.call('SISMEMBER', u.unread, nid)
  archived_flags[i] = archived_count > 0 and redis.call('SISMEMBER', u.archived, nid) or 0
end
return {'ok', redis.call('GET', KEYS[8]) or '0-0', total, unread, bodies, unread_flags,
  archived_flags}
"#;

impl RedisStore {
    pub async fn history(
        &self,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let keys = &self.inner.keys;
        let mut invocation = self.inner.scripts.history.prepare_invoke();
        super::add_user_keys(&mut invocation, keys, &user);
        invocation
            .key(keys.last())
            .arg(query.before.as_deref().unwrap_or(""))
            .arg(query.limit)
            .arg(u8::from(query.unread_only))
            .arg(query.category.as_ref().map_or("", |c| c.as_str()))
            .arg(u8::from(query.archived));
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [_, last, total, unread, bodies, unread_flags, archived_flags] = reply.as_slice()
        else {
            return Err(StoreError::UNKNOWN_CURSOR);
        };
        let value = |value: &Value| value.clone();
        let last: String = redis::from_redis_value(value(last)).map_err(corrupt)?;
        let bodies: Vec<Option<String>> =
            redis::from_redis_value(value(bodies)).map_err(corrupt)?;
        let unread_flags: Vec<i64> =
            redis::from_redis_value(value(unread_flags)).map_err(corrupt)?;
        let archived_flags: Vec<i64> =
            redis::from_redis_value(value(archived_flags)).map_err(corrupt)?;
        let notifications = bodies
            .into_iter()
            .zip(unread_flags.into_iter().zip(archived_flags))
            .filter_map(|(body, flags)| Some((body?, flags)))
            .map(|(body, (unread, archived))| {
                let mut notification: Notification = serde_json::from_str(&body)?;
                notification.read = unread == 0;
                notification.archived = archived == 1;
                Ok(notification)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let count = |value: &Value| -> Result<u64, StoreError> {
            let count: i64 = redis::from_redis_value(value.clone()).map_err(corrupt)?;
            Ok(count.max(0) as u64)
        };
        Ok(HistoryPage {
            notifications,
            total: count(total)?,
            unread: count(unread)?,
            last_event_id: parse_stream_id(&last)?,
        })
    }
}
