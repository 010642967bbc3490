--- sip.sdp: RFC 4566 session descriptions, parsed into plain tables and built back to text,
-- plus a small RFC 3264 offer/answer helper for the common "pick a shared codec" case.

local sdp = {}

local concat, insert = table.concat, table.insert
local tointeger = math.tointeger

-- The RFC 3551 static payload types, so an answer can match "0" against "PCMU/8000" when an
-- offer leaves out the rtpmap for a static type (RFC 4566 §6 makes rtpmap optional there).
local STATIC_PT = {
  ["0"] = { "PCMU", 8000 },   ["3"] = { "GSM", 8000 },    ["4"] = { "G723", 8000 },
  ["5"] = { "DVI4", 8000 },   ["6"] = { "DVI4", 16000 },  ["7"] = { "LPC", 8000 },
  ["8"] = { "PCMA", 8000 },   ["9"] = { "G722", 8000 },   ["10"] = { "L16", 44100, "2" },
  ["11"] = { "L16", 44100 },  ["12"] = { "QCELP", 8000 }, ["13"] = { "CN", 8000 },
  ["14"] = { "MPA", 90000 },  ["15"] = { "G728", 8000 },  ["16"] = { "DVI4", 11025 },
  ["17"] = { "DVI4", 22050 }, ["18"] = { "G729", 8000 },  ["25"] = { "CelB", 90000 },
  ["26"] = { "JPEG", 90000 }, ["28"] = { "nv", 90000 },   ["31"] = { "H261", 90000 },
  ["32"] = { "MPV", 90000 },  ["33"] = { "MP2T", 90000 }, ["34"] = { "H263", 90000 },
}

local DIRECTIONS = { sendrecv = true, sendonly = true, recvonly = true, inactive = true }

-- Fields that may appear once per level; a second one is a broken description, not a list.
local SESSION_SINGLE = { o = "origin", s = "name", i = "info", u = "uri", c = "connection",
                         z = "zone", k = "key" }
local MEDIA_SINGLE = { i = "info", k = "key" }
local MEDIA_FIELDS = { i = true, c = true, b = true, k = true, a = true }
local SESSION_FIELDS = { o = true, s = true, i = true, u = true, e = true, p = true, c = true,
                         b = true, t = true, r = true, z = true, k = true, a = true }

local session_mt, media_mt = {}, {}
session_mt.__index, media_mt.__index = session_mt, media_mt

-- ---------------------------------------------------------------------------------------
-- Attribute helpers shared by sessions and media
-- ---------------------------------------------------------------------------------------

-- First value of attribute `name`; true for a property attribute (a=recvonly), nil if absent.
local function attribute(self, name)
  for _, a in ipairs(self.attributes) do
    if a.name == name then return a.value == nil or a.value end
  end
end

