/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The configuration loader. Option tables (name, type, offset, reload flag, default, range)
 * describe every setting of [pgpilot] and every key of a [databases] / [users] entry; one generic
 * parser and formatter serve the loader, SET, SHOW CONFIG and RELOAD. The raw file syntax is
 * ini.c's, the auth_file userlist.c's. Every problem is collected as "file:line: message" and a
 * Config is returned only when there was none.
 *
 * Interface: config_load, config_free, config_apply_reload, config_set_option,
 * config_format_option, config_find_*, config_list_contains, config_register_section.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "pooler/config.h"
#include "pooler/ini.h"
#include "pooler/userlist.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CF(field) offsetof(Config, field)
#define DB(field) offsetof(DatabaseCfg, field)
#define US(field) offsetof(UserCfg, field)

#define ERRLEN 512

/* ---------------------------------------------------------------- names */

const char *pool_mode_name(int mode)
{
	switch (mode) {
	case POOL_SESSION:
		return "session";
	case POOL_TRANSACTION:
		return "transaction";
	case POOL_STATEMENT:
		return "statement";
	case POOL_INHERIT:
		return "inherit";
	}
	return "unknown";
}

const char *auth_type_name(AuthType t)
{
	switch (t) {
	case AUTH_TRUST:
		return "trust";
	case AUTH_PLAIN:
		return "plain";
	case AUTH_MD5:
		return "md5";
	case AUTH_SCRAM:
		return "scram-sha-256";
	case AUTH_ANY:
		return "any";
	}
	return "unknown";
}

const char *route_role_name(RouteRole r)
{
	switch (r) {
	case ROLE_NONE:
		return "none";
	case ROLE_PRIMARY:
		return "primary";
	case ROLE_REPLICA:
		return "replica";
	case ROLE_PREFER_REPLICA:
		return "prefer_replica";
	case ROLE_ANY:
		return "any";
	}
	return "unknown";
}

/* ---------------------------------------------------------------- option tables */

/* Until TLS lands, "disable" is the only client mode. */
static bool check_client_tls(const char *value, char *msg, size_t len)
{
	if (value[0] == '\0' || strcasecmp(value, "disable") == 0)
		return true;
	snprintf(msg, len, "client_tls_sslmode \"%s\": TLS is not supported yet", value);
	return false;
}

/*
 * Server side: "allow" and "prefer" let the server connection fall back to plain text, so
 * "disable" fulfils them; they are accepted with a warning so that PgBouncer files keep working.
 * Modes that demand TLS are refused.
 */
static bool check_server_tls(const char *value, char *msg, size_t len)
{
	if (value[0] == '\0' || strcasecmp(value, "disable") == 0)
		return true;
	if (strcasecmp(value, "allow") == 0 || strcasecmp(value, "prefer") == 0) {
		snprintf(msg, len,
			 "server_tls_sslmode \"%s\" works as \"disable\": TLS is not supported yet",
			 value);
		return true;
	}
	if (strcasecmp(value, "require") == 0 || strcasecmp(value, "verify-ca") == 0 ||
	    strcasecmp(value, "verify-full") == 0) {
		snprintf(msg, len, "server_tls_sslmode \"%s\": TLS is not supported yet", value);
		return false;
	}
	snprintf(msg, len, "invalid value for parameter \"server_tls_sslmode\": \"%s\"", value);
	return false;
}

static bool check_facility(const char *value, char *msg, size_t len)
{
	static const char *const names[] = {"auth",   "authpriv", "daemon", "user",
					    "local0", "local1",   "local2", "local3",
					    "local4", "local5",   "local6", "local7"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcasecmp(value, names[i]) == 0)
			return true;
	snprintf(msg, len, "invalid value for parameter \"syslog_facility\": \"%s\"", value);
	return false;
}

static bool check_ha_mode(const char *value, char *msg, size_t len)
{
	if (strcmp(value, "off") == 0 || strcmp(value, "follow") == 0 || strcmp(value, "agent") == 0)
		return true;
	snprintf(msg, len, "invalid value for parameter \"ha_mode\": \"%s\" (off, follow or agent)",
		 value);
	return false;
}

#define MAXPORT .min = 1, .max = 65535

/* The tables leave out min, max and check where they do not apply (zero = none). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/*
 * [pgpilot] / [pgbouncer]. Names, defaults and reload flags are PgBouncer 1.2x's unless the
 * documentation says otherwise. test/optscan.sh reads the names from this table: keep one entry
 * per line, starting with { "name".
 */
