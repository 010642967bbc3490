---@meta sip.dns
-- sip.dns: RFC 3263 server location (NAPTR, SRV, A/AAAA) on c-ares inside the event loop. A
-- lookup yields only the coroutine that asked.

---@class sip.dns.Target
---@field transport string "udp", "tcp", "tls", ...
---@field host string the name it came from
---@field port integer
---@field addr string the IP address
---@field uri string "sip:192.0.2.1:5060;transport=udp"

---@class sip.dns
local dns = {}

---A resolver of its own (an endpoint makes one from its `dns` option).
---@param opts? { servers?: string[], timeout?: number, tries?: integer, negative_ttl?: number, avoid?: number, hosts_file?: boolean }
---@return table|nil resolver
---@return string? err
function dns.new(opts) end

---Whether the URI names its host (or maddr) rather than an IP.
---@param uri string
---@return boolean
function dns.needs_lookup(uri) end

---The targets to try for uri, in order (RFC 3263 §4); yields.
---@param uri string
---@param via? sip.Endpoint|table an endpoint or a resolver
---@param transports? string[] the ones that may be used ({ "udp", "tcp" })
---@return sip.dns.Target[]|nil targets
---@return string? err
function dns.resolve(uri, via, transports) end

---The final response a request gets when its target could not be located: 404 when the name
---or its records do not exist, 503 when the lookup itself failed.
---@param err string
---@return integer code
---@return string reason
function dns.response_for(err) end
