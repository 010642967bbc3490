-- spec/store_process_spec.lua: `luasip serve --store sqlite:FILE` as its own process, killed
-- with SIGKILL and started again: bindings and stored messages are still there. A file that
-- is no database stops serve at start with a one-line reason.
local sip = require "sip"
local peer = require "peer"
local helper = require "helper"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }

describe("luasip serve --store sqlite (process)", function()
  local tmp, users_file, alice, bob, carol, procs

  before_each(function()
    tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
    users_file = tmp .. "/users.txt"
    local f = assert(io.open(users_file, "w"))
    for u, p in pairs(USERS) do
      f:write(u, ":", p, "\n")
    end
    f:close()
    alice = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    bob = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    carol = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    procs = {}
  end)
  after_each(function()
    for _, p in ipairs(procs) do
      os.execute("kill -KILL -" .. p.pid .. " 2>/dev/null")
      peer.wait(p, 2)
      peer.clean(p)
    end
    alice:close()
    bob:close()
    carol:close()
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  -- serve on port with the store; returns once it answers OPTIONS
  local function start(port, store)
    local p = peer.start { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "localhost", "--users", users_file,
      "--store", store, "--no-huge-pages", "--quiet" }
    procs[#procs + 1] = p
    local res
    helper.run_until(function()
      if not (res and res.status == 200) then
        res = alice:options("sip:127.0.0.1:" .. port)
      end
      return res and res.status == 200
    end, 5)
    assert.equal(200, res and res.status)
    return p
  end

  -- serve p killed with SIGKILL, then started again on the same port and store
  local function kill_and_restart(p, port, store)
    os.execute("kill -KILL -" .. p.pid)
    peer.wait(p, 3)
    peer.clean(p)
    table.remove(procs, 1)
    return start(port, store)
  end

  local function register(ep, user, port)
    local aor = "sip:" .. user .. "@localhost"
    local req = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = ep:uri(user), headers = { Expires = "600" } })
    return ep:request(req, { target = "sip:127.0.0.1:" .. port, user = user,
      password = USERS[user] })
  end

  local function message(to, text, port)
    local req = assert(sip.request { method = "MESSAGE", uri = "sip:" .. to .. "@localhost",
      from = "sip:alice@localhost", body = text, content_type = "text/plain" })
    return alice:request(req, { target = "sip:127.0.0.1:" .. port, user = "alice",
      password = USERS.alice })
  end

  it("keeps bindings and stored messages across kill -9 and a restart", function()
    local port = peer.free_udp_port()
    local store = "sqlite:" .. tmp .. "/state/luasip.db"
    local p = start(port, store)
    assert.equal(200, register(bob, "bob", port).status)
    assert.equal(202, message("carol", "while you were out", port).status)

    kill_and_restart(p, port, store)

    -- bob's binding is still there: a MESSAGE reaches him without a new REGISTER
    local got_bob
    bob:on("MESSAGE", function(req)
      got_bob = req.body
      req:reply(200)
    end)
    assert.equal(200, message("bob", "still there?", port).status)
    assert.equal("still there?", got_bob)

    -- carol's stored message reaches her when she registers
    local got
    carol:on("MESSAGE", function(req)
      got = req
      req:reply(200)
    end)
    assert.equal(200, register(carol, "carol", port).status)
    assert.truthy(helper.run_until(function() return got end, 5))
    assert.equal("while you were out", got.body)
    assert.truthy(got:header("Date"))
  end)

  it("delivers a stored message to sipp registering as the user after a restart", function()
    if not peer.have("sipp") then
      return pending("sipp not installed")
    end
    local port = peer.free_udp_port()
    local store = "sqlite:" .. tmp .. "/state/luasip.db"
    local p = start(port, store)
    assert.equal(202, message("carol", "while you were out", port).status)
    kill_and_restart(p, port, store)
    -- carol's phone is sipp, listening on sport; her REGISTER names it as the Contact
    local sport = peer.free_udp_port()
    local s = peer.start { "sipp", "-sf", peer.path("spec/sipp/stored_message_uas.xml"),
      "-i", "127.0.0.1", "-p", tostring(sport), "-m", "1", "-nostdin", "-trace_err",
      "-timeout", "8s", "-timeout_error" }
    assert.truthy(helper.run_until(function() return peer.udp_bound(sport) end, 5))
    local aor = "sip:carol@localhost"
    local reg = assert(sip.request { method = "REGISTER", uri = "sip:localhost", from = aor,
      to = aor, contact = "<sip:carol@127.0.0.1:" .. sport .. ">", headers = { Expires = "60" } })
    assert.equal(200, carol:request(reg, { target = "sip:127.0.0.1:" .. port, user = "carol",
      password = USERS.carol }).status)
    local code, out = peer.wait(s, 12)
    peer.clean(s)
    assert.equal(0, code, out)
  end)

  it("delivers a stored message to baresip, a real phone registering as the user, after kill -9",
    function()
    if not peer.have("baresip") then
      return pending("baresip not installed")
    end
    local softphone = require "softphone"
    local port = peer.free_udp_port()
    local store = "sqlite:" .. tmp .. "/state/luasip.db"
    local p = start(port, store)
    assert.equal(202, message("carol", "left for your phone", port).status)
    kill_and_restart(p, port, store)
    local phone = softphone.baresip { user = "carol", password = USERS.carol,
      domain = "localhost", proxy = "127.0.0.1:" .. port }
    local ok, registered, printed = pcall(function()
      return phone:registered(10), phone:printed("left for your phone", 10)
    end)
    local out = phone:output()
    phone:stop()
    assert.truthy(ok, registered)
    assert.truthy(registered, out)
    assert.truthy(printed, out)
  end)

  it("stops at start with a one-line reason on a file that is no database", function()
    local path = tmp .. "/bad.db"
    local f = assert(io.open(path, "w"))
    f:write(string.rep("garbage, not a database\n", 200))
    f:close()
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:0", "--no-auth", "--no-huge-pages", "--store", "sqlite:" .. path }, 5)
    assert.equal(1, code)
    assert.truthy(out:find("luasip: " .. path, 1, true), out)
    assert.truthy(out:find("not a database", 1, true), out)
    assert.equal(1, select(2, out:gsub("\n", "")), out)
  end)

  it("refuses a store it does not know, naming the forms it takes", function()
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), "serve", "--no-auth",
      "--no-huge-pages", "--store", "postgres://x" }, 5)
    assert.equal(1, code)
    assert.truthy(out:find("want memory, sqlite:FILE or redis://HOST:PORT[/DB]", 1, true), out)
  end)
end)
