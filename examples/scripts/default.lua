-- The policy `luasip serve` runs without --script, written out as a script to copy and
-- change: `luasip serve --users examples/users.txt --script examples/scripts/default.lua`.
-- serve.default(req) does the same in one call; this is what it does.
local sip = require "sip"

function route(req, serve)
  local m = req.method
  -- §16.3: 483, 482, 416, 420 before anything else
  if m ~= "ACK" and not req:validate() then
    return
  end
  -- who may relay and as whom (sip.policy); it answers what it refuses
  local ok, why = serve.policy:check(req)
  if not ok then
    return
  end
  if why.register then
    local code = serve.registrar:handle(req)
    serve.log("REGISTER %s from %s -> %d", tostring(sip.registrar.aor(req:addr("To").uri)),
      req.source, code)
    return
  end
  if why.in_dialog then
    return req:relay()   -- along our Record-Route
  end
  local host, _, user = sip.core.uri_hostport(req)
  if not (host and (host == serve.domain or serve.ep:is_local(req.uri))) then
    local res = req:relay()   -- a foreign domain: the policy let this sender relay
    serve.log("%s %s (forwarded) -> %s", m, req.uri, res and res.status or "-")
    return
  end
  if user == "echo" then
    return serve.echo(req)
  end
  if not user then
    return req:reply(m == "OPTIONS" and 200 or 404)
  end
  local aor = "sip:" .. user .. "@" .. serve.domain
  local targets = serve.registrar:targets(aor)
  if #targets == 0 then
    local code = serve.users[user] and 480 or 404
    serve.log("%s %s -> %d", m, aor, code)
    return req:reply(code)
  end
  local res = req:relay(targets)
  serve.log("%s %s -> %s", m, aor, res and res.status or "-")
end
