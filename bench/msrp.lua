-- bench/msrp.lua: MSRP throughput (MB/s) and messages per second between two endpoints
-- over TCP and TLS on loopback, the receiver in a process of its own (bench/msrp.lua
-- --receiver CERT KEY).
--
-- usage: lua5.4 bench/msrp.lua [--big N] [--small N] [--window W]
--   --big N     1 MB messages sent one after the other, each waiting for its 200s (default 50)
--   --small N   100-byte messages (default 5000), one at a time, then W at a time
--   --window W  messages in flight at once in the second small run (default 16)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local socket = require "socket"

local LUA = arg[-1] or "lua5.4"

if arg[1] == "--receiver" then
  local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
  ep.msrp_options = { max_size = 64 * 1024 * 1024 }
  ep.msrp_max_size = 64 * 1024 * 1024
  ep.msrp_tls = { cert = arg[2], key = arg[3], ca = arg[2] }
  ep:on("chat", function(s)
    s:accept()
    while s:receive() do end
  end)
  print(ep:uri("bench"))
  io.stdout:flush()
  ep:run()
  return
end

local opts = { big = 50, small = 5000, window = 16 }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(%w+)$")
    if name and opts[name] ~= nil then
      opts[name] = assert(tonumber(arg[i + 1]), "--" .. name .. " needs a number")
      i = i + 2
    else
      error("bench/msrp.lua: unknown argument " .. arg[i])
    end
  end
end

-- a certificate for 127.0.0.1 for the TLS runs (both sides use and trust it)
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local CERT, KEY = dir .. "/cert.pem", dir .. "/key.pem"
assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
  "-keyout %s -out %s -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 " ..
  ">/dev/null 2>&1"):format(KEY, CERT)))

local child = io.popen("echo $$; exec " .. LUA .. " bench/msrp.lua --receiver " .. CERT .. " " ..
  KEY, "r")
local pid = assert(tonumber(child:read("l")), "no receiver pid")
local uri = assert(child:read("l"), "no receiver URI")

-- CPU seconds of both processes (user + system): a figure the other jobs of a shared
-- machine disturb less than wall time
local TICK = 100   -- USER_HZ on Linux
local function cpu()
  local f = io.open("/proc/" .. pid .. "/stat")
  local stat = f and f:read("a") or ""
  if f then
    f:close()
  end
  local fields = {}
  for w in stat:gsub("^.*%) ", ""):gmatch("%S+") do
    fields[#fields + 1] = w
  end
  -- after the command: state is field 3, utime 14, stime 15 (1-based in stat)
  local child = ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / TICK
  return os.clock() + child
end

local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
ep.msrp_tls = { cert = CERT, key = KEY, ca = CERT }
local function main()
  local results = {}
  for _, run in ipairs { { 2048 }, { 65536 }, { 2048, true }, { 65536, true } } do
    local chunk, tls = run[1], run[2]
    local s = assert(ep:chat(uri, { chunk_size = chunk, tls = tls }))
    local text = string.rep("0123456789abcdef", 65536)   -- 1 MB
    assert(s:send(text))   -- warm-up
    local t0, c0 = socket.gettime(), cpu()
    for _ = 1, opts.big do
      assert(s:send(text))
    end
    local dt, dc = socket.gettime() - t0, cpu() - c0
    results[#results + 1] = ("MSRP over %s, 1 MB messages in %d-byte chunks: %.1f MB/s " ..
      "(%d messages in %.2f s), %.1f ms CPU per MB (both sides)"):format(tls and "TLS" or "TCP",
      chunk, opts.big * #text / dt / 1e6, opts.big, dt, dc * 1000 / (opts.big * #text / 1e6))
    s:close()
  end
  local small, tcp_session = string.rep("m", 100), nil
  for _, tls in ipairs { true, false } do   -- TCP last: the windowed run below goes on it
    local s = assert(ep:chat(uri, { tls = tls }))
    local t0, c0 = socket.gettime(), cpu()
    for _ = 1, opts.small do
      assert(s:send(small))
    end
    local dt, dc = socket.gettime() - t0, cpu() - c0
    results[#results + 1] = ("MSRP over %s, 100-byte messages one at a time: %.0f messages/s, " ..
      "%.0f us CPU per message (both sides)"):format(tls and "TLS" or "TCP", opts.small / dt,
      dc * 1e6 / opts.small)
    if tls then
      s:close()
    else
      tcp_session = s
    end
  end
  local s = tcp_session
  local left, done = opts.small, 0
  local t0 = socket.gettime()
  local finished = sip.sched.await(function(wake)
    for _ = 1, opts.window do
      sip.spawn(function()
        while left > 0 do
          left = left - 1
          assert(s:send(small))
          done = done + 1
        end
        if done == opts.small then
          wake(socket.gettime())
        end
      end)
    end
  end)
  results[#results + 1] = ("MSRP over TCP, 100-byte messages %d in flight: %.0f messages/s"):format(
    opts.window, opts.small / (finished - t0))
  s:close()
  return results
end

local results
sip.spawn(function()
  local ok, r = pcall(main)
  results = ok and r or { "bench failed: " .. tostring(r) }
end)
while not results do
  sip.sched.loop:step(10)
end
ep:close()
os.execute("kill " .. pid)
child:close()
os.execute("rm -rf " .. dir)
for _, l in ipairs(results) do
  print(l)
end
