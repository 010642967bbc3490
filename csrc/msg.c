/* msg.c: one-pass, zero-copy SIP message parser, header edits and serializer.
 * RFC 3261 §7 (message format), §20 (headers), §25 (grammar), RFC 4475 as the bar. */
#include "msg.h"
#include "fmt.h"
#include "chars.h"
#include "uri.h"

#include <stdlib.h>
#include <stdio.h>
#include <limits.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

const sip_limits sip_limits_default = {
	SIP_MAX_MSG_DEFAULT, SIP_MAX_HDRS_DEFAULT, SIP_MAX_LINE_DEFAULT,
};

/* An allocation made by an edit; freed with the message. */
struct sip_edit {
	struct sip_edit *next;
	char data[];
};

/* F_CHECK: check_header validates the value (the parser calls it for these only) */
enum { F_LIST = 1, F_SINGLE = 2, F_CHECK = 4 };

/* Hard cap on header lines whatever sip_limits says: first[] holds int16_t indexes. */
#define MAX_HDRS_INDEX 32767u

static const struct hdr_info {
	const char *name;
	uint8_t len;
	uint8_t flags;
} hdr_info[SIP_HDR_COUNT] = {
#define HDR(id, name, flags) [id] = { name, sizeof name - 1, flags }
	HDR(SIP_HDR_OTHER, "", 0),
	HDR(SIP_HDR_ACCEPT, "Accept", F_LIST),
	HDR(SIP_HDR_ACCEPT_CONTACT, "Accept-Contact", F_LIST),
	HDR(SIP_HDR_ACCEPT_ENCODING, "Accept-Encoding", F_LIST),
	HDR(SIP_HDR_ACCEPT_LANGUAGE, "Accept-Language", F_LIST),
	HDR(SIP_HDR_ALERT_INFO, "Alert-Info", F_LIST),
	HDR(SIP_HDR_ALLOW, "Allow", F_LIST),
	HDR(SIP_HDR_ALLOW_EVENTS, "Allow-Events", F_LIST),
	HDR(SIP_HDR_AUTHENTICATION_INFO, "Authentication-Info", 0),
	HDR(SIP_HDR_AUTHORIZATION, "Authorization", 0),
	HDR(SIP_HDR_CALL_ID, "Call-ID", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_CALL_INFO, "Call-Info", F_LIST),
	HDR(SIP_HDR_CONTACT, "Contact", F_LIST | F_CHECK),
	HDR(SIP_HDR_CONTENT_DISPOSITION, "Content-Disposition", 0),
	HDR(SIP_HDR_CONTENT_ENCODING, "Content-Encoding", F_LIST),
	HDR(SIP_HDR_CONTENT_LANGUAGE, "Content-Language", F_LIST),
	HDR(SIP_HDR_CONTENT_LENGTH, "Content-Length", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_CONTENT_TYPE, "Content-Type", F_SINGLE),
	HDR(SIP_HDR_CSEQ, "CSeq", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_DATE, "Date", F_CHECK),
	HDR(SIP_HDR_ERROR_INFO, "Error-Info", F_LIST),
	HDR(SIP_HDR_EVENT, "Event", 0),
	HDR(SIP_HDR_EXPIRES, "Expires", 0),
	HDR(SIP_HDR_FROM, "From", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_IDENTITY, "Identity", 0),
	HDR(SIP_HDR_IN_REPLY_TO, "In-Reply-To", F_LIST),
	HDR(SIP_HDR_MAX_FORWARDS, "Max-Forwards", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_MIN_EXPIRES, "Min-Expires", 0),
	HDR(SIP_HDR_MIME_VERSION, "MIME-Version", 0),
	HDR(SIP_HDR_ORGANIZATION, "Organization", 0),
	HDR(SIP_HDR_PATH, "Path", F_LIST),
	HDR(SIP_HDR_PRIORITY, "Priority", 0),
	HDR(SIP_HDR_PROXY_AUTHENTICATE, "Proxy-Authenticate", 0),
	HDR(SIP_HDR_PROXY_AUTHORIZATION, "Proxy-Authorization", 0),
	HDR(SIP_HDR_PROXY_REQUIRE, "Proxy-Require", F_LIST),
	HDR(SIP_HDR_RECORD_ROUTE, "Record-Route", F_LIST | F_CHECK),
	HDR(SIP_HDR_REFER_TO, "Refer-To", 0),
	HDR(SIP_HDR_REFERRED_BY, "Referred-By", 0),
	HDR(SIP_HDR_REJECT_CONTACT, "Reject-Contact", F_LIST),
	HDR(SIP_HDR_REPLY_TO, "Reply-To", 0),
	HDR(SIP_HDR_REQUEST_DISPOSITION, "Request-Disposition", F_LIST),
	HDR(SIP_HDR_REQUIRE, "Require", F_LIST),
	HDR(SIP_HDR_RETRY_AFTER, "Retry-After", 0),
	HDR(SIP_HDR_ROUTE, "Route", F_LIST | F_CHECK),
	HDR(SIP_HDR_SERVER, "Server", 0),
	HDR(SIP_HDR_SERVICE_ROUTE, "Service-Route", F_LIST),
	HDR(SIP_HDR_SESSION_EXPIRES, "Session-Expires", 0),
	HDR(SIP_HDR_SUBJECT, "Subject", 0),
	HDR(SIP_HDR_SUBSCRIPTION_STATE, "Subscription-State", 0),
	HDR(SIP_HDR_SUPPORTED, "Supported", F_LIST),
	HDR(SIP_HDR_TIMESTAMP, "Timestamp", 0),
	HDR(SIP_HDR_TO, "To", F_SINGLE | F_CHECK),
	HDR(SIP_HDR_UNSUPPORTED, "Unsupported", F_LIST),
	HDR(SIP_HDR_USER_AGENT, "User-Agent", 0),
	HDR(SIP_HDR_VIA, "Via", F_LIST | F_CHECK),
	HDR(SIP_HDR_WARNING, "Warning", F_LIST),
	HDR(SIP_HDR_WWW_AUTHENTICATE, "WWW-Authenticate", 0),
#undef HDR
};

/* Compact forms (RFC 3261 §7.3.3 and the extensions' own), by letter. */
static const uint8_t compact_id[26] = {
	['a' - 'a'] = SIP_HDR_ACCEPT_CONTACT, ['b' - 'a'] = SIP_HDR_REFERRED_BY,
	['c' - 'a'] = SIP_HDR_CONTENT_TYPE, ['d' - 'a'] = SIP_HDR_REQUEST_DISPOSITION,
	['e' - 'a'] = SIP_HDR_CONTENT_ENCODING, ['f' - 'a'] = SIP_HDR_FROM,
	['i' - 'a'] = SIP_HDR_CALL_ID, ['j' - 'a'] = SIP_HDR_REJECT_CONTACT,
	['k' - 'a'] = SIP_HDR_SUPPORTED, ['l' - 'a'] = SIP_HDR_CONTENT_LENGTH,
	['m' - 'a'] = SIP_HDR_CONTACT, ['o' - 'a'] = SIP_HDR_EVENT,
	['r' - 'a'] = SIP_HDR_REFER_TO, ['s' - 'a'] = SIP_HDR_SUBJECT,
	['t' - 'a'] = SIP_HDR_TO, ['u' - 'a'] = SIP_HDR_ALLOW_EVENTS,
	['v' - 'a'] = SIP_HDR_VIA, ['x' - 'a'] = SIP_HDR_SESSION_EXPIRES,
	['y' - 'a'] = SIP_HDR_IDENTITY,
};

/* Long names by a perfect hash of (length, first, middle and last letter, case folded):
 * one candidate, compared a word at a time with exact case folding. HDR_HASH_MUL was found
 * by trying random odd multipliers until the 56 names fell in distinct slots of 128; every
 * name of hdr_info must be here (spec/msg_spec.lua checks each one through
 * core.header_name). */
