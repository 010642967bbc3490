-- spec/ws_spec.lua: SIP over WebSocket (RFC 7118, RFC 6455) on `serve`'s ws: listener, with a
-- raw TCP socket as the client: the opening handshake accepted and refused, masked, fragmented
-- and control frames, close codes, bad SIP inside good frames, the chat page over plain HTTP,
-- and hostile clients that must not stop serve from serving everyone else.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"
local cli = require "sip.cli"

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="          -- RFC 6455 §1.3's example
local ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="    -- ... and its Sec-WebSocket-Accept

-- A raw client: bytes in and out while the luasip loop runs in this same process.
-- from: the source address (127.0.0.1 unless given; any of 127/8 works on loopback)
local function client(port, from)
  local c = assert(socket.tcp())
  if from then assert(c:bind(from, 0)) end
  assert(c:connect("127.0.0.1", port))
  c:settimeout(0)
  local self = { buf = "", closed = false }
  function self.send(s)
    local i = 1
    while i <= #s do
      local n, err, part = c:send(s, i)
      n = n or part
      if err and err ~= "timeout" then return nil, err end
      i = (n or i - 1) + 1
      if i <= #s then helper.run_until(function() return false end, 0.01) end
    end
    return true
  end
  function self.poll()
    local data, err, part = c:receive(65536)
    data = data or part
    if data and #data > 0 then self.buf = self.buf .. data end
    -- (a reset too: a peer that closes with our bytes unread resets the connection)
    if err and err ~= "timeout" then self.closed = true end
  end
  -- waits until pred(buf) gives something (or the peer closed); returns it
  function self.wait(pred, seconds)
    local got
    helper.run_until(function()
      got = pred(self.buf)
      return got ~= nil or self.closed
    end, seconds or 3, self.poll)
    if got == nil then got = pred(self.buf) end
    return got
  end
  function self.wait_closed(seconds)
    helper.run_until(function() return self.closed end, seconds or 3, self.poll)
    return self.closed
  end
  function self.close() c:close() end
  return self
end

