/* loop.c: epoll + a binary min-heap of timers, one thread, no busy waiting.
 * Registrations removed during a dispatch batch are parked and freed after the batch. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "loop.h"

/* Events fetched per epoll_wait: enough to drain a busy proxy in few syscalls, small enough
 * to live on the stack; level triggering means nothing is lost beyond it. */
#define SIP_LOOP_MAX_EVENTS 64

/* One per registered fd; epoll's data.ptr points here, so a stale event names a dead reg
 * (not a reused fd number) and is skipped. */
typedef struct fd_reg {
	int fd;
	int dead;
	sip_io_fn fn;
	void *arg;
	struct fd_reg *next_dead;
} fd_reg;

struct sip_loop {
	int epfd;
	uint64_t now;
	uint64_t seq;          /* next timer start number */
	int depth;             /* > 0 while dispatching */

	fd_reg **regs;         /* indexed by fd */
	size_t nregs;
	fd_reg *dead;          /* removed during dispatch; freed when the batch ends */

	sip_timer **heap;
	size_t nheap, capheap;

	struct lane {
		uint64_t ms;
		uint64_t grid;            /* lazy lanes: wake on multiples of this (0: exactly on time) */
		sip_timer *head, *tail;   /* due order: every start is now + ms, now never goes back */
	} lanes[SIP_LOOP_LANES];
	int nlanes;
};

static void lane_unlink(sip_loop *loop, sip_timer *t);

static uint64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void sip_timer_init(sip_timer *t)
{
	t->due = 0;
	t->seq = 0;
	t->idx = SIP_TIMER_IDLE;
	t->prev = t->next = NULL;
	t->lane = 0;
	t->fn = NULL;
	t->arg = NULL;
}

int sip_timer_active(const sip_timer *t)
{
	return t->idx != SIP_TIMER_IDLE;
}

sip_loop *sip_loop_new(void)
{
	sip_loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		free(loop);
		return NULL;
	}
	loop->now = clock_ms();
	return loop;
}

static void free_dead(sip_loop *loop)
{
	while (loop->dead) {
		fd_reg *r = loop->dead;

		loop->dead = r->next_dead;
		free(r);
	}
}

void sip_loop_free(sip_loop *loop)
{
	if (!loop)
		return;
	for (size_t i = 0; i < loop->nregs; i++)
		free(loop->regs[i]);
	free_dead(loop);
	for (size_t i = 0; i < loop->nheap; i++)
		loop->heap[i]->idx = SIP_TIMER_IDLE;
	for (int k = 0; k < loop->nlanes; k++)
		while (loop->lanes[k].head)
			lane_unlink(loop, loop->lanes[k].head);
	free(loop->regs);
	free(loop->heap);
	close(loop->epfd);
	free(loop);
}

/* ---- fds ---- */

int sip_loop_add_fd(sip_loop *loop, int fd, uint32_t events, sip_io_fn fn, void *arg)
{
	struct epoll_event ev = { 0 };
	fd_reg *r;

	if (!loop || fd < 0 || !fn) {
		errno = EINVAL;
		return -1;
	}
	if ((size_t)fd >= loop->nregs) {
		size_t n = loop->nregs ? loop->nregs : 64;
		fd_reg **regs;

		while (n <= (size_t)fd)
			n *= 2;
		regs = realloc(loop->regs, n * sizeof(*regs));
		if (!regs)
			return -1;
		for (size_t i = loop->nregs; i < n; i++)
			regs[i] = NULL;
		loop->regs = regs;
		loop->nregs = n;
	}
	if (loop->regs[fd]) {
		errno = EEXIST;
		return -1;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -1;
	r->fd = fd;
	r->fn = fn;
	r->arg = arg;
	ev.events = events;
	ev.data.ptr = r;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;

		free(r);
		errno = e;
		return -1;
	}
	loop->regs[fd] = r;
	return 0;
}

static fd_reg *reg_of(sip_loop *loop, int fd)
{
	if (!loop || fd < 0 || (size_t)fd >= loop->nregs)
		return NULL;
	return loop->regs[fd];
}

