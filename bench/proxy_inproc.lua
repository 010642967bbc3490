-- bench/proxy_inproc.lua: user+system CPU per proxied MESSAGE transaction with the UAC, the
-- proxy (luasip serve, no auth) and the UAS all in this one process, over loopback UDP.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local cli = require "sip.cli"

local N = tonumber(arg[1]) or 20000
local INFLIGHT = tonumber(arg[2]) or 50

local srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, domain = "127.0.0.1", no_auth = true, quiet = true })
local proxy = srv.ep:address("udp")
local uac = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
local uas = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
uas:on("MESSAGE", function(req) req:reply(200) end)
local reg = sip.request { method = "REGISTER", uri = "sip:127.0.0.1", from = "sip:bob@127.0.0.1",
  to = "sip:bob@127.0.0.1", contact = uas:uri("bob"), headers = { Expires = "3600" } }
assert(uas:request(reg, { target = "sip:" .. proxy }).status == 200)

local done, ok, started = 0, 0, 0
local function one()
  started = started + 1
  local m = sip.request { method = "MESSAGE", uri = "sip:bob@127.0.0.1", from = "sip:alice@127.0.0.1",
    body = "user2, come here.\n", content_type = "text/plain" }
  local res = uac:request(m, { target = "sip:" .. proxy })
  if res and res.status == 200 then ok = ok + 1 end
  done = done + 1
  if started < N then sip.spawn(one) end
end
local c0, t0 = os.clock(), os.time()
for _ = 1, INFLIGHT do sip.spawn(one) end
while done < N do sip.sched.loop:step(-1) end
local cpu = os.clock() - c0
print(string.format("%d transactions, %d ok, %.1f CPU-us per transaction (UAC + proxy + UAS in one process)",
  N, ok, cpu / N * 1e6))
