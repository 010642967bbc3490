/* txn.c: the four transaction machines of RFC 3261 §17 (with RFC 6026's Accepted state)
 * and their timers A-M. Each machine is a switch on its state; timers are short handlers. */
#include "txn.h"
#include "build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

sip_txn *sip_ep_txn(sip_endpoint *ep, uint64_t id)
{
	return sip_map_get(&ep->ids, (const char *)&id, sizeof id);
}

static unsigned t64(const sip_endpoint *ep) { return 64 * ep->cfg.t1; }

sip_txn *sip_txn_new(sip_endpoint *ep, int client, int invite, const char *key, size_t klen,
		     const sip_dest *dest)
{
	size_t nl = dest->name ? strlen(dest->name) + 1 : 0;   /* TLS: kept after the key */
	sip_txn *t = calloc(1, sizeof *t + klen + nl);
	if (!t)
		return NULL;
	t->key = (char *)(t + 1);
	memcpy(t->key, key, klen);
	t->klen = klen;
	t->ep = ep;
	t->id = ++ep->next_id;
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
	if (sip_map_link(client ? &ep->client : &ep->server, &t->by_key, t->key, klen, t)) {
		free(t);
		return NULL;
	}
	if (sip_map_link(&ep->ids, &t->by_id, (const char *)&t->id, sizeof t->id, t)) {
		sip_map_unlink(client ? &ep->client : &ep->server, &t->by_key);
		free(t);
		return NULL;
	}
	if (client)
		ep->stats.client_txns++;
	else
		ep->stats.server_txns++;
	return t;
}

void sip_txn_terminate(sip_txn *t)
{
	sip_endpoint *ep = t->ep;
	if (t->state == SIP_TXN_TERMINATED)
		return;
	t->state = SIP_TXN_TERMINATED;
	sip_timer_stop(ep->loop, &t->t_retx);
	sip_timer_stop(ep->loop, &t->t_timeout);
	sip_timer_stop(ep->loop, &t->t_end);
	sip_map *tab = t->client ? &ep->client : &ep->server;
	sip_map_unlink(tab, &t->by_key);
	if (t->akey && sip_map_get(&ep->accepted, t->akey, t->aklen) == t)
		sip_map_del(&ep->accepted, t->akey, t->aklen);
	if (t->mkey && sip_map_get(&ep->merged, t->mkey, t->mklen) == t)
		sip_map_del(&ep->merged, t->mkey, t->mklen);
	sip_map_unlink(&ep->ids, &t->by_id);
	/* Only INVITE transactions, and client ones that never gave a final response, can be
	 * waited on by the TU; the rest end without a word (one Lua call less each). */
	if (t->relay && t->client)
		sip_relay_txn_gone(t);   /* the TU never saw a relay's branch */
	else if (ep->hooks.gone && (t->invite || (t->client && t->last_status < 200)))
		ep->hooks.gone(ep->ud, t);
	if (t->relay)
		sip_relay_txn_gone(t);
	if (t->client)
		ep->stats.client_txns--;
	else
		ep->stats.server_txns--;
	free(t->akey);
	free(t->mkey);
	free(t->out);
	free(t->req);
	free(t->ack);
	free(t->udp_out);
	free(t);
}

int sip_txn_send(sip_txn *t, const char *buf, size_t len)
{
	const char *err;
	if (t->dest_pending)
		return 0;   /* sent once the lookup is over (endpoint.c, RFC 3263 §5) */
	if (sip_ep_send_dest(t->ep, &t->dest, buf, len, &err)) {
		sip_ep_logf(t->ep, "send failed: %s", err);
		return -1;
	}
	return 0;
}

/* Restart a retransmission timer `interval` after its previous due time, not after now:
 * late wake-ups must not push every later retransmission back (the doubling of §17 is
 * counted from the first transmission). */
static void restart_from_due(sip_txn *t, sip_timer_fn fn)
{
	sip_loop *loop = t->ep->loop;
	uint64_t now = sip_loop_now(loop), due = t->t_retx.due + t->interval;
	sip_timer_start(loop, &t->t_retx, due > now ? due - now : 0, fn, t);
}

static void retransmit(sip_txn *t, const char *buf, size_t len)
{
	t->ep->stats.retrans_sent++;
	sip_txn_send(t, buf, len);
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
	sip_endpoint *ep = t->ep;
	if (t->dest_pending)
		return -1;   /* its response goes once its Via's maddr is looked up (RFC 3263 §5) */
	const char *bytes = t->client ? (t->invite ? t->ack : NULL) : (t->invite ? NULL : t->out);
	size_t len = !bytes ? 0 : t->client ? t->acklen : t->outlen;
	sip_wait_dest d = { t->dest.kind, t->dest.addr, t->dest.len, t->dest.conn_id,
			    t->dest.listener };
	if (sip_wait_add(ep->wait, t->key, t->klen, &d, bytes, len, ms, 0))
		return -1;
	if (t->mkey)
		sip_wait_add(ep->wait, t->mkey, t->mklen, &d, NULL, 0, ms, SIP_WAIT_ALIAS);
	return 0;
}

