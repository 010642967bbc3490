-- tests/parse_diff.lua: a dump of everything sip.parse decides and exposes, for comparing
-- two builds of the parser on the same inputs (byte-identical dumps = same behaviour).
--
-- usage: lua5.4 tests/parse_diff.lua CPATH_DIR CORPUS N SEED [SHARD NSHARDS]
--   CPATH_DIR  directory holding sip/core.so (e.g. build, or a copy of an older build)
--   CORPUS     directory of seed messages (read recursively, *.sip)
--   N          random mutants to dump after the seeds themselves (deterministic per SEED)
-- Compare two builds with: cmp <(lua5.4 tests/parse_diff.lua /tmp/old ...) \
--                              <(lua5.4 tests/parse_diff.lua build ...)
local dir, corpus, n, seed, shard, nshards = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]),
  tonumber(arg[5] or 0), tonumber(arg[6] or 1)
package.cpath = dir .. "/?.so"
local core = require "sip.core"
local parse = core.parse

local out = {}
local function w(...)
  local t = { ... }
  for i = 1, #t do out[#out + 1] = tostring(t[i]) end
  out[#out + 1] = "\n"
end

local function dump_table(t, pre)
  if type(t) ~= "table" then w(pre, "=", type(t), ":", t) return end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then dump_table(v, pre .. "." .. tostring(k))
    else w(pre, ".", tostring(k), "=", type(v), ":", tostring(v)) end
  end
end

local FIELDS = { "method", "uri", "status", "reason", "body", "call_id", "cseq", "cseq_method",
  "from_tag", "to_tag", "branch", "max_forwards", "content_length", "content_type",
  "is_request", "from", "to", "size" }
local ADDR_HDRS = { "From", "To", "Contact", "Route", "Record-Route", "Reply-To" }

local function dump(s, opts)
  local m, err = parse(s, opts)
  if not m then w("ERR ", err) return end
  w("OK")
  for _, f in ipairs(FIELDS) do w(f, "=", type(m[f]), ":", tostring(m[f])) end
  for i, h in ipairs(m:headers()) do w("H", i, " ", h[1], ": ", h[2]) end
  local vias = m:vias()
  for i = 1, #vias + 1 do dump_table(vias[i], "via" .. i) end
  for _, h in ipairs(ADDR_HDRS) do
    for k = 1, 64 do
      local a, aerr = m:addr(h, k)
      if a == nil and aerr == nil then break end
      if a then dump_table(a, h .. k) else w(h, k, " ERR ", aerr) end
    end
  end
  if m.is_request then
    local u, uerr = core.uri_parse(m.uri)
    if u then dump_table(u, "ruri") else w("ruri ERR ", uerr) end
  end
  w("TS ", tostring(m))
end

-- seeds
local files = {}
local p = io.popen("find " .. corpus .. " -type f -name '*.sip' | sort")
for f in p:lines() do files[#files + 1] = f end
p:close()
local seeds = {}
for _, f in ipairs(files) do
  local fh = assert(io.open(f, "rb"))
  seeds[#seeds + 1] = fh:read("a")
  fh:close()
end
-- and messages written to reach the params, hosts and addresses the fast paths look at
local extra = {
  "INVITE sip:bob@[2001:db8::1]:5060;transport=tcp;lr SIP/2.0\r\n" ..
  "Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK1;received=192.0.2.1;rport=5060;maddr=224.2.0.1;ttl=16\r\n" ..
  "Via: SIP/2.0/UDP h.example.com ; branch = \"z9hG4bK2\" ; rport ; received=[::1] ; x\r\n" ..
  "v: SIP / 2.0 / SCTP host:1;BRANCH=a;Branch=b;RPORT=0;Received=1.2.3.4;TTL=1;MADDR=x\r\n" ..
  "f: \"A \\\" B\" <sip:a@b.c;lr>;TAG=x;tag=y;foo=\"bar;baz\"\r\n" ..
  "t: sip:b@c;tag=1 ;x=\"\"\r\n" ..
  "m: <sip:a@b>;expires=60;q=0.5, \"x\" <sip:c@d>;+sip.instance=\"<urn:uuid:1>\", *\r\n" ..
  "Route: <sip:p1.example.com;lr>, <sip:[::1]:5070;lr;transport=udp>\r\n" ..
  "Record-Route: <sip:p2;lr>\r\n" ..
  "i: a@b\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n",
  "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport=5060;branch=z9hG4bKabc;received=10.0.0.2,SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKdef\r\n" ..
  "From: <sip:a@b>;tag=1\r\nTo: Bob <sip:b@c>;tag=2\r\nCall-ID: x\r\nCSeq: 2 MESSAGE\r\nContent-Length: 0\r\n\r\n",
}
for _, s in ipairs(extra) do seeds[#seeds + 1] = s end

local i = 0
local function emit(s, opts)
  i = i + 1
  if i % nshards ~= shard then return end
  w("#", i)
  dump(s, opts)
  if #out > 4096 then io.write(table.concat(out)) out = {} end
end

for _, s in ipairs(seeds) do
  emit(s)
  emit(s, { stream = true })
end

-- mutants: a few mutations each, from one PRNG stream whatever the shard
math.randomseed(seed)
local rnd = math.random
local SPECIAL = { ";", ",", "=", "<", ">", "\"", "\\", " ", "\t", "\r", "\n", ":", "@", "[",
  "]", "?", "%", "/", "\0", "\255", "0", "a", "Z", "\r\n ", "\r\n\t", "tag", "branch",
  "received", "rport", "maddr", "ttl", "lr", "transport", "sip:", ";tag=", ";branch=z9",
  ";rport", ";received=", "SIP/2.0/", "%41", "%4", "<sip:", ">", "\"x\"", "5060", ":99999" }

local function mutate(s)
  local k = rnd(1, 4)
  for _ = 1, k do
    local len = #s
    local op = rnd(1, 10)
    local at = rnd(1, len + 1)
    if op == 1 and len > 0 then        -- byte flip
      at = math.min(at, len)
      s = s:sub(1, at - 1) .. string.char(s:byte(at) ~ (1 << rnd(0, 7))) .. s:sub(at + 1)
    elseif op == 2 then                -- random byte
      s = s:sub(1, at - 1) .. string.char(rnd(0, 255)) .. s:sub(at)
    elseif op == 3 then                -- interesting bytes / words
      s = s:sub(1, at - 1) .. SPECIAL[rnd(1, #SPECIAL)] .. s:sub(at)
    elseif op == 4 then                -- deletion
      s = s:sub(1, at - 1) .. s:sub(at + rnd(1, 8))
    elseif op == 5 and rnd(1, 4) == 1 then -- truncation (rarer)
      s = s:sub(1, at - 1)
    elseif op == 6 then                -- duplicate a header line elsewhere
      local lines = {}
      for l in s:gmatch("[^\n]*\n") do lines[#lines + 1] = l end
      if #lines > 2 then
        local a, b = rnd(2, #lines), rnd(2, #lines)
        table.insert(lines, b, lines[a])
        s = table.concat(lines)
      end
    elseif op == 7 and len > 0 then    -- case change over a run
      at = math.min(at, len)
      local e = math.min(len, at + rnd(0, 12))
      local mid = s:sub(at, e)
      mid = rnd(1, 2) == 1 and mid:upper() or mid:lower()
      s = s:sub(1, at - 1) .. mid .. s:sub(e + 1)
    elseif op == 8 then                -- folding inserted at a space or separator
      local pos = s:find("[ ;,=:]", at)
      if pos then
        local f = ({ "\r\n ", "\r\n\t", " \r\n  ", "\n " })[rnd(1, 4)]
        s = s:sub(1, pos) .. f .. s:sub(pos + 1)
      end
    elseif op == 9 and len > 0 then    -- copy a run from elsewhere in
      local a = rnd(1, len)
      s = s:sub(1, at - 1) .. s:sub(a, a + rnd(0, 20)) .. s:sub(at)
    else                                -- swap the spaces around a separator
      local pos = s:find("[;=,/:]", at)
      if pos then
        s = s:sub(1, pos - 1) .. " " .. s:sub(pos, pos) .. " " .. s:sub(pos + 1)
      end
    end
  end
  return s
end

for _ = 1, n do
  local s = mutate(seeds[rnd(1, #seeds)])
  local st = rnd(1, 8) == 1
  emit(s, st and { stream = true } or nil)
end
io.write(table.concat(out))
