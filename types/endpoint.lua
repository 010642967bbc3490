---@meta
-- Endpoints (sip.endpoint, with the methods sip.ua, sip.dialog and sip.proxy add).

---@class sip.EndpointOptions
---@field listen string[] "udp:HOST:PORT", "tcp:HOST:PORT" (port 0: any)
---@field log? fun(line: string, level: string)|string a function, or the lowest level printed
---@field t1? integer ms (RFC 3261 T1, 500)
---@field t2? integer ms
---@field t4? integer ms
---@field timer_c? integer ms a proxied INVITE waits for a final response (181000)
---@field max_transactions? integer past it: 503 + Retry-After (65536)
---@field max_size? integer bytes of a message
---@field max_headers? integer header lines of a message
---@field max_line? integer bytes of a header line
---@field max_connections? integer TCP connections
---@field idle_timeout_ms? integer a quiet TCP connection is closed after it
---@field partial_timeout_ms? integer a partial message on TCP may take this long
---@field reuse_port? boolean SO_REUSEPORT on the listeners

---Options of ep:request and the calls made on it.
---@class sip.RequestOptions
---@field target? string URI to send to (else the Route or Request-URI)
---@field on_progress? fun(res: sip.Response) every provisional response
---@field via? "replace"|"push"|"keep"
---@field user? string answers 401/407 once per realm
---@field password? string
---@field timeout? number seconds; an INVITE is CANCELled after it

---@class sip.Endpoint
---@field on_rate_limited? fun(ip: string, rate: number, retry: integer) first refusal of a source per log window
local Endpoint = {}

---@return string[] addresses "udp:127.0.0.1:5060", ... (real ports when 0 was asked)
function Endpoint:addresses() end

---@param kind "udp"|"tcp"
---@return string|nil hostport "127.0.0.1:5060" of the first listener of that transport
function Endpoint:address(kind) end

---"sip:user@HOST:PORT" on this endpoint (;transport=tcp for TCP).
---@param user string
---@param kind? "udp"|"tcp"
---@return string
function Endpoint:uri(user, kind) end

---fn(req) handles every request of that method, each in its own coroutine.
---@param method string "MESSAGE", "INVITE", ...
---@param fn fun(req: sip.Request)
---@return sip.Endpoint self
function Endpoint:on(method, fn) end

---fn(req) routes every request no on() handler takes. relay_in_dialog: requests inside a
---dialog are relayed by the core along their Route set and fn never sees them.
---@param fn fun(req: sip.Request)
---@param opts? { relay_in_dialog?: boolean }
---@return sip.Endpoint self
function Endpoint:route(fn, opts) end

---A token bucket per source IP, in the core (503 + Retry-After past it); false turns it off.
---@param opts { rate: number, burst?: number, max_sources?: integer, log_window?: number }|false
---@return sip.Endpoint self
function Endpoint:rate_limit(opts) end

---Counters: transactions, connections, pending requests, running handlers, ...
---@return table<string, integer>
function Endpoint:stats() end

---The Allow header value: the methods this endpoint answers.
---@return string
function Endpoint:allow() end

---Where a request goes (§8.1.2, §16.12): the top Route if it is a loose router, else the
---Request-URI.
---@param req sip.Request
---@return string uri
function Endpoint:target_of(req) end

---Send a request in a client transaction; yields until the final response.
---@param req sip.Request
---@param opts? sip.RequestOptions
---@return sip.Response|nil res
---@return string? err
function Endpoint:request(req, opts) end

---Send without a transaction (the ACK of a 2xx, stateless relays).
---@param req sip.Msg
---@param target? string
---@param via? "replace"|"push"|"keep"
---@return true|nil ok
---@return string? err
function Endpoint:send(req, target, via) end

---@param uri string
---@param opts? sip.RequestOptions|{ from?: string, to?: string, headers?: sip.Headers }
---@return sip.Response|nil res
---@return string? err
function Endpoint:options(uri, opts) end

---A pager-mode MESSAGE (RFC 3428); yields until the final response.
---@param to string
---@param text string
---@param opts? sip.RequestOptions|{ content_type?: string, from?: string, to?: string, headers?: sip.Headers }
---@return sip.Response|nil res
---@return string? err
function Endpoint:message(to, text, opts) end

---RFC 3263 targets for uri through this endpoint's resolver, for the transports it listens
---on (see sip.dns.resolve); yields.
---@param uri string
---@return sip.dns.Target[]|nil targets
---@return string? err
function Endpoint:resolve(uri) end

---A chat session in the session model: an INVITE offering MSRP; yields until it is up.
---@param to string
---@param opts? sip.RequestOptions|{ max_size?: integer, accept_types?: string[], chunk_size?: integer, txn_timeout?: number, idle_timeout?: number, relay?: table, tls?: boolean }
---@return sip.ChatSession|nil s
---@return sip.Response|string|nil res the 2xx, the final response, or an error
function Endpoint:chat(to, opts) end

---Keep a binding registered (RFC 3261 §10.2), refreshed in the background.
---@param opts { registrar: string, aor?: string, user?: string, password?: string, expires?: integer, contact?: string, from?: string, headers?: sip.Headers }
---@return sip.Registration reg state "registering"
function Endpoint:register(opts) end

---An INVITE; yields until the call is answered (2xx, ACK sent) or failed.
---@param uri string
---@param opts? sip.CallOptions
---@return sip.Call|nil call
---@return sip.Response|string|nil res the 2xx, or the final response (or an error)
function Endpoint:call(uri, opts) end

---An INVITE running in its own coroutine: the pending call comes back at once.
---@param uri string
---@param opts? sip.CallOptions
---@return sip.PendingCall
function Endpoint:dial(uri, opts) end

---True when uri (a string or a parsed table) names this endpoint: a listening host:port,
---or a name given to set_domains.
---@param uri string|sip.Uri
---@return boolean
function Endpoint:is_local(uri) end

---Names (besides our addresses) that are us.
---@param list string[]
function Endpoint:set_domains(list) end

---Drive the shared loop until stop().
function Endpoint:run() end

---Make run() return (after unregistering what ep:register registered).
function Endpoint:stop() end

---Release sockets and transactions now (after unregistering).
function Endpoint:close() end

---Pollable protocol: wait for pollfd() to be readable or timeout() seconds, then step(0).
---@return integer fd
function Endpoint:pollfd() end

---@return "r"
function Endpoint:events() end

---@return number|nil seconds until the next timer
function Endpoint:timeout() end

---Run what is ready, waiting at most timeout seconds (default 0).
---@param timeout? number
function Endpoint:step(timeout) end
