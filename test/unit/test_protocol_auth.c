/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of protocol/auth.c: MD5 secrets and salted responses against values computed
 * independently (python hashlib and PostgreSQL 15 itself), and secret classification.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/auth.h"

/*
 * PostgreSQL 15 in `postgres --single`: SET password_encryption='md5'; CREATE ROLE vmd5 PASSWORD
 * 'secret'; SELECT rolpassword FROM pg_authid WHERE rolname='vmd5';
 */
#define PG_MD5_VMD5 "md5d49d5a609d9ad8fd78a3fd4c8a27ce79"

static void test_md5_password_hash(void **state)
{
	char out[MD5_PASSWD_LEN + 1];

	assert_true(md5_password_hash("vmd5", "secret", out));
	assert_string_equal(out, PG_MD5_VMD5);
	/* python3: "md5" + hashlib.md5(b"secretalice").hexdigest() */
	assert_true(md5_password_hash("alice", "secret", out));
	assert_string_equal(out, "md54a0a68b43b6cd5cf266fa02f196e2371");
	/* md5 of the empty string */
	assert_true(md5_password_hash("", "", out));
	assert_string_equal(out, "md5d41d8cd98f00b204e9800998ecf8427e");
	assert_int_equal(strlen(out), MD5_PASSWD_LEN);
}

static void test_md5_salted_response(void **state)
{
	static const uint8_t salt1[4] = {0x01, 0x02, 0x03, 0x04};
	static const uint8_t salt2[4] = {0xff, 0x00, 0xa5, 0x5a};
	char out[MD5_PASSWD_LEN + 1];

	/*
	 * python3: h = hashlib.md5(b"secretalice").hexdigest();
	 * "md5" + hashlib.md5(h.encode() + bytes(salt)).hexdigest()
	 */
	assert_true(md5_salted_response("md54a0a68b43b6cd5cf266fa02f196e2371", salt1, out));
	assert_string_equal(out, "md598a0412b9c31436fc53776e863350083");
	/* a salt with a NUL byte in it is hashed whole */
	assert_true(md5_salted_response("md54a0a68b43b6cd5cf266fa02f196e2371", salt2, out));
	assert_string_equal(out, "md5d97b4b0c44de097de1d3589e50d1b9ec");
}

static void test_md5_salted_response_bad_secret(void **state)
{
	static const uint8_t salt[4] = {1, 2, 3, 4};
	static const char *const bad[] = {
	    "",
	    "secret",
	    "md5",
	    "md54a0a68b43b6cd5cf266fa02f196e237",   /* 31 digits */
	    "md54a0a68b43b6cd5cf266fa02f196e23711", /* 33 digits */
	    "md54A0A68B43B6CD5CF266FA02F196E2371",  /* PostgreSQL writes lowercase only */
	    "md54a0a68b43b6cd5cf266fa02f196e237g",
	    "MD54a0a68b43b6cd5cf266fa02f196e2371",
	};
	char out[MD5_PASSWD_LEN + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (md5_salted_response(bad[i], salt, out))
			fail_msg("accepted md5 secret \"%s\"", bad[i]);
	}
}

static void test_secret_kind(void **state)
{
	assert_int_equal(auth_secret_kind(NULL), SECRET_NONE);
	assert_int_equal(auth_secret_kind(""), SECRET_NONE);
	assert_int_equal(auth_secret_kind("secret"), SECRET_PLAIN);
	assert_int_equal(auth_secret_kind(PG_MD5_VMD5), SECRET_MD5);
	/* looks like md5 but is not: a plain password, as PostgreSQL reads it */
	assert_int_equal(auth_secret_kind("md5d49d5a609d9ad8fd78a3fd4c8a27ce7"), SECRET_PLAIN);
	assert_int_equal(auth_secret_kind("md5D49D5A609D9AD8FD78A3FD4C8A27CE79"), SECRET_PLAIN);
	assert_int_equal(auth_secret_kind("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
					  "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
					  "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="),
			 SECRET_SCRAM);
	/* a broken verifier is taken as a clear-text password, as PostgreSQL does */
	assert_int_equal(auth_secret_kind("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$x:y"),
			 SECRET_PLAIN);
}

static void test_secret_kind_name(void **state)
{
	assert_string_equal(secret_kind_name(SECRET_NONE), "none");
	assert_string_equal(secret_kind_name(SECRET_PLAIN), "plain");
	assert_string_equal(secret_kind_name(SECRET_MD5), "md5");
	assert_string_equal(secret_kind_name(SECRET_SCRAM), "scram-sha-256");
	assert_string_equal(secret_kind_name((SecretKind)42), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_md5_password_hash),
	    cmocka_unit_test(test_md5_salted_response),
	    cmocka_unit_test(test_md5_salted_response_bad_secret),
	    cmocka_unit_test(test_secret_kind),
	    cmocka_unit_test(test_secret_kind_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
