/* transport.c: UDP, TCP and TLS sockets for SIP (RFC 3261 §18, §26) over the epoll loop:
 * listeners, a connection table keyed by id and by peer, stream framing, keep-alives, limits.
 * TLS is the TCP connection with a non-blocking OpenSSL session (tls.c) in its read and
 * write paths; the framing above it is the same. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/errqueue.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "frame.h"
#include "tls.h"
#include "transport.h"
#include "ws.h"

/* Files served over HTTP on WS listeners (the chat page and its script): none is bigger */
#define SIP_TP_WEB_MAX_FILE (8u << 20)
#define SIP_TP_MAX_MOUNTS 4

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
/* TLS records read per wake-up of one connection before the others get their turn (data
 * OpenSSL has decrypted already is always read: no socket event would announce it). */
#define SIP_TP_TLS_READS 16
/* Failed incoming handshakes logged per second: a scan or a flood must not flood the log;
 * the rest are only counted (stats.tls_failed). */
#define SIP_TP_TLS_LOG_PER_S 5
/* The least default cap on connections from one IP (a quarter of max_conns otherwise):
 * a NAT in front of an office's phones opens one each. */
#define SIP_TP_PER_IP_FLOOR 64u
/* The first byte of a TLS record carrying a handshake: a ClientHello on a TCP port. */
#define SIP_TP_TLS_HANDSHAKE_BYTE 0x16

typedef struct listener {
	sip_transport *tp;
	sip_tp_kind kind;        /* UDP, TCP or TLS */
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
	int seen;            /* some bytes came (a TCP stream's first byte is checked) */
	sip_tp_src src;      /* kind, peer, local and conn_id, ready for callbacks */

	sip_tls_session *tls;   /* TLS: the session; NULL for TCP */
	int handshaking;        /* TLS: the handshake is not over */
	int hs_want;            /* ... and waits for this (SIP_TLS_WANT_*) */
	int rd_want_write;      /* TLS: a read waits for the socket to take bytes */
	int wr_want_read;       /* TLS: a write waits for bytes to come */

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

	/* the address this incoming connection is also reached at (sip_tp_alias): a phone's
	 * registered Contact, which cannot be connected to from here */
	struct sockaddr_storage alias;
	socklen_t aliaslen;   /* 0: none */

	int ws;              /* WS/WSS: a ws_phase */
	int close_after;     /* close once what is queued is written (HTTP reply, WS close) */
	int wsop;            /* the opcode of the fragmented message being put together, or 0 */
	char *wsmsg;         /* ... its payload so far */
	size_t wsmlen, wsmcap;
	char *hold;          /* a WebSocket we opened: frames held until the server's 101 */
	size_t holdlen;
	char wsaccept[29];   /* ... and the Sec-WebSocket-Accept it must send */
	char wsname[64];     /* the host its client's Contact names (sip_tp_ws_name) */

	struct conn *id_next, *peer_next, *alias_next, *prev, *next;
} conn;

/* RFC 6455 §4, §7: a WebSocket connection's life */
enum ws_phase { WS_NONE = 0, WS_HANDSHAKE, WS_OPEN, WS_CLOSING, WS_UPGRADING };
/* (WS_HANDSHAKE: a client's upgrade request awaited; WS_UPGRADING: ours was sent, the
 * server's 101 awaited) */

typedef struct web_mount {
	char prefix[64];
	char dir[1024];
	char *body;          /* sip_tp_web_file: this content at exactly prefix */
	size_t blen;
} web_mount;

struct sip_transport {
	web_mount web[SIP_TP_MAX_MOUNTS];
	int nweb;
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

	conn **by_id, **by_peer, **by_alias;
	size_t mask;         /* buckets - 1 */
	conn *all;
	uint32_t next_id;
	sip_tp_stats st;

