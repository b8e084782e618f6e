/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Tracked parameters and the string pool behind them. See varcache.h.
 */
#include "pooler/varcache.h"
#include "protocol/random.h"
#include "protocol/siphash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- interned strings: an open hash of reference-counted entries --- */

typedef struct PoolStr {
	struct PoolStr *next;
	uint32_t hash;
	uint32_t refcnt;
	char str[];
} PoolStr;

#define STRPOOL_BUCKETS 1024
static PoolStr *strpool_tab[STRPOOL_BUCKETS];
static size_t strpool_n;

/* Parameter values come from clients: hash them under a per-process random key (as the
 * statement tables do), so that chosen values cannot all land in one bucket. */
static uint32_t str_hash(const char *s)
{
	static uint8_t key[SIPHASH_KEY_LEN];
	static bool keyed;

	if (unlikely(!keyed)) {
		if (!random_bytes(key, sizeof(key)))
			memset(key, 0x5a, sizeof(key)); /* still a working table, if a weaker one */
		keyed = true;
	}
	return (uint32_t)siphash24(key, s, strlen(s));
}

const char *strpool_get(const char *s)
{
	uint32_t h = str_hash(s);
	PoolStr *p;
	size_t len;

	for (p = strpool_tab[h % STRPOOL_BUCKETS]; p; p = p->next) {
		if (p->hash == h && strcmp(p->str, s) == 0) {
			p->refcnt++;
			return p->str;
		}
	}
	len = strlen(s);
	p = malloc(sizeof(PoolStr) + len + 1);
	if (!p)
		return NULL;
	p->hash = h;
	p->refcnt = 1;
	memcpy(p->str, s, len + 1);
	p->next = strpool_tab[h % STRPOOL_BUCKETS];
	strpool_tab[h % STRPOOL_BUCKETS] = p;
	strpool_n++;
	return p->str;
}

void strpool_put(const char *s)
{
	PoolStr *p, **pp;

	if (!s)
		return;
	p = (PoolStr *)(s - offsetof(PoolStr, str));
	if (--p->refcnt > 0)
		return;
	for (pp = &strpool_tab[p->hash % STRPOOL_BUCKETS]; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	strpool_n--;
	free(p);
}

size_t strpool_count(void)
{
	return strpool_n;
}

/* --- tracked parameter names --- */

static const char *const fixed_names[] = { "client_encoding", "DateStyle", "TimeZone",
					   "standard_conforming_strings", "application_name" };
static char *tracked[VAR_MAX];
static int n_tracked;

bool varcache_set_tracked(const char *extra_list, char *err, size_t errlen)
{
	char *copy, *tok, *save;
	int n = 0;
	char *names[VAR_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(fixed_names); i++)
		names[n++] = strdup(fixed_names[i]);
	copy = strdup(extra_list ? extra_list : "");
	for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		bool dup = false;
		for (int i = 0; i < n; i++)
			dup |= strcasecmp(names[i], tok) == 0;
		if (dup)
			continue;
		if (n == VAR_MAX) {
			snprintf(err, errlen, "too many tracked parameters (at most %d in all)", VAR_MAX);
			for (int i = 0; i < n; i++)
				free(names[i]);
			free(copy);
			return false;
		}
		names[n++] = strdup(tok);
	}
	free(copy);
	for (int i = 0; i < n_tracked; i++)
		free(tracked[i]);
	for (int i = 0; i < n; i++)
		tracked[i] = names[i];
	n_tracked = n;
	return true;
}

int varcache_count(void)
{
	return n_tracked;
}

const char *varcache_name(int idx)
{
	return idx >= 0 && idx < n_tracked ? tracked[idx] : NULL;
}

int varcache_index(const char *name)
{
	for (int i = 0; i < n_tracked; i++)
		if (strcasecmp(tracked[i], name) == 0)
			return i;
	return -1;
}

void varcache_set_idx(VarCache *vc, int idx, const char *value)
{
	const char *v = value ? strpool_get(value) : NULL;

	strpool_put(vc->value[idx]);
	vc->value[idx] = v;
}

bool varcache_set(VarCache *vc, const char *name, const char *value)
{
	int idx = varcache_index(name);

	if (idx < 0)
		return false;
	varcache_set_idx(vc, idx, value);
	return true;
}

void varcache_copy(VarCache *dst, const VarCache *src)
{
	for (int i = 0; i < VAR_MAX; i++) {
		if (dst->value[i] == src->value[i])
			continue;
		strpool_put(dst->value[i]);
		dst->value[i] = src->value[i] ? strpool_get(src->value[i]) : NULL;
	}
}

void varcache_clear(VarCache *vc)
{
	for (int i = 0; i < VAR_MAX; i++) {
		strpool_put(vc->value[i]);
		vc->value[i] = NULL;
	}
}

/* Append value as a SQL string literal (E'' form when it holds a backslash). */
static void put_literal(PktBuf *pb, const char *v)
{
	if (strchr(v, '\\'))
		pktbuf_put_bytes(pb, "E", 1);
	pktbuf_put_bytes(pb, "'", 1);
	for (; *v; v++) {
		if (*v == '\'' || *v == '\\')
			pktbuf_put_bytes(pb, v, 1);
		pktbuf_put_bytes(pb, v, 1);
	}
	pktbuf_put_bytes(pb, "'", 1);
}

int varcache_build_sync(const VarCache *client, VarCache *server, PktBuf *sql)
{
	int n = 0;

	for (int i = 0; i < n_tracked; i++) {
		const char *want = client->value[i];

		if (want == server->value[i])
			continue;
		if (!want) {
			/* the client expects the default of a parameter PostgreSQL does not report
			 * (search_path before PostgreSQL 18): put the default back */
			pktbuf_put_bytes(sql, "RESET ", 6);
			pktbuf_put_bytes(sql, tracked[i], strlen(tracked[i]));
			pktbuf_put_bytes(sql, ";", 1);
			varcache_set_idx(server, i, NULL);
			n++;
			continue;
		}
		pktbuf_put_bytes(sql, "SET ", 4);
		pktbuf_put_bytes(sql, tracked[i], strlen(tracked[i]));
		pktbuf_put_bytes(sql, "=", 1);
		put_literal(sql, want);
		pktbuf_put_bytes(sql, ";", 1);
		varcache_set_idx(server, i, want);
		n++;
	}
	return n;
}

void varcache_write_status(const VarCache *vc, PktBuf *pb)
{
	for (int i = 0; i < n_tracked; i++)
		if (vc->value[i])
			pktbuf_write_parameter_status(pb, tracked[i], vc->value[i]);
}