#define HDR_NAME_MAX 19
#define HDR_HASH_MUL 0x020e2e29u
static const uint8_t hdr_hash[128] = {
	[0] = SIP_HDR_USER_AGENT, [1] = SIP_HDR_CONTENT_TYPE, [5] = SIP_HDR_REFER_TO,
	[6] = SIP_HDR_MIME_VERSION, [7] = SIP_HDR_FROM, [9] = SIP_HDR_EXPIRES,
	[12] = SIP_HDR_PATH, [16] = SIP_HDR_SUPPORTED, [18] = SIP_HDR_ACCEPT_CONTACT,
	[19] = SIP_HDR_SERVER, [25] = SIP_HDR_ERROR_INFO, [26] = SIP_HDR_CONTENT_LANGUAGE,
	[27] = SIP_HDR_REJECT_CONTACT, [28] = SIP_HDR_SERVICE_ROUTE, [29] = SIP_HDR_ALLOW,
	[31] = SIP_HDR_SUBSCRIPTION_STATE, [34] = SIP_HDR_AUTHORIZATION, [35] = SIP_HDR_TO,
	[38] = SIP_HDR_REQUEST_DISPOSITION, [40] = SIP_HDR_ACCEPT_ENCODING,
	[42] = SIP_HDR_CONTACT, [45] = SIP_HDR_VIA, [51] = SIP_HDR_PROXY_REQUIRE,
	[53] = SIP_HDR_CONTENT_LENGTH, [54] = SIP_HDR_WWW_AUTHENTICATE, [55] = SIP_HDR_REPLY_TO,
	[60] = SIP_HDR_ALERT_INFO, [63] = SIP_HDR_WARNING, [68] = SIP_HDR_EVENT,
	[70] = SIP_HDR_SESSION_EXPIRES, [73] = SIP_HDR_ORGANIZATION,
	[75] = SIP_HDR_CONTENT_DISPOSITION, [77] = SIP_HDR_REFERRED_BY, [78] = SIP_HDR_IDENTITY,
	[80] = SIP_HDR_TIMESTAMP, [82] = SIP_HDR_ROUTE, [83] = SIP_HDR_PROXY_AUTHENTICATE,
	[84] = SIP_HDR_SUBJECT, [86] = SIP_HDR_CALL_INFO, [87] = SIP_HDR_ACCEPT_LANGUAGE,
	[92] = SIP_HDR_RETRY_AFTER, [96] = SIP_HDR_CALL_ID, [97] = SIP_HDR_PRIORITY,
	[99] = SIP_HDR_RECORD_ROUTE, [101] = SIP_HDR_IN_REPLY_TO,
	[102] = SIP_HDR_AUTHENTICATION_INFO, [104] = SIP_HDR_MAX_FORWARDS,
	[106] = SIP_HDR_CONTENT_ENCODING, [110] = SIP_HDR_UNSUPPORTED,
	[112] = SIP_HDR_PROXY_AUTHORIZATION, [116] = SIP_HDR_DATE, [119] = SIP_HDR_ALLOW_EVENTS,
	[123] = SIP_HDR_REQUIRE, [125] = SIP_HDR_ACCEPT, [126] = SIP_HDR_MIN_EXPIRES,
	[127] = SIP_HDR_CSEQ,
};

/* ASCII lowercase without a locale or a table. */
static inline unsigned char lower(unsigned char c)
{
	return (unsigned char)(c | ((unsigned)(c - 'A') < 26u) << 5);
}

static inline unsigned hdr_hash_of(const char *name, size_t len)
{
	uint32_t x = (uint32_t)len << 24 | (uint32_t)((unsigned char)name[0] | 0x20) << 16 |
		     (uint32_t)((unsigned char)name[len / 2] | 0x20) << 8 |
		     (uint32_t)((unsigned char)name[len - 1] | 0x20);
	return (x * HDR_HASH_MUL) >> 25;
}

sip_hdr_id sip_hdr_lookup(const char *name, size_t len)
{
	if (len == 1) {
		unsigned c = lower((unsigned char)name[0]) - 'a';
		return c < 26 ? (sip_hdr_id)compact_id[c] : SIP_HDR_OTHER;
	}
	if (len - 2 > HDR_NAME_MAX - 2)    /* also len 0 */
		return SIP_HDR_OTHER;
	unsigned id = hdr_hash[hdr_hash_of(name, len)];
	if (hdr_info[id].len == len && sip_caseeq(name, hdr_info[id].name, len))
		return (sip_hdr_id)id;
	return SIP_HDR_OTHER;
}

#ifdef __SSE2__
/* The known-name compare of the parser (known_name): per id, the name with its letters in
 * lower case (lc) and 0x20 where it has letters (fold); input | fold == lc on a name's
 * bytes is sip_fold_eq's exact case folding. Names of 16 bytes and more keep zeros (no
 * 16-byte load holds them and their ':'), so they never match there. Built when the
 * library loads, before anything can parse. */
static struct {
	__m128i lc, fold;
} hdr_pat[SIP_HDR_COUNT];

__attribute__((constructor)) static void hdr_pat_init(void)
{
	for (int id = 1; id < SIP_HDR_COUNT; id++) {
		unsigned char lc[16] = { 0 }, fold[16] = { 0 };
		if (hdr_info[id].len >= 16)
			continue;
		for (unsigned i = 0; i < hdr_info[id].len; i++) {
			unsigned char c = (unsigned char)hdr_info[id].name[i];
			fold[i] = (c & 0x40) ? 0x20 : 0;   /* letters: bit 6 (see sip_fold_eq) */
			lc[i] = c | fold[i];
		}
		memcpy(&hdr_pat[id].lc, lc, 16);
		memcpy(&hdr_pat[id].fold, fold, 16);
	}
}
#endif

#ifdef __SSE2__
/* The parser's own hash for names of fewer than 16 bytes (known_name): the name's first
 * 8 bytes (fewer when shorter), or'ed with 0x20 and xor'ed with the length, times
 * HDR_FAST_MUL (found like HDR_HASH_MUL, for these 47 names): one load, no byte picking.
 * Only a shortcut: a name missing here still parses, through the byte scan and
 * sip_hdr_lookup. */
#define HDR_FAST_MUL 0x86f1d75cc5f5c841u
static const uint8_t hdr_fast[128] = {
	[0] = SIP_HDR_USER_AGENT, [4] = SIP_HDR_ROUTE, [5] = SIP_HDR_PROXY_REQUIRE,
	[6] = SIP_HDR_DATE, [7] = SIP_HDR_CALL_INFO, [9] = SIP_HDR_CONTACT,
	[16] = SIP_HDR_AUTHORIZATION, [22] = SIP_HDR_SERVICE_ROUTE, [26] = SIP_HDR_TO,
	[27] = SIP_HDR_ACCEPT_ENCODING, [29] = SIP_HDR_TIMESTAMP, [30] = SIP_HDR_ACCEPT_CONTACT,
	[38] = SIP_HDR_CALL_ID, [40] = SIP_HDR_SUPPORTED, [41] = SIP_HDR_REQUIRE,
	[49] = SIP_HDR_MIN_EXPIRES, [50] = SIP_HDR_UNSUPPORTED, [51] = SIP_HDR_IDENTITY,
	[53] = SIP_HDR_REFER_TO, [55] = SIP_HDR_SESSION_EXPIRES, [59] = SIP_HDR_SERVER,
	[60] = SIP_HDR_CSEQ, [62] = SIP_HDR_EVENT, [63] = SIP_HDR_EXPIRES, [70] = SIP_HDR_SUBJECT,
	[74] = SIP_HDR_IN_REPLY_TO, [77] = SIP_HDR_REFERRED_BY, [78] = SIP_HDR_ORGANIZATION,
	[82] = SIP_HDR_RETRY_AFTER, [83] = SIP_HDR_RECORD_ROUTE, [84] = SIP_HDR_MIME_VERSION,
	[86] = SIP_HDR_ALERT_INFO, [87] = SIP_HDR_PATH, [88] = SIP_HDR_VIA, [92] = SIP_HDR_ALLOW,
	[96] = SIP_HDR_ALLOW_EVENTS, [97] = SIP_HDR_ERROR_INFO, [98] = SIP_HDR_CONTENT_LENGTH,
	[99] = SIP_HDR_REPLY_TO, [104] = SIP_HDR_REJECT_CONTACT, [105] = SIP_HDR_CONTENT_TYPE,
	[107] = SIP_HDR_ACCEPT, [109] = SIP_HDR_FROM, [110] = SIP_HDR_MAX_FORWARDS,
	[119] = SIP_HDR_PRIORITY, [120] = SIP_HDR_WARNING, [127] = SIP_HDR_ACCEPT_LANGUAGE,
};
#endif

const char *sip_hdr_canonical(sip_hdr_id id)
{
	return id > 0 && id < SIP_HDR_COUNT ? hdr_info[id].name : NULL;
}

int sip_hdr_is_list(sip_hdr_id id)
{
	return id > 0 && id < SIP_HDR_COUNT && (hdr_info[id].flags & F_LIST);
}

