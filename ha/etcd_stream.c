/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The watch stream's line splitter (see etcd_stream.h). Appending compacts first (the bytes not
 * yet taken move to the front, once per chunk) and checks every new "\n" against max_line, so
 * taking a line is a memchr over that line only, and the incomplete last line is never scanned
 * twice.
 */
#include "ha/etcd_stream.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *etcd_stream_error_name(EtcdStreamError e)
{
	switch (e) {
	case ETCD_STREAM_OK:
		return "ok";
	case ETCD_STREAM_LINE_TOO_LONG:
		return "line too long";
	case ETCD_STREAM_TOO_MUCH:
		return "too many bytes held";
	case ETCD_STREAM_NO_MEMORY:
		return "out of memory";
	}
	return "unknown";
}

void etcd_stream_init(EtcdStream *s, size_t max_line, size_t max_held)
{
	memset(s, 0, sizeof(*s));
	s->max_line = max_line ? max_line : ETCD_WATCH_MAX_LINE;
	s->max_held = max_held ? max_held : ETCD_WATCH_MAX_HELD;
}

void etcd_stream_cleanup(EtcdStream *s)
{
	free(s->data);
	s->data = NULL;
	s->cap = 0;
	etcd_stream_reset(s);
}

void etcd_stream_reset(EtcdStream *s)
{
	s->head = s->partial = s->tail = 0;
	s->error = ETCD_STREAM_OK;
}

size_t etcd_stream_held(const EtcdStream *s)
{
	return s->tail - s->head;
}

static bool fail(EtcdStream *s, EtcdStreamError e)
{
	s->error = e;
	return false;
}

/* Move [head, tail) to the front. */
static void compact(EtcdStream *s)
{
	size_t held = s->tail - s->head;

	if (s->head == 0)
		return;
	if (held)
		memmove(s->data, s->data + s->head, held);
	s->bytes_moved += held;
	s->partial -= s->head;
	s->tail = held;
	s->head = 0;
}

static bool reserve(EtcdStream *s, size_t need)
{
	size_t cap = s->cap ? s->cap : 4096;
	char *nd;

	if (need <= s->cap)
		return true;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return false;
		cap *= 2;
	}
	nd = realloc(s->data, cap);
	if (!nd)
		return false;
	s->data = nd;
	s->cap = cap;
	return true;
}

bool etcd_stream_append(EtcdStream *s, const void *bytes, size_t n)
{
	size_t held, from, partial;
	const char *nl;

	if (s->error != ETCD_STREAM_OK)
		return false;
	if (n == 0)
		return true;
	compact(s);
	held = s->tail;
	partial = s->partial;
	/* held <= max_held, so neither the sum nor the comparison can wrap */
	if (n > s->max_held || held > s->max_held - n)
		return fail(s, ETCD_STREAM_TOO_MUCH);
	if (!reserve(s, held + n))
		return fail(s, ETCD_STREAM_NO_MEMORY);
	memcpy(s->data + held, bytes, n);
	s->tail = held + n;
	/* length-check each new line; the incomplete one is checked from its start */
	from = held;
	while (from < s->tail && (nl = memchr(s->data + from, '\n', s->tail - from)) != NULL) {
		size_t at = (size_t)(nl - s->data);

		if (at - s->partial > s->max_line)
			break;
		s->partial = at + 1;
		from = at + 1;
	}
	if (s->tail - s->partial > s->max_line) {
		/* a complete line above the limit, or an incomplete one already past it */
		s->tail = held;
		s->partial = partial;
		return fail(s, ETCD_STREAM_LINE_TOO_LONG);
	}
	s->bytes_in += n;
	return true;
}

bool etcd_stream_next(EtcdStream *s, const char **line, size_t *len)
{
	const char *start, *nl;
	size_t n;

	if (s->head >= s->partial)
		return false;
	start = s->data + s->head;
	nl = memchr(start, '\n', s->partial - s->head);
	if (!nl)
		return false; /* cannot happen: partial is just past a "\n" */
	n = (size_t)(nl - start);
	s->head += n + 1;
	if (n > 0 && start[n - 1] == '\r')
		n--;
	*line = start;
	*len = n;
	s->lines++;
	if (s->head == s->tail) {
		/* everything taken: start over at the front, nothing to move */
		s->head = s->partial = s->tail = 0;
	}
	return true;
}
