-- spec/dialog_spec.lua: the C dialog object (csrc/dialog.c through sip.core) — RFC 3261
-- §12 dialog state, §12.2.1.1 request building, §12.2.2 checks of requests that arrive —
-- and the calls over it (lua/sip/dialog.lua) between endpoints and raw UDP peers.
local sip = require "sip"
local core = require "sip.core"
local sched = require "sip.sched"
local helper = require "helper"

local function invite(t)
  t = t or {}
  local lines = {
    (t.method or "INVITE") .. " " .. (t.uri or "sip:bob@example.com") .. " SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1",
    "Max-Forwards: 70",
    "From: Alice <sip:alice@example.com>;tag=a1",
    "To: Bob <sip:bob@example.com>" .. (t.to_tag and (";tag=" .. t.to_tag) or ""),
    "Call-ID: call1@192.0.2.1",
    "CSeq: " .. (t.cseq or 10) .. " " .. (t.method or "INVITE"),
    "Contact: <" .. (t.contact or "sip:alice@192.0.2.1:5060") .. ">",
  }
  for _, h in ipairs(t.headers or {}) do
    lines[#lines + 1] = h
  end
  lines[#lines + 1] = "Content-Length: 0"
  lines[#lines + 1] = ""
  lines[#lines + 1] = ""
  return assert(sip.parse(helper.msg(lines)))
end

local function response(req, code, t)
  t = t or {}
  local lines = {
    "SIP/2.0 " .. code .. " " .. core.reason(code),
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1",
    "From: Alice <sip:alice@example.com>;tag=a1",
    "To: Bob <sip:bob@example.com>" .. (t.to_tag ~= false and (";tag=" .. (t.to_tag or "b1")) or ""),
    "Call-ID: call1@192.0.2.1",
    "CSeq: " .. req.cseq .. " " .. req.method,
  }
  if t.contact ~= false then
    lines[#lines + 1] = "Contact: <" .. (t.contact or "sip:bob@192.0.2.2:5070") .. ">"
  end
  for _, h in ipairs(t.headers or {}) do
    lines[#lines + 1] = h
  end
  lines[#lines + 1] = "Content-Length: 0"
  lines[#lines + 1] = ""
  lines[#lines + 1] = ""
  return assert(sip.parse(helper.msg(lines)))
end

local rr = { "Record-Route: <sip:p1.example.com;lr>", "Record-Route: <sip:p2.example.com;lr>, <sip:p3.example.com;lr>" }

describe("UAC dialog (RFC 3261 §12.1.2)", function()
  it("takes Call-ID, tags, URIs and the remote target from the INVITE and the 2xx", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 200), "<sip:alice@192.0.2.1>"))
    assert.equal("call1@192.0.2.1", d.call_id)
    assert.equal("a1", d.local_tag)
    assert.equal("b1", d.remote_tag)
    assert.equal("Alice <sip:alice@example.com>;tag=a1", d.local_uri)
    assert.equal("Bob <sip:bob@example.com>;tag=b1", d.remote_uri)
    assert.equal("sip:bob@192.0.2.2:5070", d.remote_target)
    assert.equal(10, d.local_cseq)
    assert.is_nil(d.remote_cseq)
    assert.equal("confirmed", d.state)
    assert.equal("uac", d.role)
    assert.is_false(d.secure)
    assert.equal("call1@192.0.2.1|a1|b1", d:key())
    assert.equal(d:key(), core.dialog_key("call1@192.0.2.1", "a1", "b1"))
  end)

  it("takes the route set from Record-Route, reversed", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 200, { headers = rr })))
    assert.same({ "<sip:p3.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>" },
      d.route)
  end)

  it("drops a Contact's URI headers from the remote target (§19.1.1)", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 200,
      { contact = "sip:bob@192.0.2.2?Route=%3Csip:x.example.com%3E" })))
    assert.equal("sip:bob@192.0.2.2", d.remote_target)
    assert.equal("sip:bob@192.0.2.2", assert(d:build("BYE")).uri)
  end)

  it("is secure for a sips Request-URI", function()
    local req = invite { uri = "sips:bob@example.com" }
    assert.is_true(core.dialog_uac(req, response(req, 200)).secure)
  end)

  it("makes no dialog from a response without a To tag", function()
    local req = invite()
    local d, err = core.dialog_uac(req, response(req, 200, { to_tag = false }))
    assert.is_nil(d)
    assert.matches("To tag", err)
  end)

  it("is early from a 1xx with a To tag and confirmed by the 2xx, which sets the route set", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 180, { contact = "sip:bob@192.0.2.9" })))
    assert.equal("early", d.state)
    assert.equal("sip:bob@192.0.2.9", d.remote_target)
    assert.same({}, d.route)
    assert(d:update(response(req, 200, { headers = rr })))
    assert.equal("confirmed", d.state)
    assert.equal("sip:bob@192.0.2.2:5070", d.remote_target)
    assert.equal(3, #d.route)
    assert.equal("<sip:p1.example.com;lr>", d.route[3])
  end)

  it("refuses a response of another fork (To tag)", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 180, { to_tag = "f1" })))
    local ok, err = d:update(response(req, 200, { to_tag = "f2" }))
    assert.is_nil(ok)
    assert.matches("another dialog", err)
    assert.equal("early", d.state)
  end)

  it("ends an early dialog on a non-2xx final", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 183)))
    assert(d:update(response(req, 486)))
    assert.equal("terminated", d.state)
  end)
