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
