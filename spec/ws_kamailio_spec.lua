-- spec/ws_kamailio_spec.lua: a Lua bot as a WebSocket client (RFC 7118) of Kamailio 5.6's
-- websocket module: it registers over its own ws: connection and gets a MESSAGE back on it.
local sip = require "sip"
local helper = require "helper"
local peer = require "peer"
local socket = require "socket"

local MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
local DOMAIN = "kamailio.test"

local write = peer.write

local tcp_port = peer.free_tcp_port

-- A registrar and proxy as in the websocket module's documentation: xhttp takes the HTTP
-- Upgrade on the TCP port, nathelper stands in for Outbound and Path (the bot's Contact is
-- .invalid, so the binding keeps where the REGISTER came from: fix_nated_register and the
-- received AVP, which lookup() turns into the destination, the bot's own connection).
local function kamailio_cfg(dir, udp, ws)
  local cfg = ([[
#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
tcp_children=1
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
tcp_accept_no_cl=yes
alias="DOMAIN"
listen=udp:127.0.0.1:UDP
listen=tcp:127.0.0.1:WS
mpath="MODULES"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "nathelper.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
modparam("nathelper|registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "natping_interval", 0)
modparam("websocket", "keepalive_mechanism", 0)

request_route {
    if (nat_uac_test(64)) {
        # from a WebSocket: where it came from is the only way back
        force_rport();
        if (is_method("REGISTER")) {
            fix_nated_register();
        } else if (!add_contact_alias()) {
            sl_send_reply("400", "Bad Request");
            exit;
        }
    }
    if (is_method("REGISTER")) {
        if (!save("location")) {
            sl_reply_error();
        }
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            if ($du == "") {
                handle_ruri_alias();
            }
            t_relay();
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if ($rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    append_hf("X-Kamailio-Out: $du\r\n");
    t_relay();
}

event_route[xhttp:request] {
    set_reply_close();
    set_reply_no_connect();
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {
        if (ws_handle_handshake()) {
            exit;
        }
    }
    xhttp_reply("404", "Not Found", "", "");
}
]]):gsub("[A-Z]+", { DOMAIN = DOMAIN, UDP = tostring(udp), WS = tostring(ws),
    MODULES = MODULES })
  write(dir .. "/kamailio.cfg", cfg)
  return dir .. "/kamailio.cfg"
end

describe("a Lua bot at Kamailio's websocket module", function()
  if not (peer.have("kamailio") and io.open(MODULES .. "websocket.so")
      and io.open(MODULES .. "xhttp.so")) then
    pending("kamailio or kamailio-websocket-modules is not installed (make deps)")
    return
  end

  local kam, bot, sender, kam_udp, kam_ws

  -- runs fn in a coroutine and the loop until it returns (10 s at most)
  local function go(fn)
    local done, out = false, nil
    sip.spawn(function()
      out = { fn() }
      done = true
    end)
    assert.truthy(helper.run_until(function() return done end, 10), "timed out")
    return table.unpack(out)
  end

  setup(function()
    kam_udp, kam_ws = peer.free_udp_port(), tcp_port()
    local dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
    local cfg = kamailio_cfg(dir, kam_udp, kam_ws)
    kam = peer.start { "kamailio", "-DD", "-E", "-f", cfg, "-Y", dir, "-w", dir,
      "-m", "32", "-M", "8" }
    kam.cfg_dir = dir
    sender = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    -- until Kamailio answers over UDP (it forks its workers first)
    local res
    helper.run_until(function()
      local done = false
      sip.spawn(function()
        res = sender:options("sip:127.0.0.1:" .. kam_udp)
        done = true
      end)
      helper.run_until(function() return done end, 2)
      return res and res.status == 200
    end, 10)
    assert.equal(200, res and res.status, "kamailio did not start: " ..
      (peer.slurp(kam.dir .. "/out") or ""):sub(-2000))
    bot = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)

  teardown(function()
    if bot then bot:close() end
    if sender then sender:close() end
    if kam then
      os.execute("kill -TERM -" .. kam.pid .. " 2>/dev/null")
      peer.wait(kam, 3)
      peer.clean(kam)
      os.execute("rm -rf '" .. kam.cfg_dir .. "'")
    end
  end)

  it("registers over its ws: connection and gets a MESSAGE from a UDP sender on it", function()
    local got
    bot:on("MESSAGE", function(req)
      got = req
      req:reply(200, "Read by the bot")
    end)
    local reg, state = go(function()
      local r = bot:register { registrar = "sip:127.0.0.1:" .. kam_ws .. ";transport=ws",
        aor = "sip:bot@" .. DOMAIN, expires = 300 }
      return r, r:wait()
    end)
    assert.equal("registered", state, tostring(reg.error))
    assert.equal(200, reg.response.status)
    -- Kamailio kept the .invalid Contact and where it came from: the bot's connection
    local contact = reg.response:header("Contact")
    assert.truthy(contact:match("^<sip:bot@%x+%.invalid;transport=ws>"), contact)
    local received = contact:match('received="([^"]+)"')
    assert.truthy(received and received:match("^sip:127%.0%.0%.1:%d+;transport=ws$"), contact)
    -- the REGISTER went out over a WebSocket the bot opened (its Via says WS), not over its
    -- UDP listener
    assert.truthy(reg.response:header("Via"):match("^SIP/2.0/WS "),
      reg.response:header("Via"))
    local st = bot:stats()
    assert.equal(0, st.udp_out)
    assert.equal(1, st.connections)

    local res = go(function()
      return sender:message("sip:bot@" .. DOMAIN, "hello bot, over Kamailio",
        { target = "sip:127.0.0.1:" .. kam_udp, from = "sip:carol@" .. DOMAIN })
    end)
    assert.equal(200, res.status)
    assert.equal("Read by the bot", res.reason)   -- the bot's answer, relayed back over UDP
    assert.truthy(got, "the bot got no MESSAGE")
    assert.equal("hello bot, over Kamailio", got.body)
    assert.equal("sip:carol@" .. DOMAIN, sip.addr.parse(got:header("From")).uri)
    -- over the bot's WebSocket: Kamailio's Via says WS (it writes two spaces after it), its
    -- destination was the received address, and the bot's core took it from a ws: connection
    assert.truthy(got:header("Via"):match("^SIP/2.0/WS%s+127%.0%.0%.1:" .. kam_ws), got:header("Via"))
    assert.equal(received, got:header("X-Kamailio-Out"))
    assert.truthy(got.source:match("^ws:"), got.source)
    st = bot:stats()
    assert.equal(0, st.udp_in)
    assert.equal(1, st.connections)   -- the one WebSocket, both ways

    -- and the binding goes away over the same connection
    local gone = go(function() return reg:stop() end)
    assert.equal(200, gone.status)
    res = go(function()
      return sender:message("sip:bot@" .. DOMAIN, "anyone?",
        { target = "sip:127.0.0.1:" .. kam_udp, from = "sip:carol@" .. DOMAIN })
    end)
    assert.equal(404, res.status)
  end)
end)
