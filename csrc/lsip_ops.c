/* lsip_ops.c: what operating a server needs besides SIP, on the same loop: file descriptors
 * watched for Lua (signals through signalfd, a unix control socket, a TCP listener for
 * metrics), and the capture tap (capture.c) on an endpoint's transport. */
#include "lsip.h"
#include "capture.h"
#include "endpoint.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LSIP_FD_MT "sip.fd"
#define LSIP_CAPTURE_MT "sip.capture"
/* A connection to the control or metrics port reads at most this much at once */
#define READ_CHUNK 4096
/* Pending connections on the control and metrics listeners */
#define LISTEN_BACKLOG 16

typedef struct lsip_fd {
	int fd;
	int is_signalfd;
	sip_loop *loop;        /* set while watched */
	lua_State **L;         /* the thread stepping the loop */
	int ref;               /* registry: { self, fn } while watched */
} lsip_fd;

typedef struct lsip_capture {
	sip_capture *cap;
	sip_transport *tp;     /* NULL once detached */
} lsip_capture;

static const struct { const char *name; int sig; } SIGNALS[] = {
	{ "HUP", SIGHUP }, { "TERM", SIGTERM }, { "INT", SIGINT }, { "USR1", SIGUSR1 },
	{ "USR2", SIGUSR2 },
};

static lsip_fd *check_fd(lua_State *L, int i)
{
	lsip_fd *f = luaL_checkudata(L, i, LSIP_FD_MT);
	if (f->fd < 0)
		luaL_argerror(L, i, "closed");
	return f;
}

static lsip_fd *push_fd(lua_State *L, int fd)
{
	lsip_fd *f = lua_newuserdatauv(L, sizeof *f, 0);
	memset(f, 0, sizeof *f);
	f->fd = fd;
	f->ref = LUA_NOREF;
	luaL_setmetatable(L, LSIP_FD_MT);
	return f;
}

static int push_errno(lua_State *L, const char *what)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, strerror(errno));
	return 2;
}

static void unwatch(lua_State *L, lsip_fd *f)
{
	if (f->loop) {
		sip_loop_del_fd(f->loop, f->fd);
		f->loop = NULL;
	}
	if (f->ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, f->ref);
		f->ref = LUA_NOREF;
	}
}

