-- Take the lease if it is free or already ours; PX renews it atomically.
-- KEYS: the lease key. ARGV: owner, ttl in ms. Returns 1 when held.
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
