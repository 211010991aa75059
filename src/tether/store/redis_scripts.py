"""The Redis store's Lua scripts: each runs atomically on the server, so a check and its write cannot be split.

Keys are built inside the scripts from the store's prefix, so they suit a standalone Redis (or one behind
Sentinel), not Redis Cluster. The key layout (``P`` is the prefix):

- ``P:item:HASH`` an item body; ``P:touched`` (sorted set) the put (``P:put_order``) that last wrote each item
- ``P:resp:ID`` a record without item bodies or events; ``P:events:ID`` its stream log; ``P:responses`` every id
- ``P:idem:KEY`` (sorted set) the ids stored with an idempotency key, by put order (``P:put_order``)
- ``P:turn:ID`` (hash) a claimed turn (``cancel_requested`` is ``1`` once a node asked for its cancellation);
  ``P:claim:KEY`` the turn holding an idempotency key; ``P:log:ID`` (stream) its shared log, entry ``0-(n+1)``
  holding the event with ``sequence_number`` n; ``P:fence`` fencing tokens
"""

from __future__ import annotations

# ARGV: prefix, id, record, events, idempotency index key or '', n items, then n (hash, body) pairs.
_PUT_BODY = """
local p = ARGV[1]
local order = redis.call('INCR', p .. 'put_order')
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local digest = ARGV[7 + 2 * i]
  redis.call('SET', p .. 'item:' .. digest, ARGV[8 + 2 * i], 'NX')
  redis.call('ZADD', p .. 'touched', order, digest)
end
redis.call('SET', p .. 'resp:' .. ARGV[2], ARGV[3])
redis.call('SET', p .. 'events:' .. ARGV[2], ARGV[4])
redis.call('SADD', p .. 'responses', ARGV[2])
if ARGV[5] ~= '' then
  redis.call('ZADD', ARGV[5], order, ARGV[2])
end
"""
PUT = _PUT_BODY + "return 1"

# The lease is held while the token matches, the turn runs and its deadline (store clock) is ahead.
_HELD = """
local function held(turn, token, now)
  local t = redis.call('HMGET', turn, 'token', 'state', 'lease_until')
  return t[1] == token and t[2] == 'running' and tonumber(t[3]) > tonumber(now)
end
local function next_seq(log)
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if #last == 0 then return 0 end
  return tonumber(string.match(last[1][1], '-(%d+)$'))
end
local function append(log, first, count)
  local seq = next_seq(log)
  for i = 0, count - 1 do
    local wanted = tonumber(ARGV[first + 2 * i])
    if wanted == seq then
      redis.call('XADD', log, '0-' .. (seq + 1), 'e', ARGV[first + 2 * i + 1])
      seq = seq + 1
    end
  end
end
"""

# KEYS: claim key or the turn key again (no key), turn, fence. ARGV: id, tenant, node, key or '', lease_until, ttl.
CLAIM = """
if ARGV[4] ~= '' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[6]) then
    return {0, redis.call('GET', KEYS[1])}
  end
end
local token = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'tenant', ARGV[2], 'node', ARGV[3], 'key', ARGV[4], 'token', token,
  'lease_until', ARGV[5], 'state', 'running')
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, token}
"""

# KEYS: turn. ARGV: token, now, lease_until, ttl (a turn that runs for long keeps its key).
# Returns 0 lost, 1 held, 2 held and its cancellation requested.
RENEW = (
    _HELD
    + """
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 2 end
return 1
"""
)

# KEYS: turn. ARGV: tenant. Marks a running turn of the tenant for cancellation; returns 1 if it did.
REQUEST_CANCEL = """
local t = redis.call('HMGET', KEYS[1], 'tenant', 'state')
if t[1] ~= ARGV[1] or t[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 1
"""

# KEYS: turn, log. ARGV: token, now, ttl, n, then n (sequence number, body) pairs.
APPEND = (
    _HELD
    + """
if not held(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
append(KEYS[2], 5, tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: turn, log. ARGV: the PUT arguments (or an empty id for no record), then token, now, ttl, n events, pairs.
FINISH = (
    _HELD
    + """
local n_items = tonumber(ARGV[6])
local base = 7 + 2 * n_items
local token, now, ttl, n_events = ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
if not held(KEYS[1], token, now) then return 0 end
if ARGV[2] ~= '' then
"""
    + _PUT_BODY
    + """
end
append(KEYS[2], base + 4, n_events)
redis.call('HSET', KEYS[1], 'state', 'done', 'ended_at', now)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""
)

# KEYS: turn, log, claim key (or the turn key again). ARGV: now, expected next sequence number, ttl, id, the token
# of the lease giving the turn up (or -1), n, then n (sequence number, body) pairs.
# Returns 1 interrupted, 0 not interruptible (gone, ended, or its lease still held), -1 the log moved on: re-read.
INTERRUPT = (
    _HELD
    + """
local t = redis.call('HMGET', KEYS[1], 'state', 'lease_until', 'tenant', 'key')
if t[1] ~= 'running' then return 0 end
if tonumber(t[2]) > tonumber(ARGV[1]) and not held(KEYS[1], ARGV[5], ARGV[1]) then return 0 end
if next_seq(KEYS[2]) ~= tonumber(ARGV[2]) then return -1 end
append(KEYS[2], 7, tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'state', 'interrupted', 'ended_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if t[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# ARGV: prefix, limit, id. The records from ``id`` up to the nearest snapshot (or the root, or a missing parent).
CHAIN = """
local p, limit, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
while id and #out < limit do
  local blob = redis.call('GET', p .. 'resp:' .. id)
  if not blob then break end
  out[#out + 1] = blob
  local record = cjson.decode(blob)
  if record['snapshot'] ~= cjson.null then break end
  id = record['parent_id']
  if id == cjson.null then break end
end
return out
"""

# ARGV: prefix, the last put before the purge read the records, then hashes found unreferenced. An item written by a
# later put may be referenced by a record the purge did not see, so it stays.
COLLECT_ITEMS = """
local p, started = ARGV[1], tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV do
  local touched = redis.call('ZSCORE', p .. 'touched', ARGV[i])
  if not touched or tonumber(touched) <= started then
    redis.call('DEL', p .. 'item:' .. ARGV[i])
    redis.call('ZREM', p .. 'touched', ARGV[i])
    removed = removed + 1
  end
end
return removed
"""
