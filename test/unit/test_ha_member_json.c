/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/member_json.c: the members/<name> value (ours and Patroni 3.0's, from data
 * files), status, history, config (pause), failover and sync values, and the text helpers:
 * conn_url, host:port, primary_conninfo quoting, SQL literals, postgresql.auto.conf edits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ha/member_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D "data/ha_agent/"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_int_equal(fseek(f, 0, SEEK_SET), 0);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void parse_file(const char *path, HaMember *m, const char *name)
{
	char *json = slurp(path), err[256];

	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	assert_true(ha_member_json_parse(json, strlen(json), m, err, sizeof(err)));
	free(json);
}

static void test_patroni_master(void **state)
{
	HaMember m;

	parse_file(D "patroni_master.json", &m, "pg-1");
	assert_string_equal(m.name, "pg-1");
	assert_string_equal(m.host, "127.0.0.1");
	assert_int_equal(m.port, 5432);
	assert_string_equal(m.api_url, "http://127.0.0.1:8008/patroni");
	assert_int_equal(m.role, HA_ROLE_PRIMARY); /* "master" */
	assert_int_equal(m.state, HA_PG_RUNNING);
	assert_false(m.in_recovery);
	assert_int_equal(m.timeline, 1);
	assert_int_equal(m.write_lsn, 50331968);
	assert_int_equal(m.flush_lsn, 50331968);
	assert_int_equal(m.receive_lsn, 0);
	assert_int_equal(ha_member_lsn(&m), 50331968);
	assert_false(m.tags.nofailover);
	assert_int_equal(m.tags.failover_priority, HA_FAILOVER_PRIORITY_DEFAULT);
	assert_false(m.healthy); /* health is the caller's business */
}

static void test_patroni_replica(void **state)
{
	HaMember m;

	parse_file(D "patroni_replica.json", &m, "pg-2");
	assert_string_equal(m.host, "10.0.0.12");
	assert_int_equal(m.port, 5433);
	assert_int_equal(m.role, HA_ROLE_REPLICA);
	assert_true(m.in_recovery);
	assert_int_equal(m.receive_lsn, 50331648);
	assert_int_equal(m.replay_lsn, 50331648);
	assert_int_equal(m.write_lsn, 0);
	assert_true(m.tags.nofailover);
	assert_true(m.tags.noloadbalance); /* "true" as a string, as older Patroni wrote it */
}

static void test_member_variants(void **state)
{
	HaMember m;

	parse_file(D "v6_member.json", &m, "pg-3");
	assert_string_equal(m.host, "fd00::7");
	assert_int_equal(m.port, 6543);
	assert_int_equal(m.role, HA_ROLE_REPLICA); /* sync_standby */
	assert_int_equal(m.state, HA_PG_STARTING); /* "restarting (after failure)" */
	assert_int_equal(m.timeline, 3);
	assert_int_equal(m.receive_lsn, 0x3000100);
	assert_int_equal(m.replay_lsn, 50331744);
	assert_int_equal(m.tags.failover_priority, 0);
}

static void test_member_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"state\":\"running\"}",
	    "{\"conn_url\":\"http://h:1/x\"}",
	    "{\"conn_url\":\"postgres://:5432/postgres\"}",
	    "{\"conn_url\":\"postgres://h:99999/postgres\"}",
	    "{\"conn_url\":\"postgres://h:5432/postgres\"",
	};
	HaMember m;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&m, 0, sizeof(m));
		strcpy(m.name, "x");
		err[0] = '\0';
		assert_false(ha_member_json_parse(bad[i], strlen(bad[i]), &m, err, sizeof(err)));
		assert_true(strncmp(err, "invalid member value", 20) == 0);
	}
}

