/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The backend host cache. c-ares answers numeric names and hosts-file hits synchronously from
 * inside ares_getaddrinfo(), so a lookup's result may already be there when the call returns;
 * dns_resolve() then answers at once instead of calling back, and waiters are only added once a
 * lookup is really pending. Waiters are detached before they are called, so a callback may call
 * dns_resolve() or dns_resolve_cancel() again.
 */
#include "dns/resolver.h"
#include "dns/channel.h"
#include "dns/dns_log.h"

#include <event2/event.h>
#include <openssl/rand.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOST_ADDRS 16
#define RETRY_AFTER_FAILURE 2.0 /* seconds between lookups of a failing name */

typedef struct Waiter {
	DnsResolveCb cb;
	void *arg;
	int port;
	struct Waiter *next;
} Waiter;

typedef struct HostEntry {
	struct DnsResolver *r;
	char *name;
	struct sockaddr_storage addrs[MAX_HOST_ADDRS];
	int naddrs;
	unsigned rr;       /* round-robin position */
	double expires;    /* fresh until then (monotonic) */
	double failed_at;  /* last failed lookup, 0 when the last one succeeded */
	bool stale_logged; /* "using stale addresses" said once per failure streak */
	char last_error[160];
	bool pending;
	Waiter *waiters;
	struct HostEntry *next;
} HostEntry;

struct DnsResolver {
	DnsChannel *ch;
	DnsResolverOptions opts;
	HostEntry *hosts;
};

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_of(const DnsResolver *r)
{
	return r->opts.clock ? r->opts.clock() : mono_now();
}

const char *dns_lookup_name(DnsLookup l)
{
	switch (l) {
	case DNS_LOOKUP_DONE:
		return "done";
	case DNS_LOOKUP_PENDING:
		return "pending";
	case DNS_LOOKUP_FAILED:
		return "failed";
	}
	return "unknown";
}

DnsResolver *dns_resolver_new(struct event_base *base, const DnsResolverOptions *opts, char *err,
			      size_t errlen)
{
	DnsResolver *r = calloc(1, sizeof(*r));
	DnsChannelOptions co;

	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->opts = *opts;
	r->opts.servers_csv = NULL; /* not kept: only used below */
	memset(&co, 0, sizeof(co));
	co.servers_csv = opts->servers_csv;
	co.timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 2000;
	co.tries = opts->tries > 0 ? opts->tries : 2;
	r->ch = dns_channel_new(base, &co, err, errlen);
	if (r->ch == NULL) {
		free(r);
		return NULL;
	}
	return r;
}

static void free_waiters(Waiter *w)
{
	while (w) {
		Waiter *next = w->next;

		free(w);
		w = next;
	}
}

void dns_resolver_free(DnsResolver *r)
{
	if (r == NULL)
		return;
	dns_channel_free(r->ch); /* lookups end with ARES_EDESTRUCTION: entries untouched */
	while (r->hosts) {
		HostEntry *e = r->hosts;

		r->hosts = e->next;
		free_waiters(e->waiters);
		free(e->name);
		free(e);
	}
	free(r);
}

static HostEntry *find_entry(const DnsResolver *r, const char *host)
{
	for (HostEntry *e = r->hosts; e; e = e->next)
		if (strcasecmp(e->name, host) == 0)
			return e;
	return NULL;
}

const char *dns_resolver_last_error(const DnsResolver *r, const char *host)
{
	const HostEntry *e = find_entry(r, host);

	return e ? e->last_error : "";
}

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static socklen_t ss_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const void *src = ss->ss_family == AF_INET6
			      ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
			      : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;

	if (inet_ntop(ss->ss_family, src, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
}

/* Usable: fresh, or expired less than stale_keep ago while lookups fail. */
static bool entry_usable(const DnsResolver *r, const HostEntry *e, double now)
{
	if (e->naddrs == 0)
		return false;
	if (now < e->expires)
		return true;
	return e->failed_at > 0 && now < e->expires + r->opts.stale_keep;
}

static void pick(HostEntry *e, int port, struct sockaddr_storage *out, socklen_t *outlen)
{
	*out = e->addrs[e->rr++ % (unsigned)e->naddrs];
	set_port(out, port);
	if (outlen)
		*outlen = ss_len(out);
}

static void addrinfo_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	HostEntry *e = arg;
	DnsResolver *r = e->r;
	double now;
	Waiter *w;

	if (status == ARES_EDESTRUCTION) {
		if (res)
			ares_freeaddrinfo(res);
		return;
	}
	now = now_of(r);
	e->pending = false;
	if (status == ARES_SUCCESS && res && res->nodes) {
		int n = 0, ttl = r->opts.max_ttl;
		char list[512] = "", old[512] = "";
		size_t used = 0;

		for (int i = 0; i < e->naddrs; i++) {
			char a[64];

			format_addr(&e->addrs[i], a, sizeof(a));
			snprintf(old + strlen(old), sizeof(old) - strlen(old), "%s%s", i ? "," : "",
				 a);
		}
		for (struct ares_addrinfo_node *nd = res->nodes; nd && n < MAX_HOST_ADDRS;
		     nd = nd->ai_next) {
			if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
				continue;
			memset(&e->addrs[n], 0, sizeof(e->addrs[n]));
			memcpy(&e->addrs[n], nd->ai_addr, nd->ai_addrlen);
			if (nd->ai_ttl < ttl)
				ttl = nd->ai_ttl > 0 ? nd->ai_ttl : 0;
			n++;
		}
		e->naddrs = n;
		/* at least 1 s, so the answer serves the call that asked (hosts-file hits have
		 * ttl 0) and a burst of connections shares one lookup */
		if (ttl < 1)
			ttl = 1;
		for (int i = 0; i < n && used + 1 < sizeof(list); i++) {
			char a[64];

			format_addr(&e->addrs[i], a, sizeof(a));
			used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
						 i ? "," : "", a);
		}
		e->expires = now + ttl;
		e->failed_at = 0;
		e->stale_logged = false;
		e->last_error[0] = '\0';
		if (strcmp(old, list) != 0)
			dns_log_info("host \"%s\" resolves to %s (ttl %d s)", e->name, list, ttl);
	} else {
		const char *why = status == ARES_SUCCESS ? "no address" : ares_strerror(status);

		e->failed_at = now;
		snprintf(e->last_error, sizeof(e->last_error), "%s", why);
		if (entry_usable(r, e, now)) {
			if (!e->stale_logged)
				dns_log_warning("could not resolve host \"%s\": %s; using its last "
						"known addresses, expired %.0f s ago",
						e->name, why, now - e->expires);
			e->stale_logged = true;
		} else {
			dns_log_error("could not resolve host \"%s\": %s", e->name, why);
		}
	}
	if (res)
		ares_freeaddrinfo(res);

	/* detach first: a callback may resolve again or cancel */
	w = e->waiters;
	e->waiters = NULL;
	while (w) {
		Waiter *next = w->next;

		if (entry_usable(r, e, now)) {
			struct sockaddr_storage ss;

			pick(e, w->port, &ss, NULL);
			w->cb(w->arg, e->name, (struct sockaddr *)&ss, NULL);
		} else {
			w->cb(w->arg, e->name, NULL, e->last_error);
		}
		free(w);
		w = next;
	}
}

