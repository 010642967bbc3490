---@meta sip.sched
-- sip.sched: the coroutine scheduler over the one event loop.

---@class sip.sched
---@field loop userdata the one event loop of this Lua state (core.loop())
local sched = {}

---Run fn(...) in a coroutine now, until it first waits.
---@param fn function
---@param ... any
---@return thread
function sched.spawn(fn, ...) end

---Yield until wake(...) is called (start(wake) arranges that, later or at once); outside a
---coroutine it runs the loop until then.
---@param start fun(wake: fun(...))
---@return any ...
function sched.await(start) end

---Only the calling coroutine waits.
---@param seconds number
function sched.sleep(seconds) end

---@return integer handlers running now
function sched.running_count() end

return sched
