/* lsip_msg.c: the message userdata — parse, field access, edits, serialization.
 * A parsed message keeps its source string alive and cuts Lua strings only on access. */
#include "lsip.h"
#include "fmt.h"
#include "build.h"
#include "rand.h"
#include "uri.h"
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* User values of a message: 1 = the Lua string it was parsed from (zero-copy anchor),
 * 2 = a table of fields that Lua code attaches (req.source, endpoint context, ...). */
#define UV_SOURCE 1
#define UV_EXTRA 2


/* A parsed message that owns no C memory (its headers in its own userdata, no edits)
 * needs no finalizer, and finalizers are a good part of what a parse costs the GC. Such
 * messages get MSG_MT_PLAIN, LSIP_MSG_MT without __gc; lsip_checkmsg, which hands a message
 * to code that may edit it (and so allocate), moves it to LSIP_MSG_MT first. */
#define MSG_MT_PLAIN "sip.msg (owns nothing)"

/* The two metatables are also in the registry under these addresses: a light userdata key
 * costs less than a name (no string hashing and compare) on every message handed around. */
static const char mt_key, plain_key;

static void push_mt(lua_State *L, int plain)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, plain ? &plain_key : &mt_key);
}

/* The fields of a new message userdata besides its sip_msg. */
static void init_udata(lsip_msg *u, int plain)
{
	u->magic = LSIP_MSG_MAGIC;
	u->plain = (unsigned char)plain;
	u->txn = 0;
	u->attached = u->replied_final = u->validated = u->blob_len = u->prepared = 0;
}

sip_msg *lsip_msg_new(lua_State *L)
{
	lsip_msg *u = lua_newuserdatauv(L, sizeof *u, LSIP_MSG_NUV);
	u->valid = 0;
	init_udata(u, 0);
	memset(&u->m, 0, sizeof u->m);   /* a message that never parsed frees nothing */
	push_mt(L, 0);
	lua_setmetatable(L, -2);
	return &u->m;
}

/* The message at idx, or NULL; *plain says whether it has MSG_MT_PLAIN. */
static lsip_msg *test_udata(lua_State *L, int idx, int *plain)
{
	lsip_msg *u = lua_touserdata(L, idx);
	if (!u || lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) < sizeof *u ||
	    u->magic != LSIP_MSG_MAGIC)
		return NULL;
	*plain = u->plain;
	return u;
}

static lsip_msg *check_udata(lua_State *L, int idx)
{
	int plain;
	lsip_msg *u = test_udata(L, idx, &plain);
	if (!u)
		luaL_typeerror(L, idx, LSIP_MSG_MT);
	return u;
}

/* A valid message for reading only: it keeps the metatable it has. */
static sip_msg *read_msg(lua_State *L, int idx)
{
	lsip_msg *u = check_udata(L, idx);
	if (!u->valid)
		luaL_argerror(L, idx, "message is not valid");
	return &u->m;
}

/* The binding marks a message usable once it parsed. */
static void msg_set_valid(lua_State *L, int idx)
{
	check_udata(L, idx)->valid = 1;
}

sip_msg *lsip_checkmsg(lua_State *L, int idx)
{
	int plain;
	lsip_msg *u = test_udata(L, idx, &plain);
	if (!u)
		luaL_typeerror(L, idx, LSIP_MSG_MT);
	if (!u->valid)
		luaL_argerror(L, idx, "message is not valid");
	if (plain) {
		idx = lua_absindex(L, idx);
		push_mt(L, 0);
		lua_setmetatable(L, idx);
		u->plain = 0;
	}
	return &u->m;
}

static void push_pl(lua_State *L, sip_pl s)
{
	lua_pushlstring(L, s.p ? s.p : "", s.n);
}

static void push_value(lua_State *L, const sip_hdr *h, sip_pl v)
{
	if (!h->folded) {
		push_pl(L, v);
		return;
	}
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, v.n);
	luaL_pushresultsize(&b, sip_unfold(v, out, v.n));
}

static void get_limits(lua_State *L, int idx, sip_limits *lim, int *stream)
{
	*lim = sip_limits_default;
	*stream = 0;
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	if (lua_getfield(L, idx, "max_size") != LUA_TNIL)
		lim->max_msg = (size_t)luaL_checkinteger(L, -1);
	if (lua_getfield(L, idx, "max_headers") != LUA_TNIL)
		lim->max_hdrs = (unsigned)luaL_checkinteger(L, -1);
	if (lua_getfield(L, idx, "max_line") != LUA_TNIL)
		lim->max_line = (size_t)luaL_checkinteger(L, -1);
	if (lua_getfield(L, idx, "stream") != LUA_TNIL)
		*stream = lua_toboolean(L, -1);
	lua_pop(L, 4);
}

