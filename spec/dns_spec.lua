-- spec/dns_spec.lua: RFC 3263 server location (sip.dns, csrc/dns.c) against a real DNS
-- server: dnsmasq, started here on a loopback port with the records this file writes.
local sip = require "sip"
local peer = require "peer"
local helper = require "helper"
local socket = require "socket"

local DNSMASQ = peer.have("dnsmasq") and "dnsmasq" or "/usr/sbin/dnsmasq"

-- Run fn in a coroutine and drive the loop until it returns (or `seconds` pass): its results.
local function run(fn, seconds)
  local out
  sip.spawn(function()
    out = table.pack(fn())
  end)
  assert(helper.run_until(function() return out ~= nil end, seconds or 10), "timed out")
  return table.unpack(out, 1, out.n)
end

-- A UDP socket that takes datagrams and never answers: a DNS server or a SIP target that
-- hangs.
local function silent_udp()
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  local _, port = u:getsockname()
  return u, tonumber(port)
end

-- A loopback port free for both UDP and TCP (dnsmasq binds both).
local function free_port()
  for _ = 1, 50 do
    local port = peer.free_udp_port()
    local t = socket.tcp()
    local ok = t:bind("127.0.0.1", port)
    t:close()
    if ok then
      return port
    end
  end
  error("no port free for UDP and TCP")
end

-- dnsmasq listens: its TCP socket (bound after the UDP one) is in LISTEN.
local function dnsmasq_ready(port)
  local tcp = peer.slurp("/proc/net/tcp")
  return tcp == nil or tcp:find(string.format("0100007F:%04X 00000000:0000 0A", port), 1, true) ~= nil
end

