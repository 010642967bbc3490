/* lsip_auth.c: Lua face of auth.c — digest parsing, hashing, client answers and the
 * nonce/nc state userdata. Policy (challenges, failure limits) lives in lua/sip/auth.lua. */
#include <errno.h>
#include "lsip.h"
#include "auth.h"

#define LSIP_DIGEST_STATE_MT "sip.digest_state"

typedef struct lsip_digest_state {
	sip_nonce_key key;
	sip_nc_table *nc;
} lsip_digest_state;

static const char *parse_error(int err)
{
	switch (err) {
	case E2BIG: return "digest parameter value too long";
	case EEXIST: return "duplicate digest parameter";
	case ENOTSUP: return "not a Digest scheme";
	default: return "malformed digest header";
	}
}

static void set_field(lua_State *L, const char *name, sip_pl v)
{
	if (!v.p)
		return;
	lua_pushlstring(L, v.p, v.n);
	lua_setfield(L, -2, name);
}

/* core.digest_parse(value [, "challenge"|"credentials"]) -> table | nil, reason.
 * A non-Digest scheme gives a table holding only `scheme`. */
static int l_digest_parse(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	static const char *const kinds[] = { "any", "challenge", "credentials", NULL };
	int kind = luaL_checkoption(L, 2, "any", kinds);
	sip_digest d;
	int err = sip_digest_parse(&d, s, n);

	if (err == ENOTSUP) {
		lua_createtable(L, 0, 1);
		set_field(L, "scheme", d.scheme);
		return 1;
	}
	if (err) {
		luaL_pushfail(L);
		lua_pushstring(L, parse_error(err));
		return 2;
	}
	const char *missing = NULL;
	if ((kind == 1 && sip_digest_check_challenge(&d, &missing)) ||
	    (kind == 2 && sip_digest_check_credentials(&d, &missing))) {
		luaL_pushfail(L);
		lua_pushfstring(L, "digest %s without %s", kinds[kind], missing);
		return 2;
	}
	lua_createtable(L, 0, 16);
	set_field(L, "scheme", d.scheme);
	set_field(L, "realm", d.realm);
	set_field(L, "nonce", d.nonce);
	set_field(L, "opaque", d.opaque);
	set_field(L, "algorithm", d.algorithm);
	set_field(L, "qop", d.qop);
	set_field(L, "stale", d.stale);
	set_field(L, "domain", d.domain);
	set_field(L, "charset", d.charset);
	set_field(L, "userhash", d.userhash);
	set_field(L, "username", d.username);
	set_field(L, "uri", d.uri);
	set_field(L, "response", d.response);
	set_field(L, "cnonce", d.cnonce);
	set_field(L, "nc", d.nc);
	return 1;
}

/* Optional string field of the options table; absent gives a NULL slice. */
static sip_pl opt_field(lua_State *L, int t, const char *name)
{
	sip_pl v = { NULL, 0 };
	if (lua_getfield(L, t, name) != LUA_TNIL) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "option '%s' must be a string", name);
		v.p = lua_tolstring(L, -1, &v.n);
	}
	lua_pop(L, 1); /* the string stays alive in the options table */
	return v;
}

static sip_digest_alg check_alg(lua_State *L, sip_pl name)
{
	sip_digest_alg alg;
	if (sip_digest_alg_parse(name, &alg))
		luaL_error(L, "unknown digest algorithm '%s'", name.p);
	return alg;
}

/* core.digest_response{ algorithm=, username=, realm=, password= | ha1=, method=, uri=,
 * nonce=, cnonce=, nc=, qop=, body= } -> hex | nil, reason */
