/* lsip_proc.c: what `serve --workers N` needs from the OS: start worker processes, wait for
 * a signal or a worker's exit without busy polling, and end a worker with its parent. */
#include "lsip.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Most argv words a worker's command line has (serve takes a few dozen at most). */
#define MAX_ARGV 128

static void watched(sigset_t *s)
{
	sigemptyset(s);
	sigaddset(s, SIGINT);
	sigaddset(s, SIGTERM);
	sigaddset(s, SIGHUP);
	sigaddset(s, SIGCHLD);
}

/* core.proc_block(): SIGINT, SIGTERM, SIGHUP and SIGCHLD wait for proc_wait instead of acting; call
 * it before the first proc_spawn, so that no exit goes unseen */
static int l_block(lua_State *L)
{
	sigset_t s;
	watched(&s);
	if (sigprocmask(SIG_BLOCK, &s, NULL))
		return luaL_error(L, "sigprocmask: %s", strerror(errno));
	return 0;
}

/* core.proc_spawn({ argv... }) -> pid | nil, reason: the program (searched in PATH) with our
 * environment, every signal at its default and none blocked */
static int l_spawn(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	int n = (int)luaL_len(L, 1);
	luaL_argcheck(L, n >= 1 && n < MAX_ARGV, 1, "1 to 127 words expected");
	char *argv[MAX_ARGV];
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 1, i + 1);
		argv[i] = (char *)luaL_checkstring(L, -1);
		lua_pop(L, 1);   /* the table keeps the string alive */
	}
	argv[n] = NULL;
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t none, all;
	sigemptyset(&none);
	watched(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], NULL, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	if (rc) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", argv[0], strerror(rc));
		return 2;
	}
	lua_pushinteger(L, pid);
	return 1;
}

/* core.proc_wait([timeout_ms]) -> "exit", pid, code | "signal", signo | nil (timeout):
 * a child that ended (reaped; code 128+n for a signal), else the next blocked signal */
static int l_wait(lua_State *L)
{
	lua_Integer ms = luaL_optinteger(L, 1, -1);
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid > 0) {
			lua_pushliteral(L, "exit");
			lua_pushinteger(L, pid);
			lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status)
				: 128 + WTERMSIG(status));
			return 3;
		}
		sigset_t s;
		watched(&s);
		siginfo_t info;
		int sig;
		if (ms < 0) {
			sig = sigwaitinfo(&s, &info);
		} else {
			struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
			sig = sigtimedwait(&s, &info, &ts);
		}
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				lua_pushnil(L);
				return 1;
			}
			return luaL_error(L, "sigwaitinfo: %s", strerror(errno));
		}
		if (sig != SIGCHLD) {
			lua_pushliteral(L, "signal");
			lua_pushinteger(L, sig);
			return 2;
		}
	}
}

/* core.proc_kill(pid, signo) -> true | nil, reason */
static int l_kill(lua_State *L)
{
	if (kill((pid_t)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2))) {
		lua_pushnil(L);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* core.proc_die_with_parent(parent_pid): SIGTERM when the process that started us ends
 * (kill -9 of the master included); ends now when it is gone already */
static int l_die_with_parent(lua_State *L)
{
	pid_t parent = (pid_t)luaL_checkinteger(L, 1);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		exit(1);
	return 0;
}

/* core.proc_pid() -> this process's id */
static int l_pid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

void lsip_open_proc(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "proc_block", l_block }, { "proc_spawn", l_spawn }, { "proc_wait", l_wait },
		{ "proc_kill", l_kill }, { "proc_die_with_parent", l_die_with_parent },
		{ "proc_pid", l_pid },
		{ NULL, NULL },
	};
	luaL_setfuncs(L, fns, 0);
}
