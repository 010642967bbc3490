-- Specs for sip.cpim: RFC 3862 message/cpim parsing and building, checked against the
-- RFC's own §6 example and against broken envelopes.

local cpim = require "sip.cpim"

local function crlf(lines) return table.concat(lines, "\r\n") end

-- RFC 3862 §6, the part after the outer "Content-type: Message/CPIM" header
local EXAMPLE = crlf {
  "From: MR SANDERS <im:piglet@100akerwood.com>",
  "To: Depressed Donkey <im:eeyore@100akerwood.com>",
  "DateTime: 2000-12-13T13:40:00-08:00",
  "Subject: the weather will be fine today",
  "Subject:;lang=fr beau temps prevu pour aujourd'hui",
  "NS: MyFeatures <mid:MessageFeatures@id.foo.com>",
  "Require: MyFeatures.VitalMessageOption",
  "MyFeatures.VitalMessageOption: Confirmation-requested",
  "MyFeatures.WackyMessageOption: Use-silly-font",
  "",
  "Content-type: text/xml; charset=utf-8",
  "Content-ID: <1234567890@foo.com>",
  "",
  "<body>",
  "Here is the text of my message.",
  "</body>",
  "",
}

describe("RFC 3862 §6 example", function()
  local m = assert(cpim.parse(EXAMPLE))

  it("keeps every message header in order", function()
    assert.same({
      { name = "From", value = "MR SANDERS <im:piglet@100akerwood.com>" },
      { name = "To", value = "Depressed Donkey <im:eeyore@100akerwood.com>" },
      { name = "DateTime", value = "2000-12-13T13:40:00-08:00" },
      { name = "Subject", value = "the weather will be fine today" },
      { name = "Subject", value = "beau temps prevu pour aujourd'hui", params = ";lang=fr" },
      { name = "NS", value = "MyFeatures <mid:MessageFeatures@id.foo.com>" },
      { name = "Require", value = "MyFeatures.VitalMessageOption" },
      { name = "MyFeatures.VitalMessageOption", value = "Confirmation-requested" },
      { name = "MyFeatures.WackyMessageOption", value = "Use-silly-font" },
    }, m.headers)
  end)

  it("splits From and To into name and URI", function()
    assert.equal("MR SANDERS <im:piglet@100akerwood.com>", m.from)
    assert.equal("im:piglet@100akerwood.com", m.from_uri)
    assert.equal("MR SANDERS", m.from_name)
    assert.equal("Depressed Donkey <im:eeyore@100akerwood.com>", m.to)
    assert.equal("im:eeyore@100akerwood.com", m.to_uri)
    assert.equal("Depressed Donkey", m.to_name)
  end)

  it("reads DateTime and both Subjects with their languages", function()
    assert.equal("2000-12-13T13:40:00-08:00", m.datetime)
    assert.equal("the weather will be fine today", m.subject)
    assert.same({ { value = "the weather will be fine today" },
                  { value = "beau temps prevu pour aujourd'hui", lang = "fr" } }, m.subjects)
  end)

  it("maps the NS prefix to its URI and lists Require", function()
    assert.same({ MyFeatures = "mid:MessageFeatures@id.foo.com" }, m.ns)
    assert.same({ "MyFeatures.VitalMessageOption" }, m.require)
  end)

  it("reads the encapsulated MIME headers and the content", function()
    assert.equal("text/xml; charset=utf-8", m.content_type)
    assert.same({ { name = "Content-type", value = "text/xml; charset=utf-8" },
                  { name = "Content-ID", value = "<1234567890@foo.com>" } }, m.content_headers)
    assert.equal("<body>\r\nHere is the text of my message.\r\n</body>\r\n", m.body)
  end)

  it("builds back byte for byte", function()
    assert.equal(EXAMPLE, cpim.build(m))
    assert.same(m, cpim.parse(cpim.build(m)))
  end)

  it("accepts LF line ends", function()
    local lf = assert(cpim.parse((EXAMPLE:gsub("\r\n", "\n"))))
    assert.equal("im:eeyore@100akerwood.com", lf.to_uri)
    assert.equal("<body>\nHere is the text of my message.\n</body>\n", lf.body)
  end)
end)

