/* ratelimit.c: token buckets per source IP in one open-addressing table (linear probing).
 * Buckets are never removed one by one: when max_sources are held, the table is rebuilt
 * without the buckets that have refilled (a full bucket is the same as none), so a flood
 * from spoofed sources keeps memory bounded and the table free of tombstones. */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

typedef struct bucket {
	uint8_t used;
	uint8_t alen;           /* 4 (IPv4) or 16 (IPv6) address bytes */
	uint8_t logged;         /* reported at least once: logged_at holds */
	uint8_t ip[16];
	double tokens;
	uint64_t at;            /* ms of the last request */
	uint64_t logged_at;     /* ms of the last report */
} bucket;

struct sip_rl {
	double rate, burst;
	unsigned max, count;
	unsigned cap;           /* a power of two; grows while count * 2 >= cap */
	unsigned log_window;
	bucket *tab;
	bucket overflow;        /* newcomers share it when max buckets are held, none full */
	unsigned long refused;
	sip_cidr *exempt;       /* never limited */
	unsigned nexempt;
};

sip_rl *sip_rl_new(double rate, double burst, unsigned max_sources, unsigned log_window_ms)
{
	if (!(rate > 0) || !(burst >= 1) || max_sources == 0)
		return NULL;
	sip_rl *rl = calloc(1, sizeof *rl);
	if (!rl)
		return NULL;
	rl->rate = rate;
	rl->burst = burst;
	rl->max = max_sources;
	rl->log_window = log_window_ms;
	rl->cap = 64;
	rl->tab = calloc(rl->cap, sizeof *rl->tab);
	if (!rl->tab) {
		free(rl);
		return NULL;
	}
	return rl;
}

void sip_rl_free(sip_rl *rl)
{
	if (rl) {
		free(rl->exempt);
		free(rl->tab);
		free(rl);
	}
}

static unsigned hash(const uint8_t *ip, unsigned n)
{
	uint32_t h = 2166136261u;   /* FNV-1a */
	for (unsigned i = 0; i < n; i++)
		h = (h ^ ip[i]) * 16777619u;
	return h;
}

/* The slot holding ip, or the empty slot where it would go. */
static bucket *slot(bucket *tab, unsigned cap, const uint8_t *ip, unsigned alen)
{
	unsigned i = hash(ip, alen) & (cap - 1);
	while (tab[i].used && !(tab[i].alen == alen && memcmp(tab[i].ip, ip, alen) == 0))
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

/* A new table of cap slots with the buckets held; drop_full: without those that have
 * refilled by now. */
static int rebuild(sip_rl *rl, unsigned cap, uint64_t now, int drop_full)
{
	bucket *tab = calloc(cap, sizeof *tab);
	if (!tab)
		return -1;
	unsigned count = 0;
	for (unsigned i = 0; i < rl->cap; i++) {
		const bucket *b = &rl->tab[i];
		if (!b->used)
			continue;
		if (drop_full && b->tokens + (double)(now - b->at) * rl->rate / 1000.0 >= rl->burst)
			continue;
		*slot(tab, cap, b->ip, b->alen) = *b;
		count++;
	}
	free(rl->tab);
	rl->tab = tab;
	rl->cap = cap;
	rl->count = count;
	return 0;
}

static bucket *find(sip_rl *rl, const uint8_t *ip, unsigned alen, uint64_t now)
{
	bucket *b = slot(rl->tab, rl->cap, ip, alen);
	if (b->used)
		return b;
	if (rl->count >= rl->max) {
		rebuild(rl, rl->cap, now, 1);   /* on failure the table stays as it was */
		if (rl->count >= rl->max) {
			b = &rl->overflow;
			if (!b->used) {
				b->used = 1;
				b->tokens = rl->burst;
				b->at = now;
			}
			return b;
		}
	}
	if ((rl->count + 1) * 2 >= rl->cap && rebuild(rl, rl->cap * 2, now, 0) < 0 &&
	    rl->count + 1 >= rl->cap)
		return &rl->overflow;   /* out of memory and no free slot left */
	b = slot(rl->tab, rl->cap, ip, alen);
	b->used = 1;
	b->alen = (uint8_t)alen;
	memcpy(b->ip, ip, alen);
	b->tokens = rl->burst;
	b->at = now;
	b->logged = 0;
	rl->count++;
	return b;
}

int sip_cidr_parse(const char *s, sip_cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	memset(c, 0, sizeof *c);
	if (inet_pton(AF_INET, buf, c->ip) == 1)
		c->alen = 4;
	else if (inet_pton(AF_INET6, buf, c->ip) == 1)
		c->alen = 16;
	else
		return -1;
	unsigned bits = c->alen * 8u;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strlen(p) > 3)
			return -1;
		bits = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			bits = bits * 10 + (unsigned)(*p - '0');
		}
		if (bits > c->alen * 8u)
			return -1;
	}
	c->bits = (uint8_t)bits;
	for (unsigned i = bits; i < c->alen * 8u; i++)   /* host bits past the prefix: off */
		c->ip[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
	return 0;
}

