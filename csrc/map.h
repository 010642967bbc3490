/* map.h: a string-keyed hash map (separate chaining) for transaction and dialog tables.
 * sip_map_put copies the key into a node it allocates; sip_map_link files a node the caller
 * embeds in its own object, under key bytes the caller keeps (no allocation: a transaction
 * is in two maps for its whole life). Values are borrowed pointers. */
#ifndef SIP_MAP_H
#define SIP_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sip_map_node {
	struct sip_map_node *next;
	void *value;
	uint64_t hash;
	const char *key;     /* right after the node (put), or the caller's bytes (link) */
	size_t klen;
	int owned;           /* allocated by sip_map_put: freed by del and free */
} sip_map_node;

typedef struct sip_map {
	sip_map_node **b;
	size_t nb, count;
	int counter_keys;   /* keys are 8-byte counters of our own: a multiply spreads them */
} sip_map;

int sip_map_init(sip_map *m);
/* A map keyed by 8-byte values this process counts up (transaction ids): nobody else chooses
 * them, so they skip the keyed hash. */
int sip_map_init_counters(sip_map *m);
void sip_map_free(sip_map *m);                      /* nodes only, not values */
void *sip_map_get(const sip_map *m, const char *key, size_t klen);
int sip_map_put(sip_map *m, const char *key, size_t klen, void *value);  /* 0, or -1 (ENOMEM/exists) */
void *sip_map_del(sip_map *m, const char *key, size_t klen);            /* the value, or NULL */
/* File node n (the caller's memory) under key: 0, or -1 when the key is there already. key
 * must stay unchanged until sip_map_unlink. */
int sip_map_link(sip_map *m, sip_map_node *n, const char *key, size_t klen, void *value);
/* Take node n out of m if it is in it (once linked, unlinking twice is harmless). */
void sip_map_unlink(sip_map *m, sip_map_node *n);
/* The keyed hash the maps use, for other tables of peer-chosen keys (txnwait.c). */
uint64_t sip_map_hash(const char *key, size_t klen);

#endif
