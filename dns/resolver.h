/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Backend host name resolution with a cache: ares_getaddrinfo() on a channel using the system
 * resolver, never blocking. Addresses are cached for their TTL (capped by dns_max_ttl) and handed
 * out in turn. When a name stops resolving, its last good addresses stay usable for dns_stale_keep
 * seconds after they expired, and the entry says so (SHOW DNS_HOSTS).
 *
 * Interface: dns_resolver_new / _free, dns_resolve, dns_resolve_cancel, dns_resolver_foreach.
 */
#ifndef PGPILOT_DNS_RESOLVER_H
#define PGPILOT_DNS_RESOLVER_H

#include "protocol/bytes.h"

#include <sys/socket.h>

struct event_base;

typedef struct DnsResolverOptions {
	const char *servers_csv; /* NULL = /etc/resolv.conf (tests point it at a test server) */
	int max_ttl;             /* cache at most this long, seconds (at least 1 s) */
	int stale_keep;          /* use expired addresses this long when lookups fail, seconds */
	int family;              /* AF_UNSPEC (0), AF_INET or AF_INET6 */
	int timeout_ms;          /* per DNS try; 0 = 2000 */
	int tries;               /* 0 = 2 */
	double (*clock)(void);   /* monotonic seconds; NULL = CLOCK_MONOTONIC (tests inject) */
} DnsResolverOptions;

typedef struct DnsResolver DnsResolver;

DnsResolver *dns_resolver_new(struct event_base *base, const DnsResolverOptions *opts, char *err,
			      size_t errlen);
/* Pending callbacks are not called. Not from inside a resolve callback. */
void dns_resolver_free(DnsResolver *r);

typedef enum DnsLookup {
	DNS_LOOKUP_DONE,    /* *out holds an address now */
	DNS_LOOKUP_PENDING, /* a lookup runs; <cb> will be called once, later, from the loop */
	DNS_LOOKUP_FAILED,  /* no usable address; dns_resolver_last_error() says why */
} DnsLookup;
const char *dns_lookup_name(DnsLookup l);

/* <addr> is NULL on failure, with <errmsg> set; the address carries the requested port. */
typedef void (*DnsResolveCb)(void *arg, const char *host, const struct sockaddr *addr,
			     const char *errmsg);

/*
 * Get an address for <host>:<port>. Numeric hosts are answered at once without a cache entry.
 * Cached names return the next of their addresses in turn. Never calls <cb> synchronously.
 */
DnsLookup dns_resolve(DnsResolver *r, const char *host, int port, struct sockaddr_storage *out,
		      socklen_t *outlen, DnsResolveCb cb, void *arg);
/* Forget every waiting (cb, arg) pair, e.g. when the connection that asked goes away. */
void dns_resolve_cancel(DnsResolver *r, DnsResolveCb cb, void *arg);
/* Why the last lookup of <host> failed, or "" */
const char *dns_resolver_last_error(const DnsResolver *r, const char *host);

/* One cache entry, for SHOW DNS_HOSTS. Strings are valid during the callback only. */
typedef struct DnsHostInfo {
	const char *name;
	char addresses[512]; /* comma-separated */
	int naddrs;
	int ttl_left;           /* seconds until the addresses expire; 0 when expired */
	bool stale;             /* expired and kept because lookups fail */
	bool pending;           /* a lookup is running */
	const char *last_error; /* "" when the last lookup succeeded */
} DnsHostInfo;

void dns_resolver_foreach(const DnsResolver *r, void (*fn)(void *arg, const DnsHostInfo *h),
			  void *arg);

#endif
