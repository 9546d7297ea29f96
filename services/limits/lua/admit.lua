-- admit.lua: hit.lua for the request rules, then, if they admitted the request, reserve.lua for
-- the token rules, in one call (one round trip per request on the admit path). A request refused
-- by a token rule stays counted under the request rules (seed 000), as the two calls did.
-- KEYS: the lease zset, this reservation's record, the request rules' keys, the token rules' keys.
-- ARGV: hit member id, reservation id, amount, lease_us, record_ttl_ms, reap_max, nreq, ntok,
--       then nreq request-rule triplets, then ntok token-rule triplets.
-- Returns {hit result} or {hit result, reserve result}, each as hit.lua / reserve.lua return it.
local now = now_us()
local nreq, ntok = tonumber(ARGV[7]), tonumber(ARGV[8])
local ok, used, free, fits = check(2, 8, nreq, 1, now, false)
if ok then
  apply(2, 8, nreq, 1, now, fmt(now) .. ':' .. ARGV[1] .. ':1')
  for i = 1, nreq do
    used[i] = used[i] + 1
  end
  free = oldest(2, 8, nreq)
end
local hit = result(ok, now, nreq, used, free, fits)
if not ok or ntok == 0 then
  return {hit}
end
reap(KEYS[1], now, tonumber(ARGV[6]), ARGV[5])
local kb, ab, amount = 2 + nreq, 8 + 3 * nreq, tonumber(ARGV[3])
local tok, tused, tfree, tfits = check(kb, ab, ntok, amount, now, true)
if tok then
  local touched = apply(kb, ab, ntok, amount, now, fmt(now) .. ':' .. ARGV[2] .. ':' .. fmt(amount))
  redis.call('HSET', KEYS[2], 'amt', fmt(amount), 'st', 'held', 'k', cjson.encode(touched))
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[4])), KEYS[2])
  for i = 1, ntok do
    tused[i] = tused[i] + amount
  end
  tfree = oldest(kb, ab, ntok)
end
return {hit, result(tok, now, ntok, tused, tfree, tfits)}
