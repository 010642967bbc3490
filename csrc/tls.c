/* tls.c: OpenSSL contexts and non-blocking sessions for SIP over TLS: TLS 1.2 at least,
 * no renegotiation or compression, and RFC 5922's name check of the server certificate. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include "tls.h"

struct sip_tls {
	SSL_CTX *srv, *cli;
	sip_tls_config cfg;
	int has_cert;
};

/* A DNS name is at most 253 characters; an IPv6 literal fewer. */
#define NAME_MAX_LEN 256

struct sip_tls_session {
	SSL *ssl;
	int server;
	int is_ip;                 /* name is an IP literal: checked against IP SANs */
	char name[NAME_MAX_LEN];   /* client: what the server's certificate must name */
	char err[256];
};

static int session_idx = -1;   /* SSL ex_data slot holding the sip_tls_session */

void sip_tls_config_default(sip_tls_config *c)
{
	memset(c, 0, sizeof *c);
	c->verify = 1;
	c->client_auth = SIP_TLS_CLIENT_OPTIONAL;
	c->handshake_ms = SIP_TLS_HANDSHAKE_MS_DEFAULT;
	c->max_handshakes = SIP_TLS_MAX_HANDSHAKES_DEFAULT;
}

static void ssl_reason(char *out, size_t cap, const char *what)
{
	unsigned long e = ERR_get_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	snprintf(out, cap, "%s%s%s", what, r ? ": " : "", r ? r : "");
	ERR_clear_error();
}

/* RFC 5922 §7.1-7.2: the name must equal a subjectAltName DNS name (no wildcards) or a
 * sip: URI of it; the subject's CN counts only when there is no subjectAltName at all. An
 * IP literal must equal an iPAddress SAN. */
static int name_matches(X509 *x, const char *name, int is_ip)
{
	if (is_ip)
		return X509_check_ip_asc(x, name, 0) == 1;
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	unsigned flags = X509_CHECK_FLAG_NO_WILDCARDS;
	int ok = 0;
	if (sans) {
		flags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;
		size_t nl = strlen(name);
		for (int i = 0; i < sk_GENERAL_NAME_num(sans) && !ok; i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
			if (g->type != GEN_URI)
				continue;
			const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
			size_t ul = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
			ok = ul == nl + 4 && strncasecmp(u, "sip:", 4) == 0 &&
			     strncasecmp(u + 4, name, nl) == 0;
		}
		GENERAL_NAMES_free(sans);
	}
	return ok || X509_check_host(x, name, 0, flags, NULL) == 1;
}

/* Client side: OpenSSL checks the chain; the leaf's name is ours to check, so that the
 * failure carries X509_V_ERR_HOSTNAME_MISMATCH's reason. */
static int verify_server(int preverify, X509_STORE_CTX *xs)
{
	if (!preverify || X509_STORE_CTX_get_error_depth(xs) != 0)
		return preverify;
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	sip_tls_session *s = ssl ? SSL_get_ex_data(ssl, session_idx) : NULL;
	if (!s)
		return 0;
	if (!name_matches(X509_STORE_CTX_get_current_cert(xs), s->name, s->is_ip)) {
		X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
		return 0;
	}
	return 1;
}

/* Server side, optional client certificates: anyone may connect; the verify result,
 * kept by OpenSSL, says whether the certificate was trusted (sip_tls_peer). */
static int verify_client_optional(int preverify, X509_STORE_CTX *xs)
{
	(void)preverify;
	(void)xs;
	return 1;
}