static const char *const method_names[SIP_METHOD_COUNT] = {
	"", "INVITE", "ACK", "CANCEL", "BYE", "REGISTER", "OPTIONS", "MESSAGE", "INFO",
	"UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH",
};


sip_method sip_method_lookup(const char *s, size_t len)
{
	/* methods are case-sensitive (RFC 3261 §7.1): one candidate by length and first
	 * letter, then a compare */
	sip_method m;
	switch (len) {
	case 3: m = s[0] == 'A' ? SIP_METHOD_ACK : SIP_METHOD_BYE; break;
	case 4: m = SIP_METHOD_INFO; break;
	case 5: m = s[0] == 'P' ? SIP_METHOD_PRACK : SIP_METHOD_REFER; break;
	case 6:
		m = s[0] == 'I' ? SIP_METHOD_INVITE : s[0] == 'C' ? SIP_METHOD_CANCEL :
		    s[0] == 'U' ? SIP_METHOD_UPDATE : SIP_METHOD_NOTIFY;
		break;
	case 7:
		m = s[0] == 'O' ? SIP_METHOD_OPTIONS : s[0] == 'M' ? SIP_METHOD_MESSAGE :
		    SIP_METHOD_PUBLISH;
		break;
	case 8: m = SIP_METHOD_REGISTER; break;
	case 9: m = SIP_METHOD_SUBSCRIBE; break;
	default: return SIP_METHOD_OTHER;
	}
	const char *n = method_names[m];   /* 3 to 9 bytes: two overlapping words */
	int eq = len >= 8 ? sip_load8(s) == sip_load8(n) &&
			    sip_load8(s + len - 8) == sip_load8(n + len - 8) :
		 len >= 4 ? sip_load4(s) == sip_load4(n) &&
			    sip_load4(s + len - 4) == sip_load4(n + len - 4) :
			    sip_load2(s) == sip_load2(n) &&
			    sip_load2(s + len - 2) == sip_load2(n + len - 2);
	return eq ? m : SIP_METHOD_OTHER;
}

const char *sip_method_name(sip_method m)
{
	return m < SIP_METHOD_COUNT ? method_names[m] : "";
}

const char *sip_reason_phrase(int code)
{
	switch (code) {
	case 100: return "Trying";
	case 180: return "Ringing";
	case 181: return "Call Is Being Forwarded";
	case 182: return "Queued";
	case 183: return "Session Progress";
	case 199: return "Early Dialog Terminated";
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Notification";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Moved Temporarily";
	case 305: return "Use Proxy";
	case 380: return "Alternative Service";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 412: return "Conditional Request Failed";
	case 413: return "Request Entity Too Large";
	case 414: return "Request-URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Unsupported URI Scheme";
	case 417: return "Unknown Resource-Priority";
	case 420: return "Bad Extension";
	case 421: return "Extension Required";
	case 422: return "Session Interval Too Small";
	case 423: return "Interval Too Brief";
	case 428: return "Use Identity Header";
	case 429: return "Provide Referrer Identity";
	case 430: return "Flow Failed";
	case 433: return "Anonymity Disallowed";
	case 436: return "Bad Identity-Info";
	case 437: return "Unsupported Certificate";
	case 438: return "Invalid Identity Header";
	case 439: return "First Hop Lacks Outbound Support";
	case 440: return "Max-Breadth Exceeded";
	case 469: return "Bad Info Package";
	case 470: return "Consent Needed";
	case 480: return "Temporarily Unavailable";
	case 481: return "Call/Transaction Does Not Exist";
	case 482: return "Loop Detected";
	case 483: return "Too Many Hops";
	case 484: return "Address Incomplete";
	case 485: return "Ambiguous";
	case 486: return "Busy Here";
	case 487: return "Request Terminated";
	case 488: return "Not Acceptable Here";
	case 489: return "Bad Event";
	case 491: return "Request Pending";
	case 493: return "Undecipherable";
	case 494: return "Security Agreement Required";
	case 500: return "Server Internal Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Server Time-out";
	case 505: return "Version Not Supported";
	case 513: return "Message Too Large";
	case 555: return "Push Notification Service Not Supported";
	case 580: return "Precondition Failure";
	case 600: return "Busy Everywhere";
	case 603: return "Decline";
	case 604: return "Does Not Exist Anywhere";
	case 606: return "Not Acceptable";
	case 607: return "Unwanted";
	case 608: return "Rejected";
	default: return "";
	}
}

static inline sip_pl trim(sip_pl s)
{
	while (s.n && sip_is_lws((unsigned char)s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && sip_is_lws((unsigned char)s.p[s.n - 1]))
		s.n--;
	return s;
}

int sip_list_next(sip_pl value, size_t *pos, sip_pl *item)
{
	if (*pos > value.n)
		return 0;
	const char *s = value.p + *pos, *p = s, *end = value.p + value.n;
	int ina = 0;
	/* Most values hold one item: without a comma there is nothing to split. */
	if (!memchr(s, ',', (size_t)(end - s)))
		p = end;
	for (; p < end; p++) {
		p = sip_find_any(p, end, ",\"<>", 4, SIP_C_LISTMARK);
		if (p == end)
			break;
		char c = *p;
		if (c == '"') {
			p = sip_quoted_end(p + 1, end);
			if (!p) {
				p = end;   /* unterminated: the rest is one item */
				break;
			}
		} else if (c == '<') {
			ina = 1;
		} else if (c == '>') {
			ina = 0;
		} else if (c == ',' && !ina) {
			break;
		}
	}
	*item = trim(sip_pl_make(s, (size_t)(p - s)));
	/* after a trailing comma comes one more, empty, item: callers reject it */
	*pos = p < end ? (size_t)(p + 1 - value.p) : value.n + 1;
	return 1;
}

size_t sip_unfold(sip_pl v, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < v.n && o < cap; i++) {
		char c = v.p[i];
		if (c == '\r' || c == '\n') {
			while (i + 1 < v.n && sip_is_lws((unsigned char)v.p[i + 1]))
				i++;
			/* fold = one SP, and swallow WSP before the fold too */
			while (o && (out[o - 1] == ' ' || out[o - 1] == '\t'))
				o--;
			out[o++] = ' ';
			continue;
		}
		out[o++] = c;
	}
	return o;
}

int sip_msg_find(const sip_msg *m, sip_hdr_id id, const char *name, size_t nlen, int from)
{
	if (from < 0)
		from = 0;
	if (id != SIP_HDR_OTHER) {
		if (from == 0)
			return m->first[id];
		for (unsigned i = (unsigned)from; i < m->nhdrs; i++)
			if (m->hdrs[i].id == id)
				return (int)i;
		return -1;
	}
	for (unsigned i = (unsigned)from; i < m->nhdrs; i++)
		if (m->hdrs[i].id == SIP_HDR_OTHER && m->hdrs[i].name.n == nlen &&
		    strncasecmp(m->hdrs[i].name.p, name, nlen) == 0)
			return (int)i;
	return -1;
}

/* Decimal with an upper bound; leading zeros allowed ("0068"). */
static int parse_uint(sip_pl s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (s.n == 0)
		return -1;
	for (size_t i = 0; i < s.n; i++) {
		if (!sip_is_digit((unsigned char)s.p[i]))
			return -1;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
		if (v > max)
			return -1;
	}
	*out = v;
	return 0;
}

static void reindex(sip_msg *m)
{
	for (int i = 0; i < SIP_HDR_COUNT; i++)
		m->first[i] = -1;
	for (unsigned i = m->nhdrs; i-- > 0;)
		m->first[m->hdrs[i].id] = (int16_t)i;
}

/* Every byte of a Call-ID is a word byte or '@'. With SSE2, 16 at a time: word bytes are
 * 0x21-0x7e but # $ & , ; = @ ^ | (chars.c), and '@' is let through; the last block
 * overlaps the one before rather than reading past the value. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))   /* its call cost a fair part of checking a short value */
