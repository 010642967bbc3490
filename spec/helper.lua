-- spec/helper.lua: shared bits for the specs — corpus access and small utilities.
-- The corpus lives beside the project: ../shared/corpus/ from the repository root.
local helper = {}

helper.corpus = os.getenv("SIP_CORPUS") or "../shared/corpus"

function helper.read(path)
  local f = assert(io.open(helper.corpus .. "/" .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Files of a corpus folder, sorted.
function helper.files(dir)
  local out = {}
  local p = io.popen('ls "' .. helper.corpus .. "/" .. dir .. '"')
  for name in p:lines() do
    if name:match("%.sip$") then
      out[#out + 1] = name
    end
  end
  p:close()
  table.sort(out)
  return out
end

-- CRLF lines joined: helper.msg{ "INVITE sip:a@b SIP/2.0", "Via: ...", "", "body" }
function helper.msg(lines)
  return table.concat(lines, "\r\n")
end

-- A raw UDP peer a spec drives packet by packet: every datagram it gets is kept, parsed,
-- with its arrival time (ms) and source. p.send(text, ep) sends to ep's UDP listener.
function helper.udp_peer()
  local socket = require "socket"
  local sip = require "sip"
  local u = assert(socket.udp())
  assert(u:setsockname("127.0.0.1", 0))
  u:settimeout(0)
  local _, port = u:getsockname()
  local p = { sock = u, port = port, inbox = {}, uri = "sip:peer@127.0.0.1:" .. port }
  function p.poll()
    while true do
      local data, ip, rport = u:receivefrom()
      if not data then
        return
      end
      p.inbox[#p.inbox + 1] = { msg = assert(sip.parse(data)), raw = data,
        at = socket.gettime() * 1000, ip = ip, port = rport }
    end
  end
  function p.send(text, ep)
    local host, eport = ep:address("udp"):match("^(.*):(%d+)$")
    assert(u:sendto(tostring(text), host, tonumber(eport)))
  end
  -- the received items whose message satisfies pred, and how many there are
  function p.find(pred)
    local out = {}
    for _, it in ipairs(p.inbox) do
      if pred(it.msg) then
        out[#out + 1] = it
      end
    end
    return out
  end
  function p.count(pred)
    return #p.find(pred)
  end
  function p.close()
    u:close()
  end
  return p
end

-- Drive the shared loop until cond() holds or `seconds` (5) pass; poll() (raw sockets of the
-- spec) runs after every step. Returns cond()'s last value.
function helper.run_until(cond, seconds, poll, step_ms)
  local socket = require "socket"
  local loop = require("sip.sched").loop
  local deadline = socket.gettime() + (seconds or 5)
  local ok = cond()
  while not ok and socket.gettime() < deadline do
    loop:step(step_ms or 5)
    if poll then
      poll()
    end
    ok = cond()
  end
  return ok
end

-- Drive the loop for `seconds`, whatever happens.
function helper.run_for(seconds, poll, step_ms)
  helper.run_until(function() return false end, seconds, poll, step_ms)
end

return helper