end)

describe("UAS dialog (RFC 3261 §12.1.1)", function()
  it("keeps Record-Route in order and takes the remote target from the Contact", function()
    local req = invite { headers = rr }
    local d = assert(core.dialog_uas(req, "b1", "<sip:bob@192.0.2.2>", 500))
    assert.same({ "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>" },
      d.route)
    assert.equal("sip:alice@192.0.2.1:5060", d.remote_target)
    assert.equal("b1", d.local_tag)
    assert.equal("a1", d.remote_tag)
    assert.equal("Bob <sip:bob@example.com>;tag=b1", d.local_uri)
    assert.equal("Alice <sip:alice@example.com>;tag=a1", d.remote_uri)
    assert.equal(10, d.remote_cseq)
    assert.equal(500, d.local_cseq)
    assert.equal("confirmed", d.state)
    assert.equal("uas", d.role)
  end)

  it("picks a local CSeq start when none is given", function()
    local d = assert(core.dialog_uas(invite(), "b1"))
    assert.is_true(d.local_cseq >= 1 and d.local_cseq < 2 ^ 31)
  end)
end)

describe("requests in a dialog (RFC 3261 §12.2.1.1)", function()
  local function uac(headers)
    local req = invite()
    return assert(core.dialog_uac(req, response(req, 200, { headers = headers }),
      "<sip:alice@192.0.2.1>"))
  end

  it("goes to the remote target with the route set as Route and CSeq one higher each time", function()
    local d = uac(rr)
    local bye = assert(d:build("BYE"))
    assert.equal("BYE", bye.method)
    assert.equal("sip:bob@192.0.2.2:5070", bye.uri)
    assert.same({ "<sip:p3.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>" },
      bye:headers("Route"))
    assert.equal(11, bye.cseq)
    assert.equal("BYE", bye.cseq_method)
    assert.equal("a1", bye.from_tag)
    assert.equal("b1", bye.to_tag)
    assert.equal("call1@192.0.2.1", bye.call_id)
    assert.equal("<sip:alice@192.0.2.1>", bye:header("Contact"))
    assert.matches("^z9hG4bK", bye.branch)
    assert.equal(12, d:build("INFO").cseq)
    assert.equal(12, d.local_cseq)
  end)

  it("puts a strict first route in the Request-URI and the remote target last", function()
    local d = uac { "Record-Route: <sip:p1.example.com;lr>", "Record-Route: <sip:strict.example.com>" }
    local r = assert(d:build("BYE"))
    assert.equal("sip:strict.example.com", r.uri)
    assert.same({ "<sip:p1.example.com;lr>", "<sip:bob@192.0.2.2:5070>" }, r:headers("Route"))
  end)

  it("gives the ACK the INVITE's CSeq number, and a re-INVITE's ACK its own", function()
    local d = uac()
    local ack = assert(d:build("ACK"))
    assert.equal(10, ack.cseq)
    assert.equal("ACK", ack.cseq_method)
    assert.equal(10, d.local_cseq)
    assert.equal(11, d:build("INVITE", nil, "v=0\r\n", "application/sdp").cseq)
    assert.equal(11, d:build("ACK").cseq)
    assert.equal(7, d:build("ACK", nil, nil, nil, 7).cseq)
  end)

  it("keeps the local CSeq at least that of a request re-sent with a higher one", function()
    local d = uac()
    local re = assert(d:build("INVITE"))
    assert.equal(11, re.cseq)
    re:set_header("CSeq", "12 INVITE")   -- re-sent with credentials (§22.2)
    assert(d:sent(re))
    assert.equal(12, d.local_cseq)
    assert.equal(12, d:build("ACK").cseq)
    assert.equal(13, d:build("BYE").cseq)
    assert(d:sent(invite { method = "INFO", cseq = 5 }))
    assert.equal(13, d.local_cseq)
  end)

  it("carries extra headers and a body", function()
    local r = assert(uac():build("INFO", "X-Test: 1\r\n", "hello", "text/plain"))
    assert.equal("1", r:header("X-Test"))
    assert.equal("hello", r.body)
    assert.equal("text/plain", r:header("Content-Type"))
  end)

  it("refuses a method that is not a token", function()
    local r, err = uac():build("BY E")
    assert.is_nil(r)
    assert.matches("token", err)
  end)

  it("takes a new remote target from the 2xx to a re-INVITE", function()
    local d = uac()
    local re = d:build("INVITE")
    assert(d:update(response(re, 200, { contact = "sip:bob@192.0.2.77" })))
    assert.equal("sip:bob@192.0.2.77", d.remote_target)
    assert(d:update(response(d:build("INFO"), 200, { contact = "sip:bob@192.0.2.88" })))
    assert.equal("sip:bob@192.0.2.77", d.remote_target)
  end)
end)

