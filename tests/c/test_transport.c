/* test_transport.c: the event loop, stream framing and UDP/TCP/TLS transports over real sockets
 * on 127.0.0.1 and ::1. Every wait is bounded; a watchdog alarm ends a hung run. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "frame.h"
#include "loop.h"
#include "tls.h"
#include "transport.h"
#include "ratelimit.h"
#include "map.h"

/* The whole run takes a few seconds; a minute means something hangs. */
#define WATCHDOG_S 60
/* Timers may fire late on a loaded CI box, never early. */
#define LATE_MS 40

static int passed, failed, cur_failed;

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		cur_failed = 1; \
		return; \
	} \
} while (0)

#define RUN(fn) do { \
	cur_failed = 0; \
	fn(); \
	if (cur_failed) { failed++; fprintf(stderr, "not ok  %s\n", #fn); } \
	else { passed++; printf("ok  %s\n", #fn); } \
} while (0)

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Steps the loop until cond(arg) holds or ms pass. Returns cond's last value. */
static int run_until(sip_loop *loop, int (*cond)(void *), void *arg, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (!cond(arg)) {
		uint64_t t = now_ms();

		if (t >= end)
			return 0;
		sip_loop_step(loop, (int)(end - t < 20 ? end - t : 20));
	}
	return 1;
}

static void run_for(sip_loop *loop, unsigned ms)
{
	uint64_t end = now_ms() + ms, t;

	while ((t = now_ms()) < end)
		sip_loop_step(loop, (int)(end - t));
}

/* ---------------- frame ---------------- */

static int frame(const char *s, size_t max, size_t *skip, size_t *mlen, const char **err)
{
	return sip_frame(s, strlen(s), max, skip, mlen, err);
}

static void test_frame(void)
{
	size_t skip, mlen;
	const char *err;
	const char *m1 = "OPTIONS sip:a SIP/2.0\r\nVia: x\r\nContent-Length: 3\r\n\r\nabcNEXT";

	CHECK(frame(m1, 65535, &skip, &mlen, &err) == 1 && skip == 0 && mlen == strlen(m1) - 4);
	CHECK(frame("\r\n\r\nX", 65535, &skip, &mlen, &err) == 0 && skip == 4 && mlen == 0);
	CHECK(frame("\r\n", 65535, &skip, &mlen, &err) == 0 && skip == 2);
	/* headers complete, body missing: the length is known */
	CHECK(frame("A\r\nl: 10\r\n\r\nabc", 65535, &skip, &mlen, &err) == 0 && mlen == 22);
	CHECK(frame("A\r\nL : 0\r\n\r\n", 65535, &skip, &mlen, &err) == 1 && mlen == 12);
	CHECK(frame("A\nContent-length:\t2\n\nhi", 65535, &skip, &mlen, &err) == 1 && mlen == 23);
	CHECK(frame("A\r\nContent-Length:\r\n  5\r\n\r\n12345", 65535, &skip, &mlen, &err) == 1);
	CHECK(frame("A\r\nX-Content-Length: 5\r\nContent-Length: 0\r\n\r\n", 65535, &skip, &mlen,
		    &err) == 1);
	CHECK(frame("A\r\nl: 1\r\nContent-Length: 1\r\n\r\nx", 65535, &skip, &mlen, &err) == 1);
	CHECK(frame("A\r\nl: 1\r\nContent-Length: 2\r\n\r\nxx", 65535, &skip, &mlen, &err) == -1);
	CHECK(strcmp(err, "bad Content-Length") == 0);
	CHECK(frame("A\r\nContent-Length: 1a\r\n\r\nx", 65535, &skip, &mlen, &err) == -1);
	CHECK(frame("A\r\nContent-Length: -1\r\n\r\nx", 65535, &skip, &mlen, &err) == -1);
	CHECK(frame("A\r\nContent-Length: \r\n\r\nx", 65535, &skip, &mlen, &err) == -1);
	CHECK(frame("A\r\nVia: x\r\n\r\n", 65535, &skip, &mlen, &err) == -1);
	CHECK(strcmp(err, "missing Content-Length") == 0);
	CHECK(frame("A\r\nl: 99999999999999999999999\r\n\r\n", 65535, &skip, &mlen, &err) == -1);
	CHECK(strcmp(err, "message too large") == 0);
	CHECK(frame("A\r\nl: 90\r\n\r\n", 100, &skip, &mlen, &err) == -1);
	CHECK(strcmp(err, "message too large") == 0);
	{
		char big[300];

		memset(big, 'h', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		big[10] = '\n';
		CHECK(frame(big, 100, &skip, &mlen, &err) == -1);
		CHECK(strcmp(err, "header section too large") == 0);
		CHECK(frame(big, 1000, &skip, &mlen, &err) == 0);
	}
	/* never reads past len: a cut copy behaves as "need more" at every length */
	for (size_t n = 0; n < strlen(m1) - 4; n++) {
		char *cut = malloc(n ? n : 1);

		memcpy(cut, m1, n);
		CHECK(sip_frame(cut, n, 65535, &skip, &mlen, &err) == 0);
		free(cut);
	}
}

/* ---------------- loop ---------------- */

typedef struct tctx {
	sip_loop *loop;
	int order[8];
	uint64_t at[8];
	int n;
	sip_timer *restart;  /* timer_self re-arms this one */
	int self_runs;
} tctx;

typedef struct targ {
	tctx *t;
	int id;
} targ;

static void timer_rec(void *arg)
{
	targ *a = arg;

	if (a->t->n < 8) {
		a->t->order[a->t->n] = a->id;
		a->t->at[a->t->n] = now_ms();
		a->t->n++;
	}
}

static int four_fired(void *arg)
{
	return ((tctx *)arg)->n >= 4;
}

static void test_timers_order(void)
{
	sip_loop *loop = sip_loop_new();
	sip_timer t[4];
	tctx c = { .loop = loop };
	targ a[4] = { { &c, 30 }, { &c, 10 }, { &c, 20 }, { &c, 11 } };
	unsigned ms[4] = { 60, 20, 40, 20 };
	uint64_t start = now_ms();

	CHECK(loop);
	for (int i = 0; i < 4; i++) {
		sip_timer_init(&t[i]);
		CHECK(!sip_timer_active(&t[i]));
		sip_timer_start(loop, &t[i], ms[i], timer_rec, &a[i]);
		CHECK(sip_timer_active(&t[i]));
	}
	CHECK(sip_loop_timeout(loop) > 0 && sip_loop_timeout(loop) <= 20);
	CHECK(run_until(loop, four_fired, &c, 1000));
	/* equal due times fire in start order */
	CHECK(c.order[0] == 10 && c.order[1] == 11 && c.order[2] == 20 && c.order[3] == 30);
	for (int i = 0; i < 4; i++) {
		unsigned want = c.order[i] == 30 ? 60 : c.order[i] == 20 ? 40 : 20;

		CHECK(c.at[i] - start >= want && c.at[i] - start <= want + LATE_MS);
	}
	CHECK(sip_loop_timeout(loop) == -1);
	sip_loop_free(loop);
}

/* Lanes (sip_timer_start_fixed) and the heap fire as one order; stop and restart move a
 * timer between them; past SIP_LOOP_LANES durations the heap takes the rest. */
static void test_timer_lanes(void)
{
	sip_loop *loop = sip_loop_new();
	sip_timer t[6];
	tctx c = { .loop = loop };
	targ a[6] = { { &c, 40 }, { &c, 10 }, { &c, 30 }, { &c, 11 }, { &c, 20 }, { &c, 99 } };
	uint64_t start = now_ms();

	CHECK(loop);
	for (int i = 0; i < 6; i++)
		sip_timer_init(&t[i]);
	sip_timer_start_fixed(loop, &t[0], 80, timer_rec, &a[0]);   /* lane 80 */
	sip_timer_start_fixed(loop, &t[1], 20, timer_rec, &a[1]);   /* lane 20 */
	sip_timer_start(loop, &t[2], 60, timer_rec, &a[2]);         /* heap */
	sip_timer_start_fixed(loop, &t[3], 20, timer_rec, &a[3]);   /* lane 20, after t[1] */
	sip_timer_start_fixed(loop, &t[5], 80, timer_rec, &a[5]);   /* lane 80 ... */
	CHECK(sip_timer_active(&t[5]));
	sip_timer_stop(loop, &t[5]);                                /* ... taken out of its middle */
	CHECK(!sip_timer_active(&t[5]));
	sip_timer_stop(loop, &t[5]);                                /* twice is harmless */
	sip_timer_start_fixed(loop, &t[4], 40, timer_rec, &a[4]);   /* lane 40 */
	sip_timer_start(loop, &t[4], 40, timer_rec, &a[4]);         /* restarted: now in the heap */
	CHECK(sip_loop_timeout(loop) > 0 && sip_loop_timeout(loop) <= 20);
	CHECK(run_until(loop, four_fired, &c, 1000));
	run_for(loop, 60);
	CHECK(c.n == 5);
	CHECK(c.order[0] == 10 && c.order[1] == 11 && c.order[2] == 20 && c.order[3] == 30 &&
	      c.order[4] == 40);
	for (int i = 0; i < 5; i++) {
		unsigned want = c.order[i] == 40 ? 80 : c.order[i] == 30 ? 60 : c.order[i] == 20 ? 40 : 20;

		CHECK(c.at[i] - start >= want && c.at[i] - start <= want + LATE_MS);
	}
	CHECK(sip_loop_timeout(loop) == -1);
	/* more distinct durations than lanes: the rest still fire, from the heap */
	sip_timer many[SIP_LOOP_LANES + 4];
	tctx c2 = { .loop = loop };
	targ b[SIP_LOOP_LANES + 4];
	for (int i = 0; i < SIP_LOOP_LANES + 4; i++) {
		b[i] = (targ){ &c2, i };
		sip_timer_init(&many[i]);
		sip_timer_start_fixed(loop, &many[i], 100 + (unsigned)i, timer_rec, &b[i]);
	}
	CHECK(run_until(loop, four_fired, &c2, 1000));
	CHECK(c2.order[0] == 0 && c2.order[1] == 1 && c2.order[2] == 2 && c2.order[3] == 3);
	for (int i = 0; i < SIP_LOOP_LANES + 4; i++)
		sip_timer_stop(loop, &many[i]);
	CHECK(sip_loop_timeout(loop) == -1);
	/* a loop freed with timers in lanes leaves them inactive */
	sip_timer_start_fixed(loop, &t[0], 1000, timer_rec, &a[0]);
	sip_loop_free(loop);
	CHECK(!sip_timer_active(&t[0]));
}

/* Lazy lanes (Timers D/I/J/K): never early, at most a grid cell (ms/16, at most
 * SIP_LOOP_LAZY_MS) late, and timers due in one cell fire in one wake-up. A fixed lane of the
 * same duration is a lane of its own and stays on time. */
static void test_timer_lazy(void)
{
	enum { N = 8, MS = 480 };   /* grid: 480 / 16 = 30 ms */
	sip_loop *loop = sip_loop_new();
	sip_timer t[N], exact;
	tctx c = { .loop = loop }, ce = { .loop = loop };
	targ a[N], ae = { &ce, 1 };
	uint64_t due[N];

	CHECK(loop);
	/* start in the first millisecond of a 30 ms cell, so that the 8 dues (3 ms apart, 21 ms in
	 * all) share one cell */
	while (now_ms() % 30 != 0)
		;
	for (int i = 0; i < N; i++) {
		a[i] = (targ){ &c, i };
		sip_timer_init(&t[i]);
		due[i] = now_ms() + MS;
		sip_timer_start_lazy(loop, &t[i], MS, timer_rec, &a[i]);
		CHECK(sip_timer_active(&t[i]));
		if (i == 0) {
			sip_timer_init(&exact);
			sip_timer_start_fixed(loop, &exact, MS, timer_rec, &ae);
		}
		if (i < N - 1)
			run_for(loop, 3);
	}
	/* the next wake-up is the fixed timer's own time, not the lazy cell's end */
	int tmo = sip_loop_timeout(loop);
	CHECK(tmo > 0 && (uint64_t)tmo <= due[0] + 1 - now_ms());
	int steps = 0;
	uint64_t end = now_ms() + MS + 200;
	while (c.n < N && now_ms() < end) {
		int before = c.n;
		sip_loop_step(loop, 200);
		if (c.n > before)
			steps++;
	}
	CHECK(c.n == N && ce.n == 1);
	CHECK(ce.at[0] >= due[0] && ce.at[0] <= due[0] + 1 + LATE_MS);
	for (int i = 0; i < N; i++) {
		CHECK(c.order[i] == i);   /* still in start order */
		CHECK(c.at[i] >= due[i] && c.at[i] <= due[i] + 30 + LATE_MS);
	}
	CHECK(steps <= 2);   /* one cell: one wake-up (two if a slow start crossed a boundary) */
	CHECK(sip_loop_timeout(loop) == -1);
	/* stopped lazy timers do not fire */
	sip_timer_start_lazy(loop, &t[0], 40, timer_rec, &a[0]);
	sip_timer_stop(loop, &t[0]);
	CHECK(!sip_timer_active(&t[0]) && sip_loop_timeout(loop) == -1);
	sip_loop_free(loop);
}

static size_t longest_chain(const sip_map *m)
{
	size_t longest = 0;
	for (size_t b = 0; b < m->nb; b++) {
		size_t len = 0;
		for (const sip_map_node *n = m->b[b]; n; n = n->next)
			len++;
		if (len > longest)
			longest = len;
	}
	return longest;
}

/* The transaction map: keys that differ in any byte (also in the last, partial word) or only
 * in length are distinct; duplicates are refused; growth keeps every entry. */
static void test_map(void)
{
	sip_map m;
	char key[64];
	static int vals[20000];

	CHECK(sip_map_init(&m) == 0);
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof key, "z9hG4bK%d;127.0.0.1:5060;MESSAGE", i);
		CHECK(sip_map_put(&m, key, (size_t)n, &vals[i]) == 0);
	}
	CHECK(m.count == 20000 && m.nb >= 20000);
	CHECK(sip_map_put(&m, "z9hG4bK7;127.0.0.1:5060;MESSAGE", 31, &vals[0]) == -1);
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof key, "z9hG4bK%d;127.0.0.1:5060;MESSAGE", i);
		CHECK(sip_map_get(&m, key, (size_t)n) == &vals[i]);
	}
	/* every length 0..40 of one string, and each with its last byte changed */
	const char *s = "abcdefghijklmnopqrstuvwxyz0123456789ABCDE";
	for (size_t n = 0; n <= 40; n++)
		CHECK(sip_map_put(&m, s, n, &vals[n]) == 0);
	for (size_t n = 1; n <= 40; n++) {
		memcpy(key, s, n);
		key[n - 1] = '#';
		CHECK(sip_map_get(&m, key, n) == NULL);
		CHECK(sip_map_get(&m, s, n) == &vals[n]);
	}
	CHECK(sip_map_get(&m, "", 0) == &vals[0]);
	for (int i = 0; i < 20000; i += 2) {
		int n = snprintf(key, sizeof key, "z9hG4bK%d;127.0.0.1:5060;MESSAGE", i);
		CHECK(sip_map_del(&m, key, (size_t)n) == &vals[i]);
		CHECK(sip_map_del(&m, key, (size_t)n) == NULL);
	}
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof key, "z9hG4bK%d;127.0.0.1:5060;MESSAGE", i);
		CHECK(sip_map_get(&m, key, (size_t)n) == (i % 2 ? &vals[i] : NULL));
	}
	/* the hash spreads: no bucket holds more than a handful of the 10k transaction keys */
	CHECK(longest_chain(&m) <= 12);
	/* nodes the caller embeds (transactions): filed under the caller's bytes, never freed by
	 * the map; a key already there (linked or put) is refused either way */
	struct { sip_map_node node; char key[16]; } own[3];
	size_t before = m.count;
	for (int i = 0; i < 3; i++) {
		int n = snprintf(own[i].key, sizeof own[i].key, "linked-%d", i);
		CHECK(sip_map_link(&m, &own[i].node, own[i].key, (size_t)n, &vals[i]) == 0);
	}
	CHECK(m.count == before + 3);
	CHECK(sip_map_get(&m, "linked-1", 8) == &vals[1]);
	CHECK(sip_map_put(&m, "linked-1", 8, &vals[5]) == -1);
	sip_map_node extra;
	CHECK(sip_map_link(&m, &extra, "z9hG4bK1;127.0.0.1:5060;MESSAGE", 31, &vals[5]) == -1);
	sip_map_unlink(&m, &own[1].node);
	sip_map_unlink(&m, &own[1].node);   /* twice is harmless */
	CHECK(m.count == before + 2 && sip_map_get(&m, "linked-1", 8) == NULL);
	CHECK(sip_map_get(&m, "linked-0", 8) == &vals[0] && sip_map_get(&m, "linked-2", 8) == &vals[2]);
	CHECK(sip_map_del(&m, "linked-2", 8) == &vals[2]);   /* del of a linked node: not freed */
	CHECK(sip_map_link(&m, &own[1].node, own[1].key, 8, &vals[1]) == 0);   /* again */
	CHECK(sip_map_get(&m, "linked-1", 8) == &vals[1]);
	sip_map_free(&m);   /* frees its own nodes only (ASan would see a free of own[]) */
	sip_map_unlink(&m, &own[0].node);   /* after free: nothing to do */

	/* counter keys (transaction ids) take the multiplicative hash: found, removed, and
	 * spread one to a bucket */
	CHECK(sip_map_init_counters(&m) == 0);
	for (uint64_t id = 1; id <= 10000; id++)
		CHECK(sip_map_put(&m, (const char *)&id, sizeof id, &vals[id]) == 0);
	for (uint64_t id = 1; id <= 10000; id++)
		CHECK(sip_map_get(&m, (const char *)&id, sizeof id) == &vals[id]);
	uint64_t gone = 77, never = 10001;
	CHECK(sip_map_del(&m, (const char *)&gone, 8) == &vals[77]);
	CHECK(sip_map_get(&m, (const char *)&gone, 8) == NULL);
	CHECK(sip_map_get(&m, (const char *)&never, 8) == NULL);
	CHECK(longest_chain(&m) <= 2);
	sip_map_free(&m);
}

