/* endpoint.h: one SIP endpoint — its transports, its transaction layer and message dispatch.
 * The endpoint reports to its user (the Lua binding) through hooks; it never calls Lua, and
 * knows the layer above it (proxy.c) only by the hooks that layer gives it. */
#ifndef SIP_ENDPOINT_H
#define SIP_ENDPOINT_H

#include <stdint.h>
#include <sys/socket.h>

#include "dest.h"
#include "log.h"
#include "loop.h"
#include "msg.h"
#include "transport.h"
#include "txn.h"

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

typedef struct sip_endpoint sip_endpoint;

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
int sip_ep_from_self(sip_endpoint *ep, const sip_tp_src *src, const sip_via *top);

/* Does this URI name us: one of our domains, or the address and port of a listener? */
int sip_ep_is_local(sip_endpoint *ep, sip_pl uri);
/* Resolve a SIP URI (or a Route's URI) to a destination: maddr, port (5060, 5061 for TLS),
 * transport param (sips: is TLS); the host as an IP literal, or a name by RFC 3263 from the
 * resolver's cache only (-1 with *err when it is not there: nothing in the loop waits for
 * DNS). A TLS destination's name (RFC 5922) holds until the next resolve. */
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

sip_txn *sip_ep_txn(sip_endpoint *ep, uint64_t id);    /* NULL when gone */

/* For the layer above (proxy.c). */
sip_loop *sip_ep_loop(sip_endpoint *ep);
const sip_log *sip_ep_log(sip_endpoint *ep);
uint64_t sip_ep_new_id(sip_endpoint *ep);   /* a fresh id, not one of a transaction */
int sip_ep_closing(sip_endpoint *ep);       /* sip_ep_free is under way: send nothing */
/* "host:port" of our listener for that transport and family (Via sent-by, Record-Route),
 * formatted once; NULL when there is no listener. */
const char *sip_ep_sent_by(sip_endpoint *ep, sip_tp_kind kind, int family);
/* Is host (IPv6 with or without []) and port the address of one of our listeners? */
int sip_ep_is_listener(sip_endpoint *ep, sip_pl host, int port);
/* Start a client transaction as sip_ep_request does, whose responses and end go to u
 * (with arg) instead of the hooks. */
sip_txn *sip_ep_request_for(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			    sip_via_mode via_mode, const char *branch, const sip_txn_user *u,
			    void *arg, const char **err);
/* Responses that no client transaction takes go to fn first (1: it took the response).
 * One such hook; NULL takes it away. */
typedef int (*sip_ep_stray_fn)(void *arg, const sip_msg *res);
void sip_ep_set_stray(sip_endpoint *ep, sip_ep_stray_fn fn, void *arg);

#endif
