--- sip.store_redis: the sip.store interface on a Redis server (hiredis on our loop, csrc/redis.c),
-- shared by every worker and instance that names the same server: one location service.
--
-- Calls yield the calling coroutine until Redis answers. While the server is away every call
-- fails at once with a reason (callers answer 500 + Retry-After) and the client reconnects
-- by itself. Updates that touch several keys are Lua scripts, so each is atomic.
--
-- Keys (PREFIX "lsip:"):
--   b:AOR   hash contact key -> binding (JSON); the key expires with its last binding
--   exp     sorted set "AOR\nkey" by expires_at: what expire(now) removes
--   aors    set of AORs with bindings
--   mh:AOR  hash id -> message (JSON, with its size); mq:AOR sorted set of ids (the order);
--   mb:AOR  bytes stored for AOR; mage sorted set "AOR\nid" by arrival; mid the last id
--   kv:NAME setnx values
local core = require "sip.core"
local sched = require "sip.sched"
local store = require "sip.store"

local M = {}

local PREFIX = "lsip:"

local Redis = {}
Redis.__index = Redis

-- How long open() waits for the first connection: a server named on the command line that
-- does not answer at start is a mistake to report, not to wait out.
local CONNECT_WAIT_MS = 2000

--- sip.store_redis.open(host, port [, db]) -> store | nil, reason
function M.open(host, port, db)
  local ok, client = pcall(core.redis, host, port, db or 0)
  if not ok then
    return nil, tostring(client):gsub("^.-:%d+: ", "")
  end
  local self = setmetatable({ client = client, kind = "redis", shared = true,
    name = ("redis://%s:%d/%d"):format(host, port, db or 0) }, Redis)
  -- wait for the first answer (PING), so that a wrong address fails here
  local deadline = sched.loop:now() + CONNECT_WAIT_MS
  local pong, err
  repeat
    pong, err = self:call("PING")
    if not pong then
      sched.sleep(0.05)
    end
  until pong or sched.loop:now() > deadline
  if not pong then
    client:close()
    return nil, err
  end
  return self
end

--- store:call(word, ...) -> reply | nil, reason (yields until Redis answers)
function Redis:call(...)
  local client = self.client
  local n = select("#", ...)
  local a = table.pack(...)
  return sched.await(function(wake)
    local ok, err = client:command(wake, table.unpack(a, 1, n))
    if not ok then
      wake(nil, err)
    end
  end)
end

local function script(self, text, nkeys, ...)
  return self:call("EVAL", text, tostring(nkeys), ...)
end

local PUT = [[
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4] .. '\n' .. ARGV[1])
redis.call('SADD', KEYS[3], ARGV[4])
local ttl = tonumber(ARGV[5])
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
]]

