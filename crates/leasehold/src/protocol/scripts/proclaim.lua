-- leasehold proclaim: an election's leader records an event of its leadership (elected, a
-- new value, resigned) in the election's log and announces it to observers.
-- KEYS[1] lock hash (the leadership)   KEYS[2] the leaders' log (stream)
-- ARGV[1] owner id   ARGV[2] request id of the leadership's hold
-- ARGV[3] event: 'elected', 'proclaimed' or 'resigned'   ARGV[4] the leader's value
-- ARGV[5] holder metadata (JSON, with the value) to store as `meta`; '' keeps it
-- ARGV[6] the number of this proclamation within the leadership (1, 2, ...)
-- ARGV[7] the log's lifetime (ms)   ARGV[8] channel to announce on
-- ARGV[#ARGV] reply tag (see the prelude)
-- Returns {1, ms, seq} recorded as log entry 'ms-seq' (a retry of a recorded
-- proclamation, number <= the last recorded, gets that entry's id and records nothing),
-- {0, 0, 0} not held (expired, or this hold ended), {-1, 0, 0} held by another owner.
-- All or nothing (see the prelude): the lock hash is checked by its first read (HMGET),
-- the log by TYPE, before anything is written.
local lock, log = KEYS[1], KEYS[2]
local owner, req = ARGV[1], ARGV[2]
local h, bad = read(lock, 'hash', 'HMGET', lock, 'owner', 'token', 'r:' .. req, 'p:' .. req)
if bad then return bad end
if not h[1] then return reply({0, 0, 0}) end
if h[1] ~= owner then return reply({-1, 0, 0}) end
if not h[3] then return reply({0, 0, 0}) end
bad = foreign_key(log, 'stream')
if bad then return bad end
local function id_reply(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return reply({1, tonumber(ms), tonumber(seq)})
end
-- `p:REQ` = "N ID": the last proclamation recorded for this hold.
if h[4] then
  local n, id = string.match(h[4], '^(%d+) (.*)$')
  if n and tonumber(n) >= tonumber(ARGV[6]) then return id_reply(id) end
end
if ARGV[5] ~= '' then redis.call('HSET', lock, 'meta', ARGV[5]) end
local id = redis.call('XADD', log, 'MAXLEN', '~', 128, '*',
  'event', ARGV[3], 'owner', owner, 'term', h[2], 'value', ARGV[4])
redis.call('HSET', lock, 'p:' .. req, ARGV[6] .. ' ' .. id)
at_least(log, tonumber(ARGV[7]))
redis.call(PUBLISH, ARGV[8], id)
return id_reply(id)
