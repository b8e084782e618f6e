/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests for protocol/siphash.c: the reference vector of the SipHash paper, every input
 * length around the 8-byte word boundary, and that the key changes the value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "protocol/siphash.h"

/* Appendix A of the paper: key 00..0f, message 00..0e (15 bytes). */
static void test_paper_vector(void **state)
{
	uint8_t key[SIPHASH_KEY_LEN], msg[15];

	(void)state;
	for (int i = 0; i < SIPHASH_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 15; i++)
		msg[i] = (uint8_t)i;
	assert_true(siphash24(key, msg, sizeof(msg)) == 0xa129ca6149be45e5ULL);
}

/* The first entries of the reference implementation's vectors.h (message 00..len-1). */
static void test_reference_lengths(void **state)
{
	static const uint64_t expect[] = {0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL,
					  0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL};
	uint8_t key[SIPHASH_KEY_LEN], msg[64];

	(void)state;
	for (int i = 0; i < SIPHASH_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	for (size_t len = 0; len < ARRAY_SIZE(expect); len++)
		assert_true(siphash24(key, msg, len) == expect[len]);
}

/* Two keys give different values for the same inputs; one key gives the same value twice. */
static void test_keyed(void **state)
{
	uint8_t k1[SIPHASH_KEY_LEN] = {1}, k2[SIPHASH_KEY_LEN] = {2};
	static const char *const inputs[] = {"", "a", "stmt_1", "PGPILOT_1", "0123456789abcdef"};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(inputs); i++) {
		size_t len = strlen(inputs[i]);

		assert_true(siphash24(k1, inputs[i], len) != siphash24(k2, inputs[i], len));
		assert_true(siphash24(k1, inputs[i], len) == siphash24(k1, inputs[i], len));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_paper_vector),
	    cmocka_unit_test(test_reference_lengths),
	    cmocka_unit_test(test_keyed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