static void timer_self(void *arg)
{
	tctx *c = arg;

	c->self_runs++;
	if (c->self_runs < 3)
		sip_timer_start(c->loop, c->restart, 0, timer_self, c);
}

static void test_timer_stop_restart(void)
{
	sip_loop *loop = sip_loop_new();
	sip_timer a, b, self;
	tctx c = { .loop = loop, .restart = &self };
	targ ta = { &c, 1 }, tb = { &c, 2 };
	uint64_t start = now_ms();

	sip_timer_init(&a);
	sip_timer_init(&b);
	sip_timer_init(&self);
	sip_timer_start(loop, &a, 20, timer_rec, &ta);
	sip_timer_start(loop, &b, 30, timer_rec, &tb);
	sip_timer_stop(loop, &a);
	sip_timer_stop(loop, &a);          /* twice is harmless */
	CHECK(!sip_timer_active(&a));
	sip_timer_start(loop, &b, 50, timer_rec, &tb);   /* restart pushes it back */
	run_for(loop, 35);
	CHECK(c.n == 0);
	run_for(loop, 60);
	CHECK(c.n == 1 && c.order[0] == 2 && c.at[0] - start >= 50);
	CHECK(!sip_timer_active(&b));
	/* a timer re-arming itself at 0 ms runs once per step, not in a spin */
	sip_timer_start(loop, &self, 0, timer_self, &c);
	CHECK(sip_loop_step(loop, 0) == 1 && c.self_runs == 1);
	CHECK(sip_loop_timeout(loop) == 0);
	sip_loop_step(loop, 0);
	sip_loop_step(loop, 0);
	CHECK(c.self_runs == 3 && !sip_timer_active(&self));
	/* a step with nothing to do waits for its timeout, no busy loop */
	start = now_ms();
	CHECK(sip_loop_step(loop, 30) == 0);
	CHECK(now_ms() - start >= 29);
	sip_loop_free(loop);
}

