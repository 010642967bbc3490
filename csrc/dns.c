/* dns.c: RFC 3263 §4 server location over c-ares, in the loop: c-ares' sockets sit in the
 * endpoint's epoll and its timeouts in the timer heap; answers are cached by TTL. */
#include "dns.h"
#include "rand.h"
#include "map.h"
#include "uri.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RR types (RFC 1035, 2782, 3403, 3596) */
#define T_A_ 1
#define T_SOA_ 6
#define T_AAAA_ 28
#define T_SRV_ 33
#define T_NAPTR_ 35
#define C_IN_ 1

/* Records kept of one answer: a zone with more SRV or address records for one name than
 * this is spraying, and the first ones serve. */
#define RR_MAX 16
/* Hosts (SRV targets) one lookup tries, over every NAPTR/SRV set, and addresses of each. */
#define HOPS_MAX 24
#define ADDRS_PER_HOP 8
/* SRV names one lookup queries: one per usable NAPTR record, or one per transport. */
#define SETS_MAX 8
/* Answers kept: a proxy talks to a few hundred domains; past this the oldest go. */
#define CACHE_MAX 4096
/* Failed targets remembered for avoid_ms (§4.3). */
#define AVOID_MAX 64
/* Sockets c-ares holds at once: one UDP socket per server, a TCP one for a truncated answer. */
#define SOCKS_MAX 16
/* An answer with TTL 0 is still used by the request that asked for it (and by the core
 * right after the Lua side looked it up): kept this long. */
#define TTL_FLOOR_MS 1000

enum { E_PENDING, E_DONE };
enum { ST_OK, ST_NXDOMAIN, ST_NODATA, ST_FAIL };

typedef struct dns_rr {
	uint16_t a, b, port;      /* SRV: priority, weight; NAPTR: order, preference */
	char flags[8];            /* NAPTR */
	char service[24];         /* NAPTR */
	char name[256];           /* SRV target, NAPTR replacement */
	unsigned char ip[16];     /* A: 4 bytes, AAAA: 16 */
} dns_rr;

struct job;

typedef struct waiter {
	struct waiter *next;
	struct job *j;
	int kind;                 /* which answer of the job: K_NAPTR, K_SRV, K_A, K_AAAA */
	unsigned idx;             /* its set or hop */
} waiter;

typedef struct entry {
	sip_dns *d;
	int type;
	char name[256];
	char key[260];
	size_t klen;
	int state, status;
	int busy;                 /* its waiters are being told: not to be evicted */
	const char *why;          /* ST_FAIL: what went wrong */
	uint64_t expires;
	unsigned n;
	dns_rr *rr;
	waiter *waiters;
	struct entry *prev, *next;   /* oldest first */
} entry;

enum { K_NAPTR, K_SRV, K_A, K_AAAA };

typedef struct srvset {
	sip_dns_tp tp;
	char name[256];
	int status;
	const char *why;
	unsigned n;
	dns_rr rr[RR_MAX];
} srvset;

typedef struct hop {
	sip_dns_tp tp;
	int port;
	char name[256];
	int status4, status6;
	const char *why;
	unsigned n4, n6;
	unsigned char a4[ADDRS_PER_HOP][4];
	unsigned char a6[ADDRS_PER_HOP][16];
} hop;

typedef struct job {
	sip_dns *d;
	uint64_t id;
	sip_dns_locate_fn fn;
	void *arg;
	struct job *prev, *next;
	unsigned tps;
	int sips, cache_only, missing, issuing, stage;
	unsigned pending;
	char host[256];
	int port;
	sip_dns_tp tp;
	const char *err;
	char errbuf[320];
	int naptr_status;
	const char *naptr_why;
	unsigned nnaptr, nsets, nhops;
	dns_rr naptr[RR_MAX];
	srvset sets[SETS_MAX];
	hop hops[HOPS_MAX];
} job;

enum { S_NAPTR, S_SRV, S_ADDR, S_DONE };

typedef struct sock_slot {
	sip_dns *d;
	int fd;                   /* -1: free */
} sock_slot;

typedef struct avoided {
	sip_dns_tp tp;
	struct sockaddr_storage addr;
	uint64_t until;
} avoided;

struct sip_dns {
	sip_loop *loop;
	ares_channel ch;
	sip_dns_config cfg;
	unsigned refs, depth;
	int dead, destroying;
	uint64_t next_id;
	sip_timer timer;
	sip_map cache;
	entry *oldest, *newest;
	unsigned nentries;
	job *jobs;
	sock_slot socks[SOCKS_MAX];
	avoided avoid[AVOID_MAX];
	unsigned navoid_next;
	sip_dns_stats st;
};

const char sip_dns_uncached[] = "the name needs a DNS lookup first";

void sip_dns_config_default(sip_dns_config *c)
{
	memset(c, 0, sizeof *c);
	c->negative_ttl = 30;
	c->max_ttl = 86400;
	c->avoid_ms = 30000;
	c->hosts_file = 1;
}

const char *sip_dns_tp_name(sip_dns_tp tp)
{
	switch (tp) {
	case SIP_DNS_UDP: return "udp";
	case SIP_DNS_TCP: return "tcp";
	case SIP_DNS_TLS: return "tls";
	case SIP_DNS_WS: return "ws";
	case SIP_DNS_WSS: return "wss";
	}
	return "?";
}

sip_dns_tp sip_dns_tp_lookup(const char *s, size_t n)
{
	static const sip_dns_tp all[] = { SIP_DNS_UDP, SIP_DNS_TCP, SIP_DNS_TLS, SIP_DNS_WS,
					  SIP_DNS_WSS };
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
		const char *name = sip_dns_tp_name(all[i]);
		if (strlen(name) == n && strncasecmp(name, s, n) == 0)
			return all[i];
	}
	return (sip_dns_tp)0;
}

