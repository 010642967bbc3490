/* lsip_ep.c: the loop, its timers and the endpoint as Lua userdata.
 * Core hooks become calls of Lua handler functions, always under lua_pcall. */
#include "lsip.h"
#include "ratelimit.h"
#include "proxy.h"
#include "dns.h"
#include "tls.h"
#include "uri.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LSIP_TIMER_MT "sip.timer"
#define LSIP_EP_MT "sip.endpoint"
#define LOOP_KEY "sip.loop.instance"

typedef struct lsip_timer {
	sip_timer t;
	lsip_loop *lp;
	int ref;      /* registry ref to this userdata while active */
} lsip_timer;

typedef struct lsip_ep {
	uint32_t magic;   /* LSIP_EP_MAGIC */
	sip_endpoint *ep;
	lsip_loop *lp;
	int handlers;   /* registry ref of the handler table */
	/* ep:set_router: requests no handler takes go straight to router(req) in a pooled
	 * coroutine, without the Lua dispatcher (see fast_path) */
	int router, epobj, pool;
	uint32_t handled;   /* bit per sip_method with a handler of its own (bit 0: others) */
	int has_dialogs;    /* the Lua side holds UA dialogs: in-dialog requests go to it */
	struct held *held;  /* in-dialog requests waiting for a DNS answer (relay_in_core) */
	int relay_in_dialog;   /* the router's in-dialog requests are relayed by the core */
	/* the last source formatted: requests come from the same few peers */
	sip_tp_kind src_kind;
	socklen_t src_len;
	struct sockaddr_storage src_peer;
	char src_str[96];
} lsip_ep;

/* Log a Lua error from a callback without unwinding through C. */
static void report(lua_State *L, const char *where)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "luasip: error in %s: %s\n", where, msg ? msg : "?");
	lua_pop(L, 1);
}

/* --- loop ----------------------------------------------------------------------------- */

static int l_loop(lua_State *L)
{
	if (lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY) == LUA_TUSERDATA)
		return 1;
	lua_pop(L, 1);
	lsip_loop *lp = lua_newuserdatauv(L, sizeof *lp, 0);
	memset(lp, 0, sizeof *lp);
	lp->loop = sip_loop_new();
	if (!lp->loop)
		return luaL_error(L, "cannot create the event loop");
	luaL_setmetatable(L, LSIP_LOOP_MT);
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
	return 1;
}

static lsip_loop *check_loop(lua_State *L, int i)
{
	return lsip_check_loop(L, i);
}

lsip_loop *lsip_loop_of(lua_State *L)
{
	l_loop(L);
	lsip_loop *lp = check_loop(L, -1);
	lua_pop(L, 1);   /* the registry keeps it */
	if (!lp->stepping)
		lp->L = L;
	return lp;
}

/* loop:step(timeout_ms) -> callbacks run. -1 waits for the next event. */
static int loop_step(lua_State *L)
{
	lsip_loop *lp = check_loop(L, 1);
	int ms = (int)luaL_optinteger(L, 2, -1);
	if (lp->stepping)
		return luaL_error(L, "the loop is already running (wait in a coroutine instead)");
	lua_State *prev = lp->L;
	lp->L = L;
	lp->stepping = 1;
	int n = sip_loop_step(lp->loop, ms);
	lp->stepping = 0;
	lp->L = prev ? prev : L;
	lua_pushinteger(L, n);
	return 1;
}

static int loop_fd(lua_State *L)
{
	lua_pushinteger(L, sip_loop_fd(check_loop(L, 1)->loop));
	return 1;
}

/* loop:timeout() -> ms until the next timer, or nil */
static int loop_timeout(lua_State *L)
{
	int t = sip_loop_timeout(check_loop(L, 1)->loop);
	if (t < 0)
		return 0;
	lua_pushinteger(L, t);
	return 1;
}

static int loop_now(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)sip_loop_now(check_loop(L, 1)->loop));
	return 1;
}

static void timer_fire(void *arg)
{
	lsip_timer *tm = arg;
	lua_State *L = tm->lp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, tm->ref);
	luaL_unref(L, LUA_REGISTRYINDEX, tm->ref);
	tm->ref = LUA_NOREF;
	lua_getiuservalue(L, -1, 1);
	lua_remove(L, -2);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK)
		report(L, "timer");
}

/* loop:timer(ms, fn) -> handle; fn runs once after ms (on the stepping thread). */
static int loop_timer(lua_State *L)
{
	lsip_loop *lp = check_loop(L, 1);
	lua_Integer ms = luaL_checkinteger(L, 2);
	luaL_checktype(L, 3, LUA_TFUNCTION);
	lsip_timer *tm = lua_newuserdatauv(L, sizeof *tm, 1);
	sip_timer_init(&tm->t);
	tm->lp = lp;
	luaL_setmetatable(L, LSIP_TIMER_MT);
	lua_pushvalue(L, 3);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, -1);
	tm->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	sip_timer_start(lp->loop, &tm->t, ms < 0 ? 0 : (uint64_t)ms, timer_fire, tm);
	return 1;
}

static int timer_cancel(lua_State *L)
{
	lsip_timer *tm = luaL_checkudata(L, 1, LSIP_TIMER_MT);
	sip_timer_stop(tm->lp->loop, &tm->t);
	if (tm->ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, tm->ref);
		tm->ref = LUA_NOREF;
	}
	return 0;
}

static int timer_gc(lua_State *L)
{
	lsip_timer *tm = luaL_checkudata(L, 1, LSIP_TIMER_MT);
	sip_timer_stop(tm->lp->loop, &tm->t);
	return 0;
}

/* --- endpoint hooks ------------------------------------------------------------------- */

/* Push handler `name` of ep; returns 0 when there is none (nothing pushed). */
static int push_handler(lua_State *L, lsip_ep *e, const char *name)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->handlers);
	if (lua_getfield(L, -1, name) != LUA_TFUNCTION) {
		lua_pop(L, 2);
		return 0;
	}
	lua_remove(L, -2);
	return 1;
}

static void call_handler(lua_State *L, int nargs, const char *name)
{
	if (lua_pcall(L, nargs, 0, 0) != LUA_OK)
		report(L, name);
}

/* A request's sip_tp_src travels with its message, after its header slots (a blob of
 * lsip_msg_push_clone): kind, listener, conn_id, then each address with its length; 40
 * bytes over IPv4 rather than the ~280 of the struct. */
#define SRC_FIXED 6   /* kind, listener + 1, conn_id */
#define SRC_BLOB_MAX (SRC_FIXED + 2 + 2 * sizeof(struct sockaddr_storage))

static size_t src_blob(const sip_tp_src *src, unsigned char *b)
{
	size_t n = 0;
	b[n++] = (unsigned char)src->kind;
	b[n++] = (unsigned char)(src->listener + 1);   /* -1 (none) .. 254 */
	memcpy(b + n, &src->conn_id, 4);
	n += 4;
	b[n++] = (unsigned char)src->peerlen;
	memcpy(b + n, &src->peer, src->peerlen);
	n += src->peerlen;
	b[n++] = (unsigned char)src->locallen;
	memcpy(b + n, &src->local, src->locallen);
	n += src->locallen;
	return n;
}

