/* rand.h: random tokens for tags, branches and Call-IDs, from OpenSSL's RAND_bytes.
 * Drawn in batches so the per-message cost is a copy, not a syscall. */
#ifndef SIP_RAND_H
#define SIP_RAND_H

#include <stddef.h>

/* Write n lowercase hex characters (no terminator). Returns 0 or -1. */
int sip_random_hex(char *out, size_t n);

#endif
