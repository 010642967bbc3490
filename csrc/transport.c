/* transport.c: UDP and TCP sockets for SIP (RFC 3261 §18) over the epoll loop: listeners,
 * a connection table keyed by id and by peer, stream framing, keep-alives and limits. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/errqueue.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "frame.h"
#include "transport.h"

/* A host has a handful of addresses, each with UDP and TCP; 16 covers that without a
 * growable array. */
#define SIP_TP_MAX_LISTENERS 16
/* Datagrams and accepts handled per wakeup: enough to drain a burst in one go, few enough
 * that one busy socket cannot starve the connections waiting behind it. */
#define SIP_TP_UDP_BATCH 64
/* datagrams per recvmmsg: a call that brings fewer means the queue is (nearly) empty, and
 * level-triggered epoll says when more came, so no recv ends in EAGAIN just to find out */
#define SIP_TP_UDP_MMSG 4
#define SIP_TP_ACCEPT_BATCH 64
/* Kernel queue of finished handshakes; the kernel caps it at somaxconn anyway. */
#define SIP_TP_BACKLOG 1024
/* Bursts of INVITEs arrive faster than one step drains them; 1 MB holds ~1000 typical
 * messages (best effort: the kernel clamps it to rmem_max). */
#define SIP_TP_UDP_RCVBUF (1 << 20)
/* First read buffer: a typical SIP message (1-2 KB) plus a pipelined neighbour. */
#define SIP_TP_RBUF_INIT 4096
/* After EMFILE the listen socket stays readable; pausing accept for a moment keeps the
 * loop from spinning while descriptors are scarce. */
#define SIP_TP_ACCEPT_PAUSE_MS 100

/* Defaults, see sip_tp_config_default(). */
#define SIP_TP_MAX_MSG_DEFAULT 65535u      /* the largest UDP payload; keeps one limit for both */
#define SIP_TP_MAX_CONNS_DEFAULT 1024u     /* the usual RLIMIT_NOFILE soft limit is 1024 */
#define SIP_TP_MAX_CONN_BUF_DEFAULT (4u * 65536u) /* four maximal messages of backlog */
/* Longer than any transaction (Timer B/F, 32 s) plus several RFC 5626 keep-alive
 * intervals (at most 120 s), so only dead flows are reaped. */
#define SIP_TP_IDLE_MS_DEFAULT (10u * 60u * 1000u)
/* A real client writes a message in well under a second; 30 s bounds slowloris. */
#define SIP_TP_PARTIAL_MS_DEFAULT (30u * 1000u)

typedef struct listener {
	sip_transport *tp;
	sip_tp_kind kind;
	int fd;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	sip_timer pause;
} listener;

typedef struct conn {
	sip_transport *tp;
	int fd;
	int connecting;
	int closed;          /* closed while busy: freed when the outermost handler returns */
	int busy;
	int want_out;        /* EPOLLOUT is in the interest set */
	sip_tp_src src;      /* kind, peer, local and conn_id, ready for callbacks */

	char *rbuf;
	size_t rlen, rcap;
	size_t need;         /* length of the message being read, once its headers are in */
	size_t scan_from;    /* no empty line before here: no use framing again */
	unsigned crlf;       /* progress through a "\r\n\r\n" ping between messages */

	char *wbuf;          /* queued bytes are wbuf[woff, wlen) */
	size_t woff, wlen, wcap;

	uint64_t last_io;
	uint64_t partial_since;
	sip_timer idle, partial;

	struct conn *id_next, *peer_next, *prev, *next;
} conn;

struct sip_transport {
	sip_loop *loop;
	sip_tp_config cfg;
	sip_tp_recv_fn recv;
	sip_tp_event_fn event;
	void *arg;
	sip_tp_tap_fn tap;
	void *tap_arg;
	int freeing;         /* no callbacks while tearing down */
	int in_udp_io;       /* a datagram callback is running: sip_tp_free defers the free */

	listener ls[SIP_TP_MAX_LISTENERS];
	int nls;
	char *ubuf;          /* SIP_TP_UDP_MMSG buffers of max_msg + 1 bytes: one more reveals an
	                      * oversized datagram */

	conn **by_id, **by_peer;
	size_t mask;         /* buckets - 1 */
	conn *all;
	uint32_t next_id;
	sip_tp_stats st;
};

