/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/etcd_stream, the watch stream's line splitter: lines split across chunks,
 * "\r\n" and blank lines, the line and held-bytes bounds (sticky errors, nothing appended on
 * refusal), and the regression of issue 8 finding 5: 2 MB of blank lines cost linear work
 * (bytes moved by compaction counted, not time measured), in large and in tiny chunks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha/etcd_stream.h"

static void append_str(EtcdStream *s, const char *str)
{
	assert_true(etcd_stream_append(s, str, strlen(str)));
}

static void expect_line(EtcdStream *s, const char *want)
{
	const char *line;
	size_t len;

	assert_true(etcd_stream_next(s, &line, &len));
	assert_int_equal(len, strlen(want));
	assert_memory_equal(line, want, len);
}

static void expect_none(EtcdStream *s)
{
	const char *line;
	size_t len;

	assert_false(etcd_stream_next(s, &line, &len));
}

static void test_lines_across_chunks(void **state)
{
	EtcdStream s;

	etcd_stream_init(&s, 0, 0);
	expect_none(&s);
	append_str(&s, "{\"result\":");
	expect_none(&s);
	append_str(&s, "{\"created\":true}}\n{\"a\"");
	expect_line(&s, "{\"result\":{\"created\":true}}");
	expect_none(&s);
	append_str(&s, ":1}\r\n\n\r\nlast");
	expect_line(&s, "{\"a\":1}");
	expect_line(&s, "");
	expect_line(&s, "");
	expect_none(&s);
	assert_int_equal(etcd_stream_held(&s), 4);
	append_str(&s, "\n");
	expect_line(&s, "last");
	expect_none(&s);
	assert_int_equal(etcd_stream_held(&s), 0);
	assert_int_equal(s.lines, 5);
	assert_true(etcd_stream_append(&s, "", 0));
	etcd_stream_cleanup(&s);
}

static void test_line_bound(void **state)
{
	EtcdStream s;
	char big[40];

	memset(big, 'x', sizeof(big));
	etcd_stream_init(&s, 16, 64);
	/* exactly max_line bytes is allowed, complete or not */
	assert_true(etcd_stream_append(&s, big, 16));
	assert_true(etcd_stream_append(&s, "\n", 1));
	assert_true(etcd_stream_next(&s, &(const char *){NULL}, &(size_t){0}));
	assert_true(etcd_stream_append(&s, big, 16));
	/* one byte more of the same incomplete line: refused, sticky, nothing appended */
	assert_false(etcd_stream_append(&s, "y", 1));
	assert_int_equal(s.error, ETCD_STREAM_LINE_TOO_LONG);
	assert_int_equal(etcd_stream_held(&s), 16);
	assert_false(etcd_stream_append(&s, "\n", 1));
	assert_string_equal(etcd_stream_error_name(s.error), "line too long");
	/* a reset starts a new stream */
	etcd_stream_reset(&s);
	assert_int_equal(s.error, ETCD_STREAM_OK);
	append_str(&s, "ok\n");
	expect_line(&s, "ok");
	/* a complete line above the limit inside one chunk, after a good one */
	assert_false(etcd_stream_append(&s, "good\nxxxxxxxxxxxxxxxxxxxxxx\n", 28));
	assert_int_equal(s.error, ETCD_STREAM_LINE_TOO_LONG);
	expect_none(&s);
	etcd_stream_cleanup(&s);
}

