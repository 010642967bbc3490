/* lsip_msrp.c: MSRP for Lua — frames parsed and printed by msrp.c, reassembly, and MSRP
 * connections and listeners (stream.c) on the endpoint's loop, with Lua handlers. */
#include "lsip.h"
#include "loop.h"
#include "msrp.h"
#include "stream.h"
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONN_MT "sip.msrp.conn"
#define LISTENER_MT "sip.msrp.listener"
#define ASM_MT "sip.msrp.assembler"
#define TLS_MT "sip.msrp.tls"

/* A frame's size by default: a 2048-byte chunk needs far less, but peers may send a whole
 * message of the session's a=max-size as one chunk. */
#define DEFAULT_MAX_FRAME (1u << 20)
/* Unsent bytes one connection may hold: a few messages of the default size. */
#define DEFAULT_MAX_QUEUE (8u << 20)

typedef struct conn {
	sip_stream *s;
	lsip_loop *lp;
	int ref;              /* registry: this userdata, while the stream is open */
	size_t max_frame;
	size_t scan;          /* sip_msrp_parse's resume point for the frame being read */
} conn;

typedef struct listener {
	sip_stream_listener *l;
	lsip_loop *lp;
	int ref;
	size_t max_frame;
	SSL_CTX *tls;        /* held by the listener's user value 2 */
} listener;

static void report(lua_State *L, const char *where)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "luasip: error in %s: %s\n", where, msg ? msg : "?");
	lua_pop(L, 1);
}

static void set_pl(lua_State *L, const char *k, sip_pl v)
{
	if (!v.p)
		return;
	lua_pushlstring(L, v.p, v.n);
	lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, k);
}

/* A parsed frame as a table (range values -1 for "*"); `headers`, every header as
 * { name, value } in order, comes with with_headers or when the frame has headers with no
 * field of their own (AUTH's): eight more tables a chunk and its 200 do without. */
static void push_frame(lua_State *L, const sip_msrp_msg *m, int with_headers)
{
	lua_createtable(L, 0, 16);
	set_pl(L, "tid", m->tid);
	if (m->is_request) {
		set_pl(L, "method", m->method);
	} else {
		set_int(L, "status", m->status);
		set_pl(L, "comment", m->comment);
	}
	set_pl(L, "to_path", m->to_path);
	set_pl(L, "from_path", m->from_path);
	set_pl(L, "message_id", m->message_id);
	set_pl(L, "content_type", m->content_type);
	set_pl(L, "success_report", m->success_report);
	set_pl(L, "failure_report", m->failure_report);
	set_pl(L, "status_header", m->status_hdr);
	if (m->has_range) {
		set_int(L, "range_start", m->range_start);
		set_int(L, "range_end", m->range_end);
		set_int(L, "range_total", m->range_total);
	}
	lua_pushlstring(L, m->body.p ? m->body.p : "", m->body.n);
	lua_setfield(L, -2, "body");
	lua_pushlstring(L, &m->flag, 1);
	lua_setfield(L, -2, "flag");
	if (!with_headers && !m->nother)
		return;
	lua_createtable(L, (int)m->nhdrs, 0);
	for (size_t i = 0; i < m->nhdrs; i++) {
		lua_createtable(L, 2, 0);
		lua_pushlstring(L, m->hdrs[i].name.p, m->hdrs[i].name.n);
		lua_rawseti(L, -2, 1);
		lua_pushlstring(L, m->hdrs[i].value.p, m->hdrs[i].value.n);
		lua_rawseti(L, -2, 2);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "headers");
}

/* core.msrp_parse(bytes [, max_frame]) -> frame, length | nil, reason ("incomplete" when
 * more bytes are needed) */
static int l_parse(lua_State *L)
{
	size_t len;
	const char *b = luaL_checklstring(L, 1, &len);
	size_t max = (size_t)luaL_optinteger(L, 2, DEFAULT_MAX_FRAME);
	sip_msrp_msg *m = malloc(sizeof *m);
	const char *why = NULL;
	if (!m)
		return luaL_error(L, "out of memory");
	long n = sip_msrp_parse(b, len, max, NULL, m, &why);
	if (n <= 0) {
		free(m);
		lua_pushnil(L);
		lua_pushstring(L, n == 0 ? "incomplete" : why);
		return 2;
	}
	push_frame(L, m, 1);
	free(m);
	lua_pushinteger(L, n);
	return 2;
}