static int read_src_blob(const char *s, size_t n, sip_tp_src *src)
{
	const unsigned char *b = (const unsigned char *)s;
	memset(src, 0, sizeof *src);
	if (n < SRC_FIXED + 2)
		return -1;
	src->kind = (sip_tp_kind)b[0];
	src->listener = (int)b[1] - 1;
	memcpy(&src->conn_id, b + 2, 4);
	size_t o = SRC_FIXED;
	src->peerlen = b[o++];
	if (src->peerlen > sizeof src->peer || o + src->peerlen + 1 > n)
		return -1;
	memcpy(&src->peer, b + o, src->peerlen);
	o += src->peerlen;
	src->locallen = b[o++];
	if (src->locallen > sizeof src->local || o + src->locallen != n)
		return -1;
	memcpy(&src->local, b + o, src->locallen);
	return 0;
}

/* Push a message userdata owning a copy of m. */
static int push_copy(lua_State *L, const sip_msg *m, const sip_tp_src *src)
{
	unsigned char b[SRC_BLOB_MAX];
	size_t n = src ? src_blob(src, b) : 0;
	return lsip_msg_push_clone(L, m, b, n);
}

static void push_src(lua_State *L, lsip_ep *e, const sip_tp_src *src)
{
	if (src->kind != e->src_kind || src->peerlen != e->src_len ||
	    memcmp(&src->peer, &e->src_peer, src->peerlen) != 0) {
		sip_addr_format(src->kind, (const struct sockaddr *)&src->peer, e->src_str,
				sizeof e->src_str);
		e->src_kind = src->kind;
		e->src_len = src->peerlen;
		memcpy(&e->src_peer, &src->peer, src->peerlen);
	}
	lua_pushstring(L, e->src_str);
}

/* req.tls for a request that came over TLS: { verified =, subject =, sans = { "DNS:x",
 * "IP:x", "URI:x" ... } } from the peer's certificate ({ verified = false } without one).
 * The message is at index msg. */
static void attach_tls(lua_State *L, lsip_ep *e, int msg, const sip_tp_src *src)
{
	char subject[512], sans[1024];
	int verified;
	if (src->kind != SIP_TP_TLS ||
	    sip_tp_tls_peer(sip_ep_transport(e->ep), src->conn_id, &verified, subject,
			    sizeof subject, sans, sizeof sans) < 0)
		return;
	lua_createtable(L, 0, 3);
	lua_pushboolean(L, verified);
	lua_setfield(L, -2, "verified");
	if (subject[0]) {
		lua_pushstring(L, subject);
		lua_setfield(L, -2, "subject");
	}
	lua_newtable(L);
	int i = 0;
	for (const char *p = sans; *p;) {
		const char *q = strstr(p, ", ");
		size_t n = q ? (size_t)(q - p) : strlen(p);
		lua_pushlstring(L, p, n);
		lua_rawseti(L, -2, ++i);
		p += n + (q ? 2 : 0);
	}
	lua_setfield(L, -2, "sans");
	lua_setfield(L, msg, "tls");
}

/* A request the router takes with nothing for the Lua dispatcher to do first: no UA
 * dialog it could belong to (no To tag, or no dialogs at all) and no handler of its own for
 * the method. §16.4 preprocessing is done here (run_router). */
static int fast_path(const lsip_ep *e, const sip_txn *st, const sip_msg *m)
{
	return e->router != LUA_NOREF && (st || m->method_id == SIP_METHOD_ACK) &&
	       (m->to_tag.n == 0 || !e->has_dialogs) && !(e->handled & (1u << m->method_id));
}

#define ROUTER_POOL_MAX 256

/* §16.4 on a request about to be routed: 0, or -1 after answering it 400 (a malformed
 * Route) or 500 (no memory). */
static int preprocess_or_answer(sip_endpoint *ep, sip_txn *st, sip_msg *m)
{
	int pre = sip_proxy_preprocess(ep, m);
	if (pre >= 0)
		return 0;
	if (st)
		sip_ep_reply_code(ep, st, m, pre == -2 ? 400 : 500, NULL);
	return -1;
}

/* §16.3: 0, or the code it was refused with, after answering it (an ACK gets no answer). */
static int validate_or_refuse(sip_endpoint *ep, sip_txn *st, const sip_msg *m)
{
	int code = sip_proxy_validate(ep, m);
	if (code && st && m->method_id != SIP_METHOD_ACK)
		sip_proxy_refuse(ep, st, m, code);
	return code;
}

/* A request from a WebSocket client whose Contact host is .invalid (RFC 7118 §5.2): its
 * connection takes that name, so that requests in the dialog find it (sip_tp_ws_named). */
static void name_ws_client(sip_endpoint *ep, const sip_msg *m, uint32_t conn_id)
{
	int ci = m->first[SIP_HDR_CONTACT];
	size_t pos = 0;
	sip_pl item;
	sip_addr a;
	sip_uri u;
	const char *err;
	if (ci < 0 || !sip_list_next(m->hdrs[ci].value, &pos, &item) ||
	    sip_addr_parse(&a, item, &err) || sip_uri_parse(&u, a.uri, &err) || u.host.n <= 8 ||
	    strncasecmp(u.host.p + u.host.n - 8, ".invalid", 8) != 0)
		return;
	sip_tp_ws_name(sip_ep_transport(ep), conn_id, u.host.p, u.host.n);
}

/* Max-Forwards and Record-Route (rr: -1 for the method's default) for the transport the
 * request came on; -1 when out of memory. */
static int prepare_relay(sip_endpoint *ep, sip_txn *st, sip_msg *m, int rr)
{
	sip_tp_kind kind = st ? sip_txn_dest(st)->kind : SIP_TP_UDP;
	int family = st ? sip_txn_dest(st)->addr.ss_family : AF_INET;
	if (sip_tp_ws(kind))
		name_ws_client(ep, m, sip_txn_dest(st)->conn_id);
	return sip_proxy_prepare(ep, m, kind, family, rr);
}

/* An in-dialog request relay_in_core could not send yet: its next hop is a name the
 * resolver has not cached. The name is looked up in the loop, then the request relayed. */
typedef struct held {
	struct held *prev, *next;
	lsip_ep *e;
	uint64_t st_id;      /* its server transaction (0: an ACK, which has none) */
	uint64_t lookup;
	char *buf;           /* the request as it came */
	size_t len;
	int starting, answered;   /* the answer came inside sip_dns_locate */
	int code;                 /* 0: relay it; 404 or 503: answer it so */
} held;

static void held_free(held *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		h->e->held = h->next;
	if (h->next)
		h->next->prev = h->prev;
	free(h->buf);
	free(h);
}

static int relay_in_core(lsip_ep *e, sip_txn *st, const sip_msg *m, int may_wait);

/* The lookup is over: relay the request (the answer is cached now), or answer it 404 when
 * nothing is there, 503 when the lookup failed (§4); then h goes. */
static void held_run(held *h)
{
	lsip_ep *e = h->e;
	sip_endpoint *ep = e->ep;
	sip_txn *st = h->st_id ? sip_ep_txn(ep, h->st_id) : NULL;
	sip_msg m;
	const char *perr;
	if ((!h->st_id || (st && sip_txn_unanswered(st))) &&
	    sip_msg_parse(&m, h->buf, h->len, 0, 0, NULL, &perr) == 0) {
		if (!h->code)
			relay_in_core(e, st, &m, 0);
		else if (st)
			sip_ep_reply_code(ep, st, &m, h->code, NULL);
		sip_msg_free(&m);
	}
	held_free(h);
}

static void held_located(void *arg, const sip_dns_target *t, unsigned n, const char *err)
{
	held *h = arg;
	h->code = n ? 0 : err && (strncmp(err, "no such", 7) == 0 || strncmp(err, "no address", 10) == 0) ?
		  404 : 503;
	if (h->starting)
		h->answered = 1;   /* inside sip_dns_locate: hold_for_dns runs it once that returns */
	else
		held_run(h);
}

