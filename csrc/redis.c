/* redis.c: hiredis's asynchronous client attached to sip_loop: the socket's readiness through
 * sip_loop_add_fd, reconnection on a sip_timer. Commands made while the server is away fail
 * at once instead of piling up. */
#include "redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Wait between connection attempts: a restarted redis-server is back within a second or
 * two, and a refused connect on loopback costs nothing. */
#define RECONNECT_MS 500
/* A server that holds the connection but answers nothing (stopped, swapping, a dead link
 * without a reset) would keep every caller waiting: a command unanswered this long ends the
 * connection, its callers get an error, and the next one reconnects. */
#define COMMAND_TIMEOUT_MS 3000

struct sip_redis {
	sip_loop *loop;
	redisAsyncContext *ac;   /* NULL between a failure and the next attempt */
	sip_timer retry;
	sip_timer watchdog;      /* running while commands wait for replies */
	unsigned pending;        /* commands sent, replies not yet in */
	uint64_t progress;       /* loop time of the last reply (or of the first command) */
	char host[64];
	int port, db;
	int fd;                  /* watched by the loop, or -1 */
	uint32_t events;
	int connected;
	int depth;     /* reply functions running (hiredis is inside a callback) */
	int doomed;    /* sip_redis_free ran inside one: hiredis frees ac later, we c then */
	char err[128];
};

typedef struct pending {
	sip_redis *c;
	sip_redis_reply_fn fn;
	void *arg;
} pending;

static void connect_now(sip_redis *c);
static void watchdog_fire(void *arg);

static void on_io(void *arg, uint32_t events)
{
	sip_redis *c = arg;
	redisAsyncContext *ac = c->ac;
	if (!ac)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		redisAsyncHandleRead(ac);
	/* the read may have ended the connection (c->ac is then NULL or a later one) */
	if ((events & EPOLLOUT) && c->ac == ac)
		redisAsyncHandleWrite(ac);
}

static void watch(sip_redis *c, uint32_t events)
{
	if (events == c->events)
		return;
	if (c->events == 0 && events != 0)
		sip_loop_add_fd(c->loop, c->fd, events, on_io, c);
	else if (events == 0)
		sip_loop_del_fd(c->loop, c->fd);
	else
		sip_loop_mod_fd(c->loop, c->fd, events);
	c->events = events;
}

static void ev_add_read(void *d)
{
	sip_redis *c = d;
	watch(c, c->events | EPOLLIN);
}

static void ev_del_read(void *d)
{
	sip_redis *c = d;
	watch(c, c->events & ~(uint32_t)EPOLLIN);
}

static void ev_add_write(void *d)
{
	sip_redis *c = d;
	watch(c, c->events | EPOLLOUT);
}

static void ev_del_write(void *d)
{
	sip_redis *c = d;
	watch(c, c->events & ~(uint32_t)EPOLLOUT);
}

static void ev_cleanup(void *d)
{
	sip_redis *c = d;
	watch(c, 0);
	c->fd = -1;
	/* a connection that never came up gets no on_disconnect: this is hiredis's last word */
	if (c->doomed && !c->connected)
		free(c);
}

static void retry_fire(void *arg)
{
	connect_now(arg);
}

