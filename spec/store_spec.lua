-- spec/store_spec.lua: one suite over every backend of sip.store (memory, SQLite in a temp
-- folder, Redis on a redis-server this spec starts on a free loopback port), plus what is
-- particular to each: a SQLite file that lasts, a bad file refused at open.
local store = require "sip.store"
local peer = require "peer"
local redis_server = require "redis_server"

local tmp = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")

local backends = {
  { name = "memory", open = function() return store.memory() end },
  { name = "sqlite", open = function()
    return assert(store.open("sqlite:" .. tmp .. "/s" .. math.random(1e9) .. ".db"))
  end },
}
-- serve times every store call (store.timed): the wrapped store must behave as the store
backends[#backends + 1] = { name = "sqlite, timed", open = function()
  return store.timed(assert(store.open("sqlite:" .. tmp .. "/t" .. math.random(1e9) .. ".db")))
end }
local redis
if redis_server.available() then
  backends[#backends + 1] = { name = "redis", open = function()
    redis = redis or assert(redis_server.start())
    local db = math.random(0, 15)
    local s = assert(store.open("redis://127.0.0.1:" .. redis.port .. "/" .. db))
    assert(s:flush())
    return s
  end }
end

teardown(function()
  if redis then
    redis_server.stop(redis)
  end
  os.execute("rm -rf '" .. tmp .. "'")
end)

local function by_key(list)
  local t = {}
  for _, b in ipairs(list) do
    t[b.key] = b
  end
  return t
end

