-- bench/dns.lua: does a DNS lookup that hangs slow anything else down? OPTIONS round trips
-- to an endpoint (p50/p99/max), first alone, then while that endpoint keeps lookups hanging
-- (dnsmasq forwarding hang.test to a socket that never answers): RFC 3263 on c-ares in the
-- loop (csrc/dns.c) should leave the figures where they were; then alone again, as a control.
--
-- usage: lua5.4 bench/dns.lua [--n N] [--hanging K]
--   --n N        OPTIONS per phase (default 3000), one after the other
--   --hanging K  lookups kept hanging at once in the second phase (default 20)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local socket = require "socket"
local peer = require "peer"
local helper = require "helper"

local opts = { n = 3000, hanging = 20 }
for i = 1, #arg, 2 do
  local name = arg[i]:match("^%-%-(%w+)$")
  assert(name and opts[name], "bench/dns.lua: unknown argument " .. arg[i])
  opts[name] = assert(tonumber(arg[i + 1]), "--" .. name .. " needs a number")
end

local DNSMASQ = peer.have("dnsmasq") and "dnsmasq" or "/usr/sbin/dnsmasq"

-- a DNS server for hang.test that takes queries and never answers
local silent = assert(socket.udp())
assert(silent:setsockname("127.0.0.1", 0))
local _, silent_port = silent:getsockname()

local port
for _ = 1, 50 do
  port = peer.free_udp_port()
  local t = socket.tcp()
  local ok = t:bind("127.0.0.1", port)
  t:close()
  if ok then break end
end
local dm = peer.start { DNSMASQ, "-d", "-k", "--conf-file=/dev/null", "--pid-file", "-p",
  tostring(port), "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
  "--server=/hang.test/127.0.0.1#" .. silent_port }
assert(helper.run_until(function()
  local tcp = peer.slurp("/proc/net/tcp") or ""
  return tcp:find(string.format("0100007F:%04X 00000000:0000 0A", port), 1, true) ~= nil
end, 5), "dnsmasq did not start")

local server = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" },
  dns = { servers = { "127.0.0.1:" .. port }, timeout = 5, tries = 1 } })
local client = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
local target = server:uri()

local function phase(label)
  local rtt = {}
  local done = false
  sip.spawn(function()
    for i = 1, opts.n do
      local t0 = socket.gettime()
      local res = client:options(target)
      assert(res and res.status == 200, "OPTIONS failed")
      rtt[i] = (socket.gettime() - t0) * 1e6
    end
    done = true
  end)
  assert(helper.run_until(function() return done end, 120), "phase timed out")
  table.sort(rtt)
  local function pct(p) return rtt[math.max(1, math.ceil(#rtt * p))] end
  print(("%-34s n=%d  p50 %6.0f us  p99 %6.0f us  max %7.0f us"):format(label, #rtt, pct(0.5),
    pct(0.99), rtt[#rtt]))
end

phase("OPTIONS, no lookup running")

-- the server keeps `hanging` lookups of names nobody answers for running
local stop, started, finished = false, 0, 0
for k = 1, opts.hanging do
  sip.spawn(function()
    local i = 0
    while not stop do
      i = i + 1
      started = started + 1
      server:resolve(("sip:bob@n%d-%d.hang.test"):format(k, i))
      finished = finished + 1
    end
  end)
end
assert(server.dns:stats().pending >= opts.hanging, "the lookups are not hanging")
phase(("OPTIONS, %d lookups hanging"):format(opts.hanging))
print(("lookups started %d, timed out meanwhile %d, pending at the end %d"):format(started,
  finished, server.dns:stats().pending))
-- the same again once they have timed out (5 s): the drift of the machine, for comparison
stop = true
assert(helper.run_until(function() return server.dns:stats().pending == 0 end, 15))
phase("OPTIONS, no lookup running (again)")

client:close()
server:close()
os.execute("kill -TERM -" .. dm.pid .. " 2>/dev/null")
helper.run_until(function() return not peer.alive(dm.pid) end, 3)
dm.handle:close()
peer.clean(dm)
silent:close()
