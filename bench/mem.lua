-- bench/mem.lua: memory of an endpoint (bench/uas.lua in its own process, RSS from /proc):
-- before and after 10 000 TCP connections opened and closed, and RSS per live server transaction.
--
-- usage: lua5.4 bench/mem.lua [--conns N] [--txns N] [--rate R] [--expiry]
--   --conns N   TCP connections, each sends a MESSAGE, reads the 200, closes (default 10000)
--   --txns N    MESSAGEs over UDP answered 200; Timer J (64*T1 = 32 s) keeps each server
--               transaction alive while RSS is read (default 20000)
--   --rate R    UDP MESSAGEs per second (default 5000), so N are all live well within 32 s
--   --expiry    also wait out Timer J and print RSS once the transactions are gone (+33 s)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local socket = require "socket"

local LUA = arg[-1] or "lua5.4"
local opts = { conns = 10000, txns = 20000, rate = 5000, expiry = false }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(%w+)$")
    if name == "expiry" then
      opts.expiry = true
      i = i + 1
    elseif name and opts[name] ~= nil then
      opts[name] = assert(tonumber(arg[i + 1]), "--" .. name .. " needs a number")
      i = i + 2
    else
      error("bench/mem.lua: unknown argument " .. arg[i])
    end
  end
end
-- Connections open at once: well under the endpoint's default of 1024 (csrc/transport.c).
local CONN_BATCH = 100
-- Below the ephemeral range (32768-60999), so no client socket of ours can hold them.
local PORT_TCP, PORT_UDP = 26170, 26171
local CLIENT_TIMEOUT = 5 -- seconds a client waits on one read before calling it a failure

local function read(path)
  local f = io.open(path)
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

local uas_out = {} -- pid -> the file holding its stdout and stderr

local function rss_kb(pid)
  local s = read("/proc/" .. pid .. "/status")
  if not s then
    error("bench/uas.lua (pid " .. pid .. ") is gone: " .. tostring(read(uas_out[pid] or "")))
  end
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end

