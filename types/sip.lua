---@meta sip
-- Definitions of luasip's public API for the Lua language server (LuaLS): what `require "sip"`
-- gives. Add this folder to `workspace.library`. spec/types_spec.lua checks these names
-- against the modules' real exports: a public function without a definition here fails it.

---@class sip
---@field version string the rock's version ("scm-1", "0.1.0")
---@field core sip.core the C module
---@field uri sip.uri
---@field addr sip.addr
---@field random sip.random
---@field sched sip.sched
---@field auth sip.auth
---@field sdp sip.sdp
---@field cpim sip.cpim
---@field registrar sip.registrar loaded on first use
---@field policy sip.policy loaded on first use
---@field msrp sip.msrp session-mode IM (MSRP)
---@field dns sip.dns RFC 3263 lookups, loaded on first use
---@field store sip.store state stores, loaded on first use
---@field offline sip.offline offline messages, loaded on first use
---@field workers sip.workers serve --workers, loaded on first use
---@field ratelimit sip.ratelimit loaded on first use
---@field cli sip.cli loaded on first use
---@field proxy table loaded on first use (it adds req:relay, ep:set_domains)
---@field dialog table loaded on first use (it adds ep:call, ep:dial, req:answer)
local sip = {}

---Parse a message. Never raises on bad input.
---@param bytes string
---@param opts? { stream?: boolean, max_size?: integer, max_headers?: integer, max_line?: integer }
---@return sip.Msg|nil msg
---@return string? reason a one-line reason when bytes are no SIP message
function sip.parse(bytes, opts) end

---The standard reason phrase of a status code ("Not Found").
---@param code integer
---@return string
function sip.reason(code) end

---Build a request; missing pieces get RFC 3261 §8.1.1 defaults (From tag, Call-ID, CSeq 1,
---Max-Forwards 70, a Via with a fresh branch).
---@param t { method: string, uri: string, from?: string|sip.NameAddr, to?: string|sip.NameAddr, call_id?: string, cseq?: integer, via?: string, contact?: string|sip.NameAddr, max_forwards?: integer, headers?: sip.Headers, body?: string, content_type?: string }
---@return sip.Request|nil req
---@return string? reason
function sip.request(t) end

---A new endpoint on the shared event loop.
---@param opts sip.EndpointOptions
---@return sip.Endpoint|nil ep
---@return string? err
function sip.endpoint(opts) end

---A name-addr string from "sip:a@b", "Name <sip:a@b>" or { uri=, display=, params= }.
---@param v string|sip.NameAddr
---@param what string names v in the error a bad v raises
---@return string
function sip.name_addr(v, what) end

---Append "Name: value" lines for a headers table to lines.
---@param lines string[]
---@param headers? sip.Headers
function sip.add_header_lines(lines, headers) end

---Suspend the calling coroutine only, for seconds.
---@param seconds number
function sip.sleep(seconds) end

---Run fn(...) in a new coroutine now, until it first waits.
---@param fn function
---@param ... any
---@return thread
function sip.spawn(fn, ...) end

---A name-addr as a table: sip.request's from/to/contact, m:addr()'s result.
---@class sip.NameAddr
---@field uri string
---@field display? string
---@field params? table<string, string|true>
---@field tag? string

---Headers for builders: { {"Name", "value"}, ... } pairs kept in order, and Name = value
---or Name = { value, ... } (sorted by name).
---@alias sip.Headers table<string|integer, string|string[]|number>

return sip