	sip_tls *tls;        /* sip_tp_set_tls; NULL: no TLS */
	uint64_t tls_log_at; /* the second the failed-handshake log count is for */
	unsigned tls_logged;
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

/* An open connection to sa of that kind. TLS with a name: a connection we opened is taken
 * only if its server was checked against that same name (RFC 5922 §4). */
static conn *find_alias(sip_transport *tp, const struct sockaddr *sa, sip_tp_kind kind)
{
	for (conn *c = tp->by_alias[addr_hash(sa) & tp->mask]; c; c = c->alias_next)
		if (c->src.kind == kind && addr_eq((const struct sockaddr *)&c->alias, sa))
			return c;
	return NULL;
}

static conn *find_peer(sip_transport *tp, const struct sockaddr *sa, sip_tp_kind kind,
		       const char *name)
{
	for (conn *c = tp->by_peer[addr_hash(sa) & tp->mask]; c; c = c->peer_next)
		if (c->src.kind == kind && addr_eq((const struct sockaddr *)&c->src.peer, sa) &&
		    !(c->tls && c->src.listener < 0 && name && name[0] &&
		      strcasecmp(sip_tls_session_name(c->tls), name) != 0))
			return c;
	return find_alias(tp, sa, kind);
}

static int same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/* Incoming connections (and of them, TLS handshakes in progress) from sa's IP: a walk
 * over the open connections, which happens once per accept and is bounded by max_conns. */
static unsigned count_ip(sip_transport *tp, const struct sockaddr *sa, unsigned *handshakes)
{
	unsigned n = 0;
	*handshakes = 0;
	for (conn *c = tp->all; c; c = c->next)
		if (c->src.listener >= 0 && same_ip((const struct sockaddr *)&c->src.peer, sa)) {
			n++;
			*handshakes += (unsigned)c->handshaking;
		}
	return n;
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

static void alias_remove(sip_transport *tp, conn *c)
{
	if (!c->aliaslen)
		return;
	unlink_ptr(&tp->by_alias[addr_hash((struct sockaddr *)&c->alias) & tp->mask], c,
		   offsetof(conn, alias_next));
	c->aliaslen = 0;
}

static void table_remove(sip_transport *tp, conn *c)
{
	alias_remove(tp, c);
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
	sip_tls_session_free(c->tls);
	free(c->wsmsg);
	free(c->hold);
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
	if (c->handshaking) {
		c->handshaking = 0;
		tp->st.handshakes--;
	}
	table_remove(tp, c);
	sip_loop_del_fd(tp->loop, c->fd);
	close(c->fd);
	sip_timer_stop(tp->loop, &c->idle);
	sip_timer_stop(tp->loop, &c->partial);
	tp->st.conns_open--;
	tp->st.conns_open_by[c->src.kind]--;
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

/* Not yet for application bytes: TCP connecting, or the TLS handshake going on. */
static int conn_ready(const conn *c)
{
	return !c->connecting && !c->handshaking;
}

/* EPOLLOUT when something waits for the socket to take bytes. */
static void update_out(conn *c)
{
	set_out(c, c->connecting || (c->handshaking && c->hs_want == SIP_TLS_WANT_WRITE) ||
		   c->rd_want_write ||
		   (conn_ready(c) && c->wlen > c->woff && !c->wr_want_read));
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

static void handshake_fire(void *arg);

static conn *conn_new(sip_transport *tp, sip_tp_kind kind, int fd, const struct sockaddr *peer,
		      socklen_t plen, int connecting, int lidx)
{
	conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c)
		return NULL;
	c->tp = tp;
	c->fd = fd;
	c->connecting = connecting;
	c->want_out = connecting;
	c->src.kind = kind;
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
	tp->st.conns_open_by[kind]++;
	c->last_io = sip_loop_now(tp->loop);
	sip_timer_start(tp->loop, &c->idle, tp->cfg.idle_ms, idle_fire, c);
	if (sip_tp_ws(kind))
		c->ws = lidx >= 0 ? WS_HANDSHAKE : WS_UPGRADING;
	if (sip_tp_secure(kind)) {
		/* the handshake (and, outgoing, the TCP connect before it) within handshake_ms;
		 * the partial timer is free until the first message can come */
		c->handshaking = 1;
		c->hs_want = SIP_TLS_WANT_READ;
		tp->st.handshakes++;
		sip_timer_start(tp->loop, &c->partial, sip_tls_config_get(tp->tls)->handshake_ms,
				handshake_fire, c);
	} else if (lidx >= 0 || sip_tp_ws(kind)) {
		/* (a WebSocket we open: the server's answer to the upgrade, likewise)
		 * A peer that connects and stays silent holds a slot: its first message is due
		 * within partial_ms like any other, not after the (long) idle timeout. */
		c->partial_since = c->last_io;
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
	}
	return c;
}

/* Hands bytes to the socket (TCP) or the session (TLS): how many it took, 0 when it would
 * block, -1 after closing the connection on an error. */
static long conn_send(conn *c, const char *buf, size_t len, const char **err)
{
	if (c->tls) {
		int want = 0;
		long n = sip_tls_write(c->tls, buf, len, &want, err);
		c->wr_want_read = n == 0 && want == SIP_TLS_WANT_READ;
		if (n < 0)
			conn_close(c, "send failed", *err);
		return n;
	}
	for (;;) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return (long)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		*err = strerror(errno);
		conn_close(c, "send failed", *err);
		return -1;
	}
}

/* Sends what is queued; returns -1 after closing the connection. */
static int conn_flush(conn *c)
{
	const char *err;
	while (c->woff < c->wlen) {
		long n = conn_send(c, c->wbuf + c->woff, c->wlen - c->woff, &err);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		c->woff += (size_t)n;
		c->last_io = sip_loop_now(c->tp->loop);
	}
	if (c->woff == c->wlen && c->close_after) {
		conn_close(c, "conn close", "closed after the reply");
		return -1;
	}
	if (c->woff == c->wlen) {
		c->woff = c->wlen = 0;
		if (c->wcap > SIP_TP_RBUF_INIT) {
			free(c->wbuf);
			c->wbuf = NULL;
			c->wcap = 0;
		}
	}
	update_out(c);
	return 0;
}

static int conn_queue(conn *c, const char *buf, size_t len, size_t limit, const char **err)
{
	size_t pending = c->wlen - c->woff;

	if (pending + len > limit) {
		conn_close(c, "limit", "write queue full");
		*err = "write queue full";
		return -1;
	}
	if (conn_ready(c) && pending == 0) {
		while (len > 0) {
			long n = conn_send(c, buf, len, err);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
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
	update_out(c);
	return 0;
}

static int conn_write(conn *c, const char *buf, size_t len, const char **err)
{
	return conn_queue(c, buf, len, c->tp->cfg.max_conn_buf, err);
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

static void ws_deliver(conn *c);

/* Frames and delivers every whole message in the read buffer, then keeps the rest. */
static void conn_deliver(conn *c)
{
	sip_transport *tp = c->tp;
	size_t off = 0, max = tp->cfg.max_msg;
	int got = 0;

	if (c->ws) {
		ws_deliver(c);
		return;
	}
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

/* ---- WebSocket (RFC 6455, RFC 7118) ---- */

/* A frame of ours: a server's frames are not masked (§5.1). Header and payload go in one
 * write, so the peer never sees half a frame for long. */
static int ws_send(conn *c, int opcode, const char *buf, size_t len, const char **err)
{
	uint8_t h[SIP_WS_MAX_HEADER];
	char stack[4096], *out = stack;
	size_t hl;

	uint8_t mask[4];
	int client = c->src.listener < 0;

	if (c->ws != WS_OPEN && c->ws != WS_UPGRADING) {
		*err = "connection closed";
		return -1;
	}
	/* §5.3: a client masks every frame with a fresh unpredictable key */
	if (client && RAND_bytes(mask, sizeof mask) != 1) {
		*err = "no random bytes";
		return -1;
	}
	hl = sip_ws_frame_header(h, opcode, len, client ? mask : NULL);
	if (hl + len > sizeof stack && !(out = malloc(hl + len))) {
		*err = "out of memory";
		return -1;
	}
	memcpy(out, h, hl);
	if (len)
		memcpy(out + hl, buf, len);
	if (client)
		sip_ws_unmask((uint8_t *)out + hl, len, mask, 0);
	int r = 0;
	if (c->ws == WS_UPGRADING) {
		/* §4.1: nothing more until the server's answer */
		char *hb = c->holdlen + hl + len <= c->tp->cfg.max_conn_buf ?
			   realloc(c->hold, c->holdlen + hl + len) : NULL;
		if (!hb) {
			*err = "write queue full";
			r = -1;
		} else {
			c->hold = hb;
			memcpy(c->hold + c->holdlen, out, hl + len);
			c->holdlen += hl + len;
		}
	} else
		r = conn_write(c, out, hl + len, err);
	if (out != stack)
		free(out);
	return r;
}

/* Sends a Close frame with code (§5.5.1) and closes the connection once it is written: as
 * the server we close the TCP connection first (§7.1.1). */
static void ws_close(conn *c, int code, const char *why)
{
	const char *err;
	char p[2] = { (char)(code >> 8), (char)(code & 0xff) };

	if (c->ws == WS_OPEN)
		ws_send(c, SIP_WS_CLOSE, p, 2, &err);
	if (c->closed)
		return;
	c->ws = WS_CLOSING;
	c->close_after = 1;
	emit(c->tp, "bad framing", &c->src, why);
	if (!c->closed)
		conn_flush(c);
}

/* An HTTP reply, then the connection closes (no keep-alive: the page loads a few files). */
static void http_reply(conn *c, int status, const char *reason, const char *headers,
		       const char *type, const char *body, size_t blen)
{
	char h[512];
	const char *err;
	int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nServer: luasip\r\n%s%s%s%s"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, reason,
			 headers ? headers : "", type ? "Content-Type: " : "", type ? type : "",
			 type ? "\r\n" : "", blen);
	c->ws = WS_CLOSING;
	c->close_after = 1;
	if (n < 0 || (size_t)n >= sizeof h || conn_queue(c, h, (size_t)n, SIZE_MAX, &err) < 0)
		return;
	if (blen && conn_queue(c, body, blen, SIZE_MAX, &err) < 0)
		return;
	conn_flush(c);
}

static const char *web_type(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{ ".html", "text/html; charset=utf-8" }, { ".js", "text/javascript; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" }, { ".png", "image/png" },
		{ ".svg", "image/svg+xml" }, { ".ico", "image/x-icon" }, { ".json", "application/json" },
	};
	const char *dot = strrchr(path, '.');
	for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
		if (strcmp(dot, types[i].ext) == 0)
			return types[i].type;
	return "application/octet-stream";
}

/* GET of a file under a mount. Names are kept to [A-Za-z0-9._-/] with no "..", so no path
 * leaves its folder. The files are small and local: read at once, in the loop. */
static void web_get(conn *c, const char *path)
{
	sip_transport *tp = c->tp;
	const web_mount *m = NULL;
	char rel[256], file[1400];
	size_t pl = strcspn(path, "?#");

	for (int i = 0; i < tp->nweb; i++) {
		size_t l = strlen(tp->web[i].prefix);
		if (!tp->web[i].body && l <= pl && strncmp(path, tp->web[i].prefix, l) == 0 &&
		    (!m || l > strlen(m->prefix)))
			m = &tp->web[i];
	}
	for (int i = 0; i < tp->nweb; i++)
		if (tp->web[i].body && strlen(tp->web[i].prefix) == pl &&
		    strncmp(path, tp->web[i].prefix, pl) == 0) {
			http_reply(c, 200, "OK", "Cache-Control: no-cache\r\n",
				   web_type(tp->web[i].prefix), tp->web[i].body, tp->web[i].blen);
			return;
		}
	if (!m) {
		http_reply(c, 404, "Not Found", NULL, "text/plain", "not found\n", 10);
		return;
	}
	size_t off = strlen(m->prefix), rl = pl - off;
	if (rl >= sizeof rel - 16) {
		http_reply(c, 404, "Not Found", NULL, "text/plain", "not found\n", 10);
		return;
	}
	memcpy(rel, path + off, rl);
	rel[rl] = 0;
	if (rl == 0 || rel[rl - 1] == '/')
		strcat(rel, "index.html");
	for (const char *q = rel; *q; q++)
		if (!(isalnum((unsigned char)*q) || *q == '.' || *q == '_' || *q == '-' || *q == '/') ||
		    (q[0] == '.' && q[1] == '.')) {
			http_reply(c, 404, "Not Found", NULL, "text/plain", "not found\n", 10);
			return;
		}
	snprintf(file, sizeof file, "%s/%s", m->dir, rel);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (size_t)st.st_size > SIP_TP_WEB_MAX_FILE) {
		if (fd >= 0)
			close(fd);
		http_reply(c, 404, "Not Found", NULL, "text/plain", "not found\n", 10);
		return;
	}
	size_t n = (size_t)st.st_size, got = 0;
	char *body = malloc(n ? n : 1);
	while (body && got < n) {
		ssize_t r = read(fd, body + got, n - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!body || got != n) {
		free(body);
		http_reply(c, 500, "Server Error", NULL, "text/plain", "read failed\n", 12);
		return;
	}
	http_reply(c, 200, "OK", "Cache-Control: no-cache\r\n", web_type(rel), body, n);
	free(body);
}

/* §4.2: the opening handshake, or a plain HTTP GET. Returns the bytes of the request to
 * drop from the read buffer once the connection is upgraded, 0 while waiting, -1 when done
 * (replied, the connection closes). */
static long ws_handshake(conn *c)
{
	sip_ws_request r;
	size_t hlen = 0;
	const char *err;
	char h[256], accept[29];
	int p = sip_ws_request_parse(c->rbuf, c->rlen, &r, &hlen, &err);

	if (p == 0)
		return 0;
	if (p < 0) {
		http_reply(c, 400, "Bad Request", NULL, "text/plain", "bad request\n", 12);
		return -1;
	}
	if (!r.upgrade) {
		if (r.get)
			web_get(c, r.path);
		else
			http_reply(c, 405, "Method Not Allowed", "Allow: GET\r\n", "text/plain",
				   "GET only\n", 9);
		return -1;
	}
	if (!r.get || !r.has_key) {
		http_reply(c, 400, "Bad Request", NULL, "text/plain", "bad WebSocket handshake\n", 24);
		return -1;
	}
	if (r.version != 13) {
		/* §4.4: the versions we speak */
		http_reply(c, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "text/plain",
			   "WebSocket version 13 only\n", 26);
		return -1;
	}
	if (!r.sip) {
		/* RFC 7118 §4: the subprotocol is "sip" */
		http_reply(c, 400, "Bad Request", NULL, "text/plain", "subprotocol sip expected\n", 25);
		return -1;
	}
	sip_ws_accept_key(r.key, accept);
	int n = snprintf(h, sizeof h, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
			 "Sec-WebSocket-Protocol: sip\r\n\r\n", accept);
	if (conn_write(c, h, (size_t)n, &err) < 0)
		return -1;
	c->ws = WS_OPEN;
	return (long)hlen;
}

/* Hands one whole WebSocket message to the SIP layer: one SIP message (RFC 7118 §5). */
static void ws_message(conn *c, const char *p, size_t n)
{
	sip_transport *tp = c->tp;
	size_t i = 0;

	while (i < n && (p[i] == '\r' || p[i] == '\n'))
		i++;
	if (i == n)
		return;   /* empty, or CRLF keep-alives some clients send */
	tp->st.tcp_in++;
	if (tp->tap)
		tp->tap(tp->tap_arg, 0, c->src.kind, (struct sockaddr *)&c->src.peer,
			(struct sockaddr *)&c->src.local, p, n);
	tp->recv(tp->arg, &c->src, p, n);
}

/* One whole frame whose payload (unmasked) is p[0..n). */
static void ws_frame(conn *c, const sip_ws_frame *f, char *p, size_t n)
{
	size_t max = c->tp->cfg.max_msg;
	const char *err;

	switch (f->opcode) {
	case SIP_WS_PING:
		ws_send(c, SIP_WS_PONG, p, n, &err);
		return;
	case SIP_WS_PONG:
		return;
	case SIP_WS_CLOSE: {
		/* §5.5.1: echo the code, then close */
		int code = n >= 2 ? ((uint8_t)p[0] << 8 | (uint8_t)p[1]) : SIP_WS_NORMAL;
		char e[2] = { (char)(code >> 8), (char)(code & 0xff) };
		if (n == 1) {
			ws_close(c, SIP_WS_PROTOCOL_ERROR, "bad close frame");
			return;
		}
		ws_send(c, SIP_WS_CLOSE, e, 2, &err);
		if (c->closed)
			return;
		c->ws = WS_CLOSING;
		c->close_after = 1;
		conn_flush(c);
		return;
	}
	case SIP_WS_TEXT:
	case SIP_WS_BINARY:
		if (c->wsop) {
			ws_close(c, SIP_WS_PROTOCOL_ERROR, "data frame inside a fragmented message");
			return;
		}
		if (f->fin) {
			ws_message(c, p, n);
			return;
		}
		c->wsop = f->opcode;
		c->wsmlen = 0;
		break;
	case SIP_WS_CONT:
		if (!c->wsop) {
			ws_close(c, SIP_WS_PROTOCOL_ERROR, "continuation with no message");
			return;
		}
		break;
	}
	/* a fragment: kept until the final one */
	if (c->wsmlen + n > max) {
		ws_close(c, SIP_WS_TOO_BIG, "message too large");
		return;
	}
	if (c->wsmlen + n > c->wsmcap) {
		size_t cap = c->wsmcap ? c->wsmcap : SIP_TP_RBUF_INIT;
		while (cap < c->wsmlen + n)
			cap *= 2;
		char *m = realloc(c->wsmsg, cap);
		if (!m) {
			ws_close(c, SIP_WS_TOO_BIG, "out of memory");
			return;
		}
		c->wsmsg = m;
		c->wsmcap = cap;
	}
	memcpy(c->wsmsg + c->wsmlen, p, n);
	c->wsmlen += n;
	if (f->fin) {
		c->wsop = 0;
		ws_message(c, c->wsmsg, c->wsmlen);
		if (!c->closed && c->wsmcap > SIP_TP_RBUF_INIT) {
			free(c->wsmsg);
			c->wsmsg = NULL;
			c->wsmcap = 0;
		}
		c->wsmlen = 0;
	}
}

/* Our upgrade request (§4.1) on a connection we open to a WebSocket server: queued at once,
 * it goes out once TCP (and TLS) are up. host: the Host header's value. */
static int ws_upgrade_request(conn *c, const char *host, const char **err)
{
	unsigned char nonce[16];
	char key[25], req[512];
	if (RAND_bytes(nonce, sizeof nonce) != 1) {
		*err = "no random bytes";
		return -1;
	}
	EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
	sip_ws_accept_key(key, c->wsaccept);
	int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
			 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
			 "User-Agent: luasip\r\n\r\n", host, key);
	if (n < 0 || (size_t)n >= sizeof req) {
		*err = "host too long";
		return -1;
	}
	return conn_write(c, req, (size_t)n, err);
}

/* The server's answer to our upgrade: the bytes it took once it is a 101 with our accept
 * key and the sip subprotocol, 0 while incomplete, -1 after closing the connection. */
static long ws_upgrade_response(conn *c)
{
	const char *end = NULL, *err;
	for (size_t i = 0; i + 3 < c->rlen; i++)
		if (memcmp(c->rbuf + i, "\r\n\r\n", 4) == 0) {
			end = c->rbuf + i + 4;
			break;
		}
	if (!end || end - c->rbuf > 8192) {
		if (end || c->rlen > 8192) {
			conn_close(c, "connect failed", "WebSocket upgrade: response too large");
			return -1;
		}
		return 0;
	}
	size_t hl = (size_t)(end - c->rbuf);
	char head[8193];
	memcpy(head, c->rbuf, hl);
	head[hl] = 0;
	const char *why = NULL;
	if (strncmp(head, "HTTP/1.1 101", 12) != 0)
		why = "WebSocket upgrade refused";
	else if (!strcasestr(head, "\r\nSec-WebSocket-Accept:") ||
		 !strstr(strcasestr(head, "\r\nSec-WebSocket-Accept:"), c->wsaccept))
		why = "WebSocket upgrade: wrong accept key";
	else if (!strcasestr(head, "\r\nSec-WebSocket-Protocol: sip\r\n"))
		why = "WebSocket upgrade: no sip subprotocol";
	if (why) {
		conn_close(c, "connect failed", why);
		return -1;
	}
	c->ws = WS_OPEN;
	if (c->holdlen && conn_write(c, c->hold, c->holdlen, &err) < 0)
		return -1;
	free(c->hold);
	c->hold = NULL;
	c->holdlen = 0;
	return (long)hl;
}

/* The read buffer of a WS connection: the handshake, then frames. */
static void ws_deliver(conn *c)
{
	sip_transport *tp = c->tp;
	size_t off = 0;
	int got = 0;

	if (c->ws == WS_UPGRADING) {
		long h = ws_upgrade_response(c);
		if (h <= 0)
			return;
		off = (size_t)h;
		got = 1;
	} else if (c->ws == WS_HANDSHAKE) {
		long h = ws_handshake(c);
		if (h < 0 || c->closed) {
			if (!c->closed)
				c->rlen = 0;
			return;
		}
		if (h == 0) {
			if (!sip_timer_active(&c->partial)) {
				c->partial_since = sip_loop_now(tp->loop);
				sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
			}
			return;
		}
		off = (size_t)h;
		got = 1;
	}
	while (!c->closed && c->ws == WS_OPEN && off < c->rlen) {
		sip_ws_frame f;
		int code;
		const char *err;
		int r = sip_ws_frame_parse((uint8_t *)c->rbuf + off, c->rlen - off, tp->cfg.max_msg,
					   &f, &code, &err);
		if (r < 0) {
			ws_close(c, code, err);
			return;
		}
		if (r == 0 || c->rlen - off < f.header + f.len)
			break;
		if (f.masked != (c->src.listener >= 0)) {
			/* §5.1: a client masks every frame, a server none */
			ws_close(c, SIP_WS_PROTOCOL_ERROR, f.masked ? "masked server frame" :
				 "unmasked client frame");
			return;
		}
		char *p = c->rbuf + off + f.header;
		if (f.masked)
			sip_ws_unmask((uint8_t *)p, (size_t)f.len, f.mask, 0);
		off += f.header + (size_t)f.len;
		got = 1;
		ws_frame(c, &f, p, (size_t)f.len);
	}
	if (c->closed)
		return;
	if (c->ws != WS_OPEN) {
		c->rlen = 0;   /* closing: what comes now is not read */
		return;
	}
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	if (c->rlen == 0 && !c->wsop)
		sip_timer_stop(tp->loop, &c->partial);
	else if (got || !sip_timer_active(&c->partial)) {
		c->partial_since = sip_loop_now(tp->loop);
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
	}
}

int sip_tp_ws_name(sip_transport *tp, uint32_t conn_id, const char *name, size_t len)
{
	conn *c = tp && conn_id ? find_id(tp, conn_id) : NULL;
	if (!c || !c->ws || len == 0 || len >= sizeof c->wsname)
		return -1;
	memcpy(c->wsname, name, len);
	c->wsname[len] = 0;
	return 0;
}

/* A scan of the connections: only in-dialog requests towards WebSocket clients come here,
 * and the table is bounded by max_conns. */
uint32_t sip_tp_ws_named(sip_transport *tp, sip_tp_kind kind, const char *name, size_t len,
			 struct sockaddr_storage *peer, socklen_t *plen)
{
	if (!tp || len == 0 || len >= sizeof ((conn *)0)->wsname)
		return 0;
	for (conn *c = tp->all; c; c = c->next)
		if (c->src.kind == kind && c->ws == WS_OPEN && strlen(c->wsname) == len &&
		    strncasecmp(c->wsname, name, len) == 0) {
			memcpy(peer, &c->src.peer, c->src.peerlen);
			*plen = c->src.peerlen;
			return c->src.conn_id;
		}
	return 0;
}

int sip_tp_web_mount(sip_transport *tp, const char *prefix, const char *dir, const char **err)
{
	int i;
	if (!tp || !prefix || prefix[0] != '/' || strlen(prefix) >= sizeof tp->web[0].prefix ||
	    !dir || strlen(dir) >= sizeof tp->web[0].dir) {
		*err = "bad mount";
		return -1;
	}
	for (i = 0; i < tp->nweb && strcmp(tp->web[i].prefix, prefix) != 0; i++)
		;
	if (i == SIP_TP_MAX_MOUNTS) {
		*err = "too many mounts";
		return -1;
	}
	strcpy(tp->web[i].prefix, prefix);
	strcpy(tp->web[i].dir, dir);
	free(tp->web[i].body);
	tp->web[i].body = NULL;
	if (i == tp->nweb)
		tp->nweb++;
	return 0;
}

int sip_tp_web_file(sip_transport *tp, const char *path, const char *body, size_t len,
		    const char **err)
{
	char *copy = malloc(len ? len : 1);
	if (!copy) {
		*err = "out of memory";
		return -1;
	}
	if (sip_tp_web_mount(tp, path, "", err) < 0) {
		free(copy);
		return -1;
	}
	for (int i = 0; i < tp->nweb; i++)
		if (strcmp(tp->web[i].prefix, path) == 0) {
			memcpy(copy, body, len);
			tp->web[i].body = copy;
			tp->web[i].blen = len;
		}
	return 0;
}

/* Reads from the socket (TCP) or the session (TLS) into the read buffer: the bytes read,
 * 0 when none are there, -1 after closing the connection. */
static long conn_recv(conn *c)
{
	if (c->tls) {
		int want = 0;
		const char *err;
		long n = sip_tls_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &want, &err);
		int ww = n == 0 && want == SIP_TLS_WANT_WRITE;
		if (ww != c->rd_want_write) {
			c->rd_want_write = ww;
			update_out(c);
		}
		/* TLS 1.3: a client is done with its handshake before the server has checked its
		 * certificate; a refusal comes as an alert at the first read. For us, that
		 * connection was never made. */
		if (n < 0)
			conn_close(c, c->src.listener < 0 && !c->seen ? "connect failed" : "conn close",
				   err);
		return n;
	}
	ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
	if (n == 0) {
		conn_close(c, "conn close", "closed by peer");
		return -1;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			conn_close(c, "conn close", strerror(errno));
			return -1;
		}
		return 0;
	}
	return (long)n;
}

/* One read (TCP: level-triggered epoll says when there is more), or TLS records until
 * none is left inside the session. */
static void conn_read(conn *c)
{
	sip_transport *tp = c->tp;
	int rounds = 0;

	do {
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
		long n = conn_recv(c);
		if (n <= 0)
			return;
		if (!c->seen && !c->tls && (unsigned char)c->rbuf[0] == SIP_TP_TLS_HANDSHAKE_BYTE) {
			/* no SIP message starts so: a TLS client on the TCP port */
			conn_close(c, "bad framing", "TLS handshake on a TCP port");
			return;
		}
		c->seen = 1;
		c->rlen += (size_t)n;
		c->last_io = sip_loop_now(tp->loop);
		conn_deliver(c);
	} while (!c->closed && c->tls &&
		 (++rounds < SIP_TP_TLS_READS || sip_tls_pending(c->tls) > 0));
}

/* An incoming handshake failed: only that connection goes, and the log hears of the
 * first few per second. */
static int log_allowed(sip_transport *tp);

static void handshake_failed(conn *c, const char *why)
{
	sip_transport *tp = c->tp;
	tp->st.tls_failed++;
	if (c->src.listener < 0) {
		conn_close(c, "connect failed", why);
		return;
	}
	if (log_allowed(tp))
		conn_close(c, "tls failed", why);
	else
		conn_close(c, NULL, NULL);
}

static void handshake_fire(void *arg)
{
	conn *c = arg;
	c->busy++;
	handshake_failed(c, "handshake timeout");
	if (--c->busy == 0 && c->closed)
		conn_free(c);
}

/* Moves the TLS handshake on; once over, what was queued goes out. */
static void conn_handshake(conn *c)
{
	sip_transport *tp = c->tp;
	const char *err;
	int want = 0;
	int r = sip_tls_handshake(c->tls, &want, &err);

	if (r < 0) {
		handshake_failed(c, err);
		return;
	}
	if (r == 0) {
		c->hs_want = want;
		update_out(c);
		return;
	}
	c->handshaking = 0;
	tp->st.handshakes--;
	sip_timer_stop(tp->loop, &c->partial);
	if (c->src.listener >= 0 || c->ws) {
		/* as for TCP: the first message (a WebSocket: the upgrade) is due within partial_ms */
		c->partial_since = sip_loop_now(tp->loop);
		sip_timer_start(tp->loop, &c->partial, tp->cfg.partial_ms, partial_fire, c);
	}
	if (conn_flush(c) < 0)
		return;
	if (sip_tls_pending(c->tls) > 0)
		conn_read(c);
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
		if (!c->closed && c->handshaking)
			conn_handshake(c);
		else if (!c->closed)
			update_out(c);
	}
}

