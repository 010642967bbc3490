--- sip.proxy: the stateful proxy of RFC 3261 §16 as request methods a routing script calls:
-- req:relay(targets, opts) validates, forks, forwards responses and returns the best final.
local core = require "sip.core"
local sched = require "sip.sched"
local sip = require "sip"
local Endpoint = require("sip.endpoint").Endpoint

local msg_methods = core.msg_mt.methods
local dns = require "sip.dns"
local needs_lookup = dns.needs_lookup

local proxy = {}

--- Our listening host:port pairs, and the names the script says are ours (the core's rule,
-- for a URI string or a table as sip.uri.parse makes it).
function Endpoint:is_local(uri)
  if type(uri) == "table" then
    uri = sip.uri.build(uri)
  end
  return uri ~= nil and self.core:is_local(uri)
end

-- The hosts we listen on (IPv6 without brackets), whatever the port.
function Endpoint:_local_hosts()
  local set = self._local_host_set
  if not set then
    set = {}
    for hp in pairs(self:_local_addrs()) do
      set[hp:match("^(.*):%d+$")] = true
    end
    self._local_host_set = set
  end
  return set
end

-- "host:port" of every listener (IPv6 without brackets), built once.
function Endpoint:_local_addrs()
  local set = self._local_set
  if not set then
    set = {}
    for _, a in ipairs(self.core:addresses()) do
      local h, p = a:match("^%a+:%[?([^%]]*)%]?:(%d+)$")
      set[h:lower() .. ":" .. p] = true
    end
    self._local_set = set
  end
  return set
end

