/* txn.h: the transaction layer of RFC 3261 §17: matching (§17.1.3, §17.2.3), the four
 * machines and their timers. It reports to each transaction's owner through the handlers
 * the owner gave it (sip_txn_user) and knows nothing of who that owner is. */
#ifndef SIP_TXN_H
#define SIP_TXN_H

#include <stdint.h>

#include "dest.h"
#include "key.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "msg.h"
#include "transport.h"
#include "uri.h"
#include "txnwait.h"

/* RFC 3261 §17.1.1.1 defaults, in ms */
#define SIP_T1_DEFAULT 500
#define SIP_T2_DEFAULT 4000
#define SIP_T4_DEFAULT 5000

typedef struct sip_txn sip_txn;

typedef enum sip_txn_state {
	SIP_TXN_CALLING, SIP_TXN_TRYING, SIP_TXN_PROCEEDING, SIP_TXN_COMPLETED,
	SIP_TXN_CONFIRMED, SIP_TXN_ACCEPTED, SIP_TXN_TERMINATED,
} sip_txn_state;

/* What a transaction tells its owner; any handler may be NULL. Given at creation (one
 * static table per kind of owner, with an argument per transaction), changed by
 * sip_txn_set_user when another owner takes the transaction over. */
typedef struct sip_txn_user {
	/* Client: a response, provisional or final; a final may be a 408 (Timer B/F, §9.1) or
	 * a 503 (transport error) the layer made itself. */
	void (*response)(void *arg, sip_txn *t, const sip_msg *res);
	/* Server INVITE: a CANCEL matched it while it had no final response (it is marked
	 * cancelled; the 200 to the CANCEL went, the 487 is the owner's). */
	void (*cancel)(void *arg, sip_txn *t);
	/* Server INVITE with a 2xx: the ACK for it came (ack != NULL, once) or never will (NULL). */
	void (*ack)(void *arg, sip_txn *t, const sip_msg *ack);
	/* t is about to be freed. */
	void (*terminated)(void *arg, sip_txn *t);
} sip_txn_user;

typedef struct sip_txn_stats {
	unsigned client, server;                /* live transactions */
	unsigned long retrans_sent, absorbed;   /* sent again by timers; retransmissions taken */
} sip_txn_stats;

/* The transaction layer of one endpoint: its tables and what every transaction shares. */
typedef struct sip_txns {
	sip_loop *loop;
	sip_transport *tp;
	unsigned t1, t2, t4;
	unsigned max;              /* live transactions, both kinds */
	sip_log log;
	sip_map client, server, accepted, ids;
	uint64_t next_id;
	sip_txn_stats stats;
	int closing;               /* sip_txns_free is ending every transaction: send nothing */
	sip_wait *wait;            /* transactions that only absorb retransmissions (txnwait.c) */
} sip_txns;

/* max_waiting: entries of the waiting table (txnwait.h), where transactions that only absorb
 * retransmissions go (a non-INVITE server Completed, an INVITE server Confirmed or a proxy's
 * Accepted, a client Completed). */
int sip_txns_init(sip_txns *tx, sip_loop *loop, sip_transport *tp, unsigned t1, unsigned t2,
		  unsigned t4, unsigned max, unsigned max_waiting, sip_log log);
/* Is key (a server or client transaction's, or an owner's alias of one) waiting? 1 if so,
 * and with resend its response (or ACK) went again. */
int sip_txns_wait_match(sip_txns *tx, const char *key, size_t klen, int resend);
/* Ends every transaction (their terminated handlers are called) and frees the tables. */
void sip_txns_free(sip_txns *tx);
/* A fresh id from the counter transactions are numbered by (other objects may share it). */
uint64_t sip_txns_new_id(sip_txns *tx);
int sip_txns_full(const sip_txns *tx);
sip_txn *sip_txns_by_id(sip_txns *tx, uint64_t id);    /* NULL when gone */
/* §17.1.4 / §8.1.3.1: the client transactions to peer over kind fail with a 503: a TCP or
 * TLS connection that could not be made (one that left UDP for its size goes back to UDP
 * instead, §18.1.1; TLS: detail, the handshake's reason, is the 503's), or (UDP) an ICMP
 * unreachable, which only counts while nothing has answered. */
void sip_txns_fail_dest(sip_txns *tx, sip_tp_kind kind, const struct sockaddr_storage *peer,
			const char *detail);

/* --- client transactions (§17.1) --- */

/* Start a client transaction for a request printed in buf (malloc'd, len bytes, taken over
 * even on failure) with this branch and method, toward d. udp_form (or NULL): the same
 * request with a UDP Via, kept should d, TCP for the request's size (§18.1.1), fail to
 * connect. Sent at once; NULL with *err when it cannot be (no handler is called then). */
