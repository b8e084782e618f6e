/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The [dns] option table and its parser. Each option is described once, here; the ini loader,
 * SET, SHOW CONFIG and the sample-config drift check all read the same table.
 */
#include "dns/dns_config.h"
#include "dns/wire.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OFF(f) offsetof(DnsConfig, f)

const DnsConfigOption dns_config_options[] = {
    {"update_servers", DNS_OPT_STRING, OFF(update_servers), true, "",
     "primary master(s) that take the updates, ip[:port] list tried in turn", 0, 0, false},
    {"zone", DNS_OPT_STRING, OFF(zone), true, "", "zone the records live in", 0, 0, false},
    {"tsig_key_file", DNS_OPT_STRING, OFF(tsig_key_file), true, "",
     "BIND key file written by tsig-keygen", 0, 0, false},
    {"tsig_key_name", DNS_OPT_STRING, OFF(tsig_key_name), true, "",
     "key to use from tsig_key_file, or the key name for tsig_secret", 0, 0, false},
    {"tsig_secret", DNS_OPT_STRING, OFF(tsig_secret), true, "",
     "base64 TSIG secret (instead of tsig_key_file)", 0, 0, true},
    {"tsig_algorithm", DNS_OPT_STRING, OFF(tsig_algorithm), true, "hmac-sha256",
     "algorithm of tsig_secret: hmac-sha256, hmac-sha384 or hmac-sha512", 0, 0, false},
    {"ttl", DNS_OPT_INT, OFF(ttl), true, "5", "TTL of the published records, seconds", 0, 86400,
     false},
    {"primary_name", DNS_OPT_STRING, OFF(primary_name), true, "primary",
     "name of the primary's record, relative to zone unless it ends with a dot", 0, 0, false},
    {"replica_name", DNS_OPT_STRING, OFF(replica_name), true, "",
     "name of the replica RRset (all healthy replicas); empty = not published", 0, 0, false},
    {"dns_max_ttl", DNS_OPT_INT, OFF(dns_max_ttl), true, "60",
     "longest time a resolved backend address is cached, seconds", 0, 86400, false},
    {"dns_stale_keep", DNS_OPT_INT, OFF(dns_stale_keep), true, "300",
     "how long the last good address of a backend is used after lookups fail, seconds", 0, 86400,
     false},
    {"update_timeout", DNS_OPT_MSEC, OFF(update_timeout_ms), true, "2",
     "how long to wait for each server's reply, seconds", 100, 60000, false},
    {"update_tries", DNS_OPT_INT, OFF(update_tries), true, "3",
     "attempts per publication on timeout or SERVFAIL", 1, 100, false},
    {"update_retry_delay", DNS_OPT_MSEC, OFF(update_retry_delay_ms), true, "1",
     "back-off before the first retry, doubled each time, seconds", 0, 3600000, false},
    {"update_retry_max", DNS_OPT_MSEC, OFF(update_retry_max_ms), true, "30",
     "ceiling of the back-off, seconds", 0, 3600000, false},
    {"use_tcp", DNS_OPT_BOOL, OFF(use_tcp), true, "off",
     "send updates over TCP (UDP otherwise, TCP anyway above 512 bytes)", 0, 0, false},
    {NULL, 0, 0, false, NULL, NULL, 0, 0, false},
};

