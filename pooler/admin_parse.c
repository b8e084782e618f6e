/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Tokeniser for admin console commands. A hand-written cursor over the query text instead of
 * regular expressions: the grammar is three forms, and a cursor gives exact control over
 * quoting and over what counts as junk. Nothing here knows about pools or clients.
 */
#include "pooler/admin_parse.h"

#include <string.h>

typedef struct Cursor {
	const char *p;
	const char *end;
} Cursor;

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static bool is_ident_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_';
}

/* Skip blanks; true when at least one was skipped. */
static bool skip_blanks(Cursor *cur)
{
	const char *start = cur->p;

	while (cur->p < cur->end && is_blank(*cur->p))
		cur->p++;
	return cur->p != start;
}

static bool at_end(const Cursor *cur)
{
	return cur->p >= cur->end;
}

/* Append one byte to out (NUL kept after it); false when out is full. */
static bool put_char(char *out, size_t outlen, size_t *pos, char ch)
{
	if (*pos + 1 >= outlen)
		return false;
	out[(*pos)++] = ch;
	out[*pos] = '\0';
	return true;
}

/*
 * Read text quoted with <q> at the cursor (a doubled <q> stands for one). <allow_empty> says
 * whether '' / "" alone is a value.
 */
static bool read_quoted(Cursor *cur, char q, bool allow_empty, char *out, size_t outlen)
{
	size_t pos = 0;

	out[0] = '\0';
	cur->p++; /* opening quote */
	for (;;) {
		if (at_end(cur))
			return false; /* unterminated */
		if (*cur->p == q) {
			if (cur->p + 1 < cur->end && cur->p[1] == q) {
				if (!put_char(out, outlen, &pos, q))
					return false;
				cur->p += 2;
				continue;
			}
			cur->p++;
			return allow_empty || pos > 0;
		}
		if (!put_char(out, outlen, &pos, *cur->p))
			return false;
		cur->p++;
	}
}

/* A word: [A-Za-z0-9_]+ or a non-empty "quoted identifier". */
static bool read_word(Cursor *cur, char *out, size_t outlen, bool *quoted)
{
	size_t pos = 0;

	*quoted = false;
	out[0] = '\0';
	if (at_end(cur))
		return false;
	if (*cur->p == '"') {
		*quoted = true;
		return read_quoted(cur, '"', false, out, outlen);
	}
	while (!at_end(cur) && is_ident_char(*cur->p)) {
		if (!put_char(out, outlen, &pos, *cur->p))
			return false;
		cur->p++;
	}
	return pos > 0;
}

/* A SET value: 'string' (may be empty), "quoted", or a bare run up to a blank, quote or ';'. */
static bool read_value(Cursor *cur, char *out, size_t outlen, bool *quoted)
{
	size_t pos = 0;

	*quoted = false;
	out[0] = '\0';
	if (at_end(cur))
		return false;
	if (*cur->p == '\'') {
		*quoted = true;
		return read_quoted(cur, '\'', true, out, outlen);
	}
	if (*cur->p == '"')
		return read_word(cur, out, outlen, quoted);
	while (!at_end(cur) && !is_blank(*cur->p) && *cur->p != ';' && *cur->p != '\'' &&
	       *cur->p != '"') {
		if (!put_char(out, outlen, &pos, *cur->p))
			return false;
		cur->p++;
	}
	return pos > 0;
}

/* Only blanks, at most one ';', and blanks may follow. */
static bool read_tail(Cursor *cur)
{
	skip_blanks(cur);
	if (!at_end(cur) && *cur->p == ';')
		cur->p++;
	skip_blanks(cur);
	return at_end(cur);
}

