-- spec/sipp.lua: run sipp (sip-tester) as a peer for the interop specs — started in the
-- background by PID, watched while our loop runs, stopped by that PID, its figures read back.
local socket = require "socket"
local sip = require "sip"

local sipp = {}

sipp.bin = os.getenv("SIPP") or "sipp"
-- Absolute, as sipp runs from its own directory; specs run from the repository root.
sipp.scenarios = (function()
  local p = io.popen("unset LD_PRELOAD; pwd")
  local cwd = p:read("l")
  p:close()
  return cwd .. "/spec/sipp"
end)()

-- Longest we wait for a killed sipp to go before SIGKILL; sipp flushes its files on SIGTERM.
local STOP_GRACE = 2

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

--- sipp.free_port() -> a UDP port on 127.0.0.1 nobody held a moment ago
function sipp.free_port()
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  local _, port = u:getsockname()
  u:close()
  return tonumber(port)
end

--- sipp.installed() -> true | nil, why
function sipp.installed()
  local p = io.popen("unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS; " .. sipp.bin .. " -v 2>&1")
  local out = p:read("a")
  p:close()
  if out:find("SIPp v%d") then
    return true
  end
  return nil, "no working sipp (" .. sipp.bin .. "): " .. out:sub(1, 200)
end

-- Run the shared loop until cond() holds or `seconds` pass; returns cond()'s last value.
function sipp.run_until(cond, seconds)
  local deadline = socket.gettime() + seconds
  local ok = cond()
  while not ok and socket.gettime() < deadline do
    sip.sched.loop:step(20)
    ok = cond()
  end
  return ok
end

local Proc = {}
Proc.__index = Proc

--- sipp.start{ scenario=, args={...}, remote="127.0.0.1:5060"|nil } -> proc
-- sipp runs from a fresh directory (its trace files land there) with -nostdin, and every
-- argument the caller gives; the caller bounds it with -m and -timeout.
function sipp.start(t)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. sh_quote(dir)))
  local scenario = assert(t.scenario, "sipp.start: scenario required")
  local argv = { sipp.bin, "-sf", sipp.scenarios .. "/" .. scenario, "-nostdin",
    "-trace_stat", "-stf", "stat.csv", "-trace_err", "-trace_msg" }
  for _, a in ipairs(t.args or {}) do
    argv[#argv + 1] = a
  end
  if t.remote then
    argv[#argv + 1] = t.remote
  end
  local quoted = {}
  for i, a in ipairs(argv) do
    quoted[i] = sh_quote(a)
  end
  -- The subshell records sipp's PID and, once it ends, its exit status; it is not waited
  -- for, so sipp runs alongside our loop.
  -- (unset: under `make sanitize` the ASan runtime preloaded into lua5.4 must not follow sipp)
  local cmd = string.format("unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS; cd %s && ( %s >sipp.out 2>&1 & echo $! >pid; wait $!; echo $? >rc.tmp; mv rc.tmp rc ) >/dev/null 2>&1 &",
    sh_quote(dir), table.concat(quoted, " "))
  assert(os.execute(cmd))
  local self = setmetatable({ dir = dir, argv = argv }, Proc)
  local t0 = socket.gettime()
  while not self.pid and socket.gettime() - t0 < 5 do
    self.pid = tonumber(read(dir .. "/pid") or "")
    if not self.pid then
      socket.sleep(0.01)
    end
  end
  assert(self.pid, "sipp did not start: " .. table.concat(argv, " "))
  -- Requests sent before sipp holds its port are lost without a trace; wait for it.
  for i, a in ipairs(argv) do
    if a == "-p" then
      self.port = tonumber(argv[i + 1])
    end
  end
  if self.port then
    assert(self:wait_bound(5), "sipp did not bind 127.0.0.1:" .. self.port .. "\n" .. self:report())
  end
  return self
end

-- True once a socket is bound to 127.0.0.1:port (not by binding it ourselves, which could
-- make sipp's own bind fail).
local udp_bound = require("peer").udp_bound

function Proc:wait_bound(seconds)
  local t0 = socket.gettime()
  while socket.gettime() - t0 < seconds and not self:exit_code() do
    if udp_bound(self.port) then
      return true
    end
    socket.sleep(0.01)
  end
end

--- proc:exit_code() -> sipp's exit status once it has ended, else nil
function Proc:exit_code()
  if self.rc == nil then
    self.rc = tonumber(read(self.dir .. "/rc") or "")
  end
  return self.rc
end

--- proc:wait(seconds) -> exit status | nil (still running); our loop runs meanwhile
function Proc:wait(seconds)
  sipp.run_until(function() return self:exit_code() end, seconds)
  return self:exit_code()
end

--- proc:stop(): SIGTERM by PID, SIGKILL if it lingers; harmless when sipp has ended
function Proc:stop()
  if self:exit_code() or not self.pid then
    return
  end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  local t0 = socket.gettime()
  while not self:exit_code() and socket.gettime() - t0 < STOP_GRACE do
    socket.sleep(0.05)
  end
  if not self:exit_code() then
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
  end
end

--- proc:stats() -> the last row of sipp's -stf CSV as { SuccessfulCall_C = n, ... }
function Proc:stats()
  local csv = read(self.dir .. "/stat.csv")
  if not csv then
    return {}
  end
  local lines = {}
  for line in csv:gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  if #lines < 2 then
    return {}
  end
  local names, row = {}, {}
  for name in (lines[1] .. ";"):gmatch("([^;]*);") do
    names[#names + 1] = name:gsub("%((%a)%)$", "_%1")
  end
  local i = 0
  for value in (lines[#lines] .. ";"):gmatch("([^;]*);") do
    i = i + 1
    if names[i] then
      row[names[i]] = tonumber(value) or value
    end
  end
  return row
end

-- Tail of one of sipp's files in its directory, for failure messages.
function Proc:tail(pattern, bytes)
  local p = io.popen("ls " .. sh_quote(self.dir) .. " 2>/dev/null")
  local found
  for name in p:lines() do
    if name:match(pattern) then
      found = name
    end
  end
  p:close()
  local s = found and read(self.dir .. "/" .. found) or ""
  return s:sub(-(bytes or 2000))
end

--- proc:report() -> a paragraph for an assertion message: command, status, counts, errors
function Proc:report()
  local st = self:stats()
  return string.format("sipp (pid %s, dir %s): exit %s; created %s, successful %s, failed %s\n%s\n%s",
    tostring(self.pid), self.dir, tostring(self:exit_code()), tostring(st.TotalCallCreated),
    tostring(st.SuccessfulCall_C), tostring(st.FailedCall_C),
    self:tail("errors%.log$"), self:tail("^sipp%.out$", 600))
end

--- proc:cleanup(): remove its directory (kept when the spec failed, for a look)
function Proc:cleanup()
  os.execute("rm -rf " .. sh_quote(self.dir))
end

return sipp
