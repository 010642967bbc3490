/* txn.c: the four transaction machines of RFC 3261 §17 (with RFC 6026's Accepted state),
 * their timers A-M and the tables responses and requests are matched in. Each machine is a
 * switch on its state; timers are short handlers; the owner hears through its handlers. */
#include "txn.h"
#include "build.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sip_txn {
	sip_txns *tx;
	const sip_txn_user *user;   /* the owner's handlers (NULL: nobody listens) */
	void *arg;                  /* and their argument */
	uint64_t id;
	uint8_t client, invite, state, reliable;
	uint8_t cancel_pending;  /* client INVITE: CANCEL asked for before any provisional */
	uint8_t acked;           /* server INVITE, Accepted: the ACK for the 2xx came */
	uint8_t proxied;         /* server: its responses come from downstream (§16.7) */
	uint8_t dest_pending;    /* server: where responses go is being looked up (RFC 3263
				  * §5): they wait in `out` until sip_txn_dest_found */
	int last_status;
	char *key;               /* in tx->client or tx->server (bytes after this struct) */
	size_t klen;
	sip_map_node by_key;     /* this transaction's nodes in that map and in tx->ids */
	sip_map_node by_id;
	char *akey;              /* server INVITE with a 2xx: in tx->accepted (ACK matching) */
	size_t aklen;
	sip_map *alias_map;      /* sip_txn_alias: the owner's map, and the key in it */
	char *alias;
	size_t alias_len;
	sip_dest dest;           /* client: where the request goes; server: where responses go */
	char *out;               /* client: the request; server: the last response */
	size_t outlen;
	char *req;               /* server INVITE: the request, for the 487 after a CANCEL */
	size_t reqlen;
	char *ack;               /* client INVITE: ACK for the non-2xx final, built once */
	size_t acklen;
	char *udp_out;           /* client, moved to TCP for its size: the UDP form (§18.1.1) */
	size_t udp_outlen;
	unsigned interval;       /* current retransmission interval (A, E, G, 2xx) */
	sip_timer t_retx;        /* A, E, G, and the 2xx retransmission of §13.3.1.4 */
	sip_timer t_timeout;     /* B, F, H, L, M */
	sip_timer t_end;         /* D, I, J, K */
};

const char *sip_txn_state_name(sip_txn_state s)
{
	static const char *const names[] = { "calling", "trying", "proceeding", "completed",
					     "confirmed", "accepted", "terminated" };
	return s <= SIP_TXN_TERMINATED ? names[s] : "?";
}

uint64_t sip_txn_id(const sip_txn *t) { return t->id; }
int sip_txn_is_client(const sip_txn *t) { return t->client; }
int sip_txn_is_invite(const sip_txn *t) { return t->invite; }
sip_txn_state sip_txn_state_get(const sip_txn *t) { return (sip_txn_state)t->state; }
int sip_txn_last_status(const sip_txn *t) { return t->last_status; }
int sip_txn_unanswered(const sip_txn *t)
{
	return !t->client && (t->state == SIP_TXN_TRYING || t->state == SIP_TXN_PROCEEDING);
}
const sip_dest *sip_txn_dest(const sip_txn *t) { return &t->dest; }

const char *sip_txn_out(const sip_txn *t, size_t *len)
{
	*len = t->outlen;
	return t->out;
}
void sip_txn_set_proxied(sip_txn *t, int on) { t->proxied = (uint8_t)(on != 0); }
int sip_txn_proxied(const sip_txn *t) { return t->proxied; }

void sip_txn_set_user(sip_txn *t, const sip_txn_user *u, void *arg)
{
	t->user = u;
	t->arg = arg;
}

const sip_txn_user *sip_txn_user_get(const sip_txn *t, void **arg)
{
	if (arg)
		*arg = t->arg;
	return t->user;
}

/* --- the tables ----------------------------------------------------------------------- */

/* A retransmission matched a waiting transaction: its response (or ACK) goes again. */
static void wait_send(void *arg, const sip_wait_dest *w, const char *buf, size_t len)
{
	sip_txns *tx = arg;
	sip_dest d = { w->kind, w->addr, w->len, w->conn_id, w->listener, NULL };
	const char *err;
	tx->stats.retrans_sent++;
	if (sip_dest_send(tx->tp, &d, buf, len, &err))
		sip_logf(&tx->log, "send failed: %s", err);
}