/* Hold m until its next hop (the top Route, else the Request-URI, of pre: m as §16.4 left
 * it) is looked up: 0, or -1. */
static int hold_for_dns(lsip_ep *e, sip_txn *st, const sip_msg *m, const sip_msg *pre)
{
	sip_dns *dns = sip_ep_dns(e->ep);
	sip_pl hop = pre->new_uri.n ? pre->new_uri : pre->uri, item;
	size_t pos = 0;
	sip_addr a;
	const char *err;
	int ri = pre->first[SIP_HDR_ROUTE];
	if (ri >= 0 && sip_list_next(pre->hdrs[ri].value, &pos, &item) &&
	    sip_addr_parse(&a, item, &err) == 0)
		hop = a.uri;
	held *h = dns ? calloc(1, sizeof *h) : NULL;
	if (!h || !(h->buf = sip_msg_print_alloc(m, 0, &h->len))) {
		free(h);
		return -1;
	}
	h->e = e;
	h->st_id = st ? sip_txn_id(st) : 0;
	h->next = e->held;
	if (e->held)
		e->held->prev = h;
	e->held = h;
	char uri[512];
	if (hop.n >= sizeof uri) {
		held_free(h);
		return -1;
	}
	memcpy(uri, hop.p, hop.n);   /* (hop points into pre, which the caller frees) */
	uri[hop.n] = 0;
	h->starting = 1;
	h->lookup = sip_dns_locate(dns, uri, hop.n, SIP_DNS_UDP | SIP_DNS_TCP, held_located, h, &err);
	h->starting = 0;
	if (!h->lookup) {
		held_free(h);
		return -1;
	}
	if (h->answered)
		held_run(h);
	return 0;
}

/* ep_close: what waits for DNS is dropped. */
static void drop_held(lsip_ep *e)
{
	sip_dns *dns = e->ep ? sip_ep_dns(e->ep) : NULL;
	while (e->held) {
		if (dns)
			sip_dns_cancel(dns, e->held->lookup);
		held_free(e->held);
	}
}

/* What req:relay(nil, { wait = false }) does, for a request in a dialog (a To tag) that no
 * script sees: §16.4 (done by the caller's preprocess on its copy), §16.3, Max-Forwards,
 * then along the Route set or to the Request-URI, statelessly for an ACK. The usual first
 * step of a route script (Kamailio's loose_route), for ep:route(fn, { relay_in_dialog }).
 * Only along our Record-Route of its dialog (its tag checked by §16.4 preprocessing): 1 when
 * relayed or answered, 0 when not, and the router decides (a contact it holds, or a
 * refusal), since anyone can write a To tag. A next hop named by a name the resolver has
 * not cached waits for its lookup (may_wait), then goes on (held_run).
 */
static int relay_in_core(lsip_ep *e, sip_txn *st, const sip_msg *m, int may_wait)
{
	sip_endpoint *ep = e->ep;
	sip_msg c;
	sip_hdr slots[SIP_MSG_SLOTS];
	const char *err;
	if (sip_msg_clone(&c, slots, SIP_MSG_SLOTS, m, &err)) {
		if (st)
			sip_ep_reply_code(ep, st, m, 500, NULL);
		return 1;
	}
	if (preprocess_or_answer(ep, st, &c))
		goto out;
	if (c.route_ours != SIP_ROUTE_KEYED) {
		sip_msg_free(&c);
		return 0;
	}
	if (validate_or_refuse(ep, st, &c))
		goto out;
	if (prepare_relay(ep, st, &c, -1)) {
		if (st)
			sip_ep_reply_code(ep, st, &c, 500, NULL);
		goto out;
	}
	sip_relay_opts o;
	memset(&o, 0, sizeof o);
	if (!st || c.method_id == SIP_METHOD_ACK) {
		if (sip_proxy_relay_stateless(ep, NULL, &c, sip_pl_make(NULL, 0), &o, &err) &&
		    err == sip_dns_uncached && may_wait)
			hold_for_dns(e, NULL, m, &c);
		goto out;
	}
	sip_pl target = c.uri;
	int done;
	if (!sip_proxy_relay(ep, st, &c, &target, 1, &o, &done, &err)) {
		if (err != sip_dns_uncached || !may_wait || hold_for_dns(e, st, m, &c))
			sip_ep_reply_code(ep, st, &c, 400, NULL);   /* a target we cannot reach */
	}
out:
	sip_msg_free(&c);
	return 1;
}

/* router(req) in a coroutine of the pool; one that waits (yields) is kept alive by whatever
 * will wake it, and one that returns goes back to the pool. */
static void run_router(lua_State *L, lsip_ep *e, sip_txn *st, const sip_msg *m,
		       const sip_tp_src *src)
{
	int top = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->pool);
	lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
	lua_State *co;
	if (n > 0) {
		lua_rawgeti(L, -1, n);
		co = lua_tothread(L, -1);
		lua_pushnil(L);
		lua_rawseti(L, -3, n);
		n--;
	} else {
		co = lua_newthread(L);
	}
	lua_rawgeti(co, LUA_REGISTRYINDEX, e->router);
	if (push_copy(co, m, src)) {
		lua_settop(co, 0);
		lua_settop(L, top);
		return;
	}
	lua_rawgeti(co, LUA_REGISTRYINDEX, e->epobj);
	push_src(co, e, src);
	lsip_msg_attach(co, 2, 3, st ? (lua_Integer)sip_txn_id(st) : 0, 4);
	lua_settop(co, 2);
	attach_tls(co, e, 2, src);
	if (preprocess_or_answer(e->ep, st, lsip_checkmsg(co, 2))) {
		lua_settop(co, 0);
		lua_settop(L, top);
		return;
	}
	lua_pushboolean(co, m->method_id == SIP_METHOD_INVITE);   /* a CANCEL may look it up */
	int nres;
	int status = lua_resume(co, L, 2, &nres);
	if (status == LUA_OK) {
		lua_settop(co, 0);
		if (n < ROUTER_POOL_MAX)
			lua_rawseti(L, -2, n + 1);   /* the thread, back to the pool */
	} else if (status != LUA_YIELD) {
		lua_xmove(co, L, 1);
		report(L, "router");
	}
	lua_settop(L, top);
}

static void hook_request(void *ud, sip_txn *st, const sip_msg *m, const sip_tp_src *src)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (fast_path(e, st, m)) {
		if (e->relay_in_dialog && m->to_tag.n && m->method_id != SIP_METHOD_REGISTER &&
		    relay_in_core(e, st, m, 1))
			return;
		run_router(L, e, st, m, src);
		return;
	}
	if (!push_handler(L, e, "request"))
		return;
	if (push_copy(L, m, src)) {
		lua_pop(L, 1);
		return;
	}
	attach_tls(L, e, lua_gettop(L), src);
	lua_pushinteger(L, st ? (lua_Integer)sip_txn_id(st) : 0);
	push_src(L, e, src);
	call_handler(L, 3, "request handler");
}

static void hook_response(void *ud, sip_txn *ct, const sip_msg *m)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!push_handler(L, e, "response"))
		return;
	lua_pushinteger(L, ct ? (lua_Integer)sip_txn_id(ct) : 0);
	if (push_copy(L, m, NULL)) {
		lua_pop(L, 2);
		return;
	}
	call_handler(L, 2, "response handler");
}

static void hook_cancel(void *ud, sip_txn *st)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!push_handler(L, e, "cancel"))
		return;
	lua_pushinteger(L, (lua_Integer)sip_txn_id(st));
	call_handler(L, 1, "cancel handler");
}

