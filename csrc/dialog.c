/* dialog.c: RFC 3261 §12 dialogs — created from an INVITE and its response (§12.1), used to
 * build requests inside them (§12.2.1.1) and to check requests that arrive in them (§12.2.2). */
#include "dialog.h"
#include "fmt.h"
#include "rand.h"
#include "uri.h"

#include <stdlib.h>
#include <string.h>

/* Our requests leave with this Max-Forwards (§8.1.1.6 recommends 70). */
#define DIALOG_MAX_FORWARDS "70"
/* Hex digits of a Via branch after the magic cookie, as sip.random.branch makes them. */
#define DIALOG_BRANCH_HEX 16

static int str_set(sip_dialog_str *s, const char *p, size_t n)
{
	char *c = malloc(n + 1);
	if (!c)
		return -1;
	if (n)
		memcpy(c, p, n);
	c[n] = '\0';
	free(s->p);
	s->p = c;
	s->n = n;
	return 0;
}

static void str_clear(sip_dialog_str *s)
{
	free(s->p);
	s->p = NULL;
	s->n = 0;
}

static sip_pl str_pl(const sip_dialog_str *s)
{
	return sip_pl_make(s->p ? s->p : "", s->n);
}

/* The first header `id` of m at index `from` or later, unfolded into a malloc'd copy
 * (NULL when absent or out of memory: m->first[id] tells the two apart). */
static char *hdr_copy(const sip_msg *m, sip_hdr_id id, int from, size_t *n)
{
	int i = sip_msg_find(m, id, NULL, 0, from);
	if (i < 0)
		return NULL;
	sip_pl v = m->hdrs[i].value;
	char *c = malloc(v.n + 1);
	if (!c)
		return NULL;
	*n = m->hdrs[i].folded ? sip_unfold(v, c, v.n) : v.n;
	if (!m->hdrs[i].folded && v.n)
		memcpy(c, v.p, v.n);
	c[*n] = '\0';
	return c;
}

/* Set s to the value of m's first `id` header; a missing header is an error. */
static int set_hdr(sip_dialog_str *s, const sip_msg *m, sip_hdr_id id, const char **err)
{
	size_t n;
	char *c = hdr_copy(m, id, 0, &n);
	if (!c) {
		*err = m->first[id] < 0 ? "header missing" : "out of memory";
		return -1;
	}
	free(s->p);
	s->p = c;
	s->n = n;
	return 0;
}

/* A URI fit to be a Request-URI: without the headers component (?...), which RFC 3261
 * §19.1.1 does not allow there — a Contact may carry one for the UAC to apply. */
static int target_uri(sip_pl in, sip_pl *out)
{
	sip_uri u;
	const char *err;
	if (sip_uri_parse(&u, in, &err))
		return -1;
	*out = in;
	if (u.is_sip && u.headers.p)
		out->n = (size_t)(u.headers.p - 1 - in.p);
	return 0;
}

/* The URI of m's first Contact into s; 1 set, 0 no usable Contact, -1 out of memory. */
static int set_contact_target(sip_dialog_str *s, const sip_msg *m)
{
	size_t n, pos = 0;
	char *c = hdr_copy(m, SIP_HDR_CONTACT, 0, &n);
	if (!c)
		return 0;
	sip_pl item;
	sip_addr a;
	const char *err;
	int r = 0;
	sip_pl uri;
	if (sip_list_next(sip_pl_make(c, n), &pos, &item) && item.n &&
	    sip_addr_parse(&a, item, &err) == 0 && !a.star && a.uri.n &&
	    target_uri(a.uri, &uri) == 0)
		r = str_set(s, uri.p, uri.n) ? -1 : 1;
	free(c);
	return r;
}

static void route_clear(sip_dialog *d)
{
	for (unsigned i = 0; i < d->nroute; i++)
		str_clear(&d->route[i]);
	d->nroute = 0;
}

/* The route set from m's Record-Route values: as they are (UAS, §12.1.1) or reversed (UAC,
 * §12.1.2). More than SIP_DIALOG_MAX_ROUTES entries is an error, not a truncation: a
 * shortened route set would send requests around the proxies that asked to stay. */
