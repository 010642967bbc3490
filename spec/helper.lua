-- spec/helper.lua: shared bits for the specs — corpus access and small utilities.
-- The corpus lives beside the project: ../shared/corpus/ from the repository root.
local helper = {}

helper.corpus = os.getenv("SIP_CORPUS") or "../shared/corpus"

function helper.read(path)
  local f = assert(io.open(helper.corpus .. "/" .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Files of a corpus folder, sorted.
function helper.files(dir)
  local out = {}
  local p = io.popen('ls "' .. helper.corpus .. "/" .. dir .. '"')
  for name in p:lines() do
    if name:match("%.sip$") then
      out[#out + 1] = name
    end
  end
  p:close()
  table.sort(out)
  return out
end

-- CRLF lines joined: helper.msg{ "INVITE sip:a@b SIP/2.0", "Via: ...", "", "body" }
function helper.msg(lines)
  return table.concat(lines, "\r\n")
end

return helper
