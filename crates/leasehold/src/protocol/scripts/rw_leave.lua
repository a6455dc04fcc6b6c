-- leasehold read-write lock, leave: a waiting writer gives up its place (timed out or
-- cancelled). If no live writer waits any more, readers are told to retry.
-- KEYS[1] waiting writers (zset)
-- ARGV[1] request id   ARGV[2] channel
-- Returns 1 if the writer was registered, else 0.
local bad = foreign_key(KEYS[1], 'zset')
if bad then return bad end
local writers = KEYS[1]
local removed = redis.call('ZREM', writers, ARGV[1])
if removed == 1 and redis.call('ZCOUNT', writers, '(' .. now_ms(), '+inf') == 0 then
  redis.call(PUBLISH, ARGV[2], '')
end
return removed
