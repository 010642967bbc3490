-- spec/redis_server.lua: a redis-server of the spec's own, on a free loopback port with its
-- own temporary folder (append-only file there), started and stopped by its PID.
local peer = require "peer"
local socket = require "socket"

local M = {}

function M.available()
  return peer.have("redis-server") and pcall(require, "sip.store_redis")
end

local free_tcp_port = peer.free_tcp_port

local function answers(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  if ok then
    c:send("PING\r\n")
    local line = c:receive("*l")
    c:close()
    return line == "+PONG"
  end
  c:close()
  return false
end

--- M.start([r]) -> { port=, dir=, p= } | nil, reason: a new server, or r's again (same port and
-- folder: what it had written comes back) after M.stop(r)
function M.start(r)
  r = r or { port = free_tcp_port(), dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$") }
  r.p = peer.start { "redis-server", "--port", tostring(r.port), "--bind", "127.0.0.1",
    "--dir", r.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
    "--daemonize", "no", "--protected-mode", "no" }
  local deadline = socket.gettime() + 5
  while socket.gettime() < deadline do
    if answers(r.port) then
      return r
    end
    socket.sleep(0.05)
  end
  M.stop(r)
  return nil, "redis-server did not answer on port " .. r.port
end

--- M.kill(r): KILL to its process group at once, its folder kept (what it wrote before, with
-- appendfsync always, comes back with M.start(r))
function M.kill(r)
  if r.p then
    os.execute("kill -KILL -" .. r.p.pid .. " 2>/dev/null")
    peer.wait(r.p, 3)
    peer.clean(r.p)
    r.p = nil
  end
end

--- M.stop(r [, keep]): TERM to its process group, then KILL after a grace; keep: leave its
-- folder for a restart
function M.stop(r, keep)
  if r.p then
    os.execute("kill -TERM -" .. r.p.pid .. " 2>/dev/null")
    peer.wait(r.p, 3)
    peer.clean(r.p)
    r.p = nil
  end
  if not keep then
    os.execute("rm -rf '" .. r.dir .. "'")
  end
end

return M
