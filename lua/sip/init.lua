--- sip: the public Lua API of luasip over the C module sip.core.
-- Messages, URIs and builders live here; endpoints, auth and bodies in sibling modules.
local core = require "sip.core"

local sip = { core = core, version = "scm-1" }

local msg_methods = core.msg_mt.methods

--- sip.parse(bytes [, opts]) -> msg | nil, reason. Never raises on bad input.
-- opts: { stream = bool, max_size = n, max_headers = n, max_line = n }
-- The C function itself: a Lua wrapper would cost a call frame on every message.
-- @function parse
sip.parse = core.parse

--- sip.reason(code) -> the standard reason phrase of a status code ("Not Found")
-- @function reason
sip.reason = core.reason

-- sip.uri ------------------------------------------------------------------------------

local uri = {}
sip.uri = uri

--- sip.uri.parse(s) -> { scheme, user, password, host, port, params, headers } | nil, reason
function uri.parse(s)
  if type(s) ~= "string" then
    return nil, "not a string"
  end
  return core.uri_parse(s)
end

-- RFC 3261 §25.1 character sets that may stay unescaped in each part.
local user_ok = "[%w%-_%.!~%*'%(%)&=%+%$,;%?/]"
local password_ok = "[%w%-_%.!~%*'%(%)&=%+%$,]"
local param_ok = "[%w%-_%.!~%*'%(%)%[%]/:&%+%$]"
local header_ok = "[%w%-_%.!~%*'%(%)%[%]/%?:%+%$]"

local function escape(s, ok)
  return (tostring(s):gsub(".", function(c)
    if c:match(ok) then
      return c
    end
    return string.format("%%%02X", c:byte())
  end))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  return keys
end

