-- spec/examples_spec.lua: the scripts in examples/ run as processes (by PID, on ports picked at
-- run time) and driven by real peers — Lua endpoints as users, sipp, and each other.
local sip = require "sip"
local peer = require "peer"
local socket = require "socket"

local DOMAIN = "localhost"
local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw", bot = "bot-pw" }

-- Seconds a script gets to bind its ports (or register) and say so.
local START_DEADLINE = 5
-- Seconds one peer run may take; each finishes in well under a second on loopback.
local PEER_DEADLINE = 10
-- Seconds we wait for a request the peers should send us.
local ARRIVAL_DEADLINE = 5

local slurp = peer.slurp

local udp_bound = peer.udp_bound

-- Run our loop until cond() holds or the deadline passes.
local function step_until(cond, seconds)
  local deadline = socket.gettime() + seconds
  while not cond() and socket.gettime() < deadline do
    sip.sched.loop:step(20)
  end
  return cond()
end

--- A script of examples/ as a process: script(name, argv, ready) -> s; s:log(), s:stop()
local Script = {}
Script.__index = Script

local function script(name, argv, ready)
  local full = { "lua5.4", peer.path("examples/" .. name) }
  for _, a in ipairs(argv) do
    full[#full + 1] = a
  end
  local self = setmetatable({ name = name, p = peer.start(full) }, Script)
  -- our loop keeps serving meanwhile: the script may be registering with us
  local up = step_until(function()
    return self:log():find(ready) or not peer.alive(self.p.pid)
  end, START_DEADLINE)
  assert(up and self:log():find(ready), name .. " did not start:\n" .. self:log())
  return self
end

function Script:log()
  return slurp(self.p.dir .. "/out") or ""
end

-- Whether the script printed a line matching `pattern`; it logs a transaction only after
-- answering it, so we wait a little.
function Script:says(pattern)
  return step_until(function() return self:log():find(pattern) end, ARRIVAL_DEADLINE) ~= nil
end

-- Ends its process group by PID (TERM, then KILL), and keeps what it printed.
function Script:stop()
  if self.stopped then return self.output end
  self.stopped = true
  self.crashed = not peer.alive(self.p.pid)
  peer.wait(self.p, 0)
  self.output = self.p.output or ""
  peer.clean(self.p)
  return self.output
end

local function users_file()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write("# user:password\n")
  for user, pw in pairs(USERS) do
    f:write(user, ":", pw, "\n")
  end
  f:close()
  return path
end

-- A port free on 127.0.0.1 for UDP and TCP both (bound as the transport binds: TCP with
-- SO_REUSEADDR); other programs' connections hold many TCP ports.
local function free_port()
  for _ = 1, 20 do
    local port = peer.free_udp_port()
    local t = assert(socket.tcp())
    t:setoption("reuseaddr", true)
    local ok = t:bind("127.0.0.1", port)
    t:close()
    if ok then return port end
  end
  error("no port free for UDP and TCP")
end

-- examples/proxy.lua on a free port, UDP and TCP.
local function start_proxy(users)
  local port = free_port()
  local s = script("proxy.lua", { "--listen", "udp:127.0.0.1:" .. port,
    "--listen", "tcp:127.0.0.1:" .. port, "--domain", DOMAIN, "--users", users }, "proxy on ")
  s.port, s.addr = port, "127.0.0.1:" .. port
  return s
end

local function register_req(ep, user, kind)
  local aor = "sip:" .. user .. "@" .. DOMAIN
  return assert(sip.request { method = "REGISTER", uri = "sip:" .. DOMAIN, from = aor, to = aor,
    contact = ep:uri(user, kind), headers = { Expires = "60" } })
end

describe("examples/proxy.lua as a process", function()
  local proxy, users, endpoints

  before_each(function()
    users = users_file()
    proxy = start_proxy(users)
    endpoints = {}
  end)

  after_each(function()
    for _, ep in ipairs(endpoints) do
      ep:close()
    end
    local log = proxy:stop()
    os.remove(users)
    assert(not proxy.crashed, "examples/proxy.lua ended by itself:\n" .. log)
  end)

  local function endpoint(listen)
    local ep = assert(sip.endpoint { listen = listen or { "udp:127.0.0.1:0" } })
    endpoints[#endpoints + 1] = ep
    return ep
  end

  -- A Lua endpoint registered at the proxy as `user` (digest, as any phone would).
  local function user_ep(user)
    local ep = endpoint()
    local res, err = ep:request(register_req(ep, user), { target = "sip:" .. proxy.addr,
      user = user, password = USERS[user] })
    assert(res and res.status == 200, "REGISTER " .. user .. ": " ..
      tostring(res and res.status or err) .. "\n" .. proxy:log())
    return ep
  end

  local function message(from_ep, user, to, body)
    local req = assert(sip.request { method = "MESSAGE", uri = to,
      from = "sip:" .. user .. "@" .. DOMAIN, body = body, content_type = "text/plain" })
    return from_ep:request(req, { target = "sip:" .. proxy.addr, user = user,
      password = USERS[user] })
  end

  it("challenges a REGISTER with 401 and takes the digest answer with 200", function()
    local ep = endpoint()
    local res = ep:request(register_req(ep, "alice"), { target = "sip:" .. proxy.addr })
    assert.equal(401, res and res.status, proxy:log())
    assert.matches('realm="localhost"', res:header("WWW-Authenticate"), 1, true)
    res = ep:request(register_req(ep, "alice"), { target = "sip:" .. proxy.addr,
      user = "alice", password = USERS.alice })
    assert.equal(200, res and res.status, proxy:log())
    assert(proxy:says("REGISTER sip:localhost from udp:[^\n]* %-> 200"), proxy:log())
  end)

  it("refuses a REGISTER with the wrong password", function()
    local ep = endpoint()
    local res = ep:request(register_req(ep, "alice"), { target = "sip:" .. proxy.addr,
      user = "alice", password = "not-it" })
    assert.is_true(res.status == 401 or res.status == 403, proxy:log())
  end)

  it("registers over TCP too", function()
    local ep = endpoint { "tcp:127.0.0.1:0" }
    local res, err = ep:request(register_req(ep, "carol", "tcp"), {
      target = "sip:" .. proxy.addr .. ";transport=tcp", user = "carol", password = USERS.carol })
    assert(res and res.status == 200, tostring(res and res.status or err) .. "\n" .. proxy:log())
    assert(proxy:says("REGISTER sip:localhost from tcp:[^\n]* %-> 200"), proxy:log())
  end)

  it("delivers alice's MESSAGE to bob: Max-Forwards 69, two Vias, 200 back", function()
    local bob = user_ep("bob")
    local got
    bob:on("MESSAGE", function(req)
      got = req
      req:reply(200)
    end)
    local alice = user_ep("alice")
    local res, err = message(alice, "alice", "sip:bob@" .. DOMAIN, "hello bob")
    assert(res and res.status == 200, tostring(res and res.status or err) .. "\n" .. proxy:log())
    assert.is_not_nil(got)
    assert.equal("hello bob", got.body)
    assert.equal(69, got.max_forwards)
    local vias = got:vias()
    assert.equal(2, #vias)
    assert.equal(proxy.port, vias[1].port)   -- the proxy's, on top
    -- the proxy challenged alice (she is one of its users) before it relayed
    assert(proxy:says("MESSAGE sip:bob@localhost from [^\n]* %-> challenged"), proxy:log())
    assert(proxy:says("MESSAGE sip:bob@localhost from [^\n]* %-> 200"), proxy:log())
  end)

  it("answers 404 for an unknown user and 480 for one not registered", function()
    local alice = user_ep("alice")
    local res = message(alice, "alice", "sip:nobody@" .. DOMAIN, "hello?")
    assert.equal(404, res and res.status, proxy:log())
    res = message(alice, "alice", "sip:carol@" .. DOMAIN, "hello?")
    assert.equal(480, res and res.status, proxy:log())
  end)

  it("has an echo bot at sip:echo@DOMAIN that sends the text back to the sender", function()
    local alice = user_ep("alice")
    local echoed
    alice:on("MESSAGE", function(req)
      echoed = req
      req:reply(200)
    end)
    local res, err = message(alice, "alice", "sip:echo@" .. DOMAIN, "ping")
    assert(res and res.status == 200, tostring(res and res.status or err) .. "\n" .. proxy:log())
    assert(step_until(function() return echoed end, ARRIVAL_DEADLINE),
      "no echo came back\n" .. proxy:log())
    assert.equal("ping", echoed.body)
    assert.matches("sip:echo@localhost", echoed:header("From"), 1, true)
  end)
end)

describe("examples/echo_bot.lua as a process", function()
  local proxy, bot, users, cleanups

  before_each(function()
    assert(peer.have("sipp"), "sipp is needed")
    users = users_file()
    proxy = start_proxy(users)
    cleanups = {}
  end)

  after_each(function()
    for _, f in ipairs(cleanups) do
      f()
    end
    if bot then bot:stop() end
    bot = nil
    local log = proxy:stop()
    os.remove(users)
    assert(not proxy.crashed, "examples/proxy.lua ended by itself:\n" .. log)
  end)

  local function sipp(scenario, args)
    local argv = { "sipp", "-sf", peer.path("spec/sipp/" .. scenario), "-i", "127.0.0.1",
      "-nostdin", "-trace_err", "-trace_msg" }
    for _, a in ipairs(args) do
      argv[#argv + 1] = a
    end
    local p = peer.start(argv)
    cleanups[#cleanups + 1] = function()
      if not p.output then peer.wait(p, 0) end
      peer.clean(p)
    end
    return p
  end

  -- What a failed sipp run left: its output, errors and messages, and the scripts' logs.
  local function report(p)
    local parts = { table.concat(p.argv, " "), p.output or "" }
    local ls = io.popen("ls " .. p.dir)
    for name in ls:lines() do
      if name:match("errors%.log$") or name:match("messages%.log$") then
        parts[#parts + 1] = "--- " .. name .. ":\n" .. (slurp(p.dir .. "/" .. name) or ""):sub(-4000)
      end
    end
    ls:close()
    parts[#parts + 1] = "--- echo_bot.lua:\n" .. (bot and bot:log() or "")
    parts[#parts + 1] = "--- proxy.lua:\n" .. proxy:log()
    return table.concat(parts, "\n")
  end

  it("registers with digest, and answers a sipp MESSAGE with a reversed one of its own", function()
    bot = script("echo_bot.lua", { "--registrar", "sip:" .. proxy.addr, "--user", "bot",
      "--password", USERS.bot, "--listen", "udp:127.0.0.1:" .. peer.free_udp_port(),
      "--for", "30" }, "registration at [^\n]*: registered")
    assert(proxy:says("REGISTER sip:[^ ]* from [^\n]* %-> 200"), proxy:log())
    local reply_port = peer.free_udp_port()
    local uas = sipp("echo_bot_reply_uas.xml", { "-p", tostring(reply_port), "-m", "1",
      "-timeout", "10s", "-timeout_error" })
    step_until(function() return udp_bound(reply_port) or not peer.alive(uas.pid) end,
      START_DEADLINE)
    local uac = sipp("echo_bot_uac.xml", { "-p", tostring(peer.free_udp_port()), "-m", "1",
      "-s", "bot", "-key", "reply_port", tostring(reply_port), "-timeout", "10s",
      "-timeout_error", proxy.addr })
    assert.equal(0, peer.wait(uac, PEER_DEADLINE), report(uac))
    assert.equal(0, peer.wait(uas, PEER_DEADLINE), report(uas))
    assert(bot:says("reply %-> 200"), bot:log())
  end)
end)

describe("examples/call.lua as a process", function()
  it("calls a Lua UAS, stays on the line, hangs up and exits 0", function()
    local uas = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    local bye
    uas:on("INVITE", function(req)
      local answer = sip.sdp.answer(req.body, { address = "127.0.0.1", port = 40000,
        codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })
      req:reply(180)
      local call = req:answer { sdp = tostring(answer) }
      bye = call and call:wait()
    end)
    local code, out = peer.run({ "lua5.4", peer.path("examples/call.lua"), uas:uri("echo"),
      "--seconds", "1" }, PEER_DEADLINE)
    uas:close()
    assert.equal(0, code, out)
    assert.matches("180 Ringing", out, 1, true)
    assert.matches("remote media: 127.0.0.1 port 40000, PCMU/8000", out, 1, true)
    assert.matches("BYE -> 200", out, 1, true)
    assert.is_not_nil(bye)
  end)
end)
