-- leasehold member renew: extend a batch of leases of lease sets, each checked on its own.
-- KEYS[2i-1] lease set (zset) of lease i   KEYS[2i] its tokens (hash)
-- ARGV[2i-1] request id   ARGV[2i] ttl (ms)   ARGV[#ARGV] reply tag
-- Returns one code per lease: 1 renewed (it lasts at least ttl from now), 0 expired or
-- released; then the tag. Used by extend (one lease) and by the watchdog (batches).
local now = now_ms()
local out = {}
for i = 1, #KEYS / 2 do
  local set, tokens = KEYS[2 * i - 1], KEYS[2 * i]
  local req, ttl = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  -- A set or tokens key of a foreign type holds no lease of ours: 0 for it, the others
  -- go on (and nothing is written to it).
  local exp = redis.pcall('ZSCORE', set, req)
  if type(exp) == 'table' and exp.err then exp = nil end
  local t = exp and redis.call('TYPE', tokens).ok
  if t and t ~= 'hash' and t ~= 'none' then exp = nil end
  if exp and tonumber(exp) > now then
    -- A weighted grant's siblings move with it (see `weight`).
    if tonumber(exp) < now + ttl then place(set, now + ttl, req, true) end
    keep(set, tokens, ttl)
    out[i] = 1
  else
    out[i] = 0
  end
end
return reply(out)
