/* fuzz_dns.c: libFuzzer target for DNS answers as the resolver reads them off the network
 * (csrc/dns.c over c-ares' parsers): the first byte picks the record type asked for. */
#include "dns.h"

#include <assert.h>
#include <stdint.h>
#include <stddef.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int types[] = { 1, 28, 33, 35 };
	if (size < 1 || size > 65535)
		return 0;
	long ttl, neg;
	int n = sip_dns_read_answer(types[data[0] % 4], data + 1, (int)(size - 1), &ttl, &neg);
	assert(n >= -1 && n <= 16);
	if (n > 0)
		assert(ttl >= 0);
	return 0;
}
