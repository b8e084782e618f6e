/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of the configuration loader (pooler/config.c, ini.c, userlist.c) on the files in
 * data/config/: defaults, every option, the [pgbouncer] alias, %include and its loops, every
 * error class with its file:line (all of them collected), [databases] connection strings,
 * [users], the auth_file, SET/SHOW round trips, RELOAD and the section registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pooler/config.h"
#include "pooler/userlist.h"

#define D "data/config/"

/* Index of the first message containing <needle>, or -1. */
static int find_msg(char **msgs, int n, const char *needle)
{
	for (int i = 0; i < n; i++)
		if (msgs[i] && strstr(msgs[i], needle))
			return i;
	return -1;
}

#define assert_has_error(e, needle)                                                                \
	do {                                                                                       \
		if (find_msg((e)->msgs, (e)->n, (needle)) < 0) {                                   \
			for (int i_ = 0; i_ < (e)->n; i_++)                                        \
				print_message("  error: %s\n", (e)->msgs[i_]);                     \
			fail_msg("no error containing: %s", (needle));                             \
		}                                                                                  \
	} while (0)

#define assert_has_warning(e, needle)                                                              \
	do {                                                                                       \
		if (find_msg((e)->warnings, (e)->nwarn, (needle)) < 0) {                           \
			for (int i_ = 0; i_ < (e)->nwarn; i_++)                                    \
				print_message("  warning: %s\n", (e)->warnings[i_]);               \
			fail_msg("no warning containing: %s", (needle));                           \
		}                                                                                  \
	} while (0)

static Config *load_ok(const char *path, ConfigErrors *e)
{
	Config *cfg = config_load(path, e);

	if (!cfg) {
		for (int i = 0; i < e->n; i++)
			print_message("  error: %s\n", e->msgs[i]);
		fail_msg("%s did not load", path);
	}
	assert_int_equal(e->n, 0);
	return cfg;
}

static const char *fmt(const Config *cfg, const char *name)
{
	static char buf[256];
	const ConfigOption *o = config_find_option(name);

	assert_non_null(o);
	return config_format_option(cfg, o, buf, sizeof(buf));
}