#endif
static inline int callid_ok(sip_pl v)
{
	const char *p = v.p, *end = v.p + v.n;
#ifdef __SSE2__
	if (v.n >= 16) {
		const __m128i shift = _mm_set1_epi8((char)(0x80 - 0x21));
		const __m128i top = _mm_set1_epi8((char)(0x80 + 0x7e - 0x21 + 1));
		for (;;) {
			const char *q = end - p >= 16 ? p : end - 16;
			__m128i x = _mm_loadu_si128((const __m128i *)q);
			__m128i in = _mm_cmplt_epi8(_mm_add_epi8(x, shift), top);
			__m128i no = _mm_or_si128(
				_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('#')),
							  _mm_cmpeq_epi8(x, _mm_set1_epi8('$'))),
					     _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('&')),
							  _mm_cmpeq_epi8(x, _mm_set1_epi8(',')))),
				_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(';')),
							  _mm_cmpeq_epi8(x, _mm_set1_epi8('='))),
					     _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('^')),
							  _mm_cmpeq_epi8(x, _mm_set1_epi8('|')))));
			if (_mm_movemask_epi8(_mm_andnot_si128(no, in)) != 0xffff)
				return 0;
			if (q + 16 == end)
				return 1;
			p = q + 16;
		}
	}
#endif
	for (;;) {
		p = sip_span(p, end, SIP_C_WORD);
		if (p == end)
			return 1;
		if (*p++ != '@')
			return 0;
	}
}

/* The general paths of check_header, out of line: its frame stays small for the headers
 * that need no more than a look at their bytes. */
__attribute__((noinline)) static int check_via_list(sip_msg *m, sip_pl v, int first,
						     const char **err)
{
	size_t pos = 0;
	sip_pl item;
	int idx = 0;
	while (sip_list_next(v, &pos, &item)) {
		sip_via via;
		if (sip_via_parse(&via, item, err)) {
			*err = "bad Via";
			return -1;
		}
		if (first && idx == 0)
			m->branch = via.branch;
		idx++;
	}
	return 0;
}

__attribute__((noinline)) static int check_addr(sip_hdr_id id, sip_pl v, sip_pl *tag,
						 const char **err)
{
	sip_addr a;
	if (sip_addr_parse(&a, v, err) || a.star) {
		*err = id == SIP_HDR_FROM ? "bad From" : "bad To";
		return -1;
	}
	*tag = a.tag;
	return 0;
}

__attribute__((noinline)) static int check_addr_list(sip_hdr_id id, sip_pl v, const char **err)
{
	size_t pos = 0;
	sip_pl item;
	while (sip_list_next(v, &pos, &item)) {
		sip_addr a;
		if (sip_addr_parse(&a, item, err) || (a.star && id != SIP_HDR_CONTACT)) {
			*err = id == SIP_HDR_CONTACT ? "bad Contact" :
			       id == SIP_HDR_ROUTE ? "bad Route" : "bad Record-Route";
			return -1;
		}
	}
	return 0;
}

/* Validate one known header's value and refresh the shortcuts it feeds. `first` is
 * nonzero for the first header of its kind (the one whose fields the shortcuts show).
 * Vias and addresses of the usual shapes take the quick paths of uri.c; what those cannot
 * tell about, valid or not, the general ones above. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))   /* into parse's loop: a call saved six registers a header */
#endif
static inline int check_header(sip_msg *m, sip_hdr_id id, sip_pl v, int first, const char **err)
{
	uint64_t n;

	switch (id) {
	case SIP_HDR_VIA: {
		sip_pl b;
		if (!sip_via_list_quick(v, &b))
			return check_via_list(m, v, first, err);
		if (first)
			m->branch = b;
		return 0;
	}
	case SIP_HDR_FROM:
	case SIP_HDR_TO: {
		sip_pl tag;
		if (!sip_addr_quick(v, &tag) && check_addr(id, v, &tag, err))
			return -1;
		if (!tag.p)
			tag = sip_pl_make(v.p, 0);
		if (id == SIP_HDR_FROM)
			m->from_tag = tag;
		else
			m->to_tag = tag;
		return 0;
	}
	case SIP_HDR_CONTACT:
	case SIP_HDR_ROUTE:
	case SIP_HDR_RECORD_ROUTE:
		if (sip_addr_list_quick(v))
			return 0;
		return check_addr_list(id, v, err);
	case SIP_HDR_CALL_ID:
		if (v.n == 0) {
			*err = "bad Call-ID";
			return -1;
		}
		/* word [ "@" word ], and we take any number of '@' as we always did */
		if (!callid_ok(v)) {
			*err = "bad Call-ID";
			return -1;
		}
		m->call_id = v;
		return 0;
	case SIP_HDR_CSEQ: {
		const char *p = v.p, *end = v.p + v.n, *d = p;
		while (p < end && sip_is_digit((unsigned char)*p))
			p++;
		/* RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31 */
		if (parse_uint(sip_pl_make(d, (size_t)(p - d)), 0x7fffffffu, &n) || p == end ||
		    !sip_is_lws((unsigned char)*p)) {
			*err = "bad CSeq";
			return -1;
		}
		sip_pl meth = trim(sip_pl_make(p, (size_t)(end - p)));
		for (size_t i = 0; i < meth.n; i++)
			if (!sip_is_token((unsigned char)meth.p[i]))
				meth.n = 0;
		if (meth.n == 0) {
			*err = "bad CSeq";
			return -1;
		}
		m->cseq = (uint32_t)n;
		m->cseq_method = meth;
		return 0;
	}
	case SIP_HDR_CONTENT_LENGTH:
		if (parse_uint(v, INT_MAX, &n)) {
			*err = "bad Content-Length";
			return -1;
		}
		m->content_length = (long)n;
		return 0;
	case SIP_HDR_MAX_FORWARDS:
		if (parse_uint(v, 255, &n)) {
			*err = "bad Max-Forwards";
			return -1;
		}
		m->max_forwards = (int)n;
		return 0;
	case SIP_HDR_DATE:
		/* rfc1123-date is always GMT (§20.17) */
		if (v.n < 4 || strncmp(v.p + v.n - 4, " GMT", 4) != 0) {
			*err = "bad Date";
			return -1;
		}
		return 0;
	default:
		return 0;
	}
}

/* check_header for the edit functions, out of line: only the parser's loop wants it inline. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
static int check_header_edit(sip_msg *m, sip_hdr_id id, sip_pl v, int first, const char **err)
{
	return check_header(m, id, v, first, err);
}

static int push_hdr(sip_msg *m, unsigned at, const sip_hdr *h, unsigned max)
{
	if (m->nhdrs >= max || m->nhdrs >= MAX_HDRS_INDEX)
		return -1;
	if (m->nhdrs == m->hdrs_cap) {
		unsigned cap = m->hdrs_cap < 8 ? 16 : m->hdrs_cap * 2;
		sip_hdr *n = malloc(cap * sizeof *n);
		if (!n)
			return -1;
		if (m->nhdrs)
			memcpy(n, m->hdrs, m->nhdrs * sizeof *n);
		if (m->hdrs != m->slots)
			free(m->hdrs);
		m->hdrs = n;
		m->hdrs_cap = cap;
	}
	memmove(&m->hdrs[at + 1], &m->hdrs[at], (m->nhdrs - at) * sizeof *h);
	m->hdrs[at] = *h;
	m->nhdrs++;
	return 0;
}

/* "SIP/" in any case at p (4 bytes readable) */
static int sip_slash(const char *p)
{
	return sip_fold_eq(sip_load4(p), sip_load4("SIP/"));
}

static int version_ok(sip_pl v)
{
	return v.n == 7 && sip_slash(v.p) && memcmp(v.p + 4, "2.0", 3) == 0;
}

static int version_like(sip_pl v)
{
	return v.n >= 5 && sip_slash(v.p);
}

static int parse_request_line(sip_msg *m, sip_pl line, const char **err)
{
	const char *p = line.p, *end = line.p + line.n;
	const char *ms = p;
	p = sip_span(p, end, SIP_C_TOKEN);
	if (p == ms || p >= end || *p != ' ') {
		*err = "bad request line";
		return -1;
	}
	m->method = sip_pl_make(ms, (size_t)(p - ms));
	p++;
	const char *us = p;
	const char *sp = sip_find_byte(p, end, ' ', m->buf);
	p = sp ? sp : end;
	m->uri = sip_pl_make(us, (size_t)(p - us));
	if (p >= end || m->uri.n == 0) {
		*err = "bad request line";
		return -1;
	}
	sip_pl ver = sip_pl_make(p + 1, (size_t)(end - p - 1));
	if (!version_like(ver) || sip_find_byte(ver.p, ver.p + ver.n, ' ', m->buf)) {
		*err = "bad request line";
		return -1;
	}
	if (!version_ok(ver)) {
		*err = "unsupported SIP version";
		return -1;
	}
	if (m->uri.p[0] == '<' || !sip_uri_request_ok(m->uri)) {
		*err = "bad Request-URI";
		return -1;
	}
	m->is_request = 1;
	m->method_id = (uint8_t)sip_method_lookup(m->method.p, m->method.n);
	return 0;
}

