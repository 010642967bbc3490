/* key.h: map keys built on every message from slices of it: plain copies, no printf. A key
 * that would not fit is cut at SIP_KEY_MAX, which only makes two absurdly long keys collide. */
#ifndef SIP_KEY_H
#define SIP_KEY_H

#include <string.h>

#include "pl.h"

#define SIP_KEY_MAX 1024   /* branch + sent-by + method, or the RFC 2543 set */

typedef struct sip_keybuf {
	char *p;   /* SIP_KEY_MAX bytes */
	size_t n;
} sip_keybuf;

static inline void sip_kput(sip_keybuf *k, const char *s, size_t n)
{
	if (n > SIP_KEY_MAX - 1 - k->n)
		n = SIP_KEY_MAX - 1 - k->n;
	memcpy(k->p + k->n, s, n);
	k->n += n;
}

static inline void sip_kpl(sip_keybuf *k, sip_pl v) { sip_kput(k, v.p, v.n); }
static inline void sip_kch(sip_keybuf *k, char c) { sip_kput(k, &c, 1); }

static inline void sip_kuint(sip_keybuf *k, unsigned v)
{
	char d[12];
	size_t i = sizeof d;
	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	sip_kput(k, d + i, sizeof d - i);
}

#endif