static SSL_CTX *ctx_new(const SSL_METHOD *m, const sip_tls_config *c, char *err, size_t cap)
{
	SSL_CTX *x = SSL_CTX_new(m);
	if (!x) {
		ssl_reason(err, cap, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
	/* an EOF without close_notify is a closed connection: SIP frames its messages by
	 * Content-Length, so a cut cannot pass for a whole message */
	SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
			    SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* writes behave like send(): partial, and resumable from the queue's new address */
	SSL_CTX_set_mode(x, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
			 SSL_MODE_RELEASE_BUFFERS);
	if (c->cert && c->cert[0]) {
		if (SSL_CTX_use_certificate_chain_file(x, c->cert) != 1) {
			ssl_reason(err, cap, "cannot load the certificate");
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(x, c->key && c->key[0] ? c->key : c->cert,
						SSL_FILETYPE_PEM) != 1) {
			ssl_reason(err, cap, "cannot load the key");
			goto fail;
		}
		if (SSL_CTX_check_private_key(x) != 1) {
			ssl_reason(err, cap, "the key does not match the certificate");
			goto fail;
		}
	}
	if (c->ca && c->ca[0] ? SSL_CTX_load_verify_locations(x, c->ca, NULL) != 1 :
				SSL_CTX_set_default_verify_paths(x) != 1) {
		ssl_reason(err, cap, "cannot load the CA certificates");
		goto fail;
	}
	return x;
fail:
	SSL_CTX_free(x);
	return NULL;
}

sip_tls *sip_tls_new(const sip_tls_config *cfg, char *err, size_t errcap)
{
	sip_tls_config d;
	sip_tls_config_default(&d);
	if (!cfg)
		cfg = &d;
	if (session_idx < 0)
		session_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (session_idx < 0) {
		snprintf(err, errcap, "cannot set up OpenSSL");
		return NULL;
	}
	if (cfg->key && cfg->key[0] && !(cfg->cert && cfg->cert[0])) {
		snprintf(err, errcap, "a key without a certificate");
		return NULL;
	}
	sip_tls *t = calloc(1, sizeof *t);
	if (!t) {
		snprintf(err, errcap, "out of memory");
		return NULL;
	}
	t->cfg = *cfg;
	t->cfg.cert = t->cfg.key = t->cfg.ca = NULL;   /* the paths are not kept */
	if (!t->cfg.handshake_ms)
		t->cfg.handshake_ms = SIP_TLS_HANDSHAKE_MS_DEFAULT;
	if (!t->cfg.max_handshakes)
		t->cfg.max_handshakes = SIP_TLS_MAX_HANDSHAKES_DEFAULT;
	t->has_cert = cfg->cert && cfg->cert[0];
	t->srv = ctx_new(TLS_server_method(), cfg, err, errcap);
	t->cli = t->srv ? ctx_new(TLS_client_method(), cfg, err, errcap) : NULL;
	if (!t->cli) {
		sip_tls_free(t);
		return NULL;
	}
	static const unsigned char sid[] = "luasip";
	SSL_CTX_set_session_id_context(t->srv, sid, sizeof sid - 1);
	if (cfg->client_auth == SIP_TLS_CLIENT_REQUIRE)
		SSL_CTX_set_verify(t->srv, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	else if (cfg->client_auth == SIP_TLS_CLIENT_OPTIONAL)
		SSL_CTX_set_verify(t->srv, SSL_VERIFY_PEER, verify_client_optional);
	if (cfg->client_auth != SIP_TLS_CLIENT_NONE && cfg->ca && cfg->ca[0]) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca);
		if (names)
			SSL_CTX_set_client_CA_list(t->srv, names);
		ERR_clear_error();
	}
	SSL_CTX_set_verify(t->cli, cfg->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
			   cfg->verify ? verify_server : NULL);
	return t;
}

void sip_tls_free(sip_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->srv);
	SSL_CTX_free(t->cli);
	free(t);
}

const sip_tls_config *sip_tls_config_get(const sip_tls *t) { return &t->cfg; }
int sip_tls_can_serve(const sip_tls *t) { return t && t->has_cert; }

