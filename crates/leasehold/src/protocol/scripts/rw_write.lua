-- leasehold read-write lock, write acquire: exclude readers and other writers.
-- KEYS[1] writer (lock hash: owner, token, count, r:<request id>, meta)
-- KEYS[2] readers (zset)   KEYS[3] reader tokens (hash)
-- KEYS[4] waiting writers (zset: request id -> place expiry ms)   KEYS[5] fencing counter
-- KEYS[6] waiting writers' arrival order (zset: request id -> place, µs)
-- KEYS[7] waiting writers' details (hash: request id -> "TRY:AT\nTTL\nOWNER\nMETA")
-- ARGV[1] owner id   ARGV[2] request id   ARGV[3] lease ttl (ms)
-- ARGV[4] place (ms): > 0 registers the caller as a waiting writer until now + place (new
--         readers are refused while it is registered; call again to refresh), 0 = do not wait
-- ARGV[5] holder metadata (JSON text)
-- ARGV[6] the number of this try of the call (1, 2, ...): a refused try that registers the
--         caller leaves it in its details, and a release that makes the caller the writer
--         names it (as for locks)   ARGV[7] reply tag
-- Returns {1, token, 1, pttl} granted (also for a retry of a granted request, or the
--         confirming try of a grant by a release: the lease then lasts at least ttl),
--         {0, ms, 0} held: ms is the writer's lease, or the time until the last reader's
--         lease runs out.
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'zset',
  KEYS[5], 'string', KEYS[6], 'zset', KEYS[7], 'hash')
if bad then return bad end
local writer, readers, tokens, writers, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local order, info = KEYS[6], KEYS[7]
local owner, req, ttl, place = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
prune(readers, tokens, now)
prune_lapsed(order, writers, now, info)
redis.call('ZREMRANGEBYSCORE', writers, '-inf', now)

local function dequeue()
  dequeue_waiter(order, writers, info, req)
end

local function wait(ms)
  if place > 0 then
    -- Its place in arrival order, its place's expiry (which readers check), its details.
    enqueue(order, writers, req, place)
    redis.call('HSET', info, req, ARGV[6] .. ':' .. string.format('%.0f', now) .. '\n' .. ttl .. '\n' .. owner .. '\n' .. ARGV[5])
    at_least(info, place)
  end
  return reply({0, math.max(1, ms), 0})
end

local holder = redis.call('HGET', writer, 'owner')
if holder then
  if holder == owner and redis.call('HEXISTS', writer, 'r:' .. req) == 1 then
    local pttl = redis.call('PTTL', writer)
    if pttl < ttl then redis.call('PEXPIRE', writer, ttl); pttl = ttl end
    dequeue()
    return reply({1, tonumber(redis.call('HGET', writer, 'token')), 1, pttl})
  end
  return wait(redis.call('PTTL', writer))
end
local last = redis.call('ZRANGE', readers, -1, -1, 'WITHSCORES')
if last[1] then return wait(tonumber(last[2]) - now) end

local token = next_token(fence)
redis.call('HSET', writer, 'owner', owner, 'token', token, 'count', 1, 'r:' .. req, 1, 'meta', ARGV[5])
redis.call('PEXPIRE', writer, ttl)
dequeue()
return reply({1, token, 1, ttl})