int sip_loop_mod_fd(sip_loop *loop, int fd, uint32_t events)
{
	struct epoll_event ev = { 0 };
	fd_reg *r = reg_of(loop, fd);

	if (!r) {
		errno = ENOENT;
		return -1;
	}
	ev.events = events;
	ev.data.ptr = r;
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void sip_loop_del_fd(sip_loop *loop, int fd)
{
	fd_reg *r = reg_of(loop, fd);

	if (!r)
		return;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->regs[fd] = NULL;
	if (loop->depth > 0) {
		r->dead = 1;
		r->next_dead = loop->dead;
		loop->dead = r;
	} else {
		free(r);
	}
}

int sip_loop_fd(sip_loop *loop)
{
	return loop ? loop->epfd : -1;
}

/* ---- timers ---- */

static int timer_before(const sip_timer *a, const sip_timer *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(sip_loop *loop, size_t i, sip_timer *t)
{
	loop->heap[i] = t;
	t->idx = i;
}

static void sift_up(sip_loop *loop, size_t i)
{
	sip_timer *t = loop->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!timer_before(t, loop->heap[parent]))
			break;
		heap_set(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_set(loop, i, t);
}

static void sift_down(sip_loop *loop, size_t i)
{
	sip_timer *t = loop->heap[i];

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		sip_timer *best = t;

		if (l < loop->nheap && timer_before(loop->heap[l], best)) {
			m = l;
			best = loop->heap[l];
		}
		if (r < loop->nheap && timer_before(loop->heap[r], best))
			m = r;
		if (m == i)
			break;
		heap_set(loop, i, loop->heap[m]);
		i = m;
	}
	heap_set(loop, i, t);
}

static void lane_unlink(sip_loop *loop, sip_timer *t)
{
	struct lane *l = &loop->lanes[t->lane];
	if (t->prev)
		t->prev->next = t->next;
	else
		l->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		l->tail = t->prev;
	t->prev = t->next = NULL;
	t->idx = SIP_TIMER_IDLE;
}

void sip_timer_stop(sip_loop *loop, sip_timer *t)
{
	size_t i = t->idx;

	if (i == SIP_TIMER_LANE && loop) {
		lane_unlink(loop, t);
		return;
	}
	if (i == SIP_TIMER_IDLE || !loop || i >= loop->nheap || loop->heap[i] != t)
		return;
	t->idx = SIP_TIMER_IDLE;
	loop->nheap--;
	if (i == loop->nheap)
		return;
	{
		sip_timer *moved = loop->heap[loop->nheap];

		heap_set(loop, i, moved);
		sift_up(loop, i);
		sift_down(loop, moved->idx);
	}
}

void sip_timer_start(sip_loop *loop, sip_timer *t, uint64_t ms_from_now, sip_timer_fn fn, void *arg)
{
	if (!loop || !t || !fn)
		return;
	sip_timer_stop(loop, t);
	if (loop->nheap == loop->capheap) {
		size_t n = loop->capheap ? loop->capheap * 2 : 64;
		sip_timer **h = realloc(loop->heap, n * sizeof(*h));

		if (!h)
			abort(); /* a timer that silently never fires would hang a transaction */
		loop->heap = h;
		loop->capheap = n;
	}
	/* A fresh clock: the caller may have run long since the last step. */
	loop->now = clock_ms();
	t->due = loop->now + ms_from_now;
	t->seq = loop->seq++;
	t->fn = fn;
	t->arg = arg;
	heap_set(loop, loop->nheap++, t);
	sift_up(loop, t->idx);
}

/* A lazy lane's wake-up grid: a tenth of a second, or a sixteenth of a short duration (the
 * short timers tests run with stay near their time). */
static uint64_t lazy_grid(uint64_t ms)
{
	return ms / 16 < SIP_LOOP_LAZY_MS ? ms / 16 : SIP_LOOP_LAZY_MS;
}

static void start_lane(sip_loop *loop, sip_timer *t, uint64_t ms, int lazy, sip_timer_fn fn,
		       void *arg)
{
	if (!loop || !t || !fn)
		return;
	uint64_t grid = lazy ? lazy_grid(ms) : 0;
	int k;
	for (k = 0; k < loop->nlanes && (loop->lanes[k].ms != ms || loop->lanes[k].grid != grid); k++)
		;
	if (k == loop->nlanes) {
		if (k == SIP_LOOP_LANES) {
			sip_timer_start(loop, t, ms, fn, arg);   /* lanes all taken: the heap */
			return;
		}
		loop->lanes[k].ms = ms;
		loop->lanes[k].grid = grid;
		loop->lanes[k].head = loop->lanes[k].tail = NULL;
		loop->nlanes++;
	}
	sip_timer_stop(loop, t);
	struct lane *l = &loop->lanes[k];
	loop->now = clock_ms();
	t->due = loop->now + ms;
	t->seq = loop->seq++;
	t->fn = fn;
	t->arg = arg;
	t->lane = k;
	t->idx = SIP_TIMER_LANE;
	t->next = NULL;
	t->prev = l->tail;
	if (l->tail)
		l->tail->next = t;
	else
		l->head = t;
	l->tail = t;
}

void sip_timer_start_fixed(sip_loop *loop, sip_timer *t, uint64_t ms, sip_timer_fn fn, void *arg)
{
	start_lane(loop, t, ms, 0, fn, arg);
}

void sip_timer_start_lazy(sip_loop *loop, sip_timer *t, uint64_t ms, sip_timer_fn fn, void *arg)
{
	start_lane(loop, t, ms, 1, fn, arg);
}

/* The timer that fires first: the heap's top or a lane's head (NULL: none). */
static sip_timer *first_timer(sip_loop *loop)
{
	sip_timer *best = loop->nheap ? loop->heap[0] : NULL;
	for (int k = 0; k < loop->nlanes; k++) {
		sip_timer *h = loop->lanes[k].head;
		if (h && (!best || timer_before(h, best)))
			best = h;
	}
	return best;
}

uint64_t sip_loop_now(sip_loop *loop)
{
	return loop->now;
}

/* When the loop must wake up: the first due time, where a lazy lane's head counts at the end
 * of its grid cell, so that every lazy timer due in one cell fires in one wake-up (at
 * hundreds of transactions a second, one wake-up per Timer K or J would be one per
 * transaction). A step woken for anything else fires what is due meanwhile. */
static uint64_t wake_time(sip_loop *loop)
{
	uint64_t w = loop->nheap ? loop->heap[0]->due : UINT64_MAX;
	for (int k = 0; k < loop->nlanes; k++) {
		const struct lane *l = &loop->lanes[k];
		if (!l->head)
			continue;
		uint64_t due = l->head->due;
		if (l->grid)
			due = (due + l->grid - 1) / l->grid * l->grid;
		if (due < w)
			w = due;
	}
	return w;
}

int sip_loop_timeout(sip_loop *loop)
{
	if (!loop)
		return -1;
	uint64_t due = wake_time(loop);
	if (due == UINT64_MAX)
		return -1;
	loop->now = clock_ms();
	if (due <= loop->now)
		return 0;
	return due - loop->now > INT_MAX ? INT_MAX : (int)(due - loop->now);
}

/* Runs the timers due at this step's time. One started by a callback in here waits for the
 * next step, so a timer re-arming itself at 0 ms cannot spin forever. */
static int run_timers(sip_loop *loop)
{
	uint64_t now = loop->now, first_new = loop->seq;
	int n = 0;

	for (;;) {
		sip_timer *t = first_timer(loop);

		if (!t || t->due > now || t->seq >= first_new)
			break;
		sip_timer_stop(loop, t);
		t->fn(t->arg);
		n++;
	}
	return n;
}

int sip_loop_step(sip_loop *loop, int timeout_ms)
{
	struct epoll_event evs[SIP_LOOP_MAX_EVENTS];
	int tmo, nev, n = 0;

	if (!loop) {
		errno = EINVAL;
		return -1;
	}
	tmo = sip_loop_timeout(loop);
	if (timeout_ms >= 0 && (tmo < 0 || timeout_ms < tmo))
		tmo = timeout_ms;
	nev = epoll_wait(loop->epfd, evs, SIP_LOOP_MAX_EVENTS, tmo);
	if (nev < 0) {
		if (errno != EINTR)
			return -1;
		nev = 0;
	}
	loop->now = clock_ms();
	loop->depth++;
	for (int i = 0; i < nev; i++) {
		fd_reg *r = evs[i].data.ptr;

		if (r->dead)
			continue;
		r->fn(r->arg, evs[i].events);
		n++;
	}
	n += run_timers(loop);
	if (--loop->depth == 0)
		free_dead(loop);
	return n;
}
