-- Search load for bench/compare.sh. Run wrk with one thread (-t1) so that one
-- counter walks the key set in order:
--
--   wrk -t1 -c64 -d10s -s bench/wrk/search.lua URL -- METHOD KEYS TAG
--
-- METHOD  GET  (GET /api/v1/search?q=..., user in x-user-id)
--         POST (POST /api/v1/search {"query": ..., "user_id": ...})
-- KEYS    set    the 10,000 keys of 200 queries x 50 users, in order, so
--                that any 10,000 consecutive requests ask for every key once
--         unique a new query on every request ("miss TAG N"): the miss path
-- TAG     makes unique keys unique across runs (default "run")
--
-- A warm-up pass is a run of the "set" walk that completed at least 10,000 +
-- connections requests: then every key was answered at least once (wrk's
-- thread:stop() does not end a run early, so compare.sh checks the count).
--
-- At the end it prints one line for the script to read:
--   RESULT requests=N duration_us=D p50_us=X p99_us=Y errors=E non2xx=S

local method, keys, tag = "GET", "set", "run"
local counter = 0
local queries = {}
for i = 1, 200 do queries[i] = "query number " .. i end

function init(args)
  method = args[1] or method
  keys = args[2] or keys
  tag = args[3] or tag
end

request = function()
  local q, user
  if keys == "unique" then
    q = "miss " .. tag .. " " .. counter
    user = "user-" .. (counter % 50)
  else
    local i = counter % 10000
    q = queries[(i % 200) + 1]
    user = "user-" .. math.floor(i / 200)
  end
  counter = counter + 1
  if method == "POST" then
    local body = '{"query":"' .. q .. '","user_id":"' .. user .. '"}'
    return wrk.format("POST", "/api/v1/search", { ["content-type"] = "application/json" }, body)
  end
  local encoded = string.gsub(q, " ", "+")
  return wrk.format("GET", "/api/v1/search?q=" .. encoded, { ["x-user-id"] = user })
end

-- No response() function: wrk then skips handing headers and bodies to Lua,
-- which keeps the load generator cheap.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
