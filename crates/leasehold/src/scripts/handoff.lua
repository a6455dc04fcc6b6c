-- (shared by release.lua and leave.lua, prepended to them at build time)
-- Hand a free lock to the oldest live waiter: reserve it for reservems and tell it by name.
local function handoff(lock, queue, expiries, nextkey, reservems)
  if redis.call('ZCARD', queue) == 0 then return end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local dead = redis.call('ZRANGEBYSCORE', expiries, '-inf', now_ms, 'LIMIT', 0, 64)
  for _, id in ipairs(dead) do
    redis.call('ZREM', queue, id)
    redis.call('ZREM', expiries, id)
  end
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if head then
    redis.call('SET', nextkey, head, 'PX', reservems)
    redis.call('PUBLISH', lock .. ':released', head)
  else
    redis.call('DEL', nextkey)
  end
end
