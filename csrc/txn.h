/* txn.h: internals shared by txn.c (the RFC 3261 §17 machines) and endpoint.c (dispatch).
 * Not part of the public API: the binding sees sip_txn only through endpoint.h. */
#ifndef SIP_TXN_H
#define SIP_TXN_H

#include "endpoint.h"
#include "map.h"
#include "txnwait.h"

struct sip_txn {
	sip_endpoint *ep;
	uint64_t id;
	uint8_t client, invite, state, reliable;
	uint8_t cancel_pending;  /* client INVITE: CANCEL asked for before any provisional */
	uint8_t cancelled;       /* server INVITE: a CANCEL came */
	uint8_t acked;           /* server INVITE, Accepted: the ACK for the 2xx came */
	uint8_t proxied;         /* server: its responses come from downstream (§16.7) */
	uint8_t dest_pending;    /* server: where responses go is being looked up (RFC 3263
				  * §5): they wait in `out` until then */
	sip_relay *relay;        /* server: the relay it feeds; client: the relay of its branch */
	unsigned relay_branch;   /* client: which branch of that relay */
	int last_status;
	char *key;               /* in ep->client or ep->server (bytes after this struct) */
	size_t klen;
	sip_map_node by_key;     /* this transaction's nodes in that map and in ep->ids */
	sip_map_node by_id;
	char *akey;              /* server INVITE with a 2xx: in ep->accepted (ACK matching) */
	size_t aklen;
	char *mkey;              /* server, no To tag, a UA's: in ep->merged (§8.2.2.2) */
	size_t mklen;
	sip_dest dest;           /* client: where the request goes; server: where responses go */
	char *out;               /* client: the request; server: the last response */
	size_t outlen;
	char *req;               /* server INVITE: the request, for the 487 after a CANCEL */
	size_t reqlen;
	char *ack;               /* client INVITE: ACK for the non-2xx final, built once */
	size_t acklen;
	char *udp_out;           /* client, moved to TCP for its size: the UDP form (§18.1.1) */
	size_t udp_outlen;
	unsigned interval;       /* current retransmission interval (A, E, G, 2xx) */
	sip_timer t_retx;        /* A, E, G, and the 2xx retransmission of §13.3.1.4 */
	sip_timer t_timeout;     /* B, F, H, L, M */
	sip_timer t_end;         /* D, I, J, K */
};

#define SIP_EP_LCACHE 8

struct sip_endpoint {
	sip_loop *loop;
	sip_transport *tp;
	sip_ep_config cfg;
	sip_ep_hooks hooks;
	void *ud;
	sip_map client, server, accepted, ids;
	sip_map merged;          /* From tag, Call-ID, CSeq -> server transaction (UA only) */
	int merged_check;        /* answer merged requests 482 (§8.2.2.2): not for a proxy */
	uint64_t next_id;
	sip_ep_stats stats;
	int closing;             /* sip_ep_free is ending every transaction: send nothing */
	char sent_by[6][2][64];  /* our Via sent-by per [kind][IPv6?], formatted once */
	char dest_name[256];     /* the name sip_ep_resolve's last TLS destination points to */
	char **domains;          /* names that are us besides our addresses (lowercase) */
	unsigned ndomains;
	int local_port;          /* the port a domain name stands for */
	struct { char ip[64]; int port; } lcache[SIP_EP_LCACHE];   /* listener addresses */
	int nlcache;             /* entries formatted; 0 after a listen */
	struct sip_rl *rl;       /* sip_ep_set_rate_limit; NULL: no limit */
	int relayed_stateless;   /* a request went out statelessly: forward what answers it */
	struct sip_dns *dns;     /* names in URIs: RFC 3263 from its cache (sip_ep_set_dns) */
	struct via_lookup *via_lookups;   /* §5 lookups for responses (endpoint.c) */
	sip_wait *wait;          /* transactions that only absorb retransmissions (txnwait.c) */
};

/* txn.c */
sip_txn *sip_txn_new(sip_endpoint *ep, int client, int invite, const char *key, size_t klen,
		     const sip_dest *dest);
void sip_txn_terminate(sip_txn *t);
int sip_txn_send(sip_txn *t, const char *buf, size_t len);
void sip_txn_client_start(sip_txn *t);                 /* after t->out is set and sent */
/* A CANCEL went for this ringing INVITE: without a final response 64*T1 later it ends
 * with a 408 to the TU (§9.1). */
void sip_txn_client_cancelled(sip_txn *t);
void sip_txn_client_response(sip_txn *t, const sip_msg *res);
void sip_txn_server_retransmission(sip_txn *t, const sip_msg *req);
int sip_txn_server_reply(sip_txn *t, const sip_msg *res, const char **err);
/* The same for a response already on the wire: buf (malloc'd, len bytes, taken over even on
 * failure) with the status code and the fields a 2xx is remembered by. */
int sip_txn_server_reply_wire(sip_txn *t, int code, char *buf, size_t len, sip_pl call_id,
			      uint32_t cseq, sip_pl from_tag, const char **err);
void sip_txn_server_ack(sip_txn *t);
int sip_txn_server_cancel(sip_txn *t);   /* sends 487 when still proceeding; 1 if it did */
void sip_txn_accepted_ack(sip_txn *t, const sip_msg *ack);

/* proxy.c */
void sip_relay_response(sip_txn *ct, const sip_msg *res);   /* a response for a branch */
void sip_relay_txn_gone(sip_txn *t);                         /* t is being freed */
void sip_relay_cancel(sip_relay *r);                          /* CANCEL from upstream */
/* §16.11: a response no client transaction takes, to a request we relayed statelessly
 * (our Via on top with the branch we gave it), goes on to the next Via without ours:
 * 1 when it was ours (forwarded, or dropped when it could not be), 0 when not. */
int sip_relay_stateless_response(sip_endpoint *ep, const sip_msg *res);

/* endpoint.c */
/* "host:port" of our listener for that transport and family (Via sent-by, Record-Route),
 * formatted once; NULL when there is no listener. */
const char *sip_ep_sent_by(sip_endpoint *ep, sip_tp_kind kind, int family);
/* The IP (no brackets) and port of a socket address. */
void sip_addr_ip(const struct sockaddr *sa, char *host, size_t cap, int *port);
/* A response for client transaction t: to its relay, or to the TU. */
void sip_ep_deliver(sip_endpoint *ep, sip_txn *t, const sip_msg *res);
/* sip_ep_request for a relay's branch: linked to the relay before anything is sent. */
sip_txn *sip_ep_request_relay(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			      const char *branch, sip_relay *r, unsigned bi, const char **err);
size_t sip_accepted_key(char *key, sip_pl call_id, uint32_t cseq, sip_pl from_tag);
int sip_ep_send_dest(sip_endpoint *ep, const sip_dest *d, const char *buf, size_t len,
		     const char **err);
void sip_ep_logf(sip_endpoint *ep, const char *fmt, ...);
/* Deliver a response the core made itself (408, 503) from the request bytes of t. */
void sip_ep_synth_response(sip_endpoint *ep, sip_txn *t, int code, const char *reason);

#endif
