/* uri.h: sip:, sips: and tel: URIs (RFC 3261 §19.1, §25.1; RFC 3966), parsed as slices. */
#ifndef SIP_URI_H
#define SIP_URI_H

#include "pl.h"

typedef struct sip_uri {
	sip_pl scheme;     /* "sip", "sips", "tel" or another absoluteURI scheme */
	sip_pl user;       /* raw, still %-escaped; tel: the number */
	sip_pl password;
	sip_pl host;       /* IPv6 references keep their [] */
	int port;          /* 0 when absent */
	sip_pl params;     /* after the first ';', without it */
	sip_pl headers;    /* after '?', without it */
	int is_sip;        /* sip/sips (structured); 0 for other schemes (opaque part in user) */
} sip_uri;

/* The closing quote of a quoted-string whose body starts at p (after the opening quote),
 * or NULL when it is unterminated. A quoted-pair ("\\" CHAR) never closes it. */
const char *sip_quoted_end(const char *p, const char *end);

/* Returns 0 or -1 with *err set. Unknown schemes parse as scheme + opaque rest. */
int sip_uri_parse(sip_uri *u, sip_pl s, const char **err);
/* sip_uri_parse(u, s, err) == 0 with no headers part, for a Request-URI: nonzero when so. */
int sip_uri_request_ok(sip_pl s);

/* Percent-decode into out (cap >= in.n suffices). Returns the decoded length, or -1 on a
 * malformed escape. */
long sip_pct_decode(sip_pl in, char *out, size_t cap);

/* Iterate ;-separated params: *pos starts at 0. name/value trimmed; value empty when none;
 * quoted values keep their quotes. Returns 1 per param, 0 at the end, -1 on bad syntax. */
int sip_param_next(sip_pl params, size_t *pos, sip_pl *name, sip_pl *value);
/* Find a param by name (case-insensitive). Returns 1 found (value may be empty), 0 not. */
int sip_param_get(sip_pl params, const char *name, sip_pl *value);

/* name-addr / addr-spec (RFC 3261 §25.1) with header params: From, To, Contact, Route... */
typedef struct sip_addr {
	sip_pl display;    /* without quotes; may hold \-escapes; empty when none */
	int quoted;        /* display name was a quoted-string */
	sip_pl uri;
	sip_pl params;     /* header params after the URI (or after '>') */
	sip_pl tag;        /* value of the first "tag" param; .p NULL when there is none */
	int star;          /* Contact: * */
} sip_addr;

int sip_addr_parse(sip_addr *a, sip_pl s, const char **err);
/* A shortcut for checking a From/To value: 1 when it is of the usual shape and valid (what
 * sip_addr_parse would accept, no '*'), with its tag as sip_addr_parse finds it; 0 when it
 * cannot tell, and the caller takes the general path. */
int sip_addr_quick(sip_pl s, sip_pl *tag);
/* The same for a comma list of addresses (Contact, Route, Record-Route): 1 when every one is
 * valid and none is '*', 0 when it cannot tell. */
int sip_addr_list_quick(sip_pl s);

/* Via value (RFC 3261 §20.42, RFC 3581) */
typedef struct sip_via {
	sip_pl protocol;   /* "SIP/2.0" */
	sip_pl transport;  /* "UDP", "TCP", ... */
	sip_pl host;
	int port;          /* 0 when absent */
	sip_pl params;
	sip_pl branch, received, maddr, ttl;
	int rport;         /* -1 absent, 0 present without value, else the value */
} sip_via;

int sip_via_parse(sip_via *v, sip_pl s, const char **err);
/* A shortcut for checking a whole Via header value: 1 when every value in it is of the usual
 * shape and valid (what sip_list_next + sip_via_parse would accept), with the first one's
 * branch; 0 when it cannot tell, and the caller takes the general path. */
int sip_via_list_quick(sip_pl s, sip_pl *branch);
/* The first value of the Via list s alone, if it has the usual shape: 1 and its branch
 * (empty if none), else 0 (sip_list_next + sip_via_parse tell). */
int sip_via_first_quick(sip_pl s, sip_pl *branch);

#endif
