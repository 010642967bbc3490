-- bench/parse.lua: parser figures for sip.parse on realistic messages, measured from Lua,
-- side by side with libosip2 and sofia-sip run on the same files in the same run.
--
-- usage: lua5.4 bench/parse.lua [--csv] [--osip BIN] [--sofia BIN] [--callgrind [K]]
--   --osip/--sofia  baseline harnesses (../shared/bench/parser/*_bench.c, built by make bench)
--   --callgrind K   instructions per parse from K parses under valgrind (default 20000)
--   --loop FILE K   parse FILE K times and exit (the program callgrind measures)
-- env: SIP_CORPUS (corpus root, default ../shared/corpus), BENCH_TIME (seconds a
--      measurement aims for, default 0.3), ITERS (baseline iterations, default 20000)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;build/bench/?.so;" .. package.cpath

local sip = require "sip"
local LUA = arg[-1] or "lua5.4" -- the interpreter running us, for callgrind runs
-- Wall time, like the baselines; os.clock (CPU time) when clock.so was not built.
local have_clock, clock = pcall(require, "clock")
local now = have_clock and clock.now or os.clock
local CLOCK_NAME = have_clock and "CLOCK_MONOTONIC" or "os.clock"

local CORPUS = (os.getenv("SIP_CORPUS") or "../shared/corpus"):gsub("/$", "")
local OUT_DIR = "build/bench"
-- ~0.3 s per figure is long enough to swamp clock resolution and GC jitter, short enough
-- that the whole bench (11 messages, two figures each, three rounds) stays under a minute.
local BENCH_TIME = tonumber(os.getenv("BENCH_TIME")) or 0.3
local ROUNDS = 3
-- Every parser (ours and both baselines) is measured in PROCS fresh processes and the best
-- one counts. On the bench VM a process now and then runs a parse loop ~2x slower for its
-- whole life (the same binary, input and CPU; with ASLR off too), which made single-process
-- figures swing between runs; the minimum over processes is the parser's own cost.
local PROCS = tonumber(os.getenv("BENCH_PROCS")) or 5
local opts = { callgrind = false } -- from the command line, see usage above
-- Messages callgrind counts: a small request, a response, a large one.
local CALLGRIND_SET = { "pager-1-message", "register-4-authorization", "invite-sdp" }

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function basename(path)
  return (path:match("([^/]+)%.sip$") or path)
end

local function crlf(lines)
  return table.concat(lines, "\r\n")
end

-- An INVITE as a softphone sends it: audio and video offer, ICE-less, a few codecs.
local function invite_with_sdp()
  local sdp = crlf {
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 9 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
    "m=video 51372 RTP/AVP 96",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
    "a=sendrecv",
    "",
  }
  return crlf {
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    "To: \"Bob\" <sip:bob@biloxi.example.com>",
    "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>",
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, REFER, NOTIFY, MESSAGE",
    "Supported: replaces, timer, 100rel",
    "Session-Expires: 1800;refresher=uac",
    "User-Agent: luasip-bench/1.0",
    "Content-Type: application/sdp",
    "Content-Length: " .. #sdp,
    "",
    sdp,
  }
end

-- The messages: name, path (the baselines read files), bytes.
local function load_messages()
  local msgs = {}
  local ls = io.popen("ls " .. CORPUS .. "/flows/*.sip 2>/dev/null")
  for path in ls:lines() do
    msgs[#msgs + 1] = { name = basename(path), path = path }
  end
  ls:close()
  assert(#msgs > 0, "no messages in " .. CORPUS .. "/flows (set SIP_CORPUS)")
  for _, n in ipairs { "wsinv", "longreq" } do
    local path = CORPUS .. "/rfc4475/valid/" .. n .. ".sip"
    msgs[#msgs + 1] = { name = "rfc4475-" .. n, path = path }
  end
  os.execute("mkdir -p " .. OUT_DIR)
  local path = OUT_DIR .. "/invite-sdp.sip"
  write_file(path, invite_with_sdp())
  msgs[#msgs + 1] = { name = "invite-sdp", path = path }
  for _, m in ipairs(msgs) do
    m.bytes = read_file(m.path)
    local ok, err = sip.parse(m.bytes)
    assert(ok, m.name .. ": " .. tostring(err))
  end
  return msgs
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Time fn(s, n) for n iterations; n grows until one round takes BENCH_TIME / ROUNDS,
-- then the median of ROUNDS rounds gives ns per iteration.
local function measure(fn, s)
  local clock = now
  local n = 100
  fn(s, n) -- warm up: caches, string interning, GC settling
  local target = BENCH_TIME / ROUNDS
  while true do
    local t0 = clock()
    fn(s, n)
    local dt = clock() - t0
    if dt >= target / 4 then
      n = math.max(1, math.floor(n * target / dt))
      break
    end
    n = n * 4
  end
  local ts = {}
  for r = 1, ROUNDS do
    collectgarbage()
    local t0 = clock()
    fn(s, n)
    ts[r] = (clock() - t0) / n * 1e9
  end
  return median(ts), n
end

local parse = sip.parse

local function parse_n(s, n)
  for _ = 1, n do
    parse(s)
  end
end

local function parse_serialize_n(s, n)
  for _ = 1, n do
    tostring(parse(s))
  end
end

-- Run a baseline harness PROCS times on one file; the best of
-- { parse=ns, serialize=ns|nil, ok=bool }. Called right after luasip's figures for the
-- same message, so that a load change on the machine hits both sides of a ratio alike.
local function run_baseline(bin, path)
  local parse, ser, ok = {}, {}, true
  for r = 1, PROCS do
    local p = assert(io.popen(bin .. " " .. path))
    local out = p:read("a")
    assert(p:close(), bin .. " failed on " .. path)
    local status, ns = out:match("^%S+%s+%d+ B (%S+)%s+parse%s+(%d+) ns")
    assert(ns, bin .. ": unexpected output: " .. out)
    parse[r] = tonumber(ns)
    ser[r] = tonumber(out:match("parse%+serialize%s+(%d+) ns"))
    ok = ok and status == "ok"
  end
  table.sort(parse)
  table.sort(ser)
  return { parse = parse[1], serialize = ser[1], ok = ok }
end

-- Instructions callgrind counts for `prefix valgrind ... cmd` (only inside `only`, a
-- list of function names, when given).
local function callgrind_ir(prefix, cmd, only)
  local toggles = {}
  for i, fn in ipairs(only or {}) do
    toggles[i] = "--toggle-collect=" .. fn
  end
  local p = assert(io.popen(string.format(
    "%s valgrind --tool=callgrind --callgrind-out-file=/dev/null %s %s 2>&1 >/dev/null",
    prefix,
    table.concat(toggles, " "),
    cmd
  )))
  local ir
  for line in p:lines() do
    ir = ir or line:match("Collected : (%d+)")
  end
  p:close()
  return assert(tonumber(ir), "no callgrind figure for " .. cmd)
end

-- Instructions per parse: a run doing k parses minus the same run doing none, over k.
-- The difference leaves out start-up and keeps what a parse really costs (GC included).
local function ir_per_parse(m, k)
  local function lua_run(n)
    return callgrind_ir("", string.format("%s bench/parse.lua --loop %s %d", LUA, m.path, n))
  end
  local ir = { luasip = (lua_run(k) - lua_run(0)) / k }
  -- Baselines: deterministic, so fewer iterations do.
  local kb = 500
  if opts.osip then
    -- osip_bench parses 2 * ITERS times (parse loop, then parse+serialize loop):
    -- count only the parse side, allocation and free included.
    local only = { "osip_message_init", "osip_message_parse", "osip_message_free" }
    local function run(n)
      return callgrind_ir("ITERS=" .. n, opts.osip .. " " .. m.path, only)
    end
    ir.osip = (run(kb) - run(0)) / (2 * kb)
  end
  if opts.sofia then
    local function run(n)
      return callgrind_ir("ITERS=" .. n, opts.sofia .. " " .. m.path)
    end
    ir.sofia = (run(kb) - run(0)) / kb
  end
  return ir
end

local function fmt_row(cols, widths)
  local out = {}
  for i, c in ipairs(cols) do
    out[i] = string.format("%" .. widths[i] .. "s", c) -- negative width: left-aligned
  end
  return table.concat(out, "  ")
end

-- A baseline that rejected the message gets a "!" after its figure.
local function base_ns(b)
  return b.parse and (b.parse .. (b.ok and "" or "!")) or "-"
end

local function ratio(base, ours)
  return base and string.format("%.1fx", base / ours) or "-"
end

-- main --------------------------------------------------------------------------------

do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--measure" then
      -- one message's two figures in this process (the parent takes the best of PROCS)
      local bytes = read_file(arg[i + 1])
      print(string.format("%.3f %.3f", measure(parse_n, bytes), measure(parse_serialize_n, bytes)))
      return
    elseif a == "--loop" then
      local s, k = read_file(arg[i + 1]), assert(math.tointeger(tonumber(arg[i + 2])))
      parse_n(s, k)
      return
    elseif a == "--csv" then
      opts.csv = true
    elseif a == "--osip" or a == "--sofia" then
      opts[a:sub(3)] = arg[i + 1]
      i = i + 1
    elseif a == "--callgrind" then
      opts.callgrind = math.tointeger(tonumber(arg[i + 1])) or 20000
      if math.tointeger(tonumber(arg[i + 1])) then
        i = i + 1
      end
    else
      io.stderr:write("unknown argument " .. a .. "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local msgs = load_messages()

local W = { -28, 6, 9, 10, 8, 11 }
if not opts.csv then
  print(string.format("sip.parse from %s (%s, median of %d rounds, best of %d processes; the C parsers: best of %d)",
    _VERSION, CLOCK_NAME, ROUNDS, PROCS, PROCS))
  print(fmt_row({ "message", "bytes", "ns/parse", "msgs/s", "MB/s", "ns/parse+ts" }, W))
end
local total_bytes, total_ns, total_ser = 0, 0, 0
-- ns per parse and per parse+tostring of the file at path: the best of PROCS processes
local function measure_procs(path)
  local best, best_ser = math.huge, math.huge
  for _ = 1, PROCS do
    local p = assert(io.popen(string.format("%s bench/parse.lua --measure %s", LUA, path)))
    local out = p:read("a")
    assert(p:close(), "bench/parse.lua --measure failed on " .. path)
    local ns, ser = out:match("^(%S+) (%S+)")
    best, best_ser = math.min(best, tonumber(ns)), math.min(best_ser, tonumber(ser))
  end
  return best, best_ser
end

for _, m in ipairs(msgs) do
  m.ns, m.ser = measure_procs(m.path)
  m.osip = opts.osip and run_baseline(opts.osip, m.path) or {}
  m.sofia = opts.sofia and run_baseline(opts.sofia, m.path) or {}
  total_bytes, total_ns, total_ser = total_bytes + #m.bytes, total_ns + m.ns, total_ser + m.ser
  if not opts.csv then
    print(fmt_row({
      m.name,
      #m.bytes,
      string.format("%.0f", m.ns),
      string.format("%.0f", 1e9 / m.ns),
      string.format("%.1f", #m.bytes / m.ns * 1e3),
      string.format("%.0f", m.ser),
    }, W))
  end
end
if not opts.csv then
  print(fmt_row({
    "total (one of each)",
    total_bytes,
    string.format("%.0f", total_ns),
    string.format("%.0f", #msgs * 1e9 / total_ns),
    string.format("%.1f", total_bytes / total_ns * 1e3),
    string.format("%.0f", total_ser),
  }, W))
end

if opts.osip or opts.sofia then
  local CW = { -28, 9, 9, 9, 10, 11, 9, 10 }
  if not opts.csv then
    print()
    print("vs. C parsers on the same files (ns per message; ratio = their ns / ours; ! = they rejected it)")
    print(fmt_row({ "message", "luasip", "osip", "sofia", "osip/ours", "sofia/ours", "osip+ser", "/ours+ts" }, CW))
  end
  local worst = math.huge
  for _, m in ipairs(msgs) do
    local o, s = m.osip, m.sofia
    if o.parse then
      worst = math.min(worst, o.parse / m.ns)
    end
    if s.parse then
      worst = math.min(worst, s.parse / m.ns)
    end
    if not opts.csv then
      print(fmt_row({
        m.name,
        string.format("%.0f", m.ns),
        base_ns(o),
        base_ns(s),
        ratio(o.parse, m.ns),
        ratio(s.parse, m.ns),
        o.serialize or "-",
        ratio(o.serialize, m.ser),
      }, CW))
    end
  end
  if not opts.csv then
    print(string.format("smallest speed-up over a C parser: %.1fx (target 5x) %s", worst, worst >= 5 and "ok" or "MISSED"))
  end
end

if opts.callgrind then
  local k = opts.callgrind
  if not opts.csv then
    print()
    print(string.format("instructions per parse (callgrind; luasip: %d sip.parse calls from Lua)", k))
    print(fmt_row({ "message", "bytes", "luasip", "Ir/byte", "osip", "sofia", "osip/ours", "sofia/ours" },
      { -28, 6, 9, 8, 9, 9, 10, 11 }))
  end
  for _, m in ipairs(msgs) do
    for _, want in ipairs(CALLGRIND_SET) do
      if m.name == want then
        m.ir = ir_per_parse(m, k)
        local ir = m.ir
        if not opts.csv then
          print(fmt_row({
            m.name,
            #m.bytes,
            string.format("%.0f", ir.luasip),
            string.format("%.1f", ir.luasip / #m.bytes),
            ir.osip and string.format("%.0f", ir.osip) or "-",
            ir.sofia and string.format("%.0f", ir.sofia) or "-",
            ratio(ir.osip, ir.luasip),
            ratio(ir.sofia, ir.luasip),
          }, { -28, 6, 9, 8, 9, 9, 10, 11 }))
        end
      end
    end
  end
end

if opts.csv then
  print("message,bytes,ns_parse,msgs_s,mb_s,ns_parse_tostring,osip_ns,osip_ser_ns,sofia_ns,ir_parse,osip_ir,sofia_ir")
  for _, m in ipairs(msgs) do
    local o, s = m.osip, m.sofia
    print(string.format(
      "%s,%d,%.0f,%.0f,%.1f,%.0f,%s,%s,%s,%s,%s,%s",
      m.name,
      #m.bytes,
      m.ns,
      1e9 / m.ns,
      #m.bytes / m.ns * 1e3,
      m.ser,
      o.parse or "",
      o.serialize or "",
      s.parse or "",
      m.ir and string.format("%.0f", m.ir.luasip) or "",
      m.ir and m.ir.osip and string.format("%.0f", m.ir.osip) or "",
      m.ir and m.ir.sofia and string.format("%.0f", m.ir.sofia) or ""
    ))
  end
end