describe("requests that arrive in a dialog (RFC 3261 §12.2.2)", function()
  local function uas()
    return assert(core.dialog_uas(invite(), "b1", nil, 100))
  end

  it("refuses a lower CSeq with 500 and takes a higher one", function()
    local d = uas()
    assert.is_true(d:check_request(invite { method = "INFO", cseq = 11, to_tag = "b1" }))
    assert.equal(11, d.remote_cseq)
    local ok, code, reason = d:check_request(invite { method = "INFO", cseq = 9, to_tag = "b1" })
    assert.is_false(ok)
    assert.equal(500, code)
    assert.equal("CSeq out of order", reason)
    assert.equal(11, d.remote_cseq)
  end)

  it("lets an ACK through with the INVITE's CSeq", function()
    local d = uas()
    assert.is_true(d:check_request(invite { method = "INFO", cseq = 12, to_tag = "b1" }))
    assert.is_true(d:check_request(invite { method = "ACK", cseq = 10, to_tag = "b1" }))
  end)

  it("takes a first remote CSeq when it had none (UAC)", function()
    local req = invite()
    local d = assert(core.dialog_uac(req, response(req, 200)))
    assert.is_true(d:check_request(invite { method = "BYE", cseq = 1, to_tag = "b1" }))
    assert.equal(1, d.remote_cseq)
  end)

  it("refreshes the remote target on a re-INVITE, not on INFO", function()
    local d = uas()
    assert.is_true(d:check_request(invite { cseq = 11, to_tag = "b1", contact = "sip:alice@192.0.2.50" }))
    assert.equal("sip:alice@192.0.2.50", d.remote_target)
    assert.is_true(d:check_request(invite { method = "INFO", cseq = 12, to_tag = "b1",
      contact = "sip:alice@192.0.2.60" }))
    assert.equal("sip:alice@192.0.2.50", d.remote_target)
  end)

  it("reads as terminated after terminate()", function()
    local d = uas()
    d:terminate()
    assert.equal("terminated", d.state)
    assert.matches("^sip.dialog uas", tostring(d))
  end)
end)

-- Calls (lua/sip/dialog.lua) ----------------------------------------------------------------

local SDP = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40000,
  codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })
local T1 = 20   -- ms: short timers, so 64*T1 (Timer H, Timer B) is 1.28 s

local function endpoint()
  return assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = T1 })
end

local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, 5)
end

local function run_for(seconds, poll)
  helper.run_for(seconds, poll, 5)
end

local function is(method)
  return function(m) return m.method == method end
end

-- A raw UDP peer (spec/helper.lua) that can answer what it receives.
local function peer()
  local p = helper.udp_peer()
  p.contact = "<sip:peer@127.0.0.1:" .. p.port .. ">"
  -- a response to a received item, with our To tag, Contact and extra headers when given
  function p.reply(item, code, tag, headers)
    local res = item.msg:response(code, nil, tag)
    if tag then
      res:add_header("Contact", p.contact)
    end
    for _, h in ipairs(headers or {}) do
      res:add_header(h[1], h[2])
    end
    assert(p.sock:sendto(tostring(res), item.ip, item.port))
    return res
  end
  return p
