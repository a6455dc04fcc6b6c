-- leasehold prelude: the functions every script shares. Every script leasehold sends is
-- assembled the same way, at build time:
--   line 1:  local PUBLISH = 'PUBLISH'   (or 'SPUBLISH' on Redis Cluster)
--   then:    this file
--   then:    the script's own file
-- The last argument of every call is a reply tag (an integer below 2^48); scripts that
-- answer with a list echo it as the list's last element (reply), so a client can tell a
-- reply that is not its own.

local function reply(t)
  t[#t + 1] = tonumber(ARGV[#ARGV])
  return t
end

-- All or nothing: every script that writes checks the type of every key it may write
-- before its first write, so a key of a foreign type (something else writing under
-- leasehold's prefix) fails the whole script with WRONGTYPE and changes nothing. The check
-- is either a read the script needs anyway and that fails with WRONGTYPE on another type
-- (HGET on the lock hash, GET on the reservation, ZCARD on the queue: the fast paths pay
-- nothing extra), or a call of this function for keys a path writes without reading them
-- first. Arguments: key, type, key, type, ...; absent keys pass. Returns the error to
-- return, or nil.
local function wrong_type(key, want)
  return redis.error_reply('WRONGTYPE leasehold key ' .. key .. ' holds a ' ..
    redis.call('TYPE', key).ok .. ' value, not a ' .. want ..
    ': something else writes under leasehold\'s prefix')
end

local function foreign_key(...)
  local want = {...}
  for i = 1, #want, 2 do
    local t = redis.call('TYPE', want[i]).ok
    if t ~= 'none' and t ~= want[i + 1] then return wrong_type(want[i], want[i + 1]) end
  end
  return nil
end

-- A read that is also the type check of `key` (of type `want`): `redis.pcall(...)`'s
-- reply, or nil and the error naming the key.
local function read(key, want, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then return nil, wrong_type(key, want) end
    return nil, r
  end
  return r, nil
end

-- Server time (never the client's clock), in µs and in ms.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function now_ms()
  return math.floor(now_us() / 1000)
end

-- The next fencing token of a lock: above the counter, and at least the server clock in
-- µs. The clock floor is taken on every grant, not only when the counter starts afresh:
-- a counter that was lost, rolled back (a restart from an older snapshot) or is behind (a
-- replica promoted before the last grants reached it) still yields tokens above every
-- one issued before, because the clock has moved on since they were. Tokens stay below
-- 2^53 (the clock in µs is about 2^51), so Lua numbers hold them exactly.
-- One `SET … GET` writes the clock and reads the old counter at once (it fails with
-- WRONGTYPE, writing nothing, if the counter is not a string); only when the counter is
-- at or above the clock (two grants in one µs, or a clock that stepped back) is it set
-- again, to the old value + 1.
-- Returns the token, or nil and the error (a counter of a foreign type).
local function next_token(fence)
  local now = now_us()
  local old, bad = read(fence, 'string', 'SET', fence, string.format('%.0f', now), 'GET')
  if bad then return nil, bad end
  local last = tonumber(old or '0') or 0
  if last >= now then
    now = last + 1
    redis.call('SET', fence, string.format('%.0f', now))
  end
  return now, nil
end

-- Redis 7 and later: `PEXPIRE … GT` lengthens a TTL and never shortens it, in one call.
local PEXPIRE_GT = (redis.REDIS_VERSION_NUM or 0) >= 0x070000

-- Make `key` live at least `ms` more (never shorter than it does).
-- Only for a key that exists; one without a TTL (something removed it) gets one.
local function at_least(key, ms)
  if PEXPIRE_GT then
    if redis.call('PEXPIRE', key, ms, 'GT') == 0 and redis.call('PTTL', key) == -1 then
      redis.call('PEXPIRE', key, ms)
    end
  elseif redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- Waiter queues: `queue` (zset: request id -> place, server µs, strictly increasing) and
-- `expiries` (zset: request id -> expiry of the place, ms). A place lives `waitms` from the
-- waiter's last call and is skipped once it lapsed.

-- A lock's waiters may also leave their details in `info` (hash: request id -> "TRY:AT\nTTL\n
-- OWNER\nMETA": the number of the try that wrote them and the server time (ms) it ran at,
-- the lease asked for, the owner id and the holder metadata; ":AT" is absent in details of
-- older clients), so that a release can make the oldest one the holder at once.

-- Take waiter `req` off the queue: its place, its place's expiry and (if `info`) its
-- details. Returns 1 if it had a place in `queue`, else 0.
local function dequeue_waiter(queue, expiries, info, req)
  local had = redis.call('ZREM', queue, req)
  redis.call('ZREM', expiries, req)
  if info then redis.call('HDEL', info, req) end
  return had
end

-- Drop places that lapsed by `now` (ms), at most 64 per call (and their details, if `info`).
local function prune_lapsed(queue, expiries, now, info)
  local dead = redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 64)
  for _, id in ipairs(dead) do dequeue_waiter(queue, expiries, info, id) end
end

-- A waiter's details from `info`: try number, ttl (ms), owner id, metadata, and the
-- try's server time (ms, or nil if absent); or nil.
local function waiter_details(info, req)
  local d = redis.call('HGET', info, req)
  if not d then return nil end
  -- A leading '*' marks a weighted permit's details (see `weight`): scripts that predate
  -- weights find no match and name that waiter to try again instead of granting it.
  local try, at, ttl, owner, meta = string.match(d, '^%*?(%d+):?(%d*)\n(%d+)\n([^\n]*)\n(.*)$')
  if not try then return nil end
  return try, tonumber(ttl), owner, meta, tonumber(at)
end

-- The details' first field for the try numbered `try` that runs now.
local function try_field(try)
  return try .. ':' .. string.format('%.0f', now_ms())
end

-- Tell waiter `head[1]` on `channel` that a release made it the holder with `token`:
-- "REQ TOKEN TRY[:WAITED] [NEXT]" (TRY from its details, WAITED the ms of server time from
-- that try, run at `at`, to this grant at `now`, when the details carry `at`; NEXT the
-- waiter after it, `head[2]`, if any).
local function announce_grant(channel, head, token, try, at, now)
  local msg = head[1] .. ' ' .. string.format('%.0f', token) .. ' ' .. try
  if at and now >= at then msg = msg .. ':' .. string.format('%.0f', now - at) end
  if head[2] then msg = msg .. ' ' .. head[2] end
  redis.call(PUBLISH, channel, msg)
end

-- Make waiter `req` the holder of the lock hash `lock` from its details (owner, metadata,
-- ttl): a fresh fencing token, one hold, a lease of min(ttl, claimms) that the waiter
-- confirms by renewing it. Returns the token, or nil and the error of a fencing counter of
-- a foreign type (nothing written then).
local function make_holder(lock, fence, req, owner, meta, ttl, claimms)
  local token, bad = next_token(fence)
  if bad then return nil, bad end
  redis.call('HSET', lock, 'owner', owner, 'token', token, 'count', 1, 'r:' .. req, 1, 'meta', meta)
  redis.call('PEXPIRE', lock, math.min(ttl, claimms))
  return token
end

-- Join the queue (first come keeps its place) or refresh the place, until now + waitms;
-- both keys keep a TTL. Nothing when waitms <= 0.
local function enqueue(queue, expiries, req, waitms)
  if waitms <= 0 then return end
  local now = now_us()
  if not redis.call('ZSCORE', queue, req) then
    local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')[2]
    local place = now
    if last and tonumber(last) >= place then place = tonumber(last) + 1 end
    -- Each write is followed at once by its TTL, so an error half-way (e.g. WRONGTYPE on
    -- the second key) never leaves a key without one.
    redis.call('ZADD', queue, 'NX', string.format('%.0f', place), req)
  end
  at_least(queue, waitms)
  redis.call('ZADD', expiries, math.floor(now / 1000) + waitms, req)
  at_least(expiries, waitms)
end

-- Hand a free lock to the oldest live waiter (the caller checked that the queue is not
-- empty, and the types of every key written here). A waiter that left its details in `info`
-- becomes the holder at once: a fresh fencing token, its own request id and owner, a lease
-- of min(its ttl, claimms) that the waiter confirms by renewing it (`make_holder`), told
-- on `lock .. ':released'` (`announce_grant`; NEXT retries if the grant is never
-- confirmed). A waiter without details (an older client)
-- gets the reservation: the lock stays free for it for reservems, and the message is its
-- request id. Returns nil, or the error of a fencing counter of a foreign type.
local function handoff(lock, queue, expiries, nextkey, reservems, fence, info, claimms)
  local now = now_ms()
  prune_lapsed(queue, expiries, now, info)
  local head = redis.call('ZRANGE', queue, 0, 1)
  if not head[1] then
    redis.call('DEL', nextkey)
    return nil
  end
  local try, ttl, owner, meta, at = waiter_details(info, head[1])
  if not try then
    redis.call('SET', nextkey, head[1], 'PX', reservems)
    redis.call(PUBLISH, lock .. ':released', head[1])
    return nil
  end
  local token, bad = make_holder(lock, fence, head[1], owner, meta, ttl, claimms)
  if bad then return bad end
  redis.call('DEL', nextkey)
  dequeue_waiter(queue, expiries, info, head[1])
  announce_grant(lock .. ':released', head, token, try, at, now)
  return nil
end

-- Lease sets (semaphore permits, readers): a sorted set (request id -> expiry, ms, server
-- clock) and a hash (request id -> fencing token). Both keys always live at least as long
-- as their longest lease.

-- Weighted permits: a grant of n > 1 permits has the request id 'REQ*n' and is n members
-- of the set, the id itself and its siblings 'REQ*n#2' .. 'REQ*n#n', always with one
-- expiry, so the live members count permits. Any other id (every lock, reader or
-- one-permit id) weighs 1, and so does an n out of 2 .. 1000 (a grant's cost grows with n).
local function weight(req)
  local n = tonumber(string.match(req, '%*(%d+)$'))
  if n and n >= 2 and n <= 1000 then return n end
  return 1
end

-- Member j (1 .. weight) of the grant `req`.
local function member(req, j)
  if j == 1 then return req end
  return req .. '#' .. j
end

-- Give the grant `req` and its siblings the expiry `exp` (ms): add them, or with `xx`
-- move only the ones present. In calls of at most 100 members.
local function place(set, exp, req, xx)
  local n = weight(req)
  for first = 1, n, 100 do
    local args = {set}
    if xx then args[2] = 'XX' end
    for j = first, math.min(n, first + 99) do
      args[#args + 1] = exp
      args[#args + 1] = member(req, j)
    end
    redis.call('ZADD', unpack(args))
  end
end

-- Remove the grant `req` and its siblings from the set. Returns 1 if `req` was there.
local function unplace(set, req)
  local had = redis.call('ZREM', set, req)
  local n = weight(req)
  for first = 2, n, 100 do
    local args = {set}
    for j = first, math.min(n, first + 99) do args[#args + 1] = member(req, j) end
    redis.call('ZREM', unpack(args))
  end
  return had
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
  at_least(set, ms)
  at_least(tokens, ms)
end

-- A retry of a request that was already granted: the same grant, or nil.
local function granted(set, tokens, req, now)
  local exp = redis.call('ZSCORE', set, req)
  if exp and tonumber(exp) > now then
    return {1, tonumber(redis.call('HGET', tokens, req)), 1, tonumber(exp) - now}
  end
  return nil
end

-- Add a member (with its siblings, see `weight`) with a lease of ttl ms and a fresh token. Returns the reply, or nil and
-- the error if the counter is of a foreign type (nothing written then).
local function grant(set, tokens, fence, req, ttl, now)
  local token, bad = next_token(fence)
  if bad then return nil, bad end
  place(set, now + ttl, req)
  redis.call('HSET', tokens, req, token)
  keep(set, tokens, ttl)
  return {1, token, 1, ttl}
end

-- Semaphores: permits of `set` may be free (a release, or a waiter ahead left): grant them
-- to the oldest live waiters, in order (at most 16 per call; live leases counted at `now`
-- ms). A waiter that left its details in `info` ("TRY:AT\nTTL\nCAP\n": CAP the capacity N
-- its handle counts against) gets its permits (1, or n for 'REQ*n', see `weight`) while
-- they fit in its N with the live ones, and holds them
-- at once: a fresh fencing token and a lease of min(its ttl, claimms), which it confirms
-- by renewing it, told on `channel` (`announce_grant`). The granting stops at the first waiter that may not have one (no one
-- barges past it), and at the first without details (an older client): then the f-th
-- oldest waiter is named instead (f = `cap`, the releaser's N, minus the live permits),
-- and it takes a permit with a try. Lapsed places are skipped first. The caller checked
-- the types of every key written here. Returns nil, or the error of a fencing counter of
-- a foreign type.
local function grant_waiting_permits(set, tokens, fence, queue, expiries, info, channel, cap, now, claimms)
  if redis.call('ZCARD', queue) == 0 then return nil end
  prune_lapsed(queue, expiries, now, info)
  local live = redis.call('ZCOUNT', set, '(' .. now, '+inf')
  for _ = 1, 16 do
    local head = redis.call('ZRANGE', queue, 0, 1)
    if not head[1] then return nil end
    local try, ttl, wcap, _, at = waiter_details(info, head[1])
    if not try then
      local free = cap - live
      local id = free > 0 and redis.call('ZRANGE', queue, free - 1, free - 1)[1]
      if id then redis.call(PUBLISH, channel, id) end
      return nil
    end
    local w = weight(head[1])
    if live + w > (tonumber(wcap) or cap) then return nil end
    local token, bad = next_token(fence)
    if bad then return bad end
    local lease = math.min(ttl, claimms)
    place(set, now + lease, head[1])
    redis.call('HSET', tokens, head[1], string.format('%.0f', token))
    keep(set, tokens, lease)
    dequeue_waiter(queue, expiries, info, head[1])
    announce_grant(channel, head, token, try, at, now)
    live = live + w
  end
  return nil
end

-- Read-write locks: the writer's lock hash `writer` is free and no reader holds `readers`
-- (the caller checked both, and the types of every key written here): make the oldest
-- live waiting writer the holder, as `handoff` does for a lock. Waiting writers are
-- `order` (request id -> place, µs: arrival order), `writers` (request id -> place
-- expiry, ms: what readers check for writer preference) and `info` (their details). A
-- writer whose place lapsed, or that left no details (an older client), is not granted:
-- lapsed ones are dropped, and at one without details the readers and writers are all
-- told to retry (an empty message), as before. Returns true if a writer was granted, or
-- nil and the error of a fencing counter of a foreign type.
local function grant_waiting_writer(writer, writers, order, info, fence, channel, claimms)
  local now = now_ms()
  for _ = 1, 64 do
    local head = redis.call('ZRANGE', order, 0, 1)
    if not head[1] then return false end
    local exp = redis.call('ZSCORE', writers, head[1])
    if exp and tonumber(exp) > now then
      local try, ttl, owner, meta, at = waiter_details(info, head[1])
      if not try then return false end
      local token, bad = make_holder(writer, fence, head[1], owner, meta, ttl, claimms)
      if bad then return nil, bad end
      dequeue_waiter(order, writers, info, head[1])
      announce_grant(channel, head, token, try, at, now)
      return true
    end
    -- A lapsed place (or one a reader's acquire already dropped from `writers`).
    dequeue_waiter(order, writers, info, head[1])
  end
  return false
end

-- (end of the prelude)
