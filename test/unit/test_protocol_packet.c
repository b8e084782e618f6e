/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of protocol/packet.c: message and startup headers (every length bound), the
 * StartupMessage name/value list (layout errors, missing user, database defaulting, parameter
 * limit), CancelRequest and string extraction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/packet.h"

static void make_header(uint8_t *buf, uint8_t type, uint32_t len)
{
	buf[0] = type;
	put_be32(buf + 1, len);
}

static void test_header_ok(void **state)
{
	uint8_t buf[16] = {0};
	uint8_t type = 0;
	uint32_t total = 0;

	make_header(buf, 'Q', 13);
	assert_int_equal(pkt_parse_header(buf, 5, 8192, &type, &total), PKT_OK);
	assert_int_equal(type, 'Q');
	assert_int_equal(total, 14);
	/* the smallest message: a length that counts only itself */
	make_header(buf, 'S', 4);
	assert_int_equal(pkt_parse_header(buf, sizeof(buf), 8192, &type, &total), PKT_OK);
	assert_int_equal(type, 'S');
	assert_int_equal(total, 5);
	/* exactly max_len is allowed */
	make_header(buf, 'D', 8192);
	assert_int_equal(pkt_parse_header(buf, 5, 8192, &type, &total), PKT_OK);
	assert_int_equal(total, 8193);
	/* the largest length below 2^31 with no max_len limit */
	make_header(buf, 'D', 0x7ffffffeu);
	assert_int_equal(pkt_parse_header(buf, 5, UINT32_MAX, &type, &total), PKT_OK);
	assert_int_equal(total, 0x7fffffffu);
}

static void test_header_incomplete(void **state)
{
	uint8_t buf[5];
	uint8_t type = 0x55;
	uint32_t total = 0x55;

	make_header(buf, 'Q', 13);
	for (size_t avail = 0; avail < PKT_HDR_LEN; avail++)
		assert_int_equal(pkt_parse_header(buf, avail, 8192, &type, &total), PKT_INCOMPLETE);
	/* outputs untouched when not PKT_OK */
	assert_int_equal(type, 0x55);
	assert_int_equal(total, 0x55);
}

static void test_header_bad(void **state)
{
	static const uint32_t bad_len[] = {0, 1, 3, 8193, 0x7fffffffu, 0x80000000u, 0xffffffffu};
	uint8_t buf[5];
	uint8_t type;
	uint32_t total;

	for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
		make_header(buf, 'Q', bad_len[i]);
		if (pkt_parse_header(buf, sizeof(buf), 8192, &type, &total) != PKT_BAD)
			fail_msg("length %u not refused", bad_len[i]);
	}
	/* 2^31 and more are refused even when max_len would allow them */
	make_header(buf, 'Q', 0x80000000u);
	assert_int_equal(pkt_parse_header(buf, 5, UINT32_MAX, &type, &total), PKT_BAD);
	make_header(buf, 'Q', 0xffffffffu);
	assert_int_equal(pkt_parse_header(buf, 5, UINT32_MAX, &type, &total), PKT_BAD);
}

static void test_startup_header(void **state)
{
	uint8_t buf[8];
	uint32_t total = 0, code = 0;

	/* SSLRequest */
	put_be32(buf, 8);
	put_be32(buf + 4, PROTO_SSL);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_OK);
	assert_int_equal(total, 8);
	assert_int_equal(code, PROTO_SSL);
	/* a StartupMessage header, body not yet read */
	put_be32(buf, 40);
	put_be32(buf + 4, PROTO_V3);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_OK);
	assert_int_equal(total, 40);
	assert_int_equal(code, PROTO_V3);
	put_be32(buf, STARTUP_MAX_LEN);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_OK);
	assert_int_equal(total, STARTUP_MAX_LEN);

	/* incomplete: fewer than 4 bytes, or a valid length but no code yet */
	put_be32(buf, 40);
	for (size_t avail = 0; avail < 8; avail++)
		assert_int_equal(pkt_parse_startup_header(buf, avail, &total, &code),
				 PKT_INCOMPLETE);

	/* a bad length is reported as soon as the length is there */
	put_be32(buf, 7);
	assert_int_equal(pkt_parse_startup_header(buf, 4, &total, &code), PKT_BAD);
	put_be32(buf, 0);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_BAD);
	put_be32(buf, STARTUP_MAX_LEN + 1);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_BAD);
	put_be32(buf, 0x80000000u);
	assert_int_equal(pkt_parse_startup_header(buf, 8, &total, &code), PKT_BAD);
}

/* sizeof of a string literal with embedded NULs, minus the implicit final NUL */
#define BODY(s) (const uint8_t *)(s), sizeof(s) - 1

static void test_startup_params(void **state)
{
	static const char body[] = "user\0alice\0database\0shop\0application_name\0psql\0"
				   "options\0-c work_mem=64MB\0replication\0database\0"
				   "client_encoding\0UTF8\0\0";
	StartupParams p;
	char err[128] = "";

	assert_true(pkt_parse_startup_params(BODY(body), &p, err, sizeof(err)));
	assert_string_equal(p.user, "alice");
	assert_string_equal(p.database, "shop");
	assert_string_equal(p.application_name, "psql");
	assert_string_equal(p.options, "-c work_mem=64MB");
	assert_string_equal(p.replication, "database");
	assert_int_equal(p.nparams, 6);
	assert_string_equal(p.params[0].name, "user");
	assert_string_equal(p.params[0].value, "alice");
	assert_string_equal(p.params[5].name, "client_encoding");
	assert_string_equal(p.params[5].value, "UTF8");
	/* strings point into the body */
	assert_ptr_equal(p.params[0].name, body);
}

