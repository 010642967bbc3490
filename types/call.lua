---@meta
-- Calls (sip.dialog): ep:call / ep:dial for the caller, req:answer for the callee, and the
-- registration client of ep:register (sip.ua).

---@class sip.CallOptions
---@field sdp? string the offer (none: the 2xx must offer, see on_offer)
---@field headers? sip.Headers
---@field from? string
---@field user? string answers 401/407
---@field password? string
---@field on_progress? fun(res: sip.Response, pending: sip.PendingCall) every provisional
---@field timeout? number seconds; an unanswered call is CANCELled (then nil, 487)
---@field on_offer? fun(offer_sdp: string, res: sip.Response): string|nil the answer to a 2xx's offer
---@field answer_sdp? string the answer for the ACK when the INVITE made no offer

---A dialog (RFC 3261 §12) with the calls' coroutine side. Fields come from the core's
---dialog (call_id, tags, URIs, route set, CSeqs) and from Lua (SDP, messages).
---@class sip.Call
---@field call_id string
---@field local_tag string
---@field remote_tag string
---@field local_uri string
---@field remote_uri string
---@field remote_target string
---@field route string[]
---@field local_cseq integer
---@field remote_cseq integer
---@field contact string
---@field secure boolean
---@field state string
---@field role "uac"|"uas"
---@field ep sip.Endpoint
---@field local_sdp? string the session description this side last sent
---@field remote_sdp? string the peer's
---@field response? sip.Response the 2xx that made the dialog (caller)
---@field initial_invite? sip.Request
local Call = {}

---An in-dialog request (new CSeq); yields until its final response.
---@param method string
---@param opts? { headers?: sip.Headers, body?: string, content_type?: string }
---@return sip.Response|nil res
---@return string? err
function Call:request(method, opts) end

---The ACK for a 2xx (§13.2.2.4), sent outside transactions.
---@param invite_cseq integer
---@param opts? { body?: string, content_type?: string }
function Call:ack(invite_cseq, opts) end

---Hang up; the dialog ends whatever the answer.
---@return sip.Response|nil res
---@return string? err
function Call:bye() end

---A re-INVITE with a new offer; yields until its final response (ACKed when 2xx).
---@param sdp string
---@return sip.Response|nil res
---@return string? err "pending" while another re-INVITE of ours waits
function Call:reinvite(sdp) end

---fn(req, call) answers each re-INVITE of this call (req:answer{ sdp = } or req:reply(488));
---nil restores the default (answer with local_sdp).
---@param fn? fun(req: sip.Request, call: sip.Call)
function Call:on_reinvite(fn) end

---Yields until the dialog ends.
---@return "bye"|"remote bye"|"no ACK"|string why
function Call:wait() end

---A call being set up by ep:dial.
---@class sip.PendingCall
---@field state "calling"|"early"|"answered"|"failed"|"cancelled"
---@field early table<string, { status: integer, response: sip.Response, remote_target: string, remote_sdp?: string }> early dialogs by To tag
---@field early_order string[]
local PendingCall = {}

---CANCEL the INVITE (§9.1); the call then ends with 487.
---@return true|nil ok
---@return string? err
function PendingCall:cancel() end

---Yields until the final response.
---@return sip.Call|nil call
---@return sip.Response|string|nil res the 2xx, or the final response (or an error)
function PendingCall:result() end

---A binding kept by ep:register.
---@class sip.Registration
---@field state "registering"|"registered"|"failed"|"unregistered"|string
local Registration = {}

---Yields until the state is no longer "registering".
---@return string state
function Registration:wait() end

---Remove the binding (Expires: 0) and stop refreshing.
---@return sip.Response|nil res
---@return string? err
function Registration:stop() end

---Seconds before refreshing a binding granted for expires seconds.
---@param expires integer
---@return number
function Registration:refresh_in(expires) end
