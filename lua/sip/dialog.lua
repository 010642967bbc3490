--- sip.dialog: the calls built on dialogs of RFC 3261 §12: ep:call() for the UAC,
-- req:answer() for the UAS, call:bye() and friends. The dialog state itself (tags, route set,
-- remote target, CSeq) and its rules live in C (csrc/dialog.c, the sip.dialog userdata);
-- a Dialog here wraps one as `_c` and adds the coroutine side: waiters, BYE, re-INVITE.
local core = require "sip.core"
local sched = require "sip.sched"
local random = require "sip.random"
local sdp_lib = require "sip.sdp"
local Endpoint = require("sip.endpoint").Endpoint

local msg_methods = core.msg_mt.methods

-- Dialog fields (call_id, local_tag, remote_tag, local_uri, remote_uri, remote_target,
-- route, local_cseq, remote_cseq, contact, secure, state, role) are read from the C object;
-- the Lua ones (ep, waiters, remote_sdp, local_sdp, response, initial_invite, received_ack,
-- received_bye, last_ack, ...) sit in the table. local_sdp is the session description this
-- side last sent in the dialog (offer or answer), remote_sdp the peer's. Messages are named as nouns so that none
-- takes a method's name: a field in the table would hide the method of the same name.
local Dialog = {}
function Dialog.__index(self, k)
  local m = Dialog[k]
  if m ~= nil then
    return m
  end
  local c = rawget(self, "_c")
  if c then
    return c[k]
  end
end

-- A field named like a method would hide it from then on (call:bye() calling a message):
-- a programmer error, so it raises where it is made.
function Dialog.__newindex(self, k, v)
  if Dialog[k] ~= nil then
    error("dialog field '" .. tostring(k) .. "' would hide the method of that name", 2)
  end
  rawset(self, k, v)
end

-- "call-id|local tag|remote tag", as C makes it for a dialog (d:key())
local function key(call_id, local_tag, remote_tag)
  return core.dialog_key(call_id, local_tag, remote_tag)
end

-- A Dialog over the C dialog c, known to the endpoint by its key.
local function new_dialog(ep, c, t)
  local d = setmetatable(t, Dialog)
  d._c = c
  d._key = c:key()
  d.ep = ep
  d.waiters = {}
  ep.dialogs[d._key] = d
  ep:_note_dialogs()
  return d
end

-- opts.headers ({ {name, value}, ... } and/or { Name = value }) as header lines
local function header_lines(headers)
  if not headers then
    return nil
  end
  local lines = {}
  require("sip").add_header_lines(lines, headers)
  if #lines == 0 then
    return nil
  end
  return table.concat(lines, "\r\n") .. "\r\n"
end

-- §12.2.1.1 in C: Request-URI, Route (strict routers too), CSeq (ACK: opts.cseq or the
-- INVITE's), Contact.
function Dialog:_build(method, opts)
  opts = opts or {}
  local body = opts.body
  if body ~= nil then
    body = tostring(body)
  end
  return assert(self._c:build(method, header_lines(opts.headers), body, opts.content_type,
    opts.cseq))
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
  local res, err = self.ep:request(req, { target = next_hop(req), user = self.user,
    password = self.password })
  -- a challenge answered re-sends req with CSeq + 1 (§22.2); the next request goes above it
  self._c:sent(req)
  if type(res) == "userdata" and self.state ~= "terminated" then
    if res.status >= 200 and res.status < 300 then
      self._c:update(res)   -- a 2xx to a re-INVITE or UPDATE refreshes the remote target
    elseif (res.status == 481 or res.status == 408) and method ~= "BYE" then
      -- §12.2.1.2 (§14.1 for a re-INVITE): the peer has no such dialog, or cannot be
      -- reached (a transaction timeout comes as 408, §8.1.3.1): the dialog is over. A BYE
      -- ends it anyway, under the reason of the one who hung up.
      self:_terminate(res.status .. " to " .. method)
    end
  end
  return res, err
end

--- dialog:ack(invite_cseq [, opts]): the ACK for a 2xx (§13.2.2.4), outside transactions
function Dialog:ack(cseq, opts)
  opts = opts or {}
  opts.cseq = cseq
  local ack = self:_build("ACK", opts)
  self.last_ack = ack
  return self.ep:send(ack, next_hop(ack))
end

-- BYE, then the dialog ends whatever the answer (§15.1.1), waiters told `reason`.
function Dialog:_hang_up(reason)
  if self.state == "terminated" then
    return nil, "dialog terminated"
  end
  local res, err = self:request("BYE")
  self:_terminate(reason)
  return res, err
end

--- call:bye() -> final response; the dialog ends whatever it is
function Dialog:bye()
  return self:_hang_up("bye")
end

--- call:reinvite(sdp) -> final response (ACKed when 2xx) | nil, "pending"
-- One re-INVITE at a time (§14.1): while ours waits for its final response, another gives
-- nil, "pending", and a re-INVITE from the peer gets 491. After a 491 to ours, trying again
-- is the caller's: §14.1 wants a random wait first (2.1-4 s for the Call-ID's owner, else
-- 0-2 s). sdp's o= version is set by RFC 3264 §8 against local_sdp: the same when nothing else
-- changed, one higher when anything did. After a 2xx, local_sdp and remote_sdp are the new
-- offer and answer; after a failure the session stays as it was (§14.1).
function Dialog:reinvite(sdp)
  if rawget(self, "_reinviting") then
    return nil, "pending"
  end
  if sdp ~= nil and self.local_sdp then
    sdp = sdp_lib.next_version(self.local_sdp, sdp)
  end
  rawset(self, "_reinviting", true)
  local res, err = self:request("INVITE", { body = sdp, content_type = "application/sdp" })
  rawset(self, "_reinviting", nil)
  if res and res.status >= 200 and res.status < 300 then
    self:ack(res.cseq)
    self.remote_sdp = res.body
    if sdp ~= nil then
      self.local_sdp = tostring(sdp)
    end
  end
  return res, err