int sip_txns_wait_match(sip_txns *tx, const char *key, size_t klen, int resend)
{
	return sip_wait_match(tx->wait, key, klen, resend);
}

int sip_txns_init(sip_txns *tx, sip_loop *loop, sip_transport *tp, unsigned t1, unsigned t2,
		  unsigned t4, unsigned max, unsigned max_waiting, sip_log log)
{
	memset(tx, 0, sizeof *tx);
	tx->loop = loop;
	tx->tp = tp;
	tx->t1 = t1;
	tx->t2 = t2;
	tx->t4 = t4;
	tx->max = max;
	tx->log = log;
	tx->wait = sip_wait_new(loop, max_waiting, wait_send, tx);
	if (!tx->wait || sip_map_init(&tx->client) || sip_map_init(&tx->server) ||
	    sip_map_init(&tx->accepted) || sip_map_init_counters(&tx->ids)) {
		sip_wait_free(tx->wait);
		sip_map_free(&tx->client);
		sip_map_free(&tx->server);
		sip_map_free(&tx->accepted);
		sip_map_free(&tx->ids);
		return -1;
	}
	return 0;
}

void sip_txns_free(sip_txns *tx)
{
	tx->closing = 1;
	/* terminate every transaction, bucket by bucket (terminating unlinks the node) */
	for (size_t i = 0; i < tx->ids.nb; i++)
		while (tx->ids.b[i])
			sip_txn_terminate(tx->ids.b[i]->value);
	sip_wait_free(tx->wait);
	sip_map_free(&tx->client);
	sip_map_free(&tx->server);
	sip_map_free(&tx->accepted);
	sip_map_free(&tx->ids);
}

uint64_t sip_txns_new_id(sip_txns *tx) { return ++tx->next_id; }

int sip_txns_full(const sip_txns *tx)
{
	return tx->stats.client + tx->stats.server >= tx->max;
}

sip_txn *sip_txns_by_id(sip_txns *tx, uint64_t id)
{
	return sip_map_get(&tx->ids, (const char *)&id, sizeof id);
}

static unsigned t64(const sip_txns *tx) { return 64 * tx->t1; }

static sip_txn *txn_new(sip_txns *tx, int client, int invite, const char *key, size_t klen,
			const sip_dest *dest)
{
	size_t nl = dest->name ? strlen(dest->name) + 1 : 0;   /* TLS: kept after the key */
	sip_txn *t = calloc(1, sizeof *t + klen + nl);
	if (!t)
		return NULL;
	t->key = (char *)(t + 1);
	memcpy(t->key, key, klen);
	t->klen = klen;
	t->tx = tx;
	t->id = ++tx->next_id;
	t->client = (uint8_t)client;
	t->invite = (uint8_t)invite;
	t->state = client ? (invite ? SIP_TXN_CALLING : SIP_TXN_TRYING) :
			    (invite ? SIP_TXN_PROCEEDING : SIP_TXN_TRYING);
	t->dest = *dest;
	if (nl)
		t->dest.name = memcpy(t->key + klen, dest->name, nl);
	t->reliable = sip_tp_stream(dest->kind);
	sip_timer_init(&t->t_retx);
	sip_timer_init(&t->t_timeout);
	sip_timer_init(&t->t_end);
	if (sip_map_link(client ? &tx->client : &tx->server, &t->by_key, t->key, klen, t)) {
		free(t);
		return NULL;
	}
	if (sip_map_link(&tx->ids, &t->by_id, (const char *)&t->id, sizeof t->id, t)) {
		sip_map_unlink(client ? &tx->client : &tx->server, &t->by_key);
		free(t);
		return NULL;
	}
	if (client)
		tx->stats.client++;
	else
		tx->stats.server++;
	return t;
}

int sip_txn_alias(sip_txn *t, sip_map *m, const char *key, size_t klen)
{
	char *k = malloc(klen);
	if (!k)
		return -1;
	memcpy(k, key, klen);
	if (sip_map_put(m, k, klen, t)) {
		free(k);
		return -1;
	}
	t->alias_map = m;
	t->alias = k;
	t->alias_len = klen;
	return 0;
}

