/* endpoint.c: what happens to every message that arrives or leaves: parse, match a
 * transaction (§17.1.3, §17.2.3), fix the Via (§18.2.1, RFC 3581), route responses (§18.2.2). */
#include "txn.h"
#include "build.h"
#include "fmt.h"
#include "chars.h"
#include "rand.h"
#include "ratelimit.h"
#include "uri.h"
#include "dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 1024   /* transaction keys: branch + sent-by + method, or the RFC 2543 set */
#define BRANCH_HEX 16  /* 64 random bits after the magic cookie */

void sip_ep_config_default(sip_ep_config *c)
{
	memset(c, 0, sizeof *c);
	c->t1 = SIP_T1_DEFAULT;
	c->t2 = SIP_T2_DEFAULT;
	c->t4 = SIP_T4_DEFAULT;
	c->timer_c = SIP_TIMER_C_DEFAULT;
	c->max_txns = SIP_MAX_TXNS_DEFAULT;
	c->max_waiting = SIP_MAX_WAITING_DEFAULT;
	c->overload_ms = SIP_OVERLOAD_MS_DEFAULT;
	c->lim = sip_limits_default;
	c->tp = sip_tp_config_default();
}

void sip_ep_logf(sip_endpoint *ep, const char *fmt, ...)
{
	if (!ep->hooks.log)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	ep->hooks.log(ep->ud, line);
}

void sip_addr_format(sip_tp_kind kind, const struct sockaddr *sa, char *buf, size_t cap)
{
	/* "udp:" + "[" + 45 + "]:" + 5 digits + NUL < 64: callers pass >= 64 */
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0, v6 = sa->sa_family == AF_INET6;
	if (cap < 64) {
		if (cap)
			buf[0] = 0;
		return;
	}
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
	} else if (v6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
	}
	size_t o = 0, hl = strlen(host);
	const char *kn = kind == SIP_TP_TLS ? "tls:" : kind == SIP_TP_TCP ? "tcp:" :
			 kind == SIP_TP_WS ? "ws:" : kind == SIP_TP_WSS ? "wss:" : "udp:";
	o = strlen(kn);
	memcpy(buf, kn, o);
	if (v6)
		buf[o++] = '[';
	memcpy(buf + o, host, hl);
	o += hl;
	if (v6)
		buf[o++] = ']';
	buf[o++] = ':';
	char d[8];
	size_t i = sizeof d;
	do {
		d[--i] = (char)('0' + port % 10);
		port /= 10;
	} while (port);
	memcpy(buf + o, d + i, sizeof d - i);
	o += sizeof d - i;
	buf[o] = 0;
}

void sip_addr_ip(const struct sockaddr *sa, char *host, size_t cap, int *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, (socklen_t)cap);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const void *)sa;
		if (cap >= INET_ADDRSTRLEN)
			sip_fmt_ipv4(host, (const unsigned char *)&s4->sin_addr);
		else
			inet_ntop(AF_INET, &s4->sin_addr, host, (socklen_t)cap);
		*port = ntohs(s4->sin_port);
	}
}

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

int sip_ep_send_dest(sip_endpoint *ep, const sip_dest *d, const char *buf, size_t len,
		     const char **err)
{
	if (d->kind == SIP_TP_UDP && d->listener >= 0)
		return sip_tp_send_from(ep->tp, d->listener, (const struct sockaddr *)&d->addr,
					d->len, buf, len, err);
	return sip_tp_send_named(ep->tp, d->kind, (const struct sockaddr *)&d->addr, d->len,
				 d->conn_id, d->name, buf, len, err);
}

/* --- setup ---------------------------------------------------------------------------- */

static void on_recv(void *arg, const sip_tp_src *src, const char *buf, size_t len);

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

/* A TCP connection we opened failed: its client transactions get 503 now rather than
 * 408 after Timer B/F (RFC 3261 §8.1.3.1 treats transport errors as 503). */
/* §18.1.1: a request that left UDP for its size, whose TCP connection could not be made,
 * goes over UDP after all (the same branch, a UDP Via), with UDP's retransmissions. */
static int back_to_udp(sip_txn *t)
{
	free(t->out);
	t->out = t->udp_out;
	t->outlen = t->udp_outlen;
	t->udp_out = NULL;
	t->dest.kind = SIP_TP_UDP;
	t->dest.listener = -1;
	t->dest.conn_id = 0;
	t->reliable = 0;
	sip_ep_logf(t->ep, "transport: %zu-byte request back to UDP (no TCP connection)", t->outlen);
	if (sip_txn_send(t, t->out, t->outlen))
		return -1;
	sip_txn_client_start(t);   /* Timers A/E now, B/F from here */
	return 0;
}

/* §17.1.4 / §8.1.3.1: the client transactions to src's address fail with a 503: a TCP
 * connection that could not be made, or (udp) an ICMP unreachable for a datagram, which
 * only counts while nothing has answered (Calling, Trying: a peer that answered is there,
 * and the error came from some older datagram). */
static void fail_dest(sip_endpoint *ep, const sip_tp_src *src, int udp, const char *detail)
{
	enum { BATCH = 64 };
	uint64_t ids[BATCH];
	size_t n = 0;
	for (size_t i = 0; i < ep->client.nb && n < BATCH; i++)
		for (sip_map_node *nd = ep->client.b[i]; nd && n < BATCH; nd = nd->next) {
			sip_txn *t = nd->value;
			int live = udp ? t->state == SIP_TXN_CALLING || t->state == SIP_TXN_TRYING :
					 t->state != SIP_TXN_COMPLETED && t->state != SIP_TXN_ACCEPTED;
			if (t->dest.kind == src->kind && live &&
			    same_addr(&t->dest.addr, &src->peer))
				ids[n++] = t->id;
		}
	for (size_t i = 0; i < n; i++) {
		sip_txn *t = sip_ep_txn(ep, ids[i]);   /* an earlier hook may have ended it */
		if (!t)
			continue;
		if (!udp && t->udp_out && back_to_udp(t) == 0)
			continue;
		/* TLS: the handshake's or the verification's reason, for scripts to read */
		char why[200];
		snprintf(why, sizeof why, "Service Unavailable (%s)",
			 udp ? "unreachable" : src->kind == SIP_TP_TLS && detail ? detail :
			 "connection failed");
		sip_ep_synth_response(ep, t, 503, why);
		sip_txn_terminate(t);
	}
}

