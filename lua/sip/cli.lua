--- sip.cli: the `luasip` command — `serve` (registrar + proxy + digest + echo bot) and a
-- small client (message, options, register) on the same stack.
local sip = require "sip"

local cli = {}

local USAGE = [==[
usage:
  luasip serve [--listen udp:127.0.0.1:5060]... [--domain localhost] [--users FILE]
               [--listen tls:127.0.0.1:5061 --cert FILE --key FILE [--ca FILE]]
               [--listen ws:127.0.0.1:8080] [--listen wss:127.0.0.1:8443]   (RFC 7118;
                   GET / there is the chat page) [--web DIR]   (serve that page folder)
               [--no-auth] [--quiet] [--t1 MS] [--algorithms MD5 | SHA-256,MD5]
               [--trust CIDR]...   (peers that may relay anywhere, without credentials)
               [--max-transactions N] [--overload-ms MS]   (shed past this queueing; 0: off)
               [--rate-limit N] [--rate-burst M]   (requests/s per source IP; 0: off)
               [--rate-exempt CIDR|none]...   (who skips it; default loopback and --trust)
               [--no-huge-pages]   (keep malloc off transparent huge pages)
               [--dns HOST:PORT]   (the DNS server for RFC 3263; default /etc/resolv.conf)
               [--script FILE]   (a global route(req, serve) decides; SIGHUP reloads it)
               [--control PATH]  (luasip ctl's socket; default in $XDG_RUNTIME_DIR or /tmp)
               [--metrics HOST:PORT]   (Prometheus text at /metrics)
               [--capture FILE.pcap] [--hep udp:HOST:PORT]   (every SIP message in and out)
               [--log-format text|json]   (json: one object per transaction)
               [--store memory | sqlite:FILE | redis://HOST:PORT[/DB]]
                   (registrations and offline messages; default
                    sqlite:$XDG_DATA_HOME/luasip/luasip.db, else ~/.local/share/luasip/luasip.db)
               [--workers N]   (N processes sharing the ports, SO_REUSEPORT; needs a
                                sqlite: or redis:// store)
  luasip message URI TEXT [--from URI] [--proxy URI] [--user U --password P] [--dns HOST:PORT]
               [--ca FILE]   (a TEXT over 1300 bytes goes in an MSRP session: INVITE, SEND, BYE)
  luasip options URI [--proxy URI] [--dns HOST:PORT] [--ca FILE]
  luasip register --registrar URI --user U --password P [--aor URI] [--expires S]
               [--dns HOST:PORT] [--ca FILE]
  (sips: URIs and ;transport=tls go over TLS; --ca: the CAs to trust instead of the system's)
  luasip ctl [--control PATH] reload | stats | registrations [AOR]
]==]

-- --name value / --flag / positional arguments. flags: the options that take no value;
-- values: those that take one. Anything else is an error rather than a guess (a misspelt
-- flag must not swallow the next argument).
local function parse_args(argv, flags, values)
  local opts, pos = { listen = {} }, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name = a:match("^%-%-([%w%-]+)$")
    local key = name and name:gsub("%-", "_")
    if key and flags[key] then
      opts[key] = true
    elseif key and values[key] then
      local v = argv[i + 1]
      if v == nil then
        return nil, "--" .. name .. " needs a value"
      end
      if key == "listen" or key == "trust" or key == "rate_exempt" then
        opts[key] = opts[key] or {}
        opts[key][#opts[key] + 1] = v
      else
        opts[key] = v
      end
      i = i + 1
    elseif a:match("^%-.") then
      return nil, "unknown option " .. a
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

local function set(list)
  local t = {}
  for _, k in ipairs(list) do
    t[k] = true
  end
  return t
end

-- A whole number in [min, max] from the command line, or nil.
local function whole(s, min, max)
  local n = s and s:match("^%d+$") and tonumber(s)
  return n and n >= min and n <= max and n or nil
end

--- Users file: "user:password", "user:password:alias1,alias2" (the other user parts that
-- user may register and send as) or htdigest "user:realm:HA1" lines, # comments. With
-- three fields the last colon starts the aliases: a password with a colon in it is written
-- with a colon after it ("user:pa:ss:").
function cli.load_users(path)
  local f, err = io.open(path)
  local text = f and f:read("a")
  if f then
    f:close()
  end
  if not text then   -- (a directory opens, and fails only when read)
    return nil, err or (path .. ": cannot be read")
  end
  local users = {}
  local n = 0
  for line in (text:gsub("\r?\n?$", "\n")):gmatch("([^\n]*)\r?\n") do
    n = n + 1
    line = line:gsub("#.*$", ""):match("^%s*(.-)%s*$")
    if line ~= "" then
      local u, realm, ha1 = line:match("^([^:]+):([^:]*):(%x+)$")
      if u and #ha1 == 32 then
        users[u] = { realm = realm, ha1 = ha1:lower() }
      else
        local user, pw = line:match("^([^:]+):(.*)$")
        if not user then
          return nil, path .. ":" .. n .. ": want user:password or user:realm:HA1"
        end
        local aliases
        local p2, list = pw:match("^(.*):([^:]*)$")
        if p2 then
          pw, aliases = p2, {}
          for a in list:gmatch("[^,%s]+") do
            aliases[#aliases + 1] = a
          end
        end
        users[user] = { password = pw, aliases = aliases }
      end
    end
  end
  return users
end

local function log_line(quiet)
  if quiet then
    return function() end
  end
  return function(fmt, ...)
    io.stdout:write(os.date("!%H:%M:%S "), string.format(fmt, ...), "\n")
    io.stdout:flush()
  end
end

-- Requests per second per source IP, and the burst a source may spend at once, for a public
-- edge: a phone sends a few a minute, an office of 100 phones behind one NAT address a few a
-- second at its busiest. A trunk, an SBC or another proxy carries everyone's requests from one
-- address: trust it (its addresses exempt, loopback by default) rather than raise this.
local RATE_DEFAULT = 200
local BURST_PER_RATE = 2

--- cli.server(opts) -> server: the `serve` job, usable in-process (specs) or from the CLI.
-- opts: listen = {...}, domain =, users = table | nil, no_auth = bool, quiet = bool, t1 =,
-- rate_limit = requests/s per source IP (0 or false: off), rate_burst =, log = fn(fmt, ...),
-- trust = { CIDR, ... } (peers that relay anywhere without credentials, sip.policy, and
-- pass the rate limit, as loopback does), rate_exempt = { CIDR, ... } (instead of those),
-- store = a sip.store or its name ("memory", "sqlite:FILE", "redis://..."; default memory)
-- max_connections =, max_connections_per_ip =, partial_timeout_ms = (sip.endpoint's limits)
function cli.server(opts)
  local store, serr = opts.store or "memory", nil
  if type(store) == "string" then
    store, serr = sip.store.open(store)
    if not store then
      return nil, serr
    end
  end
  -- every store call timed (luasip_store_latency_seconds in /metrics)
  store = sip.store.timed(store)
  local ops = require "sip.ops"
  local json_write
  if opts.log_format == "json" and not opts.log then
    -- every line JSON: a transaction per object, and serve's other lines as { time, msg }
    opts.log, json_write = ops.json_logger()
  end
  local log = opts.log or log_line(opts.quiet)
  -- quiet: nobody reads the outcome of a relay, so the core finishes it without the script
  local silent = opts.quiet and not opts.log
  local relay_opts = silent and { wait = false } or nil
  -- keys shared through the store (before the endpoint listens: waiting on the store runs
  -- the loop, and a request must not meet an endpoint without its route)
  local keys, kerr = sip.store.shared_keys(store)
  if not keys then
    store:close()
    return nil, "store: " .. tostring(kerr)
  end
  if opts.shared_store then
    store.shared = true   -- other workers write it too: read it afresh
  end
  local tls = (opts.cert or opts.ca) and { cert = opts.cert, key = opts.key, ca = opts.ca } or nil
  -- failed TLS handshakes (a few a second at most: the core limits them) are logged even
  -- without --debug; only with a TLS listener, so the core formats no lines otherwise
  local core_log = (not opts.quiet and opts.debug) and "debug" or nil
  if not core_log and not opts.quiet and opts.cert then
    core_log = function(line)
      if line:find("^transport tls failed") then log("%s", line) end
    end
  end
  local ep, err = sip.endpoint { listen = opts.listen, t1 = opts.t1, tls = tls,
    max_transactions = opts.max_transactions, overload_ms = opts.overload_ms,
    dns = cli.dns_opts(opts.dns), log = core_log,
    reuse_port = opts.reuse_port, max_connections = opts.max_connections,
    max_connections_per_ip = opts.max_connections_per_ip,
    partial_timeout_ms = opts.partial_timeout_ms }
  if not ep then
    return nil, err
  end
  local domain = (opts.domain or "localhost"):lower()
  ep:set_domains { domain }
  cli.web(ep, opts, domain)
  local users = opts.users or {}
  local function is_ours(uri)
    if type(uri) == "table" then
      return uri.host and (uri.host:lower() == domain or ep:is_local(uri)) or false
    end
    local host = sip.core.uri_hostport(uri)
    return host == domain or ep:is_local(uri)
  end
  local registrar = sip.registrar.new { store = store, min_expires = opts.min_expires or 1,
    max_expires = opts.max_expires or 3600, endpoint = ep,
    canonical = function(u)
      -- an AOR at any of our addresses (with or without the port: clients often leave it
      -- out) is an AOR of the domain
      local host = u.host and u.host:lower():gsub("^%[(.*)%]$", "%1")
      if host == domain or (host and ep:_local_hosts()[host]) then
        u.host, u.port = domain, nil
      end
      return u
    end }
  -- MESSAGE for a known user with no binding: 202, stored, sent when the user registers
  local offline = sip.offline.new { ep = ep, store = store, registrar = registrar, log = log }
  local auth_www, auth_proxy
  if not opts.no_auth then
    local only_md5 = false
    for _, u in pairs(users) do
      if u.ha1 then
        only_md5 = true   -- htdigest HA1s are MD5: SHA-256 could never be checked
      end
    end
    local function credentials(user, realm)
      local u = users[user]
      if not u then
        return nil
      end
      if u.ha1 then
        return u.ha1, true
      end
      return u.password
    end
    -- Offered in this order. Only MD5 by default: sipp and sipsak read only the first
    -- challenge, and baresip 1.0 fails the request on any challenge that is not MD5 even when
    -- an MD5 one follows (RFC 8760's SHA-256 first: --algorithms SHA-256,MD5).
    local algs = opts.algorithms or { "MD5" }
    if only_md5 then
      algs = { "MD5" }
    end
    auth_www = sip.auth.digest { realm = domain, credentials = credentials, algorithms = algs,
      secret = keys.digest_secret and (keys.digest_secret .. ":www"), nc_check = keys.nc_check }
    auth_proxy = sip.auth.digest { realm = domain, credentials = credentials, algorithms = algs,
      proxy = true, secret = keys.digest_secret and (keys.digest_secret .. ":proxy"),
      nc_check = keys.nc_check }
  end

  local aliases = {}
  for name, u in pairs(users) do
    aliases[name] = u.aliases
  end
  local policy = sip.policy.new { ep = ep, domain = domain, auth = auth_www,
    proxy_auth = auth_proxy, trust = opts.trust, registrar = registrar, aliases = aliases,
    log = log }

  -- The echo bot: 200 to the MESSAGE, then the same text back to the sender. An INVITE
  -- with an MSRP offer is a session: each message goes back in it (sip.msrp).
  local function echo_session(req)
    local s = sip.msrp.accept(req)
    local from = req:addr("From").uri
    while s do
      local text, ct = s:receive()
      if not text then
        break
      end
      local ok, serr = s:send(text, ct)
      log("echo %s (session): %d bytes %s", from, #text, ok and "sent" or tostring(serr))
    end
  end

  local function echo(req)
    if req.method == "INVITE" and sip.msrp.is_offer(req) then
      return echo_session(req)
    end
    if req.method ~= "MESSAGE" then
      if req.method == "OPTIONS" then
        return req:reply(200)
      end
      return req:reply(488, "The echo bot only takes MESSAGE")
    end
    req:reply(200)
    -- a phone's notices about messages (Linphone's delivery reports, RFC 5438; "typing...",
    -- RFC 3994) are taken, not echoed: back at the phone they would be about nothing it sent
    local ctype = (req.content_type or ""):lower():match("^%s*([^;%s]+)")
    if ctype == "message/imdn+xml" or ctype == "application/im-iscomposing+xml" then
      return
    end
    local from = req:addr("From")
    local aor = sip.registrar.aor(from.uri)
    local targets = aor and registrar:lookup(aor) or {}
    local target = targets[1] and targets[1].uri or from.uri
    -- through the sender's Path, or to where it registered from (NAT): sip.registrar.target
    local hop = targets[1] and sip.registrar.target(targets[1])
    hop = type(hop) == "table" and hop or {}
    local back = sip.request { method = "MESSAGE", uri = target,
      from = "<sip:echo@" .. domain .. ">", to = "<" .. from.uri .. ">",
      headers = hop.route and { Route = hop.route } or nil,
      body = req.body, content_type = req.content_type or "text/plain" }
    local res = back and ep:request(back, { target = not hop.route and hop.flow or nil })
    log("echo %s -> %s: %s", aor or from.uri, target, res and res.status or "no response")
  end

  -- §21.5.4: 503 with Retry-After past the rate per source IP; the core refuses those
  -- before this script runs (ACK and CANCEL pass, our own spirals are never refused)
  local limiter
  local rate = opts.rate_limit
  if rate == nil then
    rate = RATE_DEFAULT
  end
  if rate and rate > 0 then
    -- exempt: loopback and the --trust blocks (opts.rate_exempt instead, for specs)
    local exempt = opts.rate_exempt
    if not exempt then
      exempt = { "127.0.0.0/8", "::1/128" }
      for _, c in ipairs(opts.trust or {}) do
        exempt[#exempt + 1] = c
      end
    end
    limiter = { rate = rate, burst = opts.rate_burst or rate * BURST_PER_RATE, exempt = exempt }
    ep:rate_limit(limiter)
    function ep.on_rate_limited(ip, r, retry)
      log("rate limit: %s over %g requests/s, answering 503 (Retry-After %d)", ip, r, retry)
    end
  end

  -- The default policy, as a function a --script may call for the cases it leaves alone.
  -- Its line per transaction is the JSON object with --log-format json (sip.ops).
  local tlog = json_write and function() end or log
  local function default(req)
    local m = req.method
    if m ~= "ACK" and not req:validate() then
      return   -- §16.3 refused it (483, 482, 416, 420) before anything else
    end
    -- who may relay, and as whom (sip.policy): in-dialog requests along our Record-Route
    -- only, foreign domains only for local users (authenticated, as themselves) and
    -- trusted peers; it answers what it refuses
    local ok, why = policy:check(req)
    if not ok then
      if why == 401 or why == 407 then
        log("%s %s -> challenge", m, m == "REGISTER" and req:header("To") or req.uri)
      end
      return
    end
    local rhost, rport, ruser = sip.core.uri_hostport(req)   -- its Request-URI
    local ruri_ours = rhost and (rhost == domain or ep:is_local(req.uri)) or false
    if why.register then
      local code, _, _, reg_aor = registrar:handle(req)
      tlog("REGISTER %s from %s -> %d", tostring(sip.registrar.aor(req:addr("To").uri)),
        req.source, code)
      if code == 200 and reg_aor then
        offline:deliver(reg_aor)
      end
      return
    end
    if why.in_dialog then
      local res = req:relay(relay_opts)
      if m ~= "ACK" and not silent then
        tlog("%s %s (in dialog) -> %s", m, req.uri, type(res) == "userdata" and res.status or "-")
      end
      return
    end
    if ruri_ours then
      if ruser == "echo" then
        return echo(req)
      end
      if not ruser then
        if m == "OPTIONS" then
          return req:reply(200, nil, { headers = { Allow = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER" } })
        end
        return req:reply(404)
      end
      local aor = "sip:" .. ruser .. "@" .. domain
      local targets = registrar:targets(aor)
      if #targets == 0 then
        if m == "MESSAGE" and users[ruser] then
          return offline:accept(req, aor)
        end
        local code = users[ruser] and 480 or 404
        tlog("%s %s -> %d", m, aor, code)
        return req:reply(code)
      end
      local res = req:relay(targets, relay_opts)
      if not silent then
        tlog("%s %s -> %s", m, aor, type(res) == "userdata" and res.status or "-")
      end
      return
    end
    local res = req:relay(relay_opts)
    if not silent then
      tlog("%s %s (forwarded) -> %s", m, req.uri, type(res) == "userdata" and res.status or "-")
    end
  end

  -- what a --script gets as its second argument (sip.script)
  local serve = { ep = ep, registrar = registrar, auth = auth_www, proxy_auth = auth_proxy,
    policy = policy, echo = echo, log = log, default = default, domain = domain,
    users = users, is_ours = is_ours, limiter = limiter }
  local script
  local route = default
  if opts.script then
    local sip_script = require "sip.script"
    local serr
    script, serr = sip_script.load(opts.script, serve)
    if not script then
      ep:close()
      return nil, serr
    end
    route = function(req) return script.route(req, serve) end
  end
  serve.script = script
  if json_write then
    route = ops.log_transactions(route, ep, json_write)
  end
  -- quiet: nobody logs in-dialog requests, so the core relays them without this function
  -- (a script sees every request)
  ep:route(route, { relay_in_dialog = silent and not script })

  -- reload, capture, metrics, control socket (sip.ops)
  local ok, oerr = ops.start(serve, opts)
  if not ok then
    ep:close()
    return nil, oerr
  end

  -- expired bindings vanish on time, old stored messages every minute (in a coroutine: a
  -- store's calls may wait)
  local sweeps, stopped = 0, false
  local function sweep()
    if stopped then
      return
    end
    sip.spawn(function()
      registrar:expire()
      if sweeps % 60 == 0 then
        offline:expire()
      end
      sweeps = sweeps + 1
    end)
    sip.sched.loop:timer(1000, sweep)
  end
  sweep()

  serve.store, serve.offline = store, offline
  serve.stop = function()
    stopped = true
    ops.stop(serve)
    ep:close()
    store:close()
  end
  return serve
end

-- The checkout (or rock) this file is in: its web/ folder holds the chat page, and
-- build/web/node_modules/jssip/dist the JsSIP that `make` installs from npm.
local function root_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/lua/sip/cli%.lua$") or (src:match("^@lua/sip/cli%.lua$") and ".")
end

--- cli.web(ep, opts, domain): what WS/WSS listeners serve over plain HTTP: the chat page
-- (opts.web, else the checkout's web/) at /, JsSIP at /lib/, and /config.js with the domain.
function cli.web(ep, opts, domain)
  local ws = false
  for _, l in ipairs(opts.listen or {}) do
    ws = ws or l:match("^wss?:") ~= nil
  end
  if not ws then
    return
  end
  local root = root_dir()
  local page = opts.web or (root and root .. "/web")
  if page then
    ep.core:web("/", page)
  end
  if root then
    ep.core:web("/lib/", root .. "/build/web/node_modules/jssip/dist")
  end
  ep.core:web("/config.js", nil, ("window.LUASIP = { domain: %q };\n"):format(domain))
end

-- Workers of one serve: beyond the cores of a big machine nothing is gained.
local MAX_WORKERS = 64

local function serve(argv)
  local opts, pos = parse_args(argv, set { "no_auth", "quiet", "debug", "no_huge_pages" },
    set { "listen", "web", "domain", "users", "t1", "algorithms", "max_transactions", "rate_limit",
      "rate_burst", "trust", "dns", "cert", "key", "ca", "script", "control", "metrics",
      "capture", "hep", "log_format", "store", "workers", "worker",
      "overload_ms", "rate_exempt" })
  if opts and #pos > 0 then
    opts, pos = nil, "serve takes no argument " .. pos[1]
  end
  if not opts then
    io.stderr:write("luasip: ", pos, "\n", USAGE)
    return 2
  end
  for _, k in ipairs { "t1", "max_transactions" } do
    if opts[k] then
      opts[k] = whole(opts[k], 1, 2 ^ 31 - 1)
      if not opts[k] then
        io.stderr:write("luasip: --", k:gsub("_", "-"), " wants a whole number above 0\n", USAGE)
        return 2
      end
    end
  end
  if not opts.no_huge_pages and os.getenv("LUASIP_NO_HUGE_PAGES") == nil then
    -- a server holding every transaction for Timer J: malloc on transparent huge pages
    -- (runs this command again with glibc.malloc.hugetlb=1; lsip_thp.c says why)
    sip.core.use_huge_pages()
  end
  if #opts.listen == 0 then
    opts.listen = { "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060" }
  end
  if opts.users then
    local users, uerr = cli.load_users(opts.users)
    if not users then
      io.stderr:write("luasip: ", uerr, "\n")
      return 1
    end
    opts.users = users
  elseif not opts.no_auth then
    io.stderr:write("luasip: no --users file: every request would be refused (use --no-auth)\n")
  end
  if opts.overload_ms then
    opts.overload_ms = whole(opts.overload_ms, 0, 2 ^ 31 - 1)
    if not opts.overload_ms then
      io.stderr:write("luasip: --overload-ms wants a whole number of ms (0: off)\n", USAGE)
      return 2
    end
  end
  for _, k in ipairs { "rate_limit", "rate_burst" } do
    if opts[k] then
      local n = tonumber(opts[k])
      if not n or n < 0 then
        io.stderr:write("luasip: --", k:gsub("_", "-"), " wants a number\n", USAGE)
        return 2
      end
      opts[k] = n
    end
  end
  if opts.rate_exempt then
    local list = {}
    for _, c in ipairs(opts.rate_exempt) do
      if c ~= "none" then
        local ok, cerr = sip.policy.cidr(c)
        if not ok then
          io.stderr:write("luasip: --rate-exempt: ", cerr, "\n", USAGE)
          return 2
        end
        list[#list + 1] = c
      end
    end
    opts.rate_exempt = list
  end
  for _, c in ipairs(opts.trust or {}) do
    local ok, cerr = sip.policy.cidr(c)
    if not ok then
      io.stderr:write("luasip: --trust: ", cerr, "\n", USAGE)
      return 2
    end
  end
  if opts.algorithms then
    local list = {}
    for a in opts.algorithms:gmatch("[^,%s]+") do
      list[#list + 1] = a
    end
    opts.algorithms = list
  end
  if opts.log_format and opts.log_format ~= "json" and opts.log_format ~= "text" then
    io.stderr:write("luasip: --log-format wants text or json\n", USAGE)
    return 2
  end
  opts.control_required = opts.control ~= nil
  opts.control = opts.control or require("sip.ops").default_control_path()
  opts.store = opts.store or ("sqlite:" .. sip.store.default_path())
  if opts.workers then
    local n = whole(opts.workers, 1, MAX_WORKERS)
    if not n then
      io.stderr:write("luasip: --workers wants a whole number from 1 to ", MAX_WORKERS, "\n", USAGE)
      return 2
    end
    if n > 1 then
      return require("sip.workers").master(n, opts)
    end
  end
  if opts.worker then
    local ok, werr = require("sip.workers").worker(opts)
    if not ok then
      io.stderr:write("luasip: ", werr, "\n")
      return 2
    end
  end
  local srv, serr = cli.server(opts)
  if not srv then
    io.stderr:write("luasip: ", serr, "\n")
    return 1
  end
  -- HUP: the script again; TERM: a clean stop (control socket removed, capture flushed).
  -- Through signalfd on the loop: no Lua runs inside a signal handler.
  require("sip.ops").signals {
    HUP = function() srv.reload() end,
    TERM = function() srv.ep:stop() end,
  }
  if not opts.quiet then
    local line = ("luasip serving %s for domain %s (%s); echo bot at sip:echo@%s"):format(
      table.concat(srv.ep:addresses(), " "), srv.domain,
      opts.no_auth and "no auth" or "digest auth", srv.domain)
      .. (srv.metrics and ("; metrics at http://" .. srv.metrics.address .. "/metrics") or "")
      .. (srv.control and ("; control at " .. srv.control.path) or "")
    if opts.log_format == "json" then
      srv.log("%s", line)
    else
      print(line)
      io.stdout:flush()
    end
  end
  local ok, rerr = pcall(srv.ep.run, srv.ep)
  srv.stop()
  if not ok then
    error(rerr, 0)
  end
  return 0
end

--- --dns HOST:PORT (or a table as sip.endpoint takes) -> the endpoint's dns option
function cli.dns_opts(v)
  if type(v) == "string" then
    return { servers = { v } }
  end
  return v
end

local function client_ep(opts)
  local tls = opts and opts.ca and { ca = opts.ca } or nil
  return assert(sip.endpoint { listen = { "udp:127.0.0.1:0", "tcp:127.0.0.1:0" }, tls = tls,
    dns = cli.dns_opts(opts and opts.dns) })
end

-- A client command's arguments, or nil after saying what is wrong.
local function client_args(argv, values, npos)
  local opts, pos = parse_args(argv, {}, set(values))
  if opts and #pos ~= npos then
    opts, pos = nil, ("wants %d argument%s, got %d"):format(npos, npos == 1 and "" or "s", #pos)
  end
  if not opts then
    io.stderr:write("luasip: ", pos, "\n", USAGE)
  end
  return opts, pos
end

local function message(argv)
  local opts, pos = client_args(argv, { "from", "proxy", "user", "password", "dns", "ca" }, 2)
  if not opts then
    return 2
  end
  local ep = client_ep(opts)
  -- over 1300 bytes the text goes in an MSRP session (INVITE, SEND, BYE; sip.msrp)
  local res, err = ep:message(pos[1], pos[2], { from = opts.from, user = opts.user,
    content_type = "text/plain", target = opts.proxy, password = opts.password })
  print(res and (res.status .. " " .. res.reason) or ("error: " .. tostring(err)))
  ep:close()
  return res and res.status < 300 and 0 or 1
end

local function options(argv)
  local opts, pos = client_args(argv, { "proxy", "dns", "ca" }, 1)
  if not opts then
    return 2
  end
  local ep = client_ep(opts)
  local res, err = ep:options(pos[1], { target = opts.proxy })
  print(res and (res.status .. " " .. res.reason) or ("error: " .. tostring(err)))
  ep:close()
  return res and res.status < 300 and 0 or 1
end

local function register(argv)
  local opts = client_args(argv, { "registrar", "user", "password", "aor", "expires", "dns", "ca" }, 0)
  if not opts then
    return 2
  end
  if not opts.registrar or not opts.user or (opts.expires and not whole(opts.expires, 0, 2 ^ 32 - 1)) then
    io.stderr:write("luasip: register wants --registrar and --user (and --expires in seconds)\n",
      USAGE)
    return 2
  end
  local ep = client_ep(opts)
  local r = sip.uri.parse(opts.registrar)
  local aor = opts.aor or ("sip:" .. opts.user .. "@" .. r.host)
  local req = assert(sip.request { method = "REGISTER", uri = opts.registrar, from = aor, to = aor,
    contact = ep:uri(opts.user), headers = { Expires = opts.expires or "3600" } })
  local res, err = ep:request(req, { user = opts.user, password = opts.password })
  print(res and (res.status .. " " .. res.reason) or ("error: " .. tostring(err)))
  ep:close()
  return res and res.status < 300 and 0 or 1
end

--- cli.main(argv) -> exit status: the `luasip` command line (argv as `arg`)
function cli.main(argv)
  local cmd = argv[1]
  for _, a in ipairs(argv) do
    if a == "--help" or a == "-h" then
      io.stdout:write(USAGE)
      return 0
    end
  end
  local rest = { table.unpack(argv, 2) }
  local commands = { serve = serve, message = message, options = options, register = register,
    ctl = function(a) return require("sip.ops").ctl(a) end }
  local run = commands[cmd]
  if not run then
    io.stderr:write(USAGE)
    return cmd and 2 or 0
  end
  -- what a bad value makes the library raise (an address it cannot listen on, a URI it
  -- cannot parse) is one line for the user, not a trace; Ctrl-C ends quietly
  local ok, code = pcall(run, rest)
  if ok then
    return code
  end
  local msg = tostring(code)
  if msg:find("interrupted!", 1, true) then
    return 130
  end
  io.stderr:write("luasip: ", (msg:gsub("^[^:]*%.lua:%d+: ", "")), "\n")
  return 1
end

return cli
