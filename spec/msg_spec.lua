-- spec/msg_spec.lua: the message layer — parsing (RFC 3261 §7, §20, §25; RFC 4475),
-- field access, edits, serialization and builders.
local sip = require "sip"
local helper = require "helper"

local function parse_file(path)
  local m, err = sip.parse(helper.read(path))
  assert(m, path .. ": " .. tostring(err))
  return m
end

local function roundtrip_fields(m)
  return {
    method = m.method, uri = m.uri, status = m.status, reason = m.reason,
    call_id = m.call_id, cseq = m.cseq, cseq_method = m.cseq_method,
    from_tag = m.from_tag, to_tag = m.to_tag, branch = m.branch,
    max_forwards = m.max_forwards, body = m.body, nvia = #m:headers("Via"),
    contact = m:headers("Contact"),
  }
end

local minimal = helper.msg {
  "OPTIONS sip:bob@example.com SIP/2.0",
  "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport",
  "Max-Forwards: 70",
  "From: Alice <sip:alice@example.com>;tag=a1",
  "To: <sip:bob@example.com>",
  "Call-ID: c1@192.0.2.1",
  "CSeq: 7 OPTIONS",
  "Content-Length: 0",
  "", "",
}

describe("RFC 4475 valid messages", function()
  for _, f in ipairs(helper.files("rfc4475/valid")) do
    it("parses " .. f, function()
      local m, err = sip.parse(helper.read("rfc4475/valid/" .. f))
      assert.is_nil(err)
      assert.truthy(m)
    end)
  end

  it("wsinv: whitespace, folding, odd case and compact forms", function()
    local m = parse_file("rfc4475/valid/wsinv.sip")
    assert.equal("1918181833n", m.to_tag)
    assert.equal("98asjd8", m.from_tag)
    assert.equal(68, m.max_forwards)
    assert.equal(9, m.cseq)
    assert.equal("INVITE", m.cseq_method)
    assert.equal(3, #m:headers("Via"))
    assert.equal(3, #m:headers("v"))
    assert.equal("", m:header("Subject"))
    assert.equal("", m:header("s"))
    assert.equal(150, #m.body)
    assert.equal("0.33", m:addr("Contact").params.q)
    assert.equal('Quoted string ""', m:addr("Contact").display)
    assert.equal("newfangled value continued newfangled value", m:header("NewFangledHeader"))
    assert.equal(";;,,;;,;", m:header("UnknownHeaderWithUnusualValue"))
    local vias = m:vias()
    assert.equal("UDP", vias[1].transport)
    assert.equal("192.0.2.2", vias[1].host)
    assert.equal("390skdjuw", vias[1].branch)
    assert.equal("TCP", vias[2].transport)
    assert.equal("spindle.example.com", vias[2].host)
    assert.equal("z9hG4bK9ikj8", vias[2].branch)
    assert.equal("192.168.255.111", vias[3].host)
    assert.equal("z9hG4bK30239", vias[3].branch)
    assert.equal('J Rosenberg \\"', m:addr("From").display)
  end)

  it("intmeth: every legal token character in method, params, tags", function()
    local m = parse_file("rfc4475/valid/intmeth.sip")
    local method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert.equal(method, m.method)
    assert.equal(method, m.cseq_method)
    assert.equal("_token~1'+`*%!-.", m.from_tag)
    assert.equal("z9hG4bK-.!%66*_+`'~", m.branch)
    local u = sip.uri.parse(m.uri)
    assert.equal("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*", u.user)
    assert.equal("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)", u.password)
    assert.equal("BEL:\7 NUL:\0 DEL:\127", m:addr("To").display)
  end)

  it("esc01: %-escapes in URIs decode", function()
    local m = parse_file("rfc4475/valid/esc01.sip")
    assert.equal("sips:user@example.com", sip.uri.parse(m.uri).user)
    assert.equal("I have spaces", sip.uri.parse(m:addr("From").uri).user)
  end)

  it("escnull: escaped NUL in user parts, no C-string truncation", function()
    local m = parse_file("rfc4475/valid/escnull.sip")
    local c = m:headers("Contact")
    assert.equal(2, #c)
    assert.equal("\0", sip.uri.parse(m:addr("Contact", 1).uri).user)
    assert.equal("\0\0", sip.uri.parse(m:addr("Contact", 2).uri).user)
    assert.equal("null-\0-null", sip.uri.parse(m:addr("To").uri).user)
    assert.equal("sip:null-%00-null@example.com", m:addr("To").uri)
  end)

  it("esc02: % where it is not an escape", function()
    local m = parse_file("rfc4475/valid/esc02.sip")
    assert.equal("RE%47IST%45R", m.method)
    assert.equal(2, #m:headers("Contact"))
    assert.truthy(m:header("C%6Fntact"))
  end)

  it("lwsdisp: no space between display name and <", function()
    assert.equal("caller", parse_file("rfc4475/valid/lwsdisp.sip"):addr("From").display)
  end)

  it("longreq: very long values, 34 Via values", function()
    local m = parse_file("rfc4475/valid/longreq.sip")
    assert.equal(34, #m:headers("Via"))
    assert.equal(34, #m:vias())
    assert.matches("^I have a user name of [extrm]+ proportion$", m:addr("To").display)
  end)

  it("dblreq: extra octets after Content-Length are ignored", function()
    local m = parse_file("rfc4475/valid/dblreq.sip")
    assert.equal("REGISTER", m.method)
    assert.equal("", m.body)
    assert.equal(0, #m.body)
    assert.is_nil(tostring(m):find("INVITE", 1, true))
  end)

  it("semiuri: ; inside the user part", function()
    local m = parse_file("rfc4475/valid/semiuri.sip")
    assert.equal("user;par=u@example.net", sip.uri.parse(m.uri).user)
    assert.equal("sip:user;par=u%40example.net@example.com", m.uri)
  end)

  it("transports: UDP, SCTP, TLS, UNKNOWN, TCP", function()
    local t = {}
    for _, v in ipairs(parse_file("rfc4475/valid/transports.sip"):vias()) do
      t[#t + 1] = v.transport
    end
    assert.same({ "UDP", "SCTP", "TLS", "UNKNOWN", "TCP" }, t)
  end)

  it("mpart01: body length is Content-Length", function()
    local m = parse_file("rfc4475/valid/mpart01.sip")
    assert.equal(tonumber(m:header("Content-Length")), #m.body)
  end)

  it("unreason: UTF-8 reason phrase kept byte for byte", function()
    local m = parse_file("rfc4475/valid/unreason.sip")
    assert.equal(200, m.status)
    local raw = helper.read("rfc4475/valid/unreason.sip"):match("^SIP/2%.0 200 ([^\r]*)")
    assert.equal(raw, m.reason)
  end)

  it("noreason: empty reason phrase", function()
    local m = parse_file("rfc4475/valid/noreason.sip")
    assert.equal(100, m.status)
    assert.equal("", m.reason)
  end)

  it("inv2543: RFC 2543 INVITE without branch cookie or Max-Forwards", function()
    local m = parse_file("rfc4475/valid/inv2543.sip")
    assert.equal("INVITE", m.method)
    assert.is_nil(m.max_forwards)
    assert.is_nil(m.branch)
  end)
end)

describe("RFC 4475 invalid messages", function()
  local expect = {
    ["badaspec.sip"] = "bad To", ["baddate.sip"] = "bad Date", ["baddn.sip"] = "bad From",
    ["badinv01.sip"] = "bad", ["badvers.sip"] = "unsupported SIP version",
    ["bigcode.sip"] = "bad status code", ["clerr.sip"] = "Content-Length larger than message",
    ["escruri.sip"] = "bad Request-URI", ["ltgtruri.sip"] = "bad Request-URI",
    ["lwsruri.sip"] = "bad request line", ["lwsstart.sip"] = "bad request line",
    ["mismatch01.sip"] = "CSeq method does not match",
    ["mismatch02.sip"] = "CSeq method does not match", ["ncl.sip"] = "bad Content-Length",
    ["quotbal.sip"] = "bad To", ["regbadct.sip"] = "bad Contact", ["scalar02.sip"] = "bad",
    ["scalarlg.sip"] = "bad CSeq", ["trws.sip"] = "bad request line",
  }
  for _, f in ipairs(helper.files("rfc4475/invalid")) do
    it("rejects " .. f .. " with a reason", function()
      local m, err = sip.parse(helper.read("rfc4475/invalid/" .. f))
      assert.is_nil(m)
      assert.is_string(err)
      assert.truthy(expect[f], "no expectation for " .. f)
      assert.equal(1, select(2, err:gsub("\n", "")) + 1, "one line")
      assert.truthy(err:find(expect[f], 1, true), f .. ": " .. err)
    end)
  end
end)

describe("RFC 4475 semantic messages", function()
  it("insuf: names the missing header", function()
    local m, err = sip.parse(helper.read("rfc4475/semantic/insuf.sip"))
    assert.is_nil(m)
    assert.matches("^missing ", err)
  end)
  it("multi01: several values in single-value headers", function()
    local m, err = sip.parse(helper.read("rfc4475/semantic/multi01.sip"))
    assert.is_nil(m)
    assert.matches("duplicate", err)
  end)
  it("mcl01: several Content-Length values", function()
    local m, err = sip.parse(helper.read("rfc4475/semantic/mcl01.sip"))
    assert.is_nil(m)
    assert.equal("duplicate Content-Length header", err)
  end)
  for _, f in ipairs { "badbranch.sip", "bcast.sip", "bext01.sip", "cparam01.sip",
    "cparam02.sip", "invut.sip", "novelsc.sip", "regaut01.sip", "regescrt.sip",
    "sdp01.sip", "unkscm.sip", "unksm2.sip", "zeromf.sip" } do
    it("parses " .. f .. " (the element decides)", function()
      assert.truthy(sip.parse(helper.read("rfc4475/semantic/" .. f)))
    end)
  end
  it("badbranch: branch is only the magic cookie", function()
    assert.equal("z9hG4bK", parse_file("rfc4475/semantic/badbranch.sip").branch)
  end)
  it("unkscm / novelsc: other URI schemes parse as opaque", function()
    local u = sip.uri.parse(parse_file("rfc4475/semantic/novelsc.sip").uri)
    assert.equal("soap.beep", u.scheme)
    assert.equal("//192.0.2.103:3002", u.opaque)
    u = sip.uri.parse(parse_file("rfc4475/semantic/unkscm.sip").uri)
    assert.equal("nobodyknowsthisscheme", u.scheme)
    assert.equal("totallyopaquecontent", u.opaque)
  end)
  it("zeromf: Max-Forwards 0 is read as 0", function()
    assert.equal(0, parse_file("rfc4475/semantic/zeromf.sip").max_forwards)
  end)
  it("regescrt: escaped header in a Contact URI stays as sent", function()
    local m = parse_file("rfc4475/semantic/regescrt.sip")
    local u = sip.uri.parse(m:addr("Contact").uri)
    assert.equal("<sip:sip.example.com>", u.headers.Route)
  end)
end)

describe("call flows", function()
  it("pager-1: Max-Forwards 70 and an 18-byte body", function()
    local m = parse_file("flows/pager-1-message.sip")
    assert.equal("MESSAGE", m.method)
    assert.equal(70, m.max_forwards)
    assert.equal(18, #m.body)
    assert.equal("user2, come here.", m.body:sub(1, 17))
    assert.equal("text/plain", m.content_type)
  end)
  it("pager-2: 2 Via values, the second folded, with received=", function()
    local m = parse_file("flows/pager-2-message-proxied.sip")
    local v = m:vias()
    assert.equal(2, #v)
    assert.equal("1.2.3.4", v[2].received)
    assert.equal(69, m.max_forwards)
    assert.is_nil(m:headers("Via")[2]:find("\r", 1, true))
  end)
  it("pager-3: To tag added, both Via folded", function()
    local m = parse_file("flows/pager-3-200.sip")
    assert.equal(200, m.status)
    assert.truthy(m.to_tag)
    assert.equal(2, #m:vias())
  end)
  it("pager-4: top Via removed", function()
    assert.equal(1, #parse_file("flows/pager-4-200-proxied.sip"):vias())
  end)
  it("register-1: Via without branch; Contact with a quoted methods param", function()
    local m = parse_file("flows/register-1-noauth.sip")
    assert.is_nil(m.branch)
    local c = m:addr("Contact")
    assert.truthy(c.params.methods)
    assert.not_matches('"', c.params.methods)
  end)
  it("register-2: Expires 3600", function()
    assert.equal("3600", parse_file("flows/register-2-200.sip"):header("Expires"))
  end)
  it("register-3: WWW-Authenticate Digest challenge", function()
    local v = parse_file("flows/register-3-401.sip"):header("WWW-Authenticate")
    assert.matches("^Digest ", v)
    assert.matches('realm="', v)
    assert.matches("algorithm=MD5", v)
  end)
  it("register-4: Authorization with nc and CSeq 2", function()
    local m = parse_file("flows/register-4-authorization.sip")
    assert.equal(2, m.cseq)
    assert.matches("nc=00000001", m:header("Authorization"))
  end)
end)

describe("round trips", function()
  local all = {}
  for _, d in ipairs { "rfc4475/valid", "flows" } do
    for _, f in ipairs(helper.files(d)) do
      all[#all + 1] = d .. "/" .. f
    end
  end
  for _, path in ipairs(all) do
    it("parse -> tostring -> parse keeps the fields of " .. path, function()
      local m = parse_file(path)
      local again = assert(sip.parse(tostring(m)))
      assert.same(roundtrip_fields(m), roundtrip_fields(again))
      assert.equal(tostring(m), tostring(again))
    end)
  end
end)

describe("header access", function()
  local m = assert(sip.parse(minimal))

  it("finds headers by any case and by compact form", function()
    assert.equal("c1@192.0.2.1", m:header("call-id"))
    assert.equal("c1@192.0.2.1", m:header("i"))
    assert.equal("c1@192.0.2.1", m:header("I"))
    assert.equal("Alice <sip:alice@example.com>;tag=a1", m:header("f"))
    assert.equal(m:header("Via"), m:header("v"))
  end)

  it("every compact form maps to its long name", function()
    local forms = { i = "Call-ID", m = "Contact", e = "Content-Encoding", l = "Content-Length",
      c = "Content-Type", f = "From", s = "Subject", k = "Supported", t = "To", v = "Via",
      o = "Event", u = "Allow-Events", r = "Refer-To", b = "Referred-By", y = "Identity",
      x = "Session-Expires" }
    for short, long in pairs(forms) do
      local text = helper.msg {
        "OPTIONS sip:b@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        "From: <sip:a@example.com>;tag=1", "To: <sip:b@example.com>", "Call-ID: x",
        "CSeq: 1 OPTIONS",
      }
      local value = ({ i = "cid", m = "<sip:c@h>", l = "0", f = "<sip:a@example.com>;tag=1",
        t = "<sip:b@example.com>", v = "SIP/2.0/UDP h;branch=z9hG4bK1" })[short] or "val"
      -- replace the long header, or add a new one
      local replaced = false
      text = text:gsub("\r\n" .. long:gsub("%-", "%%-") .. ": [^\r]*", function()
        replaced = true
        return "\r\n" .. short .. ": " .. value
      end)
      if not replaced then
        text = text .. "\r\n" .. short .. ": " .. value
      end
      local p = assert(sip.parse(text .. "\r\n\r\n"), short)
      assert.equal(value, p:header(long), short .. " -> " .. long)
      assert.equal(value, p:header(short))
    end
  end)

  it("knows every header name in any case, and nothing more", function()
    local names = { "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
      "Alert-Info", "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
      "Call-Info", "Contact", "Content-Disposition", "Content-Encoding", "Content-Language",
      "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires",
      "From", "Identity", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version",
      "Organization", "Path", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
      "Proxy-Require", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Reply-To",
      "Request-Disposition", "Require", "Retry-After", "Route", "Server", "Service-Route",
      "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
      "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate" }
    local header_name = sip.core.header_name
    for _, name in ipairs(names) do
      assert.equal(name, header_name(name:lower()))
      assert.equal(name, header_name(name:upper()))
      for _, other in ipairs { name .. "x", name:sub(1, -2), "x" .. name:sub(2), name:sub(1, -2) .. "_" } do
        if #other > 1 then -- one letter is a compact form
          assert.equal(other, header_name(other))
        end
      end
    end
    assert.equal("Request-Disposition", header_name("D"))
    assert.equal("Reject-Contact", header_name("j"))
    assert.equal("Accept-Contact", header_name("a"))
    assert.equal("Call\rID", header_name("Call\rID"))
    assert.equal("z", header_name("z"))
  end)

  it("returns nil for an absent header", function()
    assert.is_nil(m:header("Subject"))
    assert.same({}, m:headers("Route"))
  end)

  it("splits comma lists around quotes and <>", function()
    local p = assert(sip.parse(helper.msg {
      "INVITE sip:b@example.com SIP/2.0",
      "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
      "Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3",
      "From: <sip:a@example.com>;tag=1", "To: <sip:b@example.com>", "Call-ID: x",
      "CSeq: 1 INVITE",
      'Contact: "Doe, John" <sip:j@h;x=a>;q=0.5, <sip:k@h>',
      "Allow: INVITE, ACK,BYE",
      "Subject: hello, world",
      "", "",
    }))
    assert.equal(3, #p:headers("Via"))
    assert.same({ '"Doe, John" <sip:j@h;x=a>;q=0.5', "<sip:k@h>" }, p:headers("Contact"))
    assert.same({ "INVITE", "ACK", "BYE" }, p:headers("Allow"))
    assert.same({ "hello, world" }, p:headers("Subject"))
    assert.equal("Doe, John", p:addr("Contact", 1).display)
    assert.equal("sip:k@h", p:addr("Contact", 2).uri)
  end)

  it("lists every header line in order with headers()", function()
    local all = m:headers()
    assert.equal(7, #all)
    assert.same({ "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport" }, all[1])
    assert.same({ "Content-Length", "0" }, all[7])
  end)

  it("unfolds folded lines into single spaces", function()
    local p = assert(sip.parse(helper.msg {
      "MESSAGE sip:b@example.com SIP/2.0",
      "Via: SIP/2.0/UDP a.example.com",
      " ;branch=z9hG4bK77",
      "From: <sip:a@example.com>;tag=1", "To: <sip:b@example.com>", "Call-ID: x",
      "CSeq: 1 MESSAGE", "Subject: one", "\ttwo", "", "",
    }))
    assert.equal("z9hG4bK77", p.branch)
    assert.equal("SIP/2.0/UDP a.example.com ;branch=z9hG4bK77", p:header("Via"))
    assert.equal("one two", p:header("Subject"))
  end)

  it("reads Via fields: sent-by, rport with and without value, received, maddr, ttl", function()
    local p = assert(sip.parse(helper.msg {
      "OPTIONS sip:b@example.com SIP/2.0",
      "Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKx;rport;maddr=224.2.0.1;ttl=16",
      "Via: SIP/2.0/TCP h.example.com;branch=z9hG4bKy;rport=5061;received=192.0.2.7",
      "From: <sip:a@example.com>;tag=1", "To: <sip:b@example.com>", "Call-ID: x",
      "CSeq: 1 OPTIONS", "", "",
    }))
    local v = p:vias()
    assert.equal("[2001:db8::1]", v[1].host)
    assert.equal(5070, v[1].port)
    assert.equal(true, v[1].rport)
    assert.equal("224.2.0.1", v[1].maddr)
    assert.equal("16", v[1].ttl)
    assert.equal("SIP/2.0", v[1].protocol)
    assert.equal(5061, v[2].rport)
    assert.equal("192.0.2.7", v[2].received)
  end)

  it("exposes the shortcut fields", function()
    assert.equal("OPTIONS", m.method)
    assert.equal("sip:bob@example.com", m.uri)
    assert.equal("c1@192.0.2.1", m.call_id)
    assert.equal(7, m.cseq)
    assert.equal("OPTIONS", m.cseq_method)
    assert.equal("a1", m.from_tag)
    assert.is_nil(m.to_tag)
    assert.equal("z9hG4bKabc", m.branch)
    assert.equal(70, m.max_forwards)
    assert.equal("", m.body)
    assert.is_true(m.is_request)
    assert.is_nil(m.status)
  end)

  it("lets scripts attach fields but keeps parsed fields read-only", function()
    local p = assert(sip.parse(minimal))
    p.note = "hello"
    assert.equal("hello", p.note)
    assert.has_error(function() p.method = "BYE" end)
  end)

  it("keeps the endpoint's fields (_txn, _ep, source, replied_final) writable", function()
    local p = assert(sip.parse(minimal))
    assert.is_nil(p._txn)
    assert.is_nil(p.replied_final)
    assert.is_nil(p.source)
    local ep = {}
    p._txn, p._ep, p.source, p.replied_final = 7, ep, "udp:192.0.2.1:5060", true
    assert.equal(7, p._txn)
    assert.equal(ep, p._ep)
    assert.equal("udp:192.0.2.1:5060", p.source)
    assert.is_true(p.replied_final)
    p._txn, p.replied_final = nil, false
    assert.is_nil(p._txn)
    assert.is_nil(p.replied_final)
    assert.equal("OPTIONS", p.method)   -- the parsed fields are untouched
  end)

  it("refuses anything but a message as self", function()
    local p = assert(sip.parse(minimal))
    assert.has_error(function() p.header(io.stdout, "Via") end)
    assert.has_error(function() p.header({}, "Via") end)
    assert.has_error(function() p.set_header(io.stdout, "Subject", "x") end)
    local mt = getmetatable(p)
    assert.has_error(function() mt.__index(io.stdout, "method") end)
  end)
end)

describe("URIs", function()
  it("parses user, password, host, port, params and headers", function()
    local u = sip.uri.parse("sips:alice:secret@atlanta.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent")
    assert.equal("sips", u.scheme)
    assert.equal("alice", u.user)
    assert.equal("secret", u.password)
    assert.equal("atlanta.com", u.host)
    assert.equal(5061, u.port)
    assert.equal("tcp", u.params.transport)
    assert.equal(true, u.params.lr)
    assert.equal("project x", u.headers.subject)
    assert.equal("urgent", u.headers.priority)
  end)
  it("parses IPv4 and IPv6 hosts", function()
    assert.equal("192.0.2.4", sip.uri.parse("sip:192.0.2.4").host)
    local u = sip.uri.parse("sip:bob@[2001:db8::10]:5070")
    assert.equal("[2001:db8::10]", u.host)
    assert.equal(5070, u.port)
  end)
  it("parses tel: URIs", function()
    local u = sip.uri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert.equal("tel", u.scheme)
    assert.equal("+1-201-555-0123", u.user)
    assert.equal("example.com", u.params["phone-context"])
  end)
  it("rejects bad URIs with a reason", function()
    for _, s in ipairs { "", "sip:", "sip:a@", "sip:a b@c", "sip:a@b:99999", "sip:a@[::1",
      "1sip:a@b", "sip:a@b;;x", "sip:%zz@b", "nocolon" } do
      local u, err = sip.uri.parse(s)
      assert.is_nil(u, s)
      assert.is_string(err)
    end
  end)
  it("builds what it parses", function()
    local s = "sip:alice:pw@example.com:5062;lr;transport=tcp?subject=hi%20there"
    local t = sip.uri.parse(s)
    assert.equal(s, sip.uri.build(t))
    assert.same(t, sip.uri.parse(sip.uri.build(t)))
  end)
  it("escapes what must be escaped when building", function()
    local s = sip.uri.build { user = "I have spaces", host = "example.net" }
    assert.equal("sip:I%20have%20spaces@example.net", s)
    assert.equal("I have spaces", sip.uri.parse(s).user)
  end)
end)

describe("edits", function()
  it("pushes a Via on top and pops it again", function()
    local m = assert(sip.parse(minimal))
    assert.truthy(m:push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew"))
    assert.equal("z9hG4bKnew", m.branch)
    local again = assert(sip.parse(tostring(m)))
    assert.equal(2, #again:vias())
    assert.equal("proxy.example.com", again:vias()[1].host)
    assert.truthy(m:pop_via())
    assert.equal("z9hG4bKabc", m.branch)
    assert.equal(1, #assert(sip.parse(tostring(m))):vias())
  end)
  it("pops only the first value of a combined Via line", function()
    local m = assert(sip.parse(helper.read("rfc4475/valid/wsinv.sip")))
    m:pop_via()
    m:pop_via()
    assert.equal("z9hG4bK30239", m.branch)   -- the odd-shaped Via left parsed on its own
    local again = assert(sip.parse(tostring(m)))
    assert.equal(1, #again:vias())
    assert.equal("z9hG4bK30239", again.branch)
  end)
  it("keeps every header in reach when a whole Via line goes", function()
    local m = assert(sip.parse(table.concat({
      "OPTIONS sip:bob@example.com SIP/2.0",
      "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKa",
      "Max-Forwards: 70",
      "Via: SIP/2.0/UDP b.example.com;branch=z9hG4bKb , SIP/2.0/UDP c.example.com;branch=z9hG4bKc",
      "To: <sip:bob@example.com>",
      "From: <sip:alice@example.com>;tag=1",
      "Call-ID: pop@example.com",
      "CSeq: 1 OPTIONS",
      "Content-Length: 0", "", ""}, "\r\n")))
    local function check(branch, nvias)
      assert.equal(branch, m.branch)
      assert.equal("70", m:header("Max-Forwards"))
      assert.equal("<sip:bob@example.com>", m:header("To"))
      assert.equal("<sip:alice@example.com>;tag=1", m:header("From"))
      assert.equal("1 OPTIONS", m:header("CSeq"))
      assert.equal(nvias, #m:vias())
    end
    check("z9hG4bKa", 3)
    assert.truthy(m:pop_via())
    check("z9hG4bKb", 2)
    assert.equal("b.example.com", m:vias()[1].host)
    assert.truthy(m:pop_via())
    check("z9hG4bKc", 1)
    assert.truthy(m:pop_via())
    check(nil, 0)
    assert.is_nil(m:pop_via())
    -- what prints is what the accessors said
    local text = tostring(m)
    assert.is_nil(text:find("Via", 1, true))
    assert.truthy(text:find("Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n", 1, true))
  end)
  it("decrements Max-Forwards, or adds 70", function()
    local m = assert(sip.parse(minimal))
    assert.equal(69, m:decrement_max_forwards())
    assert.equal(69, assert(sip.parse(tostring(m))).max_forwards)
    local old = assert(sip.parse(helper.read("rfc4475/valid/inv2543.sip")))
    assert.equal(70, old:decrement_max_forwards())
  end)
  it("changes the Request-URI", function()
    local m = assert(sip.parse(minimal))
    assert.truthy(m:set_uri("sip:bob@192.0.2.9:5080;transport=tcp"))
    local again = assert(sip.parse(tostring(m)))
    assert.equal("sip:bob@192.0.2.9:5080;transport=tcp", again.uri)
    assert.is_nil(m:set_uri("not a uri"))
  end)
  it("sets, adds and removes headers", function()
    local m = assert(sip.parse(minimal))
    m:add_header("Record-Route", "<sip:p1.example.com;lr>", true)
    m:add_header("Record-Route", "<sip:p2.example.com;lr>")
    m:set_header("Subject", "hi")
    m:set_header("Max-Forwards", "10")
    assert.equal(2, m:remove_header("X-Nothing") + 2)
    local again = assert(sip.parse(tostring(m)))
    assert.same({ "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>" }, again:headers("Record-Route"))
    assert.equal("hi", again:header("Subject"))
    assert.equal(10, again.max_forwards)
    assert.equal(2, m:remove_header("Record-Route"))
    assert.same({}, assert(sip.parse(tostring(m))):headers("Record-Route"))
  end)
  it("refuses bad values and keeps the message intact", function()
    local m = assert(sip.parse(minimal))
    local before = tostring(m)
    assert.is_nil(m:set_header("From", "<sip:broken"))
    assert.is_nil(m:set_header("CSeq", "x OPTIONS"))
    assert.is_nil(m:add_header("Subject", "line\r\nInjected: yes"))
    assert.is_nil(m:push_via("not a via"))
    assert.is_nil(m:add_header("Call-ID", "second"))
    assert.equal(before, tostring(m))
    assert.equal("a1", m.from_tag)
  end)
  it("keeps Content-Length right when the body changes", function()
    local m = assert(sip.parse(minimal))
    m:set_body("hello world", "text/plain")
    local s = tostring(m)
    assert.matches("Content%-Length: 11\r\n", s)
    local again = assert(sip.parse(s))
    assert.equal("hello world", again.body)
    assert.equal("text/plain", again.content_type)
  end)
  it("adds Content-Length when the message had none", function()
    local m = assert(sip.parse(helper.read("rfc4475/valid/inv2543.sip")))
    local again = assert(sip.parse(tostring(m), { stream = true }))
    assert.equal(#m.body, #again.body)
  end)
  it("updates tag shortcuts after edits", function()
    local m = assert(sip.parse(minimal))
    m:set_header("To", "<sip:bob@example.com>;tag=zz")
    assert.equal("zz", m.to_tag)
  end)
end)

describe("builders", function()
  it("sip.request fills RFC 3261 §8.1.1 defaults", function()
    local m = assert(sip.request { method = "MESSAGE", uri = "sip:bob@example.com",
      from = "sip:alice@example.com", body = "hi", content_type = "text/plain" })
    assert.equal("MESSAGE", m.method)
    assert.equal(70, m.max_forwards)
    assert.truthy(m.from_tag)
    assert.truthy(m.call_id)
    assert.equal(1, m.cseq)
    assert.matches("^z9hG4bK", m.branch)
    assert.equal("hi", m.body)
    assert.equal("<sip:bob@example.com>", m:header("To"))
  end)
  it("sip.request takes headers as pairs or a map", function()
    local m = assert(sip.request { method = "OPTIONS", uri = "sip:b@h",
      headers = { { "Accept", "application/sdp" }, Subject = "x", Route = { "<sip:r1;lr>", "<sip:r2;lr>" } } })
    assert.equal("application/sdp", m:header("Accept"))
    assert.equal("x", m:header("Subject"))
    assert.equal(2, #m:headers("Route"))
  end)
  it("msg:response copies Via, From, To, Call-ID, CSeq and adds a To tag", function()
    local req = assert(sip.parse(helper.read("rfc4475/valid/wsinv.sip")))
    local res = req:response(180)
    assert.equal(180, res.status)
    assert.equal("Ringing", res.reason)
    assert.equal(3, #res:vias())
    assert.equal(req.call_id, res.call_id)
    assert.equal(req.cseq, res.cseq)
    assert.equal(req.from_tag, res.from_tag)
    assert.equal("1918181833n", res.to_tag) -- request already had one
    local opt = assert(sip.parse(minimal))
    local r200 = opt:response(200)
    assert.truthy(r200.to_tag)
    assert.is_nil(opt:response(100).to_tag)
    assert.equal("", r200.body)
  end)
  it("msg:response takes a reason and a to-tag", function()
    local r = assert(sip.parse(minimal)):response(486, "Not Now", "t1")
    assert.equal("Not Now", r.reason)
    assert.equal("t1", r.to_tag)
  end)
  it("knows the standard reason phrases", function()
    local want = { [100] = "Trying", [180] = "Ringing", [200] = "OK", [202] = "Accepted",
      [401] = "Unauthorized", [407] = "Proxy Authentication Required", [408] = "Request Timeout",
      [416] = "Unsupported URI Scheme", [420] = "Bad Extension", [423] = "Interval Too Brief",
      [481] = "Call/Transaction Does Not Exist", [482] = "Loop Detected", [483] = "Too Many Hops",
      [487] = "Request Terminated", [488] = "Not Acceptable Here", [500] = "Server Internal Error",
      [503] = "Service Unavailable", [505] = "Version Not Supported", [603] = "Decline",
      [604] = "Does Not Exist Anywhere", [606] = "Not Acceptable" }
    for code, phrase in pairs(want) do
      assert.equal(phrase, sip.reason(code))
    end
  end)
  it("copies Record-Route into dialog-creating responses only", function()
    local inv = assert(sip.request { method = "INVITE", uri = "sip:b@h",
      headers = { ["Record-Route"] = "<sip:p.example.com;lr>" } })
    assert.equal(1, #inv:response(200):headers("Record-Route"))
    assert.equal(0, #inv:response(486):headers("Record-Route"))
  end)
end)

describe("bad input", function()
  it("returns nil and a reason, never raises", function()
    local cases = {
      "", "\r\n\r\n", "garbage", "INVITE", "INVITE sip:a@b SIP/2.0",
      "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
      "SIP/2.0 99 Low\r\n\r\n", "SIP/2.0 2000 OK\r\n\r\n",
      minimal:sub(1, 60), minimal:sub(1, #minimal - 4) .. "\r\n",
      ("\0"):rep(100), ("\255"):rep(1000),
    }
    for _, s in ipairs(cases) do
      local ok, m, err = pcall(sip.parse, s)
      assert.is_true(ok)
      assert.is_nil(m)
      assert.is_string(err)
    end
  end)
  it("never raises on any prefix of a valid message", function()
    local s = helper.read("rfc4475/valid/wsinv.sip")
    for i = 0, #s - 1 do
      local ok = pcall(sip.parse, s:sub(1, i))
      assert.is_true(ok)
    end
  end)
  it("reports a truncated body", function()
    local s = helper.read("flows/pager-1-message.sip")
    local m, err = sip.parse(s:sub(1, #s - 5))
    assert.is_nil(m)
    assert.equal("Content-Length larger than message", err)
  end)
  it("applies configurable limits", function()
    local m, err = sip.parse(minimal, { max_headers = 4 })
    assert.is_nil(m)
    assert.equal("too many headers", err)
    m, err = sip.parse(minimal, { max_size = 100 })
    assert.is_nil(m)
    assert.equal("message too large", err)
    m, err = sip.parse(minimal, { max_line = 40 })
    assert.is_nil(m)
    assert.equal("header line too long", err)
  end)
  it("requires Content-Length on streams", function()
    local m, err = sip.parse(helper.read("rfc4475/valid/inv2543.sip"), { stream = true })
    assert.is_nil(m)
    assert.equal("missing Content-Length", err)
  end)
end)