static int set_route_set(sip_dialog *d, const sip_msg *m, int reverse, const char **err)
{
	sip_dialog_str r[SIP_DIALOG_MAX_ROUTES];
	unsigned n = 0;
	int rc = 0;
	for (int i = sip_msg_find(m, SIP_HDR_RECORD_ROUTE, NULL, 0, 0); i >= 0 && !rc;
	     i = sip_msg_find(m, SIP_HDR_RECORD_ROUTE, NULL, 0, i + 1)) {
		size_t len, pos = 0;
		char *c = hdr_copy(m, SIP_HDR_RECORD_ROUTE, i, &len);
		if (!c) {
			*err = "out of memory";
			rc = -1;
			break;
		}
		sip_pl item;
		while (sip_list_next(sip_pl_make(c, len), &pos, &item)) {
			if (!item.n)
				continue;
			if (n == SIP_DIALOG_MAX_ROUTES) {
				*err = "too many Record-Route values";
				rc = -1;
				break;
			}
			r[n].p = NULL;
			if (str_set(&r[n], item.p, item.n)) {
				*err = "out of memory";
				rc = -1;
				break;
			}
			n++;
		}
		free(c);
	}
	if (rc) {
		for (unsigned i = 0; i < n; i++)
			free(r[i].p);
		return -1;
	}
	route_clear(d);
	for (unsigned i = 0; i < n; i++)
		d->route[i] = r[reverse ? n - 1 - i : i];
	d->nroute = n;
	return 0;
}

static int is_sips(sip_pl uri)
{
	return uri.n >= 5 && strncasecmp(uri.p, "sips:", 5) == 0;
}

static sip_pl request_uri(const sip_msg *m)
{
	return m->new_uri.n ? m->new_uri : m->uri;
}

static sip_dialog *dialog_alloc(void)
{
	return calloc(1, sizeof(sip_dialog));
}

void sip_dialog_free(sip_dialog *d)
{
	if (!d)
		return;
	str_clear(&d->call_id);
	str_clear(&d->local_tag);
	str_clear(&d->remote_tag);
	str_clear(&d->local_uri);
	str_clear(&d->remote_uri);
	str_clear(&d->remote_target);
	str_clear(&d->contact);
	route_clear(d);
	free(d);
}

int sip_dialog_new_uac(sip_dialog **out, const sip_msg *req, const sip_msg *res,
		       const char *contact, size_t clen, const char **err)
{
	*out = NULL;
	if (!req || !res || !req->is_request || res->is_request) {
		*err = "request and response expected";
		return -1;
	}
	if (!res->to_tag.n || res->status <= 100 || res->status >= 300) {
		*err = "no dialog: response needs a To tag and a status of 101-299";
		return -1;
	}
	sip_dialog *d = dialog_alloc();
	if (!d) {
		*err = "out of memory";
		return -1;
	}
	d->is_uac = 1;
	*err = "out of memory";
	if (str_set(&d->call_id, res->call_id.p, res->call_id.n) ||
	    str_set(&d->local_tag, res->from_tag.p, res->from_tag.n) ||
	    str_set(&d->remote_tag, res->to_tag.p, res->to_tag.n) ||
	    (contact && str_set(&d->contact, contact, clen)) ||
	    set_hdr(&d->local_uri, req, SIP_HDR_FROM, err) ||
	    set_hdr(&d->remote_uri, res, SIP_HDR_TO, err) ||
	    set_route_set(d, res, 1, err))
		goto fail;
	int r = set_contact_target(&d->remote_target, res);
	if (r < 0 || (r == 0 && str_set(&d->remote_target, request_uri(req).p,
					 request_uri(req).n)))
		goto fail;
	/* the response's CSeq, not the request's: an INVITE re-sent with credentials has a
	 * higher one than the request object the caller kept */
	d->local_cseq = d->invite_cseq = res->cseq;
	d->secure = is_sips(request_uri(req));
	d->state = res->status < 200 ? SIP_DIALOG_EARLY : SIP_DIALOG_CONFIRMED;
	*out = d;
	return 0;
fail:
	sip_dialog_free(d);
	return -1;
}

