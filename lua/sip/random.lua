--- sip.random: tags, branches and Call-IDs from OpenSSL's RAND_bytes (via sip.core).
-- Branches carry the RFC 3261 §8.1.1.7 magic cookie z9hG4bK.
local core = require "sip.core"

local random = {}

--- random.hex(n) -> n random hex characters
function random.hex(n)
  return core.random_hex(n)
end

--- random.tag() -> a From/To tag (12 random hex characters)
function random.tag()
  return core.random_hex(12)
end

--- Branches must be unique, not unpredictable (§8.1.1.7): a mixed counter, no RAND_bytes.
function random.branch()
  return "z9hG4bK" .. core.unique_hex(16)
end

--- random.unique(n) -> n hex characters unique in time and space
function random.unique(n)
  return core.unique_hex(n)
end

--- random.call_id([host]) -> a Call-ID ("@host" appended when given)
function random.call_id(host)
  return core.random_hex(20) .. (host and ("@" .. host) or "")
end

return random
