-- Specs for sip.sdp: RFC 4566 parsing and building, RFC 3264 offer/answer, and the SDP
-- bodies carried by the RFC 4475 torture messages.

local sdp = require "sip.sdp"
local helper = require "helper"

local CORPUS = helper.corpus .. "/rfc4475/"

local function crlf(lines) return table.concat(lines, "\r\n") .. "\r\n" end

-- RFC 4566 §5
local RFC4566 = crlf {
  "v=0",
  "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
  "s=SDP Seminar",
  "i=A Seminar on the session description protocol",
  "u=http://www.example.com/seminars/sdp.pdf",
  "e=j.doe@example.com (Jane Doe)",
  "c=IN IP4 224.2.17.12/127",
  "t=2873397496 2873404696",
  "a=recvonly",
  "m=audio 49170 RTP/AVP 0",
  "m=video 51372 RTP/AVP 99",
  "a=rtpmap:99 h263-1998/90000",
}

-- RFC 3264 §10.1
local ALICE = crlf {
  "v=0",
  "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
  "s=",
  "c=IN IP4 host.atlanta.example.com",
  "t=0 0",
  "m=audio 49170 RTP/AVP 0 8 97",
  "a=rtpmap:0 PCMU/8000",
  "a=rtpmap:8 PCMA/8000",
  "a=rtpmap:97 iLBC/8000",
  "m=video 51372 RTP/AVP 31 32",
  "a=rtpmap:31 H261/90000",
  "a=rtpmap:32 MPV/90000",
}

local BOB = crlf {
  "v=0",
  "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
  "s=",
  "c=IN IP4 host.biloxi.example.com",
  "t=0 0",
  "m=audio 49174 RTP/AVP 0",
  "a=rtpmap:0 PCMU/8000",
  "m=video 49170 RTP/AVP 32",
  "a=rtpmap:32 MPV/90000",
}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The body of a SIP message file: everything after the first blank line, when the
-- message's own headers say application/sdp.
local function sdp_body(path)
  local text = read(path)
  local head, body = text:match("^(.-)\r\n\r\n(.*)$")
  if head and head:lower():find("\ncontent%-type:%s*application/sdp") then return body end
end

