-- spec/registrar_spec.lua: REGISTER processing (RFC 3261 §10.3) through a real endpoint.
local sip = require "sip"
local helper = require "helper"

describe("registrar", function()
  local server, client, reg, clock
  before_each(function()
    clock = 1000
    reg = sip.registrar.new { min_expires = 60, max_expires = 7200, clock = function() return clock end }
    server = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
    server:on("REGISTER", function(req) reg:handle(req) end)
    client = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  after_each(function()
    server:close()
    client:close()
  end)

  local call_id = "reg-" .. sip.random.hex(8)
  local cseq = 0
  local function register(contacts, expires, opts)
    opts = opts or {}
    cseq = cseq + 1
    local headers = {}
    for _, c in ipairs(contacts or {}) do
      headers[#headers + 1] = { "Contact", c }
    end
    if expires then
      headers[#headers + 1] = { "Expires", tostring(expires) }
    end
    local req = assert(sip.request { method = "REGISTER", uri = server:uri(),
      from = opts.aor or "sip:alice@example.com", to = opts.aor or "sip:alice@example.com",
      call_id = opts.call_id or call_id, cseq = opts.cseq or cseq, headers = headers })
    return assert(client:request(req))
  end

  it("knows its contacts at once after each REGISTER, reading the whole store seldom", function()
    local store = sip.store.timed(sip.store.memory())
    reg = sip.registrar.new { min_expires = 60, max_expires = 7200, store = store,
      clock = function() return clock end }
    assert.is_false(reg:holds_contact("sip:alice@192.0.2.1:5070"))
    local reads = store.latency.all.count
    for i = 1, 20 do
      -- a binding changes, then a stray in-dialog request asks (the policy does)
      assert.equal(200, register({ "<sip:u" .. i .. "@192.0.2.1:5070>" }, 120,
        { aor = "sip:u" .. i .. "@example.com" }).status)
      assert.is_true(reg:holds_contact("sip:u" .. i .. "@192.0.2.1:5070"))
      assert.is_true(reg:holds_contact("sip:u1@192.0.2.1:5070"))
    end
    -- its index was made once, then kept by the registrar's own writes
    assert.equal(reads, store.latency.all.count)
    -- unregistered: gone at once; another AOR with the same contact keeps it held
    assert.equal(200, register({ "<sip:u2@192.0.2.1:5070>" }, 120,
      { aor = "sip:other@example.com" }).status)
    assert.equal(200, register({ "<sip:u2@192.0.2.1:5070>" }, 0,
      { aor = "sip:u2@example.com" }).status)
    assert.is_true(reg:holds_contact("sip:u2@192.0.2.1:5070"))
    assert.equal(200, register({ "*" }, 0, { aor = "sip:other@example.com" }).status)
    assert.is_false(reg:holds_contact("sip:u2@192.0.2.1:5070"))
    -- expired: no longer held, without a new read
    clock = clock + 121
    assert.is_false(reg:holds_contact("sip:u3@192.0.2.1:5070"))
    assert.equal(reads, store.latency.all.count)
    -- a binding written behind its back (another process) counts once the index is made again
    store:put("sip:x@example.com", { uri = "sip:x@192.0.2.9", key = "sip:x@192.0.2.9", q = 1,
      expires_at = clock + 3600, call_id = "c", cseq = 1, updated = clock })
    assert.is_false(reg:holds_contact("sip:x@192.0.2.9"))
    clock = clock + 600
    assert.is_true(reg:holds_contact("sip:x@192.0.2.9"))
    assert.equal(reads + 1, store.latency.all.count)
  end)

  it("stores a binding and lists it with its expiry in the 200", function()
    local res = register({ "<sip:alice@192.0.2.1:5070>" }, 3600)
    assert.equal(200, res.status)
    assert.same({ "<sip:alice@192.0.2.1:5070>;expires=3600" }, res:headers("Contact"))
    assert.equal("3600", res:header("Expires"))
    local b = reg:lookup("sip:alice@example.com")
    assert.equal(1, #b)
    assert.equal("sip:alice@192.0.2.1:5070", b[1].uri)
  end)

  it("takes the expiry from the Contact parameter over the Expires header", function()
    register({ "<sip:a@192.0.2.1>;expires=120" }, 3600)
    assert.equal(1120, reg:lookup("sip:alice@example.com")[1].expires_at)
  end)

  it("answers 423 with Min-Expires for a too brief interval", function()
    local res = register({ "<sip:alice@192.0.2.1>" }, 10)
    assert.equal(423, res.status)
    assert.equal("60", res:header("Min-Expires"))
    assert.equal(0, #reg:lookup("sip:alice@example.com"))
  end)

  it("shortens an interval over the maximum", function()
    local res = register({ "<sip:alice@192.0.2.1>" }, 99999)
    assert.equal("7200", res:header("Expires"))
  end)

  describe("expiry and q syntax (§20.19, §25.1: delta-seconds is 1*DIGIT)", function()
    for _, v in ipairs { "-5", "1e3", "0x10", "3600.5", "+60" } do
      it("answers 400 Bad Expires to a Contact's expires=" .. v, function()
        local res = register({ "<sip:a@192.0.2.9>;expires=" .. v }, nil)
        assert.equal(400, res.status)
        assert.equal("Bad Expires", res.reason)
        assert.equal(0, #reg:lookup("sip:alice@example.com"))
      end)

      it("answers 400 Bad Expires to Expires: " .. v, function()
        local res = register({ "<sip:a@192.0.2.9>" }, v)
        assert.equal(400, res.status)
        assert.equal("Bad Expires", res.reason)
        assert.equal(0, #reg:lookup("sip:alice@example.com"))
      end)
    end

    it("answers 400 Bad Expires to an expires param without a value", function()
      assert.equal(400, register({ "<sip:a@192.0.2.9>;expires" }, 600).status)
    end)

    it("changes nothing when one Contact of several has a bad expires", function()
      register({ "<sip:a@192.0.2.1>" }, 600)
      local res = register({ "<sip:a@192.0.2.1>;expires=0", "<sip:a@192.0.2.2>;expires=-1" }, nil)
      assert.equal(400, res.status)
      assert.equal(1, #reg:lookup("sip:alice@example.com"))
    end)

    it("shortens an interval past 2^32-1 like any other long one", function()
      local res = register({ "<sip:a@192.0.2.1>" }, "99999999999999999999")
      assert.equal(200, res.status)
      assert.equal("7200", res:header("Expires"))
      res = register({ "<sip:a@192.0.2.1>;expires=004294967296" }, nil)
      assert.equal("7200", res:header("Expires"))
    end)

    it("takes leading zeros (0600 is 600)", function()
      assert.equal("600", register({ "<sip:a@192.0.2.1>;expires=0600" }, nil):header("Expires"))
    end)

    for _, v in ipairs { "0x1", "1.5", "1.001", "0.1234", ".5", "-0", "2", "1e0" } do
      it("answers 400 Bad q value to q=" .. v, function()
        local res = register({ "<sip:a@192.0.2.9>;q=" .. v }, 600)
        assert.equal(400, res.status)
        assert.equal("Bad q value", res.reason)
        assert.equal(0, #reg:lookup("sip:alice@example.com"))
      end)
    end

    it("takes every form of qvalue the grammar allows", function()
      local res = register({ "<sip:a@192.0.2.1>;q=0", "<sip:a@192.0.2.2>;q=0.",
        "<sip:a@192.0.2.3>;q=0.125", "<sip:a@192.0.2.4>;q=1.000", "<sip:a@192.0.2.5>;q=1" }, 600)
      assert.equal(200, res.status)
      local b = reg:lookup("sip:alice@example.com")
      assert.equal(5, #b)
      assert.equal(0.125, b[3].q)
    end)
  end)

  it("answers a query without Contact with every current binding, best q first", function()
    register({ "<sip:a@192.0.2.1>;q=0.5", "<sip:a@192.0.2.2>;q=0.9" }, 600)
    local res = register(nil, nil)
    assert.equal(200, res.status)
    local c = res:headers("Contact")
    assert.equal(2, #c)
    assert.matches("192%.0%.2%.2", c[1])
    assert.matches("q=0%.5", c[2])
  end)

  it("removes one binding with expires=0 and all with Contact: * and Expires: 0", function()
    register({ "<sip:a@192.0.2.1>", "<sip:a@192.0.2.2>" }, 600)
    register({ "<sip:a@192.0.2.1>;expires=0" }, nil)
    assert.equal(1, #reg:lookup("sip:alice@example.com"))
    local res = register({ "*" }, 0)
    assert.equal(200, res.status)
    assert.equal(0, #reg:lookup("sip:alice@example.com"))
  end)

  it("refuses Contact: * without Expires: 0", function()
    assert.equal(400, register({ "*" }, 60).status)
  end)

  it("refuses an out-of-order REGISTER (same Call-ID, lower CSeq)", function()
    register({ "<sip:a@192.0.2.1>" }, 600, { cseq = 50 })
    local res = register({ "<sip:a@192.0.2.1>;expires=0" }, nil, { cseq = 49 })
    assert.equal(500, res.status)
    assert.equal(1, #reg:lookup("sip:alice@example.com"))
  end)

  it("lets bindings expire on time", function()
    register({ "<sip:a@192.0.2.1>" }, 60)
    clock = clock + 59
    assert.equal(1, #reg:lookup("sip:alice@example.com"))
    clock = clock + 1
    assert.equal(0, #reg:lookup("sip:alice@example.com"))
    reg:expire()
    assert.same({}, reg.store:aors())
  end)

  it("keeps targets() in step with REGISTERs and expiry", function()
    local aor = "sip:alice@example.com"
    assert.same({}, reg:targets(aor))
    register({ "<sip:alice@192.0.2.1:5070>;q=0.5" }, 60)
    assert.same({ "sip:alice@192.0.2.1:5070" }, reg:targets(aor))
    register({ "<sip:alice@192.0.2.2:5070>;q=0.9" }, 120)
    assert.same({ "sip:alice@192.0.2.2:5070", "sip:alice@192.0.2.1:5070" }, reg:targets(aor))
    clock = clock + 60   -- the first binding is over: the cached list must not outlive it
    assert.same({ "sip:alice@192.0.2.2:5070" }, reg:targets(aor))
    register({ "<sip:alice@192.0.2.2:5070>" }, 0)
    assert.same({}, reg:targets(aor))
  end)

  it("answers 400 for a To URI that is not sip: (RFC 4475 unksm2)", function()
    local m = assert(sip.parse(helper.read("rfc4475/semantic/unksm2.sip")))
    local code = reg:handle(m)
    assert.equal(400, code)
  end)

  it("keeps a sips: address-of-record apart from the sip: one (§19.1.4)", function()
    assert.equal("sips:alice@example.com", sip.registrar.aor("SIPS:alice@Example.COM"))
    assert.equal("sip:alice@example.com", sip.registrar.aor("sip:alice@EXAMPLE.com:5060"))
    register({ "<sips:a@192.0.2.1>" }, 600, { aor = "sips:alice@example.com" })
    register({ "<sip:a@192.0.2.7>" }, 600)
    assert.same({ "sips:a@192.0.2.1" }, reg:targets(sip.registrar.aor("sips:alice@example.com")))
    assert.same({ "sip:a@192.0.2.7" }, reg:targets("sip:alice@example.com"))
    assert.equal(1, #reg:lookup("sips:alice@example.com"))
  end)

  describe("Contact matching by the URI comparison rules (§10.3 step 7, §19.1.4)", function()
    local key = sip.registrar.contact_key

    it("removes a binding named with the host in another case", function()
      register({ "<sip:a@PC33.Example.com>" }, 600)
      assert.equal(200, register({ "<sip:a@pc33.example.com>;expires=0" }, nil).status)
      assert.equal(0, #reg:lookup("sip:alice@example.com"))
    end)

    it("refreshes one binding whether the user is escaped or not", function()
      register({ "<sip:%61@192.0.2.1>" }, 600)
      register({ "<SIP:a@192.0.2.1>" }, 600)
      assert.equal(1, #reg:lookup("sip:alice@example.com"))
      register({ "<sip:a@192.0.2.1>;expires=0" }, nil)
      assert.equal(0, #reg:lookup("sip:alice@example.com"))
    end)

    it("keeps the URI as the UA sent it for the 200 and targets()", function()
      local res = register({ "<sip:A@PC33.Example.com;Transport=UDP>" }, 600)
      assert.same({ "<sip:A@PC33.Example.com;Transport=UDP>;expires=600" }, res:headers("Contact"))
      assert.same({ "sip:A@PC33.Example.com;Transport=UDP" }, reg:targets("sip:alice@example.com"))
    end)

    it("keeps contacts apart that differ in user case, port, or a param of the five", function()
      register({ "<sip:a@192.0.2.1>", "<sip:A@192.0.2.1>", "<sip:a@192.0.2.1:5060>",
        "<sip:a@192.0.2.1;transport=tcp>", "<sip:a@192.0.2.1;maddr=192.0.2.9>" }, 600)
      assert.equal(5, #reg:lookup("sip:alice@example.com"))
    end)

    it("gives equal keys to equivalent URIs", function()
      assert.equal(key("sip:a@h"), key("SIP:%61@H"))
      assert.equal(key("sip:a:pw@h:5070"), key("sip:a:%70w@H:5070"))
      assert.equal(key("sip:a@h;transport=tcp;lr"), key("sip:a@h;TRANSPORT=TCP"))
      assert.equal(key("sip:a@h?Subject=x&Priority=urgent"),
        key("sip:a@h?priority=urgent&subject=x"))
      assert.equal(key("sip:a@h;method=INVITE;ttl=5"), key("sip:a@h;TTL=5;Method=INVITE"))
    end)

    it("gives different keys where the rules say the URIs differ", function()
      assert.are_not.equal(key("sip:a@h"), key("sips:a@h"))
      assert.are_not.equal(key("sip:a@h"), key("sip:A@h"))
      assert.are_not.equal(key("sip:a:pw@h"), key("sip:a:PW@h"))
      assert.are_not.equal(key("sip:a@h"), key("sip:a@h:5060"))
      assert.are_not.equal(key("sip:a@h"), key("sip:a@h;user=phone"))
      assert.are_not.equal(key("sip:a@h;method=INVITE"), key("sip:a@h;method=invite"))
      assert.are_not.equal(key("sip:a@h"), key("sip:a@h?subject=x"))
      assert.are_not.equal(key("sip:a%3Ab@h"), key("sip:a:b@h"))   -- user "a:b", not a password
    end)

    it("lets a store caller delete by the key it was given", function()
      local store, aor = sip.registrar.memory(), "sip:alice@example.com"
      store:put(aor, { uri = "sip:a@H", key = key("sip:a@H"), expires_at = 2000 })
      store:put(aor, { uri = "sip:b@h", expires_at = 2000 })   -- no key: kept by its uri
      store:delete(aor, key("sip:%61@h"))
      store:delete(aor, "sip:b@h")
      assert.same({}, store:get(aor))
    end)
  end)

  for _, f in ipairs { "cparam01.sip", "cparam02.sip", "regescrt.sip" } do
    it("stores the binding of RFC 4475 " .. f, function()
      local m = assert(sip.parse(helper.read("rfc4475/semantic/" .. f)))
      assert.equal(200, (reg:handle(m)))
      local to = sip.registrar.aor(m:addr("To").uri)
      local b = reg:lookup(to)
      assert.equal(1, #b)
      assert.equal(m:addr("Contact").uri, b[1].uri)
    end)
  end
end)