local function upgrade_request(headers)
  local h = { "GET / HTTP/1.1", "Host: 127.0.0.1" }
  for _, l in ipairs(headers) do h[#h + 1] = l end
  return table.concat(h, "\r\n") .. "\r\n\r\n"
end

local GOOD = { "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " .. KEY,
  "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: sip" }

local function http_response(buf)
  local head = buf:match("^(.-\r\n\r\n)")
  return head
end

-- A client frame (masked unless masked == false).
local function frame(opcode, payload, fin, masked)
  local b0 = (fin == false and 0 or 0x80) | opcode
  local n, len = #payload, nil
  local mbit = masked == false and 0 or 0x80
  if n < 126 then
    len = string.char(mbit | n)
  elseif n < 65536 then
    len = string.char(mbit | 126) .. string.pack(">I2", n)
  else
    len = string.char(mbit | 127) .. string.pack(">I8", n)
  end
  if masked == false then
    return string.char(b0) .. len .. payload
  end
  local key = { 0x12, 0x34, 0x56, 0x78 }
  local out = {}
  for i = 1, n do
    out[i] = string.char(payload:byte(i) ~ key[(i - 1) % 4 + 1])
  end
  return string.char(b0) .. len .. string.char(table.unpack(key)) .. table.concat(out)
end

-- The first whole server frame in buf: { fin, opcode, payload, masked }, and the rest.
local function server_frame(buf)
  if #buf < 2 then return nil end
  local b0, b1 = buf:byte(1, 2)
  local n, h = b1 & 0x7f, 2
  if n == 126 then
    if #buf < 4 then return nil end
    n, h = string.unpack(">I2", buf, 3), 4
  elseif n == 127 then
    if #buf < 10 then return nil end
    n, h = string.unpack(">I8", buf, 3), 10
  end
  if #buf < h + n then return nil end
  return { fin = b0 & 0x80 ~= 0, opcode = b0 & 0x0f, payload = buf:sub(h + 1, h + n),
    masked = b1 & 0x80 ~= 0 }, buf:sub(h + n + 1)
end

local function options(branch, extra)
  return table.concat({
    "OPTIONS sip:localhost SIP/2.0",
    "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK" .. branch,
    "Max-Forwards: 70",
    "From: <sip:alice@localhost>;tag=a1",
    "To: <sip:localhost>",
    "Call-ID: ws-" .. branch,
    extra or "CSeq: 1 OPTIONS",
    "", "" }, "\r\n")
end

describe("SIP over WebSocket", function()
  local srv, port

  before_each(function()
    srv = assert(cli.server { listen = { "ws:127.0.0.1:0", "udp:127.0.0.1:0" }, no_auth = true,
      quiet = true })
    port = tonumber(srv.ep:address("ws"):match(":(%d+)$"))
  end)
  after_each(function()
    srv.ep:close()
  end)

  -- a client past the opening handshake
  local function open()
    local c = client(port)
    c.send(upgrade_request(GOOD))
    local head = c.wait(http_response)
    assert.truthy(head and head:match("^HTTP/1.1 101"), head)
    c.buf = c.buf:sub(#head + 1)
    return c
  end

  -- the next server frame a client gets (control frames included)
  local function next_frame(c)
    local f = c.wait(function(b) return (server_frame(b)) end)
    assert.truthy(f, "no frame")
    local _, rest = server_frame(c.buf)
    c.buf = rest
    return f
  end

  describe("the opening handshake (RFC 6455 §4.2)", function()
    it("switches protocols with the accept key and the sip subprotocol", function()
      local c = client(port)
      c.send(upgrade_request(GOOD))
      local head = c.wait(http_response)
      c.close()
      assert.truthy(head:match("^HTTP/1.1 101 "))
      assert.equal(ACCEPT, head:match("\r\n[Ss]ec%-[Ww]eb[Ss]ocket%-[Aa]ccept: ([^\r]+)"))
      assert.equal("sip", head:match("\r\nSec%-WebSocket%-Protocol: ([^\r]+)"))
    end)

    it("refuses an upgrade without a key with 400 and closes", function()
      local c = client(port)
      c.send(upgrade_request { "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: sip" })
      assert.truthy(c.wait_closed())
      assert.truthy(c.buf:match("^HTTP/1.1 400 "), c.buf)
      c.close()
    end)

    it("refuses another version with 426 naming version 13 (§4.4)", function()
      local c = client(port)
      c.send(upgrade_request { "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " .. KEY, "Sec-WebSocket-Version: 8", "Sec-WebSocket-Protocol: sip" })
      assert.truthy(c.wait_closed())
      assert.truthy(c.buf:match("^HTTP/1.1 426 "), c.buf)
      assert.truthy(c.buf:match("\r\nSec%-WebSocket%-Version: 13\r\n"))
      c.close()
    end)

    it("refuses a client that does not ask for the sip subprotocol (RFC 7118 §4)", function()
      local c = client(port)
      c.send(upgrade_request { "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " .. KEY, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: chat" })
      assert.truthy(c.wait_closed())
      assert.truthy(c.buf:match("^HTTP/1.1 400 "), c.buf)
      c.close()
    end)
  end)

  describe("frames", function()
    it("answers a SIP request in a masked text frame with an unmasked text frame", function()
      local c = open()
      c.send(frame(1, options("one")))
      local f = next_frame(c)
      c.close()
      assert.is_true(f.fin)
      assert.equal(1, f.opcode)
      assert.is_false(f.masked)
      local res = assert(sip.parse(f.payload))
      assert.equal(200, res.status)
      assert.truthy(res:header("Via"):match("^SIP/2.0/WS df7jal23ls0d%.invalid"))
    end)

    it("takes a SIP message split over continuation frames, with a ping between them", function()
      local c = open()
      local m = options("split")
      local a, b, d = m:sub(1, 10), m:sub(11, 60), m:sub(61)
      c.send(frame(1, a, false) .. frame(0, b, false) .. frame(9, "are you there", true) ..
        frame(0, d, true))
      local pong = next_frame(c)
      assert.equal(10, pong.opcode)
      assert.equal("are you there", pong.payload)
      local f = next_frame(c)
      c.close()
      local res = assert(sip.parse(f.payload))
      assert.equal(200, res.status)
      assert.equal("ws-split", res.call_id)
    end)

    it("takes a binary frame too, and a message without Content-Length", function()
      local c = open()
      c.send(frame(2, options("bin")))
      local f = next_frame(c)
      c.close()
      assert.equal(200, assert(sip.parse(f.payload)).status)
    end)

    it("answers a SIP message that does not parse with 400 and keeps the connection", function()
      local c = open()
      c.send(frame(1, options("bad", "CSeq: one OPTIONS")))
      local f = next_frame(c)
      assert.truthy(f.payload:match("^SIP/2.0 400 "), f.payload)
      c.send(frame(1, options("good")))
      f = next_frame(c)
      c.close()
      assert.equal(200, assert(sip.parse(f.payload)).status)
    end)
  end)

  describe("closing (RFC 6455 §7)", function()
    it("closes with 1002 on an unmasked client frame", function()
      local c = open()
      c.send(frame(1, options("unmasked"), true, false))
      local f = next_frame(c)
      assert.equal(8, f.opcode)
      assert.equal(1002, string.unpack(">I2", f.payload))
      assert.truthy(c.wait_closed())
      c.close()
    end)

    it("echoes the client's close code and closes", function()
      local c = open()
      c.send(frame(8, string.pack(">I2", 1000) .. "bye"))
      local f = next_frame(c)
      assert.equal(8, f.opcode)
      assert.equal(1000, string.unpack(">I2", f.payload))
      assert.truthy(c.wait_closed())
      c.close()
    end)

    it("closes with 1009 on a message over 64 KiB, in one frame or in fragments", function()
      local c = open()
      c.send(frame(1, string.rep("x", 70000)))
      local f = next_frame(c)
      assert.equal(8, f.opcode)
      assert.equal(1009, string.unpack(">I2", f.payload))
      c.close()
      c = open()
      for _ = 1, 3 do c.send(frame(0 + (_ == 1 and 1 or 0), string.rep("y", 30000), false)) end
      f = next_frame(c)
      assert.equal(1009, string.unpack(">I2", f.payload))
      c.close()
    end)

    it("closes with 1002 on a continuation with no message and on reserved bits", function()
      local c = open()
      c.send(frame(0, "stray", true))
      assert.equal(1002, string.unpack(">I2", next_frame(c).payload))
      c.close()
      c = open()
      c.send(string.char(0xC1, 0x80, 1, 2, 3, 4))
      assert.equal(1002, string.unpack(">I2", next_frame(c).payload))
      c.close()
    end)
  end)

  describe("the chat page over plain HTTP on the same port", function()
    local function get(path)
      local c = client(port)
      c.send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
      c.wait_closed()
      c.close()
      return c.buf
    end

    it("serves GET / with the page's element ids", function()
      local r = get("/")
      assert.truthy(r:match("^HTTP/1.1 200 "))
      assert.truthy(r:match("Content%-Type: text/html"))
      for _, id in ipairs { "user", "password", "login", "status", "to", "text", "send", "messages" } do
        assert.truthy(r:find('id="' .. id .. '"', 1, true), id)
      end
    end)

    it("serves JsSIP from npm's folder and the domain in /config.js", function()
      local r = get("/lib/jssip.min.js")
      assert.truthy(r:match("^HTTP/1.1 200 "), "run `make web` first")
      assert.truthy(#r > 100000)
      assert.truthy(get("/config.js"):find('domain: "localhost"', 1, true))
    end)

    it("gives 404 for paths out of its folders and 405 for other methods", function()
      assert.truthy(get("/../etc/passwd"):match("^HTTP/1.1 404 "))
      assert.truthy(get("/nothing.html"):match("^HTTP/1.1 404 "))
      local c = client(port)
      c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
      c.wait_closed()
      c.close()
      assert.truthy(c.buf:match("^HTTP/1.1 405 "))
    end)
  end)

  describe("a request that changes transport (RFC 5658)", function()
    it("carries two Record-Route values of ours: WS towards the caller, UDP towards the callee", function()
      local bob = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      local got
      bob:on("INVITE", function(req)
        got = req:headers("Record-Route")
        req:reply(486)
      end)
      local done
      sip.spawn(function()
        local reg = bob:register { registrar = "sip:" .. srv.ep:address("udp"),
          aor = "sip:bob@localhost", contact = bob:uri("bob"), expires = 300 }
        done = reg:wait()
      end)
      assert.truthy(helper.run_until(function() return done end, 5))
      local c = open()
      c.send(frame(1, table.concat({
        "INVITE sip:bob@localhost SIP/2.0",
        "Via: SIP/2.0/WS k3j3.invalid;branch=z9hG4bKdrr1",
        "Max-Forwards: 70",
        "From: <sip:alice@localhost>;tag=a1",
        "To: <sip:bob@localhost>",
        "Call-ID: ws-drr",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@k3j3.invalid;transport=ws>",
        "", "" }, "\r\n")))
      local final
      helper.run_until(function()
        local f = server_frame(c.buf)
        while f do
          local _, rest = server_frame(c.buf)
          c.buf = rest
          local res = sip.parse(f.payload)
          if res and res.status >= 200 then final = res end
          f = server_frame(c.buf)
        end
        return final ~= nil
      end, 5, c.poll)
      c.close()
      bob:close()
      assert.equal(486, final and final.status)
      assert.equal(2, #got)
      local udp, ws = srv.ep:address("udp"), srv.ep:address("ws")
      assert.truthy(got[1]:find("<sip:" .. udp .. ";lr;", 1, true), got[1])
      assert.falsy(got[1]:find("transport=", 1, true))
      assert.truthy(got[2]:find("<sip:" .. ws .. ";lr;", 1, true), got[2])
      assert.truthy(got[2]:find(";transport=ws>", 1, true), got[2])
    end)
  end)
end)

-- serve's limits hold 1000 abandoned upgrades while it serves everyone else: WebSocket
-- connections count with the TCP ones (1024 by default, a quarter per source address) and
-- the upgrade is due within the partial-message timeout, cut here from 30 s to a few.
describe("SIP over WebSocket against 1000 abandoned upgrades", function()
  local UPGRADE_MS = 3000       -- the abandoned go after this (serve's partial_timeout_ms)
  local MAX, PER_IP = 1024, 256  -- serve's defaults (sip.endpoint), named here to count
  local srv, port, ua

  setup(function()
    srv = assert(cli.server { listen = { "ws:127.0.0.1:0", "udp:127.0.0.1:0" }, no_auth = true,
      quiet = true, partial_timeout_ms = UPGRADE_MS })
    port = tonumber(srv.ep:address("ws"):match(":(%d+)$"))
    ua = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  teardown(function()
    ua:close()
    srv.ep:close()
  end)

  local function open_ws()
    local c = client(port)
    c.send(upgrade_request(GOOD))
    local head = c.wait(http_response)
    assert.truthy(head and head:match("^HTTP/1.1 101"), head)
    c.buf = c.buf:sub(#head + 1)
    return c
  end

  -- a normal WebSocket client and a UDP client, each with an OPTIONS answered 200
  local function ws_served(branch)
    local c = open_ws()
    c.send(frame(1, options(branch)))
    local f = c.wait(function(b) return (server_frame(b)) end)
    c.close()
    return f and sip.parse(f.payload)
  end
  local function udp_served()
    local res
    sip.spawn(function() res = ua:options("sip:" .. srv.ep:address("udp")) end)
    helper.run_until(function() return res end, 5)
    return res
  end

  local function connections()
    return srv.ep:stats().connections
  end
  local function settle(n)
    return helper.run_until(function() return connections() == n end, 5)
  end

  -- n connections from address `from`, each abandoned: half of them say nothing, the others
  -- half an upgrade request; opened in batches while the loop runs (serve accepts them)
  local function abandon(list, from, n)
    for i = 1, n do
      local c = client(port, from)
      if i % 2 == 0 then c.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n") end
      list[#list + 1] = c
      if i % 100 == 0 then helper.run_for(0.01) end
    end
  end

  -- which of the clients serve has closed (each polled once)
  local function closed(list)
    local n = 0
    for _, c in ipairs(list) do
      if not c.closed then c.poll() end
      if c.closed then n = n + 1 end
    end
    return n
  end

  it("refuses past its limits, serves everyone else, and drops the abandoned on time", function()
    local t0 = socket.gettime()
    local idle = {}
    -- 1000 from four addresses: three at the per-address cap, one below it
    for a, n in ipairs { PER_IP, PER_IP, PER_IP, 1000 - 3 * PER_IP } do
      abandon(idle, "127.0.0." .. (a + 1), n)
    end
    assert.equal(1000, #idle)
    assert.truthy(settle(1000), "serve holds " .. connections() .. " of the 1000")
    assert.equal(0, closed(idle))

    -- one address past its cap: refused at once, nothing said
    local dropped = srv.ep:stats().dropped
    local over = {}
    abandon(over, "127.0.0.2", 8)
    assert.truthy(helper.run_until(function() return closed(over) == 8 end, 5))
    for _, c in ipairs(over) do assert.equal("", c.buf) end
    assert.equal(dropped + 8, srv.ep:stats().dropped)

    -- everyone else is served meanwhile: WebSocket, UDP, and bad input gets its answer
    assert.equal(200, ws_served("during").status)
    assert.equal(200, udp_served().status)
    local g = open_ws()
    g.send(string.rep("\255", 40))   -- garbage after the upgrade: a bad frame, close 1002
    local f = g.wait(function(b) return (server_frame(b)) end)
    assert.equal(8, f.opcode)
    assert.equal(1002, string.unpack(">I2", f.payload))
    assert.truthy(g.wait_closed())
    g.close()
    local h = client(port)
    h.send("\0\1\2garbage\r\n\r\n")  -- garbage instead of an upgrade: 400, closed
    assert.truthy(h.wait_closed())
    assert.truthy(h.buf:match("^HTTP/1.1 400 "), h.buf)
    h.close()
    assert.truthy(settle(1000))

    -- the table full: a new address gets the last slots, the rest are refused; UDP goes on
    local fill = {}
    abandon(fill, "127.0.0.6", MAX - 1000 + 6)
    assert.truthy(helper.run_until(function() return closed(fill) == 6 end, 5))
    assert.equal(MAX, connections())
    local late = client(port)
    late.send(upgrade_request(GOOD))
    assert.truthy(late.wait_closed())
    assert.equal("", late.buf)
    late.close()
    assert.equal(200, udp_served().status)
    -- (all of that inside the upgrade timeout, or the counts above would not hold)
    assert.truthy(socket.gettime() - t0 < UPGRADE_MS / 1000, "too slow to show the limits")
    assert.equal(0, closed(idle))

    -- the upgrade timeout: every abandoned connection is closed by serve, none by us
    for _, c in ipairs(fill) do idle[#idle + 1] = c end
    assert.truthy(helper.run_until(function() return closed(idle) == #idle end,
      UPGRADE_MS / 1000 + 5), closed(idle) .. " of " .. #idle .. " closed")
    assert.truthy(settle(0))
    for _, c in ipairs(idle) do c.close() end
    for _, c in ipairs(over) do c.close() end
    assert.equal(200, ws_served("after").status)
    assert.equal(200, udp_served().status)
  end)
end)

describe("a Lua UA over a WebSocket it opens", function()
  local certs = require "tls_certs"
  local dir, srv, alice, bob
  local USERS = { alice = { password = "secret" }, bob = { password = "secret" } }
  local SDP = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40000,
    codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })

  setup(function()
    dir = certs.make()
  end)
  teardown(function()
    certs.remove(dir)
  end)
  before_each(function()
    srv = assert(cli.server { listen = { "ws:127.0.0.1:0", "wss:127.0.0.1:0" }, users = USERS,
      quiet = true, cert = dir .. "/server.pem", key = dir .. "/server.key" })
    alice = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    bob = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, tls = { ca = dir .. "/ca.pem" } })
  end)
  after_each(function()
    alice:close()
    bob:close()
    srv.ep:close()
  end)

  local function go(fn)
    local done, out = false, nil
    sip.spawn(function()
      out = { fn() }
      done = true
    end)
    assert.truthy(helper.run_until(function() return done end, 10), "timed out")
    return table.unpack(out)
  end

  local function proxy(kind)
    return "sip:" .. srv.ep:address(kind) .. ";transport=" .. kind
  end

  it("registers with an .invalid Contact over ws: and gets the echo bot's MESSAGE on it", function()
    local got
    alice:on("MESSAGE", function(req)
      got = req
      req:reply(200)
    end)
    local state, res = go(function()
      local reg = alice:register { registrar = proxy("ws"), aor = "sip:alice@localhost",
        user = "alice", password = "secret", expires = 300 }
      local s = reg:wait()
      return s, alice:message("sip:echo@localhost", "hello over ws", { target = proxy("ws"),
        from = "sip:alice@localhost", user = "alice", password = "secret" })
    end)
    assert.equal("registered", state)
    assert.equal(200, res.status)
    local b = srv.registrar:lookup("sip:alice@localhost")[1]
    assert.truthy(b.uri:match("^sip:alice@%x+%.invalid;transport=ws$"), b.uri)
    assert.truthy(helper.run_until(function() return got end, 5))
    assert.equal("hello over ws", got.body)
    assert.truthy(got:header("Via"):match("^SIP/2.0/WS "))
    assert.truthy(got.source:match("^ws:"), got.source)
  end)

  it("calls from ws: to a UA on wss: through serve: INVITE, ACK and BYE over the WebSockets", function()
    local uas, ended, rr, contact
    bob:on("INVITE", function(req)
      rr = req:headers("Record-Route")
      contact = req:header("Contact")
      uas = assert(req:answer { sdp = SDP })
      ended = uas:wait()
    end)
    local a_state, b_state, call, res, bye = go(function()
      local ra = alice:register { registrar = proxy("ws"), aor = "sip:alice@localhost",
        user = "alice", password = "secret", expires = 300 }
      local rb = bob:register { registrar = proxy("wss"), aor = "sip:bob@localhost",
        user = "bob", password = "secret", expires = 300 }
      local sa, sb = ra:wait(), rb:wait()
      local c, r = alice:call("sip:bob@localhost", { sdp = SDP, target = proxy("ws"),
        from = "sip:alice@localhost", user = "alice", password = "secret" })
      return sa, sb, c, r, c and c:bye()
    end)
    assert.equal("registered", a_state)
    assert.equal("registered", b_state)
    assert.truthy(call, tostring(res))
    assert.equal(200, res.status)
    assert.equal(200, bye.status)
    assert.truthy(helper.run_until(function() return ended end, 5))
    assert.equal("remote bye", ended)
    -- WS in, WSS out: a Record-Route for each side (RFC 5658)
    assert.equal(2, #rr)
    assert.truthy(rr[1]:find(";transport=wss>", 1, true), rr[1])
    assert.truthy(rr[2]:find(";transport=ws>", 1, true), rr[2])
    -- the caller's Contact is .invalid: the BYE and the ACK found the connections by name
    assert.truthy(contact:match("^<sip:%w+@%x+%.invalid;transport=ws>"), contact)
  end)
end)
