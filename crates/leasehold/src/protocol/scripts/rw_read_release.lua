-- leasehold read-write lock, read release: end one reader's lease; the last reader to
-- leave hands the lock to the oldest waiting writer (see grant_waiting_writer in the
-- prelude), or tells every waiter to retry.
-- KEYS[1] readers (zset)   KEYS[2] reader tokens (hash)   KEYS[3] writer (lock hash)
-- KEYS[4] waiting writers (zset: place expiries)   KEYS[5] their arrival order (zset)
-- KEYS[6] their details (hash)   KEYS[7] fencing counter
-- ARGV[1] request id   ARGV[2] channel   ARGV[3] claim window (ms)   ARGV[4] reply tag
-- Returns {1} released, {0} not held (expired, or already released).
-- All or nothing (see the prelude): the readers are checked by ZSCORE, the arrival order
-- by ZCARD (for the last reader), before the first write; the tokens hash by TYPE, and
-- the writer keys by TYPE when a writer waits.
local readers, tokens, writer, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local order, info, fence, req = KEYS[5], KEYS[6], KEYS[7], ARGV[1]
local exp, bad = read(readers, 'zset', 'ZSCORE', readers, req)
if bad then return bad end
bad = foreign_key(tokens, 'hash')
if bad then return bad end
local now = now_ms()
if not exp then return reply({0}) end
local live = tonumber(exp) > now
local last = live and redis.call('ZCOUNT', readers, '(' .. now, '+inf') <= 1
local waiting = 0
if last then
  waiting, bad = read(order, 'zset', 'ZCARD', order)
  if bad then return bad end
  if waiting > 0 then
    bad = foreign_key(writer, 'hash', writers, 'zset', info, 'hash', fence, 'string')
    if bad then return bad end
  end
end
redis.call('ZREM', readers, req)
redis.call('HDEL', tokens, req)
if not live then return reply({0}) end
if last then
  local granted = false
  if waiting > 0 and redis.call('EXISTS', writer) == 0 then
    granted, bad = grant_waiting_writer(writer, writers, order, info, fence, ARGV[2], tonumber(ARGV[3]))
    if bad then return bad end
  end
  if not granted then redis.call(PUBLISH, ARGV[2], '') end
end
return reply({1})
