/* capture.c: every SIP message the transport taps, counted, and written as a pcap file
 * (link type Ethernet, with made-up IPv4/IPv6 + UDP/TCP headers) or sent as HEPv3 (Homer). */
#include "capture.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* pcap file format (libpcap savefile): microsecond timestamps, link type 1 = Ethernet */
#define PCAP_MAGIC 0xa1b2c3d4u
#define PCAP_SNAPLEN 262144u
#define PCAP_LINKTYPE_ETHERNET 1u
/* Flows whose TCP sequence numbers we keep, so Wireshark sees each stream in order: more
 * flows than this share slots (a collision restarts that flow's numbering, nothing worse). */
#define FLOW_SLOTS 1024
/* The largest record: Ethernet + IPv6 + TCP headers before a message of up to 64 KB */
#define HDR_MAX (14 + 40 + 20)
/* HEPv3 chunk types (HEP3 spec, sipcapture.org) */
enum {
	HEP_FAMILY = 1, HEP_PROTO = 2, HEP_SRC4 = 3, HEP_DST4 = 4, HEP_SRC6 = 5, HEP_DST6 = 6,
	HEP_SPORT = 7, HEP_DPORT = 8, HEP_SEC = 9, HEP_USEC = 10, HEP_TYPE = 11, HEP_AGENT = 12,
	HEP_PAYLOAD = 15,
};
#define HEP_TYPE_SIP 1

/* Peers whose route back we remember: a listener bound to 0.0.0.0 or :: shows no address,
 * so the one the kernel would send from to that peer stands in for it. */
#define ROUTE_SLOTS 64

typedef struct route {
	struct sockaddr_storage peer, local;
	int used;
} route;

typedef struct flow {
	struct sockaddr_storage from, to;
	uint32_t seq;
	int used;
} flow;

struct sip_capture {
	FILE *pcap;
	int hep_fd;
	struct sockaddr_storage hep_dst;
	socklen_t hep_len;
	uint32_t hep_id;
	flow *flows;
	route routes[ROUTE_SLOTS];
	uint16_t ip_id;
	sip_capture_stats st;
};

sip_capture *sip_capture_new(void)
{
	sip_capture *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->hep_fd = -1;
	return c;
}