static int is_ip_literal(const char *s)
{
	unsigned char b[16];
	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

sip_tls_session *sip_tls_session_new(sip_tls *t, int fd, int server, const char *name,
				     const char *ip)
{
	sip_tls_session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->server = server;
	s->ssl = SSL_new(server ? t->srv : t->cli);
	if (!s->ssl || SSL_set_fd(s->ssl, fd) != 1 || !SSL_set_ex_data(s->ssl, session_idx, s)) {
		ERR_clear_error();
		sip_tls_session_free(s);
		return NULL;
	}
	if (server) {
		SSL_set_accept_state(s->ssl);
		return s;
	}
	const char *n = name && name[0] ? name : ip ? ip : "";
	size_t nl = strlen(n);
	if (nl >= 2 && n[0] == '[' && n[nl - 1] == ']') {   /* an IPv6 reference */
		n++;
		nl -= 2;
	}
	if (nl >= sizeof s->name)
		nl = sizeof s->name - 1;
	memcpy(s->name, n, nl);
	s->name[nl] = 0;
	s->is_ip = is_ip_literal(s->name);
	/* RFC 6066 §3: SNI carries DNS names only */
	if (!s->is_ip && s->name[0])
		SSL_set_tlsext_host_name(s->ssl, s->name);
	SSL_set_connect_state(s->ssl);
	return s;
}

void sip_tls_session_free(sip_tls_session *s)
{
	if (!s)
		return;
	SSL_free(s->ssl);
	free(s);
}

/* The outcome of an SSL call that returned r <= 0: 0 (blocked, *want) or -1 (*err). */
static int outcome(sip_tls_session *s, int r, int *want, const char **err, const char *what)
{
	int e = SSL_get_error(s->ssl, r);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		*want = SIP_TLS_WANT_READ;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*want = SIP_TLS_WANT_WRITE;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(s->err, sizeof s->err, "closed by peer");
		break;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error())
			ssl_reason(s->err, sizeof s->err, what);
		else
			snprintf(s->err, sizeof s->err, "%s", errno && r < 0 ? strerror(errno) :
				 "closed by peer");
		break;
	default: {
		long v = SSL_get_verify_result(s->ssl);
		if (!s->server && v != X509_V_OK) {
			snprintf(s->err, sizeof s->err, "certificate verify failed: %s",
				 X509_verify_cert_error_string(v));
			ERR_clear_error();
		} else {
			ssl_reason(s->err, sizeof s->err, what);
		}
	}
	}
	ERR_clear_error();
	*err = s->err;
	return -1;
}

int sip_tls_handshake(sip_tls_session *s, int *want, const char **err)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(s->ssl);
	if (r == 1)
		return 1;
	return outcome(s, r, want, err, "TLS handshake failed");
}

long sip_tls_read(sip_tls_session *s, char *buf, size_t cap, int *want, const char **err)
{
	size_t n = 0;
	ERR_clear_error();
	errno = 0;
	int r = SSL_read_ex(s->ssl, buf, cap, &n);
	if (r == 1)
		return (long)n;
	return outcome(s, r, want, err, "TLS read failed");
}

long sip_tls_write(sip_tls_session *s, const char *buf, size_t len, int *want, const char **err)
{
	size_t n = 0;
	ERR_clear_error();
	errno = 0;
	int r = SSL_write_ex(s->ssl, buf, len, &n);
	if (r == 1)
		return (long)n;
	return outcome(s, r, want, err, "TLS write failed");
}

int sip_tls_pending(sip_tls_session *s) { return SSL_pending(s->ssl) > 0 || SSL_has_pending(s->ssl); }
const char *sip_tls_session_name(const sip_tls_session *s) { return s->name; }

static void append(char *out, size_t cap, size_t *o, const char *kind, const char *v, size_t vl)
{
	int w = snprintf(out + *o, cap - *o, "%s%s:%.*s", *o ? ", " : "", kind, (int)vl, v);
	if (w > 0 && (size_t)w < cap - *o)
		*o += (size_t)w;
}

int sip_tls_peer(sip_tls_session *s, int *verified, char *subject, size_t scap, char *sans,
		 size_t ncap)
{
	X509 *x = SSL_get1_peer_certificate(s->ssl);
	subject[0] = sans[0] = 0;
	*verified = 0;
	if (!x)
		return 0;
	*verified = SSL_get_verify_result(s->ssl) == X509_V_OK &&
		    (SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER);
	BIO *b = BIO_new(BIO_s_mem());
	if (b) {
		X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
		int n = BIO_read(b, subject, (int)scap - 1);
		subject[n > 0 ? n : 0] = 0;
		BIO_free(b);
	}
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t o = 0;
	for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
		const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
		if (n->type == GEN_DNS || n->type == GEN_URI) {
			const ASN1_IA5STRING *v = n->type == GEN_DNS ? n->d.dNSName :
						  n->d.uniformResourceIdentifier;
			append(sans, ncap, &o, n->type == GEN_DNS ? "DNS" : "URI",
			       (const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
		} else if (n->type == GEN_IPADD) {
			char ip[INET6_ADDRSTRLEN];
			int l = ASN1_STRING_length(n->d.iPAddress);
			const unsigned char *p = ASN1_STRING_get0_data(n->d.iPAddress);
			if ((l == 4 && inet_ntop(AF_INET, p, ip, sizeof ip)) ||
			    (l == 16 && inet_ntop(AF_INET6, p, ip, sizeof ip)))
				append(sans, ncap, &o, "IP", ip, strlen(ip));
		}
	}
	GENERAL_NAMES_free(g);
	X509_free(x);
	ERR_clear_error();
	return 1;
}