/* sip.parse(bytes [, opts]) -> msg | nil, reason. This is sip.parse itself (no Lua
 * wrapper: it is the hot path), so a non-string is an expected failure, not an error.
 * Upvalues: the message metatables, with and without __gc (saving registry lookups). */
static int l_parse(lua_State *L)
{
	size_t len;
	sip_limits lim;
	int stream;
	const char *err;
	if (lua_type(L, 1) != LUA_TSTRING) {
		lua_pushnil(L);
		lua_pushliteral(L, "not a string");
		return 2;
	}
	const char *s = lua_tolstring(L, 1, &len);
	get_limits(L, 2, &lim, &stream);
	/* Parse on the stack first: a bad message costs no userdata, and a good one gets a
	 * userdata of the exact size for its headers. */
	sip_msg tmp;
	sip_hdr slots[SIP_MSG_SLOTS];
	if (sip_msg_parse_into(&tmp, slots, SIP_MSG_SLOTS, s, len, 0, stream, &lim, &err)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	unsigned n = tmp.hdrs == slots ? tmp.nhdrs : 0;
	lsip_msg *u = lua_newuserdatauv(L, sizeof *u + n * sizeof(sip_hdr), 2);
	sip_msg_move(&u->m, &tmp, u->slots, n);
	u->valid = 1;
	int owns = u->m.hdrs != u->slots;   /* more headers than slots: a heap array */
	init_udata(u, !owns);
	lua_pushvalue(L, lua_upvalueindex(owns ? 1 : 2));
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, UV_SOURCE);
	return 1;
}

/* Push a message userdata holding a clone of src (its headers in the userdata itself),
 * with blen bytes of blob after them (at most 255). */
int lsip_msg_push_clone(lua_State *L, const sip_msg *src, const void *blob, size_t blen)
{
	const char *err;
	/* two slots to spare: a proxy adds its Via and a Record-Route without a header array
	 * of their own on the heap */
	unsigned n = src->nhdrs + 2;
	if (blen > 255)
		blen = 0;
	lsip_msg *u = lua_newuserdatauv(L, sizeof *u + n * sizeof(sip_hdr) + blen, LSIP_MSG_NUV);
	u->valid = 0;
	init_udata(u, 0);
	memset(&u->m, 0, sizeof u->m);
	push_mt(L, 0);   /* it owns its buffer: needs __gc */
	lua_setmetatable(L, -2);
	if (sip_msg_clone(&u->m, u->slots, n, src, &err)) {
		lua_pop(L, 1);
		return -1;
	}
	if (blen) {
		memcpy(u->slots + n, blob, blen);
		u->blob_len = (unsigned char)blen;
	}
	u->valid = 1;
	return 0;
}

const void *lsip_msg_blob(lua_State *L, int idx, size_t *len)
{
	int plain;
	lsip_msg *u = test_udata(L, idx, &plain);
	if (!u || !u->blob_len)
		return NULL;
	*len = u->blob_len;
	return u->slots + u->m.nslots;
}

