--- sip.registrar: REGISTER processing of RFC 3261 §10.3 over a location store.
-- The store is a small interface (get/put/delete/expire) so memory, a file or a database fit.
local sip = require "sip"

local registrar = {}

-- Location stores ---------------------------------------------------------------------------

--- sip.registrar.memory() -> the memory store of sip.store (get/put/delete/expire/aors).
-- A binding b is { uri=, key=, q=, expires_at=, call_id=, cseq=, updated=, source=, path=,
-- params=, flow=, conn= }.
-- A store keeps one binding per (aor, b.key): b.key is registrar.contact_key(b.uri), so a
-- refresh that spells its Contact differently replaces the binding; b.uri stays as the UA
-- sent it. delete(aor, key) takes that key (no key: every binding of aor). Any store of
-- sip.store fits (SQLite, Redis): their calls may yield, and fail with nil, reason.
function registrar.memory()
  return require("sip.store").memory()
end

-- Contact keys ---------------------------------------------------------------------------

-- The uri-parameters that make two SIP URIs differ when only one of them has it (§19.1.4),
-- in the order a key lists them.
local MATCHED_PARAMS = { "user", "ttl", "method", "maddr", "transport" }

-- %XX for every byte outside a small safe set: ':', '@', ';', '=', '?' and '&' in a key are
-- then always separators, so two URIs that differ never share a key (user "a:b" is not
-- user "a" with password "b").
local function key_escape(s)
  return (s:gsub("[^%w%-_%.!~%*'%(%)%+]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- sip.uri.parse unescapes user, password and header values, not param values or header names
local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

-- "user[:password]@": case-sensitive after unescaping (§19.1.4)
local function userinfo_key(u)
  if not u.user then
    return ""
  end
  local pw = u.password and (":" .. key_escape(u.password)) or ""
  return key_escape(u.user) .. pw .. "@"
end

-- Values compare case-insensitively except method's: method names are case-sensitive (§7.1).
local function params_key(params)
  local out = {}
  for _, name in ipairs(MATCHED_PARAMS) do
    local v = params[name]
    if v == true then
      out[#out + 1] = ";" .. name
    elseif v then
      v = unescape(v)
      out[#out + 1] = ";" .. name .. "=" .. key_escape(name == "method" and v or v:lower())
    end
  end
  return table.concat(out)
end

-- Header names are case-insensitive and their order does not matter; values are compared as
-- sent (§19.1.4 leaves them to each header field's rules).
local function headers_key(headers)
  local out = {}
  for name, v in pairs(headers) do
    out[#out + 1] = key_escape(unescape(name):lower()) .. "=" .. key_escape(v)
  end
  if #out == 0 then
    return ""
  end
  table.sort(out)
  return "?" .. table.concat(out, "&")
end

--- sip.registrar.contact_key(uri) -> string, equal for two Contact URIs that match by the
-- URI comparison rules (§10.3 step 7, §19.1.4): scheme and host case-insensitive, user and
-- password case-sensitive after unescaping, a port in one URI only makes them differ, and so
-- do user/ttl/method/maddr/transport and the URI headers. Other params are left out: they
-- count only when both URIs have them, and then this takes two contacts that differ only in
-- such a param (;ob vs ;ob=1) as one binding, a deliberate simplification.
-- A URI that is not sip:/sips: is its own key, compared as sent.
function registrar.contact_key(uri)
  local u = sip.uri.parse(uri)
  if not u or (u.scheme ~= "sip" and u.scheme ~= "sips") or not u.host then
    return uri
  end
  local port = u.port and (":" .. u.port) or ""
  return u.scheme .. ":" .. userinfo_key(u) .. u.host:lower() .. port .. params_key(u.params)
    .. headers_key(u.headers)
end

-- Registrar ------------------------------------------------------------------------------

local Registrar = {}
Registrar.__index = Registrar

-- §21.5.4: a store that failed (Redis down) is a server error that passes; the client may
-- try again after this many seconds.
local RETRY_AFTER = 5

-- Address-of-record key: scheme:user@host, case-folded where SIP says it is insensitive.
-- The scheme stays: a SIP and a SIPS URI are never equivalent (§19.1.4), and a sips: AOR
-- must not reach bindings made for the sip: one.
function registrar.aor(uri)
  local u = type(uri) == "table" and uri or sip.uri.parse(uri)
  local scheme = u and u.scheme and u.scheme:lower()
  if (scheme ~= "sip" and scheme ~= "sips") or not u.host then
    return nil
  end
  return scheme .. ":" .. (u.user and (u.user .. "@") or "") .. u.host:lower()
end

--- sip.registrar.new{ store=, min_expires=60, max_expires=3600, default_expires=3600,
---                    domains={...} (nil: any), clock=function() return os.time() end,
---                    endpoint= }
-- endpoint: the sip.endpoint the REGISTERs come to. A binding registered over TCP or TLS
-- is then reached over its connection (b.conn, see ep:flow) while that is open; once it
-- closes, the binding goes at the next lookup (the phone cannot be connected to).
function registrar.new(opts)
  opts = opts or {}
  return setmetatable({
    store = opts.store or registrar.memory(),
    min_expires = opts.min_expires or 60,
    max_expires = opts.max_expires or 3600,
    default_expires = opts.default_expires or 3600,
    domains = opts.domains,
    clock = opts.clock or os.time,
    version = 0,   -- bumped when a binding changes: targets() keeps its lists until then
    on_change = opts.on_change,
    canonical = opts.canonical,   -- fn(uri table) -> uri table: map aliases to one domain
    endpoint = opts.endpoint,
  }, Registrar)
end

-- The index holds_contact answers from: contact_key -> { [aor .. "\0" .. binding key] =
-- expires_at }. This registrar's own writes update it as they go; it is made again from the
-- store (every binding: O(n)) only this often, which also drops what expired: a shared store
-- changes behind our back, so another instance's binding counts within
-- CONTACTS_REFRESH_SHARED seconds. (It was made again after every change: with 30 000
-- bindings a stray in-dialog request during a REGISTER load cost a second of the loop.)
local CONTACTS_REFRESH = 600
local CONTACTS_REFRESH_SHARED = 10

local function index_note(self, aor, bkey, uri, expires_at)
  local index = self._contacts
  if not index then
    return
  end
  local ck = registrar.contact_key(uri)
  local e = index[ck]
  if not e then
    if not expires_at then
      return
    end
    e = {}
    index[ck] = e
  end
  e[aor .. "\0" .. tostring(bkey or ck)] = expires_at
  if not expires_at and next(e) == nil then
    index[ck] = nil
  end
end

local function now_of(self)
  return self.clock()
end

--- registrar:lookup(aor [, canonical]) -> bindings (current only), highest q first
-- canonical: aor is already as registrar.aor makes it, "sip:user@host" or "sips:user@host"
-- (skips the parse)
function Registrar:lookup(aor, canonical)
  local key = canonical and aor or registrar.aor(aor) or aor
  local now = now_of(self)
  local out = {}
  local list, err = self.store:get(key)
  if list then
    if self.store.shared then
      self._last = self._last or {}
      self._last[key] = list
    end
  else
    -- the store failed: route on from the bindings last read (nil: none)
    list = self._last and self._last[key] or {}
    if self.on_store_error then
      self.on_store_error(err)
    end
  end
  local ep = self.endpoint
  for _, b in ipairs(list) do
    if b.conn and ep and not ep.core:conn_open(b.conn) then
      self.version = (self.version or 0) + 1   -- its flow failed: the binding goes
      self.store:delete(key, b.key)
      index_note(self, key, b.key, b.uri, nil)
    elseif b.expires_at > now then
      out[#out + 1] = b
    end
  end
  if #out > 1 then
    table.sort(out, function(a, b)
      if a.q ~= b.q then
        return a.q > b.q
      end
      return a.updated > b.updated
    end)
  end
  return out
end

--- sip.registrar.target(b) -> what req:relay takes for binding b: its Contact URI, or
-- { uri, route = "&lt;Path value&gt;, ...", flow = "sip:IP:PORT[;transport=tcp]" } when it was
-- registered through a Path or from another address than its Contact names (NAT, TCP).
function registrar.target(b)
  if not b.path and not b.flow then
    return b.uri
  end
  return { b.uri, route = b.path and table.concat(b.path, ", ") or nil, flow = b.flow }
end

--- registrar:targets(aor) -> { target, ... } of the live bindings in lookup order, each a
-- contact URI or a table as registrar.target gives;
-- aor as registrar.aor() makes it ("sip:user@host", "sips:user@host"), nil gives {}.
-- Kept between calls until a binding changes or the first of them expires: a proxy asks
-- this for every request. The list is shared: do not change it.
function Registrar:targets(aor)
  if aor == nil then
    return {}
  end
  local version = self.version or 0
  local cache = self._targets
  if not cache or self._targets_version ~= version then
    cache = {}
    self._targets, self._targets_version = cache, version
  end
  local now = self.clock()   -- now_of(self), one call less: this runs for every request
  local c = cache[aor]
  -- a shared store changes behind our back: read it every time
  if c and now < c.until_ and not self.store.shared and
      not (c.conns and self:_flow_failed(c.conns)) then
    return c.list
  end
  local list, until_, conns = {}, math.huge, nil
  for _, b in ipairs(self:lookup(aor, true)) do
    list[#list + 1] = registrar.target(b)
    if b.expires_at < until_ then
      until_ = b.expires_at
    end
    if b.conn then
      conns = conns or {}
      conns[#conns + 1] = b.conn
    end
  end
  if #list > 0 then
    cache[aor] = { list = list, until_ = until_, conns = conns }
  end
  return list
end

--- registrar:holds_contact(uri) -> true when uri is the Contact of a live binding (by the
-- URI comparison rules, as contact_key makes them)
function Registrar:holds_contact(uri)
  local index = self._contacts
  local now = now_of(self)
  local period = self.store.shared and CONTACTS_REFRESH_SHARED or CONTACTS_REFRESH
  if not index or now - self._contacts_at >= period then
    -- every binding in one call where the store offers it (a shared store: one round trip)
    local all = self.store.all and self.store:all()
    local aors = not all and self.store.aors and self.store:aors()
    if all or aors or not index then
      -- (a store that failed: keep the index of the last read, if any)
      self._contacts = {}
      if all then
        for aor, list in pairs(all) do
          for _, b in ipairs(list) do
            index_note(self, aor, b.key, b.uri, b.expires_at)
          end
        end
      elseif aors then
        for _, aor in ipairs(aors) do
          for _, b in ipairs(self:lookup(aor, true)) do
            index_note(self, aor, b.key, b.uri, b.expires_at)
          end
        end
      end
    end
    index, self._contacts_at = self._contacts, now
  end
  local e = index[registrar.contact_key(uri)]
  if e then
    for _, until_ in pairs(e) do
      if until_ > now then
        return true
      end
    end
  end
  return false
end

function Registrar:_flow_failed(conns)
  local core = self.endpoint.core
  for _, id in ipairs(conns) do
    if not core:conn_open(id) then
      return true
    end
  end
  return false
end

--- registrar:expire(): drop expired bindings now (a timer calls it periodically)
-- (no new version: what targets() and holds_contact() keep goes by the expiry times, so
-- dropping what expired changes none of their answers; a proxy reads its bindings again
-- when they change, not each time this runs)
function Registrar:expire()
  return self.store:expire(now_of(self))
end

local function reply(req, code, reason, headers)
  if req.reply then
    req:reply(code, reason, { headers = headers })
  end
  return code, reason, headers
end

-- The most an Expires value can say (§20.19); longer runs of digits mean as much, and
-- max_expires shortens it anyway.
local DELTA_MAX = 0xFFFFFFFF

-- delta-seconds = 1*DIGIT (§25.1) as a number, or nil for anything else: tonumber would
-- take "-5", "1e3" and "0x10". §20.19 says a malformed value SHOULD count as 3600; we
-- answer 400 instead, since granting an hour to a UA that sent expires=-5 (meaning, most
-- likely, "remove") keeps a binding it meant to drop.
local function delta_seconds(s)
  if type(s) ~= "string" or not s:match("^%d+$") then
    return nil
  end
  return math.min(tonumber(s), DELTA_MAX)
end

-- qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) (§25.1) as a number, or nil
local function qvalue(s)
  if type(s) ~= "string" then
    return nil
  end
  if s == "0" or s == "1" or s:match("^0%.%d?%d?%d?$") or s:match("^1%.0?0?0?$") then
    return tonumber(s)
  end
  return nil
end

-- The Contact's header params kept with its binding and echoed in the 200 (RFC 5626
-- +sip.instance and reg-id, RFC 3840 feature tags...): all but expires and q, which the
-- registrar writes itself. Sorted by name, quoted where the value is no token.
local function contact_params(params)
  local names = {}
  for name in pairs(params) do
    local l = name:lower()
    if l ~= "expires" and l ~= "q" then
      names[#names + 1] = name
    end
  end
  if #names == 0 then
    return nil
  end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local v = params[name]
    if v == true or v == "" then
      out[#out + 1] = ";" .. name
    elseif v:match("^[%w%-%.!%%%*_%+`'~]+$") then
      out[#out + 1] = ";" .. name .. "=" .. v
    else
      out[#out + 1] = ";" .. name .. '="' .. v:gsub('[\\"]', "\\%0") .. '"'
    end
  end
  return table.concat(out)
end

-- RFC 5626 §6: a Contact with +sip.instance (and reg-id) names one UA instance (one flow of
-- it): a REGISTER from the same instance replaces its binding, whatever URI it now sends
-- (a phone that restarted on another port or address). Else the URI's own key (§10.3).
local function binding_key(c)
  local inst = c.params["+sip.instance"]
  if type(inst) == "string" and inst ~= "" then
    local reg_id = c.params["reg-id"]
    return "instance:" .. inst .. (type(reg_id) == "string" and (";reg-id=" .. reg_id) or "")
  end
  return registrar.contact_key(c.uri)
end

-- Where a request for a binding goes besides its Contact (b.flow, a URI of the source),
-- RFC 3581 style as Kamailio's fix_nated_register does it. A REGISTER whose top Via names
-- another address than the one it came from crossed a NAT: its Contact names the NAT's
-- inside, so requests go to the address and port it came from (over UDP), or over the TCP
-- connection it came on. Over TCP the connection is taken too when the Contact is on the
-- source's own IP (the phone itself; its listening port may not be open to us); the core
-- uses a TCP flow only while that connection is open, else the Contact. nil otherwise: a
-- REGISTER sent from where its Via says (no NAT) is taken at its word, so a third party may
-- register someone else's Contact.
local function binding_flow(uri, req)
  local kind, ip, port = (req.source or ""):match("^(%a+):%[?(.-)%]?:(%d+)$")
  local u = sip.uri.parse(uri)
  local v = req:via(1)
  if kind == "ws" or kind == "wss" then
    -- RFC 7118 §5.2: a WebSocket client cannot be connected to (its Contact is often a
    -- .invalid host): requests for it go on its connection, at its peer address
    local h = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
    return "sip:" .. h .. ":" .. port .. ";transport=" .. kind
  end
  if not kind or not u or not u.host or not v or (u.scheme ~= "sip" and u.scheme ~= "sips") or
      (kind ~= "udp" and kind ~= "tcp") then
    return nil   -- (TLS: its own issue)
  end
  local unbracket = function(h) return (h:lower():gsub("^%[(.*)%]$", "%1")) end
  local host, via_host = unbracket(u.host), unbracket(v.host)
  port = tonumber(port)
  local natted = via_host ~= ip or (kind == "udp" and (tonumber(v.port) or 5060) ~= port)
  local flow
  if kind == "udp" then
    flow = natted and not (host == ip and (tonumber(u.port) or 5060) == port)
  else
    flow = natted or host == ip
  end
  if not flow then
    return nil
  end
  local h = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
  return "sip:" .. h .. ":" .. port .. (kind == "tcp" and ";transport=tcp" or "")
end

-- One Contact's update: its interval (its expires param, else the Expires header, else the
-- default; §10.3 step 7) and q, or nil and the error reply's code, reason and headers.
local function contact_update(self, c, expires_hdr)
  local e = expires_hdr or self.default_expires
  if c.params.expires ~= nil then
    e = delta_seconds(c.params.expires)
    if not e then
      return nil, 400, "Bad Expires"
    end
  end
  if e > 0 and e < self.min_expires then
    return nil, 423, nil, { ["Min-Expires"] = tostring(self.min_expires) }
  end
  local q = 1
  if c.params.q ~= nil then
    q = qvalue(c.params.q)
    if not q then
      return nil, 400, "Bad q value"
    end
  end
  return { uri = c.uri, key = binding_key(c), expires = math.min(e, self.max_expires),
    q = q, params = contact_params(c.params) }
end

local function contact_list(bindings, now)
  local vals = {}
  for _, b in ipairs(bindings) do
    local v = "<" .. b.uri .. ">" .. (b.params or "") .. ";expires=" ..
      math.max(0, b.expires_at - now)
    if b.q ~= 1 then
      v = v .. ";q=" .. b.q
    end
    vals[#vals + 1] = v
  end
  return vals
end

local function store_failed(self, req, err)
  if self.on_store_error then
    self.on_store_error(err)
  end
  return reply(req, 500, "Location store unavailable", { ["Retry-After"] = tostring(RETRY_AFTER) })
end

--- registrar:handle(req) -> code, reason, headers, aor: processes a REGISTER and replies
-- (§10.3 steps 1-8). A store that fails gets 500 with Retry-After.
function Registrar:handle(req)
  if req.method ~= "REGISTER" then
    return reply(req, 405, nil, { Allow = "REGISTER" })
  end
  -- step 1: the domain is ours
  local ruri = sip.uri.parse(req.uri)
  if self.domains and ruri and not self.domains[(ruri.host or ""):lower()] then
    return reply(req, 404, "Not Here")
  end
  -- step 4 (after auth by the caller): the AOR from To
  local to = req:addr("To")
  local tu = to and sip.uri.parse(to.uri)
  if tu and self.canonical then
    tu = self.canonical(tu)
  end
  local aor = tu and registrar.aor(tu)
  if not aor then
    return reply(req, 400, "Bad To URI (not sip:)")
  end
  local now = now_of(self)
  local contacts = req:headers("Contact")
  local expires_raw = req:header("Expires")
  local expires_hdr = delta_seconds(expires_raw)
  if expires_raw and not expires_hdr then
    return reply(req, 400, "Bad Expires")
  end
  local call_id, cseq = req.call_id, req.cseq

  -- step 6: Contact: * only with Expires 0 and alone
  local star = false
  for _, c in ipairs(contacts) do
    if c == "*" then
      star = true
    end
  end
  if star then
    if #contacts ~= 1 or expires_hdr ~= 0 then
      return reply(req, 400, "Invalid Contact: *")
    end
    local list, err = self.store:get(aor)
    if not list then
      return store_failed(self, req, err)
    end
    for _, b in ipairs(list) do
      if b.call_id == call_id and cseq <= b.cseq then
        return reply(req, 500, "Out of order REGISTER")
      end
    end
    self.version = (self.version or 0) + 1
    local ok, derr = self.store:delete(aor)
    if not ok then
      return store_failed(self, req, derr)
    end
    for _, b in ipairs(list) do
      index_note(self, aor, b.key, b.uri, nil)
    end
    if self.on_change then
      self.on_change(aor)
    end
    local code, reason, headers = reply(req, 200)
    return code, reason, headers, aor
  end

  -- parse and check every Contact first: an error changes nothing (§10.3 step 7 is atomic)
  local updates = {}
  for i = 1, #contacts do
    local c, err = req:addr("Contact", i)
    if not c or not c.uri then
      return reply(req, 400, "Bad Contact" .. (err and (": " .. err) or ""))
    end
    local u, code, reason, headers = contact_update(self, c, expires_hdr)
    if not u then
      return reply(req, code, reason, headers)
    end
    updates[#updates + 1] = u
  end
  local existing = {}
  local list, err = self.store:get(aor)
  if not list then
    return store_failed(self, req, err)
  end
  for _, b in ipairs(list) do
    existing[b.key or registrar.contact_key(b.uri)] = b
  end
  for _, u in ipairs(updates) do
    local b = existing[u.key]
    if b and b.call_id == call_id and cseq <= b.cseq then
      return reply(req, 500, "Out of order REGISTER")
    end
  end
  -- RFC 3327: the Path of the edge proxies in between, kept and (with Supported: path)
  -- echoed; a request for the binding goes through them
  local path = req:headers("Path")
  if #path == 0 then
    path = nil
  end
  local direct = #req:headers("Via") == 1 and not path
  for _, u in ipairs(updates) do
    local ok, serr
    self.version = (self.version or 0) + 1
    if u.expires == 0 then
      ok, serr = self.store:delete(aor, u.key)
    else
      -- over TCP/TLS from the phone itself (one Via, no Path: not through a proxy): it is
      -- reached on this connection (nil when not, or when its Contact names another
      -- transport)
      local conn = self.endpoint and direct and self.endpoint.core:flow(req, u.uri) or nil
      ok, serr = self.store:put(aor, { uri = u.uri, key = u.key, q = u.q,
        expires_at = now + u.expires, call_id = call_id, cseq = cseq, updated = now,
        source = req.source, path = path, params = u.params,
        flow = not path and binding_flow(u.uri, req) or nil, conn = conn })
    end
    if not ok then
      return store_failed(self, req, serr)
    end
    if u.expires ~= 0 then
      index_note(self, aor, u.key, u.uri, now + u.expires)
    elseif existing[u.key] then
      index_note(self, aor, u.key, existing[u.key].uri, nil)
    end
  end
  if #updates > 0 and self.on_change then
    self.on_change(aor)
  end
  -- step 8: the 200 lists every current binding
  local current = self:lookup(aor)
  local headers = {}
  for _, v in ipairs(contact_list(current, now)) do
    headers[#headers + 1] = { "Contact", v }
  end
  if path then
    for _, s in ipairs(req:headers("Supported")) do
      if s:lower() == "path" then
        headers[#headers + 1] = { "Path", table.concat(path, ", ") }
        break
      end
    end
  end
  headers[#headers + 1] = { "Date", os.date("!%a, %d %b %Y %H:%M:%S GMT") }
  if #updates == 1 then
    headers[#headers + 1] = { "Expires", tostring(updates[1].expires) }
  end
  local code, reason = reply(req, 200, nil, headers)
  return code, reason, headers, aor
end

registrar.Registrar = Registrar
return registrar
