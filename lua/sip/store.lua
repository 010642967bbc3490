-- sip.store: state that outlives a request (registrations, offline messages, shared secrets)
-- behind one interface; backends: memory (here), SQLite (sip.store_sqlite), Redis (sip.store_redis).
--
-- Every method returns its result, or nil and a one-line reason when the backend failed
-- (Redis down, a full disk): callers answer 500 then, never raise. A method may yield the
-- calling coroutine while the backend works (Redis); called outside a coroutine it drives the
-- loop until done (sip.sched.await). No call blocks the loop for longer than a short local
-- write (SQLite).
--
--   store:get(aor) -> { binding, ... }        store:put(aor, b) -> true
--   store:delete(aor [, key]) -> true         (no key: every binding of aor)
--   store:expire(now) -> true                 store:aors() -> { aor, ... }
--   store:all() -> { [aor] = { binding, ... } }   (every binding, in one call)
--   store:count(now) -> bindings, aors            (those live at now: expires_at > now)
--   store:msg_add(aor, m, limits) -> id | nil, reason [, "limit"]
--       m = { from=, to=, content_type=, body=, arrived= }, limits = { count=, bytes= }:
--       past a limit nothing is stored and nothing already stored is dropped
--   store:msg_list(aor) -> { m (with m.id), ... } oldest first
--   store:msg_delete(aor, id) -> true         store:msg_expire(before) -> count removed
--   store:setnx(name, value) -> the value stored under name (value when there was none)
--   store:nc_check(nonce, nc, ttl) -> "ok" | "replay" | "unknown": digest nonce counts shared
--       by instances: nc must exceed the highest seen for nonce; nc 0 (no qop) uses a nonce
--       once; a nonce first seen with nc > 1 is "unknown"; entries last ttl seconds
--   store:close()
--
-- A binding is a table of scalar fields and lists of scalars (uri, key, q, expires_at,
-- call_id, cseq, updated, source, path, and whatever else a registrar adds): backends keep
-- it whole, as the text store.encode makes, so a new field needs no schema change.
-- store.shared is true when other processes may change the store behind our back (Redis):
-- readers must not keep what they read for long.
local store = {}

-- Text form of bindings and messages --------------------------------------------------------

-- JSON (RFC 8259) for tables of strings, numbers, booleans and nested tables: a table with
-- only 1..n keys is an array, any other an object with string keys. Readable in redis-cli
-- and sqlite3, and Redis scripts can read it with cjson.
local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local encode_value

local function is_array(t)
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return false
    end
  end
  return true
end

