-- spec/auth_flow_spec.lua: Digest authentication end to end (RFC 3261 §22, RFC 7616) between
-- two endpoints on loopback sockets: a UAS that challenges and a UAC that answers.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"

local USERS = { alice = "wonderland", bob = "builder" }

-- Run the loop until cond() holds or the deadline passes.
local STEP_MS = 20   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end

-- Parameters of a Digest header value: { username = "alice", qop = "auth", ... }.
local function params(value)
  local t = {}
  for k, v in value:gmatch('([%w%-]+)%s*=%s*("[^"]*"?)') do
    t[k:lower()] = v:sub(2, -2)
  end
  for k, v in value:gmatch('([%w%-]+)%s*=%s*([^",%s]+)') do
    t[k:lower()] = t[k:lower()] or v
  end
  return t
end

-- A UAS whose REGISTER and MESSAGE handlers run auth:check first. Every request it sees is
-- recorded in `seen` with what the handler observed, including the credentials sent.
local function uas(opts)
  opts = opts or {}
  local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, log = opts.log })
  local clock = { t = 1700000000 }
  local auth = sip.auth.digest {
    realm = opts.realm or "example.org",
    credentials = function(user) return USERS[user] end,
    algorithms = opts.algorithms,
    proxy = opts.proxy,
    max_failures = opts.max_failures,
    failure_window = opts.failure_window,
    nonce_ttl = opts.nonce_ttl,
    now = function() return clock.t end,
  }
  local seen = {}
  local function handler(req)
    local cred = req:header(opts.proxy and "Proxy-Authorization" or "Authorization")
    local entry = { call_id = req.call_id, cseq = req.cseq, uri = req.uri, source = req.source,
                    branch = req:via().branch, raw = cred, credentials = cred and params(cred) }
    seen[#seen + 1] = entry
    local ok, user = auth:check(req)
    entry.ok, entry.user = ok, user
    if opts.after_check then opts.after_check(entry, clock) end
    if not ok then return end
    req:reply(200)
  end
  ep:on("REGISTER", handler)
  ep:on("MESSAGE", handler)
  return { ep = ep, auth = auth, clock = clock, seen = seen }
end

local function register(client, server, user)
  return sip.request { method = "REGISTER", uri = "sip:" .. server.ep:address("udp"),
    from = client:uri(user or "alice"), to = client:uri(user or "alice"),
    contact = client:uri(user or "alice") }
end

local function message(client, server, text)
  return sip.request { method = "MESSAGE", uri = server.ep:uri("bob"), from = client:uri("alice"),
    body = text or "hi", content_type = "text/plain" }
end

describe("Digest authentication between two endpoints", function()
  local s, c
  before_each(function()
    s = uas()
    c = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  after_each(function()
    s.ep:close()
    c:close()
  end)

  describe("REGISTER challenged with 401", function()
    it("is retried once with Authorization and accepted", function()
      local req = register(c, s)
      local res = assert(c:request(req, { user = "alice", password = "wonderland" }))
      assert.equal(200, res.status)
      assert.equal(2, #s.seen)
      assert.is_nil(s.seen[1].credentials)
      assert.is_true(s.seen[2].ok)
      assert.equal("alice", s.seen[2].user)
    end)

    it("keeps the Call-ID, raises the CSeq by one and starts a new transaction (§22.2)", function()
      local req = register(c, s)
      assert.equal(200, c:request(req, { user = "alice", password = "wonderland" }).status)
      assert.equal(s.seen[1].call_id, s.seen[2].call_id)
      assert.equal(s.seen[1].cseq + 1, s.seen[2].cseq)
      assert.not_equal(s.seen[1].branch, s.seen[2].branch)
    end)

    it("sends every credentials field, answering with the strongest algorithm offered", function()
      local req = register(c, s)
      assert.equal(200, c:request(req, { user = "alice", password = "wonderland" }).status)
      local cr = s.seen[2].credentials
      assert.equal("alice", cr.username)
      assert.equal("example.org", cr.realm)
      assert.matches("^%x+$", cr.nonce)
      assert.equal(req.uri, cr.uri)
      assert.equal(s.seen[2].uri, cr.uri)
      assert.matches("^" .. ("%x"):rep(64) .. "$", cr.response)
      assert.equal("auth", cr.qop)
      assert.equal("00000001", cr.nc)
      assert.truthy(cr.cnonce and #cr.cnonce > 0)
      assert.equal("SHA-256", cr.algorithm)
    end)

    it("answers with MD5 when only MD5 is offered", function()
      local md5 = uas { algorithms = { "MD5" } }
      local res = c:request(register(c, md5), { user = "alice", password = "wonderland" })
      assert.equal(200, res.status)
      assert.equal("MD5", md5.seen[2].credentials.algorithm)
      assert.matches("^" .. ("%x"):rep(32) .. "$", md5.seen[2].credentials.response)
      md5.ep:close()
    end)

    it("gives the caller the final 401 after one retry when the password is wrong", function()
      local res = assert(c:request(register(c, s), { user = "alice", password = "nope" }))
      assert.equal(401, res.status)
      assert.equal(2, #s.seen)
      assert.is_false(s.seen[2].ok)
    end)

    it("says in a 400 what was wrong with the credentials", function()
      local req = register(c, s)
      req:add_header("Authorization", 'Digest username="alice", realm="example.org"')
      local res = c:request(req)
      assert.equal(400, res.status)
      assert.equal("credentials without nonce", res.reason)
    end)

    it("gives the caller the 401 when it has no credentials to offer", function()
      local res = assert(c:request(register(c, s)))
      assert.equal(401, res.status)
      assert.equal(1, #s.seen)
      assert.truthy(res:header("WWW-Authenticate"))
    end)
  end)

  describe("two realms on one path", function()
    -- a UAS that wants credentials for realm "a" and then for realm "b"
    local function two_realms(password_b)
      local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      local function digest(realm, password)
        return sip.auth.digest { realm = realm, credentials = function() return password end }
      end
      local a, b = digest("a", "wonderland"), digest("b", password_b)
      local n = 0
      ep:on("MESSAGE", function(req)
        n = n + 1
        if a:check(req) and b:check(req) then req:reply(200) end
      end)
      return ep, function() return n end
    end

    it("are answered once each, every realm's nonce counted up on each retry", function()
      local ep, count = two_realms("wonderland")
      local req = sip.request { method = "MESSAGE", uri = ep:uri("bob"), from = c:uri("alice") }
      local res = c:request(req, { user = "alice", password = "wonderland" })
      assert.equal(200, res.status)
      assert.equal(3, count())
      ep:close()
    end)

    it("give the caller the final 401 when one realm refuses the password", function()
      local ep, count = two_realms("other")
      local req = sip.request { method = "MESSAGE", uri = ep:uri("bob"), from = c:uri("alice") }
      local res = c:request(req, { user = "alice", password = "wonderland" })
      assert.equal(401, res.status)
      assert.matches('realm="b"', res:header("WWW-Authenticate"))
      assert.equal(3, count())
      ep:close()
    end)
  end)

  describe("a proxy that challenges with 407", function()
    it("is answered with Proxy-Authorization", function()
      local p = uas { proxy = true, realm = "proxy.example.org" }
      local res = assert(c:request(message(c, p), { user = "bob", password = "builder" }))
      assert.equal(200, res.status)
      assert.equal(2, #p.seen)
      assert.equal("bob", p.seen[2].user)
      assert.equal("proxy.example.org", p.seen[2].credentials.realm)
      p.ep:close()
    end)

    it("passes the final 407 to the caller when the password is wrong", function()
      local p = uas { proxy = true }
      local res = assert(c:request(message(c, p), { user = "bob", password = "wrong" }))
      assert.equal(407, res.status)
      assert.equal(2, #p.seen)
      p.ep:close()
    end)
  end)

  describe("nonce reuse (RFC 7616 §3.4.5)", function()
    it("sends the cached nonce with nc=00000002 on the next request, and it is accepted", function()
      assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      local res = c:request(message(c, s), { user = "alice", password = "wonderland" })
      assert.equal(200, res.status)
      assert.equal(3, #s.seen)  -- no second challenge
      assert.equal(s.seen[2].credentials.nonce, s.seen[3].credentials.nonce)
      assert.equal("00000002", s.seen[3].credentials.nc)
      assert.equal(s.seen[3].uri, s.seen[3].credentials.uri)
      assert.is_true(s.seen[3].ok)
      assert.equal(200, c:request(message(c, s), { user = "alice", password = "wonderland" }).status)
      assert.equal("00000003", s.seen[4].credentials.nc)
    end)

    it("rejects a request that replays a nonce count", function()
      assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      local replay = register(c, s)
      replay:add_header("Authorization", s.seen[2].raw)
      local res = c:request(replay)
      assert.equal(401, res.status)
      assert.is_false(s.seen[3].ok)
      assert.equal("00000001", s.seen[3].credentials.nc)
    end)

    it("does not send a cached nonce to another target or for another user", function()
      assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      assert.equal(200, c:request(register(c, s, "bob"), { user = "bob", password = "builder" }).status)
      assert.is_nil(s.seen[3].credentials)
      local other = uas()
      assert.equal(200, c:request(register(c, other), { user = "alice", password = "wonderland" }).status)
      assert.is_nil(other.seen[1].credentials)
      other.ep:close()
    end)
  end)

  describe("concurrent requests sharing a cached nonce", function()
    it("all succeed, whatever order their nonce counts arrive in", function()
      assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      local ok, done = 0, 0
      for i = 1, 10 do
        sip.spawn(function()
          local res = c:request(message(c, s, tostring(i)), { user = "alice", password = "wonderland" })
          if res and res.status == 200 then ok = ok + 1 end
          done = done + 1
        end)
      end
      assert.truthy(run_until(function() return done == 10 end, 10))
      assert.equal(10, ok)
    end)
  end)

  describe("a stale nonce (RFC 7616 §3.3)", function()
    it("is answered with stale=true and the client retries with the new nonce", function()
      assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      s.clock.t = s.clock.t + 301
      local res = c:request(message(c, s), { user = "alice", password = "wonderland" })
      assert.equal(200, res.status)
      assert.equal(4, #s.seen)
      assert.equal("00000002", s.seen[3].credentials.nc)
      assert.is_false(s.seen[3].ok)
      assert.not_equal(s.seen[3].credentials.nonce, s.seen[4].credentials.nonce)
      assert.equal("00000001", s.seen[4].credentials.nc)
      assert.is_true(s.seen[4].ok)
    end)

    it("does not count as the one failed retry of a realm", function()
      -- the nonce of the first challenge expires before the answer arrives
      local t = uas { after_check = function(e, clock)
        if not e.credentials then clock.t = clock.t + 301 end
      end }
      local res = c:request(register(c, t), { user = "alice", password = "wonderland" })
      assert.equal(200, res.status)
      assert.equal(3, #t.seen)
      assert.is_false(t.seen[2].ok)
      assert.is_true(t.seen[3].ok)
      t.ep:close()
    end)

    it("is not retried forever when every nonce is stale on arrival", function()
      local t = uas { after_check = function(_, clock) clock.t = clock.t + 301 end }
      local res = c:request(register(c, t), { user = "alice", password = "wonderland" })
      assert.equal(401, res.status)
      assert.truthy(#t.seen <= 6)
      t.ep:close()
    end)
  end)

  describe("repeated failures from one source", function()
    it("are answered 403 and logged, while another client still gets in", function()
      local lines = {}
      local b = uas { max_failures = 3, failure_window = 60,
                      log = function(line, level) lines[#lines + 1] = level .. " " .. line end }
      for _ = 1, 3 do
        assert.equal(401, c:request(register(c, b), { user = "alice", password = "guess" }).status)
      end
      local res = c:request(register(c, b), { user = "alice", password = "wonderland" })
      assert.equal(403, res.status)
      local logged = table.concat(lines, "\n")
      assert.matches("warn auth: 403 %(too many failures%)", logged)
      assert.matches(c:address("udp"), logged, 1, true)

      -- a source is an IP: another port of it is the same one; another IP gets in
      local same = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      assert.equal(403, same:request(register(same, b), { user = "alice", password = "wonderland" }).status)
      same:close()
      local d = assert(sip.endpoint { listen = { "udp:127.0.0.2:0" } })
      assert.equal(200, d:request(register(d, b), { user = "alice", password = "wonderland" }).status)
      d:close()

      b.clock.t = b.clock.t + 60  -- the window is over
      assert.equal(200, c:request(register(c, b), { user = "alice", password = "wonderland" }).status)
      b.ep:close()
    end)
  end)

  describe("malformed credentials sent raw over UDP", function()
    local ruri = function() return "sip:" .. s.ep:address("udp") end
    local function raw(value)
      local u = socket.udp()
      assert(u:setsockname("127.0.0.1", 0))
      local _, lport = u:getsockname()
      local host, port = s.ep:address("udp"):match("^(.*):(%d+)$")
      u:setpeername(host, tonumber(port))
      u:settimeout(0)
      u:send(table.concat({
        "REGISTER " .. ruri() .. " SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. lport .. ";branch=z9hG4bK" .. sip.core.random_hex(8) .. ";rport",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=1", "To: <sip:alice@127.0.0.1>",
        "Call-ID: " .. sip.core.random_hex(8), "CSeq: 1 REGISTER",
        "Authorization: " .. value, "Content-Length: 0", "", "" }, "\r\n"))
      local got
      run_until(function()
        got = u:receive()
        return got
      end, 3)
      u:close()
      return got
    end

    local ok_nonce = function()
      return s.auth:challenge()[1][2]:match('nonce="(%x+)"')
    end

    local cases = {
      ["missing fields"] = function() return 'Digest username="alice", realm="example.org"' end,
      ["no response"] = function()
        return ('Digest username="alice", realm="example.org", nonce="%s", uri="%s"')
          :format(ok_nonce(), ruri())
      end,
      ["unquoted values"] = function()
        return ("Digest username=alice, realm=example.org, nonce=%s, uri=%s, response=0")
          :format(ok_nonce(), ruri())
      end,
      ["duplicate parameters"] = function()
        return 'Digest username="alice", username="bob", realm="example.org", nonce="1", uri="x", response="0"'
      end,
      -- the message layer refuses the line (max_line) before auth sees it
      ["a 10 KB value"] = function()
        return 'Digest username="' .. ("a"):rep(10240) .. '", realm="example.org", nonce="1", uri="x", response="0"'
      end,
      -- under max_line, over SIP_DIGEST_VALUE_MAX: the digest parser refuses it
      ["a 2 KB value"] = function()
        return 'Digest username="' .. ("a"):rep(2048) .. '", realm="example.org", nonce="1", uri="x", response="0"'
      end,
      ["garbage bytes"] = function() return "Digest \1\2\255\254=\127\"\200,,,==" end,
      ["an unterminated quote"] = function() return 'Digest username="alice, realm="example.org' end,
      ["only the scheme"] = function() return "Digest" end,
      ["another scheme"] = function() return "Basic YWxpY2U6d29uZGVybGFuZA==" end,
      ["a bad nonce count"] = function()
        return ('Digest username="alice", realm="example.org", nonce="%s", uri="%s", '
          .. 'response="00", qop=auth, nc=zz, cnonce="c"'):format(ok_nonce(), ruri())
      end,
      ["a digest uri other than the Request-URI"] = function()
        return ('Digest username="alice", realm="example.org", nonce="%s", uri="sip:x", '
          .. 'response="00", qop=auth, nc=00000001, cnonce="c"'):format(ok_nonce())
      end,
      ["a forged nonce"] = function()
        return ('Digest username="alice", realm="example.org", nonce="%s", uri="%s", '
          .. 'response="00", qop=auth, nc=00000001, cnonce="c"'):format(("0"):rep(64), ruri())
      end,
      ["a wrong response"] = function()
        return ('Digest username="alice", realm="example.org", nonce="%s", uri="%s", '
          .. 'response="%s", qop=auth, nc=00000001, cnonce="c", algorithm=SHA-256')
          :format(ok_nonce(), ruri(), ("0"):rep(64))
      end,
    }
    local names = {}
    for name in pairs(cases) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      it("are refused with 400 or 401 when they have " .. name, function()
        local got = raw(cases[name]())
        if os.getenv("SHOW_CODES") then print(name, got and got:match("^[^\r]*")) end
        assert.truthy(got, "no answer")
        assert.matches("^SIP/2%.0 40[01] ", got)
        -- and the endpoint keeps serving
        assert.equal(200, c:request(register(c, s), { user = "alice", password = "wonderland" }).status)
      end)
    end
  end)
end)