static void test_held_bound(void **state)
{
	EtcdStream s;
	char chunk[81];

	/* many short lines not taken yet: the held bound applies, not the line bound */
	for (size_t i = 0; i < sizeof(chunk); i += 3)
		memcpy(chunk + i, "ab\n", 3);
	etcd_stream_init(&s, 16, 64);
	assert_true(etcd_stream_append(&s, chunk, 30));
	assert_true(etcd_stream_append(&s, chunk, 30));
	assert_false(etcd_stream_append(&s, chunk, 30));
	assert_int_equal(s.error, ETCD_STREAM_TOO_MUCH);
	assert_int_equal(etcd_stream_held(&s), 60);
	/* a chunk larger than the bound by itself, and a size that would wrap */
	etcd_stream_reset(&s);
	assert_false(etcd_stream_append(&s, chunk, 65));
	etcd_stream_reset(&s);
	assert_true(etcd_stream_append(&s, chunk, 3));
	assert_false(etcd_stream_append(&s, chunk, SIZE_MAX));
	assert_int_equal(s.error, ETCD_STREAM_TOO_MUCH);
	etcd_stream_cleanup(&s);
}

/* Feed <total> bytes of blank lines in <chunk>-byte pieces, taking every line after each. */
static uint64_t blank_lines(size_t total, size_t chunk, uint64_t *moved)
{
	EtcdStream s;
	char *buf = malloc(chunk);
	const char *line;
	size_t len;
	uint64_t lines = 0;

	assert_non_null(buf);
	memset(buf, '\n', chunk);
	etcd_stream_init(&s, 0, 0);
	for (size_t fed = 0; fed < total; fed += chunk) {
		assert_true(etcd_stream_append(&s, buf, chunk));
		while (etcd_stream_next(&s, &line, &len)) {
			assert_int_equal(len, 0);
			lines++;
		}
	}
	*moved = s.bytes_moved;
	etcd_stream_cleanup(&s);
	free(buf);
	return lines;
}

static void test_blank_line_flood_is_linear(void **state)
{
	const size_t total = 2 * 1024 * 1024;
	uint64_t moved;

	/* libcurl hands over up to 16 kB at a time */
	assert_int_equal(blank_lines(total, 16384, &moved), total);
	assert_int_equal(moved, 0);
	assert_int_equal(blank_lines(total, 1, &moved), total);
	assert_int_equal(moved, 0);
	assert_int_equal(blank_lines(total, total, &moved), total);
	assert_int_equal(moved, 0);
}

static void test_partial_lines_move_once(void **state)
{
	/* "{...}\n" lines of 100 bytes cut at 16 kB: each chunk ends inside a line, whose start
	 * moves to the front once; the bytes moved stay below the bytes fed */
	const size_t total = 2 * 1024 * 1024, chunk = 16384, linelen = 100;
	char *all = malloc(total);
	EtcdStream s;
	const char *line;
	size_t len;
	uint64_t lines = 0;

	assert_non_null(all);
	for (size_t i = 0; i < total; i++)
		all[i] = (i % linelen == linelen - 1) ? '\n' : 'x';
	etcd_stream_init(&s, 0, 0);
	for (size_t fed = 0; fed < total; fed += chunk) {
		assert_true(etcd_stream_append(&s, all + fed, chunk));
		while (etcd_stream_next(&s, &line, &len)) {
			assert_int_equal(len, linelen - 1);
			lines++;
		}
	}
	assert_int_equal(lines, total / linelen);
	assert_true(s.bytes_moved <= s.bytes_in);
	assert_true(s.bytes_moved <= (total / chunk + 1) * linelen);
	/* one line arriving a byte at a time is never moved at all */
	etcd_stream_reset(&s);
	s.bytes_moved = 0;
	for (size_t i = 0; i < linelen; i++) {
		assert_true(etcd_stream_append(&s, all + i, 1));
		if (i < linelen - 1)
			expect_none(&s);
	}
	assert_true(etcd_stream_next(&s, &line, &len));
	assert_int_equal(s.bytes_moved, 0);
	etcd_stream_cleanup(&s);
	free(all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_across_chunks),
	    cmocka_unit_test(test_line_bound),
	    cmocka_unit_test(test_held_bound),
	    cmocka_unit_test(test_blank_line_flood_is_linear),
	    cmocka_unit_test(test_partial_lines_move_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