end

describe("the callee's call (UAS, §12.1.1)", function()
  local a, b
  before_each(function()
    a, b = endpoint(), endpoint()
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("hangs up with call:bye() (§15.1.1), and the caller learns it", function()
    local bye_res, ended
    b:on("INVITE", function(req)
      local call = assert(req:answer { sdp = SDP })
      bye_res = call:bye()
    end)
    sched.spawn(function()
      local call = assert(a:call(b:uri("bob"), { sdp = SDP }))
      ended = call:wait()
    end)
    assert.truthy(run_until(function() return bye_res and ended end, 3))
    assert.equal(200, bye_res.status)
    assert.equal("remote bye", ended)
  end)

  it("keeps the INVITE and its ACK as data, not in place of methods", function()
    local call
    b:on("INVITE", function(req)
      call = assert(req:answer { sdp = SDP })
    end)
    local caller
    sched.spawn(function() caller = assert(a:call(b:uri("bob"), { sdp = SDP })) end)
    assert.truthy(run_until(function() return call and caller end, 3))
    assert.equal("INVITE", call.initial_invite.method)
    assert.equal("ACK", call.received_ack.method)
    assert.is_function(call.request)
    assert.is_function(call.ack)
    assert.has_error(function() call.bye = true end)
    local info
    sched.spawn(function() info = call:request("INFO") end)
    assert.truthy(run_until(function() return info end, 3))
    assert.equal(200, info.status)
    -- after the caller's BYE, call:bye() says the dialog is over
    sched.spawn(function() caller:bye() end)
    assert.truthy(run_until(function() return call.state == "terminated" end, 3))
    assert.equal("BYE", call.received_bye.method)
    local res, err
    sched.spawn(function() res, err = call:bye() end)
    assert.truthy(run_until(function() return err end, 1))
    assert.is_nil(res)
    assert.equal("dialog terminated", err)
  end)
end)

describe("a 2xx never ACKed (§13.3.1.4)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  it("ends the session with a BYE after 64*T1, and answer() says why", function()
    local done, call, err
    ep:on("INVITE", function(req)
      call, err = req:answer { sdp = SDP }
      done = true
    end)
    local inv = assert(sip.request { method = "INVITE", uri = ep:uri("svc"), from = p.uri,
      contact = p.contact, body = SDP, content_type = "application/sdp",
      via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. sip.random.branch() })
    p.send(inv, ep)
    assert.truthy(run_until(function() return p.count(is("BYE")) >= 1 end, 3, p.poll))
    local bye = p.find(is("BYE"))[1]
    local ok = p.find(function(m) return m.status == 200 end)[1].msg
    -- to the INVITE's Contact, in its dialog (§12.2.1.1)
    assert.equal(p.uri, bye.msg.uri)
    assert.equal(inv.call_id, bye.msg.call_id)
    assert.equal(ok.to_tag, bye.msg.from_tag)
    assert.equal(inv.from_tag, bye.msg.to_tag)
    assert.truthy(bye.at - p.inbox[1].at >= 64 * T1 * 0.9)
    p.reply(bye, 200)
    assert.truthy(run_until(function() return done end, 1, p.poll))
    assert.is_nil(call)
    assert.equal("no ACK", err)
    run_for(0.1, p.poll)
    assert.equal(1, p.count(is("BYE")))
  end)
end)

-- A call from ep to the raw peer p, answered 200 by p with To tag "t1" and ACKed.
local function call_peer(ep, p, opts)
  local pending = ep:dial(p.uri, opts or { sdp = SDP })
  assert(run_until(function() return p.count(is("INVITE")) >= 1 end, 2, p.poll))
  local inv = p.find(is("INVITE"))[1]
  p.reply(inv, 200, "t1")
  assert(run_until(function() return p.count(is("ACK")) >= 1 end, 2, p.poll))
  return assert(pending.call), inv
end

