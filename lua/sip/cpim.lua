--- sip.cpim: RFC 3862 message/cpim bodies (the envelope MSRP and SIP MESSAGE carry for IM),
-- parsed into message headers, encapsulated MIME headers and content, and built back.

local cpim = {}

local concat = table.concat

-- Header-name = [ Name-prefix "." ] Name, both RFC 3862 §3.1 tokens.
local NAME = "[%w!#%$%%&'%*%+%-%.%^_`|~]+"

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- "MR SANDERS <im:piglet@100akerwood.com>" or "<im:...>" -> uri, name (RFC 3862 §3.3.1).
local function split_address(value)
  local name, uri = value:match("^(.-)%s*<([^<>]*)>%s*$")
  if not name or uri == "" then return nil end
  name = trim(name)
  local quoted = name:match('^"(.*)"$')
  if quoted then name = quoted:gsub("\\(.)", "%1") end
  return uri, name ~= "" and name or nil
end

-- Reads one header block starting at `pos` up to and including its blank line.
-- Returns headers, next position or nil, reason. `fold` allows RFC 2822 continuation lines,
-- which MIME headers have and CPIM message headers (one line each, §3.1) do not.
local function read_headers(text, pos, what, fold)
  local headers = {}
  while true do
    local eol = text:find("\n", pos, true)
    if not eol then return nil, "no blank line after the " .. what end
    local line = text:sub(pos, eol - 1):gsub("\r$", "")
    pos = eol + 1
    if line == "" then return headers, pos end
    if fold and line:match("^[ \t]") and #headers > 0 then
      local h = headers[#headers]
      h.value = h.value .. " " .. trim(line)
    else
      local name, value = line:match("^(" .. NAME .. "):(.*)$")
      if not name then return nil, "bad header line in the " .. what .. ": " .. line:sub(1, 40) end
      local params, rest = value:match("^(;[^ ]*) ?(.*)$")
      if params then value = rest end
      headers[#headers + 1] = { name = name, value = trim(value),
                                params = params }
    end
  end
end

-- Header parameters after the colon, e.g. "Subject:;lang=fr text".
local function lang_of(params)
  return params and params:match(";[Ll][Aa][Nn][Gg]=([^;]*)")
end

local function shortcut(msg, h)
  local n = h.name:lower()
  if n == "from" or n == "to" or n == "cc" then
    local uri, name = split_address(h.value)
    if not uri then return "bad " .. h.name .. " header: expected [name] <uri>" end
    if n == "from" and not msg.from then
      msg.from, msg.from_uri, msg.from_name = h.value, uri, name
    elseif n == "to" and not msg.to then
      msg.to, msg.to_uri, msg.to_name = h.value, uri, name
    elseif n == "cc" then
      msg.cc[#msg.cc + 1] = { value = h.value, uri = uri, name = name }
    end
  elseif n == "datetime" then
    msg.datetime = msg.datetime or h.value
  elseif n == "subject" then
    msg.subjects[#msg.subjects + 1] = { value = h.value, lang = lang_of(h.params) }
    msg.subject = msg.subject or h.value
  elseif n == "ns" then
    local uri, prefix = split_address(h.value)
    if not uri then return "bad NS header: expected [prefix] <uri>" end
    msg.ns[prefix or ""] = uri
  elseif n == "require" then
    for r in h.value:gmatch("[^,%s]+") do msg.require[#msg.require + 1] = r end
  end
end

--- Parse a message/cpim body. Returns the message table or nil, reason.
function cpim.parse(text)
  if type(text) ~= "string" then error("cpim.parse: text must be a string", 2) end
  local headers, pos = read_headers(text, 1, "message headers", false)
  if not headers then return nil, pos end
  local content_headers, body_pos = read_headers(text, pos, "content headers", true)
  if not content_headers then return nil, body_pos end
  local msg = { headers = headers, content_headers = content_headers,
                body = text:sub(body_pos), cc = {}, subjects = {}, ns = {}, require = {} }
  for _, h in ipairs(headers) do
    local err = shortcut(msg, h)
    if err then return nil, err end
  end
  for _, h in ipairs(content_headers) do
    if h.name:lower() == "content-type" then msg.content_type = h.value break end
  end
  if not msg.content_type then return nil, "content headers lack Content-Type" end
  return msg
end

-- ---------------------------------------------------------------------------------------
-- build
-- ---------------------------------------------------------------------------------------

local function header_line(out, name, value, params)
  value = tostring(value)
  if not tostring(name):match("^" .. NAME .. "$") then
    error("cpim.build: bad header name " .. tostring(name), 3)
  end
  if value:find("[\r\n]") or (params and params:find("[\r\n ]")) then
    error("cpim.build: header " .. name .. " contains a line break", 3)
  end
  out[#out + 1] = name .. ":" .. (params or "") .. " " .. value
end

local function has(headers, name)
  for _, h in ipairs(headers or {}) do
    if h.name:lower() == name:lower() then return true end
  end
  return false
end

local function address(value, uri, name)
  if value then return value end
  if not uri then return nil end
  return name and name .. " <" .. uri .. ">" or "<" .. uri .. ">"
end

-- "now" as RFC 3339 UTC, for datetime = true.
local function now() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

--- cpim.build{ from=, to=, datetime=, subject=, ns=, require=, headers=, content_type=,
-- content_headers=, body= } -> text with CRLF line ends. `from`/`to` may be given as
-- from_uri/from_name; datetime=true stamps the current time. Shortcut fields are skipped
-- when `headers` already holds a header of that name, so parse -> build -> parse is stable.
function cpim.build(t)
  if type(t) ~= "table" then error("cpim.build: expected a table", 2) end
  local out, hs = {}, t.headers
  local from = address(t.from, t.from_uri, t.from_name)
  local to = address(t.to, t.to_uri, t.to_name)
  if from and not has(hs, "From") then header_line(out, "From", from) end
  if to and not has(hs, "To") then header_line(out, "To", to) end
  if t.datetime and not has(hs, "DateTime") then
    header_line(out, "DateTime", t.datetime == true and now() or t.datetime)
  end
  if t.subject and not has(hs, "Subject") then header_line(out, "Subject", t.subject) end
  if t.ns and not has(hs, "NS") then
    local prefixes = {}
    for prefix in pairs(t.ns) do prefixes[#prefixes + 1] = prefix end
    table.sort(prefixes)
    for _, prefix in ipairs(prefixes) do
      header_line(out, "NS", address(nil, t.ns[prefix], prefix ~= "" and prefix or nil))
    end
  end
  if t.require and #t.require > 0 and not has(hs, "Require") then
    header_line(out, "Require", concat(t.require, ","))
  end
  for _, h in ipairs(hs or {}) do header_line(out, h.name, h.value, h.params) end
  out[#out + 1] = ""
  local ch = t.content_headers
  if not has(ch, "Content-Type") then
    header_line(out, "Content-Type", t.content_type or "text/plain; charset=utf-8")
  end
  for _, h in ipairs(ch or {}) do header_line(out, h.name, h.value, h.params) end
  out[#out + 1] = ""
  return concat(out, "\r\n") .. "\r\n" .. (t.body or "")
end

return cpim
