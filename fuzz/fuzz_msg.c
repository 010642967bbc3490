/* fuzz_msg.c: libFuzzer target for the message layer: parse, print, edit, respond.
 * Every message the parser accepts must survive print -> parse, also after edits. */
#include "msg.h"
#include "build.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Printed messages may outgrow the input (canonical names, added headers, edits):
 * re-parse them without limits so only a real defect fails the assert. */
static const sip_limits unlimited = { SIZE_MAX, 30000u, SIZE_MAX };

static char *print_exact(const sip_msg *m, size_t *n)
{
	*n = sip_msg_print(m, NULL, 0);
	char *out = malloc(*n ? *n : 1);
	assert(out);
	size_t again = sip_msg_print(m, out, *n);
	assert(again == *n);
	return out;
}

/* print -> parse must succeed; printing the result again must give the same bytes. */
static void reparse(const sip_msg *m)
{
	size_t n, n2;
	char *out = print_exact(m, &n);
	sip_msg r;
	const char *err;
	int rc = sip_msg_parse(&r, out, n, 0, 1, &unlimited, &err);
	assert(rc == 0);
	assert(r.len == n);
	assert(r.is_request == m->is_request);
	/* the printer writes exactly one Content-Length, where the first one was */
	unsigned cl = 0;
	for (unsigned i = 0; i < m->nhdrs; i++)
		cl += m->hdrs[i].id == SIP_HDR_CONTENT_LENGTH;
	assert(r.nhdrs == m->nhdrs - cl + 1);
	assert(sip_pl_eq(r.body, m->body));
	/* the shortcuts an edit must keep current */
	assert(r.cseq == m->cseq && sip_pl_eq(r.cseq_method, m->cseq_method));
	assert(sip_pl_eq(r.call_id, m->call_id) && sip_pl_eq(r.branch, m->branch));
	assert(sip_pl_eq(r.from_tag, m->from_tag) && sip_pl_eq(r.to_tag, m->to_tag));
	assert(r.max_forwards == m->max_forwards && r.status == m->status);
	assert(sip_pl_eq(r.uri, m->uri) && r.method_id == m->method_id);
	char *out2 = print_exact(&r, &n2);
	assert(n2 == n && memcmp(out, out2, n) == 0);
	free(out2);
	/* a clone (what the endpoint hands to Lua) prints the same bytes and keeps the fields */
	sip_hdr slots[8];
	sip_msg c;
	if (sip_msg_clone(&c, slots, 8, m, &err) == 0) {
		char *out3 = print_exact(&c, &n2);
		assert(n2 == n && memcmp(out, out3, n) == 0);
		assert(sip_pl_eq(c.branch, m->branch) && sip_pl_eq(c.to_tag, m->to_tag));
		assert(c.cseq == m->cseq && sip_pl_eq(c.call_id, m->call_id));
		free(out3);
		/* and a clone of that clone (its edited slices sit past len, in its own buffer) */
		sip_hdr slots2[8];
		sip_msg c2;
		if (sip_msg_clone(&c2, slots2, 8, &c, &err) == 0) {
			char *out4 = print_exact(&c2, &n2);
			assert(n2 == n && memcmp(out, out4, n) == 0);
			assert(sip_pl_eq(c2.uri, m->uri) && sip_pl_eq(c2.body, m->body));
			free(out4);
			sip_msg_free(&c2);
		}
		sip_msg_free(&c);
	}
	sip_msg_free(&r);
	free(out);
}

static void walk_headers(const sip_msg *m)
{
	static char unfolded[70000];
	for (unsigned i = 0; i < m->nhdrs; i++) {
		const sip_hdr *h = &m->hdrs[i];
		size_t u = sip_unfold(h->value, unfolded, sizeof unfolded);
		assert(u <= h->value.n);
		sip_unfold(h->value, unfolded, h->value.n / 2);
		size_t pos = 0, last = 0;
		sip_pl item;
		unsigned items = 0;
		while (sip_list_next(h->value, &pos, &item)) {
			assert(pos > last || items == 0);
			assert(item.p >= h->value.p && item.p + item.n <= h->value.p + h->value.n);
			last = pos;
			items++;
			assert(items <= h->value.n + 1);
		}
		int f = sip_msg_find(m, (sip_hdr_id)h->id, h->name.p, h->name.n, 0);
		assert(f >= 0 && (unsigned)f <= i);
	}
}