const ConfigOption config_options[] = {
    {"listen_addr", OPT_STRING, CF(listen_addr), false, NULL},
    {"listen_port", OPT_INT, CF(listen_port), false, "6432", MAXPORT},
    {"unix_socket_dir", OPT_STRING, CF(unix_socket_dir), false, "/tmp"},
    {"unix_socket_mode", OPT_MODE_OCT, CF(unix_socket_mode), false, "0777", .max = 0777},
    {"auth_type", OPT_AUTHTYPE, CF(auth_type), true, "md5"},
    {"auth_file", OPT_STRING, CF(auth_file), true, NULL},
    {"admin_users", OPT_STRING, CF(admin_users), true, NULL},
    {"stats_users", OPT_STRING, CF(stats_users), true, NULL},
    {"pool_mode", OPT_POOLMODE, CF(pool_mode), true, "session"},
    {"max_client_conn", OPT_INT, CF(max_client_conn), true, "100", .min = 1, .max = INT_MAX},
    {"default_pool_size", OPT_INT, CF(default_pool_size), true, "20"},
    {"min_pool_size", OPT_INT, CF(min_pool_size), true, "0"},
    {"reserve_pool_size", OPT_INT, CF(reserve_pool_size), true, "0"},
    {"reserve_pool_timeout", OPT_TIME, CF(reserve_pool_timeout), true, "5"},
    {"max_db_connections", OPT_INT, CF(max_db_connections), true, "0"},
    {"max_user_connections", OPT_INT, CF(max_user_connections), true, "0"},
    {"server_reset_query", OPT_STRING, CF(server_reset_query), true, "DISCARD ALL"},
    {"server_reset_query_always", OPT_BOOL, CF(server_reset_query_always), true, "0"},
    {"server_check_query", OPT_STRING, CF(server_check_query), true, "select 1"},
    {"server_check_delay", OPT_TIME, CF(server_check_delay), true, "30"},
    {"server_lifetime", OPT_TIME, CF(server_lifetime), true, "3600"},
    {"server_idle_timeout", OPT_TIME, CF(server_idle_timeout), true, "600"},
    {"server_connect_timeout", OPT_TIME, CF(server_connect_timeout), true, "15"},
    {"server_login_retry", OPT_TIME, CF(server_login_retry), true, "15"},
    {"query_timeout", OPT_TIME, CF(query_timeout), true, "0"},
    {"query_wait_timeout", OPT_TIME, CF(query_wait_timeout), true, "120"},
    {"client_idle_timeout", OPT_TIME, CF(client_idle_timeout), true, "0"},
    {"client_login_timeout", OPT_TIME, CF(client_login_timeout), true, "60"},
    {"idle_transaction_timeout", OPT_TIME, CF(idle_transaction_timeout), true, "0"},
    {"ignore_startup_parameters", OPT_STRING, CF(ignore_startup_parameters), true, NULL},
    {"track_extra_parameters", OPT_STRING, CF(track_extra_parameters), true, "IntervalStyle"},
    {"logfile", OPT_STRING, CF(logfile), true, NULL},
    {"pidfile", OPT_STRING, CF(pidfile), false, NULL},
    {"syslog", OPT_BOOL, CF(syslog), true, "0"},
    {"syslog_ident", OPT_STRING, CF(syslog_ident), true, "pgpilot"},
    {"syslog_facility", OPT_STRING, CF(syslog_facility), true, "daemon", .check = check_facility},
    {"log_connections", OPT_BOOL, CF(log_connections), true, "1"},
    {"log_disconnections", OPT_BOOL, CF(log_disconnections), true, "1"},
    {"log_pooler_errors", OPT_BOOL, CF(log_pooler_errors), true, "1"},
    {"log_stats", OPT_BOOL, CF(log_stats), true, "1"},
    {"stats_period", OPT_TIME, CF(stats_period), true, "60", .min = 1, .max = INT_MAX},
    {"tcp_keepalive", OPT_BOOL, CF(tcp_keepalive), true, "1"},
    {"tcp_keepidle", OPT_INT, CF(tcp_keepidle), true, "0"},
    {"tcp_keepintvl", OPT_INT, CF(tcp_keepintvl), true, "0"},
    {"tcp_keepcnt", OPT_INT, CF(tcp_keepcnt), true, "0"},
    {"pkt_buf", OPT_INT, CF(pkt_buf), false, "4096", .min = 512, .max = 1 << 24},
    {"max_packet_size", OPT_INT, CF(max_packet_size), true, "2147483647", .min = 1024,
     .max = INT_MAX},
    {"max_prepared_statements", OPT_INT, CF(max_prepared_statements), true, "200",
     .max = INT_MAX},
    {"listen_backlog", OPT_INT, CF(listen_backlog), false, "128", .min = 1, .max = INT_MAX},
    {"verbose", OPT_INT, CF(verbose), true, "0", .max = 3},
    {"server_tls_sslmode", OPT_STRING, CF(server_tls_sslmode), true, "disable",
     .check = check_server_tls},
    {"client_tls_sslmode", OPT_STRING, CF(client_tls_sslmode), true, "disable",
     .check = check_client_tls},
    {"suspend_timeout", OPT_TIME, CF(suspend_timeout), true, "10"},
    {"shutdown_wait_timeout", OPT_TIME, CF(shutdown_wait_timeout), true, "0"},
    {"http_addr", OPT_STRING, CF(http_addr), false, NULL},
    {"http_port", OPT_INT, CF(http_port), false, "0", .max = 65535},
    {"ha_mode", OPT_STRING, CF(ha_mode), false, "off", .check = check_ha_mode},
    {NULL}};

/*
 * Keys of a [databases] connection string. Defaults are set by db_defaults() because "unset"
 * (-1) is outside the accepted range; defval is informational. optscan reads these names too.
 */
