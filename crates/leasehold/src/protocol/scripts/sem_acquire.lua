-- leasehold semaphore acquire: take one of N permits, each a lease of its own.
-- KEYS[1] permits (zset: request id -> expiry ms)   KEYS[2] permit tokens (hash)
-- KEYS[3] fencing counter
-- ARGV[1] request id   ARGV[2] lease ttl (ms)   ARGV[3] capacity N (>= 1)   ARGV[4] reply tag
-- Returns {1, token, 1, pttl} when the caller holds a permit (also for a retry of a
-- granted request), {0, ms until the earliest permit expires, 0} when all N are held.
-- Expired permits are reclaimed here. Live permits are counted against the caller's N, so
-- a smaller N grants nothing until enough holders have left; no holder is ever revoked.
local bad = foreign_key(KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'string')
if bad then return bad end
local set, tokens, fence = KEYS[1], KEYS[2], KEYS[3]
local req, ttl, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
prune(set, tokens, now)
local again = granted(set, tokens, req, now)
if again then return reply(again) end
if redis.call('ZCOUNT', set, '(' .. now, '+inf') >= cap then
  local first = redis.call('ZRANGEBYSCORE', set, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return reply({0, math.max(1, tonumber(first[2]) - now), 0})
end
return reply(grant(set, tokens, fence, req, ttl, now))