/* An empty [pgpilot] section gives PgBouncer's defaults. */
static void test_defaults(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "minimal.ini", &e);

	assert_null(cfg->listen_addr);
	assert_int_equal(cfg->listen_port, 6433);
	assert_string_equal(cfg->unix_socket_dir, "/tmp");
	assert_int_equal(cfg->unix_socket_mode, 0777);
	assert_int_equal(cfg->auth_type, AUTH_TRUST);
	assert_int_equal(cfg->pool_mode, POOL_SESSION);
	assert_int_equal(cfg->max_client_conn, 100);
	assert_int_equal(cfg->default_pool_size, 20);
	assert_int_equal(cfg->reserve_pool_timeout, 5 * USEC);
	assert_string_equal(cfg->server_reset_query, "DISCARD ALL");
	assert_string_equal(cfg->server_check_query, "select 1");
	assert_int_equal(cfg->server_lifetime, 3600 * USEC);
	assert_int_equal(cfg->server_idle_timeout, 600 * USEC);
	assert_int_equal(cfg->query_wait_timeout, 120 * USEC);
	assert_int_equal(cfg->client_login_timeout, 60 * USEC);
	assert_null(cfg->ignore_startup_parameters);
	assert_string_equal(cfg->track_extra_parameters, "IntervalStyle");
	assert_string_equal(cfg->syslog_ident, "pgpilot");
	assert_string_equal(cfg->syslog_facility, "daemon");
	assert_true(cfg->log_connections);
	assert_true(cfg->tcp_keepalive);
	assert_false(cfg->syslog);
	assert_int_equal(cfg->pkt_buf, 4096);
	assert_int_equal(cfg->max_packet_size, 2147483647);
	assert_int_equal(cfg->listen_backlog, 128);
	assert_string_equal(cfg->server_tls_sslmode, "disable");
	assert_string_equal(cfg->client_tls_sslmode, "disable");
	assert_int_equal(cfg->suspend_timeout, 10 * USEC);
	assert_int_equal(cfg->http_port, 0);
	assert_int_equal(cfg->n_databases, 1);
	assert_string_equal(cfg->databases[0].name, "app");
	assert_string_equal(cfg->databases[0].host, "127.0.0.1");
	assert_string_equal(cfg->databases[0].dbname, "appdb");
	assert_int_equal(cfg->databases[0].port, 5432);
	assert_int_equal(cfg->databases[0].pool_size, -1);
	assert_int_equal(cfg->databases[0].pool_mode, POOL_INHERIT);
	assert_int_equal(cfg->databases[0].role, ROLE_NONE);
	assert_int_equal(cfg->databases[0].replica_max_lag, -1);
	assert_string_equal(cfg->databases[0].file, D "minimal.ini");
	assert_int_equal(cfg->databases[0].line, 7);
	assert_non_null(strstr(cfg->config_file, "/data/config/minimal.ini"));
	assert_true(cfg->config_file[0] == '/');
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* full.ini sets every option to a non-default value: each must differ from a fresh default. */
static void test_full_every_option(void **state)
{
	ConfigErrors e = {0}, e2 = {0};
	Config *cfg = load_ok(D "full.ini", &e);
	Config *def = load_ok(D "minimal.ini", &e2);
	char a[256], want[256];
	int n = 0;

	for (const ConfigOption *o = config_options; o->name; o++, n++) {
		/* "disable" is its only accepted value until TLS lands */
		if (strcmp(o->name, "client_tls_sslmode") == 0)
			continue;
		config_format_option(cfg, o, a, sizeof(a));
		/* minimal.ini changes listen_port and auth_type: compare those to the table */
		if (o->defval &&
		    (strcmp(o->name, "listen_port") == 0 || strcmp(o->name, "auth_type") == 0))
			snprintf(want, sizeof(want), "%s", o->defval);
		else
			config_format_option(def, o, want, sizeof(want));
		if (strcmp(a, want) == 0)
			fail_msg("option %s is not set by full.ini (value \"%s\")", o->name, a);
	}
	assert_true(n >= 55);
	assert_string_equal(cfg->listen_addr, "*");
	assert_int_equal(cfg->unix_socket_mode, 0700);
	assert_int_equal(cfg->auth_type, AUTH_SCRAM);
	assert_int_equal(cfg->reserve_pool_timeout, 2500000);
	assert_int_equal(cfg->server_lifetime, 7200 * USEC);
	assert_int_equal(cfg->server_login_retry, 500000);
	assert_int_equal(cfg->query_wait_timeout, 180 * USEC);
	assert_int_equal(cfg->idle_transaction_timeout, 250000);
	assert_true(cfg->server_reset_query_always);
	assert_false(cfg->log_connections);
	assert_int_equal(cfg->verbose, 2);
	assert_string_equal(fmt(cfg, "unix_socket_mode"), "0700");
	assert_string_equal(fmt(cfg, "reserve_pool_timeout"), "2.5");
	assert_string_equal(fmt(cfg, "idle_transaction_timeout"), "0.25");
	assert_string_equal(fmt(cfg, "auth_type"), "scram-sha-256");
	assert_string_equal(fmt(cfg, "pool_mode"), "transaction");
	assert_string_equal(fmt(cfg, "syslog"), "1");
	/* server_tls_sslmode = prefer is accepted with a warning at its line */
	assert_has_warning(&e, D "full.ini:52: server_tls_sslmode \"prefer\" works as \"disable\"");
	/* the auth_file is relative to the config file */
	assert_int_equal(cfg->n_auth_users, 4);
	assert_non_null(config_find_auth_user(cfg, "carol"));
	assert_int_equal(cfg->n_databases, 3);
	assert_int_equal(cfg->n_users, 1);
	config_free(cfg);
	config_free(def);
	config_errors_cleanup(&e);
	config_errors_cleanup(&e2);
}

/* [pgbouncer] is read as [pgpilot], so PgBouncer files load unchanged. */
static void test_pgbouncer_alias(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "pgbouncer_alias.ini", &e);

	assert_string_equal(cfg->listen_addr, "127.0.0.1");
	assert_int_equal(cfg->pool_mode, POOL_TRANSACTION);
	assert_int_equal(e.nwarn, 0);
	/* only a "*" entry: every name falls back to it */
	assert_non_null(config_find_database(cfg, "anything"));
	assert_string_equal(config_find_database(cfg, "anything")->name, "*");
	assert_string_equal(config_find_database(cfg, "x")->host, "/var/run/postgresql");
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* %include is relative to the including file and textual: the section carries in and out. */
static void test_include(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "include_main.ini", &e);

	assert_int_equal(cfg->listen_port, 6500);
	assert_int_equal(cfg->n_databases, 2);
	assert_string_equal(config_find_database(cfg, "a")->host, "10.0.0.1");
	assert_string_equal(config_find_database(cfg, "a")->file, D "inc/part.ini");
	assert_int_equal(config_find_database(cfg, "a")->line, 3);
	assert_string_equal(config_find_database(cfg, "b")->host, "10.0.0.2");
	assert_null(config_find_database(cfg, "c"));
	config_free(cfg);
	config_errors_cleanup(&e);
}