static void fd_io(void *arg, uint32_t events)
{
	lsip_fd *f = arg;
	lua_State *L = *f->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, f->ref);
	lua_rawgeti(L, -1, 2);
	lua_rawgeti(L, -2, 1);
	lua_remove(L, -3);
	lua_pushboolean(L, (events & EPOLLOUT) != 0);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		fprintf(stderr, "luasip: error in a watcher: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

/* fd:watch(fn [, writable]): fn(fd, writable) runs on the loop whenever fd is readable
 * (and, with writable, when it takes more bytes); again to change, fd:unwatch() to stop. */
static int fd_watch(lua_State *L)
{
	lsip_fd *f = check_fd(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	uint32_t ev = EPOLLIN | (lua_toboolean(L, 3) ? EPOLLOUT : 0);
	lsip_loop *lp = lsip_loop_of(L);
	sip_loop *loop = lp->loop;
	lua_State **stepping = &lp->L;
	if (f->ref != LUA_NOREF)
		luaL_unref(L, LUA_REGISTRYINDEX, f->ref);
	lua_createtable(L, 2, 0);
	lua_pushvalue(L, 1);
	lua_rawseti(L, -2, 1);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 2);
	f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	f->L = stepping;
	if (f->loop)
		return sip_loop_mod_fd(loop, f->fd, ev) ? luaL_error(L, "watch: %s", strerror(errno)) : 0;
	if (sip_loop_add_fd(loop, f->fd, ev, fd_io, f))
		return luaL_error(L, "watch: %s", strerror(errno));
	f->loop = loop;
	return 0;
}

static int fd_unwatch(lua_State *L)
{
	unwatch(L, check_fd(L, 1));
	return 0;
}

static int fd_close(lua_State *L)
{
	lsip_fd *f = luaL_checkudata(L, 1, LSIP_FD_MT);
	if (f->fd >= 0) {
		unwatch(L, f);
		close(f->fd);
		f->fd = -1;
	}
	return 0;
}

/* fd:read() -> bytes ("" at end of stream) | nil, "again" | nil, error */
static int fd_read(lua_State *L)
{
	lsip_fd *f = check_fd(L, 1);
	char buf[READ_CHUNK];
	ssize_t n = read(f->fd, buf, sizeof buf);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		lua_pushnil(L);
		lua_pushliteral(L, "again");
		return 2;
	}
	if (n < 0)
		return push_errno(L, "read");
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

/* fd:write(bytes [, from]) -> bytes taken (0 when the socket is full) | nil, error */
static int fd_write(lua_State *L)
{
	lsip_fd *f = check_fd(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	lua_Integer from = luaL_optinteger(L, 3, 1);
	if (from < 1 || (size_t)from > len + 1)
		return luaL_argerror(L, 3, "out of range");
	ssize_t n = send(f->fd, s + from - 1, len - (size_t)(from - 1), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		n = 0;
	if (n < 0)
		return push_errno(L, "write");
	lua_pushinteger(L, n);
	return 1;
}

/* fd:accept() -> connection fd (non-blocking) | nil, "again" | nil, error */
static int fd_accept(lua_State *L)
{
	lsip_fd *f = check_fd(L, 1);
	int c = accept4(f->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		lua_pushnil(L);
		lua_pushliteral(L, "again");
		return 2;
	}
	if (c < 0)
		return push_errno(L, "accept");
	push_fd(L, c);
	return 1;
}

/* fd:signals() -> { "HUP", ... }: the signals a signalfd has queued */
static int fd_signals(lua_State *L)
{
	lsip_fd *f = check_fd(L, 1);
	struct signalfd_siginfo si;
	int n = 0;
	if (!f->is_signalfd)
		return luaL_argerror(L, 1, "not a signal fd");
	lua_newtable(L);
	while (read(f->fd, &si, sizeof si) == (ssize_t)sizeof si) {
		for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
			if ((int)si.ssi_signo == SIGNALS[i].sig) {
				lua_pushstring(L, SIGNALS[i].name);
				lua_rawseti(L, -2, ++n);
			}
	}
	return 1;
}

static int fd_fileno(lua_State *L)
{
	lua_pushinteger(L, check_fd(L, 1)->fd);
	return 1;
}

static int fd_tostring(lua_State *L)
{
	lsip_fd *f = luaL_checkudata(L, 1, LSIP_FD_MT);
	lua_pushfstring(L, "sip.fd (%d)", f->fd);
	return 1;
}

/* core.signals{ "HUP", "TERM", ... } -> fd: those signals are blocked and queue on the fd
 * (signalfd), to be read on the loop like any other event: no Lua runs in a handler. */
static int l_signals(lua_State *L)
{
	sigset_t set;
	luaL_checktype(L, 1, LUA_TTABLE);
	sigemptyset(&set);
	for (lua_Integer i = 1; i <= luaL_len(L, 1); i++) {
		lua_rawgeti(L, 1, i);
		const char *name = luaL_checkstring(L, -1);
		size_t k = 0, n = sizeof SIGNALS / sizeof SIGNALS[0];
		while (k < n && strcmp(SIGNALS[k].name, name) != 0)
			k++;
		if (k == n)
			return luaL_argerror(L, 1, "HUP, TERM, INT, USR1 or USR2 expected");
		sigaddset(&set, SIGNALS[k].sig);
		lua_pop(L, 1);
	}
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		return push_errno(L, "sigprocmask");
	int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return push_errno(L, "signalfd");
	push_fd(L, fd)->is_signalfd = 1;
	return 1;
}

/* core.listen_unix(path) -> fd | nil, error: a stream socket at path (an old socket file
 * there is replaced) */
static int l_listen_unix(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	struct sockaddr_un a;
	if (n >= sizeof a.sun_path)
		return luaL_argerror(L, 1, "path too long for a unix socket");
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, path, n);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return push_errno(L, "socket");
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, LISTEN_BACKLOG)) {
		int e = errno;
		close(fd);
		errno = e;
		return push_errno(L, path);
	}
	push_fd(L, fd);
	return 1;
}