static void hook_ack(void *ud, sip_txn *st, const sip_msg *ack)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!push_handler(L, e, "ack"))
		return;
	lua_pushinteger(L, (lua_Integer)sip_txn_id(st));
	if (!ack)
		lua_pushnil(L);
	else if (push_copy(L, ack, NULL)) {
		lua_pop(L, 2);
		return;
	}
	call_handler(L, 2, "ack handler");
}

static void hook_gone(void *ud, sip_txn *t)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!L || !push_handler(L, e, "gone"))
		return;
	lua_pushinteger(L, (lua_Integer)sip_txn_id(t));
	call_handler(L, 1, "gone handler");
}

static void hook_log(void *ud, const char *line)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!L || !push_handler(L, e, "log"))
		return;
	lua_pushstring(L, line);
	call_handler(L, 1, "log handler");
}

static void hook_rate_limited(void *ud, const char *ip, int retry_s)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!L || !push_handler(L, e, "rate_limited"))
		return;
	lua_pushstring(L, ip);
	lua_pushinteger(L, retry_s);
	call_handler(L, 2, "rate_limited handler");
}

static void hook_relayed(void *ud, uint64_t id, const sip_msg *final)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!L || !push_handler(L, e, "relayed"))
		return;
	lua_pushinteger(L, (lua_Integer)id);
	if (!final)
		lua_pushnil(L);
	else if (push_copy(L, final, NULL)) {
		lua_pop(L, 2);
		return;
	}
	call_handler(L, 2, "relayed handler");
}

static void hook_relay_branch(void *ud, uint64_t id, unsigned branch, const sip_msg *res)
{
	lsip_ep *e = ud;
	lua_State *L = e->lp->L;
	if (!L || !push_handler(L, e, "relay_branch"))
		return;
	lua_pushinteger(L, (lua_Integer)id);
	lua_pushinteger(L, (lua_Integer)branch + 1);
	if (push_copy(L, res, NULL)) {
		lua_pop(L, 3);
		return;
	}
	call_handler(L, 3, "relay_branch handler");
}

/* --- endpoint ------------------------------------------------------------------------- */

/* An endpoint is told by its size and magic number, as a message is (lsip.h): every ep
 * method checks its self, and a metatable lookup costs more than the rest of some. */
#define LSIP_EP_MAGIC 0x65706973u

/* The endpoint at i, closed or not. */
static lsip_ep *to_ep(lua_State *L, int i)
{
	lsip_ep *e = lua_touserdata(L, i);
	if (!e || lua_type(L, i) != LUA_TUSERDATA || lua_rawlen(L, i) != sizeof *e ||
	    e->magic != LSIP_EP_MAGIC)
		luaL_typeerror(L, i, LSIP_EP_MT);
	return e;
}

static lsip_ep *check_ep(lua_State *L, int i)
{
	lsip_ep *e = to_ep(L, i);
	if (!e->ep)
		luaL_argerror(L, i, "endpoint is closed");
	/* hooks may run inside this call (a transaction ending): give them this thread */
	if (!e->lp->stepping)
		e->lp->L = L;
	return e;
}

struct sip_endpoint *lsip_endpoint(lua_State *L, int idx)
{
	lsip_ep *e = luaL_testudata(L, idx, LSIP_EP_MT);
	return e ? e->ep : NULL;
}

static unsigned opt_uint(lua_State *L, int t, const char *k, unsigned def)
{
	unsigned v = def;
	if (lua_getfield(L, t, k) != LUA_TNIL) {
		lua_Integer i = luaL_checkinteger(L, -1);
		if (i < 0)
			luaL_error(L, "option %s must not be negative", k);
		v = (unsigned)i;
	}
	lua_pop(L, 1);
	return v;
}