void sip_txn_terminate(sip_txn *t)
{
	sip_txns *tx = t->tx;
	if (t->state == SIP_TXN_TERMINATED)
		return;
	t->state = SIP_TXN_TERMINATED;
	sip_timer_stop(tx->loop, &t->t_retx);
	sip_timer_stop(tx->loop, &t->t_timeout);
	sip_timer_stop(tx->loop, &t->t_end);
	sip_map_unlink(t->client ? &tx->client : &tx->server, &t->by_key);
	if (t->akey && sip_map_get(&tx->accepted, t->akey, t->aklen) == t)
		sip_map_del(&tx->accepted, t->akey, t->aklen);
	if (t->alias && sip_map_get(t->alias_map, t->alias, t->alias_len) == t)
		sip_map_del(t->alias_map, t->alias, t->alias_len);
	sip_map_unlink(&tx->ids, &t->by_id);
	if (t->user && t->user->terminated)
		t->user->terminated(t->arg, t);
	if (t->client)
		tx->stats.client--;
	else
		tx->stats.server--;
	free(t->akey);
	free(t->alias);
	free(t->out);
	free(t->req);
	free(t->ack);
	free(t->udp_out);
	free(t);
}

static int txn_send(sip_txn *t, const char *buf, size_t len)
{
	const char *err;
	if (t->dest_pending)
		return 0;   /* sent once its owner has the address (RFC 3263 §5 lookup) */
	if (sip_dest_send(t->tx->tp, &t->dest, buf, len, &err)) {
		sip_logf(&t->tx->log, "send failed: %s", err);
		return -1;
	}
	return 0;
}

void sip_txn_dest_wait(sip_txn *t) { t->dest_pending = 1; }

void sip_txn_dest_found(sip_txn *t, const struct sockaddr_storage *addr, socklen_t len)
{
	if (addr) {
		t->dest.addr = *addr;
		t->dest.len = len;
		t->dest.listener = -1;   /* any listener of its family */
	}
	t->dest_pending = 0;
	if (t->out)
		txn_send(t, t->out, t->outlen);
}

/* Restart a retransmission timer `interval` after its previous due time, not after now:
 * late wake-ups must not push every later retransmission back (the doubling of §17 is
 * counted from the first transmission). */
static void restart_from_due(sip_txn *t, sip_timer_fn fn)
{
	sip_loop *loop = t->tx->loop;
	uint64_t now = sip_loop_now(loop), due = t->t_retx.due + t->interval;
	sip_timer_start(loop, &t->t_retx, due > now ? due - now : 0, fn, t);
}

static void retransmit(sip_txn *t, const char *buf, size_t len)
{
	t->tx->stats.retrans_sent++;
	txn_send(t, buf, len);
}

/* Timer D, I, J, K: the wait for retransmissions is over. */
static void end_handler(void *arg)
{
	sip_txn_terminate(arg);
}

/* Hand a transaction whose only task left is to absorb retransmissions (non-INVITE server
 * Completed, INVITE server Confirmed or a proxy's Accepted, client Completed) to the waiting
 * table, with what it
 * resends: a non-INVITE's final response, a client INVITE's ACK; a UA's merged-request key
 * (§8.2.2.2) waits beside it. 0 when it is there (end the transaction), -1 when full. */
static int hand_to_wait(sip_txn *t, unsigned ms)
{
	if (t->dest_pending)
		return -1;   /* its response goes once its Via's maddr is looked up (RFC 3263 §5) */
	const char *bytes = t->client ? (t->invite ? t->ack : NULL) : (t->invite ? NULL : t->out);
	size_t len = !bytes ? 0 : t->client ? t->acklen : t->outlen;
	sip_wait_dest d = { t->dest.kind, t->dest.addr, t->dest.len, t->dest.conn_id,
			    t->dest.listener };
	if (sip_wait_add(t->tx->wait, t->key, t->klen, &d, bytes, len, ms, 0))
		return -1;
	if (t->alias)   /* the owner's key for it (a UA's merged-request key) */
		sip_wait_add(t->tx->wait, t->alias, t->alias_len, &d, NULL, 0, ms, SIP_WAIT_ALIAS);
	return 0;
}

/* Start Timer D/I/J/K, or end at once on a reliable transport (duration 0 there). */
static void wait_then_end(sip_txn *t, unsigned unreliable_ms)
{
	if (t->reliable || unreliable_ms == 0 || hand_to_wait(t, unreliable_ms) == 0) {
		sip_txn_terminate(t);
		return;
	}
	sip_timer_start_lazy(t->tx->loop, &t->t_end, unreliable_ms, end_handler, t);
}