/* core.listen_tcp(host, port) -> fd, "host:port" | nil, error (port 0 picks one) */
static int l_listen_tcp(lua_State *L)
{
	const char *host = luaL_checkstring(L, 1);
	lua_Integer port = luaL_checkinteger(L, 2);
	struct sockaddr_storage ss;
	socklen_t len;
	char name[96];
	int one = 1;
	if (port < 0 || port > 65535 || sip_tp_parse_addr(host, (int)port, &ss, &len)) {
		lua_pushnil(L);
		lua_pushfstring(L, "not an IP address and port: %s:%d", host, (int)port);
		return 2;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return push_errno(L, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, LISTEN_BACKLOG) ||
	    getsockname(fd, (struct sockaddr *)&ss, &len)) {
		int e = errno;
		close(fd);
		errno = e;
		return push_errno(L, "metrics listener");
	}
	push_fd(L, fd);
	sip_addr_format(SIP_TP_TCP, (struct sockaddr *)&ss, name, sizeof name);
	lua_pushstring(L, name + 4);   /* without "tcp:" */
	return 2;
}

/* core.connect_unix(path [, timeout_ms]) -> fd (blocking, with that send/receive timeout)
 * | nil, error: the client side of `luasip ctl` */
static int l_connect_unix(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	lua_Integer ms = luaL_optinteger(L, 2, 5000);
	struct sockaddr_un a;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	if (n >= sizeof a.sun_path)
		return luaL_argerror(L, 1, "path too long for a unix socket");
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, path, n);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return push_errno(L, "socket");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		int e = errno;
		close(fd);
		errno = e;
		return push_errno(L, path);
	}
	push_fd(L, fd);
	return 1;
}

/* core.realtime() -> seconds since the epoch, with the microseconds (log timestamps) */
static int l_realtime(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) / 1e6);
	return 1;
}

/* core.monotime() -> seconds on the monotonic clock, with the nanoseconds (durations: a
 * store call's latency) */
static int l_monotime(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

/* --- capture ------------------------------------------------------------------------ */

static lsip_capture *check_capture(lua_State *L, int i)
{
	lsip_capture *c = luaL_checkudata(L, i, LSIP_CAPTURE_MT);
	if (!c->cap)
		luaL_argerror(L, i, "capture is closed");
	return c;
}

/* core.capture(ep_core) -> capture: counts every message of that endpoint's transport;
 * capture:pcap(path), capture:hep(host, port, id) add outputs. One per endpoint. */
static int l_capture(lua_State *L)
{
	sip_endpoint *ep = lsip_endpoint(L, 1);
	if (!ep)
		return luaL_argerror(L, 1, "an open endpoint expected");
	lsip_capture *c = lua_newuserdatauv(L, sizeof *c, 1);
	memset(c, 0, sizeof *c);
	luaL_setmetatable(L, LSIP_CAPTURE_MT);
	c->cap = sip_capture_new();
	if (!c->cap)
		return luaL_error(L, "out of memory");
	c->tp = sip_ep_transport(ep);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);   /* the endpoint outlives its tap */
	sip_tp_set_tap(c->tp, sip_capture_tap, c->cap);
	return 1;
}