static void test_member_roundtrip(void **state)
{
	HaMember m, back;
	char *json, err[256];

	memset(&m, 0, sizeof(m));
	strcpy(m.name, "pg-2");
	strcpy(m.host, "10.1.2.3");
	m.port = 5432;
	m.state = HA_PG_RUNNING;
	m.role = HA_ROLE_REPLICA;
	m.in_recovery = true;
	m.timeline = 4;
	m.receive_lsn = 0x5000200;
	m.replay_lsn = 0x5000100;
	m.tags.nofailover = true;
	m.tags.failover_priority = 7;
	json = ha_member_json_build(&m, "http://10.1.2.3:8008", "pgpilot 0.1.0");
	assert_non_null(json);
	assert_non_null(strstr(json, "\"conn_url\":\"postgres://10.1.2.3:5432/postgres\""));
	assert_non_null(strstr(json, "\"role\":\"replica\""));
	assert_non_null(strstr(json, "\"state\":\"running\""));
	assert_non_null(strstr(json, "\"xlog_location\":83886592"));
	memset(&back, 0, sizeof(back));
	strcpy(back.name, "pg-2");
	assert_true(ha_member_json_parse(json, strlen(json), &back, err, sizeof(err)));
	assert_string_equal(back.host, m.host);
	assert_int_equal(back.port, 5432);
	assert_int_equal(back.timeline, 4);
	assert_int_equal(back.receive_lsn, m.receive_lsn);
	assert_int_equal(back.replay_lsn, m.replay_lsn);
	assert_true(back.tags.nofailover);
	assert_int_equal(back.tags.failover_priority, 7);
	assert_string_equal(back.api_url, "http://10.1.2.3:8008");
	free(json);

	/* a primary on IPv6, no api_url: omitted; unknown state is published as stopped */
	memset(&m, 0, sizeof(m));
	strcpy(m.name, "pg-1");
	strcpy(m.host, "::1");
	m.port = 6000;
	m.write_lsn = 100;
	m.flush_lsn = 90;
	m.tags.failover_priority = 1;
	json = ha_member_json_build(&m, NULL, NULL);
	assert_non_null(json);
	assert_non_null(strstr(json, "postgres://[::1]:6000/postgres"));
	assert_null(strstr(json, "api_url"));
	assert_non_null(strstr(json, "\"role\":\"primary\""));
	assert_non_null(strstr(json, "\"state\":\"stopped\""));
	assert_non_null(strstr(json, "\"xlog_location\":100"));
	free(json);
}

static void test_status(void **state)
{
	uint64_t lsn;
	uint32_t tl;
	char *s = ha_status_json_build(50331968, 2);

	assert_string_equal(s, "{\"optime\":50331968,\"timeline\":2}");
	assert_true(ha_status_json_parse(s, strlen(s), &lsn, &tl));
	assert_int_equal(lsn, 50331968);
	assert_int_equal(tl, 2);
	free(s);
	/* Patroni's status: optime and slots, no timeline */
	s = "{\"optime\":67108960,\"slots\":{\"pg_2\":67108960}}";
	assert_true(ha_status_json_parse(s, strlen(s), &lsn, &tl));
	assert_int_equal(lsn, 67108960);
	assert_int_equal(tl, 0);
	s = "{\"optime\":\"0/4000060\"}";
	assert_true(ha_status_json_parse(s, strlen(s), &lsn, &tl));
	assert_int_equal(lsn, 0x4000060);
	s = "{\"timeline\":2}";
	assert_false(ha_status_json_parse(s, strlen(s), &lsn, &tl));
	s = "{\"optime\":-5}";
	assert_false(ha_status_json_parse(s, strlen(s), &lsn, &tl));
	s = "nonsense";
	assert_false(ha_status_json_parse(s, strlen(s), &lsn, &tl));
}

static void test_history(void **state)
{
	char *json = slurp(D "history.json"), *more;
	HaCluster c;
	uint64_t sw;

	ha_cluster_init(&c);
	assert_true(ha_history_json_parse(json, strlen(json), &c));
	assert_int_equal(c.n_history, 2);
	assert_true(ha_cluster_switch_lsn(&c, 1, &sw));
	assert_int_equal(sw, 25165984);
	assert_true(ha_cluster_switch_lsn(&c, 2, &sw));
	assert_int_equal(sw, 0x3000158);
	assert_false(ha_cluster_switch_lsn(&c, 3, &sw));

	more = ha_history_json_append(json, 3, 0x5000000, "promoted by pgpilot",
				      "2026-01-01T00:00:00+00:00", "pg-3");
	assert_non_null(more);
	assert_non_null(strstr(more, "[3,83886080,\"promoted by pgpilot\",\"2026-01-01T00:00:00+"
				     "00:00\",\"pg-3\"]]"));
	assert_true(ha_history_json_parse(more, strlen(more), &c));
	assert_int_equal(c.n_history, 3);
	free(more);
	/* from nothing, and from garbage */
	more = ha_history_json_append(NULL, 1, 10, "r", "t", "pg-1");
	assert_string_equal(more, "[[1,10,\"r\",\"t\",\"pg-1\"]]");
	free(more);
	more = ha_history_json_append("{oops", 1, 10, NULL, NULL, NULL);
	assert_string_equal(more, "[[1,10,\"\",\"\",\"\"]]");
	free(more);
	assert_false(ha_history_json_parse("{}", 2, &c));
	/* bad entries are skipped */
	more = "[[0,1],[\"x\",2],[2,\"zz\"],[4,\"0/10\"]]";
	assert_true(ha_history_json_parse(more, strlen(more), &c));
	assert_int_equal(c.n_history, 1);
	free(json);
}