static void test_startup_params_database_default(void **state)
{
	StartupParams p;
	char err[128];

	assert_true(pkt_parse_startup_params(BODY("user\0bob\0\0"), &p, err, sizeof(err)));
	assert_string_equal(p.user, "bob");
	assert_string_equal(p.database, "bob");
	assert_null(p.application_name);
	assert_null(p.options);
	assert_null(p.replication);
	assert_int_equal(p.nparams, 1);
	/* an empty database name also means the user's */
	assert_true(
	    pkt_parse_startup_params(BODY("database\0\0user\0bob\0\0"), &p, err, sizeof(err)));
	assert_string_equal(p.database, "bob");
	assert_int_equal(p.nparams, 2);
}

static void test_startup_params_no_user(void **state)
{
	StartupParams p;
	char err[128];

	err[0] = 0;
	assert_false(pkt_parse_startup_params(BODY("database\0shop\0\0"), &p, err, sizeof(err)));
	assert_string_equal(err, "no PostgreSQL user name specified in startup packet");
	err[0] = 0;
	assert_false(pkt_parse_startup_params(BODY("user\0\0\0"), &p, err, sizeof(err)));
	assert_string_equal(err, "no PostgreSQL user name specified in startup packet");
	err[0] = 0;
	assert_false(pkt_parse_startup_params(BODY("\0"), &p, err, sizeof(err)));
	assert_string_equal(err, "no PostgreSQL user name specified in startup packet");
}

static void test_startup_params_layout(void **state)
{
	static const struct {
		const char *body;
		size_t len;
	} bad[] = {
#define CASE(s) {s, sizeof(s) - 1}
	    CASE(""),                    /* nothing, not even the terminator */
	    CASE("user\0alice\0"),       /* no terminator */
	    CASE("user\0alice"),         /* value not NUL-terminated */
	    CASE("user"),                /* name not NUL-terminated */
	    CASE("user\0"),              /* name without value */
	    CASE("user\0alice\0db\0"),   /* name without value, then end */
	    CASE("user\0alice\0x\0\0"),  /* the terminator taken as x's value */
	    CASE("user\0alice\0\0\0"),   /* bytes after the terminator */
	    CASE("user\0alice\0\0junk"), /* bytes after the terminator */
#undef CASE
	};
	StartupParams p;
	char err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		if (pkt_parse_startup_params((const uint8_t *)bad[i].body, bad[i].len, &p, err,
					     sizeof(err)))
			fail_msg("accepted startup body %zu", i);
		assert_string_equal(
		    err, "invalid startup packet layout: expected terminator as last byte");
	}
}

/* Up to STARTUP_MAX_PARAMS pairs are accepted, one more is refused. */
static void test_startup_params_limit(void **state)
{
	uint8_t body[2048];
	StartupParams p;
	char err[128];
	size_t len;

	for (int extra = 0; extra <= 1; extra++) {
		len = 0;
		len += (size_t)sprintf((char *)body + len, "user%cu", 0) + 1;
		for (int i = 1; i < STARTUP_MAX_PARAMS + extra; i++)
			len += (size_t)sprintf((char *)body + len, "p%d%cv%d", i, 0, i) + 1;
		body[len++] = 0;
		err[0] = 0;
		if (!extra) {
			assert_true(pkt_parse_startup_params(body, len, &p, err, sizeof(err)));
			assert_int_equal(p.nparams, STARTUP_MAX_PARAMS);
			assert_string_equal(p.params[STARTUP_MAX_PARAMS - 1].name, "p63");
			assert_string_equal(p.params[STARTUP_MAX_PARAMS - 1].value, "v63");
		} else {
			assert_false(pkt_parse_startup_params(body, len, &p, err, sizeof(err)));
			assert_string_equal(err, "too many parameters in startup packet");
		}
	}
}

static void test_cancel(void **state)
{
	uint8_t pkt[20];
	uint32_t pid = 0, key = 0;

	put_be32(pkt, 16);
	put_be32(pkt + 4, PROTO_CANCEL);
	put_be32(pkt + 8, 4242);
	put_be32(pkt + 12, 0xdeadbeefu);
	assert_true(pkt_parse_cancel(pkt, 16, &pid, &key));
	assert_int_equal(pid, 4242);
	assert_int_equal(key, 0xdeadbeefu);
	assert_false(pkt_parse_cancel(pkt, 15, &pid, &key));
	assert_false(pkt_parse_cancel(pkt, 17, &pid, &key));
	assert_false(pkt_parse_cancel(pkt, 8, &pid, &key));
}

static void test_get_string(void **state)
{
	static const uint8_t body[] = {'a', 'b', 0, 0, 'c', 'd'};
	size_t off = 0;
	const char *s;

	s = pkt_get_string(body, sizeof(body), &off);
	assert_string_equal(s, "ab");
	assert_int_equal(off, 3);
	s = pkt_get_string(body, sizeof(body), &off);
	assert_string_equal(s, "");
	assert_int_equal(off, 4);
	/* "cd" has no NUL inside the body: refused, offset kept */
	assert_null(pkt_get_string(body, sizeof(body), &off));
	assert_int_equal(off, 4);
	off = sizeof(body);
	assert_null(pkt_get_string(body, sizeof(body), &off));
	off = 100;
	assert_null(pkt_get_string(body, sizeof(body), &off));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_ok),
	    cmocka_unit_test(test_header_incomplete),
	    cmocka_unit_test(test_header_bad),
	    cmocka_unit_test(test_startup_header),
	    cmocka_unit_test(test_startup_params),
	    cmocka_unit_test(test_startup_params_database_default),
	    cmocka_unit_test(test_startup_params_no_user),
	    cmocka_unit_test(test_startup_params_layout),
	    cmocka_unit_test(test_startup_params_limit),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_get_string),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