static void on_tp_event(void *arg, const char *event, const sip_tp_src *src, const char *detail)
{
	sip_endpoint *ep = arg;
	char a[80] = "";
	if (src)
		sip_addr_format(src->kind, (const struct sockaddr *)&src->peer, a, sizeof a);
	sip_ep_logf(ep, "transport %s %s%s%s", event, a, detail ? ": " : "", detail ? detail : "");
	if (src && strcmp(event, "connect failed") == 0)
		fail_dest(ep, src, 0, detail);
	else if (src && strcmp(event, "unreachable") == 0)
		fail_dest(ep, src, 1, detail);
}

/* A retransmission matched a waiting transaction: its response (or ACK) goes again. */
static void wait_send(void *arg, const sip_wait_dest *w, const char *buf, size_t len)
{
	sip_endpoint *ep = arg;
	/* no name: only UDP transactions wait with bytes to resend (TLS ends at once) */
	sip_dest d = { .kind = w->kind, .addr = w->addr, .len = w->len, .conn_id = w->conn_id,
		       .listener = w->listener, .name = NULL };
	const char *err;
	ep->stats.retrans_sent++;
	if (sip_ep_send_dest(ep, &d, buf, len, &err))
		sip_ep_logf(ep, "send failed: %s", err);
}

sip_endpoint *sip_ep_new(sip_loop *loop, const sip_ep_config *cfg, const sip_ep_hooks *hooks,
			 void *ud)
{
	sip_endpoint *ep = calloc(1, sizeof *ep);
	if (!ep)
		return NULL;
	if (cfg)
		ep->cfg = *cfg;
	else
		sip_ep_config_default(&ep->cfg);
	ep->hooks = *hooks;
	ep->ud = ud;
	ep->loop = loop;
	if (sip_map_init(&ep->client) || sip_map_init(&ep->server) ||
	    sip_map_init(&ep->accepted) || sip_map_init_counters(&ep->ids) ||
	    sip_map_init(&ep->merged))
		goto fail;
	ep->merged_check = 1;
	ep->wait = sip_wait_new(loop, ep->cfg.max_waiting, wait_send, ep);
	if (!ep->wait)
		goto fail;
	ep->tp = sip_tp_new(loop, &ep->cfg.tp, on_recv, on_tp_event, ep);
	if (!ep->tp)
		goto fail;
	return ep;
fail:
	sip_wait_free(ep->wait);
	sip_map_free(&ep->client);
	sip_map_free(&ep->server);
	sip_map_free(&ep->accepted);
	sip_map_free(&ep->ids);
	sip_map_free(&ep->merged);
	free(ep);
	return NULL;
}

static void drop_via_lookups(sip_endpoint *ep);

void sip_ep_free(sip_endpoint *ep)
{
	if (!ep)
		return;
	ep->hooks.gone = NULL;
	ep->hooks.log = NULL;
	ep->hooks.relayed = NULL;
	ep->hooks.relay_branch = NULL;
	ep->closing = 1;
	/* terminate every transaction, bucket by bucket (terminating unlinks the node) */
	for (size_t i = 0; i < ep->ids.nb; i++)
		while (ep->ids.b[i])
			sip_txn_terminate(ep->ids.b[i]->value);
	sip_tp_free(ep->tp);
	sip_wait_free(ep->wait);
	sip_map_free(&ep->client);
	sip_map_free(&ep->server);
	sip_map_free(&ep->accepted);
	sip_map_free(&ep->ids);
	sip_map_free(&ep->merged);
	sip_ep_set_domains(ep, NULL, 0, 0);
	sip_rl_free(ep->rl);
	drop_via_lookups(ep);
	sip_dns_unref(ep->dns);
	free(ep);
}

int sip_ep_listen(sip_endpoint *ep, sip_tp_kind kind, const char *host, int port,
		  const char **err)
{
	memset(ep->sent_by, 0, sizeof ep->sent_by);   /* a listener more may change them */
	ep->nlcache = 0;
	return sip_tp_listen(ep->tp, kind, host, port, err);
}

sip_transport *sip_ep_transport(sip_endpoint *ep) { return ep->tp; }
void sip_ep_stats_get(sip_endpoint *ep, sip_ep_stats *st)
{
	sip_wait_stats w;
	sip_wait_stats_get(ep->wait, &w);
	*st = ep->stats;
	st->waiting = w.count;
	st->max_waiting = w.max;
	st->waiting_bytes = w.bytes;
	st->waiting_resend_bytes = w.resend_bytes;
	st->waiting_full = w.full;
}
const sip_ep_config *sip_ep_config_get(sip_endpoint *ep) { return &ep->cfg; }

/* --- keys ----------------------------------------------------------------------------- */

/* Keys are built on every message: plain copies, no printf. A key that would not fit is
 * cut at KEY_MAX, which only makes two absurdly long keys collide. */
typedef struct keybuf {
	char *p;
	size_t n;
} keybuf;

static void kput(keybuf *k, const char *s, size_t n)
{
	if (n > KEY_MAX - 1 - k->n)
		n = KEY_MAX - 1 - k->n;
	memcpy(k->p + k->n, s, n);
	k->n += n;
}

static void kpl(keybuf *k, sip_pl v) { kput(k, v.p, v.n); }
static void kch(keybuf *k, char c) { kput(k, &c, 1); }

static void kuint(keybuf *k, unsigned v)
{
	char d[12];
	size_t i = sizeof d;
	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	kput(k, d + i, sizeof d - i);
}

/* The key of the INVITE server transaction a 2xx's ACK belongs to (§17.2.3 does not cover
 * it: the ACK of a 2xx has its own branch). */
size_t sip_accepted_key(char *key, sip_pl call_id, uint32_t cseq, sip_pl from_tag)
{
	keybuf k = { key, 0 };
	kput(&k, "A|", 2);
	kpl(&k, call_id);
	kch(&k, '|');
	kuint(&k, cseq);
	kch(&k, '|');
	kpl(&k, from_tag);
	return k.n;
}

/* §8.2.2.2: a request without a To tag whose From tag, Call-ID and CSeq are those of a
 * transaction of ours it did not match (a request forked upstream reaching us twice) is
 * merged: 1 means answer it 482. Otherwise t is filed under them. A proxy does not look
 * (a spiral is such a request, and must be relayed). */
static int merged_request(sip_endpoint *ep, sip_txn *t, const sip_msg *m)
{
	if (!ep->merged_check || m->to_tag.n)
		return 0;
	char key[KEY_MAX];
	keybuf k = { key, 0 };
	kput(&k, "M|", 2);
	kpl(&k, m->call_id);
	kch(&k, '|');
	kuint(&k, m->cseq);
	kch(&k, '|');
	kpl(&k, m->method);
	kch(&k, '|');
	kpl(&k, m->from_tag);
	if (sip_map_get(&ep->merged, key, k.n) || sip_wait_match(ep->wait, key, k.n, 0))
		return 1;
	t->mkey = malloc(k.n);
	if (t->mkey) {
		memcpy(t->mkey, key, k.n);
		t->mklen = k.n;
		if (sip_map_put(&ep->merged, t->mkey, t->mklen, t)) {
			free(t->mkey);
			t->mkey = NULL;
		}
	}
	return 0;
}

