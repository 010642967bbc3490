/* fuzz_frame.c: libFuzzer target for TCP stream framing (sip_frame).
 * The input is a byte stream: messages are cut off it one after the other, each cut must
 * lie inside the stream and is handed to the stream-mode parser. The same bytes arriving in
 * two pieces (split where the first byte says) must frame exactly as when they come at once:
 * a prefix never claims bytes it does not have. */
#include "frame.h"
#include "msg.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CUTS 4096

typedef struct cuts {
	size_t off[MAX_CUTS], len[MAX_CUTS];
	size_t n;
	size_t consumed; /* bytes taken off the front of the stream (messages and CRLFs) */
	int last;        /* the last sip_frame result: 0 (waiting) or -1 (bad framing) */
} cuts;

static void parse_cut(const char *p, size_t n)
{
	sip_msg m;
	const char *err;
	if (sip_msg_parse(&m, p, n, 0, 1, NULL, &err)) {
		assert(err && *err);
		return;
	}
	assert(m.len <= n);
	sip_msg_free(&m);
}

/* The transport's loop over its receive buffer buf[0..len), starting where c left off. */
static void run(const char *buf, size_t len, size_t max, cuts *c, int parse)
{
	for (;;) {
		size_t off = c->consumed, skip = 7777, mlen = 7777;
		const char *err = (const char *)1;
		int r = sip_frame(buf + off, len - off, max, &skip, &mlen, &err);
		assert(r >= -1 && r <= 1);
		assert(skip <= len - off);
		for (size_t i = 0; i < skip; i++)
			assert(buf[off + i] == '\r' || buf[off + i] == '\n');
		c->consumed += skip;
		c->last = r;
		if (r < 0) {
			assert(err && *err);
			return;
		}
		assert(err == NULL);
		if (r == 0) {
			/* waiting: a known length is more than what is there, and within max */
			assert(mlen == 0 || (mlen > len - c->consumed && mlen <= max));
			return;
		}
		assert(mlen > 0 && mlen <= max);
		assert(skip + mlen <= len - off);
		assert(c->n < MAX_CUTS);
		c->off[c->n] = c->consumed;
		c->len[c->n] = mlen;
		c->n++;
		if (parse)
			parse_cut(buf + c->consumed, mlen);
		c->consumed += mlen;
	}
}

static void same(const cuts *a, const cuts *b)
{
	assert(a->n == b->n && a->last == b->last && a->consumed == b->consumed);
	for (size_t i = 0; i < a->n; i++)
		assert(a->off[i] == b->off[i] && a->len[i] == b->len[i]);
}

static void check(const char *buf, size_t size, size_t split, size_t max, int parse)
{
	static cuts whole, inc;
	memset(&whole, 0, sizeof whole);
	memset(&inc, 0, sizeof inc);
	run(buf, size, max, &whole, parse);

	run(buf, split, max, &inc, 0);
	/* a prefix never claims more than it has: what it cut is what the whole stream cuts */
	assert(inc.n <= whole.n);
	for (size_t i = 0; i < inc.n; i++)
		assert(inc.off[i] == whole.off[i] && inc.len[i] == whole.len[i]);
	if (inc.last < 0) { /* a bad prefix stays bad: the stream is closed there */
		assert(whole.last < 0 && whole.n == inc.n && whole.consumed == inc.consumed);
		return;
	}
	run(buf, size, max, &inc, 0);
	same(&whole, &inc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	/* the stream is a private copy of exactly size bytes, so ASan sees any over-read */
	char *buf = malloc(size);
	assert(buf);
	memcpy(buf, data, size);
	size_t split = (size_t)((uint64_t)size * data[0] / 255u);
	check(buf, size, split, 65535, 1);
	/* limits that bite: a small max_msg somewhere around the input's own size */
	check(buf, size, split, size / 2 + 1, 0);
	check(buf, size, size - split, 16 + data[0] % 64, 0);
	free(buf);
	return 0;
}