const DnsConfigOption *dns_config_find(const char *key)
{
	for (const DnsConfigOption *o = dns_config_options; o->name; o++)
		if (strcasecmp(o->name, key) == 0)
			return o;
	return NULL;
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

bool dns_config_set(DnsConfig *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	const DnsConfigOption *o = dns_config_find(key);
	void *field;
	char *end;

	if (o == NULL) {
		snprintf(err, errlen, "unrecognized [dns] parameter \"%s\"", key);
		return false;
	}
	if (value == NULL)
		value = "";
	field = (char *)cfg + o->offset;
	switch (o->type) {
	case DNS_OPT_STRING: {
		char *copy = NULL;

		if (*value) {
			copy = strdup(value);
			if (copy == NULL) {
				snprintf(err, errlen, "out of memory");
				return false;
			}
		}
		free(*(char **)field);
		*(char **)field = copy;
		return true;
	}
	case DNS_OPT_INT: {
		long v;

		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end || v < o->min || v > o->max) {
			snprintf(err, errlen,
				 "invalid value \"%s\" for parameter \"%s\": an integer from %ld "
				 "to %ld is expected",
				 value, o->name, o->min, o->max);
			return false;
		}
		*(int *)field = (int)v;
		return true;
	}
	case DNS_OPT_MSEC: {
		double s;

		errno = 0;
		s = strtod(value, &end);
		if (errno || end == value || *end || !isfinite(s) || s * 1000.0 < o->min ||
		    s * 1000.0 > o->max) {
			snprintf(err, errlen,
				 "invalid value \"%s\" for parameter \"%s\": seconds from %g to %g "
				 "are expected",
				 value, o->name, o->min / 1000.0, o->max / 1000.0);
			return false;
		}
		*(int *)field = (int)(s * 1000.0 + 0.5); /* s >= 0 here; no libm needed */
		return true;
	}
	case DNS_OPT_BOOL:
		if (!parse_bool(value, (bool *)field)) {
			snprintf(err, errlen,
				 "invalid value \"%s\" for parameter \"%s\": a boolean is expected",
				 value, o->name);
			return false;
		}
		return true;
	}
	snprintf(err, errlen, "parameter \"%s\" has an unknown type", o->name);
	return false;
}

void dns_config_init(DnsConfig *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (const DnsConfigOption *o = dns_config_options; o->name; o++)
		if (!dns_config_set(cfg, o->name, o->defval, err, sizeof(err)))
			abort(); /* a bad default in the table above: a programming error */
}

void dns_config_cleanup(DnsConfig *cfg)
{
	for (const DnsConfigOption *o = dns_config_options; o->name; o++) {
		if (o->type == DNS_OPT_STRING) {
			char **p = (char **)((char *)cfg + o->offset);

			free(*p);
			*p = NULL;
		}
	}
}

bool dns_config_copy(DnsConfig *dst, const DnsConfig *src)
{
	*dst = *src;
	for (const DnsConfigOption *o = dns_config_options; o->name; o++) {
		char **p;

		if (o->type != DNS_OPT_STRING)
			continue;
		p = (char **)((char *)dst + o->offset);
		if (*p && (*p = strdup(*p)) == NULL) {
			/* clear the remaining shared pointers before freeing what was copied */
			for (const DnsConfigOption *r = o + 1; r->name; r++)
				if (r->type == DNS_OPT_STRING)
					*(char **)((char *)dst + r->offset) = NULL;
			dns_config_cleanup(dst);
			return false;
		}
	}
	return true;
}

const char *dns_config_format(const DnsConfig *cfg, const DnsConfigOption *opt, char *buf,
			      size_t len)
{
	const void *field = (const char *)cfg + opt->offset;

	switch (opt->type) {
	case DNS_OPT_STRING: {
		const char *s = *(char *const *)field;

		snprintf(buf, len, "%s", s == NULL ? "" : opt->hidden ? "********" : s);
		break;
	}
	case DNS_OPT_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		break;
	case DNS_OPT_MSEC:
		snprintf(buf, len, "%g", *(const int *)field / 1000.0);
		break;
	case DNS_OPT_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "on" : "off");
		break;
	}
	return buf;
}

bool dns_config_is_enabled(const DnsConfig *cfg)
{
	return cfg->update_servers != NULL && cfg->zone != NULL;
}

