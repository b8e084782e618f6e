/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/ha_config.c: the [cluster] table (defaults, every type, bad values), the
 * combined validation (required keys per mode, pg_rto < 5, synchronous_mode, timing overrides
 * that break the inequalities, the advertised address) and the derived timings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ha/ha_config.h"

#include <stdio.h>
#include <string.h>

/* Load key = value lines (the haprobe format) into cfg. */
static void load(HaConfig *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024], err[256];

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *eq, *k = line, *v, *e;

		line[strcspn(line, "\n")] = '\0';
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		assert_non_null(eq);
		*eq = '\0';
		for (e = eq; e > k && e[-1] == ' '; e--)
			e[-1] = '\0';
		for (v = eq + 1; *v == ' '; v++)
			;
		if (!ha_config_set(cfg, k, v, err, sizeof(err)))
			fail_msg("%s: %s", k, err);
	}
	fclose(f);
}

static void test_defaults(void **state)
{
	HaConfig cfg;
	char buf[128], err[512];

	ha_config_init(&cfg);
	assert_int_equal(cfg.ha_mode, HA_MODE_OFF);
	assert_string_equal(cfg.namespace, "/service");
	assert_string_equal(cfg.pg_bin, "/usr/lib/postgresql/15/bin");
	assert_int_equal(cfg.pg_rto, 30);
	assert_int_equal(cfg.pg_rpo, 1048576);
	assert_int_equal(cfg.failover_priority, 1);
	assert_int_equal(cfg.etcd_timeout_ms, 2000);
	assert_false(cfg.synchronous_mode);
	assert_int_equal(cfg.ov.lease_ttl_ms, 0);
	assert_null(cfg.name);
	assert_true(ha_config_validate(&cfg, err, sizeof(err))); /* off is always valid */
	for (const HaConfigOption *o = ha_config_options; o->name; o++) {
		assert_non_null(o->doc);
		assert_non_null(o->defval);
		assert_ptr_equal(ha_config_find(o->name), o);
		for (const HaConfigOption *p = o + 1; p->name; p++)
			assert_string_not_equal(o->name, p->name);
	}
	assert_string_equal(ha_config_format(&cfg, ha_config_find("ha_mode"), buf, sizeof(buf)),
			    "off");
	assert_string_equal(
	    ha_config_format(&cfg, ha_config_find("etcd_timeout"), buf, sizeof(buf)), "2");
	assert_string_equal(ha_config_format(&cfg, ha_config_find("pg_rpo"), buf, sizeof(buf)),
			    "1048576");
	assert_string_equal(ha_config_format(&cfg, ha_config_find("nofailover"), buf, sizeof(buf)),
			    "off");
	ha_config_cleanup(&cfg);
}

