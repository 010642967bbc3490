---@meta sip.core
-- sip.core: the C module, as far as scripts call it by this name.

---The C module; most of it is reached through `sip`. These are the functions a script
---calls by this name.
---@class sip.core
---@field msg_mt { methods: table } message methods and fields (add methods here)
local core = {}

---sip.parse itself.
---@param bytes string
---@param opts? table
---@return sip.Msg|nil
---@return string? reason
function core.parse(bytes, opts) end

---@param code integer
---@return string
function core.reason(code) end

---@param s string
---@return sip.Uri|nil
---@return string? reason
function core.uri_parse(s) end

---@param s string
---@return sip.NameAddr|nil
---@return string? reason
function core.addr_parse(s) end

---host (lowercase, IPv6 without []), port, user of a URI or of a request's Request-URI.
---@param uri string|sip.Request
---@return string|nil host
---@return integer|nil port
---@return string|nil user
function core.uri_hostport(uri) end

---The canonical long form of a known header name ("v" -> "Via"), or name as given.
---@param name string
---@return string
function core.header_name(name) end

---@param n integer
---@return string
function core.random_hex(n) end

---@param n integer
---@return string
function core.unique_hex(n) end

---The key of our Record-Route tags, shared by processes and hosts serving the same dialogs.
---@param secret string
function core.rr_key(secret) end

---The ;lsk= value our Record-Route carries for that dialog.
---@param call_id string
---@param from_tag string
---@return string
function core.rr_tag(call_id, from_tag) end

---Run the process again with its heap on transparent huge pages; returns only on failure.
---@return false
---@return string reason
function core.use_huge_pages() end

return core
