-- settle.lua: finish a reservation at most once: replace its hold with `actual` (0 = release).
-- KEYS: the lease zset, the reservation's record. ARGV: actual.
-- A missing record (already settled or released) is a no-op; a reaped one only charges `actual`,
-- its hold having gone back already. Returns 1 when something was done, else 0.
local st = redis.call('HGET', KEYS[2], 'st')
if not st then
  return 0
end
local actual = tonumber(ARGV[1])
if st == 'held' then
  move(KEYS[2], tonumber(redis.call('HGET', KEYS[2], 'amt')), actual, true)
else
  move(KEYS[2], 0, actual, false)
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
return 1
