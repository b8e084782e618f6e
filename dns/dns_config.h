/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The [dns] section: DnsConfig, its option table (name, type, offset, reloadable, default, doc)
 * and the parse / validate / format functions the ini loader, SET and SHOW CONFIG call. The
 * pooler owns the ini file; dns/ owns what the keys mean. Publication is off unless both
 * update_servers and zone are set.
 */
#ifndef PGPILOT_DNS_DNS_CONFIG_H
#define PGPILOT_DNS_DNS_CONFIG_H

#include "dns/tsig.h"

typedef struct DnsConfig {
	char *update_servers;      /* "ip[:port], ..." primary master(s), tried in turn */
	char *zone;                /* zone to update, e.g. "pg.example.com" */
	char *tsig_key_file;       /* BIND key file (tsig-keygen output) */
	char *tsig_key_name;       /* key to pick from the file, or the name for tsig_secret */
	char *tsig_secret;         /* base64 secret (instead of tsig_key_file) */
	char *tsig_algorithm;      /* with tsig_secret: hmac-sha256 (default), -sha384, -sha512 */
	int ttl;                   /* TTL of the published records, seconds */
	char *primary_name;        /* relative to zone unless it ends with '.' */
	char *replica_name;        /* replica RRset; empty = not published */
	int dns_max_ttl;           /* cap on how long a resolved backend address is cached, s */
	int dns_stale_keep;        /* how long a last good address outlives failed lookups, s */
	int update_timeout_ms;     /* per server and attempt */
	int update_tries;          /* attempts per publication (timeouts, SERVFAIL) */
	int update_retry_delay_ms; /* first back-off, doubled on each retry */
	int update_retry_max_ms;   /* back-off ceiling */
	bool use_tcp;              /* always TCP (UDP otherwise, TCP above 512 bytes) */
} DnsConfig;

typedef enum DnsOptType {
	DNS_OPT_STRING, /* empty value = NULL */
	DNS_OPT_INT,    /* decimal within [min, max] */
	DNS_OPT_BOOL,   /* on/off, true/false, yes/no, 1/0 */
	DNS_OPT_MSEC,   /* seconds with fractions ("1.5"), stored as int milliseconds */
} DnsOptType;

typedef struct DnsConfigOption {
	const char *name;
	DnsOptType type;
	size_t offset;   /* into DnsConfig */
	bool reloadable; /* takes effect at RELOAD / SET without restart */
	const char *defval;
	const char *doc; /* one line for the sample config and SHOW CONFIG */
	long min, max;   /* for INT and MSEC (in ms) */
	bool hidden;     /* a secret: never formatted */
} DnsConfigOption;

/* The [dns] option table, terminated by an entry with a NULL name. */
extern const DnsConfigOption dns_config_options[];

/* Fill <cfg> with the defaults. */
void dns_config_init(DnsConfig *cfg);
void dns_config_cleanup(DnsConfig *cfg);
/* Deep copy (for reload: build new, swap, free old). False on out of memory. */
bool dns_config_copy(DnsConfig *dst, const DnsConfig *src) _MUSTCHECK;

const DnsConfigOption *dns_config_find(const char *key);
/* Parse <value> for <key> into <cfg>. False with a message for an unknown key or a bad value;
 * <cfg> is unchanged then. */
bool dns_config_set(DnsConfig *cfg, const char *key, const char *value, char *err,
		    size_t errlen) _MUSTCHECK;
/* Current value as text (secrets as "********"). */
const char *dns_config_format(const DnsConfig *cfg, const DnsConfigOption *opt, char *buf,
			      size_t len);

/* Both update_servers and zone set. */
bool dns_config_is_enabled(const DnsConfig *cfg);

/*
 * Check the settings together: servers parse, names are valid and inside the zone, a key is
 * either a file or name + secret and loads. Every problem is reported, joined with "; ", so the
 * loader can collect them all. A disabled configuration is valid.
 */
bool dns_config_validate(const DnsConfig *cfg, char *err, size_t errlen) _MUSTCHECK;

/* update_servers as c-ares wants it ("1.2.3.4:53,[fd00::1]:53"); port 53 by default. */
bool dns_config_servers_csv(const DnsConfig *cfg, char *out, size_t outlen, char *err,
			    size_t errlen) _MUSTCHECK;

/* Absolute primary / replica name; false when unset or too long. */
bool dns_config_primary_fqdn(const DnsConfig *cfg, char *out, size_t outlen) _MUSTCHECK;
bool dns_config_replica_fqdn(const DnsConfig *cfg, char *out, size_t outlen) _MUSTCHECK;

/* Load the TSIG key the settings describe. *has_key = false (and true returned) when no key is
 * configured: updates are then sent unsigned. */
bool dns_config_load_key(const DnsConfig *cfg, DnsTsigKey *key, bool *has_key, char *err,
			 size_t errlen) _MUSTCHECK;

#endif
