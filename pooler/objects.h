/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The pooler's core objects and their states: Client and Server connections (each an Sbuf plus
 * its state), Database and User as configured, and Pool, the (database, login user) pair that
 * owns server connections and queues waiting clients. Every object is on exactly one list of its
 * owner, named after its state (style.md rules 15 and 23); change_client_state() and
 * change_server_state() are the only ways to move them.
 */
#ifndef PGPILOT_POOLER_OBJECTS_H
#define PGPILOT_POOLER_OBJECTS_H

#include "pooler/config.h"
#include "pooler/list.h"
#include "pooler/prepared.h"
#include "pooler/sbuf.h"
#include "pooler/varcache.h"
#include "protocol/scram.h"

#include <netinet/in.h>

typedef enum ClientState {
	CL_FREE,	  /* not on any list (being created or freed) */
	CL_JUSTFREE,	  /* closed; parked on justfree_clients until the loop iteration ends */
	CL_LOGIN,	  /* startup packet and authentication in progress (login_clients) */
	CL_WAITING_LOGIN, /* authenticated; waits for the pool's first server to learn the
			   * server parameters it must report (pool->waiting_clients) */
	CL_ACTIVE,	  /* logged in; idle, or linked to a server (pool->active_clients) */
	CL_WAITING,	  /* has a request and waits for a server (pool->waiting_clients, FIFO) */
} ClientState;
const char *client_state_name(ClientState s);

typedef enum ServerState {
	SV_FREE,     /* not on any list */
	SV_JUSTFREE, /* closed; parked on justfree_servers */
	SV_LOGIN,    /* connecting and logging in (pool->new_servers) */
	SV_IDLE,     /* logged in, clean, unlinked (pool->idle_servers) */
	SV_ACTIVE,   /* linked to a client (pool->active_servers) */
	SV_USED,     /* released; needs reset/check before reuse (pool->used_servers) */
	SV_TESTED,   /* running the reset or check query (pool->tested_servers) */
} ServerState;
const char *server_state_name(ServerState s);

struct Pool;
struct Server;
typedef struct Database Database;

typedef struct PgAddr {
	uint8_t family; /* AF_INET, AF_INET6, AF_UNIX */
	uint16_t port;
	uint8_t addr[16];
} PgAddr;

/* Login-phase data, allocated at accept and freed when the client is logged in. */
typedef struct ClientLogin {
	uint8_t md5_salt[4];
	int auth_method;  /* AuthType being run */
	ScramServer scram;
	bool scram_started;
	char *database;   /* requested names, until the pool is found */
	char *user;
	char *password;	  /* clear-text password the client sent (plain auth only) */
} ClientLogin;

typedef struct Client {
	Sbuf sbuf;		 /* socket and I/O; must stay first */
	List head;		 /* on the list of its state */
	struct Pool *pool;	 /* NULL until the login picks one */
	struct User *user;	 /* who logged in (the pool's user may be a forced user=) */
	struct Server *link;	 /* server linked in, or NULL */
	ClientLogin *login;	 /* only during CL_LOGIN */
	uint8_t state;		 /* ClientState */
	uint8_t tx_state;	 /* last ReadyForQuery status seen by the client: 'I', 'T', 'E' */
	bool admin;		 /* on the admin console */
	bool admin_power;	 /* admin_users (not just stats_users) */
	bool ext_open;		 /* extended-protocol messages sent since the last Sync */
	bool xact_lost;		 /* its server died inside a transaction: fail the next request */
	bool discard_until_sync; /* swallowing an aborted extended-protocol batch */
	bool cancel_only;	 /* a CancelRequest connection: closed without a log line */
	bool scram_done;	 /* authenticated by SCRAM (ClientKey known) */
	bool ps_used;		 /* has sent a named Parse: its links track prepared statements */
	bool ssl_requested;	 /* answered an SSLRequest (one per connection, as PostgreSQL) */
	bool gss_requested;	 /* answered a GSSENCRequest (likewise) */
	uint16_t expected_z;	 /* ReadyForQuery messages still owed to the client */
	PgAddr addr;
	uint32_t cancel_id;	 /* BackendKeyData we issued: pid ... */
	uint32_t cancel_key;	 /* ... and secret key */
	struct Client *cancel_next; /* hash chain */
	usec_t connect_time;
	usec_t request_time;	 /* when the current request (or wait) started */
	usec_t xact_start;	 /* when the current transaction started (0 = none) */
	usec_t query_start;	 /* when the current query was sent */
	usec_t active_time;	 /* last request, for client_idle_timeout */
	VarCache vars;		 /* tracked parameters the client expects */
	PsClientMap ps;		 /* its named prepared statements (transaction/statement mode) */
} Client;

