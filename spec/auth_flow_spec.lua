-- spec/auth_flow_spec.lua: Digest authentication end to end (RFC 3261 §22, RFC 7616) between
-- two endpoints on loopback sockets: a UAS that challenges and a UAC that answers.
local sip = require "sip"
local socket = require "socket"

local USERS = { alice = "wonderland", bob = "builder" }

-- Run the loop until cond() holds or the deadline passes.
local function run_until(cond, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  local ok = cond()
  while not ok and socket.gettime() < deadline do
    sip.sched.loop:step(20)
    ok = cond()
  end
  return ok
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
                    credentials = cred and params(cred) }
    seen[#seen + 1] = entry
    local ok, user = auth:check(req)
    entry.ok, entry.user = ok, user
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

    it("keeps the Call-ID and raises the CSeq by one (§22.2)", function()
      local req = register(c, s)
      assert.equal(200, c:request(req, { user = "alice", password = "wonderland" }).status)
      assert.equal(s.seen[1].call_id, s.seen[2].call_id)
      assert.equal(s.seen[1].cseq + 1, s.seen[2].cseq)
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

    it("gives the caller the 401 when it has no credentials to offer", function()
      local res = assert(c:request(register(c, s)))
      assert.equal(401, res.status)
      assert.equal(1, #s.seen)
      assert.truthy(res:header("WWW-Authenticate"))
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
end)