static void test_include_loop(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = config_load(D "include_loop_a.ini", &e);

	assert_null(cfg);
	assert_int_equal(e.n, 1);
	assert_has_error(&e, D "include_loop_b.ini:2: %include loop: \"" D
			       "include_loop_a.ini\" is already being read");
	config_errors_cleanup(&e);
}

static void test_include_missing(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = config_load(D "include_missing.ini", &e);

	assert_null(cfg);
	assert_int_equal(e.n, 2);
	assert_has_error(&e, D "include_missing.ini:2: could not open included file \"" D
			       "no_such_file.ini\"");
	assert_has_error(&e, D "include_missing.ini:3: %include needs a file name");
	config_errors_cleanup(&e);
}

static void test_missing_file(void **state)
{
	ConfigErrors e = {0};

	assert_null(config_load(D "does_not_exist.ini", &e));
	assert_int_equal(e.n, 1);
	assert_has_error(&e, "could not open configuration file \"" D "does_not_exist.ini\"");
	config_errors_cleanup(&e);
	/* NULL errs is allowed */
	assert_null(config_load(D "does_not_exist.ini", NULL));
}

/* Three mistakes give three messages, plus the unknown key as a warning. */
static void test_three_errors(void **state)
{
	ConfigErrors e = {0};

	assert_null(config_load(D "errors3.ini", &e));
	assert_int_equal(e.n, 3);
	assert_string_equal(e.msgs[0], D "errors3.ini:3: 70000 is outside the valid range for "
					 "parameter \"listen_port\" (1 .. 65535)");
	assert_string_equal(e.msgs[1], D "errors3.ini:5: invalid value for parameter "
					 "\"pool_mode\": \"sometimes\"");
	assert_string_equal(e.msgs[2], D "errors3.ini:8: database \"db1\": invalid value for "
					 "parameter \"port\": \"abc\"");
	assert_int_equal(e.nwarn, 1);
	assert_string_equal(e.warnings[0],
			    D "errors3.ini:4: unknown parameter \"no_such_option\" (ignored)");
	config_errors_cleanup(&e);
}

/* Every error class, each at its own line, all collected in one run. */
static void test_every_error_class(void **state)
{
	static const char *const expected[] = {
	    ":1: parameter \"stray\" is outside of any section",
	    ":2: invalid section header \"[pgpilot\"",
	    ":5: syntax error: expected \"key = value\"",
	    ":6: missing parameter name before \"=\"",
	    ":7: unknown directive \"%frobnicate\"",
	    ":8: invalid value for parameter \"max_client_conn\": \"12abc\"",
	    ":9: -1 is outside the valid range for parameter \"default_pool_size\"",
	    ":10: parameter \"log_stats\" requires a Boolean value, not \"maybe\"",
	    ":11: invalid value for parameter \"query_timeout\": \"5 fortnights\"",
	    ":12: invalid value for parameter \"pool_mode\": \"sometimes\"",
	    ":13: auth_type \"hba\" is not supported",
	    ":14: client_tls_sslmode \"require\": TLS is not supported yet",
	    ":15: server_tls_sslmode \"verify-full\": TLS is not supported yet",
	    ":16: 100 is outside the valid range for parameter \"pkt_buf\" (512 ..",
	    ":17: 10 is outside the valid range for parameter \"max_packet_size\" (1024 ..",
	    ":18: invalid value for parameter \"unix_socket_mode\": \"0999\"",
	    ":19: invalid value for parameter \"syslog_facility\": \"kernel\"",
	    ":20: 0 is outside the valid range for parameter \"listen_port\" (1 .. 65535)",
	    ":22: database \"d1\": unknown parameter \"bogus\"",
	    ":23: database \"d2\": unterminated quoted string in connection string",
	    ":24: database \"d3\": cluster and host cannot both be set",
	    ":25: database \"d4\": role requires cluster",
	    ":26: database \"d5\": invalid value for parameter \"role\": \"leader\"",
	    ":27: database \"d6\": missing \"=\" after \"port\" in connection string",
	    ":28: database \"d7\": replica_max_lag requires cluster",
	    ":30: user \"u1\": unknown parameter \"colour\"",
	    ":31: user \"u2\": invalid value for parameter \"max_user_connections\": \"x\"",
	};
	ConfigErrors e = {0};
	char needle[256];

	assert_null(config_load(D "errors_all.ini", &e));
	for (size_t i = 0; i < ARRAY_SIZE(expected); i++) {
		snprintf(needle, sizeof(needle), D "errors_all.ini%s", expected[i]);
		assert_has_error(&e, needle);
	}
	assert_int_equal(e.n, (int)ARRAY_SIZE(expected));
	config_errors_cleanup(&e);
}

