-- spec/softphone.lua: real softphones for the specs, each started with a config written for
-- it, on loopback ports picked at run time, driven from its own control channel and stopped
-- by PID: baresip (ctrl_tcp, JSON in netstrings) and linphone-daemon (a unix socket).
-- Also `luasip serve` as its own process. No peer here is a mock: they are the programs.
local peer = require "peer"
local socket = require "socket"
local json = require "dkjson"   -- (busted's own dependency)

local M = {}

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Seconds a phone may take to start and register on loopback (each takes well under one).
M.START_SECONDS = 5
-- Seconds one step of a flow may take (a MESSAGE delivered, a call answered, a BYE seen).
M.STEP_SECONDS = 5

--- M.free_port(n) -> p: ports p .. p+n-1 free on 127.0.0.1 for both UDP and TCP now
-- (baresip listens on p for UDP and TCP and on p+1 for TLS).
function M.free_port(n)
  n = n or 1
  for _ = 1, 200 do
    local p = math.random(20000, 59000)
    local held, ok = {}, true
    for i = 0, n - 1 do
      local u, t = socket.udp(), socket.tcp()
      held[#held + 1], held[#held + 2] = u, t
      if not (u:setsockname("127.0.0.1", p + i) and t:bind("127.0.0.1", p + i)) then
        ok = false
        break
      end
    end
    for _, s in ipairs(held) do s:close() end
    if ok then return p end
  end
  error("no free port range")
end

local function wait_for(cond, seconds)
  local deadline = socket.gettime() + seconds
  local v = cond()
  while not v and socket.gettime() < deadline do
    socket.sleep(0.02)
    v = cond()
  end
  return v
end
M.wait_for = wait_for

-- `luasip serve` -------------------------------------------------------------------------

local Serve = {}
Serve.__index = Serve

--- M.serve{ users = { name = password }, domain =, args = {...}, port = } -> server on UDP
-- and TCP 127.0.0.1:server.port (port: that one, as after a restart); server:log(),
-- server:stop()
function M.serve(opts)
  local dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
  local lines = {}
  for user, pw in pairs(opts.users) do lines[#lines + 1] = user .. ":" .. pw .. "\n" end
  write(dir .. "/users.txt", table.concat(lines))
  local port = opts.port or M.free_port(1)
  local argv = { peer.path("bin/luasip"), "serve", "--listen", "udp:127.0.0.1:" .. port,
    "--listen", "tcp:127.0.0.1:" .. port, "--domain", opts.domain or "localhost",
    "--users", dir .. "/users.txt", "--no-huge-pages" }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local self = setmetatable({ port = port, addr = "127.0.0.1:" .. port, dir = dir,
    p = peer.start(argv) }, Serve)
  assert(wait_for(function()
    return self:log():find("luasip serving", 1, true) or not peer.alive(self.p.pid)
  end, M.START_SECONDS) and peer.alive(self.p.pid), "luasip serve did not start:\n" .. self:log())
  return self
end

function Serve:log()
  return peer.slurp(self.p.dir .. "/out") or ""
end

function Serve:stop()
  if self.stopped then return end
  self.stopped = true
  self.crashed = not peer.alive(self.p.pid)
  peer.wait(self.p, 0)   -- TERM, then KILL, to its process group
  peer.clean(self.p)
  os.execute("rm -rf " .. quote(self.dir))
end

-- baresip --------------------------------------------------------------------------------

local Baresip = {}
Baresip.__index = Baresip

--- M.baresip{ user=, password=, domain=, proxy = "127.0.0.1:PORT", transport = "udp"|"tcp",
---            contacts = { "sip:bob@localhost", ... }, auto_answer = bool,
---            regint = seconds (600) } -> phone
-- Audio: a 440 Hz sine (ausine) as the microphone and aubridge as the speaker: no sound card.
function M.baresip(o)
  local dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
  local sip_port = M.free_port(2)
  local ctrl_port = M.free_port(1)
  write(dir .. "/config", table.concat({
    "poll_method epoll",
    "sip_listen 127.0.0.1:" .. sip_port,
    "net_interface 127.0.0.1",   -- SDP and RTP on loopback only
    "rtp_ports 30000-39998",
    "audio_player aubridge,nil",
    "audio_alert aubridge,nil",
    "audio_source ausine,440",
    "ausrc_srate 48000",         -- what ausine produces; baresip resamples it for PCMU
    "ausrc_channels 2",
    "module_path /usr/lib/baresip/modules",
    "module stdio.so",           -- the UI that prints what arrives (its stdin: a pipe)
    "module g711.so",
    "module ausine.so",
    "module aubridge.so",
    "module_app account.so",
    "module_app contact.so",
    "module_app menu.so",
    "module_app ctrl_tcp.so",
    "ctrl_tcp_listen 127.0.0.1:" .. ctrl_port,
    "" }, "\n"))
  local tr = o.transport or "udp"
  write(dir .. "/accounts", ("<sip:%s@%s;transport=%s>;auth_pass=%s;outbound=\"sip:%s;transport=%s\"" ..
    ";regint=%d;answermode=%s\n"):format(o.user, o.domain, tr, o.password, o.proxy, tr,
    o.regint or 600, o.auto_answer and "auto" or "manual"))
  local c = {}
  for i, uri in ipairs(o.contacts or {}) do c[#c + 1] = ('"c%d" <%s>\n'):format(i, uri) end
  write(dir .. "/contacts", table.concat(c))
  -- stdin a pipe that stays open (stdio wants one it can poll); -t: it ends by itself in the
  -- end, whatever happens to this spec
  local p = peer.start({ "sh", "-c", "sleep 300 | baresip -t 290 -f " .. quote(dir) })
  local self = setmetatable({ dir = dir, p = p, sip_port = sip_port, ctrl_port = ctrl_port,
    user = o.user, events = {}, buf = "", token = 0 }, Baresip)
  self.sock = wait_for(function()
    local s = socket.tcp()
    if s:connect("127.0.0.1", ctrl_port) then return s end
    s:close()
    return not peer.alive(p.pid) and "dead" or nil
  end, M.START_SECONDS)
  assert(self.sock and self.sock ~= "dead", "baresip did not start:\n" .. self:output())
  self.sock:settimeout(0)
  return self
end

-- read what arrived on the control connection: events go to self.events, responses to
-- self.responses[token]
function Baresip:poll()
  while true do
    local d, err, partial = self.sock:receive(65536)
    local got = d or partial
    if got and #got > 0 then self.buf = self.buf .. got end
    if not d then
      if err == "closed" then self.closed = true end
      break
    end
  end
  while true do
    local len = self.buf:match("^(%d+):")
    if not len or #self.buf < #len + 1 + tonumber(len) + 1 then break end
    local body = self.buf:sub(#len + 2, #len + 1 + tonumber(len))
    self.buf = self.buf:sub(#len + 3 + tonumber(len))
    local msg = json.decode(body)
    if msg and msg.event then
      self.events[#self.events + 1] = msg
    elseif msg and msg.response then
      self.responses = self.responses or {}
      self.responses[msg.token] = msg
    end
  end
end

--- phone:command(name, params) -> ok, data (the menu's command, through ctrl_tcp)
function Baresip:command(name, params)
  self.token = self.token + 1
  local token = "t" .. self.token
  local body = json.encode({ command = name, params = params or "", token = token })
  assert(self.sock:send(#body .. ":" .. body .. ","))
  local res = wait_for(function()
    self:poll()
    return self.responses and self.responses[token]
  end, M.STEP_SECONDS)
  if not res then return nil, "no response to " .. name end
  return res.ok, res.data
end

--- phone:event(type [, pred], seconds) -> the first event of that type (kept events too)
function Baresip:event(type_, pred, seconds)
  return wait_for(function()
    self:poll()
    for _, e in ipairs(self.events) do
      if e.type == type_ and (not pred or pred(e)) then return e end
    end
  end, seconds or M.STEP_SECONDS)
end

--- phone:registered() -> true once its registration is OK (its `reginfo`)
function Baresip:registered(seconds)
  return wait_for(function()
    local ok, data = self:command("reginfo")
    return ok and data and data:find("OK", 1, true) ~= nil
  end, seconds or M.START_SECONDS)
end

--- phone:output() -> what it printed (its UI: received MESSAGEs are `peer: "text"` lines)
function Baresip:output()
  return peer.slurp(self.p.dir .. "/out") or ""
end

--- phone:printed(text) -> true once its UI printed text
function Baresip:printed(text, seconds)
  return wait_for(function()
    return self:output():find(text, 1, true) ~= nil
  end, seconds or M.STEP_SECONDS)
end

function Baresip:stop()
  if self.stopped then return end
  self.stopped = true
  if self.sock then self.sock:close() end
  peer.wait(self.p, 0)
  peer.clean(self.p)
  os.execute("rm -rf " .. quote(self.dir))
end

-- Linphone (linphone-daemon) ---------------------------------------------------------------

local Linphone = {}
Linphone.__index = Linphone

--- M.linphone{ user=, password=, domain=, proxy = "127.0.0.1:PORT", transport = "udp"|"tcp",
---             auto_answer = bool } -> phone
-- Its account is in its linphonerc (proxy_0, auth_info_0) and its data folder
-- (~/.local/share/linphone, with HOME its own folder) exists before it starts: without them
-- linphone-daemon does not register. No sound card: it runs its calls without one.
function M.linphone(o)
  local dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
  assert(os.execute("mkdir -p " .. quote(dir .. "/home/.local/share/linphone") ..
    " " .. quote(dir .. "/home/.config")))
  local port = M.free_port(1)
  local tr = o.transport or "udp"
  local hop = ("<sip:%s;transport=%s>"):format(o.proxy, tr)
  write(dir .. "/linphonerc", table.concat({
    "[sip]",
    "sip_port=" .. (tr == "udp" and port or -1),
    "sip_tcp_port=" .. (tr == "tcp" and port or -1),
    "sip_tls_port=-1",
    "default_proxy=0",
    "guess_hostname=0",
    "ipv6=0",
    "[rtp]",
    "audio_rtp_port=" .. M.free_port(2),
    "[net]",
    "firewall_policy=0",
    "[sound]",
    "echocancellation=0",
    "[video]",
    "capture=0",
    "display=0",
    "[proxy_0]",
    "reg_proxy=" .. hop,
    "reg_route=" .. hop:gsub(">$", ";lr>"),
    "reg_identity=sip:" .. o.user .. "@" .. o.domain,
    "reg_expires=600",
    "reg_sendregister=1",
    "publish=0",
    "[auth_info_0]",
    "username=" .. o.user,
    "passwd=" .. o.password,
    "realm=" .. o.domain,
    "domain=" .. o.domain,
    "" }, "\n"))
  -- the daemon makes its socket as /tmp/NAME; timeout --foreground stays in the process
  -- group that stop() ends (without it, timeout makes a group of its own)
  local pipe = ("luasip-lp-%d-%s"):format(math.random(1e9), o.user)
  local argv = { "env", "HOME=" .. dir .. "/home", "timeout", "--foreground", "290", "linphone-daemon",
    "--config", dir .. "/linphonerc", "--pipe", pipe, "--log", dir .. "/log.txt",
    "--disable-stats-events" }
  if o.auto_answer then argv[#argv + 1] = "--auto-answer" end
  local self = setmetatable({ dir = dir, port = port, user = o.user, pipe = "/tmp/" .. pipe,
    p = peer.start(argv) }, Linphone)
  assert(wait_for(function()
    return self:command("version") or not peer.alive(self.p.pid)
  end, M.START_SECONDS) and peer.alive(self.p.pid), "linphone-daemon did not start:\n" ..
    (peer.slurp(self.p.dir .. "/out") or ""))
  return self
end

-- One try of a command: its answer, or nil when the daemon did not take the connection or
-- said nothing within `seconds`.
local function linphone_try(pipe, line, seconds)
  local unix = require "socket.unix"
  local c = unix.stream and unix.stream() or unix()
  if not c:connect(pipe) then
    c:close()
    return nil
  end
  c:settimeout(0)
  c:send(line .. "\n")
  local buf, quiet_since = "", nil
  local deadline = socket.gettime() + seconds
  -- an answer ends with no marker that every command keeps: it is read until it went quiet
  while socket.gettime() < deadline do
    local d, err, partial = c:receive(4096)
    local got = d or partial
    if got and #got > 0 then
      buf, quiet_since = buf .. got, socket.gettime()
    elseif err == "closed" then
      break
    elseif quiet_since and socket.gettime() - quiet_since > 0.1 then
      break
    end
    socket.sleep(0.01)
  end
  c:close()
  return buf ~= "" and buf or nil
end

--- phone:command(line) -> its answer ("Status: Ok ..."), or nil when it cannot be reached
-- The daemon serves one connection at a time and may not have finished with the last one:
-- a command is tried again (a few times, within STEP_SECONDS) until it is answered.
function Linphone:command(line)
  local deadline = socket.gettime() + M.STEP_SECONDS
  repeat
    local r = linphone_try(self.pipe, line, 1)
    if r then return r end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return nil
end

--- phone:registered() -> true once its account is registered
function Linphone:registered(seconds)
  return wait_for(function()
    socket.sleep(0.05)
    local r = self:command("register-status ALL")
    return r and r:find("LinphoneRegistrationOk", 1, true) ~= nil
  end, seconds or M.START_SECONDS)
end

--- phone:call_state() -> the state of its current call ("LinphoneCallStreamsRunning", ...),
-- or nil when it has none
function Linphone:call_state()
  socket.sleep(0.05)   -- (polled: one connection at a time)
  local r = self:command("call-status") or ""
  return r:match("State: (%S+)")
end

--- phone:log() -> its own log (every SIP message it sent and got, its chat states)
function Linphone:log()
  return peer.slurp(self.dir .. "/log.txt") or ""
end

--- phone:logged(pattern) -> true once its log matches pattern (a Lua pattern)
function Linphone:logged(pattern, seconds)
  return wait_for(function()
    return self:log():find(pattern) ~= nil
  end, seconds or M.STEP_SECONDS)
end

function Linphone:stop()
  if self.stopped then return end
  self.stopped = true
  self:command("quit")
  peer.wait(self.p, 1)
  peer.clean(self.p)
  os.remove(self.pipe)
  os.execute("rm -rf " .. quote(self.dir))
end

return M