/* One "ip", "ip:port", "[ip6]" or "[ip6]:port" entry into "ip:port" / "[ip6]:port". */
static bool server_entry(const char *entry, char *out, size_t outlen, char *err, size_t errlen)
{
	char host[64];
	const char *port = NULL;
	unsigned char tmp[16];
	bool v6;
	long p = 53;

	if (entry[0] == '[') {
		const char *close = strchr(entry, ']');

		if (close == NULL || (size_t)(close - entry - 1) >= sizeof(host))
			goto bad;
		memcpy(host, entry + 1, (size_t)(close - entry - 1));
		host[close - entry - 1] = '\0';
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			goto bad;
	} else {
		const char *colon = strchr(entry, ':');

		if (colon && strchr(colon + 1, ':'))
			colon = NULL; /* a bare IPv6 address, no port */
		if (strlen(entry) >= sizeof(host))
			goto bad;
		strcpy(host, entry);
		if (colon) {
			host[colon - entry] = '\0';
			port = colon + 1;
		}
	}
	if (port) {
		char *end;

		p = strtol(port, &end, 10);
		if (end == port || *end || p < 1 || p > 65535)
			goto bad;
	}
	v6 = inet_pton(AF_INET6, host, tmp) == 1;
	if (!v6 && inet_pton(AF_INET, host, tmp) != 1) {
		snprintf(err, errlen,
			 "update server \"%s\" is not an IP address (host names are not resolved "
			 "here)",
			 entry);
		return false;
	}
	if ((size_t)snprintf(out, outlen, v6 ? "[%s]:%ld" : "%s:%ld", host, p) >= outlen)
		goto bad;
	return true;
bad:
	snprintf(err, errlen, "invalid update server \"%s\": ip[:port] or [ipv6]:port expected",
		 entry);
	return false;
}

bool dns_config_servers_csv(const DnsConfig *cfg, char *out, size_t outlen, char *err,
			    size_t errlen)
{
	const char *p = cfg->update_servers;
	size_t used = 0;
	int n = 0;

	if (outlen == 0)
		return false;
	out[0] = '\0';
	if (p == NULL) {
		snprintf(err, errlen, "update_servers is not set");
		return false;
	}
	while (*p) {
		char entry[128], norm[80];
		size_t k = 0;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		while (*p && *p != ',' && !isspace((unsigned char)*p)) {
			if (k + 1 < sizeof(entry))
				entry[k++] = *p;
			p++;
		}
		entry[k] = '\0';
		if (!server_entry(entry, norm, sizeof(norm), err, errlen))
			return false;
		if (used + strlen(norm) + 2 > outlen) {
			snprintf(err, errlen, "update_servers is too long");
			return false;
		}
		used += (size_t)snprintf(out + used, outlen - used, "%s%s", n ? "," : "", norm);
		n++;
	}
	if (n == 0) {
		snprintf(err, errlen, "update_servers is empty");
		return false;
	}
	return true;
}

static bool fqdn(const DnsConfig *cfg, const char *name, char *out, size_t outlen)
{
	if (name == NULL || cfg->zone == NULL)
		return false;
	return dns_name_qualify(out, outlen, name, cfg->zone);
}

bool dns_config_primary_fqdn(const DnsConfig *cfg, char *out, size_t outlen)
{
	return fqdn(cfg, cfg->primary_name, out, outlen);
}

bool dns_config_replica_fqdn(const DnsConfig *cfg, char *out, size_t outlen)
{
	return fqdn(cfg, cfg->replica_name, out, outlen);
}

bool dns_config_load_key(const DnsConfig *cfg, DnsTsigKey *key, bool *has_key, char *err,
			 size_t errlen)
{
	*has_key = false;
	memset(key, 0, sizeof(*key));
	if (cfg->tsig_key_file && cfg->tsig_secret) {
		snprintf(err, errlen, "tsig_key_file and tsig_secret are both set; set only one");
		return false;
	}
	if (cfg->tsig_key_file) {
		if (!dns_tsig_key_load(key, cfg->tsig_key_file, cfg->tsig_key_name, err, errlen))
			return false;
	} else if (cfg->tsig_secret) {
		if (cfg->tsig_key_name == NULL) {
			snprintf(err, errlen, "tsig_secret is set but tsig_key_name is not");
			return false;
		}
		if (!dns_tsig_key_set(key, cfg->tsig_key_name, cfg->tsig_algorithm,
				      cfg->tsig_secret, err, errlen))
			return false;
	} else {
		return true;
	}
	*has_key = true;
	return true;
}

