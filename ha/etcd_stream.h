/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The line splitter of the etcd watch stream (pure: no libcurl, no libevent). The gateway sends
 * one JSON object per "\n"-terminated line. Bytes are appended as they arrive and complete lines
 * are taken with a read offset, so a line costs O(its length) however many follow it: the
 * unconsumed rest is moved to the front at most once per appended chunk, never once per line
 * (2 MB of blank lines used to cost one memmove of the rest per line). A line longer than
 * max_line, or more than max_held bytes held at once, makes etcd_stream_append() fail: the
 * caller ends the stream with an error and starts a new one.
 *
 * Interface:
 *   etcd_stream_init/cleanup/reset   an EtcdStream embedded in its owner
 *   etcd_stream_append               bytes in (checks the bounds)
 *   etcd_stream_next                 the next complete line out
 */
#ifndef PGPILOT_HA_ETCD_STREAM_H
#define PGPILOT_HA_ETCD_STREAM_H

#include "protocol/bytes.h"

/* One watch response (one line) may hold at most this many bytes, "\n" excluded. etcd's own
 * request limit is 1.5 MiB by default, so a real event line stays far below it. */
#define ETCD_WATCH_MAX_LINE ((size_t)4 * 1024 * 1024)
/* At most this many bytes are held: an incomplete line plus lines not yet delivered. */
#define ETCD_WATCH_MAX_HELD ((size_t)8 * 1024 * 1024)

typedef enum EtcdStreamError {
	ETCD_STREAM_OK,
	ETCD_STREAM_LINE_TOO_LONG, /* a line is longer than max_line */
	ETCD_STREAM_TOO_MUCH,      /* more than max_held bytes would be held */
	ETCD_STREAM_NO_MEMORY,
} EtcdStreamError;

const char *etcd_stream_error_name(EtcdStreamError e);

/*
 * Offsets into data: [head, partial) holds complete lines not yet taken, [partial, tail) the
 * incomplete last line (no "\n" in it). Every "\n" before partial has been length-checked.
 */
typedef struct EtcdStream {
	char *data;
	size_t cap;
	size_t head;    /* first byte not yet taken */
	size_t partial; /* start of the incomplete last line */
	size_t tail;    /* end of the bytes held */
	size_t max_line, max_held;
	EtcdStreamError error; /* sticky once set, until reset */
	uint64_t bytes_in;     /* statistics: bytes appended, */
	uint64_t bytes_moved;  /* bytes moved to the front by compaction (<= bytes_in) */
	uint64_t lines;        /* lines taken */
} EtcdStream;

/* max_line / max_held 0: ETCD_WATCH_MAX_LINE / ETCD_WATCH_MAX_HELD. */
void etcd_stream_init(EtcdStream *s, size_t max_line, size_t max_held);
void etcd_stream_cleanup(EtcdStream *s);
/* Forget every byte held and the error (a new stream begins); keeps the memory and limits. */
void etcd_stream_reset(EtcdStream *s);

/*
 * Append n bytes of the stream. Returns false (and sets s->error, sticky) when a line would be
 * longer than max_line, more than max_held bytes would be held, or memory runs out; nothing is
 * appended then and every later call fails too until etcd_stream_reset().
 */
bool etcd_stream_append(EtcdStream *s, const void *bytes, size_t n) _MUSTCHECK;

/*
 * Take the next complete line: true with *line / *len set (the "\n" and one "\r" before it
 * removed; *len may be 0 for a blank line), false when no complete line is held. *line points
 * into s and stays valid until the next etcd_stream_append() or reset.
 */
bool etcd_stream_next(EtcdStream *s, const char **line, size_t *len) _MUSTCHECK;

/* Bytes held (complete lines not yet taken plus the incomplete one). */
size_t etcd_stream_held(const EtcdStream *s);

#endif
