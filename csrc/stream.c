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
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
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
	SSL *ssl;          /* TLS, or NULL */
	int handshaking;   /* TLS handshake not done yet */
	int want_out;      /* TLS needs the socket writable to go on (a read wanted a write) */
};

struct sip_stream_listener {
	sip_loop *loop;
	int fd;
	sip_stream_accept_fn fn;
	void *arg;
};

static void destroy(sip_stream *s)
{
	if (s->ssl) {
		if (!s->handshaking)
			SSL_shutdown(s->ssl);   /* close_notify, best effort: the peer sees an orderly end */
		ERR_clear_error();
		SSL_free(s->ssl);
	}
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
	if (s->handshaking)
		return EPOLLIN | (s->want_out ? EPOLLOUT : 0);
	return (s->draining ? 0 : EPOLLIN) | (s->txlen > s->txoff || s->want_out ? EPOLLOUT : 0);
}

/* Bytes in and out: plain recv/send, or through TLS. Return as recv/send do, with errno
 * EAGAIN when TLS must wait (and want_out set when it waits for writability). */
static ssize_t io_read(sip_stream *s, char *buf, size_t n)
{
	if (!s->ssl)
		return recv(s->fd, buf, n, 0);
	errno = 0;   /* SSL_ERROR_SYSCALL with errno 0 is an EOF */
	int r = SSL_read(s->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (r > 0)
		return r;
	int e = SSL_get_error(s->ssl, r);
	s->want_out = e == SSL_ERROR_WANT_WRITE;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	ERR_clear_error();
	if (e == SSL_ERROR_SYSCALL && errno == 0)
		return 0;   /* the peer closed without close_notify: an end all the same */
	errno = e == SSL_ERROR_SYSCALL ? errno : EPROTO;
	return -1;
}

static ssize_t io_write(sip_stream *s, const char *buf, size_t n)
{
	if (!s->ssl)
		return send(s->fd, buf, n, MSG_NOSIGNAL);
	int r = SSL_write(s->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (r > 0)
		return r;
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	ERR_clear_error();
	errno = e == SSL_ERROR_SYSCALL && errno ? errno : EPROTO;
	return -1;
}

/* Write what the socket takes. 0, or -1 on a hard error. */
static int flush(sip_stream *s)
{
	while (s->txoff < s->txlen) {
		ssize_t n = io_write(s, s->tx + s->txoff, s->txlen - s->txoff);
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

/* Returns 0 while s lives, -1 once it is gone. */
static int on_connect(sip_stream *s)
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
		return -1;
	}
	s->connecting = 0;
	sip_loop_mod_fd(s->loop, s->fd, want(s));
	if (s->handshaking)
		return 0;   /* connected once the TLS handshake is through */
	if (s->hooks.connected) {
		s->busy++;
		s->hooks.connected(s->arg, 0);
		s->busy--;
		if (s->dead) {
			destroy(s);
			return -1;
		}
	}
	return 0;
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
		ssize_t n = io_read(s, s->rx + s->rxlen, room);
		if (n > 0) {
			s->rxlen += (size_t)n;
			if ((size_t)n < room && !(s->ssl && SSL_pending(s->ssl)))
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
	if (eof || err) {
		gone(s, err);
		return;
	}
	if (s->ssl)
		sip_loop_mod_fd(s->loop, s->fd, want(s));
}

static void on_readable(sip_stream *s);

/* One step of the TLS handshake; at its end a client hears `connected`. */
static void handshake(sip_stream *s)
{
	int r = SSL_do_handshake(s->ssl);
	if (r == 1) {
		s->handshaking = 0;
		s->want_out = 0;
		sip_loop_mod_fd(s->loop, s->fd, want(s));
		if (!SSL_is_server(s->ssl) && s->hooks.connected) {
			s->busy++;
			s->hooks.connected(s->arg, 0);
			s->busy--;
			if (s->dead) {
				destroy(s);
				return;
			}
		}
		if (s->txlen > s->txoff && flush(s) < 0) {
			gone(s, errno);
			return;
		}
		/* records that came with the end of the handshake are in SSL's buffer already:
		 * no readiness would announce them */
		on_readable(s);
		return;
	}
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		s->want_out = e == SSL_ERROR_WANT_WRITE;
		sip_loop_mod_fd(s->loop, s->fd, want(s));
		return;
	}
	ERR_clear_error();
	/* a failed handshake: a client learns it as a failed connect */
	if (!SSL_is_server(s->ssl) && s->hooks.connected) {
		s->busy++;
		s->hooks.connected(s->arg, EPROTO);
		s->busy--;
		s->dead = 1;
		destroy(s);
		return;
	}
	gone(s, EPROTO);
}

static void on_io(void *arg, uint32_t ev)
{
	sip_stream *s = arg;

	if (s->connecting) {
		if (on_connect(s) == 0 && s->handshaking)
			handshake(s);
		return;
	}
	if (s->handshaking) {
		handshake(s);
		return;
	}
	if (s->want_out && (ev & EPOLLOUT)) {
		s->want_out = 0;
		on_readable(s);   /* the read that wanted a write goes on */
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
	if (!s->connecting && !s->handshaking && !s->corked && was_idle) {
		if (flush(s) < 0)
			return -1;   /* the error shows on the next read as well */
		if (s->txlen > s->txoff)
			sip_loop_mod_fd(s->loop, s->fd, want(s));
	}
	return 0;
}

int sip_stream_start_tls(sip_stream *s, void *ctx, int server, const char *host)
{
	if (!s || !ctx || s->ssl)
		return -1;
	s->ssl = SSL_new(ctx);
	if (!s->ssl)
		return -1;
	SSL_set_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!SSL_set_fd(s->ssl, s->fd))
		goto fail;
	if (server) {
		SSL_set_accept_state(s->ssl);
	} else {
		SSL_set_connect_state(s->ssl);
		if (host && *host) {
			unsigned char tmp[16];
			int is_ip = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
			X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
			if (!is_ip)
				SSL_set_tlsext_host_name(s->ssl, host);
			if (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, host) :
				    !X509_VERIFY_PARAM_set1_host(vp, host, 0))
				goto fail;
		}
	}
	s->handshaking = 1;
	if (!s->connecting) {
		sip_loop_mod_fd(s->loop, s->fd, want(s));
		if (!server)
			handshake(s);
	}
	return 0;
fail:
	SSL_free(s->ssl);
	s->ssl = NULL;
	return -1;
}

int sip_stream_is_tls(const sip_stream *s)
{
	return s && s->ssl != NULL;
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
