/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * dnsprobe: drives dns/ on a libevent loop for the integration tests, through the same API the HA
 * code calls. Settings are [dns] keys given as -o key=value (parsed by dns_config_set), then:
 *   dnsprobe [-o k=v]... primary ADDR            publish the primary address
 *   dnsprobe [-o k=v]... replicas [ADDR...]      publish the replica RRset
 *   dnsprobe [-o k=v]... [-s ip:port] resolve NAME [N]   resolve N times via the cache
 * Prints one "key=value ..." line per outcome; exit status 0 when all succeeded, 1 otherwise,
 * 2 on usage or configuration errors.
 */
#include "dns/dns_config.h"
#include "dns/dns_log.h"
#include "dns/resolver.h"
#include "dns/updater.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static int failures;
static int pending;

static void done_cb(void *arg, const DnsRecordStatus *st)
{
	printf("outcome=%s record=%s value=%s attempts=%d rcode=%d tsig_error=%d skew=%s%lld "
	       "detail=%s\n",
	       dns_outcome_name(st->outcome), st->name, st->value, st->attempts, st->rcode,
	       st->tsig_error, st->has_skew ? "" : "none", st->has_skew ? (long long)st->skew : 0LL,
	       st->detail);
	fflush(stdout);
	if (st->outcome != DNS_OUTCOME_OK)
		failures++;
	if (--pending == 0)
		event_base_loopexit(base, NULL);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	printf("outcome=probe-deadline\n");
	failures++;
	event_base_loopexit(base, NULL);
}

static void print_host(void *arg, const DnsHostInfo *h)
{
	printf("host=%s addresses=%s ttl_left=%d stale=%d last_error=%s\n", h->name, h->addresses,
	       h->ttl_left, h->stale, h->last_error);
}

static void resolved_cb(void *arg, const char *host, const struct sockaddr *addr,
			const char *errmsg)
{
	char text[64] = "";

	if (addr && addr->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, text,
			  sizeof(text));
	else if (addr && addr->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, text,
			  sizeof(text));
	printf("resolved=%s address=%s error=%s\n", host, addr ? text : "none",
	       errmsg ? errmsg : "");
	if (addr == NULL)
		failures++;
	if (--pending == 0)
		event_base_loopexit(base, NULL);
}

static int usage(void)
{
	fprintf(stderr, "usage: dnsprobe [-o key=value]... [-s ip:port] primary ADDR | replicas "
			"[ADDR...] | resolve NAME [COUNT]\n");
	return 2;
}

int main(int argc, char **argv)
{
	DnsConfig cfg;
	char err[1024];
	const char *servers = NULL;
	struct timeval limit = {120, 0};
	struct event *deadline;
	int i = 1;

	dns_config_init(&cfg);
	for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
		if (strcmp(argv[i], "-s") == 0) {
			servers = argv[i + 1];
		} else if (strcmp(argv[i], "-o") == 0) {
			char *kv = argv[i + 1], *eq = strchr(kv, '=');

			if (eq == NULL)
				return usage();
			*eq = '\0';
			if (!dns_config_set(&cfg, kv, eq + 1, err, sizeof(err))) {
				fprintf(stderr, "dnsprobe: %s\n", err);
				return 2;
			}
		} else {
			return usage();
		}
	}
	if (i >= argc)
		return usage();
	base = event_base_new();
	deadline = evtimer_new(base, deadline_cb, NULL);
	evtimer_add(deadline, &limit);

	if (strcmp(argv[i], "resolve") == 0) {
		DnsResolverOptions ro = {.servers_csv = servers,
					 .max_ttl = cfg.dns_max_ttl,
					 .stale_keep = cfg.dns_stale_keep};
		DnsResolver *r;
		int count = i + 2 < argc ? atoi(argv[i + 2]) : 1;

		if (i + 1 >= argc)
			return usage();
		r = dns_resolver_new(base, &ro, err, sizeof(err));
		if (r == NULL) {
			fprintf(stderr, "dnsprobe: %s\n", err);
			return 2;
		}
		for (int k = 0; k < count; k++) {
			struct sockaddr_storage ss;
			socklen_t sl;
			DnsLookup st;

			pending++;
			st = dns_resolve(r, argv[i + 1], 5432, &ss, &sl, resolved_cb, NULL);
			if (st == DNS_LOOKUP_DONE)
				resolved_cb(NULL, argv[i + 1], (struct sockaddr *)&ss, NULL);
			else if (st == DNS_LOOKUP_FAILED)
				resolved_cb(NULL, argv[i + 1], NULL, "failed at once");
			else
				event_base_dispatch(base);
		}
		dns_resolver_foreach(r, print_host, NULL);
		dns_resolver_free(r);
	} else {
		char verr[2048];
		DnsUpdater *u;
		bool ok;

		if (!dns_config_validate(&cfg, verr, sizeof(verr))) {
			fprintf(stderr, "dnsprobe: invalid [dns] settings: %s\n", verr);
			return 2;
		}
		u = dns_updater_new(base, &cfg, done_cb, NULL, err, sizeof(err));
		if (u == NULL) {
			fprintf(stderr, "dnsprobe: %s\n", err);
			return 2;
		}
		pending = 1;
		if (strcmp(argv[i], "primary") == 0 && i + 1 < argc)
			ok = dns_publish_primary(u, argv[i + 1], err, sizeof(err));
		else if (strcmp(argv[i], "replicas") == 0)
			ok = dns_publish_replicas(u, (const char *const *)argv + i + 1,
						  argc - i - 1, err, sizeof(err));
		else
			return usage();
		if (!ok) {
			fprintf(stderr, "dnsprobe: %s\n", err);
			return 2;
		}
		if (pending > 0)
			event_base_dispatch(base);
		dns_updater_free(u);
	}
	event_free(deadline);
	event_base_free(base);
	dns_config_cleanup(&cfg);
	return failures ? 1 : 0;
}