static int default_port(sip_dns_tp tp)
{
	return tp == SIP_DNS_TLS ? 5061 : tp == SIP_DNS_WS ? 80 : tp == SIP_DNS_WSS ? 443 : 5060;
}

/* --- the loop drives c-ares -------------------------------------------------------------- */

static void destroy(sip_dns *d);

static void enter(sip_dns *d) { d->depth++; }

static void leave(sip_dns *d)
{
	if (--d->depth == 0 && d->dead)
		destroy(d);
}

static void on_timer(void *arg);

/* c-ares' next timeout, on the loop's timer heap. */
static void rearm(sip_dns *d)
{
	if (d->destroying)
		return;
	struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);
	if (!tvp) {
		sip_timer_stop(d->loop, &d->timer);
		return;
	}
	uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	sip_timer_start(d->loop, &d->timer, ms, on_timer, d);
}

static void on_timer(void *arg)
{
	sip_dns *d = arg;
	enter(d);
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	rearm(d);
	leave(d);
}

static void on_io(void *arg, uint32_t events)
{
	sock_slot *s = arg;
	sip_dns *d = s->d;
	int fd = s->fd;
	if (fd < 0)
		return;
	enter(d);
	ares_process_fd(d->ch, events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD,
			events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
	rearm(d);
	leave(d);
}

/* c-ares opens, watches and closes its sockets through this. */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	sip_dns *d = data;
	sock_slot *s = NULL, *free_slot = NULL;
	for (int i = 0; i < SOCKS_MAX; i++) {
		if (d->socks[i].fd == fd)
			s = &d->socks[i];
		else if (d->socks[i].fd < 0 && !free_slot)
			free_slot = &d->socks[i];
	}
	uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	if (!ev) {
		if (s) {
			sip_loop_del_fd(d->loop, fd);
			s->fd = -1;
		}
		return;
	}
	if (s) {
		sip_loop_mod_fd(d->loop, fd, ev);
		return;
	}
	if (!free_slot)
		return;   /* past SOCKS_MAX: that query ends on its timeout */
	free_slot->fd = fd;
	if (sip_loop_add_fd(d->loop, fd, ev, on_io, free_slot))
		free_slot->fd = -1;
}

sip_dns *sip_dns_new(sip_loop *loop, const sip_dns_config *cfg, const char **err)
{
	static int lib_ready;
	if (!lib_ready) {
		if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
			*err = "cannot initialise c-ares";
			return NULL;
		}
		lib_ready = 1;
	}
	sip_dns *d = calloc(1, sizeof *d);
	if (!d) {
		*err = "out of memory";
		return NULL;
	}
	d->loop = loop;
	d->refs = 1;
	if (cfg)
		d->cfg = *cfg;
	else
		sip_dns_config_default(&d->cfg);
	d->cfg.servers = NULL;   /* not kept: read once below */
	sip_timer_init(&d->timer);
	for (int i = 0; i < SOCKS_MAX; i++) {
		d->socks[i].d = d;
		d->socks[i].fd = -1;
	}
	struct ares_options o;
	memset(&o, 0, sizeof o);
	int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS;
	o.sock_state_cb = sock_state;
	o.sock_state_cb_data = d;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	if (cfg && cfg->timeout_ms) {
		o.timeout = (int)cfg->timeout_ms;
		mask |= ARES_OPT_TIMEOUTMS;
	}
	if (cfg && cfg->tries) {
		o.tries = (int)cfg->tries;
		mask |= ARES_OPT_TRIES;
	}
	const char *why = "cannot start the resolver (c-ares)";
	struct ares_addr_port_node *servers = NULL;
	if (sip_map_init(&d->cache) || ares_init_options(&d->ch, &o, mask) != ARES_SUCCESS)
		goto fail;
	if (cfg && cfg->servers && cfg->servers[0] &&
	    ares_set_servers_ports_csv(d->ch, cfg->servers) != ARES_SUCCESS) {
		why = "bad DNS server list (want IP:PORT,...)";
		goto fail_ch;
	}
	/* With several servers c-ares takes a SERVFAIL or REFUSED as a reason to ask the next
	 * one (and reports "unreachable" when all did so). With one, that answer is the answer:
	 * it reaches us as such, and the request gets the real reason. */
	if (ares_get_servers_ports(d->ch, &servers) == ARES_SUCCESS && servers && !servers->next) {
		ares_destroy(d->ch);
		o.flags |= ARES_FLAG_NOCHECKRESP;
		if (ares_init_options(&d->ch, &o, mask) != ARES_SUCCESS)
			goto fail;
		if (ares_set_servers_ports(d->ch, servers) != ARES_SUCCESS)
			goto fail_ch;
	}
	if (servers)
		ares_free_data(servers);
	return d;
fail_ch:
	ares_destroy(d->ch);
fail:
	if (servers)
		ares_free_data(servers);
	sip_map_free(&d->cache);
	free(d);
	*err = why;
	return NULL;
}

void sip_dns_ref(sip_dns *d) { d->refs++; }

void sip_dns_unref(sip_dns *d)
{
	if (!d || --d->refs)
		return;
	if (d->depth)
		d->dead = 1;   /* from inside one of our callbacks: when it returns */
	else
		destroy(d);
}

static void entry_free(sip_dns *d, entry *e)
{
	sip_map_del(&d->cache, e->key, e->klen);
	if (e->prev)
		e->prev->next = e->next;
	else
		d->oldest = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		d->newest = e->prev;
	d->nentries--;
	while (e->waiters) {
		waiter *w = e->waiters;
		e->waiters = w->next;
		free(w);
	}
	free(e->rr);
	free(e);
}

