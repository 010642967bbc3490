/* build.h: messages made from other messages — responses (RFC 3261 §8.2.6),
 * ACK for non-2xx and CANCEL (§17.1.1.3, §9.1) — printed as wire text. */
#ifndef SIP_BUILD_H
#define SIP_BUILD_H

#include "msg.h"

/* Print the response to `req` with `code`; reason NULL = the standard phrase; to_tag NULL =
 * keep the request's or (for code > 100 and none there) make one. extra: more header lines,
 * each ending in CRLF (may be NULL). Returns the size needed; writes only if it fits. */
size_t sip_build_response(const sip_msg *req, int code, const char *reason, size_t rlen,
			  const char *to_tag, size_t tlen, const char *extra, size_t elen,
			  char *out, size_t cap);

/* The same in a buffer of its own (malloc'd, *len bytes), reason and extra NUL-terminated
 * or NULL. NULL when out of memory. */
char *sip_build_response_alloc(const sip_msg *req, int code, const char *reason,
			       const char *extra, size_t *len);

/* Fill `tag` with a fresh random tag (SIP_TAG_LEN chars). */
#define SIP_TAG_LEN 12
void sip_build_tag(char tag[SIP_TAG_LEN]);

#endif

#ifndef SIP_BUILD_H2
#define SIP_BUILD_H2
/* §17.1.1.3 ACK for a non-2xx final, and §9.1 CANCEL, both from the INVITE as sent: same
 * Request-URI, top Via, Route, From, Call-ID and CSeq number. to: the To header value to
 * use (the response's for ACK), or NULL for the INVITE's. malloc'd text in *out. */
int sip_build_from_invite(const sip_msg *invite, const char *method, sip_pl to,
			  char **out, size_t *len);
#endif
