/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of protocol/base64.c: RFC 4648 section 10 vectors both ways, and the strictness
 * of the decoder (padding, alphabet, whitespace, output capacity).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/base64.h"

static const struct {
	const char *raw;
	const char *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_encode(void **state)
{
	char out[64];

	for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
		size_t n = base64_encode(rfc4648[i].raw, strlen(rfc4648[i].raw), out);

		assert_string_equal(out, rfc4648[i].b64);
		assert_int_equal(n, strlen(rfc4648[i].b64));
		assert_int_equal(n, BASE64_ENCODED_LEN(strlen(rfc4648[i].raw)));
	}
}

/* Longer than one internal chunk (48 bytes): the chunks must join seamlessly. */
static void test_encode_long(void **state)
{
	uint8_t raw[100], back[100];
	char out[BASE64_ENCODED_LEN(100) + 1];
	size_t n;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(base64_encode(raw, sizeof(raw), out), BASE64_ENCODED_LEN(100));
	assert_int_equal(strlen(out), 136);
	assert_null(strchr(out, '\n'));
	assert_true(base64_decode(out, strlen(out), back, sizeof(back), &n));
	assert_int_equal(n, sizeof(raw));
	assert_memory_equal(back, raw, sizeof(raw));
}

static void test_decode(void **state)
{
	uint8_t out[16];
	size_t n;

	for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
		n = 99;
		assert_true(
		    base64_decode(rfc4648[i].b64, strlen(rfc4648[i].b64), out, sizeof(out), &n));
		assert_int_equal(n, strlen(rfc4648[i].raw));
		assert_memory_equal(out, rfc4648[i].raw, n);
	}
	/* binary with NUL and high bytes: python3 base64.b64encode(bytes([0, 255, 128, 1])) */
	assert_true(base64_decode("AP+AAQ==", 8, out, sizeof(out), &n));
	assert_int_equal(n, 4);
	assert_memory_equal(out, "\x00\xff\x80\x01", 4);
	/* only <len> characters are read */
	assert_true(base64_decode("Zm9vYmFy", 4, out, sizeof(out), &n));
	assert_int_equal(n, 3);
}

static void test_decode_bad(void **state)
{
	static const char *const bad[] = {
	    "Zg",   "Zg=",   "Zm9",   "Zm9vY", "Z===",   "====", "Z=g=", "Zg=a",     "=Zg=",
	    "Zm=v", " Zg==", "Zg== ", "Zm 9v", "Zm9v\n", "Zm-v", "Zm_v", "Zm9v====", "Zm9*",
	};
	uint8_t out[16];
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (base64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n))
			fail_msg("accepted \"%s\"", bad[i]);
	}
}

/* The output capacity counts real bytes, not the padded 3-byte groups. */
static void test_decode_capacity(void **state)
{
	uint8_t out[8];
	size_t n;

	memset(out, 0xee, sizeof(out));
	assert_true(base64_decode("Zm8=", 4, out, 2, &n));
	assert_int_equal(n, 2);
	assert_int_equal(out[2], 0xee); /* nothing written past the capacity */
	assert_false(base64_decode("Zm9v", 4, out, 2, &n));
	assert_false(base64_decode("Zm9vYmFy", 8, out, 5, &n));
	assert_true(base64_decode("Zm9vYmFy", 8, out, 6, &n));
	assert_int_equal(n, 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_encode),          cmocka_unit_test(test_encode_long),
	    cmocka_unit_test(test_decode),          cmocka_unit_test(test_decode_bad),
	    cmocka_unit_test(test_decode_capacity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
