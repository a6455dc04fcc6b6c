-- leasehold semaphore leave: a waiter gives up its place (its acquire timed out, failed or
-- was cancelled); the waiters behind it move up, and free permits go to the oldest.
-- KEYS[1] permits (zset)   KEYS[2] waiters (zset)   KEYS[3] waiter expiries (zset)
-- KEYS[4] permit tokens (hash)   KEYS[5] fencing counter   KEYS[6] waiter details (hash)
-- ARGV[1] request id of the waiting call   ARGV[2] channel to announce on
-- ARGV[3] capacity N   ARGV[4] claim window (ms)
-- If a release had granted this waiter permits it never took as held, they end and go on
-- to the next waiters.
-- Returns 2 if it ended such a permit, 1 if the waiter was queued, else 0.
local set, queue, expiries, tokens, fence, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local bad = foreign_key(set, 'zset', queue, 'zset', expiries, 'zset', tokens, 'hash',
  fence, 'string', info, 'hash')
if bad then return bad end
local req = ARGV[1]
local removed = dequeue_waiter(queue, expiries, info, req)
local ended = unplace(set, req) == 1
if ended then redis.call('HDEL', tokens, req) end
-- The waiter behind it may be the one a free permit waits for.
if removed == 1 or ended then
  bad = grant_waiting_permits(set, tokens, fence, queue, expiries, info, ARGV[2],
    tonumber(ARGV[3]), now_ms(), tonumber(ARGV[4]))
  if bad then return bad end
end
if ended then return 2 end
return removed
