/* fuzz_auth.c: libFuzzer target for HTTP Digest (auth.c). The input is one header value
 * (challenge or credentials); what parses is checked, hashed as a server would, answered as
 * a client would, and the answer must parse back as complete credentials. */
#include "auth.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A field lies inside the input or inside the struct's own unescape store. */
static int inside(sip_pl f, const char *s, size_t n, const sip_digest *d)
{
	if (!f.p)
		return f.n == 0;
	if (f.p >= s && f.p + f.n <= s + n)
		return 1;
	return f.p >= d->esc && f.p + f.n <= d->esc + d->escn;
}

static void all_inside(const sip_digest *d, const char *s, size_t n)
{
	const sip_pl *f[] = { &d->scheme,   &d->realm,  &d->nonce,  &d->opaque,   &d->algorithm,
			      &d->qop,      &d->stale,  &d->domain, &d->charset,  &d->userhash,
			      &d->username, &d->uri,    &d->response, &d->cnonce, &d->nc };
	assert(d->escn <= SIP_DIGEST_ESC_MAX);
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		assert(inside(*f[i], s, n, d));
		if (i > 0) /* parameter values are capped */
			assert(f[i]->n <= SIP_DIGEST_VALUE_MAX);
	}
}

static const sip_nonce_key key = { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
				     31, 32 } };

/* The server side: the response the credentials should carry, with a fixed password. */
static void server(const sip_digest *d)
{
	sip_digest_alg alg;
	if (sip_digest_alg_parse(d->algorithm, &alg))
		return;
	assert(sip_digest_alg_name(alg));
	size_t hl = sip_digest_hex_len(alg);
	assert(hl > 0 && hl <= SIP_DIGEST_HEX_MAX);
	sip_digest_input in = {
		.alg = alg, .username = d->username, .realm = d->realm,
		.password = SIP_PL("secret"), .method = SIP_PL("REGISTER"),
		.uri = d->uri.p ? d->uri : SIP_PL("sip:example.com"),
		.nonce = d->nonce, .cnonce = d->cnonce, .nc = d->nc, .qop = d->qop,
		.body = d->opaque,
	};
	char out[SIP_DIGEST_HEX_MAX + 1];
	if (sip_digest_response(&in, out) == 0) {
		assert(strlen(out) == hl);
		sip_digest_equal(sip_pl_make(out, hl), d->response);
	}
	/* a stored HA1 in place of the password: the response field, if it has the length */
	if (d->response.p) {
		in.ha1 = d->response;
		if (sip_digest_response(&in, out) == 0)
			assert(d->response.n == hl && strlen(out) == hl);
	}
	sip_digest_qop_has(d->qop, "auth");
	sip_digest_qop_has(d->qop, "auth-int");

	uint32_t nc = 0;
	if (sip_nc_parse(d->nc, &nc) == 0)
		assert(d->nc.n == 8);
	sip_nonce_state st = sip_nonce_check(&key, d->nonce, 1000, 300);
	assert(st == SIP_NONCE_OK || st == SIP_NONCE_STALE || st == SIP_NONCE_BAD);
	if (st != SIP_NONCE_BAD)
		assert(d->nonce.n == SIP_NONCE_HEX_LEN);

	static sip_nc_table *t;
	if (!t)
		t = sip_nc_table_new(8);
	assert(t);
	sip_nc_result r = sip_nc_check(t, d->nonce, nc);
	if (r == SIP_NC_OK)
		assert(sip_nc_check(t, d->nonce, nc) == SIP_NC_REPLAY);
}

/* The client side: answer the challenge into an exact-size buffer; it must parse back. */
static void client(const sip_digest *d)
{
	sip_digest_client c = {
		.username = SIP_PL("alice"), .password = SIP_PL("secret"),
		.method = SIP_PL("INVITE"), .uri = SIP_PL("sip:bob@example.com;transport=tcp"),
		.body = d->opaque, .cnonce = SIP_PL("0a4f113b"), .nc = 1,
	};
	static char big[16384];
	size_t len = 0;
	int rc = sip_digest_authorization(d, &c, big, sizeof big, &len);
	if (rc) {
		assert(rc == EINVAL || rc == ENOTSUP);
		return;
	}
	assert(len < sizeof big && strlen(big) == len);
	char *out = malloc(len + 1);
	assert(out);
	size_t len2 = 0;
	assert(sip_digest_authorization(d, &c, out, len, &len2) == ERANGE); /* no room for NUL */
	rc = sip_digest_authorization(d, &c, out, len + 1, &len2);
	assert(rc == 0 && len2 == len && memcmp(out, big, len + 1) == 0);

	static sip_digest a;
	rc = sip_digest_parse(&a, out, len);
	assert(rc == 0);
	all_inside(&a, out, len);
	const char *missing = NULL;
	assert(sip_digest_check_credentials(&a, &missing) == 0);
	assert(sip_digest_equal(a.realm, d->realm) && sip_digest_equal(a.nonce, d->nonce));
	assert(!d->opaque.p || sip_digest_equal(a.opaque, d->opaque));

	/* and the server computes the same response from what it received */
	sip_digest_alg alg;
	assert(sip_digest_alg_parse(a.algorithm, &alg) == 0);
	sip_digest_input in = {
		.alg = alg, .username = c.username, .realm = a.realm, .password = c.password,
		.method = c.method, .uri = a.uri, .nonce = a.nonce, .cnonce = a.cnonce,
		.nc = a.nc, .qop = a.qop, .body = c.body,
	};
	char resp[SIP_DIGEST_HEX_MAX + 1];
	assert(sip_digest_response(&in, resp) == 0);
	assert(sip_digest_equal(sip_pl_make(resp, strlen(resp)), a.response));
	uint32_t nc;
	assert(!a.nc.p || (sip_nc_parse(a.nc, &nc) == 0 && nc == 1));
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a private copy of exactly size bytes, so ASan sees any over-read */
	char *s = malloc(size ? size : 1);
	assert(s);
	memcpy(s, data, size);
	static sip_digest d;
	int rc = sip_digest_parse(&d, s, size);
	assert(rc == 0 || rc == EINVAL || rc == E2BIG || rc == EEXIST || rc == ENOTSUP);
	if (rc == 0 || rc == ENOTSUP)
		assert(d.scheme.n > 0 && inside(d.scheme, s, size, &d));
	if (rc == 0) {
		all_inside(&d, s, size);
		const char *missing = NULL;
		if (sip_digest_check_challenge(&d, &missing))
			assert(missing);
		missing = NULL;
		if (sip_digest_check_credentials(&d, &missing))
			assert(missing);
		server(&d);
		client(&d);
	}
	free(s);
	return 0;
}