/* --- matching (§17.1.3, §17.2.3) ------------------------------------------------------ */

static int has_cookie(sip_pl branch)
{
	return branch.n >= 7 && memcmp(branch.p, "z9hG4bK", 7) == 0;
}

void sip_txn_server_key(sip_keybuf *k, const sip_msg *m, const sip_via *via, sip_pl topvia,
			const char *method, size_t mlen)
{
	k->n = 0;
	if (has_cookie(via->branch)) {
		sip_kput(k, "S|", 2);
		sip_kpl(k, via->branch);
		sip_kch(k, '|');
		sip_kpl(k, via->host);
		sip_kch(k, ':');
		sip_kuint(k, (unsigned)via->port);
	} else {
		sip_kput(k, "T|", 2);
		sip_kpl(k, m->uri);
		sip_kch(k, '|');
		sip_kpl(k, m->call_id);
		sip_kch(k, '|');
		sip_kuint(k, m->cseq);
		sip_kch(k, '|');
		sip_kpl(k, m->from_tag);
		sip_kch(k, '|');
		sip_kpl(k, topvia);
	}
	sip_kch(k, '|');
	sip_kput(k, method, mlen);
}

static void client_key(sip_keybuf *k, sip_pl branch, sip_pl method)
{
	k->n = 0;
	sip_kput(k, "C|", 2);
	sip_kpl(k, branch);
	sip_kch(k, '|');
	sip_kpl(k, method);
}

/* The key of the INVITE server transaction a 2xx's ACK belongs to (§17.2.3 does not cover
 * it: the ACK of a 2xx has its own branch). */
static void accepted_key(sip_keybuf *k, sip_pl call_id, uint32_t cseq, sip_pl from_tag)
{
	k->n = 0;
	sip_kput(k, "A|", 2);
	sip_kpl(k, call_id);
	sip_kch(k, '|');
	sip_kuint(k, cseq);
	sip_kch(k, '|');
	sip_kpl(k, from_tag);
}

sip_txn *sip_txns_server(sip_txns *tx, const sip_keybuf *k)
{
	return sip_map_get(&tx->server, k->p, k->n);
}

sip_txn *sip_txns_accepted(sip_txns *tx, const sip_msg *ack)
{
	char kb[SIP_KEY_MAX];
	sip_keybuf k = { kb, 0 };
	accepted_key(&k, ack->call_id, ack->cseq, ack->from_tag);
	return sip_map_get(&tx->accepted, k.p, k.n);
}

/* --- responses the layer makes itself -------------------------------------------------- */

static void deliver(sip_txn *t, const sip_msg *res)
{
	if (t->user && t->user->response)
		t->user->response(t->arg, t, res);
}

/* A response made from the request of client transaction t (408, 503), to its owner. */
static void synth_response(sip_txn *t, int code, const char *reason)
{
	sip_msg req, res;
	const char *err;
	size_t len;
	if (sip_msg_parse(&req, t->out, t->outlen, 0, 0, NULL, &err))
		return;
	char *buf = sip_build_response_alloc(&req, code, reason, NULL, &len);
	sip_msg_free(&req);
	if (!buf)
		return;
	if (sip_msg_parse(&res, buf, len, 0, 0, NULL, &err) == 0) {
		t->last_status = code;
		deliver(t, &res);
		sip_msg_free(&res);
	}
	free(buf);
}

/* --- client transactions (§17.1) ------------------------------------------------------ */

/* Timer A (INVITE: doubles without cap) and Timer E (non-INVITE: doubles up to T2). */
static void client_retransmit_handler(void *arg)
{
	sip_txn *t = arg;
	sip_txns *tx = t->tx;
	if (t->state != SIP_TXN_CALLING && t->state != SIP_TXN_TRYING &&
	    !(t->state == SIP_TXN_PROCEEDING && !t->invite))
		return;
	retransmit(t, t->out, t->outlen);
	if (t->invite)
		t->interval *= 2;
	else
		t->interval = t->state == SIP_TXN_PROCEEDING ? tx->t2 :
			      (t->interval * 2 < tx->t2 ? t->interval * 2 : tx->t2);
	restart_from_due(t, client_retransmit_handler);
}

/* Timer B / F: no final response in 64*T1 -> 408 to the TU (B only while Calling: a 1xx
 * stops it, §17.1.1.2). The same 64*T1 after a CANCEL went for a ringing INVITE (§9.1).
 * Timer M: Accepted is over. */