typedef struct fdctx {
	sip_loop *loop;
	int fds[2];          /* read ends */
	int calls[2];
} fdctx;

static fdctx *g_fd;

static void fd_cb0(void *arg, uint32_t ev)
{
	g_fd->calls[0]++;
	sip_loop_del_fd(g_fd->loop, g_fd->fds[1]);
	sip_loop_del_fd(g_fd->loop, g_fd->fds[0]);
}

static void fd_cb1(void *arg, uint32_t ev)
{
	g_fd->calls[1]++;
	sip_loop_del_fd(g_fd->loop, g_fd->fds[0]);
	sip_loop_del_fd(g_fd->loop, g_fd->fds[1]);
}

static void nop_io(void *arg, uint32_t ev)
{
	char b[8];

	(void)!read(*(int *)arg, b, sizeof(b));
}

/* the pollable protocol: the epoll fd turns readable, then step(0) dispatches */
static void test_loop_pollable(void)
{
	sip_loop *loop = sip_loop_new();
	int p[2];
	struct pollfd pf;

	CHECK(pipe(p) == 0);
	CHECK(sip_loop_add_fd(loop, p[0], EPOLLIN, nop_io, &p[0]) == 0);
	pf.fd = sip_loop_fd(loop);
	pf.events = POLLIN;
	CHECK(sip_loop_timeout(loop) == -1);
	CHECK(poll(&pf, 1, 0) == 0);
	CHECK(write(p[1], "x", 1) == 1);
	CHECK(poll(&pf, 1, 100) == 1);
	CHECK(sip_loop_step(loop, 0) == 1);
	CHECK(poll(&pf, 1, 0) == 0);
	CHECK(sip_loop_mod_fd(loop, p[0], EPOLLIN) == 0);
	sip_loop_del_fd(loop, p[0]);
	CHECK(sip_loop_mod_fd(loop, p[0], EPOLLIN) < 0);
	close(p[0]);
	close(p[1]);
	sip_loop_free(loop);
}

