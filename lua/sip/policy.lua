--- sip.policy: who may use a proxy as a relay, and as whom — the checks Kamailio's default
-- configuration makes ("Relaying Forbidden", loose_route first, auth_check with identity).
local sip = require "sip"

local M = {}

-- Addresses and CIDR blocks ----------------------------------------------------------------

-- "a.b.c.d" as 4 bytes, or nil
local function ipv4_bytes(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then
    return nil
  end
  local out = {}
  for i, v in ipairs { a, b, c, d } do
    local n = tonumber(v)
    if #v > 3 or n > 255 then
      return nil
    end
    out[i] = n
  end
  return string.char(table.unpack(out))
end

-- up to 8 groups of hex, one "::", a dotted quad at the end, as 16 bytes; or nil
local function ipv6_bytes(s)
  local head, tail = s, nil
  local at = s:find("::", 1, true)
  if at then
    head, tail = s:sub(1, at - 1), s:sub(at + 2)
    if tail:find("::", 1, true) then
      return nil
    end
  end
  local function groups(part)
    local out = {}
    if part == "" then
      return out
    end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if g:find(".", 1, true) then
        local v4 = ipv4_bytes(g)
        if not v4 then
          return nil
        end
        out[#out + 1] = v4:byte(1) * 256 + v4:byte(2)
        out[#out + 1] = v4:byte(3) * 256 + v4:byte(4)
      elseif g:match("^%x%x?%x?%x?$") then
        out[#out + 1] = tonumber(g, 16)
      else
        return nil
      end
    end
    return out
  end
  local h, t = groups(head), groups(tail or "")
  if not h or not t then
    return nil
  end
  local missing = 8 - #h - #t
  if (tail and missing < 1) or (not tail and missing ~= 0) then
    return nil
  end
  local all = {}
  for _, g in ipairs(h) do all[#all + 1] = g end
  for _ = 1, missing do all[#all + 1] = 0 end
  for _, g in ipairs(t) do all[#all + 1] = g end
  local bytes = {}
  for _, g in ipairs(all) do
    bytes[#bytes + 1] = string.char(g >> 8, g & 255)
  end
  return table.concat(bytes)
end

--- sip.policy.ip_bytes(address) -> 4 or 16 bytes | nil (IPv6 with or without [])
function M.ip_bytes(s)
  if type(s) ~= "string" then
    return nil
  end
  s = s:gsub("^%[(.*)%]$", "%1")
  return ipv4_bytes(s) or ipv6_bytes(s)
end

--- sip.policy.cidr(s) -> { bytes =, bits = } | nil, reason: "10.0.0.0/8", "::1/128", or an
-- address alone (all of its bits)
function M.cidr(s)
  local addr, bits = tostring(s):match("^([^/]+)/(%d+)$")
  addr = addr or tostring(s)
  local bytes = M.ip_bytes(addr)
  if not bytes then
    return nil, "not an address or CIDR block: " .. tostring(s)
  end
  bits = bits and tonumber(bits) or #bytes * 8
  if bits > #bytes * 8 then
    return nil, "prefix longer than the address: " .. tostring(s)
  end
  return { bytes = bytes, bits = bits, text = s }
end

local function in_block(block, bytes)
  if #bytes ~= #block.bytes then
    return false
  end
  local whole = block.bits // 8
  if bytes:sub(1, whole) ~= block.bytes:sub(1, whole) then
    return false
  end
  local rest = block.bits % 8
  if rest == 0 then
    return true
  end
  local mask = (0xFF << (8 - rest)) & 0xFF
  return (bytes:byte(whole + 1) & mask) == (block.bytes:byte(whole + 1) & mask)
end

--- sip.policy.in_blocks(blocks, ip) -> true when ip falls in one of the parsed blocks
function M.in_blocks(blocks, ip)
  local bytes = M.ip_bytes(ip)
  if not bytes then
    return false
  end
  for _, b in ipairs(blocks) do
    if in_block(b, bytes) then
      return true
    end
  end
  return false
end

--- sip.policy.source_ip(req) -> the IP its source address names ("udp:1.2.3.4:5060")
function M.source_ip(req)
  return (tostring(req.source or "")):match("^%a+:%[?(.-)%]?:%d+$")
end

-- The policy --------------------------------------------------------------------------------

local Policy = {}
Policy.__index = Policy

-- Headers that assert an identity: believed only from a trusted peer (RFC 3325 §5: a
-- proxy removes them from requests that come from outside its trust domain)
local ASSERTED = { "P-Asserted-Identity", "P-Preferred-Identity" }
-- req:header itself: looking a method up on a message is a call into C (its __index)
local msg_header = sip.core.msg_mt.methods.header

--- sip.policy.new{ ep =, domain = "example.com" | domains = {...}, auth =, proxy_auth =,
---                 trust = { "CIDR", ... }, registrar =, aliases =, log = }
-- auth: the digest authenticator of REGISTERs (401), proxy_auth: of every other request from
-- a local user (407); neither (serve --no-auth): a local From is taken at its word.
-- aliases: fn(username) -> list of user parts that user may also register and send as, or a
-- table username -> list. registrar: in-dialog requests to a contact it holds may pass
-- without our Record-Route.
function M.new(opts)
  assert(type(opts) == "table" and opts.ep, "sip.policy.new: ep required")
  local domains = {}
  for _, d in ipairs(opts.domains or { opts.domain }) do
    domains[d:lower()] = true
  end
  local trust = {}
  for _, c in ipairs(opts.trust or {}) do
    trust[#trust + 1] = assert(M.cidr(c))
  end
  local aliases = opts.aliases
  if type(aliases) == "table" then
    local t = aliases
    aliases = function(user) return t[user] end
  end
  return setmetatable({ ep = opts.ep, domains = domains, auth = opts.auth,
    proxy_auth = opts.proxy_auth, trust = trust, registrar = opts.registrar,
    aliases = aliases, log = opts.log or function() end }, Policy)
end

-- is_ours of a URI's host (lowercase, IPv6 without []) and port
local function ours(self, host, port)
  if not host then
    return false
  end
  if self.domains[host] then
    return true
  end
  if not port then
    return self.ep:_local_hosts()[host] or false
  end
  return self.ep:_local_addrs()[host .. ":" .. port] or false
end

--- policy:is_ours(uri) -> true when uri (string or parsed) names one of our domains, the
-- address and port of one of our listeners, or a listener's address with no port (clients
-- often leave it out of an AOR); our IP with another port is someone else
function Policy:is_ours(uri)
  if type(uri) == "table" then
    return ours(self, uri.host and uri.host:lower():gsub("^%[(.*)%]$", "%1"), uri.port)
  end
  return ours(self, sip.core.uri_hostport(uri))   -- no tables: this runs for every request
end

-- What a request's source ("udp:1.2.3.4:5060") says, worked out once per source: a phone
-- or a peer sends from one address, and trusted() runs for most requests. Bit 1: in a trust
-- block; bit 2: one of our addresses as we send from it (over UDP the listening address
-- and port, over TCP an ephemeral port of a listener's IP).
local SOURCE_TRUSTED, SOURCE_OURS = 1, 2
-- Sources kept (then the table starts again): a NAT gives each phone its own port.
local SOURCES_MAX = 4096

-- (ep:_local_addrs() is made once, with the listeners: only the trust blocks can change)
local function source_flags(self, source)
  local trust = self.trust
  local known = self._sources
  if not known or self._sources_n >= SOURCES_MAX or self._sources_trust ~= trust or
      self._sources_ntrust ~= #trust then
    known = {}
    self._sources, self._sources_n = known, 0
    self._sources_trust, self._sources_ntrust = trust, #trust
  end
  local flags = known[source]
  if flags then
    return flags
  end
  flags = 0
  -- (the IP as sip.policy.source_ip finds it)
  local kind, ip, port = tostring(source):match("^(%a+):%[?(.-)%]?:(%d+)$")
  if ip and #trust > 0 and M.in_blocks(trust, ip) then
    flags = flags | SOURCE_TRUSTED
  end
  local mine = self.ep:_local_addrs()
  if kind == "udp" then
    if mine[ip .. ":" .. port] then
      flags = flags | SOURCE_OURS
    end
  else
    for a in pairs(mine) do
      if a:match("^(.*):%d+$") == ip then
        flags = flags | SOURCE_OURS
        break
      end
    end
  end
  known[source] = flags
  self._sources_n = self._sources_n + 1
  return flags
end

-- The top Via names one of our listeners.
local function via_ours(self, req)
  local v = req:via(1)
  local mine = self.ep:_local_addrs()
  return (v and mine[v.host:lower():gsub("^%[(.*)%]$", "%1") .. ":" .. (v.port or 5060)]) and
    true or false
end

-- A request we relayed that came back to us (a spiral). Anyone can write a top Via naming
-- us, so the source must be ours too: over UDP we send from the listening port, over TCP
-- from an ephemeral one (then only the IP can match). The source is tested first: it is
-- known per source, and most requests come from elsewhere.
function Policy:spiral(req)
  return source_flags(self, req.source or "") & SOURCE_OURS ~= 0 and via_ours(self, req)
end

--- policy:trusted(req) -> true for a source the operator trusts (trust) or our own spiral
function Policy:trusted(req)
  local flags = source_flags(self, req.source or "")
  if flags & SOURCE_TRUSTED ~= 0 then
    return true
  end
  return flags & SOURCE_OURS ~= 0 and via_ours(self, req)
end

--- policy:may_be(username, uri) -> true when that authenticated user may register or send
-- as uri: its user part is the username (or an alias of it) and its host is ours
function Policy:may_be(username, uri)
  local u = type(uri) == "table" and uri or sip.uri.parse(uri)
  if not u or not u.user or not self:is_ours(u) then
    return false
  end
  if u.user == username then
    return true
  end
  for _, a in ipairs(self.aliases and self.aliases(username) or {}) do
    if u.user == a then
      return true
    end
  end
  return false
end

--- policy:for_us(req) -> true when its Request-URI is ours: one of our domains (any port
-- the domain is served on) or one of our listeners' addresses with its port. Our IP with
-- another port is another service on this host, not us.
function Policy:for_us(req)
  local host = sip.core.uri_hostport(req)
  return host ~= nil and (self.domains[host] or self.ep:is_local(req.uri)) or false
end

--- policy:holds(uri) -> true when uri is the contact of a binding the registrar holds
function Policy:holds(uri)
  return self.registrar ~= nil and self.registrar:holds_contact(uri)
end

local function refuse(self, req, code, reason)
  self.log("policy: %s %s from %s -> %d %s", tostring(req.method), tostring(req.uri),
    tostring(req.source), code, reason)
  if req.method ~= "ACK" then
    req:reply(code, reason)
  end
  return false, code
end

-- auth:check of the identity req asserts in header (To, From) against the authenticated
-- user; no auth (serve --no-auth): a local user is taken at its word
local function identity(self, req, auth, header)
  if not auth then
    return true
  end
  return auth:check(req, { identity = header, allowed = function(name, uri)
    return self:may_be(name, uri)
  end })
end

--- policy:check(req) -> true, info | false, code (after answering it; an ACK is dropped)
-- info: { user = authenticated username, trusted =, in_dialog =, inbound = (a foreign
-- sender to our domain), register = (a REGISTER for our domain) }. Strips asserted
-- identities from untrusted sources. The request's §16.3 checks are the caller's.
function Policy:check(req)
  local m = req.method
  local trusted   -- worked out when it changes the answer (nil: not yet)
  for i = 1, #ASSERTED do
    local h = ASSERTED[i]
    if msg_header(req, h) then
      if trusted == nil then
        trusted = self:trusted(req)
      end
      if not trusted then
        req:remove_header(h)
      end
    end
  end
  if m == "CANCEL" then
    -- the core answers the CANCEL of an INVITE it has (§9.2, §16.10); this one matches none
    return refuse(self, req, 481, "Call/Transaction Does Not Exist")
  end
  if req.to_tag or m == "ACK" then
    -- in a dialog: only along our own Record-Route of it, to a contact we hold, or from a
    -- peer we trust; anyone can write a To tag (or a Route naming us)
    local our_route = req.our_route
    if not our_route and trusted == nil then
      trusted = self:trusted(req)
    end
    if our_route or trusted or self:holds(req.uri) then
      return true, { in_dialog = true, trusted = trusted }
    end
    if our_route == false then
      return refuse(self, req, 403, "Route not ours")
    end
    return refuse(self, req, 404, "Not here")
  end
  if m == "REGISTER" and self:for_us(req) then
    local ok, user = identity(self, req, self.auth, "To")
    if not ok then
      return false, user
    end
    return true, { user = user, register = true }
  end
  -- the From URI's host and port: msg:addr("From").uri's, without its table
  if ours(self, sip.core.uri_hostport(req, "From")) then
    if trusted == nil then
      trusted = self:trusted(req)
    end
    if trusted then
      return true, { trusted = true }
    end
    local ok, user = identity(self, req, self.proxy_auth, "From")
    if not ok then
      return false, user
    end
    return true, { user = user }
  end
  if self:for_us(req) then
    return true, { inbound = true }
  end
  if trusted == nil then
    trusted = self:trusted(req)
  end
  if trusted then
    return true, { trusted = true }
  end
  return refuse(self, req, 403, "Relaying forbidden")
end

return M
