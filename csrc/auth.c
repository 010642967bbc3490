/* auth.c: HTTP Digest for SIP (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617 and 2069 forms).
 * All hashing, MACs and randomness come from OpenSSL; this file only arranges the inputs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include "auth.h"

/* ---- parsing (RFC 7235 §2.1 auth-param, RFC 3261 §25.1 quoted-string) ---- */

static const struct {
	const char *name;
	size_t off;
} fields[] = {
	{ "realm", offsetof(sip_digest, realm) },
	{ "nonce", offsetof(sip_digest, nonce) },
	{ "opaque", offsetof(sip_digest, opaque) },
	{ "algorithm", offsetof(sip_digest, algorithm) },
	{ "qop", offsetof(sip_digest, qop) },
	{ "stale", offsetof(sip_digest, stale) },
	{ "domain", offsetof(sip_digest, domain) },
	{ "charset", offsetof(sip_digest, charset) },
	{ "userhash", offsetof(sip_digest, userhash) },
	{ "username", offsetof(sip_digest, username) },
	{ "uri", offsetof(sip_digest, uri) },
	{ "response", offsetof(sip_digest, response) },
	{ "cnonce", offsetof(sip_digest, cnonce) },
	{ "nc", offsetof(sip_digest, nc) },
};

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* RFC 3261 token characters plus the extra tchars of RFC 7230. */
static int is_token(char c)
{
	unsigned char u = (unsigned char)c;
	if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9'))
		return 1;
	return u != 0 && strchr("-.!%*_+`'~#$&^|", u) != NULL;
}

static int is_ctl(char c)
{
	unsigned char u = (unsigned char)c;
	return (u < 0x20 && u != '\t') || u == 0x7f;
}

static const char *skip_ws(const char *p, const char *e)
{
	while (p < e && is_ws(*p))
		p++;
	return p;
}

static sip_pl take_token(const char **pp, const char *e)
{
	const char *p = *pp;
	while (p < e && is_token(*p))
		p++;
	sip_pl t = sip_pl_make(*pp, (size_t)(p - *pp));
	*pp = p;
	return t;
}

/* *pp is just past the opening quote. Escaped values are copied unescaped into d->esc. */
static int take_quoted(sip_digest *d, const char **pp, const char *e, sip_pl *v)
{
	const char *start = *pp, *p = *pp;
	int escaped = 0;

	for (;;) {
		if (p >= e)
			return EINVAL; /* unterminated */
		if (*p == '"')
			break;
		if (*p == '\\') {
			if (p + 1 >= e)
				return EINVAL;
			escaped = 1;
			p++;
		}
		if (is_ctl(*p))
			return EINVAL;
		p++;
	}
	*pp = p + 1;
	if ((size_t)(p - start) > SIP_DIGEST_VALUE_MAX)
		return E2BIG;
	if (!escaped) {
		*v = sip_pl_make(start, (size_t)(p - start));
		return 0;
	}
	char *out = d->esc + d->escn;
	size_t n = 0;
	for (const char *q = start; q < p; q++) {
		if (*q == '\\')
			q++;
		if (d->escn + n >= SIP_DIGEST_ESC_MAX)
			return E2BIG;
		out[n++] = *q;
	}
	d->escn += n;
	*v = sip_pl_make(out, n);
	return 0;
}

/* Unquoted values are tokens in the grammar; we take any run up to a separator so that
 * sloppy peers (an unquoted nonce with '/' or '=') still parse. A '\' is refused: it is no
 * token char, and echoed back (quoted, so escaped) it would double, past the value limit
 * and the escape store, making a challenge we accept one we cannot answer. */
static int take_bare(const char **pp, const char *e, sip_pl *v)
{
	const char *p = *pp;
	while (p < e && !is_ws(*p) && *p != ',' && *p != '"') {
		if (is_ctl(*p) || *p == '\\')
			return EINVAL;
		p++;
	}
	if (p == *pp)
		return EINVAL;
	if ((size_t)(p - *pp) > SIP_DIGEST_VALUE_MAX)
		return E2BIG;
	*v = sip_pl_make(*pp, (size_t)(p - *pp));
	*pp = p;
	return 0;
}

static sip_pl *field_slot(sip_digest *d, sip_pl name)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (sip_pl_casecmp(name, fields[i].name))
			return (sip_pl *)((char *)d + fields[i].off);
	return NULL;
}

