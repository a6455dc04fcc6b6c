-- leasehold member release: end one lease of a lease set (a permit or a reader).
-- KEYS[1] lease set (zset)   KEYS[2] tokens (hash)
-- KEYS[3], KEYS[4] (permits only) the semaphore's waiters and their place expiries
-- ARGV[1] request id   ARGV[2] channel to announce on   ARGV[3] permits: the capacity N;
-- readers: '1' = announce every release, '0' = only when the set becomes empty
-- ARGV[4] reply tag
-- Returns {1} released, {0} not held (expired, or already released).
-- A permit's release names the waiter the freed permit goes to (see name_next_waiter in
-- the prelude); a reader's release is announced to every waiter.
-- All or nothing (see the prelude): the set is checked by ZSCORE, a semaphore's queue by
-- ZCARD, before anything is written; the tokens hash (and the places' expiries when
-- someone waits) by TYPE.
local permits = #KEYS >= 4
local set, tokens, req = KEYS[1], KEYS[2], ARGV[1]
local exp, bad = read(set, 'zset', 'ZSCORE', set, req)
if bad then return bad end
local waiting = 0
if permits then
  waiting, bad = read(KEYS[3], 'zset', 'ZCARD', KEYS[3])
  if bad then return bad end
end
if waiting > 0 then
  bad = foreign_key(tokens, 'hash', KEYS[4], 'zset')
else
  bad = foreign_key(tokens, 'hash')
end
if bad then return bad end
local now = now_ms()
if not exp then return reply({0}) end
redis.call('ZREM', set, req)
redis.call('HDEL', tokens, req)
if tonumber(exp) <= now then return reply({0}) end
if permits then
  if waiting > 0 then name_next_waiter(set, KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[3]), now) end
elseif ARGV[3] == '1' or redis.call('ZCOUNT', set, '(' .. now, '+inf') == 0 then
  redis.call(PUBLISH, ARGV[2], '')
end
return reply({1})
