-- spec/ua_spec.lua: the user agent — calls (RFC 3261 §13-§15), pager-mode MESSAGE (RFC 3428)
-- and the registration client (§10.2), between real loopback endpoints and raw UDP peers.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"
local Endpoint = require("sip.endpoint").Endpoint

local function endpoint(opts)
  opts = opts or {}
  return assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, t1 = opts.t1 })
end

local STEP_MS = 5   -- loop step while waiting
local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, STEP_MS)
end
local run_for = function(seconds, poll) helper.run_for(seconds, poll, STEP_MS) end


local function count(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n
end

-- Every message an endpoint receives, in arrival order, into one shared timeline.
local function tap(ep, who, timeline)
  ep._dispatch = function(self, req, txn, source)
    timeline[#timeline + 1] = { at = who, msg = req }
    return Endpoint._dispatch(self, req, txn, source)
  end
  ep._response = function(self, txn, res)
    timeline[#timeline + 1] = { at = who, msg = res }
    return Endpoint._response(self, txn, res)
  end
end

-- A raw UDP peer the spec drives packet by packet (spec/helper.lua).
local function peer()
  local p = helper.udp_peer()
  -- a response to a received request, with our To tag and Contact when given
  function p.reply(item, code, tag, contact)
    local res = item.msg:response(code, nil, tag)
    if contact then
      res:add_header("Contact", contact)
    end
    assert(p.sock:sendto(tostring(res), item.ip, item.port))
    return res
  end
  return p
end

local function method_is(m, tag)
  return function(msg)
    return msg.method == m and (tag == nil or msg.to_tag == tag)
  end
end

local SDP = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40000,
  codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })

describe("calls", function()
  for _, kind in ipairs { "udp", "tcp" } do
    describe("a basic call over " .. kind:upper(), function()
      local a, b
      before_each(function()
        a, b = endpoint(), endpoint()
      end)
      after_each(function()
        a:close()
        b:close()
      end)

      it("runs INVITE/100/180/200/ACK/BYE/200 as §13 and §15 describe", function()
        local timeline, uas_call, ended = {}, nil, nil
        tap(a, "uac", timeline)
        tap(b, "uas", timeline)
        b:on("INVITE", function(req)
          req:reply(180)
          sip.sleep(0.05)
          uas_call = assert(req:answer { sdp = SDP })
          timeline[#timeline + 1] = { at = "uas", msg = uas_call.received_ack }
          ended = uas_call:wait()
        end)
        local call, ok = a:call(b:uri("bob", kind), { sdp = SDP })
        assert.truthy(call, tostring(ok))
        assert.equal(200, ok.status)
        assert.truthy(run_until(function() return uas_call end, 2))
        local bye_res = assert(call:bye())
        assert.equal(200, bye_res.status)
        assert.truthy(run_until(function() return ended end, 2))
        assert.equal("remote bye", ended)

        local got = {}
        for _, e in ipairs(timeline) do
          got[#got + 1] = e.at .. " " .. (e.msg.method or tostring(e.msg.status)) .. " " ..
            e.msg.cseq_method
        end
        assert.same({
          "uas INVITE INVITE", "uac 100 INVITE", "uac 180 INVITE", "uac 200 INVITE",
          "uas ACK ACK", "uas BYE BYE", "uac 200 BYE",
        }, got)
        local inv, trying, ringing, okm, ack, bye, bye_ok =
          timeline[1].msg, timeline[2].msg, timeline[3].msg, timeline[4].msg,
          timeline[5].msg, timeline[6].msg, timeline[7].msg
        -- every message of the call belongs to it: one Call-ID, one From tag
        for _, e in ipairs(timeline) do
          assert.equal(inv.call_id, e.msg.call_id)
          assert.equal(inv.from_tag, e.msg.from_tag)
        end
        assert.matches("^" .. kind .. ":", uas_call.initial_invite.source)
        -- §8.1.1.8 / §12.1.2: the INVITE carries a Contact, the To tag comes from the UAS
        assert.truthy(inv:header("Contact"))
        if kind == "tcp" then
          assert.matches("transport=tcp", inv:header("Contact"))
        end
        assert.is_nil(inv.to_tag)
        assert.is_nil(trying.to_tag)
        local tag = ringing.to_tag
        assert.truthy(tag)
        assert.equal(tag, okm.to_tag)
        for _, m in ipairs { inv, trying, ringing, okm } do
          assert.equal(inv.cseq, m.cseq)
        end
        -- §12.1.1: the 2xx has a Contact, the remote target of the UAC's dialog
        local remote_target = okm:addr("Contact").uri
        assert.equal("application/sdp", okm.content_type)
        -- §13.2.2.4: the ACK has the INVITE's CSeq number, method ACK, and a new branch
        assert.equal(inv.cseq, ack.cseq)
        assert.equal("ACK", ack.cseq_method)
        assert.not_equal(inv.branch, ack.branch)
        assert.equal(tag, ack.to_tag)
        assert.equal(remote_target, ack.uri)
        -- §12.2.1.1: the BYE goes to the remote target with the next CSeq
        assert.equal(inv.cseq + 1, bye.cseq)
        assert.equal(remote_target, bye.uri)
        assert.equal(tag, bye.to_tag)
        assert.equal(bye.cseq, bye_ok.cseq)
        -- and the dialogs are gone on both sides (§15)
        assert.equal(0, count(a.dialogs))
        assert.equal(0, count(b.dialogs))
        assert.equal("terminated", call.state)
      end)
    end)
  end

  describe("CANCEL (§9)", function()
    local a, b, uas
    before_each(function()
      a, b = endpoint(), endpoint()
      uas = {}
      b:on("INVITE", function(req)
        req:reply(180)
        for _ = 1, 100 do
          if req.cancelled then break end
          sip.sleep(0.02)
        end
        uas.call, uas.err = req:answer { sdp = SDP }
        uas.done = true
      end)
    end)
    after_each(function()
      a:close()
      b:close()
    end)

    it("ends an unanswered call with 487 and no dialog on either side (timeout option)", function()
      local call, res = a:call(b:uri("bob"), { timeout = 0.2, sdp = SDP })
      assert.is_nil(call)
      assert.equal(487, res.status)
      assert.truthy(run_until(function() return uas.done end, 2))
      assert.is_nil(uas.call)
      assert.equal("a final response was sent already", uas.err)
      assert.equal(0, count(a.dialogs))
      assert.equal(0, count(b.dialogs))
    end)

    it("can be sent from on_progress with pending:cancel()", function()
      local statuses = {}
      local pending = a:dial(b:uri("bob"), { on_progress = function(res, p)
        statuses[#statuses + 1] = res.status
        if res.status == 180 then
          assert.is_true(p:cancel())
        end
      end })
      local call, res = pending:result()
      assert.is_nil(call)
      assert.equal(487, res.status)
      assert.equal("cancelled", pending.state)
      assert.same({ 100, 180 }, statuses)
      assert.truthy(run_until(function() return uas.done end, 2))
      assert.equal(0, count(a.dialogs))
      assert.equal(0, count(b.dialogs))
    end)

    it("is refused once the call is answered", function()
      b:on("INVITE", function(req)
        local c = req:answer { sdp = SDP }
        if c then c:wait() end
      end)
      local pending = a:dial(b:uri("bob"), { sdp = SDP })
      local call = assert(pending:result())
      local ok, err = pending:cancel()
      assert.is_nil(ok)
      assert.equal("call is answered", err)
      call:bye()
    end)
  end)

  describe("CANCEL crossing the 2xx (§9.1)", function()
    local ep, p
    before_each(function()
      ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 20 })
      p = peer()
    end)
    after_each(function()
      ep:close()
      p.close()
    end)

    it("confirms the call the UAS answered anyway and ends it with BYE", function()
      local pending = ep:dial(p.uri, { sdp = SDP })
      assert.truthy(run_until(function() return #p.inbox >= 1 end, 1, p.poll))
      local inv = p.inbox[1]
      local contact = "<sip:uas@127.0.0.1:" .. p.port .. ">"
      p.reply(inv, 180, "t1", contact)
      assert.truthy(run_until(function() return pending.state == "early" end, 1, p.poll))
      assert.is_true(pending:cancel())
      assert.truthy(run_until(function() return #p.find(method_is("CANCEL")) >= 1 end, 1, p.poll))
      p.reply(p.find(method_is("CANCEL"))[1], 200, "t1")
      p.reply(inv, 200, "t1", contact)   -- the answer was already on its way
      local call, res = pending:result()
      assert.is_nil(call)
      assert.equal(200, res.status)
      assert.truthy(run_until(function() return #p.find(method_is("BYE", "t1")) >= 1 end, 1,
        p.poll))
      assert.equal(1, #p.find(method_is("ACK", "t1")))
      p.reply(p.find(method_is("BYE", "t1"))[1], 200)
      run_for(0.05, p.poll)
      assert.equal("terminated", pending.hung_up.state)
      assert.equal(0, count(ep.dialogs))
    end)
  end)

  describe("the UAS", function()
    local ep, p
    before_each(function()
      ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 20 })
      p = peer()
    end)
    after_each(function()
      ep:close()
      p.close()
    end)

    it("retransmits its 2xx until the ACK arrives when the first ACK is lost (§13.3.1.4)", function()
      local call
      ep:on("INVITE", function(req)
        call = req:answer { sdp = SDP }
      end)
      local inv = assert(sip.request { method = "INVITE", uri = ep:uri("svc"), from = p.uri,
        contact = p.uri, via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" ..
        sip.random.branch(), body = SDP, content_type = "application/sdp" })
      p.send(inv, ep)
      local function oks() return #p.find(function(m) return m.status == 200 end) end
      -- the "lost" ACK: we let three 2xx come without answering
      assert.truthy(run_until(function() return oks() >= 3 end, 2, p.poll))
      assert.is_nil(call)
      assert.truthy(ep:stats().retransmissions >= 2)
      local ok = p.find(function(m) return m.status == 200 end)[1].msg
      assert.truthy(ok.to_tag)
      local ack = assert(sip.request { method = "ACK", uri = ok:addr("Contact").uri,
        from = inv:header("From"), to = ok:header("To"), call_id = inv.call_id, cseq = inv.cseq,
        via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. sip.random.branch() })
      p.send(ack, ep)
      assert.truthy(run_until(function() return call end, 1, p.poll))
      assert.equal("confirmed", call.state)
      local n = oks()
      run_for(0.2, p.poll)
      assert.equal(n, oks())   -- no more 2xx once ACKed
    end)
  end)

  describe("forking (§13.2.2.4)", function()
    local ep, p
    before_each(function()
      ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 20 })
      p = peer()
    end)
    after_each(function()
      ep:close()
      p.close()
    end)

    it("shows each early dialog, keeps the first 2xx and ends a second with ACK and BYE", function()
      local progress = {}
      local pending = ep:dial(p.uri, { sdp = SDP, on_progress = function(res)
        progress[#progress + 1] = res.status .. " " .. tostring(res.to_tag)
      end })
      assert.truthy(run_until(function() return #p.inbox >= 1 end, 1, p.poll))
      local inv = p.inbox[1]
      assert.equal("INVITE", inv.msg.method)
      local c1 = "<sip:f1@127.0.0.1:" .. p.port .. ">"
      local c2 = "<sip:f2@127.0.0.1:" .. p.port .. ">"
      p.reply(inv, 100)
      p.reply(inv, 180, "f1", c1)
      p.reply(inv, 183, "f2", c2)
      assert.truthy(run_until(function() return #progress == 3 end, 1, p.poll))
      assert.equal("early", pending.state)
      assert.same({ "f1", "f2" }, pending.early_order)
      assert.equal(180, pending.early.f1.status)
      assert.equal(183, pending.early.f2.status)
      assert.equal("sip:f2@127.0.0.1:" .. p.port, pending.early.f2.remote_target)

      p.reply(inv, 200, "f1", c1)
      local call, res = pending:result()
      assert.truthy(call)
      assert.equal("f1", res.to_tag)
      assert.equal("f1", call.remote_tag)
      assert.truthy(run_until(function() return #p.find(method_is("ACK", "f1")) == 1 end, 1,
        p.poll))

      -- the other branch answers too: it is confirmed and hung up at once
      local ok2 = p.reply(inv, 200, "f2", c2)
      assert.truthy(run_until(function() return #p.find(method_is("BYE", "f2")) == 1 end, 1,
        p.poll))
      local ack2 = p.find(method_is("ACK", "f2"))[1].msg
      assert.equal(inv.msg.cseq, ack2.cseq)
      assert.equal("sip:f2@127.0.0.1:" .. p.port, ack2.uri)
      local bye = p.find(method_is("BYE", "f2"))[1]
      assert.equal("sip:f2@127.0.0.1:" .. p.port, bye.msg.uri)
      assert.equal(inv.msg.cseq + 1, bye.msg.cseq)
      p.reply(bye, 200)
      -- a retransmission of that 2xx gets the ACK again, not a second BYE
      p.send(ok2, ep)
      assert.truthy(run_until(function() return #p.find(method_is("ACK", "f2")) == 2 end, 1,
        p.poll))
      run_for(0.05, p.poll)
      assert.equal(1, #p.find(method_is("BYE", "f2")))
      assert.equal(0, #p.find(method_is("BYE", "f1")))
      -- only the winning dialog is left
      assert.equal(1, count(ep.dialogs))
      assert.equal("confirmed", call.state)
      assert.same({ "100 nil", "180 f1", "183 f2" }, progress)
    end)
  end)
end)

describe("pager-mode MESSAGE (RFC 3428)", function()
  local a, b, got
  before_each(function()
    a, b = endpoint(), endpoint()
    got = {}
    b:on("MESSAGE", function(req)
      got[#got + 1] = req
      req:reply(200)
    end)
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("carries text/plain and returns the final response", function()
    local res = assert(a:message(b:uri("bob"), "hello, bob"))
    assert.equal(200, res.status)
    assert.equal(1, #got)
    assert.equal("hello, bob", got[1].body)
    assert.matches("^text/plain", got[1].content_type)
    assert.matches("^udp:", got[1].source)
  end)

  it("carries message/cpim (RFC 3862)", function()
    local body = sip.cpim.build { from = "Alice <sip:alice@example.com>",
      to = "<sip:bob@example.com>", datetime = true, content_type = "text/plain",
      body = "hi via cpim" }
    local res = assert(a:message(b:uri("bob"), body, { content_type = "message/cpim" }))
    assert.equal(200, res.status)
    assert.equal("message/cpim", got[1].content_type)
    local m = assert(sip.cpim.parse(got[1].body))
    assert.equal("hi via cpim", m.body)
    assert.equal("sip:alice@example.com", m.from_uri)
    assert.equal("text/plain", m.content_type)
  end)

  it("sends a body over 1300 bytes for a UDP destination over TCP (§18.1.1)", function()
    local text = ("x"):rep(1400)
    -- mode "pager": the default ("auto") carries it in an MSRP session (spec/msrp_spec.lua)
    local res = assert(a:message(b:uri("bob"), text, { mode = "pager" }))
    assert.equal(200, res.status)
    assert.equal(text, got[1].body)
    assert.matches("^tcp:", got[1].source)
  end)

  it("answers a digest challenge with user and password", function()
    local auth = sip.auth.digest { realm = "test",
      credentials = function(user) return user == "alice" and "secret" or nil end }
    b:on("MESSAGE", function(req)
      if not auth:check(req) then return end
      got[#got + 1] = req
      req:reply(200)
    end)
    assert.equal(401, a:message(b:uri("bob"), "no credentials").status)
    local res = a:message(b:uri("bob"), "with credentials", { user = "alice", password = "secret" })
    assert.equal(200, res.status)
    assert.equal("with credentials", got[1].body)
  end)
end)

describe("registration client (§10.2)", function()
  local r, c, seen, grant
  before_each(function()
    r, c = endpoint(), endpoint()
    seen, grant = {}, 2
    -- a small registrar: grants at most `grant` seconds and echoes the binding
    r:on("REGISTER", function(req)
      seen[#seen + 1] = req
      local asked = tonumber(req:header("Expires") or "3600")
      if asked == 0 then
        return req:reply(200)
      end
      req:reply(200, nil, { headers = { Contact = req:header("Contact") .. ";expires=" ..
        math.min(asked, grant) } })
    end)
  end)
  after_each(function()
    c:close()
    r:close()
  end)

  it("registers, refreshes before expiry with one Call-ID and rising CSeq, and unregisters", function()
    local reg = c:register { registrar = r:uri(), aor = "sip:alice@127.0.0.1", expires = 60 }
    assert.equal("registering", reg.state)
    assert.equal("registered", reg:wait())
    assert.equal(2, reg.expires)   -- granted, from the Contact's expires parameter
    run_for(3.2)
    assert.truthy(#seen >= 3, "REGISTERs: " .. #seen)
    for i, req in ipairs(seen) do
      assert.equal(seen[1].call_id, req.call_id)
      assert.equal("sip:alice@127.0.0.1", req:addr("To").uri)
      if i > 1 then
        assert.truthy(req.cseq > seen[i - 1].cseq)
      end
    end
    local n = #seen
    local res = assert(reg:stop())
    assert.equal(200, res.status)
    assert.equal("unregistered", reg.state)
    assert.equal(n + 1, #seen)
    assert.equal("0", seen[#seen]:header("Expires"))
    assert.equal(seen[1].call_id, seen[#seen].call_id)
    assert.truthy(seen[#seen].cseq > seen[n].cseq)
    run_for(1.2)
    assert.equal(n + 1, #seen)   -- no refresh after stop
  end)

  it("takes the granted expiry from the Expires header when the Contact has none", function()
    r:on("REGISTER", function(req)
      req:reply(200, nil, { headers = { Contact = req:header("Contact"), Expires = "1800" } })
    end)
    local reg = c:register { registrar = r:uri(), user = "alice" }
    assert.equal("registered", reg:wait())
    assert.equal(1800, reg.expires)
    assert.equal(1800 - 64 * 0.5 - 8, reg:refresh_in(1800))
    assert.equal(1, reg:refresh_in(2))
    reg:stop()
  end)

  it("answers a digest challenge on every refresh", function()
    local auth = sip.auth.digest { realm = "test",
      credentials = function(user) return user == "alice" and "secret" or nil end }
    local ok = {}
    r:on("REGISTER", function(req)
      seen[#seen + 1] = req
      local good, user = auth:check(req)
      if not good then return end
      ok[#ok + 1] = { user = user, cseq = req.cseq }
      req:reply(200, nil, { headers = { Contact = req:header("Contact") .. ";expires=2" } })
    end)
    local reg = c:register { registrar = r:uri(), user = "alice", password = "secret",
      expires = 2 }
    assert.equal("registered", reg:wait())
    run_for(1.3)
    assert.truthy(#ok >= 2)
    assert.equal("alice", ok[1].user)
    assert.truthy(ok[2].cseq > ok[1].cseq)
    for _, req in ipairs(seen) do
      assert.equal(seen[1].call_id, req.call_id)
    end
    reg:stop()
  end)

  it("fails on a wrong password", function()
    local auth = sip.auth.digest { realm = "test",
      credentials = function(user) return user == "alice" and "secret" or nil end }
    r:on("REGISTER", function(req)
      if auth:check(req) then req:reply(200) end
    end)
    local reg = c:register { registrar = r:uri(), user = "alice", password = "wrong" }
    assert.equal("failed", reg:wait())
    assert.matches("^401", reg.error)
    reg:stop()
  end)

  it("is removed by ep:stop(), which waits for the answer", function()
    local reg = c:register { registrar = r:uri(), aor = "sip:alice@127.0.0.1", expires = 60 }
    assert.equal("registered", reg:wait())
    local stopped
    sip.spawn(function()
      sip.sleep(0.05)
      c:stop()
      stopped = true
    end)
    c:run()
    assert.is_true(stopped)
    assert.equal("unregistered", reg.state)
    assert.equal("0", seen[#seen]:header("Expires"))
  end)

  it("is removed by ep:close()", function()
    local reg = c:register { registrar = r:uri(), aor = "sip:alice@127.0.0.1", expires = 60 }
    assert.equal("registered", reg:wait())
    c:close()
    assert.equal("unregistered", reg.state)
    assert.equal("0", seen[#seen]:header("Expires"))
  end)

  it("gives up waiting for the unregister after a short bound", function()
    local reg = c:register { registrar = r:uri(), aor = "sip:alice@127.0.0.1", expires = 60 }
    assert.equal("registered", reg:wait())
    r:close()   -- nobody answers now
    local t0 = socket.gettime()
    c:stop()
    assert.truthy(socket.gettime() - t0 < 3)
  end)
end)
