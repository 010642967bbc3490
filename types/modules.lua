---@meta
-- The smaller modules: sip.sched, sip.random, sip.ratelimit, sip.cli, and the sip.core
-- functions scripts may call.

---@class sip.sched
---@field loop userdata the one event loop of this Lua state (core.loop())
local sched = {}

---Run fn(...) in a coroutine now, until it first waits.
---@param fn function
---@param ... any
---@return thread
function sched.spawn(fn, ...) end

---Yield until wake(...) is called (start(wake) arranges that, later or at once); outside a
---coroutine it runs the loop until then.
---@param start fun(wake: fun(...))
---@return any ...
function sched.await(start) end

---Only the calling coroutine waits.
---@param seconds number
function sched.sleep(seconds) end

---@return integer handlers running now
function sched.running_count() end

---@class sip.random
local random = {}

---@param n integer
---@return string n random hex characters
function random.hex(n) end

---@return string a From/To tag
function random.tag() end

---@return string a z9hG4bK branch, unique (not unpredictable)
function random.branch() end

---@param n integer
---@return string n hex characters unique in time and space
function random.unique(n) end

---@param host? string appended as "@host"
---@return string
function random.call_id(host) end

---A token bucket per source.
---@class sip.Limiter
local Limiter = {}

---@param req sip.Request|string a request, or its source
---@return boolean ok
---@return integer? retry_after whole seconds
---@return boolean? report first refusal of the source in this log window
function Limiter:allow(req) end

---@return integer buckets held
function Limiter:sources() end

---@class sip.ratelimit
local ratelimit = {}

---@param opts { rate: number, burst?: number, key?: fun(req: sip.Request): string, max_sources?: integer, log_window?: number, clock?: fun(): number }
---@return sip.Limiter
function ratelimit.new(opts) end

---"udp:1.2.3.4:5060" -> "1.2.3.4", "tcp:[::1]:5060" -> "::1".
---@param req sip.Request|string
---@return string|nil
function ratelimit.source_ip(req) end

---@class sip.cli
local cli = {}

---The luasip command line; returns the exit status.
---@param argv string[]
---@return integer
function cli.main(argv) end

---The `serve` job (registrar, proxy, digest auth, echo bot) in this process.
---@param opts { listen: string[], domain?: string, users?: table, no_auth?: boolean, quiet?: boolean, t1?: integer, rate_limit?: number|false, rate_burst?: number, log?: fun(fmt: string, ...), trust?: string[] }
---@return table server
function cli.server(opts) end

---A users file: "user:password[:aliases]" or htdigest "user:realm:HA1" lines.
---@param path string
---@return table|nil users
---@return string? err
function cli.load_users(path) end

---The C module; most of it is reached through `sip`. These are the functions a script
---calls by this name.
---@class sip.core
---@field msg_mt { methods: table } message methods and fields (add methods here)
local core = {}

---sip.parse itself.
---@param bytes string
---@param opts? table
---@return sip.Msg|nil
---@return string? reason
function core.parse(bytes, opts) end

---@param code integer
---@return string
function core.reason(code) end

---@param s string
---@return sip.Uri|nil
---@return string? reason
function core.uri_parse(s) end

---@param s string
---@return sip.NameAddr|nil
---@return string? reason
function core.addr_parse(s) end

---host (lowercase, IPv6 without []), port, user of a URI or of a request's Request-URI.
---@param uri string|sip.Request
---@return string|nil host
---@return integer|nil port
---@return string|nil user
function core.uri_hostport(uri) end

---The canonical long form of a known header name ("v" -> "Via"), or name as given.
---@param name string
---@return string
function core.header_name(name) end

---@param n integer
---@return string
function core.random_hex(n) end

---@param n integer
---@return string
function core.unique_hex(n) end

---The key of our Record-Route tags, shared by processes and hosts serving the same dialogs.
---@param secret string
function core.rr_key(secret) end

---The ;lsk= value our Record-Route carries for that dialog.
---@param call_id string
---@param from_tag string
---@return string
function core.rr_tag(call_id, from_tag) end

---Run the process again with its heap on transparent huge pages; returns only on failure.
---@return false
---@return string reason
function core.use_huge_pages() end
