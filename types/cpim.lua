---@meta sip.cpim
-- sip.cpim: RFC 3862 message/cpim bodies.

---@class sip.cpim.Message
---@field from? string the From value
---@field from_uri? string
---@field from_name? string
---@field to? string
---@field to_uri? string
---@field to_name? string
---@field cc { value: string, uri: string, name?: string }[]
---@field datetime? string
---@field subjects table
---@field ns table<string, string> prefix ("" for none) -> URI
---@field require string[]
---@field headers { name: string, value: string }[] the message headers
---@field content_headers { name: string, value: string }[] the encapsulated MIME headers
---@field content_type? string
---@field body string

---@class sip.cpim
local cpim = {}

---@param text string a message/cpim body
---@return sip.cpim.Message|nil
---@return string? reason
function cpim.parse(text) end

---Text with CRLF line ends; from/to may be given as from_uri/from_name; datetime = true
---stamps the current time.
---@param t { from?: string, from_uri?: string, from_name?: string, to?: string, to_uri?: string, to_name?: string, datetime?: string|true, subject?: string, ns?: table<string, string>, require?: string[], headers?: table, content_type?: string, content_headers?: table, body?: string }
---@return string
function cpim.build(t) end

return cpim
