/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Routing of cluster= databases by the HA view. See routing.h.
 */
#include "pooler/routing.h"

#include <stdio.h>

bool routing_target(Database *db, char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
	snprintf(err, errlen, "database \"%s\" routes by cluster \"%s\" but ha_mode is off", db->name,
		 db->cfg.cluster);
	return false;
}

bool routing_available(const Database *db)
{
	return db->cfg.cluster == NULL;
}

bool routing_failover(const char *member, bool force, char *err, size_t errlen)
{
	snprintf(err, errlen, "FAILOVER needs ha_mode = agent or follow");
	return false;
}

bool routing_maintenance(bool on, char *err, size_t errlen)
{
	snprintf(err, errlen, "MAINTENANCE needs ha_mode = agent or follow");
	return false;
}
