/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The ini sections owned by other subsystems ([dns] by dns/, [cluster] by ha/), registered with
 * the loader through its callback form so that the pooler owns the file and each subsystem owns
 * what its keys mean.
 */
#ifndef PGPILOT_POOLER_SECTIONS_H
#define PGPILOT_POOLER_SECTIONS_H

#include "pooler/config.h"
#include "dns/dns_config.h"
#include "ha/ha_config.h"

/* Register every section; call once before the first config_load(). */
bool sections_register(void) _MUSTCHECK;

/* The [dns] settings of a loaded configuration (defaults when the file has no [dns]). */
const DnsConfig *sections_dns(const Config *cfg);

/* The [cluster] settings (defaults when the file has none). */
const HaConfig *sections_cluster(const Config *cfg);

#endif