static void destroy(sip_dns *d)
{
	d->destroying = 1;
	ares_destroy(d->ch);   /* queries end with ARES_EDESTRUCTION: on_answer ignores them */
	for (int i = 0; i < SOCKS_MAX; i++)
		if (d->socks[i].fd >= 0)
			sip_loop_del_fd(d->loop, d->socks[i].fd);
	sip_timer_stop(d->loop, &d->timer);
	while (d->oldest)
		entry_free(d, d->oldest);
	while (d->jobs) {
		job *j = d->jobs;
		d->jobs = j->next;
		free(j);
	}
	sip_map_free(&d->cache);
	free(d);
}

/* --- the cache and its queries ----------------------------------------------------------- */

/* The smallest TTL of the answer records of type, and the negative TTL an SOA in the
 * authority section gives (RFC 2308 §5: the lesser of its TTL and its MINIMUM); -1 when
 * the message does not hold together. */
static int answer_ttls(const unsigned char *abuf, int alen, int type, long *ttl, long *neg)
{
	*ttl = -1;
	*neg = -1;
	if (!abuf || alen < 12)
		return -1;
	unsigned qd = (unsigned)(abuf[4] << 8 | abuf[5]), an = (unsigned)(abuf[6] << 8 | abuf[7]),
		 ns = (unsigned)(abuf[8] << 8 | abuf[9]);
	const unsigned char *p = abuf + 12, *end = abuf + alen;
	for (unsigned i = 0; i < qd; i++) {
		char *name;
		long len;
		if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
			return -1;
		ares_free_string(name);
		p += len + 4;
		if (p > end)
			return -1;
	}
	for (unsigned i = 0; i < an + ns; i++) {
		char *name;
		long len;
		if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
			return -1;
		ares_free_string(name);
		p += len;
		if (p + 10 > end)
			return -1;
		int t = p[0] << 8 | p[1];
		long rttl = (long)((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7]);
		unsigned rdlen = (unsigned)(p[8] << 8 | p[9]);
		p += 10;
		if (p + rdlen > end)
			return -1;
		if (i < an && t == type && (*ttl < 0 || rttl < *ttl))
			*ttl = rttl;
		if (i >= an && t == T_SOA_ && rdlen >= 22) {
			const unsigned char *m = p + rdlen - 4;
			long min = (long)((uint32_t)m[0] << 24 | (uint32_t)m[1] << 16 | (uint32_t)m[2] << 8 | m[3]);
			*neg = min < rttl ? min : rttl;
		}
		p += rdlen;
	}
	return 0;
}

static const char *ares_why(int status)
{
	switch (status) {
	case ARES_ESERVFAIL: return "server failure";
	case ARES_ETIMEOUT: return "timed out";
	case ARES_EREFUSED: return "refused";
	case ARES_EBADRESP: case ARES_EFORMERR: case ARES_EBADNAME: return "malformed answer";
	case ARES_ECONNREFUSED: return "server unreachable";
	case ARES_ENOMEM: return "out of memory";
	default: return ares_strerror(status);
	}
}

static void copy_name(char *dst, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n > 255)
		n = 255;
	memcpy(dst, src, n);
	dst[n] = 0;
	if (n && dst[n - 1] == '.')
		dst[n - 1] = 0;
}

/* Parse a successful answer into e: ARES_SUCCESS, ARES_ENODATA, or an error. */
static int parse_answer(entry *e, const unsigned char *abuf, int alen)
{
	e->rr = calloc(RR_MAX, sizeof *e->rr);
	if (!e->rr)
		return ARES_ENOMEM;
	int r = ARES_ENODATA;
	if (e->type == T_A_) {
		struct ares_addrttl t[RR_MAX];
		int n = RR_MAX;
		struct hostent *h = NULL;
		r = ares_parse_a_reply(abuf, alen, &h, t, &n);
		if (h)
			ares_free_hostent(h);
		for (int i = 0; r == ARES_SUCCESS && i < n; i++)
			memcpy(e->rr[e->n++].ip, &t[i].ipaddr, 4);
	} else if (e->type == T_AAAA_) {
		struct ares_addr6ttl t[RR_MAX];
		int n = RR_MAX;
		struct hostent *h = NULL;
		r = ares_parse_aaaa_reply(abuf, alen, &h, t, &n);
		if (h)
			ares_free_hostent(h);
		for (int i = 0; r == ARES_SUCCESS && i < n; i++)
			memcpy(e->rr[e->n++].ip, &t[i].ip6addr, 16);
	} else if (e->type == T_SRV_) {
		struct ares_srv_reply *s = NULL;
		r = ares_parse_srv_reply(abuf, alen, &s);
		for (struct ares_srv_reply *p = s; r == ARES_SUCCESS && p && e->n < RR_MAX; p = p->next) {
			dns_rr *x = &e->rr[e->n++];
			x->a = p->priority;
			x->b = p->weight;
			x->port = p->port;
			copy_name(x->name, p->host);
		}
		if (s)
			ares_free_data(s);
	} else if (e->type == T_NAPTR_) {
		struct ares_naptr_reply *s = NULL;
		r = ares_parse_naptr_reply(abuf, alen, &s);
		for (struct ares_naptr_reply *p = s; r == ARES_SUCCESS && p && e->n < RR_MAX; p = p->next) {
			dns_rr *x = &e->rr[e->n++];
			x->a = p->order;
			x->b = p->preference;
			snprintf(x->flags, sizeof x->flags, "%s", (const char *)p->flags);
			snprintf(x->service, sizeof x->service, "%s", (const char *)p->service);
			copy_name(x->name, p->replacement);
		}
		if (s)
			ares_free_data(s);
	}
	if (r == ARES_SUCCESS && e->n == 0)
		r = ARES_ENODATA;
	return r;
}