static void lost(sip_redis *c, const char *why)
{
	sip_timer_stop(c->loop, &c->watchdog);
	c->ac = NULL;
	c->connected = 0;
	snprintf(c->err, sizeof c->err, "redis %s:%d: %s", c->host, c->port, why && *why ? why : "connection lost");
	sip_timer_start(c->loop, &c->retry, RECONNECT_MS, retry_fire, c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	sip_redis *c = ac->data;
	if (status != REDIS_OK) {
		lost(c, ac->errstr);   /* hiredis frees ac after this */
		return;
	}
	c->connected = 1;
	c->err[0] = '\0';
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	sip_redis *c = ac->data;
	if (c->doomed) {
		free(c);
		return;
	}
	if (c->ac == ac)
		lost(c, status == REDIS_OK ? "closed" : ac->errstr);
}

static void ignore_reply(redisAsyncContext *ac, void *r, void *priv)
{
}

static void connect_now(sip_redis *c)
{
	redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
	if (!ac) {
		lost(c, "out of memory");
		return;
	}
	if (ac->err) {
		char why[100];
		snprintf(why, sizeof why, "%s", ac->errstr);
		redisAsyncFree(ac);
		lost(c, why);
		return;
	}
	c->ac = ac;
	c->fd = ac->c.fd;
	c->events = 0;
	ac->data = c;
	ac->ev.data = c;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	if (c->db != 0) {
		/* queued first: every command after it runs in db */
		char db[16];
		snprintf(db, sizeof db, "%d", c->db);
		const char *argv[] = { "SELECT", db };
		redisAsyncCommandArgv(ac, ignore_reply, NULL, 2, argv, NULL);
	}
}

static void watchdog_fire(void *arg)
{
	sip_redis *c = arg;
	if (!c->ac || c->pending == 0)
		return;   /* nothing waits: started again by the next command */
	if (sip_loop_now(c->loop) - c->progress < COMMAND_TIMEOUT_MS) {
		sip_timer_start(c->loop, &c->watchdog, COMMAND_TIMEOUT_MS / 2, watchdog_fire, c);
		return;
	}
	/* give up on this connection: the waiting commands fail, a new one is made */
	redisAsyncContext *ac = c->ac;
	lost(c, "no reply in time");
	c->pending = 0;
	redisAsyncFree(ac);   /* not in a hiredis callback: frees at once */
}

sip_redis *sip_redis_new(sip_loop *loop, const char *host, int port, int db)
{
	if (!loop || !host || strlen(host) >= sizeof ((sip_redis *)0)->host)
		return NULL;
	sip_redis *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->loop = loop;
	snprintf(c->host, sizeof c->host, "%s", host);
	c->port = port;
	c->db = db;
	c->fd = -1;
	sip_timer_init(&c->retry);
	sip_timer_init(&c->watchdog);
	connect_now(c);
	return c;
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	pending *p = priv;
	sip_redis *c = p->c;
	if (c->pending)
		c->pending--;
	c->progress = sip_loop_now(c->loop);
	c->depth++;
	if (r)
		p->fn(p->arg, r, NULL);
	else
		p->fn(p->arg, NULL, c->err[0] ? c->err : "redis: connection closed");
	c->depth--;
	free(p);
}

int sip_redis_command(sip_redis *c, int argc, const char **argv, const size_t *lens,
	sip_redis_reply_fn fn, void *arg)
{
	if (!c->ac)
		return -1;
	pending *p = malloc(sizeof *p);
	if (!p)
		return -1;
	p->c = c;
	p->fn = fn;
	p->arg = arg;
	if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
		free(p);
		return -1;
	}
	if (c->pending++ == 0)
		c->progress = sip_loop_now(c->loop);
	if (!sip_timer_active(&c->watchdog))
		sip_timer_start(c->loop, &c->watchdog, COMMAND_TIMEOUT_MS / 2, watchdog_fire, c);
	return 0;
}

void sip_redis_free(sip_redis *c)
{
	if (!c)
		return;
	sip_timer_stop(c->loop, &c->retry);
	sip_timer_stop(c->loop, &c->watchdog);
	snprintf(c->err, sizeof c->err, "redis: closed");
	if (c->ac) {
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;   /* on_disconnect: not ours any more, no retry */
		if (c->depth > 0) {
			/* inside one of its callbacks hiredis only marks ac; it frees it (calling
			 * the pending replies, ev_cleanup and on_disconnect) once that returns */
			c->doomed = 1;
			redisAsyncFree(ac);
			return;
		}
		redisAsyncFree(ac);
	}
	free(c);
}

const char *sip_redis_error(const sip_redis *c)
{
	return c->err[0] ? c->err : (c->ac ? "redis: connecting" : "redis: not connected");
}

int sip_redis_connected(const sip_redis *c)
{
	return c->connected;
}