static const char *opt_str(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	const char *s = lua_tostring(L, -1);
	lua_pop(L, 1);   /* the table keeps the string alive */
	return s;
}

static int64_t opt_range(lua_State *L, int t, const char *k, int64_t def)
{
	int isnum;
	lua_getfield(L, t, k);
	lua_Integer v = lua_tointegerx(L, -1, &isnum);
	if (!isnum && lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "*") == 0)
		v = SIP_MSRP_STAR, isnum = 1;
	lua_pop(L, 1);
	return isnum ? (v < 0 ? SIP_MSRP_STAR : (int64_t)v) : def;
}

/* core.msrp_build{ tid=, method= | status=, comment=, to_path=, from_path=, message_id=,
 *   success_report=, failure_report=, status_header=, range_start=, range_end=,
 *   range_total=, extra=, content_type=, body=, flag= } -> bytes | nil, reason
 * The body goes out only with a content_type (RFC 4975 §7.1). */
static int l_build(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	sip_msrp_out o;
	memset(&o, 0, sizeof o);
	o.tid = opt_str(L, 1, "tid");
	o.method = opt_str(L, 1, "method");
	lua_getfield(L, 1, "status");
	o.status = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	o.comment = opt_str(L, 1, "comment");
	o.to_path = opt_str(L, 1, "to_path");
	o.from_path = opt_str(L, 1, "from_path");
	o.message_id = opt_str(L, 1, "message_id");
	o.success_report = opt_str(L, 1, "success_report");
	o.failure_report = opt_str(L, 1, "failure_report");
	o.status_hdr = opt_str(L, 1, "status_header");
	o.extra = opt_str(L, 1, "extra");
	o.content_type = opt_str(L, 1, "content_type");
	lua_getfield(L, 1, "range_start");
	o.has_range = !lua_isnil(L, -1);
	lua_pop(L, 1);
	if (o.has_range) {
		o.range_start = opt_range(L, 1, "range_start", 1);
		o.range_end = opt_range(L, 1, "range_end", SIP_MSRP_STAR);
		o.range_total = opt_range(L, 1, "range_total", SIP_MSRP_STAR);
	}
	lua_getfield(L, 1, "body");
	o.body = lua_tolstring(L, -1, &o.body_len);
	if (!o.body)
		o.body = "", o.body_len = 0;
	const char *flag = opt_str(L, 1, "flag");
	o.flag = flag ? flag[0] : '$';
	long need = sip_msrp_print(NULL, 0, &o);
	if (need < 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "cannot print that frame (tid, method or status)");
		return 2;
	}
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, (size_t)need);
	sip_msrp_print(p, (size_t)need, &o);
	luaL_pushresultsize(&b, (size_t)need);
	return 1;
}

