-- spec/auth_peers_spec.lua: Digest authentication against real SIP peers (sipsak, sipp)
-- registering at a Lua registrar that uses auth:check; peers run by PID with a deadline.
local sip = require "sip"
local peer = require "peer"

local USERS = { alice = "wonderland" }

-- Seconds a peer may take for one registration; both finish in milliseconds on loopback.
local PEER_DEADLINE = 15

-- A registrar that answers REGISTER after auth:check; `seen` records each request's
-- credentials header so a spec can tell which algorithm the peer chose.
local function registrar(algorithms)
  local ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  local auth = sip.auth.digest {
    realm = "example.org", algorithms = algorithms,
    credentials = function(user) return USERS[user] end,
  }
  local r = { ep = ep, seen = {}, accepted = 0 }
  ep:on("REGISTER", function(req)
    r.seen[#r.seen + 1] = req:header("Authorization") or false
    local ok = auth:check(req)
    if not ok then return end
    r.accepted = r.accepted + 1
    req:reply(200, nil, { headers = { Contact = req:header("Contact") } })
  end)
  r.port = tonumber(ep:address("udp"):match(":(%d+)$"))
  return r
end

local function algorithm_of(credentials)
  return credentials and credentials:match("algorithm=\"?([%w%-]+)")
end

describe("a peer process", function()
  it("is ended, with its process group, when it outlives its deadline", function()
    local p = peer.start { "sh", "-c", "sleep 30; sleep 30" }
    local code, err = peer.wait(p, 0.3)
    peer.clean(p)
    assert.is_nil(code)
    assert.equal("timeout", err)
    assert.is_false(peer.alive(p.pid))
  end)

  it("reports its exit code and output", function()
    local code, out = peer.run({ "sh", "-c", "echo hello; exit 3" }, 5)
    assert.equal(3, code)
    assert.equal("hello\n", out)
  end)
end)

describe("sipsak registering with Digest (usrloc mode)", function()
  if not peer.have("sipsak") then
    pending("sipsak is not installed")
    return
  end
  local r
  after_each(function() r.ep:close() end)

  -- -s takes no port: sipsak 0.9.8.1 drops a URI's last character when it carries one (the
  -- Request-URI becomes sip:127.0.0.1:506 for :5060) and puts "alice@" in username, so the
  -- port goes in -r and the auth user in -u.
  local function sipsak(password)
    return peer.run({ "sipsak", "-U", "-s", "sip:alice@127.0.0.1", "-r", tostring(r.port),
                      "-u", "alice", "-a", password, "-vv" }, PEER_DEADLINE)
  end

  it("registers with the right password (exit code 0, a 200 seen)", function()
    r = registrar { "MD5", "SHA-256" }
    local code, out = sipsak("wonderland")
    assert.equal(0, code, out)
    assert.equal(1, r.accepted)
    assert.equal("MD5", algorithm_of(r.seen[#r.seen]))
  end)

  it("fails with a wrong password", function()
    r = registrar { "MD5", "SHA-256" }
    local code, out = sipsak("not-it")
    assert.not_equal(0, code, out)
    assert.equal(0, r.accepted)
    assert.matches("authorization failed", out)
  end)

  -- sipsak reads only the first WWW-Authenticate; the RFC 8760 order puts SHA-256 there.
  it("cannot answer when SHA-256 is offered first, as the default order does", function()
    r = registrar { "SHA-256", "MD5" }
    local code, out = sipsak("wonderland")
    assert.not_equal(0, code, out)
    assert.matches("unsupported authentication algorithm", out)
  end)
end)

describe("sipp registering with [authentication]", function()
  if not peer.have("sipp") then
    pending("sipp is not installed")
    return
  end
  local r
  after_each(function() r.ep:close() end)

  local scenario = peer.path("spec/sipp/register_auth.xml")
  local function sipp(password)
    return peer.run({ "sipp", "-sf", scenario, "-m", "1", "-i", "127.0.0.1",
                      "-p", tostring(peer.free_udp_port()), "127.0.0.1:" .. r.port,
                      "-s", "alice", "-au", "alice", "-ap", password,
                      "-nostdin", "-timeout", "10s", "-timeout_error" }, PEER_DEADLINE)
  end

  it("completes the call with the right password", function()
    r = registrar { "MD5", "SHA-256" }
    local code, out = sipp("wonderland")
    assert.equal(0, code, out)
    assert.equal(1, r.accepted)
    assert.equal("MD5", algorithm_of(r.seen[2]))
    assert.matches("qop=auth", r.seen[2])
  end)

  it("fails the call with a wrong password", function()
    r = registrar { "MD5", "SHA-256" }
    local code, out = sipp("not-it")
    assert.equal(1, code, out)
    assert.equal(0, r.accepted)
  end)

  -- sipp 3.6 answers only the first challenge and only MD5 (or AKAv1-MD5).
  it("cannot answer when SHA-256 is offered first, as the default order does", function()
    r = registrar { "SHA-256", "MD5" }
    local code, out = sipp("wonderland")
    assert.not_equal(0, code, out)
    assert.matches("authentication must use MD5", out)
  end)
end)