static const ConfigOption database_keys[] = {
    {"host", OPT_STRING, DB(host), true, NULL},
    {"port", OPT_INT, DB(port), true, "5432", MAXPORT},
    {"dbname", OPT_STRING, DB(dbname), true, NULL},
    {"user", OPT_STRING, DB(user), true, NULL},
    {"password", OPT_STRING, DB(password), true, NULL},
    {"auth_user", OPT_STRING, DB(auth_user), true, NULL},
    {"pool_size", OPT_INT, DB(pool_size), true, NULL},
    {"min_pool_size", OPT_INT, DB(min_pool_size), true, NULL},
    {"reserve_pool", OPT_INT, DB(reserve_pool), true, NULL},
    {"reserve_pool_size", OPT_INT, DB(reserve_pool), true, NULL},
    {"pool_mode", OPT_POOLMODE, DB(pool_mode), true, NULL},
    {"max_db_connections", OPT_INT, DB(max_db_connections), true, NULL},
    {"connect_query", OPT_STRING, DB(connect_query), true, NULL},
    {"application_name", OPT_STRING, DB(application_name), true, NULL},
    {"cluster", OPT_STRING, DB(cluster), true, NULL},
    {"role", OPT_ROLE, DB(role), true, NULL},
    {"replica_max_lag", OPT_BYTES, DB(replica_max_lag), true, NULL, .max = INT64_MAX},
    {NULL}};

/* Keys of a [users] entry. */
static const ConfigOption user_keys[] = {
    {"pool_mode", OPT_POOLMODE, US(pool_mode), true, NULL},
    {"max_user_connections", OPT_INT, US(max_user_connections), true, NULL},
    {NULL}};
#pragma GCC diagnostic pop

/* ---------------------------------------------------------------- error list */

static void errlist_add(char ***list, int *n, const char *file, int line, const char *fmt,
			va_list ap) _PRINTF(5, 0);

static void errlist_add(char ***list, int *n, const char *file, int line, const char *fmt,
			va_list ap)
{
	char msg[1024], *full = NULL;
	char **nl;
	int r;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (file && line > 0)
		r = asprintf(&full, "%s:%d: %s", file, line, msg);
	else if (file)
		r = asprintf(&full, "%s: %s", file, msg);
	else
		r = asprintf(&full, "%s", msg);
	if (r < 0)
		return;
	nl = realloc(*list, sizeof(char *) * (size_t)(*n + 1));
	if (!nl) {
		free(full);
		return;
	}
	nl[(*n)++] = full;
	*list = nl;
}

void config_error(ConfigErrors *e, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int before = e->n;

	va_start(ap, fmt);
	errlist_add(&e->msgs, &e->n, file, line, fmt, ap);
	va_end(ap);
	/* Even without memory for the text, the caller must see that an error happened. */
	if (e->n == before) {
		char **nl = realloc(e->msgs, sizeof(char *) * (size_t)(e->n + 1));

		if (nl) {
			e->msgs = nl;
			e->msgs[e->n++] = NULL;
		}
	}
}

void config_warning(ConfigErrors *e, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errlist_add(&e->warnings, &e->nwarn, file, line, fmt, ap);
	va_end(ap);
}

void config_errors_cleanup(ConfigErrors *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->msgs[i]);
	for (int i = 0; i < e->nwarn; i++)
		free(e->warnings[i]);
	free(e->msgs);
	free(e->warnings);
	memset(e, 0, sizeof(*e));
}

/* ---------------------------------------------------------------- value parsing */

const ConfigOption *config_table_find(const ConfigOption *table, const char *name)
{
	for (const ConfigOption *o = table; o->name; o++)
		if (strcasecmp(o->name, name) == 0)
			return o;
	return NULL;
}

const ConfigOption *config_find_option(const char *name)
{
	return config_table_find(config_options, name);
}

static void opt_range(const ConfigOption *opt, int64_t *min, int64_t *max)
{
	*min = opt->min;
	*max = opt->max;
	if (*min == 0 && *max == 0)
		*max = INT_MAX;
}

static bool parse_int64(const char *s, int base, int64_t *out)
{
	char *end;
	long long v;

	if (!*s || isspace((unsigned char)*s))
		return false;
	errno = 0;
	v = strtoll(s, &end, base);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}

/* Seconds with an optional fraction and unit: "15", "0.5", "250ms", "2min", "1h", "1d". */
static bool parse_time(const char *s, double *secs)
{
	static const struct {
		const char *unit;
		double mult;
	} units[] = {{"", 1},     {"us", 1e-6}, {"ms", 1e-3}, {"s", 1},
		     {"min", 60}, {"h", 3600},  {"d", 86400}};
	char *end;
	double v;

	if (!*s || isspace((unsigned char)*s))
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || !isfinite(v))
		return false;
	/* strtod also takes hex and exponents; only plain decimals are meant here */
	for (const char *p = s; p < end; p++)
		if (!isdigit((unsigned char)*p) && *p != '.' && *p != '-' && *p != '+')
			return false;
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcasecmp(end, units[i].unit) == 0) {
			*secs = v * units[i].mult;
			return true;
		}
	}
	return false;
}

