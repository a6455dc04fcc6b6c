-- leasehold acquire: grant, re-enter or report contention, in one atomic step.
-- KEYS[1] lock hash   KEYS[2] fencing counter   KEYS[3] waiter queue (zset: id -> enqueue time)
-- KEYS[4] waiter expiries (zset: id -> expiry, ms)   KEYS[5] handoff reservation (string)
-- KEYS[6] waiter details (hash: id -> "TRY:AT\nTTL\nOWNER\nMETA", see the prelude)
-- ARGV[1] owner id    ARGV[2] request id   ARGV[3] lease ttl (ms)   ARGV[4] '1' = re-entrant owner
-- ARGV[5] wait lease (ms): > 0 registers the caller as a waiter on contention, 0 = do not wait
-- ARGV[6] '1' if this call may already be queued (a previous try was refused)
-- ARGV[7] holder metadata (JSON text, stored with a new grant; may be empty)
-- ARGV[8] '1' = fair: a free lock goes only to the oldest live waiter (strict FIFO); the
--         caller's place lives ARGV[5] ms from this call and must be refreshed by calling
--         again before then, or it is skipped
-- ARGV[9] the number of this try of the call (1, 2, ...): a refused try that queues the
--         caller leaves it in its details, and a release that makes the caller the holder
--         names it (the caller's lease is measured from that try's send time)
-- Returns {1, token, hold_count, pttl} when the caller holds the lock,
--         {0, pttl, reserved} otherwise (reserved = 1: the lock is free but handed to a waiter
--         for pttl more ms).
-- ARGV[#ARGV] reply tag (see the prelude).
-- All or nothing (see the prelude): the lock hash is checked by its first read (HMGET),
-- the reservation by GET, the counter by SET … GET (next_token); the queue keys, written
-- only by a waiter, by foreign_key on the paths that write them. An uncontended grant is
-- HMGET, GET, TIME, SET … GET, HSET and PEXPIRE: six calls.
local lock, fence, queue, expiries, nextkey, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, req, ttl, reentrant = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local waitms, queued, fair = tonumber(ARGV[5]), ARGV[6] == '1', ARGV[8] == '1'
local reqfield = 'r:' .. req

local h, bad = read(lock, 'hash', 'HMGET', lock, 'owner', 'token', 'count', reqfield)
if bad then return bad end
if queued or fair then
  local bad = foreign_key(queue, 'zset', expiries, 'zset', info, 'hash')
  if bad then return bad end
end

local function dequeue()
  if queued and redis.call('ZREM', queue, req) == 1 then
    redis.call('ZREM', expiries, req)
    redis.call('HDEL', info, req)
  end
end

-- Refused: take or refresh the caller's place (if it waits), and say for how long.
local function refuse(pttl, reserved)
  if waitms > 0 and not (queued or fair) then
    local bad = foreign_key(queue, 'zset', expiries, 'zset', info, 'hash')
    if bad then return bad end
  end
  enqueue(queue, expiries, req, waitms)
  if waitms > 0 then
    -- The details a release needs to make this caller the holder at once.
    redis.call('HSET', info, req, try_field(ARGV[9]) .. '\n' .. ttl .. '\n' .. owner .. '\n' .. ARGV[7])
    at_least(info, waitms)
  end
  return reply({0, pttl, reserved})
end

local holder = h[1]
if not holder then
  local reserved, bad = read(nextkey, 'string', 'GET', nextkey)
  if bad then return bad end
  if reserved and reserved ~= req then
    -- Released to a waiter that has not claimed it yet: no barging past it.
    return refuse(redis.call('PTTL', nextkey), 1)
  end
  if fair and not reserved then
    -- Strict FIFO: skip waiters whose place lapsed (they stopped refreshing it), then
    -- only the oldest live waiter may take the lock.
    prune_lapsed(queue, expiries, now_ms(), info)
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    for _ = 1, 64 do
      if not head or head == req or redis.call('ZSCORE', expiries, head) then break end
      redis.call('ZREM', queue, head) -- a place without a lifetime is no place
      redis.call('HDEL', info, head)
      head = redis.call('ZRANGE', queue, 0, 0)[1]
    end
    if head and head ~= req then
      return refuse(-2, 1)
    end
  end
  -- Free: a fencing token above every earlier one (the first write).
  local token, bad = next_token(fence)
  if bad then return bad end
  if reserved then redis.call('DEL', nextkey) end
  redis.call('HSET', lock, 'owner', owner, 'token', token, 'count', 1, reqfield, 1, 'meta', ARGV[7])
  redis.call('PEXPIRE', lock, ttl)
  dequeue()
  return reply({1, token, 1, ttl})
end

if holder == owner then
  local pttl = redis.call('PTTL', lock)
  if h[4] then
    -- A retry of a request that was already granted: report the same grant, count it once.
    -- The TTL is always written again (never shortened), so that a WAIT after this reply
    -- also covers the original grant, written by an earlier call on another connection.
    if pttl < ttl then pttl = ttl end
    redis.call('PEXPIRE', lock, pttl)
    dequeue()
    return reply({1, tonumber(h[2]), tonumber(h[3]), pttl})
  end
  if reentrant then
    local count = redis.call('HINCRBY', lock, 'count', 1)
    redis.call('HSET', lock, reqfield, 1)
    -- Never shorten the lease another hold of the same owner relies on.
    if pttl < ttl then redis.call('PEXPIRE', lock, ttl); pttl = ttl end
    dequeue()
    return reply({1, tonumber(h[2]), count, pttl})
  end
end

return refuse(redis.call('PTTL', lock), 0)
