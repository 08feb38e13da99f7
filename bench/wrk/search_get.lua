-- 200 queries x 50 users, GET /api/v1/search?q=...; each connection walks the
-- key set from its own offset so every key is asked for.
local queries = {}
for i = 1, 200 do queries[i] = "query+number+" .. i end
local counter = 0
local thread_offset = 0

function setup(thread)
  thread:set("thread_offset", math.random(0, 9999))
end

function init(args)
  counter = thread_offset or 0
end

request = function()
  counter = counter + 1
  local q = queries[(counter % 200) + 1]
  local user = "user-" .. (math.floor(counter / 200) % 50)
  return wrk.format("GET", "/api/v1/search?q=" .. q, { ["x-user-id"] = user })
end
