---@meta
-- sip.uri and sip.addr: SIP URIs and name-addrs (RFC 3261 §19.1, §25.1).

---@class sip.Uri
---@field scheme string "sip", "sips", "tel", ...
---@field user? string
---@field password? string
---@field host string
---@field port? integer
---@field params table<string, string|true>
---@field headers table<string, string>
---@field opaque? string a URI of another scheme, as given (build only)

---@class sip.uri
local uri = {}

---@param s string
---@return sip.Uri|nil
---@return string? reason
function uri.parse(s) end

---Escapes each part as §25.1 asks; params and headers sorted by name.
---@param t sip.Uri
---@return string
function uri.build(t) end

---@class sip.addr
local addr = {}

---A name-addr or addr-spec ("Bob" <sip:bob@b>;tag=x).
---@param s string
---@return sip.NameAddr|nil
---@return string? reason
function addr.parse(s) end
