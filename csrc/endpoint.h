/* endpoint.h: one SIP endpoint — transports, transaction tables and message dispatch.
 * The core reports to its user (the Lua binding) through hooks; it never calls Lua. */
#ifndef SIP_ENDPOINT_H
#define SIP_ENDPOINT_H

#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"
#include "msg.h"
#include "transport.h"

/* RFC 3261 §17.1.1.1 defaults, in ms */
#define SIP_T1_DEFAULT 500
#define SIP_T2_DEFAULT 4000
#define SIP_T4_DEFAULT 5000
/* §16.6 step 11: a proxied INVITE branch that rings this long is cancelled ("MUST be
 * larger than 3 minutes"); each 101-199 response starts it again */
#define SIP_TIMER_C_DEFAULT 181000
/* Live transactions, both kinds: those that have not sent or received their final response
 * yet (and INVITEs in Accepted or waiting for an ACK). A relayed MESSAGE is live for one
 * round trip, so this bounds what is in flight, not the rate: 65536 of them cost ~100 MB at
 * ~1.5 KB each (README "Capacity"). Past it: 503 + Retry-After. */
#define SIP_MAX_TXNS_DEFAULT 65536
/* Transactions that only wait to absorb retransmissions (txnwait.c): a UDP non-INVITE server
 * transaction waits 32 s (Timer J) and its client 5 s (Timer K), so a proxy holds ~37 of them
 * per relayed MESSAGE/s: 524288 cover ~14000 MESSAGE/s in ~300 MB (~170 bytes each plus the
 * response kept). When they are all in use a transaction waits as a live one. */
#define SIP_MAX_WAITING_DEFAULT 524288
/* Overload: a new request that waited longer than this in the UDP socket's queue (its kernel
 * timestamp) finds the process behind its load, and is answered 503 at once. Under T1
 * (500 ms), so that what is let in is answered before its sender retransmits it; over what
 * a slow handler or a GC step holds the loop for, so that a stall alone sheds nothing. */
#define SIP_OVERLOAD_MS_DEFAULT 200
/* RFC 3261 §18.1.1: a request within 200 bytes of the 1500-byte path MTU goes over TCP */
#define SIP_UDP_MTU_LIMIT 1300

typedef struct sip_ep_config {
	unsigned t1, t2, t4;
	unsigned timer_c;   /* ms, proxied INVITEs (§16.6 step 11) */
	unsigned max_txns;
	unsigned max_waiting;   /* entries of the waiting table (txnwait.h) */
	unsigned overload_ms;   /* queued longer: shed (0: never) */
	sip_limits lim;
	sip_tp_config tp;
} sip_ep_config;

void sip_ep_config_default(sip_ep_config *c);

/* Where bytes go: a transport, an address, and (TCP/TLS) a connection to prefer. */
typedef struct sip_dest {
	sip_tp_kind kind;
	struct sockaddr_storage addr;
	socklen_t len;
	uint32_t conn_id;
	int listener;      /* UDP: send from this listener (-1: any of the family) */
	/* TLS: the host the server's certificate must name (RFC 5922), NUL-terminated;
	 * NULL: the address. Borrowed: sip_ep_resolve's holds until the next resolve, and a
	 * transaction keeps a copy of its own. */
	const char *name;
} sip_dest;

/* The reason a relay of a sips: request toward a hop without TLS fails (§26.2.2) */
#define SIP_ERR_SIPS_PLAIN "sips: needs TLS on every hop"

/* RFC 3261 §19.1.2: the port a sips: URI or a TLS Via without one stands for */
#define SIP_TLS_PORT 5061

typedef struct sip_endpoint sip_endpoint;
typedef struct sip_txn sip_txn;
typedef struct sip_relay sip_relay;

typedef enum sip_txn_state {
	SIP_TXN_CALLING, SIP_TXN_TRYING, SIP_TXN_PROCEEDING, SIP_TXN_COMPLETED,
	SIP_TXN_CONFIRMED, SIP_TXN_ACCEPTED, SIP_TXN_TERMINATED,
} sip_txn_state;

