/* lsip_dns.c: the RFC 3263 resolver (dns.c) as Lua userdata: r:locate(uri, tps, fn) calls
 * fn(targets) or fn(nil, err) from the loop; lua/sip/dns.lua makes it a yielding call. */
#include "lsip.h"
#include "dns.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LSIP_DNS_MT "sip.dns"

typedef struct lsip_dns {
	sip_dns *d;
	lua_State **stepping;   /* the loop's stepping thread (lsip_ep.c) */
	lua_State *caller;      /* during r:locate: its thread (a cached answer comes at once) */
	int pending;            /* registry ref: key -> fn of every lookup running */
	lua_Integer seq;
	struct lookup *lookups;  /* running: freed by their callback, or by r:close */
} lsip_dns;

typedef struct lookup {
	struct lookup *prev, *next;
	lsip_dns *r;
	lua_Integer key;
	uint64_t id;        /* the resolver's lookup, cancelled by r:close */
	int starting, done; /* the answer came inside sip_dns_locate: freed once it returns */
} lookup;

static void lookup_unlink(lookup *lk)
{
	if (lk->prev)
		lk->prev->next = lk->next;
	else
		lk->r->lookups = lk->next;
	if (lk->next)
		lk->next->prev = lk->prev;
	lk->prev = lk->next = NULL;
}

static void lookup_free(lookup *lk)
{
	lookup_unlink(lk);
	free(lk);
}

static lsip_dns *check_r(lua_State *L, int i)
{
	lsip_dns *r = luaL_checkudata(L, i, LSIP_DNS_MT);
	if (!r->d)
		luaL_argerror(L, i, "resolver is closed");
	return r;
}

sip_dns *lsip_check_dns(lua_State *L, int i)
{
	return check_r(L, i)->d;
}

static unsigned opt_ms(lua_State *L, int t, const char *k, unsigned def)
{
	unsigned v = def;
	if (lua_getfield(L, t, k) != LUA_TNIL) {
		lua_Number s = luaL_checknumber(L, -1);
		if (s < 0 || s > 86400)
			luaL_error(L, "dns option %s out of range", k);
		v = (unsigned)(s * 1000 + 0.5);
	}
	lua_pop(L, 1);
	return v;
}

/* core.dns(loop, { servers = { "127.0.0.1:5353", ... }, timeout = s, tries = n,
 * negative_ttl = s, avoid = s, hosts_file = bool }) -> resolver | nil, err */
