-- spec/phones_spec.lua: real softphones through `luasip serve` (its own process): baresip
-- and Linphone register with digest over UDP and TCP with serve as their outbound proxy,
-- message each other (pager model), call (SDP through the proxy, Record-Route honoured) and
-- hang up, and talk to the echo bot. spec/softphone.lua starts and drives them.
local peer = require "peer"
local softphone = require "softphone"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local DOMAIN = "localhost"

-- Lua pattern-escape
local function esc(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- what serve logged for a REGISTER: challenged first, then 200 over this transport
local function registered_with_digest(log, user, transport)
  return log:find("REGISTER <?sip:" .. user .. "@" .. esc(DOMAIN) .. ">? %-> challenge") ~= nil
    and log:find("REGISTER sip:" .. user .. "@" .. DOMAIN .. " from " .. transport ..
      ":127%.0%.0%.1:%d+ %-> 200") ~= nil
end

for _, tr in ipairs { "udp", "tcp" } do
  describe("baresip through luasip serve over " .. tr:upper(), function()
    local srv, alice, bob

    lazy_setup(function()
      assert(peer.have("baresip"), "baresip is needed (Debian: baresip)")
      srv = softphone.serve { users = USERS, domain = DOMAIN }
      local common = { domain = DOMAIN, proxy = srv.addr, transport = tr }
      local function phone(user, extra)
        local o = { user = user, password = USERS[user] }
        for k, v in pairs(common) do o[k] = v end
        for k, v in pairs(extra) do o[k] = v end
        return softphone.baresip(o)
      end
      -- alice's contacts: bob first (the current one), then the echo bot
      alice = phone("alice", { contacts = { "sip:bob@" .. DOMAIN, "sip:echo@" .. DOMAIN } })
      bob = phone("bob", { auto_answer = true })
    end)

    lazy_teardown(function()
      local log = srv and srv:log() or ""
      for _, x in ipairs { alice, bob, srv } do
        if x then x:stop() end
      end
      assert(not (srv and srv.crashed), "luasip serve ended by itself:\n" .. log)
    end)

    it("registers both phones with digest", function()
      assert.truthy(alice:registered(), alice:output())
      assert.truthy(bob:registered(), bob:output())
      assert.truthy(registered_with_digest(srv:log(), "alice", tr), srv:log())
      assert.truthy(registered_with_digest(srv:log(), "bob", tr), srv:log())
    end)

    it("delivers alice's MESSAGE to bob's phone (pager model)", function()
      local text = "hello bob over " .. tr .. " " .. math.random(1e6)
      assert.truthy(alice:command("message", text))   -- to her current contact: bob
      assert.truthy(bob:printed("sip:alice@" .. DOMAIN .. ': "' .. text .. '"'), bob:output())
      assert.truthy(srv:log():find("MESSAGE sip:bob@" .. DOMAIN .. " -> 200", 1, true), srv:log())
    end)

    it("calls bob, who answers; alice hangs up and bob sees the BYE", function()
      assert.truthy(alice:command("dial", "sip:bob@" .. DOMAIN))
      -- bob's phone got alice's offer and answered it; alice got bob's answer: both through serve
      assert.truthy(bob:event("CALL_REMOTE_SDP", function(e) return e.param == "offer" end),
        bob:output())
      assert.truthy(bob:event("CALL_ESTABLISHED"), bob:output())
      assert.truthy(alice:event("CALL_REMOTE_SDP", function(e) return e.param == "answer" end))
      assert.truthy(alice:event("CALL_ESTABLISHED"), alice:output())
      assert.truthy(srv:log():find("INVITE sip:bob@" .. DOMAIN .. " -> 200", 1, true), srv:log())
      assert.truthy(alice:command("hangup"))
      local closed = bob:event("CALL_CLOSED")
      assert.truthy(closed, bob:output())
      assert.equal("Connection reset by peer", closed.param)   -- the remote side's BYE
      -- the BYE followed the Record-Route: through serve, answered by bob
      assert.truthy(srv:log():find("BYE sip:bob[^\n]* %(in dialog%) %-> 200"), srv:log())
    end)

    it("gets the echo bot's answer to a MESSAGE", function()
      assert.truthy(alice:command("contact_next"))   -- the echo bot
      local text = "echo this over " .. tr .. " " .. math.random(1e6)
      assert.truthy(alice:command("message", text))
      assert.truthy(alice:printed("sip:echo@" .. DOMAIN .. ': "' .. text .. '"'), alice:output())
    end)
  end)
end

for _, tr in ipairs { "udp", "tcp" } do
  describe("Linphone (linphone-daemon) through luasip serve over " .. tr:upper(), function()
    local srv, alice, bob

    lazy_setup(function()
      assert(peer.have("linphone-daemon"), "linphone-daemon is needed (Debian: linphone-cli)")
      srv = softphone.serve { users = USERS, domain = DOMAIN }
      local function phone(user, auto)
        return softphone.linphone { user = user, password = USERS[user], domain = DOMAIN,
          proxy = srv.addr, transport = tr, auto_answer = auto }
      end
      alice = phone("alice")
      bob = phone("bob", true)
    end)

    lazy_teardown(function()
      local log = srv and srv:log() or ""
      for _, x in ipairs { alice, bob, srv } do
        if x then x:stop() end
      end
      assert(not (srv and srv.crashed), "luasip serve ended by itself:\n" .. log)
    end)

    -- A chat message the phone received from `from` and took (liblinphone's own log: an
    -- incoming message goes from Idle straight to Delivered), carrying text.
    local function received(phone, from, text)
      return phone:logged("Chat message %S+ of chat room ConferenceId%(peer=IdentityAddress%(" ..
        esc(from) .. "%)[^\n]* : moving from Idle to Delivered") and
        phone:logged("\n" .. esc(text) .. "\n")
    end

    it("registers both phones with digest", function()
      assert.truthy(alice:registered(), alice:log():sub(-3000))
      assert.truthy(bob:registered(), bob:log():sub(-3000))
      assert.truthy(registered_with_digest(srv:log(), "alice", tr), srv:log())
      assert.truthy(registered_with_digest(srv:log(), "bob", tr), srv:log())
    end)

    it("delivers alice's MESSAGE to bob's phone (pager model)", function()
      local text = "hello-bob-over-" .. tr .. "-" .. math.random(1e6)
      local r = alice:command("message sip:bob@" .. DOMAIN .. " " .. text)
      assert.truthy(r and r:find("Status: Ok", 1, true), r)
      assert.truthy(received(bob, "sip:alice@" .. DOMAIN, text), srv:log())
    end)

    it("calls bob, who answers; alice hangs up and bob sees the BYE", function()
      local r = alice:command("call sip:bob@" .. DOMAIN)
      assert.truthy(r and r:find("Status: Ok", 1, true), r)
      assert.truthy(softphone.wait_for(function()
        return bob:call_state() == "LinphoneCallStreamsRunning"
      end, softphone.STEP_SECONDS), srv:log())
      assert.truthy(softphone.wait_for(function()
        return alice:call_state() == "LinphoneCallStreamsRunning"
      end, softphone.STEP_SECONDS), srv:log())
      assert.truthy(srv:log():find("INVITE sip:bob@" .. DOMAIN .. " -> 200", 1, true), srv:log())
      -- SDP offer and answer went through serve: each phone has the other's
      assert.truthy(bob:logged("\nINVITE sip:bob@[^\n]*\n.-m=audio"), "no offer at bob")
      r = alice:command("terminate")
      assert.truthy(r and r:find("Status: Ok", 1, true), r)
      assert.truthy(bob:logged("\nBYE sip:bob@"), "bob got no BYE")
      assert.truthy(softphone.wait_for(function() return bob:call_state() == nil end,
        softphone.STEP_SECONDS))
      assert.truthy(srv:log():find("BYE sip:bob[^\n]* %(in dialog%) %-> 200"), srv:log())
    end)

    it("gets the echo bot's answer to a MESSAGE", function()
      local text = "echo-this-over-" .. tr .. "-" .. math.random(1e6)
      local r = alice:command("message sip:echo@" .. DOMAIN .. " " .. text)
      assert.truthy(r and r:find("Status: Ok", 1, true), r)
      assert.truthy(received(alice, "sip:echo@" .. DOMAIN, text), srv:log())
    end)
  end)
end

describe("the digest algorithms luasip serve offers, against real phones", function()
  local srv, phones

  before_each(function()
    phones = {}
  end)

  after_each(function()
    for _, x in ipairs(phones) do x:stop() end
    if srv then srv:stop() end
    srv = nil
  end)

  local function start(args)
    srv = softphone.serve { users = USERS, domain = DOMAIN, args = args }
  end

  it("lets Linphone answer SHA-256 when asked to offer it first (--algorithms SHA-256,MD5)", function()
    assert(peer.have("linphone-daemon"), "linphone-daemon is needed (Debian: linphone-cli)")
    start { "--algorithms", "SHA-256,MD5" }
    local a = softphone.linphone { user = "alice", password = USERS.alice, domain = DOMAIN,
      proxy = srv.addr }
    phones[#phones + 1] = a
    assert.truthy(a:registered(), srv:log())
    assert.truthy(a:logged("\nAuthorization: [^\n]*algorithm=SHA%-256"), "Linphone did not use SHA-256")
  end)

  -- why MD5 alone is the default: baresip 1.0 gives up on the first challenge it does not know
  it("shows baresip 1.0 failing on a SHA-256 challenge beside an MD5 one", function()
    assert(peer.have("baresip"), "baresip is needed (Debian: baresip)")
    start { "--algorithms", "SHA-256,MD5" }
    local b = softphone.baresip { user = "bob", password = USERS.bob, domain = DOMAIN,
      proxy = srv.addr }
    phones[#phones + 1] = b
    assert.truthy(b:printed("Register: Function not implemented"), b:output())
    assert.falsy(srv:log():find("REGISTER sip:bob@" .. DOMAIN .. " from", 1, true))
  end)
end)

describe("a phone registered at luasip serve when serve restarts", function()
  -- baresip refreshes its binding well before the interval it asked for runs out
  local REGINT = 4

  it("registers again by itself (baresip, UDP): the new serve knows it", function()
    assert(peer.have("baresip"), "baresip is needed (Debian: baresip)")
    local srv = softphone.serve { users = USERS, domain = DOMAIN }
    local b = softphone.baresip { user = "bob", password = USERS.bob, domain = DOMAIN,
      proxy = srv.addr, regint = REGINT }
    local ok, err = pcall(function()
      assert.truthy(b:registered(), b:output())
      local port = srv.port
      srv:stop()   -- its bindings are gone with it (the memory store)
      srv = softphone.serve { users = USERS, domain = DOMAIN, port = port }
      assert.truthy(softphone.wait_for(function()
        return srv:log():find("REGISTER sip:bob@" .. DOMAIN .. " from udp:", 1, true)
      end, REGINT + 2), srv:log())
      -- and it is reachable again: a MESSAGE from another phone gets to it
      local a = softphone.baresip { user = "alice", password = USERS.alice, domain = DOMAIN,
        proxy = srv.addr, contacts = { "sip:bob@" .. DOMAIN } }
      local ok2, err2 = pcall(function()
        assert.truthy(a:registered(), a:output())
        assert.truthy(a:command("message", "after the restart"))
        assert.truthy(b:printed('sip:alice@' .. DOMAIN .. ': "after the restart"'), b:output())
      end)
      a:stop()
      assert(ok2, err2)
    end)
    b:stop()
    srv:stop()
    assert(ok, err)
  end)
end)
