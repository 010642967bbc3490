-- sip.ops: what an operator of `luasip serve` needs, on the server's own loop: signals (HUP
-- reloads the script), the control socket of `luasip ctl`, Prometheus metrics, JSON logs.
local sip = require "sip"
local core = sip.core
local sched = require "sip.sched"

local M = {}

-- A control command or an HTTP request head is a line or a few; more is not a client of ours.
local MAX_REQUEST = 8192
-- A control or metrics client has this long to send its request and read the answer.
local CONN_TIMEOUT_MS = 5000

local function one_line(s)
  return (tostring(s):gsub("%s*\n%s*", " | "))
end

-- JSON ---------------------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- sip.ops.json(fields, order) -> one line of JSON: an object of strings, numbers and
-- booleans, keys in `order` first (then the rest, sorted), nil values left out
function M.json(t, order)
  local parts, seen = {}, {}
  local function add(k)
    local v = t[k]
    seen[k] = true
    if v == nil then
      return
    end
    local tv = type(v)
    local enc = (tv == "number" or tv == "boolean") and tostring(v) or json_string(v)
    if tv == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      enc = "null"
    end
    parts[#parts + 1] = json_string(k) .. ":" .. enc
  end
  for _, k in ipairs(order or {}) do
    add(k)
  end
  local rest = {}
  for k in pairs(t) do
    if not seen[k] then
      rest[#rest + 1] = k
    end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do
    add(k)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- the date and time of a second, made once per second
local last_second, last_prefix = nil, nil

local function iso_time(t)
  t = t or core.realtime()
  local s = math.floor(t)
  if s ~= last_second then
    last_second, last_prefix = s, os.date("!%Y-%m-%dT%H:%M:%S", s)
  end
  return string.format("%s.%03dZ", last_prefix, math.floor((t - s) * 1000))
end

--- sip.ops.json_logger(write) -> log(fmt, ...): serve's log lines as JSON objects
-- { time, msg } (write: fn(line), default stdout)
function M.json_logger(write)
  write = write or function(line)
    io.stdout:write(line, "\n")
    io.stdout:flush()
  end
  local log = function(fmt, ...)
    write(M.json({ time = iso_time(), msg = string.format(fmt, ...) }, { "time", "msg" }))
  end
  return log, write
end

local TXN_LINE = '{"time":%s,"method":%s,"call_id":%s,"from":%s,"to":%s,"source":%s,' ..
  '"outcome":%s,"duration_ms":%.3f%s}'

-- a JSON string, or null
local function jstr(v)
  return v == nil and "null" or json_string(v)
end

--- sip.ops.log_transactions(route, ep, write) -> route': route with one JSON object written
-- per transaction when its handler is over: time, method, call_id, from, to, source,
-- outcome (the final status sent, or "none"), duration_ms (and error, when it raised)
function M.log_transactions(route, ep, write)
  return function(req, ...)
    local t0 = core.realtime()
    local ok, err = pcall(route, req, ...)
    if req.method ~= "ACK" then
      -- the final sent: the transaction itself may be over (waiting in the core's table)
      local status = req.final_status or 0
      local txn = req._txn
      if status == 0 and txn and txn ~= 0 and ep.core then
        local _, st = ep.core:txn_state(txn)
        status = st or 0
      end
      local from, to = req:addr("From"), req:addr("To")
      local outcome = status >= 200 and status or (ok and '"none"' or 500)
      -- (written out rather than through sip.ops.json: this runs for every transaction)
      write(TXN_LINE:format(json_string(iso_time(t0)), json_string(req.method),
        jstr(req.call_id), jstr(from and from.uri), jstr(to and to.uri), jstr(req.source),
        outcome, (core.realtime() - t0) * 1e3,
        ok and "" or (',"error":' .. json_string(one_line(err)))))
    end
    if not ok then
      error(err, 0)
    end
  end
end

-- Streams: a request in, an answer out, closed ------------------------------------------

-- Serve one-shot requests on listener: answer(bytes so far, at_eof) -> the bytes to send back
-- and close, or nil while the request is incomplete, or a function that makes those bytes in
-- a coroutine of its own (it may wait: a store, the other workers). Returns { close = fn }.
local function stream_server(listener, answer)
  local conns = {}
  local function accept_all(l)
    while true do
      local c = l:accept()
      if not c then
        return
      end
      local buf, out, off = "", nil, 1
      local timer
      local function close()
        if conns[c] then
          conns[c] = nil
          c:close()
          timer:cancel()
        end
      end
      conns[c] = true
      timer = sched.loop:timer(CONN_TIMEOUT_MS, close)
      local io
      local function later(fn)
        out = ""   -- nothing to write until fn is done
        c:unwatch()
        sched.spawn(function()
          local ok, bytes = pcall(fn)
          if conns[c] then
            out = ok and bytes or "ERR " .. one_line(bytes) .. "\n"
            c:watch(io, true)
          end
        end)
      end
      io = function(_, _)
        if not out then
          while not out do
            local d, err = c:read()
            if not d then
              if err ~= "again" then
                return close()
              end
              return
            end
            if d == "" then
              out = answer(buf, true)
              if not out then
                return close()
              end
            else
              buf = buf .. d
              if #buf > MAX_REQUEST then
                return close()
              end
              out = answer(buf, false)
            end
            if type(out) == "function" then
              return later(out)
            end
          end
        end
        local n = c:write(out, off)
        if not n then
          return close()
        end
        off = off + n
        if off > #out then
          return close()
        end
        c:watch(io, true)   -- the rest when the socket takes more
      end
      c:watch(io)
    end
  end
  listener:watch(accept_all)
  return { close = function()
    listener:close()
    for c in pairs(conns) do
      c:close()
    end
    conns = {}
  end }
end

-- Figures ------------------------------------------------------------------------------

--- sip.ops.registrations(registrar [, aor]) -> { { aor =, contact =, expires = s, q = }, ... }
function M.registrations(registrar, aor)
  local list = {}
  local aors = aor and { sip.registrar.aor(aor) or aor } or
    (registrar.store.aors and registrar.store:aors() or {})
  table.sort(aors)
  local now = os.time()
  for _, a in ipairs(aors) do
    for _, b in ipairs(registrar:lookup(a, true)) do
      list[#list + 1] = { aor = a, contact = b.uri, expires = b.expires_at - now, q = b.q }
    end
  end
  return list
end

-- live bindings and the AORs that have one, counted by the store (store:count; /metrics asks
-- each scrape); a store of the user's without count (or one that failed): from the listing
local function count_bindings(registrar)
  local st = registrar.store
  local n, naors = nil, nil
  if st.count then
    n, naors = st:count(registrar.clock())
  end
  if not n then
    local regs, aors = M.registrations(registrar), {}
    n, naors = #regs, 0
    for _, r in ipairs(regs) do
      if not aors[r.aor] then
        aors[r.aor], naors = true, naors + 1
      end
    end
  end
  return n, naors
end

--- sip.ops.snapshot(srv) -> a flat table of the figures `ctl stats` and /metrics report
function M.snapshot(srv)
  local s = srv.ep:stats()
  local nregs, naors = count_bindings(srv.registrar)
  local auth_failures = 0
  for _, a in ipairs { srv.auth, srv.proxy_auth } do
    auth_failures = auth_failures + (a and a.failed or 0)
  end
  s.registrations = nregs
  s.registered_aors = naors
  s.auth_failures = auth_failures
  s.relays = require("sip.proxy")._stats.relays
  s.script_loads = srv.script and srv.script.loads or 0
  s.script_load_failures = srv.script and srv.script.failed or 0
  s.uptime_seconds = os.time() - (srv.started or os.time())
  local lat = srv.store and srv.store.latency
  if lat then
    local n, sum, failed = 0, 0, 0
    for _, l in pairs(lat) do
      n, sum, failed = n + l.count, sum + l.sum, failed + l.failed
    end
    s.store_calls, s.store_failures = n, failed
    s.store_latency_ms_avg = n > 0 and math.floor(sum / n * 1e6 + 0.5) / 1e3 or 0
  end
  return s
end

-- Prometheus text format 0.0.4 ----------------------------------------------------------

local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx", "6xx" }

--- sip.ops.metrics_text(srv) -> the body of /metrics
function M.metrics_text(srv)
  local s = M.snapshot(srv)
  local out = {}
  local function metric(name, kind, help, samples)
    out[#out + 1] = "# HELP luasip_" .. name .. " " .. help
    out[#out + 1] = "# TYPE luasip_" .. name .. " " .. kind
    for _, smp in ipairs(samples) do
      local v = smp[2]
      out[#out + 1] = "luasip_" .. name .. (smp[1] or "") .. " " ..
        (v == math.floor(v) and string.format("%d", v) or string.format("%.9g", v))
    end
  end
  local cap = srv.capture and srv.capture:stats()
  if cap then
    for _, dir in ipairs { { "received", "in" }, { "sent", "out" } } do
      local req, res = {}, {}
      local names = {}
      for m in pairs(cap["requests_" .. dir[2]]) do
        names[#names + 1] = m
      end
      table.sort(names)
      for _, m in ipairs(names) do
        req[#req + 1] = { '{method="' .. m .. '"}', cap["requests_" .. dir[2]][m] }
      end
      for i, c in ipairs(CLASSES) do
        res[#res + 1] = { '{class="' .. c .. '"}', cap["responses_" .. dir[2]][i] }
      end
      metric("requests_" .. dir[1] .. "_total", "counter",
        "SIP requests " .. dir[1] .. " on the wire, retransmissions included, by method", req)
      metric("responses_" .. dir[1] .. "_total", "counter",
        "SIP responses " .. dir[1] .. " on the wire, retransmissions included, by class", res)
    end
  end
  metric("transactions", "gauge", "Live transactions", {
    { '{kind="server"}', s.server_transactions }, { '{kind="client"}', s.client_transactions } })
  metric("registrations", "gauge", "Live contact bindings", { { nil, s.registrations } })
  metric("registered_aors", "gauge", "Addresses of record with a live binding",
    { { nil, s.registered_aors } })
  metric("relays_total", "counter", "Requests relayed (req:relay)", { { nil, s.relays } })
  metric("auth_failures_total", "counter", "Digest authentication failures",
    { { nil, s.auth_failures } })
  metric("rate_limited_total", "counter", "Requests refused 503 by the rate limit per source",
    { { nil, s.rate_limited } })
  metric("rejected_busy_total", "counter", "Requests refused 503 at the transaction limit",
    { { nil, s.rejected_busy } })
  metric("retransmissions_total", "counter", "Retransmissions sent", { { nil, s.retransmissions } })
  metric("absorbed_total", "counter", "Retransmissions absorbed by a transaction",
    { { nil, s.absorbed } })
  metric("parse_errors_total", "counter", "Messages that did not parse", { { nil, s.parse_errors } })
  local open, accepted = {}, {}
  for _, t in ipairs { "tcp", "tls", "ws", "wss" } do
    open[#open + 1] = { '{transport="' .. t .. '"}', s["connections_" .. t] or 0 }
    accepted[#accepted + 1] = { '{transport="' .. t .. '"}', s["connections_accepted_" .. t] or 0 }
  end
  metric("connections", "gauge", "Open stream connections, by transport", open)
  metric("connections_accepted_total", "counter", "Stream connections accepted, by transport",
    accepted)
  metric("script_loads_total", "counter", "Times the --script was loaded", { { nil, s.script_loads } })
  metric("script_load_failures_total", "counter", "Reloads of the --script that failed",
    { { nil, s.script_load_failures } })
  local lat = srv.store and srv.store.latency
  if lat then
    local methods, buckets, failed = {}, {}, {}
    for m in pairs(lat) do
      if lat[m].count > 0 then
        methods[#methods + 1] = m
      end
    end
    table.sort(methods)
    local bounds = sip.store.LATENCY_BUCKETS
    for _, m in ipairs(methods) do
      local l, acc = lat[m], 0
      for i = 1, #bounds + 1 do
        acc = acc + l.buckets[i]
        buckets[#buckets + 1] = { ('_bucket{method="%s",le="%s"}'):format(m,
          bounds[i] and string.format("%g", bounds[i]) or "+Inf"), acc }
      end
      buckets[#buckets + 1] = { '_sum{method="' .. m .. '"}', l.sum }
      buckets[#buckets + 1] = { '_count{method="' .. m .. '"}', l.count }
      failed[#failed + 1] = { '{method="' .. m .. '"}', l.failed }
    end
    metric("store_latency_seconds", "histogram",
      "Time a store call took, a wait for the store's server included, by method", buckets)
    metric("store_failures_total", "counter", "Store calls that failed, by method", failed)
  end
  return table.concat(out, "\n") .. "\n"
end

local metrics_body   -- (below: with workers, it asks the others)

local function http_response(code, reason, ctype, body)
  return ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(code, reason, ctype, #body, body)
end

--- sip.ops.metrics(srv, "HOST:PORT") -> server { close =, address = "HOST:PORT" } | nil, err
-- GET /metrics answers Prometheus text; anything else 404/405. One request per connection.
function M.metrics(srv, where)
  local host, port = tostring(where):match("^%[?([^%]]*)%]?:(%d+)$")
  if not host then
    return nil, "--metrics wants HOST:PORT, got " .. tostring(where)
  end
  local l, addr = core.listen_tcp(host, tonumber(port))
  if not l then
    return nil, addr
  end
  local server = stream_server(l, function(buf)
    local head = buf:match("^(.-)\r?\n\r?\n")
    if not head then
      return nil
    end
    local method, path = head:match("^(%u+) (%S+) HTTP/1%.%d")
    if not method then
      return http_response(400, "Bad Request", "text/plain", "bad request\n")
    end
    if method ~= "GET" and method ~= "HEAD" then
      return http_response(405, "Method Not Allowed", "text/plain", "GET only\n")
    end
    if path:gsub("%?.*$", "") ~= "/metrics" then
      return http_response(404, "Not Found", "text/plain", "see /metrics\n")
    end
    return function()
      local body = metrics_body(srv)
      local r = http_response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body)
      return method == "HEAD" and r:sub(1, #r - #body) or r
    end
  end)
  server.address = addr
  return server
end

-- Control socket -------------------------------------------------------------------------

--- sip.ops.default_control_path() -> where serve listens and ctl connects without --control
function M.default_control_path()
  local run = os.getenv("XDG_RUNTIME_DIR")
  if run and run ~= "" then
    return run .. "/luasip/serve.ctl"
  end
  return "/tmp/luasip-" .. (os.getenv("USER") or os.getenv("LOGNAME") or "user") .. "/serve.ctl"
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- One process's answers ----------------------------------------------------------------

local function stats_lines(s)
  local keys = {}
  for k in pairs(s) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local out = { "OK" }
  for _, k in ipairs(keys) do
    out[#out + 1] = k .. " " .. tostring(s[k])
  end
  return table.concat(out, "\n") .. "\n"
end

local function reload_answer(srv)
  local ok, err = srv.reload()
  if not ok then
    return "ERR " .. err .. "\n"
  end
  return "OK\nreloaded " .. srv.script.path .. "\n"
end

local function registrations_answer(srv, arg)
  local out = { "OK" }
  for _, r in ipairs(M.registrations(srv.registrar, arg ~= "" and arg or nil)) do
    out[#out + 1] = ("%s %s expires=%d q=%s"):format(r.aor, r.contact, r.expires, r.q)
  end
  return table.concat(out, "\n") .. "\n"
end

local UNKNOWN = "ERR unknown command %s (want reload, stats, registrations [AOR])\n"

-- One command line -> "OK\n" .. body | "ERR reason\n", for this process alone (a worker's
-- own socket also answers `metrics`: its /metrics text, for worker 1 to merge)
local function local_answer(srv, line)
  local cmd, arg = line:match("^%s*(%S+)%s*(.-)%s*$")
  if cmd == "reload" then
    return reload_answer(srv)
  elseif cmd == "stats" then
    return stats_lines(M.snapshot(srv))
  elseif cmd == "registrations" then
    return registrations_answer(srv, arg)
  elseif cmd == "metrics" then
    return "OK\n" .. M.metrics_text(srv)
  end
  return UNKNOWN:format(tostring(cmd))
end

-- The other workers ------------------------------------------------------------------------

-- How long worker 1 waits for another worker's answer (a worker busy with a burst answers
-- in milliseconds; one that does not in this long is reported as not answering).
local WORKER_TIMEOUT_MS = 1000

--- sip.ops.ask(path, line [, timeout_ms]) -> "OK" body | nil, reason: one command to the
-- control socket at path, its answer read on the loop (only the calling coroutine waits)
function M.ask(path, line, timeout_ms)
  local c, err = core.connect_unix(path, 200)
  if not c then
    return nil, err
  end
  local n = c:write(line .. "\n")
  if n ~= #line + 1 then
    c:close()
    return nil, "cannot send to " .. path
  end
  local answer, aerr = sched.await(function(wake)
    local parts, done, timer = {}, false, nil
    local function finish(a, e)
      if not done then
        done = true
        timer:cancel()
        c:close()
        wake(a, e)
      end
    end
    timer = sched.loop:timer(timeout_ms or WORKER_TIMEOUT_MS, function()
      finish(nil, "no answer from " .. path)
    end)
    c:watch(function()
      local d, rerr = c:read()
      if not d then
        if rerr ~= "again" then
          finish(nil, rerr)
        end
      elseif d == "" then
        finish(table.concat(parts))
      else
        parts[#parts + 1] = d
      end
    end)
  end)
  if not answer then
    return nil, aerr
  end
  local status, body = answer:match("^([^\n]*)\n?(.*)$")
  if status ~= "OK" then
    return nil, (status or ""):gsub("^ERR ", "")
  end
  return body
end

-- each other worker's answer to line: { [i] = body | false }, and the reasons of those that
-- gave none
local function ask_workers(srv, line)
  local w = srv.workers
  local answers, errs = {}, {}
  for i = 1, w.count do
    if i ~= w.index then
      local body, err = M.ask(w.path(i), line)
      answers[i] = body or false
      if not body then
        errs[#errs + 1] = ("worker %d: %s"):format(i, err)
      end
    end
  end
  return answers, errs
end

-- Figures of the store every worker shares: reported once, not summed
local STORE_WIDE = { registrations = true, registered_aors = true }

--- sip.ops.merge_metrics(texts, count) -> one /metrics body from the bodies of count workers
-- (texts[i]: worker i's, false when it did not answer): each sample labelled worker="i",
-- a family's HELP and TYPE once; the store's figures (registrations) from worker 1 alone,
-- unlabelled; luasip_worker_up{worker="i"} 1 or 0
function M.merge_metrics(texts, count)
  local order, fams = {}, {}
  local up = {}
  for i = 1, count do
    local text = texts[i]
    up[#up + 1] = { i, text and 1 or 0 }
    local fam
    for line in (text or ""):gmatch("[^\n]+") do
      local kind, name = line:match("^# (%u+) (%S+)")
      if kind then
        fam = fams[name]
        if not fam then
          fam = { samples = {}, wide = STORE_WIDE[name:gsub("^luasip_", "")] }
          fams[name] = fam
          order[#order + 1] = name
        end
        fam[kind] = fam[kind] or line
      elseif fam and not line:match("^#") then
        if fam.wide then
          if i == 1 then
            fam.samples[#fam.samples + 1] = line
          end
        else
          local name, labels, rest = line:match("^([%w_:]+){(.-)}(.*)$")
          if name then
            line = ('%s{worker="%d",%s}%s'):format(name, i, labels, rest)
          else
            name, rest = line:match("^([%w_:]+)(.*)$")
            line = ('%s{worker="%d"}%s'):format(name, i, rest)
          end
          fam.samples[#fam.samples + 1] = line
        end
      end
    end
  end
  local out = {}
  for _, name in ipairs(order) do
    local fam = fams[name]
    out[#out + 1] = fam.HELP
    out[#out + 1] = fam.TYPE
    for _, smp in ipairs(fam.samples) do
      out[#out + 1] = smp
    end
  end
  out[#out + 1] = "# HELP luasip_worker_up Whether a worker of serve --workers answered this scrape"
  out[#out + 1] = "# TYPE luasip_worker_up gauge"
  for _, u in ipairs(up) do
    out[#out + 1] = ('luasip_worker_up{worker="%d"} %d'):format(u[1], u[2])
  end
  return table.concat(out, "\n") .. "\n"
end

-- /metrics: this process's, or (worker 1 of serve --workers) every worker's
function metrics_body(srv)
  local text = M.metrics_text(srv)
  if not srv.workers then
    return text
  end
  local texts = ask_workers(srv, "metrics")
  texts[srv.workers.index] = text
  return M.merge_metrics(texts, srv.workers.count)
end

-- One command line at serve's control socket: with workers, worker 1 answers for all (stats
-- summed, except the store's own figures; reload done by each; registrations are the store's)
local function control_answer(srv, line)
  local w = srv.workers
  local cmd = line:match("^%s*(%S+)")
  if not w or cmd == "registrations" or cmd == "metrics" then
    return local_answer(srv, line)
  end
  if cmd == "stats" then
    local s = M.snapshot(srv)
    local answers, errs = ask_workers(srv, "stats")
    local answering = 1
    for _, body in pairs(answers) do
      if body then
        answering = answering + 1
        for k, v in body:gmatch("([%w_]+) (%S+)") do
          v = tonumber(v)
          if v and not STORE_WIDE[k] and not k:match("^max_") then   -- (limits: each its own)
            s[k] = k == "uptime_seconds" and math.max(s[k] or 0, v) or (s[k] or 0) + v
          end
        end
      end
    end
    if s.store_calls and s.store_calls > 0 then
      -- a mean of means, weighted by each worker's calls, is not what the sums give: say less
      s.store_latency_ms_avg = nil
    end
    s.workers, s.workers_answering = w.count, answering
    local out = stats_lines(s)
    for _, e in ipairs(errs) do
      out = out .. "# " .. one_line(e) .. "\n"
    end
    return out
  elseif cmd == "reload" then
    local mine = reload_answer(srv)
    local bad = {}
    if not mine:match("^OK") then
      bad[1] = ("worker %d: %s"):format(w.index, (mine:gsub("^ERR ", ""):gsub("\n$", "")))
    end
    local _, errs = ask_workers(srv, "reload")
    for _, e in ipairs(errs) do
      bad[#bad + 1] = e
    end
    if #bad > 0 then
      return "ERR " .. one_line(table.concat(bad, "; ")) .. "\n"
    end
    return ("OK\nreloaded %s in %d workers\n"):format(srv.script.path, w.count)
  end
  return UNKNOWN:format(tostring(cmd))
end

--- sip.ops.control(srv, path [, own]) -> server { close =, path = } | nil, err
-- One command per connection, a line: reload | stats | registrations [AOR]. The folder is
-- made (mode 700) when missing; a socket there that still answers belongs to another serve.
-- own: a worker's own socket, that answers for this process alone (and `metrics`).
function M.control(srv, path, own)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    os.execute("mkdir -p -m 700 " .. quote(dir) .. " 2>/dev/null")
  end
  local probe = core.connect_unix(path, 200)
  if probe then
    probe:close()
    return nil, "control socket " .. path .. " is in use by another serve (give --control PATH)"
  end
  local l, err = core.listen_unix(path)
  if not l then
    return nil, err
  end
  local server = stream_server(l, function(buf, eof)
    local line = buf:match("^([^\n]*)\n") or (eof and buf)
    if not line then
      return nil
    end
    line = line:gsub("\r$", "")
    return function()
      return (own and local_answer or control_answer)(srv, line)
    end
  end)
  local close = server.close
  server.path = path
  server.close = function()
    close()
    os.remove(path)
  end
  return server
end

--- sip.ops.ctl(argv) -> exit code: `luasip ctl [--control PATH] reload | stats |
-- registrations [AOR]`, the answer on stdout (an error on stderr, exit 1)
function M.ctl(argv)
  local path, words, bad = nil, {}, false
  local i = 1
  while i <= #argv do
    if argv[i] == "--control" then
      path = argv[i + 1]
      bad = bad or path == nil
      i = i + 1
    else
      words[#words + 1] = argv[i]
    end
    i = i + 1
  end
  if #words == 0 or bad then
    io.stderr:write("usage: luasip ctl [--control PATH] reload | stats | registrations [AOR]\n")
    return 2
  end
  path = path or M.default_control_path()
  local c, err = core.connect_unix(path, CONN_TIMEOUT_MS)
  if not c then
    io.stderr:write("luasip ctl: ", err, " (is serve running? --control PATH)\n")
    return 1
  end
  local line = table.concat(words, " ") .. "\n"
  local off = 1
  while off <= #line do
    local n, werr = c:write(line, off)
    if not n then
      io.stderr:write("luasip ctl: ", werr, "\n")
      return 1
    end
    off = off + n
  end
  local parts = {}
  while true do
    local d, rerr = c:read()
    if not d then
      c:close()
      io.stderr:write("luasip ctl: ", rerr == "again" and ("no answer from " .. path) or rerr, "\n")
      return 1
    elseif d == "" then
      break
    end
    parts[#parts + 1] = d
  end
  c:close()
  local answer = table.concat(parts)
  local status, body = answer:match("^([^\n]*)\n?(.*)$")
  if status == "OK" then
    io.stdout:write(body)
    return 0
  end
  io.stderr:write("luasip ctl: ", (status or ""):gsub("^ERR ", ""), "\n")
  return 1
end

-- Signals --------------------------------------------------------------------------------

--- sip.ops.signals(handlers) -> fd: handlers = { HUP = fn, TERM = fn, ... } run on the loop
-- (signalfd: blocked, queued, read there; no Lua in a signal handler)
function M.signals(handlers)
  local names = {}
  for name in pairs(handlers) do
    names[#names + 1] = name
  end
  local fd = assert(core.signals(names))
  fd:watch(function(f)
    for _, name in ipairs(f:signals()) do
      handlers[name]()
    end
  end)
  return fd
end

-- Wiring ---------------------------------------------------------------------------------

--- sip.ops.start(serve, opts) -> true | nil, reason: what `serve` options ask for around a
-- server cli.server built: serve.reload() (the --script again), opts.capture (pcap file),
-- opts.hep ("udp:HOST:PORT"), opts.metrics ("HOST:PORT"), opts.control (socket path; taken
-- by another serve: a warning, unless opts.control_required). sip.ops.stop(serve) ends them.
-- A worker of serve --workers (opts.worker_index, opts.worker_count) also answers on a socket
-- of its own; opts.control_public = false leaves serve's socket to worker 1, and
-- opts.metrics_tap counts messages for /metrics without serving it.
function M.start(serve, opts)
  local ep, log, script = serve.ep, serve.log, serve.script
  local closers = {}
  serve._closers = closers
  function serve.reload()
    if not script then
      return nil, "no --script to reload"
    end
    local ok, rerr = script:reload()
    if ok then
      log("script %s reloaded", script.path)
    else
      log("script %s not reloaded, the old one stays: %s", script.path, rerr)
    end
    return ok, rerr
  end
  local function fail(err)
    M.stop(serve)
    return nil, err
  end
  if opts.metrics or opts.metrics_tap or opts.capture or opts.hep then
    -- the tap counts every message (metrics) and writes the pcap file and HEP packets
    local cap = core.capture(ep.core)
    serve.capture = cap
    closers[#closers + 1] = function() cap:close() end
    if opts.capture then
      local ok, cerr = cap:pcap(opts.capture)
      if not ok then
        return fail("--capture: " .. cerr)
      end
    end
    if opts.hep then
      local host, port = tostring(opts.hep):match("^udp:%[?([^%]]*)%]?:(%d+)$")
      local ok, herr = host and cap:hep(host, tonumber(port), opts.hep_id or 2001)
      if not ok then
        return fail("--hep: " .. (herr or "want udp:HOST:PORT, got " .. tostring(opts.hep)))
      end
    end
    -- the pcap file is written through a buffer: out at least every second
    local function flush()
      if serve.capture == cap then
        cap:flush()
        sched.loop:timer(1000, flush)
      end
    end
    flush()
  end
  if opts.metrics then
    local m, merr = M.metrics(serve, opts.metrics)
    if not m then
      return fail("--metrics: " .. merr)
    end
    serve.metrics = m
    closers[#closers + 1] = m.close
  end
  if opts.worker_count and opts.control then
    -- serve --workers: each worker answers on a socket of its own; worker 1 asks the others
    local workers = require "sip.workers"
    local public = opts.control
    serve.workers = { index = opts.worker_index, count = opts.worker_count,
      path = function(i) return workers.control_path(public, i) end }
    local c, cerr = M.control(serve, serve.workers.path(opts.worker_index), true)
    if not c then
      return fail("worker control socket: " .. cerr)
    end
    closers[#closers + 1] = c.close
  end
  if opts.control and opts.control_public ~= false then
    local c, cerr = M.control(serve, opts.control)
    if c then
      serve.control = c
      closers[#closers + 1] = c.close
    elseif opts.control_required then
      return fail("--control: " .. cerr)
    else
      io.stderr:write("luasip: ", cerr, "; luasip ctl will not reach this one\n")
    end
  end
  serve.started = os.time()
  return true
end

--- sip.ops.stop(serve): listeners closed, the control socket removed, the capture flushed
function M.stop(serve)
  for _, c in ipairs(serve._closers or {}) do
    c()
  end
  serve._closers, serve.capture, serve.metrics, serve.control = {}, nil, nil, nil
end

return M
