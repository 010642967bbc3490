--- sip/auth.lua: Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).
-- The C core parses, hashes and keeps nonce state; this file decides who gets which answer.
local core = require "sip.core"

local M = {}

-- Canonical spellings of the algorithms we know, keyed by lower case.
local CANON = {}
for _, a in ipairs { "MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256",
                     "SHA-512-256-sess" } do
  CANON[a:lower()] = a
end

-- RFC 8760 §2.4: offer every algorithm, strongest first. SHA-512-256 is left out of the
-- default because few SIP phones implement it; add it in `algorithms` when yours do.
local DEFAULT_ALGORITHMS = { "SHA-256", "MD5" }

-- Sources remembered for failure counting. Past this the expired windows are dropped, and if
-- that is not enough all of them: a flood of spoofed sources must not grow memory unbounded.
local MAX_TRACKED_SOURCES = 10000

local REQUIRED = { "username", "realm", "nonce", "uri", "response" }

local function quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

-- A message layer that splits comma lists cuts "Digest a=1, b=2" into pieces; a piece that
-- starts with `name=` continues the previous credentials rather than starting new ones.
local function rejoin(values)
  local out = {}
  for _, v in ipairs(values) do
    if #out > 0 and v:match("^%s*[%w%-%.!%%%*_%+`'~]+%s*=") then
      out[#out] = out[#out] .. ", " .. v
    else
      out[#out + 1] = v
    end
  end
  return out
end

local function credential_values(req, name)
  if type(req.headers) == "function" then
    local vs = req:headers(name)
    if type(vs) == "table" and #vs > 0 then return rejoin(vs) end
  end
  local v = type(req.header) == "function" and req:header(name) or nil
  return v and { v } or {}
end

local Digest = {}
Digest.__index = Digest

--- sip.auth.digest(opts) -> authenticator
-- opts: realm, credentials(user, realm, algorithm) -> password|nil [, is_ha1],
-- algorithms, qop ("auth" | "auth-int" | "auth,auth-int"), nonce_ttl, proxy,
-- max_failures, failure_window, allow_rfc2069, now (a clock in seconds),
-- log (function(line, level); default: the endpoint's log),
-- secret (16+ bytes shared by the processes that serve one realm: a nonce one issues, another
-- honours), nc_check = function(nonce, nc, ttl) -> "ok" | "replay" | "unknown" | nil, reason:
-- nonce-count state kept elsewhere (a shared store; nc 0: an answer without qop, once only).
function M.digest(opts)
  assert(type(opts) == "table", "sip.auth.digest: options table expected")
  assert(type(opts.realm) == "string" and opts.realm ~= "", "sip.auth.digest: realm required")
  assert(type(opts.credentials) == "function", "sip.auth.digest: credentials function required")

  local algorithms, allowed = {}, {}
  for _, a in ipairs(opts.algorithms or DEFAULT_ALGORITHMS) do
    local c = CANON[tostring(a):lower()]
    assert(c, "sip.auth.digest: unknown algorithm " .. tostring(a))
    algorithms[#algorithms + 1], allowed[c] = c, true
  end
  assert(#algorithms > 0, "sip.auth.digest: no algorithms")

  local qop, qops = opts.qop or "auth", {}
  for q in qop:gmatch("[^,%s]+") do
    q = q:lower()
    assert(q == "auth" or q == "auth-int", "sip.auth.digest: unknown qop " .. q)
    qops[q] = true
  end

  local proxy = opts.proxy and true or false
  local self = setmetatable({
    realm = opts.realm,
    credentials = opts.credentials,
    algorithms = algorithms,
    allowed = allowed,
    qop = qop,
    qops = qops,
    nonce_ttl = opts.nonce_ttl or 300,
    max_failures = opts.max_failures or 10,
    failure_window = opts.failure_window or 60,
    allow_rfc2069 = opts.allow_rfc2069 ~= false,
    now = opts.now or os.time,
    log = opts.log,
    code = proxy and 407 or 401,
    challenge_header = proxy and "Proxy-Authenticate" or "WWW-Authenticate",
    credentials_header = proxy and "Proxy-Authorization" or "Authorization",
    state = core.digest_state(opts.secret),
    nc_check = opts.nc_check,
    -- RFC 7616 §3.3: a value clients return unchanged; it tells our challenges from others'
    opaque = opts.secret and core.digest_hash("SHA-256", "opaque:", opts.secret):sub(1, 32)
      or core.random_hex(16),
    failures = {},
    nfailures = 0,
    failed = 0,
  }, Digest)
  assert(math.type(self.nonce_ttl) == "integer" and self.nonce_ttl >= 0,
         "sip.auth.digest: nonce_ttl must be a non-negative integer")
  return self
end

local function now_int(self)
  return math.floor(self.now())
end

--- auth:challenge([stale]) -> headers: one challenge per algorithm, strongest first.
function Digest:challenge(stale)
  local nonce = self.state:nonce(now_int(self))
  local headers = {}
  for _, alg in ipairs(self.algorithms) do
    headers[#headers + 1] = {
      self.challenge_header,
      ("Digest realm=%s, nonce=%s, opaque=%s, algorithm=%s, qop=%s%s"):format(
        quote(self.realm), quote(nonce), quote(self.opaque), alg, quote(self.qop),
        stale and ", stale=true" or ""),
    }
  end
  return headers
end

-- ---- failure counting (a fixed window from the first failure) ----

local function prune(self, now)
  for k, f in pairs(self.failures) do
    if now - f.since >= self.failure_window then
      self.failures[k], self.nfailures = nil, self.nfailures - 1
    end
  end
  if self.nfailures >= MAX_TRACKED_SOURCES then
    self.failures, self.nfailures = {}, 0
  end
end

local function blocked(self, key, now)
  local f = key and self.failures[key]
  if not f then return false end
  if now - f.since >= self.failure_window then
    self.failures[key], self.nfailures = nil, self.nfailures - 1
    return false
  end
  return f.count >= self.max_failures
end

local function record_failure(self, key, now)
  if not key then return end
  local f = self.failures[key]
  if not f or now - f.since >= self.failure_window then
    if not f then
      if self.nfailures >= MAX_TRACKED_SOURCES then prune(self, now) end
      self.nfailures = self.nfailures + 1
    end
    f = { count = 0, since = now }
    self.failures[key] = f
  end
  f.count = f.count + 1
  self.failed = self.failed + 1   -- every failure ever, for metrics
end

-- ---- verification ----

-- Failures are counted per source IP (any port of it): a guesser that changes its port is
-- still one guesser.
local function source_key(req)
  local src = req.source
  return src and (tostring(src):match("^%a+:%[?(.-)%]?:%d+$") or src) or nil
end


local function find_credentials(self, req)
  local malformed
  for _, v in ipairs(credential_values(req, self.credentials_header)) do
    local t, err = core.digest_parse(v)
    if not t then
      malformed = malformed or err
    elseif t.scheme:lower() == "digest" and t.realm == self.realm then
      return t
    end
  end
  return nil, malformed
end

local function malformed_reason(self, c, req)
  for _, f in ipairs(REQUIRED) do
    if not c[f] then return "credentials without " .. f end
  end
  if c.qop and not (c.cnonce and c.nc) then return "credentials with qop need cnonce and nc" end
  if c.nc and not c.nc:match("^%x%x%x%x%x%x%x%x$") then return "nc is not 8 hex digits" end
  if c.userhash and c.userhash:lower() == "true" then return "userhash was not offered" end
  if c.uri ~= req.uri then return "digest uri does not match the Request-URI" end
  return nil
end

-- The expected response for credentials c, or nil when the user is unknown or its stored
-- HA1 does not fit the algorithm.
local function expected_response(self, c, alg, req)
  local secret, is_ha1 = self.credentials(c.username, c.realm, alg)
  if type(secret) ~= "string" then return nil end
  return core.digest_response {
    algorithm = alg, username = c.username, realm = c.realm,
    password = not is_ha1 and secret or nil, ha1 = is_ha1 and secret or nil,
    method = req.method, uri = c.uri, nonce = c.nonce, cnonce = c.cnonce, nc = c.nc,
    qop = c.qop and c.qop:lower() or nil, body = req.body or "",
  }
end

--- auth:verify(req) -> true, username | false, code, headers, reason
function Digest:verify(req)
  assert(type(req) == "table" or type(req) == "userdata", "verify: request expected")
  local now = now_int(self)
  local src = source_key(req)
  if blocked(self, src, now) then return false, 403, {}, "too many failures" end

  local c, bad = find_credentials(self, req)
  if not c then
    if bad then
      record_failure(self, src, now)
      return false, 400, {}, bad
    end
    return false, self.code, self:challenge(false), "no credentials for this realm"
  end

  local key = src or c.username
  if blocked(self, key, now) then return false, 403, {}, "too many failures" end

  local why = malformed_reason(self, c, req)
  if why then
    record_failure(self, key, now)
    return false, 400, {}, why
  end

  -- opaque comes back unchanged when the client answers one of our challenges (clients
  -- that leave it out are let through: RFC 2069 had none)
  if c.opaque and c.opaque ~= self.opaque then
    return false, self.code, self:challenge(false), "opaque not ours"
  end
  local alg = CANON[(c.algorithm or "MD5"):lower()]
  if not alg or not self.allowed[alg] then
    return false, self.code, self:challenge(false), "algorithm not offered"
  end
  local qop = c.qop and c.qop:lower()
  if qop and not self.qops[qop] or not qop and not self.allow_rfc2069 then
    return false, self.code, self:challenge(false), "qop not offered"
  end
  if not qop and alg:find("-sess", 1, true) then
    record_failure(self, key, now)
    return false, 400, {}, "-sess needs qop"
  end

  local fresh = self.state:check_nonce(c.nonce, now, self.nonce_ttl)
  if fresh == "bad" then
    record_failure(self, key, now)
    return false, self.code, self:challenge(false), "nonce not ours"
  end

  -- RFC 7616 §3.3: stale=true only when the digest itself was right, so check it first.
  local want = expected_response(self, c, alg, req)
  if not want or not core.digest_equal(want, c.response:lower()) then
    record_failure(self, key, now)
    return false, self.code, self:challenge(false), "wrong credentials"
  end
  if fresh == "stale" then
    return false, self.code, self:challenge(true), "nonce expired"
  end

  -- Nonce counts: this process's own table, and the store the instances share when there is
  -- one (nc_check), whose answer wins; while the store fails, this process's own answers (a
  -- replay to this instance is still refused). Both learn every use.
  local seen = self.state:check_nc(c.nonce, qop and c.nc or nil)
  if self.nc_check then
    local nc = qop and tonumber(c.nc, 16) or 0
    if not qop or nc > 0 then   -- (qop with nc 0 is bad here already)
      seen = self.nc_check(c.nonce, nc, self.nonce_ttl + 60) or seen
    end
  end
  if qop then
    if seen == "replay" then
      record_failure(self, key, now)
      return false, self.code, self:challenge(false), "nonce count replayed"
    elseif seen ~= "ok" then
      -- The nonce was forgotten (table full) or its first use is missing: start over.
      return false, self.code, self:challenge(true), "nonce count unknown"
    end
  elseif seen ~= "ok" then
    -- an answer without qop (RFC 2069) has no nc to order its uses: its nonce answers one
    -- request, so a captured one cannot be played again; the client gets stale=true and a
    -- fresh nonce for the next (RFC 2617 §4.5's one-time nonces)
    return false, self.code, self:challenge(true), "nonce used already (no qop)"
  end

  if self.failures[key] then
    self.failures[key], self.nfailures = nil, self.nfailures - 1
  end
  return true, c.username
end

local function log_refusal(self, req, code, reason)
  local log = self.log or req._ep and req._ep.log
  if log then
    log(("auth: %d (%s) for %s from %s"):format(code, reason, tostring(req.method),
        tostring(req.source)), code == 403 and "warn" or "info")
  end
end

--- auth:check(req [, opts]) -> true, username | false, code (after req:reply with the
-- challenge or error). opts.identity = "From" | "To": the authenticated user must be the one that
-- header names, else 403 (§10.3 step 3 for a REGISTER's To; a From for other requests).
-- By default its URI's user part must be the username; opts.allowed(username, uri) decides
-- instead (aliases, the host).
-- Refusals other than the first challenge are logged (opts.log, else the endpoint's log):
-- a 403 at "warn" so an operator sees brute force, the rest at "info".
function Digest:check(req, opts)
  local ok, a, headers, reason = self:verify(req)
  if ok then
    local header = opts and opts.identity
    if not header then return true, a end
    local addr = req:addr(header)
    local uri = addr and addr.uri
    local fits
    if opts.allowed then
      fits = uri and opts.allowed(a, uri)
    else
      local u = uri and require("sip").uri.parse(uri)
      fits = u and u.user == a
    end
    if fits then return true, a end
    reason = header .. " is not " .. a
    log_refusal(self, req, 403, reason)
    req:reply(403, reason)
    return false, 403
  end
  if reason ~= "no credentials for this realm" then
    log_refusal(self, req, a, reason)
  end
  -- a 400 says what was wrong, as the message layer's 400s do; other refusals say nothing
  req:reply(a, a == 400 and reason or nil, { headers = headers })
  return false, a
end

-- ---- client ----

-- Client preference among the algorithms we know: RFC 8760 §2.4 asks the client to use the
-- strongest it supports, whatever order the server listed them in.
local STRENGTH = { ["MD5"] = 1, ["MD5-sess"] = 1, ["SHA-256"] = 2, ["SHA-256-sess"] = 2,
                   ["SHA-512-256"] = 3, ["SHA-512-256-sess"] = 3 }

--- sip.auth.parse_challenge(value) -> { scheme=, realm=, nonce=, stale=, ... } | nil, reason
-- Only Digest challenges with an algorithm we implement are returned.
function M.parse_challenge(value)
  local t, err = core.digest_parse(value, "challenge")
  if not t then return nil, err end
  if t.scheme:lower() ~= "digest" then return nil, "not a Digest challenge" end
  if not CANON[(t.algorithm or "MD5"):lower()] then return nil, "unsupported algorithm" end
  return t
end

local function strength(challenge)
  local t = M.parse_challenge(challenge)
  return t and STRENGTH[CANON[(t.algorithm or "MD5"):lower()]] or 0
end

--- sip.auth.authorization(challenge | {challenge, ...}, opts) -> value | nil, reason
-- opts: user, password, method, uri, body, nc (default 1), cnonce (default fresh).
-- Given several challenges the strongest usable one wins (the first among equals).
function M.authorization(challenge, opts)
  assert(type(opts) == "table", "authorization: options table expected")
  if type(challenge) == "table" then
    local best, best_strength = nil, 0
    for _, ch in ipairs(challenge) do
      local st = strength(ch)
      if st > best_strength then best, best_strength = ch, st end
    end
    if not best then return nil, "no supported digest challenge" end
    return core.digest_authorization(best, opts)
  end
  assert(type(challenge) == "string", "authorization: challenge string expected")
  local t, err = core.digest_parse(challenge, "challenge")
  if not t then return nil, err end
  if t.scheme:lower() ~= "digest" then return nil, "not a Digest challenge" end
  return core.digest_authorization(challenge, opts)
end

return M