/* sa's address bytes: 4 for IPv4 (also when IPv4-mapped in IPv6), 16 for IPv6. */
static unsigned addr_bytes(const struct sockaddr *sa, const uint8_t **ip)
{
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (memcmp(a, mapped, 12) == 0) {
			*ip = a + 12;
			return 4;
		}
		*ip = a;
		return 16;
	}
	*ip = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	return 4;
}

int sip_cidr_match(const sip_cidr *c, const struct sockaddr *sa)
{
	const uint8_t *ip;
	if (addr_bytes(sa, &ip) != c->alen)
		return 0;
	unsigned whole = c->bits / 8, rest = c->bits % 8;
	if (memcmp(ip, c->ip, whole) != 0)
		return 0;
	return rest == 0 || ((ip[whole] ^ c->ip[whole]) & (0xff00 >> rest) & 0xff) == 0;
}

int sip_rl_exempt(sip_rl *rl, const sip_cidr *blocks, unsigned n)
{
	sip_cidr *copy = NULL;
	if (n) {
		copy = malloc(n * sizeof *copy);
		if (!copy)
			return -1;
		memcpy(copy, blocks, n * sizeof *copy);
	}
	free(rl->exempt);
	rl->exempt = copy;
	rl->nexempt = n;
	return 0;
}

unsigned sip_rl_exempt_count(const sip_rl *rl) { return rl->nexempt; }

int sip_rl_allow(sip_rl *rl, const struct sockaddr *sa, uint64_t now_ms, int *retry_s,
		 int *report)
{
	for (unsigned i = 0; i < rl->nexempt; i++)
		if (sip_cidr_match(&rl->exempt[i], sa))
			return 1;
	const uint8_t *ip;
	unsigned alen;
	if (sa->sa_family == AF_INET6) {
		ip = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		alen = 16;
	} else {
		ip = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		alen = 4;
	}
	bucket *b = find(rl, ip, alen, now_ms);
	double tokens = b->tokens + (double)(now_ms - b->at) * rl->rate / 1000.0;
	if (tokens > rl->burst)
		tokens = rl->burst;
	b->at = now_ms;
	if (tokens >= 1) {
		b->tokens = tokens - 1;
		return 1;
	}
	b->tokens = tokens;
	rl->refused++;
	*report = !b->logged || now_ms - b->logged_at >= rl->log_window;
	if (*report) {
		b->logged = 1;
		b->logged_at = now_ms;
	}
	double wait = (1 - tokens) / rl->rate;   /* seconds, rounded up below (no libm) */
	int w = wait > 3600 ? 3600 : (int)wait;
	if (w < wait && w < 3600)
		w++;
	*retry_s = w < 1 ? 1 : w;
	return 0;
}

unsigned sip_rl_sources(const sip_rl *rl) { return rl->count + (rl->overflow.used ? 1 : 0); }
double sip_rl_rate(const sip_rl *rl) { return rl->rate; }
double sip_rl_burst(const sip_rl *rl) { return rl->burst; }
unsigned long sip_rl_refused(const sip_rl *rl) { return rl->refused; }