describe("requests of a call", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  it("go on from the CSeq of a request re-sent with credentials (§12.2.1.1, §22.2)", function()
    local call = call_peer(ep, p, { sdp = SDP, user = "alice", password = "secret" })
    local info
    sched.spawn(function() info = call:request("INFO") end)
    assert.truthy(run_until(function() return p.count(is("INFO")) >= 1 end, 2, p.poll))
    p.reply(p.find(is("INFO"))[1], 401, nil,
      { { "WWW-Authenticate", 'Digest realm="x", nonce="abc", qop="auth"' } })
    assert.truthy(run_until(function() return p.count(is("INFO")) >= 2 end, 2, p.poll))
    local first, retry = p.find(is("INFO"))[1].msg, p.find(is("INFO"))[2]
    assert.equal(first.cseq + 1, retry.msg.cseq)
    p.reply(retry, 200)
    assert.truthy(run_until(function() return info end, 2, p.poll))
    assert.equal(retry.msg.cseq, call.local_cseq)
    sched.spawn(function() call:bye() end)
    assert.truthy(run_until(function() return p.count(is("BYE")) >= 1 end, 2, p.poll))
    assert.equal(retry.msg.cseq + 1, p.find(is("BYE"))[1].msg.cseq)
  end)

  for _, code in ipairs { 481, 408 } do
    it("end the call when one gets a " .. code .. " (§12.2.1.2), and its waiters learn why", function()
      local call = call_peer(ep, p)
      local ended, info
      sched.spawn(function() ended = call:wait() end)
      sched.spawn(function() info = call:request("INFO") end)
      assert.truthy(run_until(function() return p.count(is("INFO")) >= 1 end, 2, p.poll))
      p.reply(p.find(is("INFO"))[1], code)
      assert.truthy(run_until(function() return info and ended end, 2, p.poll))
      assert.equal(code, info.status)
      assert.equal("terminated", call.state)
      assert.equal(code .. " to INFO", ended)
      assert.is_nil(ep.dialogs[call._key])
    end)
  end

  it("end the call when one is never answered (Timer F's 408, §8.1.3.1)", function()
    local call = call_peer(ep, p)
    local ended
    sched.spawn(function() ended = call:wait() end)
    sched.spawn(function() call:request("INFO") end)
    assert.truthy(run_until(function() return ended end, 3, p.poll))
    assert.equal("408 to INFO", ended)
  end)

  it("keep the call on other failures", function()
    local call = call_peer(ep, p)
    local info
    sched.spawn(function() info = call:request("INFO") end)
    assert.truthy(run_until(function() return p.count(is("INFO")) >= 1 end, 2, p.poll))
    p.reply(p.find(is("INFO"))[1], 486)
    assert.truthy(run_until(function() return info end, 2, p.poll))
    assert.equal("confirmed", call.state)
  end)
end)

