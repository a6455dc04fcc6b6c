-- leasehold lock set acquire: grant (or re-enter) every member of a lock set in one atomic
-- step, or none. Never queues: a caller refused here waits member by member.
-- Per member i (in the set's order): KEYS[3i-2] lock hash   KEYS[3i-1] fencing counter
-- KEYS[3i] handoff reservation;  ARGV[2i-1] owner id   ARGV[2i] request id
-- then ARGV[2n+1] lease ttl (ms)   ARGV[2n+2] '1' = the owners may re-enter
-- ARGV[2n+3] holder metadata (JSON text, stored with each new grant)
-- ARGV[#ARGV] reply tag (see the prelude).
-- Returns {1, then per member: token, hold count, pttl} when the caller holds every member
-- (each as acquire.lua would grant it: a new grant, a retry of a granted request, or a
-- re-entry), or {0, i, pttl, reserved} when member i (the first in order) is held by
-- another owner (reserved = 1: free but handed to a waiter) — nothing is written then.
-- All or nothing (see the prelude): every lock hash is checked by its first read (HMGET),
-- every reservation by GET and every counter by TYPE, all before the first write.
local n = #KEYS / 3
local ttl, reentrant, meta = tonumber(ARGV[2 * n + 1]), ARGV[2 * n + 2] == '1', ARGV[2 * n + 3]

-- What each member needs: 'new', 'again' (a retry of a granted request) or 're' (re-entry).
local plan, held = {}, {}
for i = 1, n do
  local lock, fence, nextkey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local owner, reqfield = ARGV[2 * i - 1], 'r:' .. ARGV[2 * i]
  local h, bad = read(lock, 'hash', 'HMGET', lock, 'owner', 'token', 'count', reqfield)
  if bad then return bad end
  bad = foreign_key(fence, 'string')
  if bad then return bad end
  if not h[1] then
    local reserved
    reserved, bad = read(nextkey, 'string', 'GET', nextkey)
    if bad then return bad end
    if reserved and reserved ~= ARGV[2 * i] then
      return reply({0, i, redis.call('PTTL', nextkey), 1})
    end
    plan[i] = 'new'
  elseif h[1] == owner and h[4] then
    plan[i] = 'again'
  elseif h[1] == owner and reentrant then
    plan[i] = 're'
  else
    return reply({0, i, redis.call('PTTL', lock), 0})
  end
  held[i] = h
end

local out = {1}
for i = 1, n do
  local lock, fence, nextkey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local owner, reqfield = ARGV[2 * i - 1], 'r:' .. ARGV[2 * i]
  local token, count, pttl
  if plan[i] == 'new' then
    local bad
    token, bad = next_token(fence)
    if bad then return bad end
    redis.call('DEL', nextkey)
    redis.call('HSET', lock, 'owner', owner, 'token', token, 'count', 1, reqfield, 1, 'meta', meta)
    redis.call('PEXPIRE', lock, ttl)
    count, pttl = 1, ttl
  else
    token = tonumber(held[i][2])
    if plan[i] == 'again' then
      count = tonumber(held[i][3])
    else
      count = redis.call('HINCRBY', lock, 'count', 1)
      redis.call('HSET', lock, reqfield, 1)
    end
    -- Never shorten a lease another hold relies on; a retry writes it again (as acquire).
    pttl = redis.call('PTTL', lock)
    if pttl < ttl then pttl = ttl end
    redis.call('PEXPIRE', lock, pttl)
  end
  out[#out + 1] = token
  out[#out + 1] = count
  out[#out + 1] = pttl
end
return reply(out)
