-- spec/ws_peers_spec.lua: real WebSocket SIP peers through `serve` (in this process): JsSIP
-- in Node (npm jssip, with the npm `ws` package as its WebSocket) over ws: and wss:, and
-- the chat page in headless Chromium driven by npm playwright-core. `make web` installs the
-- npm packages into build/web/; a peer that cannot run here is skipped with the reason.
local helper = require "helper"
local peer = require "peer"
local cli = require "sip.cli"
local certs = require "tls_certs"

local MODULES = peer.path("build/web/node_modules")
local NODE_SCRIPT = peer.path("spec/web/jssip_node.js")
local BROWSER_SCRIPT = peer.path("spec/web/chat_browser.js")

local function have_modules(...)
  for _, m in ipairs { ... } do
    if not io.open(MODULES .. "/" .. m .. "/package.json") then
      return false, "npm package " .. m .. " missing (run `make web`)"
    end
  end
  if not peer.have("node") then
    return false, "node is not installed"
  end
  return true
end

local USERS = { alice = { password = "secret" }, bob = { password = "secret" } }

-- JSON lines of a peer's output, as { event = ... } tables (enough of JSON for these lines)
local function events(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do
    local e = line:match('^{"event":"([^"]*)"')
    if e then
      list[#list + 1] = { event = e, line = line }
    end
  end
  return list
end

local function find(list, name)
  for _, e in ipairs(list) do
    if e.event == name then return e end
  end
end

local function node(url, user, to, text, env)
  local argv = { "env", "NODE_MODULES=" .. MODULES }
  for _, v in ipairs(env or {}) do argv[#argv + 1] = v end
  for _, a in ipairs { "node", NODE_SCRIPT, url, user, "secret", "localhost", to, text } do
    argv[#argv + 1] = a
  end
  return argv
end

describe("JsSIP in Node through serve", function()
  local srv, dir
  local ok, why = have_modules("jssip", "ws")

  setup(function()
    dir = certs.make()
  end)
  teardown(function()
    certs.remove(dir)
  end)
  before_each(function()
    srv = assert(cli.server { listen = { "ws:127.0.0.1:0", "wss:127.0.0.1:0", "udp:127.0.0.1:0" },
      users = USERS, quiet = true, cert = dir .. "/server.pem", key = dir .. "/server.key" })
  end)
  after_each(function()
    srv.ep:close()
  end)

  local function url(kind)
    return kind .. "://" .. (kind == "wss" and "localhost" or "127.0.0.1") .. ":" ..
      srv.ep:address(kind):match(":(%d+)$")
  end

  for _, kind in ipairs { "ws", "wss" } do
    it("registers with digest over " .. kind .. ": and gets the echo bot's reply on its connection", function()
      if not ok then return pending(why) end
      local code, out = peer.run(node(url(kind), "alice", "sip:echo@localhost", "hello over " .. kind,
        { "NODE_EXTRA_CA_CERTS=" .. dir .. "/ca.pem" }), 15)
      local ev = events(out or "")
      assert.equal(0, code, out)
      assert.truthy(find(ev, "registered"), out)
      assert.truthy(find(ev, "sent").line:find('"status":200', 1, true), out)
      local m = find(ev, "message")
      assert.truthy(m.line:find('"from":"sip:echo@localhost"', 1, true), out)
      assert.truthy(m.line:find("hello over " .. kind, 1, true), out)
      -- the echo came to the client's Contact (an .invalid host) over its own connection
      assert.truthy(m.line:find('"via":"SIP/2.0/' .. kind:upper() .. ' ', 1, true), out)
    end)
  end

  it("lets two JsSIP UAs message each other (ws: to wss:)", function()
    if not ok then return pending(why) end
    local bob = peer.start(node(url("wss"), "bob", nil, nil, { "NODE_EXTRA_CA_CERTS=" .. dir .. "/ca.pem" }))
    assert.truthy(helper.run_until(function()
      return #srv.registrar:targets("sip:bob@localhost") > 0
    end, 10), "bob did not register")
    local code, out = peer.run(node(url("ws"), "alice", "sip:bob@localhost", "hi bob",
      { "EXIT_ON_SENT=1" }), 15)
    local bcode, bout = peer.wait(bob, 10)
    peer.clean(bob)
    assert.equal(0, code, out)
    assert.equal(0, bcode, bout)
    local m = find(events(bout), "message")
    assert.truthy(m and m.line:find('"from":"sip:alice@localhost"', 1, true), bout)
    assert.truthy(m.line:find("hi bob", 1, true), bout)
    assert.truthy(m.line:find('"via":"SIP/2.0/WSS ', 1, true), bout)
  end)
end)

describe("the chat page in headless Chromium", function()
  local ok, why = have_modules("playwright-core")
  if ok and not peer.have("chromium") then
    ok, why = false, "chromium is not installed (Debian package chromium)"
  end

  it("logs alice and bob in; bob sees alice's message, alice the echo bot's", function()
    if not ok then return pending(why) end
    local srv = assert(cli.server { listen = { "ws:127.0.0.1:0" }, users = USERS, quiet = true })
    local port = srv.ep:address("ws"):match(":(%d+)$")
    os.execute("mkdir -p build/web")
    local shot = peer.path("build/web/chat.png")
    os.remove(shot)
    local code, out = peer.run({ "env", "NODE_MODULES=" .. MODULES, "node", BROWSER_SCRIPT,
      "http://127.0.0.1:" .. port .. "/", shot }, 50)
    srv.ep:close()
    local ev = events(out or "")
    assert.equal(0, code, out)
    assert.truthy(find(ev, "default to").line:find('"to":"echo@localhost"', 1, true), out)
    assert.truthy(find(ev, "bob got it"), out)
    assert.truthy(find(ev, "alice got it"), out)
    assert.truthy(find(ev, "echo seen"), out)
    assert.truthy(io.open(shot), "no screenshot")
  end)
end)
