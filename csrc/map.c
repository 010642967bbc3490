/* map.c: chained hash map with FNV-1a hashing, doubling when the load passes 1.
 * Sized for transaction tables: lookups are one hash and, usually, one compare. */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#define MAP_INITIAL 64   /* buckets; grows by doubling, so the size stays a power of two */

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

int sip_map_init(sip_map *m)
{
	m->nb = MAP_INITIAL;
	m->count = 0;
	m->b = calloc(m->nb, sizeof *m->b);
	return m->b ? 0 : -1;
}

void sip_map_free(sip_map *m)
{
	for (size_t i = 0; i < m->nb; i++)
		for (sip_map_node *n = m->b[i], *next; n; n = next) {
			next = n->next;
			free(n);
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
	sip_map_node *n = *find(m, key, klen, fnv1a(key, klen));
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

int sip_map_put(sip_map *m, const char *key, size_t klen, void *value)
{
	uint64_t h = fnv1a(key, klen);
	sip_map_node **pp = find(m, key, klen, h);
	if (*pp)
		return -1;
	sip_map_node *n = malloc(sizeof *n + klen);
	if (!n)
		return -1;
	n->next = NULL;
	n->value = value;
	n->hash = h;
	n->klen = klen;
	memcpy(n->key, key, klen);
	*pp = n;
	if (++m->count > m->nb)
		grow(m);
	return 0;
}

void *sip_map_del(sip_map *m, const char *key, size_t klen)
{
	sip_map_node **pp = find(m, key, klen, fnv1a(key, klen));
	sip_map_node *n = *pp;
	if (!n)
		return NULL;
	void *v = n->value;
	*pp = n->next;
	free(n);
	m->count--;
	return v;
}
