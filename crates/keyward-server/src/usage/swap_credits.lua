-- Replaces a key's balance if it is still what the caller read (compare and set), so that a
-- change through the API never loses a verification's charge made meanwhile.
-- KEYS: 1 credits. ARGV: expected remaining ('' when absent), expected refilled_at, new
-- remaining ('' to delete), new refilled_at. Returns 1 when swapped, 0 when it changed.
local stored = redis.call('HMGET', KEYS[1], 'r', 't')
local expected_remaining, expected_at = ARGV[1], ARGV[2]
if expected_remaining == '' then
  if stored[1] then return 0 end
elseif stored[1] ~= expected_remaining or stored[2] ~= expected_at then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'r', ARGV[3], 't', ARGV[4])
end
return 1
