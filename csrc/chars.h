/* chars.h: RFC 3261 §25 character classes as table lookups.
 * One 256-entry table, one bit per class: the parser's inner loops test a byte in one load. */
#ifndef SIP_CHARS_H
#define SIP_CHARS_H

#include <stdint.h>
#include <string.h>

enum {
	SIP_C_DIGIT = 1, SIP_C_ALPHA = 2, SIP_C_HEX = 4, SIP_C_TOKEN = 8,
	SIP_C_UNRESERVED = 16, SIP_C_LWS = 32, SIP_C_WORD = 64,
	/* What may stand unescaped in each part of a SIP URI (§25.1; '%' HEX HEX anywhere) */
	SIP_C_USER = 128,      /* unreserved / user-unreserved: & = + $ , ; ? / */
	SIP_C_PASSWORD = 256,  /* unreserved / & = + $ , */
	SIP_C_PARAM = 512,     /* unreserved / param-unreserved: [ ] / : & + $, and '=' */
	SIP_C_HEADER = 1024,   /* unreserved / hnv-unreserved: [ ] / ? : + $, and '=' '&' */
	SIP_C_HOST = 2048,     /* hostname and IPv4address: alphanum - . */
	SIP_C_IPV6 = 4096,     /* inside an IPv6reference: HEXDIG : . */
	SIP_C_SCHEME = 8192,   /* after the scheme's first letter: alphanum + - . */
	SIP_C_LISTMARK = 16384, /* what splitting a comma list looks at: , " < > */
	SIP_C_PARAMVAL = 32768, /* an unquoted header param value: token / host ([ ] :) */
	SIP_C_ADDRSTOP = 65536, /* what ends an addr-spec's URI: ';' and LWS */
	SIP_C_ADDRBAD = 131072, /* what an addr-spec's URI may not hold: '<' '?' ',' */
	SIP_C_ADDRUSER = 262144, /* SIP_C_USER but ';' '?' ',' (none of them ends an addr-spec) */
};

extern const uint32_t sip_ctab[256];

/* The first byte from p on (before end) outside class cls; sip_cspan: inside it. Four
 * bytes a step where there is room: these loops run over most bytes of a message. */
static inline const char *sip_span(const char *p, const char *end, uint32_t cls)
{
	if (end - p >= 4) {
		/* a bound fixed before the loop: one compare a step, not a subtraction too */
		for (const char *last = end - 4; p <= last; p += 4) {
			if (!(sip_ctab[(unsigned char)p[0]] & cls))
				return p;
			if (!(sip_ctab[(unsigned char)p[1]] & cls))
				return p + 1;
			if (!(sip_ctab[(unsigned char)p[2]] & cls))
				return p + 2;
			if (!(sip_ctab[(unsigned char)p[3]] & cls))
				return p + 3;
		}
	}
	while (p < end && (sip_ctab[(unsigned char)*p] & cls))
		p++;
	return p;
}

static inline const char *sip_cspan(const char *p, const char *end, uint32_t cls)
{
	if (end - p >= 4) {
		for (const char *last = end - 4; p <= last; p += 4) {
			if (sip_ctab[(unsigned char)p[0]] & cls)
				return p;
			if (sip_ctab[(unsigned char)p[1]] & cls)
				return p + 1;
			if (sip_ctab[(unsigned char)p[2]] & cls)
				return p + 2;
			if (sip_ctab[(unsigned char)p[3]] & cls)
				return p + 3;
		}
	}
	while (p < end && !(sip_ctab[(unsigned char)*p] & cls))
		p++;
	return p;
}

/* sip_cspan(p, end, cls) for a class of at most 8 bytes, listed in `set` (n of them):
 * 16 bytes a step with SSE2 (x86-64's baseline) while 16 remain, for the stop characters
 * of scans that skip over most of a value. */
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline const char *sip_find_any(const char *p, const char *end, const char *set, int n,
				       uint32_t cls)
{
#ifdef __SSE2__
	for (; end - p >= 16; p += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)p);
		__m128i hit = _mm_cmpeq_epi8(v, _mm_set1_epi8(set[0]));
		for (int i = 1; i < n; i++)
			hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_set1_epi8(set[i])));
		unsigned m = (unsigned)_mm_movemask_epi8(hit);
		if (m)
			return p + __builtin_ctz(m);
	}
#endif
	(void)set;
	(void)n;
	while (p < end && !(sip_ctab[(unsigned char)*p] & cls))
		p++;
	return p;
}

/* The first byte c at or after p (before end), or NULL, for the short scans of a parse: 16
 * bytes a step with SSE2, then, when lo (the lowest readable byte, or NULL) leaves 16
 * before end, one load of those with the bytes before p masked off, else byte by byte.
 * A memchr call costs more than that on lines of a few dozen bytes. */
