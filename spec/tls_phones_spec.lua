-- spec/tls_phones_spec.lua: two baresips register over TLS with digest, message and call
-- each other through `luasip serve`, the callee reached on the connection it registered on
-- (the Contact it registers names a port where it takes no TLS: the proxy cannot dial it).
-- Drives the phones with spec/softphone.lua (issue 15's harness); pending without it.
local peer = require "peer"
local certs = require "tls_certs"

local have_harness, sp = pcall(require, "softphone")

describe("baresip over TLS through luasip serve", function()
  if not have_harness then
    pending("spec/softphone.lua (the softphone harness) is not here")
    return
  end
  if not peer.have("baresip") then
    pending("baresip is not installed")
    return
  end

  local dir, serve, alice, bob
  setup(function()
    dir = certs.make()
    local port = sp.free_port(2)   -- UDP/TCP on port, TLS on port + 1
    serve = sp.serve { users = { alice = "alice-secret", bob = "bob-secret" }, port = port,
      args = { "--listen", "tls:127.0.0.1:" .. (port + 1), "--cert", dir .. "/server.pem",
        "--key", dir .. "/server.key", "--algorithms", "MD5" } }
    local proxy = "127.0.0.1:" .. (port + 1)
    alice = sp.baresip { user = "alice", password = "alice-secret", domain = "localhost",
      proxy = proxy, transport = "tls", contacts = { "sip:bob@localhost" } }
    bob = sp.baresip { user = "bob", password = "bob-secret", domain = "localhost",
      proxy = proxy, transport = "tls", auto_answer = true }
  end)
  teardown(function()
    for _, p in ipairs { alice, bob, serve } do
      if p then p:stop() end
    end
    if dir then certs.remove(dir) end
  end)

  it("registers both with digest over TLS", function()
    assert.is_true(alice:registered())
    assert.is_true(bob:registered())
    assert.matches("REGISTER sip:alice@localhost from tls:127%.0%.0%.1:%d+ %-> 200", serve:log())
    assert.matches("REGISTER sip:bob@localhost from tls:127%.0%.0%.1:%d+ %-> 200", serve:log())
  end)

  it("delivers alice's MESSAGE to bob on bob's connection", function()
    assert.truthy(alice:command("message", "sip:bob@localhost hello-over-tls"))
    assert.is_true(bob:printed("hello-over-tls"))
  end)

  it("sets up a call from alice to bob and ends it with BYE", function()
    assert.truthy(alice:command("dial", "sip:bob@localhost"))
    assert.truthy(alice:event("CALL_ESTABLISHED", nil, 8))
    assert.truthy(bob:event("CALL_ESTABLISHED"))
    assert.truthy(alice:command("hangup"))
    assert.truthy(bob:event("CALL_CLOSED"))
    -- every hop of it went over TLS: nothing reached serve over UDP or TCP
    assert.falsy(serve:log():find("from udp:", 1, true))
    assert.falsy(serve:log():find("from tcp:", 1, true))
  end)
end)
