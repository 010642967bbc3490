/* fuzz_msrp.c: libFuzzer target for MSRP frames (csrc/msrp.c).
 * The input is a stream: frames are cut off it one after the other. Each must lie inside
 * the bytes it was given; fed in two pieces (split where the first byte says, with the
 * resume point carried over) the stream must frame exactly as at once; a frame printed back
 * must parse to the same fields; every chunk's Byte-Range goes to a small assembler. */
#include "msrp.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAME 65536

static char *dup_pl(sip_pl v)
{
	if (!v.p || memchr(v.p, 0, v.n))
		return NULL;
	char *s = malloc(v.n + 1);
	memcpy(s, v.p, v.n);
	s[v.n] = 0;
	return s;
}

static void round_trip(const sip_msrp_msg *m)
{
	if (m->body.n && !m->content_type.p)
		return;   /* a body without Content-Type is printed without its body */
	char *tid = dup_pl(m->tid), *method = dup_pl(m->method), *to = dup_pl(m->to_path);
	char *ct = dup_pl(m->content_type), *mid = dup_pl(m->message_id);
	if (!tid || (m->is_request && !method) || (m->content_type.p && !ct)) {
		free(tid), free(method), free(to), free(ct), free(mid);
		return;
	}
	sip_msrp_out o = { 0 };
	o.tid = tid;
	o.method = m->is_request ? method : NULL;
	o.status = m->status;
	o.to_path = to;
	o.message_id = mid;
	o.content_type = ct;
	o.has_range = m->has_range;
	o.range_start = m->range_start;
	o.range_end = m->range_end;
	o.range_total = m->range_total;
	o.body = m->body.p;
	o.body_len = m->body.n;
	o.flag = m->flag;
	long need = sip_msrp_print(NULL, 0, &o);
	assert(need > 0);
	char *buf = malloc((size_t)need);
	assert(sip_msrp_print(buf, (size_t)need, &o) == need);
	sip_msrp_msg *r = malloc(sizeof *r);
	const char *why = NULL;
	long n = sip_msrp_parse(buf, (size_t)need, (size_t)need + 1, NULL, r, &why);
	assert(n == need);
	assert(r->is_request == m->is_request && r->flag == m->flag);
	assert(sip_pl_eq(r->tid, m->tid) && sip_pl_eq(r->body, m->body));
	if (m->is_request)
		assert(sip_pl_eq(r->method, m->method));
	else
		assert(r->status == m->status);
	if (to)
		assert(sip_pl_eq(r->to_path, m->to_path));
	assert(r->has_range == m->has_range);
	if (m->has_range)
		assert(r->range_start == m->range_start && r->range_end == m->range_end &&
		       r->range_total == m->range_total);
	free(r);
	free(buf);
	free(tid), free(method), free(to), free(ct), free(mid);
}

/* Frames of buf[0..len) from off on; returns bytes consumed, *bad when it stopped on bad
 * input. With asm, each request's range goes into it. */
static size_t run(const char *buf, size_t len, size_t *scan, int *bad, sip_msrp_asm *a,
		  int check)
{
	size_t off = 0;
	sip_msrp_msg *m = malloc(sizeof *m);
	*bad = 0;
	while (off < len) {
		const char *why = NULL;
		long n = sip_msrp_parse(buf + off, len - off, MAX_FRAME, scan, m, &why);
		if (n < 0) {
			assert(why && *why);
			*bad = 1;
			break;
		}
		if (n == 0)
			break;
		assert((size_t)n <= len - off);
		assert(m->body.p >= buf + off && m->body.p + m->body.n <= buf + off + (size_t)n);
		*scan = 0;
		if (check) {
			round_trip(m);
			if (a && m->is_request && m->has_range) {
				int r = sip_msrp_asm_add(a, m->range_start, m->range_end,
							 m->range_total, m->body.p, m->body.n, m->flag);
				assert(r == -400 || r == -413 || r == -500 || (r >= 0 && r <= 2));
				if (r == SIP_MSRP_ASM_DONE) {
					size_t bl;
					const char *b = sip_msrp_asm_body(a, &bl);
					assert(bl <= a->max_size && (bl == 0 || b));
				}
				if (r != SIP_MSRP_ASM_MORE) {
					sip_msrp_asm_free(a);
					sip_msrp_asm_init(a, 4096, 16);
				}
			}
		}
		off += (size_t)n;
	}
	free(m);
	return off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t split = data[0];
	const char *buf = (const char *)data + 1;
	size_t len = size - 1;
	char *copy = malloc(len ? len : 1);
	memcpy(copy, buf, len);
	sip_msrp_asm a;
	sip_msrp_asm_init(&a, 4096, 16);

	size_t scan = 0;
	int bad1, bad2;
	size_t whole = run(copy, len, &scan, &bad1, &a, 1);
	sip_msrp_asm_free(&a);

	/* the same stream in two pieces: the first `split` bytes, then all of it */
	if (split > len)
		split = len;
	size_t scan2 = 0;
	size_t first = run(copy, split, &scan2, &bad2, NULL, 0);
	if (!bad2) {
		size_t rest = run(copy + first, len - first, &scan2, &bad2, NULL, 0);
		assert(bad2 == bad1 && first + rest == whole);
	}
	free(copy);
	return 0;
}
