-- spec/types_spec.lua: types/ (LuaLS ---@meta definitions of the public API) in step with
-- what the modules really export. A public name (not starting with "_") without a definition
-- fails, saying which name is missing from which ---@class in which file.
local sip = require "sip"
local core = require "sip.core"

-- types/*.lua -> { [class] = { file =, names = { [name] = "function" | "field" } } }
-- A class is `---@class NAME`; its names are the `---@field NAME` lines after it and the
-- `function VAR.NAME(` / `function VAR:NAME(` of the `local VAR = {}` that follows it.
local function read_types(dir)
  local classes = {}
  local p = io.popen('ls "' .. dir .. '"')
  for file in p:lines() do
    if file:match("%.lua$") then
      local path = dir .. "/" .. file
      local current, class_of = nil, {}
      local n = 0
      for line in io.lines(path) do
        n = n + 1
        local cls = line:match("^%-%-%-@class%s+([%w_.]+)")
        if cls then
          assert(not classes[cls], path .. ":" .. n .. ": ---@class " .. cls .. " twice")
          current = cls
          classes[cls] = { file = path, names = {} }
        end
        local field = line:match("^%-%-%-@field%s+([%w_]+)")
        if field then
          assert(current, path .. ":" .. n .. ": ---@field before any ---@class")
          classes[current].names[field] = "field"
        end
        local var = line:match("^local%s+([%w_]+)%s*=%s*{}")
        if var and current then
          class_of[var] = current
        end
        local v, name = line:match("^function%s+([%w_]+)[.:]([%w_]+)%s*%(")
        if v then
          local c = assert(class_of[v], path .. ":" .. n .. ": " .. v .. " is no ---@class table")
          classes[c].names[name] = "function"
        end
      end
    end
  end
  p:close()
  return classes
end

-- How a name reads in a message: sip.Endpoint:on, sip.uri.parse.
local function qualified(class, name, method)
  return class .. (method and ":" or ".") .. name
end

-- The public names of actual that classes[class] does not define, one message each.
-- opts.kinds: the types of value that count (default functions and tables: a module's
-- constants are not checked); opts.method: the names are methods (obj:name).
local MODULE_KINDS = { ["function"] = true, table = true }
local function undocumented(classes, class, actual, opts)
  opts = opts or {}
  local kinds = opts.kinds or MODULE_KINDS
  local c = classes[class]
  local out = {}
  local names = {}
  for k, v in pairs(actual) do
    if type(k) == "string" and not k:match("^_") and (kinds == "all" or kinds[type(v)]) then
      names[#names + 1] = k
    end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    if not c then
      out[#out + 1] = ("%s has no definition in types/: no ---@class %s there")
        :format(qualified(class, k, opts.method), class)
    elseif not c.names[k] then
      local fn = type(actual[k]) == "function"
      local kind = fn and "function" or type(actual[k]) == "table" and "table" or "field"
      out[#out + 1] = ("%s (a %s) has no definition in types/: add it to ---@class %s in %s")
        :format(qualified(class, k, opts.method and fn), kind, class, c.file)
    end
  end
  return out
end

-- The functions classes[class] defines that actual does not have (renamed or removed).
local function stale(classes, class, actual, opts)
  local out = {}
  local c = classes[class]
  if not c then
    return out   -- undocumented() names what it lacks
  end
  local names = {}
  for k, kind in pairs(c.names) do
    if kind == "function" and type(actual[k]) ~= "function" then
      names[#names + 1] = k
    end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    out[#out + 1] = ("%s is defined in %s but is no function of the module any more")
      :format(qualified(class, k, opts and opts.method), c.file)
  end
  return out
end

local METHODS = { kinds = { ["function"] = true }, method = true }

local function methods_of(obj)
  local mt = assert(getmetatable(obj), "no metatable")
  return assert(type(mt.__index) == "table" and mt.__index, "__index is no table")
end

local function upvalue(fn, wanted)
  local i = 1
  while true do
    local name, value = debug.getupvalue(fn, i)
    if not name then
      return nil
    end
    if name == wanted then
      return value
    end
    i = i + 1
  end
end

local SDP = table.concat({ "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1",
  "t=0 0", "m=audio 4000 RTP/AVP 0", "" }, "\r\n")

describe("types/ (LuaLS definitions of the public API)", function()
  local classes = read_types("types")

  -- The lazily loaded modules are loaded first, so that `sip` shows all it has.
  for _, name in ipairs({ "registrar", "proxy", "dialog", "cli", "ratelimit", "policy", "dns", "store", "offline", "workers" }) do
    assert(sip[name], name)
  end
  local endpoint = require "sip.endpoint"
  local dialog = require "sip.dialog"

  -- class in types/ -> the table whose public names it must define: sip, and each module
  -- sip holds (sip.uri, sip.auth, ... and any new one) but these
  local not_checked = {
    core = "C, most of it internal: only its defined functions are checked, for existence",
    dialog = "the plumbing endpoint.lua calls; a call's methods are sip.Call",
  }
  local modules = { { "sip", sip } }
  local keys = {}
  for k, v in pairs(sip) do
    if type(v) == "table" and not k:match("^_") and not not_checked[k] then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    modules[#modules + 1] = { "sip." .. k, sip[k] }
  end
  -- objects whose methods are API (a new kind of object needs a line here)
  local objects = {
    { "sip.Endpoint", endpoint.Endpoint },
    { "sip.Call", dialog.Dialog },
    { "sip.PendingCall", dialog.Pending },
    { "sip.Registration", upvalue(endpoint.Endpoint.register, "Registration") },
    { "sip.Registrar", sip.registrar.Registrar },
    { "sip.Store", methods_of(sip.registrar.memory()) },
    { "sip.Digest", methods_of(sip.auth.digest { realm = "r", credentials = function() end }) },
    { "sip.Policy", methods_of(sip.policy.new { ep = {} }) },
    { "sip.Limiter", methods_of(sip.ratelimit.new { rate = 1 }) },
    { "sip.sdp.Session", methods_of(assert(sip.sdp.parse(SDP))) },
    { "sip.sdp.Media", methods_of(assert(sip.sdp.parse(SDP)).media[1]) },
    { "sip.ChatSession", sip.msrp.Session },
    { "sip.SessionMessage", sip.msrp.SessionMessage },
  }

  it("reads a class for every module and object it checks", function()
    for _, m in ipairs(modules) do
      assert.is_table(m[2], m[1])
    end
    for _, o in ipairs(objects) do
      assert.is_table(o[2], o[1])
    end
    assert.is_table(classes["sip.Msg"], "types/ has no ---@class sip.Msg")
  end)

  it("names only types it defines: every sip.X in an annotation is a ---@class or ---@alias", function()
    local declared, errs = {}, {}
    local refs = {}
    local p = io.popen("ls types/*.lua")
    for file in p:lines() do
      local n = 0
      for line in io.lines(file) do
        n = n + 1
        local d = line:match("^%-%-%-@class%s+([%w_.]+)") or line:match("^%-%-%-@alias%s+([%w_.]+)")
        if d then
          declared[d] = true
        end
        if line:match("^%-%-%-@") then
          for r in line:gmatch("sip%.[%w_.]*[%w_]") do
            refs[#refs + 1] = { name = r, where = file .. ":" .. n }
          end
        end
      end
    end
    p:close()
    for _, r in ipairs(refs) do
      if not declared[r.name] then
        errs[#errs + 1] = r.where .. ": " .. r.name .. " is no ---@class or ---@alias of types/"
      end
    end
    assert(#errs == 0, "\n" .. table.concat(errs, "\n"))
  end)

  it("every file of types/ is Lua that runs", function()
    local p = io.popen("ls types/*.lua")
    for file in p:lines() do
      assert(loadfile(file))()   -- runs: every table a function is defined on exists
    end
    p:close()
  end)

  it("defines every public name of sip and its modules", function()
    local errs = {}
    for _, m in ipairs(modules) do
      for _, e in ipairs(undocumented(classes, m[1], m[2])) do
        errs[#errs + 1] = e
      end
    end
    assert(#errs == 0, "\n" .. table.concat(errs, "\n"))
  end)

  it("defines every method of endpoints, calls, registrations, registrars, stores, digest authenticators, policies, limiters and SDP", function()
    local errs = {}
    for _, o in ipairs(objects) do
      for _, e in ipairs(undocumented(classes, o[1], o[2], METHODS)) do
        errs[#errs + 1] = e
      end
    end
    assert(#errs == 0, "\n" .. table.concat(errs, "\n"))
  end)

  it("defines every method and field of messages (sip.core.msg_mt.methods)", function()
    local errs = undocumented(classes, "sip.Msg", core.msg_mt.methods, { kinds = "all", method = true })
    assert(#errs == 0, "\n" .. table.concat(errs, "\n"))
  end)

  it("defines no function that is gone", function()
    local errs = {}
    local function add(list)
      for _, e in ipairs(list) do
        errs[#errs + 1] = e
      end
    end
    for _, m in ipairs(modules) do
      add(stale(classes, m[1], m[2]))
    end
    for _, o in ipairs(objects) do
      add(stale(classes, o[1], o[2], { method = true }))
    end
    add(stale(classes, "sip.Msg", core.msg_mt.methods, { method = true }))
    add(stale(classes, "sip.core", core))
    assert(#errs == 0, "\n" .. table.concat(errs, "\n"))
  end)

  describe("the comparison", function()
    -- a table with every name types/ defines for class, as functions
    local function as_defined(class)
      local t = {}
      for k in pairs(classes[class].names) do
        t[k] = function() end
      end
      return t
    end

    it("names a public function that has no definition, and where it belongs", function()
      local t = as_defined("sip.Endpoint")
      t.brand_new = function() end
      t._private = function() end
      t.CONSTANT = 1
      local errs = undocumented(classes, "sip.Endpoint", t, METHODS)
      assert.same({ "sip.Endpoint:brand_new (a function) has no definition in types/: "
        .. "add it to ---@class sip.Endpoint in types/endpoint.lua" }, errs)
    end)

    it("names a module function without a definition", function()
      local t = as_defined("sip")
      t.resolve = function() end
      local errs = undocumented(classes, "sip", t)
      assert.same({ "sip.resolve (a function) has no definition in types/: "
        .. "add it to ---@class sip in types/sip.lua" }, errs)
    end)

    it("names a class types/ lacks", function()
      local errs = undocumented(classes, "sip.Chat", { send = function() end }, METHODS)
      assert.same({ "sip.Chat:send has no definition in types/: no ---@class sip.Chat there" }, errs)
    end)

    it("names a defined function the module no longer has", function()
      local t = as_defined("sip.uri")
      t.build = nil
      assert.same({ "sip.uri.build is defined in types/uri.lua but is no function of the module any more" },
        stale(classes, "sip.uri", t))
    end)
  end)
end)
