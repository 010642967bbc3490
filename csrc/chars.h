/* chars.h: RFC 3261 §25 character classes as table lookups.
 * One 256-entry table, one bit per class: the parser's inner loops test a byte in one load. */
#ifndef SIP_CHARS_H
#define SIP_CHARS_H

#include <stdint.h>

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
};

extern const uint16_t sip_ctab[256];

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

#endif
