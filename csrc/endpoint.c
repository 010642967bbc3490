/* endpoint.c: what happens to every message that arrives or leaves: parse, hand it to the
 * transaction layer (txn.c), fix the Via (§18.2.1, RFC 3581), route responses (§18.2.2). */
#include "endpoint.h"
#include "build.h"
#include "fmt.h"
#include "chars.h"
#include "key.h"
#include "rand.h"
#include "ratelimit.h"
#include "uri.h"
#include "dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BRANCH_HEX 16  /* 64 random bits after the magic cookie */
#define LCACHE 8       /* listener addresses kept formatted (sip_ep_is_listener) */

struct sip_endpoint {
	sip_loop *loop;
	sip_transport *tp;
	sip_ep_config cfg;
	sip_ep_hooks hooks;
	void *ud;
	sip_txns txns;           /* the transaction layer */
	sip_map merged;          /* From tag, Call-ID, CSeq -> server transaction (UA only) */
	int merged_check;        /* answer merged requests 482 (§8.2.2.2): not for a proxy */
	sip_ep_stats stats;      /* the transaction layer's counters are in txns */
	char sent_by[6][2][64];  /* our Via sent-by per [kind][IPv6?], formatted once */
	char dest_name[256];     /* the name sip_ep_resolve's last TLS destination points to */
	char **domains;          /* names that are us besides our addresses (lowercase) */
	unsigned ndomains;
	int local_port;          /* the port a domain name stands for */
	struct { char ip[64]; int port; } lcache[LCACHE];   /* listener addresses */
	int nlcache;             /* entries formatted; 0 after a listen */
	struct sip_rl *rl;       /* sip_ep_set_rate_limit; NULL: no limit */
	sip_ep_stray_fn stray;   /* sip_ep_set_stray: the layer above's look at stray responses */
	void *stray_arg;
	struct sip_dns *dns;     /* names in URIs: RFC 3263 from its cache (sip_ep_set_dns) */
	struct via_lookup *via_lookups;   /* §5 lookups for responses */
};

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

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

/* --- setup ---------------------------------------------------------------------------- */

static void on_recv(void *arg, const sip_tp_src *src, const char *buf, size_t len);

