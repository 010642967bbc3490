/* ws.c: the WebSocket frame format and opening handshake (RFC 6455 §4, §5) for SIP over
 * WebSocket (RFC 7118). Pure functions: the transport owns the sockets and buffers. */
#include "ws.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>

/* The header section of an upgrade request: larger is not a browser's */
#define SIP_WS_MAX_REQUEST 8192

int sip_ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max, sip_ws_frame *f,
		       int *code, const char **err)
{
	if (len < 2)
		return 0;
	f->fin = buf[0] >> 7;
	f->opcode = buf[0] & 0x0f;
	f->masked = buf[1] >> 7;
	*code = SIP_WS_PROTOCOL_ERROR;
	if (buf[0] & 0x70) {
		*err = "reserved bits set";
		return -1;
	}
	int control = f->opcode >= 0x8;
	if (f->opcode > SIP_WS_BINARY && !(control && f->opcode <= SIP_WS_PONG)) {
		*err = "unknown opcode";
		return -1;
	}
	uint64_t n = buf[1] & 0x7f;
	size_t h = 2;
	if (control && (!f->fin || n > SIP_WS_MAX_CONTROL)) {
		*err = "bad control frame";
		return -1;
	}
	if (n == 126) {
		if (len < 4)
			return 0;
		n = (uint64_t)buf[2] << 8 | buf[3];
		h = 4;
		if (n < 126) {
			*err = "length not minimal";
			return -1;
		}
	} else if (n == 127) {
		if (len < 10)
			return 0;
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | buf[2 + i];
		h = 10;
		if (n >> 63 || n <= 0xffff) {
			*err = "length not minimal";
			return -1;
		}
	}
	if (n > max) {
		*code = SIP_WS_TOO_BIG;
		*err = "frame too large";
		return -1;
	}
	if (f->masked) {
		if (len < h + 4)
			return 0;
		memcpy(f->mask, buf + h, 4);
		h += 4;
	}
	f->len = n;
	f->header = h;
	return 1;
}

void sip_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		p[i] ^= mask[(off + i) & 3];
}

size_t sip_ws_frame_header(uint8_t *out, int opcode, uint64_t len, const uint8_t *mask)
{
	size_t h = 2;
	out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
	if (len < 126)
		out[1] = (uint8_t)len;
	else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] = 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		h = 10;
	}
	if (mask) {
		out[1] |= 0x80;
		memcpy(out + h, mask, 4);
		h += 4;
	}
	return h;
}

/* Does the comma-separated list v[0..n) hold token tok (case-insensitive)? */
static int list_has(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return 1;
	}
	return 0;
}

static int name_is(const char *p, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

int sip_ws_request_parse(const char *buf, size_t len, sip_ws_request *r, size_t *hlen,
			 const char **err)
{
	const char *end = NULL;
	memset(r, 0, sizeof *r);
	for (size_t i = 0; i + 3 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
			end = buf + i + 4;
			break;
		}
	if (!end) {
		if (len > SIP_WS_MAX_REQUEST) {
			*err = "request header section too large";
			return -1;
		}
		return 0;
	}
	*hlen = (size_t)(end - buf);
	/* request line: METHOD SP target SP HTTP/1.x */
	const char *p = buf, *eol = memchr(p, '\r', (size_t)(end - p));
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || eol - sp2 - 1 != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		*err = "not an HTTP/1.x request";
		return -1;
	}
	r->get = sp1 - p == 3 && memcmp(p, "GET", 3) == 0;
	size_t tl = (size_t)(sp2 - sp1 - 1);
	if (tl == 0 || tl >= sizeof r->path || sp1[1] != '/') {
		*err = "bad request target";
		return -1;
	}
	for (size_t i = 0; i < tl; i++)
		if ((unsigned char)sp1[1 + i] <= ' ' || sp1[1 + i] == 0x7f) {
			*err = "bad request target";
			return -1;
		}
	memcpy(r->path, sp1 + 1, tl);
	r->path[tl] = 0;
	int upgrade = 0, connection = 0;
	for (p = eol + 2; p < end - 2; p = eol + 2) {
		eol = memchr(p, '\r', (size_t)(end - p));
		const char *colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon) {
			*err = "bad header line";
			return -1;
		}
		const char *v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		size_t nl = (size_t)(colon - p), vl = (size_t)(eol - v);
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		if (name_is(p, nl, "Upgrade"))
			upgrade = list_has(v, vl, "websocket");
		else if (name_is(p, nl, "Connection"))
			connection = list_has(v, vl, "upgrade");
		else if (name_is(p, nl, "Sec-WebSocket-Key")) {
			/* 16 bytes in base64: 22 characters and "==" */
			r->has_key = vl == 24 && v[22] == '=' && v[23] == '=';
			for (size_t i = 0; r->has_key && i < 22; i++)
				r->has_key = isalnum((unsigned char)v[i]) || v[i] == '+' || v[i] == '/';
			if (r->has_key) {
				memcpy(r->key, v, 24);
				r->key[24] = 0;
			}
		} else if (name_is(p, nl, "Sec-WebSocket-Version")) {
			r->version = -1;
			if (vl > 0 && vl < 4) {
				r->version = 0;
				for (size_t i = 0; i < vl && r->version >= 0; i++)
					r->version = isdigit((unsigned char)v[i]) ?
						     r->version * 10 + (v[i] - '0') : -1;
			}
		} else if (name_is(p, nl, "Sec-WebSocket-Protocol"))
			r->sip |= list_has(v, vl, "sip");
	}
	r->upgrade = upgrade && connection;
	return 1;
}

void sip_ws_accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	char in[64 + sizeof guid];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t kl = strnlen(key, 64);
	memcpy(in, key, kl);
	memcpy(in + kl, guid, sizeof guid - 1);
	EVP_Digest(in, kl + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
	out[28] = 0;
}
