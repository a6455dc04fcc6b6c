-- leasehold read-write lock, write release: end the writer's hold, checked against its
-- owner and request id, and hand the lock to the oldest waiting writer (see
-- grant_waiting_writer in the prelude), or tell every waiting reader and writer.
-- KEYS[1] writer (lock hash)   KEYS[2] waiting writers (zset: place expiries)
-- KEYS[3] their arrival order (zset)   KEYS[4] their details (hash)   KEYS[5] fencing counter
-- ARGV[1] owner id   ARGV[2] request id   ARGV[3] channel   ARGV[4] claim window (ms)
-- ARGV[5] reply tag
-- Returns {1} released, {0} not held (expired, or already released), {-1} held by another.
-- All or nothing (see the prelude): the writer is checked by HMGET, the arrival order by
-- ZCARD, before the first write; the other keys by TYPE when a writer waits.
local writer, writers, order, info, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local h, bad = read(writer, 'hash', 'HMGET', writer, 'owner', 'r:' .. ARGV[2])
if bad then return bad end
if not h[1] then return reply({0}) end
if h[1] ~= ARGV[1] then return reply({-1}) end
if not h[2] then return reply({0}) end
local waiting
waiting, bad = read(order, 'zset', 'ZCARD', order)
if bad then return bad end
if waiting > 0 then
  bad = foreign_key(writers, 'zset', info, 'hash', fence, 'string')
  if bad then return bad end
end
redis.call('DEL', writer)
-- No reader holds while a writer does, so the lock is free for the next writer.
local granted = false
if waiting > 0 then
  granted, bad = grant_waiting_writer(writer, writers, order, info, fence, ARGV[3], tonumber(ARGV[4]))
  if bad then return bad end
end
if not granted then redis.call(PUBLISH, ARGV[3], '') end
return reply({1})