/* Append "; msg" to the error list. */
static void add_error(char *err, size_t errlen, int *nerr, const char *msg)
{
	size_t used = strlen(err);

	if (used < errlen)
		snprintf(err + used, errlen - used, "%s%s", *nerr ? "; " : "", msg);
	(*nerr)++;
}

/* Is the absolute name <name> the zone or below it? */
static bool in_zone(const DnsName *name, const DnsName *zone)
{
	DnsName tail;

	if (name->len < zone->len)
		return false;
	tail.len = zone->len;
	memcpy(tail.wire, name->wire + name->len - zone->len, zone->len);
	if (!dns_name_equal(&tail, zone))
		return false;
	/* the tail must start on a label boundary */
	for (size_t i = 0; i < name->len; i += 1 + name->wire[i])
		if (i == name->len - zone->len)
			return true;
	return false;
}

static void check_name(const DnsConfig *cfg, const char *key, const char *value,
		       const DnsName *zone, char *err, size_t errlen, int *nerr)
{
	char full[600], sub[300], msg[700];
	DnsName n;

	if (!dns_name_qualify(full, sizeof(full), value, cfg->zone)) {
		snprintf(msg, sizeof(msg), "%s is too long", key);
		add_error(err, errlen, nerr, msg);
	} else if (!dns_name_from_text(&n, full, sub, sizeof(sub))) {
		snprintf(msg, sizeof(msg), "invalid %s: %s", key, sub);
		add_error(err, errlen, nerr, msg);
	} else if (zone && !in_zone(&n, zone)) {
		snprintf(msg, sizeof(msg), "%s \"%s\" is not inside zone \"%s\"", key, full,
			 cfg->zone);
		add_error(err, errlen, nerr, msg);
	}
}

bool dns_config_validate(const DnsConfig *cfg, char *err, size_t errlen)
{
	char sub[512], csv[1024];
	int nerr = 0;
	DnsName zone;
	bool zone_ok = false, has_key;
	DnsTsigKey key;

	if (errlen)
		err[0] = '\0';
	if (!dns_config_is_enabled(cfg)) {
		if (cfg->update_servers || cfg->zone)
			add_error(err, errlen, &nerr,
				  cfg->zone ? "zone is set but update_servers is not"
					    : "update_servers is set but zone is not");
		return nerr == 0;
	}
	if (!dns_config_servers_csv(cfg, csv, sizeof(csv), sub, sizeof(sub)))
		add_error(err, errlen, &nerr, sub);
	if (!dns_name_from_text(&zone, cfg->zone, sub, sizeof(sub))) {
		char msg[600];

		snprintf(msg, sizeof(msg), "invalid zone: %s", sub);
		add_error(err, errlen, &nerr, msg);
	} else {
		zone_ok = true;
	}
	if (cfg->primary_name == NULL)
		add_error(err, errlen, &nerr, "primary_name is not set");
	else
		check_name(cfg, "primary_name", cfg->primary_name, zone_ok ? &zone : NULL, err,
			   errlen, &nerr);
	if (cfg->replica_name)
		check_name(cfg, "replica_name", cfg->replica_name, zone_ok ? &zone : NULL, err,
			   errlen, &nerr);
	if (cfg->update_retry_max_ms < cfg->update_retry_delay_ms)
		add_error(err, errlen, &nerr,
			  "update_retry_max is smaller than update_retry_delay");
	if (!dns_config_load_key(cfg, &key, &has_key, sub, sizeof(sub)))
		add_error(err, errlen, &nerr, sub);
	dns_tsig_key_cleanup(&key);
	return nerr == 0;
}
