-- leasehold inspect: read a lock's state without taking it (changes nothing).
-- KEYS[1] lock hash   KEYS[2] fencing counter   KEYS[3] waiter expiries
-- Returns {owner, token, count, meta, pttl, live waiters, last token}; '' for what is absent.
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'count', 'meta')
local now = now_ms()
return {
  h[1] or '', h[2] or '', h[3] or '', h[4] or '',
  redis.call('PTTL', KEYS[1]),
  redis.call('ZCOUNT', KEYS[3], now, '+inf'),
  redis.call('GET', KEYS[2]) or ''
}