static void fold_case(char *s, bool upper)
{
	for (; *s; s++) {
		if (upper && *s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
		else if (!upper && *s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
	}
}

/* "=" or the keyword TO (not the start of a longer word). */
static bool read_set_operator(Cursor *cur)
{
	if (!at_end(cur) && *cur->p == '=') {
		cur->p++;
		return true;
	}
	if (cur->end - cur->p >= 2 && (cur->p[0] == 't' || cur->p[0] == 'T') &&
	    (cur->p[1] == 'o' || cur->p[1] == 'O') &&
	    (cur->end - cur->p == 2 || !is_ident_char(cur->p[2]))) {
		cur->p += 2;
		return true;
	}
	return false;
}

/* SET key (= | TO) value [;] */
static bool parse_set(Cursor *cur, AdminCmd *cmd)
{
	bool quoted;

	if (!skip_blanks(cur) || !read_word(cur, cmd->object, sizeof(cmd->object), &quoted))
		return false;
	fold_case(cmd->object, false);
	skip_blanks(cur);
	if (!read_set_operator(cur))
		return false;
	skip_blanks(cur);
	if (!read_value(cur, cmd->arg, sizeof(cmd->arg), &cmd->arg_quoted))
		return false;
	cmd->has_arg = true;
	return read_tail(cur);
}

/* A cluster member name: letters, digits, '_', '-', '.' (as Patroni allows), or quoted. */
static bool read_member(Cursor *cur, char *out, size_t outlen, bool *quoted)
{
	size_t pos = 0;

	*quoted = false;
	out[0] = '\0';
	if (!at_end(cur) && *cur->p == '"')
		return read_word(cur, out, outlen, quoted);
	while (!at_end(cur) && (is_ident_char(*cur->p) || *cur->p == '-' || *cur->p == '.')) {
		if (!put_char(out, outlen, &pos, *cur->p))
			return false;
		cur->p++;
	}
	return pos > 0;
}

/* FAILOVER | SWITCHOVER [member [option]] [;] */
static bool parse_member_verb(Cursor *cur, AdminCmd *cmd)
{
	bool had_blank = skip_blanks(cur), quoted;

	if (at_end(cur) || *cur->p == ';')
		return read_tail(cur);
	if (!had_blank || !read_member(cur, cmd->arg, sizeof(cmd->arg), &cmd->arg_quoted))
		return false;
	cmd->has_arg = true;
	had_blank = skip_blanks(cur);
	if (at_end(cur) || *cur->p == ';')
		return read_tail(cur);
	if (!had_blank || !read_word(cur, cmd->arg2, sizeof(cmd->arg2), &quoted) || quoted)
		return false;
	fold_case(cmd->arg2, true);
	cmd->has_arg2 = true;
	return read_tail(cur);
}

/* VERB [word] [;]  -- for SHOW the word is required and becomes the object. */
static bool parse_plain(Cursor *cur, AdminCmd *cmd)
{
	bool is_show = strcmp(cmd->verb, "SHOW") == 0;
	bool had_blank = skip_blanks(cur);
	bool quoted;

	if (at_end(cur) || *cur->p == ';')
		return !is_show && read_tail(cur);
	if (!had_blank)
		return false;
	if (is_show) {
		if (!read_word(cur, cmd->object, sizeof(cmd->object), &quoted))
			return false;
		fold_case(cmd->object, false);
	} else {
		if (!read_word(cur, cmd->arg, sizeof(cmd->arg), &cmd->arg_quoted))
			return false;
		cmd->has_arg = true;
	}
	return read_tail(cur);
}

bool admin_parse(const char *sql, size_t len, AdminCmd *cmd)
{
	Cursor cur = {sql, sql + len};
	bool quoted;

	memset(cmd, 0, sizeof(*cmd));
	if (!sql || memchr(sql, '\0', len))
		return false;
	skip_blanks(&cur);
	if (!read_word(&cur, cmd->verb, sizeof(cmd->verb), &quoted) || quoted)
		return false;
	fold_case(cmd->verb, true);
	if (strcmp(cmd->verb, "SET") == 0)
		return parse_set(&cur, cmd);
	if (strcmp(cmd->verb, "FAILOVER") == 0 || strcmp(cmd->verb, "SWITCHOVER") == 0)
		return parse_member_verb(&cur, cmd);
	return parse_plain(&cur, cmd);
}
