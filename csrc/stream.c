/* stream.c: non-blocking TCP connections on the loop for self-framing protocols (MSRP).
 * A stream owns its fd and buffers; a hook may close it, which only marks it while the
 * hook runs and frees it when the hook returns. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "stream.h"

/* Bytes read per read(2): a 2048-byte MSRP chunk and its headers many times over, without
 * a large stack frame (reads go straight into the receive buffer). */
#define READ_STEP 65536

struct sip_stream {
	sip_loop *loop;
	int fd;
	int connecting;
	int draining;      /* close once the queue is out */
	int dead;
	int busy;          /* inside a hook */
	int corked;        /* inside the data hook: writes queue, one flush after it */
	sip_stream_hooks hooks;
	void *arg;
	sip_stream_limits lim;
	char *rx;
	size_t rxlen, rxcap;
	char *tx;
	size_t txoff, txlen, txcap;
};

struct sip_stream_listener {
	sip_loop *loop;
	int fd;
	sip_stream_accept_fn fn;
	void *arg;
};

static void destroy(sip_stream *s)
{
	sip_loop_del_fd(s->loop, s->fd);
	close(s->fd);
	free(s->rx);
	free(s->tx);
	free(s);
}

void sip_stream_close(sip_stream *s)
{
	if (!s || s->dead)
		return;
	s->dead = 1;
	if (!s->busy)
		destroy(s);
}

static uint32_t want(const sip_stream *s)
{
	if (s->connecting)
		return EPOLLOUT;
	return (s->draining ? 0 : EPOLLIN) | (s->txlen > s->txoff ? EPOLLOUT : 0);
}

/* Write what the socket takes. 0, or -1 on a hard error. */
static int flush(sip_stream *s)
{
	while (s->txoff < s->txlen) {
		ssize_t n = send(s->fd, s->tx + s->txoff, s->txlen - s->txoff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			return -1;
		}
		s->txoff += (size_t)n;
	}
	if (s->txoff == s->txlen)
		s->txoff = s->txlen = 0;
	return 0;
}

static void gone(sip_stream *s, int err)
{
	if (s->dead)
		return;
	if (!s->draining && s->hooks.closed) {
		s->busy++;
		s->hooks.closed(s->arg, err);
		s->busy--;
	}
	s->dead = 1;
	destroy(s);
}

static void on_connect(sip_stream *s)
{
	int err = 0;
	socklen_t el = sizeof err;

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		err = errno;
	if (err) {
		if (s->hooks.connected) {
			s->busy++;
			s->hooks.connected(s->arg, err);
			s->busy--;
		}
		s->dead = 1;
		destroy(s);
		return;
	}
	s->connecting = 0;
	sip_loop_mod_fd(s->loop, s->fd, want(s));
	if (s->hooks.connected) {
		s->busy++;
		s->hooks.connected(s->arg, 0);
		s->busy--;
		if (s->dead)
			destroy(s);
	}
}

/* Read what is there (up to the limit), then hand it to the data hook once. */
static void on_readable(sip_stream *s)
{
	int eof = 0, err = 0;

	for (;;) {
		if (s->rxlen >= s->lim.max_rx)
			break;
		if (s->rxcap - s->rxlen < READ_STEP) {
			size_t n = s->rxcap ? s->rxcap * 2 : READ_STEP;
			while (n - s->rxlen < READ_STEP)
				n *= 2;
			char *b = realloc(s->rx, n);
			if (!b) {
				err = ENOMEM;
				break;
			}
			s->rx = b;
			s->rxcap = n;
		}
		size_t room = s->lim.max_rx - s->rxlen;
		if (room > READ_STEP)
			room = READ_STEP;
		ssize_t n = recv(s->fd, s->rx + s->rxlen, room, 0);
		if (n > 0) {
			s->rxlen += (size_t)n;
			if ((size_t)n < room)
				break;
			continue;
		}
		if (n == 0)
			eof = 1;
		else if (errno == EINTR)
			continue;
		else if (errno != EAGAIN && errno != EWOULDBLOCK)
			err = errno;
		break;
	}
	if (s->rxlen && s->hooks.data) {
		/* the answers to a batch of frames go out in one send(2), not one each */
		s->busy++;
		s->corked = 1;
		long used = s->hooks.data(s->arg, s->rx, s->rxlen);
		s->corked = 0;
		s->busy--;
		if (s->dead) {
			destroy(s);
			return;
		}
		if (s->txlen > s->txoff) {
			if (flush(s) < 0) {
				gone(s, errno);
				return;
			}
			sip_loop_mod_fd(s->loop, s->fd, want(s));
		}
		if (used < 0) {
			s->dead = 1;
			destroy(s);
			return;
		}
		if ((size_t)used > s->rxlen)
			used = (long)s->rxlen;
		memmove(s->rx, s->rx + used, s->rxlen - (size_t)used);
		s->rxlen -= (size_t)used;
		if (s->rxlen >= s->lim.max_rx && !eof && !err)
			err = EMSGSIZE;   /* a frame larger than we take */
	}
	if (eof || err)
		gone(s, err);
}

static void on_io(void *arg, uint32_t ev)
{
	sip_stream *s = arg;

	if (s->connecting) {
		on_connect(s);
		return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (s->draining) {
			gone(s, 0);
			return;
		}
		on_readable(s);
		return;   /* s may be gone; EPOLLOUT comes again (level-triggered) */
	}
	if (ev & EPOLLOUT) {
		if (flush(s) < 0) {
			gone(s, errno);
			return;
		}
		if (s->draining && s->txlen == 0) {
			s->dead = 1;
			destroy(s);
			return;
		}
		sip_loop_mod_fd(s->loop, s->fd, want(s));
	}
}