-- dnsmasq on a free loopback port, answering only from the records given (and forwarding
-- the domains of `forward` = { domain = "ip#port" }); stopped by its PID (stop below).
local function start_dnsmasq(records, forward)
  local out
  for _ = 1, 5 do
    local port = free_port()
    local argv = { DNSMASQ, "-d", "-k", "--conf-file=/dev/null", "--pid-file", "-p", tostring(port),
      "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
      "--local-ttl=300", "--local=/test/" }
    for domain, to in pairs(forward or {}) do
      argv[#argv + 1] = "--server=/" .. domain .. "/" .. to
    end
    for _, r in ipairs(records) do
      argv[#argv + 1] = r
    end
    local p = peer.start(argv)
    if helper.run_until(function() return dnsmasq_ready(port) end, 5) then
      p.port = port
      p.server = "127.0.0.1:" .. port
      return p
    end
    peer.wait(p, 1)
    peer.clean(p)
    out = p.output
  end
  error("dnsmasq did not start: " .. tostring(out))
end

-- End a process group started by peer.start (its shell too, which then writes no exit
-- code: wait for the PID to go instead). Returns its output.
local function stop(p)
  os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
  helper.run_until(function() return not peer.alive(p.pid) end, 3)
  os.execute("kill -KILL -" .. p.pid .. " 2>/dev/null")
  local out = peer.slurp(p.dir .. "/out") or ""
  peer.clean(p)
  return out
end

-- An endpoint on loopback answering MESSAGE with `code`, counting what it got.
local function uas(code, transports)
  local listen = {}
  for _, t in ipairs(transports or { "udp", "tcp" }) do
    listen[#listen + 1] = t .. ":127.0.0.1:0"
  end
  local ep = assert(sip.endpoint { listen = listen })
  ep.got = 0
  ep:on("MESSAGE", function(req)
    ep.got = ep.got + 1
    req:reply(code)
  end)
  ep.port = tonumber(ep:address():match(":(%d+)$"))
  return ep
end

describe("RFC 3263 server location", function()
  local dm, ep, a, b, c
  local hang_sock, hang_port

  setup(function()
    -- three SIP servers of order.test: two over TCP (NAPTR order 10, SRV priorities 10
    -- and 20), one over UDP (NAPTR order 20)
    a, b, c = 15061, 15062, 15063
    hang_sock, hang_port = silent_udp()
    dm = start_dnsmasq({
      "--naptr-record=order.test,10,50,s,SIP+D2T,,_sip._tcp.order.test",
      "--naptr-record=order.test,20,50,s,SIP+D2U,,_sip._udp.order.test",
      "--naptr-record=order.test,5,50,s,SIP+D2X,,_sip._xyz.order.test",   -- not a transport
      "--srv-host=_sip._tcp.order.test,tb.order.test," .. b .. ",20,0",
      "--srv-host=_sip._tcp.order.test,ta.order.test," .. a .. ",10,0",
      "--srv-host=_sip._udp.order.test,uc.order.test," .. c .. ",10,0",
      "--host-record=ta.order.test,127.0.0.1",
      "--host-record=tb.order.test,127.0.0.2",
      "--host-record=uc.order.test,127.0.0.3",
      -- no NAPTR: the SRV records of each transport
      "--srv-host=_sip._udp.srv.test,s1.srv.test,5070,10,0",
      "--host-record=s1.srv.test,127.0.0.4",
      -- weights of one priority (RFC 2782)
      "--srv-host=_sip._udp.weight.test,light.weight.test,5001,10,1",
      "--srv-host=_sip._udp.weight.test,heavy.weight.test,5002,10,200",
      "--host-record=light.weight.test,127.0.0.5",
      "--host-record=heavy.weight.test,127.0.0.6",
      -- a short TTL
      "--host-record=brief.test,127.0.0.7,1",
      -- an SRV target with no address
      "--srv-host=_sip._udp.noaddr.test,ghost.noaddr.test,5060,10,0",
      "--txt-record=ghost.noaddr.test,nothing",
      -- a Via maddr
      "--host-record=maddr.test,127.0.0.2",
    }, { ["hang.test"] = "127.0.0.1#" .. hang_port })
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" },
      dns = { servers = { dm.server }, timeout = 1, tries = 1, negative_ttl = 60 } })
  end)

  teardown(function()
    ep:close()
    stop(dm)
    hang_sock:close()
  end)

  local function resolve(uri)
    return run(function() return sip.dns.resolve(uri, ep) end)
  end

  describe("§4.1 transport and §4.2 port and address", function()
    it("orders targets by NAPTR order, then SRV priority, skipping unknown services", function()
      local t = assert(resolve("sip:bob@order.test"))
      assert.equal(3, #t)
      assert.same({ "tcp", "ta.order.test", a, "127.0.0.1" }, { t[1].transport, t[1].host, t[1].port, t[1].addr })
      assert.same({ "tcp", "tb.order.test", b, "127.0.0.2" }, { t[2].transport, t[2].host, t[2].port, t[2].addr })
      assert.same({ "udp", "uc.order.test", c, "127.0.0.3" }, { t[3].transport, t[3].host, t[3].port, t[3].addr })
      assert.equal("sip:127.0.0.1:" .. a .. ";transport=tcp", t[1].uri)
    end)

    it("takes the transport from transport= and goes to its SRV records", function()
      local t = assert(resolve("sip:bob@order.test;transport=udp"))
      assert.equal(1, #t)
      assert.same({ "udp", c, "127.0.0.3" }, { t[1].transport, t[1].port, t[1].addr })
    end)

    it("queries the SRV records of each transport when there is no NAPTR", function()
      local t = assert(resolve("sip:bob@srv.test"))
      assert.same({ "udp", "s1.srv.test", 5070, "127.0.0.4" },
        { t[1].transport, t[1].host, t[1].port, t[1].addr })
    end)

    it("with an explicit port looks up only the host's address", function()
      local t = assert(resolve("sip:bob@ta.order.test:5999"))
      assert.equal(1, #t)
      assert.same({ "udp", 5999, "127.0.0.1" }, { t[1].transport, t[1].port, t[1].addr })
    end)

    it("needs no lookup for an IP literal", function()
      local before = ep.dns:stats().queries
      local t = assert(resolve("sip:bob@127.0.0.9:5077;transport=tcp"))
      assert.same({ "tcp", 5077, "127.0.0.9" }, { t[1].transport, t[1].port, t[1].addr })
      t = assert(resolve("sip:[::1]"))
      assert.same({ "udp", 5060, "[::1]" }, { t[1].transport, t[1].port, t[1].addr })
      assert.equal(before, ep.dns:stats().queries)
    end)

    it("takes a name of /etc/hosts from there, with no query", function()
      local before = ep.dns:stats().queries
      local t = assert(resolve("sip:bob@localhost:5099"))
      assert.equal(5099, t[1].port)
      assert.is_truthy(t[1].addr == "127.0.0.1" or t[1].addr == "[::1]")
      assert.equal(before, ep.dns:stats().queries)
    end)

    it("never takes a plain SIP server (SIP+D2T, SIP+D2U) for a sips: URI", function()
      -- order.test's NAPTRs offer TCP and UDP only: nothing is left over TLS
      local t, err = resolve("sips:bob@order.test")
      assert.is_nil(t)
      assert.matches("no address for order%.test", err)
    end)

    it("draws SRV records of one priority by weight (RFC 2782)", function()
      local heavy_first = 0
      for _ = 1, 40 do
        local t = assert(resolve("sip:x@weight.test"))
        assert.equal(2, #t)
        if t[1].host == "heavy.weight.test" then
          heavy_first = heavy_first + 1
        end
      end
      -- weight 200 against 1: first in about 199 draws of 200
      assert.is_true(heavy_first >= 30, "heavy first " .. heavy_first .. " times of 40")
    end)
  end)

  describe("the cache", function()
    it("keeps an answer for its TTL, then asks again", function()
      assert(resolve("sip:x@brief.test:5060"))
      local q = ep.dns:stats().queries
      local t = assert(resolve("sip:x@brief.test:5060"))
      assert.equal("127.0.0.7", t[1].addr)
      assert.equal(q, ep.dns:stats().queries)   -- from the cache
      run(function() sip.sleep(2.2) end)        -- TTL 1 s (and the 1 s floor) passed
      t = assert(resolve("sip:x@brief.test:5060"))
      assert.equal("127.0.0.7", t[1].addr)
      assert.is_true(ep.dns:stats().queries > q)
    end)

    it("keeps a negative answer too", function()
      local t, err = resolve("sip:x@nowhere.test")
      assert.is_nil(t)
      assert.equal("no such domain: nowhere.test", err)
      local s = ep.dns:stats()
      t, err = resolve("sip:x@nowhere.test")
      assert.is_nil(t)
      assert.equal("no such domain: nowhere.test", err)
      assert.equal(s.queries, ep.dns:stats().queries)
      assert.equal(s.negative_hits + 1, ep.dns:stats().negative_hits)
    end)
  end)

  describe("bad answers", function()
    it("NXDOMAIN: ep:message returns the reason", function()
      local res, err = run(function() return ep:message("sip:bob@nowhere.test", "hi") end)
      assert.is_nil(res)
      assert.equal("no such domain: nowhere.test", err)
    end)

    it("an SRV target with no address: the reason", function()
      local res, err = run(function() return ep:message("sip:bob@noaddr.test", "hi") end)
      assert.is_nil(res)
      assert.equal("no address for ghost.noaddr.test", err)
    end)

    it("a server that never answers: a timeout, and the loop goes on meanwhile", function()
      local other = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      local done, res, err
      sip.spawn(function()
        res, err = ep:message("sip:bob@hang.test", "hi")
        done = true
      end)
      -- while that lookup hangs, the same endpoint answers OPTIONS, every one
      local answered = 0
      for _ = 1, 5 do
        local r = run(function() return other:options(ep:uri()) end, 2)
        assert.equal(200, r.status)
        assert.is_nil(done)
        answered = answered + 1
      end
      assert.equal(5, answered)
      assert(helper.run_until(function() return done end, 5))
      assert.is_nil(res)
      assert.equal("DNS lookup for hang.test failed: timed out", err)
      other:close()
    end)
  end)

  it("a lookup running when its endpoint closes ends, with the reason", function()
    local e2 = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" },
      dns = { servers = { dm.server }, timeout = 5, tries = 1 } })
    local res, err, done
    sip.spawn(function()
      res, err = e2:message("sip:bob@closing.hang.test", "hi")
      done = true
    end)
    helper.run_for(0.1)
    assert.is_nil(done)
    e2:close()
    assert(helper.run_until(function() return done end, 1))
    assert.is_nil(res)
    assert.equal("endpoint closed", err)
    helper.run_for(0.1)   -- nothing of it calls back later
  end)

  describe("§5 responses", function()
    local function options(peer_, maddr, branch)
      return table.concat({
        "OPTIONS sip:x@" .. ep:address("udp") .. " SIP/2.0",
        "Via: SIP/2.0/UDP client.test:" .. peer_.port .. ";maddr=" .. maddr .. ";branch=" .. branch,
        "Max-Forwards: 70", "From: <sip:a@client.test>;tag=1", "To: <sip:x@test>",
        "Call-ID: " .. branch, "CSeq: 1 OPTIONS", "Content-Length: 0", "", "" }, "\r\n")
    end

    it("go to a Via maddr that is a name once it is looked up, and the loop goes on", function()
      local p = helper.udp_peer()
      -- maddr.test is 127.0.0.2: the response goes there, at the sent-by port (p's)
      local q = assert(socket.udp())
      assert(q:setsockname("127.0.0.2", p.port))
      q:settimeout(0)
      p.send(options(p, "maddr.test", "z9hG4bKmaddr1"), ep)
      local got
      assert(helper.run_until(function()
        got = got or q:receive()
        return got
      end, 3, nil))
      assert.equal("z9hG4bKmaddr1", sip.parse(got).branch)
      q:close()
      -- a maddr whose lookup hangs: its response waits, another request's does not
      p.send(options(p, "x.hang.test", "z9hG4bKmaddr2"), ep)
      p.send(options(p, "127.0.0.1", "z9hG4bKmaddr3"), ep)
      assert(helper.run_until(function() return p.count(function(m) return m.branch == "z9hG4bKmaddr3" end) == 1 end, 3, p.poll))
      assert.equal(0, p.count(function(m) return m.branch == "z9hG4bKmaddr2" end))
      -- the lookup times out (1 s): the response goes to the source instead
      assert(helper.run_until(function() return p.count(function(m) return m.branch == "z9hG4bKmaddr2" end) == 1 end, 4, p.poll))
      p.close()
    end)
  end)

  describe("§4.3 failover", function()
    local dm2, first, second

    local function records(p1, p2)
      return { "--srv-host=_sip._udp.fail.test,one.fail.test," .. p1 .. ",10,0",
        "--srv-host=_sip._udp.fail.test,two.fail.test," .. p2 .. ",20,0",
        "--host-record=one.fail.test,127.0.0.1", "--host-record=two.fail.test,127.0.0.1" }
    end

    after_each(function()
      if dm2 then stop(dm2) end
      if first then first:close() end
      if second then second:close() end
      dm2, first, second = nil, nil, nil
    end)

    local function client(t1)
      return assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = t1,
        log = os.getenv("DNS_SPEC_LOG") and "debug", dns = { servers = { dm2.server } } })
    end

    it("moves on from a dead first target (ICMP unreachable), and puts it last", function()
      second = uas(200, { "udp" })
      local dead = peer.free_udp_port()
      dm2 = start_dnsmasq(records(dead, second.port))
      local cl = client()
      local res, err = run(function() return cl:message("sip:bob@fail.test", "hi") end)
      assert.equal(200, res and res.status, tostring(err) .. " dns " .. dm2.port .. " dead " .. dead)
      assert.equal(1, second.got)
      local t = run(function() return cl:resolve("sip:bob@fail.test") end)
      assert.equal(second.port, t[1].port)   -- the one that failed is avoided for a while
      assert.equal(dead, t[2].port)
      cl:close()
    end)

    it("moves on from a 503 with a new branch", function()
      first, second = uas(503, { "udp" }), uas(200, { "udp" })
      local branches = {}
      first:on("MESSAGE", function(req) branches[1] = req.branch; first.got = 1; req:reply(503) end)
      second:on("MESSAGE", function(req) branches[2] = req.branch; second.got = 1; req:reply(200) end)
      dm2 = start_dnsmasq(records(first.port, second.port))
      local cl = client()
      local res = run(function() return cl:message("sip:bob@fail.test", "hi") end)
      assert.equal(200, res.status)
      assert.equal(1, first.got)
      assert.equal(1, second.got)
      assert.are_not.equal(branches[1], branches[2])
      cl:close()
    end)

    it("moves on from a target that does not answer, within one transaction's time", function()
      local mute, mute_port = silent_udp()
      second = uas(200, { "udp" })
      dm2 = start_dnsmasq(records(mute_port, second.port))
      local cl = client(50)   -- T1 50 ms: a transaction's 64*T1 is 3.2 s
      local t0 = socket.gettime()
      local res, err = run(function() return cl:message("sip:bob@fail.test", "hi") end)
      local took = socket.gettime() - t0
      assert.equal(200, res and res.status, err)
      assert.is_truthy(mute:receive())   -- it was tried first
      assert.is_true(took < 64 * 0.05, "took " .. took .. " s")
      -- and given up on: no more retransmissions go there
      mute:settimeout(0)
      while mute:receive() do end
      helper.run_for(1.7)   -- (the next one would have left 3.15 s after the first)
      assert.is_nil(mute:receive())
      mute:close()
      cl:close()
    end)

    it("ep:call places a call to a name, past a dead first target, and hangs up", function()
      second = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      second.port = tonumber(second:address():match(":(%d+)$"))
      local sdp = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40000,
        codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })
      local bye
      second:on("INVITE", function(req)
        local call = assert(req:answer { sdp = sdp })
        bye = call:wait()
      end)
      dm2 = start_dnsmasq(records(peer.free_udp_port(), second.port))
      local cl = client()
      local call = run(function() return cl:call("sip:bob@fail.test", { sdp = sdp }) end)
      assert.truthy(call)
      local res = run(function() return call:bye() end)
      assert.equal(200, res.status)
      assert(helper.run_until(function() return bye end, 3))
      cl:close()
    end)

    it("a proxy relays to a name, past a dead first address and a 503, and answers 404 for a domain that does not exist", function()
      first, second = uas(503, { "udp" }), uas(200, { "udp" })
      dm2 = start_dnsmasq({ "--srv-host=_sip._udp.fail.test,one.fail.test," .. peer.free_udp_port() .. ",10,0",
        "--srv-host=_sip._udp.fail.test,two.fail.test," .. first.port .. ",20,0",
        "--srv-host=_sip._udp.fail.test,three.fail.test," .. second.port .. ",30,0",
        "--host-record=one.fail.test,127.0.0.1", "--host-record=two.fail.test,127.0.0.1",
        "--host-record=three.fail.test,127.0.0.1" })
      local proxy = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, log = os.getenv("DNS_SPEC_LOG") and "debug",
        dns = { servers = { dm2.server } } })
      proxy:route(function(req)
        req:relay(req.uri)
      end)
      local cl = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      local res = run(function()
        return cl:message("sip:bob@fail.test", "hi", { target = proxy:uri() })
      end)
      assert.equal(200, res.status)
      assert.equal(1, first.got)
      assert.equal(1, second.got)
      res = run(function()
        local req = sip.request { method = "MESSAGE", uri = "sip:bob@gone.test", body = "x" }
        return cl:request(req, { target = proxy:uri() })
      end)
      assert.equal(404, res.status)
      assert.equal("no such domain: gone.test", res.reason)
      cl:close()
      proxy:close()
    end)

    it("the core relays an in-dialog request to a name once it is looked up", function()
      -- a call through the proxy, whose callee's Contact is a name: the ACK and the BYE
      -- (in the dialog, along the proxy's Record-Route) go there without the script
      second = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      second.port = tonumber(second:address():match(":(%d+)$"))
      local sdp = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40000,
        codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })
      local acked, ended
      second:on("INVITE", function(req)
        local call = assert(req:answer { sdp = sdp,
          contact = "<sip:bob@callee.fail.test:" .. second.port .. ">" })
        acked = call.received_ack ~= nil   -- (answer returns once the ACK came)
        ended = call:wait()
      end)
      local recs = records(second.port, second.port)
      recs[#recs + 1] = "--host-record=callee.fail.test,127.0.0.1"
      dm2 = start_dnsmasq(recs)
      local proxy = client()
      local routed = {}
      proxy:route(function(req)
        routed[#routed + 1] = req.method
        req:relay()
      end, { relay_in_dialog = true })
      local cl = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      local call = run(function() return cl:call("sip:bob@fail.test", { sdp = sdp, target = proxy:uri() }) end)
      assert.truthy(call)
      local res = run(function() return call:bye() end)
      assert.equal(200, res.status)
      assert(helper.run_until(function() return ended end, 3))
      assert.is_true(acked)
      assert.same({ "INVITE" }, routed)   -- the script saw the INVITE only
      cl:close()
      proxy:close()
    end)
  end)