typedef struct sip_ep_hooks {
	/* A request for the TU. st: its server transaction (NULL for ACK, which has none).
	 * m and src are valid during the call only. */
	void (*request)(void *ud, sip_txn *st, const sip_msg *m, const sip_tp_src *src);
	/* A response for client transaction ct: provisional or final; a final may be a 408/503
	 * the core made (Timer B/F, transport error). ct NULL: a 2xx retransmission for an
	 * INVITE whose transaction is gone (the UAC re-sends its ACK). */
	void (*response)(void *ud, sip_txn *ct, const sip_msg *m);
	/* CANCEL matched server transaction st; the core answered 200 and (if no final yet) 487. */
	void (*cancel)(void *ud, sip_txn *st);
	/* The ACK for a 2xx sent through st arrived (ack != NULL) or never came (ack NULL). */
	void (*ack)(void *ud, sip_txn *st, const sip_msg *ack);
	/* t is about to be freed: forget its id and user value. */
	void (*gone)(void *ud, sip_txn *t);
	/* One line per event worth logging. */
	void (*log)(void *ud, const char *line);
	/* Relay `id` (sip_ep_relay with notify_done) is over: final is the response that went
	 * upstream (the first 2xx, or the best final), NULL when there was none. */
	void (*relayed)(void *ud, uint64_t id, const sip_msg *final);
	/* Relay `id` (with notify_each): the branch of target `branch` (0-based index in the
	 * list given to sip_ep_relay) got its final response. */
	void (*relay_branch)(void *ud, uint64_t id, unsigned branch, const sip_msg *res);
	/* The rate limit refused source ip (text) for the first time in its log window; the
	 * 503 told it to retry after retry_s. */
	void (*rate_limited)(void *ud, const char *ip, int retry_s);
} sip_ep_hooks;

typedef struct sip_ep_stats {
	unsigned client_txns, server_txns;
	unsigned long retrans_sent, absorbed, requests_in, responses_in, parse_errors,
		stray_responses, rejected_busy, rate_limited, merged;
	unsigned waiting, max_waiting;        /* transactions in the waiting table */
	size_t waiting_bytes;                 /* what they cost apart from the bytes below */
	size_t waiting_resend_bytes;          /* the responses (and ACKs) they resend */
	unsigned long waiting_full;           /* left live because the table was full */
	unsigned long shed;                   /* new requests refused 503 for overload */
} sip_ep_stats;

sip_endpoint *sip_ep_new(sip_loop *loop, const sip_ep_config *cfg, const sip_ep_hooks *hooks,
			 void *ud);
void sip_ep_free(sip_endpoint *ep);   /* no hooks called */
int sip_ep_listen(sip_endpoint *ep, sip_tp_kind kind, const char *host, int port,
		  const char **err);
sip_transport *sip_ep_transport(sip_endpoint *ep);
void sip_ep_stats_get(sip_endpoint *ep, sip_ep_stats *st);
const sip_ep_config *sip_ep_config_get(sip_endpoint *ep);

/* Answer through a server transaction. Fails (-1, *err) when a final response was sent
 * already, for a provisional after a final, or on a transport error. proxied != 0: the
 * response comes from downstream (§16.7): a 2xx is not retransmitted nor its ACK awaited
 * here, since both are end to end. */
int sip_ep_reply(sip_endpoint *ep, sip_txn *st, const sip_msg *res, int proxied,
		 const char **err);

/* Answer server transaction st with code (standard reason), built from req (NULL: the INVITE
 * it stored); extra: header lines to add ("Name: value\r\n"...), or NULL. */
void sip_ep_reply_code(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code,
		       const char *extra);

/* Send a response with no transaction (§8.2.7 / §16.11 stateless), routed by its top Via
 * and the request's source. */
int sip_ep_reply_stateless(sip_endpoint *ep, const sip_msg *res, const sip_tp_src *src,
			   const char **err);

typedef enum sip_via_mode {
	SIP_VIA_REPLACE,   /* UAC: the top Via becomes ours, with a fresh branch */
	SIP_VIA_PUSH,      /* proxy: a new Via on top */
	SIP_VIA_KEEP,      /* CANCEL, ACK for non-2xx: the Via given is the right one */
} sip_via_mode;

/* Start a client transaction for req toward dst. Edits req's Via as via_mode says; branch
 * (NULL: random) is the new Via's branch, z9hG4bK included (proxies put a loop hash in it). */
sip_txn *sip_ep_request(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			sip_via_mode via_mode, const char *branch, const char **err);
/* Send a request with no transaction (ACK for 2xx, stateless forwarding). */
int sip_ep_send_stateless(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			  sip_via_mode via_mode, const char *branch, const char **err);
/* Give up on non-INVITE client transaction ct at once: no more retransmissions, no final
 * response to the TU (RFC 3263 §4.3: the request went on to another target). 0, or -1 for
 * another kind of transaction. */
