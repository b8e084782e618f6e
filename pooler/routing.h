/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The pooler's side of HA: it owns the HA agent (ha/agent.h) and the DNS updater, routes the
 * pools of cluster= databases by the agent's view (the leader for role=primary, healthy
 * replicas within replica_max_lag for role=replica, ...), closes servers whose member no longer
 * fits when the view changes (idle ones at once, busy ones when released), stops writes to the
 * local node when the agent fences it, publishes DNS on promotion, and fills SHOW CLUSTER, HA,
 * DNS and DNS_HOSTS. While no member fits, clients wait in the pool queue instead of failing.
 */
#ifndef PGPILOT_POOLER_ROUTING_H
#define PGPILOT_POOLER_ROUTING_H

#include "pooler/objects.h"

struct event_base;

/* Check the HA settings against [databases], start the agent and the DNS updater. False with
 * err on a configuration that cannot work (pgpilot then exits 1). */
bool routing_start(struct event_base *base, char *err, size_t errlen) _MUSTCHECK;
/* RELOAD: may this new configuration replace the running one? (cluster= databases need the
 * running ha_mode and [cluster] name.) */
bool routing_check_config(const Config *c, char *err, size_t errlen) _MUSTCHECK;
/* RELOAD: [dns] may change (the updater is rebuilt); [cluster] needs a restart. */
void routing_reload(void);
void routing_stop(void);

/* Host, port and member for the next server of a cluster= database; false with err when no
 * member fits now (the pool waits: its clients are not failed). */
bool routing_target(Database *db, char *host, size_t hostlen, int *port, char *member,
		    size_t memberlen, char *err, size_t errlen) _MUSTCHECK;

/* Admin console: FAILOVER <member> [FORCE] and MAINTENANCE ON|OFF; false with err. */
bool routing_failover(const char *member, bool force, char *err, size_t errlen) _MUSTCHECK;
bool routing_maintenance(bool on, char *err, size_t errlen) _MUSTCHECK;

#endif