static bool parse_bytes(const char *s, int64_t *out)
{
	static const struct {
		const char *unit;
		int shift;
	} units[] = {{"", 0}, {"B", 0}, {"kB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40}};
	char *end;
	long long v;

	if (!*s || !isdigit((unsigned char)*s))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0)
		return false;
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcasecmp(end, units[i].unit) == 0) {
			if (v > (INT64_MAX >> units[i].shift))
				return false;
			*out = (int64_t)v << units[i].shift;
			return true;
		}
	}
	return false;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"1", "yes", "on", "true"};
	static const char *const no[] = {"0", "no", "off", "false"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static bool parse_pool_mode(const char *s, int *out)
{
	for (int m = POOL_SESSION; m <= POOL_STATEMENT; m++) {
		if (strcasecmp(s, pool_mode_name(m)) == 0) {
			*out = m;
			return true;
		}
	}
	return false;
}

static bool parse_role(const char *s, RouteRole *out)
{
	for (int r = ROLE_PRIMARY; r <= ROLE_ANY; r++) {
		if (strcasecmp(s, route_role_name((RouteRole)r)) == 0) {
			*out = (RouteRole)r;
			return true;
		}
	}
	return false;
}

bool config_option_parse(void *base, const ConfigOption *opt, const char *value, char *err,
			 size_t errlen)
{
	char *field = (char *)base + opt->offset;
	int64_t min, max, iv;
	double secs;
	bool bv;
	int mode;
	RouteRole role;

	if (errlen > 0)
		err[0] = '\0';
	if (!value)
		value = "";
	opt_range(opt, &min, &max);

	switch (opt->type) {
	case OPT_INT:
	case OPT_MODE_OCT:
		if (!parse_int64(value, opt->type == OPT_MODE_OCT ? 8 : 10, &iv))
			goto invalid;
		if (iv < min || iv > max) {
			if (opt->type == OPT_MODE_OCT)
				snprintf(err, errlen,
					 "0%llo is outside the valid range for parameter \"%s\" "
					 "(0%llo .. 0%llo)",
					 (long long)iv, opt->name, (long long)min, (long long)max);
			else
				snprintf(err, errlen,
					 "%lld is outside the valid range for parameter \"%s\" "
					 "(%lld .. %lld)",
					 (long long)iv, opt->name, (long long)min, (long long)max);
			return false;
		}
		*(int *)field = (int)iv;
		break;
	case OPT_BYTES:
		if (!parse_bytes(value, &iv))
			goto invalid;
		if (iv < min || iv > max) {
			snprintf(
			    err, errlen,
			    "%lld is outside the valid range for parameter \"%s\" (%lld .. %lld)",
			    (long long)iv, opt->name, (long long)min, (long long)max);
			return false;
		}
		*(int64_t *)field = iv;
		break;
	case OPT_BOOL:
		if (!parse_bool(value, &bv)) {
			snprintf(err, errlen,
				 "parameter \"%s\" requires a Boolean value, not \"%s\"", opt->name,
				 value);
			return false;
		}
		*(bool *)field = bv;
		break;
	case OPT_TIME:
		if (!parse_time(value, &secs))
			goto invalid;
		if (secs < (double)min || secs > (double)max) {
			snprintf(err, errlen,
				 "%s is outside the valid range for parameter \"%s\" (%lld .. %lld "
				 "seconds)",
				 value, opt->name, (long long)min, (long long)max);
			return false;
		}
		*(usec_t *)field = (usec_t)llround(secs * USEC);
		break;
	case OPT_POOLMODE:
		if (!parse_pool_mode(value, &mode))
			goto invalid;
		*(int *)field = mode;
		break;
	case OPT_ROLE:
		if (!parse_role(value, &role))
			goto invalid;
		*(RouteRole *)field = role;
		break;
	case OPT_AUTHTYPE:
		if (strcasecmp(value, "trust") == 0)
			mode = AUTH_TRUST;
		else if (strcasecmp(value, "any") == 0)
			mode = AUTH_ANY;
		else if (strcasecmp(value, "plain") == 0)
			mode = AUTH_PLAIN;
		else if (strcasecmp(value, "md5") == 0)
			mode = AUTH_MD5;
		else if (strcasecmp(value, "scram-sha-256") == 0)
			mode = AUTH_SCRAM;
		else {
			snprintf(err, errlen, "auth_type \"%s\" is not supported", value);
			return false;
		}
		*(int *)field = mode;
		break;
	case OPT_STRING: {
		char *copy = NULL;

		if (opt->check && !opt->check(value, err, errlen))
			return false;
		if (value[0] != '\0') {
			copy = strdup(value);
			if (!copy) {
				snprintf(err, errlen, "out of memory");
				return false;
			}
		}
		free(*(char **)field);
		*(char **)field = copy;
		return true;
	}
	}
	/* the check of non-string types runs after the type parse succeeded */
	if (opt->check && !opt->check(value, err, errlen))
		return false;
	return true;

invalid:
	snprintf(err, errlen, "invalid value for parameter \"%s\": \"%s\"", opt->name, value);
	return false;
}

bool config_set_option(Config *cfg, const ConfigOption *opt, const char *value, char *err,
		       size_t errlen)
{
	return config_option_parse(cfg, opt, value, err, errlen);
}

/* Seconds as the shortest exact decimal: 5, 0.5, 0.000001. */
static void format_usec(usec_t v, char *buf, size_t len)
{
	int n;

	if (v % USEC == 0) {
		snprintf(buf, len, "%lld", (long long)(v / USEC));
		return;
	}
	n = snprintf(buf, len, "%s%lld.%06lld", v < 0 ? "-" : "", llabs((long long)(v / USEC)),
		     llabs((long long)(v % USEC)));
	if (n > 0 && (size_t)n < len)
		while (n > 0 && buf[n - 1] == '0')
			buf[--n] = '\0';
}

const char *config_option_format(const void *base, const ConfigOption *opt, char *buf, size_t len)
{
	const char *field = (const char *)base + opt->offset;
	const char *s;

	if (len == 0)
		return buf;
	switch (opt->type) {
	case OPT_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case OPT_MODE_OCT:
		snprintf(buf, len, "0%o", (unsigned)*(const int *)field);
		break;
	case OPT_BYTES:
		snprintf(buf, len, "%lld", (long long)*(const int64_t *)field);
		break;
	case OPT_BOOL:
		snprintf(buf, len, "%d", *(const bool *)field ? 1 : 0);
		break;
	case OPT_TIME:
		format_usec(*(const usec_t *)field, buf, len);
		break;
	case OPT_POOLMODE:
		snprintf(buf, len, "%s", pool_mode_name(*(const int *)field));
		break;
	case OPT_ROLE:
		snprintf(buf, len, "%s", route_role_name(*(const RouteRole *)field));
		break;
	case OPT_AUTHTYPE:
		snprintf(buf, len, "%s", auth_type_name((AuthType) * (const int *)field));
		break;
	case OPT_STRING:
		s = *(char *const *)field;
		snprintf(buf, len, "%s", s ? s : "");
		break;
	}
	return buf;
}

const char *config_format_option(const Config *cfg, const ConfigOption *opt, char *buf, size_t len)
{
	return config_option_format(cfg, opt, buf, len);
}

/* Defaults of a whole table into <base>; a default that does not parse is a bug in the table. */
static bool table_defaults(void *base, const ConfigOption *table)
{
	char err[ERRLEN];

	for (const ConfigOption *o = table; o->name; o++) {
		if (!o->defval)
			continue;
		if (!config_option_parse(base, o, o->defval, err, sizeof(err)))
			return false;
	}
	return true;
}

static void table_free_strings(void *base, const ConfigOption *table)
{
	for (const ConfigOption *o = table; o->name; o++) {
		if (o->type == OPT_STRING) {
			char **p = (char **)((char *)base + o->offset);

			free(*p);
			*p = NULL;
		}
	}
}

/* ---------------------------------------------------------------- section registry */

static const ConfigSection *registered[CONFIG_MAX_SECTIONS];
static int n_registered;

bool config_register_section(const ConfigSection *sec)
{
	static const char *const reserved[] = {"pgpilot", "pgbouncer", "databases", "users"};

	if (n_registered >= CONFIG_MAX_SECTIONS || (!sec->options && !sec->set))
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		if (strcasecmp(sec->name, reserved[i]) == 0)
			return false;
	for (int i = 0; i < n_registered; i++)
		if (strcasecmp(registered[i]->name, sec->name) == 0)
			return false;
	registered[n_registered++] = sec;
	return true;
}

void config_unregister_sections(void)
{
	n_registered = 0;
}

void *config_section_data(const Config *cfg, const char *name)
{
	for (int i = 0; i < cfg->n_sections; i++)
		if (strcasecmp(cfg->section_defs[i]->name, name) == 0)
			return cfg->section_data[i];
	return NULL;
}

/* ---------------------------------------------------------------- Config objects */

static void database_cfg_cleanup(DatabaseCfg *db)
{
	free(db->name);
	free(db->file);
	table_free_strings(db, database_keys);
}

void config_free(Config *cfg)
{
	if (!cfg)
		return;
	table_free_strings(cfg, config_options);
	for (int i = 0; i < cfg->n_databases; i++)
		database_cfg_cleanup(&cfg->databases[i]);
	free(cfg->databases);
	for (int i = 0; i < cfg->n_users; i++)
		free(cfg->users[i].name);
	free(cfg->users);
	userlist_free(cfg->auth_users, cfg->n_auth_users);
	for (int i = 0; i < cfg->n_sections; i++) {
		const ConfigSection *sec = cfg->section_defs[i];

		if (!cfg->section_data[i])
			continue;
		if (sec->options)
			table_free_strings(cfg->section_data[i], sec->options);
		if (sec->cleanup)
			sec->cleanup(cfg->section_data[i]);
		free(cfg->section_data[i]);
	}
	free(cfg->config_file);
	free(cfg);
}

/* A Config holding every default, with one zeroed-then-defaulted struct per registered section. */
static Config *config_new_defaults(void)
{
	Config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	if (!table_defaults(cfg, config_options))
		goto fail;
	for (int i = 0; i < n_registered; i++) {
		cfg->section_defs[i] = registered[i];
		cfg->section_data[i] = calloc(1, registered[i]->size ? registered[i]->size : 1);
		cfg->n_sections = i + 1;
		if (!cfg->section_data[i])
			goto fail;
		if (registered[i]->options &&
		    !table_defaults(cfg->section_data[i], registered[i]->options))
			goto fail;
		if (registered[i]->init)
			registered[i]->init(cfg->section_data[i]);
	}
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

/* ---------------------------------------------------------------- connection strings */

/*
 * Next "key=value" of a libpq-style string at *pp: spaces around '=' allowed, a value in single
 * quotes may hold spaces, and a backslash escapes the next character inside or outside quotes.
 * Returns 1 with malloc'd *key / *value, 0 at the end, -1 with a message in <err>.
 */
static int connstr_next(const char **pp, char **key, char **value, char *err, size_t errlen)
{
	const char *p = *pp, *kstart;
	char *v, *o;

	*key = *value = NULL;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0')
		return 0;
	kstart = p;
	while (*p && *p != '=' && !isspace((unsigned char)*p))
		p++;
	*key = strndup(kstart, (size_t)(p - kstart));
	if (!*key)
		goto oom;
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '=') {
		snprintf(err, errlen, "missing \"=\" after \"%s\" in connection string", *key);
		goto fail;
	}
	p++;
	while (isspace((unsigned char)*p))
		p++;
	v = o = malloc(strlen(p) + 1);
	if (!v)
		goto oom;
	*value = v;
	if (*p == '\'') {
		p++;
		for (;;) {
			if (*p == '\0') {
				snprintf(err, errlen,
					 "unterminated quoted string in connection string");
				goto fail;
			}
			if (*p == '\'')
				break;
			if (*p == '\\' && p[1])
				p++;
			*o++ = *p++;
		}
		p++;
		if (*p && !isspace((unsigned char)*p)) {
			snprintf(
			    err, errlen,
			    "missing space after the quoted value of \"%s\" in connection string",
			    *key);
			goto fail;
		}
	} else {
		while (*p && !isspace((unsigned char)*p)) {
			if (*p == '\\' && p[1])
				p++;
			*o++ = *p++;
		}
	}
	*o = '\0';
	*pp = p;
	return 1;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	free(*key);
	free(*value);
	*key = *value = NULL;
	return -1;
}

/*
 * Apply every "key=value" of <connstr> to <base> through <table>. Reports each problem with
 * <what> ("database "x"") as prefix and goes on with the next pair. False when any failed.
 */
static bool apply_connstr(void *base, const ConfigOption *table, const char *connstr,
			  const char *what, ConfigErrors *errs, const char *file, int line)
{
	const char *p = connstr;
	char *key, *value, err[ERRLEN];
	bool ok = true;
	int r;

	while ((r = connstr_next(&p, &key, &value, err, sizeof(err))) != 0) {
		const ConfigOption *o;

		if (r < 0) {
			config_error(errs, file, line, "%s: %s", what, err);
			return false; /* cannot resynchronise after a broken quote */
		}
		o = config_table_find(table, key);
		if (!o) {
			config_error(errs, file, line, "%s: unknown parameter \"%s\"", what, key);
			ok = false;
		} else if (!config_option_parse(base, o, value, err, sizeof(err))) {
			config_error(errs, file, line, "%s: %s", what, err);
			ok = false;
		}
		if (value)
			explicit_bzero(value, strlen(value)); /* may be a password */
		free(key);
		free(value);
	}
	return ok;
}

/* ---------------------------------------------------------------- the loader */

typedef enum SectionKind {
	SEC_NONE,       /* before the first header */
	SEC_MAIN,       /* [pgpilot] / [pgbouncer] */
	SEC_DATABASES,  /* [databases] */
	SEC_USERS,      /* [users] */
	SEC_REGISTERED, /* a registered section: cur_reg */
	SEC_UNKNOWN,    /* ignored, warned once per name */
} SectionKind;

typedef struct LoadCtx {
	Config *cfg;
	ConfigErrors *errs;
	SectionKind sec;
	int cur_reg;
	char **warned; /* unknown section names already warned about */
	int n_warned;
	bool oom;
} LoadCtx;

static void ini_error_cb(void *arg, const char *file, int line, const char *msg)
{
	LoadCtx *ctx = arg;

	config_error(ctx->errs, file, line, "%s", msg);
}

static void ini_section_cb(void *arg, const char *name, const char *file, int line)
{
	LoadCtx *ctx = arg;
	char **nw;

	if (strcasecmp(name, "pgpilot") == 0 || strcasecmp(name, "pgbouncer") == 0) {
		ctx->sec = SEC_MAIN;
		return;
	}
	if (strcasecmp(name, "databases") == 0) {
		ctx->sec = SEC_DATABASES;
		return;
	}
	if (strcasecmp(name, "users") == 0) {
		ctx->sec = SEC_USERS;
		return;
	}
	for (int i = 0; i < ctx->cfg->n_sections; i++) {
		if (strcasecmp(ctx->cfg->section_defs[i]->name, name) == 0) {
			ctx->sec = SEC_REGISTERED;
			ctx->cur_reg = i;
			return;
		}
	}
	ctx->sec = SEC_UNKNOWN;
	for (int i = 0; i < ctx->n_warned; i++)
		if (strcasecmp(ctx->warned[i], name) == 0)
			return;
	config_warning(ctx->errs, file, line,
		       "section [%s] is not supported (its settings are ignored)", name);
	nw = realloc(ctx->warned, sizeof(char *) * (size_t)(ctx->n_warned + 1));
	if (nw) {
		ctx->warned = nw;
		nw[ctx->n_warned] = strdup(name);
		if (nw[ctx->n_warned])
			ctx->n_warned++;
	}
}

static void set_main_option(LoadCtx *ctx, const ConfigOption *table, void *base, const char *key,
			    const char *value, const char *file, int line, const char *secname)
{
	const ConfigOption *o = config_table_find(table, key);
	char err[ERRLEN];

	if (!o) {
		if (secname)
			config_warning(ctx->errs, file, line,
				       "unknown parameter \"%s\" in section [%s] (ignored)", key,
				       secname);
		else
			config_warning(ctx->errs, file, line, "unknown parameter \"%s\" (ignored)",
				       key);
		return;
	}
	if (!config_option_parse(base, o, value, err, sizeof(err)))
		config_error(ctx->errs, file, line, "%s", err);
	else if (err[0])
		config_warning(ctx->errs, file, line, "%s", err);
}

static void db_defaults(DatabaseCfg *db)
{
	memset(db, 0, sizeof(*db));
	db->port = 5432;
	db->pool_size = -1;
	db->min_pool_size = -1;
	db->reserve_pool = -1;
	db->pool_mode = POOL_INHERIT;
	db->max_db_connections = -1;
	db->role = ROLE_NONE;
	db->replica_max_lag = -1;
}

static void add_database(LoadCtx *ctx, const char *name, const char *connstr, const char *file,
			 int line)
{
	Config *cfg = ctx->cfg;
	DatabaseCfg db, *ndb;
	char what[300];
	bool ok;

	db_defaults(&db);
	snprintf(what, sizeof(what), "database \"%s\"", name);
	ok = apply_connstr(&db, database_keys, connstr, what, ctx->errs, file, line);
	if (db.cluster && db.host) {
		config_error(ctx->errs, file, line, "%s: cluster and host cannot both be set",
			     what);
		ok = false;
	}
	if (!db.cluster && db.role != ROLE_NONE) {
		config_error(ctx->errs, file, line, "%s: role requires cluster", what);
		ok = false;
	}
	if (!db.cluster && db.replica_max_lag >= 0) {
		config_error(ctx->errs, file, line, "%s: replica_max_lag requires cluster", what);
		ok = false;
	}
	if (db.cluster && db.role == ROLE_NONE)
		db.role = ROLE_PRIMARY;
	db.name = strdup(name);
	db.file = strdup(file);
	db.line = line;
	if (!ok || !db.name || !db.file) {
		if (ok)
			config_error(ctx->errs, file, line, "out of memory");
		database_cfg_cleanup(&db);
		return;
	}
	for (int i = 0; i < cfg->n_databases; i++) {
		if (strcmp(cfg->databases[i].name, name) == 0) {
			config_warning(ctx->errs, file, line,
				       "database \"%s\" was already defined at %s:%d (replaced)",
				       name, cfg->databases[i].file, cfg->databases[i].line);
			database_cfg_cleanup(&cfg->databases[i]);
			cfg->databases[i] = db;
			return;
		}
	}
	ndb = realloc(cfg->databases, sizeof(*ndb) * (size_t)(cfg->n_databases + 1));
	if (!ndb) {
		config_error(ctx->errs, file, line, "out of memory");
		database_cfg_cleanup(&db);
		return;
	}
	cfg->databases = ndb;
	cfg->databases[cfg->n_databases++] = db;
}

static void add_user(LoadCtx *ctx, const char *name, const char *spec, const char *file, int line)
{
	Config *cfg = ctx->cfg;
	UserCfg u = {.pool_mode = POOL_INHERIT, .max_user_connections = -1}, *nu;
	char what[300];

	snprintf(what, sizeof(what), "user \"%s\"", name);
	if (!apply_connstr(&u, user_keys, spec, what, ctx->errs, file, line))
		return;
	u.name = strdup(name);
	if (!u.name) {
		config_error(ctx->errs, file, line, "out of memory");
		return;
	}
	for (int i = 0; i < cfg->n_users; i++) {
		if (strcmp(cfg->users[i].name, name) == 0) {
			config_warning(ctx->errs, file, line,
				       "user \"%s\" is defined again (replaced)", name);
			free(cfg->users[i].name);
			cfg->users[i] = u;
			return;
		}
	}
	nu = realloc(cfg->users, sizeof(*nu) * (size_t)(cfg->n_users + 1));
	if (!nu) {
		config_error(ctx->errs, file, line, "out of memory");
		free(u.name);
		return;
	}
	cfg->users = nu;
	cfg->users[cfg->n_users++] = u;
}

static void ini_key_value_cb(void *arg, const char *key, const char *value, const char *file,
			     int line)
{
	LoadCtx *ctx = arg;
	int r;

	switch (ctx->sec) {
	case SEC_NONE:
		config_error(ctx->errs, file, line, "parameter \"%s\" is outside of any section",
			     key);
		break;
	case SEC_MAIN:
		set_main_option(ctx, config_options, ctx->cfg, key, value, file, line, NULL);
		break;
	case SEC_DATABASES:
		add_database(ctx, key, value, file, line);
		break;
	case SEC_USERS:
		add_user(ctx, key, value, file, line);
		break;
	case SEC_REGISTERED: {
		const ConfigSection *sec;
		char err[ERRLEN];

		r = ctx->cur_reg;
		sec = ctx->cfg->section_defs[r];
		if (sec->options) {
			set_main_option(ctx, sec->options, ctx->cfg->section_data[r], key, value,
					file, line, sec->name);
			break;
		}
		err[0] = '\0';
		if (!sec->set(ctx->cfg->section_data[r], key, value, err, sizeof(err)))
			config_error(ctx->errs, file, line, "%s",
				     err[0] ? err : "invalid parameter");
		break;
	}
	case SEC_UNKNOWN:
		break;
	}
}

/* Directory part of <path> joined with <name> when <name> is relative; malloc'd. */
static char *relative_to(const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');
	char *out = NULL;

	if (name[0] == '/' || !slash)
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - path), path, name) < 0)
		return NULL;
	return out;
}

