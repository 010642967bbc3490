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
  local argv = { "env" }
  for k, v in pairs(o.env or {}) do argv[#argv + 1] = k .. "=" .. v end
  for _, a in ipairs { "lua5.4", peer.path("bin/luasip"), "serve", "--no-huge-pages",
    "--listen", "udp:127.0.0.1:" .. port,
    "--domain", "localhost" } do
    argv[#argv + 1] = a
  end
  if o.users then
    argv[#argv + 1] = "--users"
    argv[#argv + 1] = write(dir .. "/users.txt", o.users)
  else
    argv[#argv + 1] = "--no-auth"
  end
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
  local self = setmetatable({ port = port, proxy = "sip:127.0.0.1:" .. port, dir = dir,
    p = peer.start(argv) }, Serve)
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

  it("failover.lua takes a failing gateway out and sends the next requests to the next one", function()
    local gw1, gw2 = user("gw1"), user("gw2")
    gw1.ep.handlers.MESSAGE = nil
    gw1.ep:on("MESSAGE", function(req)
      gw1.got[#gw1.got + 1] = req
      req:reply(503)
    end)
    srv = serve_process { users = "alice:alice-pw\n",
      env = { GATEWAYS = gw1.ep:uri() .. " " .. gw2.ep:uri(), PROBE_EVERY = "1" },
      args = { "--script", peer.path("examples/scripts/failover.lua") } }
    local alice = user("alice")
    -- the first goes to the cheapest gateway, which fails (its 503 goes up as 500, §16.7)
    assert.equal(500, message(alice, "sip:+15551234@localhost", "one").status)
    assert.equal(1, #gw1.got)
    assert.equal("sip:+15551234@" .. gw1.ep:address("udp"), gw1.got[1].uri)
    -- the next ones go to the second
    assert.equal(200, message(alice, "sip:+15551234@localhost", "two").status)
    assert.equal("two", gw2.got[1].body)
    -- once gw1 answers the probe again, it is back first
    gw1.ep.handlers.MESSAGE = nil
    gw1.ep:on("MESSAGE", function(req)
      gw1.got[#gw1.got + 1] = req
      req:reply(200)
    end)
    assert.truthy(srv:says("gateway " .. gw1.ep:uri():gsub("%p", "%%%0") .. " is back"))
    assert.equal(200, message(alice, "sip:+15551234@localhost", "three").status)
    assert.equal("three", gw1.got[2].body)
    -- not a number: the default policy (alice is not registered: 480)
    assert.equal(480, message(alice, "sip:alice@localhost", "x").status)
  end)
end)
