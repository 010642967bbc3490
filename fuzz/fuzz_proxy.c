/* fuzz_proxy.c: libFuzzer target for the proxy core's request side (csrc/proxy.c): any
 * request the parser takes goes through §16.3 validation, §16.4 preprocessing and the edits
 * a relay makes (Max-Forwards, Record-Route, Request-URI, Via); the result must print as a
 * message that parses again, with the fields the edits set. */
#include "proxy.h"
#include "loop.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const sip_limits unlimited = { SIZE_MAX, 30000u, SIZE_MAX };
static sip_loop *loop;
static sip_endpoint *ep;

static void setup(void)
{
	sip_ep_config cfg;
	sip_ep_config_default(&cfg);
	sip_ep_hooks hooks;
	memset(&hooks, 0, sizeof hooks);
	loop = sip_loop_new();
	ep = sip_ep_new(loop, &cfg, &hooks, NULL);
	assert(ep);
	const char *err;
	int r = sip_ep_listen(ep, SIP_TP_UDP, "127.0.0.1", 0, &err);
	assert(r >= 0);
	const char *domains[] = { "example.com", "Proxy.Example.NET" };
	r = sip_ep_set_domains(ep, domains, 2, 5060);
	assert(r == 0);
}

static void reparses(const sip_msg *m, int mf)
{
	size_t len = sip_msg_print(m, NULL, 0);
	char *out = malloc(len);
	assert(out);
	sip_msg_print(m, out, len);
	sip_msg r;
	const char *err;
	int rc = sip_msg_parse(&r, out, len, 0, 1, &unlimited, &err);
	assert(rc == 0);
	assert(r.is_request);
	assert(r.max_forwards == mf);
	sip_msg_free(&r);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ep)
		setup();
	sip_msg m;
	const char *err;
	if (sip_msg_parse(&m, (const char *)data, size, 0, 0, NULL, &err))
		return 0;
	if (!m.is_request) {
		sip_msg_free(&m);
		return 0;
	}
	int code = sip_proxy_validate(ep, &m);
	assert(code == 0 || code == 416 || code == 483 || code == 482 || code == 420);
	(void)sip_ep_is_local(ep, m.uri);
	int pre = sip_proxy_preprocess(ep, &m);
	assert(pre >= -2);
	assert(pre != -1);   /* no allocation fails here */
	int mf = m.max_forwards < 0 ? 70 : (m.max_forwards > 0 ? m.max_forwards - 1 : 0);
	if (sip_proxy_prepare(ep, &m, SIP_TP_UDP, 2 /* AF_INET */, 1) == 0)
		reparses(&m, mf);
	char hash[12];
	sip_proxy_loop_hash(&m, hash);
	sip_msg_free(&m);
	return 0;
}