static void conn_io(void *arg, uint32_t events)
{
	conn *c = arg;

	c->busy++;
	if (c->connecting) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_connected(c);
	} else if (c->handshaking)
		conn_handshake(c);
	else if (!c->closed && conn_ready(c)) {
		if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
		    (c->rd_want_write && (events & EPOLLOUT)))
			conn_read(c);
		if (!c->closed && ((events & EPOLLOUT) || (c->wr_want_read && (events & EPOLLIN))) &&
		    c->woff < c->wlen)
			conn_flush(c);
		else if (!c->closed && (events & EPOLLOUT))
			update_out(c);
	}
	if (--c->busy == 0 && c->closed)
		conn_free(c);
}

/* ip text of sa, for a TLS session to check when no name is given */
static void addr_text(const struct sockaddr *sa, char *out, size_t cap)
{
	const void *a = sa->sa_family == AF_INET ?
			(const void *)&((const struct sockaddr_in *)sa)->sin_addr :
			(const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)cap))
		out[0] = 0;
}

static conn *conn_connect(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst,
			  socklen_t dlen, const char *name, const char **err)
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
	c = conn_new(tp, kind, fd, dst, dlen, rc < 0, -1);
	if (!c) {
		*err = "out of memory";
		close(fd);
		return NULL;
	}
	if (sip_tp_secure(kind)) {
		char ip[INET6_ADDRSTRLEN];
		addr_text(dst, ip, sizeof ip);
		c->tls = sip_tls_session_new(tp->tls, fd, 0, name, ip);
		if (!c->tls) {
			conn_close(c, NULL, NULL);
			*err = "out of memory";
			return NULL;
		}
	}
	if (rc == 0) {
		/* the handler may close it; the caller is about to write to it */
		c->busy++;
		emit(tp, "conn open", &c->src, "outgoing");
		if (!c->closed && c->handshaking)
			conn_handshake(c);
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

/* Refusals and failed handshakes are logged a few per second at most (see
 * SIP_TP_TLS_LOG_PER_S); the rest only counted. */
static int log_allowed(sip_transport *tp)
{
	uint64_t sec = sip_loop_now(tp->loop) / 1000;
	if (sec != tp->tls_log_at) {
		tp->tls_log_at = sec;
		tp->tls_logged = 0;
	}
	return tp->tls_logged++ < SIP_TP_TLS_LOG_PER_S;
}

/* Why a new connection from sa on l is refused at once, or NULL: the connection table is
 * full, that IP holds its share of it, or (TLS) too many handshakes are going on, in all or
 * from that IP (an eighth of the handshake slots each, so one host cannot take them all). */
static const char *accept_refusal(sip_transport *tp, listener *l, const struct sockaddr *sa)
{
	unsigned hs, n;
	if (tp->st.conns_open >= tp->cfg.max_conns)
		return "too many connections";
	n = count_ip(tp, sa, &hs);
	if (n >= tp->cfg.max_conns_per_ip)
		return "too many connections from that address";
	if (sip_tp_secure(l->kind)) {
		unsigned max = sip_tls_config_get(tp->tls)->max_handshakes;
		if (tp->st.handshakes >= max)
			return "too many TLS handshakes";
		if (hs >= (max >= 8 ? max / 8 : 1))
			return "too many TLS handshakes from that address";
	}
	return NULL;
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
		const char *why = accept_refusal(tp, l, (struct sockaddr *)&ss);
		if (why) {
			sip_tp_src src = { .kind = l->kind, .peerlen = sl,
					   .listener = (int)(l - tp->ls) };

			memcpy(&src.peer, &ss, sl);
			close(fd);
			tp->st.dropped++;
			if (log_allowed(tp))
				emit(tp, "limit", &src, why);
			continue;
		}
		c = conn_new(tp, l->kind, fd, (struct sockaddr *)&ss, sl, 0, (int)(l - tp->ls));
		if (!c) {
			close(fd);
			continue;
		}
		if (sip_tp_secure(l->kind)) {
			c->tls = sip_tls_session_new(tp->tls, fd, 1, NULL, NULL);
			if (!c->tls) {
				conn_close(c, NULL, NULL);
				continue;
			}
		}
		tp->st.conns_accepted++;
		tp->st.conns_accepted_by[l->kind]++;
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

/* How long a datagram waited in the socket's queue, from its kernel timestamp (0 without). */
static uint32_t queued_ms(struct msghdr *mh, const struct timespec *now)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS)
			continue;
		struct timespec at;
		memcpy(&at, CMSG_DATA(c), sizeof at);
		int64_t ms = ((int64_t)now->tv_sec - at.tv_sec) * 1000 +
			     ((int64_t)now->tv_nsec - at.tv_nsec) / 1000000;
		return ms <= 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
	}
	return 0;
}

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
		union {
			char buf[CMSG_SPACE(sizeof(struct timespec))];
			struct cmsghdr align;
		} ctl[SIP_TP_UDP_MMSG];
		for (int i = 0; i < SIP_TP_UDP_MMSG; i++) {
			iov[i].iov_base = tp->ubuf + (size_t)i * cap;
			iov[i].iov_len = cap;
			memset(&mm[i].msg_hdr, 0, sizeof mm[i].msg_hdr);
			mm[i].msg_hdr.msg_name = &src[i].peer;
			mm[i].msg_hdr.msg_namelen = sizeof src[i].peer;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
			mm[i].msg_hdr.msg_control = ctl[i].buf;
			mm[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
		}
		int k = recvmmsg(l->fd, mm, SIP_TP_UDP_MMSG, MSG_DONTWAIT, NULL);
		struct timespec now = { 0, 0 };
		if (k > 0)
			clock_gettime(CLOCK_REALTIME, &now);   /* the clock SO_TIMESTAMPNS uses */
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
			s->queued_ms = queued_ms(&mm[i].msg_hdr, &now);
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

	if (!tp || kind < SIP_TP_UDP || kind > SIP_TP_WSS) {
		*err = "bad transport kind";
		return -1;
	}
	if (sip_tp_secure(kind) && !sip_tls_can_serve(tp->tls)) {
		*err = "a TLS listener needs a certificate and key";
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
	if (kind != SIP_TP_UDP) {
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
		/* the kernel's arrival time on each datagram: how long it queued (src->queued_ms) */
		setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    (kind != SIP_TP_UDP && listen(fd, SIP_TP_BACKLOG) < 0)) {
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

static int send_stream(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst,
		       socklen_t dlen, uint32_t conn_id, const char *name, const char *buf,
		       size_t len, const char **err)
{
	conn *c = conn_id ? find_id(tp, conn_id) : NULL;

	if (c && c->src.kind != kind)
		c = NULL;
	if (!c && dst)
		c = find_peer(tp, dst, kind, name);
	if (!c) {
		if (!dst) {
			*err = "connection closed";
			return -1;
		}
		if (sip_tp_secure(kind) && !tp->tls) {
			/* a client with no settings: the system's CAs, no certificate of ours */
			static char why[128];
			tp->tls = sip_tls_new(NULL, why, sizeof why);
			if (!tp->tls) {
				*err = why;
				return -1;
			}
		}
		if (tp->st.conns_open >= tp->cfg.max_conns) {
			*err = "too many connections";
			return -1;
		}
		c = conn_connect(tp, kind, dst, dlen, name, err);
		if (!c)
			return -1;
		if (sip_tp_ws(kind)) {
			char host[300], ip[INET6_ADDRSTRLEN];
			addr_text(dst, ip, sizeof ip);
			snprintf(host, sizeof host, dst->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
				 name && name[0] ? name : ip, addr_port(dst));
			if (ws_upgrade_request(c, host, err) < 0)
				return -1;
		}
	}
	if (tp->tap)   /* before the write, which may close c */
		tp->tap(tp->tap_arg, 1, c->src.kind, (struct sockaddr *)&c->src.local,
			(struct sockaddr *)&c->src.peer, buf, len);
	if ((c->ws ? ws_send(c, SIP_WS_TEXT, buf, len, err) : conn_write(c, buf, len, err)) < 0)
		return -1;
	tp->st.tcp_out++;
	return 0;
}

int sip_tp_send(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst, socklen_t dlen,
		uint32_t conn_id, const char *buf, size_t len, const char **err)
{
	return sip_tp_send_named(tp, kind, dst, dlen, conn_id, NULL, buf, len, err);
}

int sip_tp_send_named(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst,
		      socklen_t dlen, uint32_t conn_id, const char *name, const char *buf,
		      size_t len, const char **err)
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
	if (kind < SIP_TP_TCP || kind > SIP_TP_WSS) {
		*err = "bad transport kind";
		return -1;
	}
	if (len > tp->cfg.max_msg) {
		*err = "message too large";
		return -1;
	}
	return send_stream(tp, kind, dst, dlen, conn_id, name, buf, len, err);
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

void sip_tp_set_tls(sip_transport *tp, sip_tls *tls)
{
	sip_tls_free(tp->tls);   /* open sessions hold their own reference to the context */
	tp->tls = tls;
}

sip_tls *sip_tp_tls(sip_transport *tp) { return tp->tls; }

int sip_tp_alias(sip_transport *tp, uint32_t conn_id, const struct sockaddr *addr,
		 socklen_t len)
{
	conn *c = tp && conn_id ? find_id(tp, conn_id) : NULL;
	if (!c || !addr_ok(addr, len))
		return -1;
	conn *old = find_alias(tp, addr, c->src.kind);
	if (old)
		alias_remove(tp, old);   /* the phone registered again, on a new connection */
	alias_remove(tp, c);
	memcpy(&c->alias, addr, len);
	c->aliaslen = len;
	size_t b = addr_hash(addr) & tp->mask;
	c->alias_next = tp->by_alias[b];
	tp->by_alias[b] = c;
	return 0;
}

int sip_tp_conn_open(sip_transport *tp, uint32_t conn_id)
{
	return tp && conn_id && find_id(tp, conn_id) != NULL;
}

int sip_tp_tls_peer(sip_transport *tp, uint32_t conn_id, int *verified, char *subject,
		    size_t scap, char *sans, size_t ncap)
{
	conn *c = tp && conn_id ? find_id(tp, conn_id) : NULL;
	if (!c || !c->tls || c->handshaking)
		return -1;
	return sip_tls_peer(c->tls, verified, subject, scap, sans, ncap);
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
	/* a quarter of the table, but no fewer than a NAT with an office of phones needs */
	if (!tp->cfg.max_conns_per_ip)
		tp->cfg.max_conns_per_ip = tp->cfg.max_conns / 4 > SIP_TP_PER_IP_FLOOR ?
					   tp->cfg.max_conns / 4 : SIP_TP_PER_IP_FLOOR;
	/* A buffer smaller than one whole message (plus its keep-alive prefix) could never
	 * frame it. */
	if (tp->cfg.max_conn_buf < tp->cfg.max_msg + SIP_TP_RBUF_INIT)
		tp->cfg.max_conn_buf = tp->cfg.max_msg + SIP_TP_RBUF_INIT;
	while (buckets < tp->cfg.max_conns && buckets < (1u << 20))
		buckets *= 2;
	tp->mask = buckets - 1;
	tp->by_id = calloc(buckets, sizeof(conn *));
	tp->by_peer = calloc(buckets, sizeof(conn *));
	tp->by_alias = calloc(buckets, sizeof(conn *));
	tp->ubuf = malloc((tp->cfg.max_msg + 1) * SIP_TP_UDP_MMSG);
	if (!tp->by_id || !tp->by_peer || !tp->by_alias || !tp->ubuf) {
		free(tp->by_id);
		free(tp->by_peer);
		free(tp->by_alias);
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
	sip_tls_free(tp->tls);
	for (int i = 0; i < tp->nweb; i++)
		free(tp->web[i].body);
	free(tp->by_alias);
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
	return tp && peer && (find_peer(tp, peer, SIP_TP_TCP, NULL) ||
			      find_peer(tp, peer, SIP_TP_TLS, NULL) ||
			      find_peer(tp, peer, SIP_TP_WS, NULL) ||
			      find_peer(tp, peer, SIP_TP_WSS, NULL));
}