sip_tp_config sip_tp_config_default(void)
{
	sip_tp_config c = {
		.max_msg = SIP_TP_MAX_MSG_DEFAULT,
		.max_conns = SIP_TP_MAX_CONNS_DEFAULT,
		.max_conn_buf = SIP_TP_MAX_CONN_BUF_DEFAULT,
		.idle_ms = SIP_TP_IDLE_MS_DEFAULT,
		.partial_ms = SIP_TP_PARTIAL_MS_DEFAULT,
	};
	return c;
}

static void emit(sip_transport *tp, const char *ev, const sip_tp_src *src, const char *detail)
{
	if (tp->event && !tp->freeing)
		tp->event(tp->arg, ev, src, detail);
}

/* ---- addresses ---- */

static int addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

static int addr_eq(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family || addr_port(a) != addr_port(b))
		return 0;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return 0;
}

static size_t addr_hash(const struct sockaddr *sa)
{
	const unsigned char *p;
	size_t n, h = 2166136261u;   /* FNV-1a */

	if (sa->sa_family == AF_INET) {
		p = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		n = 4;
	} else {
		p = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		n = 16;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return (h ^ (size_t)addr_port(sa)) * 16777619u;
}

static int addr_ok(const struct sockaddr *sa, socklen_t len)
{
	return sa && ((sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) ||
		      (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)));
}

/* ---- connection table ---- */

static conn *find_id(sip_transport *tp, uint32_t id)
{
	for (conn *c = tp->by_id[id & tp->mask]; c; c = c->id_next)
		if (c->src.conn_id == id)
			return c;
	return NULL;
}

static conn *find_peer(sip_transport *tp, const struct sockaddr *sa)
{
	for (conn *c = tp->by_peer[addr_hash(sa) & tp->mask]; c; c = c->peer_next)
		if (addr_eq((const struct sockaddr *)&c->src.peer, sa))
			return c;
	return NULL;
}

static uint32_t new_id(sip_transport *tp)
{
	do {
		tp->next_id++;
	} while (tp->next_id == 0 || find_id(tp, tp->next_id));
	return tp->next_id;
}

static void unlink_ptr(conn **head, conn *c, size_t off)
{
	for (conn **pp = head; *pp; pp = (conn **)((char *)*pp + off)) {
		if (*pp == c) {
			*pp = *(conn **)((char *)c + off);
			return;
		}
	}
}

static void table_remove(sip_transport *tp, conn *c)
{
	unlink_ptr(&tp->by_id[c->src.conn_id & tp->mask], c, offsetof(conn, id_next));
	unlink_ptr(&tp->by_peer[addr_hash((struct sockaddr *)&c->src.peer) & tp->mask], c,
		   offsetof(conn, peer_next));
	if (c->prev)
		c->prev->next = c->next;
	else
		tp->all = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

static void table_insert(sip_transport *tp, conn *c)
{
	size_t b = c->src.conn_id & tp->mask;
	size_t pb = addr_hash((struct sockaddr *)&c->src.peer) & tp->mask;

	c->id_next = tp->by_id[b];
	tp->by_id[b] = c;
	c->peer_next = tp->by_peer[pb];
	tp->by_peer[pb] = c;
	c->prev = NULL;
	c->next = tp->all;
	if (tp->all)
		tp->all->prev = c;
	tp->all = c;
}

/* ---- connections ---- */

static void conn_free(conn *c)
{
	free(c->rbuf);
	free(c->wbuf);
	free(c);
}

/* Closes and unlinks now; the memory goes when no handler holds it any more. */
static void conn_close(conn *c, const char *ev, const char *detail)
{
	sip_transport *tp = c->tp;

	if (c->closed)
		return;
	c->closed = 1;
	table_remove(tp, c);
	sip_loop_del_fd(tp->loop, c->fd);
	close(c->fd);
	sip_timer_stop(tp->loop, &c->idle);
	sip_timer_stop(tp->loop, &c->partial);
	tp->st.conns_open--;
	tp->st.conns_closed++;
	if (ev) {
		c->busy++;
		emit(tp, ev, &c->src, detail);
		c->busy--;
	}
	if (c->busy == 0)
		conn_free(c);
}

static void set_out(conn *c, int on)
{
	if (c->want_out == on)
		return;
	c->want_out = on;
	sip_loop_mod_fd(c->tp->loop, c->fd, EPOLLIN | (on ? EPOLLOUT : 0));
}

static void idle_fire(void *arg)
{
	conn *c = arg;
	sip_transport *tp = c->tp;
	uint64_t quiet = sip_loop_now(tp->loop) - c->last_io;

	/* Activity only stamps last_io; the timer re-arms for the rest of the period, which
	 * keeps the heap out of the per-read path. */
	if (quiet < tp->cfg.idle_ms) {
		sip_timer_start(tp->loop, &c->idle, tp->cfg.idle_ms - quiet, idle_fire, c);
		return;
	}
	conn_close(c, "idle timeout", NULL);
}

static void partial_fire(void *arg)
{
	conn *c = arg;
	sip_transport *tp = c->tp;
	uint64_t age = sip_loop_now(tp->loop) - c->partial_since;

	if (age < tp->cfg.partial_ms) {
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms - age, partial_fire, c);
		return;
	}
	conn_close(c, "partial timeout", "incomplete message held too long");
}