describe("cpim.build", function()
  it("builds a message from shortcut fields", function()
    local text = cpim.build { from_uri = "sip:alice@example.com", from_name = "Alice",
                              to = "<sip:bob@example.com>", datetime = "2024-01-02T03:04:05Z",
                              subject = "hi", body = "Hello, Bob" }
    assert.equal(crlf {
      "From: Alice <sip:alice@example.com>",
      "To: <sip:bob@example.com>",
      "DateTime: 2024-01-02T03:04:05Z",
      "Subject: hi",
      "",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Hello, Bob",
    }, text)
    local m = assert(cpim.parse(text))
    assert.equal("sip:bob@example.com", m.to_uri)
    assert.is_nil(m.to_name)
    assert.equal("Hello, Bob", m.body)
  end)

  it("writes NS and Require and extra headers", function()
    local m = assert(cpim.parse(cpim.build {
      from = "<im:a@x>", to = "<im:b@x>", ns = { imdn = "urn:ietf:params:imdn" },
      require = { "imdn.Disposition-Notification" },
      headers = { { name = "imdn.Message-ID", value = "34jk324j" } },
      content_type = "text/plain", body = "ok" }))
    assert.same({ imdn = "urn:ietf:params:imdn" }, m.ns)
    assert.same({ "imdn.Disposition-Notification" }, m.require)
    assert.equal("imdn.Message-ID", m.headers[#m.headers].name)
    assert.equal("text/plain", m.content_type)
  end)

  it("stamps the current time for datetime = true", function()
    local m = assert(cpim.parse(cpim.build { from = "<im:a@x>", datetime = true, body = "" }))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", m.datetime)
  end)

  it("raises on programmer errors", function()
    assert.has_error(function() cpim.build() end)
    assert.has_error(function() cpim.build { subject = "a\r\nFrom: <im:evil@x>" } end)
    assert.has_error(function() cpim.build { headers = { { name = "bad name", value = "x" } } } end)
    assert.has_error(function() cpim.parse(nil) end)
  end)
end)

describe("malformed message/cpim", function()
  local function fails(text, pattern)
    local m, err = cpim.parse(text)
    assert.is_nil(m)
    assert.is_string(err)
    if pattern then assert.matches(pattern, err) end
  end

  it("rejects a message without the blank line after its headers", function()
    fails("From: <im:a@x>\r\nTo: <im:b@x>\r\n", "blank line")
    fails("", "blank line")
  end)

  it("rejects content headers without a blank line before the content", function()
    fails("From: <im:a@x>\r\n\r\nContent-Type: text/plain\r\n", "blank line")
  end)

  it("rejects a header line without a colon", function()
    fails("From <im:a@x>\r\n\r\nContent-Type: text/plain\r\n\r\nhi", "header")
    fails("From: <im:a@x>\r\n\r\nContent-Type text/plain\r\n\r\nhi", "header")
  end)

  it("rejects a folded CPIM header line, which RFC 3862 does not allow", function()
    fails("Subject: a\r\n b\r\n\r\nContent-Type: text/plain\r\n\r\nhi", "header")
  end)

  it("unfolds a folded MIME content header", function()
    local m = assert(cpim.parse("From: <im:a@x>\r\n\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\r\nhi"))
    assert.equal("text/plain; charset=utf-8", m.content_type)
  end)

  it("rejects a From or NS value without <uri>", function()
    fails("From: im:a@x\r\n\r\nContent-Type: text/plain\r\n\r\nhi", "From")
    fails("NS: foo\r\n\r\nContent-Type: text/plain\r\n\r\nhi", "NS")
  end)

  it("rejects content without a Content-Type", function()
    fails("From: <im:a@x>\r\n\r\nContent-ID: <1@x>\r\n\r\nhi", "Content%-Type")
  end)

  it("returns nil quickly for 200 KB of garbage", function()
    local t0 = os.clock()
    fails(string.rep("x", 200 * 1024))
    fails(string.rep("x: y\r\n", 30 * 1024))
    assert.is_true(os.clock() - t0 < 0.5)
  end)

  it("never raises on a truncated example", function()
    for i = 0, #EXAMPLE do
      local ok, m, err = pcall(cpim.parse, EXAMPLE:sub(1, i))
      assert.is_true(ok, m)
      assert.is_true(m ~= nil or type(err) == "string")
    end
  end)
end)
