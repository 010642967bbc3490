-- spec/phones_serve_spec.lua: `luasip serve` in-process, sent what real phones send (baresip,
-- Linphone): an outbound-proxy Route on every request, one-algorithm digest, RFC 5626 and
-- RFC 3327 headers, TCP contacts, NAT. Raw UDP datagrams, built the way the phones build them.
local sip = require "sip"
local helper = require "helper"
local cli = require "sip.cli"
local socket = require "socket"

local USERS = { alice = { password = "alice-pw" }, bob = { password = "bob-pw" } }

local STEP_MS = 10

-- A raw UDP phone: send(lines) writes a request (CRLFs, Content-Length added), wait(pred)
-- drives the server's loop until a datagram satisfying pred arrived.
local function phone(ip)
  local u = assert(socket.udp())
  assert(u:setsockname(ip or "127.0.0.1", 0))
  u:settimeout(0)
  local host, port = u:getsockname()
  local p = { sock = u, host = host, port = tonumber(port), inbox = {} }
  function p.poll()
    while true do
      local d, ip_, port_ = u:receivefrom()
      if not d then return end
      p.inbox[#p.inbox + 1] = { msg = assert(sip.parse(d)), raw = d, ip = ip_, port = port_ }
    end
  end
  function p.send(lines, to, body)
    body = body or ""
    local text = table.concat(lines, "\r\n") .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    local h, pt = to:match("^(.*):(%d+)$")
    assert(u:sendto(text, h, tonumber(pt)))
  end
  -- the first message not yet taken that satisfies pred (nil after `seconds`)
  function p.wait(pred, seconds)
    local found
    helper.run_until(function()
      for i, it in ipairs(p.inbox) do
        if pred(it.msg) then
          found = it
          table.remove(p.inbox, i)
          return true
        end
      end
      return false
    end, seconds or 3, p.poll, STEP_MS)
    return found and found.msg, found
  end
  function p.response(seconds)
    return p.wait(function(m) return m.status ~= nil end, seconds)
  end
  function p.close() u:close() end
  return p
end

local function branch()
  return "z9hG4bK" .. tostring(math.random(1e9))
end

describe("luasip serve and what phones send", function()
  local srv, proxy

  local function start(extra)
    local opts = { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, domain = "localhost",
      users = USERS, quiet = true }
    for k, v in pairs(extra or {}) do opts[k] = v end
    srv = assert(cli.server(opts))
    proxy = srv.ep:address("udp")
  end

  after_each(function()
    if srv then srv.stop() end
    srv = nil
  end)

  -- A REGISTER as baresip sends it with an outbound proxy: sip:DOMAIN as the Request-URI and
  -- a loose Route to the proxy. extra: more header lines. Answered 401 first, then sent again
  -- with credentials for the challenge `pick` chooses (the first by default).
  local function register(p, user, opts)
    opts = opts or {}
    local callid = opts.call_id or ("reg-" .. math.random(1e9))
    local contact = opts.contact or ("<sip:" .. user .. "@" .. p.host .. ":" .. p.port .. ">")
    local cseq = opts.cseq or 1
    local function lines(auth)
      local t = {
        "REGISTER sip:localhost SIP/2.0",
        "Via: SIP/2.0/UDP " .. p.host .. ":" .. p.port .. ";branch=" .. branch() .. ";rport",
        "Route: <sip:" .. proxy .. ";lr>",
        "Max-Forwards: 70",
        "From: <sip:" .. user .. "@localhost>;tag=" .. user .. "tag",
        "To: <sip:" .. user .. "@localhost>",
        "Call-ID: " .. callid,
        "CSeq: " .. cseq .. " REGISTER",
        "Contact: " .. contact,
        "Expires: " .. (opts.expires or "300"),
      }
      for _, l in ipairs(opts.extra or {}) do t[#t + 1] = l end
      if auth then t[#t + 1] = "Authorization: " .. auth end
      return t
    end
    p.send(lines(), proxy)
    local res = p.response()
    if not res or res.status ~= 401 then return res end
    local challenges = res:headers("WWW-Authenticate")
    local ch = (opts.pick or function(c) return c[1] end)(challenges)
    assert(ch, "no challenge this phone can answer: " .. table.concat(challenges, " | "))
    local auth = assert(sip.auth.authorization(ch, { user = user,
      password = USERS[user].password, method = "REGISTER", uri = "sip:localhost" }))
    cseq = cseq + 1
    p.send(lines(auth), proxy)
    local final = p.response()
    return final, res
  end

  describe("an outbound proxy's loose Route (§16.4)", function()
    it("registers: the Route to us comes off, the Request-URI stays sip:localhost for digest", function()
      start()
      local p = phone()
      local res = register(p, "alice")
      assert.equal(200, res.status)
      assert.equal(1, #srv.registrar:lookup("sip:alice@localhost"))
      p.close()
    end)
  end)

  describe("the challenge a one-algorithm phone can answer", function()
    -- baresip 1.0 (libre) fails the whole request (ENOSYS) on the first challenge whose
    -- algorithm is not MD5, instead of picking the one it knows: every challenge must be MD5
    local function md5_only(challenges)
      for _, c in ipairs(challenges) do
        local t = assert(sip.auth.parse_challenge(c))
        if (t.algorithm or "MD5"):upper() ~= "MD5" then
          return nil
        end
      end
      return challenges[1]
    end

    it("offers only MD5 by default, to REGISTER (401) and to a MESSAGE (407)", function()
      start()
      local p = phone()
      local res, challenge = register(p, "alice", { pick = md5_only })
      assert.equal(200, res.status)
      assert.equal(1, #challenge:headers("WWW-Authenticate"))
      p.send({
        "MESSAGE sip:echo@localhost SIP/2.0",
        "Via: SIP/2.0/UDP " .. p.host .. ":" .. p.port .. ";branch=" .. branch() .. ";rport",
        "Route: <sip:" .. proxy .. ";lr>",
        "Max-Forwards: 70",
        "From: <sip:alice@localhost>;tag=m1",
        "To: <sip:echo@localhost>",
        "Call-ID: msg-" .. math.random(1e9),
        "CSeq: 1 MESSAGE",
        "Content-Type: text/plain",
      }, proxy, "hi")
      local r407 = p.response()
      assert.equal(407, r407.status)
      local chs = r407:headers("Proxy-Authenticate")
      assert.equal(1, #chs)
      assert.truthy(md5_only(chs))
      p.close()
    end)

    it("still offers SHA-256 when asked (--algorithms SHA-256,MD5)", function()
      start { algorithms = { "SHA-256", "MD5" } }
      local p = phone()
      local res, challenge = register(p, "alice", { pick = function(c)
        return assert(sip.auth.parse_challenge(c[1])).algorithm == "SHA-256" and c[1] or nil
      end })
      assert.equal(200, res.status)
      assert.equal(2, #challenge:headers("WWW-Authenticate"))
      assert.is_nil(md5_only(challenge:headers("WWW-Authenticate")))
      p.close()
    end)
  end)
end)