-- Every value of attribute `name`, in order (property attributes give true).
local function attribute_values(self, name)
  local out = {}
  for _, a in ipairs(self.attributes) do
    if a.name == name then out[#out + 1] = a.value == nil or a.value end
  end
  return out
end

--- session:attribute(name), media:attribute(name) -> the first value of attribute `name`;
-- true for a property attribute (a=recvonly), nil if absent
-- @function attribute

--- session:attribute_values(name), media:attribute_values(name) -> every value, in order
-- @function attribute_values
session_mt.attribute, session_mt.attribute_values = attribute, attribute_values
media_mt.attribute, media_mt.attribute_values = attribute, attribute_values

--- The codecs of a media description in format order: { pt=, name=, rate=, params= }.
-- Static payload types without an rtpmap take their RFC 3551 name.
function media_mt:codecs()
  local out = {}
  for _, pt in ipairs(self.formats) do
    pt = tostring(pt)
    local map, static = (self.rtpmap or {})[pt], STATIC_PT[pt]
    if map then
      out[#out + 1] = { pt = tointeger(tonumber(pt)) or pt, name = map.encoding,
                        rate = map.clock, params = map.params }
    elseif static then
      out[#out + 1] = { pt = tointeger(tonumber(pt)), name = static[1], rate = static[2],
                        params = static[3] }
    end
  end
  return out
end

--- The address and port RTP for media `i` goes to: its own c= or the session's.
function session_mt:media_address(i)
  local m = self.media[i]
  if not m then return nil end
  local c = m.connections[1] or self.connection
  return c and c.address, m.port
end

function session_mt:__tostring() return sdp.build(self) end

-- ---------------------------------------------------------------------------------------
-- Field parsers: each takes the value after "x=" and returns a Lua value or nil, reason
-- ---------------------------------------------------------------------------------------

local function words(s)
  local out = {}
  for w in s:gmatch("%S+") do out[#out + 1] = w end
  return out
end

local function parse_origin(v)
  local w = words(v)
  if #w ~= 6 then return nil, "bad o= line: expected 6 fields" end
  return { username = w[1], sess_id = w[2], sess_version = w[3], nettype = w[4],
           addrtype = w[5], address = w[6] }
end

-- c=IN IP4 224.2.17.12/127[/3]: the address is split from its TTL and count (RFC 4566 §5.7).
local function parse_connection(v)
  local w = words(v)
  if #w ~= 3 then return nil, "bad c= line: expected 3 fields" end
  local c = { nettype = w[1], addrtype = w[2], address = w[3] }
  local addr, rest = w[3]:match("^([^/]+)/(.+)$")
  if addr then
    local a, b = rest:match("^(%d+)/(%d+)$")
    local n = rest:match("^(%d+)$")
    if w[2] == "IP4" and a then
      c.address, c.ttl, c.count = addr, tointeger(tonumber(a)), tointeger(tonumber(b))
    elseif w[2] == "IP4" and n then
      c.address, c.ttl = addr, tointeger(tonumber(n))
    elseif w[2] == "IP6" and n then
      c.address, c.count = addr, tointeger(tonumber(n))
    else
      return nil, "bad c= line: bad address suffix"
    end
  end
  return c
end

local function parse_bandwidth(v)
  local t, n = v:match("^([%w%-_%.!%%%*%+`'~]+):(%d+)$")
  if not t then return nil, "bad b= line: expected type:value" end
  return { type = t, value = tointeger(tonumber(n)) }
end

local function parse_time(v)
  local a, b = v:match("^%s*(%d+)%s+(%d+)%s*$")
  if not a then return nil, "bad t= line: expected start and stop times" end
  return { start = tointeger(tonumber(a)), stop = tointeger(tonumber(b)), repeats = {} }
end

local function parse_attribute(v)
  local name, value = v:match("^([^:%s]+):(.*)$")
  if name then return { name = name, value = value } end
  local prop = v:match("^([^:%s]+)%s*$")
  if prop then return { name = prop } end
  return nil, "bad a= line: expected name or name:value"
end

-- m=<media> <port>[/<count>] <proto> <fmt> ...
local function parse_media(v)
  local w = words(v)
  if #w < 4 then return nil, "bad m= line: expected media, port, proto and formats" end
  local port, count = w[2]:match("^(%d+)/(%d+)$")
  port = port or w[2]:match("^%d+$")
  if not port or not w[1]:match("^[%w%-_%.]+$") then
    return nil, "bad m= line: bad media or port"
  end
  port = tointeger(tonumber(port))
  if port > 65535 then return nil, "bad m= line: port out of range" end
  local formats = {}
  for i = 4, #w do formats[#formats + 1] = w[i] end
  return setmetatable({ media = w[1], port = port, port_count = count and tointeger(tonumber(count)),
    proto = w[3], formats = formats, connections = {}, bandwidths = {}, attributes = {},
    rtpmap = {}, fmtp = {} }, media_mt)
end

-- a=rtpmap:<pt> <encoding>[/<clock>[/<params>]]; lenient because RFC 4475 itself sends
-- "a=rtpmap:31 LPC" without a clock rate. A value we can't read stays a plain attribute.
local function note_rtpmap(m, value)
  local pt, enc, rest = value:match("^(%S+)%s+([^/%s]+)(.*)$")
  if not pt then return end
  local clock, params = rest:match("^/(%d+)/?(.*)$")
  m.rtpmap[pt] = { encoding = enc, clock = clock and tointeger(tonumber(clock)),
                   params = params ~= "" and params or nil }
end

local function note_fmtp(m, value)
  local pt, params = value:match("^(%S+)%s*(.*)$")
  if pt then m.fmtp[pt] = params end
end

-- ---------------------------------------------------------------------------------------
-- parse
-- ---------------------------------------------------------------------------------------

local function split_lines(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line:gsub("\r$", "")
  end
  -- A body ending in CRLF yields one empty tail; phones sometimes add one or two more.
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return lines
end

-- Fields that belong to the session or the current media description once the line's type
-- letter has been checked for level; returns nil, reason for a bad value.
local function add_session_field(s, k, v, state)
  local val, err
  if k == "o" then val, err = parse_origin(v); s.origin = val
  elseif k == "s" then s.name = v
  elseif k == "i" then s.info = v
  elseif k == "u" then s.uri = v
  elseif k == "e" then insert(s.emails, v)
  elseif k == "p" then insert(s.phones, v)
  elseif k == "c" then val, err = parse_connection(v); s.connection = val
  elseif k == "b" then val, err = parse_bandwidth(v); insert(s.bandwidths, val)
  elseif k == "t" then
    val, err = parse_time(v); insert(s.times, val); state.time = val
  elseif k == "r" then
    if not state.time then return nil, "r= line without a preceding t= line" end
    insert(state.time.repeats, v)
  elseif k == "z" then s.zone = v
  elseif k == "k" then s.key = v
  elseif k == "a" then val, err = parse_attribute(v); insert(s.attributes, val)
  else return nil, "unknown field " .. k .. "=" end
  return err == nil, err
end

local function add_media_field(m, k, v)
  local val, err
  if k == "i" then m.info = v
  elseif k == "c" then val, err = parse_connection(v); insert(m.connections, val)
  elseif k == "b" then val, err = parse_bandwidth(v); insert(m.bandwidths, val)
  elseif k == "k" then m.key = v
  elseif k == "a" then
    val, err = parse_attribute(v)
    if val then
      insert(m.attributes, val)
      if val.name == "rtpmap" and val.value then note_rtpmap(m, val.value) end
      if val.name == "fmtp" and val.value then note_fmtp(m, val.value) end
    end
  end
  return err == nil, err
end

local function direction_of(attrs, default)
  for _, a in ipairs(attrs) do
    if a.value == nil and DIRECTIONS[a.name] then return a.name end
  end
  return default
end

--- Parse an SDP body. Returns the session table, or nil, "reason (line N)".
-- Field order is checked loosely (v= first, media fields after their m=) because real
-- phones reorder session-level lines; everything else follows RFC 4566 §5.
function sdp.parse(text)
  if type(text) ~= "string" then error("sdp.parse: text must be a string", 2) end
  local first = text:match("^[^\n]*")
  if not first:match("^v=") then
    return nil, "missing v= line (line 1)"
  end
  local lines = split_lines(text)
  local s = setmetatable({ emails = {}, phones = {}, bandwidths = {}, times = {},
                           attributes = {}, media = {} }, session_mt)
  local state, seen, m, mseen = {}, {}, nil, {}
  for n, line in ipairs(lines) do
    local k, v = line:match("^(%a)=(.*)$")
    if not k then return nil, "line is not type=value (line " .. n .. ")" end
    local err, _
    if n == 1 then
      if v ~= "0" then return nil, "bad v= line: version must be 0 (line 1)" end
      s.version = 0
    elseif k == "v" then
      err = "v= must be the first line"
    elseif k == "m" then
      m, err = parse_media(v)
      if m then insert(s.media, m); mseen = {} end
    elseif m then
      if not MEDIA_FIELDS[k] then
        err = SESSION_FIELDS[k] and k .. "= not allowed in a media description"
              or "unknown field " .. k .. "="
      elseif MEDIA_SINGLE[k] and mseen[k] then
        err = "duplicate " .. k .. "= line"
      else
        mseen[k] = true
        _, err = add_media_field(m, k, v)
      end
    elseif SESSION_SINGLE[k] and seen[k] then
      err = "duplicate " .. k .. "= line"
    else
      seen[k] = true
      _, err = add_session_field(s, k, v, state)
    end
    if err then return nil, err .. " (line " .. n .. ")" end
  end
  local n = #lines + 1
  if not s.origin then return nil, "missing o= line (line " .. n .. ")" end
  if not s.name then return nil, "missing s= line (line " .. n .. ")" end
  if #s.times == 0 then return nil, "missing t= line (line " .. n .. ")" end
  local dir = direction_of(s.attributes, "sendrecv")
  for _, md in ipairs(s.media) do md.direction = direction_of(md.attributes, dir) end
  return s
end

-- ---------------------------------------------------------------------------------------
-- build
-- ---------------------------------------------------------------------------------------

local function line(out, k, v)
  v = tostring(v)
  if v:find("[\r\n]") then error("sdp.build: " .. k .. "= value contains a line break", 3) end
  out[#out + 1] = k .. "=" .. v
end

local function guess_addrtype(addr) return tostring(addr):find(":") and "IP6" or "IP4" end

local function connection_text(c)
  if type(c) ~= "table" or not c.address then
    error("sdp.build: a connection needs an address", 3)
  end
  local addr = tostring(c.address)
  if c.ttl then addr = addr .. "/" .. c.ttl end
  if c.count then addr = addr .. "/" .. c.count end
  return (c.nettype or "IN") .. " " .. (c.addrtype or guess_addrtype(c.address)) .. " " .. addr
end

local function add_attributes(out, attrs)
  for _, a in ipairs(attrs or {}) do
    line(out, "a", a.value == nil and a.name or a.name .. ":" .. a.value)
  end
end

local function has_attribute(attrs, name, prefix)
  for _, a in ipairs(attrs or {}) do
    if a.name == name and (not prefix or (a.value or ""):match("^(%S+)") == prefix) then
      return true
    end
  end
  return false
end

local function build_media(out, m, session_dir)
  if type(m) ~= "table" or not m.media or not m.port then
    error("sdp.build: a media description needs media and port", 3)
  end
  local formats = m.formats
  if not formats or #formats == 0 then error("sdp.build: a media description needs formats", 3) end
  local fmts = {}
  for i, f in ipairs(formats) do fmts[i] = tostring(f) end
  local port = m.port_count and m.port .. "/" .. m.port_count or m.port
  line(out, "m", m.media .. " " .. port .. " " .. (m.proto or "RTP/AVP") .. " " .. concat(fmts, " "))
  if m.info then line(out, "i", m.info) end
  for _, c in ipairs(m.connections or {}) do line(out, "c", connection_text(c)) end
  for _, b in ipairs(m.bandwidths or {}) do line(out, "b", b.type .. ":" .. b.value) end
  if m.key then line(out, "k", m.key) end
  -- rtpmap/fmtp/direction given as fields (not attributes) are written out; ones already
  -- among the attributes are not repeated, so parse -> build -> parse is stable.
  for _, pt in ipairs(fmts) do
    local map = m.rtpmap and m.rtpmap[pt]
    if map and not has_attribute(m.attributes, "rtpmap", pt) then
      local v = pt .. " " .. map.encoding
      if map.clock then v = v .. "/" .. map.clock end
      if map.clock and map.params then v = v .. "/" .. map.params end
      line(out, "a", "rtpmap:" .. v)
    end
    local fmtp = m.fmtp and m.fmtp[pt]
    if fmtp and not has_attribute(m.attributes, "fmtp", pt) then
      line(out, "a", "fmtp:" .. pt .. " " .. fmtp)
    end
  end
  local dir = m.direction
  if dir and dir ~= direction_of(m.attributes or {}, session_dir) then
    if not DIRECTIONS[dir] then error("sdp.build: bad direction " .. tostring(dir), 3) end
    line(out, "a", dir)
  end
  add_attributes(out, m.attributes)
end

--- Build SDP text (CRLF line ends, RFC 4566 order) from a table shaped like parse's result.
-- Missing v=, s= and t= get the usual defaults (0, "-", "0 0").
function sdp.build(t)
  if type(t) ~= "table" then error("sdp.build: expected a table", 2) end
  local o = t.origin
  if type(o) ~= "table" or not o.address then error("sdp.build: origin.address is required", 2) end
  local out = {}
  line(out, "v", t.version or 0)
  local now = tostring(os.time())
  line(out, "o", concat({ o.username or "-", o.sess_id or now, o.sess_version or o.sess_id or now,
    o.nettype or "IN", o.addrtype or guess_addrtype(o.address), o.address }, " "))
  line(out, "s", t.name or "-")
  if t.info then line(out, "i", t.info) end
  if t.uri then line(out, "u", t.uri) end
  for _, e in ipairs(t.emails or {}) do line(out, "e", e) end
  for _, p in ipairs(t.phones or {}) do line(out, "p", p) end
  if t.connection then line(out, "c", connection_text(t.connection)) end
  for _, b in ipairs(t.bandwidths or {}) do line(out, "b", b.type .. ":" .. b.value) end
  local times = t.times
  if not times or #times == 0 then times = { { start = 0, stop = 0 } } end
  for _, tm in ipairs(times) do
    line(out, "t", (tm.start or 0) .. " " .. (tm.stop or 0))
    for _, r in ipairs(tm.repeats or {}) do line(out, "r", r) end
  end
  if t.zone then line(out, "z", t.zone) end
  if t.key then line(out, "k", t.key) end
  add_attributes(out, t.attributes)
  local session_dir = direction_of(t.attributes or {}, "sendrecv")
  for _, m in ipairs(t.media or {}) do build_media(out, m, session_dir) end
  out[#out + 1] = ""
  return concat(out, "\r\n")
end

-- ---------------------------------------------------------------------------------------
-- Offer/answer (RFC 3264), kept to the common case
-- ---------------------------------------------------------------------------------------

-- A media description offering `codecs` ({ {pt=, name=, rate=, params=, fmtp=} ... }).
local function codec_media(kind, port, codecs, direction)
  local m = { media = kind, port = port, proto = "RTP/AVP", formats = {}, rtpmap = {},
              fmtp = {}, direction = direction }
  for _, c in ipairs(codecs) do
    local pt = tostring(c.pt)
    insert(m.formats, pt)
    m.rtpmap[pt] = { encoding = c.name, clock = c.rate, params = c.params }
    m.fmtp[pt] = c.fmtp
  end
  return m
end

local function session_of(opts, media)
  if type(opts) ~= "table" or not opts.address then
    error("sdp: options need an address", 3)
  end
  local id = opts.session_id and tostring(opts.session_id) or tostring(os.time())
  local t = { origin = { username = opts.username or "-", sess_id = id,
                         sess_version = opts.session_version and tostring(opts.session_version) or id,
                         address = opts.address },
              name = opts.name, connection = { address = opts.address }, media = media }
  return assert(sdp.parse(sdp.build(t)))
end

--- sdp.offer{ address=, port=, codecs={...}, media="audio", direction=, username=,
-- session_id= } -> session table (tostring() gives the text).
function sdp.offer(opts)
  if type(opts) ~= "table" or type(opts.codecs) ~= "table" or not opts.port then
    error("sdp.offer: options need address, port and codecs", 2)
  end
  return session_of(opts, { codec_media(opts.media or "audio", opts.port, opts.codecs,
                                        opts.direction) })
end

local function same_codec(a, b)
  return a.name:lower() == b.name:lower() and a.rate == b.rate
     and (a.params or "1") == (b.params or "1")
end

local ANSWER_DIRECTION = { sendonly = "recvonly", recvonly = "sendonly", inactive = "inactive" }

--- sdp.answer(offer, opts): offer is text or a parsed table; opts has address, port and codecs
-- for audio, and/or streams = { video = { port=, codecs= } }. Each offered stream keeps the
-- offer's payload numbers for shared codecs, in the offer's order; a stream with nothing in
-- common is refused with port 0 (RFC 3264 §6). Returns nil, reason if nothing is accepted.
function sdp.answer(offer, opts)
  if type(opts) ~= "table" then error("sdp.answer: options table required", 2) end
  if type(offer) == "string" then
    local err
    offer, err = sdp.parse(offer)
    if not offer then return nil, err end
  elseif type(offer) ~= "table" then
    error("sdp.answer: offer must be text or a parsed table", 2)
  end
  local streams = {}
  for k, v in pairs(opts.streams or {}) do streams[k] = v end
  if opts.codecs then streams.audio = { port = opts.port, codecs = opts.codecs } end
  local media, accepted = {}, 0
  for _, m in ipairs(offer.media) do
    local ours, common = streams[m.media], {}
    if ours and m.port ~= 0 then
      for _, theirs in ipairs(media_mt.codecs(m)) do
        for _, c in ipairs(ours.codecs) do
          if same_codec(theirs, c) then
            insert(common, { pt = theirs.pt, name = theirs.name, rate = theirs.rate,
                             params = theirs.params, fmtp = c.fmtp })
            break
          end
        end
      end
    end
    if #common > 0 then
      accepted = accepted + 1
      local dir = ANSWER_DIRECTION[m.direction] or ours.direction or opts.direction
      insert(media, codec_media(m.media, ours.port, common, dir))
    else
      insert(media, { media = m.media, port = 0, proto = m.proto, formats = m.formats })
    end
  end
  if accepted == 0 then return nil, "no media stream in common with the offer" end
  return session_of(opts, media)
end

--- RFC 3264 §8: a session description sent again in a session keeps the o= version of the
-- one sent before when nothing else in it changed, and goes one higher when anything did.
-- sdp.next_version(previous, text) -> text, its o= version set so (text as is when either
-- has no o= line or they are of different sessions).
-- @function next_version
local ORIGIN = "\no=(%S+ %S+ )(%d+)( [^\r\n]*)"

function sdp.next_version(previous, text)
  previous, text = tostring(previous), tostring(text)
  local pid, pver, prest = ("\n" .. previous):match(ORIGIN)
  local id, ver, rest = ("\n" .. text):match(ORIGIN)
  if not (pid and id) or pid ~= id or prest ~= rest then
    return text
  end
  local function without_version(t)
    return (("\n" .. t):gsub(ORIGIN, "\no=%1%3", 1))
  end
  local version
  if without_version(previous) == without_version(text) then
    version = pver
  else
    version = tostring(math.max(tonumber(pver) + 1, tonumber(ver)))
  end
  return (("\n" .. text):gsub(ORIGIN, "\no=%1" .. version .. "%3", 1):sub(2))
end

-- ---------------------------------------------------------------------------------------
-- MSRP media (RFC 4975 §8, RFC 6135, RFC 6714): m=message PORT TCP/MSRP *
-- ---------------------------------------------------------------------------------------

local function words_of(v)
  local out = {}
  for w in tostring(v or ""):gmatch("%S+") do out[#out + 1] = w end
  return out
end

--- media:msrp() -> { path = {uri, ...}, accept_types = {...}, accept_wrapped_types = {...},
-- setup =, max_size =, tls = bool, port = } for an m=message line over TCP/MSRP or
-- TCP/TLS/MSRP; nil for other media.
function media_mt:msrp()
  if self.media ~= "message" or not (self.proto == "TCP/MSRP" or self.proto == "TCP/TLS/MSRP") then
    return nil
  end
  local function text(name)
    local v = attribute(self, name)
    return type(v) == "string" and v or nil
  end
  local setup = text("setup")
  return { path = words_of(text("path")), accept_types = words_of(text("accept-types")),
    accept_wrapped_types = words_of(text("accept-wrapped-types")),
    setup = setup and setup:lower(), max_size = tointeger(tonumber(text("max-size") or "")),
    tls = self.proto == "TCP/TLS/MSRP", port = self.port }
end

--- session:msrp() -> the first MSRP media of a parsed description (see media:msrp), its index
function session_mt:msrp()
  for i, m in ipairs(self.media) do
    local x = media_mt.msrp(m)
    if x and m.port ~= 0 then return x, i end
  end
end

local function list_text(v, default)
  if type(v) == "table" then return concat(v, " ") end
  return v or default
end

--- sdp.msrp{ address=, port=, path= (uri or list), accept_types= (list or text, default
-- "message/cpim text/plain"), accept_wrapped_types=, setup= ("actpass"), max_size=, tls=,
-- session_id= } -> session table with one m=message line (tostring() gives the text)
function sdp.msrp(opts)
  if type(opts) ~= "table" or not opts.address or not opts.port or not opts.path then
    error("sdp.msrp: options need address, port and path", 2)
  end
  local attrs = {
    { name = "accept-types", value = list_text(opts.accept_types, "message/cpim text/plain") },
  }
  if opts.accept_wrapped_types then
    attrs[#attrs + 1] = { name = "accept-wrapped-types", value = list_text(opts.accept_wrapped_types) }
  end
  attrs[#attrs + 1] = { name = "path", value = list_text(opts.path) }
  attrs[#attrs + 1] = { name = "setup", value = opts.setup or "actpass" }
  if opts.max_size then
    attrs[#attrs + 1] = { name = "max-size", value = tostring(math.floor(opts.max_size)) }
  end
  local m = { media = "message", port = opts.port, proto = opts.tls and "TCP/TLS/MSRP" or "TCP/MSRP",
    formats = { "*" }, attributes = attrs }
  return session_of(opts, { m })
end

--- sdp.msrp_setup(offered) -> the answerer's a=setup for an offer's (RFC 6135 §4.1):
-- active when the offer is actpass or passive (or says nothing), passive when it is active
function sdp.msrp_setup(offered)
  if offered == "active" then return "passive" end
  return "active"
end

return sdp