sip_txn *sip_txn_client_new(sip_txns *tx, sip_pl branch, sip_pl method, int invite,
			    const sip_dest *d, char *buf, size_t len, char *udp_form,
			    size_t udp_len, const sip_txn_user *u, void *arg, const char **err);
/* A response received: to its client transaction, or absorbed by a waiting one. 1 when one
 * took it, 0 when none matches. */
int sip_txns_response(sip_txns *tx, const sip_msg *res);
/* CANCEL the INVITE of client transaction ct (§9.1): sent once a provisional came; a CANCEL
 * of its own transaction, whose responses nobody hears. Without a final response 64*T1
 * later ct ends with a 408. 0, or -1 with *err. */
int sip_txn_client_cancel(sip_txn *ct, const char **err);

/* --- server transactions (§17.2) --- */

/* The key a request's server transaction is found by: §17.2.3, branch + sent-by + method
 * (ACK and CANCEL look for the INVITE with method "INVITE"), or the RFC 2543 rules. */
void sip_txn_server_key(sip_keybuf *k, const sip_msg *m, const sip_via *via, sip_pl topvia,
			const char *method, size_t mlen);
sip_txn *sip_txns_server(sip_txns *tx, const sip_keybuf *k);
/* The INVITE server transaction whose 2xx this ACK (its own transaction) is for. */
sip_txn *sip_txns_accepted(sip_txns *tx, const sip_msg *ack);
/* A new server transaction for request m under key k; responses go to d. An INVITE keeps
 * its request (for the 487 after a CANCEL, or the owner's reply_code). NULL: out of memory. */
sip_txn *sip_txn_server_new(sip_txns *tx, const sip_keybuf *k, const sip_msg *m,
			    const sip_dest *d, const sip_txn_user *u, void *arg);
/* File t under key in map m as well (an owner's own table); the entry goes with t. */
int sip_txn_alias(sip_txn *t, sip_map *m, const char *key, size_t klen);

/* What a request that matched server transaction t does (§17.2.1, §17.2.2): a retransmission
 * has the last response sent again; an ACK (for a non-2xx) confirms an INVITE; an ACK for a
 * 2xx (found by sip_txns_accepted) goes to the owner's ack handler once. */
void sip_txn_server_retransmission(sip_txn *t);
void sip_txn_server_ack(sip_txn *t);
void sip_txn_accepted_ack(sip_txn *t, const sip_msg *ack);
/* A CANCEL matched INVITE server transaction t: 1 when t had no final response (then its
 * owner's cancel handler was called), 0 when it had. */
int sip_txn_server_cancel(sip_txn *t);

/* Send a response through t. Fails (-1, *err) when a final response was sent already, for a
 * provisional after a final, or on a transport error. */
int sip_txn_server_reply(sip_txn *t, const sip_msg *res, const char **err);
/* The same for a response already on the wire: buf (malloc'd, len bytes, taken over even on
 * failure) with the status code and the fields a 2xx is remembered by. */
int sip_txn_server_reply_wire(sip_txn *t, int code, char *buf, size_t len, sip_pl call_id,
			      uint32_t cseq, sip_pl from_tag, const char **err);
/* Answer t with code (standard reason), built from req (NULL: the INVITE it kept); extra:
 * header lines to add ("Name: value\r\n"...), or NULL. */
void sip_txn_server_reply_code(sip_txn *t, const sip_msg *req, int code, const char *extra);

/* Where t's responses go is being looked up (RFC 3263 §5, a Via maddr that is a name): they
 * wait until sip_txn_dest_found, which sends the last one; addr NULL: to where they would
 * have gone (the source). */
void sip_txn_dest_wait(sip_txn *t);
void sip_txn_dest_found(sip_txn *t, const struct sockaddr_storage *addr, socklen_t len);

/* Its responses come from downstream (§16.7): a 2xx is not retransmitted nor its ACK awaited
 * here, since both are end to end. */
void sip_txn_set_proxied(sip_txn *t, int on);
int sip_txn_proxied(const sip_txn *t);

/* --- any transaction --- */

void sip_txn_terminate(sip_txn *t);
void sip_txn_set_user(sip_txn *t, const sip_txn_user *u, void *arg);
const sip_txn_user *sip_txn_user_get(const sip_txn *t, void **arg);

uint64_t sip_txn_id(const sip_txn *t);
int sip_txn_is_client(const sip_txn *t);
int sip_txn_is_invite(const sip_txn *t);
sip_txn_state sip_txn_state_get(const sip_txn *t);
/* A server transaction that has not sent its final response (Trying or Proceeding). */
int sip_txn_unanswered(const sip_txn *t);
int sip_txn_last_status(const sip_txn *t);
const sip_dest *sip_txn_dest(const sip_txn *t);   /* client: the next hop; server: upstream */
/* Client: the request as sent (len bytes); server: the last response (NULL: none yet). */
const char *sip_txn_out(const sip_txn *t, size_t *len);
const char *sip_txn_state_name(sip_txn_state s);

#endif
