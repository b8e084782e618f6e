/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The configuration: a PgBouncer-compatible ini file ([pgpilot] or [pgbouncer], [databases],
 * [users], %include) plus the auth_file (userlist.txt). config_load() builds a whole new Config
 * object; RELOAD swaps the pointer only when the new file is valid (style.md rule 18), so a bad
 * file never half-applies. Settings are described by an option table (name, type, offset,
 * reloadable, default) that SHOW CONFIG, SET and the optscan check all read.
 */
#ifndef PGPILOT_POOLER_CONFIG_H
#define PGPILOT_POOLER_CONFIG_H

#include "protocol/bytes.h"
#include "protocol/auth.h"

#include <stdint.h>

typedef int64_t usec_t; /* durations in microseconds */
#define USEC 1000000LL

typedef enum PoolMode {
	POOL_SESSION,	  /* server linked for the client's whole session */
	POOL_TRANSACTION, /* server linked for one transaction */
	POOL_STATEMENT,	  /* server linked for one statement; no multi-statement transactions */
	POOL_INHERIT = -1 /* per-database/user: use the global setting */
} PoolMode;
const char *pool_mode_name(int mode);

typedef enum AuthType {
	AUTH_TRUST,	/* no password asked */
	AUTH_PLAIN,	/* clear-text password asked */
	AUTH_MD5,	/* md5 asked (SCRAM secrets in auth_file fall back to scram) */
	AUTH_SCRAM,	/* SCRAM-SHA-256 asked */
	AUTH_ANY,	/* like trust, any user name accepted without auth_file entry */
} AuthType;
const char *auth_type_name(AuthType t);

typedef enum RouteRole {
	ROLE_NONE,	     /* fixed host= / port= target */
	ROLE_PRIMARY,	     /* cluster leader only */
	ROLE_REPLICA,	     /* healthy replicas only; wait when none */
	ROLE_PREFER_REPLICA, /* replicas, else the primary */
	ROLE_ANY,	     /* any healthy member */
} RouteRole;
const char *route_role_name(RouteRole r);

/* One [databases] entry: "name = key=value ..." */
typedef struct DatabaseCfg {
	char *name;	   /* the name clients connect to; "*" is the fallback entry */
	char *host;	   /* host name, IP, or unix socket dir (starts with '/'); NULL = default */
	int port;	   /* default 5432 */
	char *dbname;	   /* database on the server; NULL = same as name */
	char *user;	   /* forced server user; NULL = the client's */
	char *password;	   /* password for the forced user */
	char *auth_user;   /* reserved (auth_query); parsed, not yet used */
	int pool_size;	   /* -1 = default_pool_size */
	int min_pool_size; /* -1 = global */
	int reserve_pool;  /* -1 = global */
	int pool_mode;	   /* POOL_INHERIT = global */
	int max_db_connections; /* 0 = unlimited, -1 = global */
	char *connect_query;	/* run once on each new server connection */
	char *application_name; /* forced application_name */
	char *cluster;		/* HA routing: cluster name (ROLE_* below); NULL = fixed host */
	RouteRole role;
	int64_t replica_max_lag; /* bytes; -1 = unlimited */
	int line;		 /* where it was defined, for messages */
	char *file;
} DatabaseCfg;

/* One [users] entry: "name = pool_mode=... max_user_connections=..." */
typedef struct UserCfg {
	char *name;
	int pool_mode;		  /* POOL_INHERIT = database/global */
	int max_user_connections; /* -1 = global */
} UserCfg;

/* One auth_file line. */
typedef struct AuthUser {
	char *name;
	char *secret; /* as in the file */
	SecretKind kind;
	ScramSecret scram; /* when kind == SECRET_SCRAM */
} AuthUser;

#define CONFIG_MAX_SECTIONS 8
struct ConfigSection;

