--- sip.endpoint: endpoints on the shared event loop, with one coroutine per incoming request.
-- Anything that waits (a response, a timer, an ACK) yields only the coroutine that waits.
local core = require "sip.core"
local sched = require "sip.sched"

local msg_methods = core.msg_mt.methods
local random_tag = require("sip.random").tag
local dns = require "sip.dns"
local needs_lookup = dns.needs_lookup

local Endpoint = {}
Endpoint.__index = Endpoint

-- Methods whose absence gets 405 (with Allow) rather than 501 (RFC 3261 §8.2.1).
local KNOWN = {
  INVITE = true, ACK = true, CANCEL = true, BYE = true, REGISTER = true, OPTIONS = true,
  MESSAGE = true, INFO = true, UPDATE = true, PRACK = true, SUBSCRIBE = true, NOTIFY = true,
  REFER = true, PUBLISH = true,
}

local LEVELS = { error = 1, warn = 2, info = 3, debug = 4 }

local function make_logger(opt)
  if type(opt) == "function" then
    return opt
  end
  if opt == nil or opt == false then
    return nil
  end
  local max = LEVELS[opt] or LEVELS.info
  return function(line, level)
    if (LEVELS[level or "info"] or 3) <= max then
      io.stderr:write(os.date("!%H:%M:%S "), line, "\n")
    end
  end
end

local function parse_listen(s)
  local kind, host, port = s:match("^(%a+):%[([^%]]+)%]:(%d+)$")
  if not kind then
    kind, host, port = s:match("^(%a+):([^:]+):(%d+)$")
  end
  if not kind or (kind ~= "udp" and kind ~= "tcp" and kind ~= "tls" and kind ~= "ws" and
      kind ~= "wss") then
    error("bad listen address '" .. tostring(s) .. "' (want udp:, tcp:, tls:, ws: or wss:HOST:PORT)", 3)
  end
  return kind, host, tonumber(port)
end

