-- leasehold member release: end one lease of a lease set (a permit or a reader).
-- KEYS[1] lease set (zset)   KEYS[2] tokens (hash)
-- ARGV[1] request id   ARGV[2] channel to announce on   ARGV[3] '1' = announce every
-- release, '0' = only when the set becomes empty   ARGV[4] reply tag
-- Returns {1} released, {0} not held (expired, or already released).
local bad = foreign_key(KEYS[1], 'zset', KEYS[2], 'hash')
if bad then return bad end
local set, tokens, req = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
local exp = redis.call('ZSCORE', set, req)
if not exp then return reply({0}) end
redis.call('ZREM', set, req)
redis.call('HDEL', tokens, req)
if tonumber(exp) <= now then return reply({0}) end
if ARGV[3] == '1' or redis.call('ZCOUNT', set, '(' .. now, '+inf') == 0 then
  redis.call(PUBLISH, ARGV[2], '')
end
return reply({1})