static void test_del_fd_in_batch(void)
{
	sip_loop *loop = sip_loop_new();
	int p0[2], p1[2];
	fdctx c = { .loop = loop };

	g_fd = &c;
	CHECK(pipe(p0) == 0 && pipe(p1) == 0);
	c.fds[0] = p0[0];
	c.fds[1] = p1[0];
	CHECK(write(p0[1], "x", 1) == 1 && write(p1[1], "x", 1) == 1);
	CHECK(sip_loop_add_fd(loop, p0[0], EPOLLIN, fd_cb0, NULL) == 0);
	CHECK(sip_loop_add_fd(loop, p1[0], EPOLLIN, fd_cb1, NULL) == 0);
	CHECK(sip_loop_add_fd(loop, p1[0], EPOLLIN, fd_cb1, NULL) < 0);  /* one per fd */
	CHECK(sip_loop_step(loop, 100) == 1);
	CHECK(c.calls[0] + c.calls[1] == 1);
	CHECK(sip_loop_step(loop, 10) == 0);
	for (int i = 0; i < 2; i++) {
		close(p0[i]);
		close(p1[i]);
	}
	sip_loop_free(loop);
}

/* ---------------- transport helpers ---------------- */

#define MAXKEEP 32768

typedef struct rx {
	int msgs;
	size_t lens[16];
	char last[MAXKEEP];
	size_t lastlen;
	sip_tp_src src;
	int events_close, events_bad, events_idle, events_partial, events_limit, events_big;
	int events_open;
	char last_detail[128];
	sip_transport *tp;
	int echo;            /* reply "ok" on the connection or to the peer */
	int close_first;     /* close the connection from inside the first delivery */
} rx;

static void on_recv(void *arg, const sip_tp_src *src, const char *buf, size_t len)
{
	rx *r = arg;

	if (r->msgs < 16)
		r->lens[r->msgs] = len;
	r->msgs++;
	r->lastlen = len < MAXKEEP ? len : MAXKEEP;
	memcpy(r->last, buf, r->lastlen);
	r->src = *src;
	if (r->close_first && r->msgs == 1)
		sip_tp_close_conn(r->tp, src->conn_id);
	if (r->echo) {
		static const char ok[] = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
		const char *err;

		sip_tp_send(r->tp, src->kind, (const struct sockaddr *)&src->peer, src->peerlen,
			    src->conn_id, ok, sizeof(ok) - 1, &err);
	}
}

static void on_event(void *arg, const char *ev, const sip_tp_src *src, const char *detail)
{
	rx *r = arg;

	if (!strcmp(ev, "conn close"))
		r->events_close++;
	else if (!strcmp(ev, "conn open"))
		r->events_open++;
	else if (!strcmp(ev, "bad framing"))
		r->events_bad++;
	else if (!strcmp(ev, "idle timeout"))
		r->events_idle++;
	else if (!strcmp(ev, "partial timeout"))
		r->events_partial++;
	else if (!strcmp(ev, "limit"))
		r->events_limit++;
	else if (!strcmp(ev, "too large"))
		r->events_big++;
	snprintf(r->last_detail, sizeof(r->last_detail), "%s", detail ? detail : "");
}

static int msgs_at_least(rx *r, int n) { return r->msgs >= n; }
static int got1(void *a) { return msgs_at_least(a, 1); }
static int got2(void *a) { return msgs_at_least(a, 2); }
static int got3(void *a) { return msgs_at_least(a, 3); }

static sip_transport *tp_on(sip_loop *loop, const sip_tp_config *cfg, rx *r, sip_tp_kind kind,
			    const char *host, struct sockaddr_storage *addr, socklen_t *alen)
{
	const char *err = NULL;
	sip_transport *tp = sip_tp_new(loop, cfg, on_recv, on_event, r);
	int idx;

	if (!tp)
		return NULL;
	r->tp = tp;
	idx = sip_tp_listen(tp, kind, host, 0, &err);
	if (idx < 0) {
		fprintf(stderr, "  listen %s: %s\n", host, err);
		sip_tp_free(tp);
		return NULL;
	}
	sip_tp_listener_addr(tp, idx, NULL, addr, alen);
	return tp;
}

static int port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A plain blocking client socket, like a foreign UA. */
static int raw_client(const struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)ss, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Steps the loop while waiting for fd to be readable; returns bytes read, 0 on EOF, -1 on
 * timeout. */
static ssize_t read_while_stepping(sip_loop *loop, int fd, char *buf, size_t cap, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		sip_loop_step(loop, 5);
		if (poll(&p, 1, 5) == 1)
			return read(fd, buf, cap);
	}
	return -1;
}

static char *sip_msg(size_t bodylen, size_t *outlen)
{
	static const char head[] = "MESSAGE sip:bob@example.com SIP/2.0\r\n"
		"Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n"
		"Call-ID: 1@test\r\nCSeq: 1 MESSAGE\r\n";
	char *m = malloc(sizeof(head) + 64 + bodylen);
	int n = sprintf(m, "%sContent-Length: %zu\r\n\r\n", head, bodylen);

	for (size_t i = 0; i < bodylen; i++)
		m[n + i] = (char)('a' + i % 26);
	*outlen = (size_t)n + bodylen;
	return m;
}

typedef struct open_wait {
	sip_transport *tp;
	unsigned want;
} open_wait;

static int conns_open_is(void *arg)
{
	open_wait *w = arg;
	sip_tp_stats st;

	sip_tp_stats_get(w->tp, &st);
	return st.conns_open == w->want;
}

/* ---------------- UDP ---------------- */

