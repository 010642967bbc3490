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
        "Via: SIP/2.0/UDP " .. (opts.sent_by or (p.host .. ":" .. p.port)) .. ";branch=" ..
          branch() .. ";rport",
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

  describe("the echo bot and what phones send it", function()
    -- alice, registered from p, sends the echo bot a MESSAGE of this type: its final status
    local function to_echo(p, ctype, body)
      local callid = "echo-" .. math.random(1e9)
      local function msg(auth)
        local t = {
          "MESSAGE sip:echo@localhost SIP/2.0",
          "Via: SIP/2.0/UDP " .. p.host .. ":" .. p.port .. ";branch=" .. branch() .. ";rport",
          "Route: <sip:" .. proxy .. ";lr>",
          "Max-Forwards: 70",
          "From: <sip:alice@localhost>;tag=e" .. math.random(1e6),
          "To: <sip:echo@localhost>",
          "Call-ID: " .. callid,
          "CSeq: " .. (auth and 2 or 1) .. " MESSAGE",
          "Content-Type: " .. ctype,
        }
        if auth then t[#t + 1] = "Proxy-Authorization: " .. auth end
        p.send(t, proxy, body)
        return p.response()
      end
      local r = msg()
      if r.status == 407 then
        r = msg(sip.auth.authorization(r:headers("Proxy-Authenticate")[1], { user = "alice",
          password = USERS.alice.password, method = "MESSAGE", uri = "sip:echo@localhost" }))
      end
      return r.status
    end

    it("takes a delivery or is-composing notification without echoing it back", function()
      start()
      local p = phone()
      assert.equal(200, register(p, "alice").status)
      -- Linphone answers every message with an IMDN (RFC 5438): echoed, it would come back
      -- to the phone as a message from the bot about a message the bot never got
      local imdn = '<?xml version="1.0" encoding="UTF-8"?><imdn xmlns="urn:ietf:params:xml:ns:imdn">' ..
        "<message-id>x1</message-id><delivery-notification><status><delivered/></status>" ..
        "</delivery-notification></imdn>"
      assert.equal(200, to_echo(p, "message/imdn+xml", imdn))
      assert.equal(200, to_echo(p, "application/im-iscomposing+xml", "<isComposing/>"))
      helper.run_for(0.5, p.poll, STEP_MS)
      assert.equal(0, #p.inbox)   -- no echo of either
      -- a text still comes back
      assert.equal(200, to_echo(p, "text/plain", "hi bot"))
      local back = p.wait(function(x) return x.method == "MESSAGE" end)
      assert.truthy(back)
      assert.equal("hi bot", back.body)
      p.close()
    end)
  end)

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

  -- A Lua endpoint registered at serve as `user` with digest (no Route: the plain way).
  local function lua_user(user, listen)
    local ep = assert(sip.endpoint { listen = listen or { "udp:127.0.0.1:0" } })
    local aor = "sip:" .. user .. "@localhost"
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = ep:uri(user), headers = { Expires = "300" } })
    local res = ep:request(req, { target = "sip:" .. proxy, user = user,
      password = USERS[user].password })
    assert.equal(200, res and res.status)
    return ep
  end

  -- alice (a Lua endpoint, not registered) sends bob a MESSAGE through serve: its response
  local function message_to_bob(text)
    local alice = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local res
    sip.spawn(function()
      local req = assert(sip.request { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost", body = text, content_type = "text/plain" })
      res = alice:request(req, { target = "sip:" .. proxy, user = "alice",
        password = USERS.alice.password }) or false
    end)
    return function() return res end, alice
  end

  -- a UDP port on 127.0.0.1 that nobody holds now
  local function closed_port()
    local u = assert(socket.udp())
    assert(u:setsockname("127.0.0.1", 0))
    local _, port = u:getsockname()
    u:close()
    return tonumber(port)
  end

  describe("what the registrar keeps of a phone's REGISTER", function()
    it("echoes +sip.instance and reg-id in the 200's Contact, with each Contact's expires", function()
      start()
      local p = phone()
      local uri = "sip:alice@127.0.0.1:" .. p.port .. ";ob"
      local res = register(p, "alice", { expires = "300", contact = "<" .. uri .. ">" ..
        ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>";reg-id=1;expires=120' })
      assert.equal(200, res.status)
      local c = res:headers("Contact")
      assert.equal(1, #c)
      assert.truthy(c[1]:find('+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>"', 1, true), c[1])
      assert.truthy(c[1]:find("reg-id=1", 1, true), c[1])
      assert.truthy(c[1]:find("expires=120", 1, true), c[1])
      assert.truthy(c[1]:find("<" .. uri .. ">", 1, true), c[1])
      p.close()
    end)

    it("takes a Contact's expires over the Expires header, each for its own", function()
      start()
      local p = phone()
      local a = "sip:alice@127.0.0.1:" .. p.port
      local b = "sip:alice@127.0.0.1:" .. p.port .. ";transport=tcp"
      local res = register(p, "alice", { expires = "200",
        contact = "<" .. a .. ">;expires=60, <" .. b .. ">" })
      assert.equal(200, res.status)
      local got = {}
      for _, c in ipairs(res:headers("Contact")) do
        got[c:match("^<(.-)>")] = tonumber(c:match("expires=(%d+)"))
      end
      assert.same({ [a] = 60, [b] = 200 }, got)
      p.close()
    end)

    it("replaces the binding of the same +sip.instance and reg-id: a phone that moved", function()
      start()
      local inst = ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000002>";reg-id=1'
      local old, new = phone(), phone()
      assert.equal(200, register(old, "bob", { contact = "<sip:bob@127.0.0.1:" .. old.port ..
        ";ob>" .. inst }).status)
      -- the phone restarted on another port: a new Call-ID, the same instance
      local res = register(new, "bob", { contact = "<sip:bob@127.0.0.1:" .. new.port ..
        ";ob>" .. inst })
      assert.equal(200, res.status)
      local b = srv.registrar:lookup("sip:bob@localhost")
      assert.equal(1, #b)
      assert.equal("sip:bob@127.0.0.1:" .. new.port .. ";ob", b[1].uri)
      assert.equal(1, #res:headers("Contact"))
      old.close()
      new.close()
    end)

    it("refreshes with the same Call-ID, also after the server restarted", function()
      start()
      local p = phone()
      local callid = "refresh-" .. math.random(1e9)
      assert.equal(200, register(p, "alice", { call_id = callid, cseq = 1 }).status)
      assert.equal(200, register(p, "alice", { call_id = callid, cseq = 3 }).status)
      assert.equal(1, #srv.registrar:lookup("sip:alice@localhost"))
      -- serve restarted (on another port: this process holds the old one until it is closed)
      srv.stop()
      start()
      assert.equal(0, #srv.registrar:lookup("sip:alice@localhost"))
      assert.equal(200, register(p, "alice", { call_id = callid, cseq = 5 }).status)
      assert.equal(1, #srv.registrar:lookup("sip:alice@localhost"))
      p.close()
    end)
  end)

  describe("Path (RFC 3327): a REGISTER through an edge proxy", function()
    it("echoes the Path and sends requests for that contact through the edge proxy", function()
      start()
      local edge = phone()   -- the edge proxy: a socket that sees what comes its way
      local path = "<sip:edge@127.0.0.1:" .. edge.port .. ";lr>"
      local bob_uri = "sip:bob@127.0.0.1:" .. closed_port()   -- behind the edge: not ours to reach
      local res = register(edge, "bob", { contact = "<" .. bob_uri .. ">",
        extra = { "Path: " .. path, "Supported: path" } })
      assert.equal(200, res.status)
      assert.same({ path }, res:headers("Path"))
      local done, alice = message_to_bob("via the edge")
      local m = edge.wait(function(x) return x.method == "MESSAGE" end)
      assert.truthy(m, "the MESSAGE did not reach the edge proxy")
      assert.equal(bob_uri, m.uri)
      assert.same({ path }, m:headers("Route"))
      assert.is_nil(done())   -- (the edge proxy does not answer: serve still waits)
      alice:close()
      edge.close()
    end)
  end)

  describe("received/rport: a phone behind NAT", function()
    it("sends to where the phone registered from when it came through a NAT (UDP)", function()
      start()
      local p = phone()
      -- its Via and Contact name the NAT's inside, an address it cannot be reached at
      local inside = "127.0.0.1:" .. closed_port()
      local contact = "sip:bob@" .. inside
      assert.equal(200, register(p, "bob", { contact = "<" .. contact .. ">", sent_by = inside }).status)
      local done, alice = message_to_bob("through the NAT")
      local m = p.wait(function(x) return x.method == "MESSAGE" end)
      assert.truthy(m, "the MESSAGE did not reach the phone's source address")
      assert.equal(contact, m.uri)
      assert.equal("through the NAT", m.body)
      local r = m:response(200)
      p.send({ (tostring(r):gsub("\r\nContent%-Length:[^\r]*\r\n\r\n$", "")) }, proxy)
      assert.truthy(helper.run_until(function() return done() end, 3, nil, STEP_MS))
      assert.equal(200, done().status)
      alice:close()
      p.close()
    end)

    it("echoes a MESSAGE back to a phone behind NAT, at the address it registered from", function()
      start()
      local p = phone()
      local inside = "127.0.0.1:" .. closed_port()
      assert.equal(200, register(p, "alice", { contact = "<sip:alice@" .. inside .. ">",
        sent_by = inside }).status)
      local function msg(auth)
        local t = {
          "MESSAGE sip:echo@localhost SIP/2.0",
          "Via: SIP/2.0/UDP " .. inside .. ";branch=" .. branch() .. ";rport",
          "Route: <sip:" .. proxy .. ";lr>",
          "Max-Forwards: 70",
          "From: <sip:alice@localhost>;tag=e1",
          "To: <sip:echo@localhost>",
          "Call-ID: echo-nat",
          "CSeq: " .. (auth and 2 or 1) .. " MESSAGE",
          "Content-Type: text/plain",
        }
        if auth then t[#t + 1] = "Proxy-Authorization: " .. auth end
        p.send(t, proxy, "echo me")
        return p.response()
      end
      local r407 = msg()
      assert.equal(407, r407.status)
      local auth = sip.auth.authorization(r407:headers("Proxy-Authenticate")[1], { user = "alice",
        password = USERS.alice.password, method = "MESSAGE", uri = "sip:echo@localhost" })
      assert.equal(200, msg(auth).status)
      local back = p.wait(function(x) return x.method == "MESSAGE" end)
      assert.truthy(back, "the echo did not come back through the NAT")
      assert.equal("echo me", back.body)
      p.close()
    end)

    it("takes a REGISTER sent from where its Via says at its word (a third party's Contact)", function()
      start()
      local p, other = phone(), phone()
      local contact = "sip:bob@127.0.0.1:" .. other.port
      assert.equal(200, register(p, "bob", { contact = "<" .. contact .. ">" }).status)
      local _, alice = message_to_bob("to the contact")
      local m = other.wait(function(x) return x.method == "MESSAGE" end)
      assert.truthy(m, "the MESSAGE did not go to the registered Contact")
      p.poll()
      assert.equal(0, #p.inbox)   -- nothing for the registering party itself
      alice:close()
      p.close()
      other.close()
    end)

    it("sends over the phone's own TCP connection to a Contact with transport=tcp", function()
      start()
      local host, port = srv.ep:address("tcp"):match("^(.*):(%d+)$")
      local t = assert(socket.tcp())
      assert(t:connect(host, tonumber(port)))
      t:settimeout(0)
      local lhost, lport = t:getsockname()
      local buf = ""
      local function read_msg()
        local m
        helper.run_until(function()
          local d, err, partial = t:receive(65536)
          buf = buf .. (d or partial or "")
          local head, rest = buf:match("^(.-\r\n\r\n)(.*)$")
          if head then
            local len = tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
            if #rest >= len then
              m = assert(sip.parse(head .. rest:sub(1, len)))
              buf = rest:sub(len + 1)
              return true
            end
          end
          return err == "closed"
        end, 3, nil, STEP_MS)
        return m
      end
      local contact = "sip:bob@127.0.0.1:" .. closed_port() .. ";transport=tcp"
      local function reg(auth)
        local lines = {
          "REGISTER sip:localhost;transport=tcp SIP/2.0",
          "Via: SIP/2.0/TCP " .. lhost .. ":" .. lport .. ";branch=" .. branch() .. ";rport",
          "Route: <sip:" .. srv.ep:address("tcp") .. ";transport=tcp;lr>",
          "Max-Forwards: 70",
          "From: <sip:bob@localhost>;tag=tcpbob",
          "To: <sip:bob@localhost>",
          "Call-ID: tcp-reg-bob",
          "CSeq: " .. (auth and 2 or 1) .. " REGISTER",
          "Contact: <" .. contact .. ">",
          "Expires: 300",
        }
        if auth then lines[#lines + 1] = "Authorization: " .. auth end
        assert(t:send(table.concat(lines, "\r\n") .. "\r\nContent-Length: 0\r\n\r\n"))
        return read_msg()
      end
      local r401 = reg()
      assert.equal(401, r401.status)
      local auth = sip.auth.authorization(r401:headers("WWW-Authenticate")[1], { user = "bob",
        password = USERS.bob.password, method = "REGISTER", uri = "sip:localhost;transport=tcp" })
      assert.equal(200, reg(auth).status)
      local done, alice = message_to_bob("over your connection")
      local m = read_msg()
      assert.truthy(m and m.method == "MESSAGE", "no MESSAGE on the phone's connection")
      assert.equal(contact, m.uri)
      assert(t:send(tostring(m:response(200))))
      assert.truthy(helper.run_until(function() return done() end, 3, nil, STEP_MS))
      assert.equal(200, done().status)
      alice:close()
      t:close()
    end)
  end)

  describe("an outbound proxy's Route on every method", function()
    -- a raw INVITE from alice (Route to us), authenticated after its 407; returns the
    -- authenticated INVITE's lines builder and the first response after the 407
    local function invite(p, callid, extra_wait)
      local from_tag = "inv" .. math.random(1e6)
      local sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n" ..
        "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
      local br = branch()
      local function lines(cseq, method, auth, b)
        local t = {
          method .. " sip:bob@localhost SIP/2.0",
          "Via: SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. b .. ";rport",
          "Route: <sip:" .. proxy .. ";lr>",
          "Max-Forwards: 70",
          "From: <sip:alice@localhost>;tag=" .. from_tag,
          "To: <sip:bob@localhost>",
          "Call-ID: " .. callid,
          "CSeq: " .. cseq .. " " .. method,
          "Contact: <sip:alice@127.0.0.1:" .. p.port .. ">",
        }
        if auth then t[#t + 1] = "Proxy-Authorization: " .. auth end
        return t
      end
      p.send(lines(1, "INVITE", nil, br), proxy, sdp)
      local r407 = p.wait(function(m) return m.status and m.status >= 200 end)
      assert.equal(407, r407.status)
      local ack = lines(1, "ACK", nil, br)
      ack[6] = r407:header("To") and ("To: " .. r407:header("To")) or ack[6]
      p.send(ack, proxy)
      local auth = sip.auth.authorization(r407:headers("Proxy-Authenticate")[1], { user = "alice",
        password = USERS.alice.password, method = "INVITE", uri = "sip:bob@localhost" })
      br = branch()
      p.send(lines(2, "INVITE", auth, br), proxy, sdp)
      return lines, br, from_tag
    end

    it("relays INVITE and CANCEL sent with a Route to us; the 487 is ACKed to us", function()
      start()
      local bob = lua_user("bob")
      local cancelled = false
      bob:on("INVITE", function(req)
        req:reply(180)
        req:on_cancel(function() cancelled = true end)
      end)
      local p = phone()
      local callid = "cancel-" .. math.random(1e9)
      local lines, br = invite(p, callid)
      assert.truthy(p.wait(function(m) return m.status == 180 end), "no 180")
      p.send(lines(2, "CANCEL", nil, br), proxy)
      local c200 = p.wait(function(m) return m.status == 200 and m.cseq_method == "CANCEL" end)
      assert.truthy(c200, "CANCEL not answered")
      local r487 = p.wait(function(m) return m.status == 487 end)
      assert.truthy(r487, "no 487")
      local ack = lines(2, "ACK", nil, br)
      ack[6] = "To: " .. r487:header("To")
      p.send(ack, proxy)
      assert.truthy(helper.run_until(function() return cancelled end, 3, nil, STEP_MS))
      -- the ACK ended the transaction: no 487 again
      helper.run_for(0.6, p.poll, STEP_MS)
      assert.is_nil(p.wait(function(m) return m.status == 487 end, 0))
      bob:close()
      p.close()
    end)

    it("sets up a call sent with a Route to us; ACK and BYE follow the Record-Route", function()
      start()
      local bob = lua_user("bob")
      local ended
      bob:on("INVITE", function(req)
        local call = req:answer(200, { sdp = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\n" ..
          "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n" })
        ended = call and call:wait()
      end)
      local p = phone()
      local callid = "call-" .. math.random(1e9)
      local lines = invite(p, callid)
      local ok = p.wait(function(m) return m.status == 200 and m.cseq_method == "INVITE" end)
      assert.truthy(ok, "no 200")
      assert.truthy(ok.body:find("m=audio 40002", 1, true))
      local rr = ok:headers("Record-Route")
      assert.equal(1, #rr)
      assert.truthy(rr[1]:find(proxy, 1, true))
      local target = ok:addr("Contact").uri
      -- §12.2.1.1: Request-URI the remote target, Route the route set
      local function in_dialog(cseq, method)
        local t = lines(cseq, method, nil, branch())
        t[1] = method .. " " .. target .. " SIP/2.0"
        t[3] = "Route: " .. rr[1]
        t[6] = "To: " .. ok:header("To")
        return t
      end
      p.send(in_dialog(2, "ACK"), proxy)
      helper.run_for(0.2, p.poll, STEP_MS)
      p.send(in_dialog(3, "BYE"), proxy)
      local bye = p.wait(function(m) return m.status and m.cseq_method == "BYE" end)
      assert.equal(200, bye and bye.status)
      assert.truthy(helper.run_until(function() return ended end, 3, nil, STEP_MS))
      assert.equal("remote bye", ended)
      bob:close()
      p.close()
    end)
  end)
end)
