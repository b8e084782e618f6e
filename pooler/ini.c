/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Line-oriented ini reader with %include and include-loop detection. It reports events and errors
 * through the caller's IniHandler and never stops at the first error, so one run of the loader
 * shows every mistake in a file.
 */
#include "pooler/ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The files being read, outermost first: used to refuse an %include of a file already open. */
typedef struct IniStack {
	dev_t dev[INI_MAX_DEPTH];
	ino_t ino[INI_MAX_DEPTH];
	int depth;
	bool failed;
} IniStack;

static void ini_error(IniStack *st, const IniHandler *h, void *arg, const char *file, int line,
		      const char *fmt, ...) _PRINTF(6, 7);

static void ini_error(IniStack *st, const IniHandler *h, void *arg, const char *file, int line,
		      const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	st->failed = true;
	h->error(arg, file, line, msg);
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* <name> relative to the directory of <from>; malloc'd, NULL on allocation failure. */
static char *resolve_include(const char *from, const char *name)
{
	const char *slash = strrchr(from, '/');
	char *out;
	size_t dirlen;

	if (name[0] == '/' || !slash)
		return strdup(name);
	dirlen = (size_t)(slash - from) + 1;
	out = malloc(dirlen + strlen(name) + 1);
	if (!out)
		return NULL;
	memcpy(out, from, dirlen);
	strcpy(out + dirlen, name);
	return out;
}

static void parse_file(IniStack *st, const char *path, const IniHandler *h, void *arg,
		       const char *from_file, int from_line);

static void parse_line(IniStack *st, const char *path, int lineno, char *raw, const IniHandler *h,
		       void *arg)
{
	char *line = trim(raw);
	char *eq, *key, *value;

	if (line[0] == '\0' || line[0] == ';' || line[0] == '#')
		return;

	if (line[0] == '[') {
		size_t len = strlen(line);
		char *name;

		if (line[len - 1] != ']') {
			ini_error(st, h, arg, path, lineno, "invalid section header \"%s\"", line);
			return;
		}
		line[len - 1] = '\0';
		name = trim(line + 1);
		if (name[0] == '\0') {
			ini_error(st, h, arg, path, lineno, "empty section name");
			return;
		}
		h->section(arg, name, path, lineno);
		return;
	}

	if (line[0] == '%') {
		char *word = line + 1, *rest = word;
		char *target;

		while (*rest && !isspace((unsigned char)*rest))
			rest++;
		if (*rest)
			*rest++ = '\0';
		rest = trim(rest);
		if (strcmp(word, "include") != 0) {
			ini_error(st, h, arg, path, lineno, "unknown directive \"%%%s\"", word);
			return;
		}
		if (rest[0] == '\0') {
			ini_error(st, h, arg, path, lineno, "%%include needs a file name");
			return;
		}
		target = resolve_include(path, rest);
		if (!target) {
			ini_error(st, h, arg, path, lineno, "out of memory");
			return;
		}
		parse_file(st, target, h, arg, path, lineno);
		free(target);
		return;
	}

	eq = strchr(line, '=');
	if (!eq) {
		ini_error(st, h, arg, path, lineno,
			  "syntax error: expected \"key = value\", found \"%s\"", line);
		return;
	}
	*eq = '\0';
	key = trim(line);
	value = trim(eq + 1);
	if (key[0] == '\0') {
		ini_error(st, h, arg, path, lineno, "missing parameter name before \"=\"");
		return;
	}
	h->key_value(arg, key, value, path, lineno);
}

/*
 * Read one file. <from_file>/<from_line> name the %include that asked for it (NULL for the main
 * file), which is where an open failure or a loop is reported.
 */
static void parse_file(IniStack *st, const char *path, const IniHandler *h, void *arg,
		       const char *from_file, int from_line)
{
	struct stat sb;
	FILE *f;
	char *buf = NULL;
	size_t cap = 0;
	int lineno = 0;

	if (st->depth >= INI_MAX_DEPTH) {
		ini_error(st, h, arg, from_file, from_line,
			  "%%include nesting is too deep (more than %d levels)", INI_MAX_DEPTH);
		return;
	}
	f = fopen(path, "r");
	if (!f) {
		int e = errno;

		if (from_file)
			ini_error(st, h, arg, from_file, from_line,
				  "could not open included file \"%s\": %s", path, strerror(e));
		else
			ini_error(st, h, arg, path, 0, "could not open configuration file: %s",
				  strerror(e));
		return;
	}
	if (fstat(fileno(f), &sb) == 0) {
		for (int i = 0; i < st->depth; i++) {
			if (st->dev[i] == sb.st_dev && st->ino[i] == sb.st_ino) {
				ini_error(st, h, arg, from_file, from_line,
					  "%%include loop: \"%s\" is already being read", path);
				fclose(f);
				return;
			}
		}
		st->dev[st->depth] = sb.st_dev;
		st->ino[st->depth] = sb.st_ino;
	} else {
		st->dev[st->depth] = 0;
		st->ino[st->depth] = 0;
	}
	st->depth++;

	while (getline(&buf, &cap, f) >= 0) {
		lineno++;
		parse_line(st, path, lineno, buf, h, arg);
	}
	if (ferror(f))
		ini_error(st, h, arg, path, lineno, "could not read file: %s", strerror(errno));
	free(buf);
	fclose(f);
	st->depth--;
}

bool ini_parse_file(const char *path, const IniHandler *h, void *arg)
{
	IniStack st = {.depth = 0, .failed = false};

	parse_file(&st, path, h, arg, NULL, 0);
	return !st.failed;
}
