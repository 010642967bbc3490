/* proxy.c: the stateful proxy core of RFC 3261 §16. A relay ties one server transaction
 * to the client transactions of its branches (§16.6) and owns the response context of
 * §16.7: provisionals and 2xx go upstream as they come, the best final when every branch
 * has answered, 6xx and 2xx cancel the other INVITE branches, challenges are merged, a
 * 503 becomes 500, and a CANCEL from upstream cancels every pending branch (§16.10).
 * Responses never reach the TU unless it asked (done, branch callbacks): a relayed
 * transaction costs no script code past the routing decision. The relay hears from its
 * transactions through the handlers it gives them (branch_user, server_user). */
#include "proxy.h"
#include "build.h"
#include "fmt.h"
#include "rand.h"
#include "uri.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

typedef struct relay_branch {
	sip_relay *r;      /* the relay it belongs to (a client transaction's handler argument) */
	sip_txn *ct;
	unsigned target;   /* index of its target in the caller's list */
	int status;        /* its final response, 0 before */
	uint8_t done;      /* a final came, or never will */
	uint8_t nalts, nextalt;   /* RFC 3263 §4.3: the other addresses of a named next hop, */
	sip_dest *alts;           /* tried in turn when one fails (malloc'd; NULL: none), */
	char *req;                /* with the request as first sent (a non-INVITE client */
	size_t reqlen;            /* transaction lets go of it on its final response) */
} relay_branch;

/* Addresses of one named next hop a branch may try (§4.3): more is a zone spraying. */
#define RELAY_ALTS_MAX 8

struct sip_relay {
	sip_endpoint *ep;
	uint64_t id;
	sip_txn *st;              /* the server transaction; NULL once gone */
	sip_dest up;              /* where responses go upstream (late 2xx go statelessly) */
	uint8_t invite, answered, cancelled, finished, keep_failure;
	uint8_t timer_c;          /* t_timeout is Timer C: 101-199 start it again */
	unsigned nbranches, live, refs;
	sip_msg best;             /* owned copy of the best final so far (or the first 2xx) */
	int has_best, best_branch;
	char *chal;               /* challenges seen: records of branch, name, value */
	size_t chal_len, chal_cap;
	sip_timer t_timeout;
	void (*done)(void *ud, uint64_t id, const sip_msg *final);   /* sip_relay_opts */
	void (*branch)(void *ud, uint64_t id, unsigned branch, const sip_msg *res);
	void *ud;
	const sip_txn_user *st_user;   /* st's owner before the relay took it over */
	void *st_arg;
	uint64_t deadline;        /* non-INVITE: no new target after 64*T1 (§4.3) */
	relay_branch br[];
};

static void relay_unref(sip_relay *r)
{
	if (--r->refs)
		return;
	sip_timer_stop(sip_ep_loop(r->ep), &r->t_timeout);
	if (r->has_best)
		sip_msg_free(&r->best);
	for (unsigned i = 0; i < r->nbranches; i++) {
		free(r->br[i].alts);
		free(r->br[i].req);
	}
	free(r->chal);
	free(r);
}

/* c: res with our Via off the top (§16.7 step 9), res untouched; slots has SIP_MSG_SLOTS
 * entries. 0, or -1; sip_msg_free(c) after use. */
static int without_top_via(sip_msg *c, sip_hdr *slots, const sip_msg *res)
{
	const char *err;
	if (res->nhdrs <= SIP_MSG_SLOTS) {
		/* a shallow copy with its own header array: taking the Via off edits only that */
		*c = *res;
		memcpy(slots, res->hdrs, res->nhdrs * sizeof *slots);
		c->hdrs = c->slots = slots;
		c->hdrs_cap = c->nslots = SIP_MSG_SLOTS;
		c->owned = 0;
		c->edits = NULL;
	} else if (sip_msg_clone(c, slots, SIP_MSG_SLOTS, res, &err)) {
		return -1;
	}
	sip_msg_remove_top_via(c);
	return 0;
}

/* A response from downstream goes upstream with our Via off the top (§16.7 step 9). */
static void forward_up(sip_relay *r, const sip_msg *res, int stateless)
{
	sip_endpoint *ep = r->ep;
	sip_msg c;
	sip_hdr slots[SIP_MSG_SLOTS];
	const char *err;
	if (sip_ep_closing(ep) || without_top_via(&c, slots, res))
		return;
	if (!stateless && r->st) {
		/* (st is proxied since the relay began; over TCP a final response ends st at
		 * once, Timer J being zero, and r->st is NULL when this returns) */
		if (sip_txn_server_reply(r->st, &c, &err))
			sip_logf(sip_ep_log(ep), "relay: cannot forward %d upstream: %s", res->status,
				 err);
	} else {
		/* a 2xx after the server transaction is gone, or a retransmitted one (RFC 6026) */
		size_t len;
		char *buf = sip_msg_print_alloc(&c, 0, &len);
		if (buf) {
			sip_dest_send(sip_ep_transport(ep), &r->up, buf, len, &err);
			free(buf);
		}
	}
	sip_msg_free(&c);
}

static void cancel_branches(sip_relay *r, int except)
{
	const char *err;
	if (!r->invite)
		return;
	for (unsigned i = 0; i < r->nbranches; i++) {
		relay_branch *b = &r->br[i];
		if ((int)i != except && !b->done && b->ct)
			sip_txn_client_cancel(b->ct, &err);
	}
}

static int is_challenge(int s) { return s == 401 || s == 407; }

/* §16.7 step 6: is s a better final than the best so far? 6xx wins, then the lowest class;
 * in a class a challenge is kept over the rest (its credentials can make the call). */
static int better(int s, int best)
{
	if (best >= 600)
		return 0;
	if (s >= 600)
		return 1;
	int sc = s / 100, bc = best / 100;
	return sc < bc || (sc == bc && is_challenge(s) && !is_challenge(best));
}

static void keep_challenges(sip_relay *r, unsigned bi, const sip_msg *res)
{
	for (unsigned i = 0; i < res->nhdrs; i++) {
		const sip_hdr *h = &res->hdrs[i];
		if (h->id != SIP_HDR_WWW_AUTHENTICATE && h->id != SIP_HDR_PROXY_AUTHENTICATE)
			continue;
		size_t need = r->chal_len + 3 * sizeof(uint32_t) + h->name.n + h->value.n;
		if (need > r->chal_cap) {
			size_t cap = need * 2;
			char *p = realloc(r->chal, cap);
			if (!p)
				return;
			r->chal = p;
			r->chal_cap = cap;
		}
		char *p = r->chal + r->chal_len;
		memcpy(p + 3 * sizeof(uint32_t), h->name.p, h->name.n);
		/* unfolded: a folded value could not be added to the response that goes up */
		size_t vn = sip_unfold(h->value, p + 3 * sizeof(uint32_t) + h->name.n, h->value.n);
		uint32_t hd[3] = { bi, (uint32_t)h->name.n, (uint32_t)vn };
		memcpy(p, hd, sizeof hd);
		r->chal_len += sizeof hd + h->name.n + vn;
	}
}

