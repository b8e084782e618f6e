/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests for pooler/log.c: log_escape(), which the line writer applies to every message so
 * that client-supplied names and values cannot forge or split a log line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pooler/log.h"

static void expect_escaped(const char *in, const char *want)
{
	char out[256];
	size_t n = log_escape(out, sizeof(out), in);

	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
}

static void test_plain_text_kept(void **state)
{
	expect_escaped("C-1: appdb/app@127.0.0.1:5000 login",
		       "C-1: appdb/app@127.0.0.1:5000 login");
	expect_escaped("", "");
}

static void test_line_breaks_and_controls(void **state)
{
	expect_escaped("user\n2026-12-02 LOG forged", "user\\n2026-12-02 LOG forged");
	expect_escaped("a\rb\tc", "a\\rb\\tc");
	expect_escaped("esc\x1b[31mred\x7f", "esc\\x1b[31mred\\x7f");
}

static void test_utf8(void **state)
{
	/* well-formed UTF-8 stays; C1 controls, overlong forms, surrogates and stray bytes do not
	 */
	expect_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98",
		       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98");
	expect_escaped("\xc2\x85", "\\xc2\\x85");
	expect_escaped("\xc0\xaf", "\\xc0\\xaf");
	expect_escaped("\xed\xa0\x80", "\\xed\\xa0\\x80");
	expect_escaped("\xff", "\\xff");
	expect_escaped("\xe2\x82", "\\xe2\\x82"); /* truncated sequence */
}

static void test_truncates_within_capacity(void **state)
{
	char out[8];

	/* never a partial escape or character, always terminated */
	assert_int_equal(log_escape(out, sizeof(out), "abcdef\n"), 6);
	assert_string_equal(out, "abcdef");
	assert_int_equal(log_escape(out, sizeof(out), "abcde\xc3\xa9xyz"), 7);
	assert_string_equal(out, "abcde\xc3\xa9");
	assert_int_equal(log_escape(out, 1, "abc"), 0);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_text_kept),
	    cmocka_unit_test(test_line_breaks_and_controls),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_truncates_within_capacity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