int sip_dns_read_answer(int type, const unsigned char *buf, int len, long *ttl, long *neg)
{
	entry e;
	memset(&e, 0, sizeof e);
	e.type = type;
	if (type != T_A_ && type != T_AAAA_ && type != T_SRV_ && type != T_NAPTR_)
		return -1;
	if (answer_ttls(buf, len, type, ttl, neg))
		return -1;
	int r = parse_answer(&e, buf, len);
	free(e.rr);
	return r == ARES_SUCCESS ? (int)e.n : r == ARES_ENODATA ? 0 : -1;
}

static void job_answer(job *j, int kind, unsigned idx, entry *e);

/* Hand e to everyone waiting on it. */
static void notify(entry *e)
{
	waiter *w = e->waiters;
	e->waiters = NULL;
	while (w) {
		waiter *next = w->next;
		job_answer(w->j, w->kind, w->idx, e);
		free(w);
		w = next;
	}
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	entry *e = arg;
	sip_dns *d = e->d;
	if (d->destroying)
		return;
	uint64_t now = sip_loop_now(d->loop);
	long ttl = -1, neg = -1;
	if (status == ARES_SUCCESS || status == ARES_ENOTFOUND || status == ARES_ENODATA) {
		if (answer_ttls(abuf, alen, e->type, &ttl, &neg))
			status = ARES_EBADRESP;
	}
	if (status == ARES_SUCCESS)
		status = parse_answer(e, abuf, alen);
	e->state = E_DONE;
	long keep;
	if (status == ARES_SUCCESS) {
		e->status = ST_OK;
		keep = ttl;
	} else if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
		e->status = status == ARES_ENOTFOUND ? ST_NXDOMAIN : ST_NODATA;
		e->n = 0;
		keep = neg >= 0 ? neg : (long)d->cfg.negative_ttl;
	} else {
		e->status = ST_FAIL;
		e->n = 0;
		e->why = ares_why(status);
		keep = -1;   /* not kept: the next request asks again */
		d->st.failures++;
	}
	if (keep > (long)d->cfg.max_ttl)
		keep = (long)d->cfg.max_ttl;
	e->expires = now + (keep >= 0 && keep * 1000 > TTL_FLOOR_MS ? (uint64_t)keep * 1000 : TTL_FLOOR_MS);
	enter(d);
	e->busy = 1;
	notify(e);
	e->busy = 0;
	if (e->status == ST_FAIL && !d->destroying)
		entry_free(d, e);
	leave(d);
}

/* Make room: expired answers go, then the oldest. */
static void evict(sip_dns *d)
{
	uint64_t now = sip_loop_now(d->loop);
	for (entry *e = d->oldest, *next; e && d->nentries >= CACHE_MAX; e = next) {
		next = e->next;
		if (e->state == E_DONE && !e->busy && e->expires <= now)
			entry_free(d, e);
	}
	for (entry *e = d->oldest, *next; e && d->nentries >= CACHE_MAX; e = next) {
		next = e->next;
		if (e->state == E_DONE && !e->busy)
			entry_free(d, e);
	}
}

static size_t cache_key(char key[260], int type, const char *name);

/* Ask for (name, type) on behalf of job j: the answer comes through job_answer, at once
 * when it is cached (or, for a cache-only job, missing: e NULL). */
static void query(job *j, int kind, unsigned idx, const char *name, int type)
{
	sip_dns *d = j->d;
	char key[260];
	size_t klen = cache_key(key, type, name), n = klen - 1;
	entry *e = sip_map_get(&d->cache, key, klen);
	if (e && e->state == E_DONE && !e->busy && e->expires <= sip_loop_now(d->loop)) {
		entry_free(d, e);   /* expired: ask again */
		e = NULL;
	}
	if (e && e->state == E_DONE) {
		d->st.cache_hits++;
		if (e->status != ST_OK)
			d->st.negative_hits++;
		job_answer(j, kind, idx, e);
		return;
	}
	if (j->cache_only) {
		job_answer(j, kind, idx, NULL);
		return;
	}
	waiter *w = calloc(1, sizeof *w);
	if (!w) {
		job_answer(j, kind, idx, NULL);
		return;
	}
	w->j = j;
	w->kind = kind;
	w->idx = idx;
	if (e) {   /* asked already: wait for the same answer */
		w->next = e->waiters;
		e->waiters = w;
		return;
	}
	if (d->nentries >= CACHE_MAX)
		evict(d);
	e = calloc(1, sizeof *e);
	if (!e || sip_map_put(&d->cache, key, klen, e)) {
		free(e);
		free(w);
		job_answer(j, kind, idx, NULL);
		return;
	}
	e->d = d;
	e->type = type;
	memcpy(e->key, key, klen);
	e->klen = klen;
	memcpy(e->name, name, n);
	e->name[n] = 0;
	e->state = E_PENDING;
	e->waiters = w;
	e->prev = d->newest;
	if (d->newest)
		d->newest->next = e;
	else
		d->oldest = e;
	d->newest = e;
	d->nentries++;
	d->st.queries++;
	ares_query(d->ch, e->name, C_IN_, type, on_answer, e);
	rearm(d);
}

/* --- RFC 3263 §4 ------------------------------------------------------------------------- */

static unsigned rnd(unsigned n)
{
	char hex[9] = { 0 };
	if (n == 0 || sip_random_hex(hex, 8))
		return 0;
	return (unsigned)(strtoul(hex, NULL, 16) % n);
}

static void job_fail(job *j, const char *fmt, const char *name, const char *why)
{
	if (j->err)
		return;
	snprintf(j->errbuf, sizeof j->errbuf, fmt, name, why ? why : "");
	j->err = j->errbuf;
}

