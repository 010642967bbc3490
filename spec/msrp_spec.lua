-- spec/msrp_spec.lua: session-mode IM — MSRP frames (RFC 4975), reassembly, sessions set up
-- by INVITE between real endpoints and with a raw MSRP peer on a TCP socket, and the one IM
-- API over both models through `luasip serve` (the 1300-byte switch of RFC 3428 §9).
local sip = require "sip"
local helper = require "helper"
local cli = require "sip.cli"
local socket = require "socket"
local core = sip.core

local function run_until(cond, seconds, poll)
  return helper.run_until(cond, seconds, poll, 5)
end

-- Run fn in a coroutine and drive the loop until it returns: its results.
local function run(fn, seconds)
  local out
  sip.spawn(function() out = table.pack(fn()) end)
  assert(run_until(function() return out end, seconds or 10), "timed out")
  return table.unpack(out, 1, out.n)
end

local function ua()
  return assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" } })
end

local SEND = table.concat({
  "MSRP a786hjs2 SEND",
  "To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
  "From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
  "Message-ID: 87652491",
  "Success-Report: yes",
  "Failure-Report: partial",
  "Byte-Range: 1-25/25",
  "Content-Type: text/plain",
  "",
  "Hey Bob, are you there?\r\n",
  "-------a786hjs2$",
  "" }, "\r\n")

