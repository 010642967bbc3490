/* fuzz_dialog.c: libFuzzer target for dialogs (csrc/dialog.c): any message the parser takes
 * makes a UAS dialog (requests) or a UAC dialog (responses), whose requests must parse. */
#include "dialog.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const sip_limits unlimited = { SIZE_MAX, 30000u, SIZE_MAX };

static const char invite[] =
	"INVITE sip:bob@example.com SIP/2.0\r\n"
	"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf1\r\n"
	"From: <sip:alice@example.com>;tag=a1\r\n"
	"To: <sip:bob@example.com>\r\n"
	"Call-ID: f1\r\n"
	"CSeq: 1 INVITE\r\n"
	"Content-Length: 0\r\n\r\n";

/* Build `method` in d; the text must parse as a request of that method in the dialog. */
static void build_parses(sip_dialog *d, const char *method)
{
	char *out;
	size_t len;
	const char *err;
	if (sip_dialog_build(d, method, 0, "X-F: 1\r\n", 8, "b", 1, "text/plain", 10,
			     &out, &len, &err))
		return;
	sip_msg m;
	int rc = sip_msg_parse(&m, out, len, 0, 1, &unlimited, &err);
	assert(rc == 0);
	assert(m.is_request && m.body.n == 1);
	assert(m.call_id.n == d->call_id.n);
	sip_msg_free(&m);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sip_msg m, inv;
	const char *err;
	if (sip_msg_parse(&m, (const char *)data, size, 0, 0, NULL, &err))
		return 0;
	sip_dialog *d = NULL;
	if (m.is_request) {
		if (sip_dialog_new_uas(&d, &m, "t1", 2, "<sip:b@192.0.2.2>", 17, 0, &err) == 0)
			(void)sip_dialog_check_request(d, &m, &err);
	} else {
		int rc = sip_msg_parse(&inv, invite, sizeof invite - 1, 0, 1, NULL, &err);
		assert(rc == 0);
		if (sip_dialog_new_uac(&d, &inv, &m, NULL, 0, &err) == 0)
			(void)sip_dialog_update(d, &m, &err);
		sip_msg_free(&inv);
	}
	if (d) {
		char key[256];
		(void)sip_dialog_key(d, key, sizeof key);
		build_parses(d, "BYE");
		build_parses(d, "ACK");
		build_parses(d, "INVITE");
		sip_dialog_free(d);
	}
	sip_msg_free(&m);
	return 0;
}