function encode_value(v, out)
  local ty = type(v)
  if ty == "string" then
    out[#out + 1] = encode_string(v)
  elseif ty == "number" then
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      error("sip.store: cannot encode " .. tostring(v))
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif ty == "boolean" then
    out[#out + 1] = tostring(v)
  elseif ty == "table" then
    if next(v) ~= nil and is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then
          out[#out + 1] = ","
        end
        encode_value(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then
          error("sip.store: cannot encode a table with key " .. tostring(k))
        end
        keys[#keys + 1] = k
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then
          out[#out + 1] = ","
        end
        out[#out + 1] = encode_string(k)
        out[#out + 1] = ":"
        encode_value(v[k], out)
      end
      out[#out + 1] = "}"
    end
  else
    error("sip.store: cannot encode a " .. ty)
  end
end

--- store.encode(t) -> JSON text
function store.encode(t)
  local out = {}
  encode_value(t, out)
  return table.concat(out)
end

local decode_value

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local UNESC = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\",
  ["/"] = "/" }

local function decode_string(s, i)
  local out, j = {}, i + 1
  while true do
    local _, b, plain = s:find('^([^"\\]*)', j)
    out[#out + 1] = plain
    j = b + 1
    local c = s:sub(j, j)
    if c == '"' then
      return table.concat(out), j + 1
    elseif c == "\\" then
      local e = s:sub(j + 1, j + 1)
      if e == "u" then
        local hex = s:sub(j + 2, j + 5)
        local cp = hex:match("^%x%x%x%x$") and tonumber(hex, 16)
        if not cp then
          error("bad \\u escape")
        end
        out[#out + 1] = utf8.char(cp)
        j = j + 6
      elseif UNESC[e] then
        out[#out + 1] = UNESC[e]
        j = j + 2
      else
        error("bad escape")
      end
    else
      error("unterminated string")
    end
  end
end

function decode_value(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local t = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then
      return t, i + 1
    end
    while true do
      if s:sub(i, i) ~= '"' then
        error("object key expected")
      end
      local k
      k, i = decode_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then
        error("':' expected")
      end
      t[k], i = decode_value(s, i + 1)
      i = skip(s, i)
      c = s:sub(i, i)
      if c == "}" then
        return t, i + 1
      elseif c ~= "," then
        error("',' or '}' expected")
      end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local t = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then
      return t, i + 1
    end
    while true do
      t[#t + 1], i = decode_value(s, i)
      i = skip(s, i)
      c = s:sub(i, i)
      if c == "]" then
        return t, i + 1
      elseif c ~= "," then
        error("',' or ']' expected")
      end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then
    return true, i + 4
  elseif s:sub(i, i + 4) == "false" then
    return false, i + 5
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    local v = num and tonumber(num)
    if not v then
      error("value expected at " .. i)
    end
    return math.tointeger(v) or v, i + #num
  end
end

--- store.decode(text) -> table | nil, reason
function store.decode(s)
  local ok, v, i = pcall(decode_value, s, 1)
  if not ok then
    return nil, "bad stored text: " .. tostring(v):gsub("^.-:%d+: ", "")
  end
  if skip(s, i) <= #s then
    return nil, "bad stored text: trailing bytes"
  end
  return v
end

-- The bytes a stored message counts against its user's limit.
function store.msg_size(m)
  return #(m.body or "") + #(m.from or "") + #(m.to or "") + #(m.content_type or "")
end

-- Memory -------------------------------------------------------------------------------------

local Memory = {}
Memory.__index = Memory

--- store.memory() -> store: everything in this Lua state's tables; gone with the process.
-- A store keeps one binding per (aor, b.key) (b.uri when a caller gives no key).
function store.memory()
  return setmetatable({ by_aor = {}, msgs = {}, next_id = 0, kv = {}, kind = "memory" }, Memory)
end

function Memory:get(aor)
  local t = self.by_aor[aor]
  local out = {}
  if t then
    for _, b in pairs(t) do
      out[#out + 1] = b
    end
  end
  return out
end

function Memory:put(aor, b)
  local t = self.by_aor[aor]
  if not t then
    t = {}
    self.by_aor[aor] = t
  end
  t[b.key or b.uri] = b
  return true
end

function Memory:delete(aor, key)
  local t = self.by_aor[aor]
  if not t then
    return true
  end
  if key then
    t[key] = nil
    if not next(t) then
      self.by_aor[aor] = nil
    end
  else
    self.by_aor[aor] = nil
  end
  return true
end

function Memory:expire(now)
  for aor, t in pairs(self.by_aor) do
    for key, b in pairs(t) do
      if b.expires_at <= now then
        t[key] = nil
      end
    end
    if not next(t) then
      self.by_aor[aor] = nil
    end
  end
  return true
end

function Memory:all()
  local out = {}
  for aor in pairs(self.by_aor) do
    out[aor] = self:get(aor)
  end
  return out
end

function Memory:count(now)
  local n, aors = 0, 0
  for _, t in pairs(self.by_aor) do
    local live = 0
    for _, b in pairs(t) do
      if b.expires_at > now then
        live = live + 1
      end
    end
    n = n + live
    aors = aors + (live > 0 and 1 or 0)
  end
  return n, aors
end

function Memory:aors()
  local out = {}
  for aor in pairs(self.by_aor) do
    out[#out + 1] = aor
  end
  return out
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

function Memory:msg_add(aor, m, limits)
  local q = self.msgs[aor] or { bytes = 0 }
  local size = store.msg_size(m)
  if limits and limits.count and #q >= limits.count then
    return nil, "mailbox full (" .. #q .. " messages)", "limit"
  end
  if limits and limits.bytes and q.bytes + size > limits.bytes then
    return nil, "mailbox full (" .. q.bytes .. " bytes)", "limit"
  end
  self.next_id = self.next_id + 1
  local e = copy(m)
  e.id, e.size = self.next_id, size
  q[#q + 1] = e
  q.bytes = q.bytes + size
  self.msgs[aor] = q
  return e.id
end

function Memory:msg_list(aor)
  local out = {}
  for i, e in ipairs(self.msgs[aor] or {}) do
    out[i] = copy(e)
  end
  return out
end

function Memory:msg_delete(aor, id)
  local q = self.msgs[aor]
  for i, e in ipairs(q or {}) do
    if e.id == id then
      table.remove(q, i)
      q.bytes = q.bytes - e.size
      break
    end
  end
  if q and #q == 0 then
    self.msgs[aor] = nil
  end
  return true
end

function Memory:msg_expire(before)
  local n = 0
  for aor, q in pairs(self.msgs) do
    for i = #q, 1, -1 do
      if q[i].arrived < before then
        q.bytes = q.bytes - q[i].size
        table.remove(q, i)
        n = n + 1
      end
    end
    if #q == 0 then
      self.msgs[aor] = nil
    end
  end
  return n
end

function Memory:setnx(name, value)
  if self.kv[name] == nil then
    self.kv[name] = value
  end
  return self.kv[name]
end

function Memory:nc_check(nonce, nc, ttl)
  local now = os.time()
  local e = self.nonces and self.nonces[nonce]
  if e and e.until_ <= now then
    e = nil
  end
  if e then
    if nc == 0 or nc <= e.nc then
      return "replay"
    end
    e.nc = nc
    return "ok"
  end
  if nc > 1 then
    return "unknown"
  end
  self.nonces = self.nonces or {}
  self.nonces[nonce] = { nc = nc == 0 and math.maxinteger or nc, until_ = now + ttl }
  return "ok"
end

function Memory:close()
end

-- Keys that outlive a process ----------------------------------------------------------------

--- store.shared_keys(s) -> { digest_secret =, nc_check = } | nil, reason
-- A lasting store (not memory) keeps the key of our Record-Route tags (;lsk=, set here with
-- sip.core.rr_key): workers and instances serving the same dialogs, and this process after a
-- restart, take each other's routes. A shared store (Redis) also keeps the digest nonce key
-- and nonce counts (for sip.auth.digest's secret and nc_check): a nonce one instance issues,
-- another honours, and an answer replayed to another is still refused.
function store.shared_keys(s)
  local keys = {}
  if s.kind == "memory" then
    return keys
  end
  local random = require "sip.random"
  local rr, err = s:setnx("rr_key", random.hex(32))
  if not rr then
    return nil, err
  end
  require("sip.core").rr_key(rr)
  if s.shared then
    keys.digest_secret, err = s:setnx("digest_secret", random.hex(32))
    if not keys.digest_secret then
      return nil, err
    end
    keys.nc_check = function(nonce, nc, ttl)
      return s:nc_check(nonce, nc, ttl)
    end
  end
  return keys
end

-- Latency -------------------------------------------------------------------------------------

-- Upper bounds (seconds) of the latency histogram's buckets: a memory call takes microseconds,
-- a SQLite write tens of them to a millisecond, a Redis round trip on loopback ~0.1 ms and
-- more under load; a second or more is a store in trouble.
store.LATENCY_BUCKETS = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
  0.1, 0.25, 0.5, 1, 2.5 }

local TIMED = { "get", "put", "delete", "expire", "all", "count", "aors", "msg_add", "msg_list",
  "msg_delete", "msg_expire", "setnx", "nc_check" }

--- store.timed(s) -> s': s with each call timed (wall clock, a wait for Redis included), by
-- method, into s'.latency = { [method] = { count =, sum = seconds, failed =,
-- buckets = { count in bucket i of store.LATENCY_BUCKETS (not cumulative), ..., [#+1] = more } } }.
-- Fields read and written on s' are s's own (s'.shared = true reaches s).
function store.timed(s)
  local now = require("sip.core").monotime
  local latency = {}
  local nb = #store.LATENCY_BUCKETS
  local wrapped = { latency = latency, inner = s }
  for _, name in ipairs(TIMED) do
    local fn = s[name]
    if fn then
      local l = { count = 0, sum = 0, failed = 0, buckets = {} }
      for i = 1, nb + 1 do
        l.buckets[i] = 0
      end
      latency[name] = l
      local function done(t0, ok, ...)
        local dt = now() - t0
        l.count, l.sum = l.count + 1, l.sum + dt
        if ok == nil then
          l.failed = l.failed + 1
        end
        local i = 1
        while i <= nb and dt > store.LATENCY_BUCKETS[i] do
          i = i + 1
        end
        l.buckets[i] = l.buckets[i] + 1
        return ok, ...
      end
      wrapped[name] = function(_, ...)
        return done(now(), fn(s, ...))
      end
    end
  end
  wrapped.close = function()
    return s:close()
  end
  return setmetatable(wrapped, {
    __index = s,
    __newindex = function(_, k, v)
      s[k] = v
    end,
  })
end

-- Opening by name ------------------------------------------------------------------------------

--- store.open(spec) -> store | nil, reason
-- spec: "memory", "sqlite:FILE" or "redis://HOST:PORT[/DB]"
function store.open(spec)
  if spec == "memory" then
    return store.memory()
  end
  local file = spec:match("^sqlite:(.+)$")
  if file then
    return require("sip.store_sqlite").open(file)
  end
  if spec:match("^redis://") then
    local host, port, db = spec:match("^redis://%[?([^%]/]-)%]?:(%d+)/?(%d*)$")
    if not host then
      host, db = spec:match("^redis://([^:/]+)/?(%d*)$")
      port = "6379"
    end
    if not host or host == "" then
      return nil, "bad store " .. spec .. " (want redis://HOST:PORT[/DB])"
    end
    return require("sip.store_redis").open(host, tonumber(port), tonumber(db) or 0)
  end
  return nil, "unknown store " .. spec .. " (want memory, sqlite:FILE or redis://HOST:PORT[/DB])"
end

--- store.default_sqlite() -> the file `serve` keeps its state in when given no --store:
-- $XDG_DATA_HOME/luasip/luasip.db, else ~/.local/share/luasip/luasip.db
function store.default_path()
  local base = os.getenv("XDG_DATA_HOME")
  if not base or base == "" then
    base = (os.getenv("HOME") or ".") .. "/.local/share"
  end
  return base .. "/luasip/luasip.db"
end

return store