static void set_best(sip_relay *r, unsigned bi, const sip_msg *res)
{
	const char *err;
	sip_msg c;
	if (sip_msg_clone(&c, NULL, 0, res, &err))
		return;
	if (r->has_best)
		sip_msg_free(&r->best);
	r->best = c;   /* no slots: its header array is its own */
	r->has_best = 1;
	r->best_branch = (int)bi;
}

/* A non-INVITE relay that is over has nothing more to do (no CANCEL, no 2xx retransmission
 * passes through it): its transactions let go of it now rather than when Timer J ends. */
static void detach(sip_relay *r)
{
	if (r->invite)
		return;
	if (r->st) {
		sip_txn_set_user(r->st, r->st_user, r->st_arg);
		r->st = NULL;
		r->refs--;
	}
	for (unsigned i = 0; i < r->nbranches; i++)
		if (r->br[i].ct) {
			sip_txn_set_user(r->br[i].ct, NULL, NULL);
			r->br[i].ct = NULL;
			r->refs--;
		}
}

/* keep_failure: the server transaction is the TU's again, unanswered */
static void release_st(sip_relay *r)
{
	sip_txn_set_user(r->st, r->st_user, r->st_arg);
	sip_txn_set_proxied(r->st, 0);
	r->st = NULL;
	r->refs--;
}

/* Every branch has its final: the outcome goes upstream (unless a 2xx went already), and to
 * the TU when it waits. */
static void finish(sip_relay *r)
{
	sip_endpoint *ep = r->ep;
	r->finished = 1;
	sip_timer_stop(sip_ep_loop(ep), &r->t_timeout);
	if (r->keep_failure && !r->answered && !r->cancelled && r->st) {
		release_st(r);
		if (r->done && !sip_ep_closing(ep))
			r->done(r->ud, r->id, r->has_best ? &r->best : NULL);
		detach(r);
		return;
	}
	if (r->answered || !r->has_best) {
		/* no final at all (branches ended without one): 408, or 487 after a CANCEL */
		if (!r->answered && !r->has_best && r->st && !sip_ep_closing(ep))
			sip_txn_server_reply_code(r->st, NULL, r->cancelled ? 487 : 408, NULL);
		if (r->done && !sip_ep_closing(ep))
			r->done(r->ud, r->id, r->has_best ? &r->best : NULL);
		detach(r);
		return;
	}
	sip_msg *best = &r->best;
	if (is_challenge(best->status) && r->chal_len) {
		/* §16.7 step 7: every challenge goes up in the one response */
		for (size_t off = 0; off < r->chal_len;) {
			uint32_t hd[3];
			memcpy(hd, r->chal + off, sizeof hd);
			const char *name = r->chal + off + sizeof hd;
			if ((int)hd[0] != r->best_branch)
				sip_msg_add_header(best, name, hd[1], name + hd[1], hd[2], 0);
			off += sizeof hd + hd[1] + hd[2];
		}
	}
	if (best->status == 503) {
		/* §16.7 step 6: a 503 from downstream goes up as 500 */
		size_t len;
		char *buf = sip_msg_print_alloc(best, 32, &len);
		const char *eol = NULL, *err;
		if (buf)
			eol = memchr(buf, '\n', len);
		if (eol) {
			static const char line[] = "SIP/2.0 500 Server Internal Error\r\n";
			size_t rest = len - (size_t)(eol + 1 - buf);
			char *nb = malloc(sizeof line - 1 + rest);
			sip_msg fixed;
			if (nb) {
				memcpy(nb, line, sizeof line - 1);
				memcpy(nb + sizeof line - 1, eol + 1, rest);
				if (sip_msg_parse(&fixed, nb, sizeof line - 1 + rest, 1, 0, NULL, &err) == 0) {
					sip_msg_free(&r->best);
					r->best = fixed;
				}
				free(nb);
			}
		}
		free(buf);
	}
	forward_up(r, &r->best, 0);
	if (r->done && !sip_ep_closing(ep))
		r->done(r->ud, r->id, &r->best);
	detach(r);
}

static void relay_response(sip_relay *r, unsigned bi, const sip_msg *res);
static void timeout_handler(void *arg);
static const sip_txn_user branch_user;

/* The Via a failed sip_ep_request_for pushed (its branch starts as ours), taken off. */
static void drop_own_via(sip_msg *m, const char *branch)
{
	if (m->branch.n == 30 && memcmp(m->branch.p, branch, 22) == 0)
		sip_msg_remove_top_via(m);
}

/* RFC 3263 §4.3: a 503, or a final the core made because nobody answered (a transport
 * error, an ICMP unreachable, Timer B/F: no To tag), moves a branch whose next hop was a
 * name on to its next address, with a new branch id, while the transaction has time. */
static int may_fail_over(sip_relay *r, relay_branch *b, const sip_msg *res)
{
	int s = res->status;
	return (s == 503 || (s == 408 && res->to_tag.n == 0)) && b->nextalt < b->nalts &&
	       b->ct && b->req && !r->answered && !r->cancelled && !r->finished &&
	       !sip_ep_closing(r->ep) && (r->invite || sip_loop_now(sip_ep_loop(r->ep)) < r->deadline);
}

/* The branch's request again, toward its next address: 0 when one took it. */
static int fail_over(sip_relay *r, unsigned bi)
{
	sip_endpoint *ep = r->ep;
	relay_branch *b = &r->br[bi];
	sip_txn *old = b->ct;
	sip_msg m;
	const char *err;
	sip_ep_avoid(ep, sip_txn_dest(old));
	if (sip_msg_parse(&m, b->req, b->reqlen, 0, 0, NULL, &err))
		return -1;
	char branch[31];
	if (m.branch.n != 30 || memcmp(m.branch.p, "z9hG4bKls", 9) != 0) {
		sip_msg_free(&m);
		return -1;
	}
	memcpy(branch, m.branch.p, 22);   /* the loop hash stays, the rest is new */
	branch[30] = 0;
	sip_msg_remove_top_via(&m);
	int ok = -1;
	while (ok && b->nextalt < b->nalts) {
		sip_dest d = b->alts[b->nextalt++];
		sip_unique_hex(branch + 22, 8);
		sip_txn *ct = sip_ep_request_for(ep, &m, &d, SIP_VIA_PUSH, branch, &branch_user, b,
						 &err);
		if (!ct) {
			sip_ep_avoid(ep, &d);
			drop_own_via(&m, branch);
			continue;
		}
		sip_txn_set_user(old, NULL, NULL);   /* what it still gets is no longer this branch's */
		r->refs--;
		b->ct = ct;
		r->refs++;
		ok = 0;
	}
	sip_msg_free(&m);
	if (!ok)
		sip_logf(sip_ep_log(ep), "relay: branch %u failed over to its next address", bi);
	return ok;
}

/* A response on a branch's client transaction. */
static void branch_response(void *arg, sip_txn *ct, const sip_msg *res)
{
	relay_branch *b = arg;
	sip_relay *r = b->r;
	(void)ct;
	r->refs++;   /* forwarding may end the server transaction, and with it our last ref */
	relay_response(r, (unsigned)(b - r->br), res);
	relay_unref(r);
}

