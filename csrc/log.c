/* log.c: sip_logf, printf-style lines for a sip_log, formatted only when someone listens. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

void sip_logf(const sip_log *lg, const char *fmt, ...)
{
	if (!lg->fn)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	lg->fn(lg->arg, line);
}
