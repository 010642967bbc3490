/* transport.h: SIP over UDP and TCP sockets (RFC 3261 §18), IPv4 and IPv6, on a sip_loop.
 * Delivers whole messages (a datagram, or one framed stream message) to one callback. */
#ifndef SIP_TRANSPORT_H
#define SIP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "loop.h"

typedef enum sip_tp_kind { SIP_TP_UDP = 1, SIP_TP_TCP = 2, SIP_TP_TLS = 3, SIP_TP_WS = 4,
			   SIP_TP_WSS = 5 } sip_tp_kind;

/* TCP, TLS, WS and WSS: over a connection (reliable; responses go back on it) */
static inline int sip_tp_stream(sip_tp_kind k) { return k != SIP_TP_UDP; }
/* WebSocket (RFC 7118): one SIP message per WebSocket message, no Content-Length needed */
static inline int sip_tp_ws(sip_tp_kind k) { return k == SIP_TP_WS || k == SIP_TP_WSS; }
/* TLS underneath: TLS and WSS */
static inline int sip_tp_secure(sip_tp_kind k) { return k == SIP_TP_TLS || k == SIP_TP_WSS; }

typedef struct sip_tp_src {
	sip_tp_kind kind;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct sockaddr_storage local;   /* UDP: the listener's bound address */
	socklen_t locallen;
	uint32_t conn_id;                /* TCP/TLS: the connection it came on; 0 for UDP */
	int listener;                    /* index of the listener it came in on (UDP) or was
	                                  * accepted by (TCP); -1 on connections we opened */
	uint32_t queued_ms;              /* UDP: how long it waited in the socket's queue */
} sip_tp_src;

/* One whole message; buf is valid only during the call. The callback may send, close
 * connections and stop timers, but must not free the transport. */
typedef void (*sip_tp_recv_fn)(void *arg, const sip_tp_src *src, const char *buf, size_t len);
/* For logging and tests. event: "conn open", "conn close", "bad framing", "idle timeout",
 * "partial timeout", "limit", "too large", "connect failed", "send failed", "accept failed",
 * "tls failed" (an incoming handshake; rate limited, see SIP_TP_TLS_LOG_PER_S). A TLS
 * connection we opened whose handshake or verification fails gives "connect failed" with
 * the reason ("certificate verify failed: hostname mismatch").
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
	unsigned max_conns_per_ip;   /* incoming TCP/TLS connections from one IP (0: max_conns/4) */
} sip_tp_config;

sip_tp_config sip_tp_config_default(void);

typedef struct sip_tp_stats {
	unsigned conns_open;
	unsigned long conns_accepted, conns_closed;
	unsigned conns_open_by[SIP_TP_WSS + 1];            /* by sip_tp_kind (TCP, TLS, WS, WSS) */
	unsigned long conns_accepted_by[SIP_TP_WSS + 1];
	unsigned long udp_in, udp_out, tcp_in, tcp_out;   /* messages */
	unsigned long dropped;   /* datagrams too large, connections refused at max_conns */
	unsigned handshakes;     /* TLS handshakes in progress */
	unsigned long tls_failed;   /* TLS handshakes that failed or timed out */
} sip_tp_stats;

typedef struct sip_transport sip_transport;
struct sip_tls;

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
/* Whether a connection (TCP, TLS, WS or WSS) to or from this peer address is open now: 1 or 0. */
int sip_tp_has_conn(sip_transport *tp, const struct sockaddr *peer);

void sip_tp_stats_get(sip_transport *tp, sip_tp_stats *st);

/* TLS (tls.h): the contexts for TLS listeners and outgoing TLS connections; the transport
 * owns tls from here on (a later call replaces it; connections open keep their sessions). */
void sip_tp_set_tls(sip_transport *tp, struct sip_tls *tls);
struct sip_tls *sip_tp_tls(sip_transport *tp);

/* sip_tp_send for TLS with the name the server's certificate must carry (RFC 5922: the
 * host of the URI resolved; also sent as SNI). name NULL or "": the destination's address.
 * For UDP and TCP it is sip_tp_send. */
int sip_tp_send_named(sip_transport *tp, sip_tp_kind kind, const struct sockaddr *dst,
		      socklen_t dlen, uint32_t conn_id, const char *name, const char *buf,
		      size_t len, const char **err);

/* Connection reuse for peers that cannot be connected to (phones behind NAT, RFC 5923's
 * problem): TCP/TLS connection conn_id is also used for what is sent to addr over its
 * transport (the Contact it registered), until it closes or another connection takes that
 * address. Returns 0, or -1 when conn_id is not open. */
int sip_tp_alias(sip_transport *tp, uint32_t conn_id, const struct sockaddr *addr,
		 socklen_t len);

/* RFC 7118 §5.2: a WebSocket client's Contact names a host of its own making (a random
 * .invalid one) that no resolver knows: sip_tp_ws_name gives connection conn_id that name
 * (up to 63 bytes; a later name replaces it), sip_tp_ws_named finds the open WS/WSS
 * connection of that kind with that name (case-insensitive): its id and peer address, or
 * 0 when none. */
int sip_tp_ws_name(sip_transport *tp, uint32_t conn_id, const char *name, size_t len);
uint32_t sip_tp_ws_named(sip_transport *tp, sip_tp_kind kind, const char *name, size_t len,
			 struct sockaddr_storage *peer, socklen_t *plen);

/* Is connection conn_id open (of any kind)? */
int sip_tp_conn_open(sip_transport *tp, uint32_t conn_id);

/* The TLS peer of connection conn_id (see sip_tls_peer): 1 with a certificate, 0 without,
 * -1 when it is not an open TLS connection. */
int sip_tp_tls_peer(sip_transport *tp, uint32_t conn_id, int *verified, char *subject,
		    size_t scap, char *sans, size_t ncap);
/* Every whole SIP message in (out = 0: as delivered to the recv callback) and out (out = 1:
 * as handed to the socket or the connection's queue), from -> to, for capture and counting
 * (capture.c). One tap per transport; fn NULL removes it. */
typedef void (*sip_tp_tap_fn)(void *arg, int out, sip_tp_kind kind,
			      const struct sockaddr *from, const struct sockaddr *to,
			      const char *buf, size_t len);
void sip_tp_set_tap(sip_transport *tp, sip_tp_tap_fn fn, void *arg);

/* WS/WSS listeners also answer plain HTTP GETs with files: a path under prefix ("/" or
 * "/lib/") is looked up in dir (a folder's index.html for a path ending in "/"). Up to
 * SIP_TP_MAX_MOUNTS; a prefix mounted again is replaced. Returns 0, or -1 with *err. */
int sip_tp_web_mount(sip_transport *tp, const char *prefix, const char *dir, const char **err);
/* One file given by its contents at exactly path (a page's settings); a copy is kept.
 * Replaces what was there. Returns 0, or -1 with *err. */
int sip_tp_web_file(sip_transport *tp, const char *path, const char *body, size_t len,
		    const char **err);

#endif
