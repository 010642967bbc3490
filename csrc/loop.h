/* loop.h: the single-threaded event loop every endpoint runs on: epoll for sockets and a
 * binary min-heap of millisecond timers embedded in their owners (no allocation per timer). */
#ifndef SIP_LOOP_H
#define SIP_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

typedef struct sip_loop sip_loop;

/* events: EPOLLIN / EPOLLOUT / EPOLLERR / EPOLLHUP bits */
typedef void (*sip_io_fn)(void *arg, uint32_t events);
typedef void (*sip_timer_fn)(void *arg);

/* Embedded in its owner; the loop only keeps a pointer while it is active.
 * Call sip_timer_init() once before first use; idx == SIP_TIMER_IDLE when inactive. */
typedef struct sip_timer {
	uint64_t due;      /* CLOCK_MONOTONIC ms */
	uint64_t seq;      /* start order: equal due times fire first-started first */
	size_t idx;        /* position in the heap, SIP_TIMER_LANE, or SIP_TIMER_IDLE */
	struct sip_timer *prev, *next;   /* in a lane (sip_timer_start_fixed) */
	int lane;
	sip_timer_fn fn;
	void *arg;
} sip_timer;

#define SIP_TIMER_IDLE SIZE_MAX
#define SIP_LOOP_LANES 8
#define SIP_TIMER_LANE (SIZE_MAX - 1)
#define SIP_LOOP_LAZY_MS 100

void sip_timer_init(sip_timer *t);

sip_loop *sip_loop_new(void);
/* Closes the epoll fd; registered fds stay open (their owners close them). */
void sip_loop_free(sip_loop *loop);

/* Level-triggered. Returns 0, or -1 with errno set. One registration per fd. */
int sip_loop_add_fd(sip_loop *loop, int fd, uint32_t events, sip_io_fn fn, void *arg);
int sip_loop_mod_fd(sip_loop *loop, int fd, uint32_t events);
/* Safe from inside any callback: a removed fd gets no more calls, not even for events
 * already fetched in the current batch. Call it before close(fd). */
void sip_loop_del_fd(sip_loop *loop, int fd);

/* (Re)start: fires once, ms_from_now after now. Safe from inside callbacks; a timer started
 * while timers are being dispatched fires in a later step even if already due. */
void sip_timer_start(sip_loop *loop, sip_timer *t, uint64_t ms_from_now, sip_timer_fn fn, void *arg);
/* The same for a duration many timers share (Timer J's 32 s for every transaction): such
 * timers sit in a FIFO per duration, started and stopped in O(1) without touching any other
 * timer (a heap of tens of thousands of them costs cache misses on every change). The first
 * SIP_LOOP_LANES distinct durations get lanes; others go to the heap. */
void sip_timer_start_fixed(sip_loop *loop, sip_timer *t, uint64_t ms, sip_timer_fn fn, void *arg);
/* The same for a timer whose only job is to end something after a wait (Timers D, I, J, K):
 * it may fire up to SIP_LOOP_LAZY_MS late (a sixteenth of ms, when that is less), so that
 * many of them share one wake-up of the loop. */
void sip_timer_start_lazy(sip_loop *loop, sip_timer *t, uint64_t ms, sip_timer_fn fn, void *arg);
void sip_timer_stop(sip_loop *loop, sip_timer *t);
int sip_timer_active(const sip_timer *t);

/* CLOCK_MONOTONIC in ms, as of the last step (or timer start). */
uint64_t sip_loop_now(sip_loop *loop);

/* One epoll_wait (timeout_ms clipped to the next timer; -1 waits until something happens),
 * then IO callbacks, then every due timer. Returns how many callbacks ran, or -1. */
int sip_loop_step(sip_loop *loop, int timeout_ms);

/* For embedding in another loop: poll this fd for readability, wait at most
 * sip_loop_timeout() ms (-1: no timer pending, 0: one is due), then sip_loop_step(loop, 0). */
int sip_loop_fd(sip_loop *loop);
int sip_loop_timeout(sip_loop *loop);

#endif
