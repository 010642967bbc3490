-- A least-cost router with failover: requests to a number (sip:+15551234@..., sip:0044...)
-- from our own users go to the cheapest gateway, then to the next one in turn when it fails
-- (408, 500, 503 or no answer: req:relay with keep_failure brings that final back instead of
-- sending it upstream); everything else follows serve's default policy. A failing gateway is
-- also taken out for the requests after it, until an OPTIONS every PROBE_EVERY seconds finds
-- it back.
--   GATEWAYS="sip:10.0.0.1:5060 sip:10.0.0.2:5060" luasip serve --script failover.lua ...
-- (cheapest first). `luasip ctl reload` or SIGHUP picks up a new list and keeps the state.
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
  for i, gw in ipairs(GATEWAYS) do
    if not down[gw] or i == #GATEWAYS then
      local g = sip.uri.parse(gw)
      local target = "sip:" .. number .. "@" .. g.host .. (g.port and (":" .. g.port) or "")
      local last = i == #GATEWAYS
      -- all but the last: a failure comes back here and the next gateway gets the request
      local res = req:relay(target, { keep_failure = not last })
      local status = res and res.status or 408
      serve.log("%s %s via %s -> %d", req.method, number, gw, status)
      if not FAILED[status] then
        down[gw] = nil
        return
      end
      down[gw] = true
      if req.replied_final then
        return   -- the last one's failure went upstream (as 500, §16.7)
      end
    end
  end
  if not req.replied_final then
    req:reply(503, "No gateway available", { headers = { ["Retry-After"] = tostring(PROBE_EVERY) } })
  end
end
