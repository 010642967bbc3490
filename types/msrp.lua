---@meta sip.msrp
-- sip.msrp: session-mode IM (RFC 4975 MSRP over an INVITE dialog) and the 1300-byte switch
-- between the pager and session models. Loading it adds ep:chat and the two-model
-- ep:message/ep:on("MESSAGE").

---@class sip.msrp
---@field PAGER_LIMIT integer bytes a MESSAGE carries in auto mode (1300); more go in a session
---@field CHUNK integer default chunk size of a SEND
---@field MAX_SIZE integer default a=max-size of our sessions
---@field MAX_CHUNKS integer chunks one message may arrive in
---@field TXN_TIMEOUT number seconds a SEND waits for its 200
---@field BIND_TIMEOUT number seconds an accepted connection waits for its session
---@field IDLE_TIMEOUT number seconds of silence before a session is given up
---@field MAX_PARTIAL integer messages being reassembled at once, per session
---@field MAX_INBOX integer unread messages a session keeps
---@field REASONS table<integer, string> reason phrases of MSRP responses
---@field Session sip.ChatSession the class of chat sessions
---@field SessionMessage sip.SessionMessage the class of session-mode messages a MESSAGE handler gets
local msrp = {}

---An msrp:/msrps: URI parsed.
---@param u string "msrp://host:port/id;tcp"
---@return { scheme: string, host: string, port: integer, id: string, transport: string }|nil
function msrp.parse_uri(u) end

---Where an endpoint's MSRP listener is.
---@param ep sip.Endpoint
---@return string host
---@return integer port
function msrp.address(ep) end

---Whether req is an INVITE whose body offers an MSRP session.
---@param req sip.Request
---@return boolean
function msrp.is_offer(req) end

---The session an INVITE offers, not yet answered.
---@param req sip.Request
---@param opts? table as for ep:chat
---@return sip.ChatSession|nil s
---@return string? why
function msrp.offered(req, opts) end

---msrp.offered, then s:accept().
---@param req sip.Request
---@param opts? table
---@return sip.ChatSession|nil s
---@return string? why
function msrp.accept(req, opts) end

---A chat session (ep:chat, or ep:on("chat", fn(s, req))).
---@class sip.ChatSession
local ChatSession = {}

---Send a message (in chunks); yields until every chunk is acknowledged.
---@param text string
---@param content_type? string "text/plain" by default
---@param opts? { cpim?: table, success_report?: boolean }
---@return true|nil ok
---@return string? reason
---@return integer? code the peer's MSRP code (413, 415, ...) or 408
function ChatSession:send(text, content_type, opts) end

---The next whole message; yields until it comes.
---@param timeout? number seconds
---@return string|nil text
---@return string content_type_or_why
---@return table? msg { body=, content_type=, message_id=, cpim= }
function ChatSession:receive(timeout) end

---Ends the session (BYE) and its connection.
function ChatSession:close() end

---Accept an offered session: the 200 with our answer, then the connection.
---@return sip.ChatSession|nil s
---@return string? why
function ChatSession:accept() end

---Decline an offered session.
---@param code? integer 603 by default
function ChatSession:refuse(code) end

---A message that came in a session, as a MESSAGE handler sees it.
---@class sip.SessionMessage
---@field method "MESSAGE"
---@field body string
---@field content_type string
---@field session sip.ChatSession
local SessionMessage = {}

---@param name string
---@return string|nil
function SessionMessage:header(name) end

---@param name string
---@return string[]
function SessionMessage:headers(name) end

---@param name string
---@return sip.NameAddr|nil
function SessionMessage:addr(name) end

---Notes a reply code (the message was acknowledged chunk by chunk already).
---@param code? integer
---@return true
function SessionMessage:reply(code) end

---Answer in the same model: a SEND in the session (or a new session once it ended).
---@param text string
---@param content_type? string
---@return true|nil ok
---@return string? why
function SessionMessage:respond(text, content_type) end
