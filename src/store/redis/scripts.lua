-- herald's Redis scripts. This first part is shared: every script is this text followed by its
-- own body, so the helpers below exist in each. Keys are passed in KEYS; see redis/mod.rs.

-- A stream id "ms-seq" as two numbers (doubles hold both exactly for real ids).
local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  if not dash then return tonumber(id), 0 end
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local function id_lt(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end

local function next_id(id)
  local ms, seq = parse_id(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Raises the "newest id retention removed" mark; replay from below it gets a resync.
local function note_pruned(pruned_key, id)
  local previous = redis.call('GET', pruned_key)
  if not previous or id_lt(previous, id) then
    redis.call('SET', pruned_key, id)
  end
end

-- Where the own streams' retention starts now: entries older than this may go.
local function retention_cutoff(age_ms)
  return string.format('%.0f-0', now_ms() - age_ms)
end

-- Adds one event to the shared log (which every node reads) and, with the same id, to `own`
-- (the user's own stream, or the announcements stream) so that one user's replay reads only
-- what that user may see. `subject` (field 's': the notification the event is about, so a
-- delete finds it) and `expires` (field 'x': when that notification expires, in ms, so replay
-- passes over it) are optional: nil or ''. Returns the new id; see `finish_appends`.
local function add_event(log, own, user, name, data, subject, expires, cutoff, age_ms)
  local fields = {'n', name, 'd', data}
  if subject and subject ~= '' then
    fields[#fields + 1] = 's'
    fields[#fields + 1] = subject
  end
  if expires and expires ~= '' then
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = expires
  end
  local id = redis.call('XADD', log, '*', 'u', user, unpack(fields))
  redis.call('XADD', own, 'MINID', '~', cutoff, id, unpack(fields))
  redis.call('PEXPIRE', own, age_ms)
  return id
end

-- After the last `add_event` of a script: records the newest id and keeps the log within
-- `max_events`.
local function finish_appends(log, last, pruned, id, max_events)
  redis.call('SET', last, id)
  local excess = redis.call('XLEN', log) - max_events
  if excess > 0 then
    local old = redis.call('XRANGE', log, '-', '+', 'COUNT', excess)
    local newest_removed = old[#old][1]
    redis.call('XTRIM', log, 'MINID', next_id(newest_removed))
    note_pruned(pruned, newest_removed)
  end
end

-- Appends one event (see `add_event`) and finishes. Returns the new id.
local function append(log, own, last, pruned, user, name, data, max_events, age_ms, subject,
    expires)
  local id = add_event(log, own, user, name, data, subject, expires, retention_cutoff(age_ms),
    age_ms)
  finish_appends(log, last, pruned, id, max_events)
  return id
end

-- One user's keys, passed as seven KEYS from index `at`: own stream, list (newest first),
-- bodies (id -> JSON), unread (set), archived (set), categories (id -> category), expiries
-- (sorted set: id by expiry ms).
local function user_keys(at)
  return {own = KEYS[at], list = KEYS[at + 1], bodies = KEYS[at + 2], unread = KEYS[at + 3],
    archived = KEYS[at + 4], cat = KEYS[at + 5], exp = KEYS[at + 6]}
end

-- The member of the shared `expiring` sorted set that names one user's notification.
local function expiring_member(user, nid)
  return user .. '\n' .. nid
end

-- Forgets a notification's state; the caller takes it out of the list.
local function forget(u, expiring, user, nid)
  redis.call('HDEL', u.bodies, nid)
  redis.call('SREM', u.unread, nid)
  redis.call('SREM', u.archived, nid)
  redis.call('HDEL', u.cat, nid)
  if redis.call('ZREM', u.exp, nid) == 1 then
    redis.call('ZREM', expiring, expiring_member(user, nid))
  end
end

-- Stores a new notification (unread) with its category and expiry ('' for none), keeping the
-- user's history within `limit` (the oldest go, with all their state).
local function store_notification(u, expiring, user, nid, body, category, expires, limit)
  local length = redis.call('LPUSH', u.list, nid)
  redis.call('HSET', u.bodies, nid, body)
  redis.call('SADD', u.unread, nid)
  if category ~= '' then redis.call('HSET', u.cat, nid, category) end
  if expires ~= '' then
    redis.call('ZADD', u.exp, expires, nid)
    redis.call('ZADD', expiring, expires, expiring_member(user, nid))
  end
  if length > limit then
    for _, old in ipairs(redis.call('RPOP', u.list, length - limit)) do
      forget(u, expiring, user, old)
    end
  end
end

-- Deletes every event about the notifications in `ids` (a set: id -> true, `count` of them)
-- from the user's stream and, under the same ids, from the log, so that no replay delivers
-- them again. Every event about a notification follows the one that created it, so the
-- stream is read from its newest end and only until each one's `notification` event is
-- passed (or the stream ends: retention may have taken it).
local function purge_events(log, own, ids, count)
  local pending, from = count, '+'
  while pending > 0 do
    local batch = redis.call('XREVRANGE', own, from, '-', 'COUNT', 256)
    if #batch == 0 then break end
    local doomed = {}
    for _, entry in ipairs(batch) do
      local fields, name, subject = entry[2], nil, nil
      for i = 1, #fields, 2 do
        if fields[i] == 'n' then name = fields[i + 1]
        elseif fields[i] == 's' then subject = fields[i + 1] end
      end
      if subject and ids[subject] then
        doomed[#doomed + 1] = entry[1]
        if name == 'notification' then pending = pending - 1 end
      end
    end
    if #doomed > 0 then
      redis.call('XDEL', own, unpack(doomed))
      redis.call('XDEL', log, unpack(doomed))
    end
    from = '(' .. batch[#batch][1]
  end
end

local function first_id(log)
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #first == 0 then return '' end
  return first[1][1]
end

-- Web Push (redis/push.rs). Push keys are named from the prefix inside the scripts, since
-- which users' keys a publish touches depends on what it finds: herald runs on one Redis, not
-- Redis Cluster, so keys outside KEYS are safe. The keys: `P:push:subs:USER` (hash: id -> JSON
-- with endpoint, p256dh, auth, createdMs), `P:push:endpoints` (hash: endpoint -> "USER\nID"),
-- `P:push:muted:USER` (set), `P:push:queue` (sorted set: job -> due ms), `P:push:jobs` (hash:
-- job -> JSON with u(ser), n(otification id), s(ubscription), d(eadline ms), a(ttempts)),
-- `P:push:seq` (job ids), `P:presence:USER` (hash: node -> open streams there) and
-- `P:node:NODE` (present while that node lives).

-- Whether `user` has a stream open on a live node other than `me`.
local function online_elsewhere(p, user, me)
  local presence = redis.call('HGETALL', p .. ':presence:' .. user)
  for i = 1, #presence, 2 do
    local node = presence[i]
    if node ~= me and tonumber(presence[i + 1]) > 0
        and redis.call('EXISTS', p .. ':node:' .. node) == 1 then
      return true
    end
  end
  return false
end

-- Queues one push per subscription of `user` for notification `nid`, unless its category is
-- muted or, with `push` = 'offline', the user has a stream open anywhere (`here`: '1' when on
-- this node, `me`). `expires` is the notification's expiry ('' for none); without one, pushes
-- are tried for `ttl_ms`. Returns how many it queued.
local function queue_pushes(p, push, here, me, ttl_ms, user, nid, category, expires)
  if push == '' then return 0 end
  local subs = redis.call('HKEYS', p .. ':push:subs:' .. user)
  if #subs == 0 then return 0 end
  if category ~= '' and redis.call('SISMEMBER', p .. ':push:muted:' .. user, category) == 1 then
    return 0
  end
  if push == 'offline' and (here == '1' or online_elsewhere(p, user, me)) then return 0 end
  local now = now_ms()
  local deadline = now + tonumber(ttl_ms)
  if expires ~= '' then deadline = tonumber(expires) end
  for _, sub in ipairs(subs) do
    local job = redis.call('INCR', p .. ':push:seq')
    redis.call('HSET', p .. ':push:jobs', job,
      cjson.encode({u = user, n = nid, s = sub, d = deadline, a = 0}))
    redis.call('ZADD', p .. ':push:queue', now, job)
  end
  return #subs
end