/* Unknown sections are ignored with one warning per section name. */
static void test_unknown_sections(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "unknown_section.ini", &e);

	assert_int_equal(e.nwarn, 2);
	assert_string_equal(e.warnings[0], D "unknown_section.ini:3: section [cluster] is not "
					     "supported (its settings are ignored)");
	assert_string_equal(e.warnings[1], D "unknown_section.ini:6: section [dns] is not "
					     "supported (its settings are ignored)");
	/* the [pgpilot] after them is read again */
	assert_int_equal(cfg->listen_port, 6502);
	assert_null(config_section_data(cfg, "cluster"));
	config_free(cfg);
	config_errors_cleanup(&e);
}

static void test_databases(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "databases.ini", &e);
	const DatabaseCfg *db;

	db = config_find_database(cfg, "quoted");
	assert_non_null(db);
	assert_string_equal(db->host, "db.example");
	assert_string_equal(db->dbname, "my db");
	assert_string_equal(db->password, "it's");
	assert_string_equal(db->user, "u x");
	assert_string_equal(db->connect_query, "SELECT 'a b'");

	db = config_find_database(cfg, "spaced");
	assert_string_equal(db->host, "10.1.1.1");
	assert_int_equal(db->port, 6000);

	db = config_find_database(cfg, "clustered");
	assert_string_equal(db->cluster, "main");
	assert_null(db->host);
	assert_int_equal(db->role, ROLE_PRIMARY);
	assert_int_equal(db->replica_max_lag, -1);

	db = config_find_database(cfg, "anyrole");
	assert_int_equal(db->role, ROLE_ANY);
	assert_int_equal(db->replica_max_lag, 1024);
	assert_int_equal(config_find_database(cfg, "pref")->role, ROLE_PREFER_REPLICA);

	/* a second definition replaces the first, with a warning */
	assert_string_equal(config_find_database(cfg, "dup")->host, "second");
	assert_has_warning(&e, D "databases.ini:10: database \"dup\" was already defined at " D
				 "databases.ini:9 (replaced)");

	/* names are case-sensitive; no "*" entry here, so unknown names give NULL */
	assert_non_null(config_find_database(cfg, "Mixed_Case"));
	assert_null(config_find_database(cfg, "mixed_case"));
	db = config_find_database(cfg, "empty");
	assert_non_null(db);
	assert_null(db->host);
	assert_int_equal(cfg->n_databases, 8);

	assert_int_equal(cfg->n_users, 2);
	assert_int_equal(config_find_user(cfg, "bob")->pool_mode, POOL_STATEMENT);
	assert_int_equal(config_find_user(cfg, "bob")->max_user_connections, -1);
	assert_int_equal(config_find_user(cfg, "carol")->pool_mode, POOL_INHERIT);
	assert_int_equal(config_find_user(cfg, "carol")->max_user_connections, 7);
	assert_null(config_find_user(cfg, "dave"));
	config_free(cfg);
	config_errors_cleanup(&e);
}

static void test_full_databases(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "full.ini", &e);
	const DatabaseCfg *db = config_find_database(cfg, "app");

	assert_int_equal(db->port, 5433);
	assert_string_equal(db->user, "app");
	assert_string_equal(db->password, "s3cret");
	assert_int_equal(db->pool_size, 10);
	assert_int_equal(db->min_pool_size, 1);
	assert_int_equal(db->reserve_pool, 2);
	assert_int_equal(db->pool_mode, POOL_STATEMENT);
	assert_int_equal(db->max_db_connections, 15);
	assert_string_equal(db->connect_query, "SET search_path TO app");
	assert_string_equal(db->application_name, "pilot");
	db = config_find_database(cfg, "ro");
	assert_int_equal(db->role, ROLE_REPLICA);
	assert_int_equal(db->replica_max_lag, 16 << 20);
	/* with a "*" entry, unknown names fall back to it */
	assert_string_equal(config_find_database(cfg, "other")->name, "*");
	assert_int_equal(config_find_user(cfg, "alice")->max_user_connections, 3);
	config_free(cfg);
	config_errors_cleanup(&e);
}

