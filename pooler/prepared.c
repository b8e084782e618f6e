/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Named prepared statements across pooled servers: the statement registry, client maps, server
 * sets with their reply FIFO, and the Parse/Bind/Describe/Close readers and builders. Nothing
 * here touches a socket; see prepared.h for the model and client.c/server.c for its use.
 */
#include "pooler/prepared.h"
#include "protocol/random.h"
#include "protocol/siphash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- registry --- */

static PsStmt **reg_tab;
static uint32_t reg_size, reg_count;
static uint64_t reg_next_id = 1;

/*
 * The registry's and the client maps' hash: SipHash-2-4 under a key drawn once per process, so
 * that a client cannot choose names or bodies that all land in one bucket (an unkeyed hash let
 * 40,000 chosen names cost 30 times the CPU). Should the generator fail, the key falls back to
 * the clock and PID: weaker, but the tables still work.
 */
uint64_t ps_hash(const uint8_t *data, size_t len)
{
	static uint8_t key[SIPHASH_KEY_LEN];
	static bool keyed;

	if (unlikely(!keyed)) {
		if (!random_bytes(key, sizeof(key))) {
			uint64_t seed[2] = { (uint64_t)time(NULL), (uint64_t)getpid() };

			memcpy(key, seed, sizeof(key));
		}
		keyed = true;
	}
	return siphash24(key, data, len);
}

/* Double the registry's buckets (tables here start small and grow by doubling). */
static bool reg_grow(void)
{
	uint32_t nsize = reg_size ? reg_size * 2 : 64;
	PsStmt **nt = calloc(nsize, sizeof(*nt));

	if (!nt)
		return false;
	for (uint32_t i = 0; i < reg_size; i++) {
		PsStmt *st = reg_tab[i], *next;

		for (; st; st = next) {
			next = st->hnext;
			st->hnext = nt[st->hash & (nsize - 1)];
			nt[st->hash & (nsize - 1)] = st;
		}
	}
	free(reg_tab);
	reg_tab = nt;
	reg_size = nsize;
	return true;
}

/*
 * The name a statement carries on servers: PGPILOT_<id>_<64 random bits>. SQL can reach any
 * name (PREPARE, EXECUTE, DEALLOCATE), so the random part keeps a client from creating, ahead
 * of time, a statement under a name pgpilot will use later on that server; names that already
 * exist are visible in pg_prepared_statements, which is why a server where a client ran
 * PREPARE or DEALLOCATE is not reused (see ps_tag_names_statement()).
 */
static void ps_make_server_name(PsStmt *st)
{
	uint64_t salt = 0;

	if (!random_bytes((uint8_t *)&salt, sizeof(salt)))
		salt = ps_hash((const uint8_t *)&st->id, sizeof(st->id));
	snprintf(st->server_name, sizeof(st->server_name), "PGPILOT_%llu_%016llx",
		 (unsigned long long)st->id, (unsigned long long)salt);
}

PsStmt *ps_stmt_intern(const uint8_t *body, uint32_t len)
{
	uint64_t h = ps_hash(body, len);
	PsStmt *st;

	if (reg_size) {
		for (st = reg_tab[h & (reg_size - 1)]; st; st = st->hnext) {
			if (st->hash == h && st->body_len == len &&
			    memcmp(st->body, body, len) == 0) {
				st->refs++;
				return st;
			}
		}
	}
	if (reg_count >= reg_size && !reg_grow() && reg_size == 0)
		return NULL;
	st = malloc(sizeof(PsStmt) + len);
	if (!st)
		return NULL;
	st->hash = h;
	st->id = reg_next_id++;
	st->refs = 1;
	st->body_len = len;
	ps_make_server_name(st);
	memcpy(st->body, body, len);
	st->hnext = reg_tab[h & (reg_size - 1)];
	reg_tab[h & (reg_size - 1)] = st;
	reg_count++;
	return st;
}

