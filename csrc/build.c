/* build.c: responses built from requests per RFC 3261 §8.2.6, printed in one pass.
 * Headers are copied as slices of the request; nothing is parsed again. */
#include "build.h"
#include "fmt.h"
#include "rand.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct out {
	char *p;
	size_t cap, n;
} out;

static void put(out *o, const char *s, size_t n)
{
	if (o->p && o->n + n <= o->cap)
		memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void put_hdr(out *o, const char *name, sip_pl v)
{
	put(o, name, strlen(name));
	put(o, ": ", 2);
	put(o, v.p, v.n);
	put(o, "\r\n", 2);
}

void sip_build_tag(char tag[SIP_TAG_LEN])
{
	sip_random_hex(tag, SIP_TAG_LEN);
}

/* Dialog-creating responses carry the Record-Route set back (§12.1.1). */
static int copies_record_route(const sip_msg *req, int code)
{
	if (code <= 100 || code >= 300)
		return 0;
	switch (req->method_id) {
	case SIP_METHOD_INVITE: case SIP_METHOD_SUBSCRIBE: case SIP_METHOD_REFER:
	case SIP_METHOD_NOTIFY:
		return 1;
	default:
		return 0;
	}
}

size_t sip_build_response(const sip_msg *req, int code, const char *reason, size_t rlen,
			  const char *to_tag, size_t tlen, const char *extra, size_t elen,
			  char *buf, size_t cap)
{
	out o = { buf, cap, 0 };
	char line[32];
	char tag[SIP_TAG_LEN];
	if (!reason) {
		reason = sip_reason_phrase(code);
		rlen = strlen(reason);
	}
	put(&o, line, sip_fmt_status(line, code));
	put(&o, reason, rlen);
	put(&o, "\r\n", 2);
	int rr = copies_record_route(req, code);
	for (unsigned i = 0; i < req->nhdrs; i++) {
		const sip_hdr *h = &req->hdrs[i];
		switch (h->id) {
		case SIP_HDR_VIA: put_hdr(&o, "Via", h->value); break;
		case SIP_HDR_RECORD_ROUTE: if (rr) put_hdr(&o, "Record-Route", h->value); break;
		case SIP_HDR_FROM: put_hdr(&o, "From", h->value); break;
		case SIP_HDR_CALL_ID: put_hdr(&o, "Call-ID", h->value); break;
		case SIP_HDR_CSEQ: put_hdr(&o, "CSeq", h->value); break;
		case SIP_HDR_TO:
			put(&o, "To: ", 4);
			put(&o, h->value.p, h->value.n);
			if (req->to_tag.n == 0 && code > 100) {
				if (!to_tag) {
					sip_build_tag(tag);
					to_tag = tag;
					tlen = SIP_TAG_LEN;
				}
				put(&o, ";tag=", 5);
				put(&o, to_tag, tlen);
			}
			put(&o, "\r\n", 2);
			break;
		default:
			break;
		}
	}
	if (extra)
		put(&o, extra, elen);
	put(&o, "Content-Length: 0\r\n\r\n", 21);
	return o.n;
}

int sip_build_from_invite(const sip_msg *inv, const char *method, sip_pl to,
			  char **outp, size_t *lenp)
{
	size_t pos = 0;
	sip_pl via;
	int vi = inv->first[SIP_HDR_VIA], ci = inv->first[SIP_HDR_CALL_ID];
	int fi = inv->first[SIP_HDR_FROM], ti = inv->first[SIP_HDR_TO];
	if (vi < 0 || ci < 0 || fi < 0 || ti < 0)
		return -1;
	sip_list_next(inv->hdrs[vi].value, &pos, &via);
	if (!to.p)
		to = inv->hdrs[ti].value;
	for (int pass = 0; pass < 2; pass++) {
		out o = { pass ? *outp : NULL, pass ? *lenp : 0, 0 };
		char num[48];
		put(&o, method, strlen(method));
		put(&o, " ", 1);
		put(&o, inv->uri.p, inv->uri.n);
		put(&o, " SIP/2.0\r\n", 10);
		put_hdr(&o, "Via", via);
		for (unsigned i = 0; i < inv->nhdrs; i++)
			if (inv->hdrs[i].id == SIP_HDR_ROUTE)
				put_hdr(&o, "Route", inv->hdrs[i].value);
		put(&o, "Max-Forwards: 70\r\n", 18);
		put_hdr(&o, "From", inv->hdrs[fi].value);
		put_hdr(&o, "To", to);
		put_hdr(&o, "Call-ID", inv->hdrs[ci].value);
		int n = snprintf(num, sizeof num, "CSeq: %u %s\r\n", (unsigned)inv->cseq, method);
		put(&o, num, (size_t)n);
		put(&o, "Content-Length: 0\r\n\r\n", 21);
		if (!pass) {
			*lenp = o.n;
			*outp = malloc(o.n);
			if (!*outp)
				return -1;
		}
	}
	return 0;
}

char *sip_build_response_alloc(const sip_msg *req, int code, const char *reason,
			       const char *extra, size_t *len)
{
	size_t rl = reason ? strlen(reason) : 0, el = extra ? strlen(extra) : 0;
	*len = sip_build_response(req, code, reason, rl, NULL, 0, extra, el, NULL, 0);
	char *buf = malloc(*len);
	if (buf)
		sip_build_response(req, code, reason, rl, NULL, 0, extra, el, buf, *len);
	return buf;
}
