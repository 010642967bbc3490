-- spec/ops_spec.lua: operating `luasip serve`: a routing script (--script) with reload,
-- the control socket (luasip ctl), metrics, JSON logs and SIP capture. Servers that take
-- signals or sockets run as processes, stopped by PID.
local sip = require "sip"
local cli = require "sip.cli"
local helper = require "helper"
local peer = require "peer"

local function tmpdir()
  return peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- a UA on a free port that answers MESSAGE 200 and keeps what it got
local function ua(name)
  local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  local u = { ep = ep, name = name, got = {} }
  ep:on("MESSAGE", function(req)
    u.got[#u.got + 1] = req
    req:reply(200)
  end)
  ep:on("OPTIONS", function(req) req:reply(200) end)
  return u
end

-- run f in a coroutine on the loop until it returns (or `seconds` pass): its results
local function run(f, seconds)
  local out
  sip.spawn(function() out = table.pack(f()) end)
  helper.run_until(function() return out end, seconds or 5)
  assert(out, "timed out")
  return table.unpack(out, 1, out.n)
end

describe("serve --script", function()
  local dir, srv, proxy, alice, carol_box
  before_each(function()
    dir = tmpdir()
    alice, carol_box = ua("alice"), ua("carol's voicemail")
  end)
  after_each(function()
    if srv then srv.stop() end
    srv = nil
    alice.ep:close()
    carol_box.ep:close()
    os.execute("rm -rf " .. dir)
  end)

  local function start(script_text)
    local path = write(dir .. "/route.lua", script_text)
    local err
    srv, err = cli.server { listen = { "udp:127.0.0.1:0" }, no_auth = true, quiet = true,
      domain = "localhost", script = path }
    assert(srv, err)
    proxy = "sip:" .. srv.ep:address("udp")
    return path
  end

  local function message(to, text)
    return run(function()
      return alice.ep:message(to, text, { target = proxy, from = "sip:alice@localhost" })
    end)
  end

  local function register(u)
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost",
      from = "sip:" .. u.name .. "@localhost", to = "sip:" .. u.name .. "@localhost",
      contact = u.ep:uri(u.name), headers = { Expires = "60" } })
    local res = run(function() return u.ep:request(req, { target = proxy }) end)
    assert.equal(200, res.status)
  end

  it("changes routing for one user while the rest follow the default", function()
    start(([[
      function route(req, serve)
        local _, _, user = require("sip").core.uri_hostport(req)
        if user == "carol" and req.method == "MESSAGE" then
          return req:relay(%q)   -- carol's messages go to her voicemail
        end
        return serve.default(req)
      end]]):format(carol_box.ep:uri("carol")))
    register(alice)
    assert.equal(200, message("sip:carol@localhost", "for carol").status)
    assert.equal(1, #carol_box.got)
    assert.equal("for carol", carol_box.got[1].body)
    -- the default policy: alice is registered, nobody is unknown
    assert.equal(200, message("sip:alice@localhost", "to myself").status)
    assert.equal("to myself", alice.got[1].body)
    assert.equal(404, message("sip:nobody@localhost", "?").status)
    assert.equal(1, #carol_box.got)   -- nothing more for her box
  end)

  it("hands the script serve's parts: registrar, policy, echo bot, logger", function()
    start([[
      local serve = ...
      assert(serve.registrar and serve.policy and serve.echo and serve.log and serve.ep)
      function route(req, serve)
        if req.method == "MESSAGE" and req.body == "count" then
          return req:reply(200, "bindings " .. #serve.registrar:lookup("sip:alice@localhost"))
        end
        return serve.default(req)
      end]])
    register(alice)
    assert.equal("bindings 1", message("sip:x@localhost", "count").reason)
  end)

  it("refuses to start on a script that does not load, saying why in one line", function()
    for _, case in ipairs {
      { "function route(req, serve)\n  return (\nend\n", "route.lua:3:" },
      { "error('no database here')\n", "no database here" },
      { "x = 1\n", "defines no global function route" },
    } do
      local path = write(dir .. "/route.lua", case[1])
      local s, err = cli.server { listen = { "udp:127.0.0.1:0" }, no_auth = true, quiet = true,
        script = path }
      assert.falsy(s)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.falsy(err:find("\n", 1, true), err)
    end
  end)

  it("reloads the script in place; a broken one leaves the old one routing", function()
    local path = start([[function route(req) req:reply(200, "one") end]])
    assert.equal("one", message("sip:x@localhost", "a").reason)
    write(path, [[function route(req) req:reply(200, "two") end]])
    assert.truthy(srv.script:reload())
    assert.equal("two", message("sip:x@localhost", "b").reason)
    write(path, [[function route(req) req:reply(200, "three" end]])
    local ok, err = srv.script:reload()
    assert.falsy(ok)
    assert.truthy(err:find("route.lua:1:", 1, true), err)
    assert.equal("two", message("sip:x@localhost", "c").reason)
    -- globals of the old version are gone: each load starts from a clean environment
    write(path, [[seen = (seen or 0) + 1; function route(req) req:reply(200, "seen " .. seen) end]])
    assert.truthy(srv.script:reload())
    assert.truthy(srv.script:reload())
    assert.equal("seen 1", message("sip:x@localhost", "d").reason)
  end)
end)

-- `luasip serve` as a process: serve_process{ args = {...}, env = {K = V}, users = text }
-- -> s with s.port, s.proxy (its URI), s.pid (serve's own PID), s:log(), s:stop()
local Serve = {}
Serve.__index = Serve

local function serve_process(o)
  local dir = tmpdir()
  local port = peer.free_udp_port()
  if o.tcp then
    -- a port free for both
    local socket = require "socket"
    for _ = 1, 20 do
      local t = socket.tcp()
      local ok = t:bind("127.0.0.1", port)
      t:close()
      if ok then break end
      port = peer.free_udp_port()
    end
  end
  local argv = { "env" }
  for k, v in pairs(o.env or {}) do argv[#argv + 1] = k .. "=" .. v end
  for _, a in ipairs { "lua5.4", peer.path("bin/luasip"), "serve", "--no-huge-pages",
    "--listen", "udp:127.0.0.1:" .. port,
    "--domain", "localhost" } do
    argv[#argv + 1] = a
  end
  if o.tcp then
    argv[#argv + 1] = "--listen"
    argv[#argv + 1] = "tcp:127.0.0.1:" .. port
  end
  if o.users then
    argv[#argv + 1] = "--users"
    argv[#argv + 1] = write(dir .. "/users.txt", o.users)
  else
    argv[#argv + 1] = "--no-auth"
  end
  local control = dir .. "/serve.ctl"
  for _, a in ipairs { "--control", control } do argv[#argv + 1] = a end
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
  local self = setmetatable({ port = port, proxy = "sip:127.0.0.1:" .. port, dir = dir,
    control = control, p = peer.start(argv) }, Serve)
  local probe = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  local up = run(function()
    for _ = 1, 50 do
      local res = probe:options(self.proxy, { timeout = 0.2 })
      if res and res.status == 200 then return true end
      if not peer.alive(self.p.pid) then return false end
      sip.sleep(0.1)
    end
  end, 10)
  probe:close()
  assert(up, "serve did not start: " .. self:log())
  -- the shell peer.start runs serve under: serve is its only child
  self.pid = tonumber(peer.sh("pgrep -P " .. self.p.pid):match("%d+"))
  return self
end

function Serve:log()
  return peer.slurp(self.p.dir .. "/out") or ""
end

function Serve:says(pattern, seconds)
  return helper.run_until(function() return self:log():find(pattern) end, seconds or 5) ~= nil
end

-- `luasip ctl --control <ours> args...` as a process: exit code, output
function Serve:ctl(...)
  local argv = { "lua5.4", peer.path("bin/luasip"), "ctl", "--control", self.control, ... }
  local code, out, more = peer.run(argv, 10)
  return code, code and out or more
end

-- where --metrics 127.0.0.1:0 listens: serve says so when it starts
function Serve:metrics_address()
  assert(self:says("metrics at http://[%d.]+:%d+/metrics"), self:log())
  return self:log():match("metrics at http://([%d.]+:%d+)/metrics")
end

function Serve:stop()
  if self.pid then os.execute("kill -TERM " .. self.pid .. " 2>/dev/null") end
  local code = peer.wait(self.p, 3)
  peer.clean(self.p)
  os.execute("rm -rf " .. self.dir)
  return code
end

describe("examples/scripts", function()
  local srv, users = nil, {}
  after_each(function()
    if srv then srv:stop() end
    srv = nil
    for _, u in pairs(users) do u.ep:close() end
    users = {}
  end)

  local function user(name)
    users[name] = ua(name)
    return users[name]
  end

  local function register(u)
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost",
      from = "sip:" .. u.name .. "@localhost", to = "sip:" .. u.name .. "@localhost",
      contact = u.ep:uri(u.name), headers = { Expires = "60" } })
    local res = run(function()
      return u.ep:request(req, { target = srv.proxy, user = u.name, password = u.name .. "-pw" })
    end)
    assert.equal(200, res.status)
  end

  local function message(u, to, text)
    return run(function()
      return u.ep:message(to, text, { target = srv.proxy, from = "sip:" .. u.name .. "@localhost",
        user = u.name, password = u.name .. "-pw" })
    end)
  end

  it("default.lua routes as serve does: registrar, relay, echo bot, 404/480", function()
    srv = serve_process { users = "alice:alice-pw\nbob:bob-pw\n",
      args = { "--script", peer.path("examples/scripts/default.lua") } }
    local alice, bob = user("alice"), user("bob")
    register(alice)
    assert.equal(200, message(bob, "sip:alice@localhost", "hello alice").status)
    assert.equal("hello alice", alice.got[1].body)
    assert.equal(480, message(alice, "sip:bob@localhost", "not registered").status)
    assert.equal(404, message(alice, "sip:nobody@localhost", "?").status)
    assert.equal(200, message(alice, "sip:echo@localhost", "echo this").status)
    assert.truthy(helper.run_until(function() return alice.got[2] end))
    assert.equal("echo this", alice.got[2].body)
    -- without credentials the policy still refuses
    local res = run(function()
      return bob.ep:message("sip:alice@localhost", "x", { target = srv.proxy, from = "sip:bob@localhost" })
    end)
    assert.equal(407, res.status)
  end)

  it("bot_for_some.lua answers the users it lists and refuses the others", function()
    srv = serve_process { users = "alice:alice-pw\nbob:bob-pw\n", env = { BOT_USERS = "alice" },
      args = { "--script", peer.path("examples/scripts/bot_for_some.lua") } }
    local alice, bob = user("alice"), user("bob")
    register(alice)
    register(bob)
    assert.equal(200, message(alice, "sip:bot@localhost", "shout").status)
    assert.truthy(helper.run_until(function() return alice.got[1] end))
    assert.equal("SHOUT", alice.got[1].body)
    assert.equal(403, message(bob, "sip:bot@localhost", "shout").status)
    -- the rest is the default policy
    assert.equal(200, message(bob, "sip:alice@localhost", "hi").status)
    assert.equal("hi", alice.got[2].body)
  end)

  it("failover.lua tries the gateways in turn, and takes a failing one out", function()
    local gw1, gw2 = user("gw1"), user("gw2")
    local gw1_answer = 503
    gw1.ep:on("MESSAGE", function(req)
      gw1.got[#gw1.got + 1] = req
      req:reply(gw1_answer)
    end)
    srv = serve_process { users = "alice:alice-pw\n",
      env = { GATEWAYS = gw1.ep:uri() .. " " .. gw2.ep:uri(), PROBE_EVERY = "1" },
      args = { "--script", peer.path("examples/scripts/failover.lua") } }
    local alice = user("alice")
    -- the cheapest gateway fails with 503: the same request goes on to the next one
    assert.equal(200, message(alice, "sip:+15551234@localhost", "one").status)
    assert.equal(1, #gw1.got)
    assert.equal("sip:+15551234@" .. gw1.ep:address("udp"), gw1.got[1].uri)
    assert.equal("one", gw2.got[1].body)
    assert.equal("sip:+15551234@" .. gw2.ep:address("udp"), gw2.got[1].uri)
    -- one Via of ours and one Max-Forwards step, whatever the number of tries
    assert.equal(gw1.got[1]:header("Max-Forwards"), gw2.got[1]:header("Max-Forwards"))
    assert.equal(#gw1.got[1]:headers("Via"), #gw2.got[1]:headers("Via"))
    -- gw1 is out: the next one goes straight to gw2
    assert.equal(200, message(alice, "sip:+15551234@localhost", "two").status)
    assert.equal(1, #gw1.got)
    assert.equal("two", gw2.got[2].body)
    -- once gw1 answers the probe again, it is back first
    gw1_answer = 200
    assert.truthy(srv:says("gateway " .. gw1.ep:uri():gsub("%p", "%%%0") .. " is back"))
    assert.equal(200, message(alice, "sip:+15551234@localhost", "three").status)
    assert.equal("three", gw1.got[2].body)
    -- the last gateway's failure goes upstream (a 503 as 500, §16.7)
    gw1_answer = 503
    gw2.ep:on("MESSAGE", function(req) req:reply(503) end)
    assert.equal(500, message(alice, "sip:+15551234@localhost", "four").status)
    -- not a number: the default policy (alice is not registered: stored for her, 202)
    assert.equal(202, message(alice, "sip:alice@localhost", "x").status)
  end)
end)

-- a REGISTER of user's contact at contact, from a Lua endpoint, through srv (no auth)
local function register_contact(srv, user, contact)
  local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost",
    from = "sip:" .. user .. "@localhost", to = "sip:" .. user .. "@localhost",
    contact = contact, headers = { Expires = "300" } })
  local res = run(function() return ep:request(req, { target = srv.proxy }) end)
  ep:close()
  assert.equal(200, res.status)
end

local function sipp_argv(scenario, args)
  local argv = { "sipp", "-sf", peer.path("spec/sipp/" .. scenario), "-i", "127.0.0.1",
    "-nostdin", "-trace_err" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

-- sipp's UAS as `user` (registered through srv) and its UAC sending `count` calls or
-- MESSAGEs to that user at `rate`/s; during(s) runs while they do. Both exit codes.
local function sipp_load(srv, kind, user, count, rate, during)
  local uas_port = peer.free_udp_port()
  register_contact(srv, user, "sip:" .. user .. "@127.0.0.1:" .. uas_port)
  local uas = peer.start(sipp_argv("serve_" .. kind .. "_uas.xml", { "-p", tostring(uas_port),
    "-mp", tostring(peer.free_udp_port()), "-m", tostring(count), "-timeout", "30s",
    "-timeout_error" }))
  helper.run_until(function() return peer.udp_bound(uas_port) end, 5)
  local uac = peer.start(sipp_argv("serve_" .. kind .. "_uac.xml", { "-p",
    tostring(peer.free_udp_port()), "-mp", tostring(peer.free_udp_port()), "-m", tostring(count),
    "-r", tostring(rate), "-s", user, "-timeout", "30s", "-timeout_error",
    "127.0.0.1:" .. srv.port }))
  if during then during() end
  local uac_code, uac_out = peer.wait(uac, 40)
  local uas_code, uas_out = peer.wait(uas, 10)
  peer.clean(uac)
  peer.clean(uas)
  return uac_code, uas_code, (uac_out or "") .. (uas_out or "")
end

describe("serve reload", function()
  local srv
  after_each(function()
    if srv then srv:stop() end
    srv = nil
  end)

  local VERSION = [[
    local serve = ...
    function route(req, serve)   -- version %d: the default policy, counted
      serve.routed = (serve.routed or 0) + 1
      return serve.default(req)
    end]]

  it("loses no call of a sipp load while the script is reloaded, by ctl and by SIGHUP", function()
    assert(peer.have("sipp"), "sipp is needed")
    local dir = tmpdir()
    local path = write(dir .. "/route.lua", VERSION:format(1))
    srv = serve_process { args = { "--script", path } }
    local reloads, refused = 0, nil
    local uac_code, uas_code, out = sipp_load(srv, "call", "carol", 100, 40, function()
      for v = 2, 7 do
        run(function() sip.sleep(0.25) end)
        write(path, VERSION:format(v))
        if v % 2 == 0 then
          local code = srv:ctl("reload")
          if code == 0 then reloads = reloads + 1 end
        else
          os.execute("kill -HUP " .. srv.pid)
          reloads = reloads + 1
        end
        if v == 4 then
          -- a broken version in the middle: refused, the last good one goes on
          write(path, "function route(req, serve\n")
          local code, msg = srv:ctl("reload")
          refused = { code = code, msg = msg }
        end
      end
    end)
    assert.equal(0, uac_code, out .. srv:log())
    assert.equal(0, uas_code, out .. srv:log())
    assert.equal(6, reloads)
    assert.equal(1, refused.code)
    assert.truthy(refused.msg:find("route.lua:2:", 1, true), refused.msg)
    assert.equal(1, select(2, refused.msg:gsub("\n", "")), refused.msg)   -- one line
    -- every reload, SIGHUP's included, said so in the log; the refused one with its reason
    assert.truthy(srv:says("script " .. path:gsub("%p", "%%%0") .. " reloaded"))
    local _, said = srv:log():gsub("reloaded\n", "")
    assert.equal(6, said, srv:log())
    assert.truthy(srv:log():find("not reloaded, the old one stays: " .. path .. ":2:", 1, true))
    local code, stats = srv:ctl("stats")
    assert.equal(0, code)
    assert.truthy(stats:find("script_loads 7", 1, true), stats)
    assert.truthy(stats:find("script_load_failures 1", 1, true), stats)
    os.execute("rm -rf " .. dir)
  end)

  it("keeps registrations and TCP connections across a reload", function()
    local dir = tmpdir()
    local path = write(dir .. "/route.lua", VERSION:format(1))
    srv = serve_process { tcp = true, args = { "--script", path } }
    local bob = ua("bob")
    register_contact(srv, "bob", bob.ep:uri("bob"))
    local tcp = assert(sip.endpoint { listen = { "tcp:127.0.0.1:0" } })
    local function send(text)
      return run(function()
        return tcp:message("sip:bob@localhost", text, { from = "sip:carol@localhost",
          target = srv.proxy .. ";transport=tcp" })
      end).status
    end
    assert.equal(200, send("before"))
    write(path, VERSION:format(2))
    assert.equal(0, (srv:ctl("reload")))
    os.execute("kill -HUP " .. srv.pid)
    assert.truthy(srv:says("reloaded\n.*reloaded\n"))
    assert.equal(200, send("after"))
    assert.same({ "before", "after" }, { bob.got[1].body, bob.got[2].body })
    local _, stats = srv:ctl("stats")
    assert.truthy(stats:find("\nconnections_accepted 1\n", 1, true), stats)   -- the same one
    assert.truthy(stats:find("\nregistrations 1\n", 1, true), stats)
    tcp:close()
    bob.ep:close()
    os.execute("rm -rf " .. dir)
  end)

  it("keeps the old script on SIGHUP when the new one raises at load time", function()
    local dir = tmpdir()
    local path = write(dir .. "/route.lua", [[function route(req) req:reply(200, "old") end]])
    srv = serve_process { args = { "--script", path } }
    local u = ua("u")
    write(path, [[error("the database is down")
      function route(req) req:reply(200, "new") end]])
    os.execute("kill -HUP " .. srv.pid)
    assert.truthy(srv:says("not reloaded, the old one stays: .*the database is down"))
    local res = run(function() return u.ep:message("sip:x@localhost", "?", { target = srv.proxy }) end)
    assert.equal("old", res.reason)
    u.ep:close()
    os.execute("rm -rf " .. dir)
  end)
end)

describe("luasip ctl", function()
  local srv
  after_each(function()
    if srv then srv:stop() end
    srv = nil
  end)

  it("lists registrations, all or one AOR, and says what it cannot do", function()
    srv = serve_process {}
    register_contact(srv, "alice", "sip:alice@127.0.0.1:5999")
    register_contact(srv, "bob", "sip:bob@127.0.0.1:5998")
    local code, out = srv:ctl("registrations")
    assert.equal(0, code, out)
    assert.truthy(out:find("sip:alice@localhost sip:alice@127.0.0.1:5999 expires=", 1, true), out)
    assert.truthy(out:find("sip:bob@localhost sip:bob@127.0.0.1:5998 expires=", 1, true), out)
    code, out = srv:ctl("registrations", "sip:bob@localhost")
    assert.equal(0, code, out)
    assert.falsy(out:find("alice", 1, true), out)
    assert.truthy(out:find("sip:bob@127.0.0.1:5998", 1, true), out)
    code, out = srv:ctl("stats")
    assert.equal(0, code, out)
    assert.truthy(out:find("\nregistrations 2\n", 1, true), out)
    -- the store's calls (two bindings written, at least) and their mean time
    assert.truthy(tonumber(out:match("\nstore_calls (%d+)\n")) >= 2, out)
    assert.truthy(tonumber(out:match("\nstore_latency_ms_avg ([%d.]+)\n")) > 0, out)
    code, out = srv:ctl("reload")
    assert.equal(1, code)
    assert.truthy(out:find("no --script to reload", 1, true), out)
    code, out = srv:ctl("dance")
    assert.equal(1, code)
    assert.truthy(out:find("unknown command dance", 1, true), out)
  end)

  it("removes its socket on SIGTERM, and ctl then says nobody is there", function()
    srv = serve_process {}
    assert.truthy(peer.sh("test -S " .. srv.control .. " && echo yes"):find("yes"))
    local control = srv.control
    assert.equal(0, srv:stop())
    srv = nil
    assert.falsy(peer.sh("test -e " .. control .. " && echo yes"):find("yes"))
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "ctl", "--control", control,
      "stats" }, 10)
    assert.equal(1, code)
    assert.truthy(out:find("is serve running", 1, true), out)
  end)
end)

-- GET http://HOST:PORT/PATH with luasocket: status, body
local function http_get(addr, path, method)
  local socket = require "socket"
  local host, port = addr:match("^(.*):(%d+)$")
  local c = assert(socket.tcp())
  c:settimeout(0)
  c:connect(host, tonumber(port))
  local req = (method or "GET") .. " " .. path .. " HTTP/1.1\r\nHost: " .. addr .. "\r\n\r\n"
  local sent, parts, done = 0, {}, false
  -- our own loop must keep running: the server may be in this process
  helper.run_until(function()
    if sent < #req then
      local n, _, partial = c:send(req, sent + 1)
      sent = n or partial or sent
      if n then sent = n end
      return false
    end
    local data, err, partial = c:receive(4096)
    if data or (partial and partial ~= "") then parts[#parts + 1] = data or partial end
    if err == "closed" then done = true end
    return done
  end, 5)
  c:close()
  local text = table.concat(parts)
  return tonumber(text:match("^HTTP/1%.1 (%d+)")), text:match("\r\n\r\n(.*)$"), text
end

-- the value of one sample in Prometheus text
local function sample(text, name)
  local v = text:match("\n" .. name:gsub("%p", "%%%0") .. " (%d+)\n")
  return tonumber(v)
end

describe("serve --metrics", function()
  local srv
  after_each(function()
    if srv then srv:stop() end
    srv = nil
  end)

  it("counts what a sipp MESSAGE load did, in text promtool accepts", function()
    assert(peer.have("sipp"), "sipp is needed")
    srv = serve_process { args = { "--metrics", "127.0.0.1:0" } }
    local addr = srv:metrics_address()
    local status, before = http_get(addr, "/metrics")
    assert.equal(200, status)
    local N = 200
    local during
    local uac_code, uas_code, out = sipp_load(srv, "message", "bob", N, 100, function()
      run(function() sip.sleep(0.5) end)
      local st
      st, during = http_get(addr, "/metrics")   -- in the middle of the load
      assert.equal(200, st)
    end)
    assert.equal(0, uac_code, out)
    assert.equal(0, uas_code, out)
    local after
    status, after = http_get(addr, "/metrics")
    assert.equal(200, status)
    local function delta(name)
      return (sample(after, name) or -1) - (sample(before, name) or 0)
    end
    -- sipp's UAC sent N, we relayed N to its UAS, which answered N 200s that went back
    -- (the REGISTER of its contact is one more request and 2xx)
    assert.equal(N, delta('luasip_requests_received_total{method="MESSAGE"}'))
    assert.equal(N, delta('luasip_requests_sent_total{method="MESSAGE"}'))
    assert.equal(N, delta('luasip_responses_received_total{class="2xx"}'))
    assert.equal(N + 1, delta('luasip_responses_sent_total{class="2xx"}'))
    assert.equal(1, delta('luasip_requests_received_total{method="REGISTER"}'))
    assert.equal(N, delta("luasip_relays_total"))
    assert.equal(1, sample(after, "luasip_registrations"))
    assert.equal(0, delta("luasip_auth_failures_total"))
    assert.truthy(sample(after, 'luasip_transactions{kind="server"}'))
    assert.truthy(sample(after, 'luasip_connections{transport="tcp"}'))
    -- the store's calls, timed: the REGISTER's binding written (a histogram by method)
    local puts = sample(after, 'luasip_store_latency_seconds_count{method="put"}')
    assert.truthy(puts and puts >= 1, after)
    assert.equal(puts, sample(after, 'luasip_store_latency_seconds_bucket{method="put",le="+Inf"}'))
    assert.equal(0, sample(after, 'luasip_store_failures_total{method="put"}'))
    assert.truthy(after:find('\nluasip_store_latency_seconds_sum{method="put"} [%d.e-]+\n'), after)
    -- mid-load, the count was on its way
    local mid = sample(during, 'luasip_requests_received_total{method="MESSAGE"}')
    assert.truthy(mid and mid <= N, during)
    if peer.have("promtool") then
      for _, text in ipairs { during, after } do
        local f = write(srv.dir .. "/metrics.txt", text)
        local check = peer.sh("promtool check metrics < " .. f .. " 2>&1; echo rc=$?")
        assert.truthy(check:find("rc=0", 1, true), check)
      end
    end
    -- only GET /metrics
    assert.equal(404, (http_get(addr, "/")))
    assert.equal(405, (http_get(addr, "/metrics", "POST")))
  end)

  it("counts auth failures and rate-limited requests", function()
    srv = serve_process { users = "alice:alice-pw\n",
      args = { "--metrics", "127.0.0.1:0", "--rate-limit", "5", "--rate-burst", "5",
        "--rate-exempt", "none" } }   -- (loopback passes the limit by default)
    local u = ua("alice")
    local res = run(function()
      return u.ep:message("sip:alice@localhost", "x", { target = srv.proxy,
        from = "sip:alice@localhost", user = "alice", password = "wrong" })
    end)
    assert.truthy(res.status == 403 or res.status == 407, res.status)
    local limited = 0
    for _ = 1, 12 do
      local r = run(function() return u.ep:options(srv.proxy) end)
      if r.status == 503 then limited = limited + 1 end
    end
    local _, text = http_get(srv:metrics_address(), "/metrics")
    assert.truthy(sample(text, "luasip_auth_failures_total") >= 1, text)
    assert.truthy(limited > 0)
    assert.equal(limited, sample(text, "luasip_rate_limited_total"))
    u.ep:close()
  end)
end)

describe("serve --log-format json", function()
  it("writes one JSON object per transaction", function()
    local srv = serve_process { args = { "--log-format", "json" } }
    local u = ua("alice")
    register_contact(srv, "alice", u.ep:uri("alice"))
    local res = run(function()
      return u.ep:message("sip:alice@localhost", "hi", { target = srv.proxy,
        from = "sip:alice@localhost" })
    end)
    assert.equal(200, res.status)
    assert.equal(404, run(function()
      return u.ep:message("sip:nobody@localhost", "hi", { target = srv.proxy })
    end).status)
    assert.truthy(srv:says('"outcome":404'))
    local log = srv:log()
    srv:stop()
    u.ep:close()
    local txns = {}
    for line in log:gmatch("[^\n]+") do
      assert.truthy(line:match("^{.*}$"), "not a JSON object: " .. line)
      if line:find('"method"', 1, true) then txns[#txns + 1] = line end
    end
    local function find(pat)
      for _, l in ipairs(txns) do
        if l:find(pat) then return l end
      end
    end
    local msg = assert(find('"method":"MESSAGE","call_id":"' .. res.call_id:gsub("%p", "%%%0")), log)
    for _, k in ipairs { "time", "method", "call_id", "from", "to", "source", "outcome", "duration_ms" } do
      assert.truthy(msg:find('"' .. k .. '":', 1, true), k .. " in " .. msg)
    end
    assert.truthy(msg:find('"outcome":200', 1, true), msg)
    assert.truthy(msg:find('"to":"sip:alice@localhost"', 1, true), msg)
    assert.truthy(msg:find('"time":"%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"'), msg)
    assert.truthy(find('"method":"REGISTER".*"outcome":200'), log)
    assert.truthy(find('"to":"sip:nobody@localhost".*"outcome":404'), log)
    -- if jq is around, it reads every line
    if peer.have("jq") then
      local f = write(os.tmpname(), log)
      local out = peer.sh("jq -c .method < " .. f .. " >/dev/null 2>&1; echo rc=$?")
      os.remove(f)
      assert.truthy(out:find("rc=0", 1, true), out)
    end
  end)
end)

describe("serve --capture", function()
  it("writes every SIP message in and out, UDP and TCP, as pcap that tshark and sngrep read", function()
    assert(peer.have("tshark"), "tshark is needed (Debian tshark)")
    local dir = tmpdir()
    local pcap = dir .. "/sip.pcap"
    local srv = serve_process { tcp = true, args = { "--capture", pcap, "--metrics", "127.0.0.1:0" } }
    -- over UDP: alice registers and gets a MESSAGE; over TCP: bob sends one to her
    local alice = ua("alice")
    register_contact(srv, "alice", alice.ep:uri("alice"))
    local bob = assert(sip.endpoint { listen = { "tcp:127.0.0.1:0" } })
    assert.equal(200, run(function()
      return bob:message("sip:alice@localhost", "over tcp", { from = "sip:bob@localhost",
        target = srv.proxy .. ";transport=tcp" })
    end).status)
    assert.equal("over tcp", alice.got[1].body)
    -- and a few calls from sipp, to carol (the call flow sngrep shows)
    local calls = 3
    if peer.have("sipp") then
      local uac_code, uas_code, out = sipp_load(srv, "call", "carol", calls, 10)
      assert.equal(0, uac_code, out)
      assert.equal(0, uas_code, out)
    end
    local _, metrics = http_get(srv:metrics_address(), "/metrics")
    assert.equal(0, srv:stop())   -- SIGTERM: the file is flushed and closed
    bob:close()
    alice.ep:close()
    -- what the server counted went to the file, each message once
    local counted = 0
    for n in metrics:gmatch('\nluasip_re[a-z]+_[a-z]+_total{[a-z]+="[^"]+"} (%d+)') do
      counted = counted + tonumber(n)
    end
    local function tshark(args)
      return peer.sh("tshark -r " .. pcap .. " " .. args .. " 2>/dev/null")
    end
    local frames = select(2, tshark("-T fields -e frame.number"):gsub("\n", ""))
    local sip_frames = select(2, tshark("-Y sip -T fields -e frame.number"):gsub("\n", ""))
    assert.truthy(frames > 0)
    -- (the metrics scrape itself came before the last few messages: at least as many)
    assert.truthy(frames >= counted, frames .. " frames, counted " .. counted)
    assert.equal(frames, sip_frames)   -- every one decoded as SIP
    local lines = tshark("-T fields -E separator=, -e ip.src -e ip.dst -e tcp.srcport " ..
      "-e udp.srcport -e tcp.dstport -e udp.dstport -e sip.Method -e sip.Status-Code")
    local port = tostring(srv.port)
    local tcp_seen, udp_seen = 0, 0
    for l in lines:gmatch("[^\n]+") do
      assert.truthy(l:find("^127%.0%.0%.1,127%.0%.0%.1,"), l)
      assert.truthy(l:find("," .. port .. ",", 1, true), "every message to or from serve: " .. l)
      if l:find("^[^,]*,[^,]*,%d+,") then tcp_seen = tcp_seen + 1 else udp_seen = udp_seen + 1 end
    end
    -- bob's MESSAGE and its 200 went over TCP; the relayed MESSAGE to alice over UDP
    assert.equal(2, tcp_seen, lines)
    assert.truthy(udp_seen > 0)
    assert.truthy(lines:find(",MESSAGE,", 1, true))
    assert.truthy(lines:find(",REGISTER,", 1, true))
    if peer.have("sipp") then
      local _, invites = lines:gsub(",INVITE,", "")
      assert.equal(2 * calls, invites)   -- in from sipp, out to carol
      if peer.have("sngrep") then
        local out = peer.sh("timeout 10 sngrep -I " .. pcap .. " -N 2>&1")
        local dialogs = tonumber(out:match("Dialog count: (%d+)%s*$"))
        -- REGISTER, 2 MESSAGEs, the calls (each a dialog), the OPTIONS probes
        assert.truthy(dialogs and dialogs >= calls + 3, out)
        out = peer.sh("timeout 10 sngrep -c -I " .. pcap .. " -N 2>&1")
        assert.equal(calls, tonumber(out:match("Dialog count: (%d+)%s*$")), out)
      end
    end
    os.execute("rm -rf " .. dir)
  end)
end)

describe("serve --capture on 0.0.0.0", function()
  it("writes the address the messages really used, not the wildcard", function()
    assert(peer.have("tshark"), "tshark is needed (Debian tshark)")
    local dir = tmpdir()
    local srv = assert(cli.server { listen = { "udp:0.0.0.0:0" }, no_auth = true, quiet = true,
      domain = "localhost", capture = dir .. "/c.pcap" })
    local port = srv.ep:address("udp"):match(":(%d+)$")
    local u = ua("alice")
    assert.equal(404, run(function()
      return u.ep:message("sip:nobody@localhost", "x", { target = "sip:127.0.0.1:" .. port })
    end).status)
    srv.stop()
    u.ep:close()
    local lines = peer.sh("tshark -r " .. dir .. "/c.pcap -T fields -E separator=, " ..
      "-e ip.src -e ip.dst -e udp.srcport -e udp.dstport 2>/dev/null")
    os.execute("rm -rf " .. dir)
    local _, n = lines:gsub("127%.0%.0%.1,127%.0%.0%.1,%d+,%d+\n", "")
    assert.equal(2, n, lines)
    assert.truthy(lines:find("," .. port .. "\n", 1, true), lines)   -- in, to its port
    assert.truthy(lines:find("," .. port .. ",", 1, true), lines)     -- out, from it
  end)
end)

describe("serve --hep", function()
  it("sends every message as HEPv3, which sngrep takes as a Homer collector", function()
    assert(peer.have("sngrep") and peer.have("tshark"), "sngrep and tshark are needed")
    local hep_port = peer.free_udp_port()
    -- sngrep listening for HEP, writing what it decodes as pcap
    local collector = peer.start { "sngrep", "-L", "udp:127.0.0.1:" .. hep_port, "-N",
      "-O", "hep.pcap" }
    assert.truthy(helper.run_until(function() return peer.udp_bound(hep_port) end, 5))
    local srv = serve_process { args = { "--hep", "udp:127.0.0.1:" .. hep_port } }
    local u = ua("alice")
    register_contact(srv, "alice", u.ep:uri("alice"))
    assert.equal(200, run(function()
      return u.ep:message("sip:alice@localhost", "via homer", { target = srv.proxy,
        from = "sip:alice@localhost" })
    end).status)
    run(function() sip.sleep(0.3) end)
    srv:stop()
    u.ep:close()
    os.execute("kill -TERM -" .. collector.pid .. " 2>/dev/null")   -- its process group
    peer.wait(collector, 5)
    local lines = peer.sh("tshark -r " .. collector.dir .. "/hep.pcap -Y sip -T fields " ..
      "-E separator=, -e udp.srcport -e udp.dstport -e sip.Method -e sip.Status-Code 2>/dev/null")
    peer.clean(collector)
    local port = tostring(srv.port)
    -- REGISTER + 200, MESSAGE in + out, 200 in + out: each as the hop it was, serve's port on it
    assert.truthy(lines:find(",REGISTER,", 1, true), lines)
    local _, messages = lines:gsub(",MESSAGE,", "")
    assert.equal(2, messages, lines)
    local _, oks = lines:gsub(",200\n", "")
    assert.truthy(oks >= 3, lines)
    for l in lines:gmatch("[^\n]+") do
      assert.truthy(l:find(port, 1, true), l)
    end
  end)
end)

describe("sip.ops in one process", function()
  it("serves metrics, the control socket and a capture around cli.server, and closes them", function()
    local dir = tmpdir()
    local srv = assert(cli.server { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0",
      "ws:127.0.0.1:0" }, no_auth = true,
      quiet = true, domain = "localhost", metrics = "127.0.0.1:0", capture = dir .. "/c.pcap",
      control = dir .. "/ctl" })
    local u = ua("alice")
    local proxy = "sip:" .. srv.ep:address("udp")
    assert.equal(404, run(function()
      return u.ep:message("sip:nobody@localhost", "x", { target = proxy })
    end).status)
    local status, body = http_get(srv.metrics.address, "/metrics")
    assert.equal(200, status)
    assert.equal(1, sample(body, 'luasip_requests_received_total{method="MESSAGE"}'))
    assert.equal(1, sample(body, 'luasip_responses_sent_total{class="4xx"}'))
    -- connections by transport: one over TCP, two over WebSocket
    for _, t in ipairs { "tcp", "tls", "ws", "wss" } do
      assert.equal(0, sample(body, 'luasip_connections{transport="' .. t .. '"}'))
    end
    local streams = {}
    for _, t in ipairs { "tcp", "ws", "ws" } do
      local e = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
      streams[#streams + 1] = e
      assert.equal(200, run(function()
        return e:options("sip:" .. srv.ep:address(t) .. ";transport=" .. t)
      end).status)
    end
    status, body = http_get(srv.metrics.address, "/metrics")
    assert.equal(1, sample(body, 'luasip_connections{transport="tcp"}'), body)
    assert.equal(2, sample(body, 'luasip_connections{transport="ws"}'), body)
    assert.equal(0, sample(body, 'luasip_connections{transport="tls"}'), body)
    assert.equal(2, sample(body, 'luasip_connections_accepted_total{transport="ws"}'), body)
    for _, e in ipairs(streams) do
      e:close()
    end
    -- the control socket
    local answer = {}
    -- (a client socket waiting at most 10 ms per read: the server is this very loop)
    local conn = assert(sip.core.connect_unix(dir .. "/ctl", 10))
    assert.equal(6, conn:write("stats\n"))
    helper.run_until(function()
      local d = conn:read()
      if d and d ~= "" then answer[#answer + 1] = d end
      return d == ""
    end, 5)
    conn:close()
    assert.truthy(table.concat(answer):find("^OK\n.*requests_in 4\n"), table.concat(answer))
    local st = srv.capture:stats()
    assert.equal(1, st.requests_in.MESSAGE)
    assert.equal(1, st.responses_out[4])
    srv.stop()
    u.ep:close()
    -- closed: the socket file is gone and the pcap holds both messages
    assert.falsy(io.open(dir .. "/ctl"))
    local pcap = assert(io.open(dir .. "/c.pcap", "rb")):read("a")
    assert.truthy(pcap:find("MESSAGE sip:nobody@localhost SIP/2.0", 1, true))
    assert.truthy(pcap:find("SIP/2.0 404", 1, true))
    os.execute("rm -rf " .. dir)
  end)
end)

describe("req:relay with keep_failure (a serial search, §16.6)", function()
  local proxy_ep, first, second, caller
  before_each(function()
    proxy_ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    first, second = ua("first"), ua("second")
    caller = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  after_each(function()
    for _, e in ipairs { proxy_ep, first.ep, second.ep, caller } do e:close() end
  end)

  -- the proxy tries first, then second; what each relay returned
  local function route_in_turn(outcomes)
    proxy_ep:route(function(req)
      if req.method == "ACK" or req.to_tag then
        return req:relay()
      end
      local res, err = req:relay(first.ep:uri("x"), { keep_failure = true })
      outcomes[#outcomes + 1] = res and res.status or err
      if res and res.status < 300 or req.replied_final then
        return
      end
      res = req:relay(second.ep:uri("x"))
      outcomes[#outcomes + 1] = res and res.status or "-"
    end)
  end

  it("takes an INVITE on to the next target after a failure, which never goes upstream", function()
    local outcomes = {}
    route_in_turn(outcomes)
    first.ep:on("INVITE", function(req) req:reply(503) end)
    local second_invite
    second.ep:on("INVITE", function(req)
      second_invite = req
      req:reply(180)
      local call = req:answer(200, { sdp = "v=0\r\n" })
      if call then call:wait() end
    end)
    local progress = {}
    local call, res = run(function()
      return caller:call("sip:x@" .. proxy_ep:address("udp"), { answer_sdp = "v=0\r\n",
        on_progress = function(r) progress[#progress + 1] = r.status end })
    end, 10)
    assert.truthy(call, res and res.status)
    assert.equal(200, res.status)
    assert.same({ 503, 200 }, outcomes)
    for _, s in ipairs(progress) do assert.truthy(s < 200) end   -- no 503 came up
    -- one Record-Route and one Via of ours on what the second target got
    assert.equal(1, #second_invite:headers("Record-Route"))
    assert.equal(2, #second_invite:headers("Via"))
    assert.equal("69", second_invite:header("Max-Forwards"))
    assert.equal(200, run(function() return call:bye() end).status)
  end)

  it("does not go on after the caller CANCELs", function()
    local outcomes = {}
    route_in_turn(outcomes)
    first.ep:on("INVITE", function(req) req:reply(180) end)   -- rings until cancelled
    local second_got = false
    second.ep:on("INVITE", function(req) second_got = true; req:reply(200) end)
    local call, res = run(function()
      return caller:call("sip:x@" .. proxy_ep:address("udp"), { timeout = 0.5 })
    end, 10)
    assert.falsy(call)
    assert.equal(487, res.status)
    helper.run_for(0.3)
    assert.falsy(second_got)
    assert.same({ 487 }, outcomes)
  end)
end)