for _, backend in ipairs(backends) do
  describe("sip.store (" .. backend.name .. ")", function()
    local s
    before_each(function()
      s = backend.open()
    end)
    after_each(function()
      s:close()
    end)

    local aor = "sip:alice@example.com"

    it("keeps a binding whole, fields it has never seen and lists among them", function()
      local b = { uri = "sip:a@10.0.0.1:5060;ob", key = "sip:a@10.0.0.1:5060", q = 0.5,
        expires_at = 2000, call_id = "c1@x", cseq = 7, updated = 1000, source = "udp:1.2.3.4:5",
        path = { "<sip:p1@edge;lr>", "<sip:p2@core;lr>" }, instance = "<urn:uuid:0001>",
        reg_id = 1, flow = "tcp:[::1]:5061", weird = 'quote " back\\slash\nline é' }
      assert.is_true(s:put(aor, b))
      local got = assert(s:get(aor))
      assert.equal(1, #got)
      assert.same(b, got[1])
      assert.equal("integer", math.type(got[1].cseq))
      assert.equal("float", math.type(got[1].q))
    end)

    it("keeps one binding per (aor, key): a put with the same key replaces", function()
      s:put(aor, { uri = "sip:a@h", key = "k1", expires_at = 2000, cseq = 1 })
      s:put(aor, { uri = "sip:A@h", key = "k1", expires_at = 3000, cseq = 2 })
      s:put(aor, { uri = "sip:b@h", key = "k2", expires_at = 2000, cseq = 1 })
      s:put("sip:bob@example.com", { uri = "sip:c@h", key = "k1", expires_at = 2000 })
      local got = by_key(assert(s:get(aor)))
      assert.equal("sip:A@h", got.k1.uri)
      assert.equal(2, got.k1.cseq)
      assert.equal("sip:b@h", got.k2.uri)
      assert.same({}, assert(s:get("sip:carol@example.com")))
    end)

    it("deletes one binding by key, or every binding of an AOR", function()
      s:put(aor, { uri = "sip:a@h", key = "k1", expires_at = 2000 })
      s:put(aor, { uri = "sip:b@h", key = "k2", expires_at = 2000 })
      s:put("sip:bob@example.com", { uri = "sip:c@h", key = "k1", expires_at = 2000 })
      assert.is_true(s:delete(aor, "k1"))
      assert.same({ "k2" }, { assert(s:get(aor))[1].key })
      assert.is_true(s:delete(aor))
      assert.same({}, assert(s:get(aor)))
      assert.equal(1, #assert(s:get("sip:bob@example.com")))
    end)

    it("expires bindings whose time has come, and lists the AORs that still have one", function()
      s:put(aor, { uri = "sip:a@h", key = "k1", expires_at = 1000 })
      s:put(aor, { uri = "sip:b@h", key = "k2", expires_at = 3000 })
      s:put("sip:bob@example.com", { uri = "sip:c@h", key = "k1", expires_at = 1500 })
      local aors = assert(s:aors())
      table.sort(aors)
      assert.same({ aor, "sip:bob@example.com" }, aors)
      assert.is_true(s:expire(1500))
      assert.same({ "k2" }, { assert(s:get(aor))[1].key })
      assert.same({}, assert(s:get("sip:bob@example.com")))
      assert.same({ aor }, assert(s:aors()))
    end)

    it("counts the bindings live at a time, and the AORs that have one", function()
      assert.same({ 0, 0 }, { s:count(1000) })
      s:put(aor, { uri = "sip:a@h", key = "k1", expires_at = 1000 })
      s:put(aor, { uri = "sip:b@h", key = "k2", expires_at = 3000 })
      s:put("sip:bob@example.com", { uri = "sip:c@h", key = "k1", expires_at = 2000 })
      s:put("sip:carol@example.com", { uri = "sip:d@h", key = "k1", expires_at = 1000 })
      assert.same({ 4, 3 }, { s:count(999) })
      assert.same({ 2, 2 }, { s:count(1000) })   -- expires_at 1000 is over at 1000
      assert.same({ 1, 1 }, { s:count(2500) })
      assert.same({ 0, 0 }, { s:count(3000) })
      assert.is_true(s:delete(aor, "k2"))
      assert.same({ 1, 1 }, { s:count(1000) })
    end)

    it("gives every binding of every AOR in one call", function()
      s:put(aor, { uri = "sip:a@h", key = "k1", expires_at = 3000 })
      s:put(aor, { uri = "sip:b@h", key = "k2", expires_at = 3000, path = { "<sip:p;lr>" } })
      s:put("sip:bob@example.com", { uri = "sip:c@h", key = "k1", expires_at = 3000 })
      local all = assert(s:all())
      local keys = {}
      for _, b in ipairs(all[aor]) do
        keys[#keys + 1] = b.key
      end
      table.sort(keys)
      assert.same({ "k1", "k2" }, keys)
      assert.equal("sip:c@h", all["sip:bob@example.com"][1].uri)
      assert.same({ "<sip:p;lr>" }, by_key(all[aor]).k2.path)
    end)

    local function msg(n, arrived, body)
      return { from = "<sip:bob@example.com>", to = "<sip:alice@example.com>",
        content_type = "text/plain", body = body or ("message " .. n), arrived = arrived or 1000 + n }
    end

    it("keeps offline messages in arrival order and deletes them one by one", function()
      local ids = {}
      for i = 1, 3 do
        ids[i] = assert(s:msg_add(aor, msg(i)))
      end
      assert(s:msg_add("sip:bob@example.com", msg(9)))
      local list = assert(s:msg_list(aor))
      assert.equal(3, #list)
      for i = 1, 3 do
        assert.equal(ids[i], list[i].id)
        assert.equal("message " .. i, list[i].body)
        assert.equal("text/plain", list[i].content_type)
        assert.equal("<sip:bob@example.com>", list[i].from)
        assert.equal(1000 + i, list[i].arrived)
      end
      assert.is_true(s:msg_delete(aor, ids[2]))
      list = assert(s:msg_list(aor))
      assert.same({ ids[1], ids[3] }, { list[1].id, list[2].id })
      assert.equal(1, #assert(s:msg_list("sip:bob@example.com")))
      assert.same({}, assert(s:msg_list("sip:carol@example.com")))
    end)

    it("refuses a message past the count limit and drops nothing stored", function()
      local limits = { count = 2, bytes = 10000 }
      assert(s:msg_add(aor, msg(1), limits))
      assert(s:msg_add(aor, msg(2), limits))
      local id, err, kind = s:msg_add(aor, msg(3), limits)
      assert.is_nil(id)
      assert.equal("limit", kind)
      assert.truthy(err:find("full"))
      local list = assert(s:msg_list(aor))
      assert.same({ "message 1", "message 2" }, { list[1].body, list[2].body })
      -- another user's mailbox is its own
      assert(s:msg_add("sip:bob@example.com", msg(3), limits))
    end)

    it("refuses a message past the byte limit and drops nothing stored", function()
      local one = store.msg_size(msg(1, 1000, string.rep("x", 100)))
      local limits = { count = 100, bytes = 2 * one + 10 }
      assert(s:msg_add(aor, msg(1, 1000, string.rep("x", 100)), limits))
      assert(s:msg_add(aor, msg(2, 1000, string.rep("y", 100)), limits))
      local id, _, kind = s:msg_add(aor, msg(3, 1000, string.rep("z", 100)), limits)
      assert.is_nil(id)
      assert.equal("limit", kind)
      assert.equal(2, #assert(s:msg_list(aor)))
      -- room again once one is delivered
      assert(s:msg_delete(aor, assert(s:msg_list(aor))[1].id))
      assert(s:msg_add(aor, msg(3, 1000, string.rep("z", 100)), limits))
    end)

    it("drops messages older than the age limit, and only those", function()
      assert(s:msg_add(aor, msg(1, 100)))
      assert(s:msg_add(aor, msg(2, 200)))
      assert(s:msg_add("sip:bob@example.com", msg(3, 150)))
      assert.equal(2, s:msg_expire(200))
      local list = assert(s:msg_list(aor))
      assert.equal(1, #list)
      assert.equal("message 2", list[1].body)
      assert.same({}, assert(s:msg_list("sip:bob@example.com")))
    end)

    it("keeps digest nonce counts: higher passes, the same or lower is a replay", function()
      assert.equal("ok", s:nc_check("n1", 1, 60))
      assert.equal("ok", s:nc_check("n1", 2, 60))
      assert.equal("replay", s:nc_check("n1", 2, 60))
      assert.equal("replay", s:nc_check("n1", 1, 60))
      assert.equal("ok", s:nc_check("n1", 5, 60))
      -- first seen past 1: its earlier uses are unknown here
      assert.equal("unknown", s:nc_check("n2", 3, 60))
      -- without qop (nc 0) a nonce answers once
      assert.equal("ok", s:nc_check("n3", 0, 60))
      assert.equal("replay", s:nc_check("n3", 0, 60))
      assert.equal("replay", s:nc_check("n3", 7, 60))
    end)

    it("keeps the first value set under a name (a secret shared by instances)", function()
      assert.equal("one", s:setnx("rr_key", "one"))
      assert.equal("one", s:setnx("rr_key", "two"))
    end)
  end)
end

if redis_server.available() then
  describe("sip.store Redis client", function()
    it("can be closed by a coroutine a reply woke, failing the calls still pending", function()
      local sip = require "sip"
      redis = redis or assert(redis_server.start())
      local s = assert(store.open("redis://127.0.0.1:" .. redis.port .. "/1"))
      local first, second, err
      sip.spawn(function()
        first = s:get("sip:x@y")
        s:close()
      end)
      sip.spawn(function()
        second, err = s:get("sip:z@y")
      end)
      assert.truthy(require("helper").run_until(function() return err or second end, 3))
      assert.same({}, first)
      assert.is_nil(second)
      assert.truthy(err:find("closed", 1, true), err)
    end)
  end)
end

describe("sip.store SQLite file", function()
  it("keeps bindings and messages across a close and a new open", function()
    local path = tmp .. "/lasting.db"
    local s = assert(store.open("sqlite:" .. path))
    s:put("sip:a@x", { uri = "sip:a@h", key = "k", expires_at = 5000, path = { "<sip:p;lr>" } })
    assert(s:msg_add("sip:a@x", { from = "f", to = "t", body = "hi", arrived = 1 }))
    s:close()
    s = assert(store.open("sqlite:" .. path))
    assert.same({ "<sip:p;lr>" }, assert(s:get("sip:a@x"))[1].path)
    assert.equal("hi", assert(s:msg_list("sip:a@x"))[1].body)
    s:close()
  end)

  it("makes the folder the file goes in", function()
    local s = assert(store.open("sqlite:" .. tmp .. "/new/folder/x.db"))
    s:close()
    assert.truthy(io.open(tmp .. "/new/folder/x.db")):close()
  end)

  it("refuses a file that is not a database, in one line", function()
    local path = tmp .. "/corrupt.db"
    local f = assert(io.open(path, "wb"))
    f:write(string.rep("this is not sqlite\n", 300))
    f:close()
    local s, err = store.open("sqlite:" .. path)
    assert.is_nil(s)
    assert.truthy(err:find(path, 1, true), err)
    assert.truthy(err:find("not a database", 1, true), err)
    assert.falsy(err:find("\n"))
  end)

  it("refuses a file it cannot write", function()
    if peer.sh("id -u"):match("^0") then
      -- root writes read-only files: a folder in the way stands for the unwritable file
      local s, err = store.open("sqlite:" .. tmp)
      assert.is_nil(s)
      assert.truthy(err:find(tmp, 1, true), err)
      return
    end
    local path = tmp .. "/ro.db"
    assert(store.open("sqlite:" .. path)):close()
    os.execute("chmod 0444 '" .. path .. "'")
    local s, err = store.open("sqlite:" .. path)
    assert.is_nil(s)
    assert.truthy(err:find("readonly", 1, true), err)
  end)
end)

describe("sip.store.timed", function()
  it("counts each call by method, its time in a bucket, and the calls that failed", function()
    local inner = store.memory()
    local fail = false
    local get = inner.get
    inner.get = function(self, aor)
      if fail then
        return nil, "down"
      end
      return get(self, aor)
    end
    local s = store.timed(inner)
    assert.truthy(s:put("sip:a@x", { uri = "sip:a@1.2.3.4", key = "k", q = 1,
      expires_at = os.time() + 60 }))
    assert.equal(1, #s:get("sip:a@x"))
    fail = true
    local r, err = s:get("sip:a@x")
    assert.is_nil(r)
    assert.equal("down", err)
    local g = s.latency.get
    assert.equal(2, g.count)
    assert.equal(1, g.failed)
    assert.equal(1, s.latency.put.count)
    assert.equal(0, s.latency.delete.count)
    local n = 0
    for _, c in ipairs(g.buckets) do
      n = n + c
    end
    assert.equal(2, n)
    assert.equal(#store.LATENCY_BUCKETS + 1, #g.buckets)
    assert.truthy(g.sum >= 0 and g.sum < 1)
    -- fields reach the store underneath
    s.shared = true
    assert.is_true(inner.shared)
    assert.equal("memory", s.kind)
  end)
end)

describe("sip.store.open", function()
  it("names what it wants for a store it does not know", function()
    local s, err = store.open("mysql://x")
    assert.is_nil(s)
    assert.truthy(err:find("want memory, sqlite:FILE or redis://HOST:PORT[/DB]", 1, true))
  end)
end)
