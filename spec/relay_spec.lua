-- spec/relay_spec.lua: req:relay over the proxy core (csrc/proxy.c), RFC 3261 §16.6-§16.10:
-- forking, the best final response, 6xx, merged challenges, 503 -> 500, timeouts, CANCEL,
-- provisionals, per-branch callbacks, fire-and-forget relays and late 2xx retransmissions.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"

local function run_until(cond, seconds)
  return helper.run_until(cond, seconds, nil, 10)
end

describe("req:relay (the proxy core)", function()
  local proxy, alice, uas, route_result

  local function ep()
    return assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end

  -- a UAS whose handler for every method is fn
  local function callee(fn)
    local e = ep()
    for _, m in ipairs { "INVITE", "MESSAGE", "OPTIONS" } do
      e:on(m, fn)
    end
    uas[#uas + 1] = e
    return e
  end

  local function send(method, opts)
    opts = opts or {}
    local req = assert(sip.request { method = method, uri = "sip:bob@example.com",
      from = "sip:alice@example.com", headers = opts.headers, max_forwards = opts.max_forwards })
    return alice:request(req, { target = "sip:" .. proxy:address("udp"),
      on_progress = opts.on_progress })
  end

  before_each(function()
    proxy, alice, uas, route_result = ep(), ep(), {}, nil
  end)
  after_each(function()
    for _, e in ipairs(uas) do
      e:close()
    end
    alice:close()
    proxy:close()
  end)

  -- route every request to the URIs targets() gives, recording what relay returned
  local function route(targets, opts)
    proxy:route(function(req)
      local res, err = req:relay(targets(), opts)
      route_result = { res = res, err = err, status = type(res) == "userdata" and res.status }
    end)
  end

  it("returns the final response that went upstream, with our Via gone", function()
    local b = callee(function(req) req:reply(200) end)
    route(function() return b:uri("bob") end)
    local res = send("MESSAGE")
    assert.equal(200, res.status)
    assert.equal(1, #res:headers("Via"))
    assert.truthy(run_until(function() return route_result end))
    assert.equal(200, route_result.status)
  end)

  it("sends the lowest class when every branch fails (§16.7 step 6)", function()
    local b1 = callee(function(req) req:reply(500) end)
    local b2 = callee(function(req) sip.sleep(0.05) req:reply(404) end)
    route(function() return { b1:uri("bob"), b2:uri("bob") } end)
    assert.equal(404, send("MESSAGE").status)
    assert.truthy(run_until(function() return route_result end))
    assert.equal(404, route_result.status)
  end)

  it("merges the challenges of every branch into the one 401/407 (§16.7 step 7)", function()
    local b1 = callee(function(req)
      req:reply(401, nil, { headers = { ["WWW-Authenticate"] = 'Digest realm="one", nonce="1"' } })
    end)
    local b2 = callee(function(req)
      sip.sleep(0.05)
      req:reply(407, nil, { headers = { ["Proxy-Authenticate"] = 'Digest realm="two", nonce="2"' } })
    end)
    local b3 = callee(function(req)   -- a 403 that carries one is no challenge (step 7)
      req:reply(403, nil, { headers = { ["WWW-Authenticate"] = 'Digest realm="three", nonce="3"' } })
    end)
    route(function() return { b1:uri("bob"), b2:uri("bob"), b3:uri("bob") } end)
    local res = send("MESSAGE")
    assert.equal(401, res.status)
    assert.same({ 'Digest realm="one", nonce="1"' }, res:headers("WWW-Authenticate"))
    assert.equal('Digest realm="two", nonce="2"', res:header("Proxy-Authenticate"))
  end)

  it("sends a 503 from downstream up as 500 (§16.7 step 6)", function()
    local b = callee(function(req) req:reply(503) end)
    route(function() return b:uri("bob") end)
    assert.equal(500, send("MESSAGE").status)
  end)

  it("ends every INVITE branch on a 6xx and sends the 6xx up", function()
    local cancelled = false
    local b1 = callee(function(req)
      req:reply(180)
      req:on_cancel(function() cancelled = true end)
    end)
    local b2 = callee(function(req) sip.sleep(0.1) req:reply(603) end)
    route(function() return { b1:uri("bob"), b2:uri("bob") } end)
    local res = send("INVITE")
    assert.equal(603, res.status)
    assert.truthy(run_until(function() return cancelled end))
  end)

  it("passes provisionals but 100 up, and cancels a ringing branch after opts.timeout", function()
    local cancelled, progress = false, {}
    local b = callee(function(req)
      req:reply(180)
      req:on_cancel(function() cancelled = true end)
    end)
    route(function() return b:uri("bob") end, { timeout = 0.2 })
    local res = send("INVITE", { on_progress = function(r) progress[#progress + 1] = r.status end })
    assert.equal(487, res.status)
    assert.truthy(cancelled)
    assert.same({ 180 }, (function()
      local t = {}
      for _, s in ipairs(progress) do if s > 100 then t[#t + 1] = s end end
      return t
    end)())
  end)

  it("lets a branch ring past 64*T1 and cancels it on Timer C, restarted by each provisional (§16.6 step 11)", function()
    proxy:close()
    -- T1 = 20 ms: Timer B would end the branch at 1.28 s; Timer C is 2 s here
    proxy = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 20, timer_c = 2000 })
    local cancelled_at, t0
    local b = callee(function(req)
      req:reply(180)
      req:on_cancel(function() cancelled_at = socket.gettime() end)
      sip.sleep(0.4)
      req:reply(183)   -- Timer C starts again
    end)
    route(function() return b:uri("bob") end)
    t0 = socket.gettime()
    local res = send("INVITE")
    assert.equal(487, res.status)
    assert.truthy(cancelled_at)
    local after = cancelled_at - t0
    assert.is_true(after >= 2.35 and after < 3.5, string.format("cancelled %.2f s after the INVITE", after))
  end)

  it("starts no branch for an INVITE CANCELled while the router waited (§16.10)", function()
    local invites, relayed = 0, nil
    local b = callee(function(req)
      invites = invites + 1
      req:reply(200)
    end)
    proxy:route(function(req)
      if req.method == "ACK" then return req:relay() end
      sip.sleep(0.3)   -- a lookup that takes a while
      relayed = { req:relay(b:uri("bob")) }
    end)
    local c = helper.udp_peer()
    local head = { "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKcxl" .. math.random(1e6),
      "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
      "Call-ID: cancel-early-" .. math.random(1e9) .. "@test" }
    local function request(method, extra)
      local lines = { method .. " sip:bob@example.com SIP/2.0" }
      for _, l in ipairs(head) do lines[#lines + 1] = l end
      lines[#lines + 1] = "CSeq: 1 " .. method
      for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
      lines[#lines + 1] = "Content-Length: 0"
      return table.concat(lines, "\r\n") .. "\r\n\r\n"
    end
    c.send(request("INVITE", { "Contact: <sip:alice@127.0.0.1:" .. c.port .. ">" }), proxy)
    helper.run_for(0.1, c.poll)
    c.send(request("CANCEL"), proxy)
    run_until(function() c.poll() return relayed end, 2)
    helper.run_for(0.2, c.poll)
    local finals = {}
    for _, it in ipairs(c.inbox) do
      if it.msg.status and it.msg.status >= 200 then
        finals[#finals + 1] = it.msg.status .. " " .. it.msg.cseq_method
      end
    end
    c.close()
    assert.same({ "200 CANCEL", "487 INVITE" }, finals)
    assert.equal(0, invites)
    assert.same({ nil, "answered" }, { relayed[1], relayed[2] })
  end)

  it("relays a request that came over TCP, and its final response ends that transaction at once", function()
    proxy:close()
    proxy = assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
    local tcp_alice = assert(sip.endpoint { listen = { "tcp:127.0.0.1:0" } })
    uas[#uas + 1] = tcp_alice
    local b = callee(function(req) req:reply(200) end)
    route(function() return b:uri("bob") end)
    for _ = 1, 2 do   -- the second shows the proxy lived through the first
      local req = assert(sip.request { method = "MESSAGE", uri = "sip:bob@example.com",
        from = "sip:alice@example.com" })
      local res = tcp_alice:request(req, { target = "sip:" .. proxy:address("tcp") .. ";transport=tcp" })
      assert.equal(200, res and res.status)
    end
    assert.equal(0, proxy:stats().server_transactions)   -- Timer J is zero over TCP
  end)

  it("calls on_response with every branch's final and its target", function()
    local b1 = callee(function(req) req:reply(486) end)
    local b2 = callee(function(req) sip.sleep(0.05) req:reply(200) end)
    local seen = {}
    local u1, u2 = b1:uri("bob"), b2:uri("bob")
    route(function() return { u1, u2 } end,
      { on_response = function(res, uri) seen[uri] = res.status end })
    assert.equal(200, send("MESSAGE").status)
    assert.truthy(run_until(function() return seen[u1] and seen[u2] end))
    assert.equal(486, seen[u1])
    assert.equal(200, seen[u2])
  end)

  it("with wait = false returns at once and the core finishes the transaction", function()
    local b = callee(function(req) sip.sleep(0.05) req:reply(202) end)
    route(function() return b:uri("bob") end, { wait = false })
    assert.equal(202, send("MESSAGE").status)
    assert.is_true(route_result.res)
  end)

  it("answers 500 when the router fails, and serves the next request", function()
    local n = 0
    proxy:route(function(req)
      n = n + 1
      if n == 1 then
        error("boom")
      end
      req:reply(200)
    end)
    assert.equal(500, send("OPTIONS").status)
    assert.equal(200, send("OPTIONS").status)
  end)

  it("lets a router wait (its own coroutine) while others run", function()
    local order = {}
    proxy:route(function(req)
      local who = req:header("Subject")
      if who == "slow" then
        sip.sleep(0.2)
      end
      order[#order + 1] = who
      req:reply(200)
    end)
    local done = 0
    sip.spawn(function()
      assert.equal(200, send("MESSAGE", { headers = { Subject = "slow" } }).status)
      done = done + 1
    end)
    sip.spawn(function()
      assert.equal(200, send("MESSAGE", { headers = { Subject = "fast" } }).status)
      done = done + 1
    end)
    assert.truthy(run_until(function() return done == 2 end))
    assert.same({ "fast", "slow" }, order)
  end)

  describe("route preprocessing (§16.4)", function()
    local seen
    local function bob()
      return callee(function(req)
        seen = { uri = req.uri, routes = req:headers("Route") }
        req:reply(200)
      end)
    end
    -- uri: a string, or fn(tag) -> string given our Record-Route tag for this request
    local function send_routed(uri, routes)
      local req = assert(sip.request { method = "MESSAGE", uri = "sip:x@example.com",
        from = "sip:alice@example.com", headers = { { "Route", routes } } })
      if type(uri) == "function" then
        uri = uri(sip.core.rr_tag(req.call_id, req.from_tag))
      end
      req:set_uri(uri)
      return alice:request(req, { target = "sip:" .. proxy:address("udp") })
    end

    it("takes its own address off the top of the Route set and follows the next", function()
      local b = bob()
      route(function() return nil end)
      local next_hop = "<sip:" .. b:address("udp") .. ";lr>"
      local res = send_routed("sip:bob@example.com",
        "<sip:" .. proxy:address("udp") .. ";lr>, " .. next_hop)
      assert.equal(200, res.status)
      assert.same({ next_hop }, seen.routes)
      assert.equal("sip:bob@example.com", seen.uri)
    end)

    it("puts the last Route back in the Request-URI after a strict router", function()
      local b = bob()
      route(function() return nil end)
      -- a strict router upstream sent us our own Record-Route value as the Request-URI
      local res = send_routed(function(tag)
        return "sip:" .. proxy:address("udp") .. ";lsk=" .. tag
      end, "<" .. b:uri("bob") .. ">")
      assert.equal(200, res.status)
      assert.equal(b:uri("bob"), seen.uri)
      assert.same({}, seen.routes)
    end)

    it("takes only its own Record-Route value for one, not any URI of its address", function()
      local b = bob()
      route(function() return nil end)
      -- what a phone with us as outbound proxy sends: its Request-URI names us (or our
      -- domain) with no user, and a loose Route to us; both URIs stay as they are
      local res = send_routed("sip:" .. proxy:address("udp") .. ";lr",
        "<sip:" .. proxy:address("udp") .. ";lr>, <sip:" .. b:address("udp") .. ";lr>")
      assert.equal(200, res.status)
      assert.equal("sip:" .. proxy:address("udp") .. ";lr", seen.uri)
      assert.same({ "<sip:" .. b:address("udp") .. ";lr>" }, seen.routes)
    end)

    it("takes our address without our tag for no Record-Route of ours: a REGISTER sip:DOMAIN stays", function()
      seen = nil
      local b = bob()
      local got
      proxy:route(function(req)
        got = { uri = req.uri, routes = req:headers("Route") }
        req:reply(200)
      end)
      -- a phone with us as its outbound proxy: our address in Route, ours in the Request-URI
      local res = send_routed("sip:" .. proxy:address("udp"), "<sip:" .. proxy:address("udp") ..
        ";lr>, <" .. b:uri("bob") .. ">")
      assert.equal(200, res.status)
      assert.equal("sip:" .. proxy:address("udp"), got.uri)   -- not the last Route's
      assert.same({ "<" .. b:uri("bob") .. ">" }, got.routes)  -- only our own came off
      assert.is_nil(seen)
      -- and a tag that is not this dialog's is no tag of ours
      res = send_routed("sip:" .. proxy:address("udp") .. ";lr;lsk=0123456789abcdef",
        "<" .. b:uri("bob") .. ">")
      assert.equal(200, res.status)
      assert.equal(1, #got.routes)
    end)

    it("sends to a strict next hop with its URI as the Request-URI and ours last in Route (§16.6 step 6)", function()
      local b = bob()
      route(function() return nil end)
      local strict = "<sip:" .. b:address("udp") .. ">"   -- no lr: a strict router
      local res = send_routed("sip:bob@example.com",
        "<sip:" .. proxy:address("udp") .. ";lr>, " .. strict .. ", <sip:p3.example.com;lr>")
      assert.equal(200, res.status)
      assert.equal("sip:" .. b:address("udp"), seen.uri)
      assert.same({ "<sip:p3.example.com;lr>", "<sip:bob@example.com>" }, seen.routes)
    end)

    it("refuses a Route set it would have to rewrite past 32 values, rather than cut it", function()
      seen = nil
      local b = bob()
      route(function() return nil end)
      local many = {}
      for i = 1, 40 do many[i] = "<sip:r" .. i .. ".example.com;lr>" end
      -- a strict next hop (no lr) before 40 loose ones: step 6 would rewrite them all
      local res = send_routed("sip:bob@example.com", "<sip:" .. proxy:address("udp") ..
        ";lr>, <sip:" .. b:address("udp") .. ">, " .. table.concat(many, ", "))
      assert.equal(400, res.status)
      assert.is_nil(seen)
    end)

    it("writes a folded Route value back unfolded after taking its own off", function()
      local b = bob()
      route(function() return nil end)
      local c = helper.udp_peer()
      c.send(table.concat({
        "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKfolded1",
        "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
        "Call-ID: folded-route@test", "CSeq: 1 MESSAGE",
        "Route: <sip:" .. proxy:address("udp") .. ";lr>",
        "Route: <sip:" .. b:address("udp") .. ";lr>",
        "  ;x=1",   -- folded onto the line above
        "Content-Length: 0", "", "" }, "\r\n"), proxy)
      assert.truthy(run_until(function()
        c.poll()
        return c.inbox[1] and c.inbox[1].msg.status == 200
      end))
      assert.equal(1, #seen.routes)
      assert.truthy(seen.routes[1]:match("^<sip:" .. b:address("udp"):gsub("%p", "%%%0") .. ";lr>%s+;x=1$"))
      c.close()
    end)

    it("relays in-dialog requests in the core with relay_in_dialog, the router never called", function()
      local b = callee(function(req)
        seen = { uri = req.uri, routes = req:headers("Route"), mf = req.max_forwards }
        req:reply(200)
      end)
      local calls = 0
      proxy:route(function(req)
        calls = calls + 1
        req:relay(b:uri("bob"), { wait = false })
      end, { relay_in_dialog = true })
      local c = helper.udp_peer()
      local ours = "Route: <sip:" .. proxy:address("udp") .. ";lr;lsk=" ..
        sip.core.rr_tag("in-dialog@test", "a1") .. ">"
      local function in_dialog(n, mf, extra)
        c.send(table.concat({
          "MESSAGE sip:bob@" .. b:address("udp") .. " SIP/2.0",
          "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKindlg" .. n,
          "Max-Forwards: " .. mf, "From: <sip:alice@example.com>;tag=a1",
          "To: <sip:bob@example.com>;tag=b1", "Call-ID: in-dialog@test", "CSeq: " .. n .. " MESSAGE",
          extra or ours, "Content-Length: 0", "", "" }, "\r\n"), proxy)
        assert.truthy(run_until(function()
          c.poll()
          return c.inbox[n] ~= nil
        end))
        return c.inbox[n].msg.status
      end
      assert.equal(200, in_dialog(1, 70))
      assert.same({}, seen.routes)   -- our Route came off
      assert.equal(69, seen.mf)
      assert.equal(0, calls)
      assert.equal(483, in_dialog(2, 0))   -- §16.3 still applies
      assert.equal(0, calls)
      -- a Route naming us without our tag, or none: the router decides, not the core
      assert.equal(200, in_dialog(3, 70, "Route: <sip:" .. proxy:address("udp") .. ";lr>"))
      assert.equal(1, calls)
      assert.equal(200, in_dialog(4, 70, "Subject: no route"))
      assert.equal(2, calls)
      -- outside a dialog the router decides
      assert.equal(200, send("MESSAGE").status)
      assert.equal(3, calls)
      c.close()
    end)

    it("knows its domains (with their port) and its addresses", function()
      proxy:set_domains { "Example.COM" }
      local port = proxy:address("udp"):match(":(%d+)$")
      assert.is_true(proxy:is_local("sip:bob@example.com"))
      assert.is_true(proxy:is_local("sip:bob@example.com:" .. port))
      assert.is_false(proxy:is_local("sip:bob@example.com:1"))
      assert.is_false(proxy:is_local("sip:bob@example.org"))
      assert.is_true(proxy:is_local("sip:" .. proxy:address("udp")))
      assert.is_false(proxy:is_local("not a uri"))
    end)
  end)

  it("survives a router that closes its endpoint while handling a request", function()
    local closing = ep()
    closing:route(function(req)
      req:reply(200)
      closing:close()
    end)
    local req = assert(sip.request { method = "MESSAGE", uri = "sip:x@example.com",
      from = "sip:alice@example.com" })
    local res = alice:request(req, { target = "sip:" .. closing:address("udp") })
    assert.equal(200, res.status)
    helper.run_for(0.05)
  end)

  it("tells a router that answers an INVITE itself about its CANCEL", function()
    local cancelled = false
    proxy:route(function(req)
      req:reply(180)
      req:on_cancel(function() cancelled = req.cancelled end)
    end)
    local call, res = alice:call("sip:bob@example.com", { target = "sip:" .. proxy:address("udp"),
      from = "sip:alice@example.com", timeout = 0.2 })
    assert.is_nil(call)
    assert.equal(487, res.status)
    assert.truthy(run_until(function() return cancelled end))
  end)

  it("wakes a router waiting on a relay when its endpoint closes", function()
    local silent = helper.udp_peer()
    local got
    local closing = ep()
    closing:route(function(req)
      local res, err = req:relay("sip:bob@127.0.0.1:" .. silent.port)
      got = { res = res, err = err }
    end)
    local req = assert(sip.request { method = "MESSAGE", uri = "sip:x@example.com",
      from = "sip:alice@example.com" })
    sip.spawn(function() alice:request(req, { target = "sip:" .. closing:address("udp") }) end)
    assert.truthy(run_until(function() silent.poll() return silent.inbox[1] ~= nil end, 2))
    closing:close()
    assert.truthy(run_until(function() return got end, 1))
    assert.is_nil(got.res)
    silent.close()
  end)

  it("answers 400 when no target is usable", function()
    route(function() return { "not a uri", "sip:" } end)
    assert.equal(400, send("MESSAGE").status)
    assert.is_nil(route_result.res)
  end)

  it("passes every 2xx retransmission up after the transaction ended (RFC 6026)", function()
    local s = helper.udp_peer()   -- the UAS
    local uport = s.port
    route(function() return "sip:bob@127.0.0.1:" .. uport end)
    local c = helper.udp_peer()   -- a raw caller, to count the 200s it gets
    local cport = c.port
    c.send(table.concat({
      "INVITE sip:bob@example.com SIP/2.0",
      "Via: SIP/2.0/UDP 127.0.0.1:" .. cport .. ";branch=z9hG4bKcaller1",
      "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
      "Call-ID: retrans-2xx@test", "CSeq: 1 INVITE", "Contact: <sip:alice@127.0.0.1:" .. cport .. ">",
      "Content-Length: 0", "", "" }, "\r\n"), proxy)
    assert.truthy(run_until(function()
      s.poll()
      return s.inbox[1]
    end))
    local invite = s.inbox[1].raw
    -- the 200 (with every Via the proxy sent) three times, as a UAS retransmits it
    local vias = {}
    for v in invite:gmatch("\r\nVia: ([^\r]+)") do vias[#vias + 1] = "Via: " .. v end
    local ok = table.concat({ "SIP/2.0 200 OK", table.concat(vias, "\r\n"),
      "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>;tag=b1",
      "Call-ID: retrans-2xx@test", "CSeq: 1 INVITE", "Contact: <sip:bob@127.0.0.1:" .. uport .. ">",
      "Content-Length: 0", "", "" }, "\r\n")
    for _ = 1, 3 do
      s.send(ok, proxy)
      helper.run_for(0.05)
    end
    local oks
    assert.truthy(run_until(function()
      c.poll()
      oks = c.find(function(m) return m.status == 200 end)
      return #oks == 3
    end, 3))
    for _, it in ipairs(oks) do
      assert.truthy(it.raw:find("branch=z9hG4bKcaller1", 1, true))
      assert.falsy(it.raw:find("z9hG4bKls", 1, true))   -- our Via is off
    end
    s.close()
    c.close()
  end)

  it("forwards both forks' 2xx and absorbs the INVITE retransmission while Accepted waits",
    function()
      local s1, s2 = helper.udp_peer(), helper.udp_peer()   -- two UASes that both answer 200
      route(function() return { "sip:bob@127.0.0.1:" .. s1.port, "sip:bob@127.0.0.1:" .. s2.port } end)
      local c = helper.udp_peer()
      local inv = table.concat({
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKforked1",
        "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
        "Call-ID: forked-2xx@test", "CSeq: 1 INVITE", "Contact: <sip:alice@127.0.0.1:" .. c.port .. ">",
        "Content-Length: 0", "", "" }, "\r\n")
      c.send(inv, proxy)
      assert.truthy(run_until(function()
        s1.poll(); s2.poll()
        return s1.inbox[1] and s2.inbox[1]
      end))
      local function ok_for(s, tag)
        local vias = {}
        for v in s.inbox[1].raw:gmatch("\r\nVia: ([^\r]+)") do vias[#vias + 1] = "Via: " .. v end
        return table.concat({ "SIP/2.0 200 OK", table.concat(vias, "\r\n"),
          "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>;tag=" .. tag,
          "Call-ID: forked-2xx@test", "CSeq: 1 INVITE", "Contact: <sip:bob@127.0.0.1:" .. s.port .. ">",
          "Content-Length: 0", "", "" }, "\r\n")
      end
      s1.send(ok_for(s1, "b1"), proxy)
      helper.run_for(0.05)
      -- Accepted: only in the waiting table now
      assert.equal(0, proxy:stats().server_transactions)
      assert.equal(1, proxy:stats().waiting_transactions)
      s2.send(ok_for(s2, "b2"), proxy)
      c.send(inv, proxy)   -- a retransmission of the INVITE: absorbed, relayed nowhere
      local oks
      assert.truthy(run_until(function()
        c.poll()
        oks = c.find(function(m) return m.status == 200 end)
        return #oks == 2
      end, 3))
      assert.same({ "b1", "b2" }, { oks[1].msg.to_tag, oks[2].msg.to_tag })
      helper.run_for(0.1)
      s1.poll(); s2.poll()
      assert.equal(1, #s1.inbox)
      assert.equal(1, #s2.inbox)
      assert.is_true(proxy:stats().absorbed >= 1)
      s1.close(); s2.close(); c.close()
    end)

  it("req:validate() answers §16.3 once, finding its endpoint from the request itself", function()
    local b = callee(function(req) req:reply(200) end)
    local seen = {}
    proxy:route(function(req)
      local first, again = req:validate(), req:validate()
      local host, port, user = sip.core.uri_hostport(req)
      seen[#seen + 1] = { first = first, again = again, host = host, port = port, user = user }
      if first then
        req:relay(b:uri("bob"))
      end
    end)
    assert.equal(200, send("MESSAGE").status)
    assert.equal(483, send("MESSAGE", { max_forwards = 0 }).status)
    assert.equal(2, #seen)
    assert.is_true(seen[1].first and seen[1].again)
    assert.is_false(seen[2].first)
    assert.is_false(seen[2].again)   -- refused once, not answered twice
    -- uri_hostport(req) reads the Request-URI as uri_hostport(req.uri) would
    assert.same({ "example.com", nil, "bob" }, { seen[1].host, seen[1].port, seen[1].user })
    local m = assert(sip.request { method = "MESSAGE", uri = "sip:%41lice@[::1]:5070;transport=udp",
      from = "sip:alice@example.com" })
    assert.same({ "::1", 5070, "Alice" }, { sip.core.uri_hostport(m) })
    assert.same({ sip.core.uri_hostport(m.uri) }, { sip.core.uri_hostport(m) })
    m:set_uri("sip:carol@Example.NET")
    assert.same({ "example.net", nil, "carol" }, { sip.core.uri_hostport(m) })
    local res = assert(sip.parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n" ..
      "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n" ..
      "Content-Length: 0\r\n\r\n"))
    assert.error_matches(function() sip.core.uri_hostport(res) end, "a request or a URI string")
    -- a request no endpoint received has nothing to validate against
    assert.error_matches(function() m:validate() end, "not a request received by an endpoint")
    assert.error_matches(function() m:relay("sip:x@127.0.0.1") end,
      "req:relay: not a request received by an endpoint")
  end)

  it("core.uri_hostport(req, header) reads the URI req:addr(header) names, without its table", function()
    local m = assert(sip.parse("MESSAGE sip:bob@example.com SIP/2.0\r\n" ..
      "Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n" ..
      "From: \"Smith, Al\" <sip:%41l@[::1]:5070;transport=udp>;tag=1\r\n" ..
      "To: sip:Bob@Example.COM;tag=2\r\nContact: *\r\n" ..
      "Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"))
    assert.same({ "::1", 5070, "Al" }, { sip.core.uri_hostport(m, "From") })
    assert.same({ "example.com", nil, "Bob" }, { sip.core.uri_hostport(m, "t") })
    for _, h in ipairs { "From", "To" } do
      assert.same({ sip.core.uri_hostport(m:addr(h).uri) }, { sip.core.uri_hostport(m, h) })
    end
    assert.is_nil(sip.core.uri_hostport(m, "Contact"))   -- "*" names no URI
    assert.is_nil(sip.core.uri_hostport(m, "Route"))      -- none
    m:set_header("From", "<sip:carol@Example.NET:5080>;tag=9")   -- as req:addr sees it
    assert.same({ sip.core.uri_hostport(m:addr("From").uri) }, { sip.core.uri_hostport(m, "From") })
    -- nil as the header: the Request-URI, as before
    assert.same({ "example.com", nil, "bob" }, { sip.core.uri_hostport(m, nil) })
  end)

  it("puts its Via just above the Vias it received, leaving the other headers in place", function()
    local socket = require "socket"
    -- raw sockets on both sides: an endpoint would rewrite its own top Via (received=)
    local function raw()
      local u = socket.udp()
      assert(u:setsockname("127.0.0.1", 0))
      u:settimeout(0)
      return u, select(2, u:getsockname())
    end
    local up, uport = raw()
    local down, dport = raw()
    proxy:route(function(req) req:relay("sip:bob@127.0.0.1:" .. dport) end)
    local host, port = proxy:address("udp"):match("^(.*):(%d+)$")
    -- Via is not the first header here, and there are two Via lines
    up:sendto(table.concat({
      "MESSAGE sip:bob@example.com SIP/2.0",
      "Max-Forwards: 70",
      "Via: SIP/2.0/UDP 127.0.0.1:" .. uport .. ";branch=z9hG4bKfirst;rport",
      "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsecond",
      "From: <sip:a@example.com>;tag=1", "To: <sip:bob@example.com>", "Call-ID: order1",
      "CSeq: 1 MESSAGE", "Content-Length: 0", "", "" }, "\r\n"), host, tonumber(port))
    local got
    run_until(function()
      got = down:receive()
      return got
    end, 3)
    up:close()
    down:close()
    assert.truthy(got)
    local names = {}
    for line in got:gmatch("([^\r\n]+)\r\n") do
      names[#names + 1] = line:match("^([%w%-]+):") or line
    end
    assert.same({ "MESSAGE sip:bob@127.0.0.1:" .. dport .. " SIP/2.0", "Max-Forwards", "Via", "Via",
      "Via", "From", "To", "Call-ID", "CSeq", "Content-Length" }, names)
    local vias = {}
    for v in got:gmatch("Via: ([^\r]+)") do
      vias[#vias + 1] = v
    end
    assert.matches("^SIP/2.0/UDP 127.0.0.1:%d+;branch=z9hG4bK", vias[1])
    assert.matches("branch=z9hG4bKfirst", vias[2])
    assert.matches("branch=z9hG4bKsecond", vias[3])
  end)

  describe("stateless relaying (§16.11)", function()
    local function raw(lines)
      return table.concat(lines, "\r\n") .. "\r\n\r\n"
    end
    local function vias_of(text)
      local vias = {}
      for v in text:gmatch("\r\n(Via: [^\r]+)") do vias[#vias + 1] = v end
      return vias
    end
    local function message(cport, branch, call_id)
      return raw { "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:" .. cport .. ";branch=" .. branch,
        "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
        "Call-ID: " .. call_id, "CSeq: 1 MESSAGE", "Content-Length: 0" }
    end
    local function ok_for(vias, call_id)
      return raw { "SIP/2.0 200 OK", table.concat(vias, "\r\n"),
        "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: " .. call_id, "CSeq: 1 MESSAGE", "Content-Length: 0" }
    end

    it("forwards the response to the next Via, its own Via taken off", function()
      local b = callee(function(req) req:reply(200) end)
      route(function() return b:uri("bob") end, { stateless = true })
      -- a short T1: without the response the UAC gives up (408) in about a second
      local uac = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 20 })
      uas[#uas + 1] = uac
      local req = assert(sip.request { method = "MESSAGE", uri = "sip:bob@example.com",
        from = "sip:alice@example.com" })
      local res = uac:request(req, { target = "sip:" .. proxy:address("udp") })
      assert.equal(200, res.status)
      assert.equal(1, #res:headers("Via"))
      assert.is_true(route_result.res)
      -- nothing is kept for the relayed request
      assert.equal(0, proxy:stats().server_transactions)
      assert.equal(0, proxy:stats().stray_responses)
    end)

    it("forwards a retransmission again, with the same branch", function()
      local d, c = helper.udp_peer(), helper.udp_peer()
      route(function() return "sip:bob@127.0.0.1:" .. d.port end, { stateless = true })
      local msg = message(c.port, "z9hG4bKsl-retx", "stateless-retx@test")
      c.send(msg, proxy)
      assert.truthy(run_until(function() d.poll() return d.inbox[1] end, 2))
      c.send(msg, proxy)   -- the UAC's Timer E retransmission
      assert.truthy(run_until(function() d.poll() return d.inbox[2] end, 2))
      local b1 = d.inbox[1].raw:match("\r\nVia: [^\r]*branch=([^;\r]+)")
      local b2 = d.inbox[2].raw:match("\r\nVia: [^\r]*branch=([^;\r]+)")
      assert.matches("^z9hG4bK", b1)
      assert.equal(b1, b2)
      -- another request from the same UAC gets another branch
      c.send(message(c.port, "z9hG4bKsl-other", "stateless-retx@test"), proxy)
      assert.truthy(run_until(function() d.poll() return d.inbox[3] end, 2))
      assert.not_equal(b1, d.inbox[3].raw:match("\r\nVia: [^\r]*branch=([^;\r]+)"))
      assert.equal(0, proxy:stats().server_transactions)   -- none kept for any copy
      c.close()
      d.close()
    end)

    it("forwards a CANCEL that matches no transaction statelessly, on its INVITE's branch (§16.10)", function()
      local d, c = helper.udp_peer(), helper.udp_peer()
      proxy:route(function(req)
        -- the INVITE statelessly; the CANCEL with no option: the core knows what to do
        req:relay("sip:bob@127.0.0.1:" .. d.port, { stateless = req.method == "INVITE" })
      end)
      local function req(method)
        return raw { method .. " sip:bob@example.com SIP/2.0",
          "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKsl-cancel",
          "Max-Forwards: 70", "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
          "Call-ID: stateless-cancel@test", "CSeq: 1 " .. method, "Content-Length: 0" }
      end
      c.send(req("INVITE"), proxy)
      assert.truthy(run_until(function() d.poll() return d.inbox[1] end, 2))
      c.send(req("CANCEL"), proxy)
      assert.truthy(run_until(function() d.poll() return d.inbox[2] end, 2))
      local inv, cancel = d.inbox[1], d.inbox[2]
      assert.equal("CANCEL", cancel.msg.method)
      assert.equal(inv.msg.branch, cancel.msg.branch)
      -- its 200 goes back the same way, and nothing is kept
      d.send(raw { "SIP/2.0 200 OK", table.concat(vias_of(cancel.raw), "\r\n"),
        "From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.com>",
        "Call-ID: stateless-cancel@test", "CSeq: 1 CANCEL", "Content-Length: 0" }, proxy)
      assert.truthy(run_until(function()
        c.poll()
        for _, it in ipairs(c.inbox) do
          if it.msg.status == 200 and it.msg.cseq_method == "CANCEL" then return true end
        end
      end, 2))
      assert.equal(0, proxy:stats().server_transactions)
      c.close()
      d.close()
    end)

    it("still drops and counts a response whose top Via is not its own", function()
      local d, c = helper.udp_peer(), helper.udp_peer()
      route(function() return "sip:bob@127.0.0.1:" .. d.port end, { stateless = true })
      c.send(message(c.port, "z9hG4bKsl-stray", "stateless-stray@test"), proxy)
      assert.truthy(run_until(function() d.poll() return d.inbox[1] end, 2))
      local vias = vias_of(d.inbox[1].raw)
      local ours = vias[1]
      local before = proxy:stats().stray_responses
      -- another host's sent-by, then a branch no request of ours was given
      vias[1] = ours:gsub("127%.0%.0%.1:%d+", "192.0.2.1:5060")
      d.send(ok_for(vias, "stateless-stray@test"), proxy)
      vias[1] = ours:gsub("branch=[^;]+", "branch=z9hG4bKsl0123456789abcdef")
      d.send(ok_for(vias, "stateless-stray@test"), proxy)
      assert.truthy(run_until(function() return proxy:stats().stray_responses == before + 2 end, 2))
      helper.run_for(0.1, c.poll)
      assert.same({}, c.inbox)
      -- the response to what it did relay still goes through
      vias[1] = ours
      d.send(ok_for(vias, "stateless-stray@test"), proxy)
      assert.truthy(run_until(function() c.poll() return c.inbox[1] end, 2))
      assert.equal(200, c.inbox[1].msg.status)
      assert.same({ "Via: SIP/2.0/UDP 127.0.0.1:" .. c.port .. ";branch=z9hG4bKsl-stray" },
        vias_of(c.inbox[1].raw))
      assert.equal(before + 2, proxy:stats().stray_responses)
      c.close()
      d.close()
    end)
  end)
end)
