-- A least-cost router with failover: requests to a number (sip:+15551234@..., sip:0044...)
-- from our own users go to the cheapest gateway that is up; everything else follows serve's
-- default policy. A gateway that answers 408, 500 or 503 (or nothing) is taken out and the
-- next one in the list takes the following requests; an OPTIONS every PROBE_EVERY seconds
-- puts it back once it answers.
--   GATEWAYS="sip:10.0.0.1:5060 sip:10.0.0.2:5060" luasip serve --script failover.lua ...
-- (cheapest first). `luasip ctl reload` or SIGHUP picks up a new list and keeps the state.
-- (req:relay sends the final response upstream itself, so a request that fails on one
-- gateway is answered with that failure; the failover is for the requests after it.)
local sip = require "sip"

local serve = ...
local PROBE_EVERY = tonumber(os.getenv("PROBE_EVERY")) or 10
local GATEWAYS = {}
for g in (os.getenv("GATEWAYS") or ""):gmatch("%S+") do
  GATEWAYS[#GATEWAYS + 1] = g
end

-- gateway -> true while it is out; kept in serve so that a reload keeps it
serve.gateways_down = serve.gateways_down or {}
local down = serve.gateways_down
local FAILED = { [408] = true, [500] = true, [503] = true }

-- Probe the gateways that are out, every PROBE_EVERY seconds (one prober, across reloads).
if not serve.gateway_prober then
  serve.gateway_prober = true
  local function probe()
    for gw in pairs(serve.gateways_down) do
      sip.spawn(function()
        local res = serve.ep:options(gw, { timeout = PROBE_EVERY })
        if res and not FAILED[res.status] then
          serve.gateways_down[gw] = nil
          serve.log("gateway %s is back (%d)", gw, res.status)
        end
      end)
    end
    sip.sched.loop:timer(PROBE_EVERY * 1000, probe)
  end
  sip.sched.loop:timer(PROBE_EVERY * 1000, probe)
end

local function number_of(req)
  local _, _, user = sip.core.uri_hostport(req)
  return user and user:match("^%+?%d%d%d+$") and user
end

function route(req, serve)
  local number = not req.to_tag and req.method ~= "ACK" and number_of(req)
  if not number or #GATEWAYS == 0 then
    return serve.default(req)
  end
  if not req:validate() then
    return
  end
  local ok, why = serve.policy:check(req)
  if not ok then
    return
  end
  if why.inbound then
    return req:reply(403, "Gateways are for our users")
  end
  for _, gw in ipairs(GATEWAYS) do
    if not down[gw] then
      local g = sip.uri.parse(gw)
      local target = "sip:" .. number .. "@" .. g.host .. (g.port and (":" .. g.port) or "")
      local res = req:relay(target)
      local status = res and res.status or 408
      serve.log("%s %s via %s -> %d", req.method, number, gw, status)
      if FAILED[status] then
        down[gw] = true
      end
      return
    end
  end
  req:reply(503, "No gateway available", { headers = { ["Retry-After"] = tostring(PROBE_EVERY) } })
end
