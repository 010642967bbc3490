/* dialog.h: dialogs of RFC 3261 §12 — the state a UA keeps per dialog (Call-ID, tags, URIs,
 * remote target, route set, CSeq numbers) and the rules that build and check requests in it. */
#ifndef SIP_DIALOG_H
#define SIP_DIALOG_H

#include <stdint.h>
#include "msg.h"

typedef enum sip_dialog_state {
	SIP_DIALOG_EARLY,       /* from a 1xx with a To tag (§12.1) */
	SIP_DIALOG_CONFIRMED,   /* from a 2xx */
	SIP_DIALOG_TERMINATED,
} sip_dialog_state;

/* One string the dialog owns: malloc'd, NUL-terminated (n excludes the NUL). */
typedef struct sip_dialog_str {
	char *p;
	size_t n;
} sip_dialog_str;

/* A dialog's route set is bounded like a message's header count: a real one has a few
 * entries, and each comes from a header of one message. */
#define SIP_DIALOG_MAX_ROUTES 32

typedef struct sip_dialog {
	sip_dialog_str call_id, local_tag, remote_tag;
	sip_dialog_str local_uri, remote_uri;   /* From / To header values, tags included */
	sip_dialog_str remote_target;           /* URI (no <>) */
	sip_dialog_str contact;                 /* our Contact header value, or empty */
	sip_dialog_str route[SIP_DIALOG_MAX_ROUTES];   /* Route values, in the order to send */
	unsigned nroute;
	uint32_t local_cseq;
	uint32_t remote_cseq;
	int has_remote_cseq;                    /* §12.2.2: the remote sequence may be empty */
	uint32_t invite_cseq;                   /* CSeq of our last INVITE: its ACK reuses it */
	int secure;                             /* sips Request-URI (§12.1.1, §12.1.2) */
	int is_uac;
	sip_dialog_state state;
} sip_dialog;

/* §12.1.2: the UAC's dialog from the request it sent and a response with a To tag (1xx:
 * early; 2xx: confirmed). Local CSeq: the response's (that of the INVITE as last sent). contact: our Contact value for later requests (may be NULL).
 * Returns 0 with *out set, or -1 with *err set (a static string). */
int sip_dialog_new_uac(sip_dialog **out, const sip_msg *request, const sip_msg *response,
		       const char *contact, size_t clen, const char **err);
/* §12.1.1: the UAS's dialog from the request it answers with a 2xx carrying local_tag.
 * local_cseq 0 = a random start value. */
int sip_dialog_new_uas(sip_dialog **out, const sip_msg *request, const char *local_tag,
		       size_t tlen, const char *contact, size_t clen, uint32_t local_cseq,
		       const char **err);
void sip_dialog_free(sip_dialog *d);

/* A response in the dialog: a 1xx refreshes an early dialog's target; a 2xx confirms an
 * early dialog (route set recomputed, §13.2.2.4) and a 2xx to INVITE/UPDATE refreshes the
 * remote target (§12.2.1.2). Returns 0, or -1 with *err set. */
int sip_dialog_update(sip_dialog *d, const sip_msg *response, const char **err);

/* §12.2.1.1: wire text of a request in the dialog. CSeq = ++local, except ACK, which takes
 * ack_cseq (0 = the last INVITE's). extra: header lines each ending in CRLF (may be NULL).
 * ctype: Content-Type of body (may be NULL). malloc'd text in *out. */
int sip_dialog_build(sip_dialog *d, const char *method, uint32_t ack_cseq,
		     const char *extra, size_t elen, const char *body, size_t blen,
		     const char *ctype, size_t ctlen, char **out, size_t *len, const char **err);

/* A request of ours went out in the dialog as req, maybe re-sent with a higher CSeq than
 * sip_dialog_build gave it (§22.2: credentials added, CSeq up by one). The local CSeq becomes
 * at least req's, so the next request's is higher still (§12.2.1.1); a re-sent INVITE's ACK
 * takes the CSeq it went out with. Returns 0, or -1 with *err set. */
int sip_dialog_sent(sip_dialog *d, const sip_msg *req, const char **err);

/* §12.2.2: a request that arrived in the dialog. Returns 0 when it may proceed (the remote
 * CSeq and, for a target refresh, the remote target are updated) or the status to refuse
 * it with (500: CSeq out of order), *err the reason phrase. */
int sip_dialog_check_request(sip_dialog *d, const sip_msg *req, const char **err);

/* The dialog's id as one string, "call-id|local tag|remote tag" (§12: the three make the
 * dialog ID); sip_dialog_key_make builds it from parts, for looking up a message's dialog.
 * Return the size needed; write only if it fits (with a NUL). */
size_t sip_dialog_key(const sip_dialog *d, char *out, size_t cap);
size_t sip_dialog_key_make(sip_pl call_id, sip_pl local_tag, sip_pl remote_tag,
			   char *out, size_t cap);

const char *sip_dialog_state_name(sip_dialog_state s);

#endif
