#!/usr/bin/env lua5.4
-- examples/proxy.lua: `luasip serve` written out as a script to copy and change — a registrar,
-- a stateful proxy with digest auth from a users file, and an echo bot at sip:echo@DOMAIN.
--
--   make
--   lua5.4 examples/proxy.lua [--listen udp:127.0.0.1:5060]... [--domain localhost] \
--       [--users examples/users.txt]
--
-- --listen repeats; without it the proxy listens on UDP and TCP 127.0.0.1:5060. The users
-- file holds "user:password" lines. Every transaction prints one line.

-- From a checkout, use its lua/ and build/; installed, the rock's paths work unchanged.
do
  local dir = (arg and arg[0] or ""):match("^(.-)/?examples/[^/]*$") or "."
  if dir == "" then dir = "." end
  local f = io.open(dir .. "/lua/sip/init.lua")
  if f then
    f:close()
    package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
    package.cpath = dir .. "/build/?.so;" .. package.cpath
  end
end

local sip = require "sip"

local o = { listen = {}, domain = "localhost",
  users = (arg[0]:match("^(.*)/") or ".") .. "/users.txt" }   -- the one beside this script
for i = 1, #arg, 2 do
  local name, value = arg[i]:match("^%-%-(%a+)$"), arg[i + 1]
  if not (o[name] and value) then
    io.stderr:write("usage: proxy.lua [--listen udp:HOST:PORT]... [--domain D] [--users FILE]\n")
    os.exit(2)
  end
  if name == "listen" then table.insert(o.listen, value) else o[name] = value end
end
if #o.listen == 0 then o.listen = { "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060" } end

local passwords = {}
for line in io.lines(o.users) do
  local user, password = line:match("^%s*([^#:%s]+):(.-)%s*$")
  if user then passwords[user] = password end
end

local ep = assert(sip.endpoint { listen = o.listen })
ep:set_domains { o.domain }             -- requests for sip:...@DOMAIN are ours
local our_hosts = { [o.domain] = true }  -- sip:alice@127.0.0.1 is sip:alice@DOMAIN
for _, a in ipairs(ep:addresses()) do our_hosts[a:match("^%a+:%[?([^%]]*)%]?:%d+$")] = true end
local registrar = sip.registrar.new { min_expires = 1, canonical = function(aor)
  if our_hosts[aor.host:lower()] then aor.host, aor.port = o.domain, nil end
  return aor
end }
local function password_of(user) return passwords[user] end
local algorithms = { "MD5", "SHA-256" }   -- MD5 first: many phones read the first challenge only
local www_auth = sip.auth.digest { realm = o.domain, credentials = password_of, algorithms = algorithms }
local proxy_auth = sip.auth.digest { realm = o.domain, credentials = password_of,
  algorithms = algorithms, proxy = true }

local function log(req, outcome, uri)   -- uri: what was asked, when req:relay rewrote it
  print(("%s %s %s from %s -> %s"):format(os.date("!%H:%M:%S"), req.method, uri or req.uri,
    tostring(req.source), outcome))
  io.stdout:flush()
end

local function status(res, err) return res and res.status or tostring(err) end
local function answer(req, code) req:reply(code); log(req, code) end

-- The echo bot: 200, then the text back to the sender in a MESSAGE of its own (RFC 3428).
local function echo(req)
  if req.method ~= "MESSAGE" then return req:reply(488, "Only MESSAGE here") and 488 end
  req:reply(200)
  local from = req:addr("From").uri
  local binding = registrar:lookup(from)[1]   -- a registered sender gets it where it is
  local back = sip.request { method = "MESSAGE", uri = binding and binding.uri or from,
    from = "<sip:echo@" .. o.domain .. ">", to = "<" .. from .. ">",
    body = req.body, content_type = req.content_type or "text/plain" }
  return "200, echo " .. status(ep:request(back))
end

-- Who may relay, and as whom: in-dialog requests only along our own Record-Route, other
-- domains only for our users (authenticated, as themselves: To of a REGISTER, From of the
-- rest) and for peers listed in trust; strangers may still reach our users.
local policy = sip.policy.new { ep = ep, domain = o.domain, auth = www_auth,
  proxy_auth = proxy_auth, registrar = registrar, trust = {} }

-- The routing policy, top-down. Every request comes here in a coroutine of its own.
ep:route(function(req)
  if req.method ~= "ACK" and not req:validate() then return end   -- 483/482/416/420 (§16.3)
  local ok, why = policy:check(req)                     -- answers what it refuses
  if not ok then return log(req, (why == 401 or why == 407) and "challenged" or why) end
  if req.method == "ACK" then return req:relay() end    -- ACK to a 2xx: not a transaction
  if why.in_dialog then return log(req, status(req:relay())) end   -- Route / Request-URI
  if why.register then return log(req, registrar:handle(req)) end
  local ruri = sip.uri.parse(req.uri) or {}
  if not ep:is_local(req.uri) then return log(req, status(req:relay())) end   -- another domain
  if ruri.user == "echo" then return log(req, echo(req)) end
  if not ruri.user then return answer(req, req.method == "OPTIONS" and 200 or 404) end
  local aor, targets = "sip:" .. ruri.user .. "@" .. o.domain, {}
  for _, b in ipairs(registrar:lookup(aor)) do
    targets[#targets + 1] = b.uri
  end
  if #targets == 0 then   -- a user of ours who is offline, or nobody
    return answer(req, passwords[ruri.user] and 480 or 404)
  end
  log(req, status(req:relay(targets)), aor)            -- forks to every binding
end)

-- Bindings past their expiry are ignored by lookup; this frees them.
sip.spawn(function()
  while true do sip.sleep(60); registrar:expire() end
end)

print(("proxy on %s for %s"):format(table.concat(ep:addresses(), " "), o.domain)); io.stdout:flush()
ep:run()