static void relay_response(sip_relay *r, unsigned bi, const sip_msg *res)
{
	relay_branch *b = &r->br[bi];
	int s = res->status;
	if (s < 200) {
		if (s > 100 && !r->answered && !r->finished) {
			forward_up(r, res, 0);   /* §16.7 step 5: provisionals but 100 go up */
			if (r->timer_c)          /* §16.7 step 2 */
				sip_timer_start_lazy(sip_ep_loop(r->ep), &r->t_timeout,
						     sip_ep_config_get(r->ep)->timer_c, timeout_handler, r);
		}
		return;
	}
	if (b->done) {
		/* a 2xx retransmission (RFC 6026 Accepted) or another fork's 2xx: end to end */
		if (s < 300 && r->invite)
			forward_up(r, res, 1);
		return;
	}
	if (b->nalts && may_fail_over(r, b, res) && fail_over(r, bi) == 0)
		return;
	b->done = 1;
	b->status = s;
	r->live--;
	sip_endpoint *ep = r->ep;
	if (r->branch)
		r->branch(r->ud, r->id, b->target, res);
	if (s < 300) {
		/* 2xx: up at once (every 2xx of an INVITE, §16.7 step 5); the rest are cancelled */
		if (r->invite || !r->answered) {
			forward_up(r, res, r->answered);
			if (!r->answered && r->done)
				set_best(r, bi, res);   /* what the TU gets back */
			r->answered = 1;
		}
		cancel_branches(r, (int)bi);
	} else {
		if (s >= 600)
			cancel_branches(r, (int)bi);
		if (is_challenge(s))   /* §16.7 step 7: from the other 401s and 407s only */
			keep_challenges(r, bi, res);
		if (!r->answered && (!r->has_best || better(s, r->best.status))) {
			if (r->live == 0 && !r->done && !r->keep_failure && r->nbranches == 1 &&
			    s != 503) {
				/* the only branch: its final goes up as it is, no copy kept */
				r->finished = 1;
				sip_timer_stop(sip_ep_loop(ep), &r->t_timeout);
				forward_up(r, res, 0);
				detach(r);
				return;
			}
			set_best(r, bi, res);
		}
	}
	if (r->live == 0 && !r->finished)
		finish(r);
}

/* A branch's client transaction is being freed. */
static void branch_terminated(void *arg, sip_txn *ct)
{
	relay_branch *b = arg;
	sip_relay *r = b->r;
	(void)ct;
	b->ct = NULL;
	if (!b->done) {
		b->done = 1;   /* ended without a final: nothing more comes from there */
		r->live--;
		if (r->live == 0 && !r->finished)
			finish(r);
	}
	relay_unref(r);
}

/* The server transaction: its owner before the relay hears of its end, then the relay. */
static void server_terminated(void *arg, sip_txn *st)
{
	sip_relay *r = arg;
	if (r->st_user && r->st_user->terminated)
		r->st_user->terminated(r->st_arg, st);
	r->st = NULL;
	relay_unref(r);
}

/* §16.10: a CANCEL from upstream cancels every pending branch (the 487 comes from
 * downstream); then st's previous owner hears of it. */
static void server_cancel(void *arg, sip_txn *st)
{
	sip_relay *r = arg;
	r->cancelled = 1;
	cancel_branches(r, -1);
	if (r->st_user && r->st_user->cancel)
		r->st_user->cancel(r->st_arg, st);
}

static void server_ack(void *arg, sip_txn *st, const sip_msg *ack)
{
	sip_relay *r = arg;
	if (r->st_user && r->st_user->ack)
		r->st_user->ack(r->st_arg, st, ack);
}

static const sip_txn_user branch_user = { branch_response, NULL, NULL, branch_terminated };
static const sip_txn_user server_user = { NULL, server_cancel, server_ack, server_terminated };

/* The caller's timeout or Timer C (§16.8): the branches still ringing are cancelled (each
 * then ends on its 487, or 64*T1 later, §9.1); one with no provisional yet is cancelled as
 * soon as one comes, or ends on Timer B with a 408. */
static void timeout_handler(void *arg)
{
	sip_relay *r = arg;
	if (r->live > 0 && !r->answered)
		cancel_branches(r, -1);
}

/* 12 hex digits over what stays the same when a request comes back to a proxy (§16.6
 * step 8): Request-URI, Call-ID, From tag, To tag, CSeq number. Eight bytes a round (a
 * multiply and a rotate), no key: proxies of one farm must compute the same digits. */
static uint64_t loop_mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9e3779b97f4a7c15ull;
	return (h << 31) | (h >> 33);
}

/* The hash of some parts, written as n hex digits. */
static void hash_hex(const sip_pl *parts, size_t nparts, uint64_t tail, char *out, int n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t k = 0; k < nparts; k++) {
		const char *p = parts[k].p;
		size_t len = parts[k].n, i = 0;
		for (; i + 8 <= len; i += 8) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			h = loop_mix(h, w);
		}
		uint64_t w = 0;
		if (len > i)
			memcpy(&w, p + i, len - i);   /* an empty part may have no pointer at all */
		/* the length closes each part: "ab","c" and "a","bc" differ */
		h = loop_mix(loop_mix(h, w), len);
	}
	h = loop_mix(h, tail);
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	static const char hex[] = "0123456789abcdef";
	for (int i = n - 1; i >= 0; i--, h >>= 4)
		out[i] = hex[h & 15];
}

void sip_proxy_loop_hash(const sip_msg *m, char out[12])
{
	const sip_pl parts[] = { m->uri, m->call_id, m->from_tag, m->to_tag };
	hash_hex(parts, sizeof parts / sizeof parts[0], m->cseq, out, 12);
}

/* §16.11: a stateless proxy gives a request the same branch each time it forwards it (a
 * retransmission, and the CANCEL or the non-2xx ACK of an INVITE, must reach the
 * transaction its first copy made downstream) and another for another transaction. Ours
 * hashes the Via of the client upstream (branch and sent-by, which tell an RFC 3261
 * client's transactions apart, §8.1.1.7) with the Call-ID, From tag and CSeq number (for
 * older clients): all things the response carries too, the client's Via as its second, so
 * a response can be checked against its branch before it is forwarded. "sl" (no hex digit)
 * sets it apart from a UA's random branch and a stateful relay's "ls". */
#define SL_COOKIE "z9hG4bKsl"
#define SL_COOKIE_LEN 9
#define SL_BRANCH_LEN (SL_COOKIE_LEN + 16)

static void stateless_branch(const sip_via *up, const sip_msg *m, char out[SL_BRANCH_LEN + 1])
{
	/* a per-process secret in the hash: nobody else can make up a branch of ours for a
	 * Via of their choosing, and have us bounce a forged response to it */
	static char secret[17];
	if (!secret[0] && sip_random_hex(secret, 16))
		memset(secret, 'x', 16);
	const sip_pl parts[] = { sip_pl_make(secret, 16), up->branch, up->host, m->call_id,
				 m->from_tag };
	memcpy(out, SL_COOKIE, SL_COOKIE_LEN);
	hash_hex(parts, sizeof parts / sizeof parts[0], (uint64_t)up->port << 32 | m->cseq,
		 out + SL_COOKIE_LEN, 16);
	out[SL_BRANCH_LEN] = 0;
}