bool config_load_auth_file(Config *cfg, const char *path, ConfigErrors *errs)
{
	AuthUser *users;
	int n;

	if (!userlist_load(path, &users, &n, errs))
		return false;
	userlist_free(cfg->auth_users, cfg->n_auth_users);
	cfg->auth_users = users;
	cfg->n_auth_users = n;
	return true;
}

/* Whole-file checks that no single line can make. */
static void config_finish(Config *cfg, ConfigErrors *errs)
{
	char err[ERRLEN];

	for (int i = 0; i < cfg->n_sections; i++) {
		const ConfigSection *s = cfg->section_defs[i];

		err[0] = '\0';
		if (s->validate && !s->validate(cfg->section_data[i], err, sizeof(err)))
			config_error(errs, cfg->config_file, 0, "section [%s]: %s", s->name,
				     err[0] ? err : "invalid settings");
	}
	if (cfg->auth_file) {
		char *path = relative_to(cfg->config_file, cfg->auth_file);

		if (!path) {
			config_error(errs, NULL, 0, "out of memory");
		} else if (!config_load_auth_file(cfg, path, errs)) {
			/* its errors are already in the list */
		}
		free(path);
	} else if (cfg->auth_type == AUTH_PLAIN || cfg->auth_type == AUTH_MD5 ||
		   cfg->auth_type == AUTH_SCRAM) {
		config_warning(errs, cfg->config_file, 0,
			       "auth_type is \"%s\" but auth_file is not set: only users with a "
			       "password in [databases] can log in",
			       auth_type_name((AuthType)cfg->auth_type));
	}
}

