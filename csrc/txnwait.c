/* txnwait.c: the waiting transactions of txnwait.h. One allocation each (a 64-byte header and
 * the bytes to resend) in a chained table; expiry by FIFO queues, one per wait duration, so a
 * whole table of them costs one loop timer. The key is not kept: its 64-bit SipHash under the
 * process's secret key (map.c) stands for it. A false match needs two live keys to collide
 * under a hash nobody outside can compute: about count / 2^64 per lookup (1e-13 at 500000). */
#include "txnwait.h"
#include "map.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Distinct wait durations with a queue of their own: an endpoint uses two (64*T1 for Timers
 * D and J, T4 for I and K); a further one shares the nearest queue and may wait longer. */
#define WAIT_QUEUES 4
#define WAIT_INITIAL 64   /* buckets; doubled when the entries outnumber them */

typedef struct entry {
	struct entry *hnext;     /* bucket chain */
	struct entry *qnext;     /* expiry queue, oldest first */
	uint64_t hash;           /* the key's keyed hash: the key itself */
	uint32_t due;            /* loop ms, relative to the table's base */
	uint32_t conn_id;
	uint32_t scope;          /* IPv6 scope id */
	uint32_t len;            /* bytes to resend */
	uint16_t port;           /* network order */
	int8_t listener;
	uint8_t kind, family, alias;
	uint8_t addr[16];
	char data[];             /* the bytes to resend */
} entry;

typedef struct queue {
	unsigned ms;
	entry *head, *tail;
} queue;

struct sip_wait {
	sip_loop *loop;
	uint64_t base;           /* entries' due times count from here (a u32 of ms: 49 days) */
	sip_wait_send_fn send;
	void *arg;
	entry **b;
	size_t nb;
	unsigned count, entries, max;   /* transactions; entries, aliases too */
	queue q[WAIT_QUEUES];
	sip_timer timer;
	size_t bytes, resend_bytes;
	unsigned long expired, full;
};

/* What one entry costs the heap: its chunk as malloc rounded it plus the chunk header. */
static size_t footprint(entry *e, size_t asked)
{
#ifdef __GLIBC__
	(void)asked;
	return malloc_usable_size(e) + sizeof(size_t);
#else
	(void)e;
	return (asked + sizeof(size_t) + 15) & ~(size_t)15;
#endif
}

sip_wait *sip_wait_new(sip_loop *loop, unsigned max, sip_wait_send_fn send, void *arg)
{
	sip_wait *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->nb = WAIT_INITIAL;
	w->b = calloc(w->nb, sizeof *w->b);
	if (!w->b) {
		free(w);
		return NULL;
	}
	w->loop = loop;
	w->base = sip_loop_now(loop);
	w->max = max;
	w->send = send;
	w->arg = arg;
	sip_timer_init(&w->timer);
	return w;
}

void sip_wait_free(sip_wait *w)
{
	if (!w)
		return;
	sip_timer_stop(w->loop, &w->timer);
	for (size_t i = 0; i < w->nb; i++)
		for (entry *e = w->b[i], *next; e; e = next) {
			next = e->hnext;
			free(e);
		}
	free(w->b);
	free(w);
}

static entry **find(sip_wait *w, uint64_t h)
{
	entry **pp = &w->b[h & (w->nb - 1)];
	while (*pp && (*pp)->hash != h)
		pp = &(*pp)->hnext;
	return pp;
}

static uint64_t due_ms(const sip_wait *w, const entry *e) { return w->base + e->due; }

