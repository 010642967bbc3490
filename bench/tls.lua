-- bench/tls.lua: SIP over TLS through `luasip serve` and through Kamailio's tls module, in the
-- same run: CPU-µs of the proxy per MESSAGE transaction over persistent TLS connections
-- (a Lua UAC -> proxy -> a Lua UAS, both hops TLS, certificates checked), and TLS
-- handshakes per CPU-second of the proxy (`openssl s_time -new` as the client).
-- CPU is utime+stime of every process of the proxy's process group, from /proc.
--
-- usage: lua5.4 bench/tls.lua [--messages N] [--window W] [--seconds S]
--   --messages N  MESSAGE transactions per proxy (default 5000)
--   --window W    transactions in flight at once (default 50)
--   --seconds S   how long s_time opens connections against each proxy (default 5)
-- TLS_BENCH_DEBUG=1 adds what the UAS got, the connections open, and Kamailio's ERROR lines.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local socket = require "socket"
local peer = require "peer"
local certs = require "tls_certs"

local opts = { messages = 5000, window = 50, seconds = 5 }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(%w+)$")
    assert(name and opts[name], "bench/tls.lua: unknown argument " .. arg[i])
    opts[name] = assert(tonumber(arg[i + 1]), "--" .. name .. " needs a number")
    i = i + 2
  end
end

local TICK = 100   -- USER_HZ: /proc's CPU times are in these

-- utime + stime (seconds) of every process in process group pgid
local function group_cpu(pgid)
  local total = 0
  for pid in peer.sh("ls /proc"):gmatch("%d+") do
    local stat = peer.slurp("/proc/" .. pid .. "/stat")
    if stat then
      local rest = stat:match("%) (.*)$")
      local f = {}
      for w in rest:gmatch("%S+") do f[#f + 1] = w end
      -- after "pid (comm)": state ppid pgrp ... utime is field 14, stime 15 (1-based, whole)
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

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local dir = certs.make()
local function f(name) return dir .. "/" .. name end

-- the UAS: a Lua endpoint on TLS answering every MESSAGE 200
local uas = assert(sip.endpoint { listen = { "tls:127.0.0.1:0" },
  tls = { cert = f("server.pem"), key = f("server.key"), ca = f("ca.pem") } })
uas:on("MESSAGE", function(req) req:reply(200) end)
local uas_port = uas:address("tls"):match(":(%d+)$")
-- the UAC: no certificate of its own; checks the proxy's
local uac = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, tls = { ca = f("ca.pem") } })

local function run_loop(cond, seconds)
  local deadline = socket.gettime() + seconds
  while not cond() and socket.gettime() < deadline do
    sip.sched.loop:step(10)
  end
  return cond()
end

-- n MESSAGEs, window at a time, to sips:bob@localhost:UAS through the proxy at tls_port
local function drive(tls_port, n)
  local to = "sips:bob@localhost:" .. uas_port
  local target = "sips:localhost:" .. tls_port
  local sent, done, ok = 0, 0, 0
  local function worker()
    while sent < n do
      sent = sent + 1
      local res = uac:message(to, "bench", { target = target })
      done = done + 1
      if res and res.status == 200 then ok = ok + 1 end
    end
  end
  for _ = 1, opts.window do sip.spawn(worker) end
  run_loop(function() return done >= n end, 600)
  return ok
end

local function s_time(port)
  local out = peer.sh(("openssl s_time -connect 127.0.0.1:%d -new -time %d 2>&1"):format(port,
    opts.seconds))
  return tonumber(out:match("(%d+) connections in [%d.]+s") or out:match("(%d+) connections in")) or 0
end

-- one proxy: warm up, then the MESSAGE run and the handshake run, CPU of its process group
local function measure(name, p, tls_port)
  drive(tls_port, 200)   -- connections up, caches warm
  local c0, t0 = group_cpu(p.pid), socket.gettime()
  local in0 = uas:stats().requests_in
  local ok = drive(tls_port, opts.messages)
  local c1, t1 = group_cpu(p.pid), socket.gettime()
  if os.getenv("TLS_BENCH_DEBUG") then
    print("uas got", uas:stats().requests_in - in0, "uas conns", uas:stats().connections, "uac conns", uac:stats().connections)
  end
  local hs0 = group_cpu(p.pid)
  local conns = s_time(tls_port)
  local hs1 = group_cpu(p.pid)
  print(("%-9s %8d %8d %9.1f %12.1f %10d %14.0f"):format(name, opts.messages, ok, t1 - t0,
    (c1 - c0) * 1e6 / opts.messages, conns,
    hs1 > hs0 and conns / (hs1 - hs0) or 0))
end

local function wait_listening(port)
  return run_loop(function()
    local s = socket.tcp()
    local up = s:connect("127.0.0.1", port)
    s:close()
    return up
  end, 10)
end

print(("TLS proxy: %d MESSAGEs (window %d) Lua UAC -> proxy -> Lua UAS, both hops TLS " ..
  "(P-256, certificates checked); s_time -new for %d s"):format(opts.messages, opts.window,
  opts.seconds))
print(("%-9s %8s %8s %9s %12s %10s %14s"):format("target", "messages", "ok", "seconds",
  "CPU-µs/msg", "handshakes", "handshakes/CPU-s"))

-- luasip serve
do
  local port = tcp_port()
  local p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--quiet", "--no-auth",
    "--domain", "example.org", "--trust", "127.0.0.1/32", "--listen", "udp:127.0.0.1:" .. port,
    "--listen", "tls:127.0.0.1:" .. port, "--cert", f("server.pem"), "--key", f("server.key"),
    "--ca", f("ca.pem") }
  if wait_listening(port) then
    measure("luasip", p, port)
  else
    print("luasip: serve did not start")
  end
  os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
  peer.wait(p, 3)
  peer.clean(p)
end

-- Kamailio, stateful, its tls module (kamailio-tls-modules)
if peer.have("kamailio") and io.open("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so") then
  local port, udp = tcp_port(), peer.free_udp_port()
  write(f("kam-tls.cfg"), ([[
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = DIR/server.key
certificate = DIR/server.pem
ca_list = DIR/ca.pem

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
ca_list = DIR/ca.pem
]]):gsub("DIR", dir))
  write(f("kam.cfg"), ([[
#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
enable_tls=yes
listen=udp:127.0.0.1:UDP
listen=tls:127.0.0.1:TLS
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
modparam("tls", "config", "DIR/kam-tls.cfg")
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    $du = "sip:127.0.0.1:UAS;transport=tls";
    t_relay();
}
]]):gsub("DIR", dir):gsub("UDP", udp):gsub("TLS", port):gsub("UAS", uas_port))
  -- -m: its TLS module needs more shared memory than the default 64 MB at this rate
  local p = peer.start { "kamailio", "-DD", "-E", "-m", "512", "-M", "32", "-f", f("kam.cfg") }
  if wait_listening(port) then
    measure("kamailio", p, port)
    if os.getenv("TLS_BENCH_DEBUG") then
      local log = peer.slurp(p.dir .. "/out") or ""
      local n = 0
      for line in log:gmatch("[^\n]+") do
        if line:find("ERROR") and n < 15 then print(line) n = n + 1 end
      end
    end
  else
    print("kamailio: did not start")
  end
  os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
  peer.wait(p, 3)
  peer.clean(p)
else
  print("kamailio: not installed with its tls module (make bench-deps); luasip only")
end

uac:close()
uas:close()
certs.remove(dir)
