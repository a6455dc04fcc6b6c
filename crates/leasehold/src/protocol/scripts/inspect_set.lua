-- leasehold inspect of a lease set (semaphore permits, read-write lock readers): read its
-- live members without taking anything (changes nothing).
-- KEYS[1] set (zset: request id -> expiry ms)   KEYS[2] tokens (hash: request id -> token)
-- KEYS[3] fencing counter
-- ARGV[1] the most members to return
-- Returns {last token, live members (permits), then per grant (earliest expiry first): request
-- id ('REQ*n' for n permits), ms left, token}, all as text; '' for what is absent.
local now = now_ms()
local out = {
  redis.call('GET', KEYS[3]) or '',
  tostring(redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'))
}
-- A weighted grant is listed once, by its request id (its siblings contain '#'): read on
-- in pages until ARGV[1] grants are listed or the live members end.
local want, offset, listed = tonumber(ARGV[1]), 0, 0
while listed < want do
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', offset, want)
  if #live == 0 then break end
  offset = offset + #live / 2
  for i = 1, #live, 2 do
    if listed < want and not string.find(live[i], '#', 1, true) then
      out[#out + 1] = live[i]
      out[#out + 1] = string.format('%.0f', tonumber(live[i + 1]) - now)
      out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
      listed = listed + 1
    end
  end
end
return out
