-- A bot that answers only some users: MESSAGEs to sip:bot@DOMAIN from the users listed in
-- BOT_USERS (default "alice") get the text back in upper case; anyone else gets 403, and
-- every other request follows serve's default policy.
--   BOT_USERS="alice carol" luasip serve --users examples/users.txt --script bot_for_some.lua
local sip = require "sip"

local allowed = {}
for u in (os.getenv("BOT_USERS") or "alice"):gmatch("%S+") do
  allowed[u] = true
end

local function bot(req, serve, user)
  req:reply(200)
  local from = req:addr("From")
  local aor = sip.registrar.aor(from.uri)
  local contacts = aor and serve.registrar:lookup(aor) or {}
  local back = sip.request { method = "MESSAGE", uri = contacts[1] and contacts[1].uri or from.uri,
    from = "<sip:bot@" .. serve.domain .. ">", to = "<" .. from.uri .. ">",
    body = req.body:upper(), content_type = "text/plain" }
  local res = serve.ep:request(back)
  serve.log("bot -> %s: %s", user, res and res.status or "no response")
end

function route(req, serve)
  local host, _, ruser = sip.core.uri_hostport(req)
  if ruser ~= "bot" or host ~= serve.domain or req.method ~= "MESSAGE" or req.to_tag then
    return serve.default(req)
  end
  if not req:validate() then
    return
  end
  local ok, why = serve.policy:check(req)   -- our users authenticate as themselves first
  if not ok then
    return
  end
  local from = sip.uri.parse(req:addr("From").uri)
  local user = why.user or (from and from.user)   -- why.user: who authenticated (nil: --no-auth)
  if not (user and allowed[user]) then
    return req:reply(403, "The bot does not talk to you")
  end
  return bot(req, serve, user)
end
