/* dest.c: sending to a sip_dest, and socket addresses as text (for Via, Record-Route, logs)
 * and from text (IP literals only: a name would block the loop in the resolver). */
#include "dest.h"
#include "fmt.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

int sip_dest_send(sip_transport *tp, const sip_dest *d, const char *buf, size_t len,
		  const char **err)
{
	if (d->kind == SIP_TP_UDP && d->listener >= 0)
		return sip_tp_send_from(tp, d->listener, (const struct sockaddr *)&d->addr, d->len,
					buf, len, err);
	return sip_tp_send_named(tp, d->kind, (const struct sockaddr *)&d->addr, d->len,
				 d->conn_id, d->name, buf, len, err);
}

void sip_addr_format(sip_tp_kind kind, const struct sockaddr *sa, char *buf, size_t cap)
{
	/* "udp:" + "[" + 45 + "]:" + 5 digits + NUL < 64: callers pass >= 64 */
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0, v6 = sa->sa_family == AF_INET6;
	if (cap < 64) {
		if (cap)
			buf[0] = 0;
		return;
	}
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
	} else if (v6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
	}
	size_t o = 0, hl = strlen(host);
	const char *kn = kind == SIP_TP_TLS ? "tls:" : kind == SIP_TP_TCP ? "tcp:" :
			 kind == SIP_TP_WS ? "ws:" : kind == SIP_TP_WSS ? "wss:" : "udp:";
	o = strlen(kn);
	memcpy(buf, kn, o);
	if (v6)
		buf[o++] = '[';
	memcpy(buf + o, host, hl);
	o += hl;
	if (v6)
		buf[o++] = ']';
	buf[o++] = ':';
	char d[8];
	size_t i = sizeof d;
	do {
		d[--i] = (char)('0' + port % 10);
		port /= 10;
	} while (port);
	memcpy(buf + o, d + i, sizeof d - i);
	o += sizeof d - i;
	buf[o] = 0;
}

void sip_addr_ip(const struct sockaddr *sa, char *host, size_t cap, int *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, (socklen_t)cap);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const void *)sa;
		if (cap >= INET_ADDRSTRLEN)
			sip_fmt_ipv4(host, (const unsigned char *)&s4->sin_addr);
		else
			inet_ntop(AF_INET, &s4->sin_addr, host, (socklen_t)cap);
		*port = ntohs(s4->sin_port);
	}
}

int sip_ip_literal(sip_pl host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	char h[INET6_ADDRSTRLEN + 2];
	if (host.n == 0 || host.n >= sizeof h)
		return -1;
	memcpy(h, host.p, host.n);
	h[host.n] = 0;
	return sip_tp_parse_addr(h, port, ss, len);
}
