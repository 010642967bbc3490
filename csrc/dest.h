/* dest.h: where bytes go (a transport, an address, a connection to prefer), and the address
 * formats every layer above the transport shares. */
#ifndef SIP_DEST_H
#define SIP_DEST_H

#include <stddef.h>
#include <sys/socket.h>

#include "pl.h"
#include "transport.h"

typedef struct sip_dest {
	sip_tp_kind kind;
	struct sockaddr_storage addr;
	socklen_t len;
	uint32_t conn_id;
	int listener;      /* UDP: send from this listener (-1: any of the family) */
} sip_dest;

/* Send buf to d over tp: UDP from d's listener when it names one (§18.2.2: a response leaves
 * from the socket its request came in on), else as sip_tp_send. 0, or -1 with *err. */
int sip_dest_send(sip_transport *tp, const sip_dest *d, const char *buf, size_t len,
		  const char **err);

/* Format a socket address as "udp:1.2.3.4:5060" / "tcp:[::1]:5060" (buf >= 64). */
void sip_addr_format(sip_tp_kind kind, const struct sockaddr *sa, char *buf, size_t cap);
/* The IP (no brackets) and port of a socket address. */
void sip_addr_ip(const struct sockaddr *sa, char *host, size_t cap, int *port);
/* sip_tp_parse_addr for a slice: an IP literal (IPv6 with or without []) and a port. */
int sip_ip_literal(sip_pl host, int port, struct sockaddr_storage *ss, socklen_t *len);

#endif
