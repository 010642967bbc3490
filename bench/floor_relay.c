/* bench/floor_relay.c: the least any proxy can spend in ../shared/bench/run.sh. A stateless
 * UDP relay with no SIP in it: REGISTER gets a 200 (Via, From, To, Call-ID, CSeq copied),
 * datagrams from the UAC port go to the UAS port and everything else back to the UAC. It does
 * what the kernel makes every proxy pay for (epoll wakeups, one recv and one send per
 * message) and nothing else; bench/proxy.sh runs it as the "floor" row.
 * usage: floor_relay [PORT UAS_PORT UAC_PORT]   (defaults 45060 45070 45090) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static size_t reply200(const char *req, size_t n, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "SIP/2.0 200 OK\r\n");
	const char *p = memchr(req, '\n', n), *end = req + n;
	for (p = p ? p + 1 : end; p < end && *p != '\r' && *p != '\n';) {
		const char *e = memchr(p, '\n', (size_t)(end - p));
		if (!e)
			break;
		size_t len = (size_t)(e + 1 - p);
		if ((!strncasecmp(p, "Via:", 4) || !strncasecmp(p, "From:", 5) ||
		     !strncasecmp(p, "To:", 3) || !strncasecmp(p, "Call-ID:", 8) ||
		     !strncasecmp(p, "CSeq:", 5)) && o + len < cap) {
			memcpy(out + o, p, len);
			o += len;
		}
		p = e + 1;
	}
	o += (size_t)snprintf(out + o, cap - o, "Content-Length: 0\r\n\r\n");
	return o < cap ? o : cap;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 45060;
	int uas_port = argc > 2 ? atoi(argv[2]) : 45070;
	int uac_port = argc > 3 ? atoi(argv[3]) : 45090;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
		perror("floor_relay: bind");
		return 1;
	}
	struct sockaddr_in uas = a, uac = a;
	uas.sin_port = htons((uint16_t)uas_port);
	uac.sin_port = htons((uint16_t)uac_port);
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN };
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	static char buf[65536], out[65536];
	for (;;) {
		struct epoll_event e[8];
		if (epoll_wait(ep, e, 8, -1) < 0)
			continue;
		for (;;) {
			struct sockaddr_in f;
			socklen_t fl = sizeof f;
			ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&f, &fl);
			if (n < 0)
				break;
			if (n > 8 && memcmp(buf, "REGISTER", 8) == 0) {
				size_t m = reply200(buf, (size_t)n, out, sizeof out);
				sendto(s, out, m, 0, (struct sockaddr *)&f, fl);
			} else if (f.sin_port == uac.sin_port) {
				sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&uas, sizeof uas);
			} else {
				sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&uac, sizeof uac);
			}
		}
	}
}