--- sip.endpoint{ listen = {"udp:127.0.0.1:5060", ...}, log = fn|level, t1 = ms,
--                dns = { servers = { "127.0.0.1:5353" }, timeout =, tries =, avoid = }, ... }
-- tls = { cert = FILE, key = FILE, ca = FILE, verify = true, client = "optional" }: PEM
-- files for TLS listeners (tls:HOST:PORT) and for sips:/transport=tls destinations; ca
-- defaults to the system store; client: ask for ("optional"), "require" or "none" client
-- certificates (the identity is req.tls). Without a tls table, TLS destinations are
-- reached with the system's CAs and no certificate of ours.
local function new(opts)
  opts = opts or {}
  -- the resolver first: at exit, finalizers run newest first, so the endpoint (which holds
  -- a reference to it in C) lets go of it before it goes
  local resolver, derr = dns.new(opts.dns)
  if not resolver then
    return nil, "dns: " .. tostring(derr)
  end
  local self = setmetatable({
    handlers = {},          -- method -> fn
    router = nil,           -- fn for every request no on() took
    requests = {},          -- server txn id -> request message
    pending = {},           -- client txn id -> { wake=, progress=, ... }
    acks = {},              -- server txn id -> wake for the ACK of a 2xx
    dialog_hooks = {},      -- dialog layers register here (stray 2xx, ...)
    dialogs = {},           -- "call-id|local tag|remote tag" -> dialog (sip.dialog)
    early_invites = {},     -- the same key -> INVITE we sent a 1xx with a To tag, until
                            -- its final response: our early dialogs as UAS (§15.1.2)
    relays = {},            -- relay id -> wake, for req:relay() waiting on its outcome
    relay_each = {},        -- relay id -> fn(target index, res) (req:relay's on_response)
    auth_cache = {},        -- realm -> last challenge answered (see ep:request)
    running = false,
    dns = resolver,         -- RFC 3263 lookups (sip.dns), its cache shared with the core
    resolving = {},         -- wakes of the lookups running, told when the endpoint closes
    log = make_logger(opts.log),
    t1 = opts.t1 or 500,
  }, Endpoint)
  local hooks = {}
  function hooks.request(req, txn, source)
    self:_dispatch(req, txn, source)
  end
  function hooks.response(txn, res)
    self:_response(txn, res)
  end
  function hooks.cancel(txn)
    local req = self.requests[txn]
    if req then
      req.cancelled = true
      local fn = req._on_cancel
      if fn then
        sched.spawn(fn, req)
      end
    end
  end
  function hooks.ack(txn, ack)
    local w = self.acks[txn]
    if w then
      self.acks[txn] = nil
      w(ack)
    end
  end
  function hooks.relayed(id, res)
    self.relay_each[id] = nil
    local w = self.relays[id]
    if w then
      self.relays[id] = nil
      w(res)
    end
  end
  function hooks.relay_branch(id, i, res)
    local fn = self.relay_each[id]
    if fn then
      local ok, err = pcall(fn, i, res)
      if not ok then
        self:_log("error", "on_response: %s", tostring(err))
      end
    end
  end
  function hooks.gone(txn)
    self.requests[txn] = nil
    local p = self.pending[txn]
    if p then
      -- a client transaction never ends without a final response; be safe anyway
      self.pending[txn] = nil
      p.wake(nil, "transaction ended")
    end
    local w = self.acks[txn]
    if w then
      self.acks[txn] = nil
      w(nil)
    end
  end
  function hooks.rate_limited(ip, retry)
    local fn = self.on_rate_limited
    if fn then
      fn(ip, self.core:rate_limit(), retry)
    end
  end
  function hooks.log(line)
    if self.log then
      self.log(line, "debug")
    end
  end
  local config = {
    t1 = opts.t1, t2 = opts.t2, t4 = opts.t4, timer_c = opts.timer_c,
    max_transactions = opts.max_transactions, max_waiting = opts.max_waiting,
    overload_ms = opts.overload_ms,
    max_size = opts.max_size, max_headers = opts.max_headers, max_line = opts.max_line,
    max_connections = opts.max_connections, idle_timeout_ms = opts.idle_timeout_ms,
    max_connections_per_ip = opts.max_connections_per_ip,
    partial_timeout_ms = opts.partial_timeout_ms, reuse_port = opts.reuse_port and 1 or 0,
    log = self.log ~= nil,
  }
  self.dialog_hooks[1] = function(res)
    return require("sip.dialog").on_stray_2xx(self, res)
  end
  local listen = opts.listen or { "udp:127.0.0.1:5060" }
  for _, l in ipairs(listen) do
    parse_listen(l)
  end
  -- Port 0 picks a free port; a later port-0 listener on the same host takes the same
  -- number (peers assume one port for UDP and TCP). When that number is taken for the other
  -- transport, start over with fresh sockets.
  for _ = 1, 20 do
    local c = core.endpoint(sched.loop, config, hooks)
    local picked, failed, err = {}, false, nil
    local tls_ok, tls_err = true, nil
    if opts.tls then
      tls_ok, tls_err = c:set_tls(opts.tls)
    end
    if not tls_ok then
      c:close()
      return nil, "tls: " .. tls_err
    end
    for _, l in ipairs(listen) do
      local kind, host, port = parse_listen(l)
      local ok
      -- TLS is a stream socket like TCP: it cannot share TCP's port number
      -- (nor can WS and WSS, which are HTTP ports)
      local key = (kind == "udp" or kind == "tcp") and host or kind .. ":" .. host
      if port == 0 and picked[key] then
        ok = c:listen(kind, host, picked[key])
        failed = not ok
      else
        ok, err = c:listen(kind, host, port)
        err = err and (l .. ": " .. err)
        if ok and port == 0 then
          local addrs = c:addresses()
          picked[key] = tonumber(addrs[#addrs]:match(":(%d+)$"))
        end
      end
      if not ok then
        break
      end
    end
    if not failed and not err then
      self.core = c
      c:set_dns(resolver)
      return self
    end
    c:close()
    if err then
      resolver:close()
      return nil, err
    end
  end
  resolver:close()
  return nil, "no free port for both transports"
end

function Endpoint:_log(level, fmt, ...)
  if self.log then
    self.log(string.format(fmt, ...), level)
  end
end

--- ep:addresses() -> { "udp:127.0.0.1:5060", ... } (real ports when 0 was asked)
function Endpoint:addresses()
  return self.core:addresses()
end

--- ep:address(kind) -> "127.0.0.1:5060" of the first listener of that transport
function Endpoint:address(kind)
  local addrs = self._addrs
  if not addrs then
    addrs = self.core:addresses()
    self._addrs = addrs
  end
  for _, a in ipairs(addrs) do
    local k, rest = a:match("^(%a+):(.*)$")
    if not kind or k == kind then
      return rest, k
    end
  end
end

--- ep:uri(user [, kind]) -> "sip:user@127.0.0.1:5060" on this endpoint (transport param for
-- TCP; a sips: URI for TLS; for ws/wss with no such listener, RFC 7118 §5.2's .invalid host)
function Endpoint:uri(user, kind)
  local hostport, k = self:address(kind)
  if not hostport and (kind == "ws" or kind == "wss") then
    -- RFC 7118 §5.2: over a WebSocket it opened, an endpoint names no address of its own
    -- but a host of its making, the same for all its Contacts; the server reaches it over
    -- that connection
    self._ws_host = self._ws_host or (require("sip.random").hex(8) .. ".invalid")
    return "sip:" .. (user and (user .. "@") or "") .. self._ws_host .. ";transport=" .. kind
  end
  if not hostport then
    hostport, k = self:address()
  end
  local u = (k == "tls" and "sips:" or "sip:") .. (user and (user .. "@") or "") .. hostport
  if k == "tcp" then
    u = u .. ";transport=tcp"
  end
  return u
end

--- ep:on(method, fn): fn(req) handles every request of that method ("MESSAGE", ...)
function Endpoint:on(method, fn)
  assert(type(method) == "string", "ep:on: method expected")
  assert(type(fn) == "function", "ep:on: function expected")
  self.handlers[method] = fn
  self:_sync_router()
  return self
end

--- ep:route(fn [, { relay_in_dialog = true }]): fn(req) routes every request no handler
-- takes. relay_in_dialog: requests inside a dialog (a To tag; not REGISTER) are relayed by
-- the core along their Route set as req:relay(nil, { wait = false }) would, and fn never
-- sees them (what a route script usually does first; Kamailio's loose_route).
function Endpoint:route(fn, opts)
  assert(type(fn) == "function", "ep:route: function expected")
  self.router = fn
  self.relay_in_dialog = opts and opts.relay_in_dialog or false
  self:_sync_router()
  return self
end

-- A handler failed: log it, and answer 500 when it had not answered.
local function handler_failed(self, req, err)
  self:_log("error", "handler error (Call-ID %s): %s", tostring(req.call_id), tostring(err))
  if not req.replied_final and req.method ~= "ACK" then
    req:reply(500)
  end
end

local traceback = debug.traceback

-- Run a handler and answer 500 when it fails before answering.
local function run_handler(self, fn, req)
  local ok, err = xpcall(fn, traceback, req)
  if not ok then
    handler_failed(self, req, err)
  end
end

-- The core hands the requests the router takes with nothing to dispatch first (no dialog,
-- no Route, no handler of their own: the pager model's MESSAGE) straight to it, in a pooled
-- coroutine (lsip_ep.c run_router); the rest come through _dispatch.
function Endpoint:_sync_router()
  if not self.core then
    return
  end
  if not self.router then
    self.core:set_router(nil)
    return
  end
  local handled = {}
  for m in pairs(self.handlers) do
    handled[#handled + 1] = m
  end
  local router, requests = self.router, self.requests
  self.core:set_router(function(req, invite)
    if invite then
      requests[req._txn] = req   -- until its final response: only a CANCEL looks it up
    end
    local ok, err = xpcall(router, traceback, req)   -- run_handler, one call less
    if not ok then
      handler_failed(self, req, err)
    end
  end, self, handled, self.relay_in_dialog)
end

-- Sources the limit does not apply to unless told otherwise: this host.
local RATE_EXEMPT_DEFAULT = { "127.0.0.0/8", "::1/128" }

--- ep:rate_limit{ rate = N, burst = M, max_sources = K, log_window = seconds,
---   exempt = { "10.0.0.0/8", "2001:db8::/32", ... } } | ep:rate_limit(false)
-- A token bucket per source IP, kept by the core: a new request (ACK and CANCEL pass) past
-- it gets 503 with Retry-After before any transaction or Lua code exists for it; requests
-- this endpoint sent itself (a spiral) are never refused. ep.on_rate_limited(ip, rate,
-- retry) is called on a source's first refusal in each log window (default 10 s). exempt:
-- address blocks (CIDR) never limited, trusted peers such as an SBC or another proxy that
-- send everyone's requests from one address; loopback when not given ({} for none).
function Endpoint:rate_limit(opts)
  if not opts then
    self.core:set_rate_limit(0)
    return self
  end
  local rate = tonumber(opts.rate)
  assert(rate and rate > 0, "ep:rate_limit: rate must be a positive number")
  local burst = tonumber(opts.burst or rate)
  assert(burst and burst >= 1, "ep:rate_limit: burst must be at least 1")
  self.core:set_rate_limit(rate, burst, opts.max_sources or 10000,
    math.floor((opts.log_window or 10) * 1000), opts.exempt or RATE_EXEMPT_DEFAULT)
  return self
end

--- ep:stats() -> table of counters (transactions, connections, pending requests, ...)
function Endpoint:stats()
  local s = self.core:stats()
  local n = 0
  for _ in pairs(self.pending) do
    n = n + 1
  end
  s.pending_requests = n
  s.handlers_running = sched.running_count()
  return s
end

--- Allow header value: what this endpoint answers.
function Endpoint:allow()
  local t = { "ACK", "CANCEL", "OPTIONS" }
  for m in pairs(self.handlers) do
    if m ~= "ACK" and m ~= "CANCEL" and m ~= "OPTIONS" then
      t[#t + 1] = m
    end
  end
  table.sort(t)
  return table.concat(t, ", ")
end

-- A request no handler takes (RFC 3261 §8.2.1, §11.2).
function Endpoint:_default(req)
  local m = req.method
  if m == "ACK" then
    return
  elseif m == "CANCEL" then
    req:reply(481)
  elseif m == "OPTIONS" then
    req:reply(200, nil, { headers = { Allow = self:allow() } })
  elseif KNOWN[m] then
    req:reply(405, nil, { headers = { Allow = self:allow() } })
  else
    req:reply(501)
  end
end

function Endpoint:_dispatch(req, txn, source)
  req:_attach(self, txn, source)
  local method = req.method
  if txn ~= 0 and method == "INVITE" then
    self.requests[txn] = req   -- until its final response: only a CANCEL looks it up
  end
  if method ~= "CANCEL" and req.to_tag then
    -- §12.2.2: in-dialog requests go to their dialog; unknown dialogs get 481 from a UA
    local dialog = require "sip.dialog"
    if dialog.in_dialog(self, req) then
      return
    end
    if not req.dialog and not self.router and not self.handlers[method] then
      if method ~= "ACK" then
        req:reply(481)
      end
      return
    end
  end
  local fn = self.handlers[method]
  if not fn and self.router then
    fn = self.router
    if self.core:preprocess(req) == nil then   -- §16.4
      if method ~= "ACK" then
        req:reply(400, "Bad Route")
      end
      return
    end
  end
  if not fn then
    return self:_default(req)
  end
  sched.spawn(run_handler, self, fn, req)
end

function Endpoint:_response(txn, res)
  if txn == 0 then
    -- a 2xx retransmission for an INVITE transaction that is gone: dialogs re-ACK it
    for _, h in ipairs(self.dialog_hooks) do
      if h(res) then
        return
      end
    end
    return
  end
  local p = self.pending[txn]
  if not p then
    -- e.g. a second 2xx of a forked INVITE after the first woke the caller
    if res.status >= 200 and res.status < 300 and res.cseq_method == "INVITE" then
      for _, h in ipairs(self.dialog_hooks) do
        if h(res) then
          return
        end
      end
    end
    return
  end
  if res.status < 200 then
    if p.progress then
      local ok, err = pcall(p.progress, res)
      if not ok then
        self:_log("error", "on_progress: %s", tostring(err))
      end
    end
    return
  end
  self.pending[txn] = nil
  p.wake(res)
end

--- Where a request goes (RFC 3261 §8.1.2, §16.12): the top Route if it is a loose router
-- (;lr), else the Request-URI. A strict router is handled by the proxy module.
function Endpoint:target_of(req)
  local route = req:addr("Route")
  if route and route.uri then
    return route.uri
  end
  return req.uri
end

-- ---- Digest client (RFC 3261 §22.2, RFC 7616 §3.4.5) ----

-- Attempts of one ep:request: one per realm plus a few stale nonces. Past this the server is
-- looping (stale=true forever) and the caller gets its last 401/407.
local MAX_AUTH_ATTEMPTS = 5

-- Realms whose last challenge an endpoint keeps for pre-emptive credentials. Servers pick
-- realms, so this is capped; a client talks to a handful of realms at most.
local MAX_CACHED_REALMS = 32

local AUTH_HEADERS = { [401] = { "WWW-Authenticate", "Authorization" },
                       [407] = { "Proxy-Authenticate", "Proxy-Authorization" } }

-- The parsed challenges of a 401/407, grouped by realm: realm -> { values, stale = bool }.
local function challenges_by_realm(res)
  local auth = require "sip.auth"
  local out = {}
  for _, v in ipairs(res:headers(AUTH_HEADERS[res.status][1])) do
    local t = auth.parse_challenge(v)
    if t then
      local r = out[t.realm] or { values = {} }
      r.values[#r.values + 1] = v
      r.stale = r.stale or (t.stale or ""):lower() == "true"
      out[t.realm] = r
    end
  end
  return out
end

-- Whom a cached challenge belongs to: the next hop's scheme, host, port and transport, so a
-- nonce is sent pre-emptively only where it came from (any user part or path).
local function hop_of(target)
  local u = core.uri_parse(target)
  if not u then return target end
  return ("%s:%s:%s;%s"):format(u.scheme, u.host:lower(), tostring(u.port or ""),
                                (u.params.transport or "udp"):lower())
end

-- Credentials answering one challenge entry, counting its nonce up (nc) on every use.
local function answer(entry, req, opts)
  entry.nc = entry.nc + 1
  return require("sip.auth").authorization(entry.values, {
    user = opts.user, password = opts.password, method = req.method, uri = req.uri,
    body = req.body, nc = entry.nc,
  })
end

-- Put credentials for every realm in `entries` on req, each with its nonce counted up, in
-- place of those sent before. Nothing is touched when there are none.
local function set_credentials(req, entries, opts)
  if not next(entries) then return end
  req:remove_header("Authorization")
  req:remove_header("Proxy-Authorization")
  for _, e in pairs(entries) do
    local value = answer(e, req, opts)
    if value then
      req:add_header(e.header, value)
    end
  end
end

function Endpoint:_cache_challenge(realm, entry)
  local n = 0
  for _ in pairs(self.auth_cache) do n = n + 1 end
  if n >= MAX_CACHED_REALMS and not self.auth_cache[realm] then
    self.auth_cache = {}
  end
  self.auth_cache[realm] = entry
end

-- The cached challenges of this hop and user, for credentials sent before any challenge.
function Endpoint:_cached_challenges(target, user)
  local entries = {}
  for realm, e in pairs(self.auth_cache) do
    if e.target == target and e.user == user then
      entries[realm] = e
    end
  end
  return entries
end

--- ep:request(req [, opts]) -> final response | nil, err   (yields until the final response)
-- opts: target= (URI to send to), on_progress=fn(res), via="replace"|"push"|"keep",
--       user=, password= (answers 401/407 once per realm, again after stale=true, and
--       reuses the last nonce of a realm with nc+1), timeout= (seconds; INVITE: CANCEL)
function Endpoint:request(req, opts)
  opts = opts or {}
  if not (opts.user and opts.password) then
    return self:_request_once(req, opts)
  end
  local target = hop_of(opts.target or self:target_of(req))
  local entries = self:_cached_challenges(target, opts.user)
  local tried = {}
  local res, err
  for attempt = 1, MAX_AUTH_ATTEMPTS do
    if attempt > 1 then
      -- §22.2: same Call-ID, CSeq up by one, a new branch
      req:set_header("CSeq", (req.cseq + 1) .. " " .. req.method)
    end
    set_credentials(req, entries, opts)
    res, err = self:_request_once(req, opts)
    if not res or not AUTH_HEADERS[res.status] then
      return res, err
    end
    local answered = false
    for realm, ch in pairs(challenges_by_realm(res)) do
      -- RFC 7616 §3.3: stale=true means the password was right, so it is no failed try
      if not tried[realm] or ch.stale then
        tried[realm], answered = true, true
        entries[realm] = { values = ch.values, nc = 0, target = target, user = opts.user,
                           header = AUTH_HEADERS[res.status][2] }
        self:_cache_challenge(realm, entries[realm])
      elseif self.auth_cache[realm] == entries[realm] then
        self.auth_cache[realm] = nil
      end
    end
    if not answered then
      return res
    end
  end
  return res
end

--- ep:resolve(uri) -> targets | nil, err   (yields; RFC 3263 through this endpoint's
-- resolver, for the transports it listens on and TLS, which it can always open: see
-- sip.dns.resolve)
function Endpoint:resolve(uri)
  if self.closed then
    return nil, "endpoint is closed"
  end
  local tps = self._tps
  if not tps then
    tps = {}
    local seen = {}
    for _, a in ipairs(self.core:addresses()) do
      local k = a:match("^(%a+):")
      if not seen[k] and k ~= "ws" and k ~= "wss" then   -- (no WebSocket in DNS)
        seen[k], tps[#tps + 1] = true, k
      end
    end
    if not seen.tls then
      tps[#tps + 1] = "tls"   -- outgoing TLS needs no listener of ours
    end
    self._tps = tps
  end
  local waits, r = self.resolving, self.dns
  return sched.await(function(wake)
    waits[wake] = true
    local id, err = r:locate(uri, tps, function(t, e)
      waits[wake] = nil
      wake(t, e)
    end)
    if not id then
      waits[wake] = nil
      wake(nil, err)
    end
  end)
end

-- One client transaction toward target (a URI the core resolves itself: an IP literal, or
-- a name the resolver has cached). attempt_ms: give up waiting after it when nothing at
-- all came back (a target that does not answer, §4.3); nil: wait for the core's final.
-- Returns the final response, or nil, err, failed (failed: the target could not be used).
function Endpoint:_transaction(req, target, opts, attempt_ms)
  return sched.await(function(wake)
    local id, err = self.core:request(req, target, opts.via or "replace", opts.branch)
    if not id then
      return wake(nil, err, true)
    end
    local p = { wake = wake, progress = opts.on_progress, id = id }
    self.pending[id] = p
    if opts.on_txn then
      opts.on_txn(id)
    end
    if opts.timeout then
      sched.loop:timer(math.floor(opts.timeout * 1000), function()
        if self.pending[id] == p then
          if req.method == "INVITE" then
            self.core:cancel(id)
          end
        end
      end)
    end
    if attempt_ms then
      local progress = p.progress
      p.progress = function(res)
        p.heard = true
        if progress then
          return progress(res)
        end
      end
      sched.loop:timer(attempt_ms, function()
        if self.pending[id] == p and not p.heard then
          -- nothing from there in this target's share of the time: on to the next one
          self.pending[id] = nil
          if req.method == "INVITE" then
            self.core:cancel(id)   -- (sent only if a provisional comes after all, §9.1)
          else
            self.core:abandon(id)  -- no more retransmissions to a target given up on
          end
          wake(nil, "timeout", true)
        end
      end)
    end
  end)
end

-- §4.3: what moves a request on to the next target: a 503, or a final the core made for a
-- transport error, an ICMP unreachable or a timeout (it carries no To tag: nobody answered).
local function failed_target(res)
  return res.status == 503 or (res.status == 408 and not res.to_tag)
end

function Endpoint:_request_once(req, opts)
  if self.closed then
    return nil, "endpoint is closed"
  end
  local target = opts.target or self:target_of(req)
  if not needs_lookup(target) then
    return self:_transaction(req, target, opts)
  end
  local targets, err = self:resolve(target)
  if not targets then
    return nil, err
  end
  if (opts.via or "replace") == "keep" then
    targets = { targets[1] }   -- the branch is the caller's: one transaction only
  end
  -- RFC 3263 §4.3: on to the next target with a new branch (the Via is replaced), within
  -- the time of one transaction (64*T1): each target not tried yet gets a share of it
  local deadline = sched.loop:now() + 64 * self.t1
  local res, failed
  for i, t in ipairs(targets) do
    local left = #targets - i
    local share = left > 0 and math.max(deadline - sched.loop:now(), 0) // (left + 1) or nil
    res, err, failed = self:_transaction(req, t.uri, opts, share)
    if res and not failed_target(res) then
      return res
    end
    if not res and not failed then
      return nil, err   -- the endpoint closed
    end
    if not self.closed then
      self.dns:avoid(t.transport, t.addr, t.port)
    end
    self:_log("info", "%s to %s (%s) failed: %s", req.method, t.uri, t.host,
      res and (res.status .. " " .. res.reason) or tostring(err))
    if self.closed or sched.loop:now() >= deadline then
      break
    end
  end
  if res then
    return res
  end
  return nil, err
end

--- ep:send(req [, target]) -> true | nil, err   (no transaction: ACK for 2xx, stateless relays)
function Endpoint:send(req, target, via)
  if self.closed then
    return nil, "endpoint is closed"
  end
  target = target or self:target_of(req)
  if needs_lookup(target) then
    if not coroutine.isyieldable() then
      -- from a hook (a 2xx retransmission re-ACKed): the name from the cache, or looked
      -- up in a coroutine of its own
      local ok, err = self.core:send(req, target, via or "replace")
      if ok or err ~= "the name needs a DNS lookup first" then
        return ok, err
      end
      sched.spawn(self.send, self, req, target, via)
      return true
    end
    local t, err = self:resolve(target)
    if not t then
      return nil, err
    end
    target = t[1].uri
  end
  return self.core:send(req, target, via or "replace")
end

--- ep:options(uri [, opts]) -> response | nil, err
function Endpoint:options(to, opts)
  local sip = require "sip"
  opts = opts or {}
  local req = assert(sip.request { method = "OPTIONS", uri = to, from = opts.from or self:uri("luasip"),
    to = opts.to or to, headers = opts.headers })
  return self:request(req, opts)
end

--- ep:run() / ep:stop(): drive the shared loop until stop()
function Endpoint:run()
  self.running = true
  -- an error out of the loop (Ctrl-C's "interrupted!") must not leave it marked running:
  -- ep:close() after it would take itself for a call from inside the loop and not wait
  local ok, err = pcall(function()
    while self.running do
      sched.loop:step(-1)
    end
  end)
  self.running = false
  if not ok then
    error(err, 0)
  end
end

--- ep:stop(): make run() return
function Endpoint:stop()
  self.running = false
end

--- ep:close(): release sockets and transactions now
function Endpoint:close()
  self.running = false
  self.closed = true
  self.core:close()
  -- whoever waits on this endpoint hears of it now: no response will come any more
  local relays, pending, resolving = self.relays, self.pending, self.resolving
  self.relays, self.pending, self.relay_each, self.resolving = {}, {}, {}, {}
  self.dns:close()
  for _, wake in pairs(relays) do
    wake(nil)
  end
  for wake in pairs(resolving) do
    wake(nil, "endpoint closed")
  end
  for _, p in pairs(pending) do
    p.wake(nil, "endpoint closed")
  end
end

--- Pollable protocol (cqueues, luv, ...): wait for pollfd() to be readable or timeout()
-- seconds, then call step(0).
function Endpoint:pollfd()
  return sched.loop:fd()
end

--- ep:events() -> "r": pollfd() is waited on for reading
function Endpoint:events()
  return "r"
end

--- ep:timeout() -> seconds until the next timer, or nil when none is due
function Endpoint:timeout()
  local ms = sched.loop:timeout()
  return ms and ms / 1000 or nil
end

--- ep:step([timeout]): run what is ready, waiting at most timeout seconds (default 0)
function Endpoint:step(timeout)
  return sched.loop:step(timeout and math.floor(timeout * 1000) or 0)
end

-- Request methods for messages that arrived on an endpoint -------------------------------

-- Build a response to req with opts { headers=, body=, content_type= }.
local function build_response(req, code, reason, opts)
  if code > 100 and not req._tag then
    req._tag = random_tag()
  end
  local res = req:response(code, reason, req._tag)
  if opts then
    if opts.headers then
      for k, v in pairs(opts.headers) do
        if type(k) == "number" then
          res:add_header(v[1], v[2])
        elseif type(v) == "table" then
          for _, one in ipairs(v) do
            res:add_header(k, one)
          end
        else
          res:add_header(k, tostring(v))
        end
      end
    end
    if opts.body then
      res:set_body(opts.body, opts.content_type)
    end
  end
  return res
end

--- req:build_response(code [, reason] [, { headers=, body=, content_type= }]) -> response
-- (a To tag of ours on every response but 100), not sent: what req:reply sends
-- @function msg_methods.build_response
msg_methods.build_response = build_response

-- Whether in-dialog requests must reach the Lua dispatcher: dialogs, or early ones as UAS.
function Endpoint:_note_dialogs()
  if self.core then
    self.core:set_has_dialogs(next(self.dialogs) ~= nil or next(self.early_invites) ~= nil)
  end
end

-- An initial INVITE answered 1xx with a To tag has an early dialog on our side (§12.1.1)
-- until its final response; a BYE in it ends it (§15.1.2).
local function note_early(ep, req, code)
  local k = core.dialog_key(req.call_id, req._tag, req.from_tag)
  if code < 200 then
    if not ep.early_invites[k] then
      ep.early_invites[k] = req
      ep:_note_dialogs()
    end
  elseif ep.early_invites[k] then
    ep.early_invites[k] = nil
    ep:_note_dialogs()
  end
end

--- req:reply(code [, reason] [, opts]) -> true | nil, err
function msg_methods.reply(req, code, reason, opts)
  if type(reason) == "table" then
    reason, opts = nil, reason
  end
  local ep = req._ep
  if not ep or not req._txn or req._txn == 0 then
    return nil, "not a request received by an endpoint"
  end
  if ep.closed then
    return nil, "endpoint is closed"
  end
  local late = code < 200 and "provisional response after a final one"
    or "a final response was sent already"
  if req.replied_final then
    return nil, late   -- its transaction may be gone already (waiting in the core's table)
  end
  local res = build_response(req, code, reason, opts)
  local ok, err = ep.core:reply(req._txn, res)
  if not ok and err == "the transaction is gone" then
    -- a server transaction ends only after a final response (the core's own: a 487 after
    -- CANCEL, its ACK come) and then waits without it, or relayed statelessly
    err = late
  end
  if ok and code >= 200 then
    req.replied_final = true
    req.final_status = code   -- (its transaction may end at once: sip.ops logs this)
    ep.requests[req._txn] = nil
  end
  if ok and code > 100 and req.method == "INVITE" and not req.to_tag then
    note_early(ep, req, code)
  end
  return ok, err
end

--- req:reply_stateless(code [, reason] [, opts]) -> true | nil, err  (§16.11: keep no state)
function msg_methods.reply_stateless(req, code, reason, opts)
  if type(reason) == "table" then
    reason, opts = nil, reason
  end
  local ep = req._ep
  if not ep then
    return nil, "not a request received by an endpoint"
  end
  if ep.closed then
    return nil, "endpoint is closed"
  end
  return ep.core:reply_stateless(req, build_response(req, code, reason, opts))
end

--- req:on_cancel(fn): fn(req) runs (in its own coroutine) when a CANCEL arrives
function msg_methods.on_cancel(req, fn)
  req._on_cancel = fn
  if req.cancelled then
    sched.spawn(fn, req)
  end
end

--- req:wait_ack([timeout]) -> ACK message | nil   (after a 2xx to an INVITE)
function msg_methods.wait_ack(req)
  local ep = req._ep
  return sched.await(function(wake)
    ep.acks[req._txn] = wake
  end)
end

return { new = new, Endpoint = Endpoint }
