---@meta sip.registrar
-- sip.registrar: REGISTER processing (RFC 3261 §10.3) over a location store.

---A binding as a store keeps it.
---@class sip.Binding
---@field uri string the Contact URI as the UA sent it
---@field key string registrar.contact_key(uri)
---@field q? number
---@field expires_at number
---@field call_id string
---@field cseq integer
---@field updated number
---@field source? string where the REGISTER came from
---@field path? string[] Path headers (RFC 3327)
---@field params? table Contact params kept (RFC 5626 instance id, reg-id)
---@field flow? string "sip:IP:PORT[;transport=tcp]" when reached at its source (NAT, TCP)

---The location store interface; registrar.memory() is one.
---@class sip.Store
local Store = {}

---@param aor string
---@return sip.Binding[]
function Store:get(aor) end

---Keep b, replacing the binding of the same key.
---@param aor string
---@param b sip.Binding
function Store:put(aor, b) end

---Drop one binding, or every binding of aor without a key.
---@param aor string
---@param key? string
function Store:delete(aor, key) end

---Drop the bindings expired at now.
---@param now number
function Store:expire(now) end

---The AORs that hold bindings (optional in a store: holds_contact needs it).
---@return string[]
function Store:aors() end

---How many bindings live at now (expires_at > now), and in how many AORs: counted by the
---store itself (a SQL COUNT, a script in Redis), not by reading them.
---@param now number
---@return integer|nil bindings
---@return integer|string aors_or_reason
function Store:count(now) end

---Every binding, in one call (one round trip on a shared store).
---@return table<string, sip.Binding[]>|nil all
---@return string? reason
function Store:all() end

---Store an offline message; past a limit nothing is stored and nothing stored is dropped.
---@param aor string
---@param m { from: string, to: string, content_type?: string, body: string, arrived: number }
---@param limits? { count?: integer, bytes?: integer }
---@return any|nil id
---@return string? reason
---@return "limit"? why
function Store:msg_add(aor, m, limits) end

---The stored messages of aor, oldest first (each with its id).
---@param aor string
---@return table[]|nil messages
---@return string? reason
function Store:msg_list(aor) end

---@param aor string
---@param id any
---@return true|nil ok
---@return string? reason
function Store:msg_delete(aor, id) end

---Drop messages that arrived before `before`.
---@param before number
---@return integer|nil removed
---@return string? reason
function Store:msg_expire(before) end

---The value stored under name, storing value when there was none (shared secrets).
---@param name string
---@param value string
---@return string|nil value
---@return string? reason
function Store:setnx(name, value) end

---Digest nonce counts shared by instances: nc must exceed the highest seen for nonce.
---@param nonce string
---@param nc integer
---@param ttl number
---@return "ok"|"replay"|"unknown"|nil verdict
---@return string? reason
function Store:nc_check(nonce, nc, ttl) end

---Release the backend (connections, files).
function Store:close() end

---@class sip.RegistrarOptions
---@field store? sip.Store default registrar.memory()
---@field min_expires? integer 60
---@field max_expires? integer 3600
---@field default_expires? integer 3600
---@field domains? string[] nil: any
---@field clock? fun(): number default os.time

---@class sip.Registrar
local Registrar = {}

---Process a REGISTER and reply (§10.3 steps 1-8).
---@param req sip.Request
---@return integer code
function Registrar:handle(req) end

---Current bindings, highest q first.
---@param aor string
---@param canonical? boolean aor is already as registrar.aor makes it
---@return sip.Binding[]
function Registrar:lookup(aor, canonical) end

---What req:relay takes for each live binding, in lookup order (shared: do not change it).
---@param aor string|nil as registrar.aor makes it; nil gives {}
---@return (string|{ [1]: string, route?: string, flow?: string })[]
function Registrar:targets(aor) end

---True when uri is the Contact of a live binding (URI comparison rules).
---@param uri string
---@return boolean
function Registrar:holds_contact(uri) end

---Drop expired bindings now (a timer calls it periodically).
function Registrar:expire() end

---@class sip.registrar
---@field Registrar table the class of registrar objects
local registrar = {}

---@param opts? sip.RegistrarOptions
---@return sip.Registrar
function registrar.new(opts) end

---A location store in memory.
---@return sip.Store
function registrar.memory() end

---A key equal for two Contact URIs that match by §19.1.4.
---@param uri string
---@return string
function registrar.contact_key(uri) end

---The address-of-record key "sip:user@host" / "sips:user@host", case-folded.
---@param uri string|sip.Uri
---@return string|nil
function registrar.aor(uri) end

---What req:relay takes for binding b: its Contact URI, or { uri, route=, flow= }.
---@param b sip.Binding
---@return string|{ [1]: string, route?: string, flow?: string }
function registrar.target(b) end

return registrar
