-- bench/ws.lua: MESSAGE transactions through `luasip serve` with the client side over UDP,
-- TCP and WebSocket (ws:) in the same run: a Lua UAC -> serve -> a Lua UAS on UDP. Prints
-- transactions per second and serve's CPU-µs per transaction (utime+stime of its process
-- group, from /proc) for each.
--
-- usage: lua5.4 bench/ws.lua [--messages N] [--window W]
--   --messages N  MESSAGE transactions per transport (default 5000)
--   --window W    transactions in flight at once (default 50)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local socket = require "socket"
local peer = require "peer"

local opts = { messages = 5000, window = 50 }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(%w+)$")
    assert(name and opts[name], "bench/ws.lua: unknown argument " .. arg[i])
    opts[name] = assert(tonumber(arg[i + 1]), "--" .. name .. " needs a number")
    i = i + 2
  end
end

local TICK = 100   -- USER_HZ: /proc's CPU times are in these

local function group_cpu(pgid)
  local total = 0
  for pid in peer.sh("ls /proc"):gmatch("%d+") do
    local stat = peer.slurp("/proc/" .. pid .. "/stat")
    local rest = stat and stat:match("%) (.*)$")
    if rest then
      local f = {}
      for w in rest:gmatch("%S+") do f[#f + 1] = w end
      if tonumber(f[3]) == pgid then
        total = total + (tonumber(f[12]) + tonumber(f[13])) / TICK
      end
    end
  end
  return total
end

local function tcp_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function run_loop(cond, seconds)
  local deadline = socket.gettime() + seconds
  while not cond() and socket.gettime() < deadline do
    sip.sched.loop:step(10)
  end
  return cond()
end

local uas = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
uas:on("MESSAGE", function(req) req:reply(200) end)
local uac = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, log = os.getenv("WS_BENCH_DEBUG") and "debug" or nil })
local to = "sip:bob@" .. uas:address("udp")

local function drive(target, n)
  local sent, done, ok = 0, 0, 0
  local function worker()
    while sent < n do
      sent = sent + 1
      local res = uac:message(to, "bench", { target = target })
      done = done + 1
      if res and res.status == 200 then ok = ok + 1 elseif os.getenv("WS_BENCH_DEBUG") then print("failed", res and res.status or "nil", res and res.reason); if res and not FAILED_SHOWN then FAILED_SHOWN = true; print(tostring(res)) end end
    end
  end
  for _ = 1, opts.window do sip.spawn(worker) end
  run_loop(function() return done >= n end, 600)
  return ok
end

local port, wsport = tcp_port(), tcp_port()
local p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--quiet", "--no-auth",
  "--trust", "127.0.0.1/32", "--rate-limit", "0", "--store", "memory",
  "--control", os.tmpname() .. ".ctl", "--quiet",
  "--listen", "udp:127.0.0.1:" .. port, "--listen", "tcp:127.0.0.1:" .. port,
  "--listen", "ws:127.0.0.1:" .. wsport }
assert(run_loop(function()
  local s = socket.tcp()
  local up = s:connect("127.0.0.1", wsport)
  s:close()
  return up
end, 10), "serve did not start")

print(("MESSAGE through serve: %d transactions per transport (window %d), Lua UAC -> serve -> " ..
  "Lua UAS over UDP"):format(opts.messages, opts.window))
print(("%-6s %8s %8s %12s %12s"):format("client", "ok", "seconds", "trans/s", "CPU-µs/trans"))
for _, t in ipairs {
  { "udp", "sip:127.0.0.1:" .. port },
  { "tcp", "sip:127.0.0.1:" .. port .. ";transport=tcp" },
  { "ws", "sip:127.0.0.1:" .. wsport .. ";transport=ws" },
} do
  drive(t[2], 200)   -- connections up, caches warm
  local c0, t0 = group_cpu(p.pid), socket.gettime()
  local ok = drive(t[2], opts.messages)
  local c1, t1 = group_cpu(p.pid), socket.gettime()
  print(("%-6s %8d %8.2f %12.0f %12.1f"):format(t[1], ok, t1 - t0, opts.messages / (t1 - t0),
    (c1 - c0) * 1e6 / opts.messages))
end
os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
peer.wait(p, 5)
if os.getenv("WS_BENCH_DEBUG") then io.write(p.output or "") end
peer.clean(p)
uac:close()
uas:close()
