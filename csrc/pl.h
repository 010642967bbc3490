/* pl.h: a pointer + length slice into a buffer (after libre's `struct pl`).
 * Slices never own memory; the message or caller that owns the buffer does. */
#ifndef SIP_PL_H
#define SIP_PL_H

#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct sip_pl {
	const char *p;
	size_t n;
} sip_pl;

#define SIP_PL(s) ((sip_pl){ (s), sizeof(s) - 1 })
static inline sip_pl sip_pl_make(const char *p, size_t n) { return (sip_pl){ p, n }; }
static inline int sip_pl_empty(sip_pl a) { return a.n == 0; }
static inline int sip_pl_eq(sip_pl a, sip_pl b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }
static inline int sip_pl_casecmp(sip_pl a, const char *s)
{
	size_t n = strlen(s);
	return a.n == n && strncasecmp(a.p, s, n) == 0;
}
static inline int sip_pl_caseeq(sip_pl a, sip_pl b) { return a.n == b.n && (a.n == 0 || strncasecmp(a.p, b.p, a.n) == 0); }

#endif