-- Start bench/uas.lua in the background; returns its PID (the lua process itself).
local function start_uas(listen)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local args = {}
  for _, l in ipairs(listen) do
    args[#args + 1] = "--listen " .. l
  end
  assert(os.execute(string.format("%s bench/uas.lua %s >%s/out 2>&1 & echo $! >%s/pid",
    LUA, table.concat(args, " "), dir, dir)))
  local pid
  for _ = 1, 100 do
    pid = pid or tonumber(read(dir .. "/pid") or "")
    if pid and (read(dir .. "/out") or ""):find("ready") then
      return pid, dir .. "/out"
    end
    socket.sleep(0.05)
  end
  error("bench/uas.lua did not start: " .. tostring(read(dir .. "/out")))
end

local function stop(pid)
  os.execute("rm -rf " .. uas_out[pid]:match("^(.*)/out$"))
  os.execute("kill " .. pid .. " 2>/dev/null")
  for _ = 1, 20 do
    if not read("/proc/" .. pid .. "/status") then
      return
    end
    socket.sleep(0.05)
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
end

local function message(i, transport, port)
  local body = "user2, come here.\n"
  return table.concat({
    "MESSAGE sip:uas@127.0.0.1:" .. port .. " SIP/2.0",
    "Via: SIP/2.0/" .. transport .. " 127.0.0.1:9;branch=z9hG4bK-mem-" .. i .. ";rport",
    "Max-Forwards: 70",
    "From: <sip:bench@127.0.0.1>;tag=m" .. i,
    "To: <sip:uas@127.0.0.1>",
    "Call-ID: mem-" .. i .. "@127.0.0.1",
    "CSeq: 1 MESSAGE",
    "Content-Type: text/plain",
    "Content-Length: " .. #body,
    "", body }, "\r\n")
end

-- The UAS's counters, from the X-Stats header of its answer to an OPTIONS over UDP.
local function uas_stats(port, collect)
  local u = assert(socket.udp())
  assert(u:setpeername("127.0.0.1", port))
  u:settimeout(2)
  local branch = "z9hG4bK-stats-" .. math.random(1, 1e9)
  local lines = { "OPTIONS sip:uas@127.0.0.1:" .. port .. " SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:9;branch=" .. branch .. ";rport", "Max-Forwards: 70",
    "From: <sip:bench@127.0.0.1>;tag=s", "To: <sip:uas@127.0.0.1>", "Call-ID: " .. branch,
    "CSeq: 1 OPTIONS" }
  if collect then
    lines[#lines + 1] = "X-Collect: yes"
  end
  lines[#lines + 1] = "Content-Length: 0\r\n\r\n"
  u:send(table.concat(lines, "\r\n"))
  local res = u:receive() or ""
  u:close()
  local t = {}
  for k, v in (res:match("\nX%-Stats: ([^\r\n]*)") or ""):gmatch("([%w_]+)=(%d+)") do
    t[k] = tonumber(v)
  end
  return t
end

local function mb(kb)
  return string.format("%.1f MB", kb / 1024)
end

-- Part 1: TCP connections opened, used once and closed ---------------------------------

local function tcp_connections(n)
  local pid, out = start_uas { "tcp:127.0.0.1:" .. PORT_TCP, "udp:127.0.0.1:" .. PORT_TCP }
  uas_out[pid] = out
  local before = rss_kb(pid)
  local ok, failed, done = 0, 0, 0
  local peak, half = before, nil
  while done < n do
    local batch = {}
    for i = 1, math.min(CONN_BATCH, n - done) do
      local c = socket.tcp()
      c:settimeout(CLIENT_TIMEOUT)
      if c:connect("127.0.0.1", PORT_TCP) then
        c:send(message(done + i, "TCP", PORT_TCP))
        batch[#batch + 1] = c
      else
        failed = failed + 1
        c:close()
      end
    end
    for _, c in ipairs(batch) do
      local line = c:receive("*l")
      local got = line and line:match("^SIP/2%.0 (%d+)")
      if got == "200" then
        ok = ok + 1
      else
        failed = failed + 1
      end
      c:close()
    end
    done = done + CONN_BATCH
    if done == n // 2 then
      half = rss_kb(pid)
    end
    local r = rss_kb(pid)
    if r > peak then
      peak = r
    end
  end
  -- Let the endpoint see every FIN and free its connections, then look.
  local st
  for _ = 1, 40 do
    socket.sleep(0.1)
    st = uas_stats(PORT_TCP)
    if st.connections == 0 then
      break
    end
  end
  local after = rss_kb(pid)
  print(string.format("%d TCP connections (MESSAGE -> 200, then close): %d ok, %d failed; endpoint reports %s open, %s accepted, %s closed",
    n, ok, failed, tostring(st.connections), tostring(st.connections_accepted), tostring(st.connections_closed)))
  print(string.format("  RSS before %s, after %d connections %s, peak %s, after all %s: delta %+d KB (%+.1f%%); Lua heap after %s KB",
    mb(before), n // 2, half and mb(half) or "-", mb(peak), mb(after), after - before,
    (after - before) * 100 / before, tostring(st.lua_kb)))
  stop(pid)
end

-- Part 2: RSS per live server transaction ----------------------------------------------

local function live_transactions(n, rate)
  local pid, out = start_uas { "udp:127.0.0.1:" .. PORT_UDP }
  uas_out[pid] = out
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  u:setoption("recv-buffer-size", 4 * 1024 * 1024) -- every 200 is counted, none dropped here
  assert(u:setpeername("127.0.0.1", PORT_UDP))
  u:settimeout(0)
  local got = 0
  local function drain()
    while true do
      local r = u:receive()
      if not r then
        return
      end
      if r:find("^SIP/2%.0 200") then
        got = got + 1
      end
    end
  end
  local WARM = 200 -- the first transactions grow the Lua heap and tables; not counted
  for i = 1, WARM do
    u:send(message("w" .. i, "UDP", PORT_UDP))
  end
  socket.sleep(0.3)
  drain()
  local st0 = uas_stats(PORT_UDP, true)
  local before = rss_kb(pid)
  -- Bounded rate: bursts of 100 every 100/rate seconds.
  local BURST = 20
  local t0 = socket.gettime()
  for i = 1, n, BURST do
    for j = i, math.min(i + BURST - 1, n) do
      u:send(message(j, "UDP", PORT_UDP))
    end
    drain()
    local due = t0 + (i + BURST - 1) / rate
    local wait = due - socket.gettime()
    if wait > 0 then
      socket.sleep(wait)
    end
  end
  local deadline = socket.gettime() + 5
  while got < WARM + n and socket.gettime() < deadline do
    socket.sleep(0.05)
    drain()
  end
  local sent_in = socket.gettime() - t0
  local st1 = uas_stats(PORT_UDP)
  local after = rss_kb(pid)
  local st1c = uas_stats(PORT_UDP, true)
  local live = (st1c.server_transactions or 0) - (st0.server_transactions or 0)
  local function per(kb)
    return live > 0 and kb / live or 0
  end
  print(string.format("%d MESSAGEs over UDP at %d/s (%.1f s): %d answered 200, %s dropped by the endpoint; server transactions live %s -> %s",
    n, rate, sent_in, math.max(got - WARM, 0), tostring(st1c.dropped),
    tostring(st0.server_transactions), tostring(st1c.server_transactions)))
  print(string.format("  RSS %s -> %s: %.2f KB per live transaction", mb(before), mb(after), per(after - before)))
  print(string.format("  Lua heap %s -> %s KB (%.2f KB per transaction); after a full GC %s KB (%.2f KB per transaction live in Lua)",
    tostring(st0.lua_kb), tostring(st1.lua_kb), per((st1.lua_kb or 0) - (st0.lua_kb or 0)),
    tostring(st1c.lua_kb), per((st1c.lua_kb or 0) - (st0.lua_kb or 0))))
  if opts.expiry then
    socket.sleep(33) -- Timer J is 64*T1 = 32 s
    local st2 = uas_stats(PORT_UDP, true)
    local gone = rss_kb(pid)
    print(string.format("  after Timer J (33 s) and a full GC: %s server transactions live, Lua heap %s KB, RSS %s (%+d KB from before)",
      tostring(st2.server_transactions), tostring(st2.lua_kb), mb(gone), gone - before))
  end
  u:close()
  stop(pid)
end

print()
print("Memory: bench/uas.lua (one sip.endpoint) in its own process, RSS from /proc/PID/status")
tcp_connections(opts.conns)
live_transactions(opts.txns, opts.rate)
