/* auth.h: HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617).
 * Parsing of challenges/credentials, response hashes, stateless nonces and nc replay checks. */
#ifndef SIP_AUTH_H
#define SIP_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include "pl.h"

/* No single parameter value we issue or accept is near this; nonces are 64 chars, hashes
 * at most 64, URIs in practice under 256. Anything longer is an attack or a broken peer. */
#define SIP_DIGEST_VALUE_MAX 1024u

/* Room for values that contained \-escapes and so had to be unescaped into a copy.
 * Escapes are rare (a quote inside a realm or user name), so a few values' worth is enough. */
#define SIP_DIGEST_ESC_MAX 2048u

/* Longest hex digest: SHA-256 and SHA-512/256 give 32 bytes. */
#define SIP_DIGEST_HEX_MAX 64u

/* Our nonces: 8 bytes of time, 8 of salt and 16 of truncated HMAC-SHA256, in hex.
 * 128 bits of MAC is the usual truncation floor (RFC 2104 §5: at least half the output). */
#define SIP_NONCE_TIME_LEN 8u
#define SIP_NONCE_SALT_LEN 8u
#define SIP_NONCE_MAC_LEN 16u
#define SIP_NONCE_RAW_LEN (SIP_NONCE_TIME_LEN + SIP_NONCE_SALT_LEN + SIP_NONCE_MAC_LEN)
#define SIP_NONCE_HEX_LEN (2u * SIP_NONCE_RAW_LEN)

/* Active nonces remembered for nc replay checks. A busy registrar sees a few thousand
 * clients per nonce lifetime; when full the oldest is forgotten, and its client is sent a
 * fresh nonce (stale=true) rather than allowed to replay. */
#define SIP_NC_TABLE_CAP 4096u

typedef enum sip_digest_alg {
	SIP_DIGEST_MD5 = 0,
	SIP_DIGEST_MD5_SESS,
	SIP_DIGEST_SHA256,
	SIP_DIGEST_SHA256_SESS,
	SIP_DIGEST_SHA512_256,
	SIP_DIGEST_SHA512_256_SESS,
} sip_digest_alg;

/* A parsed challenge (WWW-/Proxy-Authenticate) or credentials ((Proxy-)Authorization).
 * A field is present when its .p is not NULL; values are unquoted and unescaped. */
typedef struct sip_digest {
	sip_pl scheme;
	sip_pl realm, nonce, opaque, algorithm, qop, stale, domain, charset, userhash;
	sip_pl username, uri, response, cnonce, nc;
	char esc[SIP_DIGEST_ESC_MAX]; /* backing store of unescaped values */
	size_t escn;
} sip_digest;

/* Parse one header value. Returns 0, EINVAL (syntax), E2BIG (value too long), EEXIST
 * (duplicate parameter) or ENOTSUP (scheme is not Digest; d->scheme is still set). */
int sip_digest_parse(sip_digest *d, const char *s, size_t n);
/* Required fields; on EBADMSG *missing names the first absent one. */
int sip_digest_check_challenge(const sip_digest *d, const char **missing);
int sip_digest_check_credentials(const sip_digest *d, const char **missing);
/* Whether a qop list ("auth,auth-int") holds the given option. */
int sip_digest_qop_has(sip_pl qop, const char *opt);

/* An absent algorithm means MD5 (RFC 2617 §3.2.1). Returns 0 or ENOTSUP. */
int sip_digest_alg_parse(sip_pl name, sip_digest_alg *alg);
const char *sip_digest_alg_name(sip_digest_alg alg);
size_t sip_digest_hex_len(sip_digest_alg alg);
/* Hex digest of the parts joined by ':' into out (SIP_DIGEST_HEX_MAX + 1 bytes). */
int sip_digest_hash(sip_digest_alg alg, const sip_pl *parts, size_t nparts, char *out);

/* Inputs of the response; qop empty selects the RFC 2069 form, "auth-int" hashes body. */
typedef struct sip_digest_input {
	sip_digest_alg alg;
	sip_pl username, realm, password;
	sip_pl ha1; /* when not NULL, used instead of username:realm:password */
	sip_pl method, uri, nonce, cnonce, nc, qop, body;
} sip_digest_input;

int sip_digest_response(const sip_digest_input *in, char *out);
/* Constant-time equality of two strings; different lengths are simply unequal. */
int sip_digest_equal(sip_pl a, sip_pl b);

/* Client side: an Authorization value answering chal. cnonce may be empty (then fresh
 * random) and nc is the count for this nonce. Returns 0, ERANGE (out too small),
 * ENOTSUP (unknown algorithm or qop) or EINVAL. */
typedef struct sip_digest_client {
	sip_pl username, password, method, uri, body, cnonce;
	uint32_t nc;
} sip_digest_client;

int sip_digest_authorization(const sip_digest *chal, const sip_digest_client *c, char *out,
			     size_t size, size_t *len);

/* Stateless nonces: time + salt, authenticated by HMAC with a per-instance secret. */
typedef struct sip_nonce_key {
	unsigned char secret[32];
} sip_nonce_key;

typedef enum sip_nonce_state { SIP_NONCE_OK, SIP_NONCE_STALE, SIP_NONCE_BAD } sip_nonce_state;

int sip_nonce_key_init(sip_nonce_key *k);
/* The key from a secret that several processes share (a nonce one issues, another honours). */
int sip_nonce_key_derive(sip_nonce_key *k, const void *secret, size_t n);
/* Writes SIP_NONCE_HEX_LEN chars and a NUL. */
int sip_nonce_make(const sip_nonce_key *k, uint64_t now, char *out);
sip_nonce_state sip_nonce_check(const sip_nonce_key *k, sip_pl nonce, uint64_t now, uint64_t ttl);

/* nc replay protection: highest nc seen per nonce, bounded, oldest evicted first. */
typedef struct sip_nc_table sip_nc_table;

typedef enum sip_nc_result { SIP_NC_OK, SIP_NC_REPLAY, SIP_NC_UNKNOWN } sip_nc_result;

sip_nc_table *sip_nc_table_new(size_t cap);
void sip_nc_table_free(sip_nc_table *t);
/* OK records nc; REPLAY when nc is not above the highest seen; UNKNOWN when the nonce is
 * not remembered and nc is not 1 (it was evicted, or never seen: ask for a fresh nonce), or
 * when it was issued before a nonce the table had to evict (its uses may be forgotten).
 * nc 0: an answer without nc (RFC 2069), taken once: the nonce is spent. */
sip_nc_result sip_nc_check(sip_nc_table *t, sip_pl nonce, uint32_t nc);
/* Parse the 8 hex digits of nc. Returns 0 or EINVAL. */
int sip_nc_parse(sip_pl s, uint32_t *nc);

#endif
