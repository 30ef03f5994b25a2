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

-- Appends one event: to the shared log (which every node reads) and, with the same id, to
-- `own` (the user's own stream, or the announcements stream) so that one user's replay reads
-- only what that user may see. Keeps the log within `max_events`. Returns the new id.
local function append(log, own, last, pruned, user, name, data, max_events, age_ms)
  local id = redis.call('XADD', log, '*', 'u', user, 'n', name, 'd', data)
  local cutoff = string.format('%.0f-0', now_ms() - age_ms)
  redis.call('XADD', own, 'MINID', '~', cutoff, id, 'n', name, 'd', data)
  redis.call('PEXPIRE', own, age_ms)
  redis.call('SET', last, id)
  local excess = redis.call('XLEN', log) - max_events
  if excess > 0 then
    local old = redis.call('XRANGE', log, '-', '+', 'COUNT', excess)
    local newest_removed = old[#old][1]
    redis.call('XTRIM', log, 'MINID', next_id(newest_removed))
    note_pruned(pruned, newest_removed)
  end
  return id
end

local function first_id(log)
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #first == 0 then return '' end
  return first[1][1]
end
