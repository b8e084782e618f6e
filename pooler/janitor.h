/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The janitor: one timer for every timeout and every bit of pool upkeep (min_pool_size,
 * idle and old servers, login retries, stats periods, pending admin replies, shutdown progress).
 */
#ifndef PGPILOT_POOLER_JANITOR_H
#define PGPILOT_POOLER_JANITOR_H

#include "protocol/bytes.h"

bool janitor_start(void) _MUSTCHECK;
void janitor_stop(void);

#endif
