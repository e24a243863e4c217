-- Pushes run ids onto a queue's list, up to the queue's window.
--
-- KEYS[1]  the lane's list ({prefix}:queue:{environment}:{name})
-- ARGV[1]  the window: the most ids the list may hold
-- ARGV[2…] run ids, oldest first
--
-- Returns how many of the ids were pushed (the first ones); the caller
-- leaves the rest to Postgres, which pushes them as the list drains.
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local count = math.min(room, #ARGV - 1)
if count <= 0 then
  return 0
end
-- RPUSH in chunks: Lua's unpack() has a limit on the number of values.
local chunk = 1000
for first = 2, count + 1, chunk do
  local last = math.min(first + chunk - 1, count + 1)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, first, last))
end
return count