end)

-- A DNS server that answers every query wrongly, as its name asks: SERVFAIL, REFUSED, a
-- truncated answer (TC, and no TCP), or records cut short. A hostile peer, not a mock.
local function bad_dns()
  local u, port = silent_udp()
  u:settimeout(0)
  local srv = { port = port, server = "127.0.0.1:" .. port, sock = u }
  function srv.poll()
    while true do
      local q, ip, qport = u:receivefrom()
      if not q then return end
      local question = q:sub(13)
      local name = {}
      local i = 1
      while question:byte(i) and question:byte(i) > 0 do
        local n = question:byte(i)
        name[#name + 1] = question:sub(i + 1, i + n)
        i = i + n + 1
      end
      local first = name[1] or ""
      local rcode, flags2, an = 0, 0x80, ""
      if first == "servfail" then
        rcode = 2
      elseif first == "refused" then
        rcode = 5
      elseif first == "truncated" then
        flags2 = 0x80
      end
      local flags1 = 0x81 + (first == "truncated" and 0x02 or 0)
      local ancount = 0
      if first == "cut" then
        -- one answer record whose data runs past the end of the message
        an = "\xc0\x0c" .. question:sub(i + 1, i + 4) .. "\0\0\0\60\0\50abcd"
        ancount = 1
      end
      local reply = q:sub(1, 2) .. string.char(flags1, flags2 + rcode) .. "\0\1" ..
        string.char(0, ancount) .. "\0\0\0\0" .. question .. an
      u:sendto(reply, ip, qport)
    end
  end
  return srv
end

describe("bad DNS answers", function()
  local srv, ep
  setup(function()
    srv = bad_dns()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" },
      dns = { servers = { srv.server }, timeout = 0.5, tries = 1 } })
  end)
  teardown(function()
    ep:close()
    srv.sock:close()
  end)

  local function message(to)
    local out
    sip.spawn(function() out = table.pack(ep:message(to, "hi")) end)
    assert(helper.run_until(function() return out end, 5, srv.poll))
    return table.unpack(out, 1, out.n)
  end

  it("SERVFAIL gives the reason, and no hang", function()
    local res, err = message("sip:bob@servfail.bad")
    assert.is_nil(res)
    assert.equal("DNS lookup for servfail.bad failed: server failure", err)
  end)

  it("REFUSED gives the reason", function()
    local res, err = message("sip:bob@refused.bad")
    assert.is_nil(res)
    assert.equal("DNS lookup for refused.bad failed: refused", err)
  end)

  it("a malformed answer gives the reason", function()
    local res, err = message("sip:bob@cut.bad")
    assert.is_nil(res)
    assert.equal("DNS lookup for cut.bad failed: malformed answer", err)
  end)

  it("a truncated answer with nowhere to retry over TCP gives the reason", function()
    local res, err = message("sip:bob@truncated.bad")
    assert.is_nil(res)
    assert.matches("^DNS lookup for truncated.bad failed: ", err)
  end)

  it("a proxy answers 503 with the reason when the lookup fails", function()
    local proxy = ep
    proxy:route(function(req) req:relay() end)
    local cl = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local out
    sip.spawn(function()
      local req = sip.request { method = "MESSAGE", uri = "sip:bob@servfail.bad", body = "x" }
      out = cl:request(req, { target = proxy:uri() })
    end)
    assert(helper.run_until(function() return out end, 5, srv.poll))
    assert.equal(503, out.status)
    assert.equal("DNS lookup for servfail.bad failed: server failure", out.reason)
    cl:close()
  end)