static void add_hop(job *j, sip_dns_tp tp, const char *name, int port)
{
	if (j->nhops == HOPS_MAX)
		return;
	hop *h = &j->hops[j->nhops++];
	memset(h, 0, sizeof *h);
	h->tp = tp;
	h->port = port;
	copy_name(h->name, name);
}

static void add_set(job *j, sip_dns_tp tp, const char *name)
{
	if (j->nsets == SETS_MAX)
		return;
	srvset *s = &j->sets[j->nsets++];
	memset(s, 0, sizeof *s);
	s->tp = tp;
	copy_name(s->name, name);
}

static const char *srv_prefix(sip_dns_tp tp)
{
	switch (tp) {
	case SIP_DNS_UDP: return "_sip._udp.";
	case SIP_DNS_TCP: return "_sip._tcp.";
	case SIP_DNS_TLS: return "_sips._tcp.";
	case SIP_DNS_WS: return "_sip._ws.";
	case SIP_DNS_WSS: return "_sips._ws.";
	}
	return "_sip._udp.";
}

/* The SRV set of a transport for the job's host: "_sip._udp.example.com" and the like. */
static void add_srv_for(job *j, sip_dns_tp tp)
{
	char name[300];
	snprintf(name, sizeof name, "%s%s", srv_prefix(tp), j->host);
	add_set(j, tp, name);
}

/* RFC 3403 / RFC 3263 §4.1: NAPTR services we map to a transport. */
static sip_dns_tp naptr_tp(const char *service, int sips)
{
	static const struct { const char *s; sip_dns_tp tp; int secure; } map[] = {
		{ "SIP+D2U", SIP_DNS_UDP, 0 }, { "SIP+D2T", SIP_DNS_TCP, 0 },
		{ "SIPS+D2T", SIP_DNS_TLS, 1 }, { "SIP+D2W", SIP_DNS_WS, 0 },
		{ "SIPS+D2W", SIP_DNS_WSS, 1 },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcasecmp(service, map[i].s) == 0)
			return !sips || map[i].secure ? map[i].tp : (sip_dns_tp)0;
	return (sip_dns_tp)0;
}

static int by_order(const void *a, const void *b)
{
	const dns_rr *x = a, *y = b;
	return x->a != y->a ? (int)x->a - (int)y->a : (int)x->b - (int)y->b;
}

/* RFC 2782: by priority; within one, a weighted random draw, the zero weights first in the
 * list so that they are picked only rarely. */
static void srv_order(dns_rr *rr, unsigned n)
{
	for (unsigned i = 1; i < n; i++) {   /* insertion sort: priority, weight 0 first */
		dns_rr x = rr[i];
		unsigned k = i;
		while (k > 0 && (rr[k - 1].a > x.a || (rr[k - 1].a == x.a && rr[k - 1].b > 0 && x.b == 0))) {
			rr[k] = rr[k - 1];
			k--;
		}
		rr[k] = x;
	}
	for (unsigned i = 0; i < n;) {
		unsigned end = i;
		while (end < n && rr[end].a == rr[i].a)
			end++;
		for (unsigned k = i; k + 1 < end; k++) {   /* draw position k from [k, end) */
			unsigned sum = 0;
			for (unsigned m = k; m < end; m++)
				sum += rr[m].b;
			unsigned r = rnd(sum + 1), run = 0, pick = k;
			for (unsigned m = k; m < end; m++) {
				run += rr[m].b;
				if (run >= r) {
					pick = m;
					break;
				}
			}
			dns_rr x = rr[pick];
			memmove(&rr[k + 1], &rr[k], (pick - k) * sizeof x);
			rr[k] = x;
		}
		i = end;
	}
}

static sip_dns_tp first_tp(unsigned tps, int sips)
{
	static const sip_dns_tp pref[] = { SIP_DNS_UDP, SIP_DNS_TCP, SIP_DNS_TLS, SIP_DNS_WS,
					   SIP_DNS_WSS };
	if (sips)
		return tps & SIP_DNS_TLS ? SIP_DNS_TLS : (sip_dns_tp)(tps & SIP_DNS_WSS);
	for (size_t i = 0; i < sizeof pref / sizeof pref[0]; i++)
		if (tps & pref[i])
			return pref[i];
	return (sip_dns_tp)0;
}

/* Issuing queries: the answers found in the cache come back at once (job_answer), which
 * only records them while j->issuing; advance() moves the job on once nothing is pending. */
static void issue_addr(job *j)
{
	j->stage = S_ADDR;
	j->issuing = 1;
	for (unsigned i = 0; i < j->nhops && !j->err; i++) {
		j->pending += 2;
		query(j, K_A, i, j->hops[i].name, T_A_);
		query(j, K_AAAA, i, j->hops[i].name, T_AAAA_);
	}
	j->issuing = 0;
}

static void issue_srv(job *j)
{
	j->stage = S_SRV;
	j->issuing = 1;
	for (unsigned i = 0; i < j->nsets && !j->err; i++) {
		j->pending++;
		query(j, K_SRV, i, j->sets[i].name, T_SRV_);
	}
	j->issuing = 0;
}

/* Every SRV set has its answer: the hosts to look up, in order. */
static void srv_done(job *j)
{
	const char *why = NULL;
	for (unsigned i = 0; i < j->nsets; i++) {
		srvset *s = &j->sets[i];
		if (s->status == ST_FAIL)
			why = s->why;
		srv_order(s->rr, s->n);
		for (unsigned k = 0; k < s->n; k++)
			if (s->rr[k].name[0])   /* "." : decidedly not offered here */
				add_hop(j, s->tp, s->rr[k].name, s->rr[k].port);
	}
	if (j->nhops)
		return issue_addr(j);
	if (why)
		return job_fail(j, "DNS lookup for %s failed: %s", j->host, why);
	/* §4.2: no SRV records: the host's addresses, at the default port of the transport
	 * (NAPTR's first, or the one chosen) */
	sip_dns_tp tp = j->tp ? j->tp : j->nsets ? j->sets[0].tp : first_tp(j->tps, j->sips);
	add_hop(j, tp, j->host, j->port ? j->port : default_port(tp));
	issue_addr(j);
}

