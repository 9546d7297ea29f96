-- hit.lua: count one request under every rule if all admit it, else nothing; or only look (peek).
-- KEYS: one per rule. ARGV: mode ('hit' | 'peek'), a unique member id, n, then n rule triplets.
-- Returns {ok, now_us, then used, free_at, fits for each rule}.
local now = now_us()
local mode, n = ARGV[1], tonumber(ARGV[3])
-- A hit counts members (O(1) ZCARD); a peek sums amounts, so token windows report tokens.
local ok, used, free, fits = check(0, 3, n, 1, now, mode ~= 'hit')
if ok then
  if mode == 'hit' then
    apply(0, 3, n, 1, now, fmt(now) .. ':' .. ARGV[2] .. ':1')
    for i = 1, n do
      used[i] = used[i] + 1
    end
  end
  free = oldest(0, 3, n)
end
return result(ok, now, n, used, free, fits)
