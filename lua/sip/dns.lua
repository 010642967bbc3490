-- sip.dns: RFC 3263 server location (NAPTR, SRV, A/AAAA) on c-ares inside the event loop
-- (csrc/dns.c). A lookup yields only the coroutine that asked; the loop goes on.
local core = require "sip.core"
local sched = require "sip.sched"

local dns = {}

local uri_hostport = core.uri_hostport

--- dns.new{ servers = { "127.0.0.1:5353", ... }, timeout = seconds, tries = n,
--            negative_ttl = seconds, avoid = seconds, hosts_file = bool } -> resolver | nil, err
-- servers: default /etc/resolv.conf's. timeout and tries: per query (c-ares' defaults).
-- negative_ttl: how long "no such name/record" is kept when no SOA says (30 s).
-- avoid: how long a target that failed goes last (30 s). hosts_file: /etc/hosts first (true).
function dns.new(opts)
  return core.dns(sched.loop, opts)
end

local default   -- the resolver of sip.dns.resolve(uri) without an endpoint

local function resolver_of(x)
  if x == nil then
    if not default then
      default = assert(dns.new())
    end
    return default
  end
  if type(x) == "table" and x.dns then
    return x.dns   -- an endpoint
  end
  return x
end

local function needs_lookup(uri)
  if uri:find(";maddr=", 1, true) then
    return true
  end
  -- lowercase, IPv6 without []: a name holds no ':', an IPv6 address no ".invalid"
  local host = uri_hostport(uri)
  if not host then
    return false   -- not a sip: URI we can parse: whoever sends it says why
  end
  if host:find(":", 1, true) or host:find("^%d+%.%d+%.%d+%.%d+$") then
    return false   -- an address (the usual next hop: a binding's contact)
  end
  -- RFC 6761: never resolved (a WebSocket client's Contact, RFC 7118)
  return not host:find(".invalid", -8, true)
end

-- needs_lookup's answers by URI: a proxy asks for the same few next hops (its bindings'
-- contacts) request after request. Up to ANSWERS_MAX URIs, then the table starts again.
local ANSWERS_MAX = 1024
local answers, n_answers = {}, 0

--- dns.needs_lookup(uri) -> bool: the URI names its host (or maddr) rather than an IP.
function dns.needs_lookup(uri)
  local a = answers[uri]
  if a == nil then
    a = needs_lookup(uri)
    if n_answers >= ANSWERS_MAX then
      answers, n_answers = {}, 0
    end
    answers[uri], n_answers = a, n_answers + 1
  end
  return a
end

--- dns.resolve(uri [, ep_or_resolver [, transports]]) -> targets | nil, err   (yields)
-- targets in the order to try (RFC 3263 §4; the ones that failed lately last):
-- { { transport = "udp", host = "sip1.example.com", port = 5060, addr = "192.0.2.1",
--     uri = "sip:192.0.2.1:5060;transport=udp" }, ... }
-- transports: the ones that may be used ({ "udp", "tcp" } by default; an endpoint's are
-- those it listens on).
function dns.resolve(uri, via, transports)
  assert(type(uri) == "string", "sip.dns.resolve: URI expected")
  if type(via) == "table" and via.resolve then
    return via:resolve(uri)
  end
  local r = resolver_of(via)
  return sched.await(function(wake)
    local id, err = r:locate(uri, transports, wake)
    if not id then
      wake(nil, err)
    end
  end)
end

--- dns.response_for(err) -> code, reason: the final response a request gets when its
-- target could not be located: 404 when the name or its records do not exist, 503 when
-- the lookup itself failed (timeout, SERVFAIL, a malformed answer).
function dns.response_for(err)
  err = tostring(err or "no target")
  local code = (err:find("^no such domain") or err:find("^no address")) and 404 or 503
  return code, err
end

return dns
