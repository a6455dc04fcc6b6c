-- leasehold read-write lock, write release: end the writer's hold, checked against its
-- owner and request id, and announce it to every waiting reader and writer.
-- KEYS[1] writer (lock hash)
-- ARGV[1] owner id   ARGV[2] request id   ARGV[3] channel   ARGV[4] reply tag
-- Returns {1} released, {0} not held (expired, or already released), {-1} held by another.
local bad = foreign_key(KEYS[1], 'hash')
if bad then return bad end
local writer = KEYS[1]
local h = redis.call('HMGET', writer, 'owner', 'r:' .. ARGV[2])
if not h[1] then return reply({0}) end
if h[1] ~= ARGV[1] then return reply({-1}) end
if not h[2] then return reply({0}) end
redis.call('DEL', writer)
redis.call(PUBLISH, ARGV[3], '')
return reply({1})