static void client_timeout_handler(void *arg)
{
	sip_txn *t = arg;
	if (t->state == SIP_TXN_ACCEPTED) {
		sip_txn_terminate(t);
		return;
	}
	synth_response(t, 408, NULL);
	sip_txn_terminate(t);
}

static void client_start(sip_txn *t)
{
	sip_txns *tx = t->tx;
	t->interval = tx->t1;
	if (!t->reliable)
		sip_timer_start(tx->loop, &t->t_retx, t->interval, client_retransmit_handler, t);
	sip_timer_start_fixed(tx->loop, &t->t_timeout, t64(tx), client_timeout_handler, t);
}

sip_txn *sip_txn_client_new(sip_txns *tx, sip_pl branch, sip_pl method, int invite,
			    const sip_dest *d, char *buf, size_t len, char *udp_form,
			    size_t udp_len, const sip_txn_user *u, void *arg, const char **err)
{
	char kb[SIP_KEY_MAX];
	sip_keybuf k = { kb, 0 };
	client_key(&k, branch, method);
	sip_txn *t = txn_new(tx, 1, invite, k.p, k.n, d);
	if (!t) {
		free(buf);
		free(udp_form);
		*err = "transaction exists (same branch)";
		return NULL;
	}
	t->out = buf;
	t->outlen = len;
	t->udp_out = udp_form;
	t->udp_outlen = udp_len;
	if (txn_send(t, buf, len)) {
		*err = "transport error";
		sip_txn_terminate(t);   /* before it has an owner: nobody hears of it */
		return NULL;
	}
	t->user = u;
	t->arg = arg;
	client_start(t);
	return t;
}

/* §17.1.1.3: the ACK for a non-2xx final is the transaction's own business. */
static void send_ack(sip_txn *t, const sip_msg *res)
{
	if (!t->ack) {
		sip_msg inv;
		const char *err;
		int ti = res->first[SIP_HDR_TO];
		if (ti < 0 || sip_msg_parse(&inv, t->out, t->outlen, 0, 0, NULL, &err))
			return;
		sip_build_from_invite(&inv, "ACK", res->hdrs[ti].value, &t->ack, &t->acklen);
		sip_msg_free(&inv);
		if (!t->ack)
			return;
	}
	txn_send(t, t->ack, t->acklen);
}

static void client_response(sip_txn *t, const sip_msg *res)
{
	sip_txns *tx = t->tx;
	int code = res->status;
	const char *err;

	if (t->invite) {
		switch (t->state) {
		case SIP_TXN_CALLING:
		case SIP_TXN_PROCEEDING:
			sip_timer_stop(tx->loop, &t->t_retx);
			t->last_status = code;
			if (code < 200) {
				/* Proceeding has no timeout of its own: the TU cancels (§9.1), a
				 * proxy by Timer C (§16.6 step 11) */
				if (t->state == SIP_TXN_CALLING)
					sip_timer_stop(tx->loop, &t->t_timeout);
				t->state = SIP_TXN_PROCEEDING;
				deliver(t, res);
				if (t->cancel_pending && t->state == SIP_TXN_PROCEEDING) {
					t->cancel_pending = 0;
					sip_txn_client_cancel(t, &err);
				}
				return;
			}
			sip_timer_stop(tx->loop, &t->t_timeout);
			if (code < 300) {
				/* RFC 6026 §7.2: stay to pass 2xx retransmissions up (Timer M) */
				t->state = SIP_TXN_ACCEPTED;
				sip_timer_start_fixed(tx->loop, &t->t_timeout, t64(tx), client_timeout_handler, t);
				deliver(t, res);
				return;
			}
			t->state = SIP_TXN_COMPLETED;
			send_ack(t, res);
			deliver(t, res);
			wait_then_end(t, t64(tx));   /* Timer D: at least 32 s (64*T1 at default T1) */
			return;
		case SIP_TXN_ACCEPTED:
			if (code >= 200 && code < 300)
				deliver(t, res);
			else
				tx->stats.absorbed++;
			return;
		case SIP_TXN_COMPLETED:
			if (code >= 300) {
				tx->stats.absorbed++;
				send_ack(t, res);
			}
			return;
		default:
			return;
		}
	}
	switch (t->state) {
	case SIP_TXN_TRYING:
	case SIP_TXN_PROCEEDING:
		t->last_status = code;
		if (code < 200) {
			t->state = SIP_TXN_PROCEEDING;
			deliver(t, res);
			return;
		}
		sip_timer_stop(tx->loop, &t->t_retx);
		sip_timer_stop(tx->loop, &t->t_timeout);
		t->state = SIP_TXN_COMPLETED;
		/* Completed only absorbs retransmitted responses: the request is not sent again */
		free(t->out);
		t->out = NULL;
		t->outlen = 0;
		deliver(t, res);
		if (t->state == SIP_TXN_COMPLETED)
			wait_then_end(t, tx->t4);   /* Timer K */
		return;
	case SIP_TXN_COMPLETED:
		tx->stats.absorbed++;
		return;
	default:
		return;
	}
}

