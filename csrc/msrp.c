/* msrp.c: MSRP frames (RFC 4975 §7, §9): parse a frame out of a stream buffer without
 * copying, print one, and put a chunked message back together within limits. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "msrp.h"
#include "rand.h"

#define END_DASHES "-------"
#define NDASH 7

static int is_alnum(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* §9: ident-char = alphanum / "." / "-" / "+" / "%" / "=" */
static int is_ident_char(int c)
{
	return is_alnum(c) || c == '.' || c == '-' || c == '+' || c == '%' || c == '=';
}

static int valid_ident(const char *p, size_t n)
{
	if (n < SIP_MSRP_TID_MIN || n > SIP_MSRP_TID_MAX || !is_alnum((unsigned char)p[0]))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!is_ident_char((unsigned char)p[i]))
			return 0;
	return 1;
}

static int is_token_char(int c)
{
	return is_alnum(c) || (c && strchr("-.!%*_+`'~", c) != NULL);
}

static const char *find_crlf(const char *p, const char *end)
{
	const char *q = p;

	while (q + 1 < end) {
		q = memchr(q, '\r', (size_t)(end - q - 1));
		if (!q)
			return NULL;
		if (q[1] == '\n')
			return q;
		q++;
	}
	return NULL;
}

static int parse_uint(const char *p, size_t n, int64_t *out)
{
	int64_t v = 0;

	if (n == 0 || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	*out = v;
	return 0;
}

int sip_msrp_parse_range(sip_pl v, int64_t *start, int64_t *end, int64_t *total)
{
	const char *p = v.p, *e = v.p + v.n;
	const char *dash = memchr(p, '-', v.n);
	const char *slash = dash ? memchr(dash, '/', (size_t)(e - dash)) : NULL;

	if (!dash || !slash)
		return -1;
	if (parse_uint(p, (size_t)(dash - p), start) || *start < 1)
		return -1;
	if (slash - dash == 2 && dash[1] == '*')
		*end = SIP_MSRP_STAR;
	else if (parse_uint(dash + 1, (size_t)(slash - dash - 1), end))
		return -1;
	if (e - slash == 2 && slash[1] == '*')
		*total = SIP_MSRP_STAR;
	else if (parse_uint(slash + 1, (size_t)(e - slash - 1), total))
		return -1;
	/* an empty range is start-1 (the empty SEND of §7.1: 1-0/0) */
	if (*end != SIP_MSRP_STAR && *end < *start - 1)
		return -1;
	if (*total != SIP_MSRP_STAR && *end != SIP_MSRP_STAR && *end > *total)
		return -1;
	return 0;
}

/* The start line: "MSRP" SP transact-id SP ( method | status-code [SP comment] ) */
static int parse_start(const char *p, const char *e, sip_msrp_msg *m)
{
	const char *sp;

	if (e - p < 5 || memcmp(p, "MSRP ", 5) != 0)
		return -1;
	p += 5;
	sp = memchr(p, ' ', (size_t)(e - p));
	if (!sp || !valid_ident(p, (size_t)(sp - p)))
		return -1;
	m->tid = sip_pl_make(p, (size_t)(sp - p));
	p = sp + 1;
	if (e - p >= 3 && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' &&
	    p[2] >= '0' && p[2] <= '9' && (e - p == 3 || p[3] == ' ')) {
		m->is_request = 0;
		m->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		if (m->status < 100)
			return -1;
		m->comment = e - p > 3 ? sip_pl_make(p + 4, (size_t)(e - p - 4)) : sip_pl_make(p, 0);
		return 0;
	}
	if (p == e)
		return -1;
	for (const char *q = p; q < e; q++)
		if (*q < 'A' || *q > 'Z')
			return -1;
	m->is_request = 1;
	m->method = sip_pl_make(p, (size_t)(e - p));
	return 0;
}

static int add_header(sip_msrp_msg *m, const char *p, const char *e)
{
	const char *colon = memchr(p, ':', (size_t)(e - p));
	sip_pl name, value;

	if (!colon || colon == p)
		return -1;
	for (const char *q = p; q < colon; q++)
		if (!is_token_char((unsigned char)*q))
			return -1;
	name = sip_pl_make(p, (size_t)(colon - p));
	p = colon + 1;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	value = sip_pl_make(p, (size_t)(e - p));
	if (m->nhdrs == SIP_MSRP_MAX_HEADERS)
		return -1;
	m->hdrs[m->nhdrs].name = name;
	m->hdrs[m->nhdrs].value = value;
	m->nhdrs++;
	if (sip_pl_casecmp(name, "To-Path"))
		m->to_path = value;
	else if (sip_pl_casecmp(name, "From-Path"))
		m->from_path = value;
	else if (sip_pl_casecmp(name, "Message-ID"))
		m->message_id = value;
	else if (sip_pl_casecmp(name, "Content-Type"))
		m->content_type = value;
	else if (sip_pl_casecmp(name, "Success-Report"))
		m->success_report = value;
	else if (sip_pl_casecmp(name, "Failure-Report"))
		m->failure_report = value;
	else if (sip_pl_casecmp(name, "Status"))
		m->status_hdr = value;
	else if (sip_pl_casecmp(name, "Byte-Range")) {
		if (sip_msrp_parse_range(value, &m->range_start, &m->range_end, &m->range_total))
			return -1;
		m->has_range = 1;
	} else {
		m->nother++;
	}
	return 0;
}

/* Is [p, e) the end-line of this frame? Sets the flag. */
static int is_end_line(const sip_msrp_msg *m, const char *p, const char *e, char *flag)
{
	size_t n = (size_t)(e - p);

	if (n != NDASH + m->tid.n + 1 || memcmp(p, END_DASHES, NDASH) != 0 ||
	    memcmp(p + NDASH, m->tid.p, m->tid.n) != 0)
		return 0;
	*flag = e[-1];
	return *flag == '$' || *flag == '+' || *flag == '#';
}

#define FAIL(reason) do { *why = (reason); return -1; } while (0)

long sip_msrp_parse(const char *buf, size_t len, size_t max_frame, size_t *scan,
		    sip_msrp_msg *m, const char **why)
{
	static const char *dummy;
	size_t lim = len < SIP_MSRP_MAX_HEAD ? len : SIP_MSRP_MAX_HEAD;
	const char *p = buf, *hend = buf + lim, *eol;

	if (!why)
		why = &dummy;
	if (!buf || !m)
		FAIL("no buffer");
	memset(m, 0, offsetof(sip_msrp_msg, hdrs));
	eol = find_crlf(p, hend);
	if (!eol) {
		if (len >= SIP_MSRP_MAX_HEAD)
			FAIL("start line too long");
		if (len >= 5 && memcmp(buf, "MSRP ", 5) != 0)
			FAIL("not an MSRP frame");
		return 0;
	}
	if (parse_start(p, eol, m))
		FAIL("bad start line");
	p = eol + 2;
	for (;;) {
		eol = find_crlf(p, hend);
		if (!eol) {
			if (len >= SIP_MSRP_MAX_HEAD)
				FAIL("headers too long");
			return 0;
		}
		if (eol == p)
			break;   /* the blank line: a body follows */
		if (p[0] == '-' && is_end_line(m, p, eol, &m->flag)) {
			size_t n = (size_t)(eol + 2 - buf);

			if (n > max_frame)
				FAIL("frame too large");
			m->body = sip_pl_make(eol, 0);
			return (long)n;
		}
		if (add_header(m, p, eol))
			FAIL(m->nhdrs == SIP_MSRP_MAX_HEADERS ? "too many headers" : "bad header");
		p = eol + 2;
	}
	/* §7.1: the body runs to CRLF "-------" transact-id flag CRLF */
	const char *body = eol + 2;
	size_t patlen = 2 + NDASH + m->tid.n;
	char pat[2 + NDASH + SIP_MSRP_TID_MAX];
	size_t from = (size_t)(eol - buf);   /* an empty body: its CRLF is the blank line's */
	size_t end = len < max_frame ? len : max_frame;

	memcpy(pat, "\r\n" END_DASHES, 2 + NDASH);
	memcpy(pat + 2 + NDASH, m->tid.p, m->tid.n);
	if (scan && *scan > from)
		from = *scan;
	while (from + patlen <= end) {
		const char *hit = memmem(buf + from, end - from, pat, patlen);

		if (!hit)
			break;
		size_t at = (size_t)(hit - buf);
		if (at + patlen + 3 > end)
			break;   /* flag and CRLF not here yet */
		char f = hit[patlen];
		if ((f == '$' || f == '+' || f == '#') && hit[patlen + 1] == '\r' &&
		    hit[patlen + 2] == '\n') {
			/* the end-line needs the CRLF before it, which the body cannot share with
			 * the blank line unless the body is empty */
			if (hit < body && hit != eol) {
				from = at + 1;
				continue;
			}
			m->flag = f;
			m->body = sip_pl_make(body, hit >= body ? (size_t)(hit - body) : 0);
			if (scan)
				*scan = 0;
			return (long)(at + patlen + 3);
		}
		from = at + 1;
	}
	if (len >= max_frame)
		FAIL("frame too large");
	if (scan) {
		size_t keep = patlen + 3;
		size_t s = len > keep ? len - keep : 0;

		*scan = s > (size_t)(eol - buf) ? s : (size_t)(eol - buf);
	}
	return 0;
}

/* ---- printing ---- */

typedef struct out {
	char *buf;
	size_t cap, n;
} out;

static void put(out *o, const char *s, size_t n)
{
	if (o->n < o->cap)
		memcpy(o->buf + o->n, s, o->n + n <= o->cap ? n : o->cap - o->n);
	o->n += n;
}

static void puts_(out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void header(out *o, const char *name, const char *value)
{
	if (!value)
		return;
	puts_(o, name);
	put(o, ": ", 2);
	puts_(o, value);
	put(o, "\r\n", 2);
}

static void put_num(out *o, int64_t v)
{
	char tmp[24];
	int n = v == SIP_MSRP_STAR ? snprintf(tmp, sizeof tmp, "*") :
				     snprintf(tmp, sizeof tmp, "%" PRId64, v);
	put(o, tmp, (size_t)n);
}

long sip_msrp_print(char *buf, size_t cap, const sip_msrp_out *x)
{
	out o = { buf, buf ? cap : 0, 0 };
	char flag;

	if (!x || !x->tid || !valid_ident(x->tid, strlen(x->tid)))
		return -1;
	if (!x->method && (x->status < 100 || x->status > 999))
		return -1;
	if (x->method && (!*x->method || strpbrk(x->method, " \r\n")))
		return -1;
	flag = x->flag ? x->flag : '$';
	if (flag != '$' && flag != '+' && flag != '#')
		return -1;
	puts_(&o, "MSRP ");
	puts_(&o, x->tid);
	put(&o, " ", 1);
	if (x->method) {
		puts_(&o, x->method);
	} else {
		put_num(&o, x->status);
		if (x->comment && *x->comment) {
			put(&o, " ", 1);
			puts_(&o, x->comment);
		}
	}
	put(&o, "\r\n", 2);
	header(&o, "To-Path", x->to_path);
	header(&o, "From-Path", x->from_path);
	header(&o, "Message-ID", x->message_id);
	header(&o, "Success-Report", x->success_report);
	header(&o, "Failure-Report", x->failure_report);
	if (x->has_range) {
		puts_(&o, "Byte-Range: ");
		put_num(&o, x->range_start);
		put(&o, "-", 1);
		put_num(&o, x->range_end);
		put(&o, "/", 1);
		put_num(&o, x->range_total);
		put(&o, "\r\n", 2);
	}
	header(&o, "Status", x->status_hdr);
	if (x->extra)
		puts_(&o, x->extra);
	/* §7.1: Content-Type is the last header; a body only with it */
	if (x->content_type) {
		header(&o, "Content-Type", x->content_type);
		put(&o, "\r\n", 2);
		if (x->body_len)
			put(&o, x->body, x->body_len);
		put(&o, "\r\n", 2);
	}
	put(&o, END_DASHES, NDASH);
	puts_(&o, x->tid);
	put(&o, &flag, 1);
	put(&o, "\r\n", 2);
	return o.n > (size_t)LONG_MAX ? -1 : (long)o.n;
}

/* ---- reassembly ---- */

void sip_msrp_asm_init(sip_msrp_asm *a, size_t max_size, size_t max_chunks)
{
	memset(a, 0, sizeof *a);
	a->max_size = max_size;
	a->max_chunks = max_chunks ? max_chunks : 1;
	a->total = SIP_MSRP_STAR;
}

void sip_msrp_asm_free(sip_msrp_asm *a)
{
	free(a->buf);
	free(a->ranges);
	a->buf = NULL;
	a->ranges = NULL;
	a->cap = a->nranges = a->capranges = 0;
}

static int grow(sip_msrp_asm *a, size_t need)
{
	if (need <= a->cap)
		return 0;
	size_t n = a->cap ? a->cap : 4096;
	while (n < need)
		n *= 2;
	if (n > a->max_size)
		n = a->max_size;
	char *b = realloc(a->buf, n);
	if (!b)
		return -1;
	a->buf = b;
	a->cap = n;
	return 0;
}

/* Insert [s, e] into the sorted list, merging what touches it. */
static int add_range(sip_msrp_asm *a, int64_t s, int64_t e)
{
	size_t i = 0, j;

	while (i < a->nranges && a->ranges[i].end + 1 < s)
		i++;
	j = i;
	while (j < a->nranges && a->ranges[j].start <= e + 1) {
		if (a->ranges[j].start < s)
			s = a->ranges[j].start;
		if (a->ranges[j].end > e)
			e = a->ranges[j].end;
		j++;
	}
	if (j > i) {   /* ranges i..j-1 become one */
		a->ranges[i].start = s;
		a->ranges[i].end = e;
		memmove(a->ranges + i + 1, a->ranges + j, (a->nranges - j) * sizeof *a->ranges);
		a->nranges -= j - i - 1;
		return 0;
	}
	if (a->nranges == a->max_chunks)
		return -413;
	if (a->nranges == a->capranges) {
		size_t n = a->capranges ? a->capranges * 2 : 8;
		void *r = realloc(a->ranges, n * sizeof *a->ranges);
		if (!r)
			return -500;
		a->ranges = r;
		a->capranges = n;
	}
	memmove(a->ranges + i + 1, a->ranges + i, (a->nranges - i) * sizeof *a->ranges);
	a->ranges[i].start = s;
	a->ranges[i].end = e;
	a->nranges++;
	return 0;
}

int sip_msrp_asm_add(sip_msrp_asm *a, int64_t start, int64_t end, int64_t total,
		     const char *body, size_t len, char flag)
{
	int64_t last;

	if (flag == '#')
		return SIP_MSRP_ASM_ABORTED;
	if (start < 1)
		return -400;
	last = start + (int64_t)len - 1;
	/* an interrupted chunk ('+') may carry less than its range announced, never more */
	if (end != SIP_MSRP_STAR && (last > end || (flag == '$' && last != end)))
		return -400;
	if (total != SIP_MSRP_STAR) {
		if (last > total || (a->total != SIP_MSRP_STAR && a->total != total))
			return -400;
		if ((uint64_t)total > a->max_size)
			return -413;
		a->total = total;
	}
	if (last > 0 && (uint64_t)last > a->max_size)
		return -413;
	if (a->last_end && last > a->last_end)
		return -400;   /* past the end the last chunk set */
	if (flag == '$') {
		if (a->total != SIP_MSRP_STAR && last != a->total)
			return -400;
		if (a->nranges && a->ranges[a->nranges - 1].end > last)
			return -400;
		a->last_end = last;
	}
	if (len) {
		if (grow(a, (size_t)last))
			return -500;
		memcpy(a->buf + start - 1, body, len);
		int r = add_range(a, start, last);
		if (r)
			return r;
	}
	if (!a->last_end && flag != '$')
		return SIP_MSRP_ASM_MORE;
	int64_t whole = a->total != SIP_MSRP_STAR ? a->total : a->last_end;
	if (whole == 0 || (a->nranges == 1 && a->ranges[0].start == 1 && a->ranges[0].end == whole))
		return SIP_MSRP_ASM_DONE;
	return SIP_MSRP_ASM_MORE;
}

const char *sip_msrp_asm_body(const sip_msrp_asm *a, size_t *len)
{
	int64_t whole = a->total != SIP_MSRP_STAR ? a->total : a->last_end;

	*len = whole > 0 ? (size_t)whole : 0;
	return a->buf ? a->buf : "";
}

int sip_msrp_random_id(char *out, size_t n)
{
	return sip_random_hex(out, n);
}