static bool numeric(const char *host, int port, struct sockaddr_storage *out, socklen_t *outlen)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1)
		out->ss_family = AF_INET;
	else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1)
		out->ss_family = AF_INET6;
	else
		return false;
	set_port(out, port);
	if (outlen)
		*outlen = ss_len(out);
	return true;
}

DnsLookup dns_resolve(DnsResolver *r, const char *host, int port, struct sockaddr_storage *out,
		      socklen_t *outlen, DnsResolveCb cb, void *arg)
{
	HostEntry *e;
	double now = now_of(r);
	Waiter *w;

	if (numeric(host, port, out, outlen))
		return DNS_LOOKUP_DONE;
	e = find_entry(r, host);
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL || (e->name = strdup(host)) == NULL) {
			free(e);
			return DNS_LOOKUP_FAILED;
		}
		e->r = r;
		e->expires = now; /* nothing cached: forces the first lookup */
		/* a random start spreads poolers over a multi-address name */
		if (RAND_bytes((unsigned char *)&e->rr, sizeof(e->rr)) != 1)
			e->rr = (unsigned)getpid();
		e->next = r->hosts;
		r->hosts = e;
	}
	if (e->naddrs > 0 && now < e->expires) {
		pick(e, port, out, outlen);
		return DNS_LOOKUP_DONE;
	}
	/* a failing name is asked again only every few seconds, not for every connection */
	if (!e->pending && !(e->failed_at > 0 && now - e->failed_at < RETRY_AFTER_FAILURE)) {
		struct ares_addrinfo_hints hints;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = r->opts.family;
		hints.ai_flags = ARES_AI_NOSORT; /* the RFC 6724 sort opens sockets: not needed */
		e->pending = true;
		/* may complete synchronously (hosts file): then e->pending is already false */
		ares_getaddrinfo(dns_channel_ares(r->ch), host, NULL, &hints, addrinfo_cb, e);
		dns_channel_rearm(r->ch);
		now = now_of(r);
	}
	if (!e->pending) {
		if (entry_usable(r, e, now)) {
			pick(e, port, out, outlen);
			return DNS_LOOKUP_DONE;
		}
		return DNS_LOOKUP_FAILED;
	}
	/* while a refresh runs, a still-usable stale address answers at once */
	if (e->failed_at > 0 && entry_usable(r, e, now)) {
		pick(e, port, out, outlen);
		return DNS_LOOKUP_DONE;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return DNS_LOOKUP_FAILED;
	w->cb = cb;
	w->arg = arg;
	w->port = port;
	w->next = e->waiters;
	e->waiters = w;
	return DNS_LOOKUP_PENDING;
}

void dns_resolve_cancel(DnsResolver *r, DnsResolveCb cb, void *arg)
{
	for (HostEntry *e = r->hosts; e; e = e->next) {
		Waiter **pp = &e->waiters;

		while (*pp) {
			if ((*pp)->cb == cb && (*pp)->arg == arg) {
				Waiter *w = *pp;

				*pp = w->next;
				free(w);
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}

void dns_resolver_foreach(const DnsResolver *r, void (*fn)(void *arg, const DnsHostInfo *h),
			  void *arg)
{
	double now = now_of(r);

	for (const HostEntry *e = r->hosts; e; e = e->next) {
		DnsHostInfo h;
		size_t used = 0;

		memset(&h, 0, sizeof(h));
		h.name = e->name;
		h.naddrs = e->naddrs;
		for (int i = 0; i < e->naddrs && used + 1 < sizeof(h.addresses); i++) {
			char a[64];

			format_addr(&e->addrs[i], a, sizeof(a));
			used += (size_t)snprintf(h.addresses + used, sizeof(h.addresses) - used,
						 "%s%s", i ? "," : "", a);
		}
		h.ttl_left = now < e->expires ? (int)(e->expires - now + 0.5) : 0;
		h.stale = e->naddrs > 0 && now >= e->expires;
		h.pending = e->pending;
		h.last_error = e->last_error;
		fn(arg, &h);
	}
}
