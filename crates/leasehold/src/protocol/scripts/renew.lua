-- leasehold renew: extend a batch of leases in one call, each checked on its own.
-- KEYS[i]  lock hash of lease i (all keys of one call must live on one node)
-- ARGV[3i-2] owner id   ARGV[3i-1] request id of the hold   ARGV[3i] ttl (ms)
-- ARGV[#ARGV] reply tag, echoed as the last element of the reply.
-- Returns one code per key: 1 renewed (PTTL >= ttl), 0 expired (or the hold ended),
-- -1 held by another owner; then the tag.
local out = {}
for i, lock in ipairs(KEYS) do
  local owner, req, ttl = ARGV[3 * i - 2], ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  -- A key of a foreign type holds no lease of ours: 0 for it, the others go on.
  local h = redis.pcall('HMGET', lock, 'owner', 'r:' .. req)
  if h.err then
    out[i] = 0
  elseif not h[1] then
    out[i] = 0
  elseif h[1] ~= owner then
    out[i] = -1
  elseif not h[2] then
    out[i] = 0
  else
    if redis.call('PTTL', lock) < ttl then redis.call('PEXPIRE', lock, ttl) end
    out[i] = 1
  end
end
return reply(out)