static int capture_pcap(lua_State *L)
{
	lsip_capture *c = check_capture(L, 1);
	const char *err;
	if (sip_capture_pcap(c->cap, luaL_checkstring(L, 2), &err)) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", lua_tostring(L, 2), err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int capture_hep(lua_State *L)
{
	lsip_capture *c = check_capture(L, 1);
	const char *host = luaL_checkstring(L, 2), *err;
	lua_Integer port = luaL_checkinteger(L, 3), id = luaL_optinteger(L, 4, 0);
	struct sockaddr_storage ss;
	socklen_t len;
	if (port < 1 || port > 65535 || sip_tp_parse_addr(host, (int)port, &ss, &len)) {
		lua_pushnil(L);
		lua_pushfstring(L, "not an IP address and port: %s:%d", host, (int)port);
		return 2;
	}
	if (sip_capture_hep(c->cap, (struct sockaddr *)&ss, len, (uint32_t)id, &err)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int capture_flush(lua_State *L)
{
	sip_capture_flush(check_capture(L, 1)->cap);
	return 0;
}

/* capture:stats() -> { requests_in = { INVITE = n, ... }, requests_out =, responses_in =
 * { [1] = n1xx, ... [6] = }, responses_out =, pcap_written =, hep_sent =, hep_failed = } */
static int capture_stats(lua_State *L)
{
	sip_capture_stats st;
	static const char *const names[4] = { "requests_in", "requests_out", "responses_in",
					      "responses_out" };
	sip_capture_stats_get(check_capture(L, 1)->cap, &st);
	lua_createtable(L, 0, 7);
	for (int d = 0; d < 2; d++) {
		lua_createtable(L, 0, SIP_METHOD_COUNT);
		for (int m = 0; m < SIP_METHOD_COUNT; m++) {
			lua_pushinteger(L, (lua_Integer)st.requests[d][m]);
			lua_setfield(L, -2, m ? sip_method_name((sip_method)m) : "other");
		}
		lua_setfield(L, -2, names[d]);
		lua_createtable(L, 6, 1);
		for (int k = 1; k <= 6; k++) {
			lua_pushinteger(L, (lua_Integer)st.responses[d][k]);
			lua_rawseti(L, -2, k);
		}
		lua_pushinteger(L, (lua_Integer)st.responses[d][0]);
		lua_setfield(L, -2, "other");
		lua_setfield(L, -2, names[2 + d]);
	}
	lua_pushinteger(L, (lua_Integer)st.pcap_written);
	lua_setfield(L, -2, "pcap_written");
	lua_pushinteger(L, (lua_Integer)st.hep_sent);
	lua_setfield(L, -2, "hep_sent");
	lua_pushinteger(L, (lua_Integer)st.hep_failed);
	lua_setfield(L, -2, "hep_failed");
	return 1;
}

/* capture:close(): the tap comes off and the pcap file is closed (flushed) */
static int capture_close(lua_State *L)
{
	lsip_capture *c = luaL_checkudata(L, 1, LSIP_CAPTURE_MT);
	if (c->cap) {
		/* the endpoint (user value 1) lives as long as we do, but once closed its
		 * transport is gone, and the tap with it */
		lua_getiuservalue(L, 1, 1);
		if (lsip_endpoint(L, -1))
			sip_tp_set_tap(c->tp, NULL, NULL);
		lua_pop(L, 1);
		sip_capture_free(c->cap);
		c->cap = NULL;
		c->tp = NULL;
	}
	return 0;
}

static const luaL_Reg fd_methods[] = {
	{ "watch", fd_watch }, { "unwatch", fd_unwatch }, { "read", fd_read },
	{ "write", fd_write }, { "accept", fd_accept }, { "signals", fd_signals },
	{ "fileno", fd_fileno }, { "close", fd_close }, { NULL, NULL },
};

static const luaL_Reg capture_methods[] = {
	{ "pcap", capture_pcap }, { "hep", capture_hep }, { "flush", capture_flush },
	{ "stats", capture_stats }, { "close", capture_close }, { NULL, NULL },
};

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);
}

void lsip_open_ops(lua_State *L)
{
	new_mt(L, LSIP_FD_MT, fd_methods, fd_close);
	luaL_getmetatable(L, LSIP_FD_MT);
	lua_pushcfunction(L, fd_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	new_mt(L, LSIP_CAPTURE_MT, capture_methods, capture_close);
	static const luaL_Reg fns[] = {
		{ "signals", l_signals }, { "listen_unix", l_listen_unix },
		{ "listen_tcp", l_listen_tcp }, { "connect_unix", l_connect_unix },
		{ "monotime", l_monotime },
		{ "capture", l_capture }, { "realtime", l_realtime }, { NULL, NULL },
	};
	luaL_setfuncs(L, fns, 0);
}
