/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * auth_file reader: parses `"user" "secret"` lines, classifies each secret with
 * auth_secret_kind(), parses SCRAM verifiers, and sorts the result for bsearch lookups. A file
 * read in full empties the SCRAM key cache, so no key derived from a replaced secret is kept.
 */
#include "pooler/userlist.h"
#include "protocol/scram.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One parsed line before sorting: the line number decides which duplicate wins. */
typedef struct Entry {
	AuthUser u;
	int line;
} Entry;

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/*
 * Read a '"'-quoted field at *pp, '""' standing for one '"'. Returns the malloc'd field and moves
 * *pp past the closing quote; NULL when *pp is not at a '"' (*unterminated false) or the closing
 * quote is missing (*unterminated true).
 */
static char *read_quoted(const char **pp, bool *unterminated)
{
	const char *p = *pp;
	char *out, *o;

	*unterminated = false;
	if (*p != '"')
		return NULL;
	p++;
	out = o = malloc(strlen(p) + 1);
	if (!out)
		return NULL;
	for (;;) {
		if (*p == '\0' || *p == '\n' || *p == '\r') {
			*unterminated = true;
			free(out);
			return NULL;
		}
		if (*p == '"') {
			if (p[1] != '"')
				break;
			p++;
		}
		*o++ = *p++;
	}
	*o = '\0';
	*pp = p + 1;
	return out;
}

static const char *skip_space(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Parse one line into <e>. Returns 1 for an entry, 0 for a blank/comment line, -1 on error. */
static int parse_line(const char *path, int lineno, const char *line, Entry *e, ConfigErrors *errs)
{
	const char *p = skip_space(line);
	bool unterminated;
	char *name, *secret;

	if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';' || *p == '#')
		return 0;
	name = read_quoted(&p, &unterminated);
	if (!name) {
		config_error(errs, path, lineno,
			     unterminated ? "unterminated quoted user name"
					  : "expected a quoted user name");
		return -1;
	}
	if (name[0] == '\0') {
		config_error(errs, path, lineno, "empty user name");
		free(name);
		return -1;
	}
	p = skip_space(p);
	secret = read_quoted(&p, &unterminated);
	if (!secret) {
		config_error(errs, path, lineno,
			     unterminated ? "unterminated quoted password for user \"%s\""
					  : "expected a quoted password after user \"%s\"",
			     name);
		free(name);
		return -1;
	}
	/* Anything after the second field is ignored, as PgBouncer does (old pg_auth files had
	 * more columns). */
	memset(e, 0, sizeof(*e));
	e->u.name = name;
	e->u.secret = secret;
	e->u.kind = auth_secret_kind(secret);
	e->line = lineno;
	/* auth_secret_kind() calls a malformed verifier plain text, as PostgreSQL does; in a
	 * userlist that is nearly always a copy-paste mistake, so it is refused. */
	if ((e->u.kind == SECRET_SCRAM && !scram_parse_secret(secret, &e->u.scram)) ||
	    (e->u.kind == SECRET_PLAIN && strncmp(secret, "SCRAM-SHA-256$", 14) == 0)) {
		config_error(errs, path, lineno, "invalid SCRAM secret for user \"%s\"", name);
		free(name);
		wipe_free(secret);
		return -1;
	}
	/* kept, so that the refusal at login names the user and the count */
	if (e->u.kind == SECRET_SCRAM && e->u.scram.iterations > SCRAM_MAX_ITERATIONS)
		config_warning(errs, path, lineno,
			       "SCRAM secret for user \"%s\" has %d iterations, more than the limit "
			       "of %d: that user's logins will be refused",
			       name, e->u.scram.iterations, SCRAM_MAX_ITERATIONS);
	return 1;
}

static int entry_cmp(const void *a, const void *b)
{
	const Entry *x = a, *y = b;
	int c = strcmp(x->u.name, y->u.name);

	if (c != 0)
		return c;
	return (x->line > y->line) - (x->line < y->line);
}

bool userlist_load(const char *path, AuthUser **users, int *n_users, ConfigErrors *errs)
{
	Entry *entries = NULL;
	int n = 0, cap = 0, lineno = 0, out = 0;
	bool ok = true;
	char *buf = NULL;
	size_t bufcap = 0;
	AuthUser *res;
	FILE *f;

	*users = NULL;
	*n_users = 0;
	f = fopen(path, "r");
	if (!f) {
		config_error(errs, NULL, 0, "could not open auth_file \"%s\": %s", path,
			     strerror(errno));
		return false;
	}
	while (getline(&buf, &bufcap, f) >= 0) {
		Entry e;
		int r;

		lineno++;
		r = parse_line(path, lineno, buf, &e, errs);
		if (r < 0)
			ok = false;
		if (r <= 0)
			continue;
		if (n == cap) {
			Entry *ne =
			    realloc(entries, sizeof(*entries) * (size_t)(cap ? cap * 2 : 16));

			if (!ne) {
				free(e.u.name);
				wipe_free(e.u.secret);
				config_error(errs, path, lineno, "out of memory");
				ok = false;
				break;
			}
			entries = ne;
			cap = cap ? cap * 2 : 16;
		}
		entries[n++] = e;
	}
	if (buf) {
		explicit_bzero(buf, bufcap);
		free(buf);
	}
	fclose(f);

	if (n > 0)
		qsort(entries, (size_t)n, sizeof(*entries), entry_cmp);
	res = ok ? calloc((size_t)(n > 0 ? n : 1), sizeof(*res)) : NULL;
	if (ok && !res) {
		config_error(errs, path, 0, "out of memory");
		ok = false;
	}
	for (int i = 0; i < n; i++) {
		/* Sorted by (name, line): of a run of equal names the last line wins. */
		bool dup = i + 1 < n && strcmp(entries[i].u.name, entries[i + 1].u.name) == 0;

		if (dup)
			config_warning(errs, path, entries[i].line,
				       "user \"%s\" is listed again at line %d, which wins",
				       entries[i].u.name, entries[i + 1].line);
		if (!ok || dup) {
			free(entries[i].u.name);
			wipe_free(entries[i].u.secret);
			continue;
		}
		res[out++] = entries[i].u;
	}
	free(entries);
	if (!ok) {
		userlist_free(res, out);
		return false;
	}
	*users = res;
	*n_users = out;
	/* keys derived from the old file's passwords are not kept once it is replaced */
	scram_key_cache_clear();
	return true;
}

void userlist_free(AuthUser *users, int n_users)
{
	if (!users)
		return;
	for (int i = 0; i < n_users; i++) {
		free(users[i].name);
		wipe_free(users[i].secret);
		explicit_bzero(&users[i].scram, sizeof(users[i].scram));
	}
	free(users);
}

static int name_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const AuthUser *)elem)->name);
}

const AuthUser *userlist_find(const AuthUser *users, int n_users, const char *name)
{
	if (!users || n_users <= 0 || !name)
		return NULL;
	return bsearch(name, users, (size_t)n_users, sizeof(*users), name_cmp);
}
