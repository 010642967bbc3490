-- bench/store.lua: what one store call costs on each backend of sip.store: bindings put and
-- read, offline messages added, one call at a time and (Redis) many coroutines at once.
-- Run from the checkout: lua5.4 bench/store.lua [N]. Starts its own redis-server (loopback,
-- temp folder) when there is one; the SQLite file goes in a temp folder too.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local sip = require "sip"
local store = require "sip.store"
local socket = require "socket"

local N = tonumber(arg[1]) or 5000
local tmp = io.popen("mktemp -d"):read("l")

local function binding(i)
  return { uri = "sip:u" .. i .. "@10.0.0." .. (i % 250) .. ":5060", key = "k" .. i, q = 1,
    expires_at = os.time() + 3600, call_id = "c" .. i, cseq = i, updated = os.time(),
    source = "udp:10.0.0.1:5060", path = {} }
end

local function time(label, n, fn)
  local t0 = socket.gettime()
  fn()
  local dt = socket.gettime() - t0
  print(("  %-34s %8.0f /s  (%6.1f us each)"):format(label, n / dt, dt / n * 1e6))
end

local function run(name, s)
  print(name)
  time("put (one at a time)", N, function()
    for i = 1, N do assert(s:put("sip:u" .. i .. "@bench", binding(i))) end
  end)
  time("get (one at a time)", N, function()
    for i = 1, N do assert(#assert(s:get("sip:u" .. i .. "@bench")) == 1) end
  end)
  time("msg_add (one at a time)", N, function()
    for i = 1, N do
      assert(s:msg_add("sip:u" .. (i % 100) .. "@bench", { from = "<sip:a@b>", to = "<sip:c@d>",
        content_type = "text/plain", body = "hello " .. i, arrived = os.time() },
        { count = 1e9, bytes = 1e12 }))
    end
  end)
  if s.shared then
    -- 100 coroutines at once: the calls are pipelined on the one connection
    time("put (100 coroutines at once)", N, function()
      local done = 0
      for c = 1, 100 do
        sip.spawn(function()
          for i = c, N, 100 do assert(s:put("sip:v" .. i .. "@bench", binding(i))) end
          done = done + 1
        end)
      end
      while done < 100 do sip.sched.loop:step(10) end
    end)
  end
  s:close()
end

run("memory", store.memory())
run("sqlite (WAL, synchronous=NORMAL)", assert(store.open("sqlite:" .. tmp .. "/bench.db")))
local ok, redis_server = pcall(require, "redis_server")
if ok and redis_server.available() then
  local r = assert(redis_server.start())
  -- appendfsync always in the spec server; the bench measures the default everysec too
  local s = assert(store.open("redis://127.0.0.1:" .. r.port .. "/0"))
  run("redis (loopback, appendfsync always)", s)
  redis_server.stop(r)
end
os.execute("rm -rf '" .. tmp .. "'")
