---@meta sip.policy
-- sip.policy: who may use a proxy as a relay, and as whom (lua/sip/policy.lua).

---@class sip.PolicyOptions
---@field ep sip.Endpoint
---@field domain? string
---@field domains? string[]
---@field auth? sip.Digest authenticates REGISTERs (401)
---@field proxy_auth? sip.Digest authenticates other requests from local users (407)
---@field trust? string[] CIDRs of peers that relay anywhere without credentials
---@field registrar? sip.Registrar in-dialog requests to a contact it holds may pass
---@field aliases? table<string, string[]>|fun(username: string): string[]|nil
---@field log? fun(fmt: string, ...)

---What policy:check found.
---@class sip.PolicyInfo
---@field user? string the authenticated username
---@field trusted? boolean
---@field in_dialog? boolean
---@field inbound? boolean a foreign sender to our domain
---@field register? boolean a REGISTER for our domain

---@class sip.Policy
local Policy = {}

---The relay policy: true and what it found, or false after answering (an ACK is dropped).
---@param req sip.Request
---@return boolean ok
---@return sip.PolicyInfo|integer info_or_code
function Policy:check(req) end

---True when uri names one of our domains or listeners.
---@param uri string|sip.Uri
---@return boolean
function Policy:is_ours(uri) end

---True for a request we relayed that came back to us (its source is ours too).
---@param req sip.Request
---@return boolean
function Policy:spiral(req) end

---True for a trusted source (trust) or our own spiral.
---@param req sip.Request
---@return boolean
function Policy:trusted(req) end

---True when that authenticated user may register or send as uri.
---@param username string
---@param uri string
---@return boolean
function Policy:may_be(username, uri) end

---True when the Request-URI is ours.
---@param req sip.Request
---@return boolean
function Policy:for_us(req) end

---True when uri is the contact of a binding the registrar holds.
---@param uri string
---@return boolean
function Policy:holds(uri) end

---@class sip.policy
local policy = {}

---@param opts sip.PolicyOptions
---@return sip.Policy
function policy.new(opts) end

---"10.0.0.0/8", "::1/128", or an address alone.
---@param s string
---@return { bytes: string, bits: integer }|nil block
---@return string? reason
function policy.cidr(s) end

---@param blocks { bytes: string, bits: integer }[]
---@param ip string
---@return boolean
function policy.in_blocks(blocks, ip) end

---4 or 16 bytes (IPv6 with or without []).
---@param address string
---@return string|nil
function policy.ip_bytes(address) end

---The IP a request's source names ("udp:1.2.3.4:5060" -> "1.2.3.4").
---@param req sip.Request
---@return string|nil
function policy.source_ip(req) end

return policy
