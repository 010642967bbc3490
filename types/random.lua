---@meta sip.random
-- sip.random: tags, branches and Call-IDs.

---@class sip.random
local random = {}

---@param n integer
---@return string n random hex characters
function random.hex(n) end

---@return string a From/To tag
function random.tag() end

---@return string a z9hG4bK branch, unique (not unpredictable)
function random.branch() end

---@param n integer
---@return string n hex characters unique in time and space
function random.unique(n) end

---@param host? string appended as "@host"
---@return string
function random.call_id(host) end

return random
