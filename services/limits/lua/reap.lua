-- reap.lua: give back up to ARGV[1] reservations whose lease has run out (RELIABILITY B7).
-- KEYS: the lease zset. ARGV: reap_max, record_ttl_ms. Returns how many were reaped.
return reap(KEYS[1], now_us(), tonumber(ARGV[1]), ARGV[2])
