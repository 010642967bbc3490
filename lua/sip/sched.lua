-- sip.sched: the coroutine scheduler over the one event loop of this Lua state.
-- await() yields a coroutine until woken; outside a coroutine it runs the loop instead.
local core = require "sip.core"

local sched = { loop = core.loop() }

local running = 0

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then
    io.stderr:write("luasip: uncaught error in a coroutine: ", tostring(err), "\n")
  end
  if coroutine.status(co) == "dead" then
    running = running - 1
  end
end

--- sched.spawn(fn, ...) -> coroutine: run fn in a new coroutine now, until it first waits
function sched.spawn(fn, ...)
  local co = coroutine.create(fn)
  running = running + 1
  resume(co, ...)
  return co
end

function sched.running_count()
  return running
end

--- sched.await(start) -> what wake(...) was called with.
-- start(wake) arranges for wake to be called once, later or right away.
function sched.await(start)
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then
    -- plain script: drive the loop until woken
    local done, res = false, nil
    start(function(...)
      if not done then
        done, res = true, table.pack(...)
      end
    end)
    while not done do
      sched.loop:step(-1)
    end
    return table.unpack(res, 1, res.n)
  end
  local waiting, early = false, nil
  local fired = false
  start(function(...)
    if fired then
      return
    end
    fired = true
    if waiting then
      resume(co, ...)
    else
      early = table.pack(...)
    end
  end)
  if early then
    return table.unpack(early, 1, early.n)
  end
  waiting = true
  return coroutine.yield()
end

--- sched.sleep(seconds): only the calling coroutine waits
function sched.sleep(seconds)
  local ms = math.floor((tonumber(seconds) or 0) * 1000 + 0.5)
  return sched.await(function(wake)
    sched.loop:timer(ms, function() wake(true) end)
  end)
end

return sched
