--- sip.sched: the coroutine scheduler over the one event loop of this Lua state.
-- await() yields a coroutine until woken; outside a coroutine it runs the loop instead.
local core = require "sip.core"

local sched = { loop = core.loop() }

local running = 0

-- Coroutines are reused: a request's handler runs in a worker that goes back to the pool
-- when the handler returns. Creating a thread and growing its stack per request was a good
-- part of the allocations on the proxy path. Every wake is one-shot (await guards it), so
-- a worker only ever gets resumed for the task it is running.
local DONE = {}        -- what a worker yields when its task has returned
local POOL_MAX = 256   -- idle workers kept; past that, finished ones are let go
local pool = {}

-- A task comes as fn, n, a, b, c: up to three arguments passed as they are (no table per
-- task), or n = -1 and a table.pack of them in a.
local function call(fn, n, a, b, c)
  if n == -1 then
    return fn(table.unpack(a, 1, a.n))
  elseif n == 0 then
    return fn()
  elseif n == 1 then
    return fn(a)
  elseif n == 2 then
    return fn(a, b)
  end
  return fn(a, b, c)
end

local function worker()
  local fn, n, a, b, c = coroutine.yield()
  while true do
    call(fn, n, a, b, c)
    if #pool < POOL_MAX then
      pool[#pool + 1] = coroutine.running()
      fn, n, a, b, c = coroutine.yield(DONE)
    else
      return DONE
    end
  end
end

local function resume(co, ...)
  local ok, mark = coroutine.resume(co, ...)
  if not ok then
    io.stderr:write("luasip: uncaught error in a coroutine: ", tostring(mark), "\n")
    running = running - 1
  elseif mark == DONE then
    running = running - 1
  end
end

--- sched.spawn(fn, ...) -> coroutine: run fn in a coroutine now, until it first waits
function sched.spawn(fn, ...)
  local co = table.remove(pool)
  if not co then
    co = coroutine.create(worker)
    coroutine.resume(co)   -- to the worker's first yield: ready for a task
  end
  running = running + 1
  local n = select("#", ...)
  if n <= 3 then
    resume(co, fn, n, ...)
  else
    resume(co, fn, -1, table.pack(...))
  end
  return co
end

--- sched.running_count() -> number of handler coroutines running now
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
