-- leasehold leave: a waiter gives up its place (its acquire timed out or was cancelled).
-- KEYS[1] lock hash   KEYS[2] waiter queue   KEYS[3] waiter expiries   KEYS[4] handoff reservation
-- ARGV[1] request id of the waiting call   ARGV[2] reservation (ms)
-- If the lock had been handed to this waiter, it is handed on to the next one.
-- Returns 1 if the waiter was queued or held the reservation, else 0.
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'string')
if bad then return bad end
local lock, queue, expiries, nextkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local req, reservems = ARGV[1], tonumber(ARGV[2])

local queued = redis.call('ZREM', queue, req)
redis.call('ZREM', expiries, req)
if redis.call('GET', nextkey) == req then
  redis.call('DEL', nextkey)
  if redis.call('EXISTS', lock) == 0 then handoff(lock, queue, expiries, nextkey, reservems) end
  return 1
end
return queued
