/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * c-ares on libevent. c-ares 1.18 may call back synchronously from inside ares_send() and
 * ares_getaddrinfo(), and calls the socket-state callback while it opens and closes sockets, so
 * the socket list here is only changed from that callback, and each event is freed before its
 * socket can be reused by the kernel for another fd.
 */
#include "dns/channel.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct SockWatch {
	ares_socket_t fd;
	struct event *ev;
	struct SockWatch *next;
} SockWatch;

struct DnsChannel {
	struct event_base *base;
	ares_channel ares;
	bool ares_ready;     /* ares_init_options() succeeded */
	struct event *timer; /* drives retransmits and timeouts */
	SockWatch *socks;    /* one per socket c-ares asked us to watch */
};

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
	DnsChannel *ch = arg;

	ares_process_fd(ch->ares, (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
	dns_channel_rearm(ch);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	DnsChannel *ch = arg;

	ares_process_fd(ch->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_channel_rearm(ch);
}

/* c-ares: start, change or stop watching <fd>. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	DnsChannel *ch = data;
	SockWatch **pp, *w = NULL;

	for (pp = &ch->socks; *pp; pp = &(*pp)->next) {
		if ((*pp)->fd == fd) {
			w = *pp;
			*pp = w->next;
			break;
		}
	}
	if (w) {
		event_free(w->ev);
		free(w);
	}
	if (!readable && !writable)
		return;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return; /* the query will time out: nothing better to do without memory */
	w->fd = fd;
	w->ev =
	    event_new(ch->base, fd,
		      (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) | EV_PERSIST),
		      sock_cb, ch);
	if (w->ev == NULL || event_add(w->ev, NULL) != 0) {
		if (w->ev)
			event_free(w->ev);
		free(w);
		return;
	}
	w->next = ch->socks;
	ch->socks = w;
}

DnsChannel *dns_channel_new(struct event_base *base, const DnsChannelOptions *opts, char *err,
			    size_t errlen)
{
	DnsChannel *ch;
	struct ares_options o;
	int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS, rc;

	rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "could not initialize c-ares: %s", ares_strerror(rc));
		return NULL;
	}
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		ares_library_cleanup();
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ch->base = base;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = sock_state_cb;
	o.sock_state_cb_data = ch;
	o.flags = opts->flags;
	if (opts->timeout_ms > 0) {
		o.timeout = opts->timeout_ms;
		mask |= ARES_OPT_TIMEOUTMS;
	}
	if (opts->tries > 0) {
		o.tries = opts->tries;
		mask |= ARES_OPT_TRIES;
	}
	if (opts->no_rotate)
		mask |= ARES_OPT_NOROTATE;
	rc = ares_init_options(&ch->ares, &o, mask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "could not create a c-ares channel: %s", ares_strerror(rc));
		goto fail;
	}
	ch->ares_ready = true;
	if (opts->servers_csv) {
		rc = ares_set_servers_ports_csv(ch->ares, opts->servers_csv);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "could not set DNS servers \"%s\": %s",
				 opts->servers_csv, ares_strerror(rc));
			goto fail;
		}
	}
	ch->timer = evtimer_new(base, timer_cb, ch);
	if (ch->timer == NULL) {
		snprintf(err, errlen, "could not create a timer event");
		goto fail;
	}
	return ch;
fail:
	dns_channel_free(ch);
	return NULL;
}

void dns_channel_free(DnsChannel *ch)
{
	if (ch == NULL)
		return;
	/* runs pending callbacks (ARES_EDESTRUCTION) and closes sockets through sock_state_cb */
	if (ch->ares_ready)
		ares_destroy(ch->ares);
	while (ch->socks) {
		SockWatch *w = ch->socks;

		ch->socks = w->next;
		event_free(w->ev);
		free(w);
	}
	if (ch->timer)
		event_free(ch->timer);
	free(ch);
	ares_library_cleanup();
}

ares_channel dns_channel_ares(DnsChannel *ch)
{
	return ch->ares;
}

void dns_channel_rearm(DnsChannel *ch)
{
	struct timeval tv, *tvp;

	tvp = ares_timeout(ch->ares, NULL, &tv);
	if (tvp)
		evtimer_add(ch->timer, tvp);
	else
		evtimer_del(ch->timer);
}