int sip_ep_abandon(sip_endpoint *ep, sip_txn *ct);
/* CANCEL the INVITE of client transaction ct (§9.1): sent once a provisional came. */
int sip_ep_cancel(sip_endpoint *ep, sip_txn *ct, const char **err);

/* The stateful proxy of RFC 3261 §16 (proxy.c). */
typedef struct sip_relay_opts {
	const char *next_hop;    /* send every branch there; NULL: its top Route, else its URI */
	size_t next_hop_len;
	unsigned timeout_ms;     /* INVITE: cancel the pending branches after it (0: never) */
	int notify_done;         /* call hooks.relayed when the relay is over */
	int notify_each;         /* call hooks.relay_branch for every branch's final */
	/* Per target (n entries, or NULL), from the binding the target came from: */
	const sip_pl *routes;    /* Route values put on top (its REGISTER's Path, RFC 3327) */
	const sip_pl *flows;     /* where it registered from ("sip:IP:PORT[;transport=tcp]"): the
	                          * next hop when the branch has no Route, over UDP always, over
	                          * TCP while a connection to it is open (else its Contact) */
	int keep_failure;        /* no 2xx: the final goes to the TU only (hooks.relayed), the
	                          * server transaction stays unanswered for another relay (a
	                          * serial search, §16.6) or the TU's own answer; req untouched */
} sip_relay_opts;

/* Relay request req, received on server transaction st, to n target URIs in parallel
 * (§16.6: one branch each, a Via with a loop-detecting branch pushed, the Request-URI set;
 * req itself becomes the last branch). From then on the core handles every response (§16.7)
 * and a CANCEL from upstream (§16.10). Max-Forwards and Record-Route are the caller's.
 * Returns the relay id, or 0 with *err when no target was usable (nothing was sent nor
 * answered). *done is set when every branch failed at once: a 408 went upstream already
 * and hooks.relayed will not be called. */
uint64_t sip_ep_relay(sip_endpoint *ep, sip_txn *st, sip_msg *req, const sip_pl *targets,
		      unsigned n, const sip_relay_opts *o, int *done, const char **err);

/* §16.3 request validation: 0, or the code to refuse req with: 416 (Request-URI scheme
 * not sip/sips/tel), 483 (Max-Forwards 0), 482 (a Via of ours carries this request's loop
 * hash: it came back unchanged), 420 (Proxy-Require: we support no extension). */
int sip_ep_validate(sip_endpoint *ep, const sip_msg *req);

/* Names that are this endpoint besides its addresses (for URIs without a port, or with
 * `port`). Returns 0 or -1 (out of memory). */
int sip_ep_set_domains(sip_endpoint *ep, const char *const *names, unsigned n, int port);
/* Merged requests (§8.2.2.2) answered 482: on for a user agent (the default), off for a
 * proxy, to which a spiral looks the same. */
void sip_ep_set_merged_check(sip_endpoint *ep, int on);
/* A token bucket per source IP for new requests (ACK and CANCEL pass): past it the core
 * answers 503 with Retry-After, statelessly, before any transaction or hook; requests we
 * sent ourselves (a spiral: from our own address, our Via on top) are charged but never
 * refused. rate <= 0 turns it off. Returns 0, or -1 on bad arguments or memory. */
int sip_ep_set_rate_limit(sip_endpoint *ep, double rate, double burst, unsigned max_sources,
			  unsigned log_window_ms);
/* Sources in these address blocks pass the limit in force (trusted peers); 0, or -1 when the
 * limit is off or out of memory. */
struct sip_cidr;
int sip_ep_rate_limit_exempt(sip_endpoint *ep, const struct sip_cidr *blocks, unsigned n);
/* The limit in force (0 when off): rate, burst and the sources it holds buckets for. */
double sip_ep_rate_limit(sip_endpoint *ep, double *burst, unsigned *sources);
/* Did we send this request ourselves: it comes from one of our addresses (UDP: our
 * listening address and port; TCP: an ephemeral port of our IP) with our Via on top? */
struct sip_via;
int sip_ep_from_self(sip_endpoint *ep, const sip_tp_src *src, const struct sip_via *top);

