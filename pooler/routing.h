/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Routing of cluster= databases: which member a pool's next server connects to, following the
 * HA agent's view (the leader for role=primary, healthy replicas within replica_max_lag for
 * role=replica, ...). When the view changes, servers connected to a member that no longer fits
 * are closed as soon as they are released, idle ones at once; while no member fits, clients wait
 * in the pool queue instead of failing.
 */
#ifndef PGPILOT_POOLER_ROUTING_H
#define PGPILOT_POOLER_ROUTING_H

#include "pooler/objects.h"

/* Host and port for the next server of a cluster= database; false with err when none fits now
 * (the pool waits, it does not fail its clients). */
bool routing_target(Database *db, char *host, size_t hostlen, int *port, char *err,
		    size_t errlen) _MUSTCHECK;

/* Is there a member to route this database to right now? */
bool routing_available(const Database *db);

/* Admin console: FAILOVER <member> [FORCE] and MAINTENANCE ON|OFF; false with err. */
bool routing_failover(const char *member, bool force, char *err, size_t errlen) _MUSTCHECK;
bool routing_maintenance(bool on, char *err, size_t errlen) _MUSTCHECK;

#endif
