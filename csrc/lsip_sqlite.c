/* lsip_sqlite.c: a small SQLite binding for sip.store_sqlite: open a file in WAL mode, run
 * statements with bound parameters, read rows. Calls are short and run on the loop. */
#include "lsip.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define LSIP_SQLITE_MT "sip.sqlite"

/* Statements kept prepared per database: the store uses a dozen fixed SQL texts. */
#define STMT_CACHE 24
/* How long a write waits for another process's lock (workers share the file) before it
 * fails: long enough for another worker's short transaction, short for the loop. */
#define BUSY_TIMEOUT_MS 200

typedef struct lsip_sqlite {
	sqlite3 *db;
	struct {
		char *sql;
		sqlite3_stmt *st;
	} cache[STMT_CACHE];
	int next;   /* the slot the next new statement takes (round robin) */
} lsip_sqlite;

static lsip_sqlite *check_db(lua_State *L)
{
	lsip_sqlite *d = luaL_checkudata(L, 1, LSIP_SQLITE_MT);
	if (!d->db)
		luaL_error(L, "sqlite: database is closed");
	return d;
}

static int fail(lua_State *L, const char *what, sqlite3 *db)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
	return 2;
}

/* sip.core.sqlite_open(path) -> db | nil, reason */
static int l_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lsip_sqlite *d = lua_newuserdatauv(L, sizeof *d, 0);
	memset(d, 0, sizeof *d);
	luaL_setmetatable(L, LSIP_SQLITE_MT);
	int rc = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
		| SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int n = fail(L, path, d->db);
		sqlite3_close(d->db);
		d->db = NULL;
		return n;
	}
	sqlite3_busy_timeout(d->db, BUSY_TIMEOUT_MS);
	return 1;
}

static sqlite3_stmt *prepare(lsip_sqlite *d, const char *sql)
{
	for (int i = 0; i < STMT_CACHE; i++)
		if (d->cache[i].sql && strcmp(d->cache[i].sql, sql) == 0) {
			sqlite3_reset(d->cache[i].st);
			sqlite3_clear_bindings(d->cache[i].st);
			return d->cache[i].st;
		}
	sqlite3_stmt *st;
	if (sqlite3_prepare_v3(d->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
		return NULL;
	char *copy = strdup(sql);
	if (!copy) {
		sqlite3_finalize(st);
		return NULL;
	}
	int i = d->next;
	d->next = (d->next + 1) % STMT_CACHE;
	free(d->cache[i].sql);
	sqlite3_finalize(d->cache[i].st);
	d->cache[i].sql = copy;
	d->cache[i].st = st;
	return st;
}

/* Binds arguments first..top as ?1..?n: strings as text, integers, floats, booleans as 0/1,
 * nil as NULL. */
static int bind_args(lua_State *L, sqlite3_stmt *st, int first)
{
	int top = lua_gettop(L);
	for (int i = first; i <= top; i++) {
		int p = i - first + 1, rc;
		switch (lua_type(L, i)) {
		case LUA_TNIL:
			rc = sqlite3_bind_null(st, p);
			break;
		case LUA_TBOOLEAN:
			rc = sqlite3_bind_int(st, p, lua_toboolean(L, i));
			break;
		case LUA_TNUMBER:
			if (lua_isinteger(L, i))
				rc = sqlite3_bind_int64(st, p, lua_tointeger(L, i));
			else
				rc = sqlite3_bind_double(st, p, lua_tonumber(L, i));
			break;
		case LUA_TSTRING: {
			size_t len;
			const char *s = lua_tolstring(L, i, &len);
			rc = sqlite3_bind_text(st, p, s, (int)len, SQLITE_TRANSIENT);
			break;
		}
		default:
			return luaL_argerror(L, i, "want nil, boolean, number or string");
		}
		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

static void push_column(lua_State *L, sqlite3_stmt *st, int c)
{
	switch (sqlite3_column_type(st, c)) {
	case SQLITE_INTEGER:
		lua_pushinteger(L, sqlite3_column_int64(st, c));
		break;
	case SQLITE_FLOAT:
		lua_pushnumber(L, sqlite3_column_double(st, c));
		break;
	case SQLITE_NULL:
		lua_pushnil(L);
		break;
	default:
		lua_pushlstring(L, (const char *)sqlite3_column_text(st, c),
			(size_t)sqlite3_column_bytes(st, c));
	}
}

/* db:query(sql, ...) -> rows, changes, last_insert_rowid | nil, reason
 * rows: an array of arrays of column values (empty for statements without rows). */
static int db_query(lua_State *L)
{
	lsip_sqlite *d = check_db(L);
	const char *sql = luaL_checkstring(L, 2);
	sqlite3_stmt *st = prepare(d, sql);
	if (!st)
		return fail(L, "sqlite", d->db);
	if (bind_args(L, st, 3) != SQLITE_OK)
		return fail(L, "sqlite", d->db);
	lua_newtable(L);
	int n = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int cols = sqlite3_column_count(st);
		lua_createtable(L, cols, 0);
		for (int c = 0; c < cols; c++) {
			push_column(L, st, c);
			lua_rawseti(L, -2, c + 1);
		}
		lua_rawseti(L, -2, ++n);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(L, "sqlite", d->db);
	lua_pushinteger(L, sqlite3_changes(d->db));
	lua_pushinteger(L, sqlite3_last_insert_rowid(d->db));
	return 3;
}

/* db:exec(sql) -> true | nil, reason: one or more statements without parameters */
static int db_exec(lua_State *L)
{
	lsip_sqlite *d = check_db(L);
	char *err = NULL;
	if (sqlite3_exec(d->db, luaL_checkstring(L, 2), NULL, NULL, &err) != SQLITE_OK) {
		lua_pushnil(L);
		lua_pushfstring(L, "sqlite: %s", err ? err : sqlite3_errmsg(d->db));
		sqlite3_free(err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int db_close(lua_State *L)
{
	lsip_sqlite *d = luaL_checkudata(L, 1, LSIP_SQLITE_MT);
	for (int i = 0; i < STMT_CACHE; i++) {
		sqlite3_finalize(d->cache[i].st);
		free(d->cache[i].sql);
		d->cache[i].st = NULL;
		d->cache[i].sql = NULL;
	}
	if (d->db)
		sqlite3_close(d->db);
	d->db = NULL;
	return 0;
}

static int db_tostring(lua_State *L)
{
	lsip_sqlite *d = luaL_checkudata(L, 1, LSIP_SQLITE_MT);
	const char *f = d->db ? sqlite3_db_filename(d->db, "main") : NULL;
	lua_pushfstring(L, "sip.sqlite (%s)", f ? f : "closed");
	return 1;
}

static const luaL_Reg db_methods[] = {
	{ "query", db_query }, { "exec", db_exec }, { "close", db_close }, { NULL, NULL },
};

void lsip_open_sqlite(lua_State *L)
{
	luaL_newmetatable(L, LSIP_SQLITE_MT);
	luaL_newlib(L, db_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, db_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, db_close);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, db_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_open);
	lua_setfield(L, -2, "sqlite_open");
}
