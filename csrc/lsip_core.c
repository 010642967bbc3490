/* lsip_core.c: luaopen_sip_core, the entry of the C module `sip.core`.
 * It only gathers what each lsip_*.c file registers. */
#include "lsip.h"

/* The one symbol core.so exports: everything else is built -fvisibility=hidden, so that calls
 * between the C files are direct calls, not PLT jumps through the GOT (516 call sites). */
__attribute__((visibility("default"))) int luaopen_sip_core(lua_State *L);

int luaopen_sip_core(lua_State *L)
{
	lua_newtable(L);
	lsip_open_msg(L);
	lsip_open_auth(L);
	lsip_open_ep(L);
	lsip_open_dialog(L);
	lsip_open_thp(L);
	lsip_open_msrp(L);
	lsip_open_dns(L);
	lsip_open_ops(L);
	lsip_open_sqlite(L);
	lsip_open_redis(L);
	lsip_open_proc(L);
	return 1;
}
