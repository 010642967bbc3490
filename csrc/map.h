/* map.h: a string-keyed hash map (separate chaining) for transaction and dialog tables.
 * Keys are copied into the node; values are borrowed pointers. */
#ifndef SIP_MAP_H
#define SIP_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sip_map_node {
	struct sip_map_node *next;
	void *value;
	uint64_t hash;
	size_t klen;
	char key[];
} sip_map_node;

typedef struct sip_map {
	sip_map_node **b;
	size_t nb, count;
} sip_map;

int sip_map_init(sip_map *m);
void sip_map_free(sip_map *m);                      /* nodes only, not values */
void *sip_map_get(const sip_map *m, const char *key, size_t klen);
int sip_map_put(sip_map *m, const char *key, size_t klen, void *value);  /* 0, or -1 (ENOMEM/exists) */
void *sip_map_del(sip_map *m, const char *key, size_t klen);            /* the value, or NULL */

#endif
