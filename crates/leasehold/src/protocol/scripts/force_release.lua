-- leasehold force release: an operator removes a lock whoever holds it, and hands it on.
-- KEYS[1] lock hash   KEYS[2] waiter queue   KEYS[3] waiter expiries   KEYS[4] handoff reservation
-- KEYS[5] fencing counter   KEYS[6] waiter details
-- ARGV[1] reservation (ms)   ARGV[2] claim window (ms)
-- Returns {owner, token, count, meta, pttl} of what was removed, or {'', '', '', '', -2}.
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'string',
  KEYS[5], 'string', KEYS[6], 'hash')
if bad then return bad end
local lock, queue, expiries, nextkey, fence, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local h = redis.call('HMGET', lock, 'owner', 'token', 'count', 'meta')
if not h[1] then return {'', '', '', '', -2} end
local pttl = redis.call('PTTL', lock)
redis.call('DEL', lock)
if redis.call('ZCARD', queue) > 0 then
  bad = handoff(lock, queue, expiries, nextkey, tonumber(ARGV[1]), fence, info, tonumber(ARGV[2]))
  if bad then return bad end
end
return {h[1], h[2] or '', h[3] or '', h[4] or '', pttl}
