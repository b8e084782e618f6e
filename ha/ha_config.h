/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The [cluster] section: HaConfig, its option table (name, type, offset, reloadable, default,
 * doc) and the parse / validate / format functions the ini loader, SET and SHOW CONFIG call.
 * The pooler owns the ini file; ha/ owns what the keys mean. Validation derives the HA timings
 * (ha_timings_derive_overrides) and refuses sets that break the safety inequalities.
 */
#ifndef PGPILOT_HA_HA_CONFIG_H
#define PGPILOT_HA_HA_CONFIG_H

#include "ha/rules.h"

#include <stddef.h>

#define HA_PG_BIN_DEFAULT "/usr/lib/postgresql/15/bin"

typedef struct HaConfig {
	int ha_mode;          /* HaMode; lives in [pgpilot], the loader copies it here */
	char *name;           /* cluster name (Patroni's scope) */
	char *namespace;      /* key prefix, "/service" by default, no trailing slash */
	char *etcd_endpoints; /* "http://h:2379,http://h2:2379" */
	char *etcd_user;      /* token auth when set */
	char *etcd_password;  /* never formatted */
	int etcd_timeout_ms;  /* per etcd request attempt */
	char *member;         /* agent: this node's member name */
	char *pg_conn;        /* libpq conninfo of the local node (agent) / credentials (follow) */
	char *pg_data;        /* agent: data directory of the local node */
	char *pg_bin;         /* directory of pg_ctl and pg_rewind */
	char *replication_conn; /* "user=replicator password=..." for primary_conninfo */
	char *pg_advertise;     /* host:port the others reach the local PostgreSQL on */
	char *api_url;          /* published as the member's api_url; unset = omitted */
	char *dns_address;      /* published in DNS on promotion; unset = adv_host */
	int pg_rto;             /* seconds */
	int64_t pg_rpo;         /* bytes */
	bool nofailover;
	int failover_priority;
	bool synchronous_mode; /* must stay off for now (rule 8 is a later issue) */
	HaTimingOverrides ov;  /* explicit timings, 0 = derived */
	char *watchdog;        /* off | automatic | required (ha/watchdog.h) */
	char *watchdog_device; /* /dev/watchdog */
	int watchdog_safety_margin; /* seconds: watchdog timeout = lease_ttl - this */

	/* filled by ha_config_validate() */
	HaTimings timings;
	char adv_host[HA_HOST_MAX]; /* pg_advertise split, or pg_conn's host and port */
	int adv_port;
	int watchdog_mode;      /* HaWatchdogMode parsed from watchdog */
	int watchdog_timeout_s; /* lease_ttl - watchdog_safety_margin, whole seconds */
} HaConfig;

typedef enum HaOptType {
	HA_OPT_STRING, /* empty value = NULL */
	HA_OPT_INT,    /* decimal int within [min, max] */
	HA_OPT_INT64,  /* decimal int64 within [min, max] */
	HA_OPT_BOOL,   /* on/off, true/false, yes/no, 1/0 */
	HA_OPT_MSEC,   /* int64 ms: seconds with fractions ("1.5"); 0 = derived */
	HA_OPT_MODE,   /* off | follow | agent */
} HaOptType;

typedef struct HaConfigOption {
	const char *name;
	HaOptType type;
	size_t offset;   /* into HaConfig */
	bool reloadable; /* takes effect at RELOAD / SET without a restart */
	const char *defval;
	const char *doc;  /* one line for the sample config and SHOW CONFIG */
	int64_t min, max; /* INT, INT64; MSEC in ms */
	bool hidden;      /* a secret: never formatted */
} HaConfigOption;

/* The [cluster] option table, terminated by an entry with a NULL name. */
extern const HaConfigOption ha_config_options[];

void ha_config_init(HaConfig *cfg);
void ha_config_cleanup(HaConfig *cfg);
/* Deep copy; false on out of memory (dst is then empty). */
bool ha_config_copy(HaConfig *dst, const HaConfig *src) _MUSTCHECK;

const HaConfigOption *ha_config_find(const char *key);
/* Parse <value> for <key> into <cfg>; false with a message for an unknown key or a bad value
 * (cfg unchanged then). */
bool ha_config_set(HaConfig *cfg, const char *key, const char *value, char *err,
		   size_t errlen) _MUSTCHECK;
/* Current value as text (secrets as "********"). */
const char *ha_config_format(const HaConfig *cfg, const HaConfigOption *opt, char *buf, size_t len);

/*
 * Check the settings together and derive cfg->timings, adv_host and adv_port. Every problem is
 * reported, joined with "; ". ha_mode off is always valid; follow needs name and
 * etcd_endpoints; agent also needs member, pg_conn and pg_data, and an advertised host:port.
 */
bool ha_config_validate(HaConfig *cfg, char *err, size_t errlen) _MUSTCHECK;

/* "off" / "follow" / "agent" into *mode; false otherwise. */
bool ha_mode_parse(const char *s, HaMode *mode) _MUSTCHECK;

#endif