end)

describe("luasip with --dns", function()
  it("message reaches serve through NAPTR and SRV, with no proxy", function()
    local port = peer.free_udp_port()
    local dm = start_dnsmasq({
      "--naptr-record=example.test,10,50,s,SIP+D2U,,_sip._udp.example.test",
      "--srv-host=_sip._udp.example.test,sip.example.test," .. port .. ",10,0",
      "--host-record=sip.example.test,127.0.0.1",
    })
    local serve = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "example.test", "--no-auth", "--dns", dm.server }
    assert(helper.run_until(function() return peer.udp_bound(port) end, 5))
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "message",
      "sip:echo@example.test", "hello over DNS", "--dns", dm.server }, 15)
    local ocode, oout = peer.run({ "lua5.4", peer.path("bin/luasip"), "options",
      "sip:example.test", "--dns", dm.server }, 15)
    local ncode, nout = peer.run({ "lua5.4", peer.path("bin/luasip"), "options",
      "sip:nowhere.test", "--dns", dm.server }, 15)
    local log = stop(serve)
    stop(dm)
    assert.equal(0, code, out)
    assert.matches("^200 OK", out)
    assert.matches("echo", log)
    assert.equal(0, ocode, oout)
    assert.matches("^200 OK", oout)
    assert.equal(1, ncode, nout)
    assert.matches("no such domain: nowhere.test", nout)
  end)
end)