static void grow(sip_wait *w)
{
	size_t nb = w->nb * 2;
	entry **b = calloc(nb, sizeof *b);
	if (!b)
		return;   /* longer chains, still correct */
	for (size_t i = 0; i < w->nb; i++)
		for (entry *e = w->b[i], *next; e; e = next) {
			next = e->hnext;
			e->hnext = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	free(w->b);
	w->b = b;
	w->nb = nb;
}

static void expire_handler(void *arg);

/* The loop timer at the earliest head, if it is not there already. */
static void arm(sip_wait *w)
{
	uint64_t first = UINT64_MAX, now = sip_loop_now(w->loop);
	for (int i = 0; i < WAIT_QUEUES; i++)
		if (w->q[i].head && due_ms(w, w->q[i].head) < first)
			first = due_ms(w, w->q[i].head);
	if (first == UINT64_MAX) {
		sip_timer_stop(w->loop, &w->timer);
		return;
	}
	if (sip_timer_active(&w->timer) && w->timer.due <= first)
		return;
	sip_timer_start_lazy(w->loop, &w->timer, first > now ? first - now : 0, expire_handler, w);
}

static void unlink_entry(sip_wait *w, entry *e)
{
	entry **pp = &w->b[e->hash & (w->nb - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	w->entries--;
	w->count -= !e->alias;
	w->bytes -= footprint(e, sizeof *e + e->len) - e->len;
	w->resend_bytes -= e->len;
	free(e);
}

/* Every entry whose wait is over (Timers D, I, J, K), then the timer for the next. */
static void expire_handler(void *arg)
{
	sip_wait *w = arg;
	uint64_t now = sip_loop_now(w->loop);
	for (int i = 0; i < WAIT_QUEUES; i++) {
		queue *q = &w->q[i];
		while (q->head && due_ms(w, q->head) <= now) {
			entry *e = q->head;
			q->head = e->qnext;
			if (!q->head)
				q->tail = NULL;
			unlink_entry(w, e);
			w->expired++;
		}
	}
	arm(w);
}

/* The queue for a duration: its own, a free one, or the nearest. */
static queue *queue_for(sip_wait *w, unsigned ms)
{
	for (int i = 0; i < WAIT_QUEUES; i++)
		if (w->q[i].head && w->q[i].ms == ms)
			return &w->q[i];
	for (int i = 0; i < WAIT_QUEUES; i++)
		if (!w->q[i].head) {
			w->q[i].ms = ms;   /* an empty queue takes any duration */
			return &w->q[i];
		}
	queue *best = &w->q[0];
	for (int i = 1; i < WAIT_QUEUES; i++) {
		unsigned d = w->q[i].ms > ms ? w->q[i].ms - ms : ms - w->q[i].ms;
		unsigned bd = best->ms > ms ? best->ms - ms : ms - best->ms;
		if (d < bd)
			best = &w->q[i];
	}
	return best;
}

static void put_addr(entry *e, const sip_wait_dest *d)
{
	e->family = (uint8_t)d->addr.ss_family;
	if (d->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&d->addr;
		memcpy(e->addr, &a->sin6_addr, 16);
		e->port = a->sin6_port;
		e->scope = a->sin6_scope_id;
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&d->addr;
		memcpy(e->addr, &a->sin_addr, 4);
		e->port = a->sin_port;
	}
}

static void get_addr(const entry *e, sip_wait_dest *d)
{
	memset(d, 0, sizeof *d);
	d->kind = (sip_tp_kind)e->kind;
	d->conn_id = e->conn_id;
	d->listener = e->listener;
	if (e->family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&d->addr;
		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, e->addr, 16);
		a->sin6_port = e->port;
		a->sin6_scope_id = e->scope;
		d->len = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&d->addr;
		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, e->addr, 4);
		a->sin_port = e->port;
		d->len = sizeof *a;
	}
}

int sip_wait_add(sip_wait *w, const char *key, size_t klen, const sip_wait_dest *d,
		 const char *bytes, size_t len, unsigned ms, int flags)
{
	if (w->entries >= w->max) {
		w->full++;
		return -1;
	}
	uint64_t now = sip_loop_now(w->loop);
	if (len > UINT32_MAX || d->listener < INT8_MIN || d->listener > INT8_MAX ||
	    now + ms - w->base > UINT32_MAX)
		return -1;
	uint64_t h = sip_map_hash(key, klen);
	entry **pp = find(w, h);
	if (*pp)
		return -1;
	size_t asked = sizeof(entry) + len;
	entry *e = malloc(asked);
	if (!e)
		return -1;
	memset(e, 0, sizeof *e);
	e->hash = h;
	e->len = (uint32_t)len;
	e->kind = (uint8_t)d->kind;
	e->alias = (flags & SIP_WAIT_ALIAS) != 0;
	e->conn_id = d->conn_id;
	e->listener = (int8_t)d->listener;
	put_addr(e, d);
	if (len)
		memcpy(e->data, bytes, len);
	e->due = (uint32_t)(now + ms - w->base);
	e->hnext = *pp;
	*pp = e;
	queue *q = queue_for(w, ms);
	if (q->tail)
		q->tail->qnext = e;
	else
		q->head = e;
	q->tail = e;
	w->entries++;
	w->count += !e->alias;
	w->bytes += footprint(e, asked) - len;
	w->resend_bytes += len;
	if (w->entries > w->nb)
		grow(w);
	arm(w);
	return 0;
}

int sip_wait_match(sip_wait *w, const char *key, size_t klen, int resend)
{
	if (!w->entries)
		return 0;
	entry *e = *find(w, sip_map_hash(key, klen));
	if (!e)
		return 0;
	if (resend && e->len) {
		sip_wait_dest d;
		get_addr(e, &d);
		w->send(w->arg, &d, e->data, e->len);
	}
	return 1;
}

void sip_wait_stats_get(const sip_wait *w, sip_wait_stats *st)
{
	st->count = w->count;
	st->max = w->max;
	st->bytes = w->bytes + w->nb * sizeof *w->b;
	st->resend_bytes = w->resend_bytes;
	st->expired = w->expired;
	st->full = w->full;
}
