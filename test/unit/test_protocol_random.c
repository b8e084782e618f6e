/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * random_bytes(): every request is filled, across block boundaries, and bytes never repeat in
 * order (a buffer handed out twice would show as equal 16-byte runs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "protocol/random.h"

static void test_fills_and_never_repeats(void **state)
{
	enum { N = 1200 };
	static uint8_t runs[N][16];
	uint8_t big[5000], zero[5000];

	/* 1200 x 16 bytes spans several 4 KiB blocks */
	for (int i = 0; i < N; i++)
		assert_true(random_bytes(runs[i], sizeof(runs[i])));
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N; j++)
			assert_memory_not_equal(runs[i], runs[j], 16);
	/* odd sizes, and a large request that bypasses the block */
	memset(big, 0, sizeof(big));
	memset(zero, 0, sizeof(zero));
	assert_true(random_bytes(big, 3));
	assert_true(random_bytes(big + 3, 4093));
	assert_true(random_bytes(big, sizeof(big)));
	assert_memory_not_equal(big, zero, sizeof(big));
	assert_true(random_bytes(big, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fills_and_never_repeats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