static inline const char *sip_find_byte(const char *p, const char *end, char c, const char *lo)
{
#ifdef __SSE2__
	const __m128i v = _mm_set1_epi8(c);
	if (end - p >= 16) {
		for (const char *last = end - 16; p <= last; p += 16) {
			unsigned m = (unsigned)_mm_movemask_epi8(
				_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), v));
			if (m)
				return p + __builtin_ctz(m);
		}
	}
	if (lo && end - lo >= 16) {
		unsigned m = (unsigned)_mm_movemask_epi8(
			_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(end - 16)), v));
		m >>= 16 - (end - p);
		return m ? p + __builtin_ctz(m) : NULL;
	}
	for (; p < end; p++)
		if (*p == c)
			return p;
	return NULL;
#else
	(void)lo;
	return memchr(p, c, (size_t)(end - p));
#endif
}

static inline int sip_is_digit(unsigned char c) { return sip_ctab[c] & SIP_C_DIGIT; }
static inline int sip_is_alpha(unsigned char c) { return sip_ctab[c] & SIP_C_ALPHA; }
static inline int sip_is_alnum(unsigned char c) { return sip_ctab[c] & (SIP_C_ALPHA | SIP_C_DIGIT); }
static inline int sip_is_hex(unsigned char c) { return sip_ctab[c] & SIP_C_HEX; }
static inline int sip_is_token(unsigned char c) { return sip_ctab[c] & SIP_C_TOKEN; }
static inline int sip_is_unreserved(unsigned char c) { return sip_ctab[c] & SIP_C_UNRESERVED; }
/* SP, HTAB, and CR/LF: inside a header value CR/LF only occur as folding (CRLF 1*WSP) */
static inline int sip_is_lws(unsigned char c) { return sip_ctab[c] & SIP_C_LWS; }
static inline int sip_is_word(unsigned char c) { return sip_ctab[c] & SIP_C_WORD; }
static inline int sip_hexval(unsigned char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* Case-insensitive equality of up to 8 bytes of input `in` with canonical bytes `c`, which
 * are letters or bytes without bit 6 ('-', '/', digits...): bit 6 marks the letters, and
 * there only bit 5 (the case) may differ. Exact, unlike `| 0x20` on both sides (which
 * equates CR with '-'). */
static inline int sip_fold_eq(uint64_t in, uint64_t c)
{
	return ((in ^ c) & ~((c & 0x4040404040404040u) >> 1)) == 0;
}

static inline uint64_t sip_load8(const char *p) { uint64_t w; memcpy(&w, p, 8); return w; }
static inline uint64_t sip_load4(const char *p) { uint32_t w; memcpy(&w, p, 4); return w; }
static inline uint64_t sip_load2(const char *p) { uint16_t w; memcpy(&w, p, 2); return w; }

/* n bytes at a equal the canonical bytes at c (see sip_fold_eq) ignoring case: word
 * compares, the last word overlapping the one before rather than reading past the end. */
static inline int sip_caseeq(const char *a, const char *c, size_t n)
{
	if (n >= 8) {
		for (size_t i = 0; i + 8 < n; i += 8)
			if (!sip_fold_eq(sip_load8(a + i), sip_load8(c + i)))
				return 0;
		return sip_fold_eq(sip_load8(a + n - 8), sip_load8(c + n - 8));
	}
	if (n >= 4)
		return sip_fold_eq(sip_load4(a), sip_load4(c)) &&
		       sip_fold_eq(sip_load4(a + n - 4), sip_load4(c + n - 4));
	if (n >= 2)
		return sip_fold_eq(sip_load2(a), sip_load2(c)) &&
		       sip_fold_eq(sip_load2(a + n - 2), sip_load2(c + n - 2));
	return n == 0 || sip_fold_eq((unsigned char)a[0], (unsigned char)c[0]);
}

/* n bytes at a equal those at b, exactly: word compares up to 16 bytes (methods, tokens),
 * the last word overlapping the one before; memcmp for longer. */
static inline int sip_memeq(const char *a, const char *b, size_t n)
{
	if (n > 16)
		return memcmp(a, b, n) == 0;
	if (n >= 8)
		return sip_load8(a) == sip_load8(b) && sip_load8(a + n - 8) == sip_load8(b + n - 8);
	if (n >= 4)
		return sip_load4(a) == sip_load4(b) && sip_load4(a + n - 4) == sip_load4(b + n - 4);
	if (n >= 2)
		return sip_load2(a) == sip_load2(b) && sip_load2(a + n - 2) == sip_load2(b + n - 2);
	return n == 0 || a[0] == b[0];
}

#endif
