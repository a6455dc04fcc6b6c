-- leasehold observe (read-only): an election's leader now, and its log after a cursor.
-- KEYS[1] lock hash (the leadership)   KEYS[2] the leaders' log (stream)
-- ARGV[1] cursor: the id of the last entry already seen, or '' for none
-- ARGV[2] the most entries to return
-- Returns {owner, token, meta, pttl, oldest id, newest id, then per entry after the cursor
-- (oldest first): id, event, owner, term, value}, all as text; '' for what is absent (no
-- holder, an empty or absent log). With no cursor, no entries are returned.
local lock, log = KEYS[1], KEYS[2]
local h = redis.call('HMGET', lock, 'owner', 'token', 'meta')
local out = {h[1] or '', h[2] or '', h[3] or '', tostring(redis.call('PTTL', lock))}
local t = redis.call('TYPE', log).ok
if t ~= 'stream' then
  if t ~= 'none' then return redis.error_reply('WRONGTYPE ' .. log .. ' is not a stream') end
  out[5], out[6] = '', ''
  return out
end
local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
local newest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
out[5], out[6] = oldest and oldest[1] or '', newest and newest[1] or ''
if ARGV[1] ~= '' then
  for _, e in ipairs(redis.call('XRANGE', log, '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))) do
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    out[#out + 1] = e[1]
    out[#out + 1] = f.event or ''
    out[#out + 1] = f.owner or ''
    out[#out + 1] = f.term or ''
    out[#out + 1] = f.value or ''
  end
end
return out
