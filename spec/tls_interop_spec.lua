-- spec/tls_interop_spec.lua: `luasip serve` and Kamailio 5.6 (its tls module) on either side
-- of each other over TLS, each verifying the other's certificate (RFC 3261 §26, RFC 5922).
local sip = require "sip"
local helper = require "helper"
local peer = require "peer"
local cli = require "sip.cli"
local certs = require "tls_certs"

local KAMAILIO_TLS = "/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so"

local write = peer.write

local tcp_port = peer.free_tcp_port

-- Kamailio: a request that comes over TLS is answered 200 with what it verified of the
-- peer; one over UDP goes on over TLS to serve_tls. Both directions verify certificates.
local function kamailio_cfg(dir, udp, tls, serve_tls)
  write(dir .. "/tls.cfg", ([[
[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = DIR/server.key
certificate = DIR/server.pem
ca_list = DIR/ca.pem

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = DIR/kamailio.key
certificate = DIR/kamailio.pem
ca_list = DIR/ca.pem
]]):gsub("DIR", dir))
  write(dir .. "/kamailio.cfg", ([[
#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
tcp_children=1
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
enable_tls=yes
listen=udp:127.0.0.1:UDP
listen=tls:127.0.0.1:TLS
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
modparam("tls", "config", "DIR/tls.cfg")
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
request_route {
    if ($pr == "tls") {
        append_to_reply("X-Peer-Verified: $tls_peer_verified\r\nX-Peer-CN: $tls_peer_subject_cn\r\n");
        sl_send_reply("200", "OK");
        exit;
    }
    $du = "sip:127.0.0.1:SERVE;transport=tls";
    t_relay();
}
]]):gsub("DIR", dir):gsub("UDP", udp):gsub("TLS", tls):gsub("SERVE", serve_tls))
  return dir .. "/kamailio.cfg"
end

describe("serve and Kamailio over TLS", function()
  if not (peer.have("kamailio") and io.open(KAMAILIO_TLS)) then
    pending("kamailio or kamailio-tls-modules is not installed (make bench-deps)")
    return
  end

  local dir, kam, srv, ua, kam_udp, kam_tls
  setup(function()
    dir = certs.make()
    local serve_udp, serve_tls = peer.free_udp_port(), tcp_port()
    kam_udp, kam_tls = peer.free_udp_port(), tcp_port()
    srv = assert(cli.server { listen = { "udp:127.0.0.1:" .. serve_udp,
      "tls:127.0.0.1:" .. serve_tls }, domain = "example.org", no_auth = true, quiet = true,
      trust = { "127.0.0.1/32" },   -- the Lua UA relays to another domain without credentials
      cert = dir .. "/server.pem", key = dir .. "/server.key", ca = dir .. "/ca.pem" })
    -- Kamailio must show serve a certificate of the CA, or get no further than the handshake
    assert(srv.ep.core:set_tls { cert = dir .. "/server.pem", key = dir .. "/server.key",
      ca = dir .. "/ca.pem", client = "require" })
    local cfg = kamailio_cfg(dir, kam_udp, kam_tls, serve_tls)
    kam = peer.start { "kamailio", "-DD", "-E", "-f", cfg }
    ua = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    -- until Kamailio answers (it forks its workers first)
    local res
    helper.run_until(function()
      local done = false
      sip.spawn(function()
        res = ua:options("sip:127.0.0.1:" .. kam_udp)
        done = true
      end)
      helper.run_until(function() return done end, 2)
      return res and res.status < 500
    end, 10)
  end)
  teardown(function()
    if ua then ua:close() end
    if kam then
      os.execute("kill -TERM -" .. kam.pid .. " 2>/dev/null")
      peer.wait(kam, 3)
      peer.clean(kam)
    end
    if srv then srv.ep:close() end
    certs.remove(dir)
  end)

  local function message(to, target)
    local res
    sip.spawn(function()
      res = ua:message(to, "over TLS", { target = target })
    end)
    helper.run_until(function() return res end, 5)
    return res
  end

  it("Kamailio as the next hop: serve checks its certificate and shows its own", function()
    local res = message("sips:bob@localhost:" .. kam_tls, "sip:" .. srv.ep:address("udp"))
    assert.equal(200, res.status)
    assert.equal("1", res:header("X-Peer-Verified"))   -- Kamailio verified serve
    assert.equal("localhost", res:header("X-Peer-CN"))
  end)

  it("Kamailio as the hop before: it checks serve's certificate, serve requires its own", function()
    local before = srv.ep:stats()
    local res = message("sip:echo@example.org", "sip:127.0.0.1:" .. kam_udp)
    assert.equal(200, res.status)
    local after = srv.ep:stats()
    -- it came to serve over TLS (stream messages count as tcp_in), no handshake failed
    assert.equal(before.tcp_in + 1, after.tcp_in)
    assert.equal(0, after.tls_failed)
  end)
end)