static int l_digest_response(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	sip_digest_input in = {
		.alg = check_alg(L, opt_field(L, 1, "algorithm")),
		.username = opt_field(L, 1, "username"),
		.realm = opt_field(L, 1, "realm"),
		.password = opt_field(L, 1, "password"),
		.ha1 = opt_field(L, 1, "ha1"),
		.method = opt_field(L, 1, "method"),
		.uri = opt_field(L, 1, "uri"),
		.nonce = opt_field(L, 1, "nonce"),
		.cnonce = opt_field(L, 1, "cnonce"),
		.nc = opt_field(L, 1, "nc"),
		.qop = opt_field(L, 1, "qop"),
		.body = opt_field(L, 1, "body"),
	};
	char out[SIP_DIGEST_HEX_MAX + 1];
	int err = sip_digest_response(&in, out);
	if (err) {
		luaL_pushfail(L);
		lua_pushstring(L, err == ENOTSUP ? "unsupported qop for this algorithm"
						 : "cannot compute digest (bad ha1?)");
		return 2;
	}
	lua_pushstring(L, out);
	return 1;
}

/* core.digest_hash(algorithm, part, ...) -> hex of the parts joined by ':' */
static int l_digest_hash(lua_State *L)
{
	size_t an;
	const char *a = luaL_checklstring(L, 1, &an);
	sip_digest_alg alg = check_alg(L, sip_pl_make(a, an));
	int n = lua_gettop(L) - 1;
	sip_pl *parts = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(sip_pl), 0);
	for (int i = 0; i < n; i++)
		parts[i].p = luaL_checklstring(L, i + 2, &parts[i].n);
	char out[SIP_DIGEST_HEX_MAX + 1];
	if (sip_digest_hash(alg, parts, (size_t)n, out))
		return luaL_error(L, "digest hash failed");
	lua_pushstring(L, out);
	return 1;
}

/* core.digest_equal(a, b) -> boolean, in time independent of where they differ */
static int l_digest_equal(lua_State *L)
{
	sip_pl a, b;
	a.p = luaL_checklstring(L, 1, &a.n);
	b.p = luaL_checklstring(L, 2, &b.n);
	lua_pushboolean(L, sip_digest_equal(a, b));
	return 1;
}

/* core.digest_authorization(challenge, { user=|username=, password=, method=, uri=,
 * body=, nc=, cnonce= }) -> credentials value | nil, reason */
static int l_digest_authorization(lua_State *L)
{
	size_t cn;
	const char *cv = luaL_checklstring(L, 1, &cn);
	luaL_checktype(L, 2, LUA_TTABLE);
	sip_digest_client c = {
		.username = opt_field(L, 2, "user"),
		.password = opt_field(L, 2, "password"),
		.method = opt_field(L, 2, "method"),
		.uri = opt_field(L, 2, "uri"),
		.body = opt_field(L, 2, "body"),
		.cnonce = opt_field(L, 2, "cnonce"),
	};
	if (!c.username.p)
		c.username = opt_field(L, 2, "username");
	if (!c.username.p || !c.password.p || !c.method.p || !c.uri.p)
		return luaL_error(L, "user, password, method and uri are required");
	lua_Integer nc = 1;
	if (lua_getfield(L, 2, "nc") != LUA_TNIL)
		nc = luaL_checkinteger(L, -1);
	lua_pop(L, 1);
	luaL_argcheck(L, nc >= 1 && nc <= 0xffffffff, 2, "nc out of range");
	c.nc = (uint32_t)nc;

	sip_digest chal;
	int err = sip_digest_parse(&chal, cv, cn);
	if (!err)
		err = sip_digest_check_challenge(&chal, NULL);
	if (err) {
		luaL_pushfail(L);
		lua_pushstring(L, parse_error(err == EBADMSG ? EINVAL : err));
		return 2;
	}
	/* Quoting at most doubles each copied value; the fixed part is well under 256. */
	size_t size = 256 + 2 * (cn + c.username.n + c.uri.n + c.cnonce.n);
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, size);
	size_t len = 0;
	err = sip_digest_authorization(&chal, &c, out, size, &len);
	if (err) {
		luaL_pushfail(L);
		lua_pushstring(L, err == ENOTSUP ? "unsupported digest algorithm or qop"
						 : "cannot build digest credentials");
		return 2;
	}
	luaL_pushresultsize(&b, len);
	return 1;
}

static lsip_digest_state *check_state(lua_State *L)
{
	return luaL_checkudata(L, 1, LSIP_DIGEST_STATE_MT);
}