void sip_capture_free(sip_capture *c)
{
	if (!c)
		return;
	if (c->pcap)
		fclose(c->pcap);
	if (c->hep_fd >= 0)
		close(c->hep_fd);
	free(c->flows);
	free(c);
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

int sip_capture_pcap(sip_capture *c, const char *path, const char **err)
{
	FILE *f = fopen(path, "wb");
	uint32_t hdr[6] = { PCAP_MAGIC, 2u | (4u << 16), 0, 0, PCAP_SNAPLEN, PCAP_LINKTYPE_ETHERNET };
	if (!f) {
		*err = strerror(errno);
		return -1;
	}
	if (!c->flows)
		c->flows = calloc(FLOW_SLOTS, sizeof(flow));
	/* the savefile header is in host byte order: the magic tells readers which */
	if (!c->flows || fwrite(hdr, sizeof hdr, 1, f) != 1) {
		*err = c->flows ? strerror(errno) : "out of memory";
		fclose(f);
		return -1;
	}
	if (c->pcap)
		fclose(c->pcap);
	c->pcap = f;
	return 0;
}

int sip_capture_hep(sip_capture *c, const struct sockaddr *dst, socklen_t dlen, uint32_t id,
		    const char **err)
{
	int fd = socket(dst->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = strerror(errno);
		return -1;
	}
	if (c->hep_fd >= 0)
		close(c->hep_fd);
	c->hep_fd = fd;
	memcpy(&c->hep_dst, dst, dlen);
	c->hep_len = dlen;
	c->hep_id = id;
	return 0;
}

void sip_capture_flush(sip_capture *c)
{
	if (c->pcap)
		fflush(c->pcap);
}

void sip_capture_stats_get(const sip_capture *c, sip_capture_stats *st)
{
	*st = c->st;
}

static int port_of(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

static size_t addr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* The next sequence number of the TCP flow from -> to, advanced by len. */
static uint32_t tcp_seq(sip_capture *c, const struct sockaddr *from, const struct sockaddr *to,
			size_t len)
{
	size_t fl = addr_len(from), tl = addr_len(to);
	uint32_t h = 2166136261u;
	const unsigned char *p = (const unsigned char *)from;
	for (size_t i = 0; i < fl; i++)
		h = (h ^ p[i]) * 16777619u;
	p = (const unsigned char *)to;
	for (size_t i = 0; i < tl; i++)
		h = (h ^ p[i]) * 16777619u;
	flow *f = &c->flows[h % FLOW_SLOTS];
	if (!f->used || memcmp(&f->from, from, fl) || memcmp(&f->to, to, tl)) {
		memset(f, 0, sizeof *f);
		memcpy(&f->from, from, fl);
		memcpy(&f->to, to, tl);
		f->used = 1;
		f->seq = 1;
	}
	uint32_t seq = f->seq;
	f->seq += (uint32_t)len;
	return seq;
}

static int is_any(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static uint32_t addr_hash(const struct sockaddr *sa)
{
	const unsigned char *p = (const unsigned char *)sa;
	uint32_t h = 2166136261u;
	for (size_t i = 0, n = addr_len(sa); i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* local, with the address the kernel routes to peer from when local is a wildcard (a UDP
 * socket connected to peer says which, without sending), its port kept; out gets it. */
static const struct sockaddr *real_local(sip_capture *c, const struct sockaddr *local,
					 const struct sockaddr *peer, struct sockaddr_storage *out)
{
	if (!is_any(local) || local->sa_family != peer->sa_family)
		return local;
	size_t pl = addr_len(peer);
	route *r = &c->routes[addr_hash(peer) % ROUTE_SLOTS];
	if (!r->used || memcmp(&r->peer, peer, pl)) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		int fd = socket(peer->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int ok = fd >= 0 && connect(fd, peer, (socklen_t)pl) == 0 &&
			 getsockname(fd, (struct sockaddr *)&ss, &len) == 0;
		if (fd >= 0)
			close(fd);
		if (!ok)
			return local;
		memset(r, 0, sizeof *r);
		memcpy(&r->peer, peer, pl);
		memcpy(&r->local, &ss, len);
		r->used = 1;
	}
	memcpy(out, &r->local, pl);
	if (peer->sa_family == AF_INET6)
		((struct sockaddr_in6 *)out)->sin6_port = ((const struct sockaddr_in6 *)local)->sin6_port;
	else
		((struct sockaddr_in *)out)->sin_port = ((const struct sockaddr_in *)local)->sin_port;
	return (const struct sockaddr *)out;
}

static uint16_t ip_checksum(const unsigned char *p, size_t n)
{
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void write_pcap(sip_capture *c, sip_tp_kind kind, const struct sockaddr *from,
		       const struct sockaddr *to, const char *buf, size_t len,
		       const struct timespec *now)
{
	unsigned char h[HDR_MAX];
	size_t n = 0, l4 = kind == SIP_TP_UDP ? 8 : 20;
	int v6 = from->sa_family == AF_INET6;
	uint32_t rec[4];

	if (from->sa_family != to->sa_family)
		return;
	/* Ethernet: made-up locally administered MACs, then the EtherType */
	memcpy(h, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01", 12);
	put16(h + 12, v6 ? 0x86dd : 0x0800);
	n = 14;
	if (v6) {
		const struct sockaddr_in6 *s = (const void *)from, *d = (const void *)to;
		put32(h + n, 0x60000000u);
		put16(h + n + 4, (unsigned)((l4 + len) & 0xffff));
		h[n + 6] = kind == SIP_TP_UDP ? IPPROTO_UDP : IPPROTO_TCP;
		h[n + 7] = 64;
		memcpy(h + n + 8, &s->sin6_addr, 16);
		memcpy(h + n + 24, &d->sin6_addr, 16);
		n += 40;
	} else {
		const struct sockaddr_in *s = (const void *)from, *d = (const void *)to;
		size_t total = 20 + l4 + len;
		memset(h + n, 0, 20);
		h[n] = 0x45;
		put16(h + n + 2, (unsigned)(total > 0xffff ? 0xffff : total));
		put16(h + n + 4, c->ip_id++);
		put16(h + n + 6, 0x4000);   /* don't fragment */
		h[n + 8] = 64;
		h[n + 9] = kind == SIP_TP_UDP ? IPPROTO_UDP : IPPROTO_TCP;
		memcpy(h + n + 12, &s->sin_addr, 4);
		memcpy(h + n + 16, &d->sin_addr, 4);
		put16(h + n + 10, ip_checksum(h + n, 20));
		n += 20;
	}
	put16(h + n, (unsigned)port_of(from));
	put16(h + n + 2, (unsigned)port_of(to));
	if (kind == SIP_TP_UDP) {
		put16(h + n + 4, (unsigned)((8 + len) & 0xffff));
		put16(h + n + 6, 0);   /* no checksum */
	} else {
		put32(h + n + 4, tcp_seq(c, from, to, len));
		put32(h + n + 8, 0);
		h[n + 12] = 5 << 4;
		h[n + 13] = 0x18;   /* PSH, ACK */
		put16(h + n + 14, 65535);
		put32(h + n + 16, 0);
		/* an ACK number of 0 with the ACK flag: readers take it as "not tracked" */
	}
	n += l4;
	rec[0] = (uint32_t)now->tv_sec;
	rec[1] = (uint32_t)(now->tv_nsec / 1000);
	rec[2] = rec[3] = (uint32_t)(n + len);
	if (rec[2] > PCAP_SNAPLEN)
		rec[2] = PCAP_SNAPLEN;
	if (fwrite(rec, sizeof rec, 1, c->pcap) == 1 && fwrite(h, n, 1, c->pcap) == 1 &&
	    fwrite(buf, rec[2] - n, 1, c->pcap) == 1)
		c->st.pcap_written++;
}

static size_t hep_chunk(unsigned char *p, unsigned type, const void *v, size_t n)
{
	put16(p, 0);   /* generic vendor */
	put16(p + 2, type);
	put16(p + 4, (unsigned)(6 + n));
	memcpy(p + 6, v, n);
	return 6 + n;
}

static void send_hep(sip_capture *c, sip_tp_kind kind, const struct sockaddr *from,
		     const struct sockaddr *to, const char *buf, size_t len,
		     const struct timespec *now)
{
	/* header chunks come to well under 200 bytes; a UDP datagram holds 65507 */
	static unsigned char out[65507];
	int v6 = from->sa_family == AF_INET6;
	unsigned char b1, b4[4];
	unsigned char p2[2];
	size_t n = 6;

	if (from->sa_family != to->sa_family || len > sizeof out - 200)
		return;
	b1 = v6 ? 10 : 2;
	n += hep_chunk(out + n, HEP_FAMILY, &b1, 1);
	b1 = kind == SIP_TP_UDP ? IPPROTO_UDP : IPPROTO_TCP;
	n += hep_chunk(out + n, HEP_PROTO, &b1, 1);
	if (v6) {
		n += hep_chunk(out + n, HEP_SRC6, &((const struct sockaddr_in6 *)from)->sin6_addr, 16);
		n += hep_chunk(out + n, HEP_DST6, &((const struct sockaddr_in6 *)to)->sin6_addr, 16);
	} else {
		n += hep_chunk(out + n, HEP_SRC4, &((const struct sockaddr_in *)from)->sin_addr, 4);
		n += hep_chunk(out + n, HEP_DST4, &((const struct sockaddr_in *)to)->sin_addr, 4);
	}
	put16(p2, (unsigned)port_of(from));
	n += hep_chunk(out + n, HEP_SPORT, p2, 2);
	put16(p2, (unsigned)port_of(to));
	n += hep_chunk(out + n, HEP_DPORT, p2, 2);
	put32(b4, (uint32_t)now->tv_sec);
	n += hep_chunk(out + n, HEP_SEC, b4, 4);
	put32(b4, (uint32_t)(now->tv_nsec / 1000));
	n += hep_chunk(out + n, HEP_USEC, b4, 4);
	b1 = HEP_TYPE_SIP;
	n += hep_chunk(out + n, HEP_TYPE, &b1, 1);
	put32(b4, c->hep_id);
	n += hep_chunk(out + n, HEP_AGENT, b4, 4);
	n += hep_chunk(out + n, HEP_PAYLOAD, buf, len);
	memcpy(out, "HEP3", 4);
	put16(out + 4, (unsigned)n);
	if (sendto(c->hep_fd, out, n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&c->hep_dst,
		   c->hep_len) == (ssize_t)n)
		c->st.hep_sent++;
	else
		c->st.hep_failed++;
}

/* Count a message by its first line: a method, or the class of a status. */
static void count(sip_capture *c, int out, const char *buf, size_t len)
{
	if (len > 12 && memcmp(buf, "SIP/2.0 ", 8) == 0) {
		int cls = buf[8] - '0';
		c->st.responses[out][cls >= 1 && cls <= 6 ? cls : 0]++;
		return;
	}
	size_t i = 0;
	while (i < len && i < 32 && buf[i] != ' ')
		i++;
	c->st.requests[out][sip_method_lookup(buf, i)]++;
}

void sip_capture_tap(void *arg, int out, sip_tp_kind kind, const struct sockaddr *from,
		     const struct sockaddr *to, const char *buf, size_t len)
{
	sip_capture *c = arg;
	struct timespec now;

	count(c, out ? 1 : 0, buf, len);
	if (!c->pcap && c->hep_fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	struct sockaddr_storage fixed;
	if (out)
		from = real_local(c, from, to, &fixed);
	else
		to = real_local(c, to, from, &fixed);
	if (c->pcap)
		write_pcap(c, kind, from, to, buf, len, &now);
	if (c->hep_fd >= 0)
		send_hep(c, kind, from, to, buf, len, &now);
}
