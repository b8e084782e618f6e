/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of pooler/admin_parse.c: the three command forms (SHOW x, VERB [arg], SET key =
 * value), case folding, quoting of names and values, trailing ';' and blanks, and rejection of
 * junk (extra words, bad quotes, NUL bytes, overlong words).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pooler/admin_parse.h"

static bool parse(const char *s, AdminCmd *cmd)
{
	return admin_parse(s, strlen(s), cmd);
}

static void test_show(void **state)
{
	AdminCmd cmd;

	assert_true(parse("SHOW POOLS", &cmd));
	assert_string_equal(cmd.verb, "SHOW");
	assert_string_equal(cmd.object, "pools");
	assert_false(cmd.has_arg);

	assert_true(parse("show Stats_Totals;", &cmd));
	assert_string_equal(cmd.verb, "SHOW");
	assert_string_equal(cmd.object, "stats_totals");

	assert_true(parse("  \t\nshow\n  clients  ;  \r\n", &cmd));
	assert_string_equal(cmd.object, "clients");

	assert_true(parse("SHOW \"help\"", &cmd));
	assert_string_equal(cmd.object, "help");
}

static void test_verbs(void **state)
{
	AdminCmd cmd;

	assert_true(parse("reload", &cmd));
	assert_string_equal(cmd.verb, "RELOAD");
	assert_false(cmd.has_arg);
	assert_string_equal(cmd.object, "");

	assert_true(parse("Pause;", &cmd));
	assert_string_equal(cmd.verb, "PAUSE");
	assert_false(cmd.has_arg);

	/* database names keep their case */
	assert_true(parse("PAUSE MyDb", &cmd));
	assert_string_equal(cmd.verb, "PAUSE");
	assert_true(cmd.has_arg);
	assert_false(cmd.arg_quoted);
	assert_string_equal(cmd.arg, "MyDb");

	assert_true(parse("kill \"my db\"\"x\" ;", &cmd));
	assert_string_equal(cmd.verb, "KILL");
	assert_true(cmd.arg_quoted);
	assert_string_equal(cmd.arg, "my db\"x");

	assert_true(parse("wait_close db_1", &cmd));
	assert_string_equal(cmd.verb, "WAIT_CLOSE");
	assert_string_equal(cmd.arg, "db_1");
}

static void test_set(void **state)
{
	AdminCmd cmd;

	assert_true(parse("SET default_pool_size = 30", &cmd));
	assert_string_equal(cmd.verb, "SET");
	assert_string_equal(cmd.object, "default_pool_size");
	assert_true(cmd.has_arg);
	assert_string_equal(cmd.arg, "30");
	assert_false(cmd.arg_quoted);

	assert_true(parse("set Default_Pool_Size=31;", &cmd));
	assert_string_equal(cmd.object, "default_pool_size");
	assert_string_equal(cmd.arg, "31");

	assert_true(parse("SET server_check_delay TO 1.5", &cmd));
	assert_string_equal(cmd.object, "server_check_delay");
	assert_string_equal(cmd.arg, "1.5");

	assert_true(parse("SET server_reset_query = 'DISCARD ALL; SELECT ''x''' ;", &cmd));
	assert_string_equal(cmd.arg, "DISCARD ALL; SELECT 'x'");
	assert_true(cmd.arg_quoted);

	assert_true(parse("SET admin_users = ''", &cmd));
	assert_string_equal(cmd.arg, "");
	assert_true(cmd.arg_quoted);

	assert_true(parse("SET pool_mode = \"transaction\"", &cmd));
	assert_string_equal(cmd.arg, "transaction");

	/* "to" as a value, "TO" as the operator */
	assert_true(parse("SET syslog_ident to to", &cmd));
	assert_string_equal(cmd.arg, "to");

	assert_true(parse("SET logfile = /var/log/pgpilot.log", &cmd));
	assert_string_equal(cmd.arg, "/var/log/pgpilot.log");
}

