-- Specs for sip.parse on hostile input: whatever arrives, it returns a message or
-- nil plus a reason, and never raises. Regressions found by `make fuzz` live here too.

local sip = require "sip"
local helper = require "helper"

local function crlf(lines) return table.concat(lines, "\r\n") .. "\r\n" end

-- A valid MESSAGE request; `extra` header lines go before Content-Length.
local function request(extra, body, cl)
  body = body or ""
  local lines = {
    "MESSAGE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/UDP alice.example.com;branch=z9hG4bK74bf9",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=9fxced76sl",
    "To: <sip:bob@example.com>",
    "Call-ID: 3848276298220188511@alice.example.com",
    "CSeq: 1 MESSAGE",
  }
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  if cl ~= false then
    lines[#lines + 1] = "Content-Length: " .. (cl or #body)
  end
  lines[#lines + 1] = ""
  return crlf(lines) .. body
end

-- Either a message or nil + a non-empty string; anything else fails the spec.
local function outcome(bytes, opts)
  local ok, m, err = pcall(sip.parse, bytes, opts)
  assert(ok, "sip.parse raised: " .. tostring(m))
  if m == nil then
    assert(type(err) == "string" and #err > 0, "nil without a reason")
  end
  return m, err
end

local function rejects(bytes, reason, opts)
  local m, err = outcome(bytes, opts)
  assert.is_nil(m)
  assert.are.equal(reason, err)
end

describe("sip.parse on hostile input", function()
  it("accepts the well-formed base message these specs start from", function()
    assert.is_not_nil(outcome(request()))
  end)

  describe("sizes", function()
    it("rejects 0 bytes as an empty message", function()
      rejects("", "empty message")
    end)

    it("rejects a 65 KB message as too large", function()
      rejects(request(nil, ("x"):rep(65 * 1024)), "message too large")
    end)

    it("rejects a 70 KB message as too large", function()
      rejects(request(nil, ("x"):rep(70 * 1024)), "message too large")
    end)

    it("accepts a 70 KB message when max_size allows it", function()
      local m = outcome(request(nil, ("x"):rep(70 * 1024)), { max_size = 128 * 1024 })
      assert.are.equal(70 * 1024, #m.body)
    end)

    it("rejects a 64 KB header line as too long", function()
      rejects(request { "Subject: " .. ("a"):rep(64000) }, "header line too long")
    end)

    it("rejects a 64 KiB header line as too long even when the message size allows it", function()
      rejects(request { "Subject: " .. ("a"):rep(65536) }, "header line too long",
              { max_size = 1024 * 1024 })
    end)
  end)

  describe("garbage", function()
    it("rejects binary garbage with a reason", function()
      local bytes = {}
      local seed = 12345
      for i = 1, 4096 do
        seed = (seed * 1103515245 + 12345) % 2147483648
        bytes[i] = string.char(seed % 256)
      end
      assert.is_nil((outcome(table.concat(bytes))))
    end)

    it("rejects every single byte value alone", function()
      for b = 0, 255 do
        assert.is_nil((outcome(string.char(b))))
      end
    end)

    it("rejects a message of NUL bytes", function()
      assert.is_nil((outcome(("\0"):rep(1000))))
    end)

    it("rejects a NUL in the start line", function()
      rejects(request():gsub("^MESSAGE", "MESS\0AGE"), "bad start line")
    end)

    it("rejects a NUL in a header name", function()
      rejects(request { "Sub\0ject: hi" }, "bad header line")
    end)

    it("keeps NUL bytes in the body", function()
      local m = outcome(request(nil, "a\0b\0c"))
      assert.are.equal("a\0b\0c", m.body)
    end)

    it("rejects a message cut after the start line", function()
      rejects("MESSAGE sip:bob@example.com SIP/2.0\r\n", "truncated header section")
    end)
  end)

  describe("Content-Length", function()
    it("rejects a negative value", function()
      rejects(request(nil, "hi", -1), "bad Content-Length")
    end)

    it("rejects a value past 2^31", function()
      rejects(request(nil, "hi", "99999999999999999999"), "bad Content-Length")
    end)

    it("rejects a non-numeric value", function()
      rejects(request(nil, "hi", "two"), "bad Content-Length")
    end)

    it("rejects a value larger than the datagram", function()
      rejects(request(nil, "hi", 100), "Content-Length larger than message")
    end)

    it("cuts the body at a value smaller than the body (RFC 3261 §18.3)", function()
      local m = outcome(request(nil, "hello", 2))
      assert.are.equal("he", m.body)
    end)

    it("is required on a stream", function()
      rejects(request(nil, "hi", false), "missing Content-Length", { stream = true })
    end)
  end)

  describe("many headers", function()
    local vias = {}
    for i = 1, 1000 do
      vias[i] = "SIP/2.0/UDP h" .. i .. ".example.com;branch=z9hG4bK" .. i
    end

    it("rejects 1000 Via header lines as too many headers", function()
      local lines = {}
      for i, v in ipairs(vias) do lines[i] = "Via: " .. v end
      rejects(request(lines), "too many headers")
    end)

    it("rejects 1000 Via values in one line as a header line too long", function()
      rejects(request { "Via: " .. table.concat(vias, ", ") }, "header line too long")
    end)

    it("accepts 1000 Via values in one line when max_line allows it", function()
      local m = outcome(request { "Via: " .. table.concat(vias, ", ") }, { max_line = 65535 })
      assert.are.equal(1001, #m:vias())
    end)
  end)

  describe("unterminated syntax", function()
    it("rejects an unterminated quoted display name", function()
      rejects(request():gsub("From: <", 'From: "Alice <'), "bad From")
    end)

    it("rejects an unterminated <", function()
      rejects(request():gsub("To: <sip:bob@example.com>", "To: <sip:bob@example.com"), "bad To")
    end)

    it("rejects an unterminated quoted parameter value", function()
      rejects(request():gsub("tag=9fxced76sl", 'tag="9fx'), "bad From")
    end)

    it("rejects a Contact with an unterminated <", function()
      rejects(request { "Contact: <sip:alice@198.51.100.1" }, "bad Contact")
    end)
  end)

  describe("mutated torture messages", function()
    local VALID = helper.corpus .. "/rfc4475/valid/"
    local names = { "dblreq", "esc01", "esc02", "escnull", "intmeth", "inv2543", "longreq",
                    "lwsdisp", "mpart01", "noreason", "semiuri", "transports", "unreason",
                    "wsinv" }
    local seeds = {}
    for i, n in ipairs(names) do
      local f = assert(io.open(VALID .. n .. ".sip", "rb"))
      seeds[i] = f:read("a")
      f:close()
    end
    local toks = { "\r\n", ",", ";", "<", ">", '"', "\\", "%", "%00", ":", "@", " ", "\0",
                   "[", "]", "=", "?", "\r\n ", "tag=", "branch=" }

    -- Deterministic: the same 3000 inputs every run (and under `make sanitize`).
    local function mutate(s)
      for _ = 1, math.random(1, 6) do
        local i, r = math.random(1, #s + 1), math.random(4)
        if r == 1 then
          s = s:sub(1, i - 1) .. string.char(math.random(0, 255)) .. s:sub(i + 1)
        elseif r == 2 then
          s = s:sub(1, i - 1) .. toks[math.random(#toks)] .. s:sub(i)
        elseif r == 3 then
          s = s:sub(1, i - 1) .. s:sub(i + math.random(1, 8))
        else
          local j = math.random(1, #s + 1)
          s = s:sub(1, i - 1) .. s:sub(j, j + math.random(0, 20)) .. s:sub(i)
        end
      end
      return s
    end

    it("parse and every accessor of what parses answer without raising", function()
      math.randomseed(4475)
      for n = 1, 3000 do
        local m = outcome(mutate(seeds[math.random(#seeds)]), { stream = n % 2 == 0 })
        if m then
          local _ = m.from, m.to, m.content_type, m.size, m.body
          m:headers()
          m:vias()
          for _, h in ipairs { "From", "To", "Contact", "Route", "Record-Route" } do m:addr(h) end
          if m.is_request then
            sip.uri.parse(m.uri)
            m:response(200)
          end
          m:pop_via()
          outcome(tostring(m))
        end
      end
    end)
  end)

  describe("fuzzer regressions", function()
    -- sip_hdr_lookup read past the NUL of a known name when an unknown name was longer
    -- and shared its first letter (caught under `make sanitize`).
    it("accepts a long unknown header name sharing a known name's first letter", function()
      local m = outcome(request { "Toooooooooooooooooooooooooooooooooooooooo: x" })
      assert.are.equal("x", m:header("Toooooooooooooooooooooooooooooooooooooooo"))
    end)

    -- sip_msg_add_header(..., at_top) let a second Max-Forwards, From, CSeq... in: the
    -- printed message was then rejected as "duplicate Max-Forwards header".
    it("refuses to add a second single-instance header at the top", function()
      local m = outcome(request())
      local ok, err = m:add_header("Max-Forwards", "69", true)
      assert.is_nil(ok)
      assert.are.equal("bad header value", err)
    end)

    it("keeps an edited message parseable after a refused top Call-ID", function()
      local m = outcome(request())
      m:add_header("i", "second@example.com", true)
      assert.is_not_nil(outcome(tostring(m)))
    end)

    -- Header indexes are int16_t: past 32767 lines a Via looked absent ("missing Via")
    -- or, past 65535, pointed at another header.
    it("rejects more than 32767 header lines whatever max_headers says", function()
      local lines = {}
      for i = 1, 40000 do lines[i] = "X: " .. i end
      rejects(request(lines), "too many headers",
              { max_size = 1024 * 1024, max_headers = 100000 })
    end)

    -- sip_param_next added an offset to the NULL pointer of an absent param list.
    it("parses a URI without parameters to an empty params table", function()
      local u = assert(sip.uri.parse("sip:bob@example.com"))
      assert.are.same({}, u.params)
    end)
  end)
end)