/* core.endpoint(loop, opts, handlers) -> endpoint */
static int l_endpoint(lua_State *L)
{
	lsip_loop *lp = check_loop(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	luaL_checktype(L, 3, LUA_TTABLE);
	sip_ep_config cfg;
	sip_ep_config_default(&cfg);
	cfg.t1 = opt_uint(L, 2, "t1", cfg.t1);
	cfg.t2 = opt_uint(L, 2, "t2", cfg.t2);
	cfg.t4 = opt_uint(L, 2, "t4", cfg.t4);
	cfg.timer_c = opt_uint(L, 2, "timer_c", cfg.timer_c);
	cfg.max_txns = opt_uint(L, 2, "max_transactions", cfg.max_txns);
	cfg.max_waiting = opt_uint(L, 2, "max_waiting", cfg.max_waiting);
	cfg.overload_ms = opt_uint(L, 2, "overload_ms", cfg.overload_ms);
	cfg.lim.max_msg = opt_uint(L, 2, "max_size", (unsigned)cfg.lim.max_msg);
	cfg.lim.max_hdrs = opt_uint(L, 2, "max_headers", cfg.lim.max_hdrs);
	cfg.lim.max_line = opt_uint(L, 2, "max_line", (unsigned)cfg.lim.max_line);
	cfg.tp.max_msg = cfg.lim.max_msg;
	cfg.tp.max_conns = opt_uint(L, 2, "max_connections", cfg.tp.max_conns);
	cfg.tp.max_conn_buf = opt_uint(L, 2, "max_connection_buffer", (unsigned)cfg.tp.max_conn_buf);
	cfg.tp.idle_ms = opt_uint(L, 2, "idle_timeout_ms", cfg.tp.idle_ms);
	cfg.tp.partial_ms = opt_uint(L, 2, "partial_timeout_ms", cfg.tp.partial_ms);
	cfg.tp.reuse_port = (int)opt_uint(L, 2, "reuse_port", 0);
	cfg.tp.max_conns_per_ip = opt_uint(L, 2, "max_connections_per_ip", 0);
	if (cfg.t1 == 0 || cfg.t2 < cfg.t1)
		return luaL_error(L, "bad timers: need 0 < t1 <= t2");

	lsip_ep *e = lua_newuserdatauv(L, sizeof *e, 1);
	memset(e, 0, sizeof *e);
	e->magic = LSIP_EP_MAGIC;
	e->lp = lp;
	luaL_setmetatable(L, LSIP_EP_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);   /* the endpoint keeps its loop alive */
	lua_pushvalue(L, 3);
	e->handlers = luaL_ref(L, LUA_REGISTRYINDEX);
	e->router = e->epobj = LUA_NOREF;
	lua_newtable(L);
	e->pool = luaL_ref(L, LUA_REGISTRYINDEX);
	sip_ep_hooks hooks = { hook_request, hook_response, hook_cancel, hook_ack, hook_gone,
			       hook_log, hook_rate_limited };
	if (lua_getfield(L, 2, "log") != LUA_TNIL && !lua_toboolean(L, -1))
		hooks.log = NULL;   /* nobody listens: do not even format the lines */
	lua_pop(L, 1);
	e->ep = sip_ep_new(lp->loop, &cfg, &hooks, e);
	if (!e->ep)
		return luaL_error(L, "cannot create the endpoint");
	return 1;
}

/* ep:listen("udp"|"tcp", host, port) -> index | nil, err */
static int ep_listen(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	const char *kind = luaL_checkstring(L, 2);
	const char *host = luaL_checkstring(L, 3);
	lua_Integer port = luaL_checkinteger(L, 4);
	sip_tp_kind k;
	if (strcmp(kind, "udp") == 0)
		k = SIP_TP_UDP;
	else if (strcmp(kind, "tcp") == 0)
		k = SIP_TP_TCP;
	else if (strcmp(kind, "tls") == 0)
		k = SIP_TP_TLS;
	else if (strcmp(kind, "ws") == 0)
		k = SIP_TP_WS;
	else if (strcmp(kind, "wss") == 0)
		k = SIP_TP_WSS;
	else
		return luaL_argerror(L, 2, "udp, tcp, tls, ws or wss expected");
	if (port < 0 || port > 65535)
		return luaL_argerror(L, 4, "port out of range");
	const char *err;
	int idx = sip_ep_listen(e->ep, k, host, (int)port, &err);
	if (idx < 0) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushinteger(L, idx);
	return 1;
}

/* ep:set_tls{ cert =, key =, ca =, verify = true, client = "optional"|"require"|"none",
 * handshake_timeout_ms =, max_handshakes = } -> true | nil, err: before any TLS listener or
 * TLS request; loads the files now. */
static int ep_set_tls(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	sip_tls_config c;
	sip_tls_config_default(&c);
	lua_getfield(L, 2, "cert");
	lua_getfield(L, 2, "key");
	lua_getfield(L, 2, "ca");
	c.cert = luaL_optstring(L, -3, NULL);
	c.key = luaL_optstring(L, -2, NULL);
	c.ca = luaL_optstring(L, -1, NULL);
	if (lua_getfield(L, 2, "verify") != LUA_TNIL)
		c.verify = lua_toboolean(L, -1);
	lua_pop(L, 1);
	static const char *const modes[] = { "none", "optional", "require", NULL };
	lua_getfield(L, 2, "client");
	c.client_auth = (sip_tls_client_auth)luaL_checkoption(L, -1, "optional", modes);
	lua_pop(L, 1);
	c.handshake_ms = opt_uint(L, 2, "handshake_timeout_ms", c.handshake_ms);
	c.max_handshakes = opt_uint(L, 2, "max_handshakes", c.max_handshakes);
	char err[256];
	sip_tls *t = sip_tls_new(&c, err, sizeof err);
	lua_settop(L, 2);
	if (!t) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	sip_tp_set_tls(sip_ep_transport(e->ep), t);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:conn_open(conn_id) -> whether that TCP/TLS connection is still open */
static int ep_conn_open(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	lua_pushboolean(L, sip_tp_conn_open(sip_ep_transport(e->ep),
					    (uint32_t)luaL_checkinteger(L, 2)));
	return 1;
}

/* ep:addresses() -> { "udp:127.0.0.1:5060", ... } */
static int ep_addresses(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_transport *tp = sip_ep_transport(e->ep);
	int n = sip_tp_listener_count(tp);
	lua_createtable(L, n, 0);
	for (int i = 0; i < n; i++) {
		sip_tp_kind k;
		struct sockaddr_storage ss;
		socklen_t sl;
		char a[96];
		if (sip_tp_listener_addr(tp, i, &k, &ss, &sl))
			continue;
		sip_addr_format(k, (struct sockaddr *)&ss, a, sizeof a);
		lua_pushstring(L, a);
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

static sip_txn *check_txn(lua_State *L, lsip_ep *e, int i)
{
	lua_Integer id = luaL_checkinteger(L, i);
	return sip_ep_txn(e->ep, (uint64_t)id);
}

static int fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err ? err : "failed");
	return 2;
}

/* ep:reply(txn_id, response [, proxied]) -> true | nil, err */
static int ep_reply(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_txn *t = check_txn(L, e, 2);
	sip_msg *res = lsip_checkmsg(L, 3);
	const char *err;
	if (!t)
		return fail(L, "the transaction is gone");
	if (sip_ep_reply(e->ep, t, res, lua_toboolean(L, 4), &err))
		return fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:reply_stateless(request, response) -> true | nil, err */
static int ep_reply_stateless(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	lsip_checkmsg(L, 2);
	sip_msg *res = lsip_checkmsg(L, 3);
	const char *err;
	size_t n = 0;
	const char *s = lsip_msg_blob(L, 2, &n);
	sip_tp_src src;
	if (!s || read_src_blob(s, n, &src))
		return fail(L, "the request did not arrive on an endpoint");
	if (sip_ep_reply_stateless(e->ep, res, &src, &err))
		return fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:web(prefix, dir) / ep:web(path, nil, contents) -> true | nil, err: files that WS and
 * WSS listeners serve to plain HTTP GETs (the chat page) */
static int ep_web(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	const char *prefix = luaL_checkstring(L, 2), *err;
	size_t bl;
	const char *body = luaL_optlstring(L, 4, NULL, &bl);
	int r = body ? sip_tp_web_file(sip_ep_transport(e->ep), prefix, body, bl, &err) :
		       sip_tp_web_mount(sip_ep_transport(e->ep), prefix, luaL_checkstring(L, 3), &err);
	if (r)
		return fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:flow(request, contact_uri) -> conn_id | nil, why: a request that came over TCP or TLS
 * (a REGISTER) makes its connection the way to contact_uri, when that URI is reached over
 * the same transport: what is sent there goes on that connection while it is open (see
 * sip_tp_alias). The id is for ep:conn_open(). */
static int ep_flow(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	lsip_checkmsg(L, 2);
	size_t n = 0, ul;
	const char *uri = luaL_checklstring(L, 3, &ul);
	const char *s = lsip_msg_blob(L, 2, &n), *err;
	sip_tp_src src;
	sip_dest d;
	if (!s || read_src_blob(s, n, &src))
		return fail(L, "the request did not arrive on an endpoint");
	if (!sip_tp_stream(src.kind))
		return fail(L, "not over a connection");
	sip_uri u;
	struct sockaddr_storage ss;
	socklen_t sl;
	if (sip_uri_parse(&u, sip_pl_make(uri, ul), &err))
		return fail(L, err);
	if (sip_tp_ws(src.kind)) {
		/* RFC 7118 §5.2: a WebSocket client's Contact names no address (often a random
		 * .invalid host); it is reached only over this connection, at its peer address,
		 * and in dialogs by that host's name */
		sip_tp_ws_name(sip_ep_transport(e->ep), src.conn_id, u.host.p, u.host.n);
		lua_pushinteger(L, src.conn_id);
		return 1;
	}
	if (sip_ip_literal(u.host, 0, &ss, &sl))
		return fail(L, "the contact's host is a name");   /* not looked up here: it would block */
	if (sip_ep_resolve(e->ep, uri, ul, &d, &err))
		return fail(L, err);
	if (d.kind != src.kind)
		return fail(L, "the contact is on another transport");
	if (sip_tp_alias(sip_ep_transport(e->ep), src.conn_id, (struct sockaddr *)&d.addr, d.len))
		return fail(L, "connection closed");
	lua_pushinteger(L, src.conn_id);
	return 1;
}

static sip_via_mode check_via_mode(lua_State *L, int i)
{
	/* on every request sent: a switch, not luaL_checkoption's strcmp loop */
	size_t n;
	const char *s = luaL_optlstring(L, i, "replace", &n);
	if (n == 7 && memcmp(s, "replace", 7) == 0)
		return SIP_VIA_REPLACE;
	if (n == 4 && memcmp(s, "push", 4) == 0)
		return SIP_VIA_PUSH;
	if (n == 4 && memcmp(s, "keep", 4) == 0)
		return SIP_VIA_KEEP;
	return (sip_via_mode)luaL_argerror(L, i, "replace, push or keep expected");
}

/* Resolve the target URI (arg i) into d; returns 0 or pushes nil, err and returns 2. */
static int target(lua_State *L, lsip_ep *e, int i, sip_dest *d)
{
	size_t len;
	const char *uri = luaL_checklstring(L, i, &len);
	const char *err;
	if (sip_ep_resolve(e->ep, uri, len, d, &err))
		return fail(L, err);
	return 0;
}

/* ep:request(msg, target_uri [, via_mode [, branch]]) -> txn_id | nil, err */
static int ep_request(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_msg *m = lsip_checkmsg(L, 2);
	sip_dest d;
	if (target(L, e, 3, &d))
		return 2;
	const char *err;
	sip_txn *t = sip_ep_request(e->ep, m, &d, check_via_mode(L, 4), luaL_optstring(L, 5, NULL),
				    &err);
	if (!t)
		return fail(L, err);
	lua_pushinteger(L, (lua_Integer)sip_txn_id(t));
	return 1;
}

/* ep:send(msg, target_uri [, via_mode]) -> true | nil, err   (no transaction) */
static int ep_send(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_msg *m = lsip_checkmsg(L, 2);
	sip_dest d;
	if (target(L, e, 3, &d))
		return 2;
	const char *err;
	if (sip_ep_send_stateless(e->ep, m, &d, check_via_mode(L, 4), luaL_optstring(L, 5, NULL),
				  &err))
		return fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:set_router(fn, endpoint, handled, relay_in_dialog) or ep:set_router(nil): requests on
 * the fast path (see fast_path) go to fn(req), with req._ep = endpoint; handled lists the
 * methods that have handlers of their own (they keep going through the "request" handler);
 * relay_in_dialog: in-dialog ones are relayed by the core instead (relay_in_core). */
static int ep_set_router(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	luaL_unref(L, LUA_REGISTRYINDEX, e->router);
	luaL_unref(L, LUA_REGISTRYINDEX, e->epobj);
	e->router = e->epobj = LUA_NOREF;
	e->handled = 0;
	e->relay_in_dialog = 0;
	sip_ep_set_merged_check(e->ep, lua_isnoneornil(L, 2));   /* a router proxies */
	if (lua_isnoneornil(L, 2))
		return 0;
	e->relay_in_dialog = lua_toboolean(L, 5);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checktype(L, 4, LUA_TTABLE);
	lua_Integer n = luaL_len(L, 4);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, 4, i);
		size_t len;
		const char *name = luaL_checklstring(L, -1, &len);
		e->handled |= 1u << sip_method_lookup(name, len);
		lua_pop(L, 1);
	}
	lua_pushvalue(L, 3);
	e->epobj = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, 2);
	e->router = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

#define RELAY_MAX_TARGETS 64

/* §16.3 for req (index 2, a request received by this endpoint), once: true, or false after
 * answering it 416/483/482/420 (an ACK gets no answer). */
static int check_request(lsip_ep *e, sip_msg *m, sip_txn **st)
{
	lsip_msg *u = lsip_msg_of(m);
	*st = u->attached ? sip_ep_txn(e->ep, (uint64_t)u->txn) : NULL;
	if (u->validated)
		return u->validated == 1;
	int code = validate_or_refuse(e->ep, *st, m);
	u->validated = code ? 2 : 1;
	if (code)
		u->replied_final = 1;
	return code == 0;
}

/* Push the endpoint core (req._ep.core) of the request at index 1, found through its user
 * value rather than two __index calls; what names the method in the error. */
static lsip_ep *push_ep_of(lua_State *L, const char *what)
{
	if (lua_getiuservalue(L, 1, LSIP_MSG_UV_EP) == LUA_TNONE) {
		lua_pop(L, 1);
		lua_getfield(L, 1, "_ep");   /* a message from sip.parse keeps it in its extra table */
	}
	if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, "core") != LUA_TUSERDATA)
		luaL_error(L, "%s: not a request received by an endpoint", what);
	lua_remove(L, -2);
	return check_ep(L, lua_gettop(L));
}

/* core.msg_validate(req) -> true | false: req:validate() in C, the endpoint from req. */
static int l_msg_validate(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	lua_settop(L, 1);
	lsip_ep *e = push_ep_of(L, "req:validate");
	sip_txn *st;
	lua_pushboolean(L, check_request(e, m, &st));
	return 1;
}

/* t[name] when a string, else NULL; the string stays alive with t */
static const char *opt_field(lua_State *L, int t, const char *name, size_t *len)
{
	*len = 0;
	lua_getfield(L, t, name);
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
	lua_pop(L, 1);
	return s;
}

/* relay_request(ep, req, targets, next_hop, timeout_ms, flags, record_route, stateless)
 * -> relay_id, done | true, "stateless" | nil, "refused" | nil, err
 * req:relay in C: §16.3 (once), Max-Forwards, Record-Route (record_route nil: for INVITE,
 * SUBSCRIBE, REFER), then the relay (sip_proxy_relay; targets nil: the Request-URI). An ACK, a
 * request without a transaction, or stateless = true is forwarded statelessly (§16.11): its
 * server transaction, if any, ends unanswered, and a retransmission is relayed again. */
static int relay_request(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_msg *m = lsip_checkmsg(L, 2);
	sip_txn *st;
	if (!check_request(e, m, &st)) {
		lua_pushnil(L);
		lua_pushliteral(L, "refused");
		return 2;
	}
	lsip_msg *u = lsip_msg_of(m);
	if (u->attached && u->txn && m->method_id != SIP_METHOD_ACK &&
	    (!st || !sip_txn_unanswered(st))) {
		/* its transaction has its final response already (a CANCEL's 487 while the
		 * router waited) or is gone: nothing may go downstream (§16.10), statelessly
		 * neither */
		u->replied_final = 1;
		lua_pushnil(L);
		lua_pushliteral(L, "answered");
		return 2;
	}
	if (!u->prepared &&
	    prepare_relay(e->ep, st, m, lua_isnoneornil(L, 7) ? -1 : lua_toboolean(L, 7)))
		return luaL_error(L, "out of memory");
	u->prepared = 1;   /* a request relayed again (keep_failure) is not prepared twice */
	sip_relay_opts o;
	memset(&o, 0, sizeof o);
	o.next_hop = luaL_optlstring(L, 4, NULL, &o.next_hop_len);
	const char *err;
	if (!st || m->method_id == SIP_METHOD_ACK || m->method_id == SIP_METHOD_CANCEL ||
	    lua_toboolean(L, 8)) {
		/* ACK of a 2xx, no transaction, or asked for: stateless (§16.11), first target.
		 * A CANCEL here matched no INVITE of ours (those the core answers): §16.10 says
		 * forward it statelessly, and its branch, made as for the INVITE it cancels,
		 * finds that INVITE downstream if it went statelessly too. */
		sip_pl t = sip_pl_make(NULL, 0);
		if (lua_type(L, 3) == LUA_TTABLE)
			lua_rawgeti(L, 3, 1);
		else
			lua_pushvalue(L, 3);
		if (lua_type(L, -1) == LUA_TSTRING)
			t.p = lua_tolstring(L, -1, &t.n);
		if (sip_proxy_relay_stateless(e->ep, st, m, t, &o, &err)) {
			lua_pushnil(L);
			lua_pushstring(L, err);
			return 2;
		}
		u->replied_final = 1;   /* downstream answers it, through no state here */
		lua_pushboolean(L, 1);
		lua_pushliteral(L, "stateless");
		return 2;
	}
	sip_pl targets[RELAY_MAX_TARGETS], routes[RELAY_MAX_TARGETS], flows[RELAY_MAX_TARGETS];
	unsigned n = 0;
	if (lua_type(L, 3) == LUA_TTABLE) {
		lua_Integer len = luaL_len(L, 3);
		if (len > RELAY_MAX_TARGETS)
			return luaL_argerror(L, 3, "too many targets");
		for (lua_Integer i = 1; i <= len; i++) {
			lua_rawgeti(L, 3, i);
			routes[n] = flows[n] = sip_pl_make(NULL, 0);
			if (lua_type(L, -1) == LUA_TTABLE) {
				/* { uri, route = "<Path>, ...", flow = "sip:IP:PORT" }: a binding */
				routes[n].p = opt_field(L, -1, "route", &routes[n].n);
				flows[n].p = opt_field(L, -1, "flow", &flows[n].n);
				o.routes = routes;
				o.flows = flows;
				lua_rawgeti(L, -1, 1);
				lua_remove(L, -2);
			}
			size_t l;
			const char *s = lua_tolstring(L, -1, &l);
			if (!s)
				return luaL_argerror(L, 3, "URIs expected");
			targets[n++] = sip_pl_make(s, l);
			lua_pop(L, 1);   /* the table keeps the string alive */
		}
	} else if (lua_isnoneornil(L, 3)) {
		targets[n++] = m->uri;
	} else {
		size_t l;
		const char *s = luaL_checklstring(L, 3, &l);
		targets[n++] = sip_pl_make(s, l);
	}
	lua_Integer ms = luaL_optinteger(L, 5, 0);
	o.timeout_ms = ms > 0 ? (unsigned)ms : 0;
	lua_Integer flags = luaL_optinteger(L, 6, 1);
	o.done = flags & 1 ? hook_relayed : NULL;
	o.branch = flags & 2 ? hook_relay_branch : NULL;
	o.ud = e;
	o.keep_failure = (flags & 4) != 0;
	int done;
	uint64_t id = sip_proxy_relay(e->ep, st, m, targets, n, &o, &done, &err);
	if (!id) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	if ((done && !o.keep_failure) || !o.done)
		u->replied_final = 1;   /* the core answers upstream from here on */
	lua_pushinteger(L, (lua_Integer)id);
	lua_pushboolean(L, done);
	return 2;
}

/* core.msg_relay(req, targets, next_hop, timeout_ms, flags, record_route, stateless):
 * relay_request with the endpoint taken from req (req:relay's first step). */
static int l_msg_relay(lua_State *L)
{
	lsip_checkmsg(L, 1);
	lua_settop(L, 7);
	push_ep_of(L, "req:relay");
	lua_insert(L, 1);
	return relay_request(L);
}

/* Address blocks this many at most pass the limit: a list read in full on every request. */
#define EXEMPT_MAX 64

/* ep:set_rate_limit(rate, burst, max_sources, log_window_ms [, {cidr...}]): rate 0 turns it
 * off; sources in the blocks listed pass it. A malformed block raises. */
static int ep_set_rate_limit(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	double rate = luaL_checknumber(L, 2);
	double burst = luaL_optnumber(L, 3, rate * 2);
	lua_Integer max = luaL_optinteger(L, 4, 10000), win = luaL_optinteger(L, 5, 10000);
	luaL_argcheck(L, rate <= 0 || burst >= 1, 3, "burst must be at least 1");
	luaL_argcheck(L, max >= 1 && max <= 10000000, 4, "max_sources out of range");
	luaL_argcheck(L, win >= 0 && win <= 86400000, 5, "log window out of range");
	sip_cidr blocks[EXEMPT_MAX];
	unsigned n = 0;
	if (!lua_isnoneornil(L, 6)) {
		luaL_checktype(L, 6, LUA_TTABLE);
		lua_Integer len = luaL_len(L, 6);
		luaL_argcheck(L, len <= EXEMPT_MAX, 6, "too many exempt address blocks");
		for (lua_Integer i = 1; i <= len; i++, n++) {
			lua_geti(L, 6, i);
			const char *s = lua_tostring(L, -1);
			if (!s || sip_cidr_parse(s, &blocks[n]))
				return luaL_error(L, "bad address block %s", s ? s : "(not a string)");
			lua_pop(L, 1);
		}
	}
	if (sip_ep_set_rate_limit(e->ep, rate, burst, (unsigned)max, (unsigned)win) ||
	    (rate > 0 && sip_ep_rate_limit_exempt(e->ep, blocks, n)))
		return luaL_error(L, "out of memory");
	return 0;
}

/* ep:rate_limit() -> rate, burst, sources held (0, 0, 0 when off) */
static int ep_rate_limit(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	double burst;
	unsigned sources;
	lua_pushnumber(L, sip_ep_rate_limit(e->ep, &burst, &sources));
	lua_pushnumber(L, burst);
	lua_pushinteger(L, sources);
	return 3;
}

/* ep:set_domains({ name, ... }, port): names that are us besides our addresses */
static int ep_set_domains(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_Integer n = luaL_len(L, 2);
	if (n < 0 || n > 256)
		return luaL_argerror(L, 2, "too many domains");
	const char *names[256];
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, 2, i);
		names[i - 1] = luaL_checkstring(L, -1);
		lua_pop(L, 1);   /* the table keeps it */
	}
	if (sip_ep_set_domains(e->ep, names, (unsigned)n, (int)luaL_optinteger(L, 3, 0)))
		return luaL_error(L, "out of memory");
	return 0;
}

