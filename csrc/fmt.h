/* fmt.h: the few number and string formats the per-message path needs, without printf
 * (vfprintf was ~5% of a proxied transaction's instructions). */
#ifndef SIP_FMT_H
#define SIP_FMT_H

#include <stddef.h>
#include <string.h>

/* Write v in decimal at out (at least 20 bytes); returns the digits written. */
static inline size_t sip_fmt_uint(char *out, unsigned long long v)
{
	char d[24];
	size_t i = sizeof d;
	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(out, d + i, sizeof d - i);
	return sizeof d - i;
}

/* "SIP/2.0 NNN " for a status code 100..699 (12 bytes, no terminator). */
static inline size_t sip_fmt_status(char *out, int code)
{
	memcpy(out, "SIP/2.0 ", 8);
	out[8] = (char)('0' + code / 100 % 10);
	out[9] = (char)('0' + code / 10 % 10);
	out[10] = (char)('0' + code % 10);
	out[11] = ' ';
	return 12;
}

/* An IPv4 address (network byte order bytes) in dotted decimal, NUL-terminated (at least
 * 16 bytes); returns its length. inet_ntop goes through sprintf. */
static inline size_t sip_fmt_ipv4(char *out, const unsigned char b[4])
{
	size_t n = 0;
	for (int i = 0; i < 4; i++) {
		if (i)
			out[n++] = '.';
		n += sip_fmt_uint(out + n, b[i]);
	}
	out[n] = 0;
	return n;
}

#endif
