-- sip.script: `luasip serve --script FILE`, a routing script with a global route(req, serve),
-- loaded in an environment of its own and loaded again on reload (a failing one is not taken).
local M = {}

local Script = {}
Script.__index = Script

-- An error message on one line: a reload's complaint is read in a log, not a terminal.
local function one_line(s)
  return (tostring(s):gsub("%s*\n%s*", " | "))
end

-- Compile and run the file; the environment it left when it defines route(req, serve).
-- Its globals live in that environment (reading falls through to _G), so a reload starts
-- clean and never sees what the previous version left behind.
local function compile(path, serve)
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    return nil, one_line(err)
  end
  local ok, rerr = pcall(chunk, serve)
  if not ok then
    return nil, one_line(rerr)
  end
  if type(rawget(env, "route")) ~= "function" then
    return nil, path .. ": defines no global function route(req, serve)"
  end
  return env
end

--- sip.script.load(path, serve) -> script | nil, reason (one line)
-- The file runs with serve as its `...`; script.route is its route function, which the
-- caller looks up on every request (a reload replaces it).
function M.load(path, serve)
  local env, err = compile(path, serve)
  if not env then
    return nil, err
  end
  return setmetatable({ path = path, serve = serve, env = env, route = env.route,
    loads = 1, failed = 0, loaded_at = os.time() }, Script)
end

--- script:reload() -> true | nil, reason (one line): the file loaded again; on failure the
-- route in use stays. Requests being handled finish with the function they started with;
-- transactions, dialogs, registrations and connections live in the endpoint, not here.
function Script:reload()
  local env, err = compile(self.path, self.serve)
  if not env then
    self.failed = self.failed + 1
    self.last_error = err
    return nil, err
  end
  self.env, self.route = env, env.route
  self.loads = self.loads + 1
  self.loaded_at = os.time()
  self.last_error = nil
  return true
end

return M