int sip_txns_response(sip_txns *tx, const sip_msg *res)
{
	if (!res->branch.n)
		return 0;
	char kb[SIP_KEY_MAX];
	sip_keybuf k = { kb, 0 };
	client_key(&k, res->branch, res->cseq_method);
	sip_txn *t = sip_map_get(&tx->client, k.p, k.n);
	if (t) {
		client_response(t, res);
		return 1;
	}
	/* Completed: absorbed; an INVITE's non-2xx final gets its ACK again (§17.1.1.3) */
	if (sip_wait_match(tx->wait, k.p, k.n, res->status >= 300)) {
		tx->stats.absorbed++;
		return 1;
	}
	return 0;
}

int sip_txn_client_cancel(sip_txn *ct, const char **err)
{
	sip_txns *tx = ct->tx;
	if (!ct->client || !ct->invite) {
		*err = "not an INVITE client transaction";
		return -1;
	}
	if (ct->state == SIP_TXN_CALLING) {
		ct->cancel_pending = 1;   /* §9.1: wait for a provisional before cancelling */
		return 0;
	}
	if (ct->state != SIP_TXN_PROCEEDING) {
		*err = "the INVITE has a final response";
		return -1;
	}
	if (sip_txns_full(tx)) {
		*err = "too many transactions";
		return -1;
	}
	sip_msg inv;
	char *buf;
	size_t len;
	if (sip_msg_parse(&inv, ct->out, ct->outlen, 0, 0, NULL, err))
		return -1;
	int r = sip_build_from_invite(&inv, "CANCEL", sip_pl_make(NULL, 0), &buf, &len);
	sip_pl branch = inv.branch;   /* the CANCEL's top Via is the INVITE's (§9.1) */
	if (r) {
		sip_msg_free(&inv);
		*err = "cannot build CANCEL";
		return -1;
	}
	sip_txn *t = sip_txn_client_new(tx, branch, SIP_PL("CANCEL"), 0, &ct->dest, buf, len,
					NULL, 0, NULL, NULL, err);
	sip_msg_free(&inv);
	if (!t)
		return -1;
	/* without a final response 64*T1 from now the INVITE ends with a 408 to the TU */
	sip_timer_start_fixed(tx->loop, &ct->t_timeout, t64(tx), client_timeout_handler, ct);
	return 0;
}

/* §18.1.1: a request that left UDP for its size, whose TCP connection could not be made,
 * goes over UDP after all (the same branch, a UDP Via), with UDP's retransmissions. */
