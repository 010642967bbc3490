/* stream.h: plain non-blocking TCP connections and listeners on the loop, for protocols
 * that frame their own bytes (MSRP): connect, accept, buffered reads, queued writes. */
#ifndef SIP_STREAM_H
#define SIP_STREAM_H

#include <stddef.h>
#include <sys/socket.h>
#include "loop.h"

typedef struct sip_stream sip_stream;
typedef struct sip_stream_listener sip_stream_listener;

typedef struct sip_stream_hooks {
	/* Connected (err 0) or the connect failed (err an errno); the stream is closed after a
	 * failure, as for `closed`. May be NULL. */
	void (*connected)(void *arg, int err);
	/* Bytes arrived: buf holds everything unconsumed. Return how many bytes were used (the
	 * rest stays for the next call), or -1 to close the connection (no `closed` call). The
	 * stream may be closed from inside. */
	long (*data)(void *arg, const char *buf, size_t len);
	/* The peer closed, or an error (err an errno, 0 for an orderly close). The stream is
	 * gone after it returns. */
	void (*closed)(void *arg, int err);
} sip_stream_hooks;

/* Limits of one connection: a peer that sends more than max_rx unconsumed bytes, or a
 * writer that queues more than max_tx unsent ones, gets an error (the stream closes). */
typedef struct sip_stream_limits {
	size_t max_rx;
	size_t max_tx;
} sip_stream_limits;

/* Start a connect; hooks.connected reports the outcome. NULL with errno on failure. */
sip_stream *sip_stream_connect(sip_loop *loop, const struct sockaddr *dst, socklen_t dlen,
			       const sip_stream_limits *lim, const sip_stream_hooks *hooks,
			       void *arg);
/* Take an accepted (connected) fd. NULL with errno (the fd is closed then). */
sip_stream *sip_stream_adopt(sip_loop *loop, int fd, const sip_stream_limits *lim,
			     const sip_stream_hooks *hooks, void *arg);
/* Run the stream over TLS (ctx an SSL_CTX *, kept by the caller for the stream's life):
 * call right after sip_stream_connect (client; host for SNI and the name or IP the
 * certificate must carry when ctx verifies) or sip_stream_adopt (server). For a client,
 * `connected` reports the end of the handshake. 0, or -1. */
int sip_stream_start_tls(sip_stream *s, void *ctx, int server, const char *host);
/* Whether the peer's certificate was verified (TLS with a verifying context), and the
 * stream is TLS at all. */
int sip_stream_is_tls(const sip_stream *s);

/* Queue bytes (sent as the socket takes them). 0, or -1 with errno (ENOBUFS past max_tx,
 * ENOTCONN after close). */
int sip_stream_write(sip_stream *s, const void *buf, size_t len);
size_t sip_stream_queued(const sip_stream *s);
/* Close now, unsent bytes dropped; no hook is called. Safe from inside a hook. */
void sip_stream_close(sip_stream *s);
/* Send what is queued, then close (no hook called after this). */
void sip_stream_close_after_write(sip_stream *s);
int sip_stream_peer(const sip_stream *s, struct sockaddr_storage *ss, socklen_t *len);
int sip_stream_local(const sip_stream *s, struct sockaddr_storage *ss, socklen_t *len);

/* accept(arg, fd, peer): take the fd (sip_stream_adopt) or close it. */
typedef void (*sip_stream_accept_fn)(void *arg, int fd, const struct sockaddr *peer,
				     socklen_t plen);
sip_stream_listener *sip_stream_listen(sip_loop *loop, const struct sockaddr *addr,
				       socklen_t alen, sip_stream_accept_fn fn, void *arg);
int sip_stream_listener_addr(const sip_stream_listener *l, struct sockaddr_storage *ss,
			     socklen_t *len);
void sip_stream_listener_free(sip_stream_listener *l);

#endif