static void test_agent_file(void **state)
{
	HaConfig cfg, copy;
	char err[512], buf[128];

	ha_config_init(&cfg);
	load(&cfg, "data/ha_agent/agent.conf");
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(cfg.namespace, "/pg"); /* trailing slash dropped */
	assert_string_equal(cfg.adv_host, "10.0.0.11");
	assert_int_equal(cfg.adv_port, 5433);
	assert_int_equal(cfg.failover_priority, 3);
	assert_int_equal(cfg.timings.lease_ttl_ms, 24000);
	assert_int_equal(cfg.timings.renew_ms, 3000);
	assert_int_equal(cfg.timings.pg_rpo, 1048576);
	/* pg_advertise wins over pg_conn */
	assert_true(ha_config_set(&cfg, "pg_advertise", "[fd00::11]:6432", err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(cfg.adv_host, "fd00::11");
	assert_int_equal(cfg.adv_port, 6432);
	/* secrets are never formatted */
	assert_true(ha_config_set(&cfg, "etcd_password", "s3cret", err, sizeof(err)));
	assert_string_equal(
	    ha_config_format(&cfg, ha_config_find("etcd_password"), buf, sizeof(buf)), "********");
	assert_string_equal(ha_config_format(&cfg, ha_config_find("pg_conn"), buf, sizeof(buf)),
			    "********");
	assert_true(ha_config_copy(&copy, &cfg));
	assert_ptr_not_equal(copy.name, cfg.name);
	assert_string_equal(copy.name, "pg-test");
	ha_config_cleanup(&copy);
	ha_config_cleanup(&cfg);
}

static void test_bad_values(void **state)
{
	static const struct {
		const char *key, *value, *msg;
	} bad[] = {
	    {"pg_rto", "4",
	     "invalid value \"4\" for parameter \"pg_rto\": an integer from 5 to "
	     "86400 is expected"},
	    {"pg_rto", "abc", NULL},
	    {"pg_rpo", "-1", NULL},
	    {"ha_mode", "leader",
	     "invalid value \"leader\" for parameter \"ha_mode\": off, follow "
	     "or agent is expected"},
	    {"nofailover", "maybe",
	     "invalid value \"maybe\" for parameter \"nofailover\": a "
	     "boolean is expected"},
	    {"lease_ttl", "-2", NULL},
	    {"renew_interval", "1s", NULL},
	    {"etcd_timeout", "0.01", NULL},
	    {"synchronous_mode", "on",
	     "synchronous_mode = on is not supported yet: synchronous "
	     "replication management (pg_rpo = 0 with sync standbys) is "
	     "a later feature"},
	    {"colour", "blue", "unrecognized [cluster] parameter \"colour\""},
	};
	HaConfig cfg;
	char err[512];

	ha_config_init(&cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_false(ha_config_set(&cfg, bad[i].key, bad[i].value, err, sizeof(err)));
		assert_true(err[0] != '\0');
		if (bad[i].msg)
			assert_string_equal(err, bad[i].msg);
	}
	/* nothing changed */
	assert_int_equal(cfg.pg_rto, 30);
	assert_false(cfg.synchronous_mode);
	assert_int_equal(cfg.ha_mode, HA_MODE_OFF);
	/* good values of each type */
	assert_true(ha_config_set(&cfg, "synchronous_mode", "off", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "ha_mode", "FOLLOW", err, sizeof(err)));
	assert_int_equal(cfg.ha_mode, HA_MODE_FOLLOW);
	assert_true(ha_config_set(&cfg, "pg_rto", "5", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "lease_ttl", "3", err, sizeof(err)));
	assert_int_equal(cfg.ov.lease_ttl_ms, 3000);
	assert_true(ha_config_set(&cfg, "rank_step", "0.25", err, sizeof(err)));
	assert_int_equal(cfg.ov.rank_step_ms, 250);
	assert_true(ha_config_set(&cfg, "name", "", err, sizeof(err)));
	assert_null(cfg.name);
	ha_config_cleanup(&cfg);
}

static void test_validate(void **state)
{
	HaConfig cfg;
	char err[1024];

	/* follow: name and endpoints */
	ha_config_init(&cfg);
	assert_true(ha_config_set(&cfg, "ha_mode", "follow", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err, "[cluster] name must be set when ha_mode is follow; "
				 "etcd_endpoints must be set when ha_mode is follow");
	assert_true(ha_config_set(&cfg, "name", "pg/test", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "etcd_endpoints", "http://e:2379", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(
	    err, "invalid cluster name \"pg/test\": letters, digits, '-', '_' and '.' only");
	assert_true(ha_config_set(&cfg, "name", "pg-test", err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "namespace", "service", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err, "namespace must start with '/'");
	assert_true(ha_config_set(&cfg, "namespace", "/service", err, sizeof(err)));

	/* agent: member, pg_conn, pg_data */
	assert_true(ha_config_set(&cfg, "ha_mode", "agent", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err,
			    "member must be set when ha_mode is agent; pg_conn must be set "
			    "when ha_mode is agent; pg_data must be set when ha_mode is agent");
	assert_true(ha_config_set(&cfg, "member", "pg-1", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "pg_data", "/d", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "pg_conn", "host=/var/run/postgresql", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "pg_advertise must be set when pg_conn has no TCP host"));
	assert_true(ha_config_set(&cfg, "pg_advertise", "db1", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err, "invalid pg_advertise \"db1\": host:port is expected");
	assert_true(ha_config_set(&cfg, "pg_advertise", "db1:5432", err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "pg_conn", "host='x", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_true(strncmp(err, "invalid pg_conn: ", 17) == 0);
	assert_true(ha_config_set(&cfg, "pg_conn", "host=db1", err, sizeof(err)));

	/* timing overrides are checked by the inequalities, with the numbers */
	assert_true(ha_config_set(&cfg, "renew_interval", "3", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "retry_timeout", "15", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(
	    strstr(err, "renew_interval + 2 * retry_timeout must not exceed lease_ttl"));
	assert_non_null(strstr(err, "3000 + 2 * 15000 = 33000 ms > 24000 ms"));
	assert_true(ha_config_set(&cfg, "retry_timeout", "0", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "renew_interval", "0", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "lease_ttl", "40", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "lease_ttl 40000 ms"));
	assert_true(ha_config_set(&cfg, "lease_ttl", "0", err, sizeof(err)));
	/* the smallest pg_rto derives a valid set */
	assert_true(ha_config_set(&cfg, "pg_rto", "5", err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_int_equal(cfg.timings.lease_ttl_ms, 3000);
	assert_int_equal(cfg.timings.probe_ms, 500);
	/* synchronous_mode forced on behind set()'s back is still refused */
	cfg.synchronous_mode = true;
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_string_equal(err, "synchronous_mode = on is not supported yet");
	cfg.synchronous_mode = false;
	/* and a pg_rto below 5 set directly */
	cfg.pg_rto = 4;
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "pg_rto"));
	ha_config_cleanup(&cfg);
}

static void test_mode_parse(void **state)
{
	HaMode m;

	assert_true(ha_mode_parse("agent", &m));
	assert_int_equal(m, HA_MODE_AGENT);
	assert_true(ha_mode_parse("Off", &m));
	assert_int_equal(m, HA_MODE_OFF);
	assert_false(ha_mode_parse("", &m));
	assert_false(ha_mode_parse("agents", &m));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),   cmocka_unit_test(test_agent_file),
	    cmocka_unit_test(test_bad_values), cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_mode_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
