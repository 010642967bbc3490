/* clock.c: a monotonic wall clock for bench/parse.lua (Lua itself only has os.clock).
 * The C baselines time with CLOCK_MONOTONIC; using the same clock keeps ratios fair. */
#include <lua.h>
#include <lauxlib.h>
#include <time.h>

/* clock.now() -> seconds since an arbitrary start, as a float */
static int l_now(lua_State *L)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	lua_pushnumber(L, (lua_Number)t.tv_sec + (lua_Number)t.tv_nsec / 1e9);
	return 1;
}

int luaopen_clock(lua_State *L)
{
	lua_newtable(L);
	lua_pushcfunction(L, l_now);
	lua_setfield(L, -2, "now");
	return 1;
}
