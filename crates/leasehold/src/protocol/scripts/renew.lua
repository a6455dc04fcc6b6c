-- leasehold renew: extend a batch of leases in one call, each checked on its own.
-- KEYS[i]  lock hash of lease i (all keys of one call must live on one node)
-- ARGV[3i-2] owner id   ARGV[3i-1] request id of the hold   ARGV[3i] ttl (ms)
-- ARGV[#ARGV] reply tag, echoed as the last element of the reply.
-- Returns one code per key: 1 renewed (PTTL >= ttl), 0 expired (or the hold ended),
-- -1 held by another owner; then the tag.
-- Per lease: HEXISTS of the hold's field (a request id is held by one owner only, so the
-- field alone proves the hold) and, on Redis 7 and later, one PEXPIRE … GT; the owner is
-- read only to tell "held by another" from "expired".
local out = {}
for i, lock in ipairs(KEYS) do
  local owner, req, ttl = ARGV[3 * i - 2], ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  -- A key of a foreign type holds no lease of ours: 0 for it, the others go on.
  local held = redis.pcall('HEXISTS', lock, 'r:' .. req)
  if held == 1 then
    at_least(lock, ttl)
    out[i] = 1
  elseif type(held) == 'table' then
    out[i] = 0
  else
    local holder = redis.call('HGET', lock, 'owner')
    if holder and holder ~= owner then out[i] = -1 else out[i] = 0 end
  end
end
return reply(out)
