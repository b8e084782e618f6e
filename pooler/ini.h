/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The raw ini reader under the config loader: it knows lines, sections, "key = value" and
 * %include, and nothing about what the keys mean. Each event goes to a callback with the file
 * and line it came from, so the loader can report "file:line: message" for every problem and keep
 * going (style.md rule 12).
 */
#ifndef PGPILOT_POOLER_INI_H
#define PGPILOT_POOLER_INI_H

#include "protocol/bytes.h"

/* How deep %include may nest; deeper is reported as an error (it is almost always a loop). */
#define INI_MAX_DEPTH 10

typedef struct IniHandler {
	/* "[name]": <name> is trimmed, case kept. */
	void (*section)(void *arg, const char *name, const char *file, int line);
	/* "key = value": both trimmed; <value> may be empty. */
	void (*key_value)(void *arg, const char *key, const char *value, const char *file,
			  int line);
	/* A syntax or I/O problem. <line> is 0 when it concerns a whole file. */
	void (*error)(void *arg, const char *file, int line, const char *msg);
} IniHandler;

/*
 * Read <path> and the files it includes, calling <h> for every section header, key and error, in
 * file order (an %include is read where it appears, as if its text were pasted there, so the
 * current section carries in and out of it). Lines whose first non-blank character is ';' or '#'
 * are comments; there are no trailing comments, because connection strings may contain both
 * characters. "%include <file>" resolves a relative <file> against the directory of the file
 * that includes it. Returns false when any error was reported; reading continues past errors.
 */
bool ini_parse_file(const char *path, const IniHandler *h, void *arg) _MUSTCHECK;

#endif