typedef struct Server {
	Sbuf sbuf;		/* must stay first */
	List head;
	struct Pool *pool;
	Client *link;
	uint8_t state;		/* ServerState */
	uint8_t tx_state;	/* from the server's last ReadyForQuery */
	bool ready;		/* logged in */
	bool close_needed;	/* RECONNECT/RELOAD: close instead of reuse */
	bool welcome_sent;	/* its ParameterStatus set became the pool's welcome */
	bool connect_query_pending;
	bool own_query_failed;	/* one of our own queries got an ErrorResponse */
	uint16_t skip_z;	/* ReadyForQuery messages of our own queries still to swallow */
	uint32_t backend_pid;	/* BackendKeyData from PostgreSQL, for cancels */
	uint32_t backend_key;
	PgAddr addr;		/* the address it connected to */
	PgAddr local_addr;
	uint32_t id;
	usec_t connect_time;
	usec_t request_time;	/* last activity */
	usec_t idle_since;
	ScramClient *scram;	/* during SASL login */
	PktBuf *login_params;	/* ParameterStatus messages seen during login */
	char *fatal_msg;	/* a FATAL error it sent before closing, for its client */
	const char *lost_sqlstate; /* told to its client when closed mid-request (NULL: 08006) */
	char member[64];	/* cluster= databases: the member it is connected to */
	VarCache vars;		/* the server's current parameter values */
	PsServer *ps;		/* prepared statements it holds, replies its link owes */
	bool ps_on;		/* this link rewrites named prepared statements */
} Server;

struct Database {
	List head;		/* all_databases */
	char *name;
	DatabaseCfg cfg;	/* deep copy of its [databases] entry, refreshed at RELOAD */
	bool admin;		/* the virtual admin database */
	bool from_fallback;	/* created from the "*" entry */
	bool disabled;		/* DISABLE */
	bool paused;		/* PAUSE db */
	bool db_dead;		/* removed from the config at RELOAD; freed when unused */
	bool wait_close;
	int server_count;	/* for max_db_connections */
};

typedef struct User {
	List head;		/* all_users */
	char *name;
	char *secret;		/* from auth_file or [databases] password; NULL if none */
	SecretKind kind;
	ScramSecret scram;
	bool have_scram_keys;	/* ClientKey recovered from a client's SCRAM login */
	uint8_t scram_client_key[SCRAM_KEY_LEN];
	uint8_t scram_server_key[SCRAM_KEY_LEN];
	char *passthrough_password; /* clear-text password sent by a client (plain auth) */
	struct Database *forced_for; /* the database whose user= this is, or NULL */
	int pool_mode;		/* from [users]; POOL_INHERIT */
	int max_user_connections;
	int server_count;
	int client_count;
} User;

/* Per-pool statistics, as PgBouncer counts them. */
typedef struct PoolStats {
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t server_assignment_count;
	uint64_t bytes_recv;	/* from clients */
	uint64_t bytes_sent;	/* to clients */
	uint64_t xact_time;	/* usec */
	uint64_t query_time;
	uint64_t wait_time;
	uint64_t client_parse_count, server_parse_count, bind_count;
} PoolStats;

typedef struct Pool {
	List head;		  /* all_pools */
	Database *db;
	User *user;		  /* the login user of its servers */
	List active_clients;
	List waiting_clients;
	List active_servers;
	List idle_servers;
	List used_servers;
	List tested_servers;
	List new_servers;
	int n_active_clients, n_waiting_clients;
	int n_active_servers, n_idle_servers, n_used_servers, n_tested_servers, n_new_servers;
	VarCache welcome;	  /* tracked server parameters clients are told at login */
	uint8_t *welcome_msg;	  /* the other ParameterStatus messages, as received */
	uint32_t welcome_len;
	bool have_welcome;
	bool last_login_failed;
	bool resolving;		  /* a host name lookup for its next server runs */
	bool no_route;		  /* cluster= database with no member to route to now */
	char *last_login_error;	  /* message of the last failed server login */
	usec_t last_connect_failed_time;
	usec_t last_connect_time;
	PoolStats stats;
	PoolStats older_stats;	  /* at the previous stats_period tick */
	PoolStats avg;		  /* per-second averages over the last period */
} Pool;

/* Global lists and counters (objects.c). */
extern List all_pools;
extern List all_databases;
extern List all_users;
extern List login_clients;
extern Config *cfg; /* the configuration in force */
extern int n_clients_total;
extern int n_servers_total;

#endif
