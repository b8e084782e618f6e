/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Server connections: non-blocking connect, login (startup, trust/cleartext/md5/SCRAM, parameter
 * status, BackendKeyData), our own queries (reset, check, connect_query, parameter SETs) whose
 * replies are swallowed, and the linked data path that spots the end of each transaction.
 */
#ifndef PGPILOT_POOLER_SERVER_H
#define PGPILOT_POOLER_SERVER_H

#include "pooler/objects.h"

/* Open one more server connection for the pool (asynchronously). */
void server_launch(Pool *pool);
/* A link starts: queue SETs for the tracked parameters the client expects and the server
 * differs in; set up prepared-statement tracking for the link (transaction and statement mode),
 * closing the least recently used statements above max_prepared_statements. */
void server_sync_params(Server *s, Client *c);
/* Send the ParseComplete/CloseComplete messages the pooler answers itself that are due now
 * (every reply before them reached the client); when earlier replies still wait to be sent, the
 * server's sbuf calls back once they are. False if the client was closed. */
bool server_ps_emit(Server *s);
/* Has the server been idle longer than server_check_delay (and a check query is set)? */
bool server_needs_check(const Server *s);
/* Run server_check_query / server_reset_query; the server becomes idle when it answers. */
void server_start_check(Server *s);
void server_start_reset(Server *s);
/* Send a CancelRequest for the server's backend on a new connection. */
void server_send_cancel(const Server *s);

/* Track prepared statements on the server's current link from now on (nothing may be in
 * flight); false when tracking does not apply (session mode, max_prepared_statements = 0). */
bool server_ps_enable(Server *s);

#endif
