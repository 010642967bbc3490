/* dest.h: where bytes go (a transport, an address, a connection to prefer), and the address
 * formats every layer above the transport shares. */
#ifndef SIP_DEST_H
#define SIP_DEST_H

#include <stddef.h>
#include <sys/socket.h>

#include "pl.h"
#include "transport.h"
#include "uri.h"

/* Where bytes go: a transport, an address, and (TCP/TLS) a connection to prefer. */
typedef struct sip_dest {
	sip_tp_kind kind;
	struct sockaddr_storage addr;
	socklen_t len;
	uint32_t conn_id;
	int listener;      /* UDP: send from this listener (-1: any of the family) */
	/* TLS: the host the server's certificate must name (RFC 5922), NUL-terminated;
	 * NULL: the address. Borrowed: sip_ep_resolve's holds until the next resolve, and a
	 * transaction keeps a copy of its own. */
	const char *name;
} sip_dest;

/* RFC 3261 §19.1.2: the port a sips: URI or a TLS Via without one stands for */
#define SIP_TLS_PORT 5061

/* The port of a Via's sent-by: its own, else 5061 for TLS (§19.1.2), 80 and 443 for WS and
 * WSS (RFC 7118), else 5060 */
static inline int sip_via_port(const sip_via *v)
{
	return v->port ? v->port : sip_pl_casecmp(v->transport, "TLS") ? SIP_TLS_PORT :
	       sip_pl_casecmp(v->transport, "WS") ? 80 : sip_pl_casecmp(v->transport, "WSS") ? 443 :
	       5060;
}

/* Send buf to d over tp: UDP from d's listener when it names one (§18.2.2: a response leaves
 * from the socket its request came in on), else as sip_tp_send_named (TLS: checked
 * against d->name). 0, or -1 with *err. */
int sip_dest_send(sip_transport *tp, const sip_dest *d, const char *buf, size_t len,
		  const char **err);

/* Format a socket address as "udp:1.2.3.4:5060" / "tcp:[::1]:5060" / "tls:..." / "ws:..."
 * (buf >= 64). */
void sip_addr_format(sip_tp_kind kind, const struct sockaddr *sa, char *buf, size_t cap);
/* The IP (no brackets) and port of a socket address. */
void sip_addr_ip(const struct sockaddr *sa, char *host, size_t cap, int *port);
/* sip_tp_parse_addr for a slice: an IP literal (IPv6 with or without []) and a port. */
int sip_ip_literal(sip_pl host, int port, struct sockaddr_storage *ss, socklen_t *len);

#endif
