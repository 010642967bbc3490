-- spec/offline_spec.lua: offline messages in `luasip serve` (sip.offline), in-process over
-- the memory and SQLite stores: 202 and stored for a known user with no binding, delivered
-- in order with a Date header when the user registers, deleted only after a 2xx, limits.
local sip = require "sip"
local helper = require "helper"
local cli = require "sip.cli"
local peer = require "peer"

local USERS = { alice = { password = "alice-pw" }, bob = { password = "bob-pw" } }

local tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
teardown(function()
  os.execute("rm -rf '" .. tmp .. "'")
end)

local function run_until(cond, seconds)
  return helper.run_until(cond, seconds, nil, 10)
end

for _, kind in ipairs { "memory", "sqlite" } do
  describe("offline messages (" .. kind .. " store)", function()
    local srv, proxy, alice, bob, n = nil, nil, nil, nil, 0

    local function ua()
      return assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    end

    local function register(ep, user, expires)
      local aor = "sip:" .. user .. "@localhost"
      local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
        to = aor, contact = ep:uri(user), headers = { Expires = expires or "300" } })
      return ep:request(req, { target = "sip:" .. proxy, user = user,
        password = USERS[user].password })
    end

    local function message(text, to, method)
      local req = assert(sip.request { method = method or "MESSAGE", uri = to or "sip:bob@localhost",
        from = "\"Alice\" <sip:alice@localhost>", body = text, content_type = "text/plain" })
      return alice:request(req, { target = "sip:" .. proxy, user = "alice", password = "alice-pw" })
    end

    before_each(function()
      n = n + 1
      local store = kind == "memory" and "memory" or ("sqlite:" .. tmp .. "/o" .. n .. ".db")
      srv = assert(cli.server { listen = { "udp:127.0.0.1:0" }, domain = "localhost",
        users = USERS, quiet = true, store = store })
      proxy = srv.ep:address("udp")
      alice, bob = ua(), ua()
    end)
    after_each(function()
      alice:close()
      bob:close()
      srv.stop()
    end)

    it("answers 202 to a MESSAGE for a known user with no binding and stores it", function()
      local res = message("are you there?")
      assert.equal(202, res.status)
      local list = srv.store:msg_list("sip:bob@localhost")
      assert.equal(1, #list)
      assert.equal("are you there?", list[1].body)
      assert.equal("text/plain", list[1].content_type)
      assert.truthy(list[1].from:find("<sip:alice@localhost>", 1, true))
      assert.falsy(list[1].from:find("tag=", 1, true))
      assert.truthy(list[1].to:find("sip:bob@localhost", 1, true))
      assert.truthy(math.abs(list[1].arrived - os.time()) <= 2)
    end)

    it("still answers 404 for an unknown user and 480 to other requests", function()
      assert.equal(404, message("x", "sip:nobody@localhost").status)
      assert.equal(480, message("x", "sip:bob@localhost", "OPTIONS").status)
      assert.same({}, srv.store:msg_list("sip:bob@localhost"))
    end)

    it("sends the stored messages in order, each with a Date, when the user registers", function()
      local t0 = os.time()
      for i = 1, 3 do
        assert.equal(202, message("number " .. i).status)
      end
      local got = {}
      bob:on("MESSAGE", function(req)
        got[#got + 1] = req
        req:reply(200)
      end)
      assert.equal(200, register(bob, "bob").status)
      assert.truthy(run_until(function() return #got == 3 end, 5))
      for i = 1, 3 do
        assert.equal("number " .. i, got[i].body)
        assert.equal("text/plain", got[i]:header("Content-Type"))
        assert.truthy(got[i]:header("From"):find("<sip:alice@localhost>", 1, true))
        local date = got[i]:header("Date")
        assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", date)
        assert.truthy(date == os.date("!%a, %d %b %Y %H:%M:%S GMT", t0)
          or date == os.date("!%a, %d %b %Y %H:%M:%S GMT", t0 + 1), date)
      end
      assert.truthy(run_until(function()
        return #srv.store:msg_list("sip:bob@localhost") == 0
      end, 2))
      -- a refresh sends nothing again
      assert.equal(200, register(bob, "bob").status)
      helper.run_for(0.3)
      assert.equal(3, #got)
    end)

    it("keeps a message whose delivery fails, and the ones after it, for the next registration",
      function()
      for i = 1, 3 do
        assert.equal(202, message("number " .. i).status)
      end
      local got, refuse = {}, true
      bob:on("MESSAGE", function(req)
        got[#got + 1] = req.body
        if refuse and req.body == "number 2" then
          return req:reply(486)
        end
        req:reply(200)
      end)
      assert.equal(200, register(bob, "bob").status)
      assert.truthy(run_until(function() return #got == 2 end, 5))
      helper.run_for(0.3)
      assert.same({ "number 1", "number 2" }, got)
      local left = srv.store:msg_list("sip:bob@localhost")
      assert.same({ "number 2", "number 3" }, { left[1].body, left[2].body })
      refuse = false
      assert.equal(200, register(bob, "bob").status)
      assert.truthy(run_until(function() return #got == 4 end, 5))
      assert.same({ "number 1", "number 2", "number 2", "number 3" }, got)
      assert.truthy(run_until(function()
        return #srv.store:msg_list("sip:bob@localhost") == 0
      end, 2))
    end)

    it("answers 480 past the per-user count limit and drops nothing stored", function()
      srv.offline.limits.count = 2
      assert.equal(202, message("one").status)
      assert.equal(202, message("two").status)
      local res = message("three")
      assert.equal(480, res.status)
      assert.equal("Offline message store full", res.reason)
      local left = srv.store:msg_list("sip:bob@localhost")
      assert.same({ "one", "two" }, { left[1].body, left[2].body })
    end)

    it("answers 480 past the per-user byte limit", function()
      srv.offline.limits.bytes = 300
      assert.equal(202, message(string.rep("a", 150)).status)
      assert.equal(480, message(string.rep("b", 150)).status)
      assert.equal(1, #srv.store:msg_list("sip:bob@localhost"))
    end)

    it("drops messages past the age limit (7 days) instead of delivering them", function()
      assert.equal(7 * 24 * 3600, srv.offline.max_age)
      local now = os.time()
      srv.offline.clock = function() return now - 8 * 24 * 3600 end
      assert.equal(202, message("stale").status)
      srv.offline.clock = function() return now end
      assert.equal(202, message("fresh").status)
      assert.equal(1, srv.offline:expire())
      local got = {}
      bob:on("MESSAGE", function(req)
        got[#got + 1] = req.body
        req:reply(200)
      end)
      assert.equal(200, register(bob, "bob").status)
      assert.truthy(run_until(function() return #got == 1 end, 5))
      helper.run_for(0.2)
      assert.same({ "fresh" }, got)
    end)

    it("relays as before once the user has a binding", function()
      local got
      bob:on("MESSAGE", function(req)
        got = req.body
        req:reply(200)
      end)
      assert.equal(200, register(bob, "bob").status)
      assert.equal(200, message("live").status)
      assert.equal("live", got)
      assert.same({}, srv.store:msg_list("sip:bob@localhost"))
    end)
  end)
end