/* core.digest_state([secret]) -> a nonce key (random, or derived from a secret of 16 bytes or
 * more that processes share) and an nc table */
static int l_digest_state(lua_State *L)
{
	size_t sn = 0;
	const char *secret = luaL_optlstring(L, 1, NULL, &sn);
	luaL_argcheck(L, !secret || sn >= 16, 1, "a secret of 16 bytes or more expected");
	lsip_digest_state *s = lua_newuserdatauv(L, sizeof(*s), 0);
	s->nc = NULL;
	luaL_setmetatable(L, LSIP_DIGEST_STATE_MT);
	if (secret ? sip_nonce_key_derive(&s->key, secret, sn) : sip_nonce_key_init(&s->key))
		return luaL_error(L, "no randomness for the nonce secret");
	s->nc = sip_nc_table_new(SIP_NC_TABLE_CAP);
	if (!s->nc)
		return luaL_error(L, "out of memory");
	return 1;
}

static uint64_t check_time(lua_State *L, int idx)
{
	lua_Integer t = luaL_checkinteger(L, idx);
	luaL_argcheck(L, t >= 0, idx, "time must not be negative");
	return (uint64_t)t;
}

/* state:nonce(now) -> nonce string */
static int l_state_nonce(lua_State *L)
{
	lsip_digest_state *s = check_state(L);
	char out[SIP_NONCE_HEX_LEN + 1];
	if (sip_nonce_make(&s->key, check_time(L, 2), out))
		return luaL_error(L, "no randomness for a nonce");
	lua_pushlstring(L, out, SIP_NONCE_HEX_LEN);
	return 1;
}

/* state:check_nonce(nonce, now, ttl) -> "ok" | "stale" | "bad" */
static int l_state_check_nonce(lua_State *L)
{
	lsip_digest_state *s = check_state(L);
	sip_pl n;
	n.p = luaL_checklstring(L, 2, &n.n);
	static const char *const names[] = { "ok", "stale", "bad" };
	lua_pushstring(L, names[sip_nonce_check(&s->key, n, check_time(L, 3), check_time(L, 4))]);
	return 1;
}

/* state:check_nc(nonce, nc) -> "ok" | "replay" | "unknown" | "bad" (nc not 8 hex digits);
 * nc nil: an answer without qop, which spends the nonce ("replay" the second time) */
static int l_state_check_nc(lua_State *L)
{
	lsip_digest_state *s = check_state(L);
	sip_pl n, ncs;
	n.p = luaL_checklstring(L, 2, &n.n);
	uint32_t nc = 0;
	ncs.p = luaL_optlstring(L, 3, NULL, &ncs.n);
	if (ncs.p && (sip_nc_parse(ncs, &nc) || nc == 0)) {
		lua_pushliteral(L, "bad");
		return 1;
	}
	static const char *const names[] = { "ok", "replay", "unknown" };
	lua_pushstring(L, names[sip_nc_check(s->nc, n, nc)]);
	return 1;
}

static int l_state_gc(lua_State *L)
{
	lsip_digest_state *s = check_state(L);
	sip_nc_table_free(s->nc);
	s->nc = NULL;
	return 0;
}

static int l_state_tostring(lua_State *L)
{
	lua_pushfstring(L, "sip.digest_state (%p)", (void *)check_state(L));
	return 1;
}

static const luaL_Reg state_methods[] = {
	{ "nonce", l_state_nonce },
	{ "check_nonce", l_state_check_nonce },
	{ "check_nc", l_state_check_nc },
	{ NULL, NULL },
};

static const luaL_Reg funcs[] = {
	{ "digest_parse", l_digest_parse },
	{ "digest_response", l_digest_response },
	{ "digest_hash", l_digest_hash },
	{ "digest_equal", l_digest_equal },
	{ "digest_authorization", l_digest_authorization },
	{ "digest_state", l_digest_state },
	{ NULL, NULL },
};

void lsip_open_auth(lua_State *L)
{
	if (luaL_newmetatable(L, LSIP_DIGEST_STATE_MT)) {
		luaL_newlib(L, state_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, l_state_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, l_state_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	luaL_setfuncs(L, funcs, 0);
}