static int back_to_udp(sip_txn *t)
{
	free(t->out);
	t->out = t->udp_out;
	t->outlen = t->udp_outlen;
	t->udp_out = NULL;
	t->dest.kind = SIP_TP_UDP;
	t->dest.listener = -1;
	t->dest.conn_id = 0;
	t->reliable = 0;
	sip_logf(&t->tx->log, "transport: %zu-byte request back to UDP (no TCP connection)",
		 t->outlen);
	if (txn_send(t, t->out, t->outlen))
		return -1;
	client_start(t);   /* Timers A/E now, B/F from here */
	return 0;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

void sip_txns_fail_dest(sip_txns *tx, sip_tp_kind kind, const struct sockaddr_storage *peer,
			const char *detail)
{
	int udp = kind == SIP_TP_UDP;
	enum { BATCH = 64 };
	uint64_t ids[BATCH];
	size_t n = 0;
	for (size_t i = 0; i < tx->client.nb && n < BATCH; i++)
		for (sip_map_node *nd = tx->client.b[i]; nd && n < BATCH; nd = nd->next) {
			sip_txn *t = nd->value;
			int live = udp ? t->state == SIP_TXN_CALLING || t->state == SIP_TXN_TRYING :
					 t->state != SIP_TXN_COMPLETED && t->state != SIP_TXN_ACCEPTED;
			if (t->dest.kind == kind && live &&
			    same_addr(&t->dest.addr, peer))
				ids[n++] = t->id;
		}
	for (size_t i = 0; i < n; i++) {
		sip_txn *t = sip_txns_by_id(tx, ids[i]);   /* an earlier handler may have ended it */
		if (!t)
			continue;
		if (!udp && t->udp_out && back_to_udp(t) == 0)
			continue;
		/* TLS: the handshake's or the verification's reason, for scripts to read */
		char why[200];
		snprintf(why, sizeof why, "Service Unavailable (%s)",
			 udp ? "unreachable" : kind == SIP_TP_TLS && detail ? detail :
			 "connection failed");
		synth_response(t, 503, why);
		sip_txn_terminate(t);
	}
}

/* --- server transactions (§17.2) ------------------------------------------------------ */

sip_txn *sip_txn_server_new(sip_txns *tx, const sip_keybuf *k, const sip_msg *m,
			    const sip_dest *d, const sip_txn_user *u, void *arg)
{
	sip_txn *t = txn_new(tx, 0, m->method_id == SIP_METHOD_INVITE, k->p, k->n, d);
	if (!t)
		return NULL;
	t->user = u;
	t->arg = arg;
	if (t->invite) {
		size_t len;
		t->req = sip_msg_print_alloc(m, 0, &len);
		if (t->req)
			t->reqlen = len;
	}
	return t;
}

/* Timer G (non-2xx final of an INVITE) and the 2xx retransmission of §13.3.1.4. */
static void server_retransmit_handler(void *arg)
{
	sip_txn *t = arg;
	sip_txns *tx = t->tx;
	if (t->state != SIP_TXN_COMPLETED && t->state != SIP_TXN_ACCEPTED)
		return;
	retransmit(t, t->out, t->outlen);
	t->interval = t->interval * 2 < tx->t2 ? t->interval * 2 : tx->t2;
	restart_from_due(t, server_retransmit_handler);
}

/* Timer H: no ACK for the non-2xx final. Timer L: the 2xx wait is over (RFC 6026). */
static void server_timeout_handler(void *arg)
{
	sip_txn *t = arg;
	if (t->state == SIP_TXN_ACCEPTED && !t->acked && t->akey) {
		/* no ACK for the 2xx: the TU should end the dialog (§13.3.1.4) */
		sip_logf(&t->tx->log, "no ACK for %d (transaction %llu)", t->last_status,
			 (unsigned long long)t->id);
		if (t->user && t->user->ack)
			t->user->ack(t->arg, t, NULL);
	}
	sip_txn_terminate(t);
}

void sip_txn_server_retransmission(sip_txn *t)
{
	t->tx->stats.absorbed++;
	switch (t->state) {
	case SIP_TXN_PROCEEDING:
	case SIP_TXN_COMPLETED:
		if (t->out)
			retransmit(t, t->out, t->outlen);
		break;
	default:
		break;   /* Trying: nothing to send yet; Accepted/Confirmed: absorbed */
	}
}

int sip_txn_server_reply(sip_txn *t, const sip_msg *res, const char **err)
{
	int code = res->status;
	if (t->client || res->is_request) {
		*err = "not a response for a server transaction";
		return -1;
	}
	if (t->state != SIP_TXN_TRYING && t->state != SIP_TXN_PROCEEDING) {
		*err = code < 200 ? "provisional response after a final one" :
				    "a final response was sent already";
		return -1;
	}
	size_t len;
	char *buf = sip_msg_print_alloc(res, 0, &len);
	if (!buf) {
		*err = "out of memory";
		return -1;
	}
	return sip_txn_server_reply_wire(t, code, buf, len, res->call_id, res->cseq, res->from_tag,
					 err);
}

int sip_txn_server_reply_wire(sip_txn *t, int code, char *buf, size_t len, sip_pl call_id,
			      uint32_t cseq, sip_pl from_tag, const char **err)
{
	sip_txns *tx = t->tx;
	if (t->state != SIP_TXN_TRYING && t->state != SIP_TXN_PROCEEDING) {
		*err = code < 200 ? "provisional response after a final one" :
				    "a final response was sent already";
		free(buf);
		return -1;
	}
	free(t->out);
	t->out = buf;
	t->outlen = len;
	t->last_status = code;
	int r = txn_send(t, buf, len);
	*err = r ? "transport error" : NULL;

	if (code < 200) {
		t->state = SIP_TXN_PROCEEDING;
		return r;
	}
	if (!t->invite) {
		t->state = SIP_TXN_COMPLETED;
		wait_then_end(t, t64(tx));   /* Timer J */
		return r;
	}
	t->interval = tx->t1;
	if (code < 300) {
		/* RFC 6026: Accepted; the core resends the 2xx until the ACK (§13.3.1.4) */
		t->state = SIP_TXN_ACCEPTED;
		if (t->proxied) {
			/* a proxy's 2xx: ACK and retransmissions are end to end; stay Accepted
			 * (Timer L) only to absorb INVITE retransmissions (RFC 6026 §8.5): in the
			 * waiting table (a later 2xx of another branch goes up without it) */
			if (hand_to_wait(t, t64(tx)) == 0) {
				sip_txn_terminate(t);
				return r;
			}
			sip_timer_start_fixed(tx->loop, &t->t_timeout, t64(tx), server_timeout_handler, t);
			return r;
		}
		char kb[SIP_KEY_MAX];
		sip_keybuf k = { kb, 0 };
		accepted_key(&k, call_id, cseq, from_tag);
		if (!sip_map_get(&tx->accepted, k.p, k.n)) {
			t->akey = malloc(k.n);
			if (t->akey) {
				memcpy(t->akey, k.p, k.n);
				t->aklen = k.n;
				sip_map_put(&tx->accepted, k.p, k.n, t);
			}
		}
		if (!t->reliable)
			sip_timer_start(tx->loop, &t->t_retx, t->interval, server_retransmit_handler, t);
		sip_timer_start_fixed(tx->loop, &t->t_timeout, t64(tx), server_timeout_handler, t);
		return r;
	}
	t->state = SIP_TXN_COMPLETED;
	if (!t->reliable)
		sip_timer_start(tx->loop, &t->t_retx, t->interval, server_retransmit_handler, t);
	sip_timer_start_fixed(tx->loop, &t->t_timeout, t64(tx), server_timeout_handler, t);  /* H */
	return r;
}

static void reply_code(sip_txn *t, const sip_msg *req, int code, const char *extra)
{
	size_t len;
	const char *err;
	char *buf = sip_build_response_alloc(req, code, NULL, extra, &len);
	if (buf)   /* the response copies these from the request (§8.2.6.2) */
		sip_txn_server_reply_wire(t, code, buf, len, req->call_id, req->cseq, req->from_tag,
					  &err);
}

void sip_txn_server_reply_code(sip_txn *t, const sip_msg *req, int code, const char *extra)
{
	sip_msg stored;
	const char *err;
	if (!req) {
		if (!t->req || sip_msg_parse(&stored, t->req, t->reqlen, 0, 0, NULL, &err))
			return;
		reply_code(t, &stored, code, extra);
		sip_msg_free(&stored);
		return;
	}
	reply_code(t, req, code, extra);
}

/* ACK matching the INVITE server transaction itself (the ACK for a non-2xx final). */
void sip_txn_server_ack(sip_txn *t)
{
	sip_txns *tx = t->tx;
	tx->stats.absorbed++;
	if (t->state != SIP_TXN_COMPLETED)
		return;
	t->state = SIP_TXN_CONFIRMED;
	sip_timer_stop(tx->loop, &t->t_retx);
	sip_timer_stop(tx->loop, &t->t_timeout);
	wait_then_end(t, tx->t4);   /* Timer I */
}

/* The ACK for a 2xx (its own transaction-less request) reached the INVITE's transaction. */
void sip_txn_accepted_ack(sip_txn *t, const sip_msg *ack)
{
	if (t->acked) {         /* already reported: a retransmitted ACK */
		t->tx->stats.absorbed++;
		return;
	}
	t->acked = 1;
	sip_timer_stop(t->tx->loop, &t->t_retx);
	if (t->user && t->user->ack)
		t->user->ack(t->arg, t, ack);
}

int sip_txn_server_cancel(sip_txn *t)
{
	if (!t->invite || t->state != SIP_TXN_PROCEEDING)
		return 0;
	if (t->user && t->user->cancel)
		t->user->cancel(t->arg, t);
	return 1;
}