/* Does this URI name us: one of our domains, or the address and port of a listener? */
int sip_ep_is_local(sip_endpoint *ep, sip_pl uri);
/* §16.4 route information preprocessing: a Request-URI we put in a Record-Route (a strict
 * router upstream: it carries our tag) is replaced by the last Route, and a top Route naming
 * us is taken off; req->route_ours says which of ours it found (SIP_ROUTE_*).
 * Returns 1 when req changed, 0 when not, -2 when a Route value is malformed (the request
 * deserves a 400), -1 on out of memory. */
int sip_ep_preprocess(sip_endpoint *ep, sip_msg *req);
/* The key of the tag in our Record-Route (SHA-256 of secret): processes and hosts that
 * serve the same dialogs share it. Unset, a random one is drawn at first use. 0 or -1. */
int sip_rr_key_set(const void *secret, size_t n);
/* That tag for a dialog (its Call-ID and the From tag of the request that makes it), in out:
 * its length, or 0 when no key could be drawn. */
size_t sip_rr_tag(sip_pl call_id, sip_pl from_tag, char out[32]);

/* Answer st's request with a §16.3 refusal (420 gets Unsupported with the Proxy-Require
 * values). */
void sip_ep_refuse(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code);

/* What a relay does to the request first (§16.6 steps 3-4): Max-Forwards decremented (70
 * when absent) and, with rr (-1: for INVITE, SUBSCRIBE and REFER), a Record-Route of ours
 * for that transport and family on top, unless the request is in a dialog. */
int sip_ep_relay_prepare(sip_endpoint *ep, sip_msg *req, sip_tp_kind kind, int family, int rr);

/* §16.11 stateless forwarding (an ACK for a 2xx, or on request): the Request-URI set to
 * target (empty: kept), a Via pushed whose branch is the same for every copy of the request,
 * sent to the next hop (o->next_hop, the top Route, or the Request-URI). Once it is sent,
 * st (the server transaction it came on, or NULL) ends without an answer. Returns 0 or -1
 * with *err. */
int sip_ep_relay_stateless(sip_endpoint *ep, sip_txn *st, sip_msg *req, sip_pl target,
			   const sip_relay_opts *o, const char **err);

/* 12 hex digits that stay the same when a request comes back (§16.6 step 8: the loop
 * detection hash of the branch a relay writes). */
void sip_msg_loop_hash(const sip_msg *m, char out[12]);

/* sip_tp_parse_addr for a slice: an IP literal (IPv6 with or without []) and a port. */
int sip_ip_literal(sip_pl host, int port, struct sockaddr_storage *ss, socklen_t *len);
/* Resolve a SIP URI (or a Route's URI) to a destination: maddr, port (5060), transport
 * param; the host as an IP literal, or a name by RFC 3263 from the resolver's cache only
 * (-1 with *err when it is not there: nothing in the loop waits for DNS). */
int sip_ep_resolve(sip_endpoint *ep, const char *uri, size_t len, sip_dest *d, const char **err);
/* The same with every target of a name in order (RFC 3263 §4.3: the next is tried when one
 * fails), up to max into d[]: 0 with *n >= 1, or -1 with *err. */
int sip_ep_resolve_list(sip_endpoint *ep, const char *uri, size_t len, sip_dest *d, unsigned max,
			unsigned *n, const char **err);
/* That target failed: the resolver puts it last for a while (§4.3). */
void sip_ep_avoid(sip_endpoint *ep, const sip_dest *d);
/* The resolver whose cache sip_ep_resolve reads (a reference is taken; NULL: none). */
struct sip_dns;
void sip_ep_set_dns(sip_endpoint *ep, struct sip_dns *dns);
struct sip_dns *sip_ep_dns(sip_endpoint *ep);

/* Transaction accessors */
uint64_t sip_txn_id(const sip_txn *t);
sip_txn *sip_ep_txn(sip_endpoint *ep, uint64_t id);    /* NULL when gone */
int sip_txn_is_client(const sip_txn *t);
int sip_txn_is_invite(const sip_txn *t);
sip_txn_state sip_txn_state_get(const sip_txn *t);
/* A server transaction that has not sent its final response (Trying or Proceeding). */
int sip_txn_unanswered(const sip_txn *t);
int sip_txn_last_status(const sip_txn *t);
const sip_dest *sip_txn_dest(const sip_txn *t);   /* client: the next hop; server: upstream */
const char *sip_txn_state_name(sip_txn_state s);

/* Format a socket address as "udp:1.2.3.4:5060" / "tcp:[::1]:5060" / "tls:..." (buf >= 64). */
void sip_addr_format(sip_tp_kind kind, const struct sockaddr *sa, char *buf, size_t cap);

#endif
