/* fuzz_tls.c: libFuzzer target for the TLS read path of the transport (transport.c over
 * tls.c): a real TLS connection on loopback carries the input, cut into records of sizes
 * the first byte seeds, to a TLS listener. Whatever the records' boundaries, the messages
 * delivered must be exactly those framing the whole stream at once gives. */
#include "frame.h"
#include "loop.h"
#include "tls.h"
#include "transport.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MSG 65535u
#define MAX_GOT 64

static sip_loop *loop;
static sip_transport *tp;
static int port;
static SSL_CTX *cctx;

static struct {
	char *msg[MAX_GOT];
	size_t len[MAX_GOT];
	size_t n;
	int closed;
} got;

static void on_recv(void *arg, const sip_tp_src *src, const char *buf, size_t len)
{
	(void)arg;
	(void)src;
	if (got.n < MAX_GOT) {
		got.msg[got.n] = malloc(len);
		memcpy(got.msg[got.n], buf, len);
		got.len[got.n++] = len;
	}
}

static void on_event(void *arg, const char *ev, const sip_tp_src *src, const char *detail)
{
	(void)arg;
	(void)src;
	(void)detail;
	if (strcmp(ev, "conn open") != 0)
		got.closed = 1;
}

/* A throwaway self-signed certificate in two temporary files. */
static void make_cert(char *cert, char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert(pk && x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, pk, EVP_sha256());
	int cf = mkstemp(cert), kf = mkstemp(key);
	FILE *c = fdopen(cf, "w"), *k = fdopen(kf, "w");
	assert(c && k);
	PEM_write_X509(c, x);
	PEM_write_PrivateKey(k, pk, NULL, NULL, 0, NULL, NULL);
	fclose(c);
	fclose(k);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static void setup(void)
{
	char cert[] = "/tmp/fuzz_tls_certXXXXXX", key[] = "/tmp/fuzz_tls_keyXXXXXX", err[256];
	const char *e;
	make_cert(cert, key);
	sip_tls_config c;
	sip_tls_config_default(&c);
	c.cert = cert;
	c.key = key;
	c.client_auth = SIP_TLS_CLIENT_NONE;
	sip_tls *t = sip_tls_new(&c, err, sizeof err);
	assert(t);
	unlink(cert);
	unlink(key);
	loop = sip_loop_new();
	sip_tp_config cfg = sip_tp_config_default();
	cfg.max_msg = MAX_MSG;
	tp = sip_tp_new(loop, &cfg, on_recv, on_event, NULL);
	sip_tp_set_tls(tp, t);
	assert(sip_tp_listen(tp, SIP_TP_TLS, "127.0.0.1", 0, &e) == 0);
	struct sockaddr_storage ss;
	socklen_t sl;
	sip_tp_listener_addr(tp, 0, NULL, &ss, &sl);
	port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
}

/* Drive the loop until it has nothing left to do for a moment. */
static void settle(void)
{
	int idle = 0;
	for (int i = 0; i < 2000 && idle < 3; i++)
		idle = sip_loop_step(loop, 1) > 0 ? 0 : idle + 1;
}

/* Retry an SSL call that wants the socket, with the server's loop going meanwhile. */
static int ssl_retry(SSL *s, int r)
{
	int e = SSL_get_error(s, r);
	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		return 0;
	sip_loop_step(loop, 1);
	return 1;
}

static SSL *connect_client(int *fdp)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	assert(fd >= 0);
	/* Nagle would hold a small record back until the server's delayed ACK (40 ms) */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
		abort();
	SSL *s = SSL_new(cctx);
	SSL_set_fd(s, fd);
	SSL_set_connect_state(s);
	for (int i = 0; i < 5000; i++) {
		int r = SSL_do_handshake(s);
		if (r == 1) {
			*fdp = fd;
			return s;
		}
		if (!ssl_retry(s, r))
			break;
	}
	ERR_clear_error();
	SSL_free(s);
	close(fd);
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!loop)
		setup();
	if (size < 1)
		return 0;
	uint32_t seed = data[0] * 2654435761u + 1;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	int fd;
	SSL *s = connect_client(&fd);
	if (!s)
		return 0;
	settle();   /* the server's side of the handshake is over */
	got.n = 0;
	got.closed = 0;
	/* the stream, in records of 1..512 bytes */
	for (size_t off = 0; off < n && !got.closed;) {
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 512;
		if (chunk > n - off)
			chunk = n - off;
		size_t w = 0;
		int r = SSL_write_ex(s, p + off, chunk, &w);
		if (r == 1) {
			off += w;
		} else if (!ssl_retry(s, r)) {
			break;
		}
		char sink[256];
		size_t rd;
		while (SSL_read_ex(s, sink, sizeof sink, &rd) == 1)   /* CRLF pongs */
			;
		ERR_clear_error();
	}
	settle();
	/* what framing the whole stream gives */
	size_t off = 0, k = 0;
	for (;;) {
		size_t skip, mlen;
		const char *err;
		int r = sip_frame(p + off, n - off, MAX_MSG, &skip, &mlen, &err);
		off += skip;
		if (r != 1)
			break;
		if (k < MAX_GOT && k < got.n) {
			assert(got.len[k] == mlen);
			assert(memcmp(got.msg[k], p + off, mlen) == 0);
		}
		k++;
		off += mlen;
		if (k >= MAX_GOT)
			break;
	}
	assert(got.n == k);
	for (size_t i = 0; i < got.n; i++)
		free(got.msg[i]);
	SSL_free(s);
	close(fd);
	settle();   /* the server sees the close */
	return 0;
}