static void udp_pair(const char *host)
{
	sip_loop *loop = sip_loop_new();
	rx ra = { 0 }, rb = { 0 };
	struct sockaddr_storage aa, ab;
	socklen_t la, lb;
	sip_transport *a = tp_on(loop, NULL, &ra, SIP_TP_UDP, host, &aa, &la);
	sip_transport *b = tp_on(loop, NULL, &rb, SIP_TP_UDP, host, &ab, &lb);
	const char *err = NULL;
	static const char msg[] = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n";
	sip_tp_stats st;

	CHECK(a && b);
	CHECK(port_of(&aa) > 0 && port_of(&ab) > 0 && port_of(&aa) != port_of(&ab));
	rb.echo = 1;
	CHECK(sip_tp_send(a, SIP_TP_UDP, (struct sockaddr *)&ab, lb, 0, msg, sizeof(msg) - 1,
			  &err) == 0);
	CHECK(run_until(loop, got1, &rb, 1000));
	CHECK(rb.lastlen == sizeof(msg) - 1 && memcmp(rb.last, msg, rb.lastlen) == 0);
	/* the source port is the listening port, so the reply comes back to it */
	CHECK(rb.src.kind == SIP_TP_UDP && rb.src.conn_id == 0 && port_of(&rb.src.peer) == port_of(&aa));
	CHECK(port_of(&rb.src.local) == port_of(&ab));
	CHECK(run_until(loop, got1, &ra, 1000));
	CHECK(ra.lastlen == 37 && ra.src.listener == 0);
	sip_tp_stats_get(a, &st);
	CHECK(st.udp_out == 1 && st.udp_in == 1);
	/* a second UDP listener; send_from picks the source socket */
	{
		struct sockaddr_storage a2;
		socklen_t l2;
		int idx = sip_tp_listen(a, SIP_TP_UDP, host, 0, &err);

		CHECK(idx == 1 && sip_tp_listener_count(a) == 2);
		CHECK(sip_tp_listener_addr(a, idx, NULL, &a2, &l2) == 0);
		CHECK(sip_tp_send_from(a, idx, (struct sockaddr *)&ab, lb, msg, sizeof(msg) - 1,
				       &err) == 0);
		CHECK(run_until(loop, got2, &rb, 1000));
		CHECK(port_of(&rb.src.peer) == port_of(&a2));
		CHECK(run_until(loop, got2, &ra, 1000));
		CHECK(ra.src.listener == 1);
		CHECK(sip_tp_send_from(a, 7, (struct sockaddr *)&ab, lb, msg, 3, &err) < 0);
	}
	sip_tp_free(a);
	sip_tp_free(b);
	sip_loop_free(loop);
}

static void test_udp_ipv4(void) { udp_pair("127.0.0.1"); }
static void test_udp_ipv6(void) { udp_pair("[::1]"); }

static void test_udp_too_large(void)
{
	sip_loop *loop = sip_loop_new();
	rx ra = { 0 }, rb = { 0 };
	struct sockaddr_storage aa, ab;
	socklen_t la, lb;
	sip_tp_config small = sip_tp_config_default();
	sip_transport *a, *b;
	char big[200];
	const char *err;
	sip_tp_stats st;

	small.max_msg = 100;
	a = tp_on(loop, NULL, &ra, SIP_TP_UDP, "127.0.0.1", &aa, &la);
	b = tp_on(loop, &small, &rb, SIP_TP_UDP, "127.0.0.1", &ab, &lb);
	CHECK(a && b);
	memset(big, 'x', sizeof(big));
	CHECK(sip_tp_send(a, SIP_TP_UDP, (struct sockaddr *)&ab, lb, 0, big, 101, &err) == 0);
	CHECK(sip_tp_send(a, SIP_TP_UDP, (struct sockaddr *)&ab, lb, 0, big, 100, &err) == 0);
	CHECK(run_until(loop, got1, &rb, 1000));
	CHECK(rb.msgs == 1 && rb.lastlen == 100 && rb.events_big == 1);
	sip_tp_stats_get(b, &st);
	CHECK(st.dropped == 1 && st.udp_in == 1);
	/* no UDP listener of the other family */
	{
		struct sockaddr_in6 v6 = { .sin6_family = AF_INET6, .sin6_port = htons(5060) };

		v6.sin6_addr = in6addr_loopback;
		CHECK(sip_tp_send(a, SIP_TP_UDP, (struct sockaddr *)&v6, sizeof(v6), 0, big, 10,
				  &err) < 0 && err);
	}
	CHECK(sip_tp_listen(a, SIP_TP_UDP, "not-an-ip", 0, &err) < 0 && err);
	CHECK(sip_tp_listen(a, SIP_TP_UDP, "127.0.0.1", 70000, &err) < 0);
	sip_tp_free(a);
	sip_tp_free(b);
	sip_loop_free(loop);
}

/* a taken port is an error, unless every party asked for SO_REUSEPORT */
static void test_listen_reuse(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	sip_tp_config cfg = sip_tp_config_default();
	sip_transport *a, *b;
	struct sockaddr_storage sa;
	socklen_t sl;
	const char *err = NULL;

	for (int kind = SIP_TP_UDP; kind <= SIP_TP_TCP; kind++) {
		cfg.reuse_port = 0;
		a = tp_on(loop, &cfg, &r, (sip_tp_kind)kind, "127.0.0.1", &sa, &sl);
		b = sip_tp_new(loop, &cfg, on_recv, on_event, &r);
		CHECK(a && b);
		CHECK(sip_tp_listen(b, (sip_tp_kind)kind, "127.0.0.1", port_of(&sa), &err) < 0 && err);
		sip_tp_free(a);
		sip_tp_free(b);
		cfg.reuse_port = 1;
		a = tp_on(loop, &cfg, &r, (sip_tp_kind)kind, "127.0.0.1", &sa, &sl);
		b = sip_tp_new(loop, &cfg, on_recv, on_event, &r);
		CHECK(a && b);
		CHECK(sip_tp_listen(b, (sip_tp_kind)kind, "127.0.0.1", port_of(&sa), &err) == 0);
		sip_tp_free(a);
		sip_tp_free(b);
	}
	sip_loop_free(loop);
}

/* ---------------- TCP ---------------- */

static void test_tcp_split_20k(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	size_t n;
	char *m = sip_msg(20000, &n);
	int fd;

	CHECK(tp);
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0);
	for (size_t off = 0; off < n; off += 97) {
		size_t k = n - off < 97 ? n - off : 97;

		CHECK(write_all(fd, m + off, k) == 0);
		if (off % (97 * 20) == 0)
			sip_loop_step(loop, 1);
		CHECK(r.msgs == 0 || off + k == n);
	}
	CHECK(run_until(loop, got1, &r, 2000));
	CHECK(r.msgs == 1 && r.lastlen == n && memcmp(r.last, m, n) == 0);
	CHECK(r.src.kind == SIP_TP_TCP && r.src.conn_id != 0);
	CHECK(port_of(&r.src.local) == port_of(&sa));
	close(fd);
	free(m);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_two_in_one_write(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "[::1]", &sa, &sl);
	size_t n1, n2;
	char *m1 = sip_msg(5, &n1), *m2 = sip_msg(300, &n2), both[1024];
	int fd;

	CHECK(tp);
	memcpy(both, m1, n1);
	memcpy(both + n1, m2, n2);
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0);
	CHECK(write_all(fd, both, n1 + n2) == 0);
	CHECK(run_until(loop, got2, &r, 1000));
	CHECK(r.msgs == 2 && r.lens[0] == n1 && r.lens[1] == n2);
	CHECK(r.src.peer.ss_family == AF_INET6);
	close(fd);
	free(m1);
	free(m2);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

