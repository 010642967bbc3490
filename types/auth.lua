---@meta sip.auth
-- sip.auth: Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), server and client.

---@class sip.DigestOptions
---@field realm string
---@field credentials fun(user: string, realm: string, algorithm: string): string|nil, boolean? password (or HA1 and true)
---@field algorithms? string[] strongest first (default SHA-512-256, SHA-256, MD5)
---@field qop? "auth"|"auth-int"|"auth,auth-int"
---@field nonce_ttl? number seconds
---@field proxy? boolean 407 and Proxy-Authenticate instead of 401
---@field max_failures? integer then 403 per source IP
---@field failure_window? number seconds
---@field allow_rfc2069? boolean
---@field now? fun(): number a clock in seconds
---@field log? fun(line: string, level: string)

---A digest authenticator: stateless HMAC nonces, nc replay detection, 403 after failures.
---@class sip.Digest
local Digest = {}

---One challenge header value per algorithm, strongest first.
---@param stale? boolean
---@return string[]
function Digest:challenge(stale) end

---Check a request's credentials without answering.
---@param req sip.Request
---@return boolean ok
---@return string|integer user_or_code the username, or the code to answer
---@return table? headers the challenges to send
---@return string? reason
function Digest:verify(req) end

---Check and, when refused, answer (401/407 with challenges, 403, 400).
---@param req sip.Request
---@param opts? { identity?: "From"|"To", allowed?: fun(username: string, uri: string): boolean }
---@return boolean ok
---@return string|integer user_or_code the username, or the code sent
function Digest:check(req, opts) end

---@class sip.auth
local auth = {}

---@param opts sip.DigestOptions
---@return sip.Digest
function auth.digest(opts) end

---A WWW-/Proxy-Authenticate value parsed; only Digest with an algorithm we implement.
---@param value string
---@return { scheme: string, realm: string, nonce: string, stale?: boolean, algorithm?: string, qop?: string, opaque?: string }|nil
---@return string? reason
function auth.parse_challenge(value) end

---An Authorization value answering the strongest usable challenge.
---@param challenge table|table[]
---@param opts { user: string, password: string, method: string, uri: string, body?: string, nc?: integer, cnonce?: string }
---@return string|nil value
---@return string? reason
function auth.authorization(challenge, opts) end

return auth