typedef struct Config {
	/* [pgpilot] / [pgbouncer] settings: names and defaults as PgBouncer's */
	char *listen_addr;
	int listen_port;
	char *unix_socket_dir;
	int unix_socket_mode;
	int auth_type;
	char *auth_file;
	char *admin_users;
	char *stats_users;
	int pool_mode;
	int max_client_conn;
	int default_pool_size;
	int min_pool_size;
	int reserve_pool_size;
	usec_t reserve_pool_timeout;
	int max_db_connections;
	int max_user_connections;
	char *server_reset_query;
	bool server_reset_query_always;
	char *server_check_query;
	usec_t server_check_delay;
	usec_t server_lifetime;
	usec_t server_idle_timeout;
	usec_t server_connect_timeout;
	usec_t server_login_retry;
	usec_t query_timeout;
	usec_t query_wait_timeout;
	usec_t client_idle_timeout;
	usec_t client_login_timeout;
	usec_t idle_transaction_timeout;
	char *ignore_startup_parameters;
	char *track_extra_parameters;
	char *logfile;
	char *pidfile;
	bool syslog;
	char *syslog_ident;
	char *syslog_facility;
	bool log_connections;
	bool log_disconnections;
	bool log_pooler_errors;
	bool log_stats;
	usec_t stats_period;
	bool tcp_keepalive;
	int tcp_keepidle;
	int tcp_keepintvl;
	int tcp_keepcnt;
	int pkt_buf;
	int max_packet_size;
	int max_prepared_statements; /* per server, transaction/statement mode; 0 = off */
	int listen_backlog;
	int verbose;
	char *server_tls_sslmode; /* only "disable" until TLS lands */
	char *client_tls_sslmode;
	usec_t suspend_timeout;
	usec_t shutdown_wait_timeout; /* not PgBouncer: SIGTERM waits at most this (0 = forever) */
	char *http_addr;	      /* HTTP API listen address (health endpoints); reserved */
	int http_port;		      /* 0 = no HTTP API */
	char *ha_mode;		      /* off | follow | agent: the [cluster] section says which */

	DatabaseCfg *databases;
	int n_databases;
	UserCfg *users;
	int n_users;
	AuthUser *auth_users; /* sorted by name, from auth_file */
	int n_auth_users;

	char *config_file; /* the main file, absolute */

	/* Data of the registered sections ([cluster], [dns], ...), see config_register_section(). */
	const struct ConfigSection *section_defs[CONFIG_MAX_SECTIONS];
	void *section_data[CONFIG_MAX_SECTIONS];
	int n_sections;
} Config;

typedef enum OptType {
	OPT_INT,
	OPT_BOOL,
	OPT_STRING,   /* NULL allowed: empty value */
	OPT_TIME,     /* seconds (fractions allowed) stored as usec_t */
	OPT_POOLMODE,
	OPT_AUTHTYPE,
	OPT_MODE_OCT, /* octal int (unix_socket_mode) */
	OPT_ROLE,     /* RouteRole: primary, replica, prefer_replica, any */
	OPT_BYTES,    /* int64_t byte count; kB/MB/GB/TB suffixes (1024 based) allowed */
} OptType;

/*
 * Extra check of an option's text after the type parse succeeded. Returns false with a message
 * in <msg> to reject the value; returns true with a non-empty <msg> to accept it with a warning.
 */
typedef bool (*ConfigCheckFn)(const char *value, char *msg, size_t msglen);

typedef struct ConfigOption {
	const char *name;
	OptType type;
	size_t offset;	 /* into Config */
	bool reloadable; /* can change at RELOAD / SET without restart */
	const char *defval;	 /* parsed into a fresh Config; NULL = zero / NULL */
	int64_t min, max;	 /* OPT_INT, OPT_MODE_OCT, OPT_TIME (seconds), OPT_BYTES;
				  * both 0 = [0, INT_MAX] */
	ConfigCheckFn check;	 /* optional */
} ConfigOption;

/* The [pgpilot] option table, NULL-terminated. */
extern const ConfigOption config_options[];

/* Error list collected while loading (style.md rule 12): every problem, with file:line. */
typedef struct ConfigErrors {
	char **msgs;
	int n;
	char **warnings; /* unknown keys and other non-fatal remarks */
	int nwarn;
} ConfigErrors;

void config_errors_cleanup(ConfigErrors *e);
/* Append "file:line: message" (or "file: message" when line is 0, or just the message when file
 * is NULL) to the errors or the warnings. Used by the loader and by section validators. */
void config_error(ConfigErrors *e, const char *file, int line, const char *fmt, ...) _PRINTF(4, 5);
void config_warning(ConfigErrors *e, const char *file, int line, const char *fmt, ...)
	_PRINTF(4, 5);