static void conn_io(void *arg, uint32_t events);

static conn *conn_new(sip_transport *tp, int fd, const struct sockaddr *peer, socklen_t plen,
		      int connecting, int lidx)
{
	conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c)
		return NULL;
	c->tp = tp;
	c->fd = fd;
	c->connecting = connecting;
	c->want_out = connecting;
	c->src.kind = SIP_TP_TCP;
	c->src.listener = lidx;
	memcpy(&c->src.peer, peer, plen);
	c->src.peerlen = plen;
	c->src.locallen = sizeof(c->src.local);
	if (getsockname(fd, (struct sockaddr *)&c->src.local, &c->src.locallen) < 0)
		c->src.locallen = 0;
	c->src.conn_id = new_id(tp);
	sip_timer_init(&c->idle);
	sip_timer_init(&c->partial);
	/* A SIP message goes out in one write; Nagle would only delay the next one. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (sip_loop_add_fd(tp->loop, fd, EPOLLIN | (connecting ? EPOLLOUT : 0), conn_io, c) < 0) {
		free(c);
		return NULL;
	}
	table_insert(tp, c);
	tp->st.conns_open++;
	c->last_io = sip_loop_now(tp->loop);
	sip_timer_start(tp->loop, &c->idle, tp->cfg.idle_ms, idle_fire, c);
	if (lidx >= 0) {
		/* A peer that connects and stays silent holds a slot: its first message is due
		 * within partial_ms like any other, not after the (long) idle timeout. */
		c->partial_since = c->last_io;
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
	}
	return c;
}

/* Sends what is queued; returns -1 after closing the connection. */
static int conn_flush(conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c, "send failed", strerror(errno));
			return -1;
		}
		c->woff += (size_t)n;
		c->last_io = sip_loop_now(c->tp->loop);
	}
	if (c->woff == c->wlen) {
		c->woff = c->wlen = 0;
		if (c->wcap > SIP_TP_RBUF_INIT) {
			free(c->wbuf);
			c->wbuf = NULL;
			c->wcap = 0;
		}
		set_out(c, 0);
	} else {
		set_out(c, 1);
	}
	return 0;
}

static int conn_write(conn *c, const char *buf, size_t len, const char **err)
{
	size_t pending = c->wlen - c->woff;

	if (pending + len > c->tp->cfg.max_conn_buf) {
		conn_close(c, "limit", "write queue full");
		*err = "write queue full";
		return -1;
	}
	if (!c->connecting && pending == 0) {
		while (len > 0) {
			ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				*err = strerror(errno);
				conn_close(c, "send failed", *err);
				return -1;
			}
			buf += n;
			len -= (size_t)n;
		}
		c->last_io = sip_loop_now(c->tp->loop);
		if (len == 0)
			return 0;
	}
	if (c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, pending);
		c->woff = 0;
		c->wlen = pending;
	}
	if (c->wlen + len > c->wcap) {
		size_t cap = c->wcap ? c->wcap : SIP_TP_RBUF_INIT;
		char *w;

		while (cap < c->wlen + len)
			cap *= 2;
		w = realloc(c->wbuf, cap);
		if (!w) {
			*err = "out of memory";
			return -1;
		}
		c->wbuf = w;
		c->wcap = cap;
	}
	memcpy(c->wbuf + c->wlen, buf, len);
	c->wlen += len;
	if (!c->connecting)
		set_out(c, 1);
	return 0;
}

/* RFC 5626 §4.4.1: a double CRLF between messages is a ping, answered by a single CRLF;
 * a lone CRLF (a pong, or padding) is skipped. */