end

--- call:on_reinvite(fn): fn(req, call) decides each re-INVITE of this call, in its own
-- coroutine, and answers it: req:answer{ sdp = ... } (a 2xx in the dialog, local_sdp kept)
-- or req:reply(488) and the like. Without one, an ep:on("INVITE") handler gets re-INVITEs
-- (req.dialog set); without either, the default answers a re-INVITE with local_sdp, the
-- session description this side last sent (same o= version: nothing changed, RFC 3264 §8),
-- or 488 when this side never sent one (§13.3.1, §14.2). fn = nil restores the default.
function Dialog:on_reinvite(fn)
  assert(fn == nil or type(fn) == "function", "call:on_reinvite: function expected")
  rawset(self, "_on_reinvite", fn)
  return self
end

--- call:wait() -> why the dialog ended: "bye", "remote bye", "no ACK", or "481 to INFO"
-- (a 481 or 408 to one of our requests, §12.2.1.2); yields until then
function Dialog:wait()
  if self.state == "terminated" then
    return self.reason
  end
  return sched.await(function(wake)
    self.waiters[#self.waiters + 1] = wake
  end)
end

-- "call-id|local tag|remote tag|cseq": a 2xx to our INVITE of that CSeq in that dialog
local function ack_key(dialog_key, cseq)
  return dialog_key .. "|" .. cseq
end

-- The peer retransmits its 2xx until our ACK reaches it, up to 64*T1 (§13.3.1.4); one may
-- come after the dialog ended (our BYE raced the lost ACK). Keep the ACK that long, so the
-- 2xx gets it again and is not taken for a 2xx from another fork (§13.2.2.4).
local function remember_ack(ep, dialog_key, ack)
  local k = ack_key(dialog_key, ack.cseq)
  ep._ended_acks = ep._ended_acks or {}
  ep._ended_acks[k] = ack
  sched.loop:timer(64 * ep.t1, function()
    if ep._ended_acks[k] == ack then
      ep._ended_acks[k] = nil
    end
  end)
end

function Dialog:_terminate(reason)
  if self.state == "terminated" then
    return
  end
  self._c:terminate()
  self.reason = reason
  if self.last_ack then
    remember_ack(self.ep, self._key, self.last_ack)
  end
  self.ep.dialogs[self._key] = nil
  self.ep:_note_dialogs()
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do
    w(reason)
  end
end

-- UAC ---------------------------------------------------------------------------------

-- A pending outgoing call: the INVITE client side until its final response. Holds the early
-- dialogs (one per To tag of a 1xx, §12.1.2 / §13.2.2.4) and can be cancelled (§9.1).
local Pending = {}
Pending.__index = Pending

-- Keep knowing our INVITE this long after its final response, so a 2xx from another fork
-- branch is still recognised (Timer M of RFC 6026 is 64*T1 as well).
local function fork_window_ms(ep)
  return 64 * ep.t1
end

local function invite_key(call_id, from_tag)
  return call_id .. "|" .. (from_tag or "")
end

-- §12.1.2: the UAC side of a dialog from our INVITE and a 2xx: the early dialog of that
-- To tag confirmed (§13.2.2.4), or a new one.
local function uac_dialog(ep, p, res)
  local early = p.early[res.to_tag]
  local c = early and early.dialog
  if not (c and c.state == "early" and c:update(res)) then
    c = assert(core.dialog_uac(p.request, res, p.contact))
  end
  local offer = p.request.body
  return new_dialog(ep, c, {
    invite_cseq = res.cseq, remote_sdp = res.body, response = res,
    local_sdp = offer ~= "" and offer or nil,
    user = p.opts.user, password = p.opts.password,
  })
end

function Pending:_progress(res)
  if res.to_tag and res.status > 100 and self.state ~= "answered" then
    local early = self.early[res.to_tag]
    if not early then
      -- §12.1.2: an early dialog per To tag; nil if the 1xx cannot make one
      early = { to_tag = res.to_tag, dialog = core.dialog_uac(self.request, res, self.contact) }
      self.early[res.to_tag] = early
      self.early_order[#self.early_order + 1] = res.to_tag
    elseif early.dialog then
      early.dialog:update(res)
    end
    early.status, early.response = res.status, res
    if early.dialog and res:header("Contact") then
      early.remote_target = early.dialog.remote_target
    end
    early.remote_sdp = res.body ~= "" and res.body or early.remote_sdp
    self.state = "early"
  end
  local fn = self.opts.on_progress
  if fn then
    fn(res, self)
  end
end

function Pending:_finish(call, res)
  if self.timer then
    self.timer:cancel()
    self.timer = nil
  end
  self.call, self.response = call, res
  if call then
    self.state = "answered"
  elseif self.cancelling then
    self.state = "cancelled"
  else
    self.state = "failed"
  end
  local ep, k = self.ep, invite_key(self.request.call_id, self.request.from_tag)
  sched.loop:timer(fork_window_ms(ep), function()
    if ep._invites[k] == self then
      ep._invites[k] = nil
    end
  end)
  local ws = self.waiters
  self.waiters = {}
  for _, w in ipairs(ws) do
    w(call, res)
  end
end

function Pending:_run()
  local ep, opts = self.ep, self.opts
  local res, err = ep:request(self.request, {
    user = opts.user, password = opts.password, target = opts.target,
    on_progress = function(r) self:_progress(r) end,
    on_txn = function(id)
      self.txn = id
      if self.cancelling then
        ep.core:cancel(id)
      end
      if opts.on_txn then
        opts.on_txn(id)
      end
    end,
  })
  if not res then
    return self:_finish(nil, err)
  end
  if res.status >= 300 then
    return self:_finish(nil, res)
  end
  local d = uac_dialog(ep, self, res)
  local offered, answer = self:_answer(res)
  d:ack(res.cseq, answer and { body = answer, content_type = "application/sdp" })
  d.local_sdp = answer or d.local_sdp
  if self.cancelling or (offered and not answer) then
    -- the CANCEL crossed the 2xx (§9.1), or the 2xx's offer has no answer (a session
    -- that cannot work): the call exists, so end it at once
    sched.spawn(function() d:_hang_up(self.cancelling and "bye" or "no answer to the offer") end)
    self.hung_up = d
    return self:_finish(nil, res)
  end
  self:_finish(d, res)
end

-- §13.2.1: an INVITE without an offer gets one in the 2xx, and the answer MUST go in the
-- ACK. -> whether the 2xx made an offer, and the answer (opts.on_offer's or answer_sdp).
function Pending:_answer(res)
  if self.request.body ~= "" or res.body == "" then
    return false
  end
  local opts, answer = self.opts, self.opts.answer_sdp
  if opts.on_offer then
    local ok, r = xpcall(opts.on_offer, debug.traceback, res.body, res)
    if not ok then
      self.ep:_log("error", "on_offer (Call-ID %s): %s", tostring(res.call_id), tostring(r))
    end
    answer = ok and r or nil
  end
  return true, answer and tostring(answer)
end

--- pending:cancel() -> true | nil, err: CANCEL the INVITE (§9.1). The CANCEL waits for a
-- provisional response if none came yet (§9.1); the call then ends with 487.
function Pending:cancel()
  if self.state ~= "calling" and self.state ~= "early" then
    return nil, "call is " .. self.state
  end
  if self.cancelling then
    return true
  end
  self.cancelling = true
  if self.txn then
    local ok, err = self.ep.core:cancel(self.txn)
    if not ok then
      return nil, err
    end
  end
  return true
end

--- pending:result() -> call, 2xx | nil, final response | nil, err   (yields until final)
function Pending:result()
  if self.state == "answered" or self.state == "failed" or self.state == "cancelled" then
    return self.call, self.response
  end
  return sched.await(function(wake)
    self.waiters[#self.waiters + 1] = wake
  end)
end

--- ep:dial(uri, opts) -> pending call at once; the INVITE runs in its own coroutine.
-- opts as for ep:call. pending.state: "calling" | "early" | "answered" | "failed" |
-- "cancelled"; pending.early[to_tag] = { status=, response=, remote_target=, remote_sdp= }
-- for each early dialog (forked INVITEs give several), in pending.early_order.
function Endpoint:dial(to, opts)
  opts = opts or {}
  local sip = require "sip"
  local user_part = opts.user_part or "luasip"
  -- a Contact on the transport the call goes over, so in-dialog requests come back on it
  local turi = sip.uri.parse(opts.target or to)
  local kind = turi and turi.params and turi.params.transport
  kind = kind and kind:lower()
  if turi and turi.scheme == "sips" then
    kind = "tls"   -- §26.2.2: a sips: call wants a sips: Contact
  end
  if not kind or not (self:address(kind) or kind == "ws" or kind == "wss") then
    kind = nil   -- (over a WebSocket we opened: ep:uri's .invalid Contact, RFC 7118)
  end
  local contact = "<" .. self:uri(user_part, kind) .. ">"
  local req = assert(sip.request {
    method = "INVITE", uri = to, from = opts.from or self:uri(user_part),
    to = opts.to or to, headers = opts.headers, contact = contact,
    body = opts.sdp and tostring(opts.sdp), content_type = opts.sdp and "application/sdp" or nil,
  })
  local p = setmetatable({
    ep = self, request = req, opts = opts, contact = contact, state = "calling",
    early = {}, early_order = {}, killed = {}, waiters = {},
  }, Pending)
  self._invites = self._invites or {}
  self._invites[invite_key(req.call_id, req.from_tag)] = p
  if opts.timeout then
    p.timer = sched.loop:timer(math.floor(opts.timeout * 1000), function()
      p.timer = nil
      p.timed_out = true
      p:cancel()
    end)
  end
  sched.spawn(function() p:_run() end)
  return p
end

--- ep:call(uri, { sdp=, headers=, from=, user=, password=, on_progress=, timeout=,
---   on_offer=, answer_sdp= }) -> call, 2xx | nil, final response (or nil, err)
-- on_progress(res, pending) sees every provisional; pending:cancel() hangs up from there.
-- timeout (seconds) CANCELs an unanswered call, which then returns nil and the 487.
-- Without sdp the INVITE makes no offer, and the 2xx must (§13.2.1): on_offer(offer_sdp,
-- res) returns the answer, else answer_sdp is it; the ACK carries it. With neither (or a nil
-- answer) the ACK goes bare and the call is ended with BYE at once, since a session without
-- an answer cannot work: call returns nil and the 2xx.
function Endpoint:call(to, opts)
  return self:dial(to, opts):result()
end

-- A 2xx retransmission: ACK it again, in a dialog that is up or ended less than 64*T1 ago.
-- A 2xx from another fork branch of our INVITE (a To tag of no dialog): ACK it and send BYE,
-- since the first 2xx won (§13.2.2.4).
local function on_stray_2xx(ep, res)
  local dk = key(res.call_id, res.from_tag, res.to_tag)
  local d = ep.dialogs[dk]
  local ack = d and d.last_ack
  if not (ack and ack.cseq == res.cseq) then
    ack = ep._ended_acks and ep._ended_acks[ack_key(dk, res.cseq)]
  end
  if ack then
    -- the very same ACK again ("keep" its Via): a new branch would look like a new ACK
    ep:send(ack, next_hop(ack), "keep")
    return true
  end
  if d then
    return true   -- an old 2xx of a live dialog, whose ACK went long ago: nothing to do
  end
  local p = ep._invites and ep._invites[invite_key(res.call_id, res.from_tag)]
  if not p or res.cseq_method ~= "INVITE" or not res.to_tag then
    return false
  end
  local killed = p.killed[res.to_tag]
  if killed then
    ep:send(killed.last_ack, next_hop(killed.last_ack), "keep")
    return true
  end
  killed = uac_dialog(ep, p, res)
  p.killed[res.to_tag] = killed
  killed:ack(res.cseq)
  sched.spawn(function() killed:bye() end)
  return true
end

-- UAS ---------------------------------------------------------------------------------

-- A re-INVITE answered 2xx in its dialog: the dialog's Contact, local_sdp and remote_sdp
-- follow; the ACK is the dialog's business, not the answer's.
local function answer_reinvite(req, d, code, opts)
  local sdp = opts.sdp
  if sdp ~= nil and d.local_sdp then
    sdp = sdp_lib.next_version(d.local_sdp, sdp)
  end
  local headers = { { "Contact", d.contact } }
  for k, v in pairs(opts.headers or {}) do
    headers[#headers + 1] = type(k) == "number" and v or { k, v }
  end
  local ok, err = req:reply(code, nil, { headers = headers, body = sdp,
    content_type = sdp and "application/sdp" or nil })
  if not ok then
    return nil, err
  end
  if req.body ~= "" then
    d.remote_sdp = req.body
  end
  if sdp ~= nil then
    d.local_sdp = tostring(sdp)
  end
  return d
end

--- req:answer(code, { sdp=, headers=, contact= }) -> call | nil, err
-- Sends the 2xx with a Contact, then yields until its ACK (§13.3.1.4 retransmits it).
-- On a re-INVITE (req.dialog set) it answers in that dialog and returns its call at once.
function msg_methods.answer(req, code, opts)
  if type(code) == "table" then
    code, opts = 200, code
  end
  code = code or 200
  opts = opts or {}
  if req.dialog then
    return answer_reinvite(req, req.dialog, code, opts)
  end
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
  -- §12.1.1: route set = the request's Record-Route in order, target = its Contact
  local c, cerr = core.dialog_uas(req, req._tag, contact)
  if not c then
    return nil, cerr
  end
  local d = new_dialog(ep, c, { remote_sdp = req.body, initial_invite = req,
    local_sdp = opts.sdp and tostring(opts.sdp) })
  local ack = req:wait_ack()
  d.received_ack = ack
  if not ack then
    -- §13.3.1.4: no ACK within 64*T1 (the server transaction gave up retransmitting the
    -- 2xx): the UAS ends the session with BYE. No one holds this call, so the BYE runs on
    -- its own rather than holding the handler for another transaction's lifetime.
    sched.spawn(function() d:_hang_up("no ACK") end)
    return nil, "no ACK"
  end
  return d
end

-- In-dialog requests (§12.2.2) -------------------------------------------------------------

-- §15.1.2: a BYE in the early dialog of an INVITE we have not answered finally ends it: 200
-- to the BYE, 487 to the INVITE, whose handler learns it as of a CANCEL (req.cancelled, the
-- req:on_cancel function) and finds the INVITE answered (req.replied_final).
local function early_bye(ep, invite, bye)
  bye:reply(200)
  invite:reply(487)
  invite.cancelled = true
  if invite._on_cancel then
    sched.spawn(invite._on_cancel, invite)
  end
  return true
end

-- Called by the endpoint for a request with a To tag; returns true when taken.
local function in_dialog(ep, req)
  local k = key(req.call_id, req.to_tag, req.from_tag)
  local d = ep.dialogs[k]
  if not d then
    local invite = req.method == "BYE" and ep.early_invites[k]
    return invite and early_bye(ep, invite, req) or false
  end
  req.dialog = d
  -- §12.2.2 in C: CSeq order (500 when lower), target refresh by re-INVITE/UPDATE
  local ok, code, reason = d._c:check_request(req)
  if not ok then
    req:reply(code, reason)
    return true
  end
  if req.method == "BYE" then
    d.received_bye = req
    req:reply(200)
    d:_terminate("remote bye")
    return true
  end
  if req.method == "ACK" and req.body ~= "" then
    d.remote_sdp = req.body   -- the answer to the offer of our 2xx to an offerless re-INVITE
  end
  if req.method == "INVITE" and rawget(d, "_reinviting") then
    req:reply(491)   -- glare: our own re-INVITE is pending (§14.2)
    return true
  end
  if req.method == "INVITE" and d._on_reinvite then
    sched.spawn(function()
      local ok, err = xpcall(d._on_reinvite, debug.traceback, req, d)
      if not ok then
        ep:_log("error", "on_reinvite (Call-ID %s): %s", tostring(req.call_id), tostring(err))
      end
      if not req.replied_final then
        req:reply(500)
      end
    end)
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
    -- re-INVITE with no one to decide: the session as this side last described it answers
    -- the offer (or is the offer, §14.2, when the re-INVITE has none); nothing to offer, 488
    if d.local_sdp then
      answer_reinvite(req, d, 200, { sdp = d.local_sdp })
    else
      req:reply(488)
    end
  elseif req.method ~= "ACK" then
    req:reply(405)
  end
  return true
end

return {
  Dialog = Dialog,
  Pending = Pending,
  in_dialog = in_dialog,
  on_stray_2xx = on_stray_2xx,
  key = key,
  tag = random.tag,
}
