-- spec/wire_spec.lua: hostile peers on real sockets against a real endpoint on 127.0.0.1;
-- each case checks the endpoint's answer (400, drop, close, 503) and then serves a good client.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"
local ratelimit = require "sip.ratelimit"

local loop = sip.sched.loop

local STEP_MS = 10   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end

-- Lets the endpoint read what a flood queued (it takes 64 datagrams per wakeup).
local function drain()
  for _ = 1, 8 do
    loop:step(0)
  end
end

-- Runs the loop for a while, whatever happens.
local function settle(seconds)
  helper.run_for(seconds, nil, STEP_MS)
end

local function hostport(ep, kind)
  local host, port = ep:address(kind):match("^(.*):(%d+)$")
  return host, tonumber(port)
end

local function udp_peer(ip)
  local u = assert(socket.udp())
  assert(u:setsockname(ip or "127.0.0.1", 0))
  u:settimeout(0)
  return u
end

-- Datagrams that reached the peer while the loop ran.
local function udp_replies(u, seconds, want)
  local got = {}
  run_until(function()
    while true do
      local d = u:receive()
      if not d then
        break
      end
      got[#got + 1] = d
    end
    return want and #got >= want
  end, seconds or 0.3)
  return got
end

local function crlf(lines)
  return table.concat(lines, "\r\n") .. "\r\n"
end

-- A request from peer u (a luasocket UDP or TCP socket); `extra` lines before
-- Content-Length, `cl` false for none or a literal value.
local function request(o)
  o = o or {}
  local _, port = o.peer:getsockname()
  local lines = {
    (o.method or "OPTIONS") .. " " .. (o.uri or "sip:wire@127.0.0.1") .. " SIP/2.0",
    "Via: SIP/2.0/" .. (o.transport or "UDP") .. " 127.0.0.1:" .. port .. ";rport;branch=z9hG4bK"
      .. (o.branch or tostring(math.random(1, 1e9))),
    "Max-Forwards: 70",
    "From: <sip:peer@127.0.0.1>;tag=" .. (o.tag or "wire1"),
    "To: " .. (o.to or "<sip:wire@127.0.0.1>"),
    "Call-ID: " .. (o.call_id or ("wire-" .. math.random(1, 1e9))),
    "CSeq: " .. (o.cseq or 1) .. " " .. (o.method or "OPTIONS"),
  }
  for _, l in ipairs(o.extra or {}) do
    lines[#lines + 1] = l
  end
  local body = o.body or ""
  if o.cl ~= false then
    lines[#lines + 1] = "Content-Length: " .. (o.cl or #body)
  end
  lines[#lines + 1] = ""
  return crlf(lines) .. body
end

local function status_of(d)
  return tonumber(d and d:match("^SIP/2%.0 (%d%d%d)"))
end

-- A well-behaved UDP client: one OPTIONS, answered 200.
local function serves_udp(ep, ip)
  local u = udp_peer(ip)
  local host, port = hostport(ep, "udp")
  u:sendto(request { peer = u, uri = "sip:" .. host .. ":" .. port }, host, port)
  local got = udp_replies(u, 3, 1)
  u:close()
  return status_of(got[1])
end

local function tcp_connect(ep)
  local host, port = hostport(ep, "tcp")
  local c = assert(socket.tcp())
  assert(c:connect(host, port))
  c:settimeout(0)
  return c
end

-- Reads from a TCP peer until a whole response head is in, or it is closed.
local function tcp_response(c, seconds)
  local buf, closed = "", false
  run_until(function()
    local data, err, partial = c:receive(65536)
    buf = buf .. (data or partial or "")
    closed = err == "closed"
    return closed or buf:find("\r\n\r\n", 1, true)
  end, seconds or 3)
  return status_of(buf), buf, closed
end

-- A well-behaved TCP client on connection c (a new one when c is nil).
local function serves_tcp(ep, c)
  local own = not c
  c = c or tcp_connect(ep)
  c:send(request { peer = c, transport = "TCP" })
  local code = tcp_response(c)
  if own then
    c:close()
  end
  return code
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function garbage(n, seed)
  local t = {}
  for i = 1, n do
    seed = (seed * 1103515245 + 12345) % 2147483648
    t[i] = string.char(seed % 256)
  end
  return table.concat(t)
end

describe("UDP datagrams from a hostile peer", function()
  local ep, peer, host, port
  before_each(function()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
    peer = udp_peer()
    host, port = hostport(ep, "udp")
  end)
  after_each(function()
    peer:close()
    ep:close()
  end)

  -- Sends bytes, returns what came back and the change in the endpoint's counters.
  local function send(bytes)
    local before = ep:stats()
    assert(peer:sendto(bytes, host, port))
    local got = udp_replies(peer, 0.3)
    local after = ep:stats()
    local delta = {}
    for k, v in pairs(after) do
      delta[k] = v - (before[k] or 0)
    end
    return got, delta
  end

  local function answered_400(bytes, reason)
    local got = send(bytes)
    assert.equal(1, #got)
    assert.equal("SIP/2.0 400 " .. reason, got[1]:match("^[^\r]*"))
    assert.matches("\r\nVia: SIP/2%.0/UDP 127%.0%.0%.1:%d+;rport;branch=z9hG4bK", got[1])
    assert.equal(200, serves_udp(ep))
  end

  it("ignores a 0-byte datagram and serves the next client", function()
    local got, d = send("")
    assert.same({}, got)
    assert.equal(0, d.udp_in)
    assert.equal(200, serves_udp(ep))
  end)

  it("drops a datagram over max_size silently and counts it", function()
    local small = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, max_size = 32768 })
    local h, p = hostport(small, "udp")
    local before = small:stats()
    assert(peer:sendto(request { peer = peer, body = ("x"):rep(60000) }, h, p))
    local got = udp_replies(peer, 0.3)
    assert.same({}, got)
    assert.equal(before.dropped + 1, small:stats().dropped)
    assert.equal(before.parse_errors, small:stats().parse_errors)
    assert.equal(200, serves_udp(small))
    small:close()
  end)

  it("cannot receive a 65 KB datagram: IPv4 UDP stops at 65507 bytes, under the default limit",
    function()
      -- so the default max_size (65535) is never what drops a UDP datagram; the kernel
      -- refuses to send it, and the largest one that does go is answered or dropped
      local ok, err = peer:sendto(("x"):rep(65 * 1024), host, port)
      assert.is_nil(ok)
      assert.matches("too long", err)
      local got, d = send(request { peer = peer, body = ("x"):rep(65507 - 400) }:sub(1, 65507))
      assert.equal(1, d.udp_in)
      assert.is_true(#got <= 1)
      assert.equal(200, serves_udp(ep))
    end)

  it("drops binary garbage silently, counting a parse error", function()
    local got, d = send(garbage(2000, 42))
    assert.same({}, got)
    assert.equal(1, d.parse_errors)
    assert.equal(200, serves_udp(ep))
  end)

  it("drops a datagram of NUL bytes silently", function()
    local got, d = send(("\0"):rep(512))
    assert.same({}, got)
    assert.equal(1, d.parse_errors)
    assert.equal(200, serves_udp(ep))
  end)

  it("answers 400 to NUL bytes inside a request with a readable Via", function()
    answered_400(request { peer = peer, call_id = "a\0\0b" }, "bad Call-ID")
  end)

  it("answers 400 to a negative Content-Length", function()
    answered_400(request { peer = peer, cl = "-1", body = "x" }, "bad Content-Length")
  end)

  it("answers 400 to a huge Content-Length", function()
    answered_400(request { peer = peer, cl = "99999999999999999999", body = "x" },
      "bad Content-Length")
    answered_400(request { peer = peer, cl = "4294967297", body = "x" }, "bad Content-Length")
  end)

  it("answers 400 to a non-numeric Content-Length", function()
    answered_400(request { peer = peer, cl = "abc", body = "x" }, "bad Content-Length")
  end)

  it("answers 400 to a Content-Length larger than the datagram", function()
    answered_400(request { peer = peer, cl = "1000", body = "short" },
      "Content-Length larger than message")
  end)

  it("takes a Content-Length smaller than the body and drops the rest (§18.3)", function()
    local got = send(request { peer = peer, method = "MESSAGE", cl = "2", body = "abcdef" })
    -- no MESSAGE handler: 405, which shows the request was accepted
    assert.equal(405, status_of(got[1]))
  end)

  it("drops bad Content-Length silently when no Via can be read", function()
    local bytes = request { peer = peer, cl = "-1", body = "x" }:gsub("Via:[^\r]*\r\n", "")
    local got, d = send(bytes)
    assert.same({}, got)
    assert.equal(1, d.parse_errors)
    assert.equal(200, serves_udp(ep))
  end)

  it("refuses 1000 Via headers without a reply too big to build (drop)", function()
    local extra = {}
    for i = 1, 1000 do
      extra[i] = "Via: SIP/2.0/UDP 10.0." .. (i % 250) .. ".1;branch=z9hG4bK" .. i
    end
    local got, d = send(request { peer = peer, extra = extra })
    assert.equal(1, d.parse_errors)
    -- "too many headers"; a 400 would echo 1000 Vias, more than the endpoint builds
    assert.is_true(#got == 0 or status_of(got[1]) == 400)
    assert.equal(200, serves_udp(ep))
  end)

  it("answers 400 to a 64 KB header line", function()
    answered_400(request { peer = peer, extra = { "Subject: " .. ("a"):rep(64000) } },
      "header line too long")
  end)

  it("answers 400 to an unterminated quote", function()
    answered_400(request { peer = peer, extra = { 'Contact: "unterminated <sip:a@127.0.0.1>' } },
      "bad Contact")
  end)

  it("answers 400 to an unterminated <", function()
    answered_400(request { peer = peer, to = "<sip:wire@127.0.0.1" }, "bad To")
    answered_400(request { peer = peer, extra = { "Contact: <sip:a@127.0.0.1" } }, "bad Contact")
  end)

  it("keeps RSS within 30 MB over a 20 000-datagram garbage flood", function()
    collectgarbage()
    local before = rss_kb()
    local kinds = { garbage(1400, 7), ("\0"):rep(300),
      request { peer = peer, cl = "-1", body = "x" }, request { peer = peer, cl = "abc" } }
    for i = 1, 20000 do
      peer:sendto(kinds[i % #kinds + 1], host, port)
      if i % 200 == 0 then
        drain()
        udp_replies(peer, 0)
      end
    end
    settle(0.3)
    udp_replies(peer, 0)
    collectgarbage()
    local after = rss_kb()
    assert.is_true(after - before < 30 * 1024,
      ("RSS grew %d kB (before %d kB)"):format(after - before, before))
    assert.is_true(ep:stats().parse_errors > 15000)
    assert.equal(200, serves_udp(ep))
  end)
end)

describe("received and rport in the top Via (§18.2.1, RFC 3581)", function()
  local ep, peer, host, port, pport
  before_each(function()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    peer = udp_peer()
    host, port = hostport(ep, "udp")
    pport = select(2, peer:getsockname())
  end)
  after_each(function()
    peer:close()
    ep:close()
  end)

  -- OPTIONS with these Via lines on top; the Via lines of the 200 that comes back.
  local function vias_back(via_lines)
    local lines = { "OPTIONS sip:" .. host .. ":" .. port .. " SIP/2.0" }
    for _, l in ipairs(via_lines) do
      lines[#lines + 1] = l
    end
    for _, l in ipairs { "Max-Forwards: 70", "From: <sip:peer@127.0.0.1>;tag=rv",
      "To: <sip:wire@127.0.0.1>", "Call-ID: rv-" .. math.random(1, 1e9), "CSeq: 1 OPTIONS",
      "Content-Length: 0", "" } do
      lines[#lines + 1] = l
    end
    assert(peer:sendto(crlf(lines), host, port))
    local got = udp_replies(peer, 3, 1)
    assert.equal(200, status_of(got[1]))
    local out = {}
    for v in got[1]:gmatch("\r\nVia: ([^\r]*)") do
      out[#out + 1] = v
    end
    return out
  end

  it("fills a bare rport and adds received", function()
    assert.same({ "SIP/2.0/UDP client.example:5060;branch=z9hG4bKa1;rport=" .. pport ..
      ";received=127.0.0.1" }, vias_back { "Via: SIP/2.0/UDP client.example:5060;branch=z9hG4bKa1;rport" })
  end)
  it("adds received with a bare rport even when the sent-by is the source address", function()
    assert.same({ "SIP/2.0/UDP 127.0.0.1:" .. pport .. ";rport=" .. pport .. ";branch=z9hG4bKa2" ..
      ";received=127.0.0.1" }, vias_back { "Via: SIP/2.0/UDP 127.0.0.1:" .. pport .. ";rport;branch=z9hG4bKa2" })
  end)
  it("leaves a Via alone that names the source address and asks for no rport", function()
    local via = "SIP/2.0/UDP 127.0.0.1:" .. pport .. ";branch=z9hG4bKa3"
    assert.same({ via }, vias_back { "Via: " .. via })
  end)
  it("writes a folded top Via unfolded rather than dropping it", function()
    assert.same({ "SIP/2.0/UDP client.example:5060 ;branch=z9hG4bKa4;rport=" .. pport ..
      ";received=127.0.0.1" }, vias_back { "Via: SIP/2.0/UDP client.example:5060\r\n ;branch=z9hG4bKa4;rport" })
  end)
  it("fills the rport parameter, not a host named rport", function()
    assert.same({ "SIP/2.0/UDP rport;branch=z9hG4bKa5;rport=" .. pport .. ";received=127.0.0.1" },
      vias_back { "Via: SIP/2.0/UDP rport;branch=z9hG4bKa5;rport" })
  end)
  it("changes only the first value of a combined Via line", function()
    local got = vias_back { "Via: SIP/2.0/UDP client.example;branch=z9hG4bKa6;rport, SIP/2.0/UDP h2.example;branch=z9hG4bKb6" }
    assert.equal("SIP/2.0/UDP client.example;branch=z9hG4bKa6;rport=" .. pport .. ";received=127.0.0.1",
      got[1])
    assert.equal("SIP/2.0/UDP h2.example;branch=z9hG4bKb6", got[2])
  end)
end)

describe("where responses go (§18.2.2)", function()
  local function options(via, host, port)
    return crlf { "OPTIONS sip:x@" .. host .. ":" .. port .. " SIP/2.0", via, "Max-Forwards: 70",
      "From: <sip:a@127.0.0.1>;tag=1", "To: <sip:x@127.0.0.1>",
      "Call-ID: dest-" .. math.random(1, 1e9), "CSeq: 1 OPTIONS", "Content-Length: 0", "" }
  end

  it("opens a connection to the sent-by port when the request's TCP connection is gone", function()
    local ep = assert(sip.endpoint { listen = { "tcp:127.0.0.1:0" } })
    ep:on("OPTIONS", function(req) sip.sleep(0.2); req:reply(200) end)
    local host, port = hostport(ep, "tcp")
    local lst = assert(socket.bind("127.0.0.1", 0))   -- the client's own listener
    lst:settimeout(0)
    local lport = select(2, lst:getsockname())
    local c = tcp_connect(ep)
    c:send(options("Via: SIP/2.0/TCP 127.0.0.1:" .. lport .. ";branch=z9hG4bKgone1", host, port))
    settle(0.05)
    c:close()   -- before the answer
    local got, s
    run_until(function()   -- the endpoint's loop must run to connect and write
      s = s or lst:accept()
      if s then
        s:settimeout(0)
        got = s:receive("*l")
      end
      return got
    end, 3)
    if s then s:close() end
    lst:close()
    ep:close()
    assert.equal("SIP/2.0 200 OK", got)
  end)

  it("sends a UDP response to the maddr of the top Via, at the sent-by port", function()
    local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local host, port = hostport(ep, "udp")
    local peer, there = udp_peer(), udp_peer("127.0.0.2")   -- 127/8 is all loopback
    local tport = select(2, there:getsockname())
    assert(peer:sendto(options("Via: SIP/2.0/UDP 127.0.0.1:" .. tport ..
      ";branch=z9hG4bKmaddr1;maddr=127.0.0.2", host, port), host, port))
    local got = udp_replies(there, 3, 1)
    local at_source = udp_replies(peer, 0.1)
    peer:close()
    there:close()
    ep:close()
    assert.equal(200, status_of(got[1]))
    assert.same({}, at_source)
  end)
end)

describe("TCP peers that hold connections", function()
  local ep
  before_each(function()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" },
      partial_timeout_ms = 300, idle_timeout_ms = 5000, max_connections = 100 })
  end)
  after_each(function()
    ep:close()
  end)

  -- Writes bytes one at a time every `gap` seconds until the endpoint closes the connection;
  -- returns seconds from the first byte to the close, and bytes written.
  local function trickle(c, bytes, gap)
    local t0, n = socket.gettime(), 0
    local closed = false
    local next_at = t0
    run_until(function()
      local _, err = c:receive(1)
      if err == "closed" then
        closed = true
        return true
      end
      if socket.gettime() >= next_at and n < #bytes then
        n = n + 1
        c:send(bytes:sub(n, n))
        next_at = next_at + gap
      end
      return false
    end, 3)
    return closed and socket.gettime() - t0 or nil, n
  end

  it("closes a slowloris peer after partial_timeout_ms though it is never idle", function()
    local c = tcp_connect(ep)
    local msg = request { peer = c, transport = "TCP" }
    local took, n = trickle(c, msg, 0.1)
    c:close()
    assert.is_not_nil(took, "still open after 3 s")
    -- a byte every 100 ms, so idleness never reached 300 ms; the message's age did
    assert.is_true(took >= 0.25 and took < 1.0, "closed after " .. tostring(took))
    assert.is_true(n < #msg)
    assert.equal(200, serves_tcp(ep))
    assert.equal(200, serves_udp(ep))
  end)

  it("closes a peer that connects and never says anything", function()
    local c = tcp_connect(ep)
    local t0 = socket.gettime()
    local _, _, closed = tcp_response(c, 2)
    c:close()
    assert.is_true(closed)
    assert.is_true(socket.gettime() - t0 < 1.0)
    assert.equal(200, serves_tcp(ep))
  end)

  it("closes a peer that never finishes its headers", function()
    local c = tcp_connect(ep)
    local head = request { peer = c, transport = "TCP" }:match("^(.-\r\n)\r\n")
    c:send(head)
    local t0 = socket.gettime()
    local _, _, closed = tcp_response(c, 2)
    c:close()
    assert.is_true(closed)
    assert.is_true(socket.gettime() - t0 < 1.0)
    assert.equal(200, serves_tcp(ep))
  end)

  it("answers 400 on a stream to a bad Content-Length and stays within bounds", function()
    local c = tcp_connect(ep)
    c:send(request { peer = c, transport = "TCP", cl = "abc" })
    local code, _, closed = tcp_response(c, 2)
    c:close()
    -- a stream cannot be reframed past an unreadable length: 400, or a close
    assert.is_true(code == 400 or closed)
    assert.equal(200, serves_tcp(ep))
  end)

  it("stays within max_connections under 3000 connections and keeps serving", function()
    local good = tcp_connect(ep)   -- a client that was there before the flood
    assert.equal(200, serves_tcp(ep, good))
    local flood = {}
    local host, port = hostport(ep, "tcp")
    for i = 1, 3000 do
      local s = socket.tcp()
      s:settimeout(0)
      s:connect(host, port)
      flood[i] = s
      if i % 50 == 0 then
        loop:step(0)
        assert.is_true(ep:stats().connections <= 100)
      end
    end
    settle(0.3)
    -- (the last connects may still be queued in the kernel on a loaded machine)
    run_until(function() return ep:stats().dropped >= 2800 end, 3)
    local st = ep:stats()
    assert.is_true(st.connections <= 100, "open: " .. st.connections)
    assert.is_true(st.dropped >= 2800, "dropped: " .. st.dropped)
    assert.equal(200, serves_tcp(ep, good))
    assert.equal(200, serves_udp(ep))
    for _, s in ipairs(flood) do
      s:close()
    end
    good:close()
    -- the flood's connections go as its peers close them; new clients get in again
    assert.is_true(run_until(function() return ep:stats().connections == 0 end, 3))
    assert.equal(200, serves_tcp(ep))
  end)
end)

describe("a storm of responses for unknown transactions", function()
  it("drops 5000 of them silently as stray and keeps serving", function()
    local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local host, port = hostport(ep, "udp")
    local peer = udp_peer()
    local _, pport = peer:getsockname()
    local before = ep:stats()
    for i = 1, 5000 do
      local method = i % 2 == 0 and "OPTIONS" or "MESSAGE"
      peer:sendto(crlf {
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. pport .. ";branch=z9hG4bK" .. math.random(1, 1e9),
        "From: <sip:a@127.0.0.1>;tag=x" .. i,
        "To: <sip:b@127.0.0.1>;tag=y" .. i,
        "Call-ID: storm-" .. i,
        "CSeq: 1 " .. method,
        "Content-Length: 0",
        "",
      }, host, port)
      if i % 200 == 0 then
        drain()
      end
    end
    local got = udp_replies(peer, 0.5)
    local st = ep:stats()
    assert.same({}, got)
    local n = st.responses_in - before.responses_in
    assert.is_true(n >= 4500, "responses in: " .. n)   -- loopback may lose a few
    assert.equal(n, st.stray_responses - before.stray_responses)
    assert.equal(before.udp_out, st.udp_out)
    assert.equal(200, serves_udp(ep))
    peer:close()
    ep:close()
  end)

  it("sends nothing back for 2xx to INVITEs it never sent", function()
    local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local host, port = hostport(ep, "udp")
    local peer = udp_peer()
    local _, pport = peer:getsockname()
    for i = 1, 500 do
      peer:sendto(crlf {
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. pport .. ";branch=z9hG4bK" .. math.random(1, 1e9),
        "From: <sip:a@127.0.0.1>;tag=x" .. i,
        "To: <sip:b@127.0.0.1>;tag=y" .. i,
        "Call-ID: storm-inv-" .. i,
        "Contact: <sip:b@127.0.0.1:" .. pport .. ">",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
        "",
      }, host, port)
    end
    local got = udp_replies(peer, 0.5)
    assert.same({}, got)
    assert.equal(0, ep:stats().udp_out)
    assert.equal(200, serves_udp(ep))
    peer:close()
    ep:close()
  end)
end)

describe("sip.ratelimit", function()
  local t
  local function clock() return t end
  before_each(function() t = 1000 end)

  local function req(src) return { source = src } end

  it("lets a source spend its burst, then refuses with a Retry-After", function()
    local l = ratelimit.new { rate = 2, burst = 3, now = clock }
    local r = req("udp:10.0.0.1:5060")
    assert.is_true(l:allow(r))
    assert.is_true(l:allow(r))
    assert.is_true(l:allow(r))
    local ok, retry, report = l:allow(r)
    assert.is_false(ok)
    assert.equal(1, retry)
    assert.is_true(report)
    local _, _, again = l:allow(r)
    assert.is_false(again)   -- reported once per window
    assert.equal(2, l.refused)
  end)

  it("refills at rate tokens per second", function()
    local l = ratelimit.new { rate = 10, burst = 1, now = clock }
    local r = req("udp:10.0.0.1:5060")
    assert.is_true(l:allow(r))
    assert.is_false(l:allow(r))
    t = t + 0.1
    assert.is_true(l:allow(r))
    assert.is_false(l:allow(r))
    t = t + 60
    assert.is_true(l:allow(r))
    assert.is_false(l:allow(r))   -- refilled only up to the burst
  end)

  it("keys by source IP by default: ports of one host share, other hosts do not", function()
    local l = ratelimit.new { rate = 1, burst = 1, now = clock }
    assert.is_true(l:allow(req("udp:10.0.0.1:5060")))
    assert.is_false(l:allow(req("tcp:10.0.0.1:40000")))
    assert.is_true(l:allow(req("udp:10.0.0.2:5060")))
    assert.is_true(l:allow(req("udp:[2001:db8::1]:5060")))
    assert.is_false(l:allow(req("tcp:[2001:db8::1]:5061")))
  end)

  it("takes a key function", function()
    local l = ratelimit.new { rate = 1, burst = 1, now = clock,
      key = function(r) return r.user end }
    assert.is_true(l:allow { user = "a" })
    assert.is_false(l:allow { user = "a" })
    assert.is_true(l:allow { user = "b" })
  end)

  it("reports a refused source again after the log window", function()
    local l = ratelimit.new { rate = 1, burst = 1, now = clock, log_window = 10 }
    local r = req("udp:10.0.0.1:5060")
    l:allow(r)
    assert.is_true(select(3, l:allow(r)))
    t = t + 5
    l:allow(r)   -- spends the refill
    assert.is_false(select(3, l:allow(r)))
    t = t + 6
    l:allow(r)
    assert.is_true(select(3, l:allow(r)))
  end)

  it("holds at most max_sources buckets under a spoofed-source flood", function()
    local l = ratelimit.new { rate = 1, burst = 2, now = clock, max_sources = 100 }
    for i = 1, 10000 do
      l:allow(req("udp:10." .. (i // 65536) .. "." .. (i // 256 % 256) .. "." .. (i % 256) .. ":5060"))
    end
    assert.is_true(l:sources() <= 101)
    -- the newcomers past the bound share one bucket, so the flood is limited as a whole
    assert.is_true(l.refused > 9000)
    t = t + 10   -- all full again: swept to make room
    assert.is_true(l:allow(req("udp:192.0.2.1:5060")))
    assert.is_true(l:sources() <= 2)
  end)

  it("rejects nonsense options", function()
    assert.has_error(function() ratelimit.new { rate = 0 } end)
    assert.has_error(function() ratelimit.new { rate = 5, burst = 0 } end)
  end)
end)

describe("luasip serve under a flood", function()
  local cli = require "sip.cli"

  -- REGISTERs from u; statuses of the responses.
  local function register_flood(srv, u, n)
    local host, port = hostport(srv.ep, "udp")
    local _, uport = u:getsockname()
    local codes = {}
    for i = 1, n do
      u:sendto(request { peer = u, method = "REGISTER", uri = "sip:localhost", cseq = i,
        call_id = "flood-" .. uport, to = "<sip:flood@localhost>",
        extra = { "Contact: <sip:flood@127.0.0.1:" .. uport .. ">", "Expires: 60" } }, host, port)
      if i % 20 == 0 then
        for _, d in ipairs(udp_replies(u, 0)) do
          codes[#codes + 1] = d
        end
      end
    end
    for _, d in ipairs(udp_replies(u, 0.5, n - #codes)) do
      codes[#codes + 1] = d
    end
    local count = {}
    for _, d in ipairs(codes) do
      local s = status_of(d)
      count[s] = (count[s] or 0) + 1
    end
    return count, codes
  end

  it("limits 200 requests/s per source IP with a burst of 400 by default", function()
    local srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, no_auth = true, quiet = true })
    assert.equal(200, srv.limiter.rate)
    assert.equal(400, srv.limiter.burst)
    srv.stop()
    local off = assert(cli.server { listen = { "udp:127.0.0.1:0" }, no_auth = true, quiet = true,
      rate_limit = 0 })
    assert.is_nil(off.limiter)
    off.stop()
  end)

  it("answers a REGISTER flood from one source 503 with Retry-After, logged once, and serves others",
    function()
      local lines = {}
      local srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, no_auth = true, quiet = true,
        rate_limit = 20, rate_burst = 20, rate_exempt = {},   -- loopback is exempt by default
        log = function(fmt, ...) lines[#lines + 1] = fmt:format(...) end })
      local flood = udp_peer("127.0.0.1")
      local count, raw = register_flood(srv, flood, 300)
      assert.is_true((count[200] or 0) >= 20 and (count[200] or 0) <= 60,
        "200s: " .. tostring(count[200]))
      assert.is_true((count[503] or 0) >= 200, "503s: " .. tostring(count[503]))
      for _, d in ipairs(raw) do
        if status_of(d) == 503 then
          assert.matches("\r\nRetry%-After: %d+\r\n", d)
          break
        end
      end
      local limited = 0
      for _, l in ipairs(lines) do
        if l:match("^rate limit: 127%.0%.0%.1 ") then
          limited = limited + 1
        end
      end
      assert.equal(1, limited)
      -- another source (127.0.0.2 is loopback too) is served meanwhile
      local other = udp_peer("127.0.0.2")
      local c2 = register_flood(srv, other, 5)
      assert.equal(5, c2[200])
      assert.equal(200, serves_udp(srv.ep, "127.0.0.2"))
      other:close()
      flood:close()
      srv.stop()
    end)

  it("ep:rate_limit refuses in the core: 503 + Retry-After, ACK passes, reported once", function()
    local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local seen, reports = 0, {}
    ep:on("OPTIONS", function(req) seen = seen + 1; req:reply(200) end)
    ep:rate_limit { rate = 1, burst = 2, exempt = {} }   -- loopback is exempt by default
    function ep.on_rate_limited(ip, rate, retry) reports[#reports + 1] = { ip, rate, retry } end
    local host, port = hostport(ep, "udp")
    local u = udp_peer()
    for i = 1, 6 do
      u:sendto(request { peer = u, uri = "sip:" .. host .. ":" .. port, branch = "rl" .. i },
        host, port)
    end
    local got = udp_replies(u, 2, 6)
    local count = {}
    for _, d in ipairs(got) do
      local st = status_of(d)
      count[st] = (count[st] or 0) + 1
      if st == 503 then
        assert.matches("\r\nRetry%-After: 1\r\n", d)
        assert.matches("^SIP/2%.0 503 Rate Limited\r\n", d)
      end
    end
    assert.same({ [200] = 2, [503] = 4 }, count)
    assert.equal(2, seen)   -- the refused ones never reached Lua
    assert.same({ { "127.0.0.1", 1, 1 } }, reports)
    assert.equal(4, ep:stats().rate_limited)
    -- an ACK is no new request: it passes (a stray one is simply absorbed)
    u:sendto(request { peer = u, method = "ACK", uri = "sip:" .. host .. ":" .. port }, host, port)
    assert.equal(0, #udp_replies(u, 0.3))
    assert.equal(4, ep:stats().rate_limited)
    -- requests the endpoint sends itself (its Via on top, from its own port) are never refused
    for _ = 1, 3 do
      assert.equal(200, ep:options("sip:" .. host .. ":" .. port).status)
    end
    ep:rate_limit(false)
    assert.same({ 0, 0, 0 }, { ep.core:rate_limit() })
    u:close()
    ep:close()
  end)

  it("ep:rate_limit passes trusted address blocks: loopback by default, CIDRs when given",
    function()
      local function refused(exempt, from)
        local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
        ep:on("OPTIONS", function(req) req:reply(200) end)
        ep:rate_limit { rate = 1, burst = 1, exempt = exempt }
        local host, port = hostport(ep, "udp")
        local u = udp_peer(from)
        for i = 1, 5 do
          u:sendto(request { peer = u, uri = "sip:" .. host .. ":" .. port, branch = "ex" .. i },
            host, port)
        end
        local got = udp_replies(u, 2, 5)
        u:close()
        local n = ep:stats().rate_limited
        ep:close()
        assert.equal(5, #got)
        return n
      end
      assert.equal(0, refused(nil, "127.0.0.1"))                   -- loopback, the default
      assert.equal(0, refused({ "127.0.0.2/31" }, "127.0.0.3"))     -- inside the block
      assert.equal(4, refused({ "127.0.0.2/31" }, "127.0.0.1"))     -- outside it
      assert.equal(0, refused({ "10.0.0.0/8", "127.0.0.0/8" }, "127.0.0.5"))
      assert.equal(0, refused({ "127.9.9.9/8" }, "127.0.0.5"))     -- host bits ignored
      assert.equal(4, refused({ "::1/128" }, "127.0.0.1"))          -- another family
      local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      for _, bad in ipairs { "10.0.0.0/33", "nonsense", "::1/129", "/8", "10.0.0.0/x" } do
        assert.has_error(function() ep:rate_limit { rate = 1, exempt = { bad } } end)
      end
      ep:close()
    end)

  it("does not take a forged top Via naming the proxy as a spiral (auth still asked)", function()
    local srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, quiet = true,
      users = { alice = { password = "secret" } } })
    local host, port = hostport(srv.ep, "udp")
    local u = udp_peer()
    local _, uport = u:getsockname()
    local codes = {}
    for _, via_port in ipairs { uport, port } do
      local bytes = request { peer = u, method = "MESSAGE", uri = "sip:echo@localhost",
        body = "hi", extra = { "Content-Type: text/plain" } }
      bytes = bytes:gsub("From: [^\r]*", "From: <sip:alice@localhost>;tag=f1")
        :gsub("(Via: SIP/2%.0/UDP 127%.0%.0%.1:)%d+", "%1" .. via_port)
      u:sendto(bytes, host, port)
      codes[#codes + 1] = status_of(udp_replies(u, 2, 1)[1])
    end
    assert.same({ 407, 407 }, codes)
    u:close()
    srv.stop()
  end)

  it("answers a digest brute force 403 from the failing source and logs it", function()
    local logged = {}
    local srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, quiet = true,
      users = { alice = { password = "secret" } } })
    srv.ep.log = function(line, level) logged[#logged + 1] = { line, level } end
    local target = "sip:localhost:" .. select(2, hostport(srv.ep, "udp"))
    local attacker = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local codes = {}
    for i = 1, 14 do
      local req = sip.request { method = "REGISTER", uri = target, from = "sip:alice@localhost",
        to = "sip:alice@localhost", contact = attacker:uri("alice") }
      local res = attacker:request(req, { target = srv.ep:uri(nil, "udp"), user = "alice",
        password = "guess" .. i })
      codes[#codes + 1] = res and res.status
    end
    assert.equal(403, codes[#codes])
    local warned = false
    for _, l in ipairs(logged) do
      warned = warned or (l[2] == "warn" and l[1]:match("403") ~= nil)
    end
    assert.is_true(warned)
    -- the source is its IP: another port of it is the same guesser; another IP registers
    local function register_from(ip)
      local e = assert(sip.endpoint { listen = { "udp:" .. ip .. ":0" } })
      local res = e:request(sip.request { method = "REGISTER", uri = target,
        from = "sip:alice@localhost", to = "sip:alice@localhost", contact = e:uri("alice") },
        { target = srv.ep:uri(nil, "udp"), user = "alice", password = "secret" })
      e:close()
      return res.status
    end
    assert.equal(403, register_from("127.0.0.1"))
    assert.equal(200, register_from("127.0.0.2"))
    attacker:close()
    srv.stop()
  end)
end)