/* Start Timer D/I/J/K, or end at once on a reliable transport (duration 0 there). */
static void wait_then_end(sip_txn *t, unsigned unreliable_ms)
{
	if (t->reliable || unreliable_ms == 0 || hand_to_wait(t, unreliable_ms) == 0) {
		sip_txn_terminate(t);
		return;
	}
	sip_timer_start_lazy(t->ep->loop, &t->t_end, unreliable_ms, end_handler, t);
}

/* --- client transactions (§17.1) ------------------------------------------------------ */

/* Timer A (INVITE: doubles without cap) and Timer E (non-INVITE: doubles up to T2). */
static void client_retransmit_handler(void *arg)
{
	sip_txn *t = arg;
	sip_endpoint *ep = t->ep;
	if (t->state != SIP_TXN_CALLING && t->state != SIP_TXN_TRYING &&
	    !(t->state == SIP_TXN_PROCEEDING && !t->invite))
		return;
	retransmit(t, t->out, t->outlen);
	if (t->invite)
		t->interval *= 2;
	else
		t->interval = t->state == SIP_TXN_PROCEEDING ? ep->cfg.t2 :
			      (t->interval * 2 < ep->cfg.t2 ? t->interval * 2 : ep->cfg.t2);
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
	sip_ep_synth_response(t->ep, t, 408, NULL);
	sip_txn_terminate(t);
}

void sip_txn_client_cancelled(sip_txn *t)
{
	if (t->state == SIP_TXN_PROCEEDING)
		sip_timer_start_fixed(t->ep->loop, &t->t_timeout, t64(t->ep), client_timeout_handler, t);
}

void sip_txn_client_start(sip_txn *t)
{
	sip_endpoint *ep = t->ep;
	t->interval = ep->cfg.t1;
	if (!t->reliable)
		sip_timer_start(ep->loop, &t->t_retx, t->interval, client_retransmit_handler, t);
	sip_timer_start_fixed(ep->loop, &t->t_timeout, t64(ep), client_timeout_handler, t);
}

static void deliver(sip_txn *t, const sip_msg *res)
{
	sip_ep_deliver(t->ep, t, res);
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
	sip_txn_send(t, t->ack, t->acklen);
}

