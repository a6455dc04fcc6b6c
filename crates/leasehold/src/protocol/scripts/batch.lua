-- leasehold batch: acquire, release and extend calls that were ready at the same moment on
-- one connection, run one after another in one script call (all keys on one node; one
-- slot per call on Cluster). Each call runs its own script's body with its own keys and
-- arguments (its own request id) and gets its own reply; the batch has one reply tag.
-- Assembled as: the PUBLISH line, the prelude, each body wrapped as a function of
-- (KEYS, ARGV) whose reply() adds no tag, then this file.
-- ARGV[1] n   then per call i: ARGV[3i-1] kind ('a' acquire, 'r' release, 'e' extend),
--             ARGV[3i] its number of keys, ARGV[3i+1] its number of arguments
-- then every call's arguments in order (without tags); KEYS: every call's keys in order
-- ARGV[#ARGV] reply tag
-- Returns one element per call — its script's reply (a list of integers), or {'!', error}
-- when the call failed (a call fails before its first write, see the prelude: the others
-- are not affected) — then the tag.
local calls = {a = acquire_call, r = release_call, e = extend_call}
local n = tonumber(ARGV[1])
local k, a = 1, 2 + 3 * n
local out = {}
for i = 1, n do
  local kind, nk, na = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local keys, argv = {}, {}
  for j = 1, nk do keys[j] = KEYS[k + j - 1] end
  for j = 1, na do argv[j] = ARGV[a + j - 1] end
  k, a = k + nk, a + na
  local ok, r = pcall(calls[kind], keys, argv)
  if not ok then
    r = {'!', type(r) == 'table' and r.err or tostring(r)}
  elseif type(r) == 'table' and r.err then
    r = {'!', r.err}
  end
  out[i] = r
end
out[n + 1] = tonumber(ARGV[#ARGV])
return out
