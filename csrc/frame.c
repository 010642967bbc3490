/* frame.c: TCP stream framing (RFC 3261 §18.3): find the empty line, read Content-Length.
 * Accepts bare-LF line ends, compact form `l`, WSP before the colon and folded values. */
#include <string.h>
#include <strings.h>
#include "frame.h"

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Is [p, p+n) a Content-Length header line (name, optional WSP, colon)? Sets *val after
 * the colon. */
static int is_clen(const char *p, size_t n, size_t *val)
{
	size_t i = 0, name;

	while (i < n && p[i] != ':' && !is_wsp(p[i]))
		i++;
	name = i;
	while (i < n && is_wsp(p[i]))
		i++;
	if (i >= n || p[i] != ':')
		return 0;
	if (!((name == 14 && strncasecmp(p, "content-length", 14) == 0) ||
	      (name == 1 && (p[0] == 'l' || p[0] == 'L'))))
		return 0;
	*val = i + 1;
	return 1;
}

/* Parses a Content-Length value: digits surrounded by linear whitespace (folding included).
 * Values beyond max_msg are clamped to max_msg + 1 so they are reported as too large. */
static int parse_clen(const char *p, size_t n, size_t max_msg, size_t *out)
{
	size_t i = 0, v = 0, digits = 0;

	while (i < n && (is_wsp(p[i]) || p[i] == '\r' || p[i] == '\n'))
		i++;
	while (i < n && p[i] >= '0' && p[i] <= '9') {
		if (v <= max_msg)
			v = v * 10 + (size_t)(p[i] - '0');
		digits++;
		i++;
	}
	while (i < n && (is_wsp(p[i]) || p[i] == '\r' || p[i] == '\n'))
		i++;
	if (digits == 0 || i != n)
		return -1;
	*out = v > max_msg ? max_msg + 1 : v;
	return 0;
}

int sip_frame(const char *buf, size_t len, size_t max_msg, size_t *skip, size_t *msglen,
	      const char **err)
{
	size_t s = 0, pos, line, hdr = 0, hdrlen = 0, clen = 0, end = 0;
	int have_hdr = 0, have_clen = 0, first = 1;

	while (s < len && (buf[s] == '\r' || buf[s] == '\n'))
		s++;
	*skip = s;
	*msglen = 0;
	*err = NULL;

	/* Walk whole lines; a header's extent runs until the next line that does not start with
	 * WSP, so folded values are checked as one. */
	for (pos = s; ; pos = line) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t linelen;
		int empty;

		if (!nl) {
			if (len - s > max_msg) {
				*err = "header section too large";
				return -1;
			}
			return 0;
		}
		line = (size_t)(nl - buf) + 1;
		if (line - s > max_msg) {
			*err = "header section too large";
			return -1;
		}
		linelen = line - pos;
		empty = linelen == 1 || (linelen == 2 && buf[pos] == '\r');
		if (!first && !empty && is_wsp(buf[pos]))
			continue; /* continuation of the current header */
		if (have_hdr) {
			size_t v;

			if (is_clen(buf + hdr, hdrlen, &v)) {
				size_t c;

				if (parse_clen(buf + hdr + v, pos - hdr - v, max_msg, &c) < 0) {
					*err = "bad Content-Length";
					return -1;
				}
				if (have_clen && c != clen) {
					*err = "bad Content-Length";
					return -1;
				}
				clen = c;
				have_clen = 1;
			}
			have_hdr = 0;
		}
		if (empty && !first) {
			end = line;
			break;
		}
		if (!first) {
			hdr = pos;
			hdrlen = linelen;
			have_hdr = 1;
		}
		first = 0;
	}
	if (!have_clen) {
		*err = "missing Content-Length";
		return -1;
	}
	if (clen > max_msg || end - s + clen > max_msg) {
		*err = "message too large";
		return -1;
	}
	*msglen = end - s + clen;
	return len - s >= *msglen ? 1 : 0;
}
