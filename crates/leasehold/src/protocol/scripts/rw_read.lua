-- leasehold read-write lock, read acquire: share the lock with other readers.
-- KEYS[1] writer (lock hash)   KEYS[2] readers (zset: request id -> expiry ms)
-- KEYS[3] reader tokens (hash)   KEYS[4] waiting writers (zset: request id -> place expiry ms)
-- KEYS[5] fencing counter (shared by readers and writers)
-- ARGV[1] request id   ARGV[2] lease ttl (ms)   ARGV[3] reply tag
-- Returns {1, token, 1, pttl} granted (also for a retry of a granted request),
--         {0, pttl, 0} a writer holds the lock (pttl: its lease),
--         {0, ms, 1} writer preference: a live writer is waiting (ms: until its place lapses).
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'zset', KEYS[5], 'string')
if bad then return bad end
local writer, readers, tokens, writers, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local req, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
prune(readers, tokens, now)
redis.call('ZREMRANGEBYSCORE', writers, '-inf', now)
local again = granted(readers, tokens, req, now)
if again then return reply(again) end
if redis.call('EXISTS', writer) == 1 then return reply({0, redis.call('PTTL', writer), 0}) end
local waiting = redis.call('ZRANGE', writers, 0, 0, 'WITHSCORES')
if waiting[1] then return reply({0, math.max(1, tonumber(waiting[2]) - now), 1}) end
return reply(grant(readers, tokens, fence, req, ttl, now))