int sip_digest_parse(sip_digest *d, const char *s, size_t n)
{
	if (!d || !s)
		return EINVAL;
	memset(d, 0, sizeof(*d));
	const char *p = s, *e = s + n;
	int nparams = 0;

	p = skip_ws(p, e);
	d->scheme = take_token(&p, e);
	if (d->scheme.n == 0)
		return EINVAL;
	/* Other schemes may use token68 syntax; their parameters are not ours to read. */
	if (!sip_pl_casecmp(d->scheme, "Digest"))
		return ENOTSUP;
	if (p < e && !is_ws(*p))
		return EINVAL;

	for (;;) {
		p = skip_ws(p, e);
		if (p >= e)
			break;
		if (*p == ',') { /* empty list elements are allowed (RFC 7230 §7) */
			p++;
			continue;
		}
		sip_pl name = take_token(&p, e);
		if (name.n == 0)
			return EINVAL;
		p = skip_ws(p, e);
		if (p >= e || *p != '=') {
			/* A token without '=' after a complete parameter starts the next challenge
			 * in a comma-joined list; it is not part of this one. */
			if (nparams > 0)
				break;
			return EINVAL;
		}
		p = skip_ws(p + 1, e);
		if (p >= e)
			return EINVAL;

		sip_pl v;
		int err;
		if (*p == '"') {
			p++;
			err = take_quoted(d, &p, e, &v);
		} else {
			err = take_bare(&p, e, &v);
		}
		if (err)
			return err;

		sip_pl *slot = field_slot(d, name);
		if (slot) {
			if (slot->p)
				return EEXIST;
			*slot = v; /* v.p is never NULL, so even "" counts as present */
		}
		nparams++;

		p = skip_ws(p, e);
		if (p < e && *p != ',')
			return EINVAL;
	}
	return 0;
}

static int require(const sip_pl *f, const char *name, const char **missing)
{
	if (f->p)
		return 0;
	if (missing)
		*missing = name;
	return EBADMSG;
}

int sip_digest_check_challenge(const sip_digest *d, const char **missing)
{
	if (!d)
		return EINVAL;
	int err = require(&d->realm, "realm", missing);
	return err ? err : require(&d->nonce, "nonce", missing);
}

int sip_digest_check_credentials(const sip_digest *d, const char **missing)
{
	if (!d)
		return EINVAL;
	static const char *const names[] = { "username", "realm", "nonce", "uri", "response" };
	const sip_pl *f[] = { &d->username, &d->realm, &d->nonce, &d->uri, &d->response };
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (require(f[i], names[i], missing))
			return EBADMSG;
	/* With qop the client must say which count and cnonce it hashed (RFC 7616 §3.4). */
	if (d->qop.p) {
		if (require(&d->cnonce, "cnonce", missing) || require(&d->nc, "nc", missing))
			return EBADMSG;
	}
	return 0;
}

int sip_digest_qop_has(sip_pl qop, const char *opt)
{
	if (!qop.p) /* absent: no offset from NULL, even by 0 (C11 6.5.6) */
		return 0;
	const char *p = qop.p, *e = qop.p + qop.n;
	while (p < e) {
		while (p < e && (is_ws(*p) || *p == ','))
			p++;
		const char *start = p;
		while (p < e && !is_ws(*p) && *p != ',')
			p++;
		if (p > start && sip_pl_casecmp(sip_pl_make(start, (size_t)(p - start)), opt))
			return 1;
	}
	return 0;
}

/* ---- hashing ---- */

static const char *const alg_names[] = {
	[SIP_DIGEST_MD5] = "MD5",
	[SIP_DIGEST_MD5_SESS] = "MD5-sess",
	[SIP_DIGEST_SHA256] = "SHA-256",
	[SIP_DIGEST_SHA256_SESS] = "SHA-256-sess",
	[SIP_DIGEST_SHA512_256] = "SHA-512-256",
	[SIP_DIGEST_SHA512_256_SESS] = "SHA-512-256-sess",
};

int sip_digest_alg_parse(sip_pl name, sip_digest_alg *alg)
{
	if (!alg)
		return EINVAL;
	if (!name.p || name.n == 0) {
		*alg = SIP_DIGEST_MD5;
		return 0;
	}
	for (size_t i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++) {
		if (sip_pl_casecmp(name, alg_names[i])) {
			*alg = (sip_digest_alg)i;
			return 0;
		}
	}
	return ENOTSUP;
}

