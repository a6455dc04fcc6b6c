-- leasehold release: end one hold, checked against its owner and request id.
-- KEYS[1] lock hash   KEYS[2] waiter queue   KEYS[3] waiter expiries   KEYS[4] handoff reservation
-- KEYS[5] fencing counter   KEYS[6] waiter details
-- ARGV[1] owner id    ARGV[2] request id of the hold being released   ARGV[3] reservation (ms)
-- ARGV[4] claim window (ms): the lease of a waiter made the holder by this release
-- Returns {1, 0} released, and the lock is free or was handed to the oldest live waiter,
--         {2, n} released this hold, the owner still holds n,
--         {0, 0} not held: expired (or this hold already ended),
--         {-1, 0} held by another owner.
-- ARGV[#ARGV] reply tag (see the prelude).
-- All or nothing (see the prelude): the lock hash is checked by HMGET, the queue by
-- ZCARD, both before the first write; the other keys by foreign_key, only when there is
-- a waiter to hand the lock to. An uncontended release is HMGET, ZCARD and DEL.
local lock, queue, expiries, nextkey, fence, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, reqfield, reservems = ARGV[1], 'r:' .. ARGV[2], tonumber(ARGV[3])
local claimms = tonumber(ARGV[4])

local h, bad = read(lock, 'hash', 'HMGET', lock, 'owner', 'count', reqfield)
if bad then return bad end
if not h[1] then return reply({0, 0}) end
if h[1] ~= owner then return reply({-1, 0}) end
if not h[3] then return reply({0, 0}) end

local count = tonumber(h[2]) - 1
if count > 0 then
  redis.call('HDEL', lock, reqfield)
  redis.call('HSET', lock, 'count', count)
  return reply({2, count})
end

local waiting
waiting, bad = read(queue, 'zset', 'ZCARD', queue)
if bad then return bad end
if waiting == 0 then
  redis.call('DEL', lock)
  return reply({1, 0})
end
bad = foreign_key(expiries, 'zset', nextkey, 'string', info, 'hash', fence, 'string')
if bad then return bad end
redis.call('DEL', lock)
bad = handoff(lock, queue, expiries, nextkey, reservems, fence, info, claimms)
if bad then return bad end
return reply({1, 0})