describe("a 2xx retransmission after the call ended (§13.2.2.4)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  local function is_to(method, tag)
    return function(m) return m.method == method and m.to_tag == tag end
  end

  -- the call ended by our BYE; returns the INVITE as the peer got it
  local function ended_call()
    local call, inv = call_peer(ep, p)
    sched.spawn(function() call:bye() end)
    assert(run_until(function() return p.count(is("BYE")) >= 1 end, 2, p.poll))
    p.reply(p.find(is("BYE"))[1], 200)
    assert(run_until(function() return call.state == "terminated" end, 2, p.poll))
    return inv
  end

  local function ok_again(inv, tag)
    local res = inv.msg:response(200, nil, tag)
    res:add_header("Contact", p.contact)
    res:set_body(SDP, "application/sdp")
    p.send(res, ep)
  end

  it("gets the very same ACK again, and no new dialog or BYE", function()
    local inv = ended_call()
    ok_again(inv, "t1")   -- the peer missed our ACK
    assert.truthy(run_until(function() return p.count(is("ACK")) >= 2 end, 1, p.poll))
    run_for(0.1, p.poll)
    local acks = p.find(is("ACK"))
    assert.equal(2, #acks)
    assert.equal(acks[1].raw, acks[2].raw)
    assert.equal(inv.msg.cseq, acks[2].msg.cseq)
    assert.equal(1, p.count(is("BYE")))
    assert.is_nil(next(ep.dialogs))
  end)

  it("is still told from another branch's 2xx, which is ACKed and hung up", function()
    local inv = ended_call()
    ok_again(inv, "t2")   -- a fork answers late (§13.2.2.4)
    assert.truthy(run_until(function() return p.count(is_to("BYE", "t2")) >= 1 end, 1, p.poll))
    assert.equal(1, p.count(is_to("ACK", "t2")))
    assert.equal(1, p.count(is_to("BYE", "t1")))
  end)

  it("is forgotten 64*T1 after the call ended", function()
    local inv = ended_call()
    run_for(64 * T1 / 1000 + 0.2, p.poll)
    ok_again(inv, "t1")
    run_for(0.1, p.poll)
    assert.equal(1, p.count(is("ACK")))
    assert.equal(1, p.count(is("BYE")))
    assert.is_nil(ep._ended_acks and next(ep._ended_acks))
  end)
end)

-- A request from the raw peer p inside the call of call_peer (p is its UAS, tag "t1").
local function from_peer(ep, p, inv, method, cseq, body)
  return assert(sip.request { method = method, uri = ep:uri("luasip"),
    from = p.contact .. ";tag=t1", to = inv.msg:header("From"), call_id = inv.msg.call_id,
    cseq = cseq, contact = p.contact,
    via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. sip.random.branch(),
    body = body, content_type = body and "application/sdp" or nil })
end

local function final_to(cseq)
  return function(m) return m.status and m.status >= 200 and m.cseq == cseq end
end

describe("a re-INVITE that arrives (§13.3.1, §14.2)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  local OTHER = tostring(sip.sdp.offer { address = "127.0.0.1", port = 40100,
    codecs = { { pt = 8, name = "PCMA", rate = 8000 } } })

  it("is answered with the session this side last sent, same o= version (RFC 3264 §8)", function()
    local call, inv = call_peer(ep, p)
    p.send(from_peer(ep, p, inv, "INVITE", 5, OTHER), ep)
    assert.truthy(run_until(function() return p.count(final_to(5)) >= 1 end, 2, p.poll))
    local ok = p.find(final_to(5))[1].msg
    assert.equal(200, ok.status)
    assert.equal("application/sdp", ok.content_type)
    assert.equal(SDP, ok.body)
    assert.equal(OTHER, call.remote_sdp)
  end)

  it("gets 488 when this side never sent a session description", function()
    local call, inv = call_peer(ep, p, { sdp = SDP })
    call.local_sdp = nil
    p.send(from_peer(ep, p, inv, "INVITE", 5, OTHER), ep)
    assert.truthy(run_until(function() return p.count(final_to(5)) >= 1 end, 2, p.poll))
    assert.equal(488, p.find(final_to(5))[1].msg.status)
  end)

  it("goes to call:on_reinvite(fn), whose answer takes the next o= version", function()
    local call, inv = call_peer(ep, p)
    local moved = SDP:gsub("40000", "40002")
    call:on_reinvite(function(req, c)
      assert.equal(call, c)
      assert.equal(OTHER, req.body)
      req:answer { sdp = moved }
    end)
    p.send(from_peer(ep, p, inv, "INVITE", 5, OTHER), ep)
    assert.truthy(run_until(function() return p.count(final_to(5)) >= 1 end, 2, p.poll))
    local ok = p.find(final_to(5))[1].msg
    assert.equal(200, ok.status)
    local before = sip.sdp.parse(SDP).origin.sess_version
    local after = sip.sdp.parse(ok.body).origin.sess_version
    assert.equal(tonumber(before) + 1, tonumber(after))
    assert.equal(ok.body, call.local_sdp)
  end)
end)

describe("re-INVITEs that cross (glare, §14.1/§14.2)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  -- a call whose own re-INVITE the peer holds unanswered (a 100 only)
  local function reinviting()
    local call, inv = call_peer(ep, p)
    local res
    sched.spawn(function() res = call:reinvite(SDP) end)
    assert(run_until(function() return p.count(is("INVITE")) >= 2 end, 2, p.poll))
    p.reply(p.find(is("INVITE"))[2], 100)
    run_for(0.05, p.poll)
    return call, inv, function() return res end
  end

  it("answers the peer's re-INVITE 491 while ours is pending", function()
    local _, inv = reinviting()
    p.send(from_peer(ep, p, inv, "INVITE", 5, SDP), ep)
    assert.truthy(run_until(function() return p.count(final_to(5)) >= 1 end, 2, p.poll))
    assert.equal(491, p.find(final_to(5))[1].msg.status)
  end)

  it("refuses a second call:reinvite() while one is pending, and takes one after", function()
    local call, _, result = reinviting()
    local res, err = call:reinvite(SDP)
    assert.is_nil(res)
    assert.equal("pending", err)
    run_for(0.05, p.poll)
    assert.equal(2, p.count(is("INVITE")))
    p.reply(p.find(is("INVITE"))[2], 200, "t1")
    assert.truthy(run_until(function() return result() end, 2, p.poll))
    sched.spawn(function() call:reinvite(SDP) end)
    assert.truthy(run_until(function() return p.count(is("INVITE")) >= 3 end, 2, p.poll))
  end)
end)