const char *sip_digest_alg_name(sip_digest_alg alg)
{
	return (unsigned)alg < sizeof(alg_names) / sizeof(alg_names[0]) ? alg_names[alg] : NULL;
}

static int alg_is_sess(sip_digest_alg alg)
{
	return alg == SIP_DIGEST_MD5_SESS || alg == SIP_DIGEST_SHA256_SESS ||
	       alg == SIP_DIGEST_SHA512_256_SESS;
}

static const EVP_MD *alg_md(sip_digest_alg alg)
{
	switch (alg) {
	case SIP_DIGEST_MD5:
	case SIP_DIGEST_MD5_SESS:
		return EVP_md5();
	case SIP_DIGEST_SHA256:
	case SIP_DIGEST_SHA256_SESS:
		return EVP_sha256();
	case SIP_DIGEST_SHA512_256:
	case SIP_DIGEST_SHA512_256_SESS:
		return EVP_sha512_256();
	}
	return NULL;
}

size_t sip_digest_hex_len(sip_digest_alg alg)
{
	const EVP_MD *md = alg_md(alg);
	return md ? 2u * (size_t)EVP_MD_get_size(md) : 0;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int sip_digest_hash(sip_digest_alg alg, const sip_pl *parts, size_t nparts, char *out)
{
	const EVP_MD *md = alg_md(alg);
	if (!md || !out || (nparts && !parts))
		return EINVAL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return ENOMEM;
	unsigned char buf[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int ok = EVP_DigestInit_ex(ctx, md, NULL);
	for (size_t i = 0; ok && i < nparts; i++) {
		if (i > 0)
			ok = EVP_DigestUpdate(ctx, ":", 1);
		if (ok && parts[i].n)
			ok = EVP_DigestUpdate(ctx, parts[i].p, parts[i].n);
	}
	if (ok)
		ok = EVP_DigestFinal_ex(ctx, buf, &len);
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return EIO;
	to_hex(buf, len, out);
	return 0;
}

int sip_digest_response(const sip_digest_input *in, char *out)
{
	if (!in || !out || !alg_md(in->alg))
		return EINVAL;
	size_t hl = sip_digest_hex_len(in->alg);
	char ha1[SIP_DIGEST_HEX_MAX + 1], ha2[SIP_DIGEST_HEX_MAX + 1], hb[SIP_DIGEST_HEX_MAX + 1];
	int err, auth_int = 0, has_qop = in->qop.n > 0;

	if (has_qop) {
		if (sip_pl_casecmp(in->qop, "auth-int"))
			auth_int = 1;
		else if (!sip_pl_casecmp(in->qop, "auth"))
			return ENOTSUP;
	}
	/* -sess mixes the cnonce into HA1, which the RFC 2069 form does not carry. */
	if (alg_is_sess(in->alg) && !has_qop)
		return ENOTSUP;

	if (in->ha1.p) {
		if (in->ha1.n != hl)
			return EINVAL;
		for (size_t i = 0; i < hl; i++) /* htdigest files may be upper case */
			ha1[i] = (char)((in->ha1.p[i] >= 'A' && in->ha1.p[i] <= 'F') ? in->ha1.p[i] + 32
										  : in->ha1.p[i]);
		ha1[hl] = '\0';
	} else {
		sip_pl a1[] = { in->username, in->realm, in->password };
		if ((err = sip_digest_hash(in->alg, a1, 3, ha1)))
			return err;
	}
	if (alg_is_sess(in->alg)) {
		sip_pl s[] = { sip_pl_make(ha1, hl), in->nonce, in->cnonce };
		if ((err = sip_digest_hash(in->alg, s, 3, ha1)))
			return err;
	}

	if (auth_int) {
		if ((err = sip_digest_hash(in->alg, &in->body, 1, hb)))
			return err;
		sip_pl a2[] = { in->method, in->uri, sip_pl_make(hb, hl) };
		err = sip_digest_hash(in->alg, a2, 3, ha2);
	} else {
		sip_pl a2[] = { in->method, in->uri };
		err = sip_digest_hash(in->alg, a2, 2, ha2);
	}
	if (err)
		return err;

	if (has_qop) {
		sip_pl r[] = { sip_pl_make(ha1, hl), in->nonce, in->nc, in->cnonce, in->qop,
			       sip_pl_make(ha2, hl) };
		return sip_digest_hash(in->alg, r, 6, out);
	}
	sip_pl r[] = { sip_pl_make(ha1, hl), in->nonce, sip_pl_make(ha2, hl) };
	return sip_digest_hash(in->alg, r, 3, out);
}

int sip_digest_equal(sip_pl a, sip_pl b)
{
	if (a.n != b.n)
		return 0;
	if (a.n == 0)
		return 1;
	return CRYPTO_memcmp(a.p, b.p, a.n) == 0;
}

/* ---- client: building credentials ---- */

typedef struct wbuf {
	char *p;
	size_t size, len;
	int err;
} wbuf;

static void put(wbuf *b, const char *s, size_t n)
{
	if (b->err)
		return;
	if (b->size - b->len < n + 1) {
		b->err = ERANGE;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void puts_(wbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* sep name="value" with '"' and '\' escaped (RFC 3261 §25.1 quoted-pair). */
static void put_quoted(wbuf *b, const char *sep, const char *name, sip_pl v)
{
	puts_(b, sep);
	puts_(b, name);
	puts_(b, "=\"");
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] == '"' || v.p[i] == '\\')
			put(b, "\\", 1);
		put(b, v.p + i, 1);
	}
	put(b, "\"", 1);
}

static void put_bare(wbuf *b, const char *name, sip_pl v)
{
	puts_(b, ", ");
	puts_(b, name);
	puts_(b, "=");
	put(b, v.p, v.n);
}

int sip_digest_authorization(const sip_digest *chal, const sip_digest_client *c, char *out,
			     size_t size, size_t *len)
{
	if (!chal || !c || !out || size == 0)
		return EINVAL;
	if (sip_digest_check_challenge(chal, NULL))
		return EINVAL;

	sip_digest_alg alg;
	if (sip_digest_alg_parse(chal->algorithm, &alg))
		return ENOTSUP;

	/* Prefer plain auth; auth-int only when it is all the server offers. */
	sip_pl qop = { NULL, 0 };
	if (chal->qop.p) {
		if (sip_digest_qop_has(chal->qop, "auth"))
			qop = SIP_PL("auth");
		else if (sip_digest_qop_has(chal->qop, "auth-int"))
			qop = SIP_PL("auth-int");
		else
			return ENOTSUP;
	}

	/* 128 bits of fresh randomness per request, as RFC 7616 §3.4 asks of the cnonce. */
	char cnonce_buf[33], nc_buf[9];
	sip_pl cnonce = c->cnonce;
	if (!cnonce.p || cnonce.n == 0) {
		unsigned char r[16];
		if (RAND_bytes(r, sizeof(r)) != 1)
			return EIO;
		to_hex(r, sizeof(r), cnonce_buf);
		cnonce = sip_pl_make(cnonce_buf, 32);
	}
	snprintf(nc_buf, sizeof(nc_buf), "%08x", (unsigned)c->nc);
	sip_pl nc = sip_pl_make(nc_buf, 8);

	sip_digest_input in = {
		.alg = alg, .username = c->username, .realm = chal->realm,
		.password = c->password, .method = c->method, .uri = c->uri,
		.nonce = chal->nonce, .cnonce = cnonce, .nc = nc, .qop = qop, .body = c->body,
	};
	char resp[SIP_DIGEST_HEX_MAX + 1];
	int err = sip_digest_response(&in, resp);
	if (err)
		return err;

	/* RFC 7616 §3.4.4: with userhash the name itself is hidden as H(user:realm). */
	int userhash = chal->userhash.p && sip_pl_casecmp(chal->userhash, "true");
	char uh[SIP_DIGEST_HEX_MAX + 1];
	sip_pl user = c->username;
	if (userhash) {
		sip_pl parts[] = { c->username, chal->realm };
		if ((err = sip_digest_hash(alg, parts, 2, uh)))
			return err;
		user = sip_pl_make(uh, sip_digest_hex_len(alg));
	}

	wbuf b = { out, size, 0, 0 };
	out[0] = '\0';
	puts_(&b, "Digest ");
	put_quoted(&b, "", "username", user);
	put_quoted(&b, ", ", "realm", chal->realm);
	put_quoted(&b, ", ", "nonce", chal->nonce);
	put_quoted(&b, ", ", "uri", c->uri);
	put_quoted(&b, ", ", "response", sip_pl_make(resp, strlen(resp)));
	puts_(&b, ", algorithm=");
	puts_(&b, sip_digest_alg_name(alg));
	if (qop.p) {
		put_quoted(&b, ", ", "cnonce", cnonce);
		put_bare(&b, "qop", qop);
		put_bare(&b, "nc", nc);
	}
	if (chal->opaque.p)
		put_quoted(&b, ", ", "opaque", chal->opaque);
	if (userhash)
		puts_(&b, ", userhash=true");
	if (b.err)
		return b.err;
	if (len)
		*len = b.len;
	return 0;
}

/* ---- stateless nonces ---- */

int sip_nonce_key_init(sip_nonce_key *k)
{
	if (!k)
		return EINVAL;
	return RAND_bytes(k->secret, sizeof(k->secret)) == 1 ? 0 : EIO;
}

int sip_nonce_key_derive(sip_nonce_key *k, const void *secret, size_t n)
{
	static const char label[] = "luasip nonce key:";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!k || !secret)
		return EINVAL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)
		&& EVP_DigestUpdate(ctx, label, sizeof label - 1)
		&& EVP_DigestUpdate(ctx, secret, n)
		&& EVP_DigestFinal_ex(ctx, md, &len) && len == sizeof k->secret;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return EIO;
	memcpy(k->secret, md, sizeof k->secret);
	return 0;
}