static void test_userlist(void **state)
{
	ConfigErrors e = {0};
	AuthUser *users;
	int n;
	const AuthUser *u;

	assert_true(userlist_load(D "userlist.txt", &users, &n, &e));
	assert_int_equal(e.n, 0);
	assert_int_equal(n, 4);
	/* sorted */
	for (int i = 1; i < n; i++)
		assert_true(strcmp(users[i - 1].name, users[i].name) < 0);
	u = userlist_find(users, n, "bob");
	assert_non_null(u);
	assert_int_equal(u->kind, SECRET_MD5);
	u = userlist_find(users, n, "alice");
	assert_int_equal(u->kind, SECRET_PLAIN);
	assert_string_equal(u->secret, "second line wins");
	assert_has_warning(&e, D "userlist.txt:3: user \"alice\" is listed again at line 8");
	u = userlist_find(users, n, "carol");
	assert_int_equal(u->kind, SECRET_SCRAM);
	assert_int_equal(u->scram.iterations, 4096);
	assert_int_equal(u->scram.salt_len, 16);
	assert_memory_equal(u->scram.salt, "0123456789abcdef", 16);
	u = userlist_find(users, n, "dave \"the quote\"");
	assert_non_null(u);
	assert_string_equal(u->secret, "pa\"ss");
	assert_null(userlist_find(users, n, "zed"));
	assert_null(userlist_find(users, n, "dave"));
	userlist_free(users, n);
	config_errors_cleanup(&e);
}

static void test_userlist_bad(void **state)
{
	ConfigErrors e = {0};
	AuthUser *users = (AuthUser *)&e;
	int n = 99;

	assert_false(userlist_load(D "userlist_bad.txt", &users, &n, &e));
	assert_null(users);
	assert_int_equal(n, 0);
	assert_int_equal(e.n, 5);
	assert_has_error(&e, D "userlist_bad.txt:2: expected a quoted user name");
	assert_has_error(&e,
			 D "userlist_bad.txt:3: expected a quoted password after user \"frank\"");
	assert_has_error(&e,
			 D "userlist_bad.txt:4: unterminated quoted password for user \"gina\"");
	assert_has_error(&e, D "userlist_bad.txt:5: empty user name");
	assert_has_error(&e, D "userlist_bad.txt:6: invalid SCRAM secret for user \"hank\"");
	config_errors_cleanup(&e);

	assert_false(userlist_load(D "no_such_userlist.txt", &users, &n, &e));
	assert_has_error(&e, "could not open auth_file \"" D "no_such_userlist.txt\"");
	config_errors_cleanup(&e);
}

