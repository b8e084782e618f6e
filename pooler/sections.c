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

bool sections_register(void)
{
	return config_register_section(&dns_section);
}

const DnsConfig *sections_dns(const Config *cfg)
{
	return config_section_data(cfg, "dns");
}