static void keepalive(conn *c, const char *p, size_t n)
{
	static const char ping[] = "\r\n\r\n";
	const char *err;

	for (size_t i = 0; i < n && !c->closed; i++) {
		if (p[i] == ping[c->crlf])
			c->crlf++;
		else
			c->crlf = p[i] == '\r';
		if (c->crlf == 4) {
			c->crlf = 0;
			conn_write(c, "\r\n", 2, &err);
		}
	}
}

static int has_empty_line(const char *b, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (b[i] == '\n' && ((i + 1 < to && b[i + 1] == '\n') ||
				     (i + 2 < to && b[i + 1] == '\r' && b[i + 2] == '\n')))
			return 1;
	return 0;
}

/* Frames and delivers every whole message in the read buffer, then keeps the rest. */
static void conn_deliver(conn *c)
{
	sip_transport *tp = c->tp;
	size_t off = 0, max = tp->cfg.max_msg;
	int got = 0;

	while (!c->closed && off < c->rlen) {
		const char *b = c->rbuf + off, *err;
		size_t n = c->rlen - off, skip, mlen;
		size_t from = c->scan_from > 2 ? c->scan_from - 2 : 0;
		int r;

		if (c->need && n < c->need)
			break;
		/* Until an empty line shows up there is nothing new to find (keeps a byte-by-byte
		 * sender from making us rescan its headers on every read). */
		if (!c->need && b[0] != '\r' && b[0] != '\n' && n <= max &&
		    !has_empty_line(b, from, n)) {
			c->scan_from = n;
			break;
		}
		r = sip_frame(b, n, max, &skip, &mlen, &err);
		if (skip) {
			keepalive(c, b, skip);
			off += skip;
			c->scan_from = 0;
			if (c->closed)
				return;
		}
		if (r < 0) {
			conn_close(c, "bad framing", err);
			return;
		}
		if (r == 0) {
			c->need = mlen;
			c->scan_from = n - skip;
			break;
		}
		c->crlf = 0;
		c->need = 0;
		c->scan_from = 0;
		tp->st.tcp_in++;
		got = 1;
		if (tp->tap)
			tp->tap(tp->tap_arg, 0, c->src.kind, (struct sockaddr *)&c->src.peer,
				(struct sockaddr *)&c->src.local, c->rbuf + off, mlen);
		tp->recv(tp->arg, &c->src, c->rbuf + off, mlen);
		off += mlen;
	}
	if (c->closed)
		return;
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	if (c->rlen == 0) {
		sip_timer_stop(tp->loop, &c->partial);
		if (c->rcap > SIP_TP_RBUF_INIT) {
			free(c->rbuf);
			c->rbuf = NULL;
			c->rcap = 0;
		}
	} else if (got || !sip_timer_active(&c->partial)) {
		c->partial_since = sip_loop_now(tp->loop);
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
	}
}

static void conn_read(conn *c)
{
	sip_transport *tp = c->tp;
	ssize_t n;

	if (c->rcap - c->rlen < SIP_TP_RBUF_INIT / 4 && c->rcap < tp->cfg.max_conn_buf) {
		size_t cap = c->rcap ? c->rcap * 2 : SIP_TP_RBUF_INIT;
		char *r;

		if (cap > tp->cfg.max_conn_buf)
			cap = tp->cfg.max_conn_buf;
		r = realloc(c->rbuf, cap);
		if (!r) {
			conn_close(c, "limit", "out of memory");
			return;
		}
		c->rbuf = r;
		c->rcap = cap;
	}
	if (c->rlen == c->rcap) {
		conn_close(c, "limit", "read buffer full");
		return;
	}
	n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
	if (n == 0) {
		conn_close(c, "conn close", "closed by peer");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c, "conn close", strerror(errno));
		return;
	}
	c->rlen += (size_t)n;
	c->last_io = sip_loop_now(tp->loop);
	conn_deliver(c);
}

static void conn_connected(conn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		conn_close(c, "connect failed", strerror(soerr));
		return;
	}
	if (c->connecting) {
		c->connecting = 0;
		c->src.locallen = sizeof(c->src.local);
		if (getsockname(c->fd, (struct sockaddr *)&c->src.local, &c->src.locallen) < 0)
			c->src.locallen = 0;
		emit(c->tp, "conn open", &c->src, "outgoing");
	}
}