static sip_stream *make(sip_loop *loop, int fd, int connecting, const sip_stream_limits *lim,
			const sip_stream_hooks *hooks, void *arg)
{
	sip_stream *s = calloc(1, sizeof *s);

	if (!s) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	s->loop = loop;
	s->fd = fd;
	s->connecting = connecting;
	s->hooks = *hooks;
	s->arg = arg;
	s->lim.max_rx = lim && lim->max_rx ? lim->max_rx : 1 << 20;
	s->lim.max_tx = lim && lim->max_tx ? lim->max_tx : 16 << 20;
	if (sip_loop_add_fd(loop, fd, want(s), on_io, s) < 0) {
		int e = errno;
		close(fd);
		free(s);
		errno = e;
		return NULL;
	}
	return s;
}

static void tune(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sip_stream *sip_stream_connect(sip_loop *loop, const struct sockaddr *dst, socklen_t dlen,
			       const sip_stream_limits *lim, const sip_stream_hooks *hooks,
			       void *arg)
{
	if (!loop || !dst || !hooks) {
		errno = EINVAL;
		return NULL;
	}
	int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	tune(fd);
	if (connect(fd, dst, dlen) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	return make(loop, fd, 1, lim, hooks, arg);
}

sip_stream *sip_stream_adopt(sip_loop *loop, int fd, const sip_stream_limits *lim,
			     const sip_stream_hooks *hooks, void *arg)
{
	if (!loop || fd < 0 || !hooks) {
		if (fd >= 0)
			close(fd);
		errno = EINVAL;
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	tune(fd);
	return make(loop, fd, 0, lim, hooks, arg);
}

int sip_stream_write(sip_stream *s, const void *buf, size_t len)
{
	if (!s || s->dead || s->draining) {
		errno = ENOTCONN;
		return -1;
	}
	if (s->txlen - s->txoff + len > s->lim.max_tx) {
		errno = ENOBUFS;
		return -1;
	}
	if (s->txoff && s->txlen + len > s->txcap) {
		memmove(s->tx, s->tx + s->txoff, s->txlen - s->txoff);
		s->txlen -= s->txoff;
		s->txoff = 0;
	}
	if (s->txlen + len > s->txcap) {
		size_t n = s->txcap ? s->txcap : 16384;
		while (n < s->txlen + len)
			n *= 2;
		char *b = realloc(s->tx, n);
		if (!b) {
			errno = ENOMEM;
			return -1;
		}
		s->tx = b;
		s->txcap = n;
	}
	int was_idle = s->txlen == s->txoff;
	memcpy(s->tx + s->txlen, buf, len);
	s->txlen += len;
	if (!s->connecting && !s->corked && was_idle) {
		if (flush(s) < 0)
			return -1;   /* the error shows on the next read as well */
		if (s->txlen > s->txoff)
			sip_loop_mod_fd(s->loop, s->fd, want(s));
	}
	return 0;
}

size_t sip_stream_queued(const sip_stream *s)
{
	return s ? s->txlen - s->txoff : 0;
}

void sip_stream_close_after_write(sip_stream *s)
{
	if (!s || s->dead)
		return;
	if (s->connecting || s->txlen == s->txoff) {
		sip_stream_close(s);
		return;
	}
	s->draining = 1;
	shutdown(s->fd, SHUT_RD);
	sip_loop_mod_fd(s->loop, s->fd, want(s));
}

int sip_stream_peer(const sip_stream *s, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof *ss;
	return getpeername(s->fd, (struct sockaddr *)ss, len);
}

int sip_stream_local(const sip_stream *s, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof *ss;
	return getsockname(s->fd, (struct sockaddr *)ss, len);
}

/* ---- listeners ---- */

/* Connections accepted per readiness: a burst is drained in few wake-ups without starving
 * the streams that are already open. */
#define ACCEPT_BATCH 32

static void on_accept(void *arg, uint32_t ev)
{
	sip_stream_listener *l = arg;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		l->fn(l->arg, fd, (struct sockaddr *)&ss, sl);
	}
}

sip_stream_listener *sip_stream_listen(sip_loop *loop, const struct sockaddr *addr,
				       socklen_t alen, sip_stream_accept_fn fn, void *arg)
{
	int one = 1;

	if (!loop || !addr || !fn) {
		errno = EINVAL;
		return NULL;
	}
	sip_stream_listener *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		goto fail;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l->fd, addr, alen) < 0 || listen(l->fd, 128) < 0)
		goto fail;
	l->loop = loop;
	l->fn = fn;
	l->arg = arg;
	if (sip_loop_add_fd(loop, l->fd, EPOLLIN, on_accept, l) < 0)
		goto fail;
	return l;
fail:;
	int e = errno;
	if (l->fd >= 0)
		close(l->fd);
	free(l);
	errno = e;
	return NULL;
}

int sip_stream_listener_addr(const sip_stream_listener *l, struct sockaddr_storage *ss,
			     socklen_t *len)
{
	*len = sizeof *ss;
	return getsockname(l->fd, (struct sockaddr *)ss, len);
}

void sip_stream_listener_free(sip_stream_listener *l)
{
	if (!l)
		return;
	sip_loop_del_fd(l->loop, l->fd);
	close(l->fd);
	free(l);
}