--- Endpoint:set_domains{ "example.com", ... }: names (besides our addresses) that are us
function Endpoint:set_domains(list)
  self.local_domains = {}
  for _, d in ipairs(list) do
    self.local_domains[d:lower()] = true
  end
  local a = self:address("udp") or self:address()
  self.local_port = tonumber(a:match(":(%d+)$"))
  local names = {}
  for d in pairs(self.local_domains) do
    names[#names + 1] = d
  end
  self.core:set_domains(names, self.local_port)
end

--- req:validate() -> true, or false after answering 483/482/416/420 (§16.3); done once.
-- (in C, finding the endpoint from req itself)
-- @function msg_methods.validate
msg_methods.validate = core.msg_validate

--- req:relay([targets] [, opts]) -> final response (the one sent upstream) | nil, err
-- targets: nil (the Request-URI), a URI, or a list of URIs tried in parallel; an entry of
--          the list may be { uri, route = "&lt;Path&gt;, ...", flow = "sip:IP:PORT[;transport=tcp]" }
--          for a registered binding (sip.registrar.target: its Path on top of the Route set;
--          sent to its flow when the branch has no Route, over TCP while that is connected).
-- opts: record_route=bool (default true for INVITE/SUBSCRIBE/REFER), timeout=seconds
--       (INVITE branches are cancelled after it; without it Timer C, the endpoint's timer_c
--       ms, 181 s by default, restarted by each 101-199: §16.6 step 11), stateless=bool,
--       on_response=fn(res, uri),
--       next_hop=URI (where every branch is sent), wait=false (return true at once and let
--       the core finish the transaction: nothing of this script runs for its responses),
--       keep_failure=true (no 2xx: the final comes back here and nothing goes upstream, so
--       the script may relay the request again elsewhere, a serial search, or answer it).
--       With keep_failure a 503 comes back as 503 and a relay failing at once answers nothing.
-- The core does the rest of §16 (csrc/proxy.c): branches with loop-detecting Via branches,
-- provisionals and 2xx upstream, the best final, CANCEL of the other branches, merged
-- challenges, 503 as 500, and CANCEL from upstream (§16.10).
-- @function msg_methods.relay
local msg_relay = core.msg_relay

-- The names among the next hops of a relay (opts.next_hop, else the top Route, else each
-- target: a binding's first Path entry, else its URI) are looked up first (RFC 3263,
-- yielding this coroutine only): the core then finds them in the resolver's cache. true,
-- or nil and why not.
local function hop_of(t)
  if type(t) ~= "table" then
    return t
  end
  if t.route then
    return t.route:match("<([^>]*)>") or t.route:match("^%s*([^,%s]+)")
  end
  -- a WebSocket client (RFC 7118) is reached only on its connection: its Contact's host
  -- (often .invalid) is not looked up
  if t.flow and t.flow:match(";transport=wss?$") then
    return t.flow
  end
  return t[1]
end

-- hop u looked up when it names a host: true, or nil and why not
local function look_up(req, u)
  if type(u) == "string" and needs_lookup(u) then
    local t, err = req._ep:resolve(u)
    if not t then
      return nil, err
    end
  end
  return true
end

local function look_up_hops(req, targets, next_hop)
  if next_hop then
    return look_up(req, next_hop)
  end
  if msg_methods.header(req, "Route") then   -- (req:header, without its lookup through C)
    local a = req:addr("Route")
    return look_up(req, a and a.uri)
  end
  if type(targets) ~= "table" then
    return look_up(req, hop_of(targets) or req.uri)
  end
  for _, t in ipairs(targets) do
    local u = hop_of(t)
    if u == nil then
      break   -- (the list of hops ended there)
    end
    local ok, err = look_up(req, u)
    if not ok then
      return nil, err
    end
  end
  return true
end

-- requests relayed statefully or statelessly in this process (metrics)
proxy._stats = { relays = 0 }
local stats = proxy._stats
function msg_methods.relay(req, targets, opts)
  if type(targets) == "table" and targets[1] == nil and next(targets) ~= nil then
    targets, opts = nil, targets   -- req:relay{ ...options... }
  end
  local ok, why = look_up_hops(req, targets, opts and opts.next_hop)
  if not ok then
    -- no server for that name: a final response that says so (§4: 404 when it does not
    -- exist, 503 when the lookup failed), and the reason for the script
    if req.method ~= "ACK" and req._txn ~= 0 and not req.replied_final then
      req:reply(dns.response_for(why))
    end
    return nil, why
  end
  local flags, timeout, next_hop_uri, rr, stateless = 1, nil, nil, nil, nil
  if opts then
    flags = opts.wait == false and 0 or 1
    if opts.on_response then
      flags = 3
    end
    if opts.keep_failure and flags ~= 0 then
      flags = flags | 4
    end
    timeout = opts.timeout and math.floor(opts.timeout * 1000) or nil
    next_hop_uri, rr, stateless = opts.next_hop, opts.record_route, opts.stateless
  end
  -- §16.3, Max-Forwards, Record-Route and the relay itself: the core (lsip_ep.c
  -- relay_request, the endpoint found from req in C)
  local id, done = msg_relay(req, targets, next_hop_uri, timeout, flags, rr, stateless)
  if id then
    stats.relays = stats.relays + 1
  end
  if not id then
    if done ~= "refused" and done ~= "answered" and req.method ~= "ACK" and req._txn ~= 0 then
      if done == "sips: needs TLS on every hop" then
        req:reply(416, done)   -- §26.2.2: never in plaintext (SIP_ERR_SIPS_PLAIN)
      else
        req:reply(400, "Bad target")
      end
    end
    return nil, done
  end
  if done == "stateless" then
    return true   -- ACK (of a 2xx) and explicit stateless relays: no transaction (§16.11)
  elseif done then
    -- every branch failed at once: the core answered 408 (keep_failure: nobody answered)
    return nil, "no response"
  end
  if flags == 0 then
    return true
  end
  local ep = req._ep
  if flags & 2 ~= 0 then
    local list = type(targets) == "table" and targets or { targets or req.uri }
    ep.relay_each[id] = function(i, res)
      opts.on_response(res, list[i])
    end
  end
  local res = sched.await(function(wake) ep.relays[id] = wake end)
  if flags & 4 == 0 or (res and res.status < 300) then
    req.replied_final = true
    req.final_status = res and res.status   -- what went upstream (sip.ops logs it)
  else
    -- kept, unless a CANCEL from upstream ended the search (its 487 went up)
    local state, last = ep.core:txn_state(req._txn)
    req.replied_final = not state or last >= 200
  end
  if not res then
    return nil, "no response"
  end
  return res
end

return proxy