void sip_txn_client_response(sip_txn *t, const sip_msg *res)
{
	sip_endpoint *ep = t->ep;
	int code = res->status;
	const char *err;

	if (t->invite) {
		switch (t->state) {
		case SIP_TXN_CALLING:
		case SIP_TXN_PROCEEDING:
			sip_timer_stop(ep->loop, &t->t_retx);
			t->last_status = code;
			if (code < 200) {
				/* Proceeding has no timeout of its own: the TU cancels (§9.1), a
				 * proxy by Timer C (§16.6 step 11) */
				if (t->state == SIP_TXN_CALLING)
					sip_timer_stop(ep->loop, &t->t_timeout);
				t->state = SIP_TXN_PROCEEDING;
				deliver(t, res);
				if (t->cancel_pending && t->state == SIP_TXN_PROCEEDING) {
					t->cancel_pending = 0;
					sip_ep_cancel(ep, t, &err);
				}
				return;
			}
			sip_timer_stop(ep->loop, &t->t_timeout);
			if (code < 300) {
				/* RFC 6026 §7.2: stay to pass 2xx retransmissions up (Timer M) */
				t->state = SIP_TXN_ACCEPTED;
				sip_timer_start_fixed(ep->loop, &t->t_timeout, t64(ep), client_timeout_handler, t);
				deliver(t, res);
				return;
			}
			t->state = SIP_TXN_COMPLETED;
			send_ack(t, res);
			deliver(t, res);
			wait_then_end(t, t64(ep));   /* Timer D: at least 32 s (64*T1 at default T1) */
			return;
		case SIP_TXN_ACCEPTED:
			if (code >= 200 && code < 300)
				deliver(t, res);
			else
				ep->stats.absorbed++;
			return;
		case SIP_TXN_COMPLETED:
			if (code >= 300) {
				ep->stats.absorbed++;
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
		sip_timer_stop(ep->loop, &t->t_retx);
		sip_timer_stop(ep->loop, &t->t_timeout);
		t->state = SIP_TXN_COMPLETED;
		/* Completed only absorbs retransmitted responses: the request is not sent again */
		free(t->out);
		t->out = NULL;
		t->outlen = 0;
		deliver(t, res);
		if (t->state == SIP_TXN_COMPLETED)
			wait_then_end(t, ep->cfg.t4);   /* Timer K */
		return;
	case SIP_TXN_COMPLETED:
		ep->stats.absorbed++;
		return;
	default:
		return;
	}
}

/* --- server transactions (§17.2) ------------------------------------------------------ */

/* Timer G (non-2xx final of an INVITE) and the 2xx retransmission of §13.3.1.4. */
static void server_retransmit_handler(void *arg)
{
	sip_txn *t = arg;
	sip_endpoint *ep = t->ep;
	if (t->state != SIP_TXN_COMPLETED && t->state != SIP_TXN_ACCEPTED)
		return;
	retransmit(t, t->out, t->outlen);
	t->interval = t->interval * 2 < ep->cfg.t2 ? t->interval * 2 : ep->cfg.t2;
	restart_from_due(t, server_retransmit_handler);
}

/* Timer H: no ACK for the non-2xx final. Timer L: the 2xx wait is over (RFC 6026). */
static void server_timeout_handler(void *arg)
{
	sip_txn *t = arg;
	sip_endpoint *ep = t->ep;
	if (t->state == SIP_TXN_ACCEPTED && !t->acked && t->akey) {
		/* no ACK for the 2xx: the TU should end the dialog (§13.3.1.4) */
		sip_ep_logf(ep, "no ACK for %d (transaction %llu)", t->last_status,
			    (unsigned long long)t->id);
		if (ep->hooks.ack)
			ep->hooks.ack(ep->ud, t, NULL);
	}
	sip_txn_terminate(t);
}

void sip_txn_server_retransmission(sip_txn *t, const sip_msg *req)
{
	(void)req;
	t->ep->stats.absorbed++;
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
	sip_endpoint *ep = t->ep;
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
	int r = sip_txn_send(t, buf, len);
	*err = r ? "transport error" : NULL;

	if (code < 200) {
		t->state = SIP_TXN_PROCEEDING;
		return r;
	}
	if (!t->invite) {
		t->state = SIP_TXN_COMPLETED;
		wait_then_end(t, t64(ep));   /* Timer J */
		return r;
	}
	t->interval = ep->cfg.t1;
	if (code < 300) {
		/* RFC 6026: Accepted; the core resends the 2xx until the ACK (§13.3.1.4) */
		t->state = SIP_TXN_ACCEPTED;
		if (t->proxied) {
			/* a proxy's 2xx: ACK and retransmissions are end to end; stay Accepted
			 * (Timer L) only to absorb INVITE retransmissions (RFC 6026 §8.5): in the
			 * waiting table (a later 2xx of another branch goes up without it) */
			if (hand_to_wait(t, t64(ep)) == 0) {
				sip_txn_terminate(t);
				return r;
			}
			sip_timer_start_fixed(ep->loop, &t->t_timeout, t64(ep), server_timeout_handler, t);
			return r;
		}
		char key[1024];
		size_t n = sip_accepted_key(key, call_id, cseq, from_tag);
		if (!sip_map_get(&ep->accepted, key, n)) {
			t->akey = malloc(n);
			if (t->akey) {
				memcpy(t->akey, key, n);
				t->aklen = n;
				sip_map_put(&ep->accepted, key, n, t);
			}
		}
		if (!t->reliable)
			sip_timer_start(ep->loop, &t->t_retx, t->interval, server_retransmit_handler, t);
		sip_timer_start_fixed(ep->loop, &t->t_timeout, t64(ep), server_timeout_handler, t);
		return r;
	}
	t->state = SIP_TXN_COMPLETED;
	if (!t->reliable)
		sip_timer_start(ep->loop, &t->t_retx, t->interval, server_retransmit_handler, t);
	sip_timer_start_fixed(ep->loop, &t->t_timeout, t64(ep), server_timeout_handler, t);  /* H */
	return r;
}

/* ACK matching the INVITE server transaction itself (the ACK for a non-2xx final). */
void sip_txn_server_ack(sip_txn *t)
{
	sip_endpoint *ep = t->ep;
	ep->stats.absorbed++;
	if (t->state != SIP_TXN_COMPLETED)
		return;
	t->state = SIP_TXN_CONFIRMED;
	sip_timer_stop(ep->loop, &t->t_retx);
	sip_timer_stop(ep->loop, &t->t_timeout);
	wait_then_end(t, ep->cfg.t4);   /* Timer I */
}

/* The ACK for a 2xx (its own transaction-less request) reached the INVITE's transaction. */
void sip_txn_accepted_ack(sip_txn *t, const sip_msg *ack)
{
	sip_endpoint *ep = t->ep;
	if (t->acked) {         /* already reported: a retransmitted ACK */
		ep->stats.absorbed++;
		return;
	}
	t->acked = 1;
	sip_timer_stop(ep->loop, &t->t_retx);
	if (ep->hooks.ack)
		ep->hooks.ack(ep->ud, t, ack);
}

int sip_txn_server_cancel(sip_txn *t)
{
	if (!t->invite || t->state != SIP_TXN_PROCEEDING)
		return 0;
	t->cancelled = 1;
	return 1;
}