/* A start for our CSeq numbers: any value below 2^31 does (§8.1.1.5); a small random one
 * keeps them readable in traces. */
static uint32_t random_cseq(void)
{
	char hex[4];
	uint32_t v = 0;
	if (sip_random_hex(hex, sizeof hex))
		return 1;
	for (size_t i = 0; i < sizeof hex; i++)
		v = v * 16 + (uint32_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
	return v % 10000 + 1;
}

int sip_dialog_new_uas(sip_dialog **out, const sip_msg *req, const char *local_tag,
		       size_t tlen, const char *contact, size_t clen, uint32_t local_cseq,
		       const char **err)
{
	*out = NULL;
	if (!req || !req->is_request) {
		*err = "request expected";
		return -1;
	}
	if (!local_tag || !tlen) {
		*err = "local tag required";
		return -1;
	}
	sip_dialog *d = dialog_alloc();
	if (!d) {
		*err = "out of memory";
		return -1;
	}
	*err = "out of memory";
	if (str_set(&d->call_id, req->call_id.p, req->call_id.n) ||
	    str_set(&d->local_tag, local_tag, tlen) ||
	    str_set(&d->remote_tag, req->from_tag.p, req->from_tag.n) ||
	    (contact && str_set(&d->contact, contact, clen)) ||
	    set_hdr(&d->remote_uri, req, SIP_HDR_FROM, err) ||
	    set_hdr(&d->local_uri, req, SIP_HDR_TO, err) ||
	    set_route_set(d, req, 0, err))
		goto fail;
	if (!req->to_tag.n) {
		/* our To gets the tag the 2xx carries */
		size_t n = d->local_uri.n + 5 + tlen;
		char *c = malloc(n + 1);
		if (!c)
			goto fail;
		memcpy(c, d->local_uri.p, d->local_uri.n);
		memcpy(c + d->local_uri.n, ";tag=", 5);
		memcpy(c + d->local_uri.n + 5, local_tag, tlen);
		c[n] = '\0';
		free(d->local_uri.p);
		d->local_uri.p = c;
		d->local_uri.n = n;
	}
	int r = set_contact_target(&d->remote_target, req);
	if (r == 0) {
		/* no Contact: the From URI is the best target there is */
		sip_addr a;
		const char *e;
		sip_pl uri;
		if (sip_addr_parse(&a, str_pl(&d->remote_uri), &e) == 0 && a.uri.n &&
		    target_uri(a.uri, &uri) == 0)
			r = str_set(&d->remote_target, uri.p, uri.n) ? -1 : 1;
	}
	if (r < 0)
		goto fail;
	if (r == 0) {
		*err = "no remote target: neither Contact nor From has a URI";
		goto fail;
	}
	d->remote_cseq = req->cseq;
	d->has_remote_cseq = 1;
	d->local_cseq = local_cseq ? local_cseq : random_cseq();
	d->secure = is_sips(request_uri(req));
	d->state = SIP_DIALOG_CONFIRMED;
	*out = d;
	return 0;
fail:
	sip_dialog_free(d);
	return -1;
}

static int is_target_refresh(int method_id)
{
	return method_id == SIP_METHOD_INVITE || method_id == SIP_METHOD_UPDATE;
}

int sip_dialog_update(sip_dialog *d, const sip_msg *res, const char **err)
{
	if (!d || !res || res->is_request) {
		*err = "response expected";
		return -1;
	}
	if (d->state == SIP_DIALOG_TERMINATED) {
		*err = "dialog terminated";
		return -1;
	}
	if (res->to_tag.n && !sip_pl_eq(res->to_tag, str_pl(&d->remote_tag))) {
		/* a fork's response belongs to its own dialog (§12.1.2) */
		*err = "response of another dialog (To tag)";
		return -1;
	}
	if (res->status >= 300) {
		/* §12.3: a non-2xx final ends the early dialogs of the INVITE */
		if (d->state == SIP_DIALOG_EARLY)
			d->state = SIP_DIALOG_TERMINATED;
		return 0;
	}
	if (res->status <= 100)
		return 0;
	int refresh = is_target_refresh(res->method_id);
	if (res->status >= 200 && d->state == SIP_DIALOG_EARLY) {
		/* §13.2.2.4: the 2xx's Record-Route gives the route set of the confirmed dialog */
		if (d->is_uac && set_route_set(d, res, 1, err))
			return -1;
		d->state = SIP_DIALOG_CONFIRMED;
	} else if (res->status < 200 && d->state != SIP_DIALOG_EARLY) {
		refresh = 0;   /* a provisional to a re-INVITE refreshes nothing */
	}
	if (refresh && set_contact_target(&d->remote_target, res) < 0) {
		*err = "out of memory";
		return -1;
	}
	return 0;
}

int sip_dialog_check_request(sip_dialog *d, const sip_msg *req, const char **err)
{
	if (!d || !req || !req->is_request) {
		*err = "request expected";
		return 400;
	}
	*err = NULL;
	if (req->method_id == SIP_METHOD_ACK || req->method_id == SIP_METHOD_CANCEL)
		return 0;   /* they carry the CSeq of the INVITE they belong to */
	if (d->has_remote_cseq && req->cseq < d->remote_cseq) {
		*err = "CSeq out of order";
		return 500;
	}
	d->remote_cseq = req->cseq;
	d->has_remote_cseq = 1;
	if (is_target_refresh(req->method_id) && set_contact_target(&d->remote_target, req) < 0) {
		*err = "out of memory";
		return 500;
	}
	return 0;
}

int sip_dialog_sent(sip_dialog *d, const sip_msg *req, const char **err)
{
	if (!d || !req || !req->is_request) {
		*err = "request expected";
		return -1;
	}
	if (req->method_id == SIP_METHOD_ACK || req->method_id == SIP_METHOD_CANCEL)
		return 0;   /* they reuse the INVITE's number (§13.2.2.4, §9.1) */
	if (req->cseq > d->local_cseq)
		d->local_cseq = req->cseq;
	if (req->method_id == SIP_METHOD_INVITE && req->cseq > d->invite_cseq)
		d->invite_cseq = req->cseq;
	return 0;
}

/* A growing text buffer; an allocation failure sticks and is reported once at the end. */
typedef struct text {
	char *p;
	size_t n, cap;
	int oom;
} text;

static void put(text *t, const char *s, size_t n)
{
	if (t->oom)
		return;
	if (t->n + n + 1 > t->cap) {
		size_t cap = (t->cap ? t->cap : 512);
		while (cap < t->n + n + 1)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p) {
			t->oom = 1;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
	memcpy(t->p + t->n, s, n);
	t->n += n;
	t->p[t->n] = '\0';
}

static void puts_(text *t, const char *s)
{
	put(t, s, strlen(s));
}

static void put_header(text *t, const char *name, sip_pl value)
{
	puts_(t, name);
	put(t, ": ", 2);
	put(t, value.p, value.n);
	put(t, "\r\n", 2);
}

static void put_uint(text *t, unsigned long long v)
{
	char d[24];
	put(t, d, sip_fmt_uint(d, v));
}

/* §16.12 / §12.2.1.1: a route entry without ;lr names a strict router. An entry we cannot
 * parse is taken as loose: sending to it as a Route keeps the request on its path. */
static int is_strict(const sip_dialog_str *route, sip_pl *uri)
{
	sip_addr a;
	sip_uri u;
	const char *err;
	sip_pl v;
	if (sip_addr_parse(&a, str_pl(route), &err) || sip_uri_parse(&u, a.uri, &err))
		return 0;
	if (sip_param_get(u.params, "lr", &v) || target_uri(a.uri, uri))
		return 0;
	return 1;
}

static int is_token(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s > ' ' && *s < 127) || strchr("()<>@,;:\\\"/[]?={}", *s))
			return 0;
	return 1;
}

