/* proxy.h: the stateful and stateless proxy of RFC 3261 §16, above the endpoint: a relay
 * takes a server transaction over and owns the client transactions of its branches. */
#ifndef SIP_PROXY_H
#define SIP_PROXY_H

#include "endpoint.h"

typedef struct sip_relay sip_relay;

/* The reason a relay of a sips: request toward a hop without TLS fails (§26.2.2) */
#define SIP_ERR_SIPS_PLAIN "sips: needs TLS on every hop"

typedef struct sip_relay_opts {
	const char *next_hop;    /* send every branch there; NULL: its top Route, else its URI */
	size_t next_hop_len;
	unsigned timeout_ms;     /* INVITE: cancel the pending branches after it (0: never) */
	/* Relay `id` is over: final is the response that went upstream (the first 2xx, or the
	 * best final), NULL when there was none. NULL: not wanted (no copy is kept). */
	void (*done)(void *ud, uint64_t id, const sip_msg *final);
	/* Relay `id`: the branch of target `branch` (0-based index in the list given to
	 * sip_proxy_relay) got its final response. NULL: not wanted. */
	void (*branch)(void *ud, uint64_t id, unsigned branch, const sip_msg *res);
	void *ud;
	/* Per target (n entries, or NULL), from the binding the target came from: */
	const sip_pl *routes;    /* Route values put on top (its REGISTER's Path, RFC 3327) */
	const sip_pl *flows;     /* where it registered from ("sip:IP:PORT[;transport=tcp]"): the
	                          * next hop when the branch has no Route, over UDP always, over
	                          * TCP while a connection to it is open (else its Contact) */
	int keep_failure;        /* no 2xx: the final goes to done only, the server transaction
	                          * stays unanswered for another relay (a serial search, §16.6)
	                          * or the TU's own answer; req untouched */
} sip_relay_opts;

/* Relay request req, received on server transaction st, to n target URIs in parallel
 * (§16.6: one branch each, a Via with a loop-detecting branch pushed, the Request-URI set;
 * req itself becomes the last branch). From then on the core handles every response (§16.7)
 * and a CANCEL from upstream (§16.10). Max-Forwards and Record-Route are the caller's.
 * Returns the relay id, or 0 with *err when no target was usable (nothing was sent nor
 * answered). *done is set when every branch failed at once: a 408 went upstream already
 * and o->done will not be called. */
uint64_t sip_proxy_relay(sip_endpoint *ep, sip_txn *st, sip_msg *req, const sip_pl *targets,
			 unsigned n, const sip_relay_opts *o, int *done, const char **err);

/* §16.3 request validation: 0, or the code to refuse req with: 416 (Request-URI scheme
 * not sip/sips/tel), 483 (Max-Forwards 0), 482 (a Via of ours carries this request's loop
 * hash: it came back unchanged), 420 (Proxy-Require: we support no extension). */
int sip_proxy_validate(sip_endpoint *ep, const sip_msg *req);

/* §16.4 route information preprocessing: a Request-URI we put in a Record-Route (a strict
 * router upstream: it carries our tag) is replaced by the last Route, and a top Route naming
 * us is taken off; req->route_ours says which of ours it found (SIP_ROUTE_*).
 * Returns 1 when req changed, 0 when not, -2 when a Route value is malformed (the request
 * deserves a 400), -1 on out of memory. */
int sip_proxy_preprocess(sip_endpoint *ep, sip_msg *req);
/* The key of the tag in our Record-Route (SHA-256 of secret): processes and hosts that
 * serve the same dialogs share it. Unset, a random one is drawn at first use. 0 or -1. */
int sip_rr_key_set(const void *secret, size_t n);
/* That tag for a dialog (its Call-ID and the From tag of the request that makes it), in out:
 * its length, or 0 when no key could be drawn. */
size_t sip_rr_tag(sip_pl call_id, sip_pl from_tag, char out[32]);

/* Answer st's request with a §16.3 refusal (420 gets Unsupported with the Proxy-Require
 * values). */
void sip_proxy_refuse(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code);

/* What a relay does to the request first (§16.6 steps 3-4): Max-Forwards decremented (70
 * when absent) and, with rr (-1: for INVITE, SUBSCRIBE and REFER), a Record-Route of ours
 * for that transport and family on top, unless the request is in a dialog. */
int sip_proxy_prepare(sip_endpoint *ep, sip_msg *req, sip_tp_kind kind, int family, int rr);

/* §16.11 stateless forwarding (an ACK for a 2xx, or on request): the Request-URI set to
 * target (empty: kept), a Via pushed whose branch is the same for every copy of the request,
 * sent to the next hop (o->next_hop, the top Route, or the Request-URI). Once it is sent,
 * st (the server transaction it came on, or NULL) ends without an answer. Returns 0 or -1
 * with *err. */
int sip_proxy_relay_stateless(sip_endpoint *ep, sip_txn *st, sip_msg *req, sip_pl target,
			      const sip_relay_opts *o, const char **err);

/* 12 hex digits that stay the same when a request comes back (§16.6 step 8: the loop
 * detection hash of the branch a relay writes). */
void sip_proxy_loop_hash(const sip_msg *m, char out[12]);

#endif
