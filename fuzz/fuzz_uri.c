/* fuzz_uri.c: libFuzzer target for URIs, name-addrs, Via values, params and %-escapes.
 * The whole input is tried as each; whatever parses is taken apart further. */
#include "uri.h"
#include "msg.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int inside(sip_pl part, sip_pl whole)
{
	return part.n == 0 || (part.p >= whole.p && part.p + part.n <= whole.p + whole.n);
}

static void params(sip_pl s)
{
	size_t pos = 0, last = 0;
	sip_pl n, v;
	int r;
	while ((r = sip_param_next(s, &pos, &n, &v)) == 1) {
		assert(n.n > 0 && inside(n, s) && inside(v, s));
		assert(pos > last);
		assert(pos <= s.n);
		last = pos;
		if (pos == s.n)
			break;
	}
	assert(r >= -1 && r <= 1);
	sip_param_get(s, "tag", &v);
}

static void decode(sip_pl s)
{
	char *out = malloc(s.n ? s.n : 1);
	assert(out);
	long n = sip_pct_decode(s, out, s.n);
	assert(n <= (long)s.n);
	if (s.n > 1)
		sip_pct_decode(s, out, s.n / 2);
	free(out);
}

static void uri(sip_pl s)
{
	sip_uri u;
	const char *err;
	if (sip_uri_parse(&u, s, &err)) {
		assert(err);
		return;
	}
	assert(inside(u.scheme, s) && inside(u.user, s) && inside(u.password, s));
	assert(inside(u.host, s) && inside(u.params, s) && inside(u.headers, s));
	assert(u.port >= 0 && u.port <= 65535);
	params(u.params);
	/* a URI that parses alone parses inside <> as a name-addr, unchanged */
	char *na = malloc(s.n + 2);
	assert(na);
	na[0] = '<';
	memcpy(na + 1, s.p, s.n);
	na[s.n + 1] = '>';
	sip_addr a;
	int rc = sip_addr_parse(&a, sip_pl_make(na, s.n + 2), &err);
	assert(rc == 0 && a.uri.n == s.n && memcmp(a.uri.p, s.p, s.n) == 0);
	free(na);
	decode(u.user);
	decode(u.password);
	decode(u.headers);
}

static void addr(sip_pl s)
{
	sip_addr a;
	const char *err;
	if (sip_addr_parse(&a, s, &err)) {
		assert(err);
		return;
	}
	assert(inside(a.display, s) && inside(a.uri, s) && inside(a.params, s));
	if (!a.star)
		uri(a.uri);
	params(a.params);
}

static void via(sip_pl s)
{
	sip_via v;
	const char *err;
	if (sip_via_parse(&v, s, &err)) {
		assert(err);
		return;
	}
	assert(inside(v.host, s) && inside(v.params, s) && inside(v.branch, s));
	assert(v.port >= 0 && v.port <= 65535 && v.rport >= -1 && v.rport <= 65535);
	params(v.params);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sip_pl s = sip_pl_make((const char *)data, size);
	uri(s);
	addr(s);
	via(s);
	params(s);
	decode(s);
	size_t pos = 0;
	sip_pl item;
	while (sip_list_next(s, &pos, &item)) {
		assert(inside(item, s));
		addr(item);
		via(item);
	}
	return 0;
}
