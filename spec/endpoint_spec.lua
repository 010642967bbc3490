-- spec/endpoint_spec.lua: endpoints, transports and the coroutine model, on real loopback
-- sockets with ports picked by the kernel.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"

local function pair(opts)
  opts = opts or {}
  local a = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, t1 = opts.t1 })
  local b = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, t1 = opts.t1 })
  return a, b
end

-- Run the loop until cond() holds or the deadline passes.
local STEP_MS = 20   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end

local function message(a, b, text, kind)
  return sip.request { method = "MESSAGE", uri = b:uri("bob", kind), from = a:uri("alice"),
    body = text, content_type = "text/plain" }
end

-- A raw TCP client to an endpoint: write bytes in pieces, read what comes back.
local function raw_tcp(ep)
  local host, port = ep:address("tcp"):match("^(.*):(%d+)$")
  local c = assert(socket.tcp())
  assert(c:connect(host, tonumber(port)))
  c:settimeout(0)
  return c
end

local function read_all(c, cond, seconds)
  local got = {}
  run_until(function()
    local data, err, partial = c:receive(65536)
    local s = data or partial
    if s and #s > 0 then
      got[#got + 1] = s
    end
    return cond(table.concat(got)) or err == "closed"
  end, seconds)
  return table.concat(got)
end

describe("endpoints", function()
  local a, b
  before_each(function()
    a, b = pair()
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("core methods refuse a self that is not an endpoint", function()
    local core = a.core
    assert.truthy(core.stats(core))
    assert.has_error(function() core.stats(io.stdout) end)
    assert.has_error(function() core.stats({}) end)
    assert.has_error(function() core.stats(assert(sip.parse(tostring(message(a, b, "x"))))) end)
  end)

  it("listen on kernel-picked ports and say which", function()
    local addrs = a:addresses()
    assert.equal(2, #addrs)
    assert.matches("^udp:127%.0%.0%.1:%d+$", addrs[1])
    assert.matches("^tcp:127%.0%.0%.1:%d+$", addrs[2])
    assert.not_equal("udp:127.0.0.1:0", addrs[1])
    -- one port for both transports, as SIP peers expect
    assert.equal(addrs[1]:match("%d+$"), addrs[2]:match("%d+$"))
  end)

  it("exchange a request and its response over UDP", function()
    b:on("MESSAGE", function(req)
      req:reply(200, nil, { body = req.body:upper(), content_type = "text/plain" })
    end)
    local res = assert(a:request(message(a, b, "hello")))
    assert.equal(200, res.status)
    assert.equal("HELLO", res.body)
    assert.equal(1, b:stats().udp_in)
  end)

  it("listen on IPv6 loopback", function()
    local c = assert(sip.endpoint { listen = { "udp:[::1]:0", "tcp:[::1]:0" } })
    local d = assert(sip.endpoint { listen = { "udp:[::1]:0", "tcp:[::1]:0" } })
    assert.matches("^%[::1%]:%d+$", c:address("udp"))
    c:on("MESSAGE", function(req) req:reply(200, nil, { body = req.source }) end)
    local r1 = assert(d:request(sip.request { method = "MESSAGE", uri = c:uri("x", "udp") }))
    assert.equal(200, r1.status)
    assert.matches("^udp:%[::1%]:", r1.body)
    local r2 = assert(d:request(sip.request { method = "MESSAGE", uri = c:uri("x", "tcp") }))
    assert.matches("^tcp:%[::1%]:", r2.body)
    c:close()
    d:close()
  end)

  it("fails fast with 503 when a TCP destination refuses the connection", function()
    local s = socket.tcp()
    assert(s:bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    local t0 = socket.gettime()
    local res = a:request(sip.request { method = "MESSAGE",
      uri = "sip:nobody@127.0.0.1:" .. port .. ";transport=tcp" })
    assert.equal(503, res.status)
    assert.is_true(socket.gettime() - t0 < 2)
  end)

  it("exchange a request and its response over TCP", function()
    b:on("MESSAGE", function(req)
      req:reply(202, nil, { body = req.source:match("^tcp:") and "tcp" or "udp" })
    end)
    local res = assert(a:request(message(a, b, "hello", "tcp")))
    assert.equal(202, res.status)
    assert.equal("tcp", res.body)
    assert.equal(1, b:stats().tcp_in)
  end)

  it("send requests over 1300 bytes for a UDP destination over TCP (§18.1.1)", function()
    local seen
    b:on("MESSAGE", function(req)
      seen = req.source
      req:reply(200)
    end)
    local res = assert(a:request(message(a, b, ("x"):rep(2000))))
    assert.equal(200, res.status)
    assert.matches("^tcp:", seen)
  end)

  it("run handlers for several endpoints in one Lua state", function()
    local c = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    b:on("MESSAGE", function(req) req:reply(200, nil, { body = "b" }) end)
    c:on("MESSAGE", function(req) req:reply(200, nil, { body = "c" }) end)
    assert.equal("b", a:request(message(a, b, "1")).body)
    assert.equal("c", a:request(message(a, c, "2")).body)
    c:close()
  end)

  it("answer 405 with Allow for a known method nobody handles, 501 for unknown ones", function()
    b:on("MESSAGE", function(req) req:reply(200) end)
    local r = a:request(sip.request { method = "INFO", uri = b:uri("bob") })
    assert.equal(405, r.status)
    assert.truthy(table.concat(r:headers("Allow"), ","):find("MESSAGE", 1, true))
    assert.equal(501, a:request(sip.request { method = "FROBNICATE", uri = b:uri("bob") }).status)
  end)

  it("answer OPTIONS by default", function()
    assert.equal(200, a:options(b:uri()).status)
  end)

  it("answer 500 when a handler raises, and serve the next request", function()
    local n = 0
    b:on("MESSAGE", function(req)
      n = n + 1
      if n == 1 then
        error("boom")
      end
      req:reply(200)
    end)
    assert.equal(500, a:request(message(a, b, "first")).status)
    assert.equal(200, a:request(message(a, b, "second")).status)
  end)

  it("run 1000 concurrent handler coroutines that each sleep and answer", function()
    b:on("MESSAGE", function(req)
      sip.sleep(0.05 + (tonumber(req.body) % 10) / 100)
      req:reply(200, nil, { body = req.body })
    end)
    local done, ok = 0, 0
    for i = 1, 1000 do
      sip.spawn(function()
        local res = a:request(message(a, b, tostring(i)))
        if res and res.status == 200 and res.body == tostring(i) then
          ok = ok + 1
        end
        done = done + 1
      end)
    end
    assert.truthy(run_until(function() return done == 1000 end, 20))
    assert.equal(1000, ok)
    assert.equal(0, b:stats().handlers_running)
  end)

  it("lets a handler sleep without blocking other requests", function()
    local order = {}
    b:on("MESSAGE", function(req)
      if req.body == "slow" then
        sip.sleep(0.3)
      end
      order[#order + 1] = req.body
      req:reply(200)
    end)
    local finished = 0
    sip.spawn(function() a:request(message(a, b, "slow")); finished = finished + 1 end)
    sip.spawn(function() a:request(message(a, b, "fast")); finished = finished + 1 end)
    run_until(function() return finished == 2 end)
    assert.same({ "fast", "slow" }, order)
  end)

  it("reads a 20 KB body split over many TCP writes", function()
    local got
    b:on("MESSAGE", function(req)
      got = req.body
      req:reply(200)
    end)
    local body = ("0123456789abcdef"):rep(1280)
    local m = message(a, b, body, "tcp")
    local c = raw_tcp(b)
    local bytes = tostring(m)
    for i = 1, #bytes, 333 do
      c:send(bytes:sub(i, i + 332))
      sip.sched.loop:step(1)
    end
    local reply = read_all(c, function(s) return s:find("\r\n\r\n") end)
    c:close()
    assert.matches("^SIP/2.0 200 OK\r\n", reply)
    assert.equal(body, got)
  end)

  it("reads two messages that came in one TCP write", function()
    local bodies = {}
    b:on("MESSAGE", function(req)
      bodies[#bodies + 1] = req.body
      req:reply(200)
    end)
    local m1, m2 = message(a, b, "one", "tcp"), message(a, b, "two", "tcp")
    local c = raw_tcp(b)
    c:send(tostring(m1) .. "\r\n\r\n" .. tostring(m2))
    local reply = read_all(c, function(s) return select(2, s:gsub("SIP/2.0 200", "")) == 2 end)
    c:close()
    assert.same({ "one", "two" }, bodies)
    assert.equal(2, select(2, reply:gsub("SIP/2.0 200 OK", "")))
  end)

  it("answers an unparsable request with 400 and the reason", function()
    local u = socket.udp()
    local host, port = b:address("udp"):match("^(.*):(%d+)$")
    u:setpeername(host, tonumber(port))
    u:settimeout(0)
    u:send(table.concat({
      "OPTIONS sip:b@127.0.0.1 SIP/2.0",
      "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad",
      "From: <sip:a@127.0.0.1>;tag=1", "To: <sip:b@127.0.0.1>", "Call-ID: bad1",
      "CSeq: 1 OPTIONS", "Content-Length: -5", "", "" }, "\r\n"))
    local got
    run_until(function()
      got = u:receive()
      return got
    end, 3)
    u:close()
    assert.matches("^SIP/2.0 400 bad Content%-Length\r\n", got)
    assert.matches("Call%-ID: bad1", got)
    assert.equal(1, b:stats().parse_errors)
  end)

  it("closes only the connection with bad framing", function()
    b:on("MESSAGE", function(req) req:reply(200) end)
    local bad = raw_tcp(b)
    bad:send("MESSAGE sip:x@y SIP/2.0\r\nContent-Length: nope\r\n\r\n")
    local closed = read_all(bad, function() return false end, 1)
    assert.equal("", closed)
    assert.equal(200, a:request(message(a, b, "still here", "tcp")).status)
    bad:close()
  end)

  it("leaves no connection behind after 10 000 TCP connections open and close", function()
    local host, port = b:address("tcp"):match("^(.*):(%d+)$")
    port = tonumber(port)
    local before = b:stats().connections_accepted
    for _ = 1, 100 do
      local batch = {}
      for j = 1, 100 do
        local c = socket.tcp()
        assert(c:connect(host, port))
        batch[j] = c
      end
      sip.sched.loop:step(0)
      for j = 1, 100 do
        batch[j]:close()
      end
      sip.sched.loop:step(0)
    end
    assert.truthy(run_until(function()
      local s = b:stats()
      return s.connections_accepted - before == 10000 and s.connections == 0
    end, 20))
    local s = b:stats()
    assert.equal(0, s.connections)
    assert.equal(10000, s.connections_closed)
  end)

  it("can be driven by cqueues through the pollable protocol", function()
    local cqueues = require "cqueues"
    b:on("MESSAGE", function(req) req:reply(200, nil, { body = "via cqueues" }) end)
    local result
    sip.spawn(function()
      result = a:request(message(a, b, "hi"))
    end)
    local cq = cqueues.new()
    cq:wrap(function()
      local deadline = cqueues.monotime() + 5
      while not result and cqueues.monotime() < deadline do
        cqueues.poll(a, 0.05)
        a:step(0)
      end
    end)
    assert(cq:loop())
    assert.truthy(result)
    assert.equal("via cqueues", result.body)
  end)
end)
