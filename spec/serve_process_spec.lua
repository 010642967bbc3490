-- spec/serve_process_spec.lua: `luasip serve` as its own process: it runs itself again with
-- glibc's malloc on transparent huge pages (lsip_thp.c), keeping its PID, unless told not to.
local sip = require "sip"
local peer = require "peer"
local helper = require "helper"

-- a helper command, without the ASan runtime `make sanitize` preloads into lua5.4
local sh = peer.sh

local slurp = peer.slurp

-- what core.use_huge_pages needs: THP for madvise'd memory and glibc >= 2.35
local function huge_pages_possible()
  local mode = slurp("/sys/kernel/mm/transparent_hugepage/enabled") or ""
  local v = sh("getconf GNU_LIBC_VERSION 2>/dev/null")
  local major, minor = v:match("glibc (%d+)%.(%d+)")
  major, minor = tonumber(major), tonumber(minor)
  local glibc_ok = major and (major > 2 or (major == 2 and minor >= 35))
  return (mode:find("[always]", 1, true) or mode:find("[madvise]", 1, true)) and glibc_ok
end

describe("luasip serve (process)", function()
  local ua
  before_each(function()
    ua = assert(sip.endpoint { listen = { "udp:127.0.0.1:0" } })
  end)
  after_each(function()
    ua:close()
  end)

  -- start serve with extra arguments; once it answers OPTIONS (or 5 s passed): the peer,
  -- the last answer
  local function start_serve(extra)
    local port = peer.free_udp_port()
    local argv = { "lua5.4", peer.path("bin/luasip"), "serve", "--listen",
      "udp:127.0.0.1:" .. port, "--domain", "127.0.0.1", "--no-auth" }
    for _, a in ipairs(extra) do argv[#argv + 1] = a end
    local p = peer.start(argv)
    local res
    helper.run_until(function()
      -- until it listens, the port is closed and an OPTIONS fails at once (ICMP: 503)
      if not (res and res.status == 200) then
        res = ua:options("sip:127.0.0.1:" .. port)
      end
      return res and res.status == 200
    end, 5)
    return p, res
  end

  -- start serve, wait until it answers OPTIONS, return its environment and stop it
  local function serve_env(extra)
    local args = { "--quiet" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local p, res = start_serve(args)
    local child = sh("pgrep -P " .. p.pid):match("%d+")
    local env = child and slurp("/proc/" .. child .. "/environ") or ""
    os.execute("kill -TERM -" .. p.pid .. " 2>/dev/null")
    peer.wait(p, 3)
    peer.clean(p)
    return res and res.status, env, child
  end

  it("runs again with glibc.malloc.hugetlb=1 where that works, answering all the same", function()
    local status, env, child = serve_env()
    assert.equal(200, status)
    assert.truthy(child)
    if huge_pages_possible() then
      assert.truthy(env:find("GLIBC_TUNABLES=glibc.malloc.hugetlb=1", 1, true))
    else
      assert.falsy(env:find("glibc.malloc.hugetlb", 1, true))
    end
  end)

  it("ends quietly on Ctrl-C (SIGINT): exit code 130, no stack trace", function()
    local p = start_serve { "--no-huge-pages" }
    local child = sh("pgrep -P " .. p.pid):match("%d+")
    assert.truthy(child)
    os.execute("kill -INT " .. child)
    local code, out = peer.wait(p, 3)
    peer.clean(p)
    assert.equal(130, code)
    assert.falsy(out:find("traceback", 1, true))
    assert.falsy(out:find("interrupted", 1, true))
  end)

  it("keeps malloc as it is with --no-huge-pages", function()
    local status, env = serve_env { "--no-huge-pages" }
    assert.equal(200, status)
    assert.falsy(env:find("glibc.malloc.hugetlb", 1, true))
  end)
end)

describe("luasip command line", function()
  local function run(...)
    local code, out = peer.run({ "lua5.4", peer.path("bin/luasip"), ... }, 5)
    return code, out or ""
  end

  it("refuses an unknown option instead of taking the next argument as its value", function()
    local code, out = run("serve", "--quite", "--no-auth")
    assert.equal(2, code)
    assert.truthy(out:find("luasip: unknown option --quite", 1, true))
  end)

  it("says which value is wrong, in one line and no trace", function()
    local cases = {
      { 2, "--t1 wants a whole number", "serve", "--t1", "abc", "--no-auth" },
      { 2, "--max-transactions wants a whole number", "serve", "--max-transactions", "-5", "--no-auth" },
      { 2, "serve takes no argument extra", "serve", "extra", "--no-auth" },
      { 1, "luasip: bad argument", "serve", "--listen", "udp:127.0.0.1:99999", "--no-auth", "--no-huge-pages" },
      { 1, "cannot be read", "serve", "--users", "/tmp", "--no-huge-pages" },
      { 1, "luasip: bad Request-URI", "message", "notauri", "hi" },
      { 2, "wants 1 argument, got 0", "options" },
    }
    for _, c in ipairs(cases) do
      local code, out = run(table.unpack(c, 3))
      assert.equal(c[1], code, table.concat(c, " ", 3) .. ": " .. out)
      assert.truthy(out:find(c[2], 1, true), table.concat(c, " ", 3) .. ": " .. out)
      assert.falsy(out:find("traceback", 1, true), out)
    end
  end)
end)
