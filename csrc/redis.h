/* redis.h: a Redis client on our loop: hiredis's asynchronous API with its socket watched by
 * sip_loop, reconnecting by itself after the server went away. No Lua here. */
#ifndef SIP_REDIS_H
#define SIP_REDIS_H

#include <stddef.h>
#include "loop.h"

typedef struct sip_redis sip_redis;
struct redisReply;

/* A command's outcome: reply (NULL when err is set: the connection failed or closed first).
 * An error reply of the server is a reply (type REDIS_REPLY_ERROR), not err. */
typedef void (*sip_redis_reply_fn)(void *arg, const struct redisReply *reply, const char *err);

/* Connects in the background to host:port (an IP address) and selects db; NULL when out of
 * memory. */
sip_redis *sip_redis_new(sip_loop *loop, const char *host, int port, int db);
/* Cancels every pending command (each fn gets err "closed") and frees c. Not from inside one
 * of c's reply functions. */
void sip_redis_free(sip_redis *c);

/* Queues a command; fn is called once, later. Returns 0, or -1 while no connection is up or
 * being made (fn is not called; sip_redis_error says why). */
int sip_redis_command(sip_redis *c, int argc, const char **argv, const size_t *lens,
	sip_redis_reply_fn fn, void *arg);

/* Why the last connection failed or ended ("" while up). */
const char *sip_redis_error(const sip_redis *c);
/* 1 once connected (a command may still be queued before that). */
int sip_redis_connected(const sip_redis *c);

#endif