describe("MSRP frames", function()
  it("parses a SEND: paths, Message-ID, Byte-Range, reports, Content-Type, body, flag", function()
    local f, n = core.msrp_parse(SEND)
    assert.equal(#SEND, n)
    assert.equal("a786hjs2", f.tid)
    assert.equal("SEND", f.method)
    assert.equal("msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp", f.to_path)
    assert.equal("msrp://atlanta.example.com:7654/jshA7weztas;tcp", f.from_path)
    assert.equal("87652491", f.message_id)
    assert.equal("yes", f.success_report)
    assert.equal("partial", f.failure_report)
    assert.same({ 1, 25, 25 }, { f.range_start, f.range_end, f.range_total })
    assert.equal("text/plain", f.content_type)
    assert.equal("Hey Bob, are you there?\r\n", f.body)
    assert.equal("$", f.flag)
  end)

  it("prints what it parses, byte for byte", function()
    local f = core.msrp_parse(SEND)
    f.headers = nil
    assert.equal(SEND, core.msrp_build(f))
  end)

  it("takes each continuation flag: $ last, + more, # aborted", function()
    for _, flag in ipairs { "$", "+", "#" } do
      local f = core.msrp_parse((SEND:gsub("a786hjs2%$", "a786hjs2" .. flag)))
      assert.equal(flag, f.flag)
    end
    assert.is_nil(core.msrp_parse((SEND:gsub("a786hjs2%$", "a786hjs2!"))))
  end)

  it("prints and parses the responses of RFC 4975 §10", function()
    for _, code in ipairs { 200, 400, 403, 408, 413, 415, 423, 481, 501, 506 } do
      local text = assert(core.msrp_build { tid = "tx" .. code .. "ab", status = code,
        comment = sip.msrp.REASONS[code], to_path = "msrp://a.example:1/x;tcp",
        from_path = "msrp://b.example:2/y;tcp" })
      local f, n = core.msrp_parse(text)
      assert.equal(#text, n)
      assert.is_nil(f.method)
      assert.equal(code, f.status)
      assert.equal(sip.msrp.REASONS[code], f.comment)
      assert.equal("", f.body)
    end
  end)

  it("builds a REPORT with its Status header", function()
    local text = core.msrp_build { tid = "rep0rt01", method = "REPORT",
      to_path = "msrp://a:1/x;tcp", from_path = "msrp://b:2/y;tcp", message_id = "m1",
      range_start = 1, range_end = 10, range_total = 10, status_header = "000 200 OK" }
    local f = core.msrp_parse(text)
    assert.equal("REPORT", f.method)
    assert.equal("000 200 OK", f.status_header)
  end)

  it("waits for the rest of a frame cut anywhere, then takes it whole", function()
    for cut = 1, #SEND - 1 do
      local f, why = core.msrp_parse(SEND:sub(1, cut))
      assert.is_nil(f)
      assert.equal("incomplete", why)
    end
  end)

  it("finds the end-line only for its own transaction id", function()
    local body = "text\r\n-------other123$\r\nmore"
    local text = core.msrp_build { tid = "own12345", method = "SEND", to_path = "msrp://a:1/x;tcp",
      from_path = "msrp://b:2/y;tcp", message_id = "m", content_type = "text/plain", body = body }
    assert.equal(body, core.msrp_parse(text).body)
  end)

  it("refuses bad start lines, headers and byte ranges", function()
    local bad = {
      "MSRP ab SEND\r\n-------ab$\r\n",                              -- tid too short
      "HTTP/1.1 200 OK\r\n\r\n",
      "MSRP abcd send\r\n-------abcd$\r\n",                          -- method in lower case
      "MSRP abcd SEND\r\nNo colon here\r\n-------abcd$\r\n",
      "MSRP abcd SEND\r\nByte-Range: 0-5/10\r\n-------abcd$\r\n",    -- starts at 0
      "MSRP abcd SEND\r\nByte-Range: 5-3/10\r\n-------abcd$\r\n",    -- ends before it starts
      "MSRP abcd SEND\r\nByte-Range: 1-20/10\r\n-------abcd$\r\n",   -- past the total
      "MSRP abcd SEND\r\nByte-Range: 1-x/10\r\n-------abcd$\r\n",
    }
    for _, text in ipairs(bad) do
      local f, why = core.msrp_parse(text)
      assert.is_nil(f, text)
      assert.not_equal("incomplete", why, text)
    end
    local f = core.msrp_parse("MSRP abcd SEND\r\nByte-Range: 1-*/*\r\n-------abcd$\r\n")
    assert.same({ 1, -1, -1 }, { f.range_start, f.range_end, f.range_total })
  end)

  it("refuses a frame larger than the limit given", function()
    local text = core.msrp_build { tid = "big12345", method = "SEND", to_path = "msrp://a:1/x;tcp",
      from_path = "msrp://b:2/y;tcp", message_id = "m", content_type = "text/plain",
      body = string.rep("z", 5000) }
    assert.truthy(core.msrp_parse(text))
    local f, why = core.msrp_parse(text, 1024)
    assert.is_nil(f)
    assert.equal("frame too large", why)
  end)
end)

describe("MSRP reassembly", function()
  it("puts chunks back together in any order, overlaps included", function()
    local a = core.msrp_assembler(100)
    assert.equal("more", a:add(11, 15, 15, "KLMNO", "$"))
    assert.equal("more", a:add(1, 6, 15, "ABCDEF", "+"))
    assert.equal(6 + 5, a:received())
    assert.same({ "done", "ABCDEFGHIJKLMNO" }, { a:add(5, 10, 15, "EFGHIJ", "+") })
  end)

  it("takes a total of * until the last chunk says where the message ends", function()
    local a = core.msrp_assembler(100)
    assert.equal("more", a:add(1, 4, -1, "abcd", "+"))
    assert.same({ "done", "abcdefg" }, { a:add(5, -1, -1, "efg", "$") })
  end)

  it("answers 413 past the maximum size, announced or not", function()
    assert.same({ nil, 413 }, { core.msrp_assembler(10):add(1, 5, 11, "12345", "+") })
    local a = core.msrp_assembler(10)
    assert.equal("more", a:add(1, 8, -1, "12345678", "+"))
    assert.same({ nil, 413 }, { a:add(9, 12, -1, "9abc", "$") })
  end)

  it("answers 413 when a message is scattered over more ranges than allowed", function()
    local a = core.msrp_assembler(1000, 3)
    assert.equal("more", a:add(1, 1, 100, "a", "+"))
    assert.equal("more", a:add(10, 10, 100, "b", "+"))
    assert.equal("more", a:add(20, 20, 100, "c", "+"))
    assert.same({ nil, 413 }, { a:add(30, 30, 100, "d", "+") })
  end)

  it("answers 400 to a byte range the body or the message contradicts", function()
    assert.same({ nil, 400 }, { core.msrp_assembler(100):add(1, 3, 10, "abcdef", "+") })
    assert.same({ nil, 400 }, { core.msrp_assembler(100):add(1, 5, 10, "abcde", "$") })
    local a = core.msrp_assembler(100)
    assert.equal("more", a:add(1, 5, 10, "abcde", "+"))
    assert.same({ nil, 400 }, { a:add(6, 10, 12, "fghij", "$") })   -- the total changed
  end)

  it("gives up a message the sender aborted (#)", function()
    local a = core.msrp_assembler(100)
    assert.equal("more", a:add(1, 5, 10, "abcde", "+"))
    assert.equal("aborted", a:add(6, 10, 10, "fghij", "#"))
  end)
end)

describe("MSRP SDP", function()
  it("offers m=message with path, accept-types, setup and max-size", function()
    local text = tostring(sip.sdp.msrp { address = "127.0.0.1", port = 2855,
      path = "msrp://127.0.0.1:2855/abc;tcp", max_size = 4096,
      accept_wrapped_types = { "text/plain" } })
    assert.matches("m=message 2855 TCP/MSRP %*\r\n", text)
    local m = assert(sip.sdp.parse(text)):msrp()
    assert.same({ "msrp://127.0.0.1:2855/abc;tcp" }, m.path)
    assert.same({ "message/cpim", "text/plain" }, m.accept_types)
    assert.same({ "text/plain" }, m.accept_wrapped_types)
    assert.equal("actpass", m.setup)
    assert.equal(4096, m.max_size)
    assert.is_false(m.tls)
  end)

  it("reads TCP/TLS/MSRP and answers a=setup as RFC 6135 says", function()
    local text = tostring(sip.sdp.msrp { address = "127.0.0.1", port = 1, tls = true,
      path = "msrps://127.0.0.1:1/abc;tcp" })
    assert.is_true(sip.sdp.parse(text):msrp().tls)
    assert.equal("active", sip.sdp.msrp_setup("actpass"))
    assert.equal("active", sip.sdp.msrp_setup("passive"))
    assert.equal("active", sip.sdp.msrp_setup(nil))
    assert.equal("passive", sip.sdp.msrp_setup("active"))
  end)

  it("has random session ids in msrp://host:port/id;tcp URIs", function()
    local a, b = ua(), ua()
    local ids = {}
    b:on("chat", function(s) s:accept() end)
    for _ = 1, 2 do
      local s = assert(run(function() return a:chat(b:uri("bob")) end))
      local u = assert(sip.msrp.parse_uri(s.local_uri))
      assert.equal("127.0.0.1", u.host)
      assert.equal("tcp", u.transport)
      assert.matches("^%x+$", u.id)
      assert.is_true(#u.id >= 16)
      ids[#ids + 1] = u.id
      run(function() s:close() return true end)
    end
    assert.not_equal(ids[1], ids[2])
    a:close()
    b:close()
  end)
end)

describe("MSRP sessions between two endpoints", function()
  local alice, bob

  before_each(function()
    alice, bob = ua(), ua()
  end)
  after_each(function()
    alice:close()
    bob:close()
  end)

  -- bob answers every session; his sessions are kept in `got`
  local function bob_chats(opts)
    local got = {}
    bob:on("chat", function(s, req)
      got[#got + 1] = s
      s.opts_seen = opts
      assert(s:accept())
    end)
    bob.msrp_options = opts
    return got
  end

  it("sends both ways in one session, each message acknowledged", function()
    local got = bob_chats()
    local s, res = run(function() return alice:chat(bob:uri("bob")) end)
    assert.equal(200, res.status)
    assert.equal("open", s.state)
    assert.truthy(run_until(function() return got[1] and got[1].conn end))
    assert.same({ true }, { run(function() return s:send("hello bob") end) })
    local text, ct = run(function() return got[1]:receive() end)
    assert.equal("hello bob", text)
    assert.equal("text/plain;charset=UTF-8", ct)
    assert.is_true(run(function() return got[1]:send("{}", "application/json") end))
    local text2, ct2 = run(function() return s:receive() end)
    assert.same({ "{}", "application/json" }, { text2, ct2 })
    run(function() return s:close() end)
    assert.same({ nil, "closed" }, { run(function() return got[1]:receive() end) })
  end)

  it("chunks a 100 KB message and the peer presents it whole, once", function()
    local got = bob_chats()
    local s = run(function() return alice:chat(bob:uri("bob"), { chunk_size = 1000 }) end)
    local big = {}
    for i = 1, 100 * 1024 / 8 do
      big[i] = ("%07d\n"):format(i)
    end
    big = table.concat(big)
    assert.is_true(run(function() return s:send(big) end))
    local text, _, m = run(function() return got[1]:receive() end)
    assert.equal(#big, #text)
    assert.equal(big, text)
    assert.truthy(m.message_id)
    assert.same({ nil, "timeout" }, { run(function() return got[1]:receive(0.2) end) })
  end)

  it("waits for the Success-Report when asked for one", function()
    bob_chats()
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    assert.is_true(run(function() return s:send("report me", nil, { success_report = true }) end))
  end)

  it("gets 413 for a message past the peer's a=max-size", function()
    local got = bob_chats { max_size = 1000 }
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    assert.equal(1000, s.peer_max_size)
    local ok, why, code = run(function() return s:send(string.rep("x", 1001)) end)
    assert.is_nil(ok)
    assert.equal(413, code)
    assert.matches("^413", why)
    assert.is_true(run(function() return s:send(string.rep("x", 1000)) end))
    assert.equal(1000, #run(function() return got[1]:receive() end))
  end)

  it("gets 415 for a type outside the peer's accept-types", function()
    bob_chats { accept_types = { "text/plain", "message/cpim" } }
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    local ok, _, code = run(function() return s:send("{}", "application/json") end)
    assert.is_nil(ok)
    assert.equal(415, code)
    assert.is_true(run(function() return s:send("fine", "text/plain") end))
  end)

  it("carries message/cpim and parses it for the receiver", function()
    local got = bob_chats()
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    assert.is_true(run(function() return s:send("wrapped", "text/plain", { cpim = true }) end))
    local text, ct, m = run(function() return got[1]:receive() end)
    assert.equal("message/cpim", ct)
    assert.matches("wrapped$", text)
    assert.equal("wrapped", m.cpim.body)
  end)

  it("takes a session the chat handler keeps without a word", function()
    local kept
    bob:on("chat", function(sess) kept = sess end)
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    assert.truthy(s)
    assert.is_true(run(function() return s:send("to a quiet handler") end))
    assert.equal("to a quiet handler", run(function() return kept:receive(1) end))
  end)

  it("lets the chat handler refuse a session", function()
    bob:on("chat", function(s) s:refuse(486) end)
    local s, res = run(function() return alice:chat(bob:uri("bob")) end)
    assert.is_nil(s)
    assert.equal(486, res.status)
  end)

  it("answers 488 to an INVITE whose MSRP offer it cannot take", function()
    bob:on("chat", function(s) s:accept() end)
    local offer = tostring(sip.sdp.msrp { address = "127.0.0.1", port = 1, tls = true,
      path = "msrps://127.0.0.1:1/abc;tcp" })
    local call, res = run(function() return alice:call(bob:uri("bob"), { sdp = offer }) end)
    assert.is_nil(call)
    assert.equal(488, res.status)
  end)

  it("hangs up when the active side never connects", function()
    bob.msrp_options = { timeout = 0.5 }
    local result
    bob:on("chat", function(s) result = table.pack(s:accept()) end)
    local offer = tostring(sip.sdp.msrp { address = "127.0.0.1", port = 9,
      path = "msrp://127.0.0.1:9/silentpeer;tcp", setup = "active" })
    local call = run(function() return alice:call(bob:uri("bob"), { sdp = offer }) end)
    assert.equal("passive", sip.sdp.parse(call.remote_sdp):msrp().setup)
    assert.equal("remote bye", run(function() return call:wait() end, 5))
    assert.truthy(run_until(function() return result end, 3))
    assert.is_nil(result[1])
    assert.matches("no MSRP connection", result[2])
  end)

  it("ends the session on either side's BYE", function()
    local got = bob_chats()
    local s = run(function() return alice:chat(bob:uri("bob")) end)
    assert.truthy(run_until(function() return got[1] and got[1].conn end))
    run(function() got[1]:close() return true end)
    assert.truthy(run_until(function() return s.closed end))
    assert.same({ nil, "session closed" }, { run(function() return s:send("late") end) })
  end)

  describe("the MESSAGE handler over both models", function()
    it("gets pager and session messages alike, and answers each in its model", function()
      local seen = {}
      bob:on("MESSAGE", function(req)
        seen[#seen + 1] = req
        req:reply(200)
        req:respond("re: " .. #req.body)
      end)
      local back = {}
      alice:on("MESSAGE", function(req)
        back[#back + 1] = req
        req:reply(200)
      end)
      local res = run(function() return alice:message(bob:uri("bob"), "short") end)
      assert.equal(200, res.status)
      assert.truthy(run_until(function() return #back == 1 end))
      assert.is_nil(seen[1].session)
      assert.equal("re: 5", back[1].body)
      -- a session message: the reply goes in the same session when it is still open
      local s = run(function() return alice:chat(bob:uri("bob")) end)
      assert.is_true(run(function() return s:send(string.rep("s", 2000)) end))
      assert.equal("re: 2000", run(function() return s:receive(5) end))
      assert.truthy(seen[2].session)
      assert.equal("MESSAGE", seen[2].method)
      assert.equal(alice:uri("luasip"), seen[2]:addr("From").uri)
      run(function() return s:close() end)
    end)
  end)
end)

describe("MSRP over TLS (TCP/TLS/MSRP)", function()
  local dir, alice, bob

  -- a self-signed certificate for 127.0.0.1 (its own CA), made with the openssl command
  local function cert(name)
    local c, k = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. "-key.pem"
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
      "-nodes -keyout %s -out %s -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 " ..
      ">/dev/null 2>&1"):format(k, c)))
    return c, k
  end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    alice, bob = ua(), ua()
  end)
  after_each(function()
    alice:close()
    bob:close()
    os.execute("rm -rf " .. dir)
  end)

  it("offers msrps: paths and carries 100 KB both ways over verified TLS", function()
    local c, k = cert("both")
    alice.msrp_tls = { cert = c, key = k, ca = c }
    bob.msrp_tls = { cert = c, key = k, ca = c }
    local got = {}
    bob:on("chat", function(sess)
      got[#got + 1] = sess
      assert(sess:accept())
    end)
    local s, res = run(function() return alice:chat(bob:uri("bob"), { tls = true }) end)
    assert.truthy(s, tostring(res))
    assert.matches("^msrps://127%.0%.0%.1:%d+/%x+;tcp$", s.local_uri)
    assert.matches("m=message %d+ TCP/TLS/MSRP %*", s.dialog.remote_sdp)
    local answer = sip.sdp.parse(s.dialog.remote_sdp):msrp()
    assert.is_true(answer.tls)
    assert.equal("active", answer.setup)
    local big = string.rep("tls!", 25600)
    assert.is_true(run(function() return s:send(big) end))
    assert.equal(big, run(function() return got[1]:receive(5) end))
    assert.is_true(run(function() return got[1]:send(big:upper()) end))
    assert.equal(big:upper(), run(function() return s:receive(5) end))
    run(function() return s:close() end)
  end)

  it("takes no connection whose certificate it cannot verify, and hangs up", function()
    local c1, k1 = cert("alice")
    local c2 = cert("other")
    alice.msrp_tls = { cert = c1, key = k1 }
    bob.msrp_tls = { cert = c1, key = k1, ca = c2 }   -- trusts another certificate only
    local result
    bob:on("chat", function(sess) result = table.pack(sess:accept()) end)
    local s, err = run(function()
      return alice:chat(bob:uri("bob"), { tls = true, bind_timeout = 5 })
    end, 10)
    assert.is_nil(s)
    assert.truthy(err)
    assert.truthy(run_until(function() return result end, 5))
    assert.is_nil(result[1])
  end)

  it("answers 488 to a TLS offer without ep.msrp_tls", function()
    bob:on("chat", function(sess) sess:accept() end)
    local c, k = cert("a")
    alice.msrp_tls = { cert = c, key = k, ca = c }
    local s, res = run(function() return alice:chat(bob:uri("bob"), { tls = true }) end)
    assert.is_nil(s)
    assert.equal(488, res.status)
  end)
end)

-- A raw MSRP peer: a TCP listener the spec reads and writes frame by frame.
local function raw_peer()
  local lsock = assert(socket.bind("127.0.0.1", 0))
  lsock:settimeout(0)
  local _, port = lsock:getsockname()
  local p = { port = port, buf = "", frames = {},
    path = "msrp://127.0.0.1:" .. port .. "/rawsess01;tcp" }
  function p.poll()
    if not p.c and not p.closed then
      local c = lsock:accept()
      if c then
        c:settimeout(0)
        p.c = c
      end
    end
    if p.c then
      local data, err, part = p.c:receive(65536)
      local got = data or part
      if got and #got > 0 then
        p.buf = p.buf .. got
      end
      if err == "closed" then
        p.c, p.eof = nil, true
      end
      while true do
        local f, n = core.msrp_parse(p.buf)
        if not f then
          break
        end
        p.frames[#p.frames + 1] = f
        p.buf = p.buf:sub(n + 1)
      end
    end
  end
  function p.send(t)
    assert(p.c:send(type(t) == "string" and t or assert(core.msrp_build(t))))
  end
  function p.last(pred)
    for i = #p.frames, 1, -1 do
      if pred(p.frames[i]) then
        return p.frames[i]
      end
    end
  end
  function p.close()
    if p.c then
      p.c:close()
      p.c = nil
    end
    p.closed = true
    lsock:close()
  end
  return p
end

describe("MSRP against a raw peer", function()
  local alice, bob, peer, s

  -- alice offers a=setup:passive with the raw peer's path; bob answers active, connects to
  -- the peer and sends the empty SEND that binds the connection
  before_each(function()
    alice, bob = ua(), ua()
    peer = raw_peer()
    bob.msrp_options = { txn_timeout = 1, idle_timeout = 1, max_size = 5000 }
    bob:on("chat", function(sess) s = sess; sess:accept() end)
    local offer = tostring(sip.sdp.msrp { address = "127.0.0.1", port = peer.port,
      path = peer.path, setup = "passive" })
    local call
    sip.spawn(function() call = alice:call(bob:uri("bob"), { sdp = offer }) end)
    assert.truthy(run_until(function() return call and #peer.frames >= 1 end, 5, peer.poll))
    local bind = peer.frames[1]
    assert.equal("SEND", bind.method)
    assert.equal("", bind.body)
    assert.equal(peer.path, bind.to_path)
    assert.equal(s.local_uri, bind.from_path)
    assert.same({ 1, 0, 0 }, { bind.range_start, bind.range_end, bind.range_total })
    local answer = sip.sdp.parse(call.remote_sdp):msrp()
    assert.equal("active", answer.setup)
    assert.same({ s.local_uri }, answer.path)
    assert.equal(5000, answer.max_size)
  end)
  after_each(function()
    peer.close()
    alice:close()
    bob:close()
  end)

  local n = 0
  local function send(t)
    n = n + 1
    local f = { tid = t.tid or ("rawtx" .. n .. "zz"), method = t.method or "SEND",
      to_path = t.to_path or s.local_uri, from_path = peer.path, message_id = t.message_id or "mid1",
      range_start = t.range_start, range_end = t.range_end, range_total = t.range_total,
      content_type = t.content_type or "text/plain", body = t.body, flag = t.flag,
      failure_report = t.failure_report, success_report = t.success_report }
    peer.send(f)
    return f.tid
  end
  local function response(tid)
    local r
    run_until(function()
      r = peer.last(function(f) return f.tid == tid and f.status end)
      return r
    end, 3, peer.poll)
    return r
  end

  it("answers each chunk 200 and presents the message once it is whole", function()
    local t1 = send { range_start = 1, range_end = 5, range_total = 10, body = "hello", flag = "+" }
    assert.equal(200, response(t1).status)
    assert.equal(peer.path, response(t1).to_path)
    assert.equal(s.local_uri, response(t1).from_path)
    assert.same({ nil, "timeout" }, { run(function() return s:receive(0.1) end) })
    local t2 = send { range_start = 6, range_end = 10, range_total = 10, body = "world" }
    assert.equal(200, response(t2).status)
    assert.equal("helloworld", run(function() return s:receive(1) end))
  end)

  it("sends the Success-Report REPORT for a message that asked for it", function()
    send { range_start = 1, range_end = 2, range_total = 2, body = "ok", success_report = "yes",
      message_id = "rep1" }
    local rep
    run_until(function()
      rep = peer.last(function(f) return f.method == "REPORT" end)
      return rep
    end, 3, peer.poll)
    assert.equal("rep1", rep.message_id)
    assert.equal("000 200 OK", rep.status_header)
    assert.same({ 1, 2, 2 }, { rep.range_start, rep.range_end, rep.range_total })
  end)

  it("answers 413 past its a=max-size", function()
    local tid = send { range_start = 1, range_end = 10, range_total = 6000, body = "0123456789", flag = "+" }
    assert.equal(413, response(tid).status)
    assert.equal("Message Too Large", response(tid).comment)
  end)

  it("answers 413 to more messages in reassembly at once than it holds", function()
    for i = 1, sip.msrp.MAX_PARTIAL do
      local tid = send { range_start = 1, range_end = 1, range_total = 2, body = "a", flag = "+",
        message_id = "many" .. i }
      assert.equal(200, response(tid).status)
    end
    local tid = send { range_start = 1, range_end = 1, range_total = 2, body = "a", flag = "+",
      message_id = "one-too-many" }
    assert.equal(413, response(tid).status)
    -- the ones held still complete
    tid = send { range_start = 2, range_end = 2, range_total = 2, body = "b", message_id = "many1" }
    assert.equal(200, response(tid).status)
    assert.equal("ab", run(function() return s:receive(1) end))
  end)

  it("answers 413 to a message once the unread ones reach the inbox limit", function()
    local saved = sip.msrp.MAX_INBOX
    sip.msrp.MAX_INBOX = 2
    finally(function() sip.msrp.MAX_INBOX = saved end)
    local codes = {}
    for i = 1, 3 do
      local tid = send { range_start = 1, range_end = 1, range_total = 1, body = tostring(i),
        message_id = "inbox" .. i }
      codes[i] = response(tid).status
    end
    assert.same({ 200, 200, 413 }, codes)
    assert.equal("1", run(function() return s:receive(1) end))
    local tid = send { range_start = 1, range_end = 1, range_total = 1, body = "4",
      message_id = "inbox4" }
    assert.equal(200, response(tid).status)
  end)

  it("answers 400 to a chunk whose body contradicts its byte range", function()
    local tid = send { range_start = 1, range_end = 3, range_total = 10, body = "toolong", flag = "+" }
    assert.equal(400, response(tid).status)
  end)

  it("answers 481 to a SEND for a session it does not have", function()
    local tid = send { to_path = "msrp://127.0.0.1:1/nosuchsession;tcp", body = "x",
      range_start = 1, range_end = 1, range_total = 1 }
    assert.equal(481, response(tid).status)
  end)

  it("answers 501 to a method it does not know", function()
    local tid = send { method = "FROB", body = "x", range_start = 1, range_end = 1, range_total = 1 }
    assert.equal(501, response(tid).status)
  end)

  it("sends no 200 when Failure-Report is no or partial", function()
    local t1 = send { body = "a", range_start = 1, range_end = 1, range_total = 1,
      failure_report = "no", message_id = "m-no" }
    local t2 = send { body = "b", range_start = 1, range_end = 1, range_total = 1,
      failure_report = "partial", message_id = "m-partial" }
    local t3 = send { body = "c", range_start = 1, range_end = 1, range_total = 1,
      message_id = "m-yes" }
    assert.equal(200, response(t3).status)
    assert.is_nil(peer.last(function(f) return f.tid == t1 or f.tid == t2 end))
    assert.equal("a", run(function() return s:receive(1) end))
    assert.equal("b", run(function() return s:receive(1) end))
  end)

  it("fails a send with 408 when the peer stays silent", function()
    local ok, why, code = run(function() return s:send("anyone there?") end, 5)
    assert.is_nil(ok)
    assert.equal(408, code)
    assert.matches("408", why)
    assert.truthy(run_until(function()
      return peer.last(function(f) return f.body == "anyone there?" end)
    end, 2, peer.poll))
  end)

  it("drops a message whose chunks stop coming, never presenting a part", function()
    send { range_start = 1, range_end = 5, range_total = 10, body = "hello", flag = "+" }
    assert.same({ nil, "timeout" }, { run(function() return s:receive(1.5) end, 5) })
    assert.equal(1, s.dropped)
  end)

  it("fails pending sends and drops a message half received when the connection closes", function()
    send { range_start = 1, range_end = 5, range_total = 10, body = "hello", flag = "+" }
    run_until(function() return false end, 0.2, peer.poll)
    local result
    sip.spawn(function() result = table.pack(s:send("never acknowledged")) end)
    run_until(function() return peer.last(function(f) return f.body == "never acknowledged" end) end,
      2, peer.poll)
    peer.close()
    assert.truthy(run_until(function() return result end, 3))
    assert.is_nil(result[1])
    assert.equal(408, result[3])
    assert.matches("connection closed", result[2])
    assert.equal(1, s.dropped)
    assert.same({ nil, "closed" }, { run(function() return s:receive(1) end) })
    assert.truthy(run_until(function() return s.dialog.state == "terminated" end, 3))
  end)

  it("closes a connection that sends a bad frame", function()
    peer.send("MSRP x SEND\r\n\r\n")
    assert.truthy(run_until(function() return peer.eof end, 3, peer.poll))
    assert.truthy(run_until(function() return s.closed end, 3))
  end)
end)

describe("session-mode IM through luasip serve", function()
  local USERS = { alice = { password = "alice-pw" }, bob = { password = "bob-pw" } }
  local srv, proxy, alice, bob, logged

  local function register(ep, user)
    local reg = ep:register { registrar = "sip:" .. proxy, aor = "sip:" .. user .. "@localhost",
      user = user, password = USERS[user].password, contact = ep:uri(user), expires = 300 }
    assert.equal("registered", run(function() return reg:wait() end))
  end

  local function as(user, extra)
    local o = { target = "sip:" .. proxy, from = "sip:" .. user .. "@localhost", user = user,
      password = USERS[user].password }
    for k, v in pairs(extra or {}) do
      o[k] = v
    end
    return o
  end

  before_each(function()
    logged = {}
    srv = assert(cli.server { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" },
      domain = "localhost", users = USERS,
      log = function(fmt, ...) logged[#logged + 1] = fmt:format(...) end })
    proxy = srv.ep:address("udp")
    alice, bob = ua(), ua()
    register(alice, "alice")
    register(bob, "bob")
  end)
  after_each(function()
    -- from the main thread: ep:close() inside a coroutine resumed by a response would free
    -- the transaction that is delivering it (a core issue, see the report of issue 21)
    alice:close()
    bob:close()
    srv.stop()
  end)

  it("exchanges 100 KB and 1 MB messages in a session both ways", function()
    local got = {}
    bob:on("chat", function(s)
      got[#got + 1] = s
      s:accept()
    end)
    local s, res = run(function() return alice:chat("sip:bob@localhost", as("alice")) end)
    assert.truthy(s, tostring(res))
    assert.equal(200, res.status)
    assert.truthy(res:header("Record-Route"))   -- the INVITE went through serve
    for _, size in ipairs { 100 * 1024, 1024 * 1024 } do
      local text = {}
      for i = 1, size // 16 do
        text[i] = ("%015d\n"):format(i * 7)
      end
      text = table.concat(text)
      assert.is_true(run(function() return s:send(text) end, 30))
      local got_text = run(function() return got[1]:receive(10) end, 30)
      assert.equal(size, #got_text)
      assert.equal(text, got_text)
      local back = text:reverse()
      assert.is_true(run(function() return got[1]:send(back) end, 30))
      assert.equal(back, run(function() return s:receive(10) end, 30))
    end
    run(function() return s:close() end)
    assert.truthy(run_until(function() return got[1].closed end, 3))
  end)

  it("sends 1300 bytes as a MESSAGE and 1301 as a session", function()
    local seen = {}
    bob:on("MESSAGE", function(req)
      seen[#seen + 1] = req
      req:reply(200)
    end)
    local res = run(function()
      return alice:message("sip:bob@localhost", string.rep("a", 1300), as("alice"))
    end)
    assert.equal(200, res.status)
    assert.equal("MESSAGE", res.cseq_method)
    assert.truthy(run_until(function() return #seen == 1 end))
    assert.is_nil(seen[1].session)
    assert.equal(1300, #seen[1].body)
    res = run(function()
      return alice:message("sip:bob@localhost", string.rep("b", 1301), as("alice"))
    end)
    assert.equal(200, res.status)
    assert.equal("INVITE", res.cseq_method)
    assert.truthy(run_until(function() return #seen == 2 end))
    assert.truthy(seen[2].session)
    assert.equal(string.rep("b", 1301), seen[2].body)
    -- message/cpim in both models
    for i, size in ipairs { 10, 1400 } do
      res = run(function()
        return alice:message("sip:bob@localhost", string.rep("w", size), as("alice", { cpim = true }))
      end)
      assert.equal(200, res.status)
      assert.truthy(run_until(function() return #seen == 2 + i end))
      local m = seen[2 + i]
      assert.equal("message/cpim", m.content_type)
      local c = assert(sip.cpim.parse(m.body))
      assert.equal(string.rep("w", size), c.body)
      assert.equal("sip:alice@localhost", c.from_uri)
      assert.equal(size > 1300, m.session ~= nil)
    end
    seen[3], seen[4] = nil, nil
    -- and the mode can be forced either way
    res = run(function()
      return alice:message("sip:bob@localhost", "tiny", as("alice", { mode = "session" }))
    end)
    assert.equal("INVITE", res.cseq_method)
    res = run(function()
      return alice:message("sip:bob@localhost", string.rep("c", 2000), as("alice", { mode = "pager" }))
    end)
    assert.equal("MESSAGE", res.cseq_method)
    assert.truthy(run_until(function() return #seen == 4 end))
  end)

  it("has the echo bot answer session messages in the same session", function()
    local s = run(function() return alice:chat("sip:echo@localhost", as("alice")) end)
    assert.truthy(s)
    for _, text in ipairs { "ping", string.rep("long ", 1000) } do
      assert.is_true(run(function() return s:send(text) end))
      assert.equal(text, run(function() return s:receive(5) end))
    end
    run(function() return s:close() end)
  end)

  it("sends a long text in a session from `luasip message`", function()
    local code
    local text = string.rep("cli ", 500)
    local quiet = _G.print
    _G.print = function() end   -- the command prints its result line
    finally(function() _G.print = quiet end)
    -- as the command runs: from the main thread, its waits stepping the one loop that
    -- serves the in-process server too
    code = cli.main { "message", "sip:echo@localhost", text, "--proxy", "sip:" .. proxy,
      "--from", "sip:alice@localhost", "--user", "alice", "--password", "alice-pw" }
    assert.equal(0, code)
    assert.truthy(run_until(function()
      for _, l in ipairs(logged) do
        if l:find("(session): 2000 bytes", 1, true) then
          return true
        end
      end
    end, 3))
  end)
end)

-- The wire as Wireshark reads it: a capture on loopback while two endpoints talk, decoded by
-- tshark's MSRP dissector.
describe("MSRP on the wire (tshark)", function()
  local have = os.execute("command -v tshark >/dev/null 2>&1 && command -v dumpcap >/dev/null 2>&1")
  local function exists(path)
    local f = io.open(path)
    if f then
      f:close()
    end
    return f ~= nil
  end

  it("decodes every SEND chunk and its 200 as MSRP", function()
    if not have then
      return pending("tshark (and its dumpcap) is not installed")
    end
    local alice, bob = ua(), ua()
    bob:on("chat", function(s)
      s:accept()
      while true do
        local text = s:receive()
        if not text then
          break
        end
        s:send("got " .. #text)
      end
    end)
    local _, mport = sip.msrp.address(alice)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local pcap, errf = dir .. "/msrp.pcap", dir .. "/tshark.err"
    -- dumpcap itself (tshark's capture child): it writes its file out on SIGINT
    local p = io.popen(("echo $$; exec dumpcap -i lo -f 'tcp port %d' -w %s 2>%s"):format(
      mport, pcap, errf))
    local pid = assert(tonumber(p:read("l")))
    local stopped = false
    local function stop()
      if not stopped then
        stopped = true
        os.execute("kill -INT " .. pid .. " 2>/dev/null")
        p:close()
      end
    end
    finally(function()
      stop()
      os.execute("rm -rf " .. dir)
      alice:close()
      bob:close()
    end)
    assert.truthy(run_until(function()
      local f = io.open(errf)
      local text = f and f:read("a") or ""
      if f then
        f:close()
      end
      return text:find("Capturing on", 1, true)
    end, 10))
    -- dumpcap says so a moment before packets really come in
    helper.run_for(1)
    local s = assert(run(function() return alice:chat(bob:uri("bob")) end))
    local text = string.rep("w", 3000)
    assert.is_true(run(function() return s:send(text) end))
    assert.equal("got 3000", run(function() return s:receive(5) end))
    run(function() return s:close() end)
    helper.run_for(0.3)
    stop()
    assert.truthy(exists(pcap))
    local out = io.popen(("tshark -r %s -d tcp.port==%d,msrp -T fields -E separator=/s " ..
      "-e msrp.transaction.id -e msrp.method -e msrp.status.code -e msrp.byte.range " ..
      "-e msrp.cnt.flg -e msrp.messageid -e _ws.malformed 2>/dev/null"):format(pcap, mport))
    local rows = {}
    for line in out:lines() do
      if line:match("%S") then
        rows[#rows + 1] = line
      end
    end
    out:close()
    local sends, oks, malformed = {}, {}, 0
    for _, line in ipairs(rows) do
      local f = {}
      for w in (line .. " "):gmatch("(.-) ") do
        f[#f + 1] = w
      end
      local tid, method, status, range, flag, _, bad = table.unpack(f)
      tid = tid:match("^[^,]*")   -- the start line's and the end-line's
      if bad and bad ~= "" then
        malformed = malformed + 1
      end
      if method == "SEND" and range ~= "" then
        sends[range] = flag
      end
      if status == "200" then
        oks[tid] = true
      end
    end
    -- the dissector decodes the first MSRP frame of each TCP segment only, and frames
    -- written back to back may share one: the first bytes of each side are sure to be seen
    assert.equal(0, malformed)
    assert.equal("$", sends["1-0/0"])          -- the empty SEND that bound the connection
    assert.equal("+", sends["1-2048/3000"])    -- the first chunk of 3000 bytes
    for range, flag in pairs(sends) do
      local a, b, total = range:match("^(%d+)%-(%d+)/(%d+)$")
      assert.truthy(a, range)
      assert.equal(tonumber(b) == tonumber(total) and "$" or "+", flag)
    end
    assert.truthy(next(oks))
  end)
end)

-- A real relay in the path: Kamailio's msrp module (RFC 4976), its config written here, the
-- process started and stopped by its PID. Each endpoint AUTHs to it (digest) and puts its
-- Use-Path in a=path; every frame goes endpoint -> relay -> relay -> endpoint.
describe("MSRP through Kamailio's msrp relay (RFC 4976)", function()
  local MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
  local have = os.execute("command -v kamailio >/dev/null 2>&1") and
    io.open(MODULES .. "msrp.so") ~= nil
  local CFG = [[
#!KAMAILIO
debug=1
log_stderror=yes
children=2
auto_aliases=no
tcp_accept_no_cl=yes
listen=tcp:127.0.0.1:PORT
mpath="MODULES"
loadmodule "sl.so"
loadmodule "kex.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "msrp.so"
modparam("auth", "nonce_count", 1)
modparam("auth", "qop", "auth")
modparam("msrp", "cmap_size", 8)
modparam("msrp", "use_path_addr", "127.0.0.1:PORT")
request_route {
	sl_send_reply("403", "No SIP Here");
	exit;
}
reply_route {
	drop;
}
event_route[msrp:frame-in] {
	msrp_reply_flags("1");
	if (msrp_is_reply()) {
		msrp_relay();
	} else if ($msrp(method) == "AUTH") {
		if ($msrp(nexthops) > 0) {
			msrp_relay();
			exit;
		}
		if (!pv_www_authenticate("luasip", "relay-pw", "0", "$msrp(method)")) {
			if (auth_get_www_authenticate("luasip", "1", "$var(wauth)")) {
				msrp_reply("401", "Unauthorized", "$var(wauth)");
			} else {
				msrp_reply("500", "Server Error");
			}
			exit;
		}
		msrp_cmap_save();
	} else if ($msrp(method) == "SEND" || $msrp(method) == "REPORT") {
		if ($msrp(nexthops) > 1) {
			if ($msrp(method) != "REPORT") {
				msrp_reply("200", "OK");
			}
			msrp_relay();
			exit;
		}
		if (msrp_cmap_lookup()) {
			if ($msrp(method) != "REPORT") {
				msrp_reply("200", "OK");
			}
			msrp_relay_flags("1");
			msrp_relay();
		} else {
			msrp_reply("481", "Session-does-not-exist");
		}
	} else {
		msrp_reply("501", "Request-method-not-understood");
	}
}
]]

  local dir, pid, proc, port, alice, bob

  local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, p = s:getsockname()
    s:close()
    return p
  end

  local function listening()
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    return ok
  end

  before_each(function()
    if not have then
      return
    end
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    port = free_port()
    local f = assert(io.open(dir .. "/kamailio.cfg", "w"))
    f:write((CFG:gsub("PORT", tostring(port)):gsub("MODULES", MODULES)))
    f:close()
    proc = io.popen(("echo $$; exec kamailio -DD -E -f %s/kamailio.cfg -Y %s -w %s -m 32 -M 8 " ..
      ">%s/kamailio.log 2>&1"):format(dir, dir, dir, dir))
    pid = assert(tonumber(proc:read("l")))
    assert.truthy(run_until(listening, 10), "kamailio did not start")
    alice, bob = ua(), ua()
  end)

  after_each(function()
    if not have then
      return
    end
    alice:close()
    bob:close()
    os.execute("kill " .. pid)
    proc:close()   -- waits for it to exit
    os.execute("rm -rf " .. dir)
  end)

  local function relay(user, password)
    return { uri = "msrp://127.0.0.1:" .. port .. ";tcp", user = user, password = password or "relay-pw" }
  end

  it("refuses a session whose relay AUTH fails", function()
    if not have then
      return pending("kamailio with its msrp module is not installed")
    end
    bob:on("chat", function(s) s:accept() end)
    local s, err = run(function() return alice:chat(bob:uri("bob"), { relay = relay("alice", "wrong") }) end)
    assert.is_nil(s)
    assert.matches("^relay AUTH: 401", err)
  end)

  it("carries messages both ways with both endpoints behind the relay", function()
    if not have then
      return pending("kamailio with its msrp module is not installed")
    end
    bob.msrp_options = { relay = relay("bob") }
    local got = {}
    bob:on("chat", function(s)
      got[#got + 1] = s
      assert(s:accept())
    end)
    local s, res = run(function() return alice:chat(bob:uri("bob"), { relay = relay("alice") }) end)
    assert.truthy(s, tostring(res))
    local rp = "^msrp://127%.0%.0%.1:" .. port .. "/[^;]+;tcp$"
    assert.matches(rp, s.relay_path[1])
    -- our offer's path: the relay's Use-Path, then our own URI; the answer's likewise
    assert.equal(s.relay_path[1] .. " " .. s.local_uri, s:_path())
    local answer = assert(sip.sdp.parse(s.dialog.remote_sdp)):msrp()
    assert.equal(2, #answer.path)
    assert.matches(rp, answer.path[1])
    assert.equal(got[1].local_uri, answer.path[2])
    -- what alice sends: her relay, then bob's path (his relay, him)
    assert.equal(table.concat({ s.relay_path[1], answer.path[1], answer.path[2] }, " "), s.to_path)
    local big = string.rep("relayed ", 100 * 1024 / 8)
    for _, text in ipairs { "hello through kamailio", big } do
      assert.is_true(run(function() return s:send(text) end, 15))
      assert.equal(text, run(function() return got[1]:receive(5) end, 15))
      assert.is_true(run(function() return got[1]:send("re: " .. #text) end, 15))
      assert.equal("re: " .. #text, run(function() return s:receive(5) end, 15))
    end
    run(function() return s:close() end)
    assert.truthy(run_until(function() return got[1].closed end, 3))
  end)
end)