/* a handler may close the connection it is reading from; the rest of the batch is dropped */
static void test_tcp_close_in_callback(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	size_t n;
	char *m = sip_msg(10, &n), three[1024], buf[8];
	int fd;
	open_wait w = { tp, 0 };

	CHECK(tp);
	for (int i = 0; i < 3; i++)
		memcpy(three + i * n, m, n);
	r.close_first = 1;
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0 && write_all(fd, three, 3 * n) == 0);
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 1000) == 0);
	CHECK(r.msgs == 1 && r.src.listener == 0 && conns_open_is(&w));
	close(fd);
	free(m);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_keepalive(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	char buf[16];
	size_t n;
	char *m = sip_msg(3, &n);
	int fd;

	CHECK(tp);
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0);
	CHECK(write_all(fd, "\r\n\r\n", 4) == 0);
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 1000) == 2 && !memcmp(buf, "\r\n", 2));
	/* a ping split over two writes is still one ping */
	CHECK(write_all(fd, "\r\n", 2) == 0);
	run_for(loop, 20);
	CHECK(write_all(fd, "\r\n", 2) == 0);
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 1000) == 2);
	/* a single CRLF (a pong) is skipped, unanswered, and the next message still frames */
	CHECK(write_all(fd, "\r\n", 2) == 0);
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 100) == -1);
	CHECK(write_all(fd, m, n) == 0);
	CHECK(run_until(loop, got1, &r, 1000));
	CHECK(r.lastlen == n && r.events_close == 0);
	close(fd);
	free(m);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_bad_framing_closes_one(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	static const char bad[] = "MESSAGE sip:a SIP/2.0\r\nContent-Length: 12x\r\n\r\n";
	static const char huge[] = "MESSAGE sip:a SIP/2.0\r\nContent-Length: 999999\r\n\r\n";
	char buf[16];
	size_t n;
	char *m = sip_msg(10, &n);
	int bad_fd, good_fd, huge_fd;
	sip_tp_stats st;

	CHECK(tp);
	good_fd = raw_client(&sa, sl);
	bad_fd = raw_client(&sa, sl);
	huge_fd = raw_client(&sa, sl);
	CHECK(good_fd >= 0 && bad_fd >= 0 && huge_fd >= 0);
	CHECK(write_all(good_fd, m, n / 2) == 0);
	CHECK(write_all(bad_fd, bad, sizeof(bad) - 1) == 0);
	CHECK(read_while_stepping(loop, bad_fd, buf, sizeof(buf), 1000) == 0);  /* EOF */
	CHECK(r.events_bad == 1 && strcmp(r.last_detail, "bad Content-Length") == 0);
	CHECK(write_all(huge_fd, huge, sizeof(huge) - 1) == 0);
	CHECK(read_while_stepping(loop, huge_fd, buf, sizeof(buf), 1000) == 0);
	CHECK(r.events_bad == 2 && strcmp(r.last_detail, "message too large") == 0);
	CHECK(write_all(good_fd, m + n / 2, n - n / 2) == 0);
	CHECK(run_until(loop, got1, &r, 1000));
	CHECK(r.lastlen == n);
	sip_tp_stats_get(tp, &st);
	CHECK(st.conns_open == 1 && st.conns_closed == 2);
	close(good_fd);
	close(bad_fd);
	close(huge_fd);
	free(m);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

/* 2000 connections in batches of 200, each batch all open at once. */
static void test_tcp_2000_conns(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_transport *tp = tp_on(loop, NULL, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	int fds[200];
	open_wait w = { tp, 0 };
	sip_tp_stats st;

	CHECK(tp);
	for (int batch = 0; batch < 10; batch++) {
		for (int i = 0; i < 200; i++) {
			fds[i] = raw_client(&sa, sl);
			CHECK(fds[i] >= 0);
			if (i % 50 == 49)
				sip_loop_step(loop, 0);
		}
		w.want = 200;
		CHECK(run_until(loop, conns_open_is, &w, 3000));
		for (int i = 0; i < 200; i++)
			close(fds[i]);
		w.want = 0;
		CHECK(run_until(loop, conns_open_is, &w, 3000));
	}
	sip_tp_stats_get(tp, &st);
	CHECK(st.conns_accepted == 2000 && st.conns_closed == 2000 && st.conns_open == 0);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_max_conns(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_tp_config cfg = sip_tp_config_default();
	sip_transport *tp;
	int fds[5], extra;
	open_wait w;
	char buf[8];
	size_t n;
	char *m = sip_msg(0, &n);

	cfg.max_conns = 3;
	tp = tp_on(loop, &cfg, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	CHECK(tp);
	w.tp = tp;
	for (int i = 0; i < 5; i++) {
		fds[i] = raw_client(&sa, sl);
		CHECK(fds[i] >= 0);
		run_for(loop, 10);
	}
	w.want = 3;
	CHECK(run_until(loop, conns_open_is, &w, 1000));
	run_for(loop, 30);
	CHECK(r.events_limit == 2);
	/* the refused ones see EOF */
	CHECK(read_while_stepping(loop, fds[3], buf, sizeof(buf), 1000) == 0);
	CHECK(read_while_stepping(loop, fds[4], buf, sizeof(buf), 1000) == 0);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	w.want = 0;
	CHECK(run_until(loop, conns_open_is, &w, 1000));
	/* the listener still works */
	extra = raw_client(&sa, sl);
	CHECK(extra >= 0 && write_all(extra, m, n) == 0);
	CHECK(run_until(loop, got1, &r, 1000));
	close(extra);
	free(m);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_idle_timeout(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_tp_config cfg = sip_tp_config_default();
	sip_transport *tp;
	char buf[8];
	uint64_t start;
	int fd;
	open_wait w;

	cfg.idle_ms = 150;
	tp = tp_on(loop, &cfg, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	CHECK(tp);
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0);
	start = now_ms();
	/* traffic keeps it open past idle_ms */
	for (int i = 0; i < 4; i++) {
		size_t n;
		char *m = sip_msg(0, &n);

		run_for(loop, 60);
		CHECK(write_all(fd, m, n) == 0);
		free(m);
	}
	w.tp = tp;
	w.want = 1;
	CHECK(conns_open_is(&w));
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 1000) == 0);
	CHECK(r.events_idle == 1 && now_ms() - start >= 240 + 150 - 5);
	w.want = 0;
	CHECK(conns_open_is(&w));
	close(fd);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

static void test_tcp_partial_timeout(void)
{
	sip_loop *loop = sip_loop_new();
	rx r = { 0 };
	struct sockaddr_storage sa;
	socklen_t sl;
	sip_tp_config cfg = sip_tp_config_default();
	sip_transport *tp;
	char buf[8];
	int fd;
	static const char part[] = "MESSAGE sip:a SIP/2.0\r\nVia: x\r\n";

	cfg.partial_ms = 100;
	tp = tp_on(loop, &cfg, &r, SIP_TP_TCP, "127.0.0.1", &sa, &sl);
	CHECK(tp);
	fd = raw_client(&sa, sl);
	CHECK(fd >= 0);
	/* a byte at a time: active, yet never finishing a message */
	for (size_t i = 0; i < sizeof(part) - 1 && r.events_partial == 0; i++) {
		if (write(fd, part + i, 1) != 1)
			break;
		run_for(loop, 10);
	}
	CHECK(read_while_stepping(loop, fd, buf, sizeof(buf), 1000) == 0);
	CHECK(r.events_partial == 1 && r.msgs == 0);
	close(fd);
	sip_tp_free(tp);
	sip_loop_free(loop);
}

/* transport to transport: connect on demand, reuse, answer on the same connection */
static void tcp_tp_to_tp(const char *host)
{
	sip_loop *loop = sip_loop_new();
	rx ra = { 0 }, rb = { 0 };
	struct sockaddr_storage aa, ab;
	socklen_t la, lb;
	sip_transport *a = tp_on(loop, NULL, &ra, SIP_TP_TCP, host, &aa, &la);
	sip_transport *b = tp_on(loop, NULL, &rb, SIP_TP_TCP, host, &ab, &lb);
	size_t n;
	char *m = sip_msg(40000, &n);
	const char *err = NULL;
	sip_tp_stats sa_, sb;

	CHECK(a && b);
	rb.echo = 1;
	/* queued before connect completes, then partial writes */
	CHECK(sip_tp_send(a, SIP_TP_TCP, (struct sockaddr *)&ab, lb, 0, m, n, &err) == 0);
	CHECK(sip_tp_send(a, SIP_TP_TCP, (struct sockaddr *)&ab, lb, 0, m, 200, &err) == 0);
	CHECK(run_until(loop, got1, &ra, 2000));
	CHECK(rb.msgs == 1 && rb.lastlen == MAXKEEP && memcmp(rb.last, m, MAXKEEP) == 0);
	CHECK(rb.lens[0] == n);
	/* the reply came back on the same connection: one connection each side */
	sip_tp_stats_get(a, &sa_);
	sip_tp_stats_get(b, &sb);
	CHECK(sa_.conns_open == 1 && sb.conns_open == 1 && sb.conns_accepted == 1);
	/* b closes it; a's next send opens a new one */
	CHECK(sip_tp_close_conn(b, rb.src.conn_id) == 0);
	CHECK(sip_tp_close_conn(b, rb.src.conn_id) < 0);
	{
		open_wait w = { a, 0 };

		CHECK(run_until(loop, conns_open_is, &w, 1000));
	}
	CHECK(sip_tp_send(a, SIP_TP_TCP, (struct sockaddr *)&ab, lb, 12345, m, n, &err) == 0);
	CHECK(run_until(loop, got2, &rb, 2000));
	CHECK(run_until(loop, got2, &ra, 2000));
	/* a closed conn_id with no address is an error, not a crash */
	CHECK(sip_tp_send(a, SIP_TP_TCP, NULL, 0, 999, m, 10, &err) < 0 && err);
	/* connecting to a closed port reports, and does not leak */
	{
		struct sockaddr_storage dead = ab;
		open_wait w = { a, 1 };

		if (dead.ss_family == AF_INET)
			((struct sockaddr_in *)&dead)->sin_port = htons(1);
		else
			((struct sockaddr_in6 *)&dead)->sin6_port = htons(1);
		sip_tp_send(a, SIP_TP_TCP, (struct sockaddr *)&dead, lb, 0, m, 10, &err);
		CHECK(run_until(loop, conns_open_is, &w, 1000));
	}
	(void)got3;
	free(m);
	sip_tp_free(a);
	sip_tp_free(b);
	sip_loop_free(loop);
}

static void test_tcp_tp_to_tp_ipv4(void) { tcp_tp_to_tp("127.0.0.1"); }
static void test_tcp_tp_to_tp_ipv6(void) { tcp_tp_to_tp("::1"); }

/* ---------------- TLS ---------------- */

/* A self-signed certificate for localhost and 127.0.0.1 in two temporary files (the
 * certificate is its own CA for the client side). */
static int make_cert(char *cert, char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int cf, kf, ok;
	FILE *c, *k;

	if (!pk || !x)
		return -1;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(x, pk, EVP_sha256());
	cf = mkstemp(cert);
	kf = mkstemp(key);
	c = cf >= 0 ? fdopen(cf, "w") : NULL;
	k = kf >= 0 ? fdopen(kf, "w") : NULL;
	ok = c && k && PEM_write_X509(c, x) && PEM_write_PrivateKey(k, pk, NULL, NULL, 0, NULL, NULL);
	if (c)
		fclose(c);
	if (k)
		fclose(k);
	X509_free(x);
	EVP_PKEY_free(pk);
	return ok ? 0 : -1;
}

static int detail_mismatch(void *a)
{
	return strstr(((rx *)a)->last_detail, "hostname mismatch") != NULL;
}

/* transport to transport over TLS: a 40 KB message and its answer over one connection,
 * the server checked by name; a name it does not carry fails the connection with the
 * reason; the TCP port is not taken for it */
static void test_tls_tp_to_tp(void)
{
	char cert[] = "/tmp/test_tls_certXXXXXX", key[] = "/tmp/test_tls_keyXXXXXX", why[256];
	sip_loop *loop = sip_loop_new();
	rx ra = { 0 }, rb = { 0 };
	struct sockaddr_storage ab;
	socklen_t lb;
	sip_tls_config sc, cc;
	sip_transport *a = sip_tp_new(loop, NULL, on_recv, on_event, &ra);
	sip_transport *b = sip_tp_new(loop, NULL, on_recv, on_event, &rb);
	const char *err = NULL;
	size_t n;
	char *m = sip_msg(40000, &n);
	sip_tp_stats st;
	int idx;

	CHECK(a && b && make_cert(cert, key) == 0);
	ra.tp = a;
	rb.tp = b;
	rb.echo = 1;
	sip_tls_config_default(&sc);
	sc.cert = cert;
	sc.key = key;
	sc.client_auth = SIP_TLS_CLIENT_NONE;
	CHECK(sip_tp_listen(b, SIP_TP_TLS, "127.0.0.1", 0, &err) < 0);   /* no certificate yet */
	sip_tp_set_tls(b, sip_tls_new(&sc, why, sizeof why));
	sip_tls_config_default(&cc);
	cc.ca = cert;
	sip_tp_set_tls(a, sip_tls_new(&cc, why, sizeof why));
	unlink(cert);
	unlink(key);
	CHECK(sip_tp_tls(a) && sip_tp_tls(b));
	idx = sip_tp_listen(b, SIP_TP_TLS, "127.0.0.1", 0, &err);
	CHECK(idx >= 0);
	sip_tp_listener_addr(b, idx, NULL, &ab, &lb);
	/* queued through connect and handshake, then written in records */
	CHECK(sip_tp_send_named(a, SIP_TP_TLS, (struct sockaddr *)&ab, lb, 0, "localhost", m, n,
				&err) == 0);
	CHECK(run_until(loop, got1, &ra, 3000));
	CHECK(rb.msgs == 1 && rb.lens[0] == n && memcmp(rb.last, m, MAXKEEP) == 0);
	CHECK(rb.src.kind == SIP_TP_TLS && ra.src.kind == SIP_TP_TLS);
	/* the same name again: the same connection */
	free(m);
	m = sip_msg(0, &n);
	CHECK(sip_tp_send_named(a, SIP_TP_TLS, (struct sockaddr *)&ab, lb, 0, "localhost", m, n,
				&err) == 0);
	CHECK(run_until(loop, got2, &ra, 2000));
	sip_tp_stats_get(b, &st);
	CHECK(st.conns_accepted == 1 && st.handshakes == 0);
	{
		int verified;
		char subject[256], sans[256];

		CHECK(sip_tp_tls_peer(a, ra.src.conn_id, &verified, subject, sizeof subject, sans,
				      sizeof sans) == 1);
		CHECK(verified && strcmp(subject, "CN=localhost") == 0);
		CHECK(strcmp(sans, "DNS:localhost, IP:127.0.0.1") == 0);
		CHECK(sip_tp_tls_peer(b, rb.src.conn_id, &verified, subject, sizeof subject, sans,
				      sizeof sans) == 0);   /* no client certificate */
	}
	/* another name: a connection of its own, which fails the check */
	CHECK(sip_tp_send_named(a, SIP_TP_TLS, (struct sockaddr *)&ab, lb, 0, "other.example", m,
				10, &err) == 0);
	CHECK(run_until(loop, detail_mismatch, &ra, 2000));
	CHECK(strcmp(ra.last_detail, "certificate verify failed: hostname mismatch") == 0);
	sip_tp_stats_get(a, &st);
	CHECK(st.conns_open == 1 && st.tls_failed == 1);
	free(m);
	sip_tp_free(a);
	sip_tp_free(b);
	sip_loop_free(loop);
}

static void watchdog(int sig)
{
	static const char msg[] = "watchdog: test run took too long\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(2);
}

/* --- the rate limit's buckets (ratelimit.c), on a clock the test moves by hand ---------- */

static struct sockaddr_storage v4(unsigned last)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;
	s->sin_family = AF_INET;
	s->sin_addr.s_addr = htonl(0x0a000000u | last);   /* 10.0.0.last */
	return ss;
}

static void test_ratelimit_bucket(void)
{
	sip_rl *rl = sip_rl_new(2, 3, 100, 10000);   /* 2/s, burst 3 */
	struct sockaddr_storage a = v4(1), b = v4(2);
	int retry = 0, report = 0;
	uint64_t t = 1000;

	CHECK(rl);
	CHECK(!sip_rl_new(0, 3, 100, 0) && !sip_rl_new(2, 0.5, 100, 0));
	for (int i = 0; i < 3; i++)   /* the burst */
		CHECK(sip_rl_allow(rl, (struct sockaddr *)&a, t, &retry, &report));
	CHECK(!sip_rl_allow(rl, (struct sockaddr *)&a, t, &retry, &report));
	CHECK(report && retry == 1);   /* first refusal: reported; 1 token comes in 0.5 s */
	CHECK(!sip_rl_allow(rl, (struct sockaddr *)&a, t + 100, &retry, &report));
	CHECK(!report);                /* once per log window */
	CHECK(sip_rl_allow(rl, (struct sockaddr *)&b, t, &retry, &report));   /* b: its own */
	/* 2 tokens/s: after 0.5 s one more for a, and no more than the burst after a minute */
	CHECK(sip_rl_allow(rl, (struct sockaddr *)&a, t + 600, &retry, &report));
	CHECK(!sip_rl_allow(rl, (struct sockaddr *)&a, t + 600, &retry, &report));
	t += 60000;
	for (int i = 0; i < 3; i++)
		CHECK(sip_rl_allow(rl, (struct sockaddr *)&a, t, &retry, &report));
	CHECK(!sip_rl_allow(rl, (struct sockaddr *)&a, t, &retry, &report));
	CHECK(report);                 /* a new window */
	CHECK(sip_rl_refused(rl) == 4 && sip_rl_sources(rl) == 2);
	/* IPv6 sources have buckets of their own */
	struct sockaddr_storage s6;
	memset(&s6, 0, sizeof s6);
	((struct sockaddr_in6 *)&s6)->sin6_family = AF_INET6;
	((struct sockaddr_in6 *)&s6)->sin6_addr.s6_addr[15] = 1;
	CHECK(sip_rl_allow(rl, (struct sockaddr *)&s6, t, &retry, &report));
	CHECK(sip_rl_sources(rl) == 3);
	sip_rl_free(rl);
}

static void test_ratelimit_bounded(void)
{
	sip_rl *rl = sip_rl_new(1, 1, 50, 0);   /* 1/s, burst 1, at most 50 buckets */
	int retry, report;
	uint64_t t = 5000;

	CHECK(rl);
	/* a spoofed flood: 1000 sources once each; memory stays at 50 buckets + 1 shared */
	for (unsigned i = 0; i < 1000; i++) {
		struct sockaddr_storage a = v4(i + 1);
		sip_rl_allow(rl, (struct sockaddr *)&a, t, &retry, &report);
	}
	CHECK(sip_rl_sources(rl) <= 51);
	/* the newcomers past 50 shared one bucket: all but the first were refused */
	CHECK(sip_rl_refused(rl) == 1000 - 51);
	/* a second later every bucket is full again, so a newcomer gets a bucket of its own */
	struct sockaddr_storage late = v4(5000);
	t += 2000;
	CHECK(sip_rl_allow(rl, (struct sockaddr *)&late, t, &retry, &report));
	CHECK(!sip_rl_allow(rl, (struct sockaddr *)&late, t, &retry, &report));
	CHECK(sip_rl_sources(rl) <= 3);   /* the full ones were swept */
	sip_rl_free(rl);
}

int main(void)
{
	struct rlimit rl;

	signal(SIGALRM, watchdog);
	signal(SIGPIPE, SIG_IGN);
	alarm(WATCHDOG_S);
	/* 200 client + 200 server sockets at once need more than a default 256/1024 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
		rl.rlim_cur = 1024;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	RUN(test_frame);
	RUN(test_timers_order);
	RUN(test_timer_stop_restart);
	RUN(test_timer_lanes);
	RUN(test_timer_lazy);
	RUN(test_map);
	RUN(test_del_fd_in_batch);
	RUN(test_loop_pollable);
	RUN(test_udp_ipv4);
	RUN(test_udp_ipv6);
	RUN(test_udp_too_large);
	RUN(test_listen_reuse);
	RUN(test_tcp_split_20k);
	RUN(test_tcp_two_in_one_write);
	RUN(test_tcp_close_in_callback);
	RUN(test_tcp_keepalive);
	RUN(test_tcp_bad_framing_closes_one);
	RUN(test_tcp_2000_conns);
	RUN(test_tcp_max_conns);
	RUN(test_tcp_idle_timeout);
	RUN(test_tcp_partial_timeout);
	RUN(test_tcp_tp_to_tp_ipv4);
	RUN(test_tcp_tp_to_tp_ipv6);
	RUN(test_tls_tp_to_tp);
	RUN(test_ratelimit_bucket);
	RUN(test_ratelimit_bounded);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