Config *config_load(const char *path, ConfigErrors *errs)
{
	ConfigErrors local = {0};
	IniHandler h = {ini_section_cb, ini_key_value_cb, ini_error_cb};
	LoadCtx ctx = {.sec = SEC_NONE};
	int errors_before;
	Config *cfg;

	if (!errs)
		errs = &local;
	errors_before = errs->n;
	cfg = config_new_defaults();
	if (!cfg) {
		config_error(errs, path, 0, "out of memory");
		goto out;
	}
	cfg->config_file = realpath(path, NULL);
	if (!cfg->config_file) {
		config_error(errs, NULL, 0, "could not open configuration file \"%s\": %s", path,
			     strerror(errno));
		goto out;
	}
	ctx.cfg = cfg;
	ctx.errs = errs;
	/* Even after syntax errors the whole-file checks and the auth_file run, so that one
	 * attempt lists every problem. */
	if (!ini_parse_file(path, &h, &ctx)) {
		/* the errors are in the list */
	}
	config_finish(cfg, errs);
	for (int i = 0; i < ctx.n_warned; i++)
		free(ctx.warned[i]);
	free(ctx.warned);
out:
	if (errs->n > errors_before) {
		config_free(cfg);
		cfg = NULL;
	}
	if (errs == &local)
		config_errors_cleanup(&local);
	return cfg;
}

