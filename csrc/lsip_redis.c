/* lsip_redis.c: the Redis client of redis.c as Lua userdata: r:command(fn, ...) queues a
 * command and calls fn(reply) or fn(nil, reason) later, from the loop; sip.store_redis turns
 * that into calls that yield. */
#include "lsip.h"
#include "redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LSIP_REDIS_MT "sip.redis"
/* Arguments of one command: the store's scripts take a handful. */
#define MAX_ARGS 32

typedef struct lsip_redis {
	sip_redis *c;
	lsip_loop *lp;
	int finalizing;   /* in __gc: pending callbacks are dropped, not called */
	lua_State *closing;   /* in r:close(): pending callbacks run on the closing thread */
} lsip_redis;

typedef struct lsip_redis_call {
	lsip_redis *r;
	int ref;   /* the Lua callback */
} lsip_redis_call;

static void push_reply(lua_State *L, const redisReply *r)
{
	switch (r->type) {
	case REDIS_REPLY_INTEGER:
		lua_pushinteger(L, r->integer);
		break;
	case REDIS_REPLY_NIL:
		lua_pushboolean(L, 0);   /* false keeps an array's positions */
		break;
	case REDIS_REPLY_ARRAY:
		lua_createtable(L, (int)r->elements, 0);
		for (size_t i = 0; i < r->elements; i++) {
			push_reply(L, r->element[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	default:   /* string, status, error */
		lua_pushlstring(L, r->str ? r->str : "", r->len);
	}
}

static void on_reply(void *arg, const redisReply *reply, const char *err)
{
	lsip_redis_call *call = arg;
	lsip_redis *r = call->r;
	lua_State *L = r->closing ? r->closing : r->lp->L;
	int ref = call->ref;
	free(call);
	if (!L)
		return;
	if (r->finalizing) {
		luaL_unref(L, LUA_REGISTRYINDEX, ref);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	luaL_unref(L, LUA_REGISTRYINDEX, ref);
	int n;
	if (!reply) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		n = 2;
	} else if (reply->type == REDIS_REPLY_ERROR) {
		lua_pushnil(L);
		lua_pushfstring(L, "redis: %s", reply->str ? reply->str : "error");
		n = 2;
	} else {
		push_reply(L, reply);
		n = 1;
	}
	if (lua_pcall(L, n, 0, 0) != LUA_OK) {
		fprintf(stderr, "luasip: error in a redis callback: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

/* sip.core.redis(host, port [, db]) -> client: connects in the background, again after
 * every loss */
static int l_redis(lua_State *L)
{
	const char *host = luaL_checkstring(L, 1);
	int port = (int)luaL_checkinteger(L, 2);
	int db = (int)luaL_optinteger(L, 3, 0);
	luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range");
	lsip_loop *lp = lsip_loop_of(L);
	lsip_redis *r = lua_newuserdatauv(L, sizeof *r, 0);
	memset(r, 0, sizeof *r);
	r->lp = lp;
	luaL_setmetatable(L, LSIP_REDIS_MT);
	r->c = sip_redis_new(lp->loop, host, port, db);
	if (!r->c)
		return luaL_error(L, "redis: cannot make a client for %s", host);
	return 1;
}

static lsip_redis *check_client(lua_State *L)
{
	lsip_redis *r = luaL_checkudata(L, 1, LSIP_REDIS_MT);
	if (!r->c)
		luaL_error(L, "redis: client is closed");
	return r;
}

/* r:command(fn, arg, ...) -> true | nil, reason (not connected: fn is not called) */
static int r_command(lua_State *L)
{
	lsip_redis *r = check_client(L);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	int argc = lua_gettop(L) - 2;
	luaL_argcheck(L, argc >= 1 && argc <= MAX_ARGS, 3, "1 to 32 command words expected");
	const char *argv[MAX_ARGS];
	size_t lens[MAX_ARGS];
	for (int i = 0; i < argc; i++)
		argv[i] = luaL_checklstring(L, i + 3, &lens[i]);
	lsip_redis_call *call = malloc(sizeof *call);
	if (!call)
		return luaL_error(L, "out of memory");
	call->r = r;
	lua_pushvalue(L, 2);
	call->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (sip_redis_command(r->c, argc, argv, lens, on_reply, call) != 0) {
		luaL_unref(L, LUA_REGISTRYINDEX, call->ref);
		free(call);
		lua_pushnil(L);
		lua_pushstring(L, sip_redis_error(r->c));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* r:connected() -> boolean, reason */
static int r_connected(lua_State *L)
{
	lsip_redis *r = check_client(L);
	lua_pushboolean(L, sip_redis_connected(r->c));
	lua_pushstring(L, sip_redis_error(r->c));
	return 2;
}

/* r:close(): pending commands get nil, "redis: closed" */
static int r_close(lua_State *L)
{
	lsip_redis *r = luaL_checkudata(L, 1, LSIP_REDIS_MT);
	if (r->c) {
		sip_redis *c = r->c;
		r->c = NULL;
		r->closing = L;
		sip_redis_free(c);
		r->closing = NULL;
	}
	return 0;
}

static int r_gc(lua_State *L)
{
	lsip_redis *r = luaL_checkudata(L, 1, LSIP_REDIS_MT);
	r->finalizing = 1;
	return r_close(L);
}

static const luaL_Reg r_methods[] = {
	{ "command", r_command }, { "connected", r_connected }, { "close", r_close },
	{ NULL, NULL },
};

void lsip_open_redis(lua_State *L)
{
	luaL_newmetatable(L, LSIP_REDIS_MT);
	luaL_newlib(L, r_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, r_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, r_close);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_redis);
	lua_setfield(L, -2, "redis");
}