void sip_ep_set_merged_check(sip_endpoint *ep, int on)
{
	ep->merged_check = on != 0;
}

static int has_cookie(sip_pl branch)
{
	return branch.n >= 7 && memcmp(branch.p, "z9hG4bK", 7) == 0;
}

/* §17.2.3: branch + sent-by + method (ACK counts as INVITE), or the RFC 2543 rules. */
static size_t server_key(char *key, const sip_msg *m, const sip_via *via, sip_pl topvia,
			 const char *method, size_t mlen)
{
	keybuf k = { key, 0 };
	if (has_cookie(via->branch)) {
		kput(&k, "S|", 2);
		kpl(&k, via->branch);
		kch(&k, '|');
		kpl(&k, via->host);
		kch(&k, ':');
		kuint(&k, (unsigned)via->port);
	} else {
		kput(&k, "T|", 2);
		kpl(&k, m->uri);
		kch(&k, '|');
		kpl(&k, m->call_id);
		kch(&k, '|');
		kuint(&k, m->cseq);
		kch(&k, '|');
		kpl(&k, m->from_tag);
		kch(&k, '|');
		kpl(&k, topvia);
	}
	kch(&k, '|');
	kput(&k, method, mlen);
	return k.n;
}

static size_t client_key(char *key, sip_pl branch, sip_pl method)
{
	keybuf k = { key, 0 };
	kput(&k, "C|", 2);
	kpl(&k, branch);
	kch(&k, '|');
	kpl(&k, method);
	return k.n;
}

/* --- responses the core makes itself ------------------------------------------------- */

static char *print_response(const sip_msg *req, int code, const char *reason, const char *extra,
			    size_t *len)
{
	size_t rl = reason ? strlen(reason) : 0, el = extra ? strlen(extra) : 0;
	*len = sip_build_response(req, code, reason, rl, NULL, 0, extra, el, NULL, 0);
	char *buf = malloc(*len);
	if (buf)
		sip_build_response(req, code, reason, rl, NULL, 0, extra, el, buf, *len);
	return buf;
}

/* Reply through a fresh server transaction with a response the core builds. */
static void core_reply(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code,
		       const char *extra)
{
	size_t len;
	const char *err;
	char *buf = print_response(req, code, NULL, extra, &len);
	if (buf)   /* the response copies these from the request (§8.2.6.2) */
		sip_txn_server_reply_wire(st, code, buf, len, req->call_id, req->cseq, req->from_tag,
					  &err);
}

void sip_ep_deliver(sip_endpoint *ep, sip_txn *t, const sip_msg *res)
{
	if (t->relay)
		sip_relay_response(t, res);
	else if (ep->hooks.response)
		ep->hooks.response(ep->ud, t, res);
}

void sip_ep_reply_code(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code,
		       const char *extra)
{
	sip_msg stored;
	const char *err;
	if (!req) {
		if (!st->req || sip_msg_parse(&stored, st->req, st->reqlen, 0, 0, NULL, &err))
			return;
		core_reply(ep, st, &stored, code, extra);
		sip_msg_free(&stored);
		return;
	}
	core_reply(ep, st, req, code, extra);
}

void sip_ep_synth_response(sip_endpoint *ep, sip_txn *t, int code, const char *reason)
{
	sip_msg req, res;
	const char *err;
	size_t len;
	if (sip_msg_parse(&req, t->out, t->outlen, 0, 0, NULL, &err))
		return;
	char *buf = print_response(&req, code, reason, NULL, &len);
	sip_msg_free(&req);
	if (!buf)
		return;
	if (sip_msg_parse(&res, buf, len, 0, 0, NULL, &err) == 0) {
		t->last_status = code;
		sip_ep_deliver(ep, t, &res);
		sip_msg_free(&res);
	}
	free(buf);
}

/* §18.2.2 and RFC 3581: responses go back over the connection, or to the source address
 * (port from rport when the client asked for it, else the Via's). */
int sip_ip_literal(sip_pl host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	char h[INET6_ADDRSTRLEN + 2];
	if (host.n == 0 || host.n >= sizeof h)
		return -1;
	memcpy(h, host.p, host.n);
	h[host.n] = 0;
	return sip_tp_parse_addr(h, port, ss, len);
}

/* §18.2.2: where the responses to a request go. Over TCP the connection it came on while
 * it is open, else a new one to its source address at the sent-by port (the source port
 * was the client's ephemeral one). Over UDP: to maddr if the Via names one (an IP
 * literal; at the sent-by port), else to the source address (received) at the rport
 * (RFC 3581: the source port) or the sent-by port. */
static void response_dest(const sip_tp_src *src, const sip_via *via, sip_dest *d)
{
	memset(d, 0, sizeof *d);
	d->kind = src->kind;
	d->addr = src->peer;
	d->len = src->peerlen;
	d->conn_id = src->conn_id;
	d->listener = src->kind == SIP_TP_UDP ? src->listener : -1;
	if (!via)
		return;
	int sent_by_port = via->port ? via->port : src->kind == SIP_TP_TLS ? SIP_TLS_PORT : 5060;
	if (sip_tp_stream(src->kind)) {
		set_port(&d->addr, sent_by_port);
		return;
	}
	struct sockaddr_storage ma;
	socklen_t mal;
	if (via->maddr.n && sip_ip_literal(via->maddr, sent_by_port, &ma, &mal) == 0) {
		/* (a name is looked up: locate_maddr; the source is kept meanwhile) */
		d->addr = ma;
		d->len = mal;
		if (d->addr.ss_family != src->peer.ss_family)
			d->listener = -1;   /* a listener of the other family cannot send it */
		return;
	}
	if (via->rport < 0)
		set_port(&d->addr, sent_by_port);
}

/* --- RFC 3263 §5: where responses go when the Via names a host ------------------------ */

/* A lookup for the responses of one server transaction (found again by id: it may be gone
 * when the answer comes). */
typedef struct via_lookup {
	struct via_lookup *prev, *next;
	sip_endpoint *ep;
	uint64_t txn, id;
	int starting, answered;
	sip_dest d;
	int ok;
} via_lookup;

static void via_lookup_free(via_lookup *v)
{
	if (v->prev)
		v->prev->next = v->next;
	else
		v->ep->via_lookups = v->next;
	if (v->next)
		v->next->prev = v->prev;
	free(v);
}

