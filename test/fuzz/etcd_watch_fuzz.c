/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * libFuzzer target for the etcd watch stream as ha/etcd.c consumes it: the bytes are cut into
 * chunks (sizes taken from the first input bytes), appended to an EtcdStream with small bounds
 * (so that too-long lines and too many held bytes are reached), and every complete line is
 * parsed as a watch response. Checks the splitter's accounting: every byte appended is either
 * taken as part of a line or still held, no line holds a "\n" or exceeds the bound, the held
 * bytes stay within theirs, and compaction never moves more bytes than came in.
 */
#include "ha/etcd_json.h"
#include "ha/etcd_stream.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 2048
#define MAX_HELD 8192

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sizes[4] = {1, 7, 64, 255};
	size_t n_sizes = 0, pos = 0, k = 0;
	uint64_t consumed = 0;
	EtcdStream s;

	/* up to 4 chunk sizes, then the stream; a chunk size 0 means "the rest" */
	while (n_sizes < 4 && pos < size && n_sizes < (size_t)(data[0] & 3) + 1)
		sizes[n_sizes++] = data[pos++];
	etcd_stream_init(&s, MAX_LINE, MAX_HELD);
	while (pos < size) {
		size_t n = sizes[k++ % 4];
		const char *line;
		size_t len;

		if (n == 0 || n > size - pos)
			n = size - pos;
		if (!etcd_stream_append(&s, data + pos, n)) {
			check(s.error != ETCD_STREAM_OK);
			check(!etcd_stream_append(&s, "\n", 1)); /* sticky */
			etcd_stream_reset(&s);
			consumed = s.bytes_in; /* a new stream: nothing held */
		}
		pos += n;
		while (etcd_stream_next(&s, &line, &len)) {
			EtcdWatchResponse resp;
			char err[256];
			bool cr = line[len] == '\r';

			check(len <= MAX_LINE);
			check(memchr(line, '\n', len) == NULL);
			check(line[len + cr] == '\n');
			consumed += len + cr + 1;
			if (len && etcd_json_parse_watch_line(line, len, &resp, err, sizeof(err)))
				etcd_watch_response_cleanup(&resp);
		}
		check(etcd_stream_held(&s) <= MAX_HELD);
		check(consumed + etcd_stream_held(&s) == s.bytes_in);
		check(s.bytes_moved <= s.bytes_in);
	}
	etcd_stream_cleanup(&s);
	return 0;
}
