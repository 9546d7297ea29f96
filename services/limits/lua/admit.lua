-- admit.lua: hit.lua for the request rules, then, if they admitted the request, reserve.lua for
-- the token rules and then for the $ budget rules (issue 16, under their own subject), in one
-- call: one round trip per request on the admit path, a budget or not. A request refused by a
-- token or budget rule stays counted under the request rules (seed 000), as separate calls did;
-- a budget is not held for a request the token rules refused.
-- KEYS: the lease zset, the token reservation's record, the budget reservation's record, the
--       request rules' keys, the token rules' keys, the budget rules' keys.
-- ARGV: hit member id, token reservation id, token amount, lease_us, record_ttl_ms, reap_max,
--       nreq, ntok, budget reservation id, budget amount, nbud, then nreq request-rule triplets,
--       ntok token-rule triplets, nbud budget-rule triplets.
-- Returns {hit result}, {hit result, token result} or {hit result, token result or {}, budget
-- result}, each as hit.lua / reserve.lua return it.
local now = now_us()
local nreq, ntok, nbud = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[11])
local ok, used, free, fits = check(3, 11, nreq, 1, now, false)
if ok then
  apply(3, 11, nreq, 1, now, fmt(now) .. ':' .. ARGV[1] .. ':1')
  for i = 1, nreq do
    used[i] = used[i] + 1
  end
  free = oldest(3, 11, nreq)
end
local hit = result(ok, now, nreq, used, free, fits)
if not ok or (ntok == 0 and nbud == 0) then
  return {hit}
end
reap(KEYS[1], now, tonumber(ARGV[6]), ARGV[5])

-- Hold `amount` under the n rules from kb/ab (all or nothing), recorded under `rec` for settle.lua.
local function hold(kb, ab, n, amount, id, rec)
  local hok, hused, hfree, hfits = check(kb, ab, n, amount, now, true)
  if hok then
    local touched = apply(kb, ab, n, amount, now, fmt(now) .. ':' .. id .. ':' .. fmt(amount))
    redis.call('HSET', rec, 'amt', fmt(amount), 'st', 'held', 'k', cjson.encode(touched))
    redis.call('PEXPIRE', rec, ARGV[5])
    redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[4])), rec)
    for i = 1, n do
      hused[i] = hused[i] + amount
    end
    hfree = oldest(kb, ab, n)
  end
  return hok, result(hok, now, n, hused, hfree, hfits)
end

local tres = {}
if ntok > 0 then
  local tok
  tok, tres = hold(3 + nreq, 11 + 3 * nreq, ntok, tonumber(ARGV[3]), ARGV[2], KEYS[2])
  if not tok or nbud == 0 then
    return {hit, tres}
  end
end
local _, bres = hold(3 + nreq + ntok, 11 + 3 * (nreq + ntok), nbud, tonumber(ARGV[10]), ARGV[9], KEYS[3])
return {hit, tres, bres}