/* The NAPTR answer (in j->naptr): SRV names in order (§4.1), or every transport's. */
static void naptr_done(job *j)
{
	if (j->naptr_status == ST_NXDOMAIN)
		return job_fail(j, "no such domain: %s%s", j->host, NULL);
	if (j->naptr_status == ST_FAIL)
		return job_fail(j, "DNS lookup for %s failed: %s", j->host, j->naptr_why);
	dns_rr *rr = j->naptr;
	unsigned n = 0;
	for (unsigned i = 0; i < j->nnaptr; i++) {
		sip_dns_tp tp = naptr_tp(rr[i].service, j->sips);
		if (tp && (j->tps & tp) && strcasecmp(rr[i].flags, "s") == 0 && rr[i].name[0])
			rr[n++] = rr[i];
	}
	qsort(rr, n, sizeof rr[0], by_order);
	for (unsigned i = 0; i < n; i++)
		add_set(j, naptr_tp(rr[i].service, j->sips), rr[i].name);
	if (!j->nsets) {
		/* no (usable) NAPTR: an SRV query per transport we have, preferred in that order */
		if (j->sips) {
			if (j->tps & SIP_DNS_TLS)
				add_srv_for(j, SIP_DNS_TLS);
		} else {
			static const sip_dns_tp order[] = { SIP_DNS_UDP, SIP_DNS_TCP, SIP_DNS_TLS };
			for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
				if (j->tps & order[i])
					add_srv_for(j, order[i]);
		}
	}
	issue_srv(j);
}

static void finish(job *j);

/* Move the job on as far as its answers allow; it may be finished (and freed) on return. */
static void advance(job *j)
{
	while (!j->pending && !j->issuing) {
		if (j->err || j->stage == S_ADDR)
			return finish(j);
		if (j->stage == S_NAPTR)
			naptr_done(j);
		else if (j->stage == S_SRV)
			srv_done(j);
	}
}

static void job_answer(job *j, int kind, unsigned idx, entry *e)
{
	j->pending--;
	if (!e) {
		if (j->cache_only)
			j->missing = 1;
		job_fail(j, "DNS lookup for %s failed: %s", j->host,
			 j->cache_only ? "not cached" : "out of memory");
	} else if (kind == K_NAPTR) {
		j->naptr_status = e->status;
		j->naptr_why = e->why;
		for (unsigned i = 0; i < e->n && j->nnaptr < RR_MAX; i++)
			j->naptr[j->nnaptr++] = e->rr[i];
	} else if (kind == K_SRV) {
		srvset *s = &j->sets[idx];
		s->status = e->status;
		s->why = e->why;
		for (unsigned i = 0; i < e->n && s->n < RR_MAX; i++)
			s->rr[s->n++] = e->rr[i];
	} else {
		hop *h = &j->hops[idx];
		if (kind == K_A) {
			h->status4 = e->status;
			for (unsigned i = 0; i < e->n && h->n4 < ADDRS_PER_HOP; i++)
				memcpy(h->a4[h->n4++], e->rr[i].ip, 4);
		} else {
			h->status6 = e->status;
			for (unsigned i = 0; i < e->n && h->n6 < ADDRS_PER_HOP; i++)
				memcpy(h->a6[h->n6++], e->rr[i].ip, 16);
		}
		if (e->status == ST_FAIL)
			h->why = e->why;
	}
	if (!j->issuing)
		advance(j);
}

static int is_avoided(sip_dns *d, sip_dns_tp tp, const struct sockaddr_storage *a, uint64_t now)
{
	for (unsigned i = 0; i < AVOID_MAX; i++) {
		const avoided *v = &d->avoid[i];
		if (v->until > now && v->tp == tp && v->addr.ss_family == a->ss_family &&
		    memcmp(&v->addr, a, a->ss_family == AF_INET ? sizeof(struct sockaddr_in) :
							       sizeof(struct sockaddr_in6)) == 0)
			return 1;
	}
	return 0;
}

static void set_target(sip_dns_target *t, sip_dns_tp tp, const char *name, int port,
		       const unsigned char *ip, int v6)
{
	memset(t, 0, sizeof *t);
	t->tp = tp;
	copy_name(t->host, name);
	t->port = port;
	if (v6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&t->addr;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		memcpy(&s->sin6_addr, ip, 16);
		t->len = sizeof *s;
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&t->addr;
		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		memcpy(&s->sin_addr, ip, 4);
		t->len = sizeof *s;
	}
}

static void job_free(job *j)
{
	sip_dns *d = j->d;
	if (j->prev)
		j->prev->next = j->next;
	else
		d->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	free(j);
}

