/* msg.h: SIP messages (RFC 3261 §7, §20, §25) as a buffer plus slices into it.
 * Parsing never copies header bytes; edits are recorded and applied when serialized. */
#ifndef SIP_MSG_H
#define SIP_MSG_H

#include <stddef.h>
#include <stdint.h>
#include "pl.h"

/* Limits with safe defaults; every one is a per-call setting (sip_limits). */
#define SIP_MAX_MSG_DEFAULT   65535u  /* the 16-bit UDP length: no datagram can be larger */
#define SIP_MAX_HDRS_DEFAULT  256u    /* a real SIP message has 10-40 header lines */
#define SIP_MAX_LINE_DEFAULT  8192u   /* longest header line (folded lines count as one) */

typedef struct sip_limits {
	size_t max_msg;
	unsigned max_hdrs;
	size_t max_line;
} sip_limits;

extern const sip_limits sip_limits_default;

/* Known headers; SIP_HDR_OTHER for everything else. Order is fixed: tables index by it. */
typedef enum sip_hdr_id {
	SIP_HDR_OTHER = 0,
	SIP_HDR_ACCEPT, SIP_HDR_ACCEPT_CONTACT, SIP_HDR_ACCEPT_ENCODING, SIP_HDR_ACCEPT_LANGUAGE,
	SIP_HDR_ALERT_INFO, SIP_HDR_ALLOW, SIP_HDR_ALLOW_EVENTS, SIP_HDR_AUTHENTICATION_INFO,
	SIP_HDR_AUTHORIZATION, SIP_HDR_CALL_ID, SIP_HDR_CALL_INFO, SIP_HDR_CONTACT,
	SIP_HDR_CONTENT_DISPOSITION, SIP_HDR_CONTENT_ENCODING, SIP_HDR_CONTENT_LANGUAGE,
	SIP_HDR_CONTENT_LENGTH, SIP_HDR_CONTENT_TYPE, SIP_HDR_CSEQ, SIP_HDR_DATE,
	SIP_HDR_ERROR_INFO, SIP_HDR_EVENT, SIP_HDR_EXPIRES, SIP_HDR_FROM, SIP_HDR_IDENTITY,
	SIP_HDR_IN_REPLY_TO, SIP_HDR_MAX_FORWARDS, SIP_HDR_MIN_EXPIRES, SIP_HDR_MIME_VERSION,
	SIP_HDR_ORGANIZATION, SIP_HDR_PATH, SIP_HDR_PRIORITY, SIP_HDR_PROXY_AUTHENTICATE,
	SIP_HDR_PROXY_AUTHORIZATION, SIP_HDR_PROXY_REQUIRE, SIP_HDR_RECORD_ROUTE,
	SIP_HDR_REFER_TO, SIP_HDR_REFERRED_BY, SIP_HDR_REJECT_CONTACT, SIP_HDR_REPLY_TO,
	SIP_HDR_REQUEST_DISPOSITION, SIP_HDR_REQUIRE, SIP_HDR_RETRY_AFTER, SIP_HDR_ROUTE,
	SIP_HDR_SERVER, SIP_HDR_SERVICE_ROUTE, SIP_HDR_SESSION_EXPIRES, SIP_HDR_SUBJECT,
	SIP_HDR_SUBSCRIPTION_STATE, SIP_HDR_SUPPORTED, SIP_HDR_TIMESTAMP, SIP_HDR_TO,
	SIP_HDR_UNSUPPORTED, SIP_HDR_USER_AGENT, SIP_HDR_VIA, SIP_HDR_WARNING,
	SIP_HDR_WWW_AUTHENTICATE,
	SIP_HDR_COUNT
} sip_hdr_id;

typedef enum sip_method {
	SIP_METHOD_OTHER = 0, SIP_METHOD_INVITE, SIP_METHOD_ACK, SIP_METHOD_CANCEL,
	SIP_METHOD_BYE, SIP_METHOD_REGISTER, SIP_METHOD_OPTIONS, SIP_METHOD_MESSAGE,
	SIP_METHOD_INFO, SIP_METHOD_UPDATE, SIP_METHOD_PRACK, SIP_METHOD_SUBSCRIBE,
	SIP_METHOD_NOTIFY, SIP_METHOD_REFER, SIP_METHOD_PUBLISH,
	SIP_METHOD_COUNT
} sip_method;

/* One header line (or one added by an edit). `value` may hold folding (CRLF + WSP):
 * use sip_hdr_value_unfold() to get the logical value. */
typedef struct sip_hdr {
	sip_pl name;
	sip_pl value;
	uint16_t id;      /* sip_hdr_id */
	uint8_t folded;   /* value contains CRLF */
	uint8_t edited;   /* name/value live in an edit allocation, not in the buffer */
} sip_hdr;

typedef struct sip_edit sip_edit;

typedef struct sip_msg {
	const char *buf;          /* the bytes parsed: owned when `owned` */
	size_t len;               /* bytes of this message (may be less than given on UDP) */
	int owned;
	int is_request;

	sip_pl method;            /* request: method token */
	sip_pl uri;               /* request: Request-URI */
	sip_pl reason;            /* response: reason phrase ("" allowed) */
	int status;               /* response: 100..699 */
	uint8_t method_id;        /* request: sip_method of method; response: of CSeq method */

	sip_hdr *hdrs;            /* in wire order; edits insert and remove here */
	unsigned nhdrs, hdrs_cap;
	sip_hdr *slots;           /* caller's header storage (never freed here), or NULL */
	unsigned nslots;
	int16_t first[SIP_HDR_COUNT];  /* index of the first header with that id, -1 none */

	sip_pl body;

	/* Shortcuts, kept current by the edit functions. */
	sip_pl call_id;
	uint32_t cseq;
	sip_pl cseq_method;
	sip_pl from_tag, to_tag;  /* empty when absent */
	sip_pl branch;            /* of the top Via value; empty when absent */
	int max_forwards;         /* -1 when absent */
	long content_length;      /* -1 when absent */

	sip_pl new_uri;           /* set by sip_msg_set_uri; empty = unchanged */
	uint8_t route_ours;       /* set by §16.4 preprocessing: SIP_ROUTE_* */
	int body_set;
	sip_edit *edits;          /* allocations owned by this message */
} sip_msg;

