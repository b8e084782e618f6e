/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The admin console: the virtual database "pgpilot" (alias "pgbouncer"), spoken with the simple
 * query protocol. SHOW commands report PgBouncer's columns (names and order as PgBouncer 1.18)
 * plus pgpilot's own (CLUSTER, HA, DNS); actions (RELOAD, PAUSE, RESUME, KILL, ...) need an
 * admin_users login. doc/admin.md lists every command and column.
 */
#ifndef PGPILOT_POOLER_ADMIN_H
#define PGPILOT_POOLER_ADMIN_H

#include "pooler/objects.h"

/*
 * Run one 'Q' message of an admin client (c->admin). <sql> holds <len> bytes, without the
 * terminating NUL. The reply (result set or ErrorResponse, then ReadyForQuery 'I') is queued on
 * the client, except for PAUSE and WAIT_CLOSE that must wait: they leave c->paused_reply or
 * c->wait_close set and admin_janitor() answers later. Returns false only when the client was
 * closed (it must not be touched then).
 */
bool admin_handle_query(Client *c, const char *sql, size_t len);

/* Called by the janitor (about every 100 ms): answer the PAUSE / WAIT_CLOSE commands whose
 * condition is now met. */
void admin_janitor(void);

/* An admin client is being closed: forget any command of it that is still waiting. */
void admin_client_gone(Client *c);

/* Free the waiting list (shutdown). */
void admin_cleanup(void);

#endif
