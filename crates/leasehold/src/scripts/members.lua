-- (shared by the semaphore and read-write lock scripts, prepended to them at build time)
-- A lease set is a sorted set (member: request id, score: expiry in ms, server clock) and a
-- hash (request id -> fencing token). Both keys always live at least as long as their
-- longest lease.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop expired members (at most 256 per call) and their tokens.
local function prune(set, tokens, now)
  local dead = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(dead) do
    redis.call('ZREM', set, id)
    redis.call('HDEL', tokens, id)
  end
end

-- Make both keys live at least ms more.
local function keep(set, tokens, ms)
  if redis.call('PTTL', set) < ms then redis.call('PEXPIRE', set, ms) end
  if redis.call('PTTL', tokens) < ms then redis.call('PEXPIRE', tokens, ms) end
end

-- The next fencing token, floored by the server clock (µs) when the counter starts afresh.
local function next_token(fence)
  local token = redis.call('INCR', fence)
  if token == 1 then
    local t = redis.call('TIME')
    token = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', fence, string.format('%.0f', token))
  end
  return token
end

-- A retry of a request that was already granted: the same grant, or nil.
local function granted(set, tokens, req, now)
  local exp = redis.call('ZSCORE', set, req)
  if exp and tonumber(exp) > now then
    return {1, tonumber(redis.call('HGET', tokens, req)), 1, tonumber(exp) - now}
  end
  return nil
end

-- Add a member with a lease of ttl ms and a fresh token.
local function grant(set, tokens, fence, req, ttl, now)
  local token = next_token(fence)
  redis.call('ZADD', set, now + ttl, req)
  redis.call('HSET', tokens, req, token)
  keep(set, tokens, ttl)
  return {1, token, 1, ttl}
end

local function reply(t)
  t[#t + 1] = tonumber(ARGV[#ARGV])
  return t
end
