-- leasehold acquire: grant, re-enter or report contention, in one atomic step.
-- KEYS[1] lock hash   KEYS[2] fencing counter
-- ARGV[1] owner id    ARGV[2] request id   ARGV[3] lease ttl (ms)   ARGV[4] '1' = re-entrant owner
-- Returns {1, token, hold_count, pttl} when the caller holds the lock, {0, pttl} when another owner does.
local lock, fence = KEYS[1], KEYS[2]
local owner, req, ttl, reentrant = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local reqfield = 'r:' .. req

local holder = redis.call('HGET', lock, 'owner')
if not holder then
  -- Free: issue a fencing token that beats both the counter and the server clock (microseconds),
  -- so a lost or deleted counter can never make a token go backwards.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local token = tonumber(redis.call('GET', fence) or '0') + 1
  if token < now then token = now end
  local tokstr = string.format('%.0f', token)
  redis.call('SET', fence, tokstr)
  redis.call('HSET', lock, 'owner', owner, 'token', tokstr, 'count', 1, reqfield, 1)
  redis.call('PEXPIRE', lock, ttl)
  return {1, token, 1, ttl}
end

if holder == owner then
  local pttl = redis.call('PTTL', lock)
  if redis.call('HEXISTS', lock, reqfield) == 1 then
    -- A retry of a request that was already granted: report the same grant, count it once.
    if pttl < ttl then redis.call('PEXPIRE', lock, ttl); pttl = ttl end
    return {1, tonumber(redis.call('HGET', lock, 'token')), tonumber(redis.call('HGET', lock, 'count')), pttl}
  end
  if reentrant then
    local count = redis.call('HINCRBY', lock, 'count', 1)
    redis.call('HSET', lock, reqfield, 1)
    -- Never shorten the lease another hold of the same owner relies on.
    if pttl < ttl then redis.call('PEXPIRE', lock, ttl); pttl = ttl end
    return {1, tonumber(redis.call('HGET', lock, 'token')), count, pttl}
  end
end

return {0, redis.call('PTTL', lock)}
