/* fuzz_ws.c: libFuzzer target for the WebSocket framing and handshake parser (ws.c).
 * The input is read as a stream of frames, as the transport does, and as an upgrade
 * request; every frame header we write must parse back to what was written. */
#include "ws.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void frames(const uint8_t *buf, size_t len, uint64_t max)
{
	size_t off = 0;
	while (off < len) {
		sip_ws_frame f;
		int code = 0;
		const char *err = NULL;
		int r = sip_ws_frame_parse(buf + off, len - off, max, &f, &code, &err);
		assert(r >= -1 && r <= 1);
		if (r < 0) {
			assert(err && *err);
			assert(code == SIP_WS_PROTOCOL_ERROR || code == SIP_WS_TOO_BIG);
			return;
		}
		if (r == 0)
			return;
		assert(f.header >= 2 && f.header <= SIP_WS_MAX_HEADER && f.header <= len - off);
		assert(f.len <= max);
		assert(f.opcode <= SIP_WS_BINARY || (f.opcode >= SIP_WS_CLOSE && f.opcode <= SIP_WS_PONG));
		if (f.opcode >= SIP_WS_CLOSE)
			assert(f.fin && f.len <= SIP_WS_MAX_CONTROL);
		if (f.len > len - off - f.header)
			return;
		/* unmasking twice gives the bytes back */
		size_t n = (size_t)f.len;
		uint8_t *p = malloc(n ? n : 1);
		assert(p);
		memcpy(p, buf + off + f.header, n);
		sip_ws_unmask(p, n, f.mask, 0);
		sip_ws_unmask(p, n, f.mask, 0);
		assert(memcmp(p, buf + off + f.header, n) == 0);
		free(p);
		off += f.header + n;
	}
}

static void roundtrip(const uint8_t *data, size_t size)
{
	uint8_t h[SIP_WS_MAX_HEADER], mask[4] = { 1, 2, 3, 4 };
	uint64_t len = 0;
	for (size_t i = 0; i < size && i < 8; i++)
		len = len << 8 | data[i];
	len &= 0x7fffffffffffffffULL;
	int opcode = size ? data[0] % 3 : 1;
	size_t hl = sip_ws_frame_header(h, opcode, len, size > 1 && (data[1] & 1) ? mask : NULL);
	sip_ws_frame f;
	int code;
	const char *err;
	int r = sip_ws_frame_parse(h, hl, UINT64_MAX, &f, &code, &err);
	assert(r == 1 && f.header == hl && f.len == len && f.opcode == opcode && f.fin);
	/* one byte short of the header: more is needed, never a verdict on missing bytes */
	assert(sip_ws_frame_parse(h, hl - 1, UINT64_MAX, &f, &code, &err) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	assert(buf);
	memcpy(buf, data, size);
	frames(buf, size, 65535);
	frames(buf, size, size / 2);
	roundtrip(buf, size);

	sip_ws_request r;
	size_t hlen = 0;
	const char *err = NULL;
	int p = sip_ws_request_parse((const char *)buf, size, &r, &hlen, &err);
	assert(p >= -1 && p <= 1);
	if (p == 1) {
		assert(hlen <= size && r.path[0]);
		if (r.has_key) {
			char acc[29];
			assert(strlen(r.key) == 24);
			sip_ws_accept_key(r.key, acc);
			assert(strlen(acc) == 28);
		}
	} else if (p < 0)
		assert(err && *err);
	free(buf);
	return 0;
}