static void conn_io(void *arg, uint32_t events)
{
	conn *c = arg;

	c->busy++;
	if (c->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		conn_connected(c);
	if (!c->closed && !c->connecting && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		conn_read(c);
	if (!c->closed && !c->connecting && (events & EPOLLOUT))
		conn_flush(c);
	if (--c->busy == 0 && c->closed)
		conn_free(c);
}

static conn *conn_connect(sip_transport *tp, const struct sockaddr *dst, socklen_t dlen,
			  const char **err)
{
	int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc;
	conn *c;

	if (fd < 0) {
		*err = strerror(errno);
		return NULL;
	}
	rc = connect(fd, dst, dlen);
	if (rc < 0 && errno != EINPROGRESS) {
		*err = strerror(errno);
		close(fd);
		return NULL;
	}
	c = conn_new(tp, fd, dst, dlen, rc < 0, -1);
	if (!c) {
		*err = "out of memory";
		close(fd);
		return NULL;
	}
	if (rc == 0) {
		/* the handler may close it; the caller is about to write to it */
		c->busy++;
		emit(tp, "conn open", &c->src, "outgoing");
		if (--c->busy == 0 && c->closed) {
			conn_free(c);
			*err = "connection closed";
			return NULL;
		}
	}
	return c;
}

/* ---- listeners ---- */

static void accept_resume(void *arg)
{
	listener *l = arg;

	sip_loop_mod_fd(l->tp->loop, l->fd, EPOLLIN);
}

static void accept_io(void *arg, uint32_t events)
{
	listener *l = arg;
	sip_transport *tp = l->tp;

	for (int i = 0; i < SIP_TP_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			emit(tp, "accept failed", NULL, strerror(errno));
			sip_loop_mod_fd(tp->loop, l->fd, 0);
			sip_timer_start(tp->loop, &l->pause, SIP_TP_ACCEPT_PAUSE_MS, accept_resume, l);
			return;
		}
		if (tp->st.conns_open >= tp->cfg.max_conns) {
			sip_tp_src src = { .kind = SIP_TP_TCP, .peerlen = sl,
					   .listener = (int)(l - tp->ls) };

			memcpy(&src.peer, &ss, sl);
			close(fd);
			tp->st.dropped++;
			emit(tp, "limit", &src, "too many connections");
			continue;
		}
		c = conn_new(tp, fd, (struct sockaddr *)&ss, sl, 0, (int)(l - tp->ls));
		if (!c) {
			close(fd);
			continue;
		}
		tp->st.conns_accepted++;
		emit(tp, "conn open", &c->src, "incoming");
	}
}

static int only_crlf(const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != '\r' && b[i] != '\n')
			return 0;
	return 1;
}

static void tp_release(sip_transport *tp);

/* §18.4: an ICMP unreachable for a datagram we sent, which IP_RECVERR queues on the
 * socket: the transport user hears "unreachable" for that destination (the datagram's
 * own address comes back in msg_name), and a client transaction waiting on it fails at
 * once (§17.1.4) instead of at Timer B/F. A few a wake-up: the queue is bounded anyway.
 * Returns 1 when what handled an error closed the transport (freed here): stop at once. */