/* core.msrp_id([n]) -> n random ident characters (default 16) */
static int l_id(lua_State *L)
{
	lua_Integer n = luaL_optinteger(L, 1, 16);
	char buf[SIP_MSRP_TID_MAX];
	luaL_argcheck(L, n >= SIP_MSRP_TID_MIN && n <= SIP_MSRP_TID_MAX, 1, "4 to 32");
	if (sip_msrp_random_id(buf, (size_t)n))
		return luaL_error(L, "no randomness");
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

/* --- the assembler --------------------------------------------------------------------- */

static sip_msrp_asm *check_asm(lua_State *L, int i)
{
	return luaL_checkudata(L, i, ASM_MT);
}

/* core.msrp_assembler(max_size, max_chunks) -> assembler */
static int l_assembler(lua_State *L)
{
	lua_Integer max = luaL_checkinteger(L, 1);
	lua_Integer chunks = luaL_optinteger(L, 2, 4096);
	luaL_argcheck(L, max >= 0, 1, "a size");
	luaL_argcheck(L, chunks >= 1, 2, "at least 1");
	sip_msrp_asm *a = lua_newuserdatauv(L, sizeof *a, 0);
	sip_msrp_asm_init(a, (size_t)max, (size_t)chunks);
	luaL_setmetatable(L, ASM_MT);
	return 1;
}

/* asm:add(start, end, total, body, flag) -> "more" | "done", body | "aborted" | nil, status
 * (end and total -1 for "*") */
static int asm_add(lua_State *L)
{
	sip_msrp_asm *a = check_asm(L, 1);
	int64_t start = luaL_checkinteger(L, 2);
	int64_t end = luaL_checkinteger(L, 3);
	int64_t total = luaL_checkinteger(L, 4);
	size_t len;
	const char *body = luaL_checklstring(L, 5, &len);
	const char *flag = luaL_optstring(L, 6, "$");
	int r = sip_msrp_asm_add(a, start, end < 0 ? SIP_MSRP_STAR : end,
				 total < 0 ? SIP_MSRP_STAR : total, body, len, flag[0]);
	if (r < 0) {
		lua_pushnil(L);
		lua_pushinteger(L, -r);
		return 2;
	}
	if (r == SIP_MSRP_ASM_DONE) {
		size_t n;
		const char *p = sip_msrp_asm_body(a, &n);
		lua_pushliteral(L, "done");
		lua_pushlstring(L, p, n);
		return 2;
	}
	if (r == SIP_MSRP_ASM_ABORTED)
		lua_pushliteral(L, "aborted");
	else
		lua_pushliteral(L, "more");
	return 1;
}

/* asm:received() -> bytes held so far (progress) */
static int asm_received(lua_State *L)
{
	sip_msrp_asm *a = check_asm(L, 1);
	int64_t n = 0;
	for (size_t i = 0; i < a->nranges; i++)
		n += a->ranges[i].end - a->ranges[i].start + 1;
	lua_pushinteger(L, (lua_Integer)n);
	return 1;
}

static int asm_gc(lua_State *L)
{
	sip_msrp_asm_free(check_asm(L, 1));
	return 0;
}

/* --- TLS contexts --------------------------------------------------------------------- */

typedef struct tls_ctx {
	SSL_CTX *ctx;
} tls_ctx;

static const char *field(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	const char *v = lua_tostring(L, -1);
	lua_pop(L, 1);
	return v;
}

/* core.msrp_tls{ cert=, key=, ca=, verify= } -> context | nil, reason
 * cert/key (PEM files) for the side that listens; ca (a PEM file) and verify (default:
 * true when ca is given) for the side that connects. */
static int l_tls(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *cert = field(L, 1, "cert"), *key = field(L, 1, "key"), *ca = field(L, 1, "ca");
	lua_getfield(L, 1, "verify");
	int verify = lua_isnil(L, -1) ? ca != NULL : lua_toboolean(L, -1);
	lua_pop(L, 1);
	tls_ctx *t = lua_newuserdatauv(L, sizeof *t, 0);
	t->ctx = SSL_CTX_new(TLS_method());
	if (!t->ctx)
		return luaL_error(L, "cannot create a TLS context");
	luaL_setmetatable(L, TLS_MT);
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	const char *why = NULL;
	if (cert && SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1)
		why = "cannot load the certificate";
	else if (cert && SSL_CTX_use_PrivateKey_file(t->ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1)
		why = "cannot load the private key";
	else if (cert && SSL_CTX_check_private_key(t->ctx) != 1)
		why = "the key does not match the certificate";
	else if (ca && SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1)
		why = "cannot load the CA file";
	else if (verify && !ca && SSL_CTX_set_default_verify_paths(t->ctx) != 1)
		why = "no CA certificates";
	if (why) {
		ERR_clear_error();
		lua_pushnil(L);
		lua_pushstring(L, why);
		return 2;
	}
	SSL_CTX_set_verify(t->ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	return 1;
}

static int tls_gc(lua_State *L)
{
	tls_ctx *t = luaL_checkudata(L, 1, TLS_MT);
	if (t->ctx)
		SSL_CTX_free(t->ctx);   /* streams' SSL objects hold references of their own */
	t->ctx = NULL;
	return 0;
}

static SSL_CTX *opt_tls(lua_State *L, int i)
{
	if (lua_isnoneornil(L, i))
		return NULL;
	return ((tls_ctx *)luaL_checkudata(L, i, TLS_MT))->ctx;
}

/* --- connections ----------------------------------------------------------------------- */

static conn *check_conn(lua_State *L, int i)
{
	return luaL_checkudata(L, i, CONN_MT);
}

/* Push handler k of c (its user value) and c; returns 0 (nothing pushed) when none. */
static int push_hook(lua_State *L, conn *c, const char *k)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
	if (lua_getiuservalue(L, -1, 1) != LUA_TTABLE || lua_getfield(L, -1, k) != LUA_TFUNCTION) {
		lua_pop(L, 3);
		return 0;
	}
	lua_remove(L, -2);   /* the table */
	lua_insert(L, -2);   /* fn, conn */
	return 1;
}

static void forget(lua_State *L, conn *c)
{
	c->s = NULL;
	if (c->ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
		c->ref = LUA_NOREF;
	}
}

static void conn_connected(void *arg, int err)
{
	conn *c = arg;
	lua_State *L = c->lp->L;
	int ref = c->ref;
	if (err) {
		c->s = NULL;   /* the stream frees itself after a failed connect */
	}
	if (push_hook(L, c, "connected")) {
		if (err)
			lua_pushstring(L, strerror(err));
		else
			lua_pushnil(L);
		if (lua_pcall(L, 2, 0, 0) != LUA_OK)
			report(L, "MSRP connected handler");
	}
	if (err && c->ref == ref)
		forget(L, c);
}

static void conn_closed(void *arg, int err)
{
	conn *c = arg;
	lua_State *L = c->lp->L;
	c->s = NULL;
	if (push_hook(L, c, "closed")) {
		lua_pushstring(L, err ? strerror(err) : "closed by the peer");
		if (lua_pcall(L, 2, 0, 0) != LUA_OK)
			report(L, "MSRP closed handler");
	}
	forget(L, c);
}

/* Hand every whole frame in buf to the frame handler; a bad one closes the connection
 * (the closed handler hears why). */
static long conn_data(void *arg, const char *buf, size_t len)
{
	conn *c = arg;
	lua_State *L = c->lp->L;
	size_t off = 0;
	sip_msrp_msg *m = malloc(sizeof *m);
	if (!m)
		return 0;
	while (off < len && c->s) {
		const char *why = NULL;
		long n = sip_msrp_parse(buf + off, len - off, c->max_frame, &c->scan, m, &why);
		if (n == 0)
			break;
		if (n < 0) {
			free(m);
			if (push_hook(L, c, "closed")) {
				lua_pushfstring(L, "bad MSRP frame: %s", why);
				if (lua_pcall(L, 2, 0, 0) != LUA_OK)
					report(L, "MSRP closed handler");
			}
			if (c->s) {
				sip_stream *s = c->s;
				forget(L, c);
				sip_stream_close(s);
			}
			return 0;
		}
		c->scan = 0;
		if (push_hook(L, c, "frame")) {
			push_frame(L, m, 0);
			if (lua_pcall(L, 2, 0, 0) != LUA_OK)
				report(L, "MSRP frame handler");
		}
		off += (size_t)n;
	}
	free(m);
	return (long)off;
}

static const sip_stream_hooks conn_hooks = { conn_connected, conn_data, conn_closed };

static conn *new_conn(lua_State *L, lsip_loop *lp, size_t max_frame)
{
	conn *c = lua_newuserdatauv(L, sizeof *c, 1);
	memset(c, 0, sizeof *c);
	c->lp = lp;
	c->ref = LUA_NOREF;
	c->max_frame = max_frame;
	luaL_setmetatable(L, CONN_MT);
	return c;
}

static size_t opt_max_frame(lua_State *L, int i)
{
	lua_Integer v = luaL_optinteger(L, i, DEFAULT_MAX_FRAME);
	luaL_argcheck(L, v >= 1024, i, "max_frame too small");
	return (size_t)v + SIP_MSRP_MAX_HEAD;
}

static sip_stream_limits limits_of(size_t max_frame)
{
	sip_stream_limits lim = { max_frame + 1, DEFAULT_MAX_QUEUE + max_frame };
	return lim;
}

/* core.msrp_connect(loop, host, port, handlers [, max_frame [, tls [, name]]]) -> conn | nil, err
 * handlers: { connected = fn(conn, err|nil), frame = fn(conn, frame), closed = fn(conn, why) }
 * tls: a core.msrp_tls context (connected then reports the end of the handshake); name:
 * what the peer's certificate must name when the context verifies (default: host). */
static int l_connect(lua_State *L)
{
	lsip_loop *lp = lsip_check_loop(L, 1);
	const char *host = luaL_checkstring(L, 2);
	lua_Integer port = luaL_checkinteger(L, 3);
	luaL_checktype(L, 4, LUA_TTABLE);
	size_t max_frame = opt_max_frame(L, 5);
	SSL_CTX *tls = opt_tls(L, 6);
	const char *name = luaL_optstring(L, 7, host);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (port < 1 || port > 65535 || sip_tp_parse_addr(host, (int)port, &ss, &sl)) {
		lua_pushnil(L);
		lua_pushliteral(L, "an IP address and port expected");
		return 2;
	}
	conn *c = new_conn(L, lp, max_frame);
	lua_pushvalue(L, 4);
	lua_setiuservalue(L, -2, 1);
	sip_stream_limits lim = limits_of(max_frame);
	c->s = sip_stream_connect(lp->loop, (struct sockaddr *)&ss, sl, &lim, &conn_hooks, c);
	if (!c->s) {
		lua_pushnil(L);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	if (tls && sip_stream_start_tls(c->s, tls, 0, name)) {
		sip_stream_close(c->s);
		c->s = NULL;
		lua_pushnil(L);
		lua_pushliteral(L, "cannot start TLS");
		return 2;
	}
	lua_pushvalue(L, -1);
	c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

/* conn:handlers(t): set the handlers (an accepted connection starts with none) */
static int conn_handlers(lua_State *L)
{
	check_conn(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_pushvalue(L, 2);
	lua_setiuservalue(L, 1, 1);
	return 0;
}

/* conn:send(bytes) -> true | nil, err */
static int conn_send(lua_State *L)
{
	conn *c = check_conn(L, 1);
	size_t n;
	const char *b = luaL_checklstring(L, 2, &n);
	if (!c->s) {
		lua_pushnil(L);
		lua_pushliteral(L, "connection closed");
		return 2;
	}
	if (sip_stream_write(c->s, b, n)) {
		lua_pushnil(L);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* conn:queued() -> unsent bytes */
static int conn_queued(lua_State *L)
{
	conn *c = check_conn(L, 1);
	lua_pushinteger(L, c->s ? (lua_Integer)sip_stream_queued(c->s) : 0);
	return 1;
}

/* conn:close([after_write]) : no handler is called */
static int conn_close(lua_State *L)
{
	conn *c = check_conn(L, 1);
	int drain = lua_toboolean(L, 2);
	if (c->s) {
		sip_stream *s = c->s;
		forget(L, c);
		if (drain)
			sip_stream_close_after_write(s);
		else
			sip_stream_close(s);
	}
	return 0;
}

static int conn_is_open(lua_State *L)
{
	lua_pushboolean(L, check_conn(L, 1)->s != NULL);
	return 1;
}

static int push_addr(lua_State *L, const struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN];
	int port;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
		port = ntohs(a->sin6_port);
	} else {
		const struct sockaddr_in *a = (const void *)ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
		port = ntohs(a->sin_port);
	}
	lua_pushstring(L, host);
	lua_pushinteger(L, port);
	return 2;
}

/* conn:peer() -> host, port | nil */
static int conn_peer(lua_State *L)
{
	conn *c = check_conn(L, 1);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (!c->s || sip_stream_peer(c->s, &ss, &sl))
		return 0;
	return push_addr(L, &ss);
}

static int conn_gc(lua_State *L)
{
	conn *c = check_conn(L, 1);
	if (c->s) {   /* only when the state closes: an open one is held by the registry */
		sip_stream_close(c->s);
		c->s = NULL;
	}
	return 0;
}

static int conn_tostring(lua_State *L)
{
	conn *c = check_conn(L, 1);
	lua_pushfstring(L, "sip.msrp.conn (%s)", c->s ? "open" : "closed");
	return 1;
}

/* --- listeners ------------------------------------------------------------------------- */

static void on_accept(void *arg, int fd, const struct sockaddr *peer, socklen_t plen)
{
	listener *ls = arg;
	lua_State *L = ls->lp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, ls->ref);
	lua_getiuservalue(L, -1, 1);   /* the accept function */
	lua_remove(L, -2);
	conn *c = new_conn(L, ls->lp, ls->max_frame);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	sip_stream_limits lim = limits_of(ls->max_frame);
	c->s = sip_stream_adopt(ls->lp->loop, fd, &lim, &conn_hooks, c);
	if (c->s && ls->tls && sip_stream_start_tls(c->s, ls->tls, 1, NULL)) {
		sip_stream_close(c->s);
		c->s = NULL;
	}
	if (!c->s) {
		lua_pop(L, 2);
		return;
	}
	lua_pushvalue(L, -1);
	c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK)
		report(L, "MSRP accept handler");
	(void)peer;
	(void)plen;
}

/* core.msrp_listen(loop, host, port, on_accept(conn) [, max_frame [, tls]]) -> listener | nil, err
 * tls: a core.msrp_tls context with a certificate: every connection is TLS (msrps:). */
static int l_listen(lua_State *L)
{
	lsip_loop *lp = lsip_check_loop(L, 1);
	const char *host = luaL_checkstring(L, 2);
	lua_Integer port = luaL_checkinteger(L, 3);
	luaL_checktype(L, 4, LUA_TFUNCTION);
	size_t max_frame = opt_max_frame(L, 5);
	SSL_CTX *tls = opt_tls(L, 6);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (port < 0 || port > 65535 || sip_tp_parse_addr(host, (int)port, &ss, &sl)) {
		lua_pushnil(L);
		lua_pushliteral(L, "an IP address and port expected");
		return 2;
	}
	listener *ls = lua_newuserdatauv(L, sizeof *ls, 2);
	memset(ls, 0, sizeof *ls);
	ls->lp = lp;
	ls->ref = LUA_NOREF;
	ls->max_frame = max_frame;
	ls->tls = tls;
	luaL_setmetatable(L, LISTENER_MT);
	lua_pushvalue(L, 4);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, 6);
	lua_setiuservalue(L, -2, 2);   /* the context lives as long as the listener */
	ls->l = sip_stream_listen(lp->loop, (struct sockaddr *)&ss, sl, on_accept, ls);
	if (!ls->l) {
		lua_pushnil(L);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	lua_pushvalue(L, -1);
	ls->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

static listener *check_listener(lua_State *L, int i)
{
	return luaL_checkudata(L, i, LISTENER_MT);
}

/* listener:address() -> host, port */
static int listener_address(lua_State *L)
{
	listener *ls = check_listener(L, 1);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (!ls->l || sip_stream_listener_addr(ls->l, &ss, &sl))
		return 0;
	return push_addr(L, &ss);
}

static int listener_close(lua_State *L)
{
	listener *ls = check_listener(L, 1);
	if (ls->l) {
		sip_stream_listener_free(ls->l);
		ls->l = NULL;
	}
	if (ls->ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, ls->ref);
		ls->ref = LUA_NOREF;
	}
	return 0;
}

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
		   lua_CFunction tostr)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__gc");
	if (tostr) {
		lua_pushcfunction(L, tostr);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
}

static const luaL_Reg conn_methods[] = {
	{ "handlers", conn_handlers }, { "send", conn_send }, { "queued", conn_queued },
	{ "close", conn_close }, { "is_open", conn_is_open }, { "peer", conn_peer },
	{ NULL, NULL },
};

static const luaL_Reg listener_methods[] = {
	{ "address", listener_address }, { "close", listener_close }, { NULL, NULL },
};

static const luaL_Reg asm_methods[] = {
	{ "add", asm_add }, { "received", asm_received }, { NULL, NULL },
};

void lsip_open_msrp(lua_State *L)
{
	new_mt(L, CONN_MT, conn_methods, conn_gc, conn_tostring);
	new_mt(L, LISTENER_MT, listener_methods, listener_close, NULL);
	new_mt(L, ASM_MT, asm_methods, asm_gc, NULL);
	static const luaL_Reg no_methods[] = { { NULL, NULL } };
	new_mt(L, TLS_MT, no_methods, tls_gc, NULL);
	static const luaL_Reg fns[] = {
		{ "msrp_parse", l_parse }, { "msrp_build", l_build }, { "msrp_id", l_id },
		{ "msrp_assembler", l_assembler }, { "msrp_connect", l_connect },
		{ "msrp_listen", l_listen }, { "msrp_tls", l_tls }, { NULL, NULL },
	};
	luaL_setfuncs(L, fns, 0);
}