static void drop_via_lookups(sip_endpoint *ep)
{
	while (ep->via_lookups) {
		sip_dns_cancel(ep->dns, ep->via_lookups->id);
		via_lookup_free(ep->via_lookups);
	}
}

/* The lookup is over: the responses go to its first address (else where they would have
 * gone without maddr: the source), the one waiting first. */
static void via_lookup_done(via_lookup *v)
{
	sip_txn *t = sip_ep_txn(v->ep, v->txn);
	if (t) {
		if (v->ok) {
			t->dest.addr = v->d.addr;
			t->dest.len = v->d.len;
			t->dest.listener = -1;   /* any listener of its family */
		}
		t->dest_pending = 0;
		if (t->out)
			sip_txn_send(t, t->out, t->outlen);
	}
	via_lookup_free(v);
}

static void via_located(void *arg, const sip_dns_target *tg, unsigned n, const char *err)
{
	via_lookup *v = arg;
	if (n) {
		v->ok = 1;
		v->d.addr = tg[0].addr;
		v->d.len = tg[0].len;
	} else {
		sip_ep_logf(v->ep, "response: maddr not found (%s): to the source instead", err);
	}
	if (v->starting)
		v->answered = 1;   /* from inside sip_dns_locate: locate_maddr finishes it */
	else
		via_lookup_done(v);
}

/* §18.2.2: over UDP a response goes to the maddr of the Via, at the sent-by port; a name
 * there is looked up (RFC 3263 §5: its addresses, the port being known) while the
 * responses of t wait. */
static void locate_maddr(sip_endpoint *ep, sip_txn *t, const sip_via *via)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char uri[300];
	if (sip_ip_literal(via->maddr, 0, &ss, &sl) == 0 || via->maddr.n > 255)
		return;   /* an IP literal: response_dest took it */
	int n = snprintf(uri, sizeof uri, "sip:%.*s:%d;transport=udp", (int)via->maddr.n,
			 via->maddr.p, via->port ? via->port : 5060);
	via_lookup *v = calloc(1, sizeof *v);
	if (!v)
		return;
	const char *err;
	v->ep = ep;
	v->txn = t->id;
	v->next = ep->via_lookups;
	if (ep->via_lookups)
		ep->via_lookups->prev = v;
	ep->via_lookups = v;
	t->dest_pending = 1;
	v->starting = 1;
	v->id = sip_dns_locate(ep->dns, uri, (size_t)n, SIP_DNS_UDP, via_located, v, &err);
	v->starting = 0;
	if (!v->id) {
		t->dest_pending = 0;
		via_lookup_free(v);
	} else if (v->answered) {
		via_lookup_done(v);
	}
}

/* A request that did not parse: answer 400 (505 for the version) with the reason, when
 * enough of it can be read to address a response; otherwise drop it. */
