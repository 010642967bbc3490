-- sip.msrp: session-mode instant messaging — MSRP sessions (RFC 4975) set up by an INVITE
-- with an m=message offer, and the one IM API over both models (pager MESSAGE, RFC 3428):
--
--   local s = ep:chat(to [, opts])          -- INVITE with the MSRP offer; s, 2xx | nil, err
--   s:send(text [, content_type])           -- yields until every chunk is acknowledged
--   s:receive([timeout])                    -- text, content_type, msg | nil, why
--   s:close()                               -- BYE and the connection closed
--   ep:on("chat", function(s, req) ... end) -- s:refuse(code) declines; s:accept() (or the
--                                           -- first send/receive, or the handler returning) takes it
--   ep:message(to, text, { mode = "auto" | "pager" | "session" })
--
-- A bot gets a message the same way whichever model carried it: an ep:on("MESSAGE")
-- handler also receives each message of a session someone opened with it (an INVITE with
-- an MSRP offer is accepted for it when no "chat" handler is set), as a request-like
-- object with req.session set. req:respond(text [, type]) answers in the model the message
-- came in: a MESSAGE back to the sender for a MESSAGE, a SEND in the same session for a
-- session message (a new session to the sender when that one has ended meanwhile).
-- The frames, the reassembly and the connections are C (csrc/msrp.c, csrc/stream.c).
local core = require "sip.core"
local sched = require "sip.sched"
local sdp = require "sip.sdp"
local cpim = require "sip.cpim"
local Endpoint = require("sip.endpoint").Endpoint

local msg_methods = core.msg_mt.methods

local msrp = {}

-- RFC 3428 §9: a MESSAGE body over 1300 bytes risks fragmentation and congestion on the
-- way; ep:message in "auto" mode sends a larger one in a session instead.
msrp.PAGER_LIMIT = 1300
-- RFC 4975 §7.1: chunks of 2048 octets at most unless the peer is known to take more;
-- any relay in the path must take them.
msrp.CHUNK = 2048
-- The a=max-size we offer and the largest message we reassemble: a message this size is
-- held in memory once, per message being received.
msrp.MAX_SIZE = 4 * 1024 * 1024
-- Separate byte ranges one message may be in while it is put together (in-order chunks
-- merge into one): beyond it a sender is scattering on purpose (413).
msrp.MAX_CHUNKS = 1024
-- RFC 4975 §7.1: a transaction with no response within 30 s has failed.
msrp.TXN_TIMEOUT = 30
-- How long the passive side waits for the active side's connection after the answer.
msrp.BIND_TIMEOUT = 32
-- A message with chunks missing is dropped after this long without a new chunk.
msrp.IDLE_TIMEOUT = 30
-- Messages being put together at once in one session, each up to max_size: more is a
-- sender trying to hold our memory (413 to the new one).
msrp.MAX_PARTIAL = 8
-- Whole messages waiting for s:receive(): past this many the next one is refused (413 to
-- its last chunk) rather than memory growing for a reader that does not read.
msrp.MAX_INBOX = 256

-- Chunks of one message handed to the connection at once: one write(2) for 32 of them.
local BATCH = 64 * 1024

local REASONS = { [200] = "OK", [400] = "Bad Request", [403] = "Forbidden",
  [408] = "Request Timeout", [413] = "Message Too Large",
  [415] = "Unsupported Media Type", [423] = "Interval Out-of-Bounds",
  [481] = "Session Does Not Exist", [501] = "Not Implemented",
  [506] = "Session Already Bound" }
msrp.REASONS = REASONS

-- URIs and paths ------------------------------------------------------------------------

--- msrp.parse_uri("msrp://host:port/id;tcp") -> { scheme=, host=, port=, id=, transport= }
function msrp.parse_uri(u)
  if type(u) ~= "string" then
    return nil
  end
  local scheme, auth, id, tp = u:match("^(msrps?)://([^/]+)/([^;/]+);(%w+)$")
  if not scheme then
    return nil
  end
  auth = auth:gsub("^.*@", "")
  local host, port = auth:match("^%[(.+)%]:(%d+)$")
  if not host then
    host, port = auth:match("^([^:]+):(%d+)$")
  end
  if not host then
    return nil
  end
  return { scheme = scheme, host = host, port = tonumber(port), id = id, transport = tp:lower() }
end

