/* lsip.h: the Lua binding's shared declarations. Only lsip_*.c include lua.h.
 * Each lsip_X.c provides lsip_open_X(L), which adds its functions to the table on top. */
#ifndef LSIP_H
#define LSIP_H

#include <lua.h>
#include <lauxlib.h>
#include <sys/socket.h>
#include "msg.h"

#define LSIP_MSG_MT "sip.msg"

/* A message userdata, sized for its headers: a parsed message keeps them in `slots`, right
 * after the struct in the same allocation. Messages that arrived on an endpoint carry their
 * sip_tp_src (stateless replies need the exact connection) as `blob_len` bytes after the
 * slots (lsip_msg_blob). */
typedef struct lsip_msg {
	sip_msg m;
	/* LSIP_MSG_MAGIC: with the userdata's size, how a message is told from other userdata
	 * without looking its metatable up (a message passes through several calls each). */
	uint32_t magic;
	unsigned char plain;           /* it has the metatable without __gc (owns nothing) */
	int valid;
	/* A received request's endpoint fields, kept here rather than in a table made per
	 * request: req._txn, req.replied_final, and whether §16.3 validation ran (req._ep and
	 * req.source are user values LSIP_MSG_UV_EP and LSIP_MSG_UV_SOURCE). */
	lua_Integer txn;
	unsigned char attached;        /* txn is set */
	unsigned char replied_final;
	unsigned char validated;       /* §16.3: 0 not yet, 1 passed, 2 refused */
	unsigned char blob_len;        /* bytes after the header slots (see above) */
	unsigned char prepared;        /* Max-Forwards and Record-Route done (req:relay again) */
	sip_hdr slots[];
} lsip_msg;

#define LSIP_MSG_MAGIC 0x6d706973u

#define LSIP_MSG_UV_EP 3
#define LSIP_MSG_UV_SOURCE 4
/* User values of a message an endpoint hands to Lua (see lsip_msg.c for 1 and 2). */
#define LSIP_MSG_NUV 4

/* The userdata of a message lsip_checkmsg returned. */
#define lsip_msg_of(mp) ((lsip_msg *)(void *)(mp))

/* One loop per Lua state: every endpoint of the state shares it, so one ep:run() serves
 * them all. `L` is the thread that is stepping it, which hooks call back on. */
typedef struct lsip_loop {
	struct sip_loop *loop;
	lua_State *L;
	int stepping;
} lsip_loop;

#define LSIP_LOOP_MT "sip.loop"

/* The loop userdata at idx (raises when it is not one). Inline: lsip_ep.c makes loops, and
 * the files below it (lsip_dns.c, lsip_msrp.c) take them without naming it (make layers). */
static inline lsip_loop *lsip_check_loop(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, LSIP_LOOP_MT);
}

void lsip_open_msg(lua_State *L);
void lsip_open_msrp(lua_State *L);
void lsip_open_ep(lua_State *L);
void lsip_open_auth(lua_State *L);
void lsip_open_dialog(lua_State *L);
void lsip_open_thp(lua_State *L);
void lsip_open_dns(lua_State *L);

/* The resolver userdata at idx (lsip_dns.c); raises when closed. */
struct sip_dns;
struct sip_dns *lsip_check_dns(lua_State *L, int idx);

void lsip_open_ops(lua_State *L);

/* For lsip_ops.c: the core endpoint of endpoint object idx, NULL when it is closed or not
 * one. */
struct sip_endpoint;
struct sip_endpoint *lsip_endpoint(lua_State *L, int idx);
void lsip_open_sqlite(lua_State *L);
void lsip_open_redis(lua_State *L);
void lsip_open_proc(lua_State *L);

/* The event loop of this Lua state (made on first use), for binding files whose C callbacks
 * run on it: lp->loop is its core loop, lp->L the thread stepping it (the one to call Lua on
 * from them). */
lsip_loop *lsip_loop_of(lua_State *L);

/* Push a new, empty message userdata (no header slots, three user values); the caller
 * parses into the returned sip_msg. Its __gc calls sip_msg_free. */
sip_msg *lsip_msg_new(lua_State *L);
/* Push a message userdata holding a copy of src (no re-parse); 0, or -1 with nothing pushed. */
int lsip_msg_push_clone(lua_State *L, const sip_msg *src, const void *blob, size_t blen);
/* The bytes given as blob to lsip_msg_push_clone for the message at idx, or NULL. */
const void *lsip_msg_blob(lua_State *L, int idx, size_t *len);
/* Take a malloc'd buffer of wire text and push it parsed as a message (1 result), or free
 * it and push nil, reason (2 results). Returns the number of results. */
int lsip_msg_push_owned(lua_State *L, char *buf, size_t len);
sip_msg *lsip_checkmsg(lua_State *L, int idx);
/* Set a received request's _ep, _txn and source fields (msg, ep, source: absolute
 * indexes of the message, the endpoint object and the source string). */
void lsip_msg_attach(lua_State *L, int msg, int ep, lua_Integer txn, int source);

#endif