/* The targets in order, the avoided ones last; or why there are none. */
static void finish(job *j)
{
	sip_dns *d = j->d;
	j->stage = S_DONE;
	sip_dns_target *t = NULL;
	unsigned n = 0;
	if (!j->err) {
		unsigned cap = 0;
		for (unsigned i = 0; i < j->nhops; i++)
			cap += j->hops[i].n4 + j->hops[i].n6;
		t = cap ? calloc(cap, sizeof *t) : NULL;
		for (unsigned i = 0; t && i < j->nhops; i++) {
			hop *h = &j->hops[i];
			for (unsigned k = 0; k < h->n4; k++)
				set_target(&t[n++], h->tp, h->name, h->port, h->a4[k], 0);
			for (unsigned k = 0; k < h->n6; k++)
				set_target(&t[n++], h->tp, h->name, h->port, h->a6[k], 1);
		}
		if (n) {
			/* stable: the targets not avoided keep their order, then the avoided */
			uint64_t now = sip_loop_now(d->loop);
			sip_dns_target *o = malloc(n * sizeof *o);
			if (o) {
				unsigned k = 0;
				for (int pass = 0; pass < 2; pass++)
					for (unsigned i = 0; i < n; i++)
						if (is_avoided(d, t[i].tp, &t[i].addr, now) == pass)
							o[k++] = t[i];
				free(t);
				t = o;
			}
		} else {
			const hop *h = j->nhops ? &j->hops[0] : NULL;
			if (h && h->why)
				job_fail(j, "DNS lookup for %s failed: %s", h->name, h->why);
			else if (h && h->status4 == ST_NXDOMAIN && h->status6 == ST_NXDOMAIN)
				job_fail(j, "no such domain: %s%s", h->name, NULL);
			else
				job_fail(j, "no address for %s%s", h ? h->name : j->host, NULL);
		}
	}
	if (j->fn)
		j->fn(j->arg, j->err ? NULL : t, j->err ? 0 : n, j->err);
	free(t);
	job_free(j);
}

/* An IP literal (IPv6 with or without []) into ip; 4 or 16, or 0 for a name. */
static int ip_literal(const char *host, unsigned char ip[16])
{
	char buf[64];
	size_t n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof buf)
		return 0;
	memcpy(buf, host, n);
	buf[n] = 0;
	if (inet_pton(AF_INET, buf, ip) == 1)
		return 4;
	if (inet_pton(AF_INET6, buf, ip) == 1)
		return 16;
	return 0;
}

/* The host in /etc/hosts: its addresses go straight into the job's one hop. */
/* The cache key of (type, name): the type's byte, then the name in lowercase. */
static size_t cache_key(char key[260], int type, const char *name)
{
	size_t n = strlen(name);
	if (n > 255)
		n = 255;
	key[0] = (char)type;
	for (size_t i = 0; i < n; i++)
		key[i + 1] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
	return n + 1;
}

/* What /etc/hosts says of a name, read (a local file, no query) once per HOSTS_TTL_MS and
 * kept in the cache like an answer (type 0): addresses, rr[].a the family's size. */
#define HOSTS_TTL_MS 30000
static int from_hosts_file(job *j, hop *h)
{
	sip_dns *d = j->d;
	char key[260];
	size_t klen = cache_key(key, 0, h->name);
	uint64_t now = sip_loop_now(d->loop);
	entry *e = sip_map_get(&d->cache, key, klen);
	if (e && !e->busy && e->expires <= now) {
		entry_free(d, e);
		e = NULL;
	}
	if (!e) {
		if (d->nentries >= CACHE_MAX)
			evict(d);
		e = calloc(1, sizeof *e);
		if (!e || !(e->rr = calloc(RR_MAX, sizeof *e->rr)) ||
		    sip_map_put(&d->cache, key, klen, e)) {
			if (e)
				free(e->rr);
			free(e);
			return 0;
		}
		e->d = d;
		memcpy(e->key, key, klen);
		e->klen = klen;
		copy_name(e->name, h->name);
		e->state = E_DONE;
		e->expires = now + HOSTS_TTL_MS;
		e->prev = d->newest;
		if (d->newest)
			d->newest->next = e;
		else
			d->oldest = e;
		d->newest = e;
		d->nentries++;
		static const int fams[] = { AF_INET, AF_INET6 };
		for (int f = 0; f < 2; f++) {
			struct hostent *he = NULL;
			if (ares_gethostbyname_file(d->ch, h->name, fams[f], &he) != ARES_SUCCESS || !he)
				continue;
			size_t sz = fams[f] == AF_INET ? 4 : 16;
			for (char **a = he->h_addr_list; *a && e->n < RR_MAX; a++) {
				memcpy(e->rr[e->n].ip, *a, sz);
				e->rr[e->n++].a = (uint16_t)sz;
			}
			ares_free_hostent(he);
		}
	}
	for (unsigned i = 0; i < e->n; i++) {
		if (e->rr[i].a == 4 && h->n4 < ADDRS_PER_HOP)
			memcpy(h->a4[h->n4++], e->rr[i].ip, 4);
		else if (e->rr[i].a == 16 && h->n6 < ADDRS_PER_HOP)
			memcpy(h->a6[h->n6++], e->rr[i].ip, 16);
	}
	return e->n > 0;
}

/* Parse the URI into a job: scheme, host (maddr wins), port, transport. 0 or -1. */
static int job_setup(job *j, const char *s, size_t len, const char **err)
{
	sip_uri u;
	sip_pl v;
	if (sip_uri_parse(&u, sip_pl_make(s, len), err))
		return -1;
	if (!u.is_sip) {
		*err = "unsupported URI scheme";
		return -1;
	}
	j->sips = sip_pl_casecmp(u.scheme, "sips");
	if (j->sips && !(j->tps & (SIP_DNS_TLS | SIP_DNS_WSS))) {
		*err = "sips: needs TLS, which this endpoint does not offer";
		return -1;
	}
	sip_pl host = u.host;
	if (sip_param_get(u.params, "maddr", &v) && v.n)
		host = v;
	if (host.n == 0 || host.n > 255) {
		*err = "bad host";
		return -1;
	}
	memcpy(j->host, host.p, host.n);
	j->host[host.n] = 0;
	if (host.n && j->host[host.n - 1] == '.')
		j->host[host.n - 1] = 0;   /* a fully qualified name: the same one */
	j->port = u.port;
	if (sip_param_get(u.params, "transport", &v) && v.n) {
		j->tp = sip_dns_tp_lookup(v.p, v.n);
		if (j->sips && j->tp == SIP_DNS_TCP)
			j->tp = SIP_DNS_TLS;   /* sips:...;transport=tcp is TLS over TCP */
		if (!j->tp || !(j->tps & j->tp)) {
			*err = "the URI's transport is not offered by this endpoint";
			return -1;
		}
	}
	return 0;
}

