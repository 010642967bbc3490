-- sip.offline: messages for users who are offline (pager model, RFC 3428): a MESSAGE for a
-- known user with no live binding is stored and answered 202; when the user registers, the
-- stored messages go to the new binding in order, each with a Date header.
local sip = require "sip"

local offline = {}

-- Per user, what a mailbox holds at most: enough for a long weekend of chat, small enough
-- that a flood at one user cannot fill the disk. Past either, the sender gets an error and
-- nothing already stored is dropped.
local MAX_COUNT = 100
local MAX_BYTES = 1024 * 1024
-- Messages older than this are dropped unread (msilo's default expiry is 3 days; a week
-- covers a holiday).
local MAX_AGE = 7 * 24 * 3600
-- §21.5.4: a store that failed is a server error that passes
local RETRY_AFTER = 5

local Offline = {}
Offline.__index = Offline

--- sip.offline.new{ ep=, store=, registrar=, max_count=100, max_bytes=1 MiB,
---                  max_age=7 days, clock=os.time, log=fn(fmt, ...) } -> offline
function offline.new(opts)
  return setmetatable({
    ep = opts.ep, store = opts.store, registrar = opts.registrar,
    limits = { count = opts.max_count or MAX_COUNT, bytes = opts.max_bytes or MAX_BYTES },
    max_age = opts.max_age or MAX_AGE,
    clock = opts.clock or os.time,
    log = opts.log or function() end,
    delivering = {},   -- aor -> true while its messages are being sent
  }, Offline)
end

-- A From or To value without its tag: the delivered MESSAGE is a new request with its own.
local function untagged(v)
  return (v or ""):gsub(";%s*[tT][aA][gG]%s*=%s*[^;%s]*", "")
end

--- offline:accept(req, aor) -> code: stores the MESSAGE for aor and answers 202, or answers
-- why not (480 when the mailbox is full, 500 with Retry-After when the store failed)
function Offline:accept(req, aor)
  local m = { from = untagged(req:header("From")), to = untagged(req:header("To")),
    content_type = req:header("Content-Type") or "text/plain", body = req.body,
    arrived = self.clock() }
  local id, err, kind = self.store:msg_add(aor, m, self.limits)
  if id then
    self.log("MESSAGE %s stored for later (offline, #%s)", aor, tostring(id))
    req:reply(202)
    return 202
  end
  if kind == "limit" then
    self.log("MESSAGE %s refused: %s", aor, err)
    req:reply(480, "Offline message store full")
    return 480
  end
  self.log("MESSAGE %s: store failed: %s", aor, tostring(err))
  req:reply(500, "Message store unavailable", { headers = { ["Retry-After"] = tostring(RETRY_AFTER) } })
  return 500
end

local function http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

--- offline:deliver(aor) -> sent, kept: sends aor's stored messages, oldest first, to its
-- best binding; each is deleted after its 2xx. The first that fails stops the run and it
-- and the rest wait for the next registration. Yields (run it in a coroutine).
function Offline:deliver(aor)
  if self.delivering[aor] then
    return 0, 0
  end
  self.delivering[aor] = true
  local ok, sent, kept = pcall(self._deliver, self, aor)
  self.delivering[aor] = nil
  if not ok then
    self.log("offline delivery to %s failed: %s", aor, tostring(sent))
    return 0, 0
  end
  return sent, kept
end

function Offline:_deliver(aor)
  local list, err = self.store:msg_list(aor)
  if not list then
    self.log("offline delivery to %s: store failed: %s", aor, tostring(err))
    return 0, 0
  end
  local sent, too_old = 0, self.clock() - self.max_age
  for i, m in ipairs(list) do
    local target = self.registrar:targets(aor)[1]
    if not target then
      return sent, #list - i + 1
    end
    if m.arrived < too_old then
      self.store:msg_delete(aor, m.id)
    else
      local req = sip.request { method = "MESSAGE", uri = target, from = m.from, to = m.to,
        body = m.body, content_type = m.content_type, headers = { Date = http_date(m.arrived) } }
      local res = req and self.ep:request(req)
      local status = type(res) == "userdata" and res.status or nil
      self.log("MESSAGE %s delivered from the store (#%s) -> %s", aor, tostring(m.id),
        tostring(status or "no response"))
      if not (status and status >= 200 and status < 300) then
        return sent, #list - i + 1
      end
      local dok, derr = self.store:msg_delete(aor, m.id)
      if not dok then
        -- it would go again next time: a duplicate rather than a loss
        self.log("offline delivery to %s: delete failed: %s", aor, tostring(derr))
      end
      sent = sent + 1
    end
  end
  return sent, 0
end

--- offline:expire(): drops the messages past the age limit (a timer calls it)
function Offline:expire()
  return self.store:msg_expire(self.clock() - self.max_age)
end

return offline
