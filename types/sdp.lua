---@meta sip.sdp
-- sip.sdp: RFC 4566 session descriptions as plain tables, and RFC 3264 offer/answer.

---@class sip.sdp.Codec
---@field pt integer payload type
---@field name string "PCMU", "opus", ...
---@field rate integer clock rate
---@field params? string channels (rtpmap's third part)
---@field fmtp? string

---@class sip.sdp.Media
---@field media string "audio", "video", ...
---@field port integer 0: refused
---@field proto string "RTP/AVP", ...
---@field formats string[]
---@field rtpmap table<string, string>
---@field fmtp table<string, string>
---@field direction "sendrecv"|"sendonly"|"recvonly"|"inactive"
---@field connections table[]
---@field bandwidths table[]
---@field attributes { name: string, value?: string }[]
local Media = {}

---The codecs in format order (static payload types without rtpmap take their RFC 3551 name).
---@return sip.sdp.Codec[]
function Media:codecs() end

---The first value of attribute name; true for a property attribute (a=recvonly); nil if absent.
---@param name string
---@return string|true|nil
function Media:attribute(name) end

---Every value of attribute name, in order.
---@param name string
---@return (string|true)[]
function Media:attribute_values(name) end

---An m=message line over TCP/MSRP or TCP/TLS/MSRP read: { path = {uri, ...}, accept_types,
---accept_wrapped_types, setup, max_size, tls, port }; nil for other media.
---@return table|nil
function Media:msrp() end

---A session description; tostring() gives the text.
---@class sip.sdp.Session
---@field version integer
---@field origin { username: string, session_id: string, session_version: string, nettype: string, addrtype: string, address: string }
---@field name string
---@field connection? { nettype: string, addrtype: string, address: string }
---@field times table[]
---@field bandwidths table[]
---@field emails string[]
---@field phones string[]
---@field attributes { name: string, value?: string }[]
---@field media sip.sdp.Media[]
local Session = {}

---The address and port RTP for media i goes to: its own c= or the session's.
---@param i integer
---@return string|nil address
---@return integer|nil port
function Session:media_address(i) end

---@param name string
---@return string|true|nil
function Session:attribute(name) end

---@param name string
---@return (string|true)[]
function Session:attribute_values(name) end

---The first MSRP media (see Media:msrp) and its index.
---@return table|nil msrp
---@return integer? index
function Session:msrp() end

---@class sip.sdp
local sdp = {}

---@param text string
---@return sip.sdp.Session|nil
---@return string? reason "reason (line N)"
function sdp.parse(text) end

---SDP text (CRLF line ends, RFC 4566 order) from a table shaped like parse's result.
---@param t table
---@return string
function sdp.build(t) end

---An offer with one media stream.
---@param opts { address: string, port: integer, codecs: (string|sip.sdp.Codec)[], media?: string, direction?: string, username?: string, session_id?: string }
---@return sip.sdp.Session
function sdp.offer(opts) end

---The answer to an offer (RFC 3264 §6): shared codecs in the offer's order, port 0 for a
---stream with nothing in common.
---@param offer string|sip.sdp.Session
---@param opts { address: string, port?: integer, codecs?: (string|sip.sdp.Codec)[], streams?: table<string, { port: integer, codecs: (string|sip.sdp.Codec)[] }> }
---@return sip.sdp.Session|nil
---@return string? reason
function sdp.answer(offer, opts) end

---text with its o= version set by RFC 3264 §8 against previous (same when nothing else
---changed, one higher when anything did).
---@param previous string
---@param text string
---@return string
function sdp.next_version(previous, text) end

---A session description with one m=message line (RFC 4975 §8): opts address, port, path,
---accept_types ("message/cpim text/plain"), accept_wrapped_types, setup ("actpass"),
---max_size, tls, session_id.
---@param opts table
---@return sip.sdp.Session
function sdp.msrp(opts) end

---The answerer's a=setup for an offer's (RFC 6135 §4.1).
---@param offered? string
---@return "active"|"passive"
function sdp.msrp_setup(offered) end

return sdp
