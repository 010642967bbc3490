/* lsip_dialog.c: the dialog userdata `sip.dialog` over csrc/dialog.c. sip.dialog (Lua) keeps
 * the calls and their coroutines; this object keeps the §12 state and builds the requests. */
#include "lsip.h"
#include "dialog.h"

#include <stdlib.h>
#include <string.h>

#define LSIP_DIALOG_MT "sip.dialog"

typedef struct lsip_dialog {
	sip_dialog *d;   /* owned; NULL once collected */
} lsip_dialog;

static sip_dialog *check_dialog(lua_State *L, int idx)
{
	lsip_dialog *u = luaL_checkudata(L, idx, LSIP_DIALOG_MT);
	if (!u->d)
		luaL_argerror(L, idx, "dialog is freed");
	return u->d;
}

static int push_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

/* core.dialog_uac(invite, response [, contact]) -> dialog | nil, err */
static int l_dialog_uac(lua_State *L)
{
	sip_msg *req = lsip_checkmsg(L, 1);
	sip_msg *res = lsip_checkmsg(L, 2);
	size_t clen = 0;
	const char *contact = luaL_optlstring(L, 3, NULL, &clen);
	sip_dialog *d;
	const char *err;
	/* the userdata first, so that a memory error while pushing leaks nothing */
	lsip_dialog *u = lua_newuserdatauv(L, sizeof *u, 0);
	u->d = NULL;
	luaL_setmetatable(L, LSIP_DIALOG_MT);
	if (sip_dialog_new_uac(&d, req, res, contact, clen, &err))
		return push_fail(L, err);
	u->d = d;
	return 1;
}

/* core.dialog_uas(request, local_tag [, contact [, local_cseq]]) -> dialog | nil, err */
static int l_dialog_uas(lua_State *L)
{
	sip_msg *req = lsip_checkmsg(L, 1);
	size_t tlen, clen = 0;
	const char *tag = luaL_checklstring(L, 2, &tlen);
	const char *contact = luaL_optlstring(L, 3, NULL, &clen);
	lua_Integer cseq = luaL_optinteger(L, 4, 0);
	luaL_argcheck(L, cseq >= 0 && cseq < 0x80000000LL, 4, "0..2^31-1 expected");
	sip_dialog *d;
	const char *err;
	lsip_dialog *u = lua_newuserdatauv(L, sizeof *u, 0);
	u->d = NULL;
	luaL_setmetatable(L, LSIP_DIALOG_MT);
	if (sip_dialog_new_uas(&d, req, tag, tlen, contact, clen, (uint32_t)cseq, &err))
		return push_fail(L, err);
	u->d = d;
	return 1;
}

/* core.dialog_key(call_id, local_tag, remote_tag) -> the key d:key() gives that dialog */
static int l_dialog_key(lua_State *L)
{
	size_t n[3];
	sip_pl p[3];
	for (int i = 0; i < 3; i++) {
		const char *s = luaL_optlstring(L, i + 1, "", &n[i]);
		p[i] = sip_pl_make(s, n[i]);
	}
	luaL_Buffer b;
	size_t need = sip_dialog_key_make(p[0], p[1], p[2], NULL, 0);
	char *out = luaL_buffinitsize(L, &b, need + 1);
	sip_dialog_key_make(p[0], p[1], p[2], out, need + 1);
	luaL_pushresultsize(&b, need);
	return 1;
}

static int d_key(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	luaL_Buffer b;
	size_t need = sip_dialog_key(d, NULL, 0);
	char *out = luaL_buffinitsize(L, &b, need + 1);
	sip_dialog_key(d, out, need + 1);
	luaL_pushresultsize(&b, need);
	return 1;
}

