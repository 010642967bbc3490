-- spec/tls_spec.lua: SIP over TLS (RFC 3261 §26, RFC 5922) with real OpenSSL on both ends:
-- certificates made here with the openssl CLI, openssl s_client as a peer, Lua UAC and UAS,
-- mutual TLS, and hostile clients on the TLS and TCP ports.
local sip = require "sip"
local helper = require "helper"
local peer = require "peer"
local socket = require "socket"
local cli = require "sip.cli"
local certs = require "tls_certs"

local q = certs.quote

local function tcp_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- a sips: URI for user on ep's TLS listener, by host name (the certificate names localhost)
local function sips(ep, user)
  return "sips:" .. user .. "@localhost:" .. ep:address("tls"):match(":(%d+)$")
end

local function run_until(cond, seconds)
  return helper.run_until(cond, seconds, nil, 5)
end

-- Run fn in a handler coroutine and drive the loop until it returns (bounded).
local function go(fn, seconds)
  local done, res = false, nil
  sip.spawn(function()
    res = { fn() }
    done = true
  end)
  assert(run_until(function() return done end, seconds or 5), "timed out")
  return table.unpack(res)
end

describe("SIP over TLS", function()
  local dir, eps

  setup(function()
    dir = certs.make()
  end)
  teardown(function()
    certs.remove(dir)
  end)
  before_each(function()
    eps = {}
  end)
  after_each(function()
    for _, ep in ipairs(eps) do
      ep:close()
    end
  end)

  local function f(name)
    return dir .. "/" .. name
  end

  -- an endpoint; cert: the base name of its certificate (server, client, ...)
  local function endpoint(listen, cert, tls)
    tls = tls or {}
    tls.ca = tls.ca or f("ca.pem")
    if cert then
      tls.cert, tls.key = f(cert .. ".pem"), f(cert .. ".key")
    end
    local opts = type(listen) == "table" and listen.listen and listen or { listen = listen }
    opts.tls = tls
    local ep = assert(sip.endpoint(opts))
    eps[#eps + 1] = ep
    return ep
  end

  describe("a TLS listener", function()
    it("answers OPTIONS from openssl s_client, which verifies its chain and name", function()
      local srv = assert(cli.server { listen = { "tls:127.0.0.1:0" }, no_auth = true,
        quiet = true, cert = f("server.pem"), key = f("server.key"), ca = f("ca.pem") })
      eps[#eps + 1] = srv.ep
      local port = srv.ep:address("tls"):match(":(%d+)$")
      local req = table.concat({ "OPTIONS sip:localhost SIP/2.0",
        "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKsclient1",
        "From: <sip:probe@localhost>;tag=1", "To: <sip:localhost>", "Call-ID: sclient-1",
        "CSeq: 1 OPTIONS", "Max-Forwards: 70", "Content-Length: 0", "", "" }, "\r\n")
      local fh = assert(io.open(f("options.txt"), "wb"))
      fh:write(req)
      fh:close()
      -- -quiet keeps the connection open after stdin's end; the spec ends it by its PID
      local p = peer.start { "sh", "-c", "(cat " .. q(f("options.txt")) .. "; sleep 5) | " ..
        "openssl s_client -connect 127.0.0.1:" .. port .. " -servername localhost -CAfile " ..
        q(f("ca.pem")) .. " -verify_hostname localhost -verify_return_error -quiet" }
      local out = ""
      run_until(function()
        out = peer.slurp(p.dir .. "/out") or ""
        return out:find("SIP/2.0 200", 1, true) ~= nil
      end, 5)
      os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
      peer.wait(p, 3)
      peer.clean(p)
      assert.matches("verify return:1", out)
      assert.matches("SIP/2%.0 200 OK\r\nVia: SIP/2%.0/TLS 127%.0%.0%.1:5061;branch=z9hG4bKsclient1", out)
      assert.matches("Call%-ID: sclient%-1", out)
    end)

    it("is served by `luasip serve --listen tls:... --cert --key` and reached with --ca", function()
      local port = tcp_port()
      local p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--no-auth", "--quiet",
        "--no-huge-pages", "--listen", "tls:127.0.0.1:" .. port, "--cert", f("server.pem"),
        "--key", f("server.key") }
      local ua = endpoint({ "udp:127.0.0.1:0" })
      local res
      run_until(function()
        if not (res and res.status == 200) then
          res = go(function() return ua:options("sips:localhost:" .. port) end)
        end
        return res.status == 200
      end, 5)
      local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "options",
        "sips:localhost:" .. port, "--ca", f("ca.pem") }, 5)
      local untrusted_code, untrusted_out = peer.run({ "lua5.4", peer.path("bin/luasip"),
        "options", "sips:localhost:" .. port }, 5)
      os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
      peer.wait(p, 3)
      peer.clean(p)
      assert.equal(200, res.status)
      assert.equal(0, code)
      assert.matches("200 OK", out)
      -- the system's CAs do not know the test CA
      assert.equal(1, untrusted_code)
      assert.matches("503 Service Unavailable %(certificate verify failed", untrusted_out)
    end)

    it("needs a certificate", function()
      local ep, err = sip.endpoint { listen = { "tls:127.0.0.1:0" } }
      assert.is_nil(ep)
      assert.matches("certificate and key", err)
      ep, err = sip.endpoint { listen = { "udp:127.0.0.1:0" },
        tls = { cert = f("server.pem"), key = f("wrong.key") } }
      assert.is_nil(ep)
      assert.matches("key", err)
    end)
  end)

  describe("Lua UAC and UAS", function()
    it("exchange a MESSAGE over TLS: Via SIP/2.0/TLS, source tls:, the UAS verified", function()
      local uas = endpoint({ "tls:127.0.0.1:0" }, "server")
      local uac = endpoint({ "udp:127.0.0.1:0" })
      local got
      uas:on("MESSAGE", function(req)
        got = req
        req:reply(200)
      end)
      local res = go(function() return uac:message(sips(uas, "bob"), "over TLS") end)
      assert.equal(200, res.status)
      assert.equal("over TLS", got.body)
      assert.matches("^tls:127%.0%.0%.1:%d+$", got.source)
      assert.matches("^SIP/2%.0/TLS ", got:header("Via"))
      assert.matches("^sips:bob@localhost:", got.uri)
      -- no client certificate: an identity that is not verified
      assert.same({ verified = false, sans = {} }, got.tls)
      assert.equal(1, uas:stats().tcp_in)
    end)

    it("reach ;transport=tls by IP address, checked against the certificate's IP SAN", function()
      local uas = endpoint({ "tls:127.0.0.1:0" }, "server")
      local uac = endpoint({ "udp:127.0.0.1:0" })
      uas:on("MESSAGE", function(req) req:reply(200) end)
      local to = "sip:bob@" .. uas:address("tls") .. ";transport=tls"
      local res = go(function() return uac:message(to, "by address") end)
      assert.equal(200, res.status)
    end)

    it("set up, confirm and end a call over TLS, every request on it", function()
      local a = endpoint({ "tls:127.0.0.1:0" }, "server")
      local b = endpoint({ "tls:127.0.0.1:0" }, "server")
      local sources, uas_call, ended = {}, nil, nil   -- (the ACK goes to the call, not here)
      local dispatch = b._dispatch
      b._dispatch = function(self, req, txn, source)
        sources[#sources + 1] = req.method .. " " .. source:match("^(%a+):")
        return dispatch(self, req, txn, source)
      end
      b:on("INVITE", function(req)
        uas_call = assert(req:answer { sdp = "v=0\r\n" })
        ended = uas_call:wait()
      end)
      local call, ok = go(function() return a:call(sips(b, "bob"), { sdp = "v=0\r\n" }) end)
      assert.truthy(call, tostring(ok))
      assert.equal(200, ok.status)
      assert.matches("^<sips:", ok:header("Contact"))
      assert.truthy(run_until(function() return uas_call end, 2))
      local bye = go(function() return call:bye() end)
      assert.equal(200, bye.status)
      assert.truthy(run_until(function() return ended end, 2))
      assert.truthy(uas_call.received_ack)
      assert.same({ "INVITE tls", "BYE tls" }, sources)
    end)
  end)

  describe("a proxy (§26.2)", function()
    it("relays a sips: request over TLS with a sips: Record-Route", function()
      local proxy = endpoint({ "tls:127.0.0.1:0" }, "server")
      local bob = endpoint({ "tls:127.0.0.1:0" }, "server")
      proxy:route(function(req)
        req:relay({ sips(bob, "bob") }, { record_route = true })
      end)
      local got
      bob:on("MESSAGE", function(req)
        got = req
        req:reply(200)
      end)
      local alice = endpoint({ "udp:127.0.0.1:0" })
      local res = go(function()
        return alice:message(sips(proxy, "bob"), "via proxy", { target = "sips:localhost:" .. proxy:address("tls"):match(":(%d+)$") })
      end)
      assert.equal(200, res.status)
      assert.matches("^<sips:127%.0%.0%.1:%d+;lr;lsk=%x+>$", got:header("Record-Route"))
      local vias = got:headers("Via")
      assert.equal(2, #vias)
      assert.matches("^SIP/2%.0/TLS ", vias[1])
      assert.matches("^SIP/2%.0/TLS ", vias[2])
    end)

    it("records a sip: request that came over TLS as sip:...;transport=tls", function()
      local proxy = endpoint({ "tls:127.0.0.1:0", "udp:127.0.0.1:0" }, "server")
      local bob = endpoint({ "udp:127.0.0.1:0" })
      proxy:route(function(req)
        req:relay({ "sip:bob@" .. bob:address("udp") }, { record_route = true })
      end)
      local got
      bob:on("MESSAGE", function(req)
        got = req
        req:reply(200)
      end)
      local alice = endpoint({ "udp:127.0.0.1:0" })
      local res = go(function()
        return alice:message("sip:bob@example.org", "x", { target = sips(proxy, "p") })
      end)
      assert.equal(200, res.status)
      -- §16.6 step 4 asks for sips: only for a sips: request: this one may come back on
      -- any hop, to our TLS port. TLS in, UDP out: a Record-Route for each side (RFC 5658),
      -- the UDP one on top (towards bob)
      local rr = got:headers("Record-Route")
      assert.equal(2, #rr)
      assert.matches("^<sip:127%.0%.0%.1:%d+;lr;lsk=%x+>$", rr[1])
      assert.matches("^<sip:127%.0%.0%.1:%d+;lr;lsk=%x+;transport=tls>$", rr[2])
    end)

    it("refuses to relay a sips: request toward a hop without TLS: 416", function()
      local proxy = endpoint({ "tls:127.0.0.1:0" }, "server")
      local plain = endpoint({ "udp:127.0.0.1:0" })
      local reached = false
      plain:on("MESSAGE", function(req)
        reached = true
        req:reply(200)
      end)
      proxy:route(function(req)
        req:relay(nil, { next_hop = "sip:" .. plain:address("udp") })
      end)
      local alice = endpoint({ "udp:127.0.0.1:0" })
      local res = go(function() return alice:message(sips(proxy, "bob"), "x") end)
      assert.equal(416, res.status)
      assert.equal("sips: needs TLS on every hop", res.reason)
      assert.is_false(reached)
    end)
  end)

  describe("certificate checks (RFC 5922)", function()
    local function message_to(cert, client_tls)
      local uas = endpoint({ "tls:127.0.0.1:0" }, cert)
      uas:on("MESSAGE", function(req) req:reply(200) end)
      local uac = endpoint({ "udp:127.0.0.1:0" }, nil, client_tls)
      local t0 = socket.gettime()
      local res = go(function() return uac:message(sips(uas, "bob"), "x") end)
      return res, socket.gettime() - t0
    end

    it("fail a request to a server whose certificate names another host: 503 at once", function()
      -- its CN is localhost, but it has SANs, so the CN does not count
      local res, took = message_to("wrong")
      assert.equal(503, res.status)
      assert.equal("Service Unavailable (certificate verify failed: hostname mismatch)", res.reason)
      assert.is_true(took < 1)
    end)

    it("fail a request to a server of a CA we do not trust: 503 at once", function()
      local res, took = message_to("untrusted")
      assert.equal(503, res.status)
      assert.matches("^Service Unavailable %(certificate verify failed: ", res.reason)
      assert.is_true(took < 1)
    end)

    it("accept a certificate with no SANs by its CN", function()
      assert.equal(200, message_to("cnonly").status)
    end)

    it("skip the check when told verify = false", function()
      assert.equal(200, message_to("wrong", { verify = false }).status)
    end)
  end)

  describe("mutual TLS", function()
    it("hands the client's verified identity to a route script as req.tls", function()
      local proxy = endpoint({ "tls:127.0.0.1:0" }, "server")
      local seen
      proxy:route(function(req)
        seen = req.tls
        req:reply(req.tls.verified and 200 or 403)
      end)
      local alice = endpoint({ "udp:127.0.0.1:0" }, "client")
      local res = go(function() return alice:message(sips(proxy, "bob"), "hi") end)
      assert.equal(200, res.status)
      assert.is_true(seen.verified)
      assert.equal("CN=alice", seen.subject)
      assert.same({ "DNS:alice.example", "URI:sip:alice@example.com" }, seen.sans)
      -- a client certificate from a CA the server does not trust: there, not verified
      local mallory = endpoint({ "udp:127.0.0.1:0" }, "untrusted")
      res = go(function() return mallory:message(sips(proxy, "bob"), "hi") end)
      assert.equal(403, res.status)
      assert.is_false(seen.verified)
      assert.equal("CN=localhost", seen.subject)
    end)

    it("refuses clients without a trusted certificate when told client = \"require\"", function()
      local uas = endpoint({ "tls:127.0.0.1:0" }, "server", { client = "require" })
      uas:on("MESSAGE", function(req) req:reply(200) end)
      local anon = endpoint({ "udp:127.0.0.1:0" })
      local res = go(function() return anon:message(sips(uas, "bob"), "x") end)
      assert.equal(503, res.status)
      local alice = endpoint({ "udp:127.0.0.1:0" }, "client")
      res = go(function() return alice:message(sips(uas, "bob"), "x") end)
      assert.equal(200, res.status)
    end)
  end)

  describe("connection reuse for phones", function()
    -- serve, and a phone that registers over kind with a Contact nobody listens at (port 1):
    -- only its registration's connection reaches it
    for _, kind in ipairs { "tls", "tcp" } do
      it("reaches a phone registered over " .. kind:upper() .. " on that connection; " ..
         "once it closes, 480 and the binding is gone", function()
        local srv = assert(cli.server { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0",
          "tls:127.0.0.1:0" }, no_auth = true, quiet = true, cert = f("server.pem"),
          users = { alice = { password = "secret" } },
          key = f("server.key"), ca = f("ca.pem") })
        eps[#eps + 1] = srv.ep
        local phone = endpoint({ "udp:127.0.0.1:0" })
        local got = {}
        phone:on("MESSAGE", function(req)
          got[#got + 1] = req.body .. " " .. req.source:match("^%a+")
          req:reply(200)
        end)
        local registrar = kind == "tls" and "sips:localhost:" .. srv.ep:address("tls"):match(":(%d+)$")
          or "sip:" .. srv.ep:address("tcp") .. ";transport=tcp"
        local reg = phone:register { registrar = registrar, user = "alice", aor =
          "sip:alice@localhost", contact = "<sip:alice@127.0.0.1:1;transport=" .. kind .. ">",
          expires = 600 }
        assert.truthy(run_until(function() return reg.state == "registered" end, 3))
        local b = srv.registrar:lookup("sip:alice@localhost")
        assert.equal(1, #b)
        assert.truthy(b[1].conn)
        local bob = endpoint({ "udp:127.0.0.1:0" })
        local res = go(function()
          return bob:message("sip:alice@localhost", "one", { target = "sip:" .. srv.ep:address("udp") })
        end)
        assert.equal(200, res.status)
        assert.same({ "one " .. kind }, got)
        -- the phone goes away without unregistering: its connection closes
        phone._registrations = nil
        phone:close()
        run_until(function() return not srv.ep.core:conn_open(b[1].conn) end, 2)
        -- (an OPTIONS: a MESSAGE would be stored for her and answered 202)
        res = go(function()
          return bob:options("sip:alice@localhost", { target = "sip:" .. srv.ep:address("udp") })
        end)
        assert.equal(480, res.status)
        assert.same({}, srv.registrar:lookup("sip:alice@localhost"))
      end)
    end
  end)

  describe("hostile peers", function()
    -- a TLS server with a short handshake timeout and few handshake slots (8 per IP)
    local srv, tcp_addr, tls_port
    before_each(function()
      srv = endpoint({ listen = { "tcp:127.0.0.1:0", "tls:127.0.0.1:0" }, log = false },
        "server", { handshake_timeout_ms = 300, max_handshakes = 64 })
      srv:on("OPTIONS", function(req) req:reply(200) end)
      tls_port = tonumber(srv:address("tls"):match(":(%d+)$"))
      tcp_addr = srv:address("tcp")
    end)

    -- a raw TCP client of the TLS port from ip (127.0.0.x), non-blocking
    local function raw(ip, port)
      local s = assert(socket.tcp())
      assert(s:bind(ip, 0))
      s:settimeout(0)
      s:connect("127.0.0.1", port or tls_port)
      return s
    end
    -- closed by the server: a read sees the end, or a reset when we kept writing
    local function closed(s)
      local _, err = s:receive("*a")
      return err ~= "timeout"
    end

    -- a well-behaved TLS client from 127.0.0.1 still gets its answer
    local function others_served()
      local ua = endpoint({ "udp:127.0.0.1:0" })
      local res = go(function() return ua:options("sips:localhost:" .. tls_port) end)
      local res2 = go(function() return ua:options("sip:" .. tcp_addr .. ";transport=tcp") end)
      ua:close()
      return res.status == 200 and res2.status == 200
    end

    it("closes a connection that speaks plain SIP to the TLS port", function()
      local s = raw("127.0.0.2")
      run_until(function() return false end, 0.05)
      s:send("OPTIONS sip:localhost SIP/2.0\r\nContent-Length: 0\r\n\r\n")
      assert.truthy(run_until(function() return closed(s) end, 2))
      s:close()
      assert.is_true(others_served())
      assert.equal(1, srv:stats().tls_failed)
    end)

    it("closes a connection that starts a TLS handshake on the TCP port", function()
      local port = tonumber(tcp_addr:match(":(%d+)$"))
      local s = raw("127.0.0.2", port)
      run_until(function() return false end, 0.05)
      -- a TLS record header (handshake, TLS 1.0 record version) and a ClientHello's start
      s:send("\22\3\1\0\200\1\0\0\196\3\3" .. string.rep("\0", 32))
      assert.truthy(run_until(function() return closed(s) end, 2))
      s:close()
      assert.is_true(others_served())
    end)

    it("drops a truncated record and a slow handshake at the handshake timeout", function()
      local start = socket.gettime()
      local cut = raw("127.0.0.2")
      local slow = raw("127.0.0.2")
      run_until(function() return false end, 0.05)
      cut:send("\22\3\1\64\0\1\0")   -- a 16 KB record announced, 2 bytes of it sent
      local t0, sent = socket.gettime(), 0
      local ok = run_until(function()
        -- a byte of a ClientHello every 20 ms: never idle, never done
        local due = math.floor((socket.gettime() - t0) / 0.02)
        while sent < due and sent < 400 do
          slow:send(sent == 0 and "\22" or "\3")
          sent = sent + 1
        end
        return closed(cut) and closed(slow)
      end, 3)
      local took = socket.gettime() - start
      cut:close()
      slow:close()
      assert.truthy(ok)
      assert.is_true(took >= 0.25)
      assert.is_true(others_served())
      assert.equal(2, srv:stats().tls_failed)
    end)

    it("keeps serving while 1000 handshakes are opened and abandoned", function()
      -- as many as the descriptor limit leaves room for (20000 here; 1024 is common)
      local limit = tonumber(peer.sh("ulimit -n"):match("%d+")) or 1024
      local n = math.min(1000, limit - 200)
      local socks = {}
      for i = 1, n do
        socks[i] = raw("127.0.0.2")
      end
      run_until(function() return srv:stats().connections_accepted >= 8 end, 2)
      run_until(function() return srv:stats().dropped >= n - 8 end, 3)
      -- one IP holds at most an eighth of the handshake slots: 8 wait, the rest are shut
      assert.equal(8, srv:stats().tls_handshakes)
      assert.equal(n - 8, srv:stats().dropped)
      assert.is_true(others_served())
      -- the 8 go at the handshake timeout
      assert.truthy(run_until(function() return srv:stats().tls_handshakes == 0 end, 2))
      local closed_n = 0
      for _, s in ipairs(socks) do
        closed_n = closed_n + (closed(s) and 1 or 0)
        s:close()
      end
      assert.equal(n, closed_n)
      assert.is_true(others_served())
    end)

  end)
end)
