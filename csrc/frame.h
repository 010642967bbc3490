/* frame.h: cutting SIP messages out of a TCP byte stream (RFC 3261 §18.3): the header
 * section ends at an empty line and Content-Length (mandatory on streams) gives the body. */
#ifndef SIP_FRAME_H
#define SIP_FRAME_H

#include <stddef.h>

/* Looks at buf[0..len). Leading CR/LF bytes (keep-alives) are counted in *skip.
 * Returns
 *    1  a whole message of *msglen bytes starts at buf + *skip;
 *    0  more bytes are needed; *msglen is the full message length once the header section
 *       is complete (so the caller can wait for skip + msglen bytes), else 0;
 *   -1  bad framing, *err one of "message too large", "missing Content-Length",
 *       "bad Content-Length", "header section too large". The stream cannot be resynced.
 * Never reads past len; cost is linear in the header section, so a caller may rescan. */
int sip_frame(const char *buf, size_t len, size_t max_msg, size_t *skip, size_t *msglen,
	      const char **err);

#endif
