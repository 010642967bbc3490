/* capture.h: what the transport's tap sees (every SIP message in and out): counted by method
 * and status class, written to a pcap file, sent to a HEPv3 collector. Lua-free. */
#ifndef SIP_CAPTURE_H
#define SIP_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "msg.h"
#include "transport.h"

typedef struct sip_capture sip_capture;

typedef struct sip_capture_stats {
	unsigned long requests[2][SIP_METHOD_COUNT];   /* [in 0 / out 1][sip_method] */
	unsigned long responses[2][7];                 /* [in / out][class 1-6]; 0: malformed */
	unsigned long pcap_written, hep_sent, hep_failed;
} sip_capture_stats;

sip_capture *sip_capture_new(void);
/* Closes the pcap file (flushed) and the HEP socket. */
void sip_capture_free(sip_capture *c);
/* Start writing every message to a new pcap file at path (Ethernet link type, IPv4/IPv6 and
 * UDP or TCP headers made up around each message with its real addresses and ports).
 * 0, or -1 with *err. */
int sip_capture_pcap(sip_capture *c, const char *path, const char **err);
/* Start sending every message as HEPv3 over UDP to dst, with capture agent id `id`. */
int sip_capture_hep(sip_capture *c, const struct sockaddr *dst, socklen_t dlen, uint32_t id,
		    const char **err);
/* Write out what the pcap file holds in its buffer. */
void sip_capture_flush(sip_capture *c);
void sip_capture_stats_get(const sip_capture *c, sip_capture_stats *st);

/* The sip_tp_tap_fn to give the transport, with c as its arg. */
void sip_capture_tap(void *arg, int out, sip_tp_kind kind, const struct sockaddr *from,
		     const struct sockaddr *to, const char *buf, size_t len);

#endif