describe("an INVITE without an offer (§13.2.1)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  -- ep dials p with opts (no sdp); p answers 200 with an offer; returns the pending call
  local function offered(opts)
    local pending = ep:dial(p.uri, opts)
    assert(run_until(function() return p.count(is("INVITE")) >= 1 end, 2, p.poll))
    local inv = p.find(is("INVITE"))[1]
    assert.equal("", inv.msg.body)
    local res = inv.msg:response(200, nil, "t1")
    res:add_header("Contact", p.contact)
    res:set_body(SDP, "application/sdp")
    p.send(res, ep)
    assert(run_until(function() return p.count(is("ACK")) >= 1 end, 2, p.poll))
    return pending
  end

  it("puts on_offer's answer in the ACK", function()
    local answer = sip.sdp.answer(SDP, { address = "127.0.0.1", port = 40200,
      codecs = { { pt = 0, name = "PCMU", rate = 8000 } } })
    local seen
    local pending = offered { on_offer = function(o) seen = o; return answer end }
    local ack = p.find(is("ACK"))[1].msg
    assert.equal(SDP, seen)
    assert.equal(tostring(answer), ack.body)
    assert.equal("application/sdp", ack.content_type)
    assert.equal(tostring(answer), pending.call.local_sdp)
    assert.equal(SDP, pending.call.remote_sdp)
  end)

  it("puts answer_sdp in the ACK", function()
    offered { answer_sdp = SDP }
    assert.equal(SDP, p.find(is("ACK"))[1].msg.body)
  end)

  it("with no answer, ACKs bare and hangs up at once", function()
    local pending = offered {}
    assert.equal("", p.find(is("ACK"))[1].msg.body)
    assert.truthy(run_until(function() return p.count(is("BYE")) >= 1 end, 2, p.poll))
    p.reply(p.find(is("BYE"))[1], 200)
    assert.truthy(run_until(function() return pending.state ~= "calling" end, 1, p.poll))
    assert.is_nil(pending.call)
    assert.equal(200, pending.response.status)
  end)
end)

describe("a BYE in the callee's early dialog (§15.1.2)", function()
  local ep, p
  before_each(function()
    ep, p = endpoint(), peer()
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  local function resp(code, method)
    return function(m) return m.status == code and m.cseq_method == method end
  end

  it("gets 200, and the INVITE 487; the handler learns it as of a CANCEL", function()
    local invite_req, cancelled, answered, err
    ep:on("INVITE", function(req)
      invite_req = req
      req:on_cancel(function() cancelled = true end)
      req:reply(180)
      while not req.replied_final do sip.sleep(0.02) end
      answered, err = req:answer { sdp = SDP }
    end)
    local inv = assert(sip.request { method = "INVITE", uri = ep:uri("svc"), from = p.uri,
      contact = p.uri, cseq = 1, body = SDP, content_type = "application/sdp",
      via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. sip.random.branch() })
    p.send(inv, ep)
    assert.truthy(run_until(function() return p.count(resp(180, "INVITE")) >= 1 end, 2, p.poll))
    local ring = p.find(resp(180, "INVITE"))[1].msg
    p.send(assert(sip.request { method = "BYE", uri = ep:uri("svc"),
      from = inv:header("From"), to = ring:header("To"), call_id = inv.call_id, cseq = 2,
      via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. sip.random.branch() }), ep)
    assert.truthy(run_until(function() return p.count(resp(487, "INVITE")) >= 1 end, 2, p.poll))
    assert.truthy(run_until(function() return cancelled and err end, 1, p.poll))
    assert.equal(1, p.count(resp(200, "BYE")))
    assert.equal(0, p.count(resp(481, "BYE")))
    assert.is_true(invite_req.cancelled)
    assert.is_nil(answered)
    assert.is_nil(next(ep.early_invites))
    assert.is_nil(next(ep.dialogs))
  end)
end)
