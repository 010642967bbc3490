-- bench/uas.lua: a Lua UAS for the load benches — one sip.endpoint answering MESSAGE with 200
-- from a handler, run as its own process so its CPU and RSS can be read from /proc/PID.
--
-- usage: lua5.4 bench/uas.lua [--listen udp:127.0.0.1:PORT]... [--t1 MS] [--max-txns N]
-- OPTIONS gets a 200 whose X-Stats header carries the endpoint's counters (server
-- transactions, connections, ...) and the Lua heap in KB, so a bench can see what is live;
-- with an X-Collect header, after a full garbage collection.
-- Runs until killed (SIGTERM); prints "ready" on stdout once it listens.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"

local listen, t1, max_txns = {}, nil, nil
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--listen" then
    listen[#listen + 1] = v
  elseif a == "--t1" then
    t1 = tonumber(v)
  elseif a == "--max-txns" then
    max_txns = tonumber(v)
  else
    io.stderr:write("bench/uas.lua: unknown argument ", a, "\n")
    os.exit(2)
  end
  i = i + 2
end
if #listen == 0 then
  listen = { "udp:127.0.0.1:0" }
end

local ep = assert(sip.endpoint { listen = listen, t1 = t1, max_transactions = max_txns })
ep:on("MESSAGE", function(req)
  req:reply(200)
end)
ep:on("OPTIONS", function(req)
  if req:header("X-Collect") then
    -- An idle heap is never collected (the GC steps on allocation); twice, as userdata with
    -- __gc (messages) are only freed by the cycle after the one that finalizes them.
    collectgarbage("collect")
    collectgarbage("collect")
  end
  local s = ep:stats()
  local keys = {}
  for k in pairs(s) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "=" .. tostring(s[k])
  end
  parts[#parts + 1] = "lua_kb=" .. math.floor(collectgarbage("count"))
  req:reply(200, nil, { headers = { ["X-Stats"] = table.concat(parts, " ") } })
end)
io.stdout:write("ready ", table.concat(ep:addresses(), " "), "\n")
io.stdout:flush()
ep:run()
