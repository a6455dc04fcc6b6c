-- leasehold semaphore acquire: take one of N permits (or n of them at once, for a request id
-- 'REQ*n', see `weight` in the prelude), each grant a lease of its own, in arrival order.
-- KEYS[1] permits (zset: request id -> expiry ms)   KEYS[2] permit tokens (hash)
-- KEYS[3] fencing counter   KEYS[4] waiters (zset: request id -> place, server µs)
-- KEYS[5] waiter expiries (zset: request id -> expiry of the place, ms)
-- KEYS[6] waiter details (hash: request id -> "TRY:AT\nTTL\nCAP\n", see the prelude)
-- ARGV[1] request id   ARGV[2] lease ttl (ms)   ARGV[3] capacity N (>= 1)
-- ARGV[4] wait lease (ms): > 0 queues the caller when refused (its place lives that long
--         from this call and must be refreshed), 0 = do not wait
-- ARGV[5] '1' if an earlier try of this call may have queued it
-- ARGV[6] the number of this try of the call (1, 2, ...): a refused try that queues the
--         caller leaves it in its details, and a release that grants the caller a permit
--         names it (as for locks)   ARGV[7] reply tag
-- Returns {1, token, 1, pttl} when the caller holds its permits (also for a retry of a
-- granted request, or the confirming try of a permit a release granted: the lease is then
-- made to last at least ttl from now); {0, ms until the earliest permit expires, 0} when
-- fewer than the caller's permits are free; {0, -2, 1} when they are free but older
-- waiters come first (wait to be named).
-- Expired permits are reclaimed here. Live permits are counted against the caller's N, so
-- a smaller N grants nothing until enough holders have left; no holder is ever revoked.
-- First come, first served: with f permits free, a waiter may take its permits only when
-- they and those of every live waiter ahead of it fit in f; a caller that is not queued
-- stands behind every waiter. A large request is never passed by smaller ones.
-- All or nothing (see the prelude): the permits are checked by their first read, the
-- queue by ZCARD, the counter by SET … GET (or by TYPE when expired permits or lapsed
-- places are pruned first), before anything is written; the tokens hash and the places'
-- expiries by TYPE, and the details by TYPE when the call waits or others do (an
-- uncontended try neither reads nor writes them).
local set, tokens, fence, queue, expiries, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local req, ttl, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local waitms, queued, try = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]
local n = weight(req)
local now = now_ms()

local dead, bad = read(set, 'zset', 'ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 256)
if bad then return bad end
local waiting
waiting, bad = read(queue, 'zset', 'ZCARD', queue)
if bad then return bad end
-- Live permits (expired ones are not counted, so this holds before and after the prune).
local free = cap - redis.call('ZCOUNT', set, '(' .. now, '+inf')
if waiting > 0 or queued or (waitms > 0 and free < n) then
  bad = foreign_key(tokens, 'hash', expiries, 'zset', info, 'hash')
else
  bad = foreign_key(tokens, 'hash', expiries, 'zset')
end
if bad then return bad end
-- The counter is checked by grant's SET … GET, unless pruning writes first.
if #dead > 0 or waiting > 0 then
  bad = foreign_key(fence, 'string')
  if bad then return bad end
end

local function dequeue()
  if queued and redis.call('ZREM', queue, req) == 1 then
    redis.call('ZREM', expiries, req)
    redis.call('HDEL', info, req)
  end
end

-- Refused: take or refresh the caller's place and its details (if it waits).
local function refuse(out)
  enqueue(queue, expiries, req, waitms)
  if waitms > 0 then
    -- A weighted caller's details start with '*' (see waiter_details).
    local mark = n > 1 and '*' or ''
    redis.call('HSET', info, req, mark .. try .. ':' .. string.format('%.0f', now) .. '\n' .. ttl .. '\n' .. cap .. '\n')
    at_least(info, waitms)
  end
  return reply(out)
end

-- Expired permits go first (prune's own read finds the same ones).
if #dead > 0 then prune(set, tokens, now) end
local again = granted(set, tokens, req, now)
if again then
  -- A retry of a granted request, or the confirmation of a permit a release granted (on a
  -- lease of only the claim window): it lasts at least ttl from now, as the caller counts
  -- its lease from this try's send.
  if again[4] < ttl then
    place(set, now + ttl, req, true)
    keep(set, tokens, ttl)
    again[4] = ttl
  end
  dequeue()
  return reply(again)
end
if free < n then
  local first = redis.call('ZRANGEBYSCORE', set, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return refuse({0, math.max(1, tonumber(first[2]) - now), 0})
end
if waiting > 0 then
  prune_lapsed(queue, expiries, now, info)
  local ahead = redis.call('ZRANK', queue, req) or redis.call('ZCARD', queue)
  -- Every waiter ahead weighs at least 1; count their permits only when they may fit.
  local need = n + ahead
  if need <= free and ahead > 0 then
    need = n
    for _, id in ipairs(redis.call('ZRANGE', queue, 0, ahead - 1)) do need = need + weight(id) end
  end
  if need > free then
    return refuse({0, -2, 1})
  end
end
local out
out, bad = grant(set, tokens, fence, req, ttl, now)
if bad then return bad end
dequeue()
return reply(out)