local function path_list(p)
  local out = {}
  for w in tostring(p or ""):gmatch("%S+") do
    out[#out + 1] = w
  end
  return out
end

-- Endpoint state: one listener for every session of the endpoint --------------------------

local Session = {}
Session.__index = Session
msrp.Session = Session

local function respond_frame(conn, f, code, from_path)
  local fr = f.failure_report or "yes"
  if fr == "no" or (fr == "partial" and code == 200) then
    return
  end
  conn:send(core.msrp_build { tid = f.tid, status = code, comment = REASONS[code],
    to_path = path_list(f.from_path)[1], from_path = from_path })
end

-- A frame on a connection no session holds yet: the session its To-Path names takes the
-- connection (RFC 4975 §5.4), or 481.
local function unbound_frame(st, conn, f)
  local to = path_list(f.to_path)
  local u = msrp.parse_uri(to[#to])
  local s = u and st.sessions[u.id]
  if not s or s.conn or s.closed then
    if f.method and f.method ~= "REPORT" then
      respond_frame(conn, f, s and s.conn and 506 or 481, to[#to])
    end
    return
  end
  s:_bind(conn)
  s:_frame(f)
end

local function state(ep)
  local st = ep._msrp
  if st then
    return st
  end
  local hostport = ep:address("tcp") or ep:address()
  local host = hostport and (hostport:match("^%[(.-)%]") or hostport:match("^([^:]+)"))
  if not host or host == "0.0.0.0" or host == "::" then
    host = ep.msrp_host or "127.0.0.1"
  end
  st = { sessions = {}, host = host, max_size = ep.msrp_max_size or msrp.MAX_SIZE,
    bound = setmetatable({}, { __mode = "k" }) }
  local function accept(conn)
    conn:handlers { frame = function(c, f) unbound_frame(st, c, f) end }
    -- a connection no session takes within the bind time is closed: idle sockets from
    -- anyone who found the port must not pile up
    sched.loop:timer(math.floor(msrp.BIND_TIMEOUT * 1000), function()
      if not st.bound[conn] then
        conn:close()
      end
    end)
  end
  local l, err = core.msrp_listen(sched.loop, host, 0, accept, st.max_size)
  if not l then
    error("MSRP: cannot listen on " .. host .. ": " .. tostring(err))
  end
  st.listener = l
  st.port = select(2, l:address())
  -- TLS (msrps:, TCP/TLS/MSRP): ep.msrp_tls = { cert =, key = } for a listener of its own,
  -- ca = (and verify =) for the connections we open
  local tls = ep.msrp_tls
  if tls then
    st.tls_client = assert(core.msrp_tls { ca = tls.ca, verify = tls.verify })
    if tls.cert then
      st.tls_server = assert(core.msrp_tls { cert = tls.cert, key = tls.key, verify = false })
      local tl, terr = core.msrp_listen(sched.loop, host, 0, accept, st.max_size, st.tls_server)
      if not tl then
        error("MSRP: cannot listen on " .. host .. " (TLS): " .. tostring(terr))
      end
      st.tls_listener = tl
      st.tls_port = select(2, tl:address())
    end
  end
  ep._msrp = st
  return st
end

--- msrp.address(ep) -> host, port of the endpoint's MSRP listener (opened on first use)
function msrp.address(ep)
  local st = state(ep)
  return st.host, st.port
end

-- Sessions --------------------------------------------------------------------------------

-- tls: the session runs over TLS (msrps: URIs, the TLS listener's port)
local function new_session(ep, opts, tls)
  opts = opts or {}
  local st = state(ep)
  local id = core.msrp_id(20)
  local h = st.host:find(":", 1, true) and ("[" .. st.host .. "]") or st.host
  if tls and not st.tls_port then
    error("MSRP over TLS needs ep.msrp_tls = { cert =, key = }")
  end
  local s = setmetatable({
    ep = ep, st = st, id = id, opts = opts, tls = tls or false,
    port = tls and st.tls_port or st.port,
    local_uri = ("%s://%s:%d/%s;tcp"):format(tls and "msrps" or "msrp", h,
      tls and st.tls_port or st.port, id),
    state = "new", txns = {}, inbox = {}, readers = {}, partial = {}, reports = {},
    ready = {}, dropped = 0, npartial = 0,
    max_size = opts.max_size or st.max_size,
    chunk = opts.chunk_size or msrp.CHUNK,
    txn_timeout = opts.txn_timeout or msrp.TXN_TIMEOUT,
    idle_timeout = opts.idle_timeout or msrp.IDLE_TIMEOUT,
    accept_types = opts.accept_types,
  }, Session)
  st.sessions[id] = s
  return s
end

function Session:__tostring()
  return ("sip.msrp.session %s (%s)"):format(self.local_uri, self.state)
end

local function wake_all(list, ...)
  for i = 1, #list do
    list[i](...)
  end
end

-- Our a=path: the relay's Use-Path (RFC 4976 §6), then our own URI.
function Session:_path()
  if self.relay_path then
    return table.concat(self.relay_path, " ") .. " " .. self.local_uri
  end
  return self.local_uri
end

function Session:_set_remote(m)
  self.remote_path = m.path
  -- RFC 4976 §7: what we send goes through our relays, then along the peer's path
  self.to_path = (self.relay_path and (table.concat(self.relay_path, " ") .. " ") or "") ..
    table.concat(m.path, " ")
  self.peer_max_size = m.max_size
  self.peer_accept_types = m.accept_types
end

function Session:_bind(conn)
  self.conn = conn
  self.st.bound[conn] = true
  conn:handlers {
    frame = function(_, f) self:_frame(f) end,
    closed = function(_, why) self:_lost(why) end,
  }
  if self.state ~= "closed" then
    self.state = "open"
  end
  local r = self.ready
  self.ready = {}
  wake_all(r, true)
end

-- RFC 4975 §5.4 / RFC 6135: the active side connects to the first URI of the peer's path
-- and sends a SEND at once (without a body) so that the passive side knows the connection.
function Session:_connect()
  local u = msrp.parse_uri(self.remote_path[1])
  if not u then
    return self:_lost("bad MSRP path " .. tostring(self.remote_path[1]))
  end
  local tls = u.scheme == "msrps" and self.st.tls_client
  if u.scheme == "msrps" and not tls then
    return self:_lost("an msrps: path and no ep.msrp_tls")
  end
  local conn, err = core.msrp_connect(sched.loop, u.host, u.port, {
    connected = function(c, cerr)
      if cerr then
        return self:_lost("connect: " .. cerr)
      end
      self:_bind(c)
      local tid = core.msrp_id(12)
      self.txns[tid] = function() end
      c:send(core.msrp_build { tid = tid, method = "SEND", to_path = self.to_path,
        from_path = self.local_uri, message_id = core.msrp_id(12), range_start = 1,
        range_end = 0, range_total = 0 })
    end,
  }, self.st.max_size, tls or nil)
  if not conn then
    self:_lost("connect: " .. tostring(err))
  end
end

local function header_of(f, name)
  name = name:lower()
  for _, h in ipairs(f and f.headers or {}) do
    if h[1]:lower() == name then
      return h[2]
    end
  end
end

-- One request on the connection and its response: code, comment, frame (408 after
-- txn_timeout seconds without one).
function Session:_transaction(t)
  local tid = core.msrp_id(12)
  t.tid = tid
  return sched.await(function(wake)
    local timer = sched.loop:timer(math.floor(self.txn_timeout * 1000), function()
      self.txns[tid] = nil
      wake(408, "no response")
    end)
    self.txns[tid] = function(code, comment, f)
      timer:cancel()
      wake(code, comment, f)
    end
    local ok, err = self.conn:send(assert(core.msrp_build(t)))
    if not ok then
      self.txns[tid] = nil
      timer:cancel()
      wake(408, err)
    end
  end)
end

--- RFC 4976 §5: a session through our relay. relay = { uri = "msrp://host:port;tcp",
-- user =, password =, expires = }: we connect to it and AUTH (answering its digest
-- challenge); its 200 gives the Use-Path our a=path starts with. The connection to the
-- relay then carries the session both ways.
function Session:_use_relay(relay)
  local scheme, host, port = tostring(relay.uri):match("^(msrps?)://%[?([^%]/;]+)%]?:(%d+)")
  if not host then
    return nil, "bad relay URI " .. tostring(relay.uri)
  end
  local tls = scheme == "msrps" and self.st.tls_client
  if scheme == "msrps" and not tls then
    return nil, "an msrps: relay and no ep.msrp_tls"
  end
  local conn, cerr = sched.await(function(wake)
    local c, err = core.msrp_connect(sched.loop, host, tonumber(port), {
      connected = function(cn, e)
        if e then
          wake(nil, e)
        else
          wake(cn)
        end
      end,
    }, self.st.max_size, tls or nil)
    if not c then
      wake(nil, err)
    end
  end)
  if not conn then
    return nil, "relay: " .. tostring(cerr)
  end
  self:_bind(conn)
  local expires = relay.expires and ("Expires: " .. math.floor(relay.expires) .. "\r\n") or ""
  local req = { method = "AUTH", to_path = relay.uri, from_path = self.local_uri,
    extra = expires ~= "" and expires or nil }
  local code, comment, f = self:_transaction(req)
  if code == 401 and relay.user then
    local challenge = header_of(f, "WWW-Authenticate")
    local cred, aerr = challenge and require("sip.auth").authorization(challenge,
      { user = relay.user, password = relay.password or "", method = "AUTH", uri = relay.uri })
    if not cred then
      return nil, "relay AUTH: " .. tostring(aerr or "401 without a challenge")
    end
    req.extra = "Authorization: " .. cred .. "\r\n" .. expires
    code, comment, f = self:_transaction(req)
  end
  if code ~= 200 then
    return nil, ("relay AUTH: %s %s"):format(tostring(code), tostring(comment or ""))
  end
  local use = path_list(header_of(f, "Use-Path"))
  if #use == 0 then
    return nil, "relay AUTH: 200 without Use-Path"
  end
  self.relay_path = use
  self.relay_expires = tonumber(header_of(f, "Expires") or "")
  return true
end

function Session:_wait_ready(timeout)
  if self.conn then
    return true
  end
  if self.closed then
    return nil, self.why or "closed"
  end
  return sched.await(function(wake)
    local t = sched.loop:timer(math.floor(timeout * 1000), function()
      wake(nil, "no MSRP connection within " .. timeout .. " s")
    end)
    self.ready[#self.ready + 1] = function(ok, why)
      t:cancel()
      wake(ok, why)
    end
  end)
end

-- The connection is gone: pending sends fail, a message not whole is dropped (never
-- delivered in part), readers learn it, the SIP session is ended.
function Session:_lost(why)
  self.conn = nil
  self.why = self.why or why
  local txns = self.txns
  self.txns = {}
  for _, cb in pairs(txns) do
    cb(408, "connection closed: " .. tostring(why))
  end
  for mid, p in pairs(self.partial) do
    if p.timer then
      p.timer:cancel()
    end
    self:_forget(mid)
    self.dropped = self.dropped + 1
  end
  local r = self.ready
  self.ready = {}
  wake_all(r, nil, "connection closed: " .. tostring(why))
  if not self.closed then
    sched.spawn(function() self:close() end)
  end
end

function Session:_accepts(ct)
  local types = self.accept_types
  if not types then
    return true
  end
  local base = ct:match("^%s*([^;%s]+)"):lower()
  for _, t in ipairs(types) do
    t = t:lower()
    if t == "*" or t == base or (t:sub(-2) == "/*" and base:sub(1, #t - 1) == t:sub(1, -2)) then
      return true
    end
  end
  return false
end

function Session:_deliver(m)
  if m.content_type and m.content_type:lower():match("^%s*message/cpim") then
    m.cpim = cpim.parse(m.body)
  end
  local r = table.remove(self.readers, 1)
  if r then
    r(m)
  else
    self.inbox[#self.inbox + 1] = m
  end
  if self.on_message then
    sched.spawn(self.on_message, m, self)
  end
end

-- §7.1.2: a SEND gets its response; its chunk goes to the message's assembler.
function Session:_forget(mid)
  if self.partial[mid] then
    self.partial[mid] = nil
    self.npartial = self.npartial - 1
  end
end

function Session:_on_send(f)
  local conn = self.conn
  local function answer(code)
    respond_frame(conn, f, code, self.local_uri)
  end
  local body = f.body
  if body == "" and not f.content_type then
    return answer(200)   -- the empty SEND that binds a connection, or a keep-alive
  end
  local mid = f.message_id
  if not mid then
    return answer(400)
  end
  if f.content_type and not self:_accepts(f.content_type) then
    return answer(415)
  end
  local p = self.partial[mid]
  if not p then
    if self.npartial >= msrp.MAX_PARTIAL then
      return answer(413)
    end
    self.npartial = self.npartial + 1
    p = { asm = core.msrp_assembler(self.max_size, msrp.MAX_CHUNKS),
      content_type = f.content_type, success = f.success_report }
    self.partial[mid] = p
  end
  local r, x = p.asm:add(f.range_start or 1, f.range_end or -1, f.range_total or -1, body,
    f.flag)
  if p.timer then
    p.timer:cancel()
    p.timer = nil
  end
  if r == nil or r == "aborted" then
    self:_forget(mid)
    return answer(x or 200)
  end
  p.content_type = p.content_type or f.content_type
  if r == "more" then
    answer(200)
    p.timer = sched.loop:timer(math.floor(self.idle_timeout * 1000), function()
      if self.partial[mid] == p then
        self:_forget(mid)
        self.dropped = self.dropped + 1
      end
    end)
    return
  end
  self:_forget(mid)
  if #self.inbox >= msrp.MAX_INBOX then
    self.dropped = self.dropped + 1
    return answer(413)
  end
  answer(200)
  if p.success == "yes" and self.conn then
    -- §7.1.2: the Success-Report when the whole message arrived
    self.conn:send(core.msrp_build { tid = core.msrp_id(12), method = "REPORT",
      to_path = f.from_path, from_path = self.local_uri, message_id = mid,
      range_start = 1, range_end = #x, range_total = #x, status_header = "000 200 OK" })
  end
  self:_deliver { body = x, content_type = p.content_type or "text/plain", message_id = mid }
end

function Session:_on_report(f)
  local w = self.reports[f.message_id or ""]
  if not w then
    return
  end
  local code = tonumber((f.status_header or ""):match("^%d%d%d%s+(%d%d%d)") or "") or 0
  w(code, (f.status_header or ""):match("^%d+%s+%d+%s*(.*)$"))
end

function Session:_frame(f)
  if not f.method then   -- a response
    local cb = self.txns[f.tid]
    if cb then
      self.txns[f.tid] = nil
      cb(f.status, f.comment, f)
    end
    return
  end
  local to = path_list(f.to_path)
  local u = msrp.parse_uri(to[#to])
  if not u or u.id ~= self.id then
    if f.method ~= "REPORT" then
      respond_frame(self.conn, f, 481, self.local_uri)
    end
    return
  end
  if f.method == "SEND" then
    return self:_on_send(f)
  elseif f.method == "REPORT" then
    return self:_on_report(f)
  end
  respond_frame(self.conn, f, 501, self.local_uri)
end

-- "<uri>" of a URI, a name-addr or a header value with parameters
local function angle(v)
  if not v then
    return nil
  end
  return "<" .. (v:match("<(.-)>") or v:match("^%s*([^;%s]+)")) .. ">"
end

local function cpim_wrap(s, text, content_type)
  return cpim.build { from = angle(s.local_aor), to = angle(s.remote_aor), datetime = true,
    content_type = content_type or "text/plain;charset=UTF-8", body = text }, "message/cpim"
end

--- s:send(text [, content_type] [, opts]) -> true | nil, reason, code   (yields)
-- Chunks of s.chunk bytes under one Message-ID, all sent at once; returns when every chunk
-- got its 200 (and, with opts.success_report, the peer's Success-Report REPORT came).
-- opts.cpim wraps the text in message/cpim (RFC 3862). A failure: the peer's error code
-- (413 past its a=max-size, 415, ...), or 408 when a response did not come within
-- s.txn_timeout seconds or the connection closed before it.
function Session:send(text, content_type, opts)
  opts = opts or {}
  if self.state == "offered" then
    local ok, err = self:accept()
    if not ok then
      return nil, err
    end
  end
  if self.closed then
    return nil, "session closed"
  end
  local ok, err = self:_wait_ready(msrp.BIND_TIMEOUT)
  if not ok then
    return nil, err
  end
  text = tostring(text or "")
  if opts.cpim then
    text, content_type = cpim_wrap(self, text, content_type)
  end
  content_type = content_type or "text/plain;charset=UTF-8"
  local total, chunk = #text, self.chunk
  local n = total == 0 and 1 or (total + chunk - 1) // chunk
  local mid = core.msrp_id(16)
  local success = opts.success_report
  return sched.await(function(wake)
    local left, finished, timer = n, false, nil
    local tids = {}
    local function finish(okk, reason, code)
      if finished then
        return
      end
      finished = true
      if timer then
        timer:cancel()
      end
      for _, t in ipairs(tids) do
        self.txns[t] = nil
      end
      self.reports[mid] = nil
      wake(okk, reason, code)
    end
    local function watchdog()
      if timer then
        timer:cancel()
      end
      timer = sched.loop:timer(math.floor(self.txn_timeout * 1000), function()
        timer = nil
        finish(nil, "408 no response within " .. self.txn_timeout .. " s", 408)
      end)
    end
    if success then
      self.reports[mid] = function(code, comment)
        if code == 200 then
          finish(true)
        else
          finish(nil, code .. " " .. tostring(comment or REASONS[code] or ""), code)
        end
      end
    end
    watchdog()
    -- frames go to the connection in batches of about BATCH bytes: one write each
    local batch, batched = {}, 0
    local function flush()
      if #batch == 0 then
        return true
      end
      local sent, serr = self.conn and self.conn:send(table.concat(batch))
      batch, batched = {}, 0
      if not sent then
        finish(nil, "408 connection closed: " .. tostring(serr or self.why), 408)
      end
      return sent
    end
    for i = 1, n do
      local a = (i - 1) * chunk + 1
      local b = math.min(i * chunk, total)
      local tid = core.msrp_id(12)
      tids[#tids + 1] = tid
      self.txns[tid] = function(code, comment)
        if code ~= 200 then
          return finish(nil, code .. " " .. (comment or REASONS[code] or ""), code)
        end
        left = left - 1
        watchdog()
        if left == 0 and not success then
          finish(true)
        end
      end
      local frame = core.msrp_build { tid = tid, method = "SEND", to_path = self.to_path,
        from_path = self.local_uri, message_id = mid, success_report = success and "yes" or nil,
        range_start = a, range_end = b, range_total = total, content_type = content_type,
        body = text:sub(a, b), flag = i == n and "$" or "+" }
      batch[#batch + 1] = frame
      batched = batched + #frame
      if (batched >= BATCH or i == n) and not flush() then
        break
      end
      if finished then
        break
      end
    end
  end)
end

--- s:receive([timeout]) -> text, content_type, msg | nil, why   (yields)
-- msg = { body=, content_type=, message_id=, cpim= (parsed, for message/cpim) }. Only whole
-- messages come out; one the connection lost in the middle never does.
function Session:receive(timeout)
  if self.state == "offered" then
    local ok, err = self:accept()
    if not ok then
      return nil, err
    end
  end
  local m = table.remove(self.inbox, 1)
  if not m then
    if self.closed then
      return nil, "closed"
    end
    m = sched.await(function(wake)
      local t
      local function w(x)
        if t then
          t:cancel()
        end
        wake(x)
      end
      self.readers[#self.readers + 1] = w
      if timeout then
        t = sched.loop:timer(math.floor(timeout * 1000), function()
          for i, r in ipairs(self.readers) do
            if r == w then
              table.remove(self.readers, i)
            end
          end
          wake(false)
        end)
      end
    end)
    if not m then
      return nil, m == false and "timeout" or "closed"
    end
  end
  return m.body, m.content_type, m
end

function Session:_drop()
  self.closed = true
  self.state = "closed"
  self.st.sessions[self.id] = nil
end

--- s:close(): BYE (when the dialog is up) and the connection closed once its bytes are out
function Session:close()
  if self.closed then
    return
  end
  if self.state == "offered" then
    return self:refuse(603)
  end
  self:_drop()
  local txns = self.txns
  self.txns = {}
  for _, cb in pairs(txns) do
    cb(408, "session closed")
  end
  local readers = self.readers
  self.readers = {}
  wake_all(readers, nil)
  local r = self.ready
  self.ready = {}
  wake_all(r, nil, "session closed")
  if self.conn then
    local c = self.conn
    self.conn = nil
    c:close(true)
  end
  local d = self.dialog
  if d and d.state ~= "terminated" then
    d:bye()
  end
end

function Session:_watch_dialog()
  local d = self.dialog
  sched.spawn(function()
    local why = d:wait()
    if not self.closed then
      self.why = self.why or why
      self:close()
    end
  end)
end

-- UAS: an offer, then accept or refuse -----------------------------------------------------

--- msrp.offered(req [, opts]) -> session in state "offered" | nil, why (after a 488)
-- req: an INVITE with an m=message offer. opts: max_size, accept_types, chunk_size,
-- txn_timeout, idle_timeout.
function msrp.offered(req, opts)
  local offer = req.body ~= "" and sdp.parse(req.body)
  local m = offer and offer:msrp()
  local st = m and state(req._ep)
  if not m or #m.path == 0 or (m.tls and not st.tls_port) then
    req:reply(488)
    return nil, m and "an MSRP offer over TLS and no ep.msrp_tls" or "no MSRP offer"
  end
  local s = new_session(req._ep, opts, m.tls)
  s:_set_remote(m)
  s.state = "offered"
  s.request = req
  local from, to = req:addr("From"), req:addr("To")
  s.remote_aor, s.local_aor = from and from.uri, to and to.uri
  s.offer_setup = m.setup
  return s
end

--- s:accept() -> s | nil, why: the 200 with our answer (then yields for the ACK), and the
-- connection (RFC 6135: we connect when the offer was actpass or passive)
function Session:accept()
  if self.state ~= "offered" then
    return self.closed and nil or self, self.closed and "closed" or nil
  end
  self.state = "accepting"
  local setup = sdp.msrp_setup(self.offer_setup)
  local relay = self.opts.relay
  if relay then
    local ok, err = self:_use_relay(relay)
    if not ok then
      self:_drop()
      self.request:reply(503)
      return nil, err
    end
    setup = "active"   -- we reach our relay; the peer reaches it too (RFC 4976 §6)
    self.to_path = table.concat(self.relay_path, " ") .. " " .. self.to_path
  end
  local answer = sdp.msrp { address = self.st.host, port = self.port, path = self:_path(),
    setup = setup, max_size = self.max_size, accept_types = self.accept_types, tls = self.tls }
  local call, err = self.request:answer(200, { sdp = tostring(answer) })
  if not call then
    self:_drop()
    return nil, err
  end
  self.dialog = call
  self:_watch_dialog()
  if setup == "active" and not relay then
    self:_connect()
  end
  local ok, werr = self:_wait_ready(self.opts.timeout or msrp.BIND_TIMEOUT)
  if not ok then
    self:close()
    return nil, werr
  end
  return self
end

--- s:refuse([code]) : the offered session declined (default 603)
function Session:refuse(code)
  if self.state ~= "offered" then
    return nil, "not an offered session"
  end
  self:_drop()
  return self.request:reply(code or 603)
end

--- msrp.accept(req [, opts]) -> session | nil, why: msrp.offered, then s:accept()
function msrp.accept(req, opts)
  local s, err = msrp.offered(req, opts)
  if not s then
    return nil, err
  end
  return s:accept()
end

--- msrp.is_offer(req) -> whether req is an INVITE whose body offers an MSRP session
function msrp.is_offer(req)
  if req.method ~= "INVITE" or req.body == "" then
    return false
  end
  local ct = req:header("Content-Type")
  if ct and not ct:lower():find("application/sdp", 1, true) then
    return false
  end
  return req.body:find("m=message", 1, true) ~= nil and
    (req.body:find("TCP/MSRP", 1, true) or req.body:find("TCP/TLS/MSRP", 1, true)) ~= nil
end

-- UAC ----------------------------------------------------------------------------------------

--- ep:chat(to [, opts]) -> session, 2xx | nil, final response | nil, err   (yields)
-- opts: from, to, user, password, headers, target, timeout (for the INVITE) and max_size,
-- accept_types, chunk_size, txn_timeout, idle_timeout, relay (for the session); tls = true
-- offers TCP/TLS/MSRP (msrps: paths; needs ep.msrp_tls = { cert =, key =, ca = }).
function Endpoint:chat(to, opts)
  opts = opts or {}
  local s = new_session(self, opts, opts.tls)
  if opts.relay then
    local ok, err = s:_use_relay(opts.relay)
    if not ok then
      s:close()
      return nil, err
    end
  end
  local offer = sdp.msrp { address = s.st.host, port = s.port, path = s:_path(),
    setup = opts.relay and "active" or "actpass", max_size = s.max_size,
    accept_types = s.accept_types, tls = s.tls }
  local call, res = self:call(to, { sdp = tostring(offer), from = opts.from, to = opts.to,
    user = opts.user, password = opts.password, headers = opts.headers, target = opts.target,
    timeout = opts.timeout })
  if not call then
    s:_drop()
    return nil, res
  end
  s.dialog = call
  s.local_aor, s.remote_aor = call.local_uri, call.remote_uri
  local answer = sdp.parse(call.remote_sdp or "")
  local m = answer and answer:msrp()
  if not m or #m.path == 0 then
    s:close()
    return nil, "no MSRP session in the answer"
  end
  s:_set_remote(m)
  s:_watch_dialog()
  -- RFC 6135 §4.1: we offered actpass, the answerer picks; with no a=setup the answerer
  -- connects (RFC 4975 §5.4)
  if m.setup == "passive" and not s.relay_path then
    s:_connect()
  end
  local ok, err = s:_wait_ready(opts.bind_timeout or msrp.BIND_TIMEOUT)
  if not ok then
    s:close()
    return nil, err
  end
  return s, res
end

-- The MESSAGE handler over both models ----------------------------------------------------

-- A message that came in a session, as the MESSAGE handler sees it.
local SessionMessage = {}
SessionMessage.__index = SessionMessage
msrp.SessionMessage = SessionMessage

function SessionMessage:header(name)
  local n = name:lower()
  if n == "content-type" or n == "c" then
    return self.content_type
  end
  return self.invite:header(name)
end

function SessionMessage:headers(name)
  local n = name:lower()
  if n == "content-type" or n == "c" then
    return { self.content_type }
  end
  return self.invite:headers(name)
end

function SessionMessage:addr(name)
  return self.invite:addr(name)
end

-- The message was acknowledged chunk by chunk already (MSRP 200s); a reply code is noted.
function SessionMessage:reply(code)
  self.replied_final = (code or 200) >= 200
  self.status = code
  return true
end

--- req:respond(text [, content_type]) in a session: a SEND in it, or, when the session has
-- ended meanwhile, a new session to the sender
function SessionMessage:respond(text, content_type)
  local s = self.session
  if not s.closed then
    return s:send(text, content_type)
  end
  return self.ep:message(self.from_uri, text, { mode = "session",
    content_type = content_type, from = self.to_uri })
end

local function session_message(s, m)
  local inv = s.request
  local from, to = inv:addr("From"), inv:addr("To")
  return setmetatable({ method = "MESSAGE", body = m.body, content_type = m.content_type,
    cpim = m.cpim, message_id = m.message_id, session = s, invite = inv, ep = s.ep,
    call_id = inv.call_id, uri = inv.uri, source = inv.source,
    from_uri = from and from.uri, to_uri = to and to.uri }, SessionMessage)
end

--- req:respond(text [, content_type]) for a MESSAGE: a MESSAGE back to its sender, From
-- and To swapped (the pager model, as it came)
function msg_methods.respond(req, text, content_type)
  local from, to = req:addr("From"), req:addr("To")
  return req._ep:message(from.uri, text, { mode = "pager", content_type = content_type,
    from = to and to.uri })
end

-- An INVITE to this endpoint: MSRP offers go to the chat handler, or else to the MESSAGE
-- handler's session mode; anything else to the INVITE handler set with ep:on, the router,
-- or the default answer.
local function on_invite(req)
  local ep = req._ep
  if not req.dialog and msrp.is_offer(req) then
    if ep._chat_handler then
      local s = msrp.offered(req, ep.msrp_options)
      if not s then
        return
      end
      ep._chat_handler(s, req)
      if s.state == "offered" then
        s:accept()   -- the handler kept the session without a word: it is taken
      end
      return
    end
    if ep.handlers.MESSAGE then
      local s = msrp.accept(req, ep.msrp_options)
      if not s then
        return
      end
      local fn = ep.handlers.MESSAGE
      s.on_message = function(m)
        local r = session_message(s, m)
        local ok, err = xpcall(fn, debug.traceback, r)
        if not ok then
          ep:_log("error", "MESSAGE handler (session %s): %s", s.id, tostring(err))
        end
      end
      -- messages that came before the handler was set
      for _, m in ipairs(s.inbox) do
        sched.spawn(s.on_message, m)
      end
      s.inbox = {}
      return
    end
  end
  if ep._invite_handler then
    return ep._invite_handler(req)
  end
  if req.dialog then
    local d = req.dialog
    if d.local_sdp then
      return req:answer(200, { sdp = d.local_sdp })
    end
    return req:reply(488)
  end
  if ep.router then
    if ep.core:preprocess(req) == nil then
      return req:reply(400, "Bad Route")
    end
    return ep.router(req)
  end
  return ep:_default(req)
end

local base_on = Endpoint.on

function Endpoint:on(method, fn)
  if method == "chat" then
    assert(type(fn) == "function", "ep:on: function expected")
    self._chat_handler = fn
    return base_on(self, "INVITE", on_invite)
  end
  if method == "INVITE" and fn ~= on_invite then
    self._invite_handler = fn
    if self._chat_handler or self.handlers.MESSAGE then
      return self
    end
  end
  base_on(self, method, fn)
  if method == "MESSAGE" and self.handlers.INVITE ~= on_invite then
    self._invite_handler = self._invite_handler or self.handlers.INVITE
    base_on(self, "INVITE", on_invite)
  end
  return self
end

-- ep:message over both models ---------------------------------------------------------------

local pager_message = Endpoint.message

--- ep:message(to, text [, opts]) -> final response | nil, err   (yields)
-- opts.mode: "auto" (default: the pager model up to msrp.PAGER_LIMIT bytes of body, a
-- session past it), "pager" (one MESSAGE whatever the size) or "session" (INVITE with an
-- MSRP offer, SEND in chunks, BYE; returns the INVITE's 2xx once the peer acknowledged
-- every chunk). opts.cpim wraps the text in message/cpim first. Other opts as before.
function Endpoint:message(to, text, opts)
  opts = opts or {}
  local body, ct = tostring(text or ""), opts.content_type
  if opts.cpim then
    local from = opts.from or self:uri(opts.user or "luasip")
    body = cpim.build { from = angle(from), to = angle(to), datetime = true, content_type = ct or "text/plain;charset=UTF-8",
      body = body }
    ct = "message/cpim"
  end
  local mode = opts.mode or "auto"
  assert(mode == "auto" or mode == "pager" or mode == "session",
    "ep:message: mode is auto, pager or session")
  if mode == "pager" or (mode == "auto" and #body <= msrp.PAGER_LIMIT) then
    local o = {}
    for k, v in pairs(opts) do
      o[k] = v
    end
    o.content_type = ct
    return pager_message(self, to, body, o)
  end
  local s, res = self:chat(to, opts)
  if not s then
    if type(res) == "string" or res == nil then
      return nil, res
    end
    return res   -- the INVITE's final response, as a MESSAGE's would be
  end
  local ok, err = s:send(body, ct or "text/plain;charset=UTF-8")
  s:close()
  if not ok then
    return nil, err
  end
  return res
end

-- ep:close() closes the sessions and the MSRP listener too
local base_close = Endpoint.close

function Endpoint:close()
  local st = self._msrp
  if st then
    self._msrp = nil
    for _, s in pairs(st.sessions) do
      if s.conn then
        s.conn:close()
        s.conn = nil
      end
      s:_drop()
    end
    st.listener:close()
    if st.tls_listener then
      st.tls_listener:close()
    end
  end
  return base_close(self)
end

return msrp
