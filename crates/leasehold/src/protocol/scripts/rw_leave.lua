-- leasehold read-write lock, leave: a waiting writer gives up its place (timed out or
-- cancelled). If a release had made it the writer and it never took the lock as held,
-- that ends and the lock goes to the next waiting writer. If no live writer waits any
-- more, readers are told to retry.
-- KEYS[1] waiting writers (zset: place expiries)   KEYS[2] their arrival order (zset)
-- KEYS[3] their details (hash)   KEYS[4] writer (lock hash)   KEYS[5] readers (zset)
-- KEYS[6] fencing counter
-- ARGV[1] request id   ARGV[2] channel   ARGV[3] claim window (ms)
-- Returns 2 if it ended such a grant, 1 if the writer was registered, else 0.
local writers, order, info, writer, readers, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local bad = foreign_key(writers, 'zset', order, 'zset', info, 'hash', writer, 'hash',
  readers, 'zset', fence, 'string')
if bad then return bad end
local req = ARGV[1]
local removed = redis.call('ZREM', writers, req)
redis.call('ZREM', order, req)
redis.call('HDEL', info, req)
local now = now_ms()
if redis.call('HEXISTS', writer, 'r:' .. req) == 1 then
  -- Made the writer by a release, never confirmed: end that hold, hand the lock on.
  redis.call('DEL', writer)
  local granted = false
  if redis.call('ZCOUNT', readers, '(' .. now, '+inf') == 0 then
    granted, bad = grant_waiting_writer(writer, writers, order, info, fence, ARGV[2], tonumber(ARGV[3]))
    if bad then return bad end
  end
  if not granted then redis.call(PUBLISH, ARGV[2], '') end
  return 2
end
if removed == 1 and redis.call('ZCOUNT', writers, '(' .. now, '+inf') == 0 then
  redis.call(PUBLISH, ARGV[2], '')
end
return removed
