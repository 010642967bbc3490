-- sip.proxy: the stateful proxy of RFC 3261 §16 as request methods a routing script calls:
-- req:relay(targets, opts) validates, forks, forwards responses and returns the best final.
local core = require "sip.core"
local sched = require "sip.sched"
local sip = require "sip"
local Endpoint = require("sip.endpoint").Endpoint

local msg_methods = core.msg_mt.methods

local proxy = {}

-- Our listening host:port pairs, and the names the script says are ours.
function Endpoint:is_local(uri)
  local host, port
  if type(uri) == "table" then
    host, port = uri.host and uri.host:lower():gsub("^%[(.*)%]$", "%1"), uri.port
  else
    host, port = core.uri_hostport(uri)
  end
  if not host then
    return false
  end
  if self.local_domains and self.local_domains[host] and (not port or port == self.local_port) then
    return true
  end
  return self:_local_addrs()[host .. ":" .. (port or 5060)] or false
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
end

--- §16.4 route information preprocessing, done before the script routes the request.
function proxy.preprocess(ep, req)
  req._received_uri = req.uri
  -- strict router upstream: the Request-URI is a value we put in a Record-Route
  if ep:is_local(req.uri) and req.uri:find(";lr", 1, true) == nil then
    local routes = req:headers("Route")
    if #routes > 0 then
      local last = sip.addr.parse(routes[#routes])
      if last then
        req:set_uri(last.uri)
        req:remove_header("Route")
        for i = 1, #routes - 1 do
          req:add_header("Route", routes[i])
        end
      end
    end
  end
  -- our own address on top of the Route set: take it off
  local top = req:addr("Route")
  if top and top.uri and ep:is_local(top.uri) then
    local routes = req:headers("Route")
    req:remove_header("Route")
    for i = 2, #routes do
      req:add_header("Route", routes[i])
    end
  end
end

local SCHEMES = { sip = true, sips = true, tel = true }

--- §16.3 request validation; returns code, reason when the request must be refused.
function proxy.validate(ep, req)
  local scheme = req.uri:match("^(%a[%w+.-]*):")
  if not scheme or not SCHEMES[scheme:lower()] then
    return 416
  end
  if req.max_forwards == 0 then
    return 483
  end
  -- loop detection: one of our Vias carries this request's loop hash
  req._loop_hash = req:loop_hash()
  local hosts = req:via_hosts_with_branch("z9hG4bKls" .. req._loop_hash)
  if hosts then
    local mine = ep:_local_addrs()
    for _, hp in ipairs(hosts) do
      if mine[(hp:gsub("^%[(.*)%]", "%1"))] then
        return 482
      end
    end
  end
  if req:header("Proxy-Require") then
    return 420, nil, { Unsupported = table.concat(req:headers("Proxy-Require"), ", ") }
  end
  return nil
end

--- req:validate() -> true, or false after answering 483/482/416/420 (§16.3); done once.
function msg_methods.validate(req)
  if req._validated ~= nil then
    return req._validated
  end
  local code, reason, headers = proxy.validate(req._ep, req)
  req._validated = not code
  if code and req.method ~= "ACK" then
    req:reply(code, reason, { headers = headers })
  end
  return req._validated
end

-- §16.7 step 6: pick the best of the final responses that came back.
local function best_response(finals)
  local best
  for _, r in ipairs(finals) do
    local s = r.status
    if s >= 600 then
      return r
    end
    if not best then
      best = r
    else
      local bc, sc = best.status // 100, s // 100
      if sc < bc or (sc == bc and (s == 401 or s == 407) and best.status ~= 401 and best.status ~= 407) then
        best = r
      end
    end
  end
  return best
end
proxy.best_response = best_response

-- Send a response we got from downstream on up: our Via off the top (§16.7 step 3).
local function forward_up(req, res)
  res:pop_via()
  local ep = req._ep
  local ok, err = ep.core:reply(req._txn, res, true)
  if ok and res.status >= 200 then
    req.replied_final = true
    ep.requests[req._txn] = nil
  end
  return ok, err
end

local function record_route(ep, req)
  local kind = (req.source or "udp"):match("^(%a+)")
  local hostport = ep:address(kind) or ep:address()
  local rr = "<sip:" .. hostport .. ";lr" .. (kind == "tcp" and ";transport=tcp" or "") .. ">"
  req:add_header("Record-Route", rr, true)
end

-- Where a request goes next: the first Route if loose, else its Request-URI (§16.6 step 7).
local function next_hop(m)
  local r = m:addr("Route")
  if r and r.uri then
    return r.uri
  end
  return m.uri
end

--- req:relay([targets] [, opts]) -> final response (the one sent upstream) | nil, err
-- targets: nil (the Request-URI), a URI, or a list of URIs tried in parallel.
-- opts: record_route=bool (default true for INVITE/SUBSCRIBE/REFER), timeout=seconds
--       (INVITE branches are cancelled after it), stateless=bool, on_response=fn(res, uri)
function msg_methods.relay(req, targets, opts)
  if type(targets) == "table" and targets[1] == nil and next(targets) ~= nil then
    targets, opts = nil, targets   -- req:relay{ ...options... }
  end
  opts = opts or {}
  local ep = req._ep
  assert(ep, "req:relay: not a request received by an endpoint")
  if not req:validate() then
    return nil, "refused"
  end
  if type(targets) == "string" then
    targets = { targets }
  elseif not targets then
    targets = { req.uri }
  end
  local branch = "z9hG4bKls" .. (req._loop_hash or req:loop_hash()) .. "."

  req:decrement_max_forwards()
  local rr = opts.record_route
  if rr == nil then
    rr = req.method == "INVITE" or req.method == "SUBSCRIBE" or req.method == "REFER"
  end
  if rr and not req.to_tag then
    record_route(ep, req)
  end

  -- ACK (of a 2xx) and explicit stateless relays: no transaction (§16.11)
  if req.method == "ACK" or opts.stateless or req._txn == 0 then
    local m = req
    if targets[1] ~= req.uri then
      m:set_uri(targets[1])
    end
    return ep:send(m, next_hop(m), "push")
  end

  -- one copy per branch (§16.6 step 1); the last branch may use the request itself
  local branches, finals, live = {}, {}, 0
  local done_wake
  local answered = false

  local function cancel_others(except)
    for _, b in ipairs(branches) do
      if b ~= except and b.id and not b.final and req.method == "INVITE" then
        ep.core:cancel(b.id)
      end
    end
  end

  local function run_branch(b, m)
    local res, err = ep:request(m, {
      target = opts.next_hop or next_hop(m), via = "push",
      branch = branch .. sip.random.unique(8),
      on_txn = function(id)
        b.id = id
        if req.method == "INVITE" then
          -- 2xx retransmissions arrive after the transaction woke us: pass them up
          ep.forward_2xx[id] = req
        end
      end,
      on_progress = function(r)
        if r.status > 100 and not answered then
          forward_up(req, r)
        end
      end,
    })
    b.final = res or false
    if b.id and not (res and res.status >= 200 and res.status < 300) then
      ep.forward_2xx[b.id] = nil
    end
    if res then
      if opts.on_response then
        opts.on_response(res, b.uri)
      end
      finals[#finals + 1] = res
      local s = res.status
      if s >= 200 and s < 300 then
        -- 2xx: forward at once (every 2xx of an INVITE, §16.7 step 5), cancel the rest
        if req.method == "INVITE" or not answered then
          answered = true
          forward_up(req, res)
        end
        cancel_others(b)
      elseif s >= 600 then
        cancel_others(b)
      end
    else
      ep:_log("warn", "relay to %s failed: %s", b.uri, tostring(err))
    end
    live = live - 1
    if live == 0 and done_wake then
      done_wake()
    end
  end

  -- §16.10: a CANCEL from upstream (the core answered it 200) cancels every branch; the
  -- 487s they bring back go up as the best response
  if req.method == "INVITE" then
    ep.core:mark_proxied(req._txn)
    req:on_cancel(function() cancel_others(nil) end)
  end
  if #targets == 1 then
    -- the common case: no fork, no extra coroutine
    local m = req
    if targets[1] ~= m.uri and not m:set_uri(targets[1]) then
      req:reply(400, "Bad target")
      return nil, "bad target"
    end
    local b = { uri = targets[1] }
    branches[1], live = b, 1
    run_branch(b, m)
  else
    for i, target in ipairs(targets) do
      local m = i == #targets and req or assert(sip.parse(tostring(req)))
      if target == m.uri or m:set_uri(target) then
        local b = { uri = target }
        branches[#branches + 1] = b
        live = live + 1
        sched.spawn(run_branch, b, m)
      end
    end
  end
  if #branches == 0 then
    req:reply(400, "Bad target")
    return nil, "no usable target"
  end

  if opts.timeout and req.method == "INVITE" then
    sched.loop:timer(math.floor(opts.timeout * 1000), function()
      if live > 0 and not answered then
        cancel_others(nil)
      end
    end)
  end
  if live > 0 then
    sched.await(function(wake) done_wake = wake end)
  end

  if answered then
    for _, r in ipairs(finals) do
      if r.status >= 200 and r.status < 300 then
        return r
      end
    end
  end
  local best = best_response(finals)
  if not best then
    if not req.replied_final then
      req:reply(req.cancelled and 487 or 408)
    end
    return nil, "no response"
  end
  if best.status == 401 or best.status == 407 then
    -- §16.7 step 7: every challenge goes up in the one response
    for _, r in ipairs(finals) do
      if r ~= best then
        for _, name in ipairs { "WWW-Authenticate", "Proxy-Authenticate" } do
          for _, v in ipairs(r:headers(name)) do
            best:add_header(name, v)
          end
        end
      end
    end
  end
  if best.status == 503 then
    -- §16.7 step 6: a 503 from downstream goes up as 500
    local fixed = assert(sip.parse((tostring(best):gsub("^SIP/2%.0 503 [^\r]*", "SIP/2.0 500 Server Internal Error", 1))))
    best = fixed
  end
  if not req.replied_final then
    forward_up(req, best)   -- after a CANCEL too: the 487 from downstream (§16.10)
  end
  return best
end

return proxy
