-- spec/peer.lua: run an external SIP peer (sipsak, sipp, ...) by PID with a deadline while the
-- luasip loop keeps serving, then collect its exit code and output.
local sip = require "sip"
local socket = require "socket"

local peer = {}

-- After TERM a peer gets this long to exit before KILL; sipp writes its statistics on TERM.
local GRACE_SECONDS = 1

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function sh(cmd)
  -- (the ASan runtime that `make sanitize` preloads into lua5.4 stays out of other programs)
  local f = assert(io.popen("unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS; " .. cmd))
  local out = f:read("a")
  f:close()
  return out
end

--- peer.have(program) -> boolean: whether the program is installed
function peer.have(program)
  return sh("command -v " .. quote(program) .. " 2>/dev/null") ~= ""
end

--- peer.path(relative) -> absolute path, for peers that run in their own directory
function peer.path(relative)
  return sh("pwd"):match("^%s*(.-)%s*$") .. "/" .. relative
end

--- peer.free_udp_port() -> a port nobody on 127.0.0.1 holds right now
-- Shared with the specs that start processes.
peer.slurp, peer.sh = slurp, sh

--- peer.udp_bound(port) -> boolean: whether something holds 127.0.0.1:port, read from
-- /proc/net/udp rather than by binding it (which could make the peer's own bind fail);
-- true without procfs (nothing to wait for then).
function peer.udp_bound(port)
  local s = slurp("/proc/net/udp")
  return s == nil or s:find(string.format("0100007F:%04X", port), 1, true) ~= nil
end

--- peer.free_tcp_port() -> a TCP port nobody on 127.0.0.1 listens on right now
function peer.free_tcp_port()
  local t = assert(socket.bind("127.0.0.1", 0))
  local _, port = t:getsockname()
  t:close()
  return tonumber(port)
end

--- peer.write(path, text) -> path: the file written (binary), for configs a spec makes
function peer.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function peer.free_udp_port()
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  local _, port = u:getsockname()
  u:close()
  return tonumber(port)
end

--- peer.start(argv) -> p: the program runs in its own directory and process group, which is
-- also its XDG_DATA_HOME (a `luasip serve` keeps its default store there, not in ~).
-- p.pid, p.dir (its working directory, for files it writes), p.argv
function peer.start(argv)
  local dir = sh("mktemp -d"):match("^%s*(.-)%s*$")
  local words = {}
  for i, a in ipairs(argv) do words[i] = quote(a) end
  -- Peers are other programs: under `make sanitize` the ASan runtime preloaded into lua5.4
  -- must not follow them (it would report their own leaks).
  local script = ("echo $$; exec >/dev/null 2>&1; unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS; "
    .. "cd %s && export XDG_DATA_HOME=\"$PWD\" && %s >out 2>&1; "
    .. "echo $? >rc.tmp && mv rc.tmp rc"):format(quote(dir), table.concat(words, " "))
  -- setsid: the peer leads its own process group, so a timeout ends it and its children.
  -- In the background: it is not our child, so no handle of ours waits for it when a spec
  -- that failed half-way leaves it running (a popen handle's finalizer would block the whole
  -- run until it ends); init reaps it. Its PID and the rc file tell us the rest.
  local handle = assert(io.popen("setsid sh -c " .. quote(script) .. " &"))
  local pid = tonumber(handle:read("l"))
  handle:close()
  assert(pid, "could not start " .. tostring(argv[1]))
  return { pid = pid, dir = dir, argv = argv }
end

--- peer.alive(pid) -> whether the process runs (a zombie does not)
function peer.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
  end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("%) (%a)")
  return state ~= nil and state ~= "Z"
end

--- peer.wait(p, seconds) -> exit code, output | nil, "timeout", output
-- Drives the luasip loop while waiting; on timeout the whole process group is ended.
function peer.wait(p, seconds)
  local deadline = socket.gettime() + seconds
  local code
  repeat
    sip.sched.loop:step(20)
    code = tonumber(slurp(p.dir .. "/rc") or "")
  until code or socket.gettime() > deadline
  if not code then
    os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
    local grace = socket.gettime() + GRACE_SECONDS
    while peer.alive(p.pid) and socket.gettime() < grace do
      sip.sched.loop:step(20)
    end
    os.execute("kill -KILL -" .. p.pid .. " 2>/dev/null")
  end
  p.output = slurp(p.dir .. "/out") or ""
  if code then return code, p.output end
  return nil, "timeout", p.output
end

--- peer.run(argv, seconds) -> exit code, output | nil, "timeout", output (and cleans up)
function peer.run(argv, seconds)
  local p = peer.start(argv)
  local code, a, b = peer.wait(p, seconds)
  peer.clean(p)
  return code, a, b
end

--- peer.clean(p): remove the peer's working directory
function peer.clean(p)
  os.execute("rm -rf " .. quote(p.dir))
end

return peer