/* ep:is_local(uri) -> boolean */
static int ep_is_local(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	lua_pushboolean(L, sip_ep_is_local(e->ep, sip_pl_make(s, len)));
	return 1;
}

/* ep:preprocess(req) -> changed | nil, "bad Route" (§16.4) */
static int ep_preprocess(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	int r = sip_proxy_preprocess(e->ep, lsip_checkmsg(L, 2));
	if (r == -2) {
		lua_pushnil(L);
		lua_pushliteral(L, "bad Route");
		return 2;
	}
	if (r < 0)
		return luaL_error(L, "out of memory");
	lua_pushboolean(L, r);
	return 1;
}

/* ep:set_dns(resolver | nil): the resolver whose cache names in URIs are taken from */
static int ep_set_dns(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_ep_set_dns(e->ep, lua_isnoneornil(L, 2) ? NULL : lsip_check_dns(L, 2));
	return 0;
}

/* ep:set_has_dialogs(bool): whether in-dialog requests must go through the Lua dispatcher */
static int ep_set_has_dialogs(lua_State *L)
{
	lsip_ep *e = to_ep(L, 1);   /* closed endpoints too */
	e->has_dialogs = lua_toboolean(L, 2);
	return 0;
}

/* ep:cancel(txn_id) -> true | nil, err */
static int ep_cancel(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_txn *t = check_txn(L, e, 2);
	const char *err;
	if (!t)
		return fail(L, "the transaction is gone");
	if (sip_ep_cancel(e->ep, t, &err))
		return fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:abandon(txn_id) -> true | nil, err: a non-INVITE client transaction ends now */
static int ep_abandon(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_txn *t = check_txn(L, e, 2);
	if (!t)
		return fail(L, "the transaction is gone");
	if (sip_ep_abandon(e->ep, t))
		return fail(L, "not a non-INVITE client transaction");
	lua_pushboolean(L, 1);
	return 1;
}

/* ep:txn_state(txn_id) -> state name | nil */
static int ep_txn_state(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_txn *t = check_txn(L, e, 2);
	if (!t)
		return 0;
	lua_pushstring(L, sip_txn_state_name(sip_txn_state_get(t)));
	lua_pushinteger(L, sip_txn_last_status(t));   /* 0 before any response */
	return 2;
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

static int ep_stats(lua_State *L)
{
	lsip_ep *e = check_ep(L, 1);
	sip_ep_stats s;
	sip_tp_stats t;
	sip_ep_stats_get(e->ep, &s);
	sip_tp_stats_get(sip_ep_transport(e->ep), &t);
	lua_createtable(L, 0, 20);
	set_int(L, "client_transactions", s.client_txns);
	set_int(L, "server_transactions", s.server_txns);
	set_int(L, "retransmissions", (lua_Integer)s.retrans_sent);
	set_int(L, "absorbed", (lua_Integer)s.absorbed);
	set_int(L, "requests_in", (lua_Integer)s.requests_in);
	set_int(L, "responses_in", (lua_Integer)s.responses_in);
	set_int(L, "parse_errors", (lua_Integer)s.parse_errors);
	set_int(L, "stray_responses", (lua_Integer)s.stray_responses);
	set_int(L, "merged", (lua_Integer)s.merged);
	set_int(L, "rejected_busy", (lua_Integer)s.rejected_busy);
	set_int(L, "rate_limited", (lua_Integer)s.rate_limited);
	set_int(L, "waiting_transactions", s.waiting);
	set_int(L, "max_waiting", s.max_waiting);
	set_int(L, "waiting_bytes", (lua_Integer)s.waiting_bytes);
	set_int(L, "waiting_resend_bytes", (lua_Integer)s.waiting_resend_bytes);
	set_int(L, "waiting_full", (lua_Integer)s.waiting_full);
	set_int(L, "shed", (lua_Integer)s.shed);
	set_int(L, "connections", t.conns_open);
	set_int(L, "connections_accepted", (lua_Integer)t.conns_accepted);
	set_int(L, "connections_closed", (lua_Integer)t.conns_closed);
	static const char *const kinds[] = { [SIP_TP_TCP] = "tcp", [SIP_TP_TLS] = "tls",
		[SIP_TP_WS] = "ws", [SIP_TP_WSS] = "wss" };
	for (int k = SIP_TP_TCP; k <= SIP_TP_WSS; k++) {
		char name[40];
		snprintf(name, sizeof name, "connections_%s", kinds[k]);
		set_int(L, name, t.conns_open_by[k]);
		snprintf(name, sizeof name, "connections_accepted_%s", kinds[k]);
		set_int(L, name, (lua_Integer)t.conns_accepted_by[k]);
	}
	set_int(L, "udp_in", (lua_Integer)t.udp_in);
	set_int(L, "udp_out", (lua_Integer)t.udp_out);
	set_int(L, "tcp_in", (lua_Integer)t.tcp_in);
	set_int(L, "tcp_out", (lua_Integer)t.tcp_out);
	set_int(L, "dropped", (lua_Integer)t.dropped);
	set_int(L, "tls_handshakes", t.handshakes);
	set_int(L, "tls_failed", (lua_Integer)t.tls_failed);
	return 1;
}

static int ep_close(lua_State *L)
{
	lsip_ep *e = to_ep(L, 1);
	if (!e->lp->stepping)
		e->lp->L = L;
	if (e->ep) {
		drop_held(e);
		sip_ep_free(e->ep);
		e->ep = NULL;
		luaL_unref(L, LUA_REGISTRYINDEX, e->handlers);
		e->handlers = LUA_NOREF;
		luaL_unref(L, LUA_REGISTRYINDEX, e->router);
		luaL_unref(L, LUA_REGISTRYINDEX, e->epobj);
		luaL_unref(L, LUA_REGISTRYINDEX, e->pool);
		e->router = e->epobj = e->pool = LUA_NOREF;
	}
	return 0;
}

static int ep_tostring(lua_State *L)
{
	lsip_ep *e = to_ep(L, 1);
	lua_pushfstring(L, "sip.endpoint (%s)", e->ep ? "open" : "closed");
	return 1;
}

static int loop_gc(lua_State *L)
{
	lsip_loop *lp = check_loop(L, 1);
	if (lp->loop)
		sip_loop_free(lp->loop);
	lp->loop = NULL;
	return 0;
}

static const luaL_Reg loop_methods[] = {
	{ "step", loop_step }, { "fd", loop_fd }, { "timeout", loop_timeout },
	{ "timer", loop_timer }, { "now", loop_now }, { NULL, NULL },
};

static const luaL_Reg timer_methods[] = { { "cancel", timer_cancel }, { NULL, NULL } };

static const luaL_Reg ep_methods[] = {
	{ "listen", ep_listen }, { "addresses", ep_addresses }, { "set_tls", ep_set_tls },
	{ "conn_open", ep_conn_open }, { "flow", ep_flow }, { "web", ep_web }, { "reply", ep_reply },
	{ "reply_stateless", ep_reply_stateless }, { "request", ep_request }, { "send", ep_send },
	{ "cancel", ep_cancel }, { "abandon", ep_abandon }, { "txn_state", ep_txn_state }, { "stats", ep_stats },
	{ "set_router", ep_set_router }, { "set_domains", ep_set_domains },
	{ "is_local", ep_is_local }, { "preprocess", ep_preprocess },
	{ "set_has_dialogs", ep_set_has_dialogs }, { "set_dns", ep_set_dns },
	{ "set_rate_limit", ep_set_rate_limit }, { "rate_limit", ep_rate_limit },
	{ "close", ep_close }, { NULL, NULL },
};

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
		   lua_CFunction tostr)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	if (gc) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__close");
	}
	if (tostr) {
		lua_pushcfunction(L, tostr);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
}