static int l_dns(lua_State *L)
{
	lsip_loop *lp = lsip_check_loop(L, 1);
	sip_loop *loop = lp->loop;
	lua_State **stepping = &lp->L;   /* callbacks from the loop run on that thread */
	sip_dns_config cfg;
	sip_dns_config_default(&cfg);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	if (lua_istable(L, 2)) {
		if (lua_getfield(L, 2, "servers") == LUA_TTABLE) {
			lua_Integer n = luaL_len(L, -1);
			for (lua_Integer i = 1; i <= n; i++) {
				lua_rawgeti(L, -1, i);
				const char *s = luaL_checkstring(L, -1);
				lua_pop(L, 1);
				if (i > 1)
					luaL_addchar(&b, ',');
				luaL_addstring(&b, s);
			}
		} else if (lua_isstring(L, -1)) {
			luaL_addstring(&b, lua_tostring(L, -1));
		}
		lua_pop(L, 1);
		cfg.timeout_ms = opt_ms(L, 2, "timeout", 0);
		cfg.negative_ttl = opt_ms(L, 2, "negative_ttl", cfg.negative_ttl * 1000) / 1000;
		cfg.avoid_ms = opt_ms(L, 2, "avoid", cfg.avoid_ms);
		if (lua_getfield(L, 2, "tries") != LUA_TNIL)
			cfg.tries = (unsigned)luaL_checkinteger(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, 2, "hosts_file") != LUA_TNIL)
			cfg.hosts_file = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	luaL_pushresult(&b);
	const char *servers = lua_tostring(L, -1);
	cfg.servers = servers[0] ? servers : NULL;
	lsip_dns *r = lua_newuserdatauv(L, sizeof *r, 1);
	memset(r, 0, sizeof *r);
	r->pending = LUA_NOREF;
	luaL_setmetatable(L, LSIP_DNS_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);   /* the resolver keeps its loop alive */
	const char *err;
	r->d = sip_dns_new(loop, &cfg, &err);
	if (!r->d) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	r->stepping = stepping;
	lua_newtable(L);
	r->pending = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

static void push_target(lua_State *L, const sip_dns_target *t)
{
	char ip[INET6_ADDRSTRLEN + 2], uri[INET6_ADDRSTRLEN + sizeof t->host + 64];
	if (t->addr.ss_family == AF_INET6) {
		ip[0] = '[';
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&t->addr)->sin6_addr, ip + 1,
			  INET6_ADDRSTRLEN);
		strcat(ip, "]");
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&t->addr)->sin_addr, ip, sizeof ip);
	}
	const char *tp = sip_dns_tp_name(t->tp);
	if (t->tp == SIP_DNS_TLS || t->tp == SIP_DNS_WSS)
		/* the certificate is checked against the name (RFC 5922), the address is maddr's */
		snprintf(uri, sizeof uri, "sips:%s:%d;transport=%s;maddr=%s", t->host, t->port, tp,
			 ip);
	else
		snprintf(uri, sizeof uri, "sip:%s:%d;transport=%s", ip, t->port, tp);
	lua_createtable(L, 0, 5);
	lua_pushstring(L, tp);
	lua_setfield(L, -2, "transport");
	lua_pushstring(L, t->host);
	lua_setfield(L, -2, "host");
	lua_pushinteger(L, t->port);
	lua_setfield(L, -2, "port");
	lua_pushstring(L, ip);
	lua_setfield(L, -2, "addr");
	lua_pushstring(L, uri);
	lua_setfield(L, -2, "uri");
}

static void on_located(void *arg, const sip_dns_target *t, unsigned n, const char *err)
{
	lookup *lk = arg;
	lsip_dns *r = lk->r;
	lua_State *L = r->caller ? r->caller : *r->stepping;
	lua_Integer key = lk->key;
	if (lk->starting) {
		lookup_unlink(lk);   /* r_locate frees it (r:close from fn cannot reach it) */
		lk->done = 1;
	} else {
		lookup_free(lk);
	}
	if (!L)
		return;
	int top = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->pending);
	lua_rawgeti(L, -1, key);
	lua_pushnil(L);
	lua_rawseti(L, -3, key);
	if (!lua_isfunction(L, -1)) {
		lua_settop(L, top);
		return;
	}
	if (err) {
		lua_pushnil(L);
		lua_pushstring(L, err);
	} else {
		lua_createtable(L, (int)n, 0);
		for (unsigned i = 0; i < n; i++) {
			push_target(L, &t[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		lua_pushnil(L);
	}
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		fprintf(stderr, "luasip: error in a DNS callback: %s\n", lua_tostring(L, -1));
	}
	lua_settop(L, top);
}

/* Transport names ("udp", "tcp", ...) in a table or a string list into bits. */
static unsigned check_tps(lua_State *L, int i)
{
	if (lua_isnoneornil(L, i))
		return SIP_DNS_UDP | SIP_DNS_TCP;
	unsigned tps = 0;
	luaL_checktype(L, i, LUA_TTABLE);
	lua_Integer n = luaL_len(L, i);
	for (lua_Integer k = 1; k <= n; k++) {
		lua_rawgeti(L, i, k);
		size_t len;
		const char *s = luaL_checklstring(L, -1, &len);
		tps |= sip_dns_tp_lookup(s, len);
		lua_pop(L, 1);
	}
	return tps;
}

/* r:locate(uri, transports, fn) -> id | nil, err: fn(targets) or fn(nil, err), perhaps
 * before this returns. targets: { { transport=, host=, port=, addr=, uri= }, ... } */
static int r_locate(lua_State *L)
{
	lsip_dns *r = check_r(L, 1);
	size_t len;
	const char *uri = luaL_checklstring(L, 2, &len);
	unsigned tps = check_tps(L, 3);
	luaL_checktype(L, 4, LUA_TFUNCTION);
	lookup *lk = calloc(1, sizeof *lk);
	if (!lk)
		return luaL_error(L, "out of memory");
	lk->r = r;
	lk->key = ++r->seq;
	lk->next = r->lookups;
	if (r->lookups)
		r->lookups->prev = lk;
	r->lookups = lk;
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->pending);
	lua_pushvalue(L, 4);
	lua_rawseti(L, -2, lk->key);
	lua_pop(L, 1);
	lua_Integer key = lk->key;
	const char *err;
	lua_State *prev = r->caller;
	r->caller = L;
	lk->starting = 1;
	uint64_t id = sip_dns_locate(r->d, uri, len, tps, on_located, lk, &err);
	lk->starting = 0;
	r->caller = prev;
	lk->id = id;
	if (lk->done)
		free(lk);          /* its answer came already (unlinked then) */
	else if (!id)
		lookup_free(lk);
	if (!id) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->pending);
		lua_pushnil(L);
		lua_rawseti(L, -2, key);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushinteger(L, (lua_Integer)id);
	return 1;
}

