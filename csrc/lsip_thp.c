/* lsip_thp.c: core.use_huge_pages() — run this process again with glibc's malloc on
 * transparent huge pages (the glibc.malloc.hugetlb=1 tunable, glibc >= 2.35).
 *
 * A proxy holds every transaction for Timer J (32 s): tens of thousands of small objects
 * spread over tens of MB, touched again when their timers fire. On 4 KB pages each of those
 * touches is a TLB miss and, while the heap grows, a page fault; on a VM both are expensive
 * (two-level page walks). `luasip serve` measured 15-20% less CPU per proxied transaction
 * with the tunable (bench/RESULTS.md). Tunables are read when a process starts, so the only
 * way to turn it on from inside is to exec the same command line again with it set. */
#include "lsip.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <gnu/libc-version.h>
#endif

#define TUNABLE "glibc.malloc.hugetlb=1"
#define CMDLINE_MAX 65536

/* THP available for madvise'd memory: "always" or "madvise" is the selected mode */
static int thp_usable(void)
{
	char buf[128];
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

/* core.use_huge_pages() -> false, reason | (does not return: the process runs again) */
static int l_use_huge_pages(lua_State *L)
{
#if defined(__GLIBC__) && defined(__linux__)
	const char *cur = getenv("GLIBC_TUNABLES");
	int major = 0, minor = 0;
	if (cur && strstr(cur, "glibc.malloc.hugetlb"))
		return lua_pushboolean(L, 0), lua_pushliteral(L, "already set"), 2;
	if (sscanf(gnu_get_libc_version(), "%d.%d", &major, &minor) != 2 ||
	    major < 2 || (major == 2 && minor < 35))
		return lua_pushboolean(L, 0), lua_pushliteral(L, "glibc before 2.35"), 2;
	if (!thp_usable())
		return lua_pushboolean(L, 0), lua_pushliteral(L, "no transparent huge pages"), 2;
	/* the same argv, read back from the kernel */
	static char cmd[CMDLINE_MAX];
	int fd = open("/proc/self/cmdline", O_RDONLY);
	if (fd < 0)
		return lua_pushboolean(L, 0), lua_pushliteral(L, "no /proc/self/cmdline"), 2;
	size_t len = 0;
	for (ssize_t n; len < sizeof cmd - 1 && (n = read(fd, cmd + len, sizeof cmd - 1 - len)) > 0;)
		len += (size_t)n;
	close(fd);
	if (len == 0 || len >= sizeof cmd - 1)
		return lua_pushboolean(L, 0), lua_pushliteral(L, "command line too long"), 2;
	cmd[len] = 0;
	char *argv[1024];
	int argc = 0;
	for (size_t i = 0; i < len && argc < 1023; i += strlen(cmd + i) + 1)
		argv[argc++] = cmd + i;
	argv[argc] = NULL;
	char env[4096];
	int w = cur && *cur ? snprintf(env, sizeof env, "%s:%s", cur, TUNABLE) :
			      snprintf(env, sizeof env, "%s", TUNABLE);
	if (w < 0 || (size_t)w >= sizeof env || setenv("GLIBC_TUNABLES", env, 1))
		return lua_pushboolean(L, 0), lua_pushliteral(L, "cannot set GLIBC_TUNABLES"), 2;
	fflush(NULL);
	execv("/proc/self/exe", argv);
	/* still here: carry on without it */
	if (cur)
		setenv("GLIBC_TUNABLES", cur, 1);
	else
		unsetenv("GLIBC_TUNABLES");
	return lua_pushboolean(L, 0), lua_pushliteral(L, "exec failed"), 2;
#else
	return lua_pushboolean(L, 0), lua_pushliteral(L, "not glibc on Linux"), 2;
#endif
}

void lsip_open_thp(lua_State *L)
{
	lua_pushcfunction(L, l_use_huge_pages);
	lua_setfield(L, -2, "use_huge_pages");
}
