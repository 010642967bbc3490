-- spec/security_spec.lua: `luasip serve` against hostile raw requests: no open relay,
-- in-dialog requests only along our own Record-Route, identities bound to credentials,
-- brute force held off. Every refusal is checked on the wire, and so is the victim's socket.
local sip = require "sip"
local helper = require "helper"
local cli = require "sip.cli"
local socket = require "socket"

local USERS = { alice = { password = "alice-pw", aliases = { "alice.work" } },
  bob = { password = "bob-pw" } }

-- A raw UDP peer on ip: every datagram it gets is kept, parsed.
local function peer(ip)
  local u = assert(socket.udp())
  assert(u:setsockname(ip or "127.0.0.1", 0))
  u:settimeout(0)
  local host, port = u:getsockname()
  local p = { sock = u, ip = host, port = port, inbox = {} }
  function p.poll()
    while true do
      local data = u:receivefrom()
      if not data then
        return
      end
      p.inbox[#p.inbox + 1] = assert(sip.parse(data))
    end
  end
  function p.close()
    u:close()
  end
  return p
end

local n = 0
local function unique(prefix)
  n = n + 1
  return prefix .. n .. "x" .. math.random(1e9)
end

describe("luasip serve security", function()
  local srv, host, port, attacker, victim

  -- a request from p as text: t = { method, uri, from, to, call_id, cseq, headers = {...} }
  local function build(p, t)
    local lines = {
      t.method .. " " .. t.uri .. " SIP/2.0",
      "Via: SIP/2.0/UDP " .. p.ip .. ":" .. p.port .. ";rport;branch=" .. unique("z9hG4bKsec"),
      "Max-Forwards: 70",
      "From: " .. t.from .. ";tag=" .. (t.from_tag or "f1"),
      "To: " .. t.to .. (t.to_tag and (";tag=" .. t.to_tag) or ""),
      "Call-ID: " .. (t.call_id or unique("sec-")),
      "CSeq: " .. (t.cseq or 1) .. " " .. (t.cseq_method or t.method),
    }
    for _, h in ipairs(t.headers or {}) do
      lines[#lines + 1] = h
    end
    lines[#lines + 1] = "Content-Length: " .. #(t.body or "")
    lines[#lines + 1] = ""
    lines[#lines + 1] = t.body or ""
    return table.concat(lines, "\r\n")
  end

  -- send t from p, wait for its final response (or `wait` seconds): the response or nil
  local function send(p, t, wait)
    t.call_id = t.call_id or unique("sec-")
    local before = #p.inbox
    assert(p.sock:sendto(build(p, t), host, port))
    local final
    helper.run_until(function()
      for i = before + 1, #p.inbox do
        local m = p.inbox[i]
        if not m.is_request and m.status >= 200 and m.call_id == t.call_id then
          final = m
        end
      end
      return final
    end, wait or 3, p.poll)
    return final
  end

  -- the same, answering one challenge with user's credentials (CSeq + 1, §22.2)
  local function send_as(p, t, user, password)
    t.call_id = unique("sec-")
    local res = send(p, t)
    if not res or (res.status ~= 401 and res.status ~= 407) then
      return res
    end
    local name = res.status == 401 and "WWW-Authenticate" or "Proxy-Authenticate"
    local value = assert(sip.auth.authorization(res:headers(name), { user = user,
      password = password, method = t.method, uri = t.uri, body = t.body or "" }))
    t.headers = t.headers or {}
    t.headers[#t.headers + 1] = (res.status == 401 and "Authorization: " or
      "Proxy-Authorization: ") .. value
    t.cseq = (t.cseq or 1) + 1
    return send(p, t)
  end

  local function victim_quiet()
    helper.run_for(0.2, victim.poll)
    return #victim.inbox == 0
  end

  local function register(p, user, password, to, contact)
    return send_as(p, { method = "REGISTER", uri = "sip:localhost",
      from = "<sip:" .. user .. "@localhost>", to = to or ("<sip:" .. user .. "@localhost>"),
      headers = { "Contact: <" .. (contact or ("sip:" .. user .. "@" .. p.ip .. ":" .. p.port)) .. ">",
        "Expires: 300" } }, user, password)
  end

  before_each(function()
    srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, domain = "localhost",
      users = USERS, quiet = true, trust = { "127.0.0.3/32" } })
    host, port = srv.ep:address("udp"):match("^(.*):(%d+)$")
    port = tonumber(port)
    attacker, victim = peer("127.0.0.2"), peer("127.0.0.1")
  end)
  after_each(function()
    attacker.close()
    victim.close()
    srv.stop()
  end)

  describe("no open relay", function()
    it("answers 403 to a stranger's MESSAGE for a foreign domain, and relays nothing", function()
      local res = send(attacker, { method = "MESSAGE", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:spam@evil.test>", to = "<sip:victim@127.0.0.1:" .. victim.port .. ">",
        body = "buy now" })
      assert.equal(403, res.status)
      assert.equal("Relaying forbidden", res.reason)
      assert.is_true(victim_quiet())
    end)

    it("refuses the same for an INVITE (toll fraud), a sips: target and a display name", function()
      for _, t in ipairs {
        { method = "INVITE", uri = "sip:+15551234@127.0.0.1:" .. victim.port },
        { method = "MESSAGE", uri = "sips:victim@127.0.0.1:" .. victim.port },
        { method = "OPTIONS", uri = "sip:victim@gateway.example:" .. victim.port },
      } do
        t.from, t.to = '"Alice" <sip:spam@evil.test>', "<" .. t.uri .. ">"
        local res = send(attacker, t)
        assert.equal(403, res.status)
      end
      assert.is_true(victim_quiet())
    end)

    it("asks a local user's From for credentials before relaying anywhere", function()
      local res = send(attacker, { method = "MESSAGE", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:alice@LOCALHOST>", to = "<sip:victim@127.0.0.1>" })
      assert.equal(407, res.status)
      assert.is_true(victim_quiet())
    end)

    it("relays to a foreign domain for a local user who authenticated as herself", function()
      local res = send_as(attacker, { method = "MESSAGE", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:alice@localhost>", to = "<sip:victim@127.0.0.1>", body = "hi" },
        "alice", "alice-pw")
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.equal("MESSAGE", victim.inbox[1].method)
      assert.is_nil(res)   -- the victim socket never answered: 408 comes later
    end)

    it("delivers a stranger's request to a local user without credentials (inbound)", function()
      assert.equal(200, register(victim, "bob", "bob-pw").status)
      victim.inbox = {}
      local t = { method = "MESSAGE", uri = "sip:bob@localhost", from = "<sip:carol@example.org>",
        to = "<sip:bob@localhost>", body = "hello from outside" }
      t.call_id = unique("in-")
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.equal("hello from outside", victim.inbox[1].body)
    end)

    it("relays anywhere, without credentials, for a peer in --trust", function()
      local trusted = peer("127.0.0.3")
      local t = { method = "MESSAGE", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:gw@trunk.example>", to = "<sip:victim@127.0.0.1>",
        headers = { "P-Asserted-Identity: <sip:+15550001@trunk.example>" } }
      t.call_id = unique("tr-")
      assert(trusted.sock:sendto(build(trusted, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      -- and its asserted identity stays (RFC 3325: it is inside our trust domain)
      assert.equal("<sip:+15550001@trunk.example>", victim.inbox[1]:header("P-Asserted-Identity"))
      trusted.close()
    end)

    it("removes P-Asserted-Identity from an untrusted sender", function()
      assert.equal(200, register(victim, "bob", "bob-pw").status)
      victim.inbox = {}
      local t = { method = "MESSAGE", uri = "sip:bob@localhost", from = "<sip:x@evil.test>",
        to = "<sip:bob@localhost>", headers = { "P-Asserted-Identity: <sip:alice@localhost>",
          "P-Preferred-Identity: <sip:alice@localhost>" } }
      t.call_id = unique("pai-")
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.is_nil(victim.inbox[1]:header("P-Asserted-Identity"))
      assert.is_nil(victim.inbox[1]:header("P-Preferred-Identity"))
    end)
  end)

  describe("in-dialog requests", function()
    local function in_dialog(t)
      t.method = t.method or "BYE"
      t.uri = t.uri or ("sip:victim@127.0.0.1:" .. victim.port)
      t.from, t.to, t.to_tag = "<sip:spam@evil.test>", "<sip:victim@127.0.0.1>", "made-up"
      return send(attacker, t)
    end

    it("answers 404 to a made-up To tag with no Route of ours, and relays nothing", function()
      assert.equal(404, in_dialog({}).status)
      assert.equal(404, in_dialog({ method = "MESSAGE" }).status)
      assert.is_true(victim_quiet())
    end)

    it("answers 403 to a Route naming us without our tag, or with another dialog's", function()
      local us = "sip:" .. host .. ":" .. port
      assert.equal(403, in_dialog({ headers = { "Route: <" .. us .. ";lr>" } }).status)
      assert.equal(403, in_dialog({ headers = { "Route: <" .. us .. ";lr;lsk=0123456789abcdef>" } }).status)
      -- a tag we really wrote, but for another Call-ID and From tag
      local other = sip.core.rr_tag("some-other-call@x", "f1")
      assert.equal(403, in_dialog({ headers = { "Route: <" .. us .. ";lr;lsk=" .. other .. ">" } }).status)
      assert.is_true(victim_quiet())
    end)

    it("relays along the Record-Route it wrote for that dialog", function()
      local call_id = unique("dlg-")
      local us = "sip:" .. host .. ":" .. port
      local route = "Route: <" .. us .. ";lr;lsk=" .. sip.core.rr_tag(call_id, "f1") .. ">"
      local t = { method = "BYE", uri = "sip:victim@127.0.0.1:" .. victim.port, call_id = call_id,
        from = "<sip:spam@evil.test>", to = "<sip:victim@127.0.0.1>", to_tag = "v1",
        headers = { route } }
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.equal("BYE", victim.inbox[1].method)
      assert.same({}, victim.inbox[1]:headers("Route"))
      -- a phone with us as its outbound proxy puts a Route to us above ours: both come off
      victim.inbox = {}
      t.cseq, t.headers = 2, { "Route: <" .. us .. ";lr>", route }
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.same({}, victim.inbox[1]:headers("Route"))
    end)

    it("writes its tag as HMAC-SHA256 of Call-ID and From tag under the key (openssl agrees)", function()
      local secret = "a secret shared by the workers of one farm"
      sip.core.rr_key(secret)
      local key = io.popen("printf '%s' '" .. secret .. "' | openssl dgst -sha256 -r"):read("l")
      local want = io.popen("printf '%s' 'call-7@example.org f7' | openssl dgst -sha256 -mac HMAC" ..
        " -macopt hexkey:" .. key:match("^(%x+)") .. " -r"):read("l")
      assert.equal(want:sub(1, 16), sip.core.rr_tag("call-7@example.org", "f7"))
      assert.has_error(function() sip.core.rr_key("short") end)
    end)

    it("gives a dialog's tag again from the tags it made last, and new ones under a new key", function()
      local function hmac(secret, input)
        local key = io.popen("printf '%s' '" .. secret .. "' | openssl dgst -sha256 -r"):read("l")
        return io.popen("printf '%s' '" .. input .. "' | openssl dgst -sha256 -mac HMAC" ..
          " -macopt hexkey:" .. key:match("^(%x+)") .. " -r"):read("l"):sub(1, 16)
      end
      local long = string.rep("c", 90) .. "@example.org"   -- longer than the cache keeps
      for _, secret in ipairs { "the first key of this farm", "the key after a rotation" } do
        sip.core.rr_key(secret)
        for _, d in ipairs { { "call-8@example.org", "f8" }, { long, "f9" } } do
          local want = hmac(secret, d[1] .. " " .. d[2])
          assert.equal(want, sip.core.rr_tag(d[1], d[2]))   -- made
          assert.equal(want, sip.core.rr_tag(d[1], d[2]))   -- kept (or made again)
        end
      end
    end)

    it("relays an in-dialog request to a contact it holds a binding for", function()
      assert.equal(200, register(victim, "bob", "bob-pw").status)
      victim.inbox = {}
      local t = { method = "INFO", uri = "sip:bob@127.0.0.1:" .. victim.port,
        from = "<sip:x@example.org>", to = "<sip:bob@localhost>", to_tag = "b1" }
      t.call_id = unique("held-")
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      assert.truthy(helper.run_until(function() return #victim.inbox > 0 end, 2, victim.poll))
      assert.equal("INFO", victim.inbox[1].method)
    end)

    it("answers 481 to a CANCEL for nothing and drops an ACK for nothing", function()
      local res = send(attacker, { method = "CANCEL", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:spam@evil.test>", to = "<sip:victim@127.0.0.1>" })
      assert.equal(481, res.status)
      local t = { method = "ACK", uri = "sip:victim@127.0.0.1:" .. victim.port,
        from = "<sip:spam@evil.test>", to = "<sip:victim@127.0.0.1>", to_tag = "t9" }
      assert(attacker.sock:sendto(build(attacker, t), host, port))
      helper.run_for(0.3, attacker.poll)
      assert.is_true(victim_quiet())
    end)
  end)

  describe("identities bound to credentials", function()
    it("refuses a REGISTER for bob with alice's credentials (§10.3 step 3), in every spelling", function()
      for _, to in ipairs { "<sip:bob@localhost>", '"Bob" <sip:bob@localhost>',
        "<sip:bob@LOCALHOST>", "<sips:bob@localhost>", "<sip:bob@" .. host .. ":" .. port .. ">",
        "<sip:bob@localhost;transport=tcp>", "<sip:%62ob@localhost>", "<sip:Alice@localhost>",
        "<sip:alice@evil.test>" } do
        local res = register(attacker, "alice", "alice-pw", to)
        assert.equal(403, res.status, to)
      end
      assert.equal(0, #srv.registrar:lookup("sip:bob@localhost"))
      assert.equal(0, #srv.registrar:lookup("sip:alice@localhost"))
    end)

    it("registers alice as herself and as an alias the users file gives her", function()
      assert.equal(200, register(attacker, "alice", "alice-pw").status)
      assert.equal(200, register(attacker, "alice", "alice-pw", "<sip:alice.work@localhost>").status)
      assert.equal(1, #srv.registrar:lookup("sip:alice.work@localhost"))
    end)

    it("refuses a MESSAGE From bob with alice's credentials, and bob's phone gets nothing", function()
      assert.equal(200, register(victim, "bob", "bob-pw").status)
      victim.inbox = {}
      for _, from in ipairs { "<sip:bob@localhost>", '"Alice" <sip:bob@localhost>',
        "<sip:bob@" .. host .. ":" .. port .. ">", "<sips:bob@localhost>" } do
        local res = send_as(attacker, { method = "MESSAGE", uri = "sip:bob@localhost",
          from = from, to = "<sip:bob@localhost>", body = "it is me, bob" }, "alice", "alice-pw")
        assert.equal(403, res.status, from)
        assert.equal("From is not alice", res.reason)
      end
      assert.is_true(victim_quiet())
    end)
  end)

  describe("brute force", function()
    it("holds 10000 REGISTER guesses from one source to 403 and its rate, serving others", function()
      srv.stop()
      srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, domain = "localhost",
        users = USERS, quiet = true, rate_limit = 500, rate_burst = 1000,
        rate_exempt = {} })   -- loopback passes the rate limit by default
      host, port = srv.ep:address("udp"):match("^(.*):(%d+)$")
      port = tonumber(port)
      local first = send(attacker, { method = "REGISTER", uri = "sip:localhost",
        from = "<sip:alice@localhost>", to = "<sip:alice@localhost>" })
      assert.equal(401, first.status)
      local challenge = first:header("WWW-Authenticate")
      local codes, replies = {}, 0
      local function count()
        attacker.poll()
        for i = replies + 1, #attacker.inbox do
          local s = attacker.inbox[i].status
          codes[s] = (codes[s] or 0) + 1
        end
        replies = #attacker.inbox
      end
      attacker.inbox = {}
      local GUESSES, BATCH = 10000, 250
      local good_ok = 0
      for b = 0, GUESSES / BATCH - 1 do
        for i = 1, BATCH do
          local k = b * BATCH + i
          local auth = sip.auth.authorization(challenge, { user = "alice", password = "guess" .. k,
            method = "REGISTER", uri = "sip:localhost", nc = k })
          local t = { method = "REGISTER", uri = "sip:localhost", from = "<sip:alice@localhost>",
            to = "<sip:alice@localhost>", cseq = k + 1, call_id = "guess-call",
            headers = { "Authorization: " .. auth, "Contact: <sip:alice@127.0.0.2:9>" } }
          attacker.sock:sendto(build(attacker, t), host, port)
        end
        helper.run_for(0.02, count)
        if b % 10 == 0 then
          -- meanwhile, alice from her own address registers and gets on with it
          if register(victim, "alice", "alice-pw").status == 200 then
            good_ok = good_ok + 1
          end
        end
      end
      helper.run_until(function() return replies >= GUESSES end, 5, count)
      assert.is_nil(codes[200])
      assert.truthy((codes[401] or 0) <= 10)   -- max_failures wrong guesses, then none checked
      assert.truthy((codes[403] or 0) > 1000)  -- refused without a digest being worked out
      assert.truthy((codes[503] or 0) > 1000)  -- and past its rate, refused before any Lua
      assert.equal(GUESSES / BATCH / 10, good_ok)
      -- the attacker's binding never landed: only alice's own
      local b = srv.registrar:lookup("sip:alice@localhost")
      assert.equal(1, #b)
      assert.matches("127%.0%.0%.1", b[1].uri)
    end)
  end)
end)