/* ---------------------------------------------------------------- reload */

/* Put back every changed non-reloadable option of one table; true when none differed. */
static bool keep_restart_only(void *newbase, const void *oldbase, const ConfigOption *table,
			      ConfigErrors *errs)
{
	char a[1024], b[1024], err[ERRLEN];
	bool all = true;

	for (const ConfigOption *o = table; o->name; o++) {
		if (o->reloadable)
			continue;
		config_option_format(newbase, o, a, sizeof(a));
		config_option_format(oldbase, o, b, sizeof(b));
		if (strcmp(a, b) == 0)
			continue;
		all = false;
		if (!config_option_parse(newbase, o, b, err, sizeof(err)))
			config_warning(errs, NULL, 0, "could not keep parameter \"%s\": %s",
				       o->name, err);
		else
			config_warning(errs, NULL, 0,
				       "parameter \"%s\" cannot be changed without restarting; "
				       "keeping \"%s\" (new value \"%s\" ignored)",
				       o->name, b, a);
	}
	return all;
}

bool config_apply_reload(Config *newcfg, const Config *old, ConfigErrors *errs)
{
	bool all = keep_restart_only(newcfg, old, config_options, errs);

	for (int i = 0; i < newcfg->n_sections; i++) {
		for (int j = 0; j < old->n_sections; j++) {
			const ConfigSection *sec = newcfg->section_defs[i];

			if (sec != old->section_defs[j])
				continue;
			if (sec->options &&
			    !keep_restart_only(newcfg->section_data[i], old->section_data[j],
					       sec->options, errs))
				all = false;
			if (sec->reload &&
			    !sec->reload(newcfg->section_data[i], old->section_data[j], errs))
				all = false;
		}
	}
	return all;
}

/* ---------------------------------------------------------------- lookups */

const DatabaseCfg *config_find_database(const Config *cfg, const char *name)
{
	const DatabaseCfg *fallback = NULL;

	for (int i = 0; i < cfg->n_databases; i++) {
		if (strcmp(cfg->databases[i].name, name) == 0)
			return &cfg->databases[i];
		if (strcmp(cfg->databases[i].name, "*") == 0)
			fallback = &cfg->databases[i];
	}
	return fallback;
}

const UserCfg *config_find_user(const Config *cfg, const char *name)
{
	for (int i = 0; i < cfg->n_users; i++)
		if (strcmp(cfg->users[i].name, name) == 0)
			return &cfg->users[i];
	return NULL;
}

const AuthUser *config_find_auth_user(const Config *cfg, const char *name)
{
	return userlist_find(cfg->auth_users, cfg->n_auth_users, name);
}

bool config_list_contains(const char *list, const char *name)
{
	size_t nlen;
	const char *p = list;

	if (!list || !name)
		return false;
	nlen = strlen(name);
	while (*p) {
		const char *start;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if (p > start && (size_t)(p - start) == nlen && memcmp(start, name, nlen) == 0)
			return true;
	}
	return false;
}
