-- leasehold force release: an operator removes a lock whoever holds it, and wakes waiters.
-- KEYS[1] lock hash   KEYS[2] waiter queue   KEYS[3] waiter expiries   KEYS[4] handoff reservation
-- ARGV[1] reservation (ms)
-- Returns {owner, token, count, meta, pttl} of what was removed, or {'', '', '', '', -2}.
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'string')
if bad then return bad end
local lock, queue, expiries, nextkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local h = redis.call('HMGET', lock, 'owner', 'token', 'count', 'meta')
if not h[1] then return {'', '', '', '', -2} end
local pttl = redis.call('PTTL', lock)
redis.call('DEL', lock)
handoff(lock, queue, expiries, nextkey, tonumber(ARGV[1]))
return {h[1], h[2] or '', h[3] or '', h[4] or '', pttl}
