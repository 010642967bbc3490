/* ws.h: the WebSocket protocol (RFC 6455) as SIP's transport (RFC 7118): the HTTP/1.1
 * Upgrade handshake and the frame format, as pure functions over buffers (no sockets). */
#ifndef SIP_WS_H
#define SIP_WS_H

#include <stddef.h>
#include <stdint.h>

/* RFC 6455 §5.2 opcodes */
enum { SIP_WS_CONT = 0x0, SIP_WS_TEXT = 0x1, SIP_WS_BINARY = 0x2, SIP_WS_CLOSE = 0x8,
       SIP_WS_PING = 0x9, SIP_WS_PONG = 0xA };

/* RFC 6455 §7.4.1 close codes */
enum { SIP_WS_NORMAL = 1000, SIP_WS_GOING_AWAY = 1001, SIP_WS_PROTOCOL_ERROR = 1002,
       SIP_WS_BAD_DATA = 1007, SIP_WS_TOO_BIG = 1009 };

/* The largest header: 2 bytes, 8 of extended length, 4 of mask */
#define SIP_WS_MAX_HEADER 14
/* Control frames carry at most 125 bytes (§5.5) */
#define SIP_WS_MAX_CONTROL 125

typedef struct sip_ws_frame {
	int fin;
	int opcode;
	int masked;
	uint8_t mask[4];
	uint64_t len;        /* payload length */
	size_t header;       /* header bytes before the payload */
} sip_ws_frame;

/* Looks at buf[0..len): 1 with *f filled when the whole header is there (the payload may
 * not be), 0 when more bytes are needed, -1 with *code (a close code) and *err for a frame
 * that breaks §5.2: reserved bits set, an unknown opcode, a fragmented or long control
 * frame, a non-minimal length, a payload over max. */
int sip_ws_frame_parse(const uint8_t *buf, size_t len, uint64_t max, sip_ws_frame *f,
		       int *code, const char **err);

/* XORs p[0..n) with the mask, starting at payload offset off (§5.3). */
void sip_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off);

/* Writes a frame header for a final frame of opcode and payload length len into out
 * (SIP_WS_MAX_HEADER bytes); mask non-NULL (a client) sets the mask bit and key. Returns
 * its length. */
size_t sip_ws_frame_header(uint8_t *out, int opcode, uint64_t len, const uint8_t *mask);

/* The HTTP request of the opening handshake (§4.2.1), parsed from its header section. */
typedef struct sip_ws_request {
	int get;                  /* method GET */
	char path[256];           /* request target, "/..." */
	int upgrade;              /* Upgrade: websocket and Connection: upgrade */
	int has_key;              /* a Sec-WebSocket-Key of 16 bytes in base64 */
	char key[64];
	int version;              /* Sec-WebSocket-Version, 0 when none */
	int sip;                  /* Sec-WebSocket-Protocol lists "sip" */
} sip_ws_request;

/* buf[0..len) holds at least the header section: where it ends (the byte after the empty
 * line) in *hlen. 1 parsed, 0 more bytes needed, -1 not HTTP (*err). */
int sip_ws_request_parse(const char *buf, size_t len, sip_ws_request *r, size_t *hlen,
			 const char **err);

/* Sec-WebSocket-Accept for a key (§4.2.2 step 5.4): 28 base64 characters and a NUL. */
void sip_ws_accept_key(const char *key, char out[29]);

#endif
