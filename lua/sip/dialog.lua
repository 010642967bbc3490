-- sip.dialog: dialogs of RFC 3261 §12 (route set, remote target, CSeq) and the calls built
-- on them: ep:call() for the UAC, req:answer() for the UAS, call:bye() and friends.
local core = require "sip.core"
local sched = require "sip.sched"
local random = require "sip.random"
local Endpoint = require("sip.endpoint").Endpoint

local msg_methods = core.msg_mt.methods

local Dialog = {}
Dialog.__index = Dialog

local function key(call_id, local_tag, remote_tag)
  return call_id .. "|" .. (local_tag or "") .. "|" .. (remote_tag or "")
end

local function uri_of(addr)
  return addr and addr.uri
end

-- §12.1.2 (UAC): route set = Record-Route of the response, reversed; remote target = its
-- Contact. §12.1.1 (UAS): Record-Route of the request in order; target = its Contact.
local function new_dialog(ep, t)
  local d = setmetatable(t, Dialog)
  d.ep = ep
  d.state = d.state or "confirmed"
  d.waiters = {}
  ep.dialogs[key(d.call_id, d.local_tag, d.remote_tag)] = d
  return d
end

local function route_set(m, reverse)
  local rr = m:headers("Record-Route")
  if reverse then
    local r = {}
    for i = #rr, 1, -1 do
      r[#r + 1] = rr[i]
    end
    return r
  end
  return rr
end

local function contact_uri(m)
  local c = m:addr("Contact")
  return uri_of(c)
end

function Dialog:_build(method, opts)
  opts = opts or {}
  local sip = require "sip"
  local cseq
  if method == "ACK" then
    cseq = opts.cseq
  else
    self.local_cseq = self.local_cseq + 1
    cseq = self.local_cseq
  end
  local headers = {}
  for i, r in ipairs(self.route) do
    headers[i] = { "Route", r }
  end
  for k, v in pairs(opts.headers or {}) do
    if type(k) == "number" then
      headers[#headers + 1] = v
    else
      headers[#headers + 1] = { k, v }
    end
  end
  local ruri = self.remote_target
  -- §12.2.1.1: a strict first route takes the Request-URI's place
  local first = self.route[1] and sip.addr.parse(self.route[1])
  if first and not first.uri:find(";lr", 1, true) then
    ruri = first.uri
    headers[1] = nil
    local rest = {}
    for _, h in pairs(headers) do
      rest[#rest + 1] = h
    end
    rest[#rest + 1] = { "Route", "<" .. self.remote_target .. ">" }
    headers = rest
  end
  if self.contact then
    headers[#headers + 1] = { "Contact", self.contact }
  end
  return assert(sip.request {
    method = method, uri = ruri, from = self.local_uri, to = self.remote_uri,
    call_id = self.call_id, cseq = cseq, headers = headers, body = opts.body,
    content_type = opts.content_type,
  })
end

-- The first hop: the first loose route, else the Request-URI.
local function next_hop(req)
  local r = req:addr("Route")
  if r and r.uri:find(";lr", 1, true) then
    return r.uri
  end
  return req.uri
end

--- dialog:request(method [, opts]) -> final response   (in-dialog request, new CSeq)
function Dialog:request(method, opts)
  opts = opts or {}
  local req = self:_build(method, opts)
  return self.ep:request(req, { target = next_hop(req), user = self.user,
    password = self.password })
end

--- dialog:ack(invite_cseq [, opts]): the ACK for a 2xx (§13.2.2.4), outside transactions
function Dialog:ack(cseq, opts)
  opts = opts or {}
  opts.cseq = cseq
  local ack = self:_build("ACK", opts)
  self.last_ack = ack
  return self.ep:send(ack, next_hop(ack))
end

--- call:bye() -> final response; the dialog ends whatever it is
function Dialog:bye()
  if self.state == "terminated" then
    return nil, "dialog terminated"
  end
  local res, err = self:request("BYE")
  self:_terminate("bye")
  return res, err
end

--- call:reinvite(sdp) -> final response (ACKed when 2xx)
function Dialog:reinvite(sdp)
  local res, err = self:request("INVITE", { body = sdp, content_type = "application/sdp" })
  if res and res.status >= 200 and res.status < 300 then
    self:ack(res.cseq)
    self.remote_sdp = res.body
  end
  return res, err
end

--- call:wait() -> why the dialog ended ("bye", "remote bye", ...); yields until then
function Dialog:wait()
  if self.state == "terminated" then
    return self.reason
  end
  return sched.await(function(wake)
    self.waiters[#self.waiters + 1] = wake
  end)
end

function Dialog:_terminate(reason)
  if self.state == "terminated" then
    return
  end
  self.state = "terminated"
  self.reason = reason
  self.ep.dialogs[key(self.call_id, self.local_tag, self.remote_tag)] = nil
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do
    w(reason)
  end
end

-- UAC ---------------------------------------------------------------------------------

--- ep:call(uri, { sdp=, headers=, from=, user=, password=, on_progress=, timeout= })
---   -> call | nil, final response (or nil, err)
function Endpoint:call(to, opts)
  opts = opts or {}
  local sip = require "sip"
  local contact = "<" .. self:uri(opts.user_part or "luasip") .. ">"
  local req = assert(sip.request {
    method = "INVITE", uri = to, from = opts.from or self:uri(opts.user_part or "luasip"),
    to = opts.to or to, headers = opts.headers, contact = contact,
    body = opts.sdp, content_type = opts.sdp and "application/sdp" or nil,
  })
  local res, err = self:request(req, { user = opts.user, password = opts.password,
    on_progress = opts.on_progress, timeout = opts.timeout, target = opts.target,
    on_txn = opts.on_txn })
  if not res then
    return nil, err
  end
  if res.status >= 300 then
    return nil, res
  end
  local d = new_dialog(self, {
    call_id = res.call_id, local_tag = res.from_tag, remote_tag = res.to_tag,
    local_uri = req:header("From"), remote_uri = res:header("To"),
    remote_target = contact_uri(res) or req.uri, route = route_set(res, true),
    local_cseq = res.cseq, contact = contact, role = "uac", invite_cseq = res.cseq,
    remote_sdp = res.body, response = res, user = opts.user, password = opts.password,
  })
  d:ack(res.cseq)
  return d, res
end

-- A 2xx retransmission or a 2xx from another fork branch: ACK it again (§13.2.2.4).
local function on_stray_2xx(ep, res)
  local d = ep.dialogs[key(res.call_id, res.from_tag, res.to_tag)]
  if d and d.last_ack then
    ep:send(d.last_ack, next_hop(d.last_ack))
    return true
  end
  return false
end

-- UAS ---------------------------------------------------------------------------------

--- req:answer(code, { sdp=, headers=, contact= }) -> call | nil, err
-- Sends the 2xx with a Contact, then yields until its ACK (§13.3.1.4 retransmits it).
function msg_methods.answer(req, code, opts)
  if type(code) == "table" then
    code, opts = 200, code
  end
  code = code or 200
  opts = opts or {}
  local ep = req._ep
  local contact = opts.contact or ("<" .. ep:uri("luasip", req.source:match("^(%a+)")) .. ">")
  local headers = { { "Contact", contact } }
  for k, v in pairs(opts.headers or {}) do
    if type(k) == "number" then
      headers[#headers + 1] = v
    else
      headers[#headers + 1] = { k, v }
    end
  end
  local ok, err = req:reply(code, nil, { headers = headers, body = opts.sdp,
    content_type = opts.sdp and "application/sdp" or nil })
  if not ok then
    return nil, err
  end
  local d = new_dialog(ep, {
    call_id = req.call_id, local_tag = req._tag, remote_tag = req.from_tag,
    local_uri = req:header("To") .. ";tag=" .. req._tag, remote_uri = req:header("From"),
    remote_target = contact_uri(req) or req:addr("From").uri, route = route_set(req, false),
    local_cseq = math.random(1, 10000), remote_cseq = req.cseq, contact = contact,
    role = "uas", remote_sdp = req.body, request = req,
  })
  local ack = req:wait_ack()
  if not ack then
    -- §13.3.1.4: no ACK within 64*T1: the UAS ends the session with BYE
    d:bye()
    return nil, "no ACK"
  end
  d.state = "confirmed"
  return d
end

-- In-dialog requests (§12.2.2) -------------------------------------------------------------

-- Called by the endpoint for a request with a To tag; returns true when taken.
local function in_dialog(ep, req)
  local d = ep.dialogs[key(req.call_id, req.to_tag, req.from_tag)]
  if not d then
    return false
  end
  req.dialog = d
  if d.remote_cseq and req.method ~= "ACK" and req.method ~= "CANCEL" and req.cseq < d.remote_cseq then
    req:reply(500, "CSeq out of order")
    return true
  end
  d.remote_cseq = req.cseq
  if req.method == "BYE" then
    req:reply(200)
    d:_terminate("remote bye")
    return true
  end
  local fn = ep.handlers[req.method]
  if fn then
    return false   -- the method handler runs with req.dialog set
  end
  if req.method == "INFO" or req.method == "UPDATE" or req.method == "MESSAGE" or
     req.method == "NOTIFY" then
    req:reply(200)
  elseif req.method == "INVITE" then
    -- re-INVITE: accept the new offer as is (a handler may do better)
    d.remote_sdp = req.body
    req:reply(200, nil, { headers = { Contact = d.contact } })
  elseif req.method ~= "ACK" then
    req:reply(405)
  end
  return true
end

return {
  Dialog = Dialog,
  in_dialog = in_dialog,
  on_stray_2xx = on_stray_2xx,
  key = key,
  tag = random.tag,
}
