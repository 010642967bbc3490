-- spec/redis_spec.lua: two `luasip serve` processes on different ports sharing one
-- redis-server (started by this spec on a free loopback port, stopped by its PID) act as one
-- service; with the server down REGISTER gets 500 + Retry-After, and service comes back by
-- itself when it returns, with nothing 202'd lost.
local sip = require "sip"
local peer = require "peer"
local helper = require "helper"
local redis_server = require "redis_server"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }

local describe_redis = redis_server.available() and describe or pending

describe_redis("luasip serve --store redis:// (two processes, one redis-server)", function()
  local tmp, users_file, redis, procs, alice, bob, carol

  before_each(function()
    tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
    users_file = tmp .. "/users.txt"
    local f = assert(io.open(users_file, "w"))
    for u, p in pairs(USERS) do
      f:write(u, ":", p, "\n")
    end
    f:close()
    redis = assert(redis_server.start())
    procs = {}
    alice = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    bob = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    carol = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  after_each(function()
    for _, p in ipairs(procs) do
      os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
      peer.wait(p, 3)
      peer.clean(p)
    end
    redis_server.stop(redis)
    alice:close()
    bob:close()
    carol:close()
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  local function start_serve(...)
    local port = peer.free_udp_port()
    local argv = { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "localhost", "--users", users_file,
      "--store", "redis://127.0.0.1:" .. redis.port .. "/3", "--no-huge-pages", "--quiet", ... }
    local p = peer.start(argv)
    procs[#procs + 1] = p
    local res
    helper.run_until(function()
      if not (res and res.status == 200) then
        res = alice:options("sip:127.0.0.1:" .. port)
      end
      return res and res.status == 200
    end, 5)
    assert.equal(200, res and res.status, p.dir)
    return port
  end

  local function register(ep, user, port, expires)
    local aor = "sip:" .. user .. "@localhost"
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = ep:uri(user), headers = { Expires = expires or "600" } })
    return ep:request(req, { target = "sip:127.0.0.1:" .. port, user = user,
      password = USERS[user] })
  end

  local function message(to, text, port)
    local req = assert(sip.request { method = "MESSAGE", uri = "sip:" .. to .. "@localhost",
      from = "sip:alice@localhost", body = text, content_type = "text/plain" })
    local res = alice:request(req, { target = "sip:127.0.0.1:" .. port, user = "alice",
      password = USERS.alice })
    return res
  end

  it("reaches bob, registered at A, with a MESSAGE and a call sent through B", function()
    local a, b = start_serve(), start_serve()
    local got
    bob:on("MESSAGE", function(req)
      got = req.body
      req:reply(200)
    end)
    local ended
    bob:on("INVITE", function(req)
      local call = req:answer(200, { sdp = "v=0\r\n" })
      ended = call and call:wait()
    end)
    assert.equal(200, register(bob, "bob", a).status)
    assert.equal(200, message("bob", "via B", b).status)
    assert.equal("via B", got)

    local call, res = alice:call("sip:bob@localhost", { target = "sip:127.0.0.1:" .. b,
      from = "sip:alice@localhost", user = "alice", password = USERS.alice,
      answer_sdp = "v=0\r\n" })
    assert.truthy(call, res and res.status)
    assert.equal(200, res.status)
    -- B record-routed the dialog: the BYE goes through B, and B lets it pass
    assert.truthy(res:header("Record-Route"):find(":" .. b, 1, true))
    assert.equal(200, call:bye().status)
    assert.truthy(helper.run_until(function() return ended end, 5))

    -- bob unregisters at B: A no longer finds him
    assert.equal(200, register(bob, "bob", b, "0").status)
    assert.equal(480, alice:request(assert(sip.request { method = "OPTIONS",
      uri = "sip:bob@localhost", from = "sip:alice@localhost" }),
      { target = "sip:127.0.0.1:" .. a, user = "alice", password = USERS.alice }).status)
  end)

  local function sipp_argv(scenario, args)
    local argv = { "sipp", "-sf", peer.path("spec/sipp/" .. scenario), "-i", "127.0.0.1",
      "-nostdin", "-trace_err" }
    for _, a in ipairs(args) do
      argv[#argv + 1] = a
    end
    return argv
  end

  -- a sipp run to its end: exit code, and its output and error log when it failed
  local function sipp_done(p, seconds)
    local code, out = peer.wait(p, seconds)
    local report = ""
    if code ~= 0 then
      report = tostring(out) .. "\n" .. peer.sh("cat " .. p.dir .. "/*errors.log 2>/dev/null | tail -40")
    end
    peer.clean(p)
    return code, report
  end

  it("reaches bob, a sipp registered at A with digest, with sipp's MESSAGEs and calls through B",
    function()
    assert(peer.have("sipp"), "sipp is needed")
    local a, b = start_serve(), start_serve()
    local bob_port = peer.free_udp_port()
    local code, out = sipp_done(peer.start(sipp_argv("register_auth.xml", { "-p",
      tostring(bob_port), "-m", "1", "-s", "bob", "-au", "bob", "-ap", USERS.bob,
      "-timeout", "5s", "-timeout_error", "127.0.0.1:" .. a })), 10)
    assert.equal(0, code, out)
    for _, kind in ipairs { "message", "call" } do
      local n = kind == "message" and 10 or 3
      local uas = peer.start(sipp_argv("serve_" .. kind .. "_uas.xml", { "-p", tostring(bob_port),
        "-mp", tostring(peer.free_udp_port()), "-m", tostring(n), "-timeout", "20s",
        "-timeout_error" }))
      assert.truthy(helper.run_until(function() return peer.udp_bound(bob_port) end, 5))
      local uac = peer.start(sipp_argv("serve_" .. kind .. "_uac.xml", { "-p",
        tostring(peer.free_udp_port()), "-mp", tostring(peer.free_udp_port()), "-m", tostring(n),
        "-r", "10", "-s", "bob", "-timeout", "15s", "-timeout_error", "127.0.0.1:" .. b }))
      code, out = sipp_done(uac, 20)
      assert.equal(0, code, kind .. " UAC: " .. out)
      code, out = sipp_done(uas, 10)
      assert.equal(0, code, kind .. " UAS: " .. out)
    end
  end)

  it("answers /metrics and luasip ctl from the Redis store (their store calls wait on the loop)",
    function()
    local mport = peer.free_tcp_port()
    local a = start_serve("--metrics", "127.0.0.1:" .. mport, "--control", tmp .. "/ctl")
    assert.equal(200, register(bob, "bob", a).status)
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "ctl", "--control",
      tmp .. "/ctl", "registrations" }, 10)
    assert.equal(0, code, out)
    assert.truthy(out:find("sip:bob@localhost ", 1, true), out)
    local c = assert(require("socket").tcp())
    c:settimeout(5)
    assert(c:connect("127.0.0.1", mport))
    c:send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    local text = c:receive("*a")
    c:close()
    assert.truthy(text:find("^HTTP/1%.1 200"), text)
    assert.truthy(text:find("\nluasip_registrations 1\n", 1, true), text)
    assert.truthy(text:find('\nluasip_store_latency_seconds_count{method="put"} 1\n', 1, true), text)
  end)

  it("delivers at A a message stored through B when the user registers at A", function()
    local a, b = start_serve(), start_serve()
    assert.equal(202, message("carol", "left at B", b).status)
    local got
    carol:on("MESSAGE", function(req)
      got = req
      req:reply(200)
    end)
    assert.equal(200, register(carol, "carol", a).status)
    assert.truthy(helper.run_until(function() return got end, 5))
    assert.equal("left at B", got.body)
    assert.truthy(got:header("Date"))
  end)

  it("honours at B a nonce A issued, and refuses the same answer replayed to A", function()
    local a, b = start_serve(), start_serve()
    local function req(cseq, auth)
      return assert(sip.request { method = "MESSAGE", uri = "sip:carol@localhost",
        from = "sip:alice@localhost", call_id = "nonce-test", cseq = cseq, body = "n",
        content_type = "text/plain", headers = auth and { ["Proxy-Authorization"] = auth } })
    end
    local res = alice:request(req(1), { target = "sip:127.0.0.1:" .. a })
    assert.equal(407, res.status)
    local auth = assert(sip.auth.authorization(res:headers("Proxy-Authenticate"), {
      user = "alice", password = USERS.alice, method = "MESSAGE", uri = "sip:carol@localhost",
      body = "n" }))
    assert.equal(202, alice:request(req(2, auth), { target = "sip:127.0.0.1:" .. b }).status)
    -- the same nonce count again, at the other instance: a replay
    local again = alice:request(req(3, auth), { target = "sip:127.0.0.1:" .. a })
    assert.equal(407, again.status)
  end)

  it("answers 500 + Retry-After when redis holds the connection but answers nothing", function()
    local a = start_serve()
    assert.equal(200, register(bob, "bob", a).status)
    local server = tonumber(peer.sh("pgrep -P " .. redis.p.pid):match("%d+"))
    assert.truthy(server)
    os.execute("kill -STOP " .. server)
    local t0 = require("socket").gettime()
    local res = register(bob, "bob", a)
    local waited = require("socket").gettime() - t0
    os.execute("kill -CONT " .. server)
    assert.equal(500, res.status)
    assert.truthy(tonumber(res:header("Retry-After")))
    assert.truthy(waited < 10, waited)
    assert.truthy(helper.run_until(function()
      res = register(bob, "bob", a)
      return res.status == 200
    end, 10))
  end)

  it("keeps serving a MESSAGE load through redis-server's kill -9 and restart, losing no 202",
    function()
    local a = start_serve()
    local statuses, accepted, stop, sent = {}, {}, false, 0
    local bad_500 = 0
    sip.spawn(function()
      while not stop do
        sent = sent + 1
        local text = "m" .. sent
        local res = message("carol", text, a)   -- carol: known, not registered: stored, 202
        local st = res and res.status or 0
        statuses[st] = (statuses[st] or 0) + 1
        if st == 202 then
          accepted[#accepted + 1] = text
        elseif st == 500 and not tonumber(res:header("Retry-After")) then
          bad_500 = bad_500 + 1
        end
        sip.sleep(0.03)   -- at most ~33/s: well inside carol's 100 stored messages
      end
    end)
    helper.run_for(1)
    local before = #accepted
    redis_server.kill(redis)
    helper.run_for(1.5)
    local during = statuses[500] or 0
    assert(redis_server.start(redis))
    -- the client reconnects by itself, and stores again
    local after_restart = #accepted
    assert.truthy(helper.run_until(function() return #accepted > after_restart + 10 end, 10))
    stop = true
    helper.run_for(0.3)
    assert.truthy(peer.alive(procs[1].pid), "serve ended")
    assert.truthy(before > 10, before)
    assert.truthy(during > 0, "no clear error while redis was down")
    assert.equal(0, bad_500)
    for st in pairs(statuses) do
      assert.truthy(st == 202 or st == 500, "status " .. st)
    end
    -- every 202'd message is there: carol gets them all, in order, when she registers
    local got = {}
    carol:on("MESSAGE", function(req)
      got[#got + 1] = req.body
      req:reply(200)
    end)
    assert.equal(200, register(carol, "carol", a).status)
    assert.truthy(helper.run_until(function() return #got >= #accepted end, 20),
      #got .. " of " .. #accepted)
    helper.run_for(0.3)
    assert.same(accepted, got)
  end)

  it("answers REGISTER 500 + Retry-After while redis is down, and serves again after", function()
    local a = start_serve()
    assert.equal(202, message("carol", "before the outage", a).status)
    local got_bob = {}
    bob:on("MESSAGE", function(req)
      got_bob[#got_bob + 1] = req.body
      req:reply(200)
    end)
    assert.equal(200, register(bob, "bob", a).status)
    assert.equal(200, message("bob", "read once", a).status)
    redis_server.stop(redis, true)   -- keep its folder: its append-only file comes back

    -- routing goes on from the bindings last read
    assert.equal(200, message("bob", "from memory", a).status)
    assert.same({ "read once", "from memory" }, got_bob)
    local res = register(bob, "bob", a)
    assert.equal(500, res.status)
    assert.truthy(tonumber(res:header("Retry-After")))
    local m = message("carol", "during the outage", a)
    assert.equal(500, m.status)
    assert.truthy(tonumber(m:header("Retry-After")))

    assert(redis_server.start(redis))
    -- the client reconnects by itself
    assert.truthy(helper.run_until(function()
      res = register(bob, "bob", a)
      return res.status == 200
    end, 10))
    local got = {}
    carol:on("MESSAGE", function(req)
      got[#got + 1] = req.body
      req:reply(200)
    end)
    assert.equal(200, register(carol, "carol", a).status)
    assert.truthy(helper.run_until(function() return #got == 1 end, 5))
    helper.run_for(0.3)
    assert.same({ "before the outage" }, got)
  end)
end)