/* auth_file problems make the whole load fail; a missing auth_file is only a warning. */
static void test_auth_file_in_config(void **state)
{
	ConfigErrors e = {0};
	Config *cfg;

	assert_null(config_load(D "auth_missing.ini", &e));
	assert_int_equal(e.n, 1);
	assert_has_error(&e, "data/config/no_such_userlist.txt\"");
	config_errors_cleanup(&e);

	assert_null(config_load(D "auth_bad.ini", &e));
	assert_int_equal(e.n, 5);
	assert_has_error(&e, "userlist_bad.txt:6: invalid SCRAM secret");
	config_errors_cleanup(&e);

	cfg = load_ok(D "noauth.ini", &e);
	assert_has_warning(&e, "auth_type is \"md5\" but auth_file is not set");
	assert_null(config_find_auth_user(cfg, "bob"));
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* SET then SHOW gives back the canonical text, and bad values leave the old value in place. */
static void test_set_format_roundtrip(void **state)
{
	static const struct {
		const char *name, *in, *out;
	} cases[] = {
	    {"listen_port", "7000", "7000"},
	    {"unix_socket_mode", "0755", "0755"},
	    {"unix_socket_mode", "600", "0600"},
	    {"auth_type", "SCRAM-SHA-256", "scram-sha-256"},
	    {"auth_type", "any", "any"},
	    {"auth_type", "plain", "plain"},
	    {"pool_mode", "Statement", "statement"},
	    {"syslog", "true", "1"},
	    {"syslog", "off", "0"},
	    {"server_lifetime", "1.5", "1.5"},
	    {"server_lifetime", "90s", "90"},
	    {"server_lifetime", "2min", "120"},
	    {"server_lifetime", "1d", "86400"},
	    {"server_lifetime", "0.000001", "0.000001"},
	    {"query_timeout", "250ms", "0.25"},
	    {"admin_users", "a, b", "a, b"},
	    {"admin_users", "", ""},
	    {"server_tls_sslmode", "disable", "disable"},
	};
	static const struct {
		const char *name, *in, *err;
	} bad[] = {
	    {"listen_port", "65536", "outside the valid range"},
	    {"listen_port", " 5", "invalid value"},
	    {"listen_port", "", "invalid value"},
	    {"listen_port", "0x10", "invalid value"},
	    {"server_lifetime", "-1", "outside the valid range"},
	    {"server_lifetime", "1e3", "invalid value"},
	    {"server_lifetime", "nan", "invalid value"},
	    {"stats_period", "0", "outside the valid range"},
	    {"verbose", "4", "outside the valid range"},
	    {"syslog", "2", "requires a Boolean value"},
	    {"auth_type", "cert", "auth_type \"cert\" is not supported"},
	    {"client_tls_sslmode", "prefer", "TLS is not supported yet"},
	    {"server_tls_sslmode", "sometimes", "invalid value"},
	};
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "minimal.ini", &e);
	char err[256], buf[256], before[256];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const ConfigOption *o = config_find_option(cases[i].name);

		assert_non_null(o);
		if (!config_set_option(cfg, o, cases[i].in, err, sizeof(err)))
			fail_msg("%s = %s: %s", cases[i].name, cases[i].in, err);
		assert_string_equal(config_format_option(cfg, o, buf, sizeof(buf)), cases[i].out);
		/* and the output parses back to itself */
		assert_true(config_set_option(cfg, o, buf, err, sizeof(err)));
		assert_string_equal(config_format_option(cfg, o, before, sizeof(before)),
				    cases[i].out);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const ConfigOption *o = config_find_option(bad[i].name);

		config_format_option(cfg, o, before, sizeof(before));
		if (config_set_option(cfg, o, bad[i].in, err, sizeof(err)))
			fail_msg("%s = \"%s\" was accepted", bad[i].name, bad[i].in);
		if (!strstr(err, bad[i].err))
			fail_msg("%s = \"%s\": unexpected error \"%s\"", bad[i].name, bad[i].in,
				 err);
		assert_string_equal(config_format_option(cfg, o, buf, sizeof(buf)), before);
	}
	/* accepted with a warning */
	assert_true(config_set_option(cfg, config_find_option("server_tls_sslmode"), "allow", err,
				      sizeof(err)));
	assert_non_null(strstr(err, "works as \"disable\""));
	assert_null(config_find_option("no_such_option"));
	assert_non_null(config_find_option("LISTEN_PORT"));
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* Every table default parses, and formats back to the same value the loader produced. */
static void test_table_sane(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok(D "minimal.ini", &e);
	char err[256], a[256], b[256];

	for (const ConfigOption *o = config_options; o->name; o++) {
		assert_true(o->offset < sizeof(Config));
		for (const ConfigOption *p = o + 1; p->name; p++)
			if (strcmp(o->name, p->name) == 0)
				fail_msg("option %s listed twice", o->name);
		config_format_option(cfg, o, a, sizeof(a));
		assert_true(config_set_option(cfg, o, a, err, sizeof(err)));
		config_format_option(cfg, o, b, sizeof(b));
		assert_string_equal(a, b);
	}
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* RELOAD keeps restart-only values, applies the rest, and says what it kept. */
static void test_reload(void **state)
{
	ConfigErrors e = {0};
	Config *old = load_ok(D "reload_old.ini", &e);
	Config *nw = load_ok(D "reload_new.ini", &e);
	Config *same = load_ok(D "reload_old.ini", &e);

	assert_false(config_apply_reload(nw, old, &e));
	assert_int_equal(nw->listen_port, 6432);
	assert_string_equal(nw->unix_socket_dir, "/tmp");
	assert_int_equal(nw->default_pool_size, 50);
	assert_int_equal(e.nwarn, 2);
	assert_has_warning(&e, "parameter \"listen_port\" cannot be changed without restarting; "
			       "keeping \"6432\" (new value \"7777\" ignored)");
	assert_has_warning(&e,
			   "parameter \"unix_socket_dir\" cannot be changed without restarting");
	config_errors_cleanup(&e);

	assert_true(config_apply_reload(same, old, &e));
	assert_int_equal(e.nwarn, 0);
	config_free(old);
	config_free(nw);
	config_free(same);
	config_errors_cleanup(&e);
}

static void test_list_contains(void **state)
{
	assert_true(config_list_contains("admin, root", "root"));
	assert_true(config_list_contains("admin,root", "admin"));
	assert_true(config_list_contains("  admin  root ", "root"));
	assert_true(config_list_contains("a,,b", "b"));
	assert_false(config_list_contains("admin, root", "roo"));
	assert_false(config_list_contains("admin, root", "admin, root"));
	assert_false(config_list_contains("administrator", "admin"));
	assert_false(config_list_contains("", "admin"));
	assert_false(config_list_contains(NULL, "admin"));
}

static void test_names(void **state)
{
	assert_string_equal(pool_mode_name(POOL_TRANSACTION), "transaction");
	assert_string_equal(pool_mode_name(POOL_INHERIT), "inherit");
	assert_string_equal(auth_type_name(AUTH_SCRAM), "scram-sha-256");
	assert_string_equal(route_role_name(ROLE_PREFER_REPLICA), "prefer_replica");
	assert_string_equal(route_role_name((RouteRole)42), "unknown");
}

/* --- the section registry, with a stand-in for the HA subsystem's [cluster] table --- */

typedef struct TestCluster {
	char *name;
	int ttl;
	usec_t interval;
	bool enabled;
} TestCluster;

static bool test_cluster_validate(void *data, char *err, size_t len)
{
	TestCluster *c = data;

	if (c->interval * 2 > (usec_t)c->ttl * USEC) {
		snprintf(err, len, "interval must be at most half of ttl");
		return false;
	}
	return true;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const ConfigOption test_cluster_options[] = {
    {"name", OPT_STRING, offsetof(TestCluster, name), false, "default"},
    {"ttl", OPT_INT, offsetof(TestCluster, ttl), true, "30", .min = 2, .max = 3600},
    {"interval", OPT_TIME, offsetof(TestCluster, interval), true, "10"},
    {"enabled", OPT_BOOL, offsetof(TestCluster, enabled), true, "0"},
    {NULL}};
#pragma GCC diagnostic pop

static const ConfigSection test_cluster_section = {
    .name = "cluster",
    .options = test_cluster_options,
    .size = sizeof(TestCluster),
    .validate = test_cluster_validate,
};

static void test_section_registry(void **state)
{
	ConfigErrors e = {0};
	Config *cfg, *def;
	TestCluster *c;
	static const ConfigSection databases_clash = {.name = "databases"};

	assert_true(config_register_section(&test_cluster_section));
	assert_false(config_register_section(&test_cluster_section));
	assert_false(config_register_section(&databases_clash));

	cfg = load_ok(D "section.ini", &e);
	c = config_section_data(cfg, "cluster");
	assert_non_null(c);
	assert_string_equal(c->name, "main");
	assert_int_equal(c->ttl, 45);
	assert_int_equal(c->interval, 1500000);
	assert_true(c->enabled);
	assert_int_equal(e.nwarn, 1);
	assert_string_equal(e.warnings[0], D "section.ini:8: unknown parameter \"colour\" in "
					     "section [cluster] (ignored)");
	config_errors_cleanup(&e);

	/* defaults when the section is absent; reload keeps the restart-only "name" */
	def = load_ok(D "minimal.ini", &e);
	c = config_section_data(def, "cluster");
	assert_string_equal(c->name, "default");
	assert_int_equal(c->ttl, 30);
	assert_false(config_apply_reload(def, cfg, &e));
	assert_string_equal(c->name, "main");
	assert_int_equal(c->ttl, 30);
	assert_has_warning(&e, "parameter \"name\" cannot be changed without restarting");
	config_errors_cleanup(&e);
	config_free(def);
	config_free(cfg);

	/* a bad value at its line, and the validator's complaint */
	assert_null(config_load(D "section_bad.ini", &e));
	assert_int_equal(e.n, 2);
	assert_has_error(&e, D "section_bad.ini:4: invalid value for parameter \"ttl\": \"abc\"");
	assert_has_error(&e, "section [cluster]: interval must be at most half of ttl");
	config_errors_cleanup(&e);

	config_unregister_sections();
	cfg = load_ok(D "section.ini", &e);
	assert_null(config_section_data(cfg, "cluster"));
	assert_has_warning(&e, "section [cluster] is not supported");
	config_free(cfg);
	config_errors_cleanup(&e);
}

/* --- callback form, as the glue for dns/'s own table would register it --- */

typedef struct TestDns {
	char *zone;
	int ttl;
} TestDns;

static void test_dns_init(void *data)
{
	((TestDns *)data)->ttl = 5;
}

static void test_dns_cleanup(void *data)
{
	free(((TestDns *)data)->zone);
}

static bool test_dns_set(void *data, const char *key, const char *value, char *err, size_t len)
{
	TestDns *d = data;

	if (strcmp(key, "zone") == 0) {
		free(d->zone);
		d->zone = strdup(value);
		return d->zone != NULL;
	}
	if (strcmp(key, "ttl") == 0) {
		d->ttl = atoi(value);
		return true;
	}
	snprintf(err, len, "unrecognized [dns] parameter \"%s\"", key);
	return false;
}

/* pretend the zone needs a restart */
static bool test_dns_reload(void *newdata, const void *olddata, ConfigErrors *errs)
{
	TestDns *n = newdata;
	const TestDns *o = olddata;

	if ((n->zone == NULL) == (o->zone == NULL) && (!n->zone || strcmp(n->zone, o->zone) == 0))
		return true;
	free(n->zone);
	n->zone = o->zone ? strdup(o->zone) : NULL;
	config_warning(errs, NULL, 0, "zone kept");
	return false;
}

static const ConfigSection test_dns_section = {
    .name = "dns",
    .size = sizeof(TestDns),
    .init = test_dns_init,
    .cleanup = test_dns_cleanup,
    .set = test_dns_set,
    .reload = test_dns_reload,
};

static void test_section_callbacks(void **state)
{
	ConfigErrors e = {0};
	Config *cfg, *def;
	TestDns *d;
	static const ConfigSection no_set = {.name = "nothing"};

	assert_false(config_register_section(&no_set));
	assert_true(config_register_section(&test_dns_section));
	cfg = load_ok(D "dns_cb.ini", &e);
	d = config_section_data(cfg, "dns");
	assert_string_equal(d->zone, "example.org");
	assert_int_equal(d->ttl, 7);
	assert_int_equal(e.nwarn, 0);

	def = load_ok(D "minimal.ini", &e);
	d = config_section_data(def, "dns");
	assert_null(d->zone);
	assert_int_equal(d->ttl, 5);
	assert_false(config_apply_reload(def, cfg, &e));
	assert_string_equal(d->zone, "example.org");
	assert_has_warning(&e, "zone kept");
	config_free(def);
	config_free(cfg);
	config_errors_cleanup(&e);

	assert_null(config_load(D "dns_cb_bad.ini", &e));
	assert_int_equal(e.n, 1);
	assert_string_equal(e.msgs[0],
			    D "dns_cb_bad.ini:5: unrecognized [dns] parameter \"bogus\"");
	config_errors_cleanup(&e);
	config_unregister_sections();
}

/* The shipped samples must load as they are. */
static void test_samples(void **state)
{
	ConfigErrors e = {0};
	Config *cfg = load_ok("../../etc/pgpilot.ini", &e);

	assert_int_equal(cfg->listen_port, 6432);
	assert_true(cfg->n_databases > 0);
	assert_true(cfg->n_auth_users > 0);
	assert_int_equal(e.nwarn, 0);
	config_free(cfg);
	config_errors_cleanup(&e);

	cfg = load_ok("../../etc/minimal.ini", &e);
	assert_true(cfg->n_databases > 0);
	config_free(cfg);
	config_errors_cleanup(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_full_every_option),
	    cmocka_unit_test(test_pgbouncer_alias),
	    cmocka_unit_test(test_include),
	    cmocka_unit_test(test_include_loop),
	    cmocka_unit_test(test_include_missing),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_three_errors),
	    cmocka_unit_test(test_every_error_class),
	    cmocka_unit_test(test_unknown_sections),
	    cmocka_unit_test(test_databases),
	    cmocka_unit_test(test_full_databases),
	    cmocka_unit_test(test_userlist),
	    cmocka_unit_test(test_userlist_bad),
	    cmocka_unit_test(test_auth_file_in_config),
	    cmocka_unit_test(test_set_format_roundtrip),
	    cmocka_unit_test(test_table_sane),
	    cmocka_unit_test(test_reload),
	    cmocka_unit_test(test_list_contains),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_section_registry),
	    cmocka_unit_test(test_section_callbacks),
	    cmocka_unit_test(test_samples),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
