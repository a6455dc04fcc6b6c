-- leasehold extend: make the lease last at least ttl from now, checked against owner and request id.
-- KEYS[1] lock hash
-- ARGV[1] owner id    ARGV[2] request id of the hold    ARGV[3] ttl (ms)
-- Returns {1, pttl} extended (pttl >= ttl), {0, 0} not held: expired, {-1, 0} held by another owner.
-- ARGV[#ARGV] reply tag (see the prelude).
-- All or nothing (see the prelude): HEXISTS checks the lock hash before any write.
local lock = KEYS[1]
local owner, reqfield, ttl = ARGV[1], 'r:' .. ARGV[2], tonumber(ARGV[3])

local held, bad = read(lock, 'hash', 'HEXISTS', lock, reqfield)
if bad then return bad end
if held == 0 then
  local holder = redis.call('HGET', lock, 'owner')
  if holder and holder ~= owner then return reply({-1, 0}) end
  return reply({0, 0})
end

local pttl = redis.call('PTTL', lock)
if pttl < ttl then
  redis.call('PEXPIRE', lock, ttl)
  pttl = ttl
end
return reply({1, pttl})