/* What §16.4 preprocessing found of ours (sip_ep_preprocess): nothing, our address on top
 * of the Route set without our Record-Route tag, or with the tag of this dialog. */
enum { SIP_ROUTE_NONE, SIP_ROUTE_UNKEYED, SIP_ROUTE_KEYED };

/* Header slots a caller keeps on its stack for one parse: more than any real message has,
 * so that parsing stays free of heap allocations. */
#define SIP_MSG_SLOTS 48

/* Parse `len` bytes at `buf`. With own != 0 the message copies the bytes and frees them;
 * otherwise `buf` must outlive the message. `stream` != 0: a missing Content-Length is an
 * error (RFC 3261 §18.3); otherwise the body is the rest of the datagram.
 * Returns 0 or -1 with *err set to a one-line reason (a static string). */
int sip_msg_parse(sip_msg *m, const char *buf, size_t len, int own, int stream,
		  const sip_limits *lim, const char **err);
/* The same, with the first `nslots` headers stored in `slots` (which must outlive the
 * message) and any more in a heap array. sip_msg_parse uses the heap only. */
int sip_msg_parse_into(sip_msg *m, sip_hdr *slots, unsigned nslots, const char *buf,
		       size_t len, int own, int stream, const sip_limits *lim, const char **err);
void sip_msg_free(sip_msg *m);   /* releases what the message owns, not `m` itself */
/* Move a message to dst (for a caller that sizes storage after parsing into a temporary):
 * headers in src's slots are copied to `slots`, which must hold src->nhdrs of them; heap
 * headers and edits change owner. src is left owning nothing. */
void sip_msg_move(sip_msg *dst, sip_msg *src, sip_hdr *slots, unsigned nslots);

/* Header lookup by name (any case, long or compact form) */
sip_hdr_id sip_hdr_lookup(const char *name, size_t len);
const char *sip_hdr_canonical(sip_hdr_id id);     /* "Via", "Call-ID", ... */
int sip_hdr_is_list(sip_hdr_id id);               /* comma lists may be split */
sip_method sip_method_lookup(const char *s, size_t len);
const char *sip_method_name(sip_method m);
const char *sip_reason_phrase(int code);          /* "" for unknown codes */

/* Iterate headers with a given id (or name for SIP_HDR_OTHER). Returns index or -1. */
int sip_msg_find(const sip_msg *m, sip_hdr_id id, const char *name, size_t nlen, int from);

/* Split a header value at top-level commas (outside quotes and <>). *pos starts at 0.
 * Returns 1 with *item (trimmed) set, 0 at the end. */
int sip_list_next(sip_pl value, size_t *pos, sip_pl *item);

/* Unfolded copy of a value into out (cap bytes); returns the length written. Folding
 * CRLF+WSP runs become a single SP. Never writes more than cap. */
size_t sip_unfold(sip_pl value, char *out, size_t cap);

/* Edits. name may be any form; it is written in canonical form when known. */
int sip_msg_add_header(sip_msg *m, const char *name, size_t nlen,
		       const char *val, size_t vlen, int at_top);
/* A Via this program wrote (a proxy's or a UAC's own, RFC 3261 §16.6 step 8), put on top:
 * not parsed again to find its branch, which is at branch_at for branch_len bytes of val.
 * The caller vouches for the rest (sent-by, a token branch, no CR/LF). 0, or -1. */
int sip_msg_add_own_via(sip_msg *m, const char *val, size_t vlen, size_t branch_at,
			size_t branch_len);
int sip_msg_set_header(sip_msg *m, const char *name, size_t nlen,
		       const char *val, size_t vlen);        /* replaces all of that name */
int sip_msg_remove_header(sip_msg *m, const char *name, size_t nlen);  /* count removed */
int sip_msg_remove_top_via(sip_msg *m);  /* first value of the first Via; -1 none */
/* The top Via value (the first of the first Via line) becomes val, one Via value checked
 * first: -1 and m as it was when val is not one. For received=/rport= (§18.2.1, RFC 3581). */
int sip_msg_replace_top_via(sip_msg *m, const char *val, size_t vlen);
int sip_msg_set_uri(sip_msg *m, const char *uri, size_t len);
/* §16.6 step 3: Max-Forwards one less (70 when absent, never below 0). Returns the new
 * value, or -1 on out of memory. */
int sip_msg_decrement_max_forwards(sip_msg *m);
int sip_msg_set_body(sip_msg *m, const char *body, size_t len);

/* A message of its own equal to src (edits included) without parsing again: one buffer
 * holds src's bytes and the edited pieces; headers go to slots when nslots suffice. */
int sip_msg_clone(sip_msg *dst, sip_hdr *slots, unsigned nslots, const sip_msg *src,
		  const char **err);


/* Wire form with edits applied and a correct Content-Length.
 * Returns the size needed; writes only when it fits in cap (out may be NULL). */
size_t sip_msg_print(const sip_msg *m, char *out, size_t cap);
/* The wire form in a malloc'd buffer of *len bytes (plus `extra` to spare), or NULL. Printed
 * once into scratch space and copied, rather than walked once to size it and again to write
 * (not reentrant: one event loop per process uses it). */
char *sip_msg_print_alloc(const sip_msg *m, size_t extra, size_t *len);

#endif
