-- leasehold leave: a waiter gives up its place (its acquire timed out or was cancelled).
-- KEYS[1] lock hash   KEYS[2] waiter queue   KEYS[3] waiter expiries   KEYS[4] handoff reservation
-- KEYS[5] fencing counter   KEYS[6] waiter details
-- ARGV[1] request id of the waiting call   ARGV[2] reservation (ms)   ARGV[3] claim window (ms)
-- If the lock had been handed to this waiter (reserved for it, or granted to it by a
-- release and not confirmed: the caller never took it as held), that ends and the lock is
-- handed on to the next waiter.
-- Returns 2 if it ended a grant to this waiter, 1 if the waiter was queued or held the
-- reservation, else 0.
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'string',
  KEYS[5], 'string', KEYS[6], 'hash')
if bad then return bad end
local lock, queue, expiries, nextkey, fence, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local req, reservems, claimms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function hand_on()
  if redis.call('EXISTS', lock) == 0 and redis.call('ZCARD', queue) > 0 then
    return handoff(lock, queue, expiries, nextkey, reservems, fence, info, claimms)
  end
  return nil
end

local queued = dequeue_waiter(queue, expiries, info, req)
local reqfield = 'r:' .. req
if redis.call('HEXISTS', lock, reqfield) == 1 then
  -- Granted by a release, never confirmed: end that hold.
  if redis.call('HINCRBY', lock, 'count', -1) <= 0 then
    redis.call('DEL', lock)
  else
    redis.call('HDEL', lock, reqfield)
  end
  bad = hand_on()
  if bad then return bad end
  return 2
end
if redis.call('GET', nextkey) == req then
  redis.call('DEL', nextkey)
  bad = hand_on()
  if bad then return bad end
  return 1
end
return queued
