/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The auth_file (userlist.txt) in PgBouncer's format: one `"user" "secret"` per line, '"' doubled
 * inside a field, ';' or '#' comment lines. Secrets may be plain text, md5 or SCRAM-SHA-256
 * verifiers; SCRAM ones are parsed at load so a bad one is reported with its line.
 */
#ifndef PGPILOT_POOLER_USERLIST_H
#define PGPILOT_POOLER_USERLIST_H

#include "pooler/config.h"

/*
 * Read <path> into a malloc'd array sorted by name (*users, *n_users; caller frees with
 * userlist_free). Every bad line is added to <errs> as "file:line: message" and reading goes on;
 * returns false when any error was found, and then *users is NULL. A user listed twice keeps its
 * last line, with a warning.
 */
bool userlist_load(const char *path, AuthUser **users, int *n_users, ConfigErrors *errs) _MUSTCHECK;
/* Free the array and wipe the secrets. */
void userlist_free(AuthUser *users, int n_users);
/* Binary search in a sorted array; NULL when absent. */
const AuthUser *userlist_find(const AuthUser *users, int n_users, const char *name);

#endif
