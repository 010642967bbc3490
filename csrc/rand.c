/* rand.c: batched random hex for tags and branches over RAND_bytes.
 * A 256-byte pool refilled when empty keeps RAND_bytes off the per-message path. */
#include "rand.h"

#include <openssl/rand.h>
#include <stdint.h>

/* 8192 hex chars a refill: RAND_bytes has a large fixed cost per call (locking, reseed
 * checks), so it runs once per ~300 transactions rather than for every tag or branch. */
#define POOL_SIZE 4096

static unsigned char pool[POOL_SIZE];
static size_t pool_left;

int sip_random_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i += 2) {
		if (pool_left == 0) {
			if (RAND_bytes(pool, POOL_SIZE) != 1)
				return -1;
			pool_left = POOL_SIZE;
		}
		unsigned char b = pool[--pool_left];
		pool[pool_left] = 0;
		out[i] = hex[b >> 4];
		if (i + 1 < n)
			out[i + 1] = hex[b & 15];
	}
	return 0;
}

/* splitmix64: a bijection, so distinct counter values give distinct outputs */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int sip_unique_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	static uint64_t secret, counter;
	static int seeded;
	if (!seeded) {
		if (RAND_bytes((unsigned char *)&secret, sizeof secret) != 1)
			return -1;
		seeded = 1;
	}
	for (size_t i = 0; i < n;) {
		uint64_t v = mix64(secret ^ mix64(++counter));
		for (int k = 0; k < 16 && i < n; k++, i++) {
			out[i] = hex[v & 15];
			v >>= 4;
		}
	}
	return 0;
}
