-- spec/txn_spec.lua: the transaction layer (RFC 3261 §17) against a raw UDP peer that the
-- spec controls packet by packet. T1 is 20 ms so every timer runs in well under 2 s.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"

local T1, T2, T4 = 20, 80, 100

local function now_ms()
  return socket.gettime() * 1000
end

-- A raw UDP peer (spec/helper.lua); its responses carry To tag "peertag".
local function peer()
  local p = helper.udp_peer()
  function p.reply(item, code, reason)
    local res = item.msg:response(code, reason, "peertag")
    assert(p.sock:sendto(tostring(res), item.ip, item.port))
  end
  return p
end

local STEP_MS = 2   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end
local run_for = function(seconds, poll) helper.run_for(seconds, poll, STEP_MS) end


local function status_is(code)
  return function(m) return m.status == code end
end

-- A timer may fire late on a loaded machine but never early: each packet must arrive no
-- sooner than its scheduled time after t0 (the moment before the first send) and not
-- grossly later.
local function on_schedule(items, t0, schedule)
  for i, due in ipairs(schedule) do
    local at = items[i] and items[i].at - t0
    assert(at, "packet " .. i .. " missing")
    assert(at >= due - 2 and at <= due + 150,
      string.format("packet %d: expected at %d ms, came at %.1f ms", i, due, at))
  end
end

-- A UDP port on 127.0.0.1 with nobody on it: the kernel answers ICMP port unreachable.
local function closed_port()
  local dead = assert(socket.udp())
  assert(dead:setsockname("127.0.0.1", 0))
  local port = select(2, dead:getsockname())
  dead:close()
  return port
end

local function raw_request(method, p, ep, opts)
  opts = opts or {}
  return assert(sip.request {
    method = method, uri = ep:uri("svc"), from = "<sip:peer@127.0.0.1:" .. p.port .. ">",
    call_id = opts.call_id, cseq = opts.cseq,
    via = opts.via or ("SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" ..
      (opts.branch or sip.random.branch())),
  })
end