static void reply_unparsable(sip_endpoint *ep, const sip_tp_src *src, const char *buf,
			     size_t len, const char *reason)
{
	if (len < 4 || strncasecmp(buf, "SIP/", 4) == 0)
		return;   /* responses are never answered */
	const char *p = buf, *end = buf + len;
	const char *nl = memchr(p, '\n', len);
	if (!nl)
		return;
	int code = strcmp(reason, "unsupported SIP version") == 0 ? 505 : 400;
	char out[4096];
	size_t o = (size_t)snprintf(out, sizeof out, "SIP/2.0 %d %s\r\n", code, reason);
	int have_via = 0;
	for (p = nl + 1; p < end && *p != '\r' && *p != '\n';) {
		nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *colon = memchr(p, ':', (size_t)(le - p));
		if (colon) {
			const char *ne = colon;
			while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
				ne--;
			sip_hdr_id id = ne > p ? sip_hdr_lookup(p, (size_t)(ne - p)) : SIP_HDR_OTHER;
			if (id == SIP_HDR_VIA || id == SIP_HDR_FROM || id == SIP_HDR_TO ||
			    id == SIP_HDR_CALL_ID || id == SIP_HDR_CSEQ) {
				const char *vs = colon + 1, *ve = le;
				while (ve > vs && (ve[-1] == '\r' || ve[-1] == ' '))
					ve--;
				while (vs < ve && (*vs == ' ' || *vs == '\t'))
					vs++;
				size_t need = strlen(sip_hdr_canonical(id)) + 4 + (size_t)(ve - vs);
				if (o + need + 32 >= sizeof out)
					return;
				o += (size_t)snprintf(out + o, sizeof out - o, "%s: %.*s\r\n",
						      sip_hdr_canonical(id), (int)(ve - vs), vs);
				have_via |= id == SIP_HDR_VIA;
			}
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	if (!have_via)
		return;
	o += (size_t)snprintf(out + o, sizeof out - o, "Content-Length: 0\r\n\r\n");
	sip_dest d;
	response_dest(src, NULL, &d);
	const char *err;
	sip_ep_send_dest(ep, &d, out, o, &err);
}

/* §18.2.1 / RFC 3581: record where the request really came from in its top Via: received=
 * when the sent-by is not the source address, and with a bare rport always (RFC 3581 §4),
 * the source port in that rport. The value is written again unfolded; should what comes of
 * it not be a Via, the request keeps the one it came with. */
static void fix_via(sip_msg *m, const sip_via *via, sip_pl topvia, const sip_tp_src *src)
{
	char ip[INET6_ADDRSTRLEN];
	int port;
	sip_addr_ip((const struct sockaddr *)&src->peer, ip, sizeof ip, &port);
	sip_pl host = via->host;
	if (host.n >= 2 && host.p[0] == '[') {
		host.p++;
		host.n -= 2;
	}
	int need_rport = via->rport == 0;
	int need_received = need_rport || !(host.n == strlen(ip) && strncasecmp(host.p, ip, host.n) == 0);
	if (!need_received)
		return;
	char u[2048], v[2048 + 64];
	size_t iplen = strlen(ip);
	if (topvia.n > sizeof u)
		return;
	sip_pl uv = sip_pl_make(u, sip_unfold(topvia, u, sizeof u));
	size_t n = uv.n;
	memcpy(v, u, n);
	if (need_rport) {
		/* the bare rport among the params (not a host of that name): "=port" after it */
		sip_via w;
		sip_pl name, val;
		size_t pos = 0;
		const char *err, *r = NULL;
		if (sip_via_parse(&w, uv, &err))
			return;
		while (!r && sip_param_next(w.params, &pos, &name, &val) == 1)
			if (name.n == 5 && strncasecmp(name.p, "rport", 5) == 0 && !val.n)
				r = name.p + 5;
		if (!r)
			return;
		size_t at = (size_t)(r - u);
		n = at;
		v[n++] = '=';
		n += sip_fmt_uint(v + n, (unsigned)port);
		memcpy(v + n, u + at, uv.n - at);
		n += uv.n - at;
	}
	memcpy(v + n, ";received=", 10);
	n += 10;
	memcpy(v + n, ip, iplen);
	n += iplen;
	sip_msg_replace_top_via(m, v, n);
}

/* --- incoming ------------------------------------------------------------------------- */

static void on_response(sip_endpoint *ep, const sip_msg *m)
{
	char key[KEY_MAX];
	ep->stats.responses_in++;
	sip_txn *t = NULL;
	if (m->branch.n) {
		size_t kl = client_key(key, m->branch, m->cseq_method);
		t = sip_map_get(&ep->client, key, kl);
	}
	if (t) {
		sip_txn_client_response(t, m);
		return;
	}
	/* Completed: absorbed; an INVITE's non-2xx final gets its ACK again (§17.1.1.3) */
	if (m->branch.n && sip_wait_match(ep->wait, key, client_key(key, m->branch, m->cseq_method),
					  m->status >= 300)) {
		ep->stats.absorbed++;
		return;
	}
	if (sip_relay_stateless_response(ep, m))
		return;
	ep->stats.stray_responses++;   /* §17.1.3: no transaction matches */
	if (m->status >= 200 && m->status < 300 && m->method_id == SIP_METHOD_INVITE &&
	    ep->hooks.response)
		ep->hooks.response(ep->ud, NULL, m);   /* a 2xx retransmission: dialogs re-ACK */
}

/* 503 with Retry-After, sent without a transaction: refusing keeps no state. */
static void reply_503(sip_endpoint *ep, const sip_msg *m, const sip_via *via,
		      const sip_tp_src *src, const char *reason, int retry)
{
	char extra[32] = "Retry-After: ";
	size_t n = 13;
	n += sip_fmt_uint(extra + n, (unsigned)retry);
	memcpy(extra + n, "\r\n", 3);
	size_t len;
	char *buf = print_response(m, 503, reason, extra, &len);
	sip_dest d;
	const char *err;
	response_dest(src, via, &d);
	if (buf) {
		sip_ep_send_dest(ep, &d, buf, len, &err);
		free(buf);
	}
}

/* The rate limit for a new request from src: 1 when it refused it (answered 503 with
 * Retry-After, statelessly: a flood costs no state). */
static int rate_limited(sip_endpoint *ep, const sip_msg *m, const sip_via *via,
			const sip_tp_src *src)
{
	int retry, report;
	if (sip_rl_allow(ep->rl, (const struct sockaddr *)&src->peer, sip_loop_now(ep->loop),
			 &retry, &report) || sip_ep_from_self(ep, src, via))
		return 0;
	reply_503(ep, m, via, src, "Rate Limited", retry);
	ep->stats.rate_limited++;
	if (report && ep->hooks.rate_limited) {
		char ip[INET6_ADDRSTRLEN];
		int port;
		sip_addr_ip((const struct sockaddr *)&src->peer, ip, sizeof ip, &port);
		ep->hooks.rate_limited(ep->ud, ip, retry);
	}
	return 1;
}

int sip_ep_set_rate_limit(sip_endpoint *ep, double rate, double burst, unsigned max_sources,
			  unsigned log_window_ms)
{
	sip_rl *rl = NULL;
	if (rate > 0 && !(rl = sip_rl_new(rate, burst, max_sources, log_window_ms)))
		return -1;
	sip_rl_free(ep->rl);
	ep->rl = rl;
	return 0;
}

int sip_ep_rate_limit_exempt(sip_endpoint *ep, const sip_cidr *blocks, unsigned n)
{
	return ep->rl ? sip_rl_exempt(ep->rl, blocks, n) : -1;
}

double sip_ep_rate_limit(sip_endpoint *ep, double *burst, unsigned *sources)
{
	*burst = ep->rl ? sip_rl_burst(ep->rl) : 0;
	*sources = ep->rl ? sip_rl_sources(ep->rl) : 0;
	return ep->rl ? sip_rl_rate(ep->rl) : 0;
}

/* Shed load (1: answered 503): a new request that queued over cfg.overload_ms, since the
 * loop has fallen behind what arrives. Retransmissions were matched before this; CANCEL,
 * in-dialog requests (a To tag) and our own spirals always pass. */
static int overloaded(sip_endpoint *ep, const sip_msg *m, const sip_via *via,
		      const sip_tp_src *src, int is_cancel)
{
	if (!ep->cfg.overload_ms || src->queued_ms <= ep->cfg.overload_ms || is_cancel ||
	    m->to_tag.n || sip_ep_from_self(ep, src, via))
		return 0;
	reply_503(ep, m, via, src, NULL, 1);
	ep->stats.shed++;
	return 1;
}

static void on_request(sip_endpoint *ep, sip_msg *m, const sip_tp_src *src)
{
	char key[KEY_MAX];
	const char *err;
	ep->stats.requests_in++;

	int vi = m->first[SIP_HDR_VIA];
	size_t pos = 0;
	sip_pl topvia;
	sip_via via;
	sip_list_next(m->hdrs[vi].value, &pos, &topvia);
	if (sip_via_parse(&via, topvia, &err))
		return;
	int is_ack = m->method_id == SIP_METHOD_ACK, is_cancel = m->method_id == SIP_METHOD_CANCEL;
	size_t kl = is_ack ? server_key(key, m, &via, topvia, "INVITE", 6) :
			     server_key(key, m, &via, topvia, m->method.p, m->method.n);

	if (is_ack) {
		sip_txn *t = sip_map_get(&ep->server, key, kl);
		if (t && t->state == SIP_TXN_ACCEPTED) {
			sip_txn_accepted_ack(t, m);
			return;
		}
		if (t) {
			sip_txn_server_ack(t);
			return;
		}
		if (sip_wait_match(ep->wait, key, kl, 0)) {   /* Confirmed: absorbed */
			ep->stats.absorbed++;
			return;
		}
		size_t n = sip_accepted_key(key, m->call_id, m->cseq, m->from_tag);
		t = sip_map_get(&ep->accepted, key, n);
		if (t) {
			sip_txn_accepted_ack(t, m);
			return;
		}
		if (ep->hooks.request) {
			fix_via(m, &via, topvia, src);   /* §18.2.1 holds for the ACK too */
			ep->hooks.request(ep->ud, NULL, m, src);   /* e.g. a proxy forwards it */
		}
		return;
	}

	sip_txn *t = sip_map_get(&ep->server, key, kl);
	if (t) {
		sip_txn_server_retransmission(t, m);
		return;
	}
	if (sip_wait_match(ep->wait, key, kl, 1)) {   /* Completed: the final response again */
		ep->stats.absorbed++;
		return;
	}
	if (overloaded(ep, m, &via, src, is_cancel))
		return;
	if (ep->rl && !is_cancel && rate_limited(ep, m, &via, src))
		return;
	if (ep->stats.client_txns + ep->stats.server_txns >= ep->cfg.max_txns) {
		/* full: answer without keeping state, and tell when to come back */
		reply_503(ep, m, &via, src, NULL, 5);
		ep->stats.rejected_busy++;
		return;
	}
	fix_via(m, &via, topvia, src);
	sip_dest d;
	response_dest(src, &via, &d);
	t = sip_txn_new(ep, 0, m->method_id == SIP_METHOD_INVITE, key, kl, &d);
	if (!t)
		return;
	if (src->kind == SIP_TP_UDP && via.maddr.n && ep->dns)
		locate_maddr(ep, t, &via);

	if (is_cancel) {
		char ikey[KEY_MAX];
		size_t ikl = server_key(ikey, m, &via, topvia, "INVITE", 6);
		sip_txn *inv = sip_map_get(&ep->server, ikey, ikl);
		if (inv) {
			/* §9.2: 200 to the CANCEL, 487 to the INVITE if it is still pending */
			core_reply(ep, t, m, 200, NULL);
			if (sip_txn_server_cancel(inv)) {
				sip_msg ireq;
				/* a proxy's INVITE gets its 487 from downstream once the branches
				 * are cancelled (§16.10); a UAS's gets it here (§9.2) */
				if (!inv->proxied && inv->req &&
				    sip_msg_parse(&ireq, inv->req, inv->reqlen, 0, 0, NULL, &err) == 0) {
					core_reply(ep, inv, &ireq, 487, NULL);
					sip_msg_free(&ireq);
				}
				if (inv->relay)
					sip_relay_cancel(inv->relay);   /* §16.10: every pending branch */
				if (ep->hooks.cancel)
					ep->hooks.cancel(ep->ud, inv);
			}
			return;
		}
		if (sip_wait_match(ep->wait, ikey, ikl, 0)) {
			core_reply(ep, t, m, 200, NULL);   /* answered and ACKed: nothing to cancel */
			return;
		}
	}
	if (merged_request(ep, t, m)) {
		core_reply(ep, t, m, 482, NULL);
		ep->stats.merged++;
		return;
	}
	if (t->invite) {
		size_t len;
		t->req = sip_msg_print_alloc(m, 0, &len);
		if (t->req)
			t->reqlen = len;
		core_reply(ep, t, m, 100, NULL);   /* §17.2.1: Trying, at once */
	}
	if (ep->hooks.request)
		ep->hooks.request(ep->ud, t, m, src);
}

static void on_recv(void *arg, const sip_tp_src *src, const char *buf, size_t len)
{
	sip_endpoint *ep = arg;
	sip_msg m;
	sip_hdr slots[SIP_MSG_SLOTS];
	const char *err;
	/* a WebSocket message is one SIP message: Content-Length may be left out (RFC 7118 §5) */
	if (sip_msg_parse_into(&m, slots, SIP_MSG_SLOTS, buf, len, 0,
			       sip_tp_stream(src->kind) && !sip_tp_ws(src->kind),
			       &ep->cfg.lim, &err)) {
		char a[80];
		ep->stats.parse_errors++;
		sip_addr_format(src->kind, (const struct sockaddr *)&src->peer, a, sizeof a);
		sip_ep_logf(ep, "bad message from %s: %s", a, err);
		reply_unparsable(ep, src, buf, len, err);
		return;
	}
	if (m.is_request)
		on_request(ep, &m, src);
	else
		on_response(ep, &m);
	sip_msg_free(&m);
}

/* --- outgoing ------------------------------------------------------------------------- */

int sip_ep_reply(sip_endpoint *ep, sip_txn *st, const sip_msg *res, int proxied,
		 const char **err)
{
	(void)ep;
	if (st->client || res->is_request) {
		*err = "not a response for a server transaction";
		return -1;
	}
	st->proxied = (uint8_t)(proxied != 0);
	return sip_txn_server_reply(st, res, err);
}

int sip_ep_reply_stateless(sip_endpoint *ep, const sip_msg *res, const sip_tp_src *src,
			   const char **err)
{
	int vi = res->first[SIP_HDR_VIA];
	size_t pos = 0;
	sip_pl top;
	sip_via via;
	if (vi < 0) {
		*err = "no Via";
		return -1;
	}
	sip_list_next(res->hdrs[vi].value, &pos, &top);
	if (sip_via_parse(&via, top, err))
		return -1;
	sip_dest d;
	response_dest(src, &via, &d);
	size_t len;
	char *buf = sip_msg_print_alloc(res, 0, &len);
	if (!buf) {
		*err = "out of memory";
		return -1;
	}
	int r = sip_ep_send_dest(ep, &d, buf, len, err);
	free(buf);
	return r;
}

/* sent-by for our Via: the listener of that transport and family (any family as a
 * fallback). */
static int format_sent_by(sip_endpoint *ep, sip_tp_kind kind, int family, char *out, size_t cap)
{
	int best = -1, n = sip_tp_listener_count(ep->tp);
	struct sockaddr_storage ss;
	socklen_t sl;
	sip_tp_kind k;
	for (int pass = 0; pass < 3 && best < 0; pass++)
		for (int i = 0; i < n && best < 0; i++) {
			if (sip_tp_listener_addr(ep->tp, i, &k, &ss, &sl))
				continue;
			if ((pass == 0 && k == kind && ss.ss_family == family) ||
			    (pass == 1 && ss.ss_family == family) || pass == 2)
				best = i;
		}
	if (best < 0) {
		snprintf(out, cap, "invalid");
		return -1;
	}
	sip_tp_listener_addr(ep->tp, best, &k, &ss, &sl);
	char ip[INET6_ADDRSTRLEN];
	int port;
	sip_addr_ip((struct sockaddr *)&ss, ip, sizeof ip, &port);
	size_t o = 0, iplen = strlen(ip);
	if (cap < iplen + 10)
		return -1;
	if (ss.ss_family == AF_INET6)
		out[o++] = '[';
	memcpy(out + o, ip, iplen);
	o += iplen;
	if (ss.ss_family == AF_INET6)
		out[o++] = ']';
	out[o++] = ':';
	o += sip_fmt_uint(out + o, (unsigned)port);
	out[o] = 0;
	return 0;
}

const char *sip_ep_sent_by(sip_endpoint *ep, sip_tp_kind kind, int family)
{
	char *sb = ep->sent_by[kind >= SIP_TP_UDP && kind <= SIP_TP_WSS ? kind : 0][family == AF_INET6];
	if (!sb[0] && format_sent_by(ep, kind, family, sb, sizeof ep->sent_by[0][0])) {
		sb[0] = 0;   /* no listener yet: asked again next time */
		return NULL;
	}
	return sb;
}

static int set_via(sip_endpoint *ep, sip_msg *req, sip_tp_kind kind, int family,
		   sip_via_mode mode, const char *branch)
{
	if (mode == SIP_VIA_KEEP)
		return req->branch.n ? 0 : -1;
	char v[384];
	const char *sb = sip_ep_sent_by(ep, kind, family);
	if (!sb)
		sb = "invalid";
	for (const char *c = branch; *c; c++)
		if (!sip_is_token((unsigned char)*c))
			return -1;
	size_t sbl = strlen(sb), bl = strlen(branch);
	if (bl > 200)
		return -1;
	size_t n = 0;
	/* RFC 7118 §5.2: WS and WSS */
	const char *vt = kind == SIP_TP_TLS ? "SIP/2.0/TLS " : kind == SIP_TP_TCP ? "SIP/2.0/TCP " :
			 kind == SIP_TP_WS ? "SIP/2.0/WS " : kind == SIP_TP_WSS ? "SIP/2.0/WSS " :
			 "SIP/2.0/UDP ";
	n = strlen(vt);
	memcpy(v, vt, n);
	memcpy(v + n, sb, sbl);
	n += sbl;
	memcpy(v + n, ";branch=", 8);
	n += 8;
	size_t branch_at = n;
	memcpy(v + n, branch, bl);
	n += bl;
	memcpy(v + n, ";rport", 6);
	n += 6;
	if (mode == SIP_VIA_REPLACE && req->first[SIP_HDR_VIA] >= 0)
		sip_msg_remove_top_via(req);
	/* sb is our listener's host:port and the branch was checked token by token above */
	return sip_msg_add_own_via(req, v, n, branch_at, bl);
}

/* Choose the transport (§18.1.1: large requests leave UDP), write our Via, print. */
static char *prepare(sip_endpoint *ep, sip_msg *req, sip_dest *d, sip_via_mode mode,
		     const char *branch, size_t *len, char **udp_form, size_t *udp_len,
		     const char **err)
{
	char br[BRANCH_HEX + 8];
	if (!branch && mode != SIP_VIA_KEEP) {
		/* one branch for both forms, should the request leave UDP for its size */
		memcpy(br, "z9hG4bK", 7);
		sip_unique_hex(br + 7, BRANCH_HEX);
		br[7 + BRANCH_HEX] = 0;
		branch = br;
	}
	if (set_via(ep, req, d->kind, d->addr.ss_family, mode, branch)) {
		*err = "cannot set Via";
		return NULL;
	}
	char *buf = sip_msg_print_alloc(req, 0, len);
	if (buf && d->kind == SIP_TP_UDP && *len > SIP_UDP_MTU_LIMIT && mode != SIP_VIA_KEEP) {
		/* §18.1.1: over TCP; the UDP form is kept (for a transaction) to fall back on
		 * if no connection can be made */
		if (udp_form) {
			*udp_form = buf;
			*udp_len = *len;
		} else {
			free(buf);
		}
		d->kind = SIP_TP_TCP;
		d->listener = -1;
		if (set_via(ep, req, SIP_TP_TCP, d->addr.ss_family, SIP_VIA_REPLACE, branch)) {
			*err = "cannot set Via";
			return NULL;
		}
		buf = sip_msg_print_alloc(req, 0, len);
	}
	if (!buf) {
		*err = "out of memory";
		return NULL;
	}
	return buf;
}

static sip_txn *request(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			sip_via_mode via_mode, const char *branch, sip_relay *r, unsigned bi,
			const char **err)
{
	char key[KEY_MAX];
	if (!req->is_request || req->method_id == SIP_METHOD_ACK) {
		*err = "not a request that takes a transaction";
		return NULL;
	}
	if (ep->stats.client_txns + ep->stats.server_txns >= ep->cfg.max_txns) {
		*err = "too many transactions";
		return NULL;
	}
	sip_dest d = *dst;
	size_t len, udp_len = 0;
	char *udp_form = NULL;
	char *buf = prepare(ep, req, &d, via_mode, branch, &len, &udp_form, &udp_len, err);
	if (!buf) {
		free(udp_form);
		return NULL;
	}
	size_t kl = client_key(key, req->branch, req->method);
	sip_txn *t = sip_txn_new(ep, 1, req->method_id == SIP_METHOD_INVITE, key, kl, &d);
	if (!t) {
		free(buf);
		free(udp_form);
		*err = "transaction exists (same branch)";
		return NULL;
	}
	t->out = buf;
	t->outlen = len;
	t->udp_out = udp_form;
	t->udp_outlen = udp_len;
	if (sip_txn_send(t, buf, len)) {
		*err = "transport error";
		sip_txn_terminate(t);
		return NULL;
	}
	/* linked once it is sure to live: a failed branch is the caller's to count */
	t->relay = r;
	t->relay_branch = bi;
	sip_txn_client_start(t);
	return t;
}

sip_txn *sip_ep_request(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			sip_via_mode via_mode, const char *branch, const char **err)
{
	return request(ep, req, dst, via_mode, branch, NULL, 0, err);
}

sip_txn *sip_ep_request_relay(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			      const char *branch, sip_relay *r, unsigned bi, const char **err)
{
	return request(ep, req, dst, SIP_VIA_PUSH, branch, r, bi, err);
}

int sip_ep_send_stateless(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			  sip_via_mode via_mode, const char *branch, const char **err)
{
	sip_dest d = *dst;
	size_t len;
	char *buf = prepare(ep, req, &d, via_mode, branch, &len, NULL, NULL, err);
	if (!buf)
		return -1;
	int r = sip_ep_send_dest(ep, &d, buf, len, err);
	free(buf);
	return r;
}

int sip_ep_cancel(sip_endpoint *ep, sip_txn *ct, const char **err)
{
	if (!ct->client || !ct->invite) {
		*err = "not an INVITE client transaction";
		return -1;
	}
	if (ct->state == SIP_TXN_CALLING) {
		ct->cancel_pending = 1;   /* §9.1: wait for a provisional before cancelling */
		return 0;
	}
	if (ct->state != SIP_TXN_PROCEEDING) {
		*err = "the INVITE has a final response";
		return -1;
	}
	sip_msg inv, cancel;
	char *buf;
	size_t len;
	if (sip_msg_parse(&inv, ct->out, ct->outlen, 0, 0, NULL, err))
		return -1;
	int r = sip_build_from_invite(&inv, "CANCEL", sip_pl_make(NULL, 0), &buf, &len);
	sip_msg_free(&inv);
	if (r) {
		*err = "cannot build CANCEL";
		return -1;
	}
	if (sip_msg_parse(&cancel, buf, len, 0, 0, NULL, err)) {
		free(buf);
		return -1;
	}
	sip_txn *t = sip_ep_request(ep, &cancel, &ct->dest, SIP_VIA_KEEP, NULL, err);
	sip_msg_free(&cancel);
	free(buf);
	if (!t)
		return -1;
	sip_txn_client_cancelled(ct);
	return 0;
}

/* The transports we listen on, as the resolver names them, and TLS: outgoing TLS
 * connections need no listener of ours. */
static unsigned listened_tps(sip_endpoint *ep)
{
	unsigned tps = SIP_DNS_TLS;
	for (int i = 0, n = sip_tp_listener_count(ep->tp); i < n; i++) {
		sip_tp_kind k;
		struct sockaddr_storage ss;
		socklen_t sl;
		if (sip_tp_listener_addr(ep->tp, i, &k, &ss, &sl) == 0)
			tps |= k == SIP_TP_TCP ? SIP_DNS_TCP : k == SIP_TP_UDP ? SIP_DNS_UDP :
			       k == SIP_TP_TLS ? SIP_DNS_TLS : 0;
	}
	return tps;
}

int sip_ep_resolve_list(sip_endpoint *ep, const char *s, size_t len, sip_dest *d, unsigned max,
			unsigned *n, const char **err)
{
	sip_uri u;
	*n = 0;
	memset(d, 0, sizeof *d);
	d->listener = -1;
	if (max == 0 || sip_uri_parse(&u, sip_pl_make(s, len), err))
		return -1;
	if (!u.is_sip) {
		*err = "unsupported URI scheme";
		return -1;
	}
	sip_pl host = u.host, v;
	d->kind = SIP_TP_UDP;
	/* §26.2.2: a sips: URI is reached over TLS, whatever its transport param says */
	if (sip_pl_casecmp(u.scheme, "sips") ||
	    (sip_param_get(u.params, "transport", &v) && sip_pl_casecmp(v, "tls")))
		d->kind = SIP_TP_TLS;
	else if (sip_param_get(u.params, "transport", &v) && sip_pl_casecmp(v, "tcp"))
		d->kind = SIP_TP_TCP;
	else if (sip_param_get(u.params, "transport", &v) && sip_pl_casecmp(v, "ws"))
		d->kind = SIP_TP_WS;   /* RFC 7118: reached only over a connection it opened */
	else if (sip_param_get(u.params, "transport", &v) && sip_pl_casecmp(v, "wss"))
		d->kind = SIP_TP_WSS;
	if (d->kind == SIP_TP_TLS && host.n < sizeof ep->dest_name) {
		/* RFC 5922 §4: the certificate must name the URI's host (maddr is no name) */
		sip_pl h = host;
		if (h.n >= 2 && h.p[0] == '[') {
			h.p++;
			h.n -= 2;
		}
		memcpy(ep->dest_name, h.p, h.n);
		ep->dest_name[h.n] = 0;
		d->name = ep->dest_name;
	}
	if (sip_param_get(u.params, "maddr", &v) && v.n)
		host = v;
	if (sip_tp_ws(d->kind) && host.n > 8 &&
	    strncasecmp(host.p + host.n - 8, ".invalid", 8) == 0) {
		/* RFC 7118 §5.2: a WebSocket client, reached only over its connection */
		d->conn_id = sip_tp_ws_named(ep->tp, d->kind, host.p, host.n, &d->addr, &d->len);
		if (!d->conn_id) {
			*err = "no WebSocket connection for that .invalid host";
			return -1;
		}
		*n = 1;
		return 0;
	}
	int port = u.port ? u.port : d->kind == SIP_TP_TLS ? SIP_TLS_PORT : 5060;
	if (sip_ip_literal(host, port, &d->addr, &d->len) == 0) {
		*n = 1;
		return 0;
	}
	if (host.n == 0 || host.n > 255 || (host.n >= 2 && host.p[0] == '[')) {
		*err = "bad host";
		return -1;
	}
	/* A name: RFC 3263 from what the resolver has cached (dns.c); never a blocking lookup.
	 * The Lua side looks names up (yielding) before it hands them here. */
	if (!ep->dns) {
		*err = "a host name, and no resolver";
		return -1;
	}
	enum { MAX_TARGETS = 16 };
	sip_dns_target t[MAX_TARGETS];
	unsigned nt;
	if (sip_dns_cached_list(ep->dns, s, len, listened_tps(ep), t,
				max < MAX_TARGETS ? max : MAX_TARGETS, &nt, err) != 1)
		return -1;
	/* RFC 5922 §4: every TLS target is checked against the URI's domain, not its SRV host */
	const char *tls_name = d->name ? d->name : NULL;
	if (!tls_name && host.n < sizeof ep->dest_name) {
		memcpy(ep->dest_name, host.p, host.n);
		ep->dest_name[host.n] = 0;
		tls_name = ep->dest_name;
	}
	for (unsigned i = 0; i < nt; i++) {
		memset(&d[i], 0, sizeof d[i]);
		d[i].listener = -1;
		d[i].kind = t[i].tp == SIP_DNS_TLS ? SIP_TP_TLS :
			    t[i].tp == SIP_DNS_TCP ? SIP_TP_TCP : SIP_TP_UDP;
		if (d[i].kind == SIP_TP_TLS)
			d[i].name = tls_name;
		d[i].addr = t[i].addr;
		d[i].len = t[i].len;
	}
	*n = nt;
	return 0;
}

int sip_ep_resolve(sip_endpoint *ep, const char *s, size_t len, sip_dest *d, const char **err)
{
	unsigned n;
	return sip_ep_resolve_list(ep, s, len, d, 1, &n, err);
}

int sip_ep_abandon(sip_endpoint *ep, sip_txn *ct)
{
	(void)ep;
	if (!ct->client || ct->invite || ct->relay)
		return -1;
	sip_txn_terminate(ct);
	return 0;
}

void sip_ep_avoid(sip_endpoint *ep, const sip_dest *d)
{
	if (ep->dns)
		sip_dns_avoid(ep->dns, d->kind == SIP_TP_TCP ? SIP_DNS_TCP : SIP_DNS_UDP,
			      (const struct sockaddr *)&d->addr);
}

sip_dns *sip_ep_dns(sip_endpoint *ep) { return ep->dns; }

void sip_ep_set_dns(sip_endpoint *ep, sip_dns *dns)
{
	if (dns)
		sip_dns_ref(dns);
	sip_dns_unref(ep->dns);
	ep->dns = dns;
}