static int udp_errors(sip_transport *tp, listener *l)
{
	for (int i = 0; i < 16; i++) {
		char cbuf[256], one;
		sip_tp_src s;
		struct iovec iov = { &one, 1 };
		struct msghdr mh;
		memset(&mh, 0, sizeof mh);
		memset(&s, 0, sizeof s);
		mh.msg_name = &s.peer;
		mh.msg_namelen = sizeof s.peer;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof cbuf;
		if (recvmsg(l->fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
			return 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (!((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
			      (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)))
				continue;
			const struct sock_extended_err *ee = (const void *)CMSG_DATA(c);
			if ((ee->ee_origin != SO_EE_ORIGIN_ICMP && ee->ee_origin != SO_EE_ORIGIN_ICMP6) ||
			    (ee->ee_errno != ECONNREFUSED && ee->ee_errno != EHOSTUNREACH &&
			     ee->ee_errno != ENETUNREACH))
				continue;
			s.kind = SIP_TP_UDP;
			s.listener = (int)(l - tp->ls);
			s.peerlen = mh.msg_namelen;
			memcpy(&s.local, &l->addr, l->addrlen);
			s.locallen = l->addrlen;
			tp->in_udp_io = 1;   /* a 503 reaches Lua, which may close us */
			emit(tp, "unreachable", &s, strerror((int)ee->ee_errno));
			tp->in_udp_io = 0;
			if (tp->freeing) {
				tp_release(tp);
				return 1;
			}
		}
	}
	return 0;
}

static void udp_io(void *arg, uint32_t events)
{
	listener *l = arg;
	sip_transport *tp = l->tp;
	size_t cap = tp->cfg.max_msg + 1;
	if ((events & EPOLLERR) && udp_errors(tp, l))
		return;

	for (int round = 0; round < SIP_TP_UDP_BATCH / SIP_TP_UDP_MMSG; round++) {
		struct mmsghdr mm[SIP_TP_UDP_MMSG];
		struct iovec iov[SIP_TP_UDP_MMSG];
		sip_tp_src src[SIP_TP_UDP_MMSG];
		for (int i = 0; i < SIP_TP_UDP_MMSG; i++) {
			iov[i].iov_base = tp->ubuf + (size_t)i * cap;
			iov[i].iov_len = cap;
			memset(&mm[i].msg_hdr, 0, sizeof mm[i].msg_hdr);
			mm[i].msg_hdr.msg_name = &src[i].peer;
			mm[i].msg_hdr.msg_namelen = sizeof src[i].peer;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		int k = recvmmsg(l->fd, mm, SIP_TP_UDP_MMSG, MSG_DONTWAIT, NULL);
		if (k < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno != EINTR && udp_errors(tp, l))   /* an ICMP error queued */
				return;
			continue;
		}
		for (int i = 0; i < k; i++) {
			sip_tp_src *s = &src[i];
			size_t n = mm[i].msg_len;
			char *buf = iov[i].iov_base;
			s->kind = SIP_TP_UDP;
			s->listener = (int)(l - tp->ls);
			s->conn_id = 0;
			s->peerlen = mm[i].msg_hdr.msg_namelen;
			memcpy(&s->local, &l->addr, l->addrlen);
			s->locallen = l->addrlen;
			if (n > tp->cfg.max_msg || (mm[i].msg_hdr.msg_flags & MSG_TRUNC)) {
				tp->st.dropped++;
				emit(tp, "too large", s, "datagram over max_msg dropped");
				continue;
			}
			if (only_crlf(buf, n))
				continue; /* keep-alive (RFC 5626 §4.4.2 uses STUN, but CRLF is common) */
			tp->st.udp_in++;
			if (tp->tap)
				tp->tap(tp->tap_arg, 0, SIP_TP_UDP, (struct sockaddr *)&s->peer,
					(struct sockaddr *)&s->local, buf, n);
			tp->in_udp_io = 1;
			tp->recv(tp->arg, s, buf, n);
			tp->in_udp_io = 0;
			if (tp->freeing) {
				tp_release(tp);   /* the endpoint was closed by what handled this one */
				return;
			}
		}
		if (k < SIP_TP_UDP_MMSG)
			return;
	}
}

int sip_tp_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t n = host ? strlen(host) : 0;

	if (n == 0 || n >= sizeof(buf) || port < 0 || port > 65535)
		return -1;
	if (host[0] == '[') {
		if (n < 2 || host[n - 1] != ']')
			return -1;
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
	} else {
		memcpy(buf, host, n + 1);
	}
	memset(ss, 0, sizeof(*ss));
	if (host[0] != '[') {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
			in->sin_family = AF_INET;
			in->sin_port = htons((uint16_t)port);
			*len = sizeof(*in);
			return 0;
		}
	}
	{
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)port);
			*len = sizeof(*in6);
			return 0;
		}
	}
	return -1;
}

int sip_tp_listen(sip_transport *tp, sip_tp_kind kind, const char *host, int port,
		  const char **err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	listener *l;
	int fd, one = 1;

	if (!tp || (kind != SIP_TP_UDP && kind != SIP_TP_TCP)) {
		*err = "bad transport kind";
		return -1;
	}
	if (tp->nls == SIP_TP_MAX_LISTENERS) {
		*err = "too many listeners";
		return -1;
	}
	if (sip_tp_parse_addr(host, port, &ss, &sl) < 0) {
		*err = "bad address (need an IP literal and a port 0-65535)";
		return -1;
	}
	fd = socket(ss.ss_family, (kind == SIP_TP_UDP ? SOCK_DGRAM : SOCK_STREAM) |
		    SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = strerror(errno);
		return -1;
	}
	/* v4 and v6 listeners on one port must not collide over mapped addresses. */
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (tp->cfg.reuse_port)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (kind == SIP_TP_TCP) {
		/* Restarting must not wait out TIME_WAIT. Not on UDP: there it would let two
		 * processes share a port silently. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	} else {
		int sz = SIP_TP_UDP_RCVBUF;

		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		/* ICMP unreachables for what we send, queued for udp_errors (§18.4) */
		if (ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof(one));
		else
			setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    (kind == SIP_TP_TCP && listen(fd, SIP_TP_BACKLOG) < 0)) {
		*err = strerror(errno);
		close(fd);
		return -1;
	}
	l = &tp->ls[tp->nls];
	l->tp = tp;
	l->kind = kind;
	l->fd = fd;
	l->addrlen = sizeof(l->addr);
	if (getsockname(fd, (struct sockaddr *)&l->addr, &l->addrlen) < 0) {
		memcpy(&l->addr, &ss, sl);
		l->addrlen = sl;
	}
	sip_timer_init(&l->pause);
	if (sip_loop_add_fd(tp->loop, fd, EPOLLIN, kind == SIP_TP_UDP ? udp_io : accept_io, l) < 0) {
		*err = strerror(errno);
		close(fd);
		return -1;
	}
	return tp->nls++;
}

