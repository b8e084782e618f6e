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
 * the client, except for PAUSE and WAIT_CLOSE that may have to wait: the client is then kept on
 * a list (admin_is_waiting() is true) and admin_janitor() answers later. Returns false only
 * when the client was closed (it must not be touched then).
 */
bool admin_handle_query(Client *c, const char *sql, size_t len);

/* Does <c> still wait for the reply to a PAUSE or WAIT_CLOSE? While it does, the core should
 * not hand it the next query (return SB_PAUSE_CONSUMED); admin_janitor() resumes the socket
 * with sbuf_continue() after replying. */
bool admin_is_waiting(const Client *c);

/* Called by the janitor (about every 100 ms): answer the PAUSE / WAIT_CLOSE commands whose
 * condition is now met. */
void admin_janitor(void);

/* An admin client is being closed: forget any command of it that is still waiting. */
void admin_client_gone(Client *c);

/*
 * Rows of pgpilot's own SHOW commands come from the subsystems that own the data, so that the
 * console needs no knowledge of ha/ or dns/. A provider is called with the result set being
 * built and its column count; it calls <emit> once per row with exactly <ncols> values (text,
 * NULL = SQL NULL; copied at once). Columns are fixed by admin.c (doc/admin.md):
 *   "cluster":   name, role, state, host, port, timeline, lsn, lag_bytes, healthy, tags,
 *                lease_ttl_left
 *   "ha":        key, value          (without a provider: one row mode = off)
 *   "dns":       record, value, time, outcome, attempts
 *   "dns_hosts": hostname, ttl, addrs, last_error
 */
typedef void (*AdminRowFn)(void *rs, int ncols, const char *const *values);
typedef void (*AdminShowProvider)(AdminRowFn emit, void *rs, int ncols);
/* Register (or replace) the provider of SHOW <object>; <object> must stay valid (static). False
 * when the table is full. */
bool admin_set_show_provider(const char *object, AdminShowProvider fn) _MUSTCHECK;

/* Free the waiting list (shutdown). */
void admin_cleanup(void);

#endif
