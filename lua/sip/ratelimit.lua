--- sip.ratelimit: a token bucket per source (by default the source IP of a request), so one
-- flooding peer is refused (503 + Retry-After) while everyone else is served.
local ratelimit = {}

local Limiter = {}
Limiter.__index = Limiter

-- Sources tracked at once. A flood from spoofed UDP sources creates one bucket each; past
-- this many, full buckets are swept and the rest of the newcomers share one bucket, so
-- memory stays bounded (about 100 bytes a bucket: 10 000 is ~1 MB).
local MAX_SOURCES_DEFAULT = 10000
-- A refused source is reported at most once per this many seconds.
local LOG_WINDOW_DEFAULT = 10
local OVERFLOW = "\0overflow"

local function monotonic()
  local ok, socket = pcall(require, "socket")
  if ok and socket.gettime then
    return socket.gettime
  end
  return os.time
end

--- The source IP of a request: "udp:1.2.3.4:5060" -> "1.2.3.4", "tcp:[::1]:5060" -> "::1".
-- "udp:1.2.3.4:5060" -> "1.2.3.4", remembered: a proxy sees the same few sources again
-- and again, and a pattern match per request is a good part of the limiter's cost.
-- @function source_ip
local ip_of, ip_count = {}, 0
local IP_CACHE_MAX = 4096

function ratelimit.source_ip(req)
  local src = type(req) == "string" and req or req.source
  if not src then
    return nil
  end
  local ip = ip_of[src]
  if ip then
    return ip
  end
  ip = src:match("^%a+:%[(.-)%]:%d+$") or src:match("^%a+:([^:]+):%d+$") or src
  if ip_count >= IP_CACHE_MAX then
    ip_of, ip_count = {}, 0
  end
  ip_of[src] = ip
  ip_count = ip_count + 1
  return ip
end

--- ratelimit.new{ rate =, burst =, ... } -> limiter
function ratelimit.new(opts)
  assert(type(opts) == "table", "sip.ratelimit.new: options table expected")
  local rate, burst = tonumber(opts.rate), tonumber(opts.burst or opts.rate)
  assert(rate and rate > 0, "sip.ratelimit.new: rate must be a positive number")
  assert(burst and burst >= 1, "sip.ratelimit.new: burst must be at least 1")
  return setmetatable({
    rate = rate,
    burst = burst,
    key = opts.key or ratelimit.source_ip,
    max_sources = opts.max_sources or MAX_SOURCES_DEFAULT,
    log_window = opts.log_window or LOG_WINDOW_DEFAULT,
    now = opts.now or monotonic(),
    buckets = {},   -- key -> { tokens =, at =, logged = }
    count = 0,
    refused = 0,    -- requests refused, all sources
  }, Limiter)
end

-- Drops every bucket that has refilled: a full bucket is the same as no bucket.
local function sweep(self, now)
  for k, b in pairs(self.buckets) do
    if b.tokens + (now - b.at) * self.rate >= self.burst then
      self.buckets[k] = nil
      self.count = self.count - 1
    end
  end
end

local function bucket(self, k, now)
  local b = self.buckets[k]
  if b then
    return b
  end
  if self.count >= self.max_sources then
    sweep(self, now)
    if self.count >= self.max_sources then
      k = OVERFLOW
      b = self.buckets[k]
      if b then
        return b
      end
    end
  end
  b = { tokens = self.burst, at = now, logged = nil }
  self.buckets[k] = b
  self.count = self.count + 1
  return b
end

--- limiter:allow(req) -> true | false, retry_after (whole seconds), report (bool)
-- report is true on the first refusal of a source in each log window: log then.
function Limiter:allow(req)
  local k = self.key(req)
  if k == nil then
    return true
  end
  local now = self.now()
  local b = bucket(self, k, now)
  local tokens = b.tokens + (now - b.at) * self.rate
  if tokens > self.burst then
    tokens = self.burst
  end
  b.at = now
  if tokens >= 1 then
    b.tokens = tokens - 1
    return true
  end
  b.tokens = tokens
  self.refused = self.refused + 1
  local report = not b.logged or now - b.logged >= self.log_window
  if report then
    b.logged = now
  end
  return false, math.max(1, math.ceil((1 - tokens) / self.rate)), report
end

--- limiter:sources() -> number of buckets held (for specs and stats)
function Limiter:sources()
  return self.count
end

return ratelimit
