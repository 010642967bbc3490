--- sip.store_sqlite: the sip.store interface on one SQLite file (WAL mode), the embedded default
-- of `luasip serve`: bindings and stored messages survive a crash or kill -9 and a restart.
--
-- Calls are short local writes made on the loop (no coroutine waits for them). WAL with
-- synchronous=NORMAL: a committed write survives the process dying at any point; only a
-- power cut may lose the last few. Several processes (workers) may share the file.
local core = require "sip.core"
local store = require "sip.store"

local M = {}

local Sqlite = {}
Sqlite.__index = Sqlite

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS bindings (
  aor TEXT NOT NULL, key TEXT NOT NULL, expires_at INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (aor, key));
CREATE INDEX IF NOT EXISTS bindings_expiry ON bindings (expires_at);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT, aor TEXT NOT NULL, arrived INTEGER NOT NULL,
  size INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_aor ON messages (aor, id);
CREATE INDEX IF NOT EXISTS messages_arrived ON messages (arrived);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, nc INTEGER NOT NULL,
  until INTEGER NOT NULL);
]]

--- sip.store_sqlite.open(path) -> store | nil, reason
-- The folder is made when missing. A file that is not a database, or one we cannot write,
-- fails here, with the reason in one line.
function M.open(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  end
  local db, err = core.sqlite_open(path)
  if not db then
    return nil, err
  end
  local ok
  ok, err = db:exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
  if ok then
    ok, err = db:exec(SCHEMA)
  end
  if ok then
    -- a write at start: a read-only file fails now, not at the first REGISTER
    ok, err = db:exec("BEGIN IMMEDIATE; DELETE FROM kv WHERE 0; COMMIT;")
  end
  if not ok then
    db:close()
    return nil, path .. ": " .. tostring(err):gsub("^sqlite: ", "")
  end
  return setmetatable({ db = db, path = path, kind = "sqlite" }, Sqlite)
end

-- a statement whose rows nobody reads: true | nil, reason
local function run(self, sql, ...)
  local ok, err = self.db:query(sql, ...)
  if not ok then
    return nil, err
  end
  return true
end

local function decode_rows(rows, col)
  local out = {}
  for _, r in ipairs(rows) do
    local v = store.decode(r[col])
    if v then
      out[#out + 1] = v
    end
  end
  return out
end

function Sqlite:get(aor)
  local rows, err = self.db:query("SELECT data FROM bindings WHERE aor = ?", aor)
  if not rows then
    return nil, err
  end
  return decode_rows(rows, 1)
end

function Sqlite:put(aor, b)
  return run(self, "INSERT OR REPLACE INTO bindings (aor, key, expires_at, data) "
    .. "VALUES (?, ?, ?, ?)", aor, b.key or b.uri, b.expires_at, store.encode(b))
end

function Sqlite:delete(aor, key)
  if key then
    return run(self, "DELETE FROM bindings WHERE aor = ? AND key = ?", aor, key)
  end
  return run(self, "DELETE FROM bindings WHERE aor = ?", aor)
end

function Sqlite:expire(now)
  local ok, err = run(self, "DELETE FROM bindings WHERE expires_at <= ?", now)
  if not ok then
    return nil, err
  end
  return run(self, "DELETE FROM nonces WHERE until <= ?", now)
end

function Sqlite:count(now)
  local rows, err = self.db:query("SELECT COUNT(*), COUNT(DISTINCT aor) FROM bindings "
    .. "WHERE expires_at > ?", now)
  if not rows then
    return nil, err
  end
  return rows[1][1], rows[1][2]
end

function Sqlite:all()
  local rows, err = self.db:query("SELECT aor, data FROM bindings")
  if not rows then
    return nil, err
  end
  local out = {}
  for _, r in ipairs(rows) do
    local b = store.decode(r[2])
    if b then
      out[r[1]] = out[r[1]] or {}
      table.insert(out[r[1]], b)
    end
  end
  return out
end

function Sqlite:aors()
  local rows, err = self.db:query("SELECT DISTINCT aor FROM bindings")
  if not rows then
    return nil, err
  end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = r[1]
  end
  return out
end

-- The limits are checked and the row added in one transaction: a worker sharing the file
-- cannot slip a message in between.
function Sqlite:msg_add(aor, m, limits)
  local db = self.db
  local ok, err = db:exec("BEGIN IMMEDIATE")
  if not ok then
    return nil, err
  end
  local function undo(...)
    db:exec("ROLLBACK")
    return ...
  end
  local rows
  rows, err = db:query("SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE aor = ?", aor)
  if not rows then
    return undo(nil, err)
  end
  local count, bytes = rows[1][1], rows[1][2]
  local size = store.msg_size(m)
  if limits and limits.count and count >= limits.count then
    return undo(nil, "mailbox full (" .. count .. " messages)", "limit")
  end
  if limits and limits.bytes and bytes + size > limits.bytes then
    return undo(nil, "mailbox full (" .. bytes .. " bytes)", "limit")
  end
  local done, ierr, id = db:query("INSERT INTO messages (aor, arrived, size, data) "
    .. "VALUES (?, ?, ?, ?)", aor, m.arrived, size, store.encode(m))
  if not done then
    return undo(nil, ierr)
  end
  ok, err = db:exec("COMMIT")
  if not ok then
    return undo(nil, err)
  end
  return id
end

function Sqlite:msg_list(aor)
  local rows, err = self.db:query("SELECT id, size, data FROM messages WHERE aor = ? ORDER BY id",
    aor)
  if not rows then
    return nil, err
  end
  local out = {}
  for _, r in ipairs(rows) do
    local m = store.decode(r[3])
    if m then
      m.id, m.size = r[1], r[2]
      out[#out + 1] = m
    end
  end
  return out
end

function Sqlite:msg_delete(aor, id)
  return run(self, "DELETE FROM messages WHERE aor = ? AND id = ?", aor, id)
end

function Sqlite:msg_expire(before)
  local ok, n = self.db:query("DELETE FROM messages WHERE arrived < ?", before)
  if not ok then
    return nil, n
  end
  return n
end

function Sqlite:setnx(name, value)
  local ok, err = run(self, "INSERT OR IGNORE INTO kv (name, value) VALUES (?, ?)", name, value)
  if not ok then
    return nil, err
  end
  local rows
  rows, err = self.db:query("SELECT value FROM kv WHERE name = ?", name)
  if not rows then
    return nil, err
  end
  return rows[1] and rows[1][1]
end

function Sqlite:nc_check(nonce, nc, ttl)
  local db, now = self.db, os.time()
  local ok, err = db:exec("BEGIN IMMEDIATE")
  if not ok then
    return nil, err
  end
  local function done(...)
    db:exec(select("#", ...) == 1 and "COMMIT" or "ROLLBACK")
    return ...
  end
  local rows
  rows, err = db:query("SELECT nc FROM nonces WHERE nonce = ? AND until > ?", nonce, now)
  if not rows then
    return done(nil, err)
  end
  local seen = rows[1] and rows[1][1]
  if seen and (nc == 0 or nc <= seen) then
    return done("replay")
  elseif not seen and nc > 1 then
    return done("unknown")
  end
  rows, err = db:query("INSERT OR REPLACE INTO nonces (nonce, nc, until) VALUES (?, ?, ?)",
    nonce, nc == 0 and math.maxinteger or nc, now + ttl)
  if not rows then
    return done(nil, err)
  end
  return done("ok")
end

function Sqlite:close()
  self.db:close()
end

return M
