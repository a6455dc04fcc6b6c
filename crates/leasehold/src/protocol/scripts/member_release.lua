-- leasehold member release: end one lease of a lease set (a permit, the n permits of a
-- weighted grant, or a reader).
-- KEYS[1] lease set (zset)   KEYS[2] tokens (hash)
-- KEYS[3] .. KEYS[6] (permits only) the semaphore's waiters, their place expiries, the
-- fencing counter and the waiters' details
-- ARGV[1] request id   ARGV[2] channel to announce on   ARGV[3] permits: the capacity N;
-- readers: '1' = announce every release, '0' = only when the set becomes empty
-- ARGV[4] (permits only) claim window (ms): the lease of a waiter granted a permit here
-- ARGV[#ARGV] reply tag
-- Returns {1} released, {0} not held (expired, or already released).
-- A permit's release grants the freed permits to the oldest live waiters (see
-- grant_waiting_permits in the prelude); a reader's release is announced to every waiter.
-- All or nothing (see the prelude): the set is checked by ZSCORE, a semaphore's queue by
-- ZCARD, before anything is written; the tokens hash (and, when someone waits, the places'
-- expiries, the counter and the details) by TYPE.
local permits = #KEYS >= 6
local set, tokens, req = KEYS[1], KEYS[2], ARGV[1]
local exp, bad = read(set, 'zset', 'ZSCORE', set, req)
if bad then return bad end
local waiting = 0
if permits then
  waiting, bad = read(KEYS[3], 'zset', 'ZCARD', KEYS[3])
  if bad then return bad end
end
if waiting > 0 then
  bad = foreign_key(tokens, 'hash', KEYS[4], 'zset', KEYS[5], 'string', KEYS[6], 'hash')
else
  bad = foreign_key(tokens, 'hash')
end
if bad then return bad end
local now = now_ms()
if not exp then return reply({0}) end
unplace(set, req)
redis.call('HDEL', tokens, req)
if tonumber(exp) <= now then return reply({0}) end
if permits then
  if waiting > 0 then
    bad = grant_waiting_permits(set, tokens, KEYS[5], KEYS[3], KEYS[4], KEYS[6], ARGV[2],
      tonumber(ARGV[3]), now, tonumber(ARGV[4]))
    if bad then return bad end
  end
elseif ARGV[3] == '1' or redis.call('ZCOUNT', set, '(' .. now, '+inf') == 0 then
  redis.call(PUBLISH, ARGV[2], '')
end
return reply({1})
