/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The [cluster] option table and its parser. Each option is described once, here; the ini
 * loader, SET, SHOW CONFIG and the sample-config drift check (test/optscan.sh) read this table.
 */
#include "ha/ha_config.h"
#include "ha/member_json.h"
#include "ha/watchdog.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#define OFF(f) offsetof(HaConfig, f)
#define DAY_MS 86400000LL

const HaConfigOption ha_config_options[] = {
    {"ha_mode", HA_OPT_MODE, OFF(ha_mode), false, "off",
     "off (plain pooler), follow (read the DCS and route) or agent (also own the local node)", 0, 0,
     false},
    {"name", HA_OPT_STRING, OFF(name), false, "", "cluster name (Patroni's scope)", 0, 0, false},
    {"namespace", HA_OPT_STRING, OFF(namespace), false, "/service",
     "etcd key prefix; keys live under <namespace>/<name>/", 0, 0, false},
    {"etcd_endpoints", HA_OPT_STRING, OFF(etcd_endpoints), false, "",
     "etcd client URLs, comma-separated, e.g. http://10.0.0.1:2379", 0, 0, false},
    {"etcd_user", HA_OPT_STRING, OFF(etcd_user), false, "", "etcd user (token auth when set)", 0, 0,
     false},
    {"etcd_password", HA_OPT_STRING, OFF(etcd_password), false, "", "password of etcd_user", 0, 0,
     true},
    {"etcd_timeout", HA_OPT_MSEC, OFF(etcd_timeout_ms), false, "2",
     "bound of each etcd request attempt, seconds", 100, 60000, false},
    {"member", HA_OPT_STRING, OFF(member), false, "", "agent: this node's member name", 0, 0,
     false},
    {"pg_conn", HA_OPT_STRING, OFF(pg_conn), false, "",
     "libpq conninfo of the local PostgreSQL (agent; superuser) or of the member probes (follow)",
     0, 0, true},
    {"pg_data", HA_OPT_STRING, OFF(pg_data), false, "", "agent: data directory of the local node",
     0, 0, false},
    {"pg_bin", HA_OPT_STRING, OFF(pg_bin), false, HA_PG_BIN_DEFAULT,
     "directory holding pg_ctl and pg_rewind", 0, 0, false},
    {"replication_conn", HA_OPT_STRING, OFF(replication_conn), false, "",
     "user=... password=... put into primary_conninfo when re-pointing a replica", 0, 0, true},
    {"pg_advertise", HA_OPT_STRING, OFF(pg_advertise), false, "",
     "host:port the other nodes reach the local PostgreSQL on (default: pg_conn's)", 0, 0, false},
    {"dns_address", HA_OPT_STRING, OFF(dns_address), false, "",
     "the address published in DNS when this member is promoted (default: pg_advertise's host)",
     0, 0, false},
    {"api_url", HA_OPT_STRING, OFF(api_url), false, "",
     "published as the member's api_url (e.g. this pgpilot's HTTP API); unset = omitted", 0, 0,
     false},
    {"pg_rto", HA_OPT_INT, OFF(pg_rto), false, "30",
     "seconds writes may be unavailable after the primary's node dies (>= 5)", HA_PG_RTO_MIN,
     HA_PG_RTO_MAX, false},
    {"pg_rpo", HA_OPT_INT64, OFF(pg_rpo), false, "1048576",
     "bytes of WAL a replica may lag and still be promoted automatically", 0, INT64_MAX / 2, false},
    {"nofailover", HA_OPT_BOOL, OFF(nofailover), false, "off",
     "never promote this node automatically (tag)", 0, 0, false},
    {"failover_priority", HA_OPT_INT, OFF(failover_priority), false, "1",
     "tie-break between equal candidates, higher wins; <= 0 = never promoted", -1000000, 1000000,
     false},
    {"synchronous_mode", HA_OPT_BOOL, OFF(synchronous_mode), false, "off",
     "synchronous replication management (not supported yet: must be off)", 0, 0, false},
    {"lease_ttl", HA_OPT_MSEC, OFF(ov.lease_ttl_ms), false, "0",
     "leader lease TTL, whole seconds; 0 = derived from pg_rto", 0, DAY_MS, false},
    {"renew_interval", HA_OPT_MSEC, OFF(ov.renew_ms), false, "0",
     "leader renewal interval, seconds; 0 = derived", 0, DAY_MS, false},
    {"retry_timeout", HA_OPT_MSEC, OFF(ov.retry_ms), false, "0",
     "how long failing renewals are retried before fencing, seconds; 0 = derived", 0, DAY_MS,
     false},
    {"fence_timeout", HA_OPT_MSEC, OFF(ov.fence_ms), false, "0",
     "time allowed to fence the local node, seconds; 0 = derived", 0, DAY_MS, false},
    {"probe_timeout", HA_OPT_MSEC, OFF(ov.probe_ms), false, "0",
     "timeout of a peer probe during an election, seconds; 0 = derived", 0, DAY_MS, false},
    {"promote_timeout", HA_OPT_MSEC, OFF(ov.promote_ms), false, "0",
     "race won to writable primary budget, seconds; 0 = derived", 0, DAY_MS, false},
    {"restart_timeout", HA_OPT_MSEC, OFF(ov.restart_ms), false, "0",
     "how long a leader restarts its crashed PostgreSQL before releasing, seconds; 0 = derived", 0,
     DAY_MS, false},
    {"rank_step", HA_OPT_MSEC, OFF(ov.rank_step_ms), false, "0",
     "race delay per rank, seconds; 0 = derived (0.2)", 0, DAY_MS, false},
    {"watchdog", HA_OPT_STRING, OFF(watchdog), false, "off",
     "kernel watchdog while leader: off, automatic (use it if it works) or required (no "
     "leadership without it)", 0, 0, false},
    {"watchdog_device", HA_OPT_STRING, OFF(watchdog_device), false, HA_WATCHDOG_DEVICE_DEFAULT,
     "the watchdog device", 0, 0, false},
    {"watchdog_safety_margin", HA_OPT_INT, OFF(watchdog_safety_margin), false, "5",
     "seconds: the watchdog resets the machine this long before the lease expires", 0, 3600,
     false},
    {NULL, 0, 0, false, NULL, NULL, 0, 0, false},
};

