-- leasehold release: end one hold, checked against its owner and request id.
-- KEYS[1] lock hash
-- ARGV[1] owner id    ARGV[2] request id of the hold being released
-- Returns {1, 0} released and the lock is free (waiters were notified),
--         {2, n} released this hold, the owner still holds n,
--         {0, 0} not held: expired (or this hold already ended),
--         {-1, 0} held by another owner.
local lock = KEYS[1]
local owner, reqfield = ARGV[1], 'r:' .. ARGV[2]

local holder = redis.call('HGET', lock, 'owner')
if not holder then return {0, 0} end
if holder ~= owner then return {-1, 0} end
if redis.call('HDEL', lock, reqfield) == 0 then return {0, 0} end

local count = redis.call('HINCRBY', lock, 'count', -1)
if count > 0 then return {2, count} end

local token = redis.call('HGET', lock, 'token')
redis.call('DEL', lock)
redis.call('PUBLISH', lock .. ':released', token)
return {1, 0}
