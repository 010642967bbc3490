--- sip.ua: the user-agent conveniences on top of endpoints — pager-mode MESSAGE (RFC 3428)
-- and the registration client of RFC 3261 §10.2 that keeps a binding refreshed.
local sched = require "sip.sched"
local random = require "sip.random"
local Endpoint = require("sip.endpoint").Endpoint

-- Refresh this long before a binding expires: a whole Timer F (64*T1) for one lost REGISTER
-- plus a few seconds for the 401 round trip, but never earlier than half-way, so a short
-- grant (a registrar's choice) is still refreshed well before it lapses.
local REFRESH_SLACK_S = 8

-- After a failed REGISTER (timeout, 4xx/5xx/6xx) try again this much later unless the
-- response says Retry-After: registrars come back, and hammering them helps nobody.
local RETRY_AFTER_S = 30

-- ep:stop()/ep:close() wait this long for the unregistering REGISTERs to be answered.
local UNREGISTER_WAIT_S = 2

local function default_from(ep, opts)
  return opts.from or ep:uri(opts.user or "luasip")
end

-- Pager mode ------------------------------------------------------------------------------

--- ep:message(to, text [, opts]) -> final response | nil, err   (yields; RFC 3428)
-- opts: content_type (default text/plain;charset=UTF-8), from, to, user, password, headers,
--       target. Bodies over 1300 bytes to a UDP destination go over TCP (core, §18.1.1).
function Endpoint:message(to, text, opts)
  local sip = require "sip"
  opts = opts or {}
  assert(type(to) == "string", "ep:message: destination URI expected")
  local req = assert(sip.request {
    method = "MESSAGE", uri = to, from = default_from(self, opts), to = opts.to or to,
    headers = opts.headers, body = tostring(text or ""),
    content_type = opts.content_type or "text/plain;charset=UTF-8",
  })
  return self:request(req, { user = opts.user, password = opts.password,
    target = opts.target })
end

-- Registration client (§10.2) ------------------------------------------------------------

local Registration = {}
Registration.__index = Registration

local function same_binding(a, b)
  local sip = require "sip"
  local ua, ub = sip.uri.parse(a), sip.uri.parse(b)
  if not ua or not ub then
    return a == b
  end
  return ua.user == ub.user and ua.host:lower() == ub.host:lower() and
    (ua.port or 5060) == (ub.port or 5060)
end

-- §10.2.4: the expiry the registrar granted to our Contact, from its ;expires parameter,
-- else the Expires header, else what we asked for.
local function granted(res, contact_uri, asked)
  local sip = require "sip"
  local only
  local contacts = res:headers("Contact")
  for _, c in ipairs(contacts) do
    local a = sip.addr.parse(c)
    if a and a.params and a.params.expires then
      if same_binding(a.uri, contact_uri) then
        return tonumber(a.params.expires)
      end
      only = #contacts == 1 and tonumber(a.params.expires) or nil
    end
  end
  if only then
    return only
  end
  local e = tonumber(res:header("Expires") or "")
  return e or asked
end

--- The delay before refreshing a binding of `expires` seconds (see REFRESH_SLACK_S).
function Registration:refresh_in(expires)
  local slack = 64 * self.ep.t1 / 1000 + REFRESH_SLACK_S
  return math.max(expires / 2, expires - slack)
end

function Registration:_set_state(state)
  self.state = state
  if state ~= "registering" then
    local ws = self.waiters
    self.waiters = {}
    for _, w in ipairs(ws) do
      w(state)
    end
  end
end

function Registration:_schedule(seconds, fn)
  if self.timer then
    self.timer:cancel()
  end
  self.timer = sched.loop:timer(math.max(1, math.floor(seconds * 1000)), function()
    self.timer = nil
    sched.spawn(fn)
  end)
end

-- One REGISTER on our Call-ID with the next CSeq; ep:request answers 401/407 and bumps the
-- CSeq itself, so the request's CSeq afterwards is the last one used.
function Registration:_send(expires)
  local sip = require "sip"
  self.cseq = self.cseq + 1
  local headers = { { "Expires", tostring(expires) } }
  for k, v in pairs(self.headers or {}) do
    headers[#headers + 1] = type(k) == "number" and v or { k, v }
  end
  local req = assert(sip.request {
    method = "REGISTER", uri = self.registrar, from = self.from, to = self.aor,
    call_id = self.call_id, cseq = self.cseq, contact = self.contact, headers = headers,
  })
  self.in_flight = true
  local res, err = self.ep:request(req, { user = self.user, password = self.password })
  self.in_flight = false
  self.cseq = math.max(self.cseq, req.cseq)
  self.response = res
  return res, err
end

function Registration:_register()
  if self.stopped then
    return
  end
  local res, err = self:_send(self.asked)
  if self.stopped then
    return   -- stop() ran while we waited; it unregisters
  end
  if res and res.status == 423 and not self.retried_423 then
    -- §10.3 step 7: Interval Too Brief; ask again with Min-Expires
    local min = tonumber(res:header("Min-Expires") or "")
    if min and min > self.asked then
      self.asked, self.retried_423 = min, true
      return self:_register()
    end
  end
  self.retried_423 = false
  if res and res.status >= 200 and res.status < 300 then
    local contact_uri = self.contact:match("<([^>]*)>") or self.contact
    self.expires = granted(res, contact_uri, self.asked)
    self.error = nil
    if self.expires <= 0 then
      self:_set_state("unregistered")
      return
    end
    self:_set_state("registered")
    self:_schedule(self:refresh_in(self.expires), function() self:_register() end)
    return
  end
  self.error = res and (res.status .. " " .. (res.reason or "")) or err
  self.expires = nil
  self:_set_state("failed")
  local retry = res and tonumber(res:header("Retry-After") or "") or RETRY_AFTER_S
  self:_schedule(retry, function() self:_register() end)
end

--- reg:wait() -> state, once it is not "registering" (yields)
function Registration:wait()
  if self.state ~= "registering" then
    return self.state
  end
  return sched.await(function(wake)
    self.waiters[#self.waiters + 1] = wake
  end)
end

--- reg:stop() -> response | nil, err: remove the binding (Expires: 0) and stop refreshing
function Registration:stop()
  if self.timer then
    self.timer:cancel()
    self.timer = nil
  end
  if self.stopped then
    return self.response
  end
  self.stopped = true
  self.ep._registrations[self] = nil
  local res, err = self:_send(0)
  self.expires = 0
  self:_set_state("unregistered")
  return res, err
end

--- ep:register{ registrar=, aor=, user=, password=, expires=, contact=, from=, headers= }
---   -> registration (state "registering"; registered in the background, refreshed after)
-- registrar: the Request-URI (sip:host[:port]); aor defaults to sip:user@registrar-host.
function Endpoint:register(opts)
  local sip = require "sip"
  assert(type(opts) == "table" and opts.registrar, "ep:register: registrar required")
  local ru = assert(sip.uri.parse(opts.registrar), "ep:register: bad registrar URI")
  local aor = opts.aor or ("sip:" .. (opts.user or "luasip") .. "@" .. ru.host)
  local user_part = sip.uri.parse(aor) and sip.uri.parse(aor).user or opts.user
  local kind = (ru.params and ru.params.transport or "udp"):lower()
  if ru.scheme == "sips" then
    kind = "tls"
  end
  local contact = opts.contact
  if not contact and (kind == "ws" or kind == "wss") then
    contact = self:uri(user_part, kind)   -- (.invalid when it opens the WebSocket)
  end
  if not self:address(kind) then
    kind = nil   -- the first listener: the registrar reaches us on our connection anyway
  end
  contact = contact or self:uri(user_part, kind)
  local self_reg = setmetatable({
    ep = self, registrar = opts.registrar, aor = aor, from = opts.from or aor,
    contact = sip.name_addr(contact, "contact"), user = opts.user, password = opts.password,
    asked = opts.expires or 3600, headers = opts.headers,
    call_id = random.call_id(), cseq = math.random(1, 1000),
    state = "registering", waiters = {},
  }, Registration)
  self._registrations = self._registrations or setmetatable({}, { __mode = "k" })
  self._registrations[self_reg] = true
  sched.spawn(function() self_reg:_register() end)
  return self_reg
end

-- ep:stop() and ep:close() take registrations down first (bounded) ----------------------

local function active_registrations(ep)
  local list = {}
  for reg in pairs(ep._registrations or {}) do
    if not reg.stopped then
      list[#list + 1] = reg
    end
  end
  return list
end

-- Unregister all, then call done(); waits at most UNREGISTER_WAIT_S for the answers.
local function unregister_all(ep, regs, done)
  local left, finished = #regs, false
  local timer
  local function finish()
    if not finished then
      finished = true
      if timer then
        timer:cancel()
      end
      done()
    end
  end
  timer = sched.loop:timer(math.floor(UNREGISTER_WAIT_S * 1000), finish)
  for _, reg in ipairs(regs) do
    sched.spawn(function()
      reg:stop()
      left = left - 1
      if left == 0 then
        finish()
      end
    end)
  end
end

-- Run `after` once every registration is removed. A coroutine or a plain script waits for
-- it here; code called back from inside ep:run() cannot wait, so it returns at once and the
-- loop goes on until the unregistering is over.
local function then_after_unregistering(ep, after)
  local regs = active_registrations(ep)
  if #regs == 0 then
    return after()
  end
  local _, main = coroutine.running()
  if main and ep.running then
    unregister_all(ep, regs, after)
    return
  end
  sched.await(function(wake)
    unregister_all(ep, regs, wake)
  end)
  return after()
end

local base_stop, base_close = Endpoint.stop, Endpoint.close

function Endpoint:stop()
  return then_after_unregistering(self, function() base_stop(self) end)
end

function Endpoint:close()
  return then_after_unregistering(self, function() base_close(self) end)
end

return { Registration = Registration, REFRESH_SLACK_S = REFRESH_SLACK_S }
