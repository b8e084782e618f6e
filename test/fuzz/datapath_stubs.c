/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Link-time stand-ins for what the data path fuzz target leaves out: the process control of
 * pooler/main.c, the HA routing of pooler/routing.c and the DNS resolver. Its databases are
 * unix socket paths (never resolved) and none is a cluster= database, so the routing and
 * resolver stubs are never reached; if one is, the input found a path the target does not model
 * and the stub aborts so that it is seen.
 */
#include "dns/resolver.h"
#include "pooler/control.h"
#include "pooler/routing.h"

#include <stdio.h>
#include <stdlib.h>

usec_t pooler_start_time;

bool pooler_reload(char *err, size_t errlen)
{
	snprintf(err, errlen, "RELOAD is not available in the fuzz target");
	return false;
}

void pooler_shutdown(ShutdownMode mode)
{
	(void)mode; /* SHUTDOWN from the admin console: the target keeps running */
}

void main_check_shutdown(void)
{
}

void pooler_pause(Database *db)
{
	(void)db;
}

void pooler_resume(Database *db)
{
	(void)db;
}

bool routing_target(Database *db, char *host, size_t hostlen, int *port, char *member,
		    size_t memberlen, char *err, size_t errlen)
{
	fprintf(stderr, "datapath_fuzz: routing_target called for a non-cluster database\n");
	abort();
}

bool routing_failover(const char *member, bool force, char *err, size_t errlen)
{
	snprintf(err, errlen, "no cluster configured");
	return false;
}

bool routing_maintenance(bool on, char *err, size_t errlen)
{
	snprintf(err, errlen, "no cluster configured");
	return false;
}

DnsLookup dns_resolve(DnsResolver *r, const char *host, int port, struct sockaddr_storage *out,
		      socklen_t *outlen, DnsResolveCb cb, void *arg)
{
	fprintf(stderr, "datapath_fuzz: dns_resolve(\"%s\") called: the target uses unix sockets\n",
		host);
	abort();
}

const char *dns_resolver_last_error(const DnsResolver *r, const char *host)
{
	return "no resolver in the fuzz target";
}