const HaConfigOption *ha_config_find(const char *key)
{
	for (const HaConfigOption *o = ha_config_options; o->name; o++)
		if (strcasecmp(o->name, key) == 0)
			return o;
	return NULL;
}

bool ha_mode_parse(const char *s, HaMode *mode)
{
	static const HaMode all[] = {HA_MODE_OFF, HA_MODE_FOLLOW, HA_MODE_AGENT};

	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		if (strcasecmp(s, ha_mode_name(all[i])) == 0) {
			*mode = all[i];
			return true;
		}
	}
	return false;
}

static bool parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"1", "on", "true", "yes"};
	static const char *const no[] = {"0", "off", "false", "no"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static bool parse_int64(const char *v, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < min || x > max)
		return false;
	*out = x;
	return true;
}

bool ha_config_set(HaConfig *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	const HaConfigOption *o = ha_config_find(key);
	void *field;

	if (o == NULL) {
		snprintf(err, errlen, "unrecognized [cluster] parameter \"%s\"", key);
		return false;
	}
	if (value == NULL)
		value = "";
	field = (char *)cfg + o->offset;
	switch (o->type) {
	case HA_OPT_STRING: {
		char *copy = NULL;

		if (*value && (copy = strdup(value)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		free(*(char **)field);
		*(char **)field = copy;
		return true;
	}
	case HA_OPT_INT:
	case HA_OPT_INT64: {
		int64_t v;

		if (!parse_int64(value, o->min, o->max, &v)) {
			snprintf(
			    err, errlen,
			    "invalid value \"%s\" for parameter \"%s\": an integer from %" PRId64
			    " to %" PRId64 " is expected",
			    value, o->name, o->min, o->max);
			return false;
		}
		if (o->type == HA_OPT_INT)
			*(int *)field = (int)v;
		else
			*(int64_t *)field = v;
		return true;
	}
	case HA_OPT_MSEC: {
		char *end;
		double s;

		errno = 0;
		s = strtod(value, &end);
		if (errno || end == value || *end || !isfinite(s) || s * 1000.0 < (double)o->min ||
		    s * 1000.0 > (double)o->max) {
			snprintf(err, errlen,
				 "invalid value \"%s\" for parameter \"%s\": seconds from %g to %g "
				 "are expected",
				 value, o->name, o->min / 1000.0, o->max / 1000.0);
			return false;
		}
		if (o->offset == OFF(etcd_timeout_ms))
			*(int *)field = (int)(s * 1000.0 + 0.5);
		else
			*(int64_t *)field = (int64_t)(s * 1000.0 + 0.5);
		return true;
	}
	case HA_OPT_BOOL:
		if (!parse_bool(value, (bool *)field)) {
			snprintf(err, errlen,
				 "invalid value \"%s\" for parameter \"%s\": a boolean is expected",
				 value, o->name);
			return false;
		}
		if (o->offset == OFF(synchronous_mode) && cfg->synchronous_mode) {
			cfg->synchronous_mode = false;
			snprintf(
			    err, errlen,
			    "synchronous_mode = on is not supported yet: synchronous replication "
			    "management (pg_rpo = 0 with sync standbys) is a later feature");
			return false;
		}
		return true;
	case HA_OPT_MODE: {
		HaMode m;

		if (!ha_mode_parse(value, &m)) {
			snprintf(
			    err, errlen,
			    "invalid value \"%s\" for parameter \"%s\": off, follow or agent is "
			    "expected",
			    value, o->name);
			return false;
		}
		*(int *)field = (int)m;
		return true;
	}
	}
	snprintf(err, errlen, "parameter \"%s\" has an unknown type", o->name);
	return false;
}

void ha_config_init(HaConfig *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (const HaConfigOption *o = ha_config_options; o->name; o++)
		if (!ha_config_set(cfg, o->name, o->defval, err, sizeof(err)))
			abort(); /* a bad default in the table above: a programming error */
}

void ha_config_cleanup(HaConfig *cfg)
{
	for (const HaConfigOption *o = ha_config_options; o->name; o++) {
		if (o->type == HA_OPT_STRING) {
			char **p = (char **)((char *)cfg + o->offset);

			free(*p);
			*p = NULL;
		}
	}
}

bool ha_config_copy(HaConfig *dst, const HaConfig *src)
{
	*dst = *src;
	for (const HaConfigOption *o = ha_config_options; o->name; o++) {
		char **p;

		if (o->type != HA_OPT_STRING)
			continue;
		p = (char **)((char *)dst + o->offset);
		if (*p && (*p = strdup(*p)) == NULL) {
			for (const HaConfigOption *r = o + 1; r->name; r++)
				if (r->type == HA_OPT_STRING)
					*(char **)((char *)dst + r->offset) = NULL;
			ha_config_cleanup(dst);
			return false;
		}
	}
	return true;
}

const char *ha_config_format(const HaConfig *cfg, const HaConfigOption *opt, char *buf, size_t len)
{
	const void *field = (const char *)cfg + opt->offset;

	switch (opt->type) {
	case HA_OPT_STRING: {
		const char *s = *(char *const *)field;

		snprintf(buf, len, "%s", s == NULL ? "" : opt->hidden ? "********" : s);
		break;
	}
	case HA_OPT_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case HA_OPT_INT64:
		snprintf(buf, len, "%" PRId64, *(const int64_t *)field);
		break;
	case HA_OPT_MSEC:
		if (opt->offset == OFF(etcd_timeout_ms))
			snprintf(buf, len, "%g", *(const int *)field / 1000.0);
		else
			snprintf(buf, len, "%g", (double)*(const int64_t *)field / 1000.0);
		break;
	case HA_OPT_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "on" : "off");
		break;
	case HA_OPT_MODE:
		snprintf(buf, len, "%s", ha_mode_name((HaMode) * (const int *)field));
		break;
	}
	return buf;
}

/* Append "; msg" (or msg) to err. */
static void add_err(char *err, size_t errlen, const char *fmt, ...) _PRINTF(3, 4);
static void add_err(char *err, size_t errlen, const char *fmt, ...)
{
	size_t used = strlen(err);
	va_list ap;

	if (used && used + 2 < errlen) {
		memcpy(err + used, "; ", 3);
		used += 2;
	}
	if (used >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
}

static bool valid_name(const char *s)
{
	if (!s || !*s || strlen(s) >= HA_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

bool ha_config_validate(HaConfig *cfg, char *err, size_t errlen)
{
	char terr[512];
	size_t n;

	err[0] = '\0';
	cfg->adv_host[0] = '\0';
	cfg->adv_port = 0;
	if (cfg->ha_mode == HA_MODE_OFF)
		return true;
	if (!cfg->name)
		add_err(err, errlen, "[cluster] name must be set when ha_mode is %s",
			ha_mode_name(cfg->ha_mode));
	else if (!valid_name(cfg->name))
		add_err(err, errlen,
			"invalid cluster name \"%s\": letters, digits, '-', '_' and '.' only",
			cfg->name);
	if (!cfg->etcd_endpoints)
		add_err(err, errlen, "etcd_endpoints must be set when ha_mode is %s",
			ha_mode_name(cfg->ha_mode));
	if (!cfg->namespace || cfg->namespace[0] != '/')
		add_err(err, errlen, "namespace must start with '/'");
	else
		while ((n = strlen(cfg->namespace)) > 1 && cfg->namespace[n - 1] == '/')
			cfg->namespace[n - 1] = '\0';
	if (cfg->synchronous_mode)
		add_err(err, errlen, "synchronous_mode = on is not supported yet");
	if (cfg->pg_conn) {
		char *perr = NULL;
		PQconninfoOption *opts = PQconninfoParse(cfg->pg_conn, &perr);

		if (!opts)
			add_err(err, errlen, "invalid pg_conn: %s",
				perr ? strtok(perr, "\n") : "out of memory");
		PQconninfoFree(opts);
		PQfreemem(perr);
	}
	if (!ha_timings_derive_overrides(cfg->pg_rto, cfg->pg_rpo, &cfg->ov, &cfg->timings, terr,
					 sizeof(terr)))
		add_err(err, errlen, "%s", terr);
	{
		HaWatchdogMode wm = HA_WATCHDOG_OFF;

		if (cfg->watchdog && !ha_watchdog_mode_parse(cfg->watchdog, &wm))
			add_err(err, errlen,
				"invalid watchdog \"%s\": off, automatic or required is expected",
				cfg->watchdog);
		cfg->watchdog_mode = wm;
		cfg->watchdog_timeout_s =
		    ha_watchdog_timeout_s(cfg->timings.lease_ttl_ms, cfg->watchdog_safety_margin);
		if (wm != HA_WATCHDOG_OFF && cfg->timings.renew_ms &&
		    (int64_t)cfg->watchdog_timeout_s * 1000 <= cfg->timings.renew_ms)
			add_err(err, errlen,
				"watchdog_safety_margin %d s leaves a watchdog timeout of %d s within "
				"lease_ttl %" PRId64 " s, not more than renew_interval %" PRId64 " ms",
				cfg->watchdog_safety_margin, cfg->watchdog_timeout_s,
				cfg->timings.lease_ttl_ms / 1000, cfg->timings.renew_ms);
	}
	if (cfg->ha_mode == HA_MODE_AGENT) {
		if (!cfg->member)
			add_err(err, errlen, "member must be set when ha_mode is agent");
		else if (!valid_name(cfg->member))
			add_err(
			    err, errlen,
			    "invalid member name \"%s\": letters, digits, '-', '_' and '.' only",
			    cfg->member);
		if (!cfg->pg_conn)
			add_err(err, errlen, "pg_conn must be set when ha_mode is agent");
		if (!cfg->pg_data)
			add_err(err, errlen, "pg_data must be set when ha_mode is agent");
		if (cfg->pg_advertise) {
			if (!ha_split_host_port(cfg->pg_advertise, cfg->adv_host,
						sizeof(cfg->adv_host), &cfg->adv_port) ||
			    cfg->adv_port == 0)
				add_err(err, errlen,
					"invalid pg_advertise \"%s\": host:port is expected",
					cfg->pg_advertise);
		} else if (cfg->pg_conn &&
			   !ha_conninfo_host_port(cfg->pg_conn, cfg->adv_host,
						  sizeof(cfg->adv_host), &cfg->adv_port)) {
			add_err(err, errlen,
				"pg_advertise must be set when pg_conn has no TCP host (the other "
				"nodes must reach the local PostgreSQL)");
		}
	}
	return err[0] == '\0';
}
