---@meta sip.ratelimit
-- sip.ratelimit: a token bucket per source.

---A token bucket per source.
---@class sip.Limiter
local Limiter = {}

---@param req sip.Request|string a request, or its source
---@return boolean ok
---@return integer? retry_after whole seconds
---@return boolean? report first refusal of the source in this log window
function Limiter:allow(req) end

---@return integer buckets held
function Limiter:sources() end

---@class sip.ratelimit
local ratelimit = {}

---@param opts { rate: number, burst?: number, key?: fun(req: sip.Request): string, max_sources?: integer, log_window?: number, clock?: fun(): number }
---@return sip.Limiter
function ratelimit.new(opts) end

---"udp:1.2.3.4:5060" -> "1.2.3.4", "tcp:[::1]:5060" -> "::1".
---@param req sip.Request|string
---@return string|nil
function ratelimit.source_ip(req) end

return ratelimit
