---@meta sip.core
-- sip.core: the C module, as far as scripts call it by this name.

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

---host (lowercase, IPv6 without []), port, user of a URI or of a request's Request-URI
---(with header: of the URI req:addr(header).uri names).
---@param uri string|sip.Request
---@param header? string
---@return string|nil host
---@return integer|nil port
---@return string|nil user
function core.uri_hostport(uri, header) end

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


---Operating a server (lsip_ops.c, used by sip.ops): file descriptors watched on the loop.
---@class sip.core.Fd
local Fd = {}
---fn(fd, writable) runs on the loop whenever fd is readable (and, with writable, writable).
---@param fn fun(fd: sip.core.Fd, writable: boolean)
---@param writable? boolean
function Fd:watch(fn, writable) end
function Fd:unwatch() end
---@return string|nil bytes "" at the end of the stream
---@return string? err "again" when nothing is there yet
function Fd:read() end
---@param bytes string
---@param from? integer
---@return integer|nil taken
---@return string? err
function Fd:write(bytes, from) end
---@return sip.core.Fd|nil conn
---@return string? err
function Fd:accept() end
---The signals a signal fd has queued ("HUP", "TERM", ...).
---@return string[]
function Fd:signals() end
---@return integer
function Fd:fileno() end
function Fd:close() end

---Blocks those signals and queues them on a signalfd, read on the loop.
---@param names string[] "HUP", "TERM", "INT", "USR1", "USR2"
---@return sip.core.Fd|nil
---@return string? err
function core.signals(names) end

---@param path string
---@return sip.core.Fd|nil
---@return string? err
function core.listen_unix(path) end

---@param host string
---@param port integer 0 picks one
---@return sip.core.Fd|nil
---@return string? address_or_err "HOST:PORT" bound
function core.listen_tcp(host, port) end

---A blocking client socket with that send/receive timeout (ms, default 5000).
---@param path string
---@param timeout_ms? integer
---@return sip.core.Fd|nil
---@return string? err
function core.connect_unix(path, timeout_ms) end

---Seconds since the epoch, with microseconds.
---@return number
function core.realtime() end

---Seconds on the monotonic clock, with nanoseconds (for durations).
---@return number
function core.monotime() end

---Every SIP message of an endpoint's transport, counted, and written as pcap or HEPv3.
---@class sip.core.Capture
local Capture = {}
---@param path string
---@return boolean|nil
---@return string? err
function Capture:pcap(path) end
---@param host string
---@param port integer
---@param id? integer capture agent id
---@return boolean|nil
---@return string? err
function Capture:hep(host, port, id) end
function Capture:flush() end
---@return table counts requests_in/out by method, responses_in/out by class, pcap_written, hep_sent, hep_failed
function Capture:stats() end
function Capture:close() end

---@param ep_core userdata an endpoint's core (ep.core)
---@return sip.core.Capture
function core.capture(ep_core) end

return core
