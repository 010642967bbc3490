---@meta sip.cli
-- sip.cli: the `luasip` command, usable in-process.

---@class sip.cli
local cli = {}

-----dns HOST:PORT (or a table as sip.endpoint takes) -> the endpoint's dns option.
---@param v string|table
---@return table|nil dns
function cli.dns_opts(v) end

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

--- What ws:/wss: listeners serve over plain HTTP: the chat page (opts.web, else the
--- checkout's web/) at /, JsSIP at /lib/, /config.js with the domain.
---@param ep sip.Endpoint
---@param opts { listen?: string[], web?: string }
---@param domain string
function cli.web(ep, opts, domain) end

return cli