static void on_tp_event(void *arg, const char *event, const sip_tp_src *src, const char *detail)
{
	sip_endpoint *ep = arg;
	char a[80] = "";
	if (src)
		sip_addr_format(src->kind, (const struct sockaddr *)&src->peer, a, sizeof a);
	sip_logf(&ep->txns.log, "transport %s %s%s%s", event, a, detail ? ": " : "",
		 detail ? detail : "");
	if (src && strcmp(event, "connect failed") == 0)
		sip_txns_fail_dest(&ep->txns, src->kind, &src->peer, detail);
	else if (src && strcmp(event, "unreachable") == 0)
		sip_txns_fail_dest(&ep->txns, src->kind, &src->peer, detail);
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
	if (sip_map_init(&ep->merged))
		goto fail;
	ep->merged_check = 1;
	ep->tp = sip_tp_new(loop, &ep->cfg.tp, on_recv, on_tp_event, ep);
	if (!ep->tp)
		goto fail;
	sip_log log = { ep->hooks.log, ud };
	if (sip_txns_init(&ep->txns, loop, ep->tp, ep->cfg.t1, ep->cfg.t2, ep->cfg.t4,
			  ep->cfg.max_txns, ep->cfg.max_waiting, log)) {
		sip_tp_free(ep->tp);
		goto fail;
	}
	return ep;
fail:
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
	ep->txns.log.fn = NULL;
	sip_txns_free(&ep->txns);   /* the layer above hears of its transactions' end */
	sip_tp_free(ep->tp);
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
const sip_ep_config *sip_ep_config_get(sip_endpoint *ep) { return &ep->cfg; }
sip_loop *sip_ep_loop(sip_endpoint *ep) { return ep->loop; }
const sip_log *sip_ep_log(sip_endpoint *ep) { return &ep->txns.log; }
uint64_t sip_ep_new_id(sip_endpoint *ep) { return sip_txns_new_id(&ep->txns); }
int sip_ep_closing(sip_endpoint *ep) { return ep->txns.closing; }
sip_txn *sip_ep_txn(sip_endpoint *ep, uint64_t id) { return sip_txns_by_id(&ep->txns, id); }

void sip_ep_stats_get(sip_endpoint *ep, sip_ep_stats *st)
{
	*st = ep->stats;
	st->client_txns = ep->txns.stats.client;
	st->server_txns = ep->txns.stats.server;
	st->retrans_sent = ep->txns.stats.retrans_sent;
	st->absorbed = ep->txns.stats.absorbed;
	sip_wait_stats w;
	sip_wait_stats_get(ep->txns.wait, &w);
	st->waiting = w.count;
	st->max_waiting = w.max;
	st->waiting_bytes = w.bytes;
	st->waiting_resend_bytes = w.resend_bytes;
	st->waiting_full = w.full;
}

void sip_ep_set_stray(sip_endpoint *ep, sip_ep_stray_fn fn, void *arg)
{
	ep->stray = fn;
	ep->stray_arg = arg;
}

/* --- the transaction user: the hooks -------------------------------------------------- */

static void ua_response(void *arg, sip_txn *t, const sip_msg *res)
{
	sip_endpoint *ep = arg;
	if (ep->hooks.response)
		ep->hooks.response(ep->ud, t, res);
}

/* §9.2: 487 to the INVITE (the 200 to the CANCEL went); a proxy's INVITE gets its 487 from
 * downstream once the branches are cancelled (§16.10). */
static void ua_cancel(void *arg, sip_txn *t)
{
	sip_endpoint *ep = arg;
	if (!sip_txn_proxied(t))
		sip_txn_server_reply_code(t, NULL, 487, NULL);
	if (ep->hooks.cancel)
		ep->hooks.cancel(ep->ud, t);
}

static void ua_ack(void *arg, sip_txn *t, const sip_msg *ack)
{
	sip_endpoint *ep = arg;
	if (ep->hooks.ack)
		ep->hooks.ack(ep->ud, t, ack);
}

/* Only INVITE transactions, and client ones that never gave a final response, can be waited
 * on by the TU; the rest end without a word (one Lua call less each). */
static void ua_terminated(void *arg, sip_txn *t)
{
	sip_endpoint *ep = arg;
	if (ep->hooks.gone && (sip_txn_is_invite(t) ||
			       (sip_txn_is_client(t) && sip_txn_last_status(t) < 200)))
		ep->hooks.gone(ep->ud, t);
}

static const sip_txn_user ua_user = { ua_response, ua_cancel, ua_ack, ua_terminated };

/* --- merged requests ------------------------------------------------------------------ */

/* §8.2.2.2: a request without a To tag whose From tag, Call-ID and CSeq are those of a
 * transaction of ours it did not match (a request forked upstream reaching us twice) is
 * merged: 1 means answer it 482. Otherwise t is filed under them. A proxy does not look
 * (a spiral is such a request, and must be relayed). */
static int merged_request(sip_endpoint *ep, sip_txn *t, const sip_msg *m)
{
	if (!ep->merged_check || m->to_tag.n)
		return 0;
	char key[SIP_KEY_MAX];
	sip_keybuf k = { key, 0 };
	sip_kput(&k, "M|", 2);
	sip_kpl(&k, m->call_id);
	sip_kch(&k, '|');
	sip_kuint(&k, m->cseq);
	sip_kch(&k, '|');
	sip_kpl(&k, m->method);
	sip_kch(&k, '|');
	sip_kpl(&k, m->from_tag);
	if (sip_map_get(&ep->merged, key, k.n) || sip_txns_wait_match(&ep->txns, key, k.n, 0))
		return 1;
	sip_txn_alias(t, &ep->merged, key, k.n);   /* (without memory: not filed, no harm) */
	return 0;
}

void sip_ep_set_merged_check(sip_endpoint *ep, int on)
{
	ep->merged_check = on != 0;
}

/* --- responses ------------------------------------------------------------------------ */

void sip_ep_reply_code(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code,
		       const char *extra)
{
	(void)ep;
	sip_txn_server_reply_code(st, req, code, extra);
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
	struct sockaddr_storage addr;
	socklen_t len;
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
	if (t)
		sip_txn_dest_found(t, v->ok ? &v->addr : NULL, v->len);
	via_lookup_free(v);
}

static void via_located(void *arg, const sip_dns_target *tg, unsigned n, const char *err)
{
	via_lookup *v = arg;
	if (n) {
		v->ok = 1;
		v->addr = tg[0].addr;
		v->len = tg[0].len;
	} else {
		sip_logf(&v->ep->txns.log, "response: maddr not found (%s): to the source instead", err);
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
	v->txn = sip_txn_id(t);
	v->next = ep->via_lookups;
	if (ep->via_lookups)
		ep->via_lookups->prev = v;
	ep->via_lookups = v;
	sip_txn_dest_wait(t);
	v->starting = 1;
	v->id = sip_dns_locate(ep->dns, uri, (size_t)n, SIP_DNS_UDP, via_located, v, &err);
	v->starting = 0;
	if (!v->id) {
		sip_txn_dest_found(t, NULL, 0);   /* nothing to send yet: the source it is */
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
	sip_dest_send(ep->tp, &d, out, o, &err);
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
	ep->stats.responses_in++;
	if (sip_txns_response(&ep->txns, m))
		return;
	if (ep->stray && ep->stray(ep->stray_arg, m))
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
	char *buf = sip_build_response_alloc(m, 503, reason, extra, &len);
	sip_dest d;
	const char *err;
	response_dest(src, via, &d);
	if (buf) {
		sip_dest_send(ep->tp, &d, buf, len, &err);
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
	char key[SIP_KEY_MAX];
	sip_keybuf k = { key, 0 };
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
	if (is_ack)
		sip_txn_server_key(&k, m, &via, topvia, "INVITE", 6);
	else
		sip_txn_server_key(&k, m, &via, topvia, m->method.p, m->method.n);

	if (is_ack) {
		sip_txn *t = sip_txns_server(&ep->txns, &k);
		if (t && sip_txn_state_get(t) == SIP_TXN_ACCEPTED) {
			sip_txn_accepted_ack(t, m);
			return;
		}
		if (t) {
			sip_txn_server_ack(t);
			return;
		}
		if (sip_txns_wait_match(&ep->txns, k.p, k.n, 0)) {   /* Confirmed: absorbed */
			ep->txns.stats.absorbed++;
			return;
		}
		t = sip_txns_accepted(&ep->txns, m);
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

	sip_txn *t = sip_txns_server(&ep->txns, &k);
	if (t) {
		sip_txn_server_retransmission(t);
		return;
	}
	if (sip_txns_wait_match(&ep->txns, k.p, k.n, 1)) {   /* Completed: the final response again */
		ep->txns.stats.absorbed++;
		return;
	}
	if (overloaded(ep, m, &via, src, is_cancel))
		return;
	if (ep->rl && !is_cancel && rate_limited(ep, m, &via, src))
		return;
	if (sip_txns_full(&ep->txns)) {
		/* full: answer without keeping state, and tell when to come back */
		reply_503(ep, m, &via, src, NULL, 5);
		ep->stats.rejected_busy++;
		return;
	}
	fix_via(m, &via, topvia, src);
	sip_dest d;
	response_dest(src, &via, &d);
	t = sip_txn_server_new(&ep->txns, &k, m, &d, &ua_user, ep);
	if (!t)
		return;
	if (src->kind == SIP_TP_UDP && via.maddr.n && ep->dns)
		locate_maddr(ep, t, &via);

	if (is_cancel) {
		sip_txn_server_key(&k, m, &via, topvia, "INVITE", 6);
		sip_txn *inv = sip_txns_server(&ep->txns, &k);
		if (inv) {
			/* §9.2: 200 to the CANCEL; the INVITE's owner hears of it if it is pending */
			sip_txn_server_reply_code(t, m, 200, NULL);
			sip_txn_server_cancel(inv);
			return;
		}
		if (sip_txns_wait_match(&ep->txns, k.p, k.n, 0)) {
			/* answered and ACKed: nothing to cancel */
			sip_txn_server_reply_code(t, m, 200, NULL);
			return;
		}
	}
	if (merged_request(ep, t, m)) {
		sip_txn_server_reply_code(t, m, 482, NULL);
		ep->stats.merged++;
		return;
	}
	if (sip_txn_is_invite(t))
		sip_txn_server_reply_code(t, m, 100, NULL);   /* §17.2.1: Trying, at once */
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
		sip_logf(&ep->txns.log, "bad message from %s: %s", a, err);
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
	if (sip_txn_is_client(st) || res->is_request) {
		*err = "not a response for a server transaction";
		return -1;
	}
	sip_txn_set_proxied(st, proxied);
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
	int r = sip_dest_send(ep->tp, &d, buf, len, err);
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
			sip_via_mode via_mode, const char *branch, const sip_txn_user *u, void *arg,
			const char **err)
{
	if (!req->is_request || req->method_id == SIP_METHOD_ACK) {
		*err = "not a request that takes a transaction";
		return NULL;
	}
	if (sip_txns_full(&ep->txns)) {
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
	return sip_txn_client_new(&ep->txns, req->branch, req->method,
				  req->method_id == SIP_METHOD_INVITE, &d, buf, len, udp_form,
				  udp_len, u, arg, err);
}

sip_txn *sip_ep_request(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			sip_via_mode via_mode, const char *branch, const char **err)
{
	return request(ep, req, dst, via_mode, branch, &ua_user, ep, err);
}

sip_txn *sip_ep_request_for(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			    sip_via_mode via_mode, const char *branch, const sip_txn_user *u,
			    void *arg, const char **err)
{
	return request(ep, req, dst, via_mode, branch, u, arg, err);
}

int sip_ep_send_stateless(sip_endpoint *ep, sip_msg *req, const sip_dest *dst,
			  sip_via_mode via_mode, const char *branch, const char **err)
{
	sip_dest d = *dst;
	size_t len;
	char *buf = prepare(ep, req, &d, via_mode, branch, &len, NULL, NULL, err);
	if (!buf)
		return -1;
	int r = sip_dest_send(ep->tp, &d, buf, len, err);
	free(buf);
	return r;
}

int sip_ep_cancel(sip_endpoint *ep, sip_txn *ct, const char **err)
{
	(void)ep;
	return sip_txn_client_cancel(ct, err);
}

/* --- who we are ------------------------------------------------------------------------ */

/* Listener addresses are formatted once (sip_ep_listen clears the cache). */
int sip_ep_is_listener(sip_endpoint *ep, sip_pl h, int port)
{
	if (h.n >= 2 && h.p[0] == '[') {
		h.p++;
		h.n -= 2;
	}
	int n = sip_tp_listener_count(ep->tp);
	if (n > LCACHE)
		n = LCACHE;
	if (ep->nlcache != n) {
		for (int i = 0; i < n; i++) {
			sip_tp_kind k;
			struct sockaddr_storage ss;
			socklen_t sl;
			ep->lcache[i].port = -1;
			ep->lcache[i].ip[0] = 0;
			if (sip_tp_listener_addr(ep->tp, i, &k, &ss, &sl) == 0)
				sip_addr_ip((const struct sockaddr *)&ss, ep->lcache[i].ip,
					    sizeof ep->lcache[i].ip, &ep->lcache[i].port);
		}
		ep->nlcache = n;
	}
	for (int i = 0; i < n; i++)
		if (ep->lcache[i].port == port && strlen(ep->lcache[i].ip) == h.n &&
		    strncasecmp(ep->lcache[i].ip, h.p, h.n) == 0)
			return 1;
	return 0;
}

int sip_ep_from_self(sip_endpoint *ep, const sip_tp_src *src, const sip_via *top)
{
	if (!sip_ep_is_listener(ep, top->host, sip_via_port(top)))
		return 0;
	char ip[INET6_ADDRSTRLEN];
	int port;
	sip_addr_ip((const struct sockaddr *)&src->peer, ip, sizeof ip, &port);
	sip_pl h = sip_pl_make(ip, strlen(ip));
	if (src->kind == SIP_TP_UDP)
		return sip_ep_is_listener(ep, h, port);   /* we send UDP from the listening port */
	for (int i = 0; i < ep->nlcache; i++)   /* TCP: from an ephemeral port of our IP */
		if (strcmp(ep->lcache[i].ip, ip) == 0)
			return 1;
	return 0;
}

int sip_ep_set_domains(sip_endpoint *ep, const char *const *names, unsigned n, int port)
{
	for (unsigned i = 0; i < ep->ndomains; i++)
		free(ep->domains[i]);
	free(ep->domains);
	ep->domains = NULL;
	ep->ndomains = 0;
	ep->local_port = port;
	if (!n)
		return 0;
	ep->domains = calloc(n, sizeof *ep->domains);
	if (!ep->domains)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		size_t len = strlen(names[i]);
		char *d = malloc(len + 1);
		if (!d)
			return -1;
		for (size_t k = 0; k <= len; k++)
			d[k] = (char)(names[i][k] >= 'A' && names[i][k] <= 'Z' ? names[i][k] + 32 : names[i][k]);
		ep->domains[ep->ndomains++] = d;
	}
	return 0;
}

int sip_ep_is_local(sip_endpoint *ep, sip_pl uri)
{
	sip_uri u;
	const char *err;
	if (sip_uri_parse(&u, uri, &err) || !u.is_sip || !u.host.n)
		return 0;
	if (!u.port || u.port == ep->local_port)
		for (unsigned i = 0; i < ep->ndomains; i++)
			if (strlen(ep->domains[i]) == u.host.n &&
			    strncasecmp(ep->domains[i], u.host.p, u.host.n) == 0)
				return 1;
	return sip_ep_is_listener(ep, u.host, u.port ? u.port :
				  sip_pl_casecmp(u.scheme, "sips") ? SIP_TLS_PORT : 5060);
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
	/* (a relay's branch has the proxy's handlers: the relay ends it, not the TU) */
	if (!sip_txn_is_client(ct) || sip_txn_is_invite(ct) || sip_txn_user_get(ct, NULL) != &ua_user)
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
