-- One call per slot of a batch (brokers/redis_cluster/_scripts.py explains KEYS and ARGV).
local ns = tonumber(ARGV[1])
local nf = tonumber(ARGV[2])
local nt = tonumber(ARGV[3])
local known = {}
for i = 1, nt do known[ARGV[3 + i]] = true end
for i = 1, ns do
  local armed = redis.call('GET', KEYS[i])
  if not armed then return {'NEW'} end
  if not known[armed] then return {'STALE', armed} end
end
local ep = 3 + nt
for i = 1, ns * nf do
  local cur = redis.call('GET', KEYS[ns + i])
  if cur and tonumber(cur) > tonumber(ARGV[ep + 1 + (i - 1) % nf]) then
    return {'FENCED', KEYS[ns + i], cur}
  end
end
for i = 1, ns * nf do
  local epoch = ARGV[ep + 1 + (i - 1) % nf]
  if redis.call('GET', KEYS[ns + i]) ~= epoch then redis.call('SET', KEYS[ns + i], epoch) end
end
local a = ep + 1 + nf
local ne = tonumber(ARGV[a])
a = a + 1
local base = ns + ns * nf
local out = {'OK'}
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
    local r
    local key, last = KEYS[base + e], a + 2 + 2 * n
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
if clean then return {'ALL'} end
return out
