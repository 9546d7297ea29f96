-- reserve.lua: hold `amount` tokens under every rule if all have room (RELIABILITY C3), after
-- reaping expired leases (B7).
-- KEYS: the lease zset, this reservation's record, then one per rule.
-- ARGV: reservation id, amount, lease_us, record_ttl_ms, reap_max, n, then n rule triplets.
-- The record (hash: amt, st = held | reaped, k = JSON of what was touched) is what settle.lua
-- and the reaper undo; the lease zset scores records by lease end on Redis's clock.
-- Returns {ok, now_us, then used, free_at, fits for each rule}.
local now = now_us()
reap(KEYS[1], now, tonumber(ARGV[5]), ARGV[4])
local amount, n = tonumber(ARGV[2]), tonumber(ARGV[6])
local ok, used, free, fits = check(2, 6, n, amount, now, true)
if ok then
  local touched = apply(2, 6, n, amount, now, fmt(now) .. ':' .. ARGV[1] .. ':' .. fmt(amount))
  redis.call('HSET', KEYS[2], 'amt', fmt(amount), 'st', 'held', 'k', cjson.encode(touched))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[3])), KEYS[2])
  for i = 1, n do
    used[i] = used[i] + amount
  end
  free = oldest(2, 6, n)
end
return result(ok, now, n, used, free, fits)
