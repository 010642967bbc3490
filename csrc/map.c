/* map.c: chained hash map with keyed SipHash-1-3, doubling when the load passes 1.
 * Sized for transaction tables: lookups are one hash and, usually, one compare. */
#include "map.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAP_INITIAL 64   /* buckets; grows by doubling, so the size stays a power of two */

/* SipHash-1-3 (Aumasson & Bernstein; the variant Python and Rust hash with) under a key drawn
 * once per process: transaction keys carry branches a peer chooses, so the hash must not be
 * one a peer can aim collisions at; and it takes 8 bytes a round where FNV-1a took one. */
static uint64_t sip_key[2];

static uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND do { \
	v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
	v2 += v3; v3 = rotl(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); \
} while (0)

static uint64_t siphash13(const char *s, size_t n)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ sip_key[0], v1 = 0x646f72616e646f6dull ^ sip_key[1];
	uint64_t v2 = 0x6c7967656e657261ull ^ sip_key[0], v3 = 0x7465646279746573ull ^ sip_key[1];
	uint64_t m, b = (uint64_t)n << 56;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&m, s + i, 8);   /* little-endian hosts; elsewhere a different but as good hash */
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t k = 0; i + k < n; k++)
		b |= (uint64_t)(unsigned char)s[i + k] << (8 * k);
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static void seed_once(void)
{
	if (sip_key[0] | sip_key[1])
		return;
	if (getrandom(sip_key, sizeof sip_key, 0) != (ssize_t)sizeof sip_key || !(sip_key[0] | sip_key[1])) {
		/* no entropy to be had: still a different key per process and start */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		sip_key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
		sip_key[1] = ((uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts) | 1;
	}
}

static uint64_t hash(const sip_map *m, const char *key, size_t klen)
{
	if (m->counter_keys && klen == 8) {
		uint64_t v;
		memcpy(&v, key, 8);
		/* an odd multiplier permutes the low bits the buckets are chosen by: consecutive
		 * ids land in distinct buckets */
		return v * 0x9e3779b97f4a7c15ull;
	}
	return siphash13(key, klen);
}

uint64_t sip_map_hash(const char *key, size_t klen)
{
	seed_once();
	return siphash13(key, klen);
}

int sip_map_init_counters(sip_map *m)
{
	int r = sip_map_init(m);
	m->counter_keys = 1;
	return r;
}

int sip_map_init(sip_map *m)
{
	seed_once();
	m->nb = MAP_INITIAL;
	m->count = 0;
	m->counter_keys = 0;
	m->b = calloc(m->nb, sizeof *m->b);
	return m->b ? 0 : -1;
}

void sip_map_free(sip_map *m)
{
	for (size_t i = 0; i < m->nb; i++)
		for (sip_map_node *n = m->b[i], *next; n; n = next) {
			next = n->next;
			if (n->owned)
				free(n);
			else
				n->next = NULL;
		}
	free(m->b);
	m->b = NULL;
	m->nb = m->count = 0;
}

static sip_map_node **find(const sip_map *m, const char *key, size_t klen, uint64_t h)
{
	sip_map_node **pp = &m->b[h & (m->nb - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
			break;
	return pp;
}

void *sip_map_get(const sip_map *m, const char *key, size_t klen)
{
	sip_map_node *n = *find(m, key, klen, hash(m, key, klen));
	return n ? n->value : NULL;
}

static void grow(sip_map *m)
{
	size_t nb = m->nb * 2;
	sip_map_node **b = calloc(nb, sizeof *b);
	if (!b)
		return;   /* keep working with longer chains */
	for (size_t i = 0; i < m->nb; i++)
		for (sip_map_node *n = m->b[i], *next; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

static void insert(sip_map *m, sip_map_node **pp, sip_map_node *n, const char *key, size_t klen,
		   uint64_t h, void *value)
{
	n->next = NULL;
	n->value = value;
	n->hash = h;
	n->key = key;
	n->klen = klen;
	*pp = n;
	if (++m->count > m->nb)
		grow(m);
}

int sip_map_put(sip_map *m, const char *key, size_t klen, void *value)
{
	uint64_t h = hash(m, key, klen);
	sip_map_node **pp = find(m, key, klen, h);
	if (*pp)
		return -1;
	sip_map_node *n = malloc(sizeof *n + klen);
	if (!n)
		return -1;
	char *copy = (char *)(n + 1);
	memcpy(copy, key, klen);
	n->owned = 1;
	insert(m, pp, n, copy, klen, h, value);
	return 0;
}

int sip_map_link(sip_map *m, sip_map_node *n, const char *key, size_t klen, void *value)
{
	uint64_t h = hash(m, key, klen);
	sip_map_node **pp = find(m, key, klen, h);
	if (*pp)
		return -1;
	n->owned = 0;
	insert(m, pp, n, key, klen, h, value);
	return 0;
}

void sip_map_unlink(sip_map *m, sip_map_node *n)
{
	if (!m->b)
		return;
	for (sip_map_node **pp = &m->b[n->hash & (m->nb - 1)]; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			m->count--;
			return;
		}
}

void *sip_map_del(sip_map *m, const char *key, size_t klen)
{
	sip_map_node **pp = find(m, key, klen, hash(m, key, klen));
	sip_map_node *n = *pp;
	if (!n)
		return NULL;
	void *v = n->value;
	*pp = n->next;
	if (n->owned)
		free(n);
	else
		n->next = NULL;
	m->count--;
	return v;
}
