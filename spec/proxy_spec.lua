-- spec/proxy_spec.lua: `luasip serve` (registrar + stateful proxy + digest + echo bot) run
-- in-process, with Lua endpoints as the users: the seed's flows end to end.
local sip = require "sip"
local helper = require "helper"
local cli = require "sip.cli"
local socket = require "socket"

local USERS = { alice = { password = "alice-pw" }, bob = { password = "bob-pw" },
  carol = { password = "carol-pw" } }

local STEP_MS = 10   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end

describe("luasip serve", function()
  local srv, proxy, alice, bob

  local function ua()
    return assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
  end

  local function register(ep, user, password, opts)
    opts = opts or {}
    local aor = "sip:" .. user .. "@localhost"
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = opts.contact or ep:uri(user), headers = { Expires = opts.expires or "300" } })
    return ep:request(req, { target = "sip:" .. proxy, user = user, password = password })
  end

  local function send(ep, t, opts)
    opts = opts or {}
    local req = assert(sip.request(t))
    return ep:request(req, { target = "sip:" .. proxy, user = opts.user, password = opts.password })
  end

  before_each(function()
    srv = assert(cli.server { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" },
      domain = "localhost", users = USERS, quiet = true })
    proxy = srv.ep:address("udp")
    alice, bob = ua(), ua()
  end)
  after_each(function()
    alice:close()
    bob:close()
    srv.stop()
  end)

  describe("registration with digest", function()
    it("challenges with 401, then accepts the REGISTER with Authorization", function()
      local seen = {}
      local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost",
        from = "sip:alice@localhost", to = "sip:alice@localhost", contact = alice:uri("alice"),
        headers = { Expires = "3600" } })
      local res = alice:request(req, { target = "sip:" .. proxy, user = "alice",
        password = "alice-pw", on_progress = function(r) seen[#seen + 1] = r.status end })
      assert.equal(200, res.status)
      assert.equal("3600", res:header("Expires"))
      assert.equal(2, res.cseq)   -- the retry after the 401 counted up
      assert.matches("^Digest ", req:header("Authorization"))
      assert.equal(1, #srv.registrar:lookup("sip:alice@localhost"))
    end)

    it("keeps answering 401 to a wrong password", function()
      local res = register(alice, "alice", "wrong")
      assert.equal(401, res.status)
      assert.matches("Digest", res:header("WWW-Authenticate"))
      assert.equal(0, #srv.registrar:lookup("sip:alice@localhost"))
    end)
  end)

  describe("pager model", function()
    it("relays MESSAGE user1 -> proxy -> user2 and the 200 back", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local got
      bob:on("MESSAGE", function(req) got = req; req:reply(200) end)
      local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost", body = "user2, come here.\n", content_type = "text/plain" },
        { user = "alice", password = "alice-pw" })
      assert.equal(200, res.status)
      assert.equal(1, #res:vias())             -- the proxy's Via came off
      assert.equal("user2, come here.\n", got.body)
      assert.equal(69, got.max_forwards)
      local vias = got:vias()
      assert.equal(2, #vias)
      assert.truthy(vias[2].received)          -- the lower one: where alice really is
      assert.matches("^z9hG4bK", vias[1].branch)
    end)

    it("takes one off any Max-Forwards, whether its digits shrink or not", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local got = {}
      bob:on("MESSAGE", function(req) got[#got + 1] = req; req:reply(200) end)
      for _, mf in ipairs { 10, 1, 45 } do
        local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
          from = "sip:alice@localhost", max_forwards = mf }, { user = "alice", password = "alice-pw" })
        assert.equal(200, res.status)
        local req = got[#got]
        assert.equal(mf - 1, req.max_forwards)
        -- what bob got is what was on the wire: one Max-Forwards, the new value
        assert.same({ tostring(mf - 1) }, req:headers("Max-Forwards"))
        assert.equal(mf - 1, assert(sip.parse(tostring(req))).max_forwards)
      end
    end)

    it("answers 404 for an unknown user and 480 for a known user with no binding", function()
      local opts = { user = "alice", password = "alice-pw" }
      assert.equal(404, send(alice, { method = "MESSAGE", uri = "sip:nobody@localhost",
        from = "sip:alice@localhost" }, opts).status)
      -- (a MESSAGE is stored for later: spec/offline_spec.lua)
      assert.equal(480, send(alice, { method = "OPTIONS", uri = "sip:carol@localhost",
        from = "sip:alice@localhost" }, opts).status)
    end)

    it("challenges a local user's request with 407", function()
      local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost" })
      assert.equal(407, res.status)
      assert.matches("Digest", res:header("Proxy-Authenticate"))
    end)

    it("echoes a MESSAGE to sip:echo@DOMAIN back to the sender", function()
      assert.equal(200, register(alice, "alice", "alice-pw").status)
      local back
      alice:on("MESSAGE", function(req) back = req; req:reply(200) end)
      local res = send(alice, { method = "MESSAGE", uri = "sip:echo@localhost",
        from = "sip:alice@localhost", body = "ping", content_type = "text/plain" },
        { user = "alice", password = "alice-pw" })
      assert.equal(200, res.status)
      assert.truthy(run_until(function() return back end))
      assert.equal("ping", back.body)
      assert.equal("<sip:echo@localhost>", back:header("From"):match("^[^;]*"))
    end)
  end)

  describe("session model", function()
    it("carries INVITE/100/180/200/ACK/BYE/200 with Record-Route", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local uas_seen, ended = {}, nil
      bob:on("INVITE", function(req)
        uas_seen.invite = req
        req:reply(180)
        local call = req:answer(200, { sdp = "v=0\r\n" })
        uas_seen.ack = call and call.state
        ended = call and call:wait()
      end)
      local progress = {}
      local call, res = alice:call("sip:bob@localhost", { target = "sip:" .. proxy,
        from = "sip:alice@localhost", user = "alice", password = "alice-pw",
        answer_sdp = "v=0\r\n",   -- the INVITE offers nothing: the ACK answers (§13.2.1)
        on_progress = function(r) progress[#progress + 1] = r.status end })
      assert.truthy(call, res and res.status)
      assert.equal(100, progress[1])   -- from the proxy, at once
      assert.equal(180, progress[#progress])
      assert.equal(200, res.status)
      local rr = res:headers("Record-Route")
      assert.equal(1, #rr)
      assert.matches(proxy:gsub("%.", "%%."), rr[1])
      assert.matches(";lr", rr[1])
      assert.equal(1, #uas_seen.invite:headers("Record-Route"))
      assert.truthy(run_until(function() return uas_seen.ack end))
      local bye = call:bye()
      assert.equal(200, bye.status)
      assert.truthy(run_until(function() return ended end))
      assert.equal("remote bye", ended)
    end)

    it("takes a call from another domain to a local user without credentials, both sides hanging up along its Record-Route", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local bob_call
      bob:on("INVITE", function(req)
        bob_call = req:answer(200, { sdp = "v=0\r\n" })
      end)
      for _, who in ipairs { "caller", "callee" } do
        bob_call = nil
        local call, res = alice:call("sip:bob@localhost", { target = "sip:" .. proxy,
          from = "sip:carol@example.org", answer_sdp = "v=0\r\n" })
        assert.truthy(call, res and res.status)
        assert.matches(";lsk=%x+", res:header("Record-Route"))
        assert.truthy(run_until(function() return bob_call and bob_call.state end))
        local bye = who == "caller" and call:bye() or bob_call:bye()
        assert.equal(200, bye.status)
      end
    end)

    it("forks to every binding and takes the first 200, cancelling the rest", function()
      local bob2 = ua()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      assert.equal(200, register(bob2, "bob", "bob-pw").status)
      local cancelled = false
      bob:on("INVITE", function(req)
        req:reply(180)
        req:on_cancel(function() cancelled = true end)
      end)
      bob2:on("INVITE", function(req)
        sip.sleep(0.05)
        local c = req:answer(200, { sdp = "v=0\r\n" })
        if c then c:wait() end
      end)
      local call, res = alice:call("sip:bob@localhost", { target = "sip:" .. proxy,
        from = "sip:alice@localhost", user = "alice", password = "alice-pw",
        answer_sdp = "v=0\r\n" })
      assert.truthy(call)
      assert.equal(200, res.status)
      assert.truthy(run_until(function() return cancelled end))
      call:bye()
      bob2:close()
    end)

    it("passes a CANCEL on to the callee and answers 487", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local cancelled = false
      bob:on("INVITE", function(req)
        req:reply(180)
        req:on_cancel(function() cancelled = true end)
      end)
      local call, res = alice:call("sip:bob@localhost", { target = "sip:" .. proxy,
        from = "sip:alice@localhost", user = "alice", password = "alice-pw", timeout = 0.3 })
      assert.is_nil(call)
      assert.equal(487, res.status)
      assert.truthy(run_until(function() return cancelled end))
    end)
  end)

  describe("request validation (§16.3)", function()
    local opts = { user = "alice", password = "alice-pw" }
    it("answers 483 to Max-Forwards 0", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      assert.equal(483, send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost", max_forwards = 0 }, opts).status)
    end)
    it("answers 416 to an unsupported Request-URI scheme", function()
      assert.equal(416, send(alice, { method = "OPTIONS", uri = "im:bob@localhost",
        from = "sip:alice@localhost" }, opts).status)
    end)
    it("answers 420 with Unsupported to an unknown Proxy-Require", function()
      assert.equal(200, register(bob, "bob", "bob-pw").status)
      local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost", headers = { ["Proxy-Require"] = "nonsense" } }, opts)
      assert.equal(420, res.status)
      assert.equal("nonsense", res:header("Unsupported"))
    end)
    it("answers 482 to a request that loops back", function()
      -- bob's binding points at the proxy itself: the relayed request comes straight back
      assert.equal(200, register(bob, "bob", "bob-pw", { contact = "sip:bob@" .. proxy }).status)
      local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost" }, opts)
      assert.equal(482, res.status)
    end)
    it("relays a request that comes back with another Request-URI (a spiral, not a loop)", function()
      -- bob's binding sends the request back to the proxy for carol, whose binding is a UA:
      -- the second pass has a new Request-URI, so its loop hash differs (§16.3 item 4)
      local carol = ua()
      local got
      carol:on("MESSAGE", function(req) got = req; req:reply(200) end)
      assert.equal(200, register(carol, "carol", "carol-pw").status)
      assert.equal(200, register(bob, "bob", "bob-pw", { contact = "sip:carol@" .. proxy }).status)
      local res = send(alice, { method = "MESSAGE", uri = "sip:bob@localhost",
        from = "sip:alice@localhost", body = "hi" }, opts)
      assert.equal(200, res.status)
      assert.truthy(got)
      assert.equal(3, #got:headers("Via"))   -- alice, the proxy's first pass and its second
      carol:close()
    end)
  end)
end)
