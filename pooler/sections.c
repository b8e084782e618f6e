/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Glue between the ini loader and the section owners: [dns] is parsed by dns/dns_config.c.
 */
#include "pooler/sections.h"

#include <stdio.h>
#include <string.h>

static void dns_section_init(void *data)
{
	dns_config_init(data);
}

static void dns_section_cleanup(void *data)
{
	dns_config_cleanup(data);
}

static bool dns_section_set(void *data, const char *key, const char *value, char *err,
			    size_t errlen)
{
	return dns_config_set(data, key, value, err, errlen);
}

static bool dns_section_validate(void *data, char *err, size_t errlen)
{
	return dns_config_validate(data, err, errlen);
}

/* Everything in [dns] may change at RELOAD: the updater and resolver are rebuilt. */
static bool dns_section_reload(void *newdata, const void *olddata, ConfigErrors *errs)
{
	return true;
}

static const ConfigSection dns_section = {
	.name = "dns",
	.size = sizeof(DnsConfig),
	.validate = dns_section_validate,
	.init = dns_section_init,
	.cleanup = dns_section_cleanup,
	.set = dns_section_set,
	.reload = dns_section_reload,
};

static void cluster_section_init(void *data)
{
	ha_config_init(data);
}

static void cluster_section_cleanup(void *data)
{
	ha_config_cleanup(data);
}

static bool cluster_section_set(void *data, const char *key, const char *value, char *err,
				size_t errlen)
{
	return ha_config_set(data, key, value, err, errlen);
}

/* Restart-only: which cluster and member this pgpilot is, and where its node lives. */
static bool cluster_section_reload(void *newdata, const void *olddata, ConfigErrors *errs)
{
	HaConfig *n = newdata;
	const HaConfig *o = olddata;
	bool same = true;

	for (const HaConfigOption *opt = ha_config_options; opt->name; opt++) {
		char a[512], b[512];

		if (opt->reloadable || opt->hidden)
			continue;
		if (strcmp(ha_config_format(n, opt, a, sizeof(a)), ha_config_format(o, opt, b, sizeof(b))) == 0)
			continue;
		if (!ha_config_set(n, opt->name, b, a, sizeof(a)))
			continue;
		config_warning(errs, NULL, 0, "[cluster] %s cannot change without a restart: kept \"%s\"",
			       opt->name, b);
		same = false;
	}
	return same;
}

static const ConfigSection cluster_section = {
	.name = "cluster",
	.size = sizeof(HaConfig),
	.init = cluster_section_init,
	.cleanup = cluster_section_cleanup,
	.set = cluster_section_set,
	.reload = cluster_section_reload,
};

bool sections_register(void)
{
	return config_register_section(&dns_section) && config_register_section(&cluster_section);
}

const HaConfig *sections_cluster(const Config *cfg)
{
	return config_section_data(cfg, "cluster");
}

const DnsConfig *sections_dns(const Config *cfg)
{
	return config_section_data(cfg, "dns");
}
