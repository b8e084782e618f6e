/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of dns/dns_config.c: defaults, parsing of every option type, bad values, server list
 * normalisation for c-ares, name qualification and the combined validation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns/dns_config.h"

#include <string.h>

static void test_defaults(void **state)
{
	DnsConfig cfg;
	char buf[64], err[256];

	dns_config_init(&cfg);
	assert_int_equal(cfg.ttl, 5);
	assert_string_equal(cfg.primary_name, "primary");
	assert_null(cfg.replica_name);
	assert_int_equal(cfg.update_timeout_ms, 2000);
	assert_int_equal(cfg.update_tries, 3);
	assert_false(cfg.use_tcp);
	assert_false(dns_config_is_enabled(&cfg));
	assert_true(dns_config_validate(&cfg, err, sizeof(err))); /* disabled is valid */
	assert_string_equal(
	    dns_config_format(&cfg, dns_config_find("update_timeout"), buf, sizeof(buf)), "2");
	for (const DnsConfigOption *o = dns_config_options; o->name; o++) {
		assert_non_null(o->doc);
		assert_non_null(o->defval);
	}
	dns_config_cleanup(&cfg);
}

static void test_set_values(void **state)
{
	DnsConfig cfg;
	char err[256], buf[64];

	dns_config_init(&cfg);
	assert_true(dns_config_set(&cfg, "ttl", "30", err, sizeof(err)));
	assert_int_equal(cfg.ttl, 30);
	assert_false(dns_config_set(&cfg, "ttl", "-1", err, sizeof(err)));
	assert_non_null(strstr(err, "\"ttl\""));
	assert_false(dns_config_set(&cfg, "ttl", "5x", err, sizeof(err)));
	assert_int_equal(cfg.ttl, 30);
	assert_true(dns_config_set(&cfg, "update_timeout", "0.5", err, sizeof(err)));
	assert_int_equal(cfg.update_timeout_ms, 500);
	assert_false(dns_config_set(&cfg, "update_timeout", "0", err, sizeof(err)));
	assert_false(dns_config_set(&cfg, "update_timeout", "nan", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "USE_TCP", "yes", err, sizeof(err)));
	assert_true(cfg.use_tcp);
	assert_false(dns_config_set(&cfg, "use_tcp", "maybe", err, sizeof(err)));
	assert_false(dns_config_set(&cfg, "no_such_key", "1", err, sizeof(err)));
	assert_string_equal(err, "unrecognized [dns] parameter \"no_such_key\"");
	assert_true(dns_config_set(&cfg, "tsig_secret", "c2VjcmV0", err, sizeof(err)));
	assert_string_equal(
	    dns_config_format(&cfg, dns_config_find("tsig_secret"), buf, sizeof(buf)), "********");
	assert_true(dns_config_set(&cfg, "replica_name", "", err, sizeof(err)));
	assert_null(cfg.replica_name);
	dns_config_cleanup(&cfg);
}

static void test_servers_csv(void **state)
{
	DnsConfig cfg;
	char csv[256], err[256];

	dns_config_init(&cfg);
	assert_true(dns_config_set(&cfg, "update_servers",
				   "127.0.0.1:55353, 10.0.0.1 [::1]:5353,fd00::1", err,
				   sizeof(err)));
	assert_true(dns_config_servers_csv(&cfg, csv, sizeof(csv), err, sizeof(err)));
	assert_string_equal(csv, "127.0.0.1:55353,10.0.0.1:53,[::1]:5353,[fd00::1]:53");
	assert_true(dns_config_set(&cfg, "update_servers", "ns1.example.com", err, sizeof(err)));
	assert_false(dns_config_servers_csv(&cfg, csv, sizeof(csv), err, sizeof(err)));
	assert_non_null(strstr(err, "not an IP address"));
	assert_true(dns_config_set(&cfg, "update_servers", "127.0.0.1:0", err, sizeof(err)));
	assert_false(dns_config_servers_csv(&cfg, csv, sizeof(csv), err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_servers", "[::1", err, sizeof(err)));
	assert_false(dns_config_servers_csv(&cfg, csv, sizeof(csv), err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_servers", " , ", err, sizeof(err)));
	assert_false(dns_config_servers_csv(&cfg, csv, sizeof(csv), err, sizeof(err)));
	dns_config_cleanup(&cfg);
}

static void test_validate(void **state)
{
	DnsConfig cfg, copy;
	char err[1024], name[300];

	dns_config_init(&cfg);
	assert_true(dns_config_set(&cfg, "zone", "pg.test", err, sizeof(err)));
	assert_false(dns_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err, "zone is set but update_servers is not");

	assert_true(dns_config_set(&cfg, "update_servers", "127.0.0.1:53", err, sizeof(err)));
	assert_true(dns_config_validate(&cfg, err, sizeof(err))); /* unsigned updates */
	assert_true(dns_config_primary_fqdn(&cfg, name, sizeof(name)));
	assert_string_equal(name, "primary.pg.test");
	assert_false(dns_config_replica_fqdn(&cfg, name, sizeof(name)));

	/* everything wrong at once: all reported */
	assert_true(dns_config_set(&cfg, "primary_name", "db.other.test.", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "replica_name", "bad name", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "tsig_secret", "c2VjcmV0", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_retry_max", "0.5", err, sizeof(err)));
	assert_false(dns_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "primary_name \"db.other.test.\" is not inside zone"));
	assert_non_null(strstr(err, "invalid replica_name"));
	assert_non_null(strstr(err, "tsig_key_name is not"));
	assert_non_null(strstr(err, "update_retry_max"));

	/* fixed, with the key from a file */
	assert_true(dns_config_set(&cfg, "primary_name", "db.PG.test.", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "replica_name", "replicas", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "tsig_secret", "", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "tsig_key_file", "data/dns/good.key", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_retry_max", "30", err, sizeof(err)));
	assert_true(dns_config_validate(&cfg, err, sizeof(err)));
	assert_true(dns_config_replica_fqdn(&cfg, name, sizeof(name)));
	assert_string_equal(name, "replicas.pg.test");

	/* a name that only ends like the zone is outside it */
	assert_true(dns_config_set(&cfg, "primary_name", "xpg.test.", err, sizeof(err)));
	assert_false(dns_config_validate(&cfg, err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "primary_name", "primary", err, sizeof(err)));

	assert_true(dns_config_set(&cfg, "tsig_key_file", "data/dns/md5.key", err, sizeof(err)));
	assert_false(dns_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "hmac-md5"));

	assert_true(dns_config_copy(&copy, &cfg));
	assert_ptr_not_equal(copy.zone, cfg.zone);
	assert_string_equal(copy.zone, "pg.test");
	dns_config_cleanup(&copy);
	dns_config_cleanup(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_set_values),
	    cmocka_unit_test(test_servers_csv),
	    cmocka_unit_test(test_validate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