--- sip.uri.build{ scheme=, user=, password=, host=, port=, params=, headers= } -> string
function uri.build(t)
  assert(type(t) == "table", "sip.uri.build: table expected")
  local scheme = t.scheme or "sip"
  if t.opaque then
    return scheme .. ":" .. t.opaque
  end
  local out = { scheme, ":" }
  if scheme == "tel" then
    out[#out + 1] = assert(t.user, "tel URI needs a user (the number)")
  else
    if t.user then
      out[#out + 1] = escape(t.user, user_ok)
      if t.password then
        out[#out + 1] = ":" .. escape(t.password, password_ok)
      end
      out[#out + 1] = "@"
    end
    out[#out + 1] = assert(t.host, "sip.uri.build: host required")
    if t.port then
      out[#out + 1] = ":" .. math.tointeger(t.port)
    end
  end
  if t.params then
    for _, k in ipairs(sorted_keys(t.params)) do
      local v = t.params[k]
      if v == true then
        out[#out + 1] = ";" .. escape(k, param_ok)
      elseif v then
        out[#out + 1] = ";" .. escape(k, param_ok) .. "=" .. escape(v, param_ok)
      end
    end
  end
  if t.headers and next(t.headers) then
    local sep = "?"
    for _, k in ipairs(sorted_keys(t.headers)) do
      out[#out + 1] = sep .. escape(k, header_ok) .. "=" .. escape(t.headers[k], header_ok)
      sep = "&"
    end
  end
  return table.concat(out)
end

--- sip.addr.parse(s) -> { display=, uri=, params=, tag= } | nil, reason   (name-addr/addr-spec)
sip.addr = { parse = function(s)
  if type(s) ~= "string" then
    return nil, "not a string"
  end
  return core.addr_parse(s)
end }

-- Builders ----------------------------------------------------------------------------

local random = require "sip.random"
sip.random = random

-- "sip:a@b" or "Name <sip:a@b>" or { uri=, display=, params= } -> a name-addr string
local function name_addr(v, what)
  if type(v) == "table" then
    local s = "<" .. assert(v.uri, what .. ".uri required") .. ">"
    if v.display then
      s = '"' .. v.display:gsub('[\\"]', "\\%0") .. '" ' .. s
    end
    for _, k in ipairs(sorted_keys(v.params or {})) do
      local p = v.params[k]
      s = s .. ";" .. k .. (p == true and "" or "=" .. p)
    end
    return s
  end
  assert(type(v) == "string", what .. " must be a string or a table")
  if v:find("<", 1, true) then
    return v
  end
  return "<" .. v .. ">"
end
--- sip.name_addr(v, what) -> a name-addr string from "sip:a@b", "Name <sip:a@b>" or
-- { uri=, display=, params= } (what names v in the error a bad v raises)
-- @function name_addr
sip.name_addr = name_addr

local function add_headers(lines, headers)
  if not headers then
    return
  end
  for _, pair in ipairs(headers) do
    -- { "Name", "value" } pairs keep their order
    lines[#lines + 1] = pair[1] .. ": " .. pair[2]
  end
  for _, k in ipairs(sorted_keys(headers)) do
    local v = headers[k]
    if type(v) == "table" then
      for _, one in ipairs(v) do
        lines[#lines + 1] = k .. ": " .. one
      end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
end
--- sip.add_header_lines(lines, headers): append "Name: value" lines for a headers table:
-- { {"Name", "value"}, ... } pairs in order, then Name = value | {values} sorted by name
-- @function add_header_lines
sip.add_header_lines = add_headers

--- sip.request{ method=, uri=, from=, to=, call_id=, cseq=, via=, contact=, max_forwards=,
---              headers={...}, body=, content_type= } -> msg | nil, reason
-- Missing pieces get RFC 3261 §8.1.1 defaults: a From tag, a Call-ID, CSeq 1, Max-Forwards 70
-- and a Via with a fresh z9hG4bK branch (an endpoint rewrites its sent-by when sending).
function sip.request(t)
  assert(type(t) == "table", "sip.request: table expected")
  local method = assert(t.method, "sip.request: method required")
  local ruri = assert(t.uri, "sip.request: uri required")
  local from = name_addr(t.from or "<sip:anonymous@anonymous.invalid>", "from")
  if not from:find(";%s*tag%s*=") then
    from = from .. ";tag=" .. random.tag()
  end
  local to = name_addr(t.to or ruri, "to")
  local lines = {
    method .. " " .. ruri .. " SIP/2.0",
    "Via: " .. (t.via or ("SIP/2.0/UDP 0.0.0.0;branch=" .. random.branch() .. ";rport")),
    "Max-Forwards: " .. (t.max_forwards or 70),
    "From: " .. from,
    "To: " .. to,
    "Call-ID: " .. (t.call_id or random.call_id()),
    "CSeq: " .. (t.cseq or 1) .. " " .. method,
  }
  if t.contact then
    lines[#lines + 1] = "Contact: " .. name_addr(t.contact, "contact")
  end
  add_headers(lines, t.headers)
  local body = t.body or ""
  if t.content_type then
    lines[#lines + 1] = "Content-Type: " .. t.content_type
  end
  lines[#lines + 1] = "Content-Length: " .. #body
  lines[#lines + 1] = ""
  lines[#lines + 1] = body
  return core.parse(table.concat(lines, "\r\n"))
end

-- Endpoints and the scheduler --------------------------------------------------------

local sched = require "sip.sched"
sip.sched = sched
sip.sleep = sched.sleep
sip.spawn = sched.spawn

local endpoint = require "sip.endpoint"
require "sip.dialog"   -- adds ep:call, ep:dial, req:answer
require "sip.ua"       -- adds ep:message, ep:register
sip.msrp = require "sip.msrp"   -- adds ep:chat, ep:on("chat"), ep:message's session mode

-- Digest auth, SDP and CPIM bodies, reachable as sip.auth, sip.sdp, sip.cpim.
sip.auth = require "sip.auth"
sip.sdp = require "sip.sdp"
sip.cpim = require "sip.cpim"

--- sip.endpoint{ listen = {...}, ... } -> endpoint | nil, err
function sip.endpoint(opts)
  return endpoint.new(opts)
end

-- Message methods written in Lua (the C ones are in csrc/lsip_msg.c).

--- msg:is_response() -> true for a response (the field m.is_request tells a request)
function msg_methods.is_response(m)
  return not m.is_request
end

-- Modules that use `sip` themselves load once it is complete; the rest on first use.
package.loaded.sip = sip
require "sip.proxy"   -- adds req:relay
local lazy = { registrar = "sip.registrar", proxy = "sip.proxy", dialog = "sip.dialog",
  cli = "sip.cli", ratelimit = "sip.ratelimit", policy = "sip.policy", dns = "sip.dns",
  store = "sip.store", offline = "sip.offline", workers = "sip.workers" }
setmetatable(sip, { __index = function(t, k)
  local name = lazy[k]
  if name then
    local m = require(name)
    rawset(t, k, m)
    return m
  end
end })

return sip
