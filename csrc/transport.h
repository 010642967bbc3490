/* transport.h: SIP over UDP and TCP sockets (RFC 3261 §18), IPv4 and IPv6, on a sip_loop.
 * Delivers whole messages (a datagram, or one framed stream message) to one callback. */
#ifndef SIP_TRANSPORT_H
#define SIP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "loop.h"

typedef enum sip_tp_kind { SIP_TP_UDP = 1, SIP_TP_TCP = 2 } sip_tp_kind;

typedef struct sip_tp_src {
	sip_tp_kind kind;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct sockaddr_storage local;   /* UDP: the listener's bound address */
	socklen_t locallen;
	uint32_t conn_id;                /* TCP: the connection it came on; 0 for UDP */
	int listener;                    /* index of the listener it came in on (UDP) or was
	                                  * accepted by (TCP); -1 on connections we opened */
} sip_tp_src;

/* One whole message; buf is valid only during the call. The callback may send, close
 * connections and stop timers, but must not free the transport. */
typedef void (*sip_tp_recv_fn)(void *arg, const sip_tp_src *src, const char *buf, size_t len);
/* For logging and tests. event: "conn open", "conn close", "bad framing", "idle timeout",
 * "partial timeout", "limit", "too large", "connect failed", "send failed", "accept failed".
 * src may be NULL; detail may be NULL. */
typedef void (*sip_tp_event_fn)(void *arg, const char *event, const sip_tp_src *src,
				const char *detail);

typedef struct sip_tp_config {
	size_t max_msg;        /* largest message in or out of a stream, largest datagram in */
	unsigned max_conns;    /* open TCP connections, both directions */
	size_t max_conn_buf;   /* per-connection read buffer and queued-write bound */
	unsigned idle_ms;      /* close a TCP connection quiet for this long */
	unsigned partial_ms;   /* close a TCP connection holding an incomplete message this long */
	int reuse_port;        /* SO_REUSEPORT: several processes share one port (default 0) */
} sip_tp_config;

sip_tp_config sip_tp_config_default(void);

typedef struct sip_tp_stats {
	unsigned conns_open;
	unsigned long conns_accepted, conns_closed;
	unsigned long udp_in, udp_out, tcp_in, tcp_out;   /* messages */
	unsigned long dropped;   /* datagrams too large, connections refused at max_conns */
} sip_tp_stats;

typedef struct sip_transport sip_transport;

/* cfg may be NULL for defaults; zero fields take their default too. */
sip_transport *sip_tp_new(sip_loop *loop, const sip_tp_config *cfg, sip_tp_recv_fn recv,
			  sip_tp_event_fn event, void *arg);
/* Closes every listener and connection (no callbacks). */
void sip_tp_free(sip_transport *tp);

/* host: an IPv4 or IPv6 literal, with or without [] ("0.0.0.0" and "::" for any); port 0
 * picks a free one. Returns the listener index (>= 0), or -1 with *err. */
/* An IP literal ("192.0.2.1", "::1" or "[::1]") and a port as a socket address: 0, or -1
 * for anything else (a name is not looked up). */
int sip_tp_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);
int sip_tp_listen(sip_transport *tp, sip_tp_kind kind, const char *host, int port,
		  const char **err);
int sip_tp_listener_count(sip_transport *tp);
/* The bound address (the real port when 0 was asked). Returns 0, or -1 on a bad index. */
int sip_tp_listener_addr(sip_transport *tp, int idx, sip_tp_kind *kind,
			 struct sockaddr_storage *addr, socklen_t *len);

/* UDP: sendto from the UDP listener of dst's family, so the source port is the listening
 * port. TCP: on conn_id if still open, else on an open connection to dst, else on a new
 * one (bytes queue until it connects). Returns 0, or -1 with *err. A 0 means the bytes
 * were sent or queued, not that they arrived. */
int sip_tp_send(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst, socklen_t dlen,
		uint32_t conn_id, const char *buf, size_t len, const char **err);

/* UDP from one given listener: a response leaves from the socket its request came in on
 * (RFC 3261 §18.2.2) when several listen on the same family. Returns 0, or -1 with *err. */
int sip_tp_send_from(sip_transport *tp, int listener, const struct sockaddr *dst, socklen_t dlen,
		     const char *buf, size_t len, const char **err);

/* Closes a TCP connection (event "conn close"). Returns 0, or -1 when it is not open. */
int sip_tp_close_conn(sip_transport *tp, uint32_t conn_id);
/* Whether a connection (TCP) to or from this peer address is open now: 1 or 0. */
int sip_tp_has_conn(sip_transport *tp, const struct sockaddr *peer);

void sip_tp_stats_get(sip_transport *tp, sip_tp_stats *st);

/* Every whole SIP message in (out = 0: as delivered to the recv callback) and out (out = 1:
 * as handed to the socket or the connection's queue), from -> to, for capture and counting
 * (capture.c). One tap per transport; fn NULL removes it. */
typedef void (*sip_tp_tap_fn)(void *arg, int out, sip_tp_kind kind,
			      const struct sockaddr *from, const struct sockaddr *to,
			      const char *buf, size_t len);
void sip_tp_set_tap(sip_transport *tp, sip_tp_tap_fn fn, void *arg);

#endif