int sip_tp_listener_count(sip_transport *tp)
{
	return tp ? tp->nls : 0;
}

int sip_tp_listener_addr(sip_transport *tp, int idx, sip_tp_kind *kind,
			 struct sockaddr_storage *addr, socklen_t *len)
{
	if (!tp || idx < 0 || idx >= tp->nls)
		return -1;
	if (kind)
		*kind = tp->ls[idx].kind;
	if (addr)
		memcpy(addr, &tp->ls[idx].addr, tp->ls[idx].addrlen);
	if (len)
		*len = tp->ls[idx].addrlen;
	return 0;
}

/* ---- sending ---- */

static int udp_sendto(sip_transport *tp, listener *l, const struct sockaddr *dst, socklen_t dlen,
		      const char *buf, size_t len, const char **err)
{
	int r = (int)sendto(l->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, dst, dlen);
	/* With IP_RECVERR an ICMP error for some earlier datagram is also left pending on the
	 * socket, and the next send, to anyone, fails with it once (clearing it): that error
	 * is not this datagram's, so it goes again. The error itself stays queued for
	 * udp_errors. */
	if (r < 0 && (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH))
		r = (int)sendto(l->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, dst, dlen);
	if (r < 0) {
		*err = strerror(errno);
		return -1;
	}
	tp->st.udp_out++;
	if (tp->tap)
		tp->tap(tp->tap_arg, 1, SIP_TP_UDP, (struct sockaddr *)&l->addr, dst, buf, len);
	return 0;
}

static int send_udp(sip_transport *tp, const struct sockaddr *dst, socklen_t dlen,
		    const char *buf, size_t len, const char **err)
{
	for (int i = 0; i < tp->nls; i++) {
		listener *l = &tp->ls[i];

		if (l->kind == SIP_TP_UDP && l->addr.ss_family == dst->sa_family)
			return udp_sendto(tp, l, dst, dlen, buf, len, err);
	}
	*err = "no UDP listener for that address family";
	return -1;
}

int sip_tp_send_from(sip_transport *tp, int idx, const struct sockaddr *dst, socklen_t dlen,
		     const char *buf, size_t len, const char **err)
{
	if (!tp || idx < 0 || idx >= tp->nls || tp->ls[idx].kind != SIP_TP_UDP) {
		*err = "not a UDP listener";
		return -1;
	}
	if (!addr_ok(dst, dlen) || dst->sa_family != tp->ls[idx].addr.ss_family) {
		*err = "bad destination address";
		return -1;
	}
	if (!buf && len) {
		*err = "bad arguments";
		return -1;
	}
	return udp_sendto(tp, &tp->ls[idx], dst, dlen, buf, len, err);
}

static int send_tcp(sip_transport *tp, const struct sockaddr *dst, socklen_t dlen,
		    uint32_t conn_id, const char *buf, size_t len, const char **err)
{
	conn *c = conn_id ? find_id(tp, conn_id) : NULL;

	if (!c && dst)
		c = find_peer(tp, dst);
	if (!c) {
		if (!dst) {
			*err = "connection closed";
			return -1;
		}
		if (tp->st.conns_open >= tp->cfg.max_conns) {
			*err = "too many connections";
			return -1;
		}
		c = conn_connect(tp, dst, dlen, err);
		if (!c)
			return -1;
	}
	if (tp->tap)   /* before the write, which may close c */
		tp->tap(tp->tap_arg, 1, c->src.kind, (struct sockaddr *)&c->src.local,
			(struct sockaddr *)&c->src.peer, buf, len);
	if (conn_write(c, buf, len, err) < 0)
		return -1;
	tp->st.tcp_out++;
	return 0;
}