static void test_junk(void **state)
{
	static const char *const bad[] = {
	    "",
	    "   ",
	    ";",
	    "SHOW",
	    "SHOW;",
	    "SHOW pools extra",
	    "SHOW pools;;",
	    "SHOW pools; SHOW clients",
	    "select 1, 2", /* "select 1" parses; the dispatcher rejects the verb */
	    "PAUSE a b",
	    "PAUSE\"db\"",
	    "\"PAUSE\"",
	    "PAUSE \"\"",
	    "PAUSE \"unterminated",
	    "PAUSE db-1",
	    "SET",
	    "SET x",
	    "SET x =",
	    "SET x 1",
	    "SET x == 1",
	    "SET x = 1 2",
	    "SET x = 'unterminated",
	    "SET x = 'a' 'b'",
	    "SET x tox",
	    "SET = 1",
	    "SETx = 1",
	    "RELOAD now please",
	    "-- comment",
	};
	AdminCmd cmd;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &cmd))
			fail_msg("accepted junk: '%s'", bad[i]);
	}
}

/* FAILOVER / SWITCHOVER take a member name (hyphens allowed, as Patroni's) and an option. */
static void test_member_verbs(void **state)
{
	static const char *const bad[] = {
		"FAILOVER pg-2 FORCE extra", "FAILOVER pg-2 'FORCE'", "FAILOVERpg-2",
		"FAILOVER pg-2 \"FORCE\"", "FAILOVER ;x", "SWITCHOVER a b c",
	};
	AdminCmd cmd;

	assert_true(parse("failover pg-test-2 force;", &cmd));
	assert_string_equal(cmd.verb, "FAILOVER");
	assert_string_equal(cmd.arg, "pg-test-2");
	assert_true(cmd.has_arg2);
	assert_string_equal(cmd.arg2, "FORCE");
	assert_true(parse("FAILOVER node.1", &cmd));
	assert_string_equal(cmd.arg, "node.1");
	assert_false(cmd.has_arg2);
	assert_true(parse("SWITCHOVER", &cmd));
	assert_false(cmd.has_arg);
	assert_true(parse("switchover \"pg 3\"", &cmd));
	assert_string_equal(cmd.arg, "pg 3");
	/* other verbs keep their strict single-word argument */
	assert_false(parse("PAUSE db-1", &cmd));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &cmd))
			fail_msg("accepted junk: '%s'", bad[i]);
	}
}

static void test_nul_and_length(void **state)
{
	AdminCmd cmd;
	char big[2 * ADMIN_VALUE_MAX];

	/* a NUL inside the message is junk even when what precedes it is valid */
	assert_false(admin_parse("RELOAD\0x", 8, &cmd));
	/* the length is honoured: the rest of the buffer is not read */
	assert_true(admin_parse("RELOADxyz", 6, &cmd));
	assert_string_equal(cmd.verb, "RELOAD");
	assert_false(admin_parse(NULL, 0, &cmd));

	/* overlong words are refused, not truncated */
	memset(big, 'a', sizeof(big));
	memcpy(big, "PAUSE ", 6);
	assert_false(admin_parse(big, sizeof(big), &cmd));
	memset(big, 'a', sizeof(big));
	assert_false(admin_parse(big, ADMIN_VERB_MAX, &cmd));
	assert_true(admin_parse(big, ADMIN_VERB_MAX - 1, &cmd));
	memcpy(big, "SET x = ", 8);
	assert_false(admin_parse(big, 8 + ADMIN_VALUE_MAX, &cmd));
	assert_true(admin_parse(big, 8 + ADMIN_VALUE_MAX - 1, &cmd));
	assert_int_equal(strlen(cmd.arg), ADMIN_VALUE_MAX - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_show),
	    cmocka_unit_test(test_verbs),
	    cmocka_unit_test(test_set),
	    cmocka_unit_test(test_junk),
	    cmocka_unit_test(test_member_verbs),
	    cmocka_unit_test(test_nul_and_length),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
