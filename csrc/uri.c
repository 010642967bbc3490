/* uri.c: SIP/SIPS/tel URIs, header params, name-addr and Via values (RFC 3261 §25.1).
 * Everything works on slices of the message buffer; folded whitespace counts as LWS. */
#include "uri.h"
#include "chars.h"

#include <stdint.h>

static inline const char *skip_lws(const char *p, const char *end)
{
	while (p < end && sip_is_lws((unsigned char)*p))
		p++;
	return p;
}

static inline sip_pl trim(sip_pl s)
{
	while (s.n && sip_is_lws((unsigned char)s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && sip_is_lws((unsigned char)s.p[s.n - 1]))
		s.n--;
	return s;
}

const char *sip_quoted_end(const char *p, const char *end)
{
	/* memchr to the next quote; only a backslash before it means a second look */
	for (;;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		if (!q)
			return NULL;
		const char *bs = memchr(p, '\\', (size_t)(q - p));
		if (!bs)
			return q;
		p = bs + 2;     /* bs < q < end: the pair is inside */
	}
}

/* Characters of class `cls`, or '%' HEX HEX, from p up to the first byte of neither;
 * returns that byte's position, or NULL at a malformed escape. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))   /* a call costs more than the few bytes of a user part */
#endif
static inline const char *scan_escaped(const char *p, const char *end, unsigned cls)
{
	for (;;) {
		p = sip_span(p, end, cls);
		if (p == end || *p != '%')
			return p;
		if (end - p < 3 || !sip_is_hex((unsigned char)p[1]) || !sip_is_hex((unsigned char)p[2]))
			return NULL;
		p += 3;
	}
}

/* Case-insensitive equality with a literal of n bytes. */
static inline int lit_eq(sip_pl a, const char *lit, size_t n)
{
	return a.n == n && sip_caseeq(a.p, lit, n);
}

/* host = hostname / IPv4address / IPv6reference */
static int host_ok(sip_pl h)
{
	if (h.n == 0)
		return 0;
	const char *p = h.p, *end = h.p + h.n;
	if (h.p[0] == '[') {
		if (h.n < 3 || h.p[h.n - 1] != ']')
			return 0;
		p++;
		end--;
		while (p < end && (sip_ctab[(unsigned char)*p] & SIP_C_IPV6))
			p++;
		return p == end;
	}
	return sip_span(p, end, SIP_C_HOST) == end;
}

static int port_parse(sip_pl s, int *port)
{
	unsigned v = 0;
	if (s.n == 0 || s.n > 5)
		return -1;
	for (size_t i = 0; i < s.n; i++) {
		if (!sip_is_digit((unsigned char)s.p[i]))
			return -1;
		v = v * 10 + (unsigned)(s.p[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/* A port's 1-5 digits at p (after the ':'), at most 65535: the end of them, or NULL. */
static inline const char *port_digits(const char *p, const char *end, unsigned *port)
{
	const char *q = p;
	unsigned v = 0;
	while (q < end && sip_is_digit((unsigned char)*q) && q - p < 6)
		v = v * 10 + (unsigned)(*q++ - '0');
	if (q == p || q - p > 5 || v > 65535)
		return NULL;
	*port = v;
	return q;
}

/* One generic-param (RFC 3261 §25.1) at p, LWS around '=' allowed: its name and value
 * (empty when none; quoted values keep their quotes). Returns where it ends, past any
 * LWS after it, or NULL on bad syntax. */
static const char *param_one(const char *p, const char *end, sip_pl *name, sip_pl *value)
{
	const char *ns = p;
	p = sip_span(p, end, SIP_C_TOKEN);
	if (p == ns)
		return NULL;
	*name = sip_pl_make(ns, (size_t)(p - ns));
	*value = sip_pl_make(p, 0);
	p = skip_lws(p, end);
	if (p < end && *p == '=') {
		p = skip_lws(p + 1, end);
		const char *vs = p;
		if (p < end && *p == '"') {
			p = sip_quoted_end(p + 1, end);
			if (!p)
				return NULL;
			p++;
		} else {
			/* token / host (IPv6 references bring [ ] :) */
			p = sip_span(p, end, SIP_C_PARAMVAL);
			if (p == vs)
				return NULL;
		}
		*value = sip_pl_make(vs, (size_t)(p - vs));
		p = skip_lws(p, end);
	}
	return p;
}

int sip_param_next(sip_pl params, size_t *pos, sip_pl *name, sip_pl *value)
{
	if (*pos >= params.n) {     /* also keeps an absent list's NULL pointer out of sums */
		*pos = params.n;
		return 0;
	}
	const char *end = params.p + params.n;
	const char *p = skip_lws(params.p + *pos, end);
	if (p >= end) {
		*pos = params.n;
		return 0;
	}
	p = param_one(p, end, name, value);
	if (!p)
		return -1;
	if (p >= end) {
		*pos = params.n;
		return 1;
	}
	if (*p != ';')
		return -1;
	p = skip_lws(p + 1, end);
	if (p >= end)
		return -1;      /* a trailing ';' names no parameter */
	*pos = (size_t)(p - params.p);
	return 1;
}

int sip_param_get(sip_pl params, const char *name, sip_pl *value)
{
	size_t pos = 0;
	sip_pl n, v;
	while (params.n && (params.p[0] == ';' || sip_is_lws((unsigned char)params.p[0]))) {
		params.p++;
		params.n--;
	}
	while (sip_param_next(params, &pos, &n, &v) == 1) {
		if (sip_pl_casecmp(n, name)) {
			*value = v;
			return 1;
		}
	}
	return 0;
}

/* uri-parameters (without the leading ';') up to the first '?' at or after p: each one
 * non-empty, not starting with '=', of param characters. Returns where they end, or NULL. */
static const char *uri_params_scan(const char *p, const char *end)
{
	for (;;) {
		const char *q = scan_escaped(p, end, SIP_C_PARAM);
		if (!q || q == p || *p == '=')
			return NULL;
		if (q == end || *q == '?')
			return q;
		if (*q != ';')
			return NULL;
		p = q + 1;
	}
}

/* One pass over a sip/sips URI after "scheme:", every byte checked against the class of
 * the part it falls in (so no byte outside the grammar passes). */
static int sip_uri_rest(sip_uri *u, const char *p, const char *end)
{
	u->is_sip = 1;
	const char *at = sip_find_byte(p, end, '@', NULL);
	if (at) {
		/* userinfo: user [":" password] "@"; the first '@' ends it */
		const char *q = scan_escaped(p, at, SIP_C_USER);
		if (!q || q == p || (q < at && *q != ':'))
			return -1;
		u->user = sip_pl_make(p, (size_t)(q - p));
		if (q < at) {
			const char *r = scan_escaped(q + 1, at, SIP_C_PASSWORD);
			if (r != at)
				return -1;
			u->password = sip_pl_make(q + 1, (size_t)(at - q - 1));
		}
		p = at + 1;
	}
	/* hostport ends at ';', '?' or the end */
	const char *h = p, *q;
	if (p < end && *p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (!rb || rb - p < 2)
			return -1;
		for (q = p + 1; q < rb; q++)
			if (!(sip_ctab[(unsigned char)*q] & SIP_C_IPV6))
				return -1;
		q = rb + 1;
	} else {
		q = sip_span(p, end, SIP_C_HOST);
		if (q == p)
			return -1;
	}
	u->host = sip_pl_make(h, (size_t)(q - h));
	if (q < end && *q == ':') {
		unsigned v;
		if (!(q = port_digits(q + 1, end, &v)))
			return -1;
		u->port = (int)v;
	}
	if (q < end && *q == ';') {
		const char *pe = uri_params_scan(q + 1, end);
		if (!pe)
			return -1;
		u->params = sip_pl_make(q + 1, (size_t)(pe - q - 1));
		q = pe;
	}
	if (q < end && *q == '?') {
		u->headers = sip_pl_make(q + 1, (size_t)(end - q - 1));
		if (u->headers.n == 0 || scan_escaped(q + 1, end, SIP_C_HEADER) != end)
			return -1;
		q = end;
	}
	return q == end ? 0 : -1;
}

int sip_uri_parse(sip_uri *u, sip_pl s, const char **err)
{
	memset(u, 0, sizeof *u);
	*err = "bad URI";
	/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ':' */
	const char *p = s.p, *end = s.p + s.n;
	if (s.n > 4 && sip_fold_eq(sip_load4(p), sip_load4("sip:"))) {
		/* the usual scheme, as the general path below would find it */
		u->scheme = sip_pl_make(p, 3);
		if (sip_uri_rest(u, p + 4, end))
			return -1;
		*err = NULL;
		return 0;
	}
	if (s.n == 0 || !sip_is_alpha((unsigned char)*p))
		return -1;
	p = sip_span(p, end, SIP_C_SCHEME);
	if (p == end || *p != ':' || p + 1 == end)
		return -1;
	u->scheme = sip_pl_make(s.p, (size_t)(p - s.p));
	p++;
	if ((lit_eq(u->scheme, "sip", 3) || lit_eq(u->scheme, "sips", 4))) {
		if (sip_uri_rest(u, p, end))
			return -1;
		*err = NULL;
		return 0;
	}
	sip_pl rest = sip_pl_make(p, (size_t)(end - p));
	for (size_t i = 0; i < rest.n; i++) {
		unsigned char c = (unsigned char)rest.p[i];
		if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"')
			return -1;
	}
	if (lit_eq(u->scheme, "tel", 3)) {
		const char *semi = memchr(rest.p, ';', rest.n);
		u->user = sip_pl_make(rest.p, semi ? (size_t)(semi - rest.p) : rest.n);
		if (u->user.n == 0)
			return -1;
		if (semi) {
			u->params = sip_pl_make(semi + 1, (size_t)(rest.p + rest.n - semi - 1));
			if (uri_params_scan(u->params.p, end) != end)
				return -1;
		}
		*err = NULL;
		return 0;
	}
	u->user = rest;          /* opaque: the element decides (416) */
	*err = NULL;
	return 0;
}

long sip_pct_decode(sip_pl in, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < in.n; i++) {
		unsigned char c = (unsigned char)in.p[i];
		if (c == '%') {
			if (i + 2 >= in.n || !sip_is_hex((unsigned char)in.p[i + 1]) ||
			    !sip_is_hex((unsigned char)in.p[i + 2]))
				return -1;
			c = (unsigned char)(sip_hexval((unsigned char)in.p[i + 1]) << 4 |
					    sip_hexval((unsigned char)in.p[i + 2]));
			i += 2;
		}
		if (o >= cap)
			return -1;
		out[o++] = (char)c;
	}
	return (long)o;
}

/* The params a Via value's fields come from (RFC 3261 §20.42, RFC 3581); a repeated one
 * overrides the one before. Returns -1 on a bad rport. */
static int via_param(sip_via *v, sip_pl n, sip_pl val)
{
	switch (n.n) {
	case 3:
		if (lit_eq(n, "ttl", 3))
			v->ttl = val;
		return 0;
	case 5:
		if (lit_eq(n, "maddr", 5)) {
			v->maddr = val;
		} else if (lit_eq(n, "rport", 5)) {
			if (val.n == 0)
				v->rport = 0;
			else if (port_parse(val, &v->rport))
				return -1;
		}
		return 0;
	case 6:
		if (lit_eq(n, "branch", 6))
			v->branch = val;
		return 0;
	case 8:
		if (lit_eq(n, "received", 8))
			v->received = val;
		return 0;
	default:
		return 0;
	}
}

/* Header params after a name-addr or Via: ";" param ... to the end. One pass checks them
 * and picks out what the caller wants: the first tag (tag != NULL) or the Via fields. */
static int header_params(sip_pl s, sip_pl *out, sip_pl *tag, sip_via *via)
{
	s = trim(s);
	if (s.n == 0) {
		*out = s;
		return 0;
	}
	if (s.p[0] != ';')
		return -1;
	s.p++;
	s.n--;
	/* the grammar of sip_param_next, without its per-call bookkeeping */
	const char *p = skip_lws(s.p, s.p + s.n), *end = s.p + s.n;
	if (p == end)
		return -1;
	for (;;) {
		sip_pl n, v;
		p = param_one(p, end, &n, &v);
		if (!p)
			return -1;
		if (tag && !tag->p && lit_eq(n, "tag", 3))
			*tag = v;
		if (via && via_param(via, n, v))
			return -1;
		if (p == end)
			break;
		if (*p != ';')
			return -1;
		p = skip_lws(p + 1, end);
		if (p == end)
			return -1;      /* a trailing ';' names no parameter */
	}
	*out = s;
	return 0;
}

/* sip_uri_parse(u, [p, end)) == 0, with u's fields of no interest: a "sip:" URI goes
 * straight to sip_uri_rest, which sets what it finds and reads nothing else of u. */
static inline int uri_check(sip_uri *u, const char *p, const char *end)
{
	const char *err;
	if (end - p > 4 && sip_fold_eq(sip_load4(p), sip_load4("sip:")))
		return sip_uri_rest(u, p + 4, end);
	return sip_uri_parse(u, sip_pl_make(p, (size_t)(end - p)), &err);
}

/* header_params for the quick address paths: params from p (LWS first) up to the end or a
 * ',' (the next address of a list), and the first tag's value (.p NULL when none). Returns
 * where they end, or NULL for anything else, valid or not. */
static const char *params_quick(const char *p, const char *end, sip_pl *tag)
{
	*tag = sip_pl_make(NULL, 0);
	p = skip_lws(p, end);
	while (p < end && *p != ',') {
		if (*p != ';')
			return NULL;
		p = skip_lws(p + 1, end);
		const char *ns = p;
		/* the usual name: no scan (the '=' ends the token) */
		if (end - p >= 4 && sip_fold_eq(sip_load4(p), sip_load4("tag=")))
			p += 3;
		else
			p = sip_span(p, end, SIP_C_TOKEN);
		size_t nl = (size_t)(p - ns);
		if (nl == 0)
			return NULL;    /* also a trailing ';' */
		sip_pl val = sip_pl_make(p, 0);   /* where param_one puts an absent value */
		p = skip_lws(p, end);
		if (p < end && *p == '=') {
			const char *vs = skip_lws(p + 1, end);
			if (vs < end && *vs == '"') {
				/* sip_list_next skips this quoted-string the same way */
				p = sip_quoted_end(vs + 1, end);
				if (!p)
					return NULL;
				p++;
			} else {
				p = sip_span(vs, end, SIP_C_PARAMVAL);
				if (p == vs)
					return NULL;
			}
			val = sip_pl_make(vs, (size_t)(p - vs));
			p = skip_lws(p, end);
		}
		if (nl == 3 && !tag->p && sip_caseeq(ns, "tag", 3))
			*tag = val;
	}
	return p;
}

/* The usual shapes of a sip: URI after "sip:" (at p) in one pass over its bytes, as
 * sip_uri_rest reads them: [user "@"] host [":" port], the user of SIP_C_ADDRUSER bytes
 * (SIP_C_USER without ';' '?' ',') or escapes. Neither part holds an '@' but the one after
 * the user, so that is the first '@' of the URI, or there is none up to where this stops
 * (which the callers check is where the URI ends). Returns that place, or NULL for anything
 * else: the callers then take the general path, which tells valid from not. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
static inline const char *user_host_port(const char *p, const char *end)
{
	const char *h = p, *q = sip_span(p, end, SIP_C_HOST);
	if (q < end && *q != '@' && (*q == '%' || (sip_ctab[(unsigned char)*q] & SIP_C_ADDRUSER))) {
		q = scan_escaped(q, end, SIP_C_ADDRUSER);   /* a user part, then */
		if (!q || q == end || *q != '@')
			return NULL;
	}
	if (q < end && *q == '@') {
		if (q == p)
			return NULL;
		h = q + 1;
		q = sip_span(h, end, SIP_C_HOST);
	}
	if (q == h)
		return NULL;
	if (q < end && *q == ':') {
		unsigned v;
		q = port_digits(q + 1, end, &v);
	}
	return q;
}

/* An addr-spec's URI from p (after "sip:") when user_host_port reads it up to the end or
 * a byte of SIP_C_ADDRSTOP | ADDRBAD: no byte before that one is of those classes, so it is
 * where the URI ends, and sip_uri_rest accepts the URI. Returns that end, or NULL. */
static inline const char *addr_spec_quick(const char *p, const char *end)
{
	const char *q = user_host_port(p, end);
	if (!q || (q < end && !(sip_ctab[(unsigned char)*q] & (SIP_C_ADDRSTOP | SIP_C_ADDRBAD))))
		return NULL;
	return q;
}

/* The '>' of a name-addr whose URI (from p, after '<') is a sip: one that user_host_port
 * reads, with uri-parameters after it as uri_params_scan checks them (their bytes hold no
 * '@', '?' or '>'), up to a '>': it is the first '>', and sip_uri_rest accepts the URI.
 * NULL for anything else. */
static inline const char *name_addr_quick(const char *p, const char *end)
{
	if (end - p <= 4 || !sip_fold_eq(sip_load4(p), sip_load4("sip:")))
		return NULL;
	const char *q = user_host_port(p + 4, end);
	while (q && q < end && *q == ';') {
		const char *ps = q + 1;
		q = scan_escaped(ps, end, SIP_C_PARAM);
		if (q == ps || *ps == '=')
			return NULL;
	}
	return q && q < end && *q == '>' ? q : NULL;
}

int sip_uri_request_ok(sip_pl s)
{
	/* a sip: URI straight to sip_uri_rest, which sets what it finds and reads nothing
	 * else: only the headers part needs clearing, not the whole sip_uri */
	sip_uri u;
	if (s.n > 4 && sip_fold_eq(sip_load4(s.p), sip_load4("sip:"))) {
		u.headers = sip_pl_make(NULL, 0);
		return sip_uri_rest(&u, s.p + 4, s.p + s.n) == 0 && u.headers.n == 0;
	}
	const char *err;
	return sip_uri_parse(&u, s, &err) == 0 && u.headers.n == 0;
}

/* One name-addr or addr-spec from p (no LWS before it) up to the end or the ',' after it,
 * checked as sip_addr_parse checks it (no '*'). A valid URI holds no '"', '<' or '>', so up
 * to that ',' sip_list_next sees quotes and <> where this does. Returns where it ends, or
 * NULL for anything else, valid or not. */
static const char *addr_quick(const char *p, const char *end, sip_pl *tag)
{
	const char *ps;
	sip_uri u;
	if (end - p > 4 && sip_fold_eq(sip_load4(p), sip_load4("sip:"))) {
		/* addr-spec (a scheme is no display name): the URI ends at ';', LWS or ',';
		 * a '<' after it fails params_quick, as it fails sip_addr_parse */
		const char *e = addr_spec_quick(p + 4, end);
		if (!e) {
			e = sip_cspan(p + 4, end, SIP_C_ADDRSTOP | SIP_C_ADDRBAD);
			if (e < end && *e != ',' && !(sip_ctab[(unsigned char)*e] & SIP_C_ADDRSTOP))
				return NULL;
			if (uri_check(&u, p, e))
				return NULL;
		} else if (e < end && *e != ',' && !(sip_ctab[(unsigned char)*e] & SIP_C_ADDRSTOP)) {
			return NULL;
		}
		ps = e;
	} else {
		const char *lt;
		if (p < end && *p == '"') {
			const char *q = sip_quoted_end(p + 1, end);
			if (!q)
				return NULL;
			lt = skip_lws(q + 1, end);
		} else {
			lt = sip_span(p, end, SIP_C_TOKEN | SIP_C_LWS);
		}
		if (lt == end || *lt != '<')
			return NULL;
		const char *gt = name_addr_quick(lt + 1, end);
		if (!gt) {
			gt = sip_find_byte(lt, end, '>', NULL);
			if (!gt || uri_check(&u, lt + 1, gt))
				return NULL;
		}
		ps = gt + 1;
	}
	return params_quick(ps, end, tag);
}

int sip_addr_quick(sip_pl s, sip_pl *tag)
{
	return addr_quick(s.p, s.p + s.n, tag) == s.p + s.n;
}

int sip_addr_list_quick(sip_pl s)
{
	const char *p = s.p, *end = s.p + s.n;
	sip_pl tag;
	for (;;) {
		p = addr_quick(skip_lws(p, end), end, &tag);
		if (!p)
			return 0;
		if (p == end)
			return 1;
		p++;    /* the ',' */
	}
}

int sip_addr_parse(sip_addr *a, sip_pl s, const char **err)
{
	memset(a, 0, sizeof *a);
	s = trim(s);
	const char *p = s.p, *end = s.p + s.n;
	*err = "bad address";
	if (s.n == 0)
		return -1;
	if (s.n == 1 && s.p[0] == '*') {
		a->star = 1;
		*err = NULL;
		return 0;
	}
	const char *lt = NULL;
	if (*p == '"') {
		const char *q = sip_quoted_end(p + 1, end);
		if (!q) {
			/* a quoted-pair cut by the end (a last lone '\\') is no address at all */
			for (q = p + 1; q < end; q++)
				if (*q == '\\' && ++q == end)
					return -1;
			*err = "unterminated quoted string";
			return -1;
		}
		a->display = sip_pl_make(p + 1, (size_t)(q - p - 1));
		a->quoted = 1;
		lt = skip_lws(q + 1, end);
		if (lt >= end || *lt != '<')
			return -1;
	} else {
		/* name-addr with token display name, or addr-spec */
		const char *q = sip_span(p, end, SIP_C_TOKEN | SIP_C_LWS);
		if (q < end && *q == '<') {
			lt = q;
			a->display = trim(sip_pl_make(p, (size_t)(q - p)));
		} else {
			/* addr-spec: the URI ends at ';' (params are header params, §20.10). A '<'
			 * anywhere is a bad display name, else a '?' or ',' in the URI needs <>:
			 * one scan to the first of them or the URI's end, memchr for the rest. */
			const char *e = sip_cspan(p, end, SIP_C_ADDRSTOP | SIP_C_ADDRBAD);
			if (e < end && *e != '<' && (sip_ctab[(unsigned char)*e] & SIP_C_ADDRBAD)) {
				*err = memchr(e, '<', (size_t)(end - e)) ? "bad display name" :
				       "URI with headers must be in <>";
				return -1;
			}
			if (e < end && memchr(e, '<', (size_t)(end - e))) {
				*err = "bad display name";
				return -1;
			}
			a->uri = sip_pl_make(p, (size_t)(e - p));
			sip_uri u;
			if (sip_uri_parse(&u, a->uri, err))
				return -1;
			if (header_params(sip_pl_make(e, (size_t)(end - e)), &a->params, &a->tag,
					  NULL)) {
				*err = "bad header parameters";
				return -1;
			}
			*err = NULL;
			return 0;
		}
	}
	const char *gt = memchr(lt, '>', (size_t)(end - lt));
	if (!gt) {
		*err = "unterminated <";
		return -1;
	}
	a->uri = sip_pl_make(lt + 1, (size_t)(gt - lt - 1));
	sip_uri u;
	if (sip_uri_parse(&u, a->uri, err))
		return -1;
	if (header_params(sip_pl_make(gt + 1, (size_t)(end - gt - 1)), &a->params, &a->tag,
			  NULL)) {
		*err = "bad header parameters";
		return -1;
	}
	*err = NULL;
	return 0;
}

/* One Via value of the usual shape for sip_via_list_quick: sent-protocol, a host name
 * [":" port] and unquoted params, up to the end or the ',' after it (outside quotes and <>
 * there is no other, so sip_list_next would split there too). Returns where it ends, or
 * NULL for anything else, valid or not. *branch is the last branch param, as via_param
 * keeps it. */
static const char *via_quick(const char *p, const char *end, sip_pl *branch)
{
	/* sent-protocol as sip_via_parse splits it: LWS allowed around the '/'s */
	int i = 0;
	if (end - p >= 8 && sip_fold_eq(sip_load8(p), sip_load8("SIP/2.0/"))) {
		p += 8;
		i = 2;
		/* the usual transports and a space: what the loop below finds, without a scan */
		if (end - p >= 4) {
			uint64_t w = sip_load4(p);
			if (sip_fold_eq(w, sip_load4("UDP ")) || sip_fold_eq(w, sip_load4("TCP ")) ||
			    sip_fold_eq(w, sip_load4("TLS "))) {
				p = skip_lws(p + 3, end);
				i = 3;
			}
		}
	}
	for (; i < 3; i++) {
		const char *t = skip_lws(p, end);
		p = sip_span(t, end, SIP_C_TOKEN);
		if (p == t || (i == 0 && !(p - t == 3 && sip_caseeq(t, "sip", 3))))
			return NULL;
		p = skip_lws(p, end);
		if (i < 2) {
			if (p == end || *p != '/')
				return NULL;
			p++;
		}
	}
	const char *hs = p;
	p = sip_span(p, end, SIP_C_HOST);   /* '[': IPv6, left to the general path */
	if (p == hs || (p < end && *p != ';' && *p != ':' && *p != ',' &&
			!sip_is_lws((unsigned char)*p)))
		return NULL;
	p = skip_lws(p, end);
	if (p < end && *p == ':') {
		p = skip_lws(p + 1, end);
		const char *ds = p;
		unsigned port = 0;
		while (p < end && sip_is_digit((unsigned char)*p) && p - ds < 6)
			port = port * 10 + (unsigned)(*p++ - '0');
		if (p == ds || p - ds > 5 || port > 65535 ||
		    (p < end && sip_is_digit((unsigned char)*p)))
			return NULL;
		p = skip_lws(p, end);
	}
	*branch = sip_pl_make(NULL, 0);
	for (;;) {
		if (p == end || *p == ',')
			return p;
		if (*p != ';')
			return NULL;
		p = skip_lws(p + 1, end);
		const char *ns = p;
		/* the usual name: no scan (the '=' ends the token) */
		if (end - p >= 7 && sip_fold_eq(sip_load4(p), sip_load4("bran")) &&
		    sip_fold_eq(sip_load4(p + 3), sip_load4("nch=")))
			p += 6;
		else if (end - p >= 9 && sip_fold_eq(sip_load8(p), sip_load8("received")) &&
			 p[8] == '=')
			p += 8;
		else
			p = sip_span(p, end, SIP_C_TOKEN);
		size_t nl = (size_t)(p - ns);
		if (nl == 0)
			return NULL;    /* also a trailing ';' */
		sip_pl val = sip_pl_make(p, 0);   /* where param_one puts an absent value */
		p = skip_lws(p, end);
		if (p < end && *p == '=') {
			const char *vs = skip_lws(p + 1, end);
			p = sip_span(vs, end, SIP_C_PARAMVAL);   /* a quote: the general path */
			if (p == vs)
				return NULL;
			val = sip_pl_make(vs, (size_t)(p - vs));
			p = skip_lws(p, end);
		}
		if (nl == 6 && sip_caseeq(ns, "branch", 6)) {
			*branch = val;
		} else if (nl == 5 && val.n && sip_caseeq(ns, "rport", 5)) {
			int port;
			if (port_parse(val, &port))
				return NULL;
		}
	}
}

int sip_via_list_quick(sip_pl s, sip_pl *branch)
{
	const char *p = s.p, *end = s.p + s.n;
	sip_pl b, *out = branch;   /* the first value's branch; the others' go to b */
	for (;;) {
		/* one call site: via_quick is inlined here */
		p = via_quick(skip_lws(p, end), end, out);
		if (!p)
			return 0;
		if (p == end)
			return 1;
		p++;    /* the ',' */
		out = &b;
	}
}

int sip_via_first_quick(sip_pl s, sip_pl *branch)
{
	const char *end = s.p + s.n;
	return via_quick(skip_lws(s.p, end), end, branch) != NULL;
}

int sip_via_parse(sip_via *v, sip_pl s, const char **err)
{
	memset(v, 0, sizeof *v);
	v->rport = -1;
	*err = "bad Via";
	s = trim(s);
	const char *p = s.p, *end = s.p + s.n;
	sip_pl parts[3];
	int i = 0;
	if (s.n >= 8 && sip_fold_eq(sip_load8(p), sip_load8("SIP/2.0/"))) {
		/* the usual sent-protocol, as the loop would split it */
		parts[0] = sip_pl_make(p, 3);
		parts[1] = sip_pl_make(p + 4, 3);
		p += 8;
		i = 2;
	}
	for (; i < 3; i++) {
		p = skip_lws(p, end);
		const char *t = p;
		p = sip_span(p, end, SIP_C_TOKEN);
		if (p == t)
			return -1;
		parts[i] = sip_pl_make(t, (size_t)(p - t));
		p = skip_lws(p, end);
		if (i < 2) {
			if (p >= end || *p != '/')
				return -1;
			p++;
		}
	}
	/* protocol-name "/" protocol-version, kept as one slice when written without LWS */
	v->protocol = sip_pl_make(parts[0].p, (size_t)(parts[1].p + parts[1].n - parts[0].p));
	if (!lit_eq(parts[0], "sip", 3))
		return -1;
	v->transport = parts[2];
	p = skip_lws(p, end);
	const char *hs = p;
	if (p < end && *p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (!rb)
			return -1;
		p = rb + 1;
		while (p < end && *p != ';' && !sip_is_lws((unsigned char)*p) && *p != ':')
			p++;
	} else {
		/* a hostname ends at ';', LWS or ':'; any other byte makes it a bad host */
		p = sip_span(p, end, SIP_C_HOST);
		if (p < end && *p != ';' && *p != ':' && !sip_is_lws((unsigned char)*p))
			return -1;
	}
	const char *he = p;
	p = skip_lws(p, end);
	if (p < end && *p == ':') {
		p = skip_lws(p + 1, end);
		const char *ps = p;
		while (p < end && sip_is_digit((unsigned char)*p))
			p++;
		if (port_parse(sip_pl_make(ps, (size_t)(p - ps)), &v->port))
			return -1;
	}
	v->host = sip_pl_make(hs, (size_t)(he - hs));
	if (he == hs || (*hs == '[' && !host_ok(v->host)))
		return -1;
	if (header_params(sip_pl_make(p, (size_t)(end - p)), &v->params, NULL, v))
		return -1;
	*err = NULL;
	return 0;
}