int sip_tp_send(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst, socklen_t dlen,
		uint32_t conn_id, const char *buf, size_t len, const char **err)
{
	if (!tp || (!buf && len)) {
		*err = "bad arguments";
		return -1;
	}
	if (dst && !addr_ok(dst, dlen)) {
		*err = "bad destination address";
		return -1;
	}
	if (kind == SIP_TP_UDP) {
		if (!dst) {
			*err = "no destination";
			return -1;
		}
		return send_udp(tp, dst, dlen, buf, len, err);
	}
	if (kind != SIP_TP_TCP) {
		*err = "bad transport kind";
		return -1;
	}
	if (len > tp->cfg.max_msg) {
		*err = "message too large";
		return -1;
	}
	return send_tcp(tp, dst, dlen, conn_id, buf, len, err);
}

int sip_tp_close_conn(sip_transport *tp, uint32_t conn_id)
{
	conn *c = tp && conn_id ? find_id(tp, conn_id) : NULL;

	if (!c)
		return -1;
	conn_close(c, "conn close", "closed locally");
	return 0;
}

void sip_tp_stats_get(sip_transport *tp, sip_tp_stats *st)
{
	*st = tp->st;
}

void sip_tp_set_tap(sip_transport *tp, sip_tp_tap_fn fn, void *arg)
{
	tp->tap = fn;
	tp->tap_arg = arg;
}

/* ---- life cycle ---- */

sip_transport *sip_tp_new(sip_loop *loop, const sip_tp_config *cfg, sip_tp_recv_fn recv,
			  sip_tp_event_fn event, void *arg)
{
	sip_tp_config d = sip_tp_config_default();
	sip_transport *tp;
	size_t buckets = 16;

	if (!loop || !recv)
		return NULL;
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return NULL;
	tp->cfg = cfg ? *cfg : d;
	if (!tp->cfg.max_msg)
		tp->cfg.max_msg = d.max_msg;
	if (!tp->cfg.max_conns)
		tp->cfg.max_conns = d.max_conns;
	if (!tp->cfg.max_conn_buf)
		tp->cfg.max_conn_buf = d.max_conn_buf;
	if (!tp->cfg.idle_ms)
		tp->cfg.idle_ms = d.idle_ms;
	if (!tp->cfg.partial_ms)
		tp->cfg.partial_ms = d.partial_ms;
	/* A buffer smaller than one whole message (plus its keep-alive prefix) could never
	 * frame it. */
	if (tp->cfg.max_conn_buf < tp->cfg.max_msg + SIP_TP_RBUF_INIT)
		tp->cfg.max_conn_buf = tp->cfg.max_msg + SIP_TP_RBUF_INIT;
	while (buckets < tp->cfg.max_conns && buckets < (1u << 20))
		buckets *= 2;
	tp->mask = buckets - 1;
	tp->by_id = calloc(buckets, sizeof(conn *));
	tp->by_peer = calloc(buckets, sizeof(conn *));
	tp->ubuf = malloc((tp->cfg.max_msg + 1) * SIP_TP_UDP_MMSG);
	if (!tp->by_id || !tp->by_peer || !tp->ubuf) {
		free(tp->by_id);
		free(tp->by_peer);
		free(tp->ubuf);
		free(tp);
		return NULL;
	}
	tp->loop = loop;
	tp->recv = recv;
	tp->event = event;
	tp->arg = arg;
	return tp;
}

static void tp_release(sip_transport *tp)
{
	free(tp->by_id);
	free(tp->by_peer);
	free(tp->ubuf);
	free(tp);
}

void sip_tp_free(sip_transport *tp)
{
	if (!tp)
		return;
	tp->freeing = 1;
	while (tp->all)
		conn_close(tp->all, NULL, NULL);
	for (int i = 0; i < tp->nls; i++) {
		sip_timer_stop(tp->loop, &tp->ls[i].pause);
		sip_loop_del_fd(tp->loop, tp->ls[i].fd);
		close(tp->ls[i].fd);
	}
	if (tp->in_udp_io)
		return;   /* freed by udp_io once the callback that closed us returns */
	tp_release(tp);
}

int sip_tp_has_conn(sip_transport *tp, const struct sockaddr *peer)
{
	return tp && peer && find_peer(tp, peer) != NULL;
}