static int parse_status_line(sip_msg *m, sip_pl line, const char **err)
{
	const char *sp = sip_find_byte(line.p, line.p + line.n, ' ', m->buf);
	if (!sp) {
		*err = "bad status line";
		return -1;
	}
	if (!version_ok(sip_pl_make(line.p, (size_t)(sp - line.p)))) {
		*err = "unsupported SIP version";
		return -1;
	}
	const char *c = sp + 1, *end = line.p + line.n;
	if (end - c < 3 || !sip_is_digit((unsigned char)c[0]) || !sip_is_digit((unsigned char)c[1]) ||
	    !sip_is_digit((unsigned char)c[2]) || (end - c > 3 && c[3] != ' ')) {
		*err = "bad status code";
		return -1;
	}
	m->status = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
	if (m->status < 100 || m->status > 699) {
		*err = "bad status code";
		return -1;
	}
	m->reason = end - c > 4 ? sip_pl_make(c + 4, (size_t)(end - c - 4)) : sip_pl_make(end, 0);
	return 0;
}

static void msg_init(sip_msg *m, sip_hdr *slots, unsigned nslots)
{
	memset(m, 0, sizeof *m);
	m->hdrs = m->slots = slots;
	m->hdrs_cap = m->nslots = slots ? nslots : 0;
	m->max_forwards = -1;
	m->content_length = -1;
	memset(m->first, 0xff, sizeof m->first);   /* all -1 */
}

static const char *const missing_msg[] = {
	[SIP_HDR_VIA] = "missing Via", [SIP_HDR_FROM] = "missing From",
	[SIP_HDR_TO] = "missing To", [SIP_HDR_CALL_ID] = "missing Call-ID",
	[SIP_HDR_CSEQ] = "missing CSeq",
};

static const char *duplicate_msg(unsigned id)
{
	switch (id) {
	case SIP_HDR_CALL_ID: return "duplicate Call-ID header";
	case SIP_HDR_CONTENT_LENGTH: return "duplicate Content-Length header";
	case SIP_HDR_CONTENT_TYPE: return "duplicate Content-Type header";
	case SIP_HDR_CSEQ: return "duplicate CSeq header";
	case SIP_HDR_FROM: return "duplicate From header";
	case SIP_HDR_MAX_FORWARDS: return "duplicate Max-Forwards header";
	case SIP_HDR_TO: return "duplicate To header";
	default: return "duplicate header";
	}
}

/* The start line's LF (or NULL) and in *bad the first NUL or CR before it (or NULL), in
 * one pass: 16 bytes a step with SSE2, then byte by byte. */
static const char *start_line_end(const char *p, const char *end, const char **bad)
{
	*bad = NULL;
#ifdef __SSE2__
	const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
	for (; end - p >= 16; p += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)p);
		unsigned ml = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));
		unsigned mb = (unsigned)_mm_movemask_epi8(
			_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, _mm_setzero_si128())));
		if (ml)
			mb &= (ml & -ml) - 1;   /* only before the LF */
		if (mb && !*bad)
			*bad = p + __builtin_ctz(mb);
		if (ml)
			return p + __builtin_ctz(ml);
	}
#endif
	for (; p < end; p++) {
		if (*p == '\n')
			return p;
		if ((*p == '\r' || *p == '\0') && !*bad)
			*bad = p;
	}
	return NULL;
}

/* A header line that starts with a known name, long or compact, directly followed by ':'
 * (the usual case): its id, and in *len the name's length, found with one 16-byte load, a
 * hash and a masked compare. SIP_HDR_OTHER for anything else, which the caller then scans
 * byte by byte (and looks up again): unknown names, names with LWS before ':', names of
 * 16 bytes and more, and lines near the end of the buffer. Only bytes before end are
 * read. */
static inline sip_hdr_id known_name(const char *p, const char *end, size_t *len)
{
#ifdef __SSE2__
	if (end - p < 16)
		return SIP_HDR_OTHER;
	__m128i v = _mm_loadu_si128((const __m128i *)p);
	unsigned colon = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(':')));
	if (!colon)
		return SIP_HDR_OTHER;
	unsigned k = (unsigned)__builtin_ctz(colon);
	*len = k;
	if (k == 1) {
		unsigned c = lower((unsigned char)p[0]) - 'a';
		return c < 26 ? (sip_hdr_id)compact_id[c] : SIP_HDR_OTHER;
	}
	if (k < 2)
		return SIP_HDR_OTHER;
	uint64_t x = sip_load8(p);   /* x86: little-endian, as hdr_fast was built */
	if (k < 8)
		x &= (1ull << (8 * k)) - 1;
	x = (x | 0x2020202020202020u) ^ k;
	unsigned id = hdr_fast[(x * HDR_FAST_MUL) >> 57];
	if (hdr_info[id].len != k)
		return SIP_HDR_OTHER;
	/* bytes 0..k-1 equal the name's, letters in either case (see sip_fold_eq) */
	__m128i eq = _mm_cmpeq_epi8(_mm_or_si128(v, _mm_load_si128(&hdr_pat[id].fold)),
				    _mm_load_si128(&hdr_pat[id].lc));
	unsigned want = (1u << k) - 1;
	return ((unsigned)_mm_movemask_epi8(eq) & want) == want ? (sip_hdr_id)id : SIP_HDR_OTHER;
#else
	(void)p;
	(void)end;
	(void)len;
	return SIP_HDR_OTHER;
#endif
}

static int parse(sip_msg *m, const char *buf, size_t len, int stream, const sip_limits *lim,
		 const char **err)
{
	const char *p = buf, *end = buf + len;

	if (len > lim->max_msg) {
		*err = "message too large";
		return -1;
	}
	/* RFC 3261 §7.5: ignore CRLFs before the start line */
	while (p < end && (*p == '\r' || *p == '\n'))
		p++;
	const char *bad;
	const char *nl = start_line_end(p, end, &bad);
	if (!nl) {
		*err = p == end ? "empty message" : "truncated start line";
		return -1;
	}
	sip_pl line = sip_pl_make(p, (size_t)(nl - p));
	if (line.n && line.p[line.n - 1] == '\r')
		line.n--;
	if (line.n > lim->max_line) {
		*err = "start line too long";
		return -1;
	}
	if (bad && bad < line.p + line.n) {   /* a NUL, or a CR other than the one before LF */
		*err = "bad start line";
		return -1;
	}
	if (line.n >= 4 && sip_slash(line.p)) {
		if (parse_status_line(m, line, err))
			return -1;
	} else if (parse_request_line(m, line, err)) {
		return -1;
	}
	p = nl + 1;

	/* Header section: one logical line (with folding) per header. */
	unsigned max_hdrs = lim->max_hdrs < MAX_HDRS_INDEX ? lim->max_hdrs : MAX_HDRS_INDEX;
	size_t max_line = lim->max_line;   /* locals: check_header's calls do not change them */
	unsigned fast_cap = m->hdrs_cap < max_hdrs ? m->hdrs_cap : max_hdrs;
	for (;;) {
		if (p >= end) {
			*err = "truncated header section";
			return -1;
		}
		if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) {
			p += *p == '\n' ? 1 : 2;
			break;
		}
		const char *ls = p;
		size_t nlen;
		sip_hdr_id id = known_name(p, end, &nlen);
		sip_pl name;
		if (id != SIP_HDR_OTHER) {
			/* a known name right before ':' (only token bytes match one) */
			name = sip_pl_make(ls, nlen);
			p = ls + nlen;
		} else {
			p = sip_span(p, end, SIP_C_TOKEN);
			name = sip_pl_make(ls, (size_t)(p - ls));
			while (p < end && (*p == ' ' || *p == '\t'))
				p++;
			if (name.n == 0 || p >= end || *p != ':') {
				*err = "bad header line";
				return -1;
			}
			id = sip_hdr_lookup(name.p, name.n);
		}
		const char *vs = ++p;
		int folded = 0;
		for (;;) {
			nl = sip_find_byte(p, end, '\n', buf);
			if (!nl) {
				*err = "truncated header section";
				return -1;
			}
			if (nl + 1 < end && (nl[1] == ' ' || nl[1] == '\t')) {
				folded = 1;
				p = nl + 1;
				continue;
			}
			break;
		}
		if ((size_t)(nl - ls) > max_line) {
			*err = "header line too long";
			return -1;
		}
		/* trim(): leading LWS first, then trailing (the CR, mostly) */
		const char *ve = nl;
		while (vs < ve && sip_is_lws((unsigned char)*vs))
			vs++;
		while (ve > vs && sip_is_lws((unsigned char)ve[-1]))
			ve--;
		sip_pl value = sip_pl_make(vs, (size_t)(ve - vs));
		p = nl + 1;

		if (id != SIP_HDR_OTHER) {
			int first = m->first[id] < 0;
			if (!first && (hdr_info[id].flags & F_SINGLE)) {
				*err = duplicate_msg(id);
				return -1;
			}
			if ((hdr_info[id].flags & F_CHECK) && check_header(m, id, value, first, err))
				return -1;
			if (first)
				m->first[id] = (int16_t)m->nhdrs;
		}
		if (m->nhdrs < fast_cap) {
			/* the usual case, without push_hdr's memmove; the fields stored in place
			 * rather than a sip_hdr built on the stack and copied */
			sip_hdr *h = &m->hdrs[m->nhdrs++];
			h->name = name;
			h->value = value;
			h->id = (uint16_t)id;
			h->folded = (uint8_t)folded;
			h->edited = 0;
			continue;
		}
		sip_hdr h = { name, value, (uint16_t)id, (uint8_t)folded, 0 };
		if (push_hdr(m, m->nhdrs, &h, lim->max_hdrs)) {
			*err = "too many headers";
			return -1;
		}
		fast_cap = m->hdrs_cap < max_hdrs ? m->hdrs_cap : max_hdrs;
	}

	static const sip_hdr_id required[] = {
		SIP_HDR_VIA, SIP_HDR_FROM, SIP_HDR_TO, SIP_HDR_CALL_ID, SIP_HDR_CSEQ,
	};
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
		if (m->first[required[i]] < 0) {
			*err = missing_msg[required[i]];
			return -1;
		}
	if (m->is_request) {
		if (m->method.n != m->cseq_method.n ||
		    !sip_memeq(m->method.p, m->cseq_method.p, m->method.n)) {
			*err = "CSeq method does not match";
			return -1;
		}
	} else {
		m->method_id = (uint8_t)sip_method_lookup(m->cseq_method.p, m->cseq_method.n);
	}

	size_t avail = (size_t)(end - p);
	if (m->content_length >= 0) {
		if ((size_t)m->content_length > avail) {
			*err = "Content-Length larger than message";
			return -1;
		}
		m->body = sip_pl_make(p, (size_t)m->content_length);
	} else if (stream) {
		*err = "missing Content-Length";
		return -1;
	} else {
		m->body = sip_pl_make(p, avail);
	}
	m->len = (size_t)(m->body.p + m->body.n - buf);
	return 0;
}