void ps_stmt_ref(PsStmt *st)
{
	st->refs++;
}

void ps_stmt_unref(PsStmt *st)
{
	PsStmt **pp;

	if (!st || --st->refs > 0)
		return;
	for (pp = &reg_tab[st->hash & (reg_size - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == st) {
			*pp = st->hnext;
			break;
		}
	}
	reg_count--;
	free(st);
	if (reg_count == 0) {
		/* nothing left: give the table back too (and keep leak checkers quiet) */
		free(reg_tab);
		reg_tab = NULL;
		reg_size = 0;
	}
}

size_t ps_stmt_count(void)
{
	return reg_count;
}

/* --- client maps --- */

static uint32_t name_hash(const char *name)
{
	return (uint32_t)ps_hash((const uint8_t *)name, strlen(name));
}

static PsClientEntry **client_slot(const PsClientMap *m, const char *name, uint32_t h)
{
	PsClientEntry **pp;

	if (!m->size)
		return NULL;
	for (pp = &m->tab[h & (m->size - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && strcmp((*pp)->name, name) == 0)
			return pp;
	return NULL;
}

PsStmt *ps_client_lookup(const PsClientMap *m, const char *name)
{
	PsClientEntry **pp = client_slot(m, name, name_hash(name));

	return pp ? (*pp)->stmt : NULL;
}

static bool client_grow(PsClientMap *m)
{
	uint32_t nsize = m->size ? m->size * 2 : 16;
	PsClientEntry **nt = calloc(nsize, sizeof(*nt));

	if (!nt)
		return false;
	for (uint32_t i = 0; i < m->size; i++) {
		PsClientEntry *e = m->tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = nt[e->hash & (nsize - 1)];
			nt[e->hash & (nsize - 1)] = e;
		}
	}
	free(m->tab);
	m->tab = nt;
	m->size = nsize;
	return true;
}

bool ps_client_set(PsClientMap *m, const char *name, PsStmt *st)
{
	uint32_t h = name_hash(name);
	PsClientEntry **pp = client_slot(m, name, h), *e;
	size_t len;

	if (pp) {
		e = *pp;
		ps_stmt_ref(st);
		ps_stmt_unref(e->stmt);
		e->stmt = st;
		return true;
	}
	if (m->count >= m->size && !client_grow(m) && m->size == 0)
		return false;
	len = strlen(name);
	e = malloc(sizeof(PsClientEntry) + len + 1);
	if (!e)
		return false;
	memcpy(e->name, name, len + 1);
	e->hash = h;
	e->stmt = st;
	ps_stmt_ref(st);
	e->next = m->tab[h & (m->size - 1)];
	m->tab[h & (m->size - 1)] = e;
	m->count++;
	return true;
}

bool ps_client_remove(PsClientMap *m, const char *name)
{
	PsClientEntry **pp = client_slot(m, name, name_hash(name)), *e;

	if (!pp)
		return false;
	e = *pp;
	*pp = e->next;
	ps_stmt_unref(e->stmt);
	free(e);
	m->count--;
	return true;
}

void ps_client_clear(PsClientMap *m)
{
	for (uint32_t i = 0; i < m->size; i++) {
		PsClientEntry *e = m->tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			ps_stmt_unref(e->stmt);
			free(e);
		}
	}
	free(m->tab);
	m->tab = NULL;
	m->size = m->count = 0;
}

/* --- server sets --- */

PsServer *ps_server_new(void)
{
	return calloc(1, sizeof(PsServer));
}

void ps_server_free(PsServer *ps)
{
	if (!ps)
		return;
	ps_queue_reset(ps);
	ps_server_forget_all(ps);
	free(ps->tab);
	free(ps->q);
	free(ps);
}

static PsServerEntry **server_slot(const PsServer *ps, const PsStmt *st)
{
	PsServerEntry **pp;

	if (!ps->size)
		return NULL;
	for (pp = &ps->tab[st->id & (ps->size - 1)]; *pp; pp = &(*pp)->hnext)
		if ((*pp)->stmt == st)
			return pp;
	return NULL;
}

bool ps_server_has(const PsServer *ps, const PsStmt *st)
{
	return server_slot(ps, st) != NULL;
}

static void lru_unlink(PsServer *ps, PsServerEntry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		ps->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		ps->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_append(PsServer *ps, PsServerEntry *e)
{
	e->lru_next = NULL;
	e->lru_prev = ps->lru_tail;
	if (ps->lru_tail)
		ps->lru_tail->lru_next = e;
	else
		ps->lru_head = e;
	ps->lru_tail = e;
}

static bool server_grow(PsServer *ps)
{
	uint32_t nsize = ps->size ? ps->size * 2 : 16;
	PsServerEntry **nt = calloc(nsize, sizeof(*nt));

	if (!nt)
		return false;
	for (uint32_t i = 0; i < ps->size; i++) {
		PsServerEntry *e = ps->tab[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			e->hnext = nt[e->stmt->id & (nsize - 1)];
			nt[e->stmt->id & (nsize - 1)] = e;
		}
	}
	free(ps->tab);
	ps->tab = nt;
	ps->size = nsize;
	return true;
}

bool ps_server_add(PsServer *ps, PsStmt *st)
{
	PsServerEntry *e;

	if (server_slot(ps, st)) {
		ps_server_touch(ps, st);
		return true;
	}
	if (ps->count >= ps->size && !server_grow(ps) && ps->size == 0)
		return false;
	e = calloc(1, sizeof(*e));
	if (!e)
		return false;
	e->stmt = st;
	ps_stmt_ref(st);
	e->hnext = ps->tab[st->id & (ps->size - 1)];
	ps->tab[st->id & (ps->size - 1)] = e;
	lru_append(ps, e);
	ps->count++;
	return true;
}

void ps_server_remove(PsServer *ps, const PsStmt *st)
{
	PsServerEntry **pp = server_slot(ps, st), *e;

	if (!pp)
		return;
	e = *pp;
	*pp = e->hnext;
	lru_unlink(ps, e);
	ps->count--;
	ps_stmt_unref(e->stmt);
	free(e);
}

void ps_server_touch(PsServer *ps, const PsStmt *st)
{
	PsServerEntry **pp = server_slot(ps, st);

	if (!pp || ps->lru_tail == *pp)
		return;
	lru_unlink(ps, *pp);
	lru_append(ps, *pp);
}

PsStmt *ps_server_lru(const PsServer *ps)
{
	return ps->lru_head ? ps->lru_head->stmt : NULL;
}

void ps_server_forget_all(PsServer *ps)
{
	PsServerEntry *e = ps->lru_head, *next;

	for (; e; e = next) {
		next = e->lru_next;
		ps_stmt_unref(e->stmt);
		free(e);
	}
	ps->lru_head = ps->lru_tail = NULL;
	ps->count = 0;
	if (ps->tab)
		memset(ps->tab, 0, ps->size * sizeof(*ps->tab));
}

/* --- the reply FIFO --- */

static const char *const reply_kind_names[] = { "parse", "bind", "describe", "execute",
						"close", "sync", "query" };

const char *ps_reply_kind_name(PsReplyKind k)
{
	return (unsigned)k < ARRAY_SIZE(reply_kind_names) ? reply_kind_names[k] : "?";
}

static PsPending *q_at(const PsServer *ps, uint32_t i)
{
	return &ps->q[(ps->q_head + i) & (ps->q_cap - 1)];
}

bool ps_queue_push(PsServer *ps, PsReplyKind kind, PsReplyAction action, PsStmt *stmt)
{
	PsPending *p;

	if (ps->q_len == ps->q_cap) {
		uint32_t ncap = ps->q_cap ? ps->q_cap * 2 : 16;
		PsPending *nq = malloc(ncap * sizeof(*nq));

		if (!nq)
			return false;
		for (uint32_t i = 0; i < ps->q_len; i++)
			nq[i] = *q_at(ps, i);
		free(ps->q);
		ps->q = nq;
		ps->q_cap = ncap;
		ps->q_head = 0;
	}
	p = &ps->q[(ps->q_head + ps->q_len) & (ps->q_cap - 1)];
	p->kind = (uint8_t)kind;
	p->action = (uint8_t)action;
	p->stmt = stmt;
	if (stmt)
		ps_stmt_ref(stmt);
	ps->q_len++;
	if (kind == PS_RQ_SYNC)
		ps->skipping = false;
	return true;
}

uint8_t ps_queue_head_synth(const PsServer *ps)
{
	const PsPending *p;

	if (!ps->q_len)
		return 0;
	p = q_at(ps, 0);
	if (p->action != PS_ACT_SYNTH)
		return 0;
	return p->kind == PS_RQ_CLOSE ? '3' : '1';
}

void ps_queue_pop(PsServer *ps)
{
	PsPending *p;

	if (!ps->q_len)
		return;
	p = q_at(ps, 0);
	if (p->stmt)
		ps_stmt_unref(p->stmt);
	p->stmt = NULL;
	ps->q_head = (ps->q_head + 1) & (ps->q_cap - 1);
	ps->q_len--;
}

void ps_queue_reset(PsServer *ps)
{
	while (ps->q_len)
		ps_queue_pop(ps);
	ps->skipping = false;
}

/* Does message <type> end the reply to <kind>? */
static bool reply_ends(PsReplyKind kind, uint8_t type)
{
	switch (kind) {
	case PS_RQ_PARSE:
		return type == '1';
	case PS_RQ_BIND:
		return type == '2';
	case PS_RQ_DESCRIBE:
		return type == 'T' || type == 'n';
	case PS_RQ_EXECUTE:
		return type == 'C' || type == 'I' || type == 's';
	case PS_RQ_CLOSE:
		return type == '3';
	case PS_RQ_SYNC:
	case PS_RQ_QUERY:
		return type == 'Z';
	}
	return false;
}

PsVerdict ps_queue_reply(PsServer *ps, uint8_t type)
{
	PsPending *head;
	PsVerdict v;

	if (!ps->q_len || type == 'N' || type == 'S' || type == 'A')
		return PS_V_FORWARD;
	head = q_at(ps, 0);
	if (type == 'E') {
		if (head->kind == PS_RQ_QUERY || head->kind == PS_RQ_SYNC)
			return PS_V_FORWARD; /* the ReadyForQuery still comes */
		/* the server skips every message up to the next Sync */
		while (ps->q_len && q_at(ps, 0)->kind != PS_RQ_SYNC) {
			PsPending *p = q_at(ps, 0);

			if (p->kind == PS_RQ_PARSE && p->action != PS_ACT_SYNTH && p->stmt)
				ps_server_remove(ps, p->stmt);
			ps_queue_pop(ps);
		}
		if (!ps->q_len)
			ps->skipping = true;
		return PS_V_FORWARD;
	}
	if (!reply_ends(head->kind, type))
		return PS_V_FORWARD;
	v = head->action == PS_ACT_SWALLOW ? PS_V_SWALLOW : PS_V_FORWARD;
	ps_queue_pop(ps);
	return v;
}

/* --- messages --- */

/* A NUL-terminated string at <*off> within [0, len); NULL if it does not end in time. */
static const char *get_str(const uint8_t *p, uint32_t len, uint32_t *off)
{
	const uint8_t *nul;

	if (*off >= len)
		return NULL;
	nul = memchr(p + *off, 0, len - *off);
	if (!nul)
		return NULL;
	{
		const char *s = (const char *)p + *off;
		*off = (uint32_t)(nul - p) + 1;
		return s;
	}
}

PsReadStatus ps_read_parse(const uint8_t *pkt, uint32_t total, PsParseMsg *out)
{
	uint32_t off = 5;

	if (total < 5 || pkt[0] != 'P')
		return PS_READ_BAD;
	out->name = get_str(pkt, total, &off);
	if (!out->name)
		return PS_READ_BAD;
	out->body = pkt + off;
	out->body_len = total - off;
	out->query = get_str(pkt, total, &off);
	if (!out->query || off + 2 > total)
		return PS_READ_BAD;
	out->nparams = get_be16(pkt + off);
	off += 2;
	if (off + 4u * out->nparams != total)
		return PS_READ_BAD;
	return PS_READ_OK;
}

PsReadStatus ps_read_bind(const uint8_t *pkt, uint32_t avail, const char **portal,
			  const char **stmt, uint32_t *rest)
{
	uint32_t off = 5;

	if (avail < 5 || pkt[0] != 'B')
		return PS_READ_BAD;
	*portal = get_str(pkt, avail, &off);
	if (!*portal)
		return PS_READ_INCOMPLETE;
	*stmt = get_str(pkt, avail, &off);
	if (!*stmt)
		return PS_READ_INCOMPLETE;
	*rest = off;
	return PS_READ_OK;
}

PsReadStatus ps_read_target(const uint8_t *pkt, uint32_t total, uint8_t *kind, const char **name)
{
	uint32_t off = 6;

	if (total < 7 || (pkt[0] != 'D' && pkt[0] != 'C'))
		return PS_READ_BAD;
	*kind = pkt[5];
	if (*kind != 'S' && *kind != 'P')
		return PS_READ_BAD;
	*name = get_str(pkt, total, &off);
	if (!*name || off != total)
		return PS_READ_BAD;
	return PS_READ_OK;
}

void ps_build_parse(PktBuf *pb, const PsStmt *st)
{
	pktbuf_start(pb, 'P');
	pktbuf_put_string(pb, st->server_name);
	pktbuf_put_bytes(pb, st->body, st->body_len);
	pktbuf_finish(pb);
}

bool ps_build_bind(PktBuf *pb, const uint8_t *pkt, uint32_t total, const char *name)
{
	const char *portal, *old;
	uint32_t rest;

	if (ps_read_bind(pkt, total, &portal, &old, &rest) != PS_READ_OK)
		return false;
	pktbuf_start(pb, 'B');
	pktbuf_put_string(pb, portal);
	pktbuf_put_string(pb, name);
	pktbuf_put_bytes(pb, pkt + rest, total - rest);
	pktbuf_finish(pb);
	return !pb->failed;
}

void ps_build_target(PktBuf *pb, uint8_t type, uint8_t kind, const char *name)
{
	pktbuf_start(pb, (char)type);
	pktbuf_put_u8(pb, kind);
	pktbuf_put_string(pb, name);
	pktbuf_finish(pb);
}

void ps_build_empty(PktBuf *pb, uint8_t type)
{
	pktbuf_start(pb, (char)type);
	pktbuf_finish(pb);
}

/* Strip the terminating NUL a tag may come with. */
static size_t ps_tag_len(const char *tag, size_t len)
{
	while (len && tag[len - 1] == 0)
		len--;
	return len;
}

bool ps_tag_names_statement(const char *tag, size_t len)
{
	len = ps_tag_len(tag, len);
	return (len == 7 && memcmp(tag, "PREPARE", 7) == 0) ||
	       (len == 10 && memcmp(tag, "DEALLOCATE", 10) == 0);
}

bool ps_tag_drops_all(const char *tag, size_t len)
{
	static const char *const tags[] = { "DISCARD ALL", "DEALLOCATE ALL" };

	len = ps_tag_len(tag, len);
	for (size_t i = 0; i < ARRAY_SIZE(tags); i++)
		if (strlen(tags[i]) == len && memcmp(tag, tags[i], len) == 0)
			return true;
	return false;
}
