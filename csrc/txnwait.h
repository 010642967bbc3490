/* txnwait.h: transactions that only wait to absorb retransmissions (§17: a non-INVITE server
 * in Completed, an INVITE server in Confirmed, a client in Completed), kept as the hash of
 * their key, where to resend and the bytes to resend: one table, expiry queues, no timers. */
#ifndef SIP_TXNWAIT_H
#define SIP_TXNWAIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"
#include "transport.h"

typedef struct sip_wait sip_wait;

/* Where a waiting transaction resends: what a sip_dest holds, given back to the owner. */
typedef struct sip_wait_dest {
	sip_tp_kind kind;
	struct sockaddr_storage addr;
	socklen_t len;
	uint32_t conn_id;
	int listener;
} sip_wait_dest;

/* Send buf to d (a retransmitted request or response matched a waiting transaction). */
typedef void (*sip_wait_send_fn)(void *arg, const sip_wait_dest *d, const char *buf, size_t len);

/* At most max entries (0: none, every add fails). NULL when out of memory. */
sip_wait *sip_wait_new(sip_loop *loop, unsigned max, sip_wait_send_fn send, void *arg);
void sip_wait_free(sip_wait *w);   /* sends nothing */

/* Keep key for ms (it may end up to SIP_LOOP_LAZY_MS late): a match within that time resends
 * bytes (len may be 0: absorb only) to d. 0, or -1 when full or out of memory (the caller
 * keeps its transaction as it was) or when the key waits already. flags SIP_WAIT_ALIAS: a
 * second key of the transaction added just before (its bytes count, it does not). */
#define SIP_WAIT_ALIAS 1
int sip_wait_add(sip_wait *w, const char *key, size_t klen, const sip_wait_dest *d,
		 const char *bytes, size_t len, unsigned ms, int flags);

/* Is key waiting? 1 if so (and its bytes were resent when resend is set and it has some),
 * 0 if not. */
int sip_wait_match(sip_wait *w, const char *key, size_t klen, int resend);

/* Transactions held (their aliases not counted); the bytes they and the table take apart
 * from the bytes kept for resending (malloc's own chunk header counted), and those. */
typedef struct sip_wait_stats {
	unsigned count, max;
	size_t bytes, resend_bytes;
	unsigned long expired, full;   /* ended by their wait; refused for the table being full */
} sip_wait_stats;
void sip_wait_stats_get(const sip_wait *w, sip_wait_stats *st);

#endif
