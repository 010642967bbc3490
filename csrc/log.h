/* log.h: one line per event worth logging, handed to whoever listens (the binding). */
#ifndef SIP_LOG_H
#define SIP_LOG_H

typedef struct sip_log {
	void (*fn)(void *arg, const char *line);   /* NULL: nobody listens, nothing is formatted */
	void *arg;
} sip_log;

void sip_logf(const sip_log *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
