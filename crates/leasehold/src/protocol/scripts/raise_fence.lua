-- leasehold raise_fence (RedLock): make this node's fencing counter at least the token a
-- quorum grant settled on, while the grant still holds here.
-- KEYS[1] lock hash   KEYS[2] fencing counter
-- ARGV[1] owner id    ARGV[2] request id of the hold   ARGV[3] token (decimal integer)
-- Returns {1} when raised (or already high enough) and the hold's token set to ARGV[3],
--         {0} when this node no longer holds the grant (nothing is written).
-- ARGV[#ARGV] reply tag (see the prelude).
local bad = foreign_key(KEYS[1], 'hash', KEYS[2], 'string')
if bad then return bad end
local lock, fence = KEYS[1], KEYS[2]
local owner, reqfield, token = ARGV[1], 'r:' .. ARGV[2], ARGV[3]

if redis.call('HGET', lock, 'owner') ~= owner then return reply({0}) end
if redis.call('HEXISTS', lock, reqfield) == 0 then return reply({0}) end
-- Tokens stay below 2^53, so Lua numbers compare them exactly.
local current = tonumber(redis.call('GET', fence) or '0') or 0
if current < tonumber(token) then redis.call('SET', fence, token) end
redis.call('HSET', lock, 'token', token)
return reply({1})