static int nonce_mac(const sip_nonce_key *k, const unsigned char *msg, unsigned char *mac)
{
	unsigned char full[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), k->secret, (int)sizeof(k->secret), msg,
		  SIP_NONCE_TIME_LEN + SIP_NONCE_SALT_LEN, full, &len))
		return EIO;
	memcpy(mac, full, SIP_NONCE_MAC_LEN);
	return 0;
}

int sip_nonce_make(const sip_nonce_key *k, uint64_t now, char *out)
{
	if (!k || !out)
		return EINVAL;
	unsigned char raw[SIP_NONCE_RAW_LEN];
	for (unsigned i = 0; i < SIP_NONCE_TIME_LEN; i++)
		raw[i] = (unsigned char)(now >> (8 * (SIP_NONCE_TIME_LEN - 1 - i)));
	if (RAND_bytes(raw + SIP_NONCE_TIME_LEN, SIP_NONCE_SALT_LEN) != 1)
		return EIO;
	int err = nonce_mac(k, raw, raw + SIP_NONCE_TIME_LEN + SIP_NONCE_SALT_LEN);
	if (err)
		return err;
	to_hex(raw, sizeof(raw), out);
	return 0;
}

/* Lower-case hex only: one spelling per nonce, so the nc table cannot be sidestepped by
 * re-casing a nonce. */
