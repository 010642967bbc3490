/* tls.h: TLS for SIP (RFC 3261 §26, RFC 5922) on OpenSSL: the contexts, non-blocking
 * sessions over a connected socket, and the peer's verified identity. No loop, no Lua. */
#ifndef SIP_TLS_H
#define SIP_TLS_H

#include <stddef.h>

/* A handshake not over after this long is dropped: enough for a slow mobile link's few
 * round trips, short enough that idle half-open handshakes do not hold slots. */
#define SIP_TLS_HANDSHAKE_MS_DEFAULT 10000u
/* Handshakes in progress at once: each costs a key exchange and ~50 KB; past it new
 * connections on a TLS port are closed at accept. */
#define SIP_TLS_MAX_HANDSHAKES_DEFAULT 256u

typedef enum sip_tls_client_auth {
	SIP_TLS_CLIENT_NONE = 0,      /* no CertificateRequest */
	SIP_TLS_CLIENT_OPTIONAL = 1,  /* asked for; none or an untrusted one is still let in,
	                               * and the identity says whether it was verified */
	SIP_TLS_CLIENT_REQUIRE = 2,   /* a client without a trusted certificate fails */
} sip_tls_client_auth;

typedef struct sip_tls_config {
	const char *cert;        /* PEM chain (server, and client certificate); NULL: none */
	const char *key;         /* PEM private key for cert */
	const char *ca;          /* PEM file of trusted CAs; NULL: the system store */
	int verify;              /* outgoing: verify the server's chain and name (default 1) */
	sip_tls_client_auth client_auth;
	unsigned handshake_ms;   /* 0: SIP_TLS_HANDSHAKE_MS_DEFAULT */
	unsigned max_handshakes; /* 0: SIP_TLS_MAX_HANDSHAKES_DEFAULT */
} sip_tls_config;

typedef struct sip_tls sip_tls;            /* the server and client contexts */
typedef struct sip_tls_session sip_tls_session;   /* one connection's TLS state */

void sip_tls_config_default(sip_tls_config *c);
/* Loads the files now. Returns NULL with a reason in err (errcap bytes). */
sip_tls *sip_tls_new(const sip_tls_config *cfg, char *err, size_t errcap);
void sip_tls_free(sip_tls *t);
const sip_tls_config *sip_tls_config_get(const sip_tls *t);
int sip_tls_can_serve(const sip_tls *t);   /* has a certificate and key */

/* A session on connected socket fd. server: accept side. name (client side): the host the
 * certificate must name, a DNS name (sent as SNI too) or an IP literal; NULL or "" means
 * the address ip (text). NULL on out of memory. */
sip_tls_session *sip_tls_session_new(sip_tls *t, int fd, int server, const char *name,
				     const char *ip);
void sip_tls_session_free(sip_tls_session *s);

/* What a call that could not finish waits for. */
enum { SIP_TLS_WANT_READ = 1, SIP_TLS_WANT_WRITE = 2 };

/* 1: done; 0: *want says what to wait for; -1: failed, *err a reason such as
 * "certificate verify failed: hostname mismatch" (valid until the next call). */
int sip_tls_handshake(sip_tls_session *s, int *want, const char **err);
/* > 0 bytes; 0 blocked (*want); -1 closed or failed (*err, "closed by peer" on a clean
 * close_notify or EOF). */
long sip_tls_read(sip_tls_session *s, char *buf, size_t cap, int *want, const char **err);
long sip_tls_write(sip_tls_session *s, const char *buf, size_t len, int *want, const char **err);
/* Decrypted bytes held inside the session (no socket event will announce them). */
int sip_tls_pending(sip_tls_session *s);
/* Client side: the name the server was checked against ("" on the server side). */
const char *sip_tls_session_name(const sip_tls_session *s);

/* The peer's certificate after the handshake. subject: one-line RFC 2253 form; sans: the
 * subjectAltName DNS names, URIs and IP addresses as "DNS:x", "URI:x", "IP:x", joined by
 * ", ". Both "" when the peer sent no certificate. verified: the chain checked against
 * our CAs (and, for a server, the name). Returns 1 when a certificate was sent, else 0. */
int sip_tls_peer(sip_tls_session *s, int *verified, char *subject, size_t scap, char *sans,
		 size_t ncap);

#endif
