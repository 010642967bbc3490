/* ratelimit.h: a token bucket per source IP address, so that one flooding peer is refused
 * while everyone else is served. The endpoint asks it for each new request (ACK and CANCEL
 * excepted) before any transaction or Lua code exists for it. */
#ifndef SIP_RATELIMIT_H
#define SIP_RATELIMIT_H

#include <stdint.h>
#include <sys/socket.h>

typedef struct sip_rl sip_rl;

/* rate: tokens per second; burst: the bucket's size (>= 1); max_sources: buckets held at
 * once (past it full buckets are dropped, then newcomers share one bucket); log_window_ms:
 * a refused source is reported at most once per window. NULL on bad arguments or memory. */
sip_rl *sip_rl_new(double rate, double burst, unsigned max_sources, unsigned log_window_ms);
void sip_rl_free(sip_rl *rl);

/* Take a token from the bucket of sa's IP address at time now_ms: 1 if there was one.
 * 0: refused; *retry_s is when (whole seconds, >= 1) a token will be there again, and
 * *report says that this is the source's first refusal in its log window. */
int sip_rl_allow(sip_rl *rl, const struct sockaddr *sa, uint64_t now_ms, int *retry_s,
		 int *report);

/* An address block: IPv4 or IPv6, a prefix of bits. */
typedef struct sip_cidr {
	uint8_t alen;   /* 4 or 16 */
	uint8_t bits;
	uint8_t ip[16];
} sip_cidr;

/* "10.0.0.0/8", "::1/128", or an address alone (all its bits); host bits past the prefix
 * are ignored ("10.1.2.3/8" is 10.0.0.0/8, as sip.policy reads it). 0, or -1 when malformed
 * (a prefix longer than the address, no address). */
int sip_cidr_parse(const char *s, sip_cidr *c);
/* Is sa's address in c? An IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as IPv4. */
int sip_cidr_match(const sip_cidr *c, const struct sockaddr *sa);

/* Sources in these n blocks are neither limited nor given a bucket (trusted peers: another
 * proxy, an SBC, loopback). Replaces the list held; 0, or -1 when out of memory. */
int sip_rl_exempt(sip_rl *rl, const sip_cidr *blocks, unsigned n);
unsigned sip_rl_exempt_count(const sip_rl *rl);

unsigned sip_rl_sources(const sip_rl *rl);   /* buckets held */
double sip_rl_rate(const sip_rl *rl);
double sip_rl_burst(const sip_rl *rl);
unsigned long sip_rl_refused(const sip_rl *rl);

#endif
