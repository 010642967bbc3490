-- sip.workers: `luasip serve --workers N`: a master process starts N workers, each a
-- `serve` of its own (loop, Lua state) on the same ports (SO_REUSEPORT) over one store.
local sip = require "sip"

local workers = {}

-- A worker that ends sooner than this after its start is not started again (a bad
-- configuration would otherwise spin).
local RESPAWN_MIN_SECONDS = 2

-- A worker's listeners: a UDP port of its own first, then the shared ones. The core sends
-- requests from the first UDP listener and names it in the Via, so the responses to what
-- this worker relays come back to it, not to whichever worker the kernel picks for the
-- shared port; responses it sends go out from the listener the request came in on.
local function worker_listeners(listen)
  local out = {}
  for _, l in ipairs(listen) do
    local host = l:match("^udp:(.+):%d+$")
    if host then
      out[1] = "udp:" .. host .. ":0"
      break
    end
  end
  for _, l in ipairs(listen) do
    out[#out + 1] = l
  end
  return out
end

-- This command line again, as the kernel has it (the interpreter and the script included).
local function own_argv()
  local f = io.open("/proc/self/cmdline", "rb")
  local s = f and f:read("a")
  if f then
    f:close()
  end
  if not s or s == "" then
    return nil
  end
  local out = {}
  for w in s:gmatch("([^%z]*)%z") do
    out[#out + 1] = w
  end
  return out
end

--- workers.master(n, opts) -> exit code: the master of `serve --workers N`. Starts N copies
-- of this command as workers (each `--worker I@MASTER/N`), starts a worker again when one
-- dies, passes SIGINT/SIGTERM on, and SIGHUP (each worker loads its --script again).
-- What the workers share goes through the store (a memory store cannot be shared).
function workers.master(n, opts)
  local core = sip.core
  if opts.store == "memory" then
    io.stderr:write("luasip: --workers needs a store the workers share (sqlite:FILE or redis://)\n")
    return 2
  end
  local check, serr = sip.store.open(opts.store)   -- a bad store stops us here, once
  if not check then
    io.stderr:write("luasip: ", serr, "\n")
    return 1
  end
  check:close()
  local argv = own_argv()
  if not argv then
    io.stderr:write("luasip: --workers needs /proc/self/cmdline\n")
    return 1
  end
  local master = tostring(core.proc_pid())
  core.proc_block()
  local running = {}   -- pid -> { index =, started = }
  local function start(i)
    local a, skip = {}, false
    for _, w in ipairs(argv) do
      if skip then
        skip = false
      elseif w == "--workers" then
        skip = true
      else
        a[#a + 1] = w
      end
    end
    a[#a + 1] = "--worker"
    a[#a + 1] = i .. "@" .. master .. "/" .. n
    local pid, err = core.proc_spawn(a)
    if not pid then
      return nil, err
    end
    running[pid] = { index = i, started = os.time() }
    return pid
  end
  for i = 1, n do
    local ok, err = start(i)
    if not ok then
      io.stderr:write("luasip: cannot start a worker: ", err, "\n")
      for pid in pairs(running) do
        core.proc_kill(pid, 15)
      end
      return 1
    end
  end
  local function stop_all(code)
    for pid in pairs(running) do
      core.proc_kill(pid, 15)
    end
    local deadline = os.time() + 3
    while next(running) do
      local ev, pid = core.proc_wait(200)
      if ev == "exit" then
        running[pid] = nil
      end
      if os.time() > deadline then
        for p in pairs(running) do
          core.proc_kill(p, 9)
        end
      end
    end
    return code
  end
  while true do
    local ev, a, b = core.proc_wait()
    if ev == "signal" and a == 1 then
      for pid in pairs(running) do
        core.proc_kill(pid, 1)
      end
    elseif ev == "signal" then
      return stop_all(a == 2 and 130 or 0)
    elseif ev == "exit" and running[a] then
      local w = running[a]
      running[a] = nil
      io.stderr:write(("luasip: worker %d (pid %d) ended with code %d\n"):format(w.index, a, b))
      if os.time() - w.started < RESPAWN_MIN_SECONDS then
        return stop_all(1)
      end
      if not start(w.index) then
        return stop_all(1)
      end
    end
  end
end


--- workers.control_path(path, i) -> the control socket of worker i alone (path: serve's)
function workers.control_path(path, i)
  return path .. ".w" .. i
end

--- workers.worker(opts) -> true | nil, reason: makes the serve options of
-- `--worker I@MASTER/N` (shared ports, a UDP port of its own first, a store other workers
-- write too) and ties this process's life to the master's.
-- Worker 1 alone takes serve's --control socket and --metrics address, and answers there for
-- all: it asks the others over their own control sockets (workers.control_path). Each worker
-- writes a --capture file of its own (FILE-wI.pcap).
function workers.worker(opts)
  local index, master, count = opts.worker:match("^(%d+)@(%d+)/(%d+)$")
  if not index then
    return nil, "--worker is for serve's own use"
  end
  sip.core.proc_die_with_parent(tonumber(master))
  index, count = tonumber(index), tonumber(count)
  opts.reuse_port, opts.shared_store = true, true
  opts.listen = worker_listeners(opts.listen)
  opts.worker_index, opts.worker_count = index, count
  if opts.capture then
    opts.capture = opts.capture:gsub("%.pcap$", "") .. "-w" .. index .. ".pcap"
  end
  if index > 1 then
    -- the others count what /metrics reports, and answer worker 1's questions
    opts.metrics_tap, opts.metrics, opts.control_public = opts.metrics ~= nil, nil, false
  end
  return true
end

return workers
