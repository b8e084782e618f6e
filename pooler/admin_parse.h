/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The admin console's command parser: pure text in, one AdminCmd out, no pooler state. It accepts
 * the console's small grammar ("VERB [arg]", "SHOW what", "SET key = value" / "SET key TO value",
 * optional trailing ';') and rejects anything else, so admin.c only dispatches.
 */
#ifndef PGPILOT_POOLER_ADMIN_PARSE_H
#define PGPILOT_POOLER_ADMIN_PARSE_H

#include "protocol/bytes.h"

#define ADMIN_VERB_MAX 32
#define ADMIN_WORD_MAX 128 /* SHOW object, SET key, database name */
#define ADMIN_VALUE_MAX 1024

typedef struct AdminCmd {
	char verb[ADMIN_VERB_MAX];   /* upper case: "SHOW", "SET", "PAUSE", ... */
	char object[ADMIN_WORD_MAX]; /* SHOW's object or SET's key, lower case; "" otherwise */
	char arg[ADMIN_VALUE_MAX];   /* other verbs: the argument as written (quotes removed);
				      * SET: the value, unquoted */
	bool has_arg;                /* an argument (or SET value) was given */
	char arg2[ADMIN_WORD_MAX];   /* FAILOVER / SWITCHOVER: an option after the member (FORCE),
				      * upper case */
	bool has_arg2;
	bool arg_quoted;             /* it was written in quotes */
} AdminCmd;

/*
 * Parse one console command of <len> bytes (need not be NUL-terminated). Words are
 * [A-Za-z0-9_]+ or "double quoted" ("" inside stands for one quote); SET values may also be
 * 'single quoted' ('' for one quote) or any run of characters other than blanks, quotes and ';'.
 * Returns false for anything else: empty input, a NUL byte, more words than the form allows,
 * unterminated quotes, text after ';', words too long for AdminCmd.
 */
bool admin_parse(const char *sql, size_t len, AdminCmd *cmd) _MUSTCHECK;

#endif