static void edit(sip_msg *m)
{
	static const char via[] = "SIP/2.0/UDP fuzz.invalid;branch=z9hG4bKfuzz";
	sip_pl branch = m->branch;
	int rc = sip_msg_add_header(m, "v", 1, via, sizeof via - 1, 1);
	assert(rc == 0);
	assert(sip_pl_casecmp(m->branch, "z9hG4bKfuzz"));
	rc = sip_msg_remove_top_via(m);
	assert(rc == 0);
	assert(sip_pl_eq(m->branch, branch));
	/* a top Via without a branch leaves the message with none (not the old one) */
	rc = sip_msg_add_header(m, "Via", 3, "SIP/2.0/UDP nobranch.invalid", 28, 1);
	assert(rc == 0 && m->branch.n == 0);
	sip_msg_remove_top_via(m);
	assert(sip_pl_eq(m->branch, branch));
	sip_msg_add_header(m, "X-Fuzz", 6, "one", 3, 0);
	sip_msg_add_header(m, "X-Fuzz", 6, "two", 3, 1);
	sip_msg_set_header(m, "Subject", 7, "fuzzed", 6);
	sip_msg_set_header(m, "Max-Forwards", 12, "69", 2);
	assert(m->max_forwards == 69);
	rc = sip_msg_remove_header(m, "x-fuzz", 6);
	assert(rc >= 2);
	if (m->is_request) {
		rc = sip_msg_set_uri(m, "sip:fuzz@example.com;lr", 23);
		assert(rc == 0);
	}
	sip_msg_set_body(m, "v=0\r\n", 5);
	/* a header's own value, unfolded, added again (where the CSeq number picks) and
	 * written back over it: whatever the edits accept must still print as a valid message */
	if (m->nhdrs) {
		static char v[70000];
		const sip_hdr *h = &m->hdrs[m->cseq % m->nhdrs];
		char name[256];
		if (h->name.n < sizeof name) {
			size_t nlen = h->name.n;
			memcpy(name, h->name.p, nlen);
			size_t n = sip_unfold(h->value, v, sizeof v);
			sip_msg_add_header(m, name, nlen, v, n, (int)(m->cseq & 1));
			reparse(m);
			sip_msg_set_header(m, name, nlen, v, n);
			reparse(m);
		}
		/* and one header that the message can do without, removed */
		h = &m->hdrs[(m->cseq / 2) % m->nhdrs];
		switch (h->id) {
		case SIP_HDR_VIA: case SIP_HDR_FROM: case SIP_HDR_TO: case SIP_HDR_CALL_ID:
		case SIP_HDR_CSEQ:
			break;
		default:
			if (h->name.n < sizeof name) {
				size_t nlen = h->name.n;
				memcpy(name, h->name.p, nlen);
				assert(sip_msg_remove_header(m, name, nlen) >= 1);
			}
		}
	}
}

static void respond(const sip_msg *m)
{
	static const int codes[] = { 100, 180, 200, 302, 401, 486, 503, 699 };
	int code = codes[m->cseq % (sizeof codes / sizeof codes[0])];
	size_t n = sip_build_response(m, code, NULL, 0, NULL, 0, NULL, 0, NULL, 0);
	char *out = malloc(n);
	assert(out);
	size_t again = sip_build_response(m, code, NULL, 0, "fuzztag", 7, NULL, 0, out, n);
	assert(again <= n);
	sip_msg r;
	const char *err;
	int rc = sip_msg_parse(&r, out, again, 0, 1, &unlimited, &err);
	assert(rc == 0);
	assert(!r.is_request && r.status == code);
	assert(r.cseq == m->cseq && sip_pl_eq(r.call_id, m->call_id));
	sip_msg_free(&r);
	free(out);
}

static void one(const uint8_t *data, size_t size, int stream)
{
	sip_msg m;
	const char *err;
	if (sip_msg_parse(&m, (const char *)data, size, 0, stream, NULL, &err)) {
		assert(err && *err);
		return;
	}
	assert(m.len <= size);
	walk_headers(&m);
	reparse(&m);
	if (m.is_request)
		respond(&m);
	edit(&m);
	walk_headers(&m);
	reparse(&m);
	sip_msg_free(&m);
}

/* Tight limits must fail cleanly wherever they cut. */
static void limited(const uint8_t *data, size_t size)
{
	sip_limits lim = { size / 2 + 1, (unsigned)(size % 16), size % 97 };
	sip_msg m;
	const char *err;
	if (sip_msg_parse(&m, (const char *)data, size, 1, size & 1, &lim, &err) == 0) {
		assert(m.nhdrs <= lim.max_hdrs);
		reparse(&m);
		sip_msg_free(&m);
	}
}

/* On a stream, what follows a message is the next one (RFC 3261 §18.3). */
static void stream(const uint8_t *data, size_t size)
{
	for (int i = 0; i < 4 && size; i++) {
		sip_msg m;
		const char *err;
		if (sip_msg_parse(&m, (const char *)data, size, 0, 1, NULL, &err))
			return;
		assert(m.len > 0 && m.len <= size);
		data += m.len;
		size -= m.len;
		sip_msg_free(&m);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size, 0);
	one(data, size, 1);
	limited(data, size);
	stream(data, size);
	return 0;
}