static void test_config_pause(void **state)
{
	char *json = slurp(D "patroni_config.json"), *off, *on;
	bool pause, sync;

	assert_true(ha_config_json_parse(json, strlen(json), &pause, &sync));
	assert_true(pause);
	assert_false(sync);
	off = ha_config_json_set_pause(json, false);
	assert_non_null(off);
	assert_null(strstr(off, "pause"));
	assert_non_null(strstr(off, "\"maximum_lag_on_failover\":1048576")); /* kept */
	assert_true(ha_config_json_parse(off, strlen(off), &pause, &sync));
	assert_false(pause);
	on = ha_config_json_set_pause(NULL, true);
	assert_string_equal(on, "{\"pause\":true}");
	free(on);
	on = ha_config_json_set_pause("[1]", true);
	assert_string_equal(on, "{\"pause\":true}");
	assert_true(ha_config_json_parse("{\"synchronous_mode\":true}", 25, &pause, &sync));
	assert_true(sync);
	assert_false(ha_config_json_parse("]", 1, &pause, &sync));
	free(on);
	free(off);
	free(json);
}

static void test_failover_sync(void **state)
{
	HaFailoverRequest fo;
	char *s = ha_failover_json_build("pg-1", "pg-2", true), sb[HA_NAME_MAX];

	assert_string_equal(s, "{\"leader\":\"pg-1\",\"member\":\"pg-2\",\"pgpilot_force\":true}");
	assert_true(ha_failover_json_parse(s, strlen(s), &fo));
	assert_true(fo.present);
	assert_string_equal(fo.candidate, "pg-2");
	assert_true(fo.force);
	free(s);
	s = ha_failover_json_build("", "pg-3", false);
	assert_string_equal(s, "{\"member\":\"pg-3\"}");
	free(s);
	/* Patroni's failover key */
	s = "{\"candidate\":\"pg-3\",\"scheduled_at\":null}";
	assert_true(ha_failover_json_parse(s, strlen(s), &fo));
	assert_string_equal(fo.candidate, "pg-3");
	assert_false(fo.force);
	s = "{\"leader\":\"pg-1\"}";
	assert_false(ha_failover_json_parse(s, strlen(s), &fo));
	assert_false(fo.present);

	s = "{\"leader\":\"pg-1\",\"sync_standby\":\"pg-2,pg-3\"}";
	assert_true(ha_sync_json_parse(s, strlen(s), sb, sizeof(sb)));
	assert_string_equal(sb, "pg-2");
	s = "{\"leader\":\"pg-1\",\"sync_standby\":null}";
	assert_true(ha_sync_json_parse(s, strlen(s), sb, sizeof(sb)));
	assert_string_equal(sb, "");
	assert_false(ha_sync_json_parse("x", 1, sb, sizeof(sb)));
}

static void test_host_port(void **state)
{
	char h[64];
	int p;

	assert_true(ha_split_host_port("db1:5433", h, sizeof(h), &p));
	assert_string_equal(h, "db1");
	assert_int_equal(p, 5433);
	assert_true(ha_split_host_port("[fd00::1]:6432", h, sizeof(h), &p));
	assert_string_equal(h, "fd00::1");
	assert_int_equal(p, 6432);
	assert_true(ha_split_host_port("fd00::1", h, sizeof(h), &p));
	assert_string_equal(h, "fd00::1");
	assert_int_equal(p, 0);
	assert_true(ha_split_host_port("db1", h, sizeof(h), &p));
	assert_int_equal(p, 0);
	assert_false(ha_split_host_port(":5432", h, sizeof(h), &p));
	assert_false(ha_split_host_port("db1:", h, sizeof(h), &p));
	assert_false(ha_split_host_port("db1:0", h, sizeof(h), &p));
	assert_false(ha_split_host_port("db1:65536", h, sizeof(h), &p));
	assert_false(ha_split_host_port("[::1", h, sizeof(h), &p));
	assert_false(ha_split_host_port("[::1]x", h, sizeof(h), &p));
	assert_false(ha_split_host_port("a-very-long-host-name-that-does-not-fit-in-the-buffer-"
					"at-all.example.com:1",
					h, sizeof(h), &p));

	assert_true(ha_conn_url_parse("postgres://u:p@h.example:7000/db?x=1", h, sizeof(h), &p));
	assert_string_equal(h, "h.example");
	assert_int_equal(p, 7000);
	assert_true(ha_conn_url_parse("postgresql://h2", h, sizeof(h), &p));
	assert_int_equal(p, 5432);
	assert_false(ha_conn_url_parse("mysql://h:1/", h, sizeof(h), &p));
	assert_false(ha_conn_url_parse("postgres:///db", h, sizeof(h), &p));

	assert_true(ha_conninfo_host_port("host=10.0.0.1 port=5434 user=x", h, sizeof(h), &p));
	assert_string_equal(h, "10.0.0.1");
	assert_int_equal(p, 5434);
	assert_true(ha_conninfo_host_port("postgresql://10.0.0.2/db", h, sizeof(h), &p));
	assert_int_equal(p, 5432);
	assert_false(ha_conninfo_host_port("host=/var/run/postgresql", h, sizeof(h), &p));
	assert_false(ha_conninfo_host_port("host=a,b", h, sizeof(h), &p));
	assert_false(ha_conninfo_host_port("user=x", h, sizeof(h), &p));
	assert_false(ha_conninfo_host_port("host='unterminated", h, sizeof(h), &p));
}

