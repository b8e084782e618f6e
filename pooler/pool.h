/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Pools: finding databases, users and (database, user) pools; the state lists of clients and
 * servers; linking a waiting client to a server and releasing it; the one exit for every
 * connection (disconnect_client / disconnect_server) with deferred freeing.
 */
#ifndef PGPILOT_POOLER_POOL_H
#define PGPILOT_POOLER_POOL_H

#include "pooler/log.h"
#include "pooler/objects.h"

#include <event2/event.h>

#include "dns/resolver.h"

extern struct event_base *pooler_base;
/* Backend host names are resolved here (never with a blocking call). */
extern DnsResolver *pooler_resolver;

bool pool_global_init(struct event_base *base) _MUSTCHECK;
void pool_global_cleanup(void);

/* Cached loop time in microseconds (one clock read per loop iteration). */
usec_t get_cached_time(void);

/* Lookups; NULL when the name is not configured (and no "*" fallback applies). */
/* The database a startup packet names, without creating it: *known says whether the name
 * resolves (a [databases] entry, the "*" entry, or a database in use); the result is the
 * existing object or NULL. Auto-databases ("*") are only created by database_lookup() once the
 * client has authenticated, so unauthenticated startups cannot make the pooler allocate. */
Database *database_peek(const char *name, bool *known);
Database *database_lookup(const char *name);
User *user_lookup_or_create(const char *name);
Pool *pool_lookup_or_create(Database *db, User *user);
/* The user its servers log in as: the database's forced user=, else the client's. */
User *database_login_user(Database *db, User *client_user);
/* Apply a freshly loaded configuration to databases and users (start-up and RELOAD). */
void pool_apply_config(void);

/* Effective settings of a pool (per-database, per-user, then global). */
int pool_effective_mode(const Pool *pool);
int pool_effective_size(const Pool *pool);
int pool_effective_min_size(const Pool *pool);
int pool_effective_reserve(const Pool *pool);

void change_client_state(Client *c, ClientState st);
void change_server_state(Server *s, ServerState st);

/*
 * A client has a request: link it to a server now if one is idle, else queue it (FIFO) and make
 * sure a server is on its way. Returns true when linked.
 */
bool pool_assign_server(Client *c);
/* The linked transaction/statement/session is over and the server is clean: unlink it. */
void pool_release_server(Server *s);
/* Serve waiting clients and open servers as limits allow. Cheap when nothing waits. */
void pool_activate(Pool *pool);
/* A server finished logging in or became clean again. */
void pool_server_ready(Server *s);

/* The one exit for connections. <sqlstate> NULL = no ErrorResponse to a client. */
void disconnect_client(Client *c, const char *sqlstate, const char *fmt, ...) _PRINTF(3, 4);
void disconnect_server(Server *s, const char *fmt, ...) _PRINTF(2, 3);
/* Does a server of a cluster= pool belong to a set being closed? */
typedef bool (*PoolServerMatch)(const Pool *p, const Server *s, const void *arg);
/* Close at once every server of a cluster= pool that <match> picks, idle or busy; a client with
 * a request in flight gets <sqlstate> (NULL: 08006) with <reason>. Returns how many closed. */
int pool_close_cluster_servers(PoolServerMatch match, const void *arg, const char *sqlstate,
			       const char *reason);
/*
 * Close at once every server of a cluster= pool connected to <member>, idle or busy: a client
 * with a request in flight on one gets an ERROR with <sqlstate> and the reason as its message
 * (the connection is kept where the protocol allows, as for 08006). Returns how many closed.
 */
int pool_close_servers_of_member(const char *member, const char *sqlstate, const char *fmt, ...)
    _PRINTF(3, 4);

/* Free parked objects; runs after the callbacks of the current loop iteration. */
void pool_schedule_cleanup(void);

/* Cancel-key registry: our BackendKeyData -> client. */
void cancel_register(Client *c);
void cancel_unregister(Client *c);
Client *cancel_lookup(uint32_t id, uint32_t key);

/* Log with a connection's identity (style.md rule 19). */
void slog_client(LogLevel lvl, const Client *c, const char *fmt, ...) _PRINTF(3, 4);
void slog_server(LogLevel lvl, const Server *s, const char *fmt, ...) _PRINTF(3, 4);
const char *pgaddr_str(const PgAddr *a, char *buf, size_t len);

/* Slabs of the core objects (SHOW MEM, allocation in client/server). */
Client *client_alloc(void);
/* Return a client that never got on a list. */
void client_free_raw(Client *c);
Server *server_alloc(void);
void slab_release_server(Server *s);

/* PAUSE / RESUME / RECONNECT / KILL helpers for the admin console and signals. */
bool pool_is_paused(const Pool *pool);
extern bool pooler_paused;	/* global PAUSE */
extern bool pooler_shutting_down;
/* Does a pool (db NULL = all) still have servers that are linked or in use? */
bool pools_quiet(const Database *db);
void pools_reconnect(Database *db); /* close servers when released */
void pools_kill(Database *db);	    /* drop all clients and servers of db */
bool pools_wait_close_done(const Database *db);

#endif