int sip_msg_parse(sip_msg *m, const char *buf, size_t len, int own, int stream,
		  const sip_limits *lim, const char **err)
{
	return sip_msg_parse_into(m, NULL, 0, buf, len, own, stream, lim, err);
}

int sip_msg_parse_into(sip_msg *m, sip_hdr *slots, unsigned nslots, const char *buf,
		       size_t len, int own, int stream, const sip_limits *lim, const char **err)
{
	msg_init(m, slots, nslots);
	if (!lim)
		lim = &sip_limits_default;
	if (own) {
		char *copy = malloc(len ? len : 1);
		if (!copy) {
			*err = "out of memory";
			return -1;
		}
		memcpy(copy, buf, len);
		buf = copy;
		m->owned = 1;
	}
	m->buf = buf;
	m->len = len;
	*err = NULL;
	if (parse(m, buf, len, stream, lim, err)) {
		sip_msg_free(m);
		msg_init(m, slots, nslots);
		return -1;
	}
	return 0;
}

void sip_msg_free(sip_msg *m)
{
	if (m->owned)
		free((void *)m->buf);
	if (m->hdrs != m->slots)
		free(m->hdrs);
	for (sip_edit *e = m->edits, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	m->owned = 0;
	m->buf = NULL;
	m->hdrs = m->slots;
	m->hdrs_cap = m->nslots;
	m->nhdrs = 0;
	m->edits = NULL;
}

void sip_msg_move(sip_msg *dst, sip_msg *src, sip_hdr *slots, unsigned nslots)
{
	*dst = *src;
	dst->slots = slots;
	dst->nslots = nslots;
	if (src->hdrs == src->slots) {
		if (src->nhdrs)
			memcpy(slots, src->hdrs, src->nhdrs * sizeof *slots);
		dst->hdrs = slots;
		dst->hdrs_cap = nslots;
	}
	src->hdrs = src->slots;
	src->hdrs_cap = src->nslots;
	src->nhdrs = 0;
	src->owned = 0;
	src->edits = NULL;
}

/* Copy bytes into an allocation owned by the message. */
static char *edit_copy(sip_msg *m, const char *s, size_t n)
{
	sip_edit *e = malloc(sizeof *e + (n ? n : 1));
	if (!e)
		return NULL;
	memcpy(e->data, s, n);
	e->next = m->edits;
	m->edits = e;
	return e->data;
}

/* Shortcuts that derive from headers of one id, recomputed after an edit. */
static void refresh(sip_msg *m, sip_hdr_id id)
{
	const char *err;
	switch (id) {
	case SIP_HDR_VIA: m->branch = sip_pl_make(NULL, 0); break;
	case SIP_HDR_FROM: m->from_tag = sip_pl_make(NULL, 0); break;
	case SIP_HDR_TO: m->to_tag = sip_pl_make(NULL, 0); break;
	case SIP_HDR_CALL_ID: m->call_id = sip_pl_make(NULL, 0); break;
	case SIP_HDR_MAX_FORWARDS: m->max_forwards = -1; break;
	case SIP_HDR_CONTENT_LENGTH: return;   /* computed when printed */
	case SIP_HDR_CSEQ: break;
	default: return;
	}
	int i = m->first[id];
	if (i >= 0)
		check_header_edit(m, id, m->hdrs[i].value, 1, &err);
}

static sip_hdr_id name_id(const char *name, size_t nlen)
{
	return nlen ? sip_hdr_lookup(name, nlen) : SIP_HDR_OTHER;
}

/* The shortcut for id from tmp, which check_header filled for m's new first header. */
static void take_shortcut(sip_msg *m, const sip_msg *tmp, sip_hdr_id id)
{
	switch (id) {
	case SIP_HDR_VIA: m->branch = tmp->branch; break;
	case SIP_HDR_FROM: m->from_tag = tmp->from_tag; break;
	case SIP_HDR_TO: m->to_tag = tmp->to_tag; break;
	case SIP_HDR_CALL_ID: m->call_id = tmp->call_id; break;
	case SIP_HDR_MAX_FORWARDS: m->max_forwards = tmp->max_forwards; break;
	case SIP_HDR_CSEQ:
		m->cseq = tmp->cseq;
		m->cseq_method = tmp->cseq_method;
		break;
	default: break;   /* Content-Length is computed when printed */
	}
}

/* CR, LF or NUL in the n bytes at p: what no header value may hold. 16 bytes a step. */
static int has_line_break(const char *p, size_t n)
{
	const char *end = p + n;
#ifdef __SSE2__
	for (; end - p >= 16; p += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)p);
		__m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')),
					   _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
		hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_setzero_si128()));
		if (_mm_movemask_epi8(hit))
			return 1;
	}
#endif
	for (; p < end; p++)
		if (*p == '\r' || *p == '\n' || *p == '\0')
			return 1;
	return 0;
}

/* A header went in at index at: every first[] index at or past it moves down one (eight
 * at a step with SSE2: the loop ran over every header name for each added header). */
static void first_shift_down(sip_msg *m, unsigned at)
{
	int i = 0;
#ifdef __SSE2__
	const __m128i below = _mm_set1_epi16((short)((int)at - 1));
	for (; i + 8 <= SIP_HDR_COUNT; i += 8) {
		__m128i v = _mm_loadu_si128((const __m128i *)&m->first[i]);
		/* cmpgt is -1 where first[i] >= at (and never for -1, "none") */
		v = _mm_sub_epi16(v, _mm_cmpgt_epi16(v, below));
		_mm_storeu_si128((__m128i *)&m->first[i], v);
	}
#endif
	for (; i < SIP_HDR_COUNT; i++)
		if (m->first[i] >= (int)at)
			m->first[i]++;
}

