/* dns.h: RFC 3263 server location (NAPTR, SRV, A/AAAA) on c-ares, driven by the event loop
 * (its sockets in epoll, its timeouts in the timer heap): no lookup ever blocks the loop. */
#ifndef SIP_DNS_H
#define SIP_DNS_H

#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

typedef struct sip_dns sip_dns;

/* Transports a target can name (bits: a caller says which it can use). */
typedef enum sip_dns_tp {
	SIP_DNS_UDP = 1, SIP_DNS_TCP = 2, SIP_DNS_TLS = 4, SIP_DNS_WS = 8, SIP_DNS_WSS = 16,
} sip_dns_tp;

typedef struct sip_dns_config {
	const char *servers;    /* "ip:port,ip:port" (c-ares csv form); NULL: /etc/resolv.conf */
	unsigned timeout_ms;    /* per try of one query; 0: c-ares' default */
	unsigned tries;         /* per server; 0: c-ares' default */
	unsigned negative_ttl;  /* s a "no such name / no such record" answer is kept, when no
				 * SOA in it says (RFC 2308 §5) */
	unsigned max_ttl;       /* s: no answer is kept longer */
	unsigned avoid_ms;      /* a target that failed goes last for this long (§4.3) */
	int hosts_file;         /* a name in /etc/hosts is taken from there, with no query */
} sip_dns_config;

void sip_dns_config_default(sip_dns_config *c);

/* One place to send a request to, in the order RFC 3263 §4 gives. */
typedef struct sip_dns_target {
	sip_dns_tp tp;
	char host[256];         /* the name whose address this is (the URI's, or an SRV target) */
	int port;
	struct sockaddr_storage addr;
	socklen_t len;
} sip_dns_target;

/* err: NULL on success (n >= 1), else why there is no target (n == 0). t is valid during
 * the call only. */
typedef void (*sip_dns_locate_fn)(void *arg, const sip_dns_target *t, unsigned n,
				  const char *err);

/* Reference counted: the endpoint that sends with it holds one, its creator another. */
sip_dns *sip_dns_new(sip_loop *loop, const sip_dns_config *cfg, const char **err);
void sip_dns_ref(sip_dns *d);
/* At zero: lookups still running are dropped without their callbacks. */
void sip_dns_unref(sip_dns *d);

/* RFC 3263 §4 for a sip:/sips: URI: the transport (transport param, NAPTR, SRV, default),
 * then port and addresses (SRV by priority and weight, RFC 2782; then A and AAAA), the
 * targets avoided (sip_dns_avoid) last. tps: the transports the caller can send on. fn is
 * called once, possibly before this returns (everything cached, or an IP literal).
 * Returns a lookup id (for sip_dns_cancel), or 0 with *err for a URI that names no
 * server (fn not called). */
uint64_t sip_dns_locate(sip_dns *d, const char *uri, size_t len, unsigned tps,
			sip_dns_locate_fn fn, void *arg, const char **err);
/* The same from the cache alone: 1 with the first target in *t, 0 when a lookup is needed
 * (an answer is missing or expired), -1 with *err when the answer is that there is none. */
int sip_dns_cached(sip_dns *d, const char *uri, size_t len, unsigned tps, sip_dns_target *t,
		   const char **err);
/* *err of sip_dns_cached when the answer is just not there yet. */
extern const char sip_dns_uncached[];
/* The same, up to max targets in order into t (*n of them). */
int sip_dns_cached_list(sip_dns *d, const char *uri, size_t len, unsigned tps,
			sip_dns_target *t, unsigned max, unsigned *n, const char **err);
/* fn will not be called for lookup id (gone already: nothing happens). */
void sip_dns_cancel(sip_dns *d, uint64_t id);

/* The target failed (503, transport error, timeout): ordered last for cfg.avoid_ms. */
void sip_dns_avoid(sip_dns *d, sip_dns_tp tp, const struct sockaddr *sa);

/* Forget every cached answer. */
void sip_dns_flush(sip_dns *d);

typedef struct sip_dns_stats {
	unsigned long queries, cache_hits, negative_hits, failures;
	unsigned entries, pending;
} sip_dns_stats;
void sip_dns_stats_get(sip_dns *d, sip_dns_stats *st);

/* How the resolver reads an answer of type (1 A, 28 AAAA, 33 SRV, 35 NAPTR) from the
 * network: the records it keeps (0: none of that type), their smallest TTL and the negative
 * TTL an SOA gives (-1: none), or -1 for a malformed message. For the fuzzer and tests. */
int sip_dns_read_answer(int type, const unsigned char *buf, int len, long *ttl, long *neg);

/* "udp", "tcp", "tls", "ws", "wss"; and back (0 when unknown). */
const char *sip_dns_tp_name(sip_dns_tp tp);
sip_dns_tp sip_dns_tp_lookup(const char *s, size_t n);

#endif
