-- leasehold semaphore leave: a waiter gives up its place (its acquire timed out, failed or
-- was cancelled); the waiters behind it move up, and the one that may now take a free
-- permit is named.
-- KEYS[1] permits (zset)   KEYS[2] waiters (zset)   KEYS[3] waiter expiries (zset)
-- ARGV[1] request id of the waiting call   ARGV[2] channel to announce on
-- ARGV[3] capacity N
-- Returns 1 if the waiter was queued, else 0.
local bad = foreign_key(KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset')
if bad then return bad end
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
-- The waiter behind it may be the one a free permit waits for.
if removed == 1 then
  name_next_waiter(KEYS[1], KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), now_ms())
end
return removed