static int from_hex(const char *s, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int v;
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else
			return EINVAL;
		if (i % 2 == 0)
			out[i / 2] = (unsigned char)(v << 4);
		else
			out[i / 2] |= (unsigned char)v;
	}
	return 0;
}

sip_nonce_state sip_nonce_check(const sip_nonce_key *k, sip_pl nonce, uint64_t now, uint64_t ttl)
{
	unsigned char raw[SIP_NONCE_RAW_LEN], mac[SIP_NONCE_MAC_LEN];
	if (!k || !nonce.p || nonce.n != SIP_NONCE_HEX_LEN)
		return SIP_NONCE_BAD;
	if (from_hex(nonce.p, nonce.n, raw))
		return SIP_NONCE_BAD;
	if (nonce_mac(k, raw, mac))
		return SIP_NONCE_BAD;
	if (CRYPTO_memcmp(mac, raw + SIP_NONCE_TIME_LEN + SIP_NONCE_SALT_LEN, SIP_NONCE_MAC_LEN))
		return SIP_NONCE_BAD;
	uint64_t t = 0;
	for (unsigned i = 0; i < SIP_NONCE_TIME_LEN; i++)
		t = (t << 8) | raw[i];
	/* A time ahead of ours is still our own nonce (the clock stepped back): accept it. */
	if (now > t && now - t > ttl)
		return SIP_NONCE_STALE;
	return SIP_NONCE_OK;
}

/* ---- nc replay table: a ring of entries (oldest overwritten) indexed by hash chains ---- */

#define NC_NIL UINT32_MAX

typedef struct nc_entry {
	char nonce[SIP_NONCE_HEX_LEN];
	uint32_t nc;
	uint32_t next; /* next entry in the same bucket, or NC_NIL */
	uint32_t bucket;
	int used;
} nc_entry;