local function corpus_bodies()
  local out = {}
  for _, dir in ipairs { "valid", "semantic" } do
    local ls = assert(io.popen("ls " .. CORPUS .. dir .. "/*.sip"))
    for path in ls:lines() do
      local body = sdp_body(path)
      if body then out[#out + 1] = { name = dir .. "/" .. path:match("([^/]+)$"), body = body } end
    end
    ls:close()
  end
  return out
end

local function assert_error(text, line_no, pattern)
  local s, err = sdp.parse(text)
  assert.is_nil(s)
  assert.is_string(err)
  assert.matches("%(line " .. line_no .. "%)$", err)
  if pattern then assert.matches(pattern, err) end
end

describe("RFC 4566 §5 example session", function()
  local s = assert(sdp.parse(RFC4566))

  it("reads the session-level fields", function()
    assert.equal(0, s.version)
    assert.same({ username = "jdoe", sess_id = "2890844526", sess_version = "2890842807",
                  nettype = "IN", addrtype = "IP4", address = "10.47.16.5" }, s.origin)
    assert.equal("SDP Seminar", s.name)
    assert.equal("A Seminar on the session description protocol", s.info)
    assert.equal("http://www.example.com/seminars/sdp.pdf", s.uri)
    assert.same({ "j.doe@example.com (Jane Doe)" }, s.emails)
    assert.same({}, s.phones)
    assert.same({}, s.bandwidths)
  end)

  it("splits the multicast connection address from its TTL", function()
    assert.same({ nettype = "IN", addrtype = "IP4", address = "224.2.17.12", ttl = 127 },
                s.connection)
  end)

  it("reads the timing as integers with no repeats", function()
    assert.same({ { start = 2873397496, stop = 2873404696, repeats = {} } }, s.times)
  end)

  it("keeps a property attribute with a nil value", function()
    assert.same({ { name = "recvonly" } }, s.attributes)
    assert.is_true(s:attribute("recvonly"))
    assert.is_nil(s:attribute("sendonly"))
  end)

  it("reads both media descriptions", function()
    assert.equal(2, #s.media)
    local a, v = s.media[1], s.media[2]
    assert.equal("audio", a.media)
    assert.equal(49170, a.port)
    assert.is_nil(a.port_count)
    assert.equal("RTP/AVP", a.proto)
    assert.same({ "0" }, a.formats)
    assert.equal("video", v.media)
    assert.equal(51372, v.port)
    assert.same({ "99" }, v.formats)
    assert.same({ { name = "rtpmap", value = "99 h263-1998/90000" } }, v.attributes)
  end)

  it("maps payload types to encodings", function()
    local v = s.media[2]
    assert.same({ encoding = "h263-1998", clock = 90000 }, v.rtpmap["99"])
    assert.equal("99 h263-1998/90000", v:attribute("rtpmap"))
    assert.same({ { pt = 0, name = "PCMU", rate = 8000 } }, s.media[1]:codecs())
  end)

  it("gives media the session-level direction", function()
    assert.equal("recvonly", s.media[1].direction)
    assert.equal("recvonly", s.media[2].direction)
  end)

  it("tells where the media goes", function()
    assert.same({ "224.2.17.12", 51372 }, { s:media_address(2) })
  end)

  it("builds back to the same text", function()
    assert.equal(RFC4566, sdp.build(s))
    assert.equal(RFC4566, tostring(s))
  end)

  it("accepts LF line ends", function()
    assert.same(s, sdp.parse((RFC4566:gsub("\r\n", "\n"))))
  end)
end)

describe("RFC 3264 §10.1 offer/answer", function()
  local offer = assert(sdp.parse(ALICE))

  it("reads Alice's offer", function()
    assert.equal("", offer.name)
    assert.equal("host.atlanta.example.com", offer.connection.address)
    local audio, video = offer.media[1], offer.media[2]
    assert.same({ "0", "8", "97" }, audio.formats)
    assert.same({ encoding = "iLBC", clock = 8000 }, audio.rtpmap["97"])
    assert.same({ encoding = "PCMA", clock = 8000 }, audio.rtpmap["8"])
    assert.equal("sendrecv", audio.direction)
    assert.same({ "31", "32" }, video.formats)
    assert.same({ encoding = "MPV", clock = 90000 }, video.rtpmap["32"])
  end)

  it("builds Alice's offer back byte for byte", function()
    assert.equal(ALICE, sdp.build(offer))
  end)

  it("answers with the codecs Bob shares, as in Bob's answer", function()
    local answer = assert(sdp.answer(ALICE, {
      address = "host.biloxi.example.com", username = "bob", session_id = "2808844564",
      name = "",
      port = 49174, codecs = { { pt = 0, name = "PCMU", rate = 8000 } },
      streams = { video = { port = 49170, codecs = { { pt = 32, name = "MPV", rate = 90000 } } } },
    }))
    assert.same(sdp.parse(BOB), answer)
    assert.equal(BOB, sdp.build(answer))
  end)

  it("keeps the offer's payload numbers for dynamic codecs", function()
    local answer = assert(sdp.answer(offer, { address = "192.0.2.1", port = 5004,
      codecs = { { pt = 96, name = "ilbc", rate = 8000 }, { pt = 0, name = "PCMU", rate = 8000 } } }))
    assert.same({ "0", "97" }, answer.media[1].formats)
    assert.same({ encoding = "iLBC", clock = 8000 }, answer.media[1].rtpmap["97"])
  end)

  it("refuses a stream it shares nothing with by port 0", function()
    local answer = assert(sdp.answer(offer, { address = "192.0.2.1", port = 5004,
      codecs = { { pt = 8, name = "PCMA", rate = 8000 } } }))
    assert.equal(2, #answer.media)
    assert.equal(0, answer.media[2].port)
    assert.same({ "31", "32" }, answer.media[2].formats)
  end)

  it("answers sendonly with recvonly", function()
    local o = sdp.offer { address = "192.0.2.9", port = 6000, direction = "sendonly",
                          codecs = { { pt = 8, name = "PCMA", rate = 8000 } } }
    local answer = assert(sdp.answer(o, { address = "192.0.2.1", port = 5004,
      codecs = { { pt = 8, name = "PCMA", rate = 8000 } } }))
    assert.equal("recvonly", answer.media[1].direction)
    assert.equal(true, answer.media[1]:attribute("recvonly"))
  end)

  it("returns nil and a reason when nothing is shared", function()
    local answer, err = sdp.answer(offer, { address = "192.0.2.1", port = 5004,
      codecs = { { pt = 18, name = "G729", rate = 8000 } } })
    assert.is_nil(answer)
    assert.is_string(err)
  end)

  it("passes a parse failure of the offer through", function()
    local answer, err = sdp.answer("garbage", { address = "192.0.2.1", port = 1, codecs = {} })
    assert.is_nil(answer)
    assert.matches("line 1", err)
  end)
end)

describe("sdp.offer", function()
  it("offers the given codecs with rtpmap and fmtp lines", function()
    local o = sdp.offer { address = "127.0.0.1", port = 49170, session_id = 1,
      codecs = { { pt = 0, name = "PCMU", rate = 8000 },
                 { pt = 101, name = "telephone-event", rate = 8000, fmtp = "0-16" } } }
    assert.equal(crlf {
      "v=0",
      "o=- 1 1 IN IP4 127.0.0.1",
      "s=-",
      "c=IN IP4 127.0.0.1",
      "t=0 0",
      "m=audio 49170 RTP/AVP 0 101",
      "a=rtpmap:0 PCMU/8000",
      "a=rtpmap:101 telephone-event/8000",
      "a=fmtp:101 0-16",
    }, tostring(o))
    assert.equal("0-16", o.media[1].fmtp["101"])
  end)
end)

describe("sdp.build", function()
  it("fills v=, s= and t= for a minimal table", function()
    local text = sdp.build {
      origin = { username = "u", sess_id = "1", sess_version = "2", address = "192.0.2.1" },
      connection = { address = "192.0.2.1" },
      media = { { media = "audio", port = 4000, formats = { 0 } } },
    }
    assert.equal(crlf {
      "v=0", "o=u 1 2 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
      "m=audio 4000 RTP/AVP 0",
    }, text)
  end)

  it("guesses IP6 from the address", function()
    local text = sdp.build { origin = { sess_id = "1", address = "2001:db8::1" },
                             connection = { address = "ff15::101", count = 3 } }
    assert.matches("o=%- 1 1 IN IP6 2001:db8::1\r\n", text)
    assert.matches("c=IN IP6 ff15::101/3\r\n", text)
  end)

  it("writes a media direction only where it differs from the session's", function()
    local s = assert(sdp.parse(RFC4566))
    s.media[1].direction = "inactive"
    local again = assert(sdp.parse(sdp.build(s)))
    assert.equal("inactive", again.media[1].direction)
    assert.equal("recvonly", again.media[2].direction)
    assert.same({ { name = "inactive" } }, again.media[1].attributes)
  end)

  it("raises on programmer errors", function()
    assert.has_error(function() sdp.build() end)
    assert.has_error(function() sdp.build {} end)
    assert.has_error(function()
      sdp.build { origin = { address = "x" }, name = "evil\r\na=injected" }
    end)
    assert.has_error(function()
      sdp.build { origin = { address = "x" }, media = { { media = "audio", port = 1 } } }
    end)
    assert.has_error(function() sdp.parse(42) end)
  end)
end)

describe("RFC 4475 torture message bodies", function()
  local bodies = corpus_bodies()

  it("finds the SDP bodies", function()
    assert.is_true(#bodies >= 8)
  end)

  for _, b in ipairs(bodies) do
    it("parses " .. b.name, function()
      local s, err = sdp.parse(b.body)
      assert.is_table(s, err)
      assert.equal("mhandley", s.origin.username)
      assert.equal("-", s.name)
      assert.same({ { start = 0, stop = 0, repeats = {} } }, s.times)
      assert.equal("audio", s.media[1].media)
      assert.equal(49217, s.media[1].port)
      if s.media[2] then
        assert.same({ "0", "12" }, s.media[1].formats)
        assert.same({ "31" }, s.media[2].formats)
        -- "a=rtpmap:31 LPC" has no clock rate and is still read
        assert.same({ encoding = "LPC" }, s.media[2].rtpmap["31"])
      end
    end)

    it("round-trips " .. b.name, function()
      local s = assert(sdp.parse(b.body))
      assert.same(s, sdp.parse(sdp.build(s)))
    end)
  end

  it("rejects the 'm =video' line of the INVITE trailing dblreq.sip", function()
    local invite = read(CORPUS .. "valid/dblreq.sip"):match("\r\n\r\n\r\n(.*)$")
    local body = invite:match("\r\n\r\n(.*)$")
    assert_error(body, 7, "type=value")
  end)
end)

describe("order leniency", function()
  it("accepts session attributes and c= after t=, as some phones send them", function()
    local s = assert(sdp.parse(crlf {
      "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "a=sendonly",
      "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 8",
    }))
    assert.equal("192.0.2.1", s.connection.address)
    assert.equal("sendonly", s.media[1].direction)
  end)

  it("tolerates blank lines at the end and a property attribute's trailing space", function()
    local s = assert(sdp.parse("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\na=inactive \n\n\n"))
    assert.equal("inactive", s.media[1].direction)
  end)

  it("reads bandwidths, repeats, keys, port counts and media connections", function()
    local s = assert(sdp.parse(crlf {
      "v=0", "o=- 1 1 IN IP4 h", "s=x", "p=+1 617 555-6011", "b=CT:128",
      "t=2873397496 2873404696", "r=7d 1h 0 25h", "z=2882844526 -1h", "k=prompt",
      "m=video 49170/2 RTP/AVP 31", "i=cam", "c=IN IP4 224.2.1.1/127/3", "c=IN IP4 192.0.2.7",
      "b=AS:64", "k=clear:abc", "a=fmtp:31 x=1",
    }))
    assert.same({ "+1 617 555-6011" }, s.phones)
    assert.same({ { type = "CT", value = 128 } }, s.bandwidths)
    assert.same({ "7d 1h 0 25h" }, s.times[1].repeats)
    assert.equal("2882844526 -1h", s.zone)
    assert.equal("prompt", s.key)
    local m = s.media[1]
    assert.equal(2, m.port_count)
    assert.equal("cam", m.info)
    assert.same({ nettype = "IN", addrtype = "IP4", address = "224.2.1.1", ttl = 127, count = 3 },
                m.connections[1])
    assert.same({ { type = "AS", value = 64 } }, m.bandwidths)
    assert.equal("clear:abc", m.key)
    assert.equal("x=1", m.fmtp["31"])
    assert.same(s, sdp.parse(sdp.build(s)))
  end)
end)

describe("malformed descriptions", function()
  local function body(lines) return crlf(lines) end
  local HEAD = { "v=0", "o=- 1 1 IN IP4 h", "s=-", "t=0 0" }
  local function with(...)
    local t = { table.unpack(HEAD) }
    for _, l in ipairs { ... } do t[#t + 1] = l end
    return body(t)
  end

  it("rejects a line that is not type=value", function()
    assert_error(with("m=audio 1 RTP/AVP 0", "hello"), 6, "type=value")
    assert_error(with(" a=x"), 5, "type=value")
    assert_error(with("", "m=audio 1 RTP/AVP 0"), 5, "type=value")
  end)

  it("rejects a missing v=", function()
    assert_error(body { "o=- 1 1 IN IP4 h", "s=-", "t=0 0" }, 1, "v=")
    assert_error("", 1, "v=")
  end)

  it("rejects a version other than 0", function()
    assert_error(body { "v=1", "o=- 1 1 IN IP4 h", "s=-", "t=0 0" }, 1, "version")
  end)

  it("rejects a v= anywhere but first", function()
    assert_error(with("v=0"), 5)
  end)

  it("rejects an o= without 6 fields", function()
    assert_error(body { "v=0", "o=- 1 1 IN IP4", "s=-", "t=0 0" }, 2, "o=")
    assert_error(body { "v=0", "o=- 1 1 IN IP4 h x", "s=-", "t=0 0" }, 2, "o=")
  end)

  it("rejects a c= without 3 fields", function()
    assert_error(with("c=IN IP4"), 5, "c=")
    assert_error(with("m=audio 1 RTP/AVP 0", "c=IN IP4 a b"), 6, "c=")
    assert_error(with("c=IN IP4 1.2.3.4/x"), 5, "c=")
  end)

  it("rejects a bad m=", function()
    assert_error(with("m=audio 1 RTP/AVP"), 5, "m=")
    assert_error(with("m=audio port RTP/AVP 0"), 5, "m=")
    assert_error(with("m=audio 1/x RTP/AVP 0"), 5, "m=")
    assert_error(with("m=audio 70000 RTP/AVP 0"), 5, "m=")
  end)

  it("rejects bad b=, t= and a= values", function()
    assert_error(with("b=AS"), 5, "b=")
    assert_error(body { "v=0", "o=- 1 1 IN IP4 h", "s=-", "t=now" }, 4, "t=")
    assert_error(with("a=bad attr"), 5, "a=")
    assert_error(with("a="), 5, "a=")
  end)

  it("rejects session-only fields inside a media description", function()
    assert_error(with("m=audio 1 RTP/AVP 0", "t=0 0"), 6, "media")
    assert_error(with("m=audio 1 RTP/AVP 0", "i=a", "i=b"), 7, "duplicate")
  end)

  it("rejects unknown type letters, as RFC 4566 §5 asks", function()
    assert_error(with("x=1"), 5, "unknown")
  end)

  it("rejects r= before any t= and duplicate singletons", function()
    assert_error(body { "v=0", "o=- 1 1 IN IP4 h", "s=-", "r=1 1 0", "t=0 0" }, 4, "r=")
    assert_error(with("s=again"), 5, "duplicate")
  end)

  it("rejects a missing o=, s= or t=", function()
    assert_error(body { "v=0", "s=-", "t=0 0" }, 4, "o=")
    assert_error(body { "v=0", "o=- 1 1 IN IP4 h", "t=0 0" }, 4, "s=")
    assert_error(body { "v=0", "o=- 1 1 IN IP4 h", "s=-" }, 4, "t=")
  end)

  it("returns nil quickly for 200 KB of garbage", function()
    local rnd = {}
    math.randomseed(4566)
    for i = 1, 200 * 1024 do rnd[i] = string.char(math.random(0, 255)) end
    local inputs = { string.rep("x", 200 * 1024), table.concat(rnd),
                     "v=0\r\n" .. string.rep("garbage ", 25 * 1024),
                     "v=0\r\n" .. string.rep("a=", 100 * 1024) }
    for _, input in ipairs(inputs) do
      local t0 = os.clock()
      local s, err = sdp.parse(input)
      assert.is_nil(s)
      assert.matches("line %d+", err)
      assert.is_true(os.clock() - t0 < 0.5)
    end
  end)

  it("never raises on truncated or line-dropped bodies", function()
    for _, text in ipairs { RFC4566, ALICE, BOB } do
      for i = 0, #text do
        local ok, s, err = pcall(sdp.parse, text:sub(1, i))
        assert.is_true(ok, s)
        assert.is_true(s ~= nil or type(err) == "string")
      end
    end
  end)
end)
