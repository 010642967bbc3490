/* rand.h: random tokens for tags, branches and Call-IDs, from OpenSSL's RAND_bytes.
 * Drawn in batches so the per-message cost is a copy, not a syscall. */
#ifndef SIP_RAND_H
#define SIP_RAND_H

#include <stddef.h>

/* Write n lowercase hex characters (no terminator). Returns 0 or -1. */
int sip_random_hex(char *out, size_t n);

/* Write n hex characters that are unique in this process and, with overwhelming odds,
 * across processes (a 64-bit counter mixed with a per-process secret drawn from RAND_bytes):
 * for Via branches, which RFC 3261 §8.1.1.7 wants unique, not unpredictable. Cheap: no
 * RAND_bytes per call. Returns 0 or -1. */
int sip_unique_hex(char *out, size_t n);

#endif