function Redis:get(aor)
  local vals, err = self:call("HVALS", PREFIX .. "b:" .. aor)
  if not vals then
    return nil, err
  end
  local out = {}
  for _, v in ipairs(vals) do
    out[#out + 1] = store.decode(v)
  end
  return out
end

function Redis:put(aor, b)
  local key = b.key or b.uri
  -- the hash lives as long as its longest binding (and a second more: clocks differ)
  local ttl = math.max(1, math.floor(b.expires_at - os.time()) + 1)
  local ok, err = script(self, PUT, 3, PREFIX .. "b:" .. aor, PREFIX .. "exp", PREFIX .. "aors",
    key, store.encode(b), tostring(b.expires_at), aor, tostring(ttl))
  if not ok then
    return nil, err
  end
  return true
end

local DELETE = [[
local keys = ARGV[2] ~= '' and { ARGV[2] } or redis.call('HKEYS', KEYS[1])
for _, k in ipairs(keys) do
  redis.call('HDEL', KEYS[1], k)
  redis.call('ZREM', KEYS[2], ARGV[1] .. '\n' .. k)
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return 1
]]

function Redis:delete(aor, key)
  local ok, err = script(self, DELETE, 3, PREFIX .. "b:" .. aor, PREFIX .. "exp",
    PREFIX .. "aors", aor, key or "")
  if not ok then
    return nil, err
  end
  return true
end

local EXPIRE = [[
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  local aor, key = string.match(m, '^(.-)\n(.*)$')
  local b = ARGV[2] .. 'b:' .. aor
  redis.call('HDEL', b, key)
  if redis.call('HLEN', b) == 0 then redis.call('SREM', KEYS[2], aor) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return #gone
]]

function Redis:expire(now)
  local ok, err = script(self, EXPIRE, 2, PREFIX .. "exp", PREFIX .. "aors", tostring(now), PREFIX)
  if not ok then
    return nil, err
  end
  return true
end

local ALL = [[
local out = {}
for _, aor in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = aor
  out[#out + 1] = redis.call('HVALS', ARGV[1] .. 'b:' .. aor)
end
return out
]]

function Redis:all()
  local r, err = script(self, ALL, 1, PREFIX .. "aors", PREFIX)
  if not r then
    return nil, err
  end
  local out = {}
  for i = 1, #r, 2 do
    local list = {}
    for _, v in ipairs(r[i + 1]) do
      list[#list + 1] = store.decode(v)
    end
    out[r[i]] = list
  end
  return out
end

-- (counted where the bindings are: nothing but two numbers comes back)
local COUNT = [[
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local seen, aors = {}, 0
for _, m in ipairs(live) do
  local aor = string.match(m, '^(.-)\n')
  if not seen[aor] then seen[aor] = true; aors = aors + 1 end
end
return { #live, aors }
]]

function Redis:count(now)
  local r, err = script(self, COUNT, 1, PREFIX .. "exp", tostring(now))
  if not r then
    return nil, err
  end
  return r[1], r[2]
end

function Redis:aors()
  return self:call("SMEMBERS", PREFIX .. "aors")
end

local MSG_ADD = [[
local n = redis.call('ZCARD', KEYS[2])
if n >= tonumber(ARGV[4]) then return { -1, n } end
local b = tonumber(redis.call('GET', KEYS[3]) or '0')
if b + tonumber(ARGV[2]) > tonumber(ARGV[5]) then return { -2, b } end
local id = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[1], id, ARGV[1])
redis.call('ZADD', KEYS[2], id, id)
redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[6] .. '\n' .. id)
return { id, 0 }
]]

local function msg_keys(aor)
  return PREFIX .. "mh:" .. aor, PREFIX .. "mq:" .. aor, PREFIX .. "mb:" .. aor
end

function Redis:msg_add(aor, m, limits)
  local e = {}
  for k, v in pairs(m) do
    e[k] = v
  end
  e.size = store.msg_size(m)
  local mh, mq, mb = msg_keys(aor)
  local r, err = script(self, MSG_ADD, 5, mh, mq, mb, PREFIX .. "mage", PREFIX .. "mid",
    store.encode(e), tostring(e.size), tostring(m.arrived),
    tostring(limits and limits.count or math.maxinteger),
    tostring(limits and limits.bytes or math.maxinteger), aor)
  if not r then
    return nil, err
  end
  if r[1] == -1 then
    return nil, "mailbox full (" .. r[2] .. " messages)", "limit"
  elseif r[1] == -2 then
    return nil, "mailbox full (" .. r[2] .. " bytes)", "limit"
  end
  return r[1]
end

local MSG_LIST = [[
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #ids == 0 then return {} end
local vals = redis.call('HMGET', KEYS[1], unpack(ids))
local out = {}
for i, id in ipairs(ids) do
  if vals[i] then out[#out + 1] = id; out[#out + 1] = vals[i] end
end
return out
]]

function Redis:msg_list(aor)
  local mh, mq = msg_keys(aor)
  local r, err = script(self, MSG_LIST, 2, mh, mq)
  if not r then
    return nil, err
  end
  local out = {}
  for i = 1, #r, 2 do
    local m = store.decode(r[i + 1])
    if m then
      m.id = math.tointeger(tonumber(r[i]))
      out[#out + 1] = m
    end
  end
  return out
end

local MSG_DELETE = [[
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], cjson.decode(v).size or 0)
redis.call('ZREM', KEYS[4], ARGV[2] .. '\n' .. ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
return 1
]]

function Redis:msg_delete(aor, id)
  local mh, mq, mb = msg_keys(aor)
  local ok, err = script(self, MSG_DELETE, 4, mh, mq, mb, PREFIX .. "mage", tostring(id), aor)
  if not ok then
    return nil, err
  end
  return true
end

local MSG_EXPIRE = [[
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, m in ipairs(old) do
  local aor, id = string.match(m, '^(.-)\n(%d+)$')
  local mh, mq, mb = ARGV[2] .. 'mh:' .. aor, ARGV[2] .. 'mq:' .. aor, ARGV[2] .. 'mb:' .. aor
  local v = redis.call('HGET', mh, id)
  if v then
    redis.call('HDEL', mh, id)
    redis.call('ZREM', mq, id)
    redis.call('DECRBY', mb, cjson.decode(v).size or 0)
    if redis.call('ZCARD', mq) == 0 then redis.call('DEL', mb) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return #old
]]

function Redis:msg_expire(before)
  return script(self, MSG_EXPIRE, 1, PREFIX .. "mage", tostring(before), PREFIX)
end

local SETNX = [[
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
]]

function Redis:setnx(name, value)
  return script(self, SETNX, 1, PREFIX .. "kv:" .. name, value)
end

-- the highest nc seen per nonce, living as long as the nonce can be answered
local NC_CHECK = [[
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1')
local nc = tonumber(ARGV[1])
if seen >= 0 then
  if nc == 0 or nc <= seen then return 'replay' end
elseif nc > 1 then
  return 'unknown'
end
if nc == 0 then nc = 4294967296 end
redis.call('SET', KEYS[1], nc, 'EX', ARGV[2])
return 'ok'
]]

function Redis:nc_check(nonce, nc, ttl)
  return script(self, NC_CHECK, 1, PREFIX .. "nc:" .. nonce, tostring(nc), tostring(ttl))
end

--- store:flush(): empties the database (specs)
function Redis:flush()
  return self:call("FLUSHDB")
end

function Redis:close()
  self.client:close()
end

return M
