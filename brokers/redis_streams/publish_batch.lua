-- The relay's whole batch in one atomic call (see brokers/redis_streams/_publish.py).
-- KEYS: incarnation key, one fence key per fence, one stream per entry.
-- ARGV: candidate token, expected token, fence count, fence epochs..., entry count,
--       then per entry: maxlen ('' for none), order key ('' for none), field count, name, value, ...
local inc = redis.call('GET', KEYS[1])
if not inc then
  redis.call('SET', KEYS[1], ARGV[1])
  inc = ARGV[1]
end
if inc ~= ARGV[2] then
  return {inc, 'INCARNATION'}
end
local nf = tonumber(ARGV[3])
for i = 1, nf do
  local cur = redis.call('GET', KEYS[1 + i])
  if cur and tonumber(cur) > tonumber(ARGV[3 + i]) then
    return {inc, 'FENCED', KEYS[1 + i], cur}
  end
end
for i = 1, nf do
  redis.call('SET', KEYS[1 + i], ARGV[3 + i])
end
local a = 4 + nf
local ne = tonumber(ARGV[a])
a = a + 1
local out = {inc, 'OK'}
local failed = {}
local clean = true
local halted = false
for e = 1, ne do
  local maxlen = ARGV[a]
  local okey = ARGV[a + 1]
  local n = tonumber(ARGV[a + 2])
  if halted or (okey ~= '' and failed[okey]) then
    out[#out + 1] = '-'
    clean = false
  else
    -- The fields straight from ARGV (unpack with a range): no per-entry table.
    local r
    local key, last = KEYS[1 + nf + e], a + 2 + 2 * n
    if maxlen ~= '' then
      r = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, a + 3, last))
    else
      r = redis.pcall('XADD', key, '*', unpack(ARGV, a + 3, last))
    end
    if type(r) == 'table' and r.err then
      out[#out + 1] = '!' .. r.err
      clean = false
      if okey ~= '' then failed[okey] = true end
      local head = string.sub(r.err, 1, 12)
      for _, p in ipairs({'OOM', 'LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'NOREPLICAS'}) do
        if string.sub(head, 1, #p) == p then halted = true end
      end
    else
      out[#out + 1] = r
    end
  end
  a = a + 3 + 2 * n
end
if clean then
  return {inc, 'ALL'}
end
return out
