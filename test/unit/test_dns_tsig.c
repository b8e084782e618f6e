/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of dns/tsig.c key handling: BIND key files (tsig-keygen format) from
 * data/dns/ (*.key files), and keys from name + secret + algorithm settings, including the base64
 * padding trap of EVP_DecodeBlock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns/tsig.h"

#include <string.h>

static void test_good_file(void **state)
{
	DnsTsigKey key;
	char err[256];
	static const uint8_t head[4] = {0xdd, 0xfb, 0xfc, 0xd5};

	assert_true(dns_tsig_key_load(&key, "data/dns/good.key", NULL, err, sizeof(err)));
	assert_string_equal(key.name_text, "pgpool-update.");
	assert_int_equal(key.alg, DNS_TSIG_HMAC_SHA256);
	assert_int_equal(key.secret_len, 32); /* 44 base64 chars with one '=': 32, not 33 */
	assert_memory_equal(key.secret, head, 4);
	/* selecting it by name, with or without the trailing dot, in any case */
	assert_true(
	    dns_tsig_key_load(&key, "data/dns/good.key", "PGPOOL-UPDATE.", err, sizeof(err)));
	assert_false(dns_tsig_key_load(&key, "data/dns/good.key", "other", err, sizeof(err)));
	assert_non_null(strstr(err, "no key named \"other\""));
	dns_tsig_key_cleanup(&key);
	assert_int_equal(key.secret_len, 0);
}

static void test_two_keys(void **state)
{
	DnsTsigKey key;
	char err[256];

	assert_true(dns_tsig_key_load(&key, "data/dns/two_keys.key", NULL, err, sizeof(err)));
	assert_string_equal(key.name_text, "first.");
	assert_int_equal(key.alg, DNS_TSIG_HMAC_SHA512);
	assert_int_equal(key.secret_len, 10);
	assert_memory_equal(key.secret, "secret-one", 10);
	assert_true(
	    dns_tsig_key_load(&key, "data/dns/two_keys.key", "second-key", err, sizeof(err)));
	assert_string_equal(key.name_text, "second-key."); /* canonical: lower case */
	assert_int_equal(key.alg, DNS_TSIG_HMAC_SHA256);   /* BIND's default */
	assert_int_equal(key.secret_len, 32);
}

static void test_bad_files(void **state)
{
	DnsTsigKey key;
	char err[256];

	assert_false(
	    dns_tsig_key_load(&key, "data/dns/missing_secret.key", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "no secret"));
	assert_false(dns_tsig_key_load(&key, "data/dns/bad_base64.key", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "invalid base64"));
	assert_false(dns_tsig_key_load(&key, "data/dns/md5.key", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "unsupported TSIG algorithm \"hmac-md5\""));
	assert_false(dns_tsig_key_load(&key, "data/dns/syntax.key", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "\";\" expected"));
	assert_false(
	    dns_tsig_key_load(&key, "data/dns/does-not-exist.key", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "could not open TSIG key file"));
	assert_false(dns_tsig_key_parse(&key, "", NULL, err, sizeof(err)));
	assert_string_equal(err, "no key found");
	assert_false(
	    dns_tsig_key_parse(&key, "key \"k\" { secret \"AAAA\";", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "unterminated"));
	assert_false(dns_tsig_key_parse(&key, "options { };", NULL, err, sizeof(err)));
}

static void test_settings(void **state)
{
	DnsTsigKey key;
	char err[256];

	assert_true(dns_tsig_key_set(&key, "k.example", NULL, "AAECAw==", err, sizeof(err)));
	assert_int_equal(key.secret_len, 4);
	assert_true(dns_tsig_key_set(&key, "k", "HMAC-SHA384.", "AAECAwQ=", err, sizeof(err)));
	assert_int_equal(key.alg, DNS_TSIG_HMAC_SHA384);
	assert_int_equal(key.secret_len, 5);
	assert_true(dns_tsig_key_set(&key, "k", "hmac-sha256", "AAEC AwQF", err, sizeof(err)));
	assert_int_equal(key.secret_len, 6);
	assert_false(dns_tsig_key_set(&key, "k", NULL, "AAECAw=", err, sizeof(err)));
	assert_false(dns_tsig_key_set(&key, "k", NULL, "AA=CAw==", err, sizeof(err)));
	assert_false(dns_tsig_key_set(&key, "k", NULL, "", err, sizeof(err)));
	assert_non_null(strstr(err, "no secret"));
	assert_false(dns_tsig_key_set(&key, "", NULL, "AAECAw==", err, sizeof(err)));
	assert_false(dns_tsig_key_set(&key, "bad name", NULL, "AAECAw==", err, sizeof(err)));
	assert_false(dns_tsig_key_set(&key, "k", "hmac-sha1", "AAECAw==", err, sizeof(err)));
	assert_string_equal(dns_tsig_alg_name(DNS_TSIG_HMAC_SHA512), "hmac-sha512");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_file),
	    cmocka_unit_test(test_two_keys),
	    cmocka_unit_test(test_bad_files),
	    cmocka_unit_test(test_settings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
