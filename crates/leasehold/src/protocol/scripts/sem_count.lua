-- leasehold semaphore count (read-only): how many permits are held right now.
-- KEYS[1] permits (zset)
-- Returns the number of unexpired permits.
local now = now_ms()
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
