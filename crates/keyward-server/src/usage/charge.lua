-- One verification's charge, atomically: the same decision as keyward_core::usage::charge.
-- Integers stay below 2^53, so Lua's doubles hold them exactly; they are written with
-- string.format('%d') because tostring would use exponent notation.
--
-- KEYS: 1 own windows, 2 own credits, 3 organisation windows, 4 organisation cap,
--       5 idempotency record
-- ARGV: now, cost, idempotency ttl (ms, 0: none), own window count, organisation window
--       count, then limit and period for each window, then
--       credits: present (0/1), stored remaining, stored refilled_at, refill amount (-1: no
--       refill), start of the current refill period, then
--       cap: present (0/1), cap, stored spent, stored period start, start of the current cap
--       period (-1: all time)
-- Returns: outcome (0 allowed, 1 rate limited, 2 usage exceeded), retry_at, rate present,
--          limit, remaining, reset_at, period, credits present, credits remaining

local function int(x) return string.format('%d', x) end

local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  local saved = redis.call('GET', KEYS[5])
  if saved then
    local reply = {}
    for part in string.gmatch(saved, '[^,]+') do reply[#reply + 1] = tonumber(part) end
    return reply
  end
end

local own_count = tonumber(ARGV[4])
local org_count = tonumber(ARGV[5])
local i = 6
local windows = {}
for w = 1, own_count + org_count do
  local limit = tonumber(ARGV[i])
  local period = tonumber(ARGV[i + 1])
  i = i + 2
  local key = KEYS[1]
  if w > own_count then key = KEYS[3] end
  local start = math.floor(now / period) * period
  local stored = redis.call('HMGET', key, 's' .. period, 'n' .. period)
  local used = 0
  if stored[1] and tonumber(stored[1]) == start then used = tonumber(stored[2]) end
  windows[w] = {key = key, limit = limit, period = period, start = start, used = used}
end

local has_credits = tonumber(ARGV[i]) == 1
local remaining, refilled_at = 0, 0
if has_credits then
  local stored = redis.call('HMGET', KEYS[2], 'r', 't')
  if stored[1] then
    remaining, refilled_at = tonumber(stored[1]), tonumber(stored[2])
  else
    remaining, refilled_at = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  end
  local refill_amount, refill_start = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  if refill_amount >= 0 and refill_start > refilled_at then
    remaining, refilled_at = refill_amount, refill_start
  end
end
i = i + 5

local has_cap = tonumber(ARGV[i]) == 1
local cap, spent, period_start = 0, 0, 0
if has_cap then
  cap = tonumber(ARGV[i + 1])
  local stored = redis.call('HMGET', KEYS[4], 's', 'p')
  if stored[1] then
    spent, period_start = tonumber(stored[1]), tonumber(stored[2])
  else
    spent, period_start = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  end
  local cap_start = tonumber(ARGV[i + 4])
  if cap_start >= 0 and cap_start > period_start then
    spent, period_start = 0, cap_start
  end
end

local credits_flag = 0
if has_credits then credits_flag = 1 end

-- The tightest window: least remaining, then latest reset, then first.
local function tightest(extra)
  local best = nil
  for _, w in ipairs(windows) do
    local left = math.max(0, w.limit - (w.used + extra))
    local reset = w.start + w.period
    if best == nil or left < best[2] or (left == best[2] and reset > best[3]) then
      best = {w.limit, left, reset, w.period}
    end
  end
  return best
end

-- Full windows: retry once all have reset; report the one that resets last.
local full = nil
for _, w in ipairs(windows) do
  if w.used + 1 > w.limit then
    local reset = w.start + w.period
    if full == nil or reset >= full[3] then full = {w.limit, 0, reset, w.period} end
  end
end
if full then
  return {1, full[3], 1, full[1], 0, full[3], full[4], credits_flag, remaining}
end

if (has_credits and remaining < cost) or (has_cap and spent + cost > cap) then
  local rate = tightest(0)
  if rate then
    return {2, 0, 1, rate[1], rate[2], rate[3], rate[4], credits_flag, remaining}
  end
  return {2, 0, 0, 0, 0, 0, 0, credits_flag, remaining}
end

local longest = {}
for _, w in ipairs(windows) do
  redis.call('HSET', w.key, 's' .. w.period, int(w.start), 'n' .. w.period, int(w.used + 1))
  longest[w.key] = math.max(longest[w.key] or 0, w.period)
end
for key, period in pairs(longest) do redis.call('PEXPIRE', key, int(period)) end
if has_credits then
  remaining = remaining - cost
  redis.call('HSET', KEYS[2], 'r', int(remaining), 't', int(refilled_at))
end
if has_cap then
  redis.call('HSET', KEYS[4], 's', int(spent + cost), 'p', int(period_start))
end

local reply
local rate = tightest(1)
if rate then
  reply = {0, 0, 1, rate[1], rate[2], rate[3], rate[4], credits_flag, remaining}
else
  reply = {0, 0, 0, 0, 0, 0, 0, credits_flag, remaining}
end
if ttl > 0 then
  local parts = {}
  for n, value in ipairs(reply) do parts[n] = int(value) end
  redis.call('SET', KEYS[5], table.concat(parts, ','), 'PX', int(ttl))
end
return reply
