-- common.lua: helpers every limiter script starts with (redis.py prepends this file to each one).
--
-- One clock: Redis TIME, in microseconds, for sliding windows and leases, so replicas with
-- skewed clocks still agree (RELIABILITY C2; GitHub's sharded limiter). Calendar periods are
-- not timed here: the caller names the period in the counter's key.
--
-- Rules arrive as KEYS[kbase + i] and ARGV[abase + 3i - 2 .. abase + 3i]:
--   kind ('w' sliding window | 'p' calendar period counter), limit (> 0),
--   param (window length in microseconds | the counter's time to live in seconds).
-- A window member is "<time_us>:<id>:<amount>"; a hit's amount is 1.
-- Written for a single Redis (or a primary with replicas): scripts touch keys recorded in a
-- reservation, which Redis Cluster would refuse.

-- Lua turns numbers into "%.14g" strings in redis.call: 16-digit microsecond times need %d.
local function fmt(x)
  return string.format('%d', x)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function member_amount(m)
  return tonumber(string.match(m, ':(%d+)$')) or 1
end

local function window_sum(key)
  local total = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    total = total + member_amount(m)
  end
  return total
end

-- When `amount` more fits under `limit`: the time the entry that brings the sum low enough leaves.
local function window_free_at(key, used, limit, amount, window, now, weighted)
  if amount > limit then
    return now + window
  end
  local excess = used + amount - limit
  if not weighted then
    local e = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')
    if e[2] then
      return tonumber(e[2]) + window
    end
    return now + window
  end
  local freed = 0
  local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    freed = freed + member_amount(all[i])
    if freed >= excess then
      return tonumber(all[i + 1]) + window
    end
  end
  return now + window
end

local function rule_at(kbase, abase, i)
  local a = abase + 3 * (i - 1)
  return KEYS[kbase + i], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
end

-- Check every rule for room for `amount`. Returns ok, used[i], free_at[i], fits[i].
-- An entry counts while now - time < window: ZREMRANGEBYSCORE's bound is inclusive.
local function check(kbase, abase, n, amount, now, weighted)
  local ok, used, free, fits = true, {}, {}, {}
  for i = 1, n do
    local key, kind, limit, param = rule_at(kbase, abase, i)
    local u, f = 0, 0
    if kind == 'w' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - param))
      if weighted then
        u = window_sum(key)
      else
        u = redis.call('ZCARD', key)
      end
      if u + amount > limit then
        ok = false
        f = window_free_at(key, u, limit, amount, param, now, weighted)
      end
    else
      u = tonumber(redis.call('GET', key) or '0')
      if u + amount > limit then
        ok = false
      end
    end
    used[i], free[i], fits[i] = u, f, u + amount <= limit
  end
  return ok, used, free, fits
end

-- Count `amount` under every rule (only after check() said yes: all or nothing, RELIABILITY C1).
-- Returns what was touched, for a reservation's record.
local function apply(kbase, abase, n, amount, now, member)
  local touched = {}
  for i = 1, n do
    local key, kind, _, param = rule_at(kbase, abase, i)
    if kind == 'w' then
      redis.call('ZADD', key, fmt(now), member)
      redis.call('PEXPIRE', key, fmt(math.ceil(param / 1000) + 1000))
      touched[i] = {'w', key, member}
    else
      redis.call('INCRBY', key, fmt(amount))
      redis.call('EXPIRE', key, fmt(param))
      touched[i] = {'p', key}
    end
  end
  return touched
end

-- For an admitted call: when each window's oldest entry leaves (0 for counters: the caller knows).
local function oldest(kbase, abase, n)
  local free = {}
  for i = 1, n do
    local key, kind, _, param = rule_at(kbase, abase, i)
    free[i] = 0
    if kind == 'w' then
      local e = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if e[2] then
        free[i] = tonumber(e[2]) + param
      end
    end
  end
  return free
end

-- {ok, now_us, used_1, free_at_1, fits_1, ...}: fits_i says whether rule i had room.
local function result(ok, now, n, used, free, fits)
  local out = {ok and 1 or 0, now}
  for i = 1, n do
    out[#out + 1] = used[i]
    out[#out + 1] = free[i]
    out[#out + 1] = (ok or fits[i]) and 1 or 0
  end
  return out
end

-- Move one reservation's hold `held` to `actual`: counters by (actual - held), never below 0;
-- window entries re-added with the new amount at their original time (when still in the window).
local function move(rec, held, actual, windows)
  local parts = cjson.decode(redis.call('HGET', rec, 'k') or '[]')
  for _, p in ipairs(parts) do
    if p[1] == 'p' then
      if redis.call('EXISTS', p[2]) == 1 and actual ~= held then
        if redis.call('INCRBY', p[2], fmt(actual - held)) < 0 then
          redis.call('SET', p[2], '0', 'KEEPTTL')
        end
      end
    elseif windows then
      local score = redis.call('ZSCORE', p[2], p[3])
      if score then
        redis.call('ZREM', p[2], p[3])
        if actual > 0 then
          redis.call('ZADD', p[2], score, (string.gsub(p[3], ':%d+$', ':' .. fmt(actual))))
        end
      end
    end
  end
end

-- RELIABILITY B7: reservations whose lease ran out (their gateway died) give their hold back.
-- The record stays as a tombstone, so a late settle still charges its real usage exactly once.
local function reap(leases, now, max, ttl_ms)
  local recs = redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(now), 'LIMIT', 0, max)
  for _, rec in ipairs(recs) do
    if redis.call('HGET', rec, 'st') == 'held' then
      move(rec, tonumber(redis.call('HGET', rec, 'amt')), 0, true)
      redis.call('HSET', rec, 'st', 'reaped')
      redis.call('PEXPIRE', rec, ttl_ms)
    end
    redis.call('ZREM', leases, rec)
  end
  return #recs
end