/* The header at index at went out: every first[] index past it moves up one. */
static void first_shift_up(sip_msg *m, unsigned at)
{
	int i = 0;
#ifdef __SSE2__
	const __m128i past = _mm_set1_epi16((short)at);
	for (; i + 8 <= SIP_HDR_COUNT; i += 8) {
		__m128i v = _mm_loadu_si128((const __m128i *)&m->first[i]);
		v = _mm_add_epi16(v, _mm_cmpgt_epi16(v, past));   /* -1 where first[i] > at */
		_mm_storeu_si128((__m128i *)&m->first[i], v);
	}
#endif
	for (; i < SIP_HDR_COUNT; i++)
		if (m->first[i] > (int)at)
			m->first[i]--;
}

/* Header h in at index at, the first-of-kind indexes kept right (h's own among them). */
static int insert_hdr(sip_msg *m, unsigned at, const sip_hdr *h)
{
	if (push_hdr(m, at, h, UINT_MAX))
		return -1;
	first_shift_down(m, at);
	if (m->first[h->id] < 0 || m->first[h->id] > (int)at)
		m->first[h->id] = (int16_t)at;
	return 0;
}

int sip_msg_add_header(sip_msg *m, const char *name, size_t nlen,
		       const char *val, size_t vlen, int at_top)
{
	sip_hdr_id id = name_id(name, nlen);
	const char *err;
	sip_pl value = trim(sip_pl_make(val, vlen));
	for (size_t i = 0; i < nlen; i++)
		if (!sip_is_token((unsigned char)name[i]))
			return -1;
	if (has_line_break(value.p, value.n))
		return -1;
	if (nlen == 0)
		return -1;
	/* at the top too: a second From or CSeq makes a message no parser accepts */
	if (id != SIP_HDR_OTHER && (hdr_info[id].flags & F_SINGLE) && m->first[id] >= 0)
		return -1;
	unsigned at = m->nhdrs;
	if (at_top) {
		int f = sip_msg_find(m, id, name, nlen, 0);
		at = f >= 0 ? (unsigned)f : 0;
	}
	/* it becomes the first of its kind (the one the shortcuts show) at the top, or when
	 * there was none */
	int first = id == SIP_HDR_OTHER ? 0 : m->first[id] < 0 || (int)at <= m->first[id];
	char *vmem = edit_copy(m, value.p, value.n);
	if (!vmem)
		return -1;
	sip_pl v = sip_pl_make(vmem, value.n);
	sip_msg tmp;
	if (id != SIP_HDR_OTHER) {
		/* validate the copy without touching m; tmp's shortcuts then point into it */
		tmp = *m;
		if (first && id == SIP_HDR_VIA)
			tmp.branch = sip_pl_make(NULL, 0);   /* a Via without one has none */
		if (check_header_edit(&tmp, id, v, first, &err))
			return -1;   /* the copy stays among m's edits, unused */
	}
	/* a known name is its canonical spelling, which lives as long as the program */
	sip_pl nm = sip_pl_make(hdr_info[id].name, id != SIP_HDR_OTHER ? strlen(hdr_info[id].name) : 0);
	if (id == SIP_HDR_OTHER) {
		char *mem = edit_copy(m, name, nlen);
		if (!mem)
			return -1;
		nm = sip_pl_make(mem, nlen);
	}
	sip_hdr h = { nm, v, (uint16_t)id, 0, 1 };
	if (insert_hdr(m, at, &h))
		return -1;
	if (first)
		take_shortcut(m, &tmp, id);
	return 0;
}

int sip_msg_add_own_via(sip_msg *m, const char *val, size_t vlen, size_t branch_at,
			size_t branch_len)
{
	if (branch_at + branch_len > vlen)
		return -1;
	char *vmem = edit_copy(m, val, vlen);
	if (!vmem)
		return -1;
	sip_hdr h = { sip_pl_make(hdr_info[SIP_HDR_VIA].name, 3), sip_pl_make(vmem, vlen),
		      (uint16_t)SIP_HDR_VIA, 0, 1 };
	/* where sip_msg_add_header(..., at_top) puts it: just above the Vias there are */
	if (insert_hdr(m, m->first[SIP_HDR_VIA] >= 0 ? (unsigned)m->first[SIP_HDR_VIA] : 0, &h))
		return -1;
	m->branch = sip_pl_make(vmem + branch_at, branch_len);
	return 0;
}

int sip_msg_replace_top_via(sip_msg *m, const char *val, size_t vlen)
{
	int i = m->first[SIP_HDR_VIA];
	if (i < 0)
		return -1;
	/* one Via value, checked before m is touched: on any failure m keeps the one it had */
	sip_pl value = trim(sip_pl_make(val, vlen)), item;
	size_t pos = 0;
	sip_via via;
	const char *err;
	if (!value.n || has_line_break(value.p, value.n) || !sip_list_next(value, &pos, &item) ||
	    pos < value.n || sip_via_parse(&via, item, &err))
		return -1;
	char *vmem = edit_copy(m, value.p, value.n);
	if (!vmem)
		return -1;
	sip_pl v = m->hdrs[i].value;
	pos = 0;
	sip_list_next(v, &pos, &item);
	sip_hdr h = { m->hdrs[i].name, sip_pl_make(vmem, value.n), (uint16_t)SIP_HDR_VIA, 0, 1 };
	if (pos >= v.n) {
		m->hdrs[i] = h;   /* the line held that value alone: it takes the new one */
	} else {
		/* a combined line keeps the values after the first, below a line with the new one */
		if (insert_hdr(m, (unsigned)i, &h))
			return -1;
		m->hdrs[i + 1].value = trim(sip_pl_make(v.p + pos, v.n - pos));
	}
	/* the branch as parsed above, in the copy */
	m->branch = via.branch.n ? sip_pl_make(vmem + (via.branch.p - value.p), via.branch.n) :
				   sip_pl_make(NULL, 0);
	return 0;
}

int sip_msg_remove_header(sip_msg *m, const char *name, size_t nlen)
{
	sip_hdr_id id = name_id(name, nlen);
	unsigned o = 0;
	int removed = 0;
	for (unsigned i = 0; i < m->nhdrs; i++) {
		const sip_hdr *h = &m->hdrs[i];
		int match = id != SIP_HDR_OTHER ? h->id == id :
			    h->id == SIP_HDR_OTHER && h->name.n == nlen &&
			    strncasecmp(h->name.p, name, nlen) == 0;
		if (match)
			removed++;
		else
			m->hdrs[o++] = *h;
	}
	m->nhdrs = o;
	reindex(m);
	refresh(m, id);
	return removed;
}

int sip_msg_set_header(sip_msg *m, const char *name, size_t nlen,
		       const char *val, size_t vlen)
{
	sip_hdr_id id = name_id(name, nlen);
	int at = sip_msg_find(m, id, name, nlen, 0);
	const char *err;
	sip_pl value = trim(sip_pl_make(val, vlen));
	if (id != SIP_HDR_OTHER) {
		sip_msg tmp = *m;
		if (check_header_edit(&tmp, id, value, 0, &err))
			return -1;
	}
	if (has_line_break(value.p, value.n))
		return -1;
	if (at < 0)
		return sip_msg_add_header(m, name, nlen, val, vlen, 0);
	char *vmem = edit_copy(m, value.p, value.n);
	if (!vmem)
		return -1;
	/* keep the first one's place, drop the rest */
	sip_hdr h = m->hdrs[at];
	h.value = sip_pl_make(vmem, value.n);
	h.folded = 0;
	h.edited = 1;
	sip_msg_remove_header(m, name, nlen);
	push_hdr(m, (unsigned)at <= m->nhdrs ? (unsigned)at : m->nhdrs, &h, UINT_MAX);
	reindex(m);
	refresh(m, id);
	return 0;
}

