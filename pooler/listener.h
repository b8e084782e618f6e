/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Listening sockets: TCP on listen_addr:listen_port and the Unix socket in unix_socket_dir.
 */
#ifndef PGPILOT_POOLER_LISTENER_H
#define PGPILOT_POOLER_LISTENER_H

#include "protocol/bytes.h"

/* Open every configured listener; false (after logging why) when none could be opened or a
 * configured one failed. */
bool listener_start(void) _MUSTCHECK;
/* Close them all (graceful shutdown stops accepting first); removes the Unix socket file. */
void listener_stop(void);

#endif