static void test_primary_conninfo(void **state)
{
	char out[512], small[24];

	assert_true(ha_primary_conninfo("user=replicator password=secret", "10.0.0.1", 5432, "pg-2",
					out, sizeof(out)));
	assert_string_equal(out, "user=replicator password=secret host=10.0.0.1 port=5432 "
				 "application_name=pg-2");
	/* host/port of the template are replaced; quoting of awkward values */
	assert_true(ha_primary_conninfo("host=old port=1 user=rep password='it\\'s a \\\\ pass' "
					"application_name=mine sslmode=prefer",
					"db", 6000, "pg-2", out, sizeof(out)));
	assert_string_equal(out, "user=rep password='it\\'s a \\\\ pass' application_name=mine "
				 "sslmode=prefer host=db port=6000");
	assert_true(ha_primary_conninfo(NULL, "h", 1, NULL, out, sizeof(out)));
	assert_string_equal(out, "host=h port=1");
	assert_true(ha_primary_conninfo("", "h", 1, "", out, sizeof(out)));
	assert_string_equal(out, "host=h port=1");
	assert_false(ha_primary_conninfo("user='unterminated", "h", 1, "a", out, sizeof(out)));
	assert_false(ha_primary_conninfo("user=replicator", "h", 1, "a", small, sizeof(small)));
}

static void test_quote(void **state)
{
	char out[64], tiny[6];
	char *conf = slurp(D "auto_conf.txt"), *a, *b;

	assert_true(ha_quote_sql_literal("user=a password='x'", out, sizeof(out)));
	assert_string_equal(out, "'user=a password=''x'''");
	assert_true(ha_quote_sql_literal("", out, sizeof(out)));
	assert_string_equal(out, "''");
	assert_true(ha_quote_sql_literal("a\\b", out, sizeof(out)));
	assert_string_equal(out, "'a\\b'");
	assert_false(ha_quote_sql_literal("abcd'", tiny, sizeof(tiny)));

	a = ha_auto_conf_set(conf, "primary_conninfo", "user=rep password='p\\w' host=h port=1");
	assert_non_null(a);
	assert_null(strstr(a, "port=5432"));
	assert_non_null(strstr(a, "work_mem = '8MB'\n"));
	assert_non_null(strstr(a, "# Do not edit this file manually!\n"));
	/* the new line comes last, quotes and backslashes doubled as ALTER SYSTEM writes them */
	assert_non_null(
	    strstr(a, "\nprimary_conninfo = 'user=rep password=''p\\\\w'' host=h port=1'\n"));
	b = ha_auto_conf_set(a, "default_transaction_read_only", NULL);
	assert_null(strstr(b, "default_transaction_read_only"));
	assert_non_null(strstr(b, "primary_conninfo"));
	free(a);
	a = ha_auto_conf_set(b, "PRIMARY_CONNINFO", NULL); /* GUC names are case-insensitive */
	assert_null(strstr(a, "primary_conninfo"));
	free(a);
	a = ha_auto_conf_set(NULL, "primary_conninfo", "");
	assert_string_equal(a, "primary_conninfo = ''\n");
	free(a);
	free(b);
	free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_patroni_master),   cmocka_unit_test(test_patroni_replica),
	    cmocka_unit_test(test_member_variants),  cmocka_unit_test(test_member_bad),
	    cmocka_unit_test(test_member_roundtrip), cmocka_unit_test(test_status),
	    cmocka_unit_test(test_history),          cmocka_unit_test(test_config_pause),
	    cmocka_unit_test(test_failover_sync),    cmocka_unit_test(test_host_port),
	    cmocka_unit_test(test_primary_conninfo), cmocka_unit_test(test_quote),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