/* r:avoid(transport, "ip" | "[ip6]", port): that target goes last for a while (§4.3) */
static int r_avoid(lua_State *L)
{
	lsip_dns *r = check_r(L, 1);
	size_t n;
	const char *tp = luaL_checklstring(L, 2, &n);
	const char *ip = luaL_checkstring(L, 3);
	lua_Integer port = luaL_checkinteger(L, 4);
	char buf[INET6_ADDRSTRLEN];
	size_t l = strlen(ip);
	if (l >= 2 && ip[0] == '[') {
		ip++;
		l -= 2;
	}
	if (l >= sizeof buf)
		return 0;
	memcpy(buf, ip, l);
	buf[l] = 0;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, buf, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
	} else {
		return 0;
	}
	sip_dns_avoid(r->d, sip_dns_tp_lookup(tp, n), (struct sockaddr *)&ss);
	return 0;
}

static int r_flush(lua_State *L)
{
	sip_dns_flush(check_r(L, 1)->d);
	return 0;
}

static int r_stats(lua_State *L)
{
	sip_dns_stats st;
	sip_dns_stats_get(check_r(L, 1)->d, &st);
	lua_createtable(L, 0, 6);
	lua_pushinteger(L, (lua_Integer)st.queries);
	lua_setfield(L, -2, "queries");
	lua_pushinteger(L, (lua_Integer)st.cache_hits);
	lua_setfield(L, -2, "cache_hits");
	lua_pushinteger(L, (lua_Integer)st.negative_hits);
	lua_setfield(L, -2, "negative_hits");
	lua_pushinteger(L, (lua_Integer)st.failures);
	lua_setfield(L, -2, "failures");
	lua_pushinteger(L, st.entries);
	lua_setfield(L, -2, "entries");
	lua_pushinteger(L, st.pending);
	lua_setfield(L, -2, "pending");
	return 1;
}

static int r_close(lua_State *L)
{
	lsip_dns *r = luaL_checkudata(L, 1, LSIP_DNS_MT);
	while (r->lookups) {
		/* (an endpoint may keep the resolver alive: its lookups must not call back here) */
		if (r->d)
			sip_dns_cancel(r->d, r->lookups->id);
		lookup_free(r->lookups);
	}
	if (r->d) {
		sip_dns_unref(r->d);
		r->d = NULL;
	}
	luaL_unref(L, LUA_REGISTRYINDEX, r->pending);
	r->pending = LUA_NOREF;
	return 0;
}

static const luaL_Reg r_methods[] = {
	{ "locate", r_locate }, { "avoid", r_avoid }, { "flush", r_flush },
	{ "stats", r_stats }, { "close", r_close }, { NULL, NULL },
};

void lsip_open_dns(lua_State *L)
{
	luaL_newmetatable(L, LSIP_DNS_MT);
	lua_newtable(L);
	luaL_setfuncs(L, r_methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, r_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, r_close);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_dns);
	lua_setfield(L, -2, "dns");
}