struct sip_nc_table {
	size_t cap, nbuckets, ring;
	uint32_t *buckets;
	nc_entry *e;
	uint64_t floor;   /* the latest issue time of a nonce evicted so far (0: none yet) */
};

/* The issue time a nonce carries in its first hex digits (it was checked before). */
static uint64_t nonce_time(const char *hex)
{
	unsigned char raw[SIP_NONCE_TIME_LEN];
	uint64_t t = 0;
	if (from_hex(hex, 2 * SIP_NONCE_TIME_LEN, raw))
		return 0;
	for (unsigned i = 0; i < SIP_NONCE_TIME_LEN; i++)
		t = (t << 8) | raw[i];
	return t;
}

sip_nc_table *sip_nc_table_new(size_t cap)
{
	if (cap == 0 || cap >= NC_NIL)
		return NULL;
	sip_nc_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cap = cap;
	t->nbuckets = 1;
	while (t->nbuckets < cap)
		t->nbuckets <<= 1;
	t->buckets = malloc(t->nbuckets * sizeof(*t->buckets));
	t->e = calloc(cap, sizeof(*t->e));
	if (!t->buckets || !t->e) {
		sip_nc_table_free(t);
		return NULL;
	}
	for (size_t i = 0; i < t->nbuckets; i++)
		t->buckets[i] = NC_NIL;
	return t;
}

void sip_nc_table_free(sip_nc_table *t)
{
	if (!t)
		return;
	free(t->buckets);
	free(t->e);
	free(t);
}

/* FNV-1a is enough: keys are authenticated nonces, which an attacker cannot choose. */
static uint32_t nc_hash(sip_pl s)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < s.n; i++)
		h = (h ^ (unsigned char)s.p[i]) * 16777619u;
	return h;
}

static void nc_unlink(sip_nc_table *t, uint32_t idx)
{
	uint32_t *link = &t->buckets[t->e[idx].bucket];
	while (*link != NC_NIL && *link != idx)
		link = &t->e[*link].next;
	if (*link == idx)
		*link = t->e[idx].next;
}

sip_nc_result sip_nc_check(sip_nc_table *t, sip_pl nonce, uint32_t nc)
{
	if (!t || !nonce.p || nonce.n != SIP_NONCE_HEX_LEN)
		return SIP_NC_UNKNOWN;
	uint32_t b = nc_hash(nonce) & (uint32_t)(t->nbuckets - 1);
	for (uint32_t i = t->buckets[b]; i != NC_NIL; i = t->e[i].next) {
		nc_entry *x = &t->e[i];
		if (memcmp(x->nonce, nonce.p, SIP_NONCE_HEX_LEN) == 0) {
			if (nc == 0 || nc <= x->nc)
				return SIP_NC_REPLAY;
			x->nc = nc;
			return SIP_NC_OK;
		}
	}
	if (nc > 1)
		return SIP_NC_UNKNOWN;
	/* A nonce issued before one that was evicted may have been evicted too, its uses
	 * forgotten: taking its nc 1 again would let a captured request be replayed. It is
	 * unknown instead (the client gets stale=true and a fresh nonce). */
	if (t->floor && nonce_time(nonce.p) <= t->floor)
		return SIP_NC_UNKNOWN;

	uint32_t idx = (uint32_t)t->ring;
	t->ring = (t->ring + 1) % t->cap;
	if (t->e[idx].used) {
		uint64_t gone = nonce_time(t->e[idx].nonce);
		if (gone > t->floor)
			t->floor = gone;
		nc_unlink(t, idx);
	}
	nc_entry *x = &t->e[idx];
	memcpy(x->nonce, nonce.p, SIP_NONCE_HEX_LEN);
	x->nc = nc ? nc : UINT32_MAX;   /* 0: used once without nc, never again */
	x->bucket = b;
	x->used = 1;
	x->next = t->buckets[b];
	t->buckets[b] = idx;
	return SIP_NC_OK;
}

int sip_nc_parse(sip_pl s, uint32_t *nc)
{
	if (!s.p || s.n != 8 || !nc)
		return EINVAL;
	uint32_t v = 0;
	for (size_t i = 0; i < 8; i++) {
		char c = s.p[i];
		uint32_t d;
		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (uint32_t)(c - 'A' + 10);
		else
			return EINVAL;
		v = (v << 4) | d;
	}
	*nc = v;
	return 0;
}