/*
 * Section registry (style.md rule 26: one option table per section, owned by its subsystem).
 * A section is registered once at start-up, before the first config_load(); every Config then
 * carries a zeroed struct of <size> bytes for it, filled with defaults and from the file, and
 * freed by config_free(). A section that nobody registered is ignored with one warning. The
 * [pgpilot] table itself is not registered: it is config_options.
 *
 * Two forms. Table form: <options> is a ConfigOption table with offsets into the struct; the
 * loader does defaults, parsing, unknown-key warnings, freeing of OPT_STRING fields and RELOAD
 * itself. Callback form (<options> NULL): for ha/ and dns/, which cannot use pooler types and
 * keep their own tables (e.g. dns_config_options), the glue in pooler/ wraps their functions in
 * init/cleanup/set/reload.
 */
typedef struct ConfigSection {
	const char *name;	     /* without brackets, e.g. "cluster" */
	const ConfigOption *options; /* table form: NULL-terminated; offsets into the struct */
	size_t size;		     /* sizeof the section's struct */
	/* Optional cross-checks once the whole file is read: false with a message in <err>. */
	bool (*validate)(void *data, char *err, size_t errlen);

	/* Callback form (all optional except set): */
	void (*init)(void *data);    /* fill defaults into the zeroed struct */
	void (*cleanup)(void *data); /* free what the struct owns (not the struct) */
	/* one "key = value": false with a message in <err> (reported as an error at the line) */
	bool (*set)(void *data, const char *key, const char *value, char *err, size_t errlen);
	/* RELOAD: put restart-only values of <old> back into <newdata>, config_warning() each;
	 * true when nothing had to be kept */
	bool (*reload)(void *newdata, const void *olddata, ConfigErrors *errs);
} ConfigSection;

/* False when the registry is full or the name is taken. <sec> must stay valid (static). */
bool config_register_section(const ConfigSection *sec) _MUSTCHECK;
/* Forget every registered section (tests). Configs loaded before must be freed first. */
void config_unregister_sections(void);
/* The struct of section <name> in <cfg>, or NULL when no such section is registered. */
void *config_section_data(const Config *cfg, const char *name);

/*
 * Load <path> (following %include) and its auth_file into a new Config. Returns NULL when any
 * error was found; every error is in <errs> as "file:line: message". Warnings may be present
 * either way.
 */
Config *config_load(const char *path, ConfigErrors *errs) _MUSTCHECK;
void config_free(Config *cfg);

/* Load only an auth_file into cfg (used by config_load; exposed for tests). */
bool config_load_auth_file(Config *cfg, const char *path, ConfigErrors *errs) _MUSTCHECK;

/* Lookups. */
const ConfigOption *config_find_option(const char *name);
/* Current value of an option as text (SHOW CONFIG); writes into buf. */
const char *config_format_option(const Config *cfg, const ConfigOption *opt, char *buf, size_t len);
/* Parse <value> into cfg (SET and the loader); false with a message in err. On success err may
 * hold a warning (e.g. a TLS mode that is accepted but treated as "disable"), else "". Does not
 * look at opt->reloadable: SET must refuse non-reloadable options itself. */
bool config_set_option(Config *cfg, const ConfigOption *opt, const char *value, char *err,
		       size_t errlen) _MUSTCHECK;
/* The same two on any option table: <base> is the struct the table's offsets point into. */
const char *config_option_format(const void *base, const ConfigOption *opt, char *buf, size_t len);
bool config_option_parse(void *base, const ConfigOption *opt, const char *value, char *err,
			 size_t errlen) _MUSTCHECK;
/* Option <name> in a NULL-terminated table (case-insensitive), or NULL. */
const ConfigOption *config_table_find(const ConfigOption *table, const char *name);

/*
 * RELOAD: for every option that is not reloadable and differs between <old> and <newcfg> (main
 * section and registered sections), put the old value back into <newcfg> and add a warning.
 * Returns true when nothing had to be kept back, false when a restart is needed to apply all.
 */
bool config_apply_reload(Config *newcfg, const Config *old, ConfigErrors *errs);

/* Exact name; else the "*" fallback entry when there is one; else NULL. */
const DatabaseCfg *config_find_database(const Config *cfg, const char *name);
const UserCfg *config_find_user(const Config *cfg, const char *name);
const AuthUser *config_find_auth_user(const Config *cfg, const char *name);
/* Is <name> in a comma/space-separated list like admin_users? */
bool config_list_contains(const char *list, const char *name);

#endif
