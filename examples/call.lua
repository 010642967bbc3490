#!/usr/bin/env lua5.4
-- examples/call.lua: place a call with an SDP offer, print its progress, stay on the line
-- for a few seconds and hang up.
--
--   make
--   lua5.4 examples/call.lua sip:echo@127.0.0.1:5070 --seconds 3
--
-- Options: --seconds N (time on the line, default 5), --timeout N (CANCEL when unanswered
-- after N seconds, default 30), --listen ADDR (default udp:127.0.0.1:0), --user NAME and
-- --password SECRET (digest), --proxy URI (send the INVITE there), --verbose.

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

local function usage(msg)
  io.stderr:write("call: ", msg, "\n", "usage: call.lua URI [--seconds N] [--timeout N] ",
    "[--listen udp:HOST:PORT] [--user NAME --password SECRET] [--proxy URI]\n")
  os.exit(2)
end

local o = { seconds = 5, timeout = 30, listen = "udp:127.0.0.1:0" }
local i = 1
while i <= #arg do
  local name = arg[i]:match("^%-%-(.+)$")
  if not name then
    if o.to then usage("one URI only") end
    o.to = arg[i]
  elseif name == "verbose" then
    o.verbose = true
  else
    local v = arg[i + 1] or usage("--" .. name .. " needs a value")
    i = i + 1
    if name == "seconds" or name == "timeout" then
      o[name] = tonumber(v) or usage("--" .. name .. " needs a number")
    elseif name == "listen" or name == "user" or name == "password" or name == "proxy" then
      o[name] = v
    else
      usage("unknown option --" .. name)
    end
  end
  i = i + 1
end
if not o.to then usage("which URI to call?") end

local function say(...) io.stdout:write(os.date("%H:%M:%S "), string.format(...), "\n"); io.stdout:flush() end

local ep = assert(sip.endpoint { listen = { o.listen }, log = o.verbose and "debug" or nil })
local host = ep:address():match("^(.*):%d+$"):gsub("^%[(.*)%]$", "%1")
local offer = sip.sdp.offer { address = host, port = 4000,
  codecs = { { pt = 0, name = "PCMU", rate = 8000 }, { pt = 8, name = "PCMA", rate = 8000 } } }

say("calling %s from %s", o.to, ep:uri("luasip"))
local call, res = ep:call(o.to, {
  sdp = tostring(offer), timeout = o.timeout, user = o.user, password = o.password,
  target = o.proxy,
  on_progress = function(r)
    say("  %d %s%s", r.status, r.reason, r.to_tag and (" (early dialog, To tag " .. r.to_tag .. ")") or "")
  end,
})
if not call then
  say("call failed: %s", type(res) == "userdata" and (res.status .. " " .. res.reason) or tostring(res))
  ep:close()
  os.exit(1)
end
say("  %d %s: answered by %s", res.status, res.reason, call.remote_target)
local answer = res.body ~= "" and sip.sdp.parse(res.body)
if answer then
  local m = answer.media[1]
  local codecs = {}
  for _, c in ipairs(m and m:codecs() or {}) do codecs[#codecs + 1] = c.name .. "/" .. c.rate end
  say("  remote media: %s port %s, %s", answer:media_address(1) or "?", m and m.port or "?",
    table.concat(codecs, " "))
end

-- stay on the line, unless the other side hangs up first
local ended
sip.spawn(function() ended = call:wait() end)
sip.sleep(o.seconds)
if ended then
  say("the other side hung up (%s)", ended)
else
  local bye = call:bye()
  say("hung up: BYE -> %s", bye and (bye.status .. " " .. bye.reason) or "no answer")
end
ep:close()