/* Is this Via's sent-by one of our listeners? */
static int via_is_ours(sip_endpoint *ep, const sip_via *v)
{
	return sip_ep_is_listener(ep, v->host, sip_via_port(v));
}

#define ROUTES_MAX 32

static int uri_has_user(sip_pl uri)
{
	sip_uri u;
	const char *err;
	return sip_uri_parse(&u, uri, &err) == 0 && u.user.n > 0;
}

/* The Route values of m in order; ROUTES_MAX + 1 when there are more than ROUTES_MAX
 * (then the set is not rewritten: the values past the array would be lost). */
static unsigned route_items(const sip_msg *m, sip_pl routes[ROUTES_MAX])
{
	unsigned n = 0;
	for (int i = m->first[SIP_HDR_ROUTE]; i >= 0; i = sip_msg_find(m, SIP_HDR_ROUTE, NULL, 0, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(m->hdrs[i].value, &pos, &item)) {
			if (n == ROUTES_MAX)
				return ROUTES_MAX + 1;
			routes[n++] = item;
		}
	}
	return n;
}

/* The Route headers of m become routes[first..n), unfolded, then <tail> when tail is not
 * empty. The values are checked before the old headers go. 1, -1 (out of memory or a value
 * refused), -2 (a value that cannot be written back). */
static int write_routes(sip_msg *m, sip_pl *routes, unsigned first, unsigned n, sip_pl tail)
{
	size_t total = tail.n + 2;
	for (unsigned i = first; i < n; i++)
		total += routes[i].n;
	char *buf = malloc(total + 1);
	if (!buf)
		return -1;
	size_t off = 0;
	for (unsigned i = first; i < n; i++) {
		size_t k = sip_unfold(routes[i], buf + off, routes[i].n);
		for (size_t j = 0; j < k; j++)
			if (buf[off + j] == '\r' || buf[off + j] == '\n' || buf[off + j] == '\0') {
				free(buf);
				return -2;   /* a Route value we could not write back */
			}
		routes[i] = sip_pl_make(buf + off, k);
		off += k;
	}
	sip_pl last = sip_pl_make(buf + off, tail.n + 2);
	buf[off] = '<';
	if (tail.n)
		memcpy(buf + off + 1, tail.p, tail.n);
	buf[off + 1 + tail.n] = '>';
	sip_msg_remove_header(m, "Route", 5);
	int r = 1;
	for (unsigned i = first; i < n && r == 1; i++)
		if (sip_msg_add_header(m, "Route", 5, routes[i].p, routes[i].n, 0))
			r = -1;
	if (r == 1 && tail.n && sip_msg_add_header(m, "Route", 5, last.p, last.n, 0))
		r = -1;
	free(buf);
	return r;
}

/* ---- Keyed Record-Route ----------------------------------------------------------------
 * Our Record-Route carries ;lsk=TAG, the first 64 bits of an HMAC-SHA256 over the dialog's
 * Call-ID and the From tag of the request that made it. An in-dialog request that comes back
 * along it names that tag in its top Route (or, after a strict router, its Request-URI);
 * the callee's requests carry that From tag in To. Anyone can write a Route naming our
 * address, nobody without the key can write one with a tag that fits the dialog: the relay
 * policy (sip.policy) relays in-dialog requests only along a Route that passes. */
#define RR_PARAM "lsk"
#define RR_PARAM_LEN 3
#define RR_TAG_LEN 16
static unsigned char rr_key[32];
static int rr_key_ready;
/* HMAC-SHA256 (RFC 2104) with the key's inner and outer blocks hashed once: a tag costs two
 * context copies and three compressions, not a MAC fetched and set up per call */
static EVP_MD_CTX *rr_inner, *rr_outer, *rr_work;

/* The tags made last, by their input: the ACK and BYE of a call (and a re-INVITE) come
 * back with the tag its INVITE's Record-Route got moments before, and an HMAC costs ~6k
 * instructions (two SHA-256 compressions and the EVP calls around them). Direct-mapped
 * by a hash of the input, which is kept whole and compared: a hit gives the bytes the
 * HMAC would. RR_CACHE_SLOTS calls at once keep theirs; an input longer than
 * RR_CACHE_INPUT (a Call-ID of 64 bytes and a tag of 31) is not kept. */
#define RR_CACHE_SLOTS 256
#define RR_CACHE_INPUT 96
struct rr_cached {
	unsigned char n;   /* input length, 0: empty slot */
	char input[RR_CACHE_INPUT];
	char tag[RR_TAG_LEN];
};
static struct rr_cached rr_cache[RR_CACHE_SLOTS];

static void rr_cache_clear(void)
{
	for (size_t i = 0; i < RR_CACHE_SLOTS; i++)
		rr_cache[i].n = 0;
}

/* The slot of "Call-ID SP tag", written to input (n bytes); NULL when it is too long. */
static struct rr_cached *rr_cache_slot(sip_pl call_id, sip_pl tag, char *input, size_t *n)
{
	*n = call_id.n + 1 + tag.n;
	if (*n > RR_CACHE_INPUT)
		return NULL;
	if (call_id.n)
		memcpy(input, call_id.p, call_id.n);
	input[call_id.n] = ' ';
	if (tag.n)
		memcpy(input + call_id.n + 1, tag.p, tag.n);
	/* (unkeyed: inputs made to share a slot only take turns in it) */
	uint64_t h = 1469598103934665603ull, w;
	size_t i = 0;
	for (; i + 8 <= *n; i += 8) {
		memcpy(&w, input + i, 8);
		h = loop_mix(h, w);
	}
	w = 0;
	if (*n > i)
		memcpy(&w, input + i, *n - i);
	h = loop_mix(loop_mix(h, w), *n);
	return &rr_cache[(h >> 32) % RR_CACHE_SLOTS];
}