/* core.rr_key(secret): the key of our Record-Route tags, shared by the processes and hosts
 * that serve the same dialogs (unset: random per process) */
static int l_rr_key(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	if (n < 16)
		return luaL_argerror(L, 1, "a secret of 16 bytes or more expected");
	if (sip_rr_key_set(s, n))
		return luaL_error(L, "cannot set the Record-Route key");
	return 0;
}

/* core.rr_tag(call_id, from_tag) -> the tag our Record-Route carries for that dialog (its
 * ;lsk= value), for a script that writes a route of its own */
static int l_rr_tag(lua_State *L)
{
	size_t cn, tn;
	const char *c = luaL_checklstring(L, 1, &cn), *t = luaL_checklstring(L, 2, &tn);
	char out[32];
	size_t n = sip_rr_tag(sip_pl_make(c, cn), sip_pl_make(t, tn), out);
	if (!n)
		return luaL_error(L, "no randomness for the Record-Route key");
	lua_pushlstring(L, out, n);
	return 1;
}

void lsip_open_ep(lua_State *L)
{
	new_mt(L, LSIP_LOOP_MT, loop_methods, loop_gc, NULL);
	new_mt(L, LSIP_TIMER_MT, timer_methods, timer_gc, NULL);
	new_mt(L, LSIP_EP_MT, ep_methods, ep_close, ep_tostring);
	lua_pushcfunction(L, l_loop);
	lua_setfield(L, -2, "loop");
	lua_pushcfunction(L, l_endpoint);
	lua_setfield(L, -2, "endpoint");
	lua_pushcfunction(L, l_msg_validate);
	lua_setfield(L, -2, "msg_validate");
	lua_pushcfunction(L, l_msg_relay);
	lua_setfield(L, -2, "msg_relay");
	lua_pushcfunction(L, l_rr_key);
	lua_setfield(L, -2, "rr_key");
	lua_pushcfunction(L, l_rr_tag);
	lua_setfield(L, -2, "rr_tag");
}