/* d:update(response) -> true | nil, err */
static int d_update(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	sip_msg *res = lsip_checkmsg(L, 2);
	const char *err;
	if (sip_dialog_update(d, res, &err))
		return push_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* d:build(method [, extra_header_lines [, body [, content_type [, ack_cseq]]]])
 *   -> request message | nil, err */
static int d_build(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	const char *method = luaL_checkstring(L, 2);
	size_t elen = 0, blen = 0, ctlen = 0;
	const char *extra = luaL_optlstring(L, 3, NULL, &elen);
	const char *body = luaL_optlstring(L, 4, NULL, &blen);
	const char *ctype = luaL_optlstring(L, 5, NULL, &ctlen);
	lua_Integer ack = luaL_optinteger(L, 6, 0);
	luaL_argcheck(L, ack >= 0 && ack <= 0xffffffffLL, 6, "a CSeq number expected");
	char *out;
	size_t len;
	const char *err;
	if (sip_dialog_build(d, method, (uint32_t)ack, extra, elen, body, blen, ctype, ctlen,
			     &out, &len, &err))
		return push_fail(L, err);
	return lsip_msg_push_owned(L, out, len);
}

/* d:sent(req) -> true | nil, err   (the local CSeq at least req's) */
static int d_sent(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	sip_msg *req = lsip_checkmsg(L, 2);
	const char *err;
	if (sip_dialog_sent(d, req, &err))
		return push_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* d:check_request(req) -> true | false, status, reason   (§12.2.2) */
static int d_check_request(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	sip_msg *req = lsip_checkmsg(L, 2);
	const char *err;
	int code = sip_dialog_check_request(d, req, &err);
	if (!code) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushboolean(L, 0);
	lua_pushinteger(L, code);
	lua_pushstring(L, err);
	return 3;
}

/* d:terminate(): the dialog is over (BYE, §15); fields stay readable */
static int d_terminate(lua_State *L)
{
	check_dialog(L, 1)->state = SIP_DIALOG_TERMINATED;
	return 0;
}

static void push_str(lua_State *L, const sip_dialog_str *s)
{
	lua_pushlstring(L, s->p ? s->p : "", s->n);
}

/* Fields: strings, numbers, the route set as a fresh table; nil for unknown names. */
static int d_field(lua_State *L, sip_dialog *d, const char *k)
{
	if (!strcmp(k, "call_id")) push_str(L, &d->call_id);
	else if (!strcmp(k, "local_tag")) push_str(L, &d->local_tag);
	else if (!strcmp(k, "remote_tag")) push_str(L, &d->remote_tag);
	else if (!strcmp(k, "local_uri")) push_str(L, &d->local_uri);
	else if (!strcmp(k, "remote_uri")) push_str(L, &d->remote_uri);
	else if (!strcmp(k, "remote_target")) push_str(L, &d->remote_target);
	else if (!strcmp(k, "contact")) {
		if (!d->contact.n)
			return 0;
		push_str(L, &d->contact);
	}
	else if (!strcmp(k, "local_cseq")) lua_pushinteger(L, d->local_cseq);
	else if (!strcmp(k, "invite_cseq")) lua_pushinteger(L, d->invite_cseq);
	else if (!strcmp(k, "remote_cseq")) {
		if (!d->has_remote_cseq)
			return 0;
		lua_pushinteger(L, d->remote_cseq);
	}
	else if (!strcmp(k, "secure")) lua_pushboolean(L, d->secure);
	else if (!strcmp(k, "role")) lua_pushstring(L, d->is_uac ? "uac" : "uas");
	else if (!strcmp(k, "state")) lua_pushstring(L, sip_dialog_state_name(d->state));
	else if (!strcmp(k, "route")) {
		lua_createtable(L, (int)d->nroute, 0);
		for (unsigned i = 0; i < d->nroute; i++) {
			push_str(L, &d->route[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
	}
	else return 0;
	return 1;
}

/* __index: methods (upvalue 1), then fields */
static int d_index(lua_State *L)
{
	sip_dialog *d = check_dialog(L, 1);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return 1;
	const char *k = lua_tostring(L, 2);
	if (k && d_field(L, d, k))
		return 1;
	lua_pushnil(L);
	return 1;
}

static int d_gc(lua_State *L)
{
	lsip_dialog *u = luaL_checkudata(L, 1, LSIP_DIALOG_MT);
	sip_dialog_free(u->d);
	u->d = NULL;
	return 0;
}

static int d_tostring(lua_State *L)
{
	lsip_dialog *u = luaL_checkudata(L, 1, LSIP_DIALOG_MT);
	if (!u->d) {
		lua_pushliteral(L, "sip.dialog (freed)");
		return 1;
	}
	lua_pushfstring(L, "sip.dialog %s %s (%s)", u->d->is_uac ? "uac" : "uas",
			u->d->call_id.p, sip_dialog_state_name(u->d->state));
	return 1;
}

static const luaL_Reg methods[] = {
	{ "key", d_key },
	{ "update", d_update },
	{ "build", d_build },
	{ "sent", d_sent },
	{ "check_request", d_check_request },
	{ "terminate", d_terminate },
	{ NULL, NULL },
};

static const luaL_Reg funcs[] = {
	{ "dialog_uac", l_dialog_uac },
	{ "dialog_uas", l_dialog_uas },
	{ "dialog_key", l_dialog_key },
	{ NULL, NULL },
};

void lsip_open_dialog(lua_State *L)
{
	luaL_newmetatable(L, LSIP_DIALOG_MT);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_pushcclosure(L, d_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, d_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, d_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, d_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_setfuncs(L, funcs, 0);
}
