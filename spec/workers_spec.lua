-- spec/workers_spec.lua: `luasip serve --workers 2` as processes sharing one UDP port
-- (SO_REUSEPORT) over one SQLite store. Each worker sends its requests from a port of its own,
-- named in its Via, so responses come back to the worker holding the client transaction.
-- A retransmission reaches the worker holding the server transaction because the kernel
-- picks a SO_REUSEPORT socket by a hash of the packet's addresses and ports: the same source
-- lands on the same worker while the set of workers stays the same.
local sip = require "sip"
local peer = require "peer"
local helper = require "helper"

local N_SOURCES = 20   -- distinct source ports: all on one worker by chance is 2^-19

-- how many sockets hold 127.0.0.1:port (UDP), read from /proc/net/udp
local function bound(port)
  local f = io.open("/proc/net/udp")
  if not f then
    return 2
  end
  local s = f:read("a")
  f:close()
  local _, n = s:gsub(string.format("0100007F:%04X ", port), "")
  return n
end

describe("luasip serve --workers 2", function()
  local tmp, p, port, bob, eps

  local function sh_pids(cmd)
    local out = {}
    for pid in peer.sh(cmd):gmatch("%d+") do
      out[#out + 1] = tonumber(pid)
    end
    return out
  end

  before_each(function()
    tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
    port = peer.free_udp_port()
    p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "localhost", "--no-auth", "--no-huge-pages",
      "--quiet", "--store", "sqlite:" .. tmp .. "/w.db", "--workers", "2" }
    bob = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    eps = {}
    local res
    assert.truthy(helper.run_until(function()
      res = bob:options("sip:127.0.0.1:" .. port)
      return res and res.status == 200 and #sh_pids("pgrep -f -- '--worker [0-9]+@'") >= 2
        and bound(port) >= 2   -- both workers on the shared port, not only started
    end, 5))
    local aor = "sip:bob@localhost"
    local reg = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = bob:uri("bob"), headers = { Expires = "600" } })
    assert.equal(200, bob:request(reg, { target = "sip:127.0.0.1:" .. port }).status)
  end)
  after_each(function()
    if not p.done then
      os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
      peer.wait(p, 3)
    end
    peer.clean(p)
    bob:close()
    for _, e in ipairs(eps) do
      e:close()
    end
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  it("relays through both workers, each response back to the worker that relayed", function()
    local vias = {}
    bob:on("MESSAGE", function(req)
      local v = req:vias()[1]
      vias[v.port] = (vias[v.port] or 0) + 1
      req:reply(200)
    end)
    local ok = 0
    for i = 1, N_SOURCES do
      local e = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      eps[#eps + 1] = e
      sip.spawn(function()
        local req = assert(sip.request { method = "MESSAGE", uri = "sip:bob@localhost",
          from = "sip:alice@localhost", body = "n" .. i, content_type = "text/plain" })
        local res = e:request(req, { target = "sip:127.0.0.1:" .. port })
        if res and res.status == 200 then
          ok = ok + 1
        end
      end)
    end
    assert.truthy(helper.run_until(function() return ok == N_SOURCES end, 10))
    local ports = {}
    for vport in pairs(vias) do
      ports[#ports + 1] = vport
    end
    -- two workers, each writing its own port, neither the shared one
    assert.equal(2, #ports)
    assert.are_not.equal(port, ports[1])
    assert.are_not.equal(port, ports[2])
  end)

  it("absorbs a retransmitted request in the worker that holds its transaction", function()
    local seen = {}
    bob:on("MESSAGE", function(req)
      seen[req.body] = (seen[req.body] or 0) + 1
      sip.sleep(0.6)   -- the sender retransmits meanwhile
      req:reply(200)
    end)
    local peers = {}
    for i = 1, 6 do
      local u = helper.udp_peer()
      peers[i] = u
      local text = helper.msg {
        "MESSAGE sip:bob@localhost SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. u.port .. ";branch=z9hG4bK-rt-" .. i .. ";rport",
        "Max-Forwards: 70",
        "From: <sip:alice@localhost>;tag=a" .. i,
        "To: <sip:bob@localhost>",
        "Call-ID: rt-" .. i .. "@spec",
        "CSeq: 1 MESSAGE",
        "Content-Type: text/plain",
        "Content-Length: " .. #("r" .. i),
        "",
        "r" .. i,
      }
      u.text = text
    end
    local function send_all()
      for _, u in ipairs(peers) do
        u.sock:sendto(u.text, "127.0.0.1", port)
      end
    end
    send_all()
    for _ = 1, 4 do
      helper.run_for(0.1)
      send_all()   -- retransmissions, same branch, same source
    end
    local function all_answered()
      for _, u in ipairs(peers) do
        u.poll()
        if u.count(function(m) return m.status == 200 end) == 0 then
          return false
        end
      end
      return true
    end
    assert.truthy(helper.run_until(all_answered, 5))
    for i = 1, 6 do
      assert.equal(1, seen["r" .. i], "request " .. i .. " relayed " .. tostring(seen["r" .. i]))
    end
    for _, u in ipairs(peers) do
      u.close()
    end
  end)

  local function gone(pids)
    return function()
      for _, w in ipairs(pids) do
        if peer.alive(w) then
          return false
        end
      end
      return true
    end
  end

  for _, sig in ipairs { "TERM", "KILL" } do
    it("ends its workers when the master gets SIG" .. sig, function()
      local master = sh_pids("pgrep -P " .. p.pid)[1]
      assert.truthy(master)
      local workers = sh_pids("pgrep -P " .. master)
      assert.equal(2, #workers)
      os.execute("kill -" .. sig .. " " .. master)
      assert.truthy(helper.run_until(gone(workers), 5))
      if sig == "TERM" then
        assert.equal(0, peer.wait(p, 3))
        p.done = true
      end
    end)
  end
end)

-- One /metrics, one `luasip ctl` for all the workers: worker 1 holds serve's control socket
-- and metrics address, and asks the others over sockets of their own (PATH.wI).
describe("luasip serve --workers 2 with --metrics, --control, --script, --capture", function()
  local socket = require "socket"
  local tmp, p, port, mport, ctl_path, script

  local free_tcp_port, write = peer.free_tcp_port, peer.write

  local function scrape()
    local c = assert(socket.tcp())
    c:settimeout(5)
    assert(c:connect("127.0.0.1", mport))
    c:send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    local text = c:receive("*a")
    c:close()
    return text:match("^HTTP/1%.1 (%d+)"), text:match("\r\n\r\n(.*)$")
  end

  -- the samples of a metric name with labels matching `labels` (a Lua pattern), by worker
  local function samples(text, name, labels)
    local out = {}
    for w, rest, v in text:gmatch("\n" .. name .. '{worker="(%d+)"([^}]*)} (%d+)') do
      if rest:find(labels or "") then
        out[tonumber(w)] = (out[tonumber(w)] or 0) + tonumber(v)
      end
    end
    return out
  end

  local function ctl(...)
    local code, out, more = peer.run({ "lua5.4", peer.path("bin/luasip"), "ctl", "--control",
      ctl_path, ... }, 10)
    return code, code and out or more
  end

  local function stats()
    local code, out = ctl("stats")
    assert.equal(0, code, out)
    local s = {}
    for k, v in out:gmatch("([%w_]+) (%S+)") do
      s[k] = tonumber(v) or v
    end
    return s
  end

  before_each(function()
    tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
    port, mport = peer.free_udp_port(), free_tcp_port()
    ctl_path, script = tmp .. "/serve.ctl", tmp .. "/route.lua"
    write(script, "function route(req, serve) return serve.default(req) end\n")
    p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "localhost", "--no-auth", "--no-huge-pages",
      "--quiet", "--store", "sqlite:" .. tmp .. "/w.db", "--workers", "2",
      "--metrics", "127.0.0.1:" .. mport, "--control", ctl_path, "--script", script,
      "--capture", tmp .. "/sip.pcap" }
    local probe = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    assert.truthy(helper.run_until(function()
      local res = probe:options("sip:127.0.0.1:" .. port, { timeout = 0.2 })
      return res and res.status == 200 and peer.sh("ls " .. tmp):find("serve.ctl.w2") ~= nil
        and bound(port) >= 2
    end, 8), peer.slurp(p.dir .. "/out"))
    probe:close()
  end)
  after_each(function()
    os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
    peer.wait(p, 3)
    peer.clean(p)
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  it("reports every worker in one scrape and one ctl stats, and reloads them all", function()
    local eps, ok = {}, 0
    for i = 1, N_SOURCES do
      local e = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      e:on("MESSAGE", function(req) req:reply(200) end)   -- the echo bot's answer
      eps[i] = e
      sip.spawn(function()
        local res = e:message("sip:echo@localhost", "m" .. i,
          { target = "sip:127.0.0.1:" .. port, from = "sip:u" .. i .. "@localhost" })
        if res and res.status == 200 then
          ok = ok + 1
        end
      end)
    end
    assert.truthy(helper.run_until(function() return ok == N_SOURCES end, 10))

    local status, text = scrape()
    assert.equal("200", status)
    -- each worker's own counts, labelled; together, every MESSAGE once
    local got = samples(text, "luasip_requests_received_total", 'method="MESSAGE"')
    assert.truthy(got[1] and got[1] > 0 and got[2] and got[2] > 0, text)
    assert.equal(N_SOURCES, got[1] + got[2])
    assert.truthy(text:find('\nluasip_worker_up{worker="1"} 1\n', 1, true))
    assert.truthy(text:find('\nluasip_worker_up{worker="2"} 1\n', 1, true))
    -- the store's calls, timed in each worker (the shared rr key at start, the least)
    local calls = samples(text, "luasip_store_latency_seconds_count", 'method="setnx"')
    assert.truthy(calls[1] >= 1 and calls[2] >= 1, text)
    -- the store's own figures once, not once per worker
    assert.truthy(text:find("\nluasip_registrations 0\n", 1, true), text)
    if peer.have("promtool") then
      write(tmp .. "/metrics.txt", text)
      local check = peer.sh("promtool check metrics < " .. tmp .. "/metrics.txt 2>&1; echo rc=$?")
      assert.truthy(check:find("rc=0", 1, true), check)
    end

    local s = stats()
    assert.equal(2, s.workers)
    assert.equal(2, s.workers_answering)
    assert.equal(2, s.script_loads)   -- one load in each
    assert.truthy(s.requests_in >= N_SOURCES)

    local code, out = ctl("reload")
    assert.equal(0, code, out)
    assert.truthy(out:find("in 2 workers", 1, true), out)
    assert.equal(4, stats().script_loads)

    -- SIGHUP to the master reaches every worker
    local master = tonumber(peer.sh("pgrep -P " .. p.pid):match("%d+"))
    os.execute("kill -HUP " .. master)
    assert.truthy(helper.run_until(function() return stats().script_loads == 6 end, 5))

    -- a broken script: each worker says so, each keeps the old one
    write(script, "function route(req, serve\n")
    code, out = ctl("reload")
    assert.equal(1, code)
    assert.truthy(out:find("worker 1:", 1, true) and out:find("worker 2:", 1, true), out)
    s = stats()
    assert.equal(2, s.script_load_failures)
    local res = eps[1]:message("sip:echo@localhost", "still routed",
      { target = "sip:127.0.0.1:" .. port, from = "sip:u1@localhost" })
    assert.equal(200, res.status)

    -- a capture file for each worker
    assert.truthy(helper.run_until(function()
      local a, b = io.open(tmp .. "/sip-w1.pcap"), io.open(tmp .. "/sip-w2.pcap")
      local sizes = { a and a:seek("end") or 0, b and b:seek("end") or 0 }
      if a then a:close() end
      if b then b:close() end
      return sizes[1] > 24 and sizes[2] > 24   -- more than the pcap header
    end, 5))
    for _, e in ipairs(eps) do
      e:close()
    end
  end)
end)
