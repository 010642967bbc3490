#!/usr/bin/env lua5.4
-- examples/echo_bot.lua: a pager-mode bot. It answers every MESSAGE with a new MESSAGE
-- carrying the text reversed (or echoed), and keeps itself registered with digest auth.
--
--   make
--   lua5.4 examples/echo_bot.lua --registrar sip:127.0.0.1:5060 --user echo \
--       --password secret --listen udp:127.0.0.1:5070
--
-- Options: --listen ADDR (repeatable; default udp:127.0.0.1:5070), --registrar URI,
-- --user NAME, --password SECRET, --expires SECONDS, --proxy URI (where replies go; default
-- the registrar, --direct sends them to the sender's URI), --echo (echo instead of reverse),
-- --answer (also answer calls: accept the SDP offer, hang up on BYE), --for SECONDS (quit
-- after that long), --verbose. Ctrl-C unregisters before quitting.

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
  io.stderr:write("echo_bot: ", msg, "\n",
    "usage: echo_bot.lua [--listen udp:HOST:PORT]... [--registrar URI --user NAME ",
    "--password SECRET] [--expires S] [--proxy URI | --direct] [--echo] [--answer] [--for S]\n")
  os.exit(2)
end

local function parse_args(argv)
  local o = { listen = {}, expires = 600 }
  local flags = { echo = true, answer = true, direct = true, verbose = true }
  local i = 1
  while i <= #argv do
    local name = argv[i]:match("^%-%-(.+)$")
    if not name then usage("unexpected argument " .. argv[i]) end
    if flags[name] then
      o[name] = true
    else
      local v = argv[i + 1] or usage("--" .. name .. " needs a value")
      i = i + 1
      if name == "listen" then
        o.listen[#o.listen + 1] = v
      elseif name == "registrar" or name == "user" or name == "password" or name == "proxy" then
        o[name] = v
      elseif name == "expires" or name == "for" then
        o[name] = tonumber(v) or usage("--" .. name .. " needs a number")
      else
        usage("unknown option --" .. name)
      end
    end
    i = i + 1
  end
  if #o.listen == 0 then o.listen = { "udp:127.0.0.1:5070" } end
  if o.registrar and not o.user then usage("--registrar needs --user") end
  return o
end

local o = parse_args(arg)
local ep = assert(sip.endpoint { listen = o.listen, log = o.verbose and "debug" or "info" })
local me = ep:uri(o.user or "echo")
local function say(...) io.stdout:write(os.date("%H:%M:%S "), string.format(...), "\n"); io.stdout:flush() end

local function answer_text(text)
  return o.echo and text or text:reverse()
end

-- The reply is a MESSAGE of its own (RFC 3428 has no session): to the sender's From URI,
-- through the proxy (the registrar's domain usually routes it), in the sender's format.
ep:on("MESSAGE", function(req)
  req:reply(200)
  local from = req:addr("From").uri
  local body, ctype = req.body, req.content_type or "text/plain"
  say("MESSAGE from %s (%s, %d bytes)", from, ctype, #body)
  local reply, reply_type
  if ctype:lower():match("^message/cpim") then
    local m = sip.cpim.parse(body)
    if not m then return end
    reply_type = "message/cpim"
    reply = sip.cpim.build { from = m.to or ("<" .. me .. ">"), to = m.from or ("<" .. from .. ">"),
      datetime = true, content_type = m.content_type, body = answer_text(m.body) }
  else
    reply, reply_type = answer_text(body), ctype
  end
  local proxy = not o.direct and (o.proxy or o.registrar) or nil
  local res, err = ep:message(from, reply, { content_type = reply_type, from = req:header("To"):gsub(";%s*tag=[^;]*", ""),
    target = proxy, user = o.user, password = o.password })
  say("  reply -> %s", res and (res.status .. " " .. res.reason) or tostring(err))
end)

if o.answer then
  ep:on("INVITE", function(req)
    local answer = req.body ~= "" and sip.sdp.answer(req.body, { address = "127.0.0.1",
      port = 40000, codecs = { { pt = 0, name = "PCMU", rate = 8000 },
                               { pt = 8, name = "PCMA", rate = 8000 } } })
    if req.body ~= "" and not answer then
      return req:reply(488)
    end
    say("INVITE from %s", req:addr("From").uri)
    req:reply(180)
    local call = req:answer { sdp = answer and tostring(answer) }
    if call then
      say("  call up; ended: %s", call:wait())
    end
  end)
end

local reg
if o.registrar then
  reg = ep:register { registrar = o.registrar, user = o.user, password = o.password,
    expires = o.expires }
  sip.spawn(function()
    local state = reg:wait()
    say("registration at %s: %s%s", o.registrar, state,
      reg.expires and (" for " .. reg.expires .. " s") or (" (" .. tostring(reg.error) .. ")"))
  end)
end

say("echo bot at %s", me)
if o["for"] then
  sip.spawn(function()
    sip.sleep(o["for"])
    ep:stop()
  end)
end
local ok, err = pcall(ep.run, ep)
if not ok and not tostring(err):find("interrupted") then
  io.stderr:write("echo_bot: ", tostring(err), "\n")
end
ep:close()   -- unregisters first
say("bye")