static uint64_t locate(sip_dns *d, const char *uri, size_t len, unsigned tps,
		       sip_dns_locate_fn fn, void *arg, int cache_only, const char **err)
{
	if (!d || !uri || !fn) {
		*err = "bad arguments";
		return 0;
	}
	/* ~60 KB, most of it record arrays each filled from its count up: only the rest is
	 * cleared (a relay to a name runs one of these per request) */
	job *j = malloc(sizeof *j);
	if (!j) {
		*err = "out of memory";
		return 0;
	}
	memset(j, 0, offsetof(job, naptr));
	j->d = d;
	j->tps = tps;
	j->fn = fn;
	j->arg = arg;
	j->cache_only = cache_only;
	if (job_setup(j, uri, len, err)) {
		free(j);
		return 0;
	}
	j->id = ++d->next_id;
	uint64_t id = j->id;
	j->next = d->jobs;
	if (d->jobs)
		d->jobs->prev = j;
	d->jobs = j;
	enter(d);
	unsigned char ip[16];
	int iplen = ip_literal(j->host, ip);
	sip_dns_tp tp = j->tp ? j->tp : first_tp(tps, j->sips);
	if (tp)
		add_hop(j, tp, j->host, j->port ? j->port : default_port(tp));
	hop *h = &j->hops[0];
	if (!tp) {
		job_fail(j, "no transport to reach %s%s", j->host, NULL);
	} else if (iplen) {
		/* §4.1, §4.2: an IP literal needs no lookup: UDP (TLS for sips:) unless the URI
		 * says, at its port or the default one */
		if (iplen == 4)
			memcpy(h->a4[h->n4++], ip, 4);
		else
			memcpy(h->a6[h->n6++], ip, 16);
		j->stage = S_ADDR;
	} else if (d->cfg.hosts_file && from_hosts_file(j, h)) {
		j->stage = S_ADDR;   /* a local name (localhost): no NAPTR or SRV for it */
	} else if (j->port) {
		/* §4.2: a port and no IP: the host's A/AAAA records, transport as above */
		issue_addr(j);
	} else if (j->tp) {
		/* §4.2: the transport known, no port: its SRV records */
		j->nhops = 0;
		add_srv_for(j, j->tp);
		issue_srv(j);
	} else {
		j->nhops = 0;
		j->stage = S_NAPTR;
		j->pending++;
		j->issuing = 1;
		query(j, K_NAPTR, 0, j->host, T_NAPTR_);
		j->issuing = 0;
	}
	advance(j);   /* (j may be gone after this) */
	leave(d);
	return id;
}

uint64_t sip_dns_locate(sip_dns *d, const char *uri, size_t len, unsigned tps,
			sip_dns_locate_fn fn, void *arg, const char **err)
{
	return locate(d, uri, len, tps, fn, arg, 0, err);
}

typedef struct cached_out {
	int state;
	char errbuf[320];
	sip_dns_target *t;
	unsigned max, n;
} cached_out;

static void cached_cb(void *arg, const sip_dns_target *t, unsigned n, const char *err)
{
	cached_out *o = arg;
	if (n) {
		o->n = n < o->max ? n : o->max;
		memcpy(o->t, t, o->n * sizeof *t);
		o->state = 1;
	} else {
		snprintf(o->errbuf, sizeof o->errbuf, "%s", err ? err : "no target");
		o->state = -1;
	}
}

int sip_dns_cached_list(sip_dns *d, const char *uri, size_t len, unsigned tps,
			sip_dns_target *t, unsigned max, unsigned *n, const char **err)
{
	/* the steps of a lookup, every query answered from the cache (synchronously) or not
	 * at all */
	static char why[320];
	cached_out o;
	memset(&o, 0, sizeof o);
	o.t = t;
	o.max = max;
	*n = 0;
	if (!locate(d, uri, len, tps, cached_cb, &o, 1, err))
		return -1;
	if (o.state == 1) {
		*n = o.n;
		return 1;
	}
	if (o.state == -1 && !strstr(o.errbuf, "not cached")) {
		snprintf(why, sizeof why, "%s", o.errbuf);
		*err = why;
		return -1;
	}
	*err = sip_dns_uncached;
	return 0;
}

int sip_dns_cached(sip_dns *d, const char *uri, size_t len, unsigned tps, sip_dns_target *t,
		   const char **err)
{
	unsigned n;
	return sip_dns_cached_list(d, uri, len, tps, t, 1, &n, err);
}

void sip_dns_cancel(sip_dns *d, uint64_t id)
{
	for (job *j = d->jobs; j; j = j->next)
		if (j->id == id)
			j->fn = NULL;
}

void sip_dns_avoid(sip_dns *d, sip_dns_tp tp, const struct sockaddr *sa)
{
	avoided *v = &d->avoid[d->navoid_next++ % AVOID_MAX];
	memset(v, 0, sizeof *v);
	v->tp = tp;
	memcpy(&v->addr, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
							 sizeof(struct sockaddr_in));
	v->until = sip_loop_now(d->loop) + d->cfg.avoid_ms;
}

void sip_dns_flush(sip_dns *d)
{
	for (entry *e = d->oldest; e; e = e->next)
		if (e->state == E_DONE)
			e->expires = 0;
}

void sip_dns_stats_get(sip_dns *d, sip_dns_stats *st)
{
	*st = d->st;
	st->entries = d->nentries;
	st->pending = 0;
	for (entry *e = d->oldest; e; e = e->next)
		st->pending += e->state == E_PENDING;
}
