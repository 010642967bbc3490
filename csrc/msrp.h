/* msrp.h: MSRP (RFC 4975) frames: the parser (zero-copy slices into the received bytes),
 * the printer, and the reassembly of a chunked message within explicit limits. */
#ifndef SIP_MSRP_H
#define SIP_MSRP_H

#include <stddef.h>
#include <stdint.h>
#include "pl.h"

/* RFC 4975 §9: transact-id = ident = ALPHANUM 3*31ident-char */
#define SIP_MSRP_TID_MIN 4
#define SIP_MSRP_TID_MAX 32
/* Start line and headers together: the paths of a session through two relays plus the
 * report headers fit in a few hundred bytes; 8 KB leaves room and bounds the search for
 * the end of the headers. */
#define SIP_MSRP_MAX_HEAD 8192
/* Headers kept per frame; more is refused (400): a frame has seven known ones. */
#define SIP_MSRP_MAX_HEADERS 32
/* Byte-Range values: "*" is kept as this */
#define SIP_MSRP_STAR (-1)

typedef struct sip_msrp_hdr {
	sip_pl name, value;
} sip_msrp_hdr;

typedef struct sip_msrp_msg {
	int is_request;
	sip_pl tid;
	sip_pl method;          /* requests: SEND, REPORT, AUTH, others */
	int status;             /* responses */
	sip_pl comment;         /* responses: the reason text, may be empty */
	sip_pl to_path, from_path, message_id, content_type;
	sip_pl success_report, failure_report, status_hdr;
	int has_range;
	int64_t range_start, range_end, range_total;   /* SIP_MSRP_STAR for "*" */
	sip_pl body;
	char flag;              /* '$' last chunk, '+' more follow, '#' message aborted */
	size_t nother;          /* headers other than the ones above (Use-Path, WWW-Authenticate) */
	size_t nhdrs;
	sip_msrp_hdr hdrs[SIP_MSRP_MAX_HEADERS];
} sip_msrp_msg;

/* Parse the frame at the start of buf[0..len). Returns its length in bytes (> 0) with m
 * filled, 0 when more bytes are needed, or -1 for bad input (*why says what, a constant
 * string). A frame longer than max_frame is bad input. *scan (may be NULL) carries how far
 * the search for the end-line got between calls on a growing buffer: set it to 0 for a new
 * frame; it saves rescanning a large body on every read. */
long sip_msrp_parse(const char *buf, size_t len, size_t max_frame, size_t *scan,
		    sip_msrp_msg *m, const char **why);

/* Parse a Byte-Range value "start-end/total" (end and total may be "*"). 0 or -1. */
int sip_msrp_parse_range(sip_pl v, int64_t *start, int64_t *end, int64_t *total);

/* What a frame to print holds; NULL strings are left out. A request when method is set,
 * else a response with status and comment. */
typedef struct sip_msrp_out {
	const char *tid;
	const char *method;
	int status;
	const char *comment;
	const char *to_path, *from_path, *message_id;
	const char *success_report, *failure_report, *status_hdr;
	int has_range;
	int64_t range_start, range_end, range_total;   /* SIP_MSRP_STAR for "*" */
	const char *extra;      /* more header lines, each ending in CRLF, or NULL */
	const char *content_type;
	const char *body;       /* with content_type: the body (may be empty) */
	size_t body_len;
	char flag;              /* 0 means '$' */
} sip_msrp_out;

/* Print the frame into buf (cap bytes). Returns the length it needs (like snprintf, without
 * a terminator): when that is more than cap, nothing useful was written. -1 for a frame
 * that cannot be printed (no tid, a tid out of ident syntax, no method and no status). */
long sip_msrp_print(char *buf, size_t cap, const sip_msrp_out *o);

/* Reassembly of one message from its chunks (§7.1.1, §7.3): chunks may come in any order
 * and overlap; the message is whole when the chunk with '$' came and every byte from 1 to
 * the total arrived. */
typedef struct sip_msrp_asm {
	size_t max_size;        /* a message larger than this: 413 */
	size_t max_chunks;      /* more separate ranges than this: 413 */
	char *buf;
	size_t cap;
	int64_t total;          /* SIP_MSRP_STAR until known */
	int64_t last_end;       /* end of the '$' chunk, or 0 */
	struct sip_msrp_range { int64_t start, end; } *ranges;   /* sorted, merged */
	size_t nranges, capranges;
} sip_msrp_asm;

enum {
	SIP_MSRP_ASM_MORE = 0,      /* keep going */
	SIP_MSRP_ASM_DONE = 1,      /* whole: sip_msrp_asm_body */
	SIP_MSRP_ASM_ABORTED = 2,   /* the sender gave the message up ('#') */
};

void sip_msrp_asm_init(sip_msrp_asm *a, size_t max_size, size_t max_chunks);
void sip_msrp_asm_free(sip_msrp_asm *a);
/* Add a chunk: start/end/total as in its Byte-Range (end may be SIP_MSRP_STAR: the body
 * says), body its bytes, flag its end-line flag. Returns SIP_MSRP_ASM_*, or a negative MSRP
 * status: -400 for a byte range the body contradicts, -413 past max_size or max_chunks,
 * -500 when memory ran out. */
int sip_msrp_asm_add(sip_msrp_asm *a, int64_t start, int64_t end, int64_t total,
		     const char *body, size_t len, char flag);
/* The whole message once DONE (owned by a; valid until the next add or free). */
const char *sip_msrp_asm_body(const sip_msrp_asm *a, size_t *len);

/* Fill out with n random characters of ident syntax (session ids, transaction ids,
 * Message-IDs). 0 or -1. */
int sip_msrp_random_id(char *out, size_t n);

#endif
