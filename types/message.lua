---@meta
-- Messages: what sip.parse, sip.request and ep:request give, and what handlers get.
-- One userdata type for requests and responses (sip.core's; the methods that act on a
-- request that arrived are added by sip.endpoint, sip.dialog and sip.proxy).
-- sip.Request and sip.Response name the two kinds for readers; the fields of the other
-- kind are nil.

---@class sip.Msg
---@field method? string request method ("INVITE"); nil on a response
---@field uri? string Request-URI; nil on a response
---@field status? integer status code; nil on a request
---@field reason? string reason phrase; nil on a request
---@field body string "" when none
---@field call_id string
---@field cseq integer
---@field cseq_method string
---@field from_tag? string
---@field to_tag? string
---@field branch? string the top Via's branch
---@field max_forwards? integer
---@field content_length integer
---@field content_type? string
---@field is_request boolean
---@field from string the From header value
---@field to string the To header value
---@field size integer bytes on the wire
---@field source? string where a received message came from: "udp:1.2.3.4:5060"
---@field our_route? boolean true: came along our Record-Route of its dialog; false: along a Route naming us without our tag
---@field replied_final? boolean a final response was sent to this request
---@field dialog? sip.Call the dialog of an in-dialog request (a re-INVITE)
---@field cancelled? boolean a CANCEL arrived for this request
local Msg = {}

---The first value ("Via", "v", "via" all work), or nil.
---@param name string
---@return string|nil
function Msg:header(name) end

---Every value, comma lists split, in order; without a name every header as { name, value }.
---@param name? string
---@return string[]|{ [1]: string, [2]: string }[]
function Msg:headers(name) end

---The n-th (default 1) name-addr of From, To, Contact, Route... parsed.
---@param name string
---@param n? integer
---@return sip.NameAddr|nil
function Msg:addr(name, n) end

---The n-th Via (1 = top) parsed.
---@param n? integer
---@return table|nil via { transport=, host=, port=, params=, branch=, received=, rport= }
function Msg:via(n) end

---Every Via parsed, top first.
---@return table[]
function Msg:vias() end

---A new response to this request (§8.2.6), not sent.
---@param code integer
---@param reason? string
---@param to_tag? string
---@return sip.Response
function Msg:response(code, reason, to_tag) end

---Replace every header of that name.
---@param name string
---@param value string
---@return true|nil ok
---@return string? reason
function Msg:set_header(name, value) end

---Add a header (at the top when top).
---@param name string
---@param value string
---@param top? boolean
---@return true|nil ok
---@return string? reason
function Msg:add_header(name, value, top) end

---@param name string
---@return integer removed
function Msg:remove_header(name) end

---@param value string a Via value
---@return true|nil ok
---@return string? reason
function Msg:push_via(value) end

---@return true|nil ok
---@return string? reason
function Msg:pop_via() end

---@param uri string a new Request-URI
---@return true|nil ok
---@return string? reason
function Msg:set_uri(uri) end

---@param body string
---@param content_type? string
---@return true|nil ok
---@return string? reason
function Msg:set_body(body, content_type) end

---§16.6 step 3: decrement Max-Forwards (70 when absent).
---@return integer value
function Msg:decrement_max_forwards() end

---@return boolean
function Msg:is_response() end

---Send a response to this request (a To tag of ours on all but 100).
---@param code integer
---@param reason? string|{ headers?: sip.Headers, body?: string, content_type?: string }
---@param opts? { headers?: sip.Headers, body?: string, content_type?: string }
---@return true|nil ok
---@return string? err
function Msg:reply(code, reason, opts) end

---The response req:reply would send, not sent.
---@param code integer
---@param reason? string
---@param opts? { headers?: sip.Headers, body?: string, content_type?: string }
---@return sip.Response
function Msg:build_response(code, reason, opts) end

---Reply without keeping any state (§16.11).
---@param code integer
---@param reason? string
---@param opts? { headers?: sip.Headers, body?: string, content_type?: string }
---@return true|nil ok
---@return string? err
function Msg:reply_stateless(code, reason, opts) end

---A MESSAGE back to the sender of this MESSAGE, From and To swapped (the pager model, as it
---came; a session-mode message answers in its session: sip.SessionMessage:respond).
---@param text string
---@param content_type? string
---@return sip.Response|nil res
---@return string? err
function Msg:respond(text, content_type) end

---fn(req) runs in its own coroutine when a CANCEL for this request arrives.
---@param fn fun(req: sip.Request)
function Msg:on_cancel(fn) end

---After a 2xx to an INVITE: yields until its ACK.
---@param timeout? number
---@return sip.Request|nil ack
function Msg:wait_ack(timeout) end

---Answer an INVITE with a 2xx and a Contact, then yield until the ACK.
---@param code integer
---@param opts? { sdp?: string, headers?: sip.Headers, contact?: string }
---@return sip.Call|nil call
---@return string? err
function Msg:answer(code, opts) end

---§16.3 validation: true, or false after answering 483/482/416/420. Done once.
---@return boolean
function Msg:validate() end

---Proxy this request (§16): targets tried in parallel; yields until the best final
---response, which it has sent upstream. keep_failure: without a 2xx the final comes back
---and nothing goes upstream, so the request may be relayed again elsewhere (a serial
---search) or answered.
---@param targets? string|(string|{ [1]: string, route?: string, flow?: string })[]
---@param opts? { record_route?: boolean, timeout?: number, stateless?: boolean, on_response?: fun(res: sip.Response, uri: string), next_hop?: string, wait?: boolean, keep_failure?: boolean }
---@return sip.Response|true|nil res true with wait = false
---@return string? err
function Msg:relay(targets, opts) end

---A request (method, uri set).
---@class sip.Request: sip.Msg
---@field method string
---@field uri string

---A response (status, reason set).
---@class sip.Response: sip.Msg
---@field status integer
---@field reason string