describe("transactions", function()
  local ep, p
  before_each(function()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = T1, t2 = T2, t4 = T4 })
    p = peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  describe("non-INVITE client transaction", function()
    it("retransmits with Timer E doubling up to T2 and gives 408 at Timer F (64*T1)", function()
      local res, t0, t1
      sip.spawn(function()
        t0 = now_ms()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. p.port })
        t1 = now_ms()
      end)
      assert.truthy(run_until(function() return res end, 5, p.poll))
      assert.equal(408, res.status)
      assert.truthy(t1 - t0 >= 64 * T1 - 2 and t1 - t0 < 64 * T1 + 300)
      -- 0, T1, 3T1, then every T2: 0 20 60 140 220 300 ...
      local schedule = { 0, T1, 3 * T1 }
      for due = 3 * T1 + T2, 64 * T1 - 1, T2 do
        schedule[#schedule + 1] = due
      end
      on_schedule(p.inbox, t0, schedule)
      assert.equal(#schedule, #p.inbox)
      for _, it in ipairs(p.inbox) do
        assert.equal(p.inbox[1].raw, it.raw) -- the very same request each time
      end
    end)

    it("fails with 503 at once when the port is closed (ICMP unreachable, §17.1.4)", function()
      local dport = closed_port()
      local res, t0, t1
      sip.spawn(function()
        t0 = now_ms()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. dport })
        t1 = now_ms()
      end)
      assert.truthy(run_until(function() return res end, 3))
      assert.equal(503, res.status)
      assert.is_true(t1 - t0 < 32 * T1, string.format("took %.0f ms", t1 - t0))   -- not Timer F
      assert.equal(0, ep:stats().client_transactions)
    end)

    it("sends a request too large for UDP by TCP, and over UDP when TCP is refused (§18.1.1)", function()
      local res
      local body = string.rep("x", 1400)   -- past the 1300 bytes UDP takes
      sip.spawn(function()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. p.port,
          body = body, content_type = "text/plain" })
      end)
      -- nothing listens on TCP at the peer's port: the connection is refused
      assert.truthy(run_until(function() return #p.inbox >= 1 end, 3, p.poll))
      local got = p.inbox[1]
      assert.equal(body, got.msg.body)
      assert.matches("^SIP/2%.0/UDP ", got.msg:header("Via"))
      p.reply(got, 200)
      assert.truthy(run_until(function() return res end, 2, p.poll))
      assert.equal(200, res.status)
    end)

    it("keeps sending to others after an ICMP error left pending on the socket", function()
      local dport = closed_port()
      local r1, r2, e2
      sip.spawn(function()
        r1 = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. dport })
      end)
      sip.spawn(function()   -- sent while the ICMP for the first is pending on the socket
        r2, e2 = ep:request(sip.request { method = "MESSAGE", uri = "sip:y@127.0.0.1:" .. p.port })
      end)
      assert.truthy(run_until(function() return #p.inbox >= 1 end, 2, p.poll))
      p.reply(p.inbox[1], 200)
      assert.truthy(run_until(function() return r1 and (r2 or e2) end, 2, p.poll))
      assert.equal(503, r1.status)
      assert.equal(200, r2 and r2.status, tostring(e2))
    end)

    it("recovers a lost response by retransmission", function()
      local res
      sip.spawn(function()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      -- drop the first copy, answer the second
      run_until(function() return #p.inbox >= 2 end, 2, p.poll)
      p.reply(p.inbox[2], 200)
      assert.truthy(run_until(function() return res end, 2, p.poll))
      assert.equal(200, res.status)
      assert.equal(1, ep:stats().retransmissions)
    end)

    it("absorbs retransmitted responses and ends after Timer K", function()
      local res
      sip.spawn(function()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 200)
      p.reply(p.inbox[1], 200)
      run_until(function() return res end, 1, p.poll)
      run_for(0.02, p.poll)
      assert.equal(200, res.status)
      assert.equal(1, ep:stats().absorbed)
      -- Completed: only a key in the waiting table, no live transaction
      assert.equal(0, ep:stats().client_transactions)
      assert.equal(1, ep:stats().waiting_transactions)
      p.reply(p.inbox[1], 200)
      run_for(0.02, p.poll)
      assert.equal(2, ep:stats().absorbed)
      run_for((T4 + 130) / 1000, p.poll)   -- Timer K may end up to 100 ms late (batched)
      assert.equal(0, ep:stats().waiting_transactions)
    end)

    it("hands provisional responses to on_progress", function()
      local res, seen = nil, {}
      sip.spawn(function()
        res = ep:request(sip.request { method = "MESSAGE", uri = "sip:x@127.0.0.1:" .. p.port },
          { on_progress = function(r) seen[#seen + 1] = r.status end })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 182)
      run_for(0.01, p.poll)
      p.reply(p.inbox[1], 202)
      run_until(function() return res end, 1, p.poll)
      assert.same({ 182 }, seen)
      assert.equal(202, res.status)
    end)
  end)

  describe("INVITE client transaction", function()
    it("retransmits with Timer A doubling and gives 408 at Timer B (64*T1)", function()
      local res, t0
      sip.spawn(function()
        t0 = now_ms()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      assert.truthy(run_until(function() return res end, 5, p.poll))
      assert.equal(408, res.status)
      assert.equal(7, #p.inbox)   -- at 0, 1, 3, 7, 15, 31, 63 T1
      on_schedule(p.inbox, t0, { 0, T1, 3 * T1, 7 * T1, 15 * T1, 31 * T1, 63 * T1 })
    end)

    it("stops retransmitting on a provisional response", function()
      local res
      sip.spawn(function()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 180)
      run_for(0.3, p.poll)
      assert.equal(1, #p.inbox)
      p.reply(p.inbox[1], 486)
      run_until(function() return res end, 1, p.poll)
      assert.equal(486, res.status)
    end)

    it("sends the ACK for a non-2xx final itself (§17.1.1.3)", function()
      local res
      sip.spawn(function()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      local inv = p.inbox[1].msg
      p.reply(p.inbox[1], 603)
      run_until(function() return res and p.count(function(m) return m.method == "ACK" end) > 0 end, 1, p.poll)
      assert.equal(603, res.status)
      local ack
      for _, it in ipairs(p.inbox) do
        if it.msg.method == "ACK" then ack = it.msg end
      end
      assert.equal(inv.branch, ack.branch)
      assert.equal(inv.cseq, ack.cseq)
      assert.equal("ACK", ack.cseq_method)
      assert.equal("peertag", ack.to_tag)
      assert.equal(inv.uri, ack.uri)
      -- a retransmitted final is ACKed again, without waking anyone
      p.reply(p.inbox[1], 603)
      run_until(function() return p.count(function(m) return m.method == "ACK" end) == 2 end, 1, p.poll)
      assert.equal(2, p.count(function(m) return m.method == "ACK" end))
    end)

    it("CANCELs after a provisional and gets 487", function()
      local res, id
      sip.spawn(function()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port },
          { on_txn = function(t) id = t end })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 180)
      run_for(0.01, p.poll)
      assert.truthy(ep.core:cancel(id))
      run_until(function() return p.count(function(m) return m.method == "CANCEL" end) > 0 end, 1, p.poll)
      local inv, cancel = p.inbox[1].msg, p.inbox[#p.inbox].msg
      assert.equal("CANCEL", cancel.method)
      assert.equal(inv.branch, cancel.branch)
      assert.equal(inv.cseq, cancel.cseq)
      p.reply(p.inbox[#p.inbox], 200)
      p.reply(p.inbox[1], 487)
      run_until(function() return res end, 1, p.poll)
      assert.equal(487, res.status)
    end)
    it("keeps ringing past 64*T1: Timer B ends with the first provisional (§17.1.1.2)", function()
      local res
      sip.spawn(function()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port })
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 180)
      run_for((64 * T1 + 300) / 1000, p.poll)
      assert.is_nil(res)
      assert.equal(1, ep:stats().client_transactions)
      assert.equal(0, p.count(function(m) return m.method == "CANCEL" end))
      p.reply(p.inbox[1], 200)   -- the callee answers late: the caller gets it
      run_until(function() return res end, 1, p.poll)
      assert.equal(200, res and res.status)
    end)

    it("gives up 64*T1 after its CANCEL when no final response comes (§9.1)", function()
      local res, id, t_cancel, t_end
      sip.spawn(function()
        res = ep:request(sip.request { method = "INVITE", uri = "sip:x@127.0.0.1:" .. p.port },
          { on_txn = function(t) id = t end })
        t_end = now_ms()
      end)
      run_until(function() return #p.inbox >= 1 end, 2, p.poll)
      p.reply(p.inbox[1], 180)
      run_for(0.01, p.poll)
      t_cancel = now_ms()
      assert.truthy(ep.core:cancel(id))
      -- the callee takes the CANCEL (200) but never ends the INVITE
      run_until(function() return p.count(function(m) return m.method == "CANCEL" end) > 0 end, 1, p.poll)
      p.reply(p.inbox[#p.inbox], 200)
      assert.truthy(run_until(function() return res end, 3, p.poll))
      assert.equal(408, res.status)
      assert.is_true(t_end - t_cancel >= 64 * T1 - 2,
        string.format("ended %.0f ms after the CANCEL", t_end - t_cancel))
    end)
  end)

  describe("non-INVITE server transaction", function()
    it("answers a retransmitted request from the transaction without waking Lua", function()
      local calls = 0
      ep:on("MESSAGE", function(req) calls = calls + 1; req:reply(200) end)
      local m = raw_request("MESSAGE", p, ep)
      p.send(m, ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      p.send(m, ep)
      run_until(function() return #p.inbox == 2 end, 1, p.poll)
      assert.equal(1, calls)
      assert.equal(2, p.count(status_is(200)))
      assert.equal(p.inbox[1].raw, p.inbox[2].raw)
      assert.equal(1, ep:stats().absorbed)
    end)

    it("absorbs a retransmission while the handler is still working (Trying)", function()
      local calls = 0
      ep:on("MESSAGE", function(req) calls = calls + 1; sip.sleep(0.1); req:reply(200) end)
      local m = raw_request("MESSAGE", p, ep)
      p.send(m, ep)
      run_for(0.02, p.poll)
      p.send(m, ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.equal(1, calls)
      assert.equal(0, #p.inbox - 1)
    end)

    it("matches RFC 2543 requests (no magic cookie) by the old rules", function()
      local calls = 0
      ep:on("OPTIONS", function(req) calls = calls + 1; req:reply(200) end)
      local m = raw_request("OPTIONS", p, ep, { via = "SIP/2.0/UDP 127.0.0.1:" .. p.port })
      p.send(m, ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      p.send(m, ep)
      run_until(function() return #p.inbox == 2 end, 1, p.poll)
      assert.equal(1, calls)
      assert.equal(2, p.count(status_is(200)))
    end)

    it("sends a final response once and refuses a late provisional", function()
      local r1, r2, e2, r3, e3
      ep:on("MESSAGE", function(req)
        r1 = req:reply(200)
        r2, e2 = req:reply(486)
        r3, e3 = req:reply(180)
      end)
      p.send(raw_request("MESSAGE", p, ep), ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.is_true(r1)
      assert.is_nil(r2)
      assert.equal("a final response was sent already", e2)
      assert.is_nil(r3)
      assert.equal("provisional response after a final one", e3)
    end)

    it("ends after Timer J (64*T1)", function()
      ep:on("MESSAGE", function(req) req:reply(200) end)
      p.send(raw_request("MESSAGE", p, ep), ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.equal(0, ep:stats().server_transactions)
      assert.equal(1, ep:stats().waiting_transactions)
      run_for((64 * T1 + 130) / 1000, p.poll)   -- up to 100 ms late: expiries are batched
      assert.equal(0, ep:stats().waiting_transactions)
    end)

    -- Completed keeps only the key, where to resend and the response (txnwait.c)
    it("in its waiting state resends the same final response late in Timer J", function()
      local calls = 0
      ep:on("MESSAGE", function(req) calls = calls + 1; req:reply(202) end)
      local m = raw_request("MESSAGE", p, ep)
      p.send(m, ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.equal(1, ep:stats().waiting_transactions)
      run_for((64 * T1 - 3 * T1) / 1000, p.poll)   -- 61*T1: 30.5 s at the default T1
      p.send(m, ep)
      run_until(function() return #p.inbox == 2 end, 1, p.poll)
      assert.equal(1, calls)
      assert.equal(2, p.count(status_is(202)))
      assert.equal(p.inbox[1].raw, p.inbox[2].raw)
      assert.equal(1, ep:stats().absorbed)
    end)

    it("keeps a waiting transaction in under 200 bytes besides its response", function()
      ep:on("MESSAGE", function(req) req:reply(200) end)
      local n = 200
      for i = 1, n do   -- in tens, so that none queues long enough to be shed (overload_ms)
        p.send(raw_request("MESSAGE", p, ep, { call_id = "w" .. i .. "@x", cseq = i }), ep)
        if i % 10 == 0 then run_until(function() return #p.inbox == i end, 5, p.poll) end
      end
      local st = ep:stats()
      assert.equal(n, st.waiting_transactions)
      assert.equal(0, st.server_transactions)
      -- the responses are kept whole: their bytes are the same as those sent
      local sent = 0
      for _, item in ipairs(p.inbox) do sent = sent + #item.raw end
      assert.equal(sent, st.waiting_resend_bytes)
      assert.is_true(st.waiting_bytes / n <= 200,
        string.format("%.0f bytes per waiting transaction", st.waiting_bytes / n))
    end)

    it("answers statelessly when asked", function()
      ep:on("OPTIONS", function(req) req:reply_stateless(200) end)
      p.send(raw_request("OPTIONS", p, ep), ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.equal(200, p.inbox[1].msg.status)
    end)

    it("answers 503 with Retry-After when the transaction table is full", function()
      local small = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = T1,
        max_transactions = 2 })
      small:on("MESSAGE", function(req) sip.sleep(0.2); req:reply(200) end)
      for _ = 1, 3 do
        p.send(raw_request("MESSAGE", p, small), small)
      end
      run_until(function() return #p.inbox >= 1 end, 1, p.poll)
      assert.equal(503, p.inbox[1].msg.status)
      assert.equal("5", p.inbox[1].msg:header("Retry-After"))
      assert.equal(1, small:stats().rejected_busy)
      small:close()
    end)
  end)

  describe("merged requests (§8.2.2.2)", function()
    local function invite(branch)
      return assert(sip.request { method = "INVITE", uri = ep:uri("svc"),
        from = "<sip:peer@127.0.0.1:" .. p.port .. ">;tag=merge1", call_id = "merge-1@test",
        cseq = 7, via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. branch })
    end

    it("answers 482 to a copy of a request that came by another path, once", function()
      local calls = 0
      ep:on("INVITE", function(req)
        calls = calls + 1
        req:reply(180)
        sip.sleep(0.2)
        req:reply(486)
      end)
      p.send(invite("z9hG4bKpath1"), ep)
      p.send(invite("z9hG4bKpath2"), ep)   -- forked upstream: same From tag, Call-ID, CSeq
      run_until(function() return p.count(status_is(486)) >= 1 end, 2, p.poll)
      local function of(status, branch)
        return p.count(function(m) return m.status == status and m.branch == branch end)
      end
      assert.equal(1, calls)
      assert.is_true(of(482, "z9hG4bKpath2") >= 1)   -- (Timer G resends it: no ACK here)
      assert.equal(0, of(482, "z9hG4bKpath1"))
      assert.equal(1, ep:stats().merged)
      -- a retransmission of the first is absorbed as ever, not taken for a merged one
      p.send(invite("z9hG4bKpath1"), ep)
      run_for(0.1, p.poll)
      assert.equal(0, of(482, "z9hG4bKpath1"))
      assert.equal(1, ep:stats().merged)
      assert.equal(1, calls)
    end)

    it("knows a copy that comes after the first was answered (waiting in Completed)", function()
      local calls = 0
      ep:on("MESSAGE", function(req) calls = calls + 1; req:reply(200) end)
      local function message(branch)
        return assert(sip.request { method = "MESSAGE", uri = ep:uri("svc"),
          from = "<sip:peer@127.0.0.1:" .. p.port .. ">;tag=merge2", call_id = "merge-2@test",
          cseq = 3, via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. branch })
      end
      p.send(message("z9hG4bKlate1"), ep)
      run_until(function() return p.count(status_is(200)) == 1 end, 1, p.poll)
      assert.equal(1, ep:stats().waiting_transactions)
      p.send(message("z9hG4bKlate2"), ep)
      run_until(function() return p.count(status_is(482)) == 1 end, 1, p.poll)
      assert.equal(1, calls)
      assert.equal(1, ep:stats().merged)
    end)

    it("does not look for them in a proxy, to which a spiral is such a copy", function()
      local relayed = 0
      ep:route(function(req)
        relayed = relayed + 1
        req:reply(404)
      end)
      p.send(invite("z9hG4bKspiral1"), ep)
      p.send(invite("z9hG4bKspiral2"), ep)
      run_until(function() return p.count(status_is(404)) == 2 end, 2, p.poll)
      assert.equal(2, relayed)
      assert.equal(0, p.count(status_is(482)))
    end)
  end)

  describe("INVITE server transaction", function()
    it("sends 100 Trying at once", function()
      ep:on("INVITE", function(req) sip.sleep(0.1); req:reply(486) end)
      p.send(raw_request("INVITE", p, ep), ep)
      run_until(function() return #p.inbox >= 1 end, 1, p.poll)
      assert.equal(100, p.inbox[1].msg.status)
      assert.is_nil(p.inbox[1].msg.to_tag)
    end)

    it("retransmits a non-2xx final with Timer G until the ACK, which it absorbs", function()
      local acks = 0
      ep:on("ACK", function() acks = acks + 1 end)
      ep:on("INVITE", function(req) req:reply(486) end)
      local inv = raw_request("INVITE", p, ep)
      local t0 = now_ms()
      p.send(inv, ep)
      run_until(function() return p.count(status_is(486)) >= 5 end, 3, p.poll)
      local finals = {}
      for _, it in ipairs(p.inbox) do
        if it.msg.status == 486 then finals[#finals + 1] = it end
      end
      -- sent at once, then after T1, 2T1, then every T2 (Timer G)
      on_schedule(finals, t0, { 0, T1, 3 * T1, 3 * T1 + T2, 3 * T1 + 2 * T2 })
      -- the ACK for the non-2xx reuses the INVITE's branch (§17.1.1.3)
      local ack = assert(sip.request { method = "ACK", uri = inv.uri, from = inv:header("From"),
        to = finals[1].msg:header("To"), call_id = inv.call_id, cseq = inv.cseq,
        via = inv:header("Via") })
      p.send(ack, ep)
      run_for(0.05, p.poll)
      local n = p.count(status_is(486))
      run_for(0.2, p.poll)
      assert.equal(n, p.count(status_is(486)))
      assert.equal(0, acks)
      run_for((T4 + 50) / 1000, p.poll)
      assert.equal(0, ep:stats().server_transactions)
    end)

    it("gives up at Timer H without an ACK", function()
      ep:on("INVITE", function(req) req:reply(480) end)
      p.send(raw_request("INVITE", p, ep), ep)
      run_for((64 * T1 + 80) / 1000, p.poll)
      assert.equal(0, ep:stats().server_transactions)
      local n = p.count(status_is(480))
      run_for(0.2, p.poll)
      assert.equal(n, p.count(status_is(480)))
    end)

    it("retransmits a 2xx until its ACK arrives (§13.3.1.4)", function()
      local got_ack
      ep:on("INVITE", function(req)
        req:reply(200)
        got_ack = req:wait_ack()
      end)
      local inv = raw_request("INVITE", p, ep)
      p.send(inv, ep)
      run_until(function() return p.count(status_is(200)) >= 3 end, 2, p.poll)
      local ok
      for _, it in ipairs(p.inbox) do
        if it.msg.status == 200 then ok = it.msg end
      end
      local ack = assert(sip.request { method = "ACK", uri = inv.uri, from = inv:header("From"),
        to = ok:header("To"), call_id = inv.call_id, cseq = inv.cseq })
      p.send(ack, ep)
      run_until(function() return got_ack end, 1, p.poll)
      assert.equal("ACK", got_ack.method)
      local n = p.count(status_is(200))
      run_for(0.3, p.poll)
      assert.equal(n, p.count(status_is(200)))
      -- a retransmitted INVITE is absorbed by the Accepted transaction (RFC 6026)
      p.send(inv, ep)
      run_for(0.05, p.poll)
      assert.equal(n, p.count(status_is(200)))
    end)

    it("answers CANCEL with 200, the INVITE with 487, and tells the handler", function()
      local cancelled, late_ok, late_err, seen_flag
      ep:on("INVITE", function(req)
        req:on_cancel(function() cancelled = true end)
        req:reply(180)
        sip.sleep(0.1)
        seen_flag = req.cancelled
        late_ok, late_err = req:reply(200)
      end)
      local inv = raw_request("INVITE", p, ep)
      p.send(inv, ep)
      run_until(function() return p.count(status_is(180)) == 1 end, 1, p.poll)
      local cancel = assert(sip.request { method = "CANCEL", uri = inv.uri,
        from = inv:header("From"), to = inv:header("To"), call_id = inv.call_id,
        cseq = inv.cseq, via = inv:header("Via") })
      p.send(cancel, ep)
      run_until(function() return p.count(status_is(487)) == 1 end, 1, p.poll)
      run_until(function() return late_err end, 1, p.poll)
      assert.equal(1, p.count(function(m) return m.status == 200 and m.cseq_method == "CANCEL" end))
      assert.truthy(p.count(status_is(487)) >= 1)   -- Timer G resends it until an ACK
      assert.is_true(cancelled)
      assert.is_true(seen_flag)
      assert.is_nil(late_ok)
      assert.equal("a final response was sent already", late_err)
    end)

    it("answers 481 to a CANCEL that matches nothing", function()
      p.send(raw_request("CANCEL", p, ep), ep)
      run_until(function() return #p.inbox == 1 end, 1, p.poll)
      assert.equal(481, p.inbox[1].msg.status)
    end)
  end)

  it("leaves no transaction behind once timers D, I, J and K ran", function()
    ep:on("MESSAGE", function(req) req:reply(200) end)
    ep:on("INVITE", function(req) req:reply(486) end)
    local other = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = T1, t2 = T2, t4 = T4 })
    local done = 0
    for i = 1, 20 do
      sip.spawn(function()
        other:request(sip.request { method = i % 2 == 0 and "INVITE" or "MESSAGE", uri = ep:uri("x") })
        done = done + 1
      end)
    end
    run_until(function() return done == 20 end, 3)
    run_for((64 * T1 + T4 + 200) / 1000)   -- + up to 100 ms: their expiries are batched
    assert.equal(0, ep:stats().server_transactions)
    assert.equal(0, other:stats().client_transactions)
    assert.equal(0, ep:stats().waiting_transactions)
    assert.equal(0, other:stats().waiting_transactions)
    other:close()
  end)
end)
