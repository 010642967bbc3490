-- sip.random: tags, branches and Call-IDs from OpenSSL's RAND_bytes (via sip.core).
-- Branches carry the RFC 3261 §8.1.1.7 magic cookie z9hG4bK.
local core = require "sip.core"

local random = {}

function random.hex(n)
  return core.random_hex(n)
end

function random.tag()
  return core.random_hex(12)
end

-- Branches must be unique, not unpredictable (§8.1.1.7): a mixed counter, no RAND_bytes.
function random.branch()
  return "z9hG4bK" .. core.unique_hex(16)
end

function random.unique(n)
  return core.unique_hex(n)
end

function random.call_id(host)
  return core.random_hex(20) .. (host and ("@" .. host) or "")
end

return random
