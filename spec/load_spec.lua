-- spec/load_spec.lua: an endpoint behind its load. Requests that queued in the UDP socket
-- longer than overload_ms (the kernel's arrival stamp) are shed with 503 + Retry-After, but
-- never a retransmission, an in-dialog request or a CANCEL. The spec holds the loop still
-- while it sends, so the queue ages as if the process were busy.
local sip = require "sip"
local helper = require "helper"
local socket = require "socket"

local function request(method, p, ep, opts)
  opts = opts or {}
  local to = opts.to_tag and ("<" .. ep:uri("svc") .. ">;tag=" .. opts.to_tag) or nil
  return assert(sip.request {
    method = method, uri = ep:uri("svc"), from = "<sip:peer@127.0.0.1:" .. p.port .. ">",
    to = to, call_id = opts.call_id,
    via = "SIP/2.0/UDP 127.0.0.1:" .. p.port .. ";branch=" .. (opts.branch or sip.random.branch()),
  })
end

local function status_is(code)
  return function(m) return m.status == code end
end

describe("overload", function()
  local ep, p, calls
  before_each(function()
    ep = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" }, t1 = 50, overload_ms = 40 })
    p = helper.udp_peer()
    calls = 0
    ep:on("MESSAGE", function(req) calls = calls + 1; req:reply(200) end)
    ep:on("INFO", function(req) calls = calls + 1; req:reply(200) end)
  end)
  after_each(function()
    ep:close()
    p.close()
  end)

  it("serves requests that did not wait", function()
    for _ = 1, 5 do
      p.send(request("MESSAGE", p, ep), ep)
    end
    helper.run_until(function() return #p.inbox == 5 end, 2, p.poll)
    assert.equal(5, p.count(status_is(200)))
    assert.equal(0, ep:stats().shed)
  end)

  it("sheds new requests that queued past overload_ms with 503 and Retry-After", function()
    for _ = 1, 5 do
      p.send(request("MESSAGE", p, ep), ep)
    end
    socket.sleep(0.1)   -- the loop is busy elsewhere: the datagrams age in the queue
    helper.run_until(function() return #p.inbox == 5 end, 2, p.poll)
    assert.equal(5, p.count(status_is(503)))
    assert.matches("\r\nRetry%-After: 1\r\n", p.inbox[1].raw)
    assert.equal(0, calls)   -- no transaction, no Lua
    assert.equal(5, ep:stats().shed)
    assert.equal(0, ep:stats().server_transactions + ep:stats().waiting_transactions)
    -- once the queue is short again, the same kind of request is served
    p.send(request("MESSAGE", p, ep), ep)
    helper.run_until(function() return #p.inbox == 6 end, 2, p.poll)
    assert.equal(200, p.inbox[6].msg.status)
  end)

  it("never sheds a retransmission nor an in-dialog request", function()
    local m = request("MESSAGE", p, ep)
    p.send(m, ep)
    helper.run_until(function() return #p.inbox == 1 end, 2, p.poll)
    assert.equal(200, p.inbox[1].msg.status)
    p.send(m, ep)                                                  -- a retransmission
    p.send(request("INFO", p, ep, { to_tag = "dlg1", call_id = "c1@x" }), ep)  -- in a dialog
    p.send(request("MESSAGE", p, ep), ep)                          -- new: shed
    socket.sleep(0.1)
    helper.run_until(function() return #p.inbox == 4 end, 2, p.poll)
    assert.equal(p.inbox[1].raw, p.inbox[2].raw)   -- the same 200 again, from the waiting table
    assert.equal(3, p.count(status_is(200)))
    assert.equal(1, p.count(status_is(503)))
    assert.equal(2, calls)
    assert.equal(1, ep:stats().shed)
  end)
end)