/* Take a malloc'd buffer of wire text and push it as a new message (or nil, err). */
int lsip_msg_push_owned(lua_State *L, char *buf, size_t len)
{
	const char *err;
	sip_msg *m = lsip_msg_new(L);
	int r = sip_msg_parse(m, buf, len, 0, 0, NULL, &err);
	if (r) {
		free(buf);
		lua_pop(L, 1);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	m->owned = 1;
	msg_set_valid(L, -1);
	return 1;
}

static sip_hdr_id check_name(lua_State *L, int idx, const char **name, size_t *len)
{
	*name = luaL_checklstring(L, idx, len);
	if (*len == 0)
		luaL_argerror(L, idx, "empty header name");
	return sip_hdr_lookup(*name, *len);
}

/* msg:header(name) -> first value, or nil */
static int m_header(lua_State *L)
{
	sip_msg *m = read_msg(L, 1);
	const char *name;
	size_t nlen;
	sip_hdr_id id = check_name(L, 2, &name, &nlen);
	int i = sip_msg_find(m, id, name, nlen, 0);
	if (i < 0)
		return 0;
	const sip_hdr *h = &m->hdrs[i];
	if (sip_hdr_is_list(id)) {
		/* the first value of a comma list, as the shortcut fields see it */
		size_t pos = 0;
		sip_pl item;
		sip_list_next(h->value, &pos, &item);
		push_value(L, h, item);
		return 1;
	}
	push_value(L, h, h->value);
	return 1;
}

/* msg:headers(name) -> { every value, comma lists split }; msg:headers() -> all {name, value} */
static int m_headers(lua_State *L)
{
	sip_msg *m = read_msg(L, 1);
	if (lua_isnoneornil(L, 2)) {
		lua_createtable(L, (int)m->nhdrs, 0);
		for (unsigned i = 0; i < m->nhdrs; i++) {
			lua_createtable(L, 2, 0);
			push_pl(L, m->hdrs[i].name);
			lua_rawseti(L, -2, 1);
			push_value(L, &m->hdrs[i], m->hdrs[i].value);
			lua_rawseti(L, -2, 2);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		return 1;
	}
	const char *name;
	size_t nlen;
	sip_hdr_id id = check_name(L, 2, &name, &nlen);
	int list = sip_hdr_is_list(id);
	lua_newtable(L);
	lua_Integer k = 0;
	for (int i = sip_msg_find(m, id, name, nlen, 0); i >= 0;
	     i = sip_msg_find(m, id, name, nlen, i + 1)) {
		const sip_hdr *h = &m->hdrs[i];
		if (!list) {
			push_value(L, h, h->value);
			lua_rawseti(L, -2, ++k);
			continue;
		}
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(h->value, &pos, &item)) {
			if (item.n == 0)
				continue;
			push_value(L, h, item);
			lua_rawseti(L, -2, ++k);
		}
	}
	return 1;
}

static int edit_result(lua_State *L, int r, const char *what)
{
	if (r < 0) {
		lua_pushnil(L);
		lua_pushstring(L, what);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int m_set_header(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	const char *name, *val;
	size_t nlen, vlen;
	check_name(L, 2, &name, &nlen);
	val = luaL_checklstring(L, 3, &vlen);
	return edit_result(L, sip_msg_set_header(m, name, nlen, val, vlen), "bad header value");
}

static int m_add_header(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	const char *name, *val;
	size_t nlen, vlen;
	check_name(L, 2, &name, &nlen);
	val = luaL_checklstring(L, 3, &vlen);
	int top = lua_toboolean(L, 4);
	return edit_result(L, sip_msg_add_header(m, name, nlen, val, vlen, top), "bad header value");
}

static int m_remove_header(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	const char *name;
	size_t nlen;
	check_name(L, 2, &name, &nlen);
	lua_pushinteger(L, sip_msg_remove_header(m, name, nlen));
	return 1;
}

static int m_push_via(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	size_t vlen;
	const char *val = luaL_checklstring(L, 2, &vlen);
	return edit_result(L, sip_msg_add_header(m, "Via", 3, val, vlen, 1), "bad Via");
}

static int m_pop_via(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	return edit_result(L, sip_msg_remove_top_via(m), "no Via");
}

static int m_set_uri(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	return edit_result(L, sip_msg_set_uri(m, s, len), "bad Request-URI");
}

static int m_set_body(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	if (sip_msg_set_body(m, s, len))
		return luaL_error(L, "out of memory");
	if (!lua_isnoneornil(L, 3)) {
		size_t tl;
		const char *t = luaL_checklstring(L, 3, &tl);
		if (sip_msg_set_header(m, "Content-Type", 12, t, tl))
			return edit_result(L, -1, "bad Content-Type");
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* §16.6 step 3: decrement, or add 70 when absent. Returns the new value. */
static int m_decrement_max_forwards(lua_State *L)
{
	int v = sip_msg_decrement_max_forwards(lsip_checkmsg(L, 1));
	if (v < 0)
		return luaL_error(L, "out of memory");
	lua_pushinteger(L, v);
	return 1;
}

static int m_tostring(lua_State *L)
{
	lsip_msg *u = check_udata(L, 1);
	if (!u->valid) {
		lua_pushliteral(L, "sip.msg (invalid)");
		return 1;
	}
	size_t need = sip_msg_print(&u->m, NULL, 0);
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, need);
	sip_msg_print(&u->m, out, need);
	luaL_pushresultsize(&b, need);
	return 1;
}

/* msg:response(code [, reason [, to_tag]]) -> a new response message */
static int m_response(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	lua_Integer code = luaL_checkinteger(L, 2);
	size_t rlen = 0, tlen = 0;
	const char *reason = luaL_optlstring(L, 3, NULL, &rlen);
	const char *tag = luaL_optlstring(L, 4, NULL, &tlen);
	if (!m->is_request)
		return luaL_argerror(L, 1, "not a request");
	if (code < 100 || code > 699)
		return luaL_argerror(L, 2, "status code out of range");
	for (size_t i = 0; i < rlen; i++)
		if (reason[i] == '\r' || reason[i] == '\n')
			return luaL_argerror(L, 3, "reason phrase with a line break");
	char ttag[SIP_TAG_LEN];
	if (!tag) {
		sip_build_tag(ttag);
		tag = ttag;
		tlen = sizeof ttag;
	}
	size_t need = sip_build_response(m, (int)code, reason, rlen, tag, tlen, NULL, 0, NULL, 0);
	char *buf = malloc(need);
	if (!buf)
		return luaL_error(L, "out of memory");
	sip_build_response(m, (int)code, reason, rlen, tag, tlen, NULL, 0, buf, need);
	return lsip_msg_push_owned(L, buf, need);
}

static void push_params(lua_State *L, sip_pl params)
{
	lua_newtable(L);
	size_t pos = 0;
	sip_pl n, v;
	while (params.n && params.p[0] == ';') {
		params.p++;
		params.n--;
	}
	while (sip_param_next(params, &pos, &n, &v) == 1) {
		luaL_Buffer b;
		char *k = luaL_buffinitsize(L, &b, n.n);
		for (size_t i = 0; i < n.n; i++)
			k[i] = (char)(n.p[i] | (n.p[i] >= 'A' && n.p[i] <= 'Z' ? 0x20 : 0));
		luaL_pushresultsize(&b, n.n);
		if (v.n >= 2 && v.p[0] == '"')
			lua_pushlstring(L, v.p + 1, v.n - 2);
		else if (v.n)
			push_pl(L, v);
		else
			lua_pushboolean(L, 1);
		lua_rawset(L, -3);
	}
}

static void set_str(lua_State *L, const char *k, sip_pl v)
{
	if (v.n == 0)
		return;
	push_pl(L, v);
	lua_setfield(L, -2, k);
}

/* Percent-decoded copy (esc01: users with escaped spaces); raw when malformed. */
static void set_decoded(lua_State *L, const char *k, sip_pl v)
{
	if (v.n == 0)
		return;
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, v.n);
	long n = sip_pct_decode(v, out, v.n);
	if (n < 0) {
		memcpy(out, v.p, v.n);
		n = (long)v.n;
	}
	luaL_pushresultsize(&b, (size_t)n);
	lua_setfield(L, -2, k);
}

/* Push the URI table of sip.uri.parse; returns 0 or -1 (nothing pushed) with *err. */
static int push_uri(lua_State *L, sip_pl s, const char **err)
{
	sip_uri u;
	if (sip_uri_parse(&u, s, err))
		return -1;
	lua_createtable(L, 0, 8);
	luaL_Buffer b;
	char *sc = luaL_buffinitsize(L, &b, u.scheme.n);
	for (size_t i = 0; i < u.scheme.n; i++)
		sc[i] = (char)(u.scheme.p[i] | 0x20);
	luaL_pushresultsize(&b, u.scheme.n);
	lua_setfield(L, -2, "scheme");
	if (u.is_sip || sip_pl_casecmp(u.scheme, "tel"))
		set_decoded(L, "user", u.user);
	else
		set_str(L, "opaque", u.user);
	set_decoded(L, "password", u.password);
	set_str(L, "host", u.host);
	if (u.port) {
		lua_pushinteger(L, u.port);
		lua_setfield(L, -2, "port");
	}
	push_params(L, u.params);
	lua_setfield(L, -2, "params");
	lua_newtable(L);
	if (u.headers.n) {
		const char *p = u.headers.p, *end = p + u.headers.n;
		while (p < end) {
			const char *amp = memchr(p, '&', (size_t)(end - p));
			const char *e = amp ? amp : end;
			const char *eq = memchr(p, '=', (size_t)(e - p));
			sip_pl k = sip_pl_make(p, eq ? (size_t)(eq - p) : (size_t)(e - p));
			sip_pl v = eq ? sip_pl_make(eq + 1, (size_t)(e - eq - 1)) : sip_pl_make(e, 0);
			lua_pushlstring(L, k.p, k.n);
			char *out = luaL_buffinitsize(L, &b, v.n);
			long n = sip_pct_decode(v, out, v.n);
			luaL_pushresultsize(&b, n < 0 ? 0 : (size_t)n);
			lua_rawset(L, -3);
			p = e + (amp ? 1 : 0);
		}
	}
	lua_setfield(L, -2, "headers");
	return 0;
}

/* sip.core.uri_parse(s) -> table | nil, reason */
static int l_uri_parse(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *err;
	if (push_uri(L, sip_pl_make(s, len), &err)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

/* Push a name-addr table: display, uri (string), params, tag. */
static int push_addr(lua_State *L, sip_pl s, const char **err)
{
	sip_addr a;
	if (sip_addr_parse(&a, s, err))
		return -1;
	lua_createtable(L, 0, 5);
	if (a.star) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "star");
		return 0;
	}
	if (a.display.n) {
		if (a.quoted) {
			luaL_Buffer b;
			luaL_buffinit(L, &b);
			for (size_t i = 0; i < a.display.n; i++) {
				if (a.display.p[i] == '\\' && i + 1 < a.display.n)
					i++;
				luaL_addchar(&b, a.display.p[i]);
			}
			luaL_pushresult(&b);
		} else {
			push_pl(L, a.display);
		}
		lua_setfield(L, -2, "display");
	}
	push_pl(L, a.uri);
	lua_setfield(L, -2, "uri");
	push_params(L, a.params);
	lua_getfield(L, -1, "tag");
	lua_setfield(L, -3, "tag");
	lua_setfield(L, -2, "params");
	return 0;
}

/* sip.core.addr_parse(s) -> {display=, uri=, params=, tag=} | nil, reason */
static int l_addr_parse(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *err;
	if (push_addr(L, sip_pl_make(s, len), &err)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

static void push_via(lua_State *L, sip_pl v)
{
	sip_via via;
	const char *err;
	if (sip_via_parse(&via, v, &err)) {
		lua_pushnil(L);
		return;
	}
	lua_createtable(L, 0, 10);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < via.protocol.n; i++)
		if (!(via.protocol.p[i] == ' ' || via.protocol.p[i] == '\t' ||
		      via.protocol.p[i] == '\r' || via.protocol.p[i] == '\n'))
			luaL_addchar(&b, via.protocol.p[i]);
	luaL_pushresult(&b);
	lua_setfield(L, -2, "protocol");
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < via.transport.n; i++) {
		char c = via.transport.p[i];
		luaL_addchar(&b, c >= 'a' && c <= 'z' ? (char)(c - 32) : c);
	}
	luaL_pushresult(&b);
	lua_setfield(L, -2, "transport");
	set_str(L, "host", via.host);
	if (via.port) {
		lua_pushinteger(L, via.port);
		lua_setfield(L, -2, "port");
	}
	set_str(L, "branch", via.branch);
	set_str(L, "received", via.received);
	set_str(L, "maddr", via.maddr);
	set_str(L, "ttl", via.ttl);
	if (via.rport >= 0) {
		if (via.rport)
			lua_pushinteger(L, via.rport);
		else
			lua_pushboolean(L, 1);
		lua_setfield(L, -2, "rport");
	}
	push_params(L, via.params);
	lua_setfield(L, -2, "params");
}

/* msg:vias() -> every Via value parsed, top first */
static int m_vias(lua_State *L)
{
	sip_msg *m = read_msg(L, 1);
	lua_newtable(L);
	lua_Integer k = 0;
	for (int i = m->first[SIP_HDR_VIA]; i >= 0; i = sip_msg_find(m, SIP_HDR_VIA, NULL, 0, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(m->hdrs[i].value, &pos, &item)) {
			push_via(L, item);
			lua_rawseti(L, -2, ++k);
		}
	}
	return 1;
}

/* msg:via([n]) -> the n-th Via value parsed (1 = top), parsing no other */
static int m_via(lua_State *L)
{
	sip_msg *m = lsip_checkmsg(L, 1);
	lua_Integer want = luaL_optinteger(L, 2, 1), k = 0;
	for (int i = m->first[SIP_HDR_VIA]; i >= 0; i = sip_msg_find(m, SIP_HDR_VIA, NULL, 0, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(m->hdrs[i].value, &pos, &item))
			if (++k == want) {
				push_via(L, item);
				return 1;
			}
	}
	return 0;
}

/* msg:addr(name [, n]) -> the n-th name-addr of From/To/Contact/Route... parsed */
static int m_addr(lua_State *L)
{
	sip_msg *m = read_msg(L, 1);
	const char *name;
	size_t nlen;
	sip_hdr_id id = check_name(L, 2, &name, &nlen);
	lua_Integer want = luaL_optinteger(L, 3, 1), k = 0;
	for (int i = sip_msg_find(m, id, name, nlen, 0); i >= 0;
	     i = sip_msg_find(m, id, name, nlen, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		while (sip_list_next(m->hdrs[i].value, &pos, &item)) {
			if (++k != want)
				continue;
			const char *err;
			if (push_addr(L, item, &err)) {
				lua_pushnil(L);
				lua_pushstring(L, err);
				return 2;
			}
			return 1;
		}
	}
	return 0;
}

/* The URI of the first name-addr of header `name` (the one msg:addr(name) gives), or 0 when
 * there is none or it does not parse. */
static int header_addr_uri(sip_msg *m, lua_State *L, int idx, sip_pl *uri)
{
	const char *name, *err;
	size_t nlen;
	sip_hdr_id id = check_name(L, idx, &name, &nlen);
	for (int i = sip_msg_find(m, id, name, nlen, 0); i >= 0;
	     i = sip_msg_find(m, id, name, nlen, i + 1)) {
		size_t pos = 0;
		sip_pl item;
		sip_addr a;
		if (!sip_list_next(m->hdrs[i].value, &pos, &item))
			continue;
		if (sip_addr_parse(&a, item, &err) || a.star)
			return 0;
		*uri = a.uri;
		return 1;
	}
	return 0;
}

/* core.uri_hostport(uri or request [, header]) -> host (lowercase, IPv6 without []),
 * port | nil, user | nil: what routing needs, without building tables. With header (a
 * request's "From", "To", ...): of the URI msg:addr(header).uri names, nil without one. */
static int l_uri_hostport(lua_State *L)
{
	size_t len;
	const char *s;
	if (lua_type(L, 1) == LUA_TUSERDATA) {
		/* a request: its Request-URI as it is now, without making a Lua string of it */
		sip_msg *m = read_msg(L, 1);
		if (!m->is_request)
			return luaL_argerror(L, 1, "a request or a URI string expected");
		s = m->uri.p ? m->uri.p : "";
		len = m->uri.n;
		if (!lua_isnoneornil(L, 2)) {
			sip_pl uri;
			if (!header_addr_uri(m, L, 2, &uri))
				return 0;
			s = uri.p;
			len = uri.n;
		}
	} else {
		s = luaL_checklstring(L, 1, &len);
	}
	sip_uri u;
	const char *err;
	if (sip_uri_parse(&u, sip_pl_make(s, len), &err) || !u.is_sip || u.host.n == 0)
		return 0;
	sip_pl h = u.host;
	if (h.n >= 2 && h.p[0] == '[') {
		h.p++;
		h.n -= 2;
	}
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, h.n);
	for (size_t k = 0; k < h.n; k++)
		out[k] = (char)(h.p[k] >= 'A' && h.p[k] <= 'Z' ? h.p[k] + 32 : h.p[k]);
	luaL_pushresultsize(&b, h.n);
	if (u.port)
		lua_pushinteger(L, u.port);
	else
		lua_pushnil(L);
	if (u.user.n == 0) {
		lua_pushnil(L);
		return 3;
	}
	char *uo = luaL_buffinitsize(L, &b, u.user.n);
	long n = sip_pct_decode(u.user, uo, u.user.n);
	if (n < 0) {
		memcpy(uo, u.user.p, u.user.n);
		n = (long)u.user.n;
	}
	luaL_pushresultsize(&b, (size_t)n);
	return 3;
}

static int m_gc(lua_State *L)
{
	lsip_msg *u = check_udata(L, 1);
	if (u->valid)
		sip_msg_free(&u->m);
	u->valid = 0;
	return 0;
}

enum field {
	F_METHOD = 1, F_URI, F_STATUS, F_REASON, F_BODY, F_CALL_ID, F_CSEQ, F_CSEQ_METHOD,
	F_FROM_TAG, F_TO_TAG, F_BRANCH, F_MAX_FORWARDS, F_CONTENT_LENGTH, F_CONTENT_TYPE,
	F_IS_REQUEST, F_FROM, F_TO, F_SIZE, F_OUR_ROUTE,
	/* the endpoint's fields of a received request: writable, see attached_get/set */
	F_TXN, F_EP, F_SOURCE, F_REPLIED_FINAL,
};

static const char *const field_names[] = {
	"method", "uri", "status", "reason", "body", "call_id", "cseq", "cseq_method",
	"from_tag", "to_tag", "branch", "max_forwards", "content_length", "content_type",
	"is_request", "from", "to", "size", "our_route", "_txn", "_ep", "source", "replied_final", NULL,
};

static int push_field(lua_State *L, sip_msg *m, int f)
{
	int i;
	switch (f) {
	case F_METHOD: if (!m->is_request) return 0; push_pl(L, m->method); return 1;
	case F_URI: if (!m->is_request) return 0; push_pl(L, m->uri); return 1;
	case F_STATUS: if (m->is_request) return 0; lua_pushinteger(L, m->status); return 1;
	case F_REASON: if (m->is_request) return 0; push_pl(L, m->reason); return 1;
	case F_BODY: push_pl(L, m->body); return 1;
	case F_CALL_ID: push_pl(L, m->call_id); return 1;
	case F_CSEQ: lua_pushinteger(L, m->cseq); return 1;
	case F_CSEQ_METHOD: push_pl(L, m->cseq_method); return 1;
	case F_FROM_TAG: if (!m->from_tag.n) return 0; push_pl(L, m->from_tag); return 1;
	case F_TO_TAG: if (!m->to_tag.n) return 0; push_pl(L, m->to_tag); return 1;
	case F_BRANCH: if (!m->branch.n) return 0; push_pl(L, m->branch); return 1;
	case F_MAX_FORWARDS: if (m->max_forwards < 0) return 0; lua_pushinteger(L, m->max_forwards); return 1;
	case F_CONTENT_LENGTH: lua_pushinteger(L, (lua_Integer)m->body.n); return 1;
	case F_IS_REQUEST: lua_pushboolean(L, m->is_request); return 1;
	case F_SIZE: lua_pushinteger(L, (lua_Integer)sip_msg_print(m, NULL, 0)); return 1;
	case F_OUR_ROUTE:   /* true: it came along our Record-Route of its dialog (§16.4) */
		if (m->route_ours == SIP_ROUTE_NONE) return 0;
		lua_pushboolean(L, m->route_ours == SIP_ROUTE_KEYED); return 1;
	case F_CONTENT_TYPE: i = m->first[SIP_HDR_CONTENT_TYPE]; break;
	case F_FROM: i = m->first[SIP_HDR_FROM]; break;
	case F_TO: i = m->first[SIP_HDR_TO]; break;
	default: return 0;
	}
	if (i < 0)
		return 0;
	push_value(L, &m->hdrs[i], m->hdrs[i].value);
	return 1;
}

/* __index: methods (upvalue 1), then fields (upvalue 2: name -> enum), then extras. */
/* The message behind a metamethod's first argument. Only our metatables carry these
 * metamethods, so the type check is a size check, not registry lookups on every access. */
static lsip_msg *meta_self(lua_State *L)
{
	lsip_msg *u = lua_touserdata(L, 1);
	if (lua_type(L, 1) != LUA_TUSERDATA || lua_rawlen(L, 1) < sizeof(lsip_msg) ||
	    u->magic != LSIP_MSG_MAGIC)
		luaL_typeerror(L, 1, LSIP_MSG_MT);
	return u;
}

/* __index: one lookup in the names table (upvalue 1), where a method name maps to its
 * function and a field name to its number; then the fields Lua code attached. */
/* A field Lua code attached (index 2 is its name), from the extra table. */
static int extra_get(lua_State *L)
{
	if (lua_getiuservalue(L, 1, UV_EXTRA) != LUA_TTABLE)
		return 0;
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* Push the table of fields Lua code attached to message msg (made when there is none). */
static void push_extra(lua_State *L, int msg)
{
	if (lua_getiuservalue(L, msg, UV_EXTRA) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setiuservalue(L, msg, UV_EXTRA);
	}
}

/* Set field (index 2) = value (index 3) in the extra table. */
static void extra_set(lua_State *L)
{
	push_extra(L, 1);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	lua_rawset(L, -3);
	lua_pop(L, 1);
}

/* req._txn, req._ep, req.source, req.replied_final. _ep and source live in user values;
 * a message made with fewer of them (sip.parse) keeps them in its extra table instead. */
static int attached_get(lua_State *L, lsip_msg *u, int f)
{
	switch (f) {
	case F_TXN:
		if (!u->attached)
			return 0;
		lua_pushinteger(L, u->txn);
		return 1;
	case F_REPLIED_FINAL:
		if (!u->replied_final)
			return 0;
		lua_pushboolean(L, 1);
		return 1;
	default: {
		int t = lua_getiuservalue(L, 1, f == F_EP ? LSIP_MSG_UV_EP : LSIP_MSG_UV_SOURCE);
		if (t != LUA_TNONE)
			return t != LUA_TNIL;
		lua_pop(L, 1);
		return extra_get(L);
	}
	}
}

static void attached_set(lua_State *L, lsip_msg *u, int f)
{
	switch (f) {
	case F_TXN:
		u->attached = !lua_isnil(L, 3);
		u->txn = lua_isinteger(L, 3) ? lua_tointeger(L, 3) : 0;
		return;
	case F_REPLIED_FINAL:
		u->replied_final = (unsigned char)lua_toboolean(L, 3);
		return;
	default:
		lua_pushvalue(L, 3);
		if (!lua_setiuservalue(L, 1, f == F_EP ? LSIP_MSG_UV_EP : LSIP_MSG_UV_SOURCE))
			extra_set(L);
	}
}

static int m_index(lua_State *L)
{
	lsip_msg *u = meta_self(L);
	lua_pushvalue(L, 2);
	int t = lua_rawget(L, lua_upvalueindex(1));
	if (t == LUA_TNUMBER) {
		int f = (int)lua_tointeger(L, -1);
		lua_pop(L, 1);
		if (f >= F_TXN)
			return attached_get(L, u, f);
		if (u->valid && push_field(L, &u->m, f))
			return 1;
		return 0;
	}
	if (t != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	return extra_get(L);
}

/* The endpoint's fields of a request it received (_ep, _txn, source), set in one go (one
 * table made to its size) instead of three __newindex round trips. msg and ep are absolute
 * stack indexes. */
void lsip_msg_attach(lua_State *L, int msg, int ep, lua_Integer txn, int source)
{
	lsip_msg *u = lua_touserdata(L, msg);
	u->txn = txn;
	u->attached = 1;
	lua_pushvalue(L, ep);
	if (lua_setiuservalue(L, msg, LSIP_MSG_UV_EP)) {
		lua_pushvalue(L, source);
		lua_setiuservalue(L, msg, LSIP_MSG_UV_SOURCE);
		return;
	}
	/* a message from sip.parse: two user values only */
	push_extra(L, msg);
	lua_pushvalue(L, ep);
	lua_setfield(L, -2, "_ep");
	lua_pushvalue(L, source);
	lua_setfield(L, -2, "source");
	lua_pop(L, 1);
}

/* msg:_attach(ep, txn, source) */
static int m_attach(lua_State *L)
{
	meta_self(L);
	luaL_optstring(L, 4, NULL);
	lua_settop(L, 4);
	lsip_msg_attach(L, 1, 2, luaL_checkinteger(L, 3), 4);
	return 0;
}

/* __newindex: scripts may attach their own fields; parsed fields are read-only. */
static int m_newindex(lua_State *L)
{
	lsip_msg *u = meta_self(L);
	lua_pushvalue(L, 2);
	int t = lua_rawget(L, lua_upvalueindex(1));
	if (t == LUA_TNUMBER && lua_tointeger(L, -1) >= F_TXN) {
		attached_set(L, u, (int)lua_tointeger(L, -1));
		return 0;
	}
	if (t != LUA_TNIL)
		return luaL_error(L, "field '%s' is read-only (use the edit methods)",
				  lua_tostring(L, 2));
	lua_pop(L, 1);
	extra_set(L);
	return 0;
}

static const luaL_Reg methods[] = {
	{ "header", m_header },
	{ "headers", m_headers },
	{ "set_header", m_set_header },
	{ "add_header", m_add_header },
	{ "remove_header", m_remove_header },
	{ "push_via", m_push_via },
	{ "pop_via", m_pop_via },
	{ "set_uri", m_set_uri },
	{ "set_body", m_set_body },
	{ "decrement_max_forwards", m_decrement_max_forwards },
	{ "response", m_response },
	{ "vias", m_vias },
	{ "via", m_via },
	{ "addr", m_addr },
	{ "_attach", m_attach },
	{ NULL, NULL },
};

/* core.unique_hex(n) -> n hex characters unique in time and space, cheaply (branches) */
static int l_unique_hex(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	luaL_argcheck(L, n > 0 && n <= 256, 1, "1..256 expected");
	char buf[256];
	if (sip_unique_hex(buf, (size_t)n))
		return luaL_error(L, "RAND_bytes failed");
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

/* core.random_hex(n) -> n random hex characters (tags, branches, Call-IDs) */
static int l_random_hex(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	luaL_argcheck(L, n > 0 && n <= 256, 1, "1..256 expected");
	char buf[256];
	if (sip_random_hex(buf, (size_t)n))
		return luaL_error(L, "RAND_bytes failed");
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

/* core.header_name(name) -> canonical long form of a known header name (any case, compact
 * forms too), or the name as given */
static int l_header_name(lua_State *L)
{
	size_t len;
	const char *name = luaL_checklstring(L, 1, &len);
	const char *c = len ? sip_hdr_canonical(sip_hdr_lookup(name, len)) : NULL;
	if (c)
		lua_pushstring(L, c);
	else
		lua_settop(L, 1);
	return 1;
}

static const luaL_Reg funcs[] = {
	{ "header_name", l_header_name },
	{ "uri_parse", l_uri_parse },
	{ "addr_parse", l_addr_parse },
	{ "random_hex", l_random_hex },
	{ "unique_hex", l_unique_hex },
	{ "uri_hostport", l_uri_hostport },
	{ NULL, NULL },
};

/* Reason phrase table for Lua: core.reason(code) */
static int l_reason(lua_State *L)
{
	lua_pushstring(L, sip_reason_phrase((int)luaL_checkinteger(L, 1)));
	return 1;
}

void lsip_open_msg(lua_State *L)
{
	luaL_newmetatable(L, LSIP_MSG_MT);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &mt_key);
	/* names: methods (functions) and fields (their numbers) in one table, so an access
	 * costs one lookup; Lua code adds methods to it as core.msg_mt.methods */
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	for (int i = 0; field_names[i]; i++) {
		lua_pushinteger(L, i + 1);
		lua_setfield(L, -2, field_names[i]);
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "methods");
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, m_index, 1);
	lua_setfield(L, -3, "__index");
	lua_pushcclosure(L, m_newindex, 1);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, m_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, m_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, m_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "sip.msg");
	lua_setfield(L, -2, "__name");
	/* the twin without __gc: the same fields (__close included) */
	luaL_newmetatable(L, MSG_MT_PLAIN);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &plain_key);
	lua_pushnil(L);
	while (lua_next(L, -3)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
	lua_pushnil(L);
	lua_setfield(L, -2, "__gc");
	lua_pushvalue(L, -2);
	lua_insert(L, -2);
	lua_pushcclosure(L, l_parse, 2);
	lua_setfield(L, -3, "parse");
	lua_setfield(L, -2, "msg_mt");
	luaL_setfuncs(L, funcs, 0);
	lua_pushcfunction(L, l_reason);
	lua_setfield(L, -2, "reason");
}