int sip_dialog_build(sip_dialog *d, const char *method, uint32_t ack_cseq,
		     const char *extra, size_t elen, const char *body, size_t blen,
		     const char *ctype, size_t ctlen, char **out, size_t *len, const char **err)
{
	*out = NULL;
	if (!d || !method || !is_token(method)) {
		*err = "method must be a token";
		return -1;
	}
	int ack = strcmp(method, "ACK") == 0;
	uint32_t cseq;
	if (ack) {
		cseq = ack_cseq ? ack_cseq : d->invite_cseq;
	} else {
		cseq = ++d->local_cseq;
		if (strcmp(method, "INVITE") == 0)
			d->invite_cseq = cseq;
	}
	char branch[DIALOG_BRANCH_HEX];
	if (sip_random_hex(branch, sizeof branch)) {
		*err = "no random bytes";
		return -1;
	}
	/* §12.2.1.1: loose first route (or none): Request-URI = remote target, Route = the
	 * route set. Strict first route: it becomes the Request-URI, and the remote target
	 * goes last in Route, so the strict router still learns where the request is for. */
	sip_pl ruri = str_pl(&d->remote_target);
	unsigned first = 0;
	int strict = d->nroute && is_strict(&d->route[0], &ruri);
	if (strict)
		first = 1;
	text t = { 0 };
	puts_(&t, method);
	put(&t, " ", 1);
	put(&t, ruri.p, ruri.n);
	puts_(&t, " SIP/2.0\r\nVia: SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK");
	put(&t, branch, sizeof branch);
	puts_(&t, ";rport\r\nMax-Forwards: " DIALOG_MAX_FORWARDS "\r\n");
	put_header(&t, "From", str_pl(&d->local_uri));
	put_header(&t, "To", str_pl(&d->remote_uri));
	put_header(&t, "Call-ID", str_pl(&d->call_id));
	puts_(&t, "CSeq: ");
	put_uint(&t, cseq);
	put(&t, " ", 1);
	puts_(&t, method);
	put(&t, "\r\n", 2);
	for (unsigned i = first; i < d->nroute; i++)
		put_header(&t, "Route", str_pl(&d->route[i]));
	if (strict) {
		puts_(&t, "Route: <");
		put(&t, d->remote_target.p, d->remote_target.n);
		puts_(&t, ">\r\n");
	}
	if (extra && elen)
		put(&t, extra, elen);
	if (d->contact.n)
		put_header(&t, "Contact", str_pl(&d->contact));
	if (ctype && ctlen)
		put_header(&t, "Content-Type", sip_pl_make(ctype, ctlen));
	puts_(&t, "Content-Length: ");
	put_uint(&t, blen);
	puts_(&t, "\r\n\r\n");
	if (body && blen)
		put(&t, body, blen);
	if (t.oom) {
		free(t.p);
		*err = "out of memory";
		return -1;
	}
	*out = t.p;
	*len = t.n;
	return 0;
}

size_t sip_dialog_key_make(sip_pl call_id, sip_pl local_tag, sip_pl remote_tag,
			   char *out, size_t cap)
{
	size_t need = call_id.n + 1 + local_tag.n + 1 + remote_tag.n;
	if (out && need < cap) {
		char *p = out;
		memcpy(p, call_id.p, call_id.n);
		p += call_id.n;
		*p++ = '|';
		memcpy(p, local_tag.p, local_tag.n);
		p += local_tag.n;
		*p++ = '|';
		memcpy(p, remote_tag.p, remote_tag.n);
		p += remote_tag.n;
		*p = '\0';
	}
	return need;
}

size_t sip_dialog_key(const sip_dialog *d, char *out, size_t cap)
{
	return sip_dialog_key_make(str_pl(&d->call_id), str_pl(&d->local_tag),
				   str_pl(&d->remote_tag), out, cap);
}

const char *sip_dialog_state_name(sip_dialog_state s)
{
	switch (s) {
	case SIP_DIALOG_EARLY: return "early";
	case SIP_DIALOG_CONFIRMED: return "confirmed";
	case SIP_DIALOG_TERMINATED: return "terminated";
	}
	return "?";
}