int sip_msg_remove_top_via(sip_msg *m)
{
	int i = m->first[SIP_HDR_VIA];
	if (i < 0)
		return -1;
	size_t pos = 0;
	sip_pl item;
	sip_pl v = m->hdrs[i].value;
	sip_list_next(v, &pos, &item);
	if (pos >= v.n) {
		/* the whole line goes; the next Via line, if any, is the first now */
		memmove(&m->hdrs[i], &m->hdrs[i + 1], (m->nhdrs - (unsigned)i - 1) * sizeof(sip_hdr));
		m->nhdrs--;
		first_shift_up(m, (unsigned)i);
		m->first[SIP_HDR_VIA] = -1;
		for (unsigned j = (unsigned)i; j < m->nhdrs; j++)
			if (m->hdrs[j].id == SIP_HDR_VIA) {
				m->first[SIP_HDR_VIA] = (int16_t)j;
				break;
			}
	} else {
		m->hdrs[i].value = trim(sip_pl_make(v.p + pos, v.n - pos));
	}
	i = m->first[SIP_HDR_VIA];
	/* the values behind the one taken off were checked when they came in or were added:
	 * only the new first one is parsed again, for its branch */
	sip_pl b = sip_pl_make(NULL, 0);
	if (i >= 0 && !sip_via_first_quick(m->hdrs[i].value, &b)) {
		sip_via via;
		const char *err;
		pos = 0;
		b = sip_pl_make(NULL, 0);   /* (the quick look may have stopped past a branch) */
		if (sip_list_next(m->hdrs[i].value, &pos, &item) && !sip_via_parse(&via, item, &err))
			b = via.branch;
	}
	m->branch = b;
	return 0;
}

int sip_msg_set_uri(sip_msg *m, const char *uri, size_t len)
{
	sip_uri u;
	const char *err;
	if (!m->is_request || sip_uri_parse(&u, sip_pl_make(uri, len), &err) || u.headers.n)
		return -1;
	char *mem = edit_copy(m, uri, len);
	if (!mem)
		return -1;
	m->new_uri = sip_pl_make(mem, len);
	m->uri = m->new_uri;
	return 0;
}

int sip_msg_decrement_max_forwards(sip_msg *m)
{
	int v = m->max_forwards < 0 ? 70 : m->max_forwards - 1;
	if (v < 0)
		v = 0;
	char num[24];
	size_t n = sip_fmt_uint(num, (unsigned)v);
	/* The usual case (70 -> 69): same number of digits in bytes this message owns, so the
	 * digits change in place, with no edit allocation and no re-check of the header. */
	int at = m->first[SIP_HDR_MAX_FORWARDS];
	if (at >= 0 && m->max_forwards >= 0) {
		sip_hdr *h = &m->hdrs[at];
		if ((m->owned || h->edited) && !h->folded && h->value.n == n) {
			memcpy((char *)h->value.p, num, n);
			m->max_forwards = v;
			return v;
		}
	}
	return sip_msg_set_header(m, "Max-Forwards", 12, num, n) ? -1 : v;
}

int sip_msg_set_body(sip_msg *m, const char *body, size_t len)
{
	char *mem = edit_copy(m, body, len);
	if (!mem)
		return -1;
	m->body = sip_pl_make(mem, len);
	m->body_set = 1;
	return 0;
}

/* Appender that counts what would be written and writes only while it fits. */
typedef struct out {
	char *p;
	size_t cap, n;
} out;

static void put(out *o, const char *s, size_t n)
{
	if (o->p && o->n + n <= o->cap)
		memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void puts_(out *o, const char *s) { put(o, s, strlen(s)); }

size_t sip_msg_print(const sip_msg *m, char *buf, size_t cap)
{
	out o = { buf, cap, 0 };
	char num[32];
	if (m->is_request) {
		put(&o, m->method.p, m->method.n);
		put(&o, " ", 1);
		put(&o, m->uri.p, m->uri.n);
		puts_(&o, " SIP/2.0\r\n");
	} else {
		put(&o, num, sip_fmt_status(num, m->status));
		put(&o, m->reason.p, m->reason.n);
		put(&o, "\r\n", 2);
	}
	int cl_done = 0;
	char cln[48];
	memcpy(cln, "Content-Length: ", 16);
	size_t cl = 16 + sip_fmt_uint(cln + 16, m->body.n);
	cln[cl++] = '\r';
	cln[cl++] = '\n';
	for (unsigned i = 0; i < m->nhdrs; i++) {
		const sip_hdr *h = &m->hdrs[i];
		if (h->id == SIP_HDR_CONTENT_LENGTH) {
			if (!cl_done)
				put(&o, cln, cl);
			cl_done = 1;
			continue;
		}
		put(&o, h->name.p, h->name.n);
		put(&o, ": ", 2);
		put(&o, h->value.p, h->value.n);
		put(&o, "\r\n", 2);
	}
	if (!cl_done)
		put(&o, cln, cl);
	put(&o, "\r\n", 2);
	put(&o, m->body.p, m->body.n);
	return o.n;
}

char *sip_msg_print_alloc(const sip_msg *m, size_t extra, size_t *len)
{
	static char scratch[8192];
	size_t n = sip_msg_print(m, scratch, sizeof scratch);
	char *buf = malloc(n + extra ? n + extra : 1);
	if (!buf)
		return NULL;
	if (n <= sizeof scratch)
		memcpy(buf, scratch, n);
	else
		sip_msg_print(m, buf, n);
	*len = n;
	return buf;
}

/* Where a slice of src goes in the clone: inside src's buffer it moves with the buffer;
 * edit memory is appended after it (at *tail). */
static sip_pl rebase(sip_pl v, const sip_msg *src, char *nbuf, size_t *tail)
{
	if (!v.p)
		return v;
	if (v.p >= src->buf && v.p + v.n <= src->buf + src->len)
		return sip_pl_make(nbuf + (v.p - src->buf), v.n);
	char *at = nbuf + *tail;
	memcpy(at, v.p, v.n);
	*tail += v.n;
	return sip_pl_make(at, v.n);
}

static size_t outside(sip_pl v, const sip_msg *src)
{
	return v.p && !(v.p >= src->buf && v.p + v.n <= src->buf + src->len) ? v.n : 0;
}

int sip_msg_clone(sip_msg *dst, sip_hdr *slots, unsigned nslots, const sip_msg *src,
		  const char **err)
{
	/* One allocation: the original bytes, then whatever edits added. No parsing again:
	 * every slice keeps its offset. */
	size_t extra = 0;
	const sip_pl *fields[] = { &src->method, &src->uri, &src->reason, &src->body,
				   &src->call_id, &src->cseq_method, &src->from_tag, &src->to_tag,
				   &src->branch, &src->new_uri };
	/* A message parsed in place and never edited has every slice in buf: the usual case,
	 * one as received. (A clone owns its buffer and may keep edited slices past len.) */
	int in_buf = !src->edits && !src->owned;
	if (!in_buf) {
		for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
			extra += outside(*fields[i], src);
		for (unsigned i = 0; i < src->nhdrs; i++)
			extra += outside(src->hdrs[i].name, src) +
				 outside(src->hdrs[i].value, src);
	}
	char *nbuf = malloc(src->len + extra + 1);
	sip_hdr *hdrs = slots;
	if (nbuf && src->nhdrs > nslots)
		hdrs = malloc(src->nhdrs * sizeof *hdrs);
	if (!nbuf || !hdrs) {
		free(nbuf);
		*err = "out of memory";
		return -1;
	}
	memcpy(nbuf, src->buf, src->len);
	size_t tail = src->len;
	*dst = *src;
	dst->buf = nbuf;
	dst->owned = 1;
	dst->edits = NULL;
	dst->slots = slots;
	dst->nslots = nslots;
	dst->hdrs = hdrs;
	dst->hdrs_cap = hdrs == slots ? nslots : src->nhdrs;
	sip_pl *dfields[] = { &dst->method, &dst->uri, &dst->reason, &dst->body, &dst->call_id,
			      &dst->cseq_method, &dst->from_tag, &dst->to_tag, &dst->branch,
			      &dst->new_uri };
	if (in_buf) {
		/* every slice moves by the same amount */
		for (size_t i = 0; i < sizeof dfields / sizeof dfields[0]; i++)
			if (dfields[i]->p)
				dfields[i]->p = nbuf + (fields[i]->p - src->buf);
		memcpy(hdrs, src->hdrs, src->nhdrs * sizeof *hdrs);
		for (unsigned i = 0; i < src->nhdrs; i++) {
			hdrs[i].name.p = nbuf + (src->hdrs[i].name.p - src->buf);
			hdrs[i].value.p = nbuf + (src->hdrs[i].value.p - src->buf);
		}
		return 0;
	}
	for (size_t i = 0; i < sizeof dfields / sizeof dfields[0]; i++)
		*dfields[i] = rebase(*fields[i], src, nbuf, &tail);
	for (unsigned i = 0; i < src->nhdrs; i++) {
		hdrs[i] = src->hdrs[i];
		hdrs[i].name = rebase(src->hdrs[i].name, src, nbuf, &tail);
		hdrs[i].value = rebase(src->hdrs[i].value, src, nbuf, &tail);
	}
	return 0;
}