static int rr_prepare(void)
{
	unsigned char ipad[64], opad[64];
	if (!rr_inner && !(rr_inner = EVP_MD_CTX_new()))
		return -1;
	if (!rr_outer && !(rr_outer = EVP_MD_CTX_new()))
		return -1;
	if (!rr_work && !(rr_work = EVP_MD_CTX_new()))
		return -1;
	for (size_t i = 0; i < sizeof ipad; i++) {
		unsigned char k = i < sizeof rr_key ? rr_key[i] : 0;
		ipad[i] = k ^ 0x36;
		opad[i] = k ^ 0x5c;
	}
	if (!EVP_DigestInit_ex(rr_inner, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(rr_inner, ipad, sizeof ipad) ||
	    !EVP_DigestInit_ex(rr_outer, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(rr_outer, opad, sizeof opad))
		return -1;
	rr_key_ready = 1;
	rr_cache_clear();
	return 0;
}

int sip_rr_key_set(const void *secret, size_t n)
{
	unsigned int len = 0;
	if (!secret || !n)
		return -1;
	if (!EVP_Digest(secret, n, rr_key, &len, EVP_sha256(), NULL) || len != sizeof rr_key)
		return -1;
	return rr_prepare();
}

static int rr_tag(sip_pl call_id, sip_pl tag, char out[RR_TAG_LEN])
{
	if (!rr_key_ready && (RAND_bytes(rr_key, sizeof rr_key) != 1 || rr_prepare()))
		return -1;
	char input[RR_CACHE_INPUT];
	size_t n;
	struct rr_cached *c = rr_cache_slot(call_id, tag, input, &n);
	if (c && c->n == n && memcmp(c->input, input, n) == 0) {
		memcpy(out, c->tag, RR_TAG_LEN);
		return 0;
	}
	unsigned char inner[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
	unsigned int ilen = 0, mlen = 0;
	/* ' ' is never in a Call-ID (a word) nor in a tag (a token) */
	if (!EVP_MD_CTX_copy_ex(rr_work, rr_inner) ||
	    !EVP_DigestUpdate(rr_work, call_id.p ? call_id.p : "", call_id.n) ||
	    !EVP_DigestUpdate(rr_work, " ", 1) ||
	    !EVP_DigestUpdate(rr_work, tag.p ? tag.p : "", tag.n) ||
	    !EVP_DigestFinal_ex(rr_work, inner, &ilen) ||
	    !EVP_MD_CTX_copy_ex(rr_work, rr_outer) ||
	    !EVP_DigestUpdate(rr_work, inner, ilen) ||
	    !EVP_DigestFinal_ex(rr_work, mac, &mlen))
		return -1;
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < RR_TAG_LEN / 2; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	if (c) {
		c->n = (unsigned char)n;
		memcpy(c->input, input, n);
		memcpy(c->tag, out, RR_TAG_LEN);
	}
	return 0;
}

size_t sip_rr_tag(sip_pl call_id, sip_pl from_tag, char out[32])
{
	return rr_tag(call_id, from_tag, out) ? 0 : RR_TAG_LEN;
}

/* Does this URI (one of ours) carry the tag of m's dialog? Either tag of m may be the one
 * of the request that was record-routed. */
static int rr_keyed(const sip_msg *m, sip_pl uri)
{
	sip_uri u;
	sip_pl v;
	const char *err;
	char want[RR_TAG_LEN];
	if (sip_uri_parse(&u, uri, &err) || !sip_param_get(u.params, RR_PARAM, &v) ||
	    v.n != RR_TAG_LEN)
		return 0;
	return (m->from_tag.n && rr_tag(m->call_id, m->from_tag, want) == 0 &&
		memcmp(want, v.p, RR_TAG_LEN) == 0) ||
	       (m->to_tag.n && rr_tag(m->call_id, m->to_tag, want) == 0 &&
		memcmp(want, v.p, RR_TAG_LEN) == 0);
}

int sip_proxy_preprocess(sip_endpoint *ep, sip_msg *m)
{
	m->route_ours = 0;
	if (m->first[SIP_HDR_ROUTE] < 0) {
		/* a strict router's copy of our Record-Route with no Route left behind it */
		if (sip_ep_is_local(ep, m->uri) && rr_keyed(m, m->uri))
			m->route_ours = SIP_ROUTE_KEYED;
		return 0;
	}
	sip_pl routes[ROUTES_MAX];
	unsigned n = route_items(m, routes);
	if (!n)
		return 0;
	/* more values than we can hold: refused (-2) only if it needs rewriting */
	int too_many = n > ROUTES_MAX;
	if (too_many)
		n = ROUTES_MAX;
	unsigned first = 0;
	int changed = 0;
	sip_addr a;
	const char *err;
	/* a strict router upstream: the Request-URI is a value we put in a Record-Route, which
	 * it copied from the Route set, ";lr" and all. Only a URI we wrote into a Record-Route
	 * is taken for one (it carries our tag), never our domain or address as such: a
	 * REGISTER sip:DOMAIN with a Route to us is for the registrar, not from a strict router */
	int strict_up = sip_ep_is_local(ep, m->uri) && !uri_has_user(m->uri) &&
			rr_keyed(m, m->uri);
	if (too_many)
		return strict_up || (sip_addr_parse(&a, routes[0], &err) == 0 &&
				     sip_ep_is_local(ep, a.uri)) ? -2 : 0;
	if (strict_up &&
	    sip_addr_parse(&a, routes[n - 1], &err) == 0 &&
	    sip_msg_set_uri(m, a.uri.p, a.uri.n) == 0) {   /* (a URI it cannot take stays) */
		n--;
		changed = 1;
		m->route_ours = SIP_ROUTE_KEYED;
	}
	/* our own address on top of the Route set: taken off. Every value of ours in a row:
	 * a phone with us as its outbound proxy puts that Route above our Record-Route's
	 * copy, and the two name us both */
	while (first < n && sip_addr_parse(&a, routes[first], &err) == 0 &&
	       sip_ep_is_local(ep, a.uri)) {
		first++;
		changed = 1;
		if (m->route_ours != SIP_ROUTE_KEYED)
			m->route_ours = rr_keyed(m, a.uri) ? SIP_ROUTE_KEYED : SIP_ROUTE_UNKEYED;
	}
	if (!changed)
		return 0;
	return write_routes(m, routes, first, n, sip_pl_make(NULL, 0));
}

/* §16.6 step 6, for next_hop: the first Route value (first_uri, without lr) becomes the
 * Request-URI, and the Request-URI goes last into the Route set. 0, or -1 with *err. */
static int strict_route(sip_msg *m, sip_pl first_uri, const char **err)
{
	sip_pl routes[ROUTES_MAX];
	unsigned n = route_items(m, routes);
	sip_pl cur = m->new_uri.n ? m->new_uri : m->uri;   /* stays: edits are never freed */
	if (n > ROUTES_MAX || write_routes(m, routes, 1, n, cur) != 1 ||
	    sip_msg_set_uri(m, first_uri.p, first_uri.n)) {
		*err = "cannot write the Route set for a strict router";
		return -1;
	}
	return 0;
}

static int scheme_ok(sip_pl u)
{
	return (u.n >= 4 && strncasecmp(u.p, "sip:", 4) == 0) ||
	       (u.n >= 5 && strncasecmp(u.p, "sips:", 5) == 0) ||
	       (u.n >= 4 && strncasecmp(u.p, "tel:", 4) == 0);
}

int sip_proxy_validate(sip_endpoint *ep, const sip_msg *m)
{
	if (!m->is_request)
		return 400;
	if (!scheme_ok(m->uri))
		return 416;
	if (m->max_forwards == 0)
		return 483;
	/* loop detection (§16.3 step 4): our branches start with z9hG4bKls + the loop hash,
	 * which is worked out only when some Via carries a branch of ours at all */
	char prefix[9 + 12];
	int hashed = 0;
	memcpy(prefix, "z9hG4bKls", 9);
	for (int i = m->first[SIP_HDR_VIA]; i >= 0; i = sip_msg_find(m, SIP_HDR_VIA, NULL, 0, i + 1)) {
		const sip_hdr *h = &m->hdrs[i];
		if (h->value.n < sizeof prefix || !memmem(h->value.p, h->value.n, prefix, 9))
			continue;   /* the common case: no relay of ours on the way */
		if (!hashed++)
			sip_proxy_loop_hash(m, prefix + 9);
		if (!memmem(h->value.p, h->value.n, prefix, sizeof prefix))
			continue;
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(h->value, &pos, &item)) {
			sip_via v;
			const char *err;
			if (sip_via_parse(&v, item, &err) == 0 && v.branch.n >= sizeof prefix &&
			    memcmp(v.branch.p, prefix, sizeof prefix) == 0 && via_is_ours(ep, &v))
				return 482;
		}
	}
	if (m->first[SIP_HDR_PROXY_REQUIRE] >= 0)
		return 420;
	return 0;
}

void sip_proxy_refuse(sip_endpoint *ep, sip_txn *st, const sip_msg *req, int code)
{
	char extra[512];
	size_t o = 0;
	if (code == 420) {
		/* §8.2.2.3: Unsupported lists what Proxy-Require asked for */
		memcpy(extra, "Unsupported: ", 13);
		o = 13;
		for (int i = req->first[SIP_HDR_PROXY_REQUIRE]; i >= 0;
		     i = sip_msg_find(req, SIP_HDR_PROXY_REQUIRE, NULL, 0, i + 1)) {
			sip_pl v = req->hdrs[i].value;
			if (o + v.n + 4 >= sizeof extra)
				break;
			if (o > 13) {
				extra[o++] = ',';
				extra[o++] = ' ';
			}
			o += sip_unfold(v, extra + o, sizeof extra - o - 3);
		}
		memcpy(extra + o, "\r\n", 3);
	}
	sip_ep_reply_code(ep, st, req, code, o ? extra : NULL);
}

/* A request for a sips: URI: its Request-URI, or its top Route, is one (§16.6 step 4) */
static int sips_request(const sip_msg *req)
{
	sip_pl ruri = req->new_uri.n ? req->new_uri : req->uri, item;
	int ri = req->first[SIP_HDR_ROUTE];
	size_t pos = 0;
	if (ruri.n > 5 && strncasecmp(ruri.p, "sips:", 5) == 0)
		return 1;
	if (ri < 0 || !sip_list_next(req->hdrs[ri].value, &pos, &item))
		return 0;
	while (item.n && (*item.p == '<' || *item.p == ' ' || *item.p == '"')) {
		if (*item.p == '"')   /* a display name: skip to the URI */
			return memmem(item.p, item.n, "<sips:", 6) != NULL;
		item.p++;
		item.n--;
	}
	return item.n > 5 && strncasecmp(item.p, "sips:", 5) == 0;
}

/* Our Record-Route value for the side of transport kind: "<sip:" sent-by ";lr;lsk=" TAG
 * [";transport=tcp|tls|ws|wss"] ">", without snprintf (hot path); "<sips:" when the
 * Request-URI or the top Route is sips: (§16.6 step 4 asks for it then; a sips: one
 * otherwise would push TLS on hops that have none). Its length, or 0. */
static size_t rr_value(sip_endpoint *ep, const sip_msg *req, sip_tp_kind kind, int family,
		       char v[160])
{
	const char *sb = sip_ep_sent_by(ep, kind, family);
	if (!sb)
		return 0;
	static const char tcp[] = ";transport=tcp", tls[] = ";transport=tls";
	size_t sl = strlen(sb), len = 0;
	if (sl + sizeof tcp + 10 + RR_PARAM_LEN + 2 + RR_TAG_LEN > 160)
		return 0;
	int sips = kind == SIP_TP_TLS && sips_request(req);
	memcpy(v, sips ? "<sips:" : "<sip:", 5 + (size_t)sips);
	len = 5 + (size_t)sips;
	memcpy(v + len, sb, sl);
	len += sl;
	memcpy(v + len, ";lr;" RR_PARAM "=", 5 + RR_PARAM_LEN);
	len += 5 + RR_PARAM_LEN;
	if (rr_tag(req->call_id, req->from_tag, v + len))
		return 0;
	len += RR_TAG_LEN;
	if (kind == SIP_TP_TCP || (kind == SIP_TP_TLS && !sips)) {
		memcpy(v + len, kind == SIP_TP_TCP ? tcp : tls, sizeof tcp - 1);
		len += sizeof tcp - 1;
	} else if (sip_tp_ws(kind)) {
		const char *t = kind == SIP_TP_WS ? ";transport=ws" : ";transport=wss";
		memcpy(v + len, t, strlen(t));
		len += strlen(t);
	}
	v[len++] = '>';
	return len;
}

int sip_proxy_prepare(sip_endpoint *ep, sip_msg *req, sip_tp_kind kind, int family, int rr)
{
	if (sip_msg_decrement_max_forwards(req) < 0)   /* §16.6 step 3 */
		return -1;
	if (rr < 0)
		rr = req->method_id == SIP_METHOD_INVITE || req->method_id == SIP_METHOD_SUBSCRIBE ||
		     req->method_id == SIP_METHOD_REFER;
	if (!rr || req->to_tag.n)
		return 0;
	/* §16.6 step 4: Record-Route with our address on the transport it came in on */
	char v[160];
	size_t len = rr_value(ep, req, kind, family, v);
	if (!len)
		return -1;
	return sip_msg_add_header(req, "Record-Route", 12, v, len, 1);
}

/* RFC 5658 (double Record-Routing): a request that leaves on another transport than it
 * came on (WS in, UDP out) gets a second Record-Route of ours above the first, for the
 * outgoing side, when the top one is the one we wrote for the incoming side. The UAS then
 * reaches us on its transport and the UAC on its own. */
static int double_record_route(sip_endpoint *ep, sip_msg *m, sip_tp_kind in, int in_family,
			       const sip_dest *out)
{
	int ri = m->first[SIP_HDR_RECORD_ROUTE];
	char mine[160], v[160];
	size_t ml, len;
	if (ri < 0 || in == out->kind)
		return 0;
	ml = rr_value(ep, m, in, in_family, mine);
	if (!ml || m->hdrs[ri].value.n != ml || memcmp(m->hdrs[ri].value.p, mine, ml) != 0)
		return 0;
	len = rr_value(ep, m, out->kind, out->addr.ss_family, v);
	if (!len)
		return -1;
	return sip_msg_add_header(m, "Record-Route", 12, v, len, 1);
}

/* §16.6 steps 6 and 7: the next hop is the first Route (loose routing), else the
 * Request-URI (o->next_hop overrides both). A first Route without lr names a strict router,
 * which wants its own URI as the Request-URI: m is rewritten so (strict_route), and goes
 * there all the same. 0, or -1 with *err. */
static int next_hop_list(sip_endpoint *ep, sip_msg *m, const sip_relay_opts *o, sip_dest *d,
			 unsigned max, unsigned *n, const char **err)
{
	sip_pl target = m->new_uri.n ? m->new_uri : m->uri, item, lr;
	int ri = m->first[SIP_HDR_ROUTE];
	size_t pos = 0;
	sip_addr a;
	sip_uri u;
	if (ri >= 0 && sip_list_next(m->hdrs[ri].value, &pos, &item) &&
	    sip_addr_parse(&a, item, err) == 0) {
		target = a.uri;
		if (sip_uri_parse(&u, a.uri, err) == 0 && u.is_sip &&
		    !sip_param_get(u.params, "lr", &lr) && strict_route(m, a.uri, err))
			return -1;
	}
	int r = o->next_hop ? sip_ep_resolve_list(ep, o->next_hop, o->next_hop_len, d, max, n, err) :
			      sip_ep_resolve_list(ep, target.p, target.n, d, max, n, err);
	/* §26.2.2: a request for a sips: URI goes over TLS on every hop, or not at all */
	sip_pl ruri = m->new_uri.n ? m->new_uri : m->uri;
	if (r == 0 && ruri.n > 5 && strncasecmp(ruri.p, "sips:", 5) == 0) {
		unsigned k = 0;
		for (unsigned i = 0; i < *n; i++)
			if (d[i].kind == SIP_TP_TLS)
				d[k++] = d[i];
		*n = k;
		if (!k) {
			*err = SIP_ERR_SIPS_PLAIN;
			return -1;
		}
	}
	return r;
}

static int next_hop(sip_endpoint *ep, sip_msg *m, const sip_relay_opts *o, sip_dest *d,
		    const char **err)
{
	unsigned n;
	return next_hop_list(ep, m, o, d, 1, &n, err);
}

static int stateless_response(void *arg, const sip_msg *res);

int sip_proxy_relay_stateless(sip_endpoint *ep, sip_txn *st, sip_msg *req, sip_pl target,
			      const sip_relay_opts *o, const char **err)
{
	sip_pl cur = req->new_uri.n ? req->new_uri : req->uri;
	if (target.n && !sip_pl_eq(cur, target) && sip_msg_set_uri(req, target.p, target.n)) {
		*err = "bad target";
		return -1;
	}
	sip_dest d;
	if (next_hop(ep, req, o, &d, err))
		return -1;
	int vi = req->first[SIP_HDR_VIA];
	size_t pos = 0;
	sip_pl top;
	sip_via up;
	if (vi < 0 || !sip_list_next(req->hdrs[vi].value, &pos, &top) || sip_via_parse(&up, top, err)) {
		*err = "no Via";
		return -1;
	}
	char branch[SL_BRANCH_LEN + 1];
	stateless_branch(&up, req, branch);
	if (sip_ep_send_stateless(ep, req, &d, SIP_VIA_PUSH, branch, err))
		return -1;
	sip_ep_set_stray(ep, stateless_response, ep);   /* responses to it may come, §16.11 */
	/* a stateless proxy keeps no transaction: the request's ends unanswered, and a
	 * retransmission comes to the TU again and goes out again with the same branch */
	if (st && !sip_txn_is_client(st))
		sip_txn_terminate(st);
	return 0;
}

/* Where a response goes from the Via below ours (§18.2.2, RFC 3581): over TCP to the
 * received address (a connection to it is reused), over UDP to maddr, else received, else
 * the sent-by host; to the rport value, else the sent-by port. */
static int via_dest(sip_endpoint *ep, const sip_via *v, sip_dest *d, const char **err)
{
	int tls = sip_pl_casecmp(v->transport, "TLS");
	int ws = sip_pl_casecmp(v->transport, "WS"), wss = sip_pl_casecmp(v->transport, "WSS");
	int tcp = tls || ws || wss || sip_pl_casecmp(v->transport, "TCP");
	if (!tcp && !sip_pl_casecmp(v->transport, "UDP")) {
		*err = "unsupported transport";
		return -1;
	}
	/* maddr only as an IP literal: a name would block the loop in the resolver */
	struct sockaddr_storage ma;
	socklen_t mal;
	int maddr_ok = !tcp && v->maddr.n && sip_ip_literal(v->maddr, 0, &ma, &mal) == 0;
	sip_pl host = maddr_ok ? v->maddr : v->received.n ? v->received : v->host;
	int port = v->rport > 0 ? v->rport : v->port ? v->port : tls ? SIP_TLS_PORT : 5060;
	char uri[300];
	int v6 = host.p[0] != '[' && memchr(host.p, ':', host.n) != NULL;   /* a bare received */
	if (!host.n || host.n > 256) {
		*err = "bad host";
		return -1;
	}
	int n = snprintf(uri, sizeof uri, "sip:%s%.*s%s:%d%s", v6 ? "[" : "", (int)host.n, host.p,
			 v6 ? "]" : "", port, tls ? ";transport=tls" : ws ? ";transport=ws" :
			 wss ? ";transport=wss" : tcp ? ";transport=tcp" : "");
	return sip_ep_resolve(ep, uri, (size_t)n, d, err);
}

/* §16.11: a response no client transaction takes, to a request we relayed statelessly
 * (our Via on top with the branch we gave it), goes on to the next Via without ours: 1 when
 * it was ours (forwarded, or dropped when it could not be), 0 when not. The endpoint's
 * stray-response hook, from the first stateless relay on. */
static int stateless_response(void *arg, const sip_msg *res)
{
	sip_endpoint *ep = arg;
	const char *err;
	if (sip_ep_closing(ep) || res->branch.n != SL_BRANCH_LEN ||
	    memcmp(res->branch.p, SL_COOKIE, SL_COOKIE_LEN) != 0)
		return 0;
	sip_via v[2];   /* ours, and the client's below it */
	unsigned n = 0;
	for (int i = res->first[SIP_HDR_VIA]; i >= 0 && n < 2;
	     i = sip_msg_find(res, SIP_HDR_VIA, NULL, 0, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		while (n < 2 && sip_list_next(res->hdrs[i].value, &pos, &item))
			if (sip_via_parse(&v[n++], item, &err))
				return 0;
	}
	/* §16.7 step 3 holds here too: with no Via left the response was for us */
	if (n < 2 || !via_is_ours(ep, &v[0]))
		return 0;
	char branch[SL_BRANCH_LEN + 1];
	stateless_branch(&v[1], res, branch);
	if (memcmp(branch, res->branch.p, SL_BRANCH_LEN) != 0)
		return 0;   /* not the branch we gave that client's request */
	sip_dest d;
	sip_msg c;
	sip_hdr slots[SIP_MSG_SLOTS];
	if (via_dest(ep, &v[1], &d, &err)) {
		sip_logf(sip_ep_log(ep), "stateless relay: cannot forward %d: %s", res->status,
			 err);
		return 1;   /* §16.9: a response that cannot be forwarded is dropped */
	}
	if (without_top_via(&c, slots, res))
		return 1;
	size_t len;
	char *buf = sip_msg_print_alloc(&c, 0, &len);
	if (buf && sip_dest_send(sip_ep_transport(ep), &d, buf, len, &err))
		sip_logf(sip_ep_log(ep), "stateless relay: cannot forward %d: %s", res->status,
			 err);
	free(buf);
	sip_msg_free(&c);
	return 1;
}

/* RFC 3327: a target registered through edge proxies is reached through them, its Path on
 * top of the branch's Route set. 0, or -1 with *err. */
static int binding_route(sip_msg *m, const sip_relay_opts *o, unsigned i, const char **err)
{
	if (!o->routes || !o->routes[i].n)
		return 0;
	if (sip_msg_add_header(m, "Route", 5, o->routes[i].p, o->routes[i].n, 1)) {
		*err = "bad Path of the binding";
		return -1;
	}
	return 0;
}

/* A target behind NAT (RFC 3581's received/rport, the binding's source) or on a connection it
 * opened (RFC 5626's flow): *d is where it registered from, when the branch has no Route of
 * its own and, over TCP, that connection is still open. 1 when *d was set, else 0 (the
 * usual next hop then). */
static int binding_flow(sip_endpoint *ep, const sip_msg *m, const sip_relay_opts *o, unsigned i,
			sip_dest *d)
{
	const char *err;
	if (!o->flows || !o->flows[i].n || o->next_hop || m->first[SIP_HDR_ROUTE] >= 0)
		return 0;
	if (sip_ep_resolve(ep, o->flows[i].p, o->flows[i].n, d, &err))
		return 0;
	return d->kind == SIP_TP_UDP || sip_tp_has_conn(sip_ep_transport(ep), (const struct sockaddr *)&d->addr);
}

uint64_t sip_proxy_relay(sip_endpoint *ep, sip_txn *st, sip_msg *req, const sip_pl *targets,
			 unsigned n, const sip_relay_opts *o, int *done, const char **err)
{
	*done = 0;
	if (!st || sip_txn_user_get(st, NULL) == &server_user || !sip_txn_unanswered(st)) {
		/* answered already, by a CANCEL's 487 for one (§16.10: no branch may start) */
		*err = "not a server transaction that can be relayed";
		return 0;
	}
	if (n == 0) {
		*err = "no target";
		return 0;
	}
	sip_relay *r = calloc(1, sizeof *r + n * sizeof r->br[0]);
	if (!r) {
		*err = "out of memory";
		return 0;
	}
	r->ep = ep;
	r->id = sip_ep_new_id(ep);
	r->up = *sip_txn_dest(st);
	r->invite = (uint8_t)sip_txn_is_invite(st);
	r->done = o->done;
	r->branch = o->branch;
	r->ud = o->ud;
	r->keep_failure = (uint8_t)(o->keep_failure != 0);
	r->refs = 1;   /* ours, until the branches are started */
	r->deadline = sip_loop_now(sip_ep_loop(ep)) + 64 * (uint64_t)sip_ep_config_get(ep)->t1;
	sip_timer_init(&r->t_timeout);

	char branch[9 + 12 + 1 + 8 + 1];
	memcpy(branch, "z9hG4bKls", 9);
	sip_proxy_loop_hash(req, branch + 9);
	branch[21] = '.';
	branch[30] = 0;

	r->st_user = sip_txn_user_get(st, &r->st_arg);
	sip_txn_set_user(st, &server_user, r);
	sip_txn_set_proxied(st, 1);
	r->st = st;
	r->refs++;
	unsigned usable = 0;
	const char *why = "no usable target";
	for (unsigned i = 0; i < n; i++) {
		sip_msg c, *m = req;
		sip_hdr slots[SIP_MSG_SLOTS];
		if (i + 1 < n || o->keep_failure) {
			if (sip_msg_clone(&c, slots, SIP_MSG_SLOTS, req, &why))
				continue;
			m = &c;
		}
		sip_pl cur = m->new_uri.n ? m->new_uri : m->uri;
		sip_dest d[RELAY_ALTS_MAX];
		unsigned nd = 0, k = 0;
		int ok = (sip_pl_eq(cur, targets[i]) || sip_msg_set_uri(m, targets[i].p, targets[i].n) == 0) &&
			 binding_route(m, o, i, &why) == 0;
		if (ok && binding_flow(ep, m, o, i, &d[0]))
			nd = 1;
		else if (ok)
			ok = next_hop_list(ep, m, o, d, RELAY_ALTS_MAX, &nd, &why) == 0;
		if (ok) {
			relay_branch *b = &r->br[r->nbranches];
			b->target = i;
			usable++;
			sip_txn *ct = NULL;
			b->r = r;
			/* a named next hop: its addresses in turn until one takes the request, the
			 * rest kept for §4.3 failover */
			if (double_record_route(ep, m, r->up.kind, r->up.addr.ss_family, &d[0])) {
				why = "out of memory";
				ok = 0;
				k = nd;
			}
			while (!ct && k < nd) {
				sip_unique_hex(branch + 22, 8);
				ct = sip_ep_request_for(ep, m, &d[k], SIP_VIA_PUSH, branch, &branch_user,
							b, &why);
				if (!ct && k + 1 < nd) {
					sip_ep_avoid(ep, &d[k]);
					drop_own_via(m, branch);   /* the next try pushes its own */
				}
				k++;
			}
			size_t outlen;
			const char *out = ct && k < nd ? sip_txn_out(ct, &outlen) : NULL;
			if (out && (b->alts = malloc((nd - k) * sizeof d[0])) != NULL &&
			    (b->req = malloc(outlen)) != NULL) {
				memcpy(b->alts, &d[k], (nd - k) * sizeof d[0]);
				b->nalts = (uint8_t)(nd - k);
				memcpy(b->req, out, outlen);
				b->reqlen = outlen;
			}
			if (ct) {
				b->ct = ct;
				r->live++;
				r->refs++;
			} else {
				b->done = 1;
				sip_logf(sip_ep_log(ep), "relay to %.*s failed: %s", (int)targets[i].n,
					 targets[i].p, why);
			}
			r->nbranches++;
		}
		if (m == &c)
			sip_msg_free(&c);
	}
	if (!usable) {
		*err = why;
		sip_txn_set_user(st, r->st_user, r->st_arg);
		r->st = NULL;
		r->refs = 1;
		relay_unref(r);
		return 0;
	}
	uint64_t id = r->id;
	if (r->live == 0) {
		/* every branch failed at once: 408 upstream, and nothing to wait for */
		r->finished = 1;
		*done = 1;
		if (r->keep_failure) {
			release_st(r);   /* nothing went out: the TU tries elsewhere or answers */
		} else {
			if (req->branch.n == 30 && memcmp(req->branch.p, branch, 22) == 0)
				sip_msg_remove_top_via(req);   /* the Via our failed branch pushed */
			sip_txn_server_reply_code(st, req, 408, NULL);
		}
		detach(r);
	} else if (o->timeout_ms && r->invite) {
		sip_timer_start(sip_ep_loop(ep), &r->t_timeout, o->timeout_ms, timeout_handler, r);
	} else if (r->invite && sip_ep_config_get(ep)->timer_c) {
		/* §16.6 step 11: Timer C (minutes: a lazy lane, a tenth of a second either way) */
		r->timer_c = 1;
		sip_timer_start_lazy(sip_ep_loop(ep), &r->t_timeout, sip_ep_config_get(ep)->timer_c,
				     timeout_handler, r);
	}
	relay_unref(r);
	return id;
}
