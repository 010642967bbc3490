---@meta sip.store
-- sip.store: state that outlives a request (registrations, offline messages, shared
-- secrets) behind one interface (sip.Store, types/registrar.lua); sip.offline: messages for
-- users who are offline; sip.workers: `serve --workers N`.

---@class sip.store
---@field LATENCY_BUCKETS number[] upper bounds (seconds) of store.timed's latency buckets
local store = {}

---A store by name: "memory", "sqlite:FILE", "redis://HOST:PORT[/DB]".
---@param spec string
---@return sip.Store|nil s
---@return string? reason
function store.open(spec) end

---A store in this Lua state's tables, gone with the process.
---@return sip.Store
function store.memory() end

---The keys instances sharing a store must agree on (the digest nonce secret, the Record-Route
---key), made once and kept in the store.
---@param s sip.Store
---@return { digest_secret: string, nc_check: function }|nil keys
---@return string? reason
function store.shared_keys(s) end

---The file `serve` keeps its state in when given no --store.
---@return string
function store.default_path() end

---The store with each call timed by method into `.latency` ({ [method] = { count, sum, failed,
---buckets } }, buckets per store.LATENCY_BUCKETS plus one past the last).
---@param s table
---@return table
function store.timed(s) end

---JSON text of a table (what backends keep).
---@param t table
---@return string
function store.encode(t) end

---A table from store.encode's text.
---@param s string
---@return table|nil t
---@return string? reason
function store.decode(s) end

---The bytes a stored message counts against its user's limit.
---@param m table
---@return integer
function store.msg_size(m) end

---@class sip.offline
local offline = {}

---@class sip.Offline
local Offline = {}

---A mailbox for users who are offline.
---@param opts { ep: sip.Endpoint, store: sip.Store, registrar: sip.Registrar, max_count?: integer, max_bytes?: integer, max_age?: number, clock?: fun(): number, log?: function }
---@return sip.Offline
function offline.new(opts) end

---Store the MESSAGE for aor and answer 202 (or an error past a limit).
---@param req sip.Request
---@param aor string
---@return integer code
function Offline:accept(req, aor) end

---Send aor's stored messages, oldest first, to its binding; each is deleted after its 2xx.
---@param aor string
function Offline:deliver(aor) end

---Drop the messages past the age limit.
function Offline:expire() end

---@class sip.workers
local workers = {}

---The master of `serve --workers N`: starts N workers and ends with them.
---@param n integer
---@param opts table serve's options
---@return integer exit_code
function workers.master(n, opts) end

---The control socket of worker i alone, beside serve's at path (worker 1 asks the others
---there for `stats`, `reload` and their /metrics).
---@param path string
---@param i integer
---@return string
function workers.control_path(path, i) end

---The serve options of a worker (`--worker I@MASTER/N`).
---@param opts table
---@return true|nil ok
---@return string? reason
function workers.worker(opts) end
