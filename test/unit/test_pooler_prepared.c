/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests for pooler/prepared.c: reading and rebuilding Parse/Bind/Describe/Close, the
 * statement registry and its sharing, client maps, server sets with LRU order, and the reply
 * FIFO (synthesized and swallowed replies, error skipping up to Sync).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pooler/prepared.h"

/* Build a Parse message for <name>, <query> and <n> parameter types. */
static size_t mk_parse(uint8_t *out, const char *name, const char *query, int n,
		       const uint32_t *types)
{
	PktBuf pb;

	pktbuf_init_fixed(&pb, out, 1024);
	pktbuf_start(&pb, 'P');
	pktbuf_put_string(&pb, name);
	pktbuf_put_string(&pb, query);
	pktbuf_put_u16(&pb, (uint16_t)n);
	for (int i = 0; i < n; i++)
		pktbuf_put_u32(&pb, types[i]);
	pktbuf_finish(&pb);
	assert_false(pb.failed);
	return pb.len;
}

static void test_read_parse(void **state)
{
	uint8_t buf[1024];
	uint32_t types[2] = { 23, 25 };
	size_t n = mk_parse(buf, "s1", "SELECT $1, $2", 2, types);
	PsParseMsg m;

	assert_int_equal(ps_read_parse(buf, (uint32_t)n, &m), PS_READ_OK);
	assert_string_equal(m.name, "s1");
	assert_string_equal(m.query, "SELECT $1, $2");
	assert_int_equal(m.nparams, 2);
	assert_int_equal(m.body_len, n - 5 - 3);
	/* truncated types, garbage after them, missing NUL */
	assert_int_equal(ps_read_parse(buf, (uint32_t)n - 1, &m), PS_READ_BAD);
	buf[n] = 0;
	assert_int_equal(ps_read_parse(buf, (uint32_t)n + 1, &m), PS_READ_BAD);
	n = mk_parse(buf, "s1", "SELECT 1", 0, NULL);
	assert_int_equal(ps_read_parse(buf, 8, &m), PS_READ_BAD);
	buf[0] = 'B';
	assert_int_equal(ps_read_parse(buf, (uint32_t)n, &m), PS_READ_BAD);
}

static void test_bind_rewrite(void **state)
{
	uint8_t in[256], outb[256];
	PktBuf pb, out;
	const char *portal, *stmt;
	uint32_t rest;

	pktbuf_init_fixed(&pb, in, sizeof(in));
	pktbuf_start(&pb, 'B');
	pktbuf_put_string(&pb, "por");
	pktbuf_put_string(&pb, "client_stmt");
	pktbuf_put_u16(&pb, 0);	   /* format codes */
	pktbuf_put_u16(&pb, 1);	   /* one parameter */
	pktbuf_put_u32(&pb, 2);
	pktbuf_put_bytes(&pb, "42", 2);
	pktbuf_put_u16(&pb, 0);	   /* result formats */
	pktbuf_finish(&pb);
	assert_int_equal(ps_read_bind(in, (uint32_t)pb.len, &portal, &stmt, &rest), PS_READ_OK);
	assert_string_equal(portal, "por");
	assert_string_equal(stmt, "client_stmt");
	/* names cut short: more bytes needed */
	assert_int_equal(ps_read_bind(in, 12, &portal, &stmt, &rest), PS_READ_INCOMPLETE);

	pktbuf_init_fixed(&out, outb, sizeof(outb));
	assert_true(ps_build_bind(&out, in, (uint32_t)pb.len, "PGPILOT_7"));
	assert_int_equal(out.len, pb.len - strlen("client_stmt") + strlen("PGPILOT_7"));
	assert_int_equal(get_be32(outb + 1), out.len - 1);
	assert_int_equal(ps_read_bind(outb, (uint32_t)out.len, &portal, &stmt, &rest), PS_READ_OK);
	assert_string_equal(portal, "por");
	assert_string_equal(stmt, "PGPILOT_7");
	/* the parameters follow unchanged */
	assert_memory_equal(outb + rest, in + 5 + 4 + 12, out.len - rest);
	/* a Bind with no statement name terminator cannot be rebuilt */
	pktbuf_init_fixed(&out, outb, sizeof(outb));
	assert_false(ps_build_bind(&out, in, 9, "X"));
}

static void test_targets(void **state)
{
	uint8_t buf[64];
	PktBuf pb;
	uint8_t kind;
	const char *name;

	pktbuf_init_fixed(&pb, buf, sizeof(buf));
	ps_build_target(&pb, 'D', 'S', "abc");
	assert_int_equal(ps_read_target(buf, (uint32_t)pb.len, &kind, &name), PS_READ_OK);
	assert_int_equal(kind, 'S');
	assert_string_equal(name, "abc");
	assert_int_equal(ps_read_target(buf, (uint32_t)pb.len - 1, &kind, &name), PS_READ_BAD);
	buf[5] = 'X';
	assert_int_equal(ps_read_target(buf, (uint32_t)pb.len, &kind, &name), PS_READ_BAD);
	pktbuf_init_fixed(&pb, buf, sizeof(buf));
	ps_build_target(&pb, 'C', 'P', "");
	assert_int_equal(ps_read_target(buf, (uint32_t)pb.len, &kind, &name), PS_READ_OK);
	assert_int_equal(kind, 'P');
	assert_string_equal(name, "");
	pktbuf_init_fixed(&pb, buf, sizeof(buf));
	ps_build_empty(&pb, '1');
	assert_int_equal(pb.len, 5);
	assert_memory_equal(buf, "1\0\0\0\4", 5);
	assert_true(ps_tag_drops_all("DISCARD ALL", 12));
	assert_true(ps_tag_drops_all("DEALLOCATE ALL", 14));
	assert_false(ps_tag_drops_all("DEALLOCATE", 11));
	assert_false(ps_tag_drops_all("SELECT 1", 9));
	assert_true(ps_tag_names_statement("PREPARE", 8));
	assert_true(ps_tag_names_statement("DEALLOCATE", 11));
	assert_true(ps_tag_names_statement("DEALLOCATE", 10));
	assert_false(ps_tag_names_statement("DEALLOCATE ALL", 15));
	assert_false(ps_tag_names_statement("PREPARED", 9));
	assert_false(ps_tag_names_statement("SELECT 1", 9));
}

/* Server-side names cannot be guessed ahead of time: each carries 64 random bits, so a client
 * cannot PREPARE, on a server, the name pgpilot will give a statement there later. */
static void test_server_names_unpredictable(void **state)
{
	uint8_t a[1024], b[1024];
	PsParseMsg ma, mb;
	PsStmt *sa, *sb;
	unsigned long long ida, idb;
	char salta[32], saltb[32];

	mk_parse(a, "n1", "SELECT 'unpredictable 1'", 0, NULL);
	mk_parse(b, "n2", "SELECT 'unpredictable 2'", 0, NULL);
	assert_int_equal(ps_read_parse(a, get_be32(a + 1) + 1, &ma), PS_READ_OK);
	assert_int_equal(ps_read_parse(b, get_be32(b + 1) + 1, &mb), PS_READ_OK);
	sa = ps_stmt_intern(ma.body, ma.body_len);
	sb = ps_stmt_intern(mb.body, mb.body_len);
	assert_non_null(sa);
	assert_non_null(sb);
	assert_int_equal(sscanf(sa->server_name, "PGPILOT_%llu_%16s", &ida, salta), 2);
	assert_int_equal(sscanf(sb->server_name, "PGPILOT_%llu_%16s", &idb, saltb), 2);
	assert_int_equal(strlen(salta), 16);
	assert_string_not_equal(salta, saltb);
	assert_true(strlen(sa->server_name) < 64); /* NAMEDATALEN */
	ps_stmt_unref(sa);
	ps_stmt_unref(sb);
}

static void test_registry_sharing(void **state)
{
	uint8_t a[1024], b[1024], c[1024];
	uint32_t t23 = 23, t25 = 25;
	size_t na = mk_parse(a, "x", "SELECT $1", 1, &t23);
	size_t nb = mk_parse(b, "other_name", "SELECT $1", 1, &t23);
	size_t nc = mk_parse(c, "x", "SELECT $1", 1, &t25);
	PsParseMsg ma, mb, mc;
	PsStmt *sa, *sb, *sc;
	uint8_t out[1024];
	PktBuf pb;

	assert_int_equal(ps_read_parse(a, (uint32_t)na, &ma), PS_READ_OK);
	assert_int_equal(ps_read_parse(b, (uint32_t)nb, &mb), PS_READ_OK);
	assert_int_equal(ps_read_parse(c, (uint32_t)nc, &mc), PS_READ_OK);
	assert_int_equal(ps_stmt_count(), 0);
	sa = ps_stmt_intern(ma.body, ma.body_len);
	sb = ps_stmt_intern(mb.body, mb.body_len);
	sc = ps_stmt_intern(mc.body, mc.body_len);
	/* same query and types under different client names: one statement, one server name */
	assert_ptr_equal(sa, sb);
	assert_string_equal(sa->server_name, sb->server_name);
	/* other parameter types: another statement */
	assert_ptr_not_equal(sa, sc);
	assert_string_not_equal(sa->server_name, sc->server_name);
	assert_int_equal(ps_stmt_count(), 2);
	assert_int_equal(sa->refs, 2);
	assert_int_not_equal(ps_hash(ma.body, ma.body_len), ps_hash(mc.body, mc.body_len));

	/* the Parse sent to servers carries the server name and the same body */
	pktbuf_init_fixed(&pb, out, sizeof(out));
	ps_build_parse(&pb, sa);
	{
		PsParseMsg m;
		assert_int_equal(ps_read_parse(out, (uint32_t)pb.len, &m), PS_READ_OK);
		assert_string_equal(m.name, sa->server_name);
		assert_int_equal(m.body_len, ma.body_len);
		assert_memory_equal(m.body, ma.body, ma.body_len);
	}
	ps_stmt_unref(sa);
	ps_stmt_unref(sb);
	ps_stmt_unref(sc);
	assert_int_equal(ps_stmt_count(), 0);
}

/* Intern a statement for a query, no parameters (one reference owned by the caller). */
static PsStmt *stmt_for(const char *query)
{
	uint8_t buf[1024];
	size_t n = mk_parse(buf, "n", query, 0, NULL);
	PsParseMsg m;

	assert_int_equal(ps_read_parse(buf, (uint32_t)n, &m), PS_READ_OK);
	return ps_stmt_intern(m.body, m.body_len);
}

static void test_client_map(void **state)
{
	PsClientMap a = { 0 }, b = { 0 };
	PsStmt *s1 = stmt_for("SELECT 1"), *s2 = stmt_for("SELECT 2");
	char name[32];

	assert_null(ps_client_lookup(&a, "x"));
	assert_true(ps_client_set(&a, "x", s1));
	assert_true(ps_client_set(&b, "x", s2));
	/* the same name in two clients means two different statements */
	assert_ptr_equal(ps_client_lookup(&a, "x"), s1);
	assert_ptr_equal(ps_client_lookup(&b, "x"), s2);
	/* redefining replaces */
	assert_true(ps_client_set(&a, "x", s2));
	assert_ptr_equal(ps_client_lookup(&a, "x"), s2);
	assert_int_equal(s1->refs, 1);
	assert_true(ps_client_remove(&a, "x"));
	assert_false(ps_client_remove(&a, "x"));
	assert_null(ps_client_lookup(&a, "x"));
	/* many names: the table grows */
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "stmt%d", i);
		assert_true(ps_client_set(&a, name, i % 2 ? s1 : s2));
	}
	assert_int_equal(a.count, 200);
	assert_ptr_equal(ps_client_lookup(&a, "stmt7"), s1);
	assert_ptr_equal(ps_client_lookup(&a, "stmt8"), s2);
	ps_client_clear(&a);
	ps_client_clear(&b);
	assert_int_equal(a.count, 0);
	assert_null(ps_client_lookup(&a, "stmt7"));
	assert_int_equal(s1->refs, 1);
	ps_stmt_unref(s1);
	ps_stmt_unref(s2);
	assert_int_equal(ps_stmt_count(), 0);
}

static void test_server_lru(void **state)
{
	PsServer *ps = ps_server_new();
	PsStmt *s[40];
	char q[32];

	for (int i = 0; i < 40; i++) {
		snprintf(q, sizeof(q), "SELECT %d", i);
		s[i] = stmt_for(q);
		assert_true(ps_server_add(ps, s[i]));
	}
	assert_int_equal(ps->count, 40);
	assert_ptr_equal(ps_server_lru(ps), s[0]);
	ps_server_touch(ps, s[0]);
	assert_ptr_equal(ps_server_lru(ps), s[1]);
	ps_server_remove(ps, s[1]);
	assert_false(ps_server_has(ps, s[1]));
	assert_ptr_equal(ps_server_lru(ps), s[2]);
	/* adding again only touches */
	assert_true(ps_server_add(ps, s[2]));
	assert_int_equal(ps->count, 39);
	assert_ptr_equal(ps_server_lru(ps), s[3]);
	ps_server_forget_all(ps);
	assert_int_equal(ps->count, 0);
	assert_null(ps_server_lru(ps));
	assert_false(ps_server_has(ps, s[5]));
	for (int i = 0; i < 40; i++) {
		assert_int_equal(s[i]->refs, 1);
		ps_stmt_unref(s[i]);
	}
	ps_server_free(ps);
	assert_int_equal(ps_stmt_count(), 0);
}

/* Feed server messages; return the verdicts as a string of F/S. */
static void feed(PsServer *ps, const char *types, const char *expect)
{
	for (size_t i = 0; types[i]; i++) {
		PsVerdict v = ps_queue_reply(ps, (uint8_t)types[i]);
		assert_int_equal(v == PS_V_SWALLOW ? 'S' : 'F', expect[i]);
	}
}

static void test_fifo_synth_and_swallow(void **state)
{
	PsServer *ps = ps_server_new();
	PsStmt *st = stmt_for("SELECT 1");

	/* Bind (needs an injected Parse), Describe portal, Execute, then a Parse the server
	 * has (synthesized), Close (synthesized), Sync */
	assert_true(ps_server_add(ps, st));
	assert_true(ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_SWALLOW, st));
	assert_true(ps_queue_push(ps, PS_RQ_BIND, PS_ACT_FORWARD, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_DESCRIBE, PS_ACT_FORWARD, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_EXECUTE, PS_ACT_FORWARD, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_SYNTH, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_CLOSE, PS_ACT_SYNTH, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_SYNC, PS_ACT_FORWARD, NULL));
	assert_int_equal(ps_queue_head_synth(ps), 0);
	/* the injected ParseComplete is swallowed; notices pass without moving the FIFO */
	feed(ps, "1N2TDDD", "SFFFFFF");
	assert_int_equal(ps_queue_head_synth(ps), 0);
	feed(ps, "C", "F");
	/* now the pooler's answers are due, in order */
	assert_int_equal(ps_queue_head_synth(ps), '1');
	ps_queue_pop(ps);
	assert_int_equal(ps_queue_head_synth(ps), '3');
	ps_queue_pop(ps);
	assert_int_equal(ps_queue_head_synth(ps), 0);
	feed(ps, "Z", "F");
	assert_true(ps_queue_empty(ps));
	/* simple queries end at ReadyForQuery, whatever comes before */
	assert_true(ps_queue_push(ps, PS_RQ_QUERY, PS_ACT_FORWARD, NULL));
	feed(ps, "TDCECZ", "FFFFFF");
	assert_true(ps_queue_empty(ps));
	/* statement Describe: ParameterDescription then NoData */
	assert_true(ps_queue_push(ps, PS_RQ_DESCRIBE, PS_ACT_FORWARD, NULL));
	feed(ps, "t", "F");
	assert_false(ps_queue_empty(ps));
	feed(ps, "n", "F");
	assert_true(ps_queue_empty(ps));
	/* nothing outstanding: anything passes */
	feed(ps, "ZE", "FF");
	ps_server_free(ps);
	ps_stmt_unref(st);
	assert_int_equal(ps_stmt_count(), 0);
}

static void test_fifo_error_skips_to_sync(void **state)
{
	PsServer *ps = ps_server_new();
	PsStmt *a = stmt_for("SELECT a"), *b = stmt_for("SELECT b");

	/* injected Parse of a fails: the server skips up to Sync and forgets nothing it never
	 * got; the Parse of b after it never ran either */
	assert_true(ps_server_add(ps, a));
	assert_true(ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_SWALLOW, a));
	assert_true(ps_queue_push(ps, PS_RQ_BIND, PS_ACT_FORWARD, NULL));
	assert_true(ps_server_add(ps, b));
	assert_true(ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_FORWARD, b));
	assert_true(ps_queue_push(ps, PS_RQ_CLOSE, PS_ACT_SYNTH, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_EXECUTE, PS_ACT_FORWARD, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_SYNC, PS_ACT_FORWARD, NULL));
	assert_true(ps_queue_push(ps, PS_RQ_BIND, PS_ACT_FORWARD, NULL));
	feed(ps, "E", "F");
	assert_false(ps_server_has(ps, a));
	assert_false(ps_server_has(ps, b));
	assert_int_equal(ps_queue_head_synth(ps), 0); /* the Close's answer was dropped too */
	assert_int_equal(ps->q_len, 2);
	assert_false(ps->skipping);
	feed(ps, "Z", "F");
	feed(ps, "2", "F");
	assert_true(ps_queue_empty(ps));

	/* an error with no Sync queued yet: skipping until the client sends one */
	assert_true(ps_queue_push(ps, PS_RQ_BIND, PS_ACT_FORWARD, NULL));
	feed(ps, "E", "F");
	assert_true(ps->skipping);
	assert_true(ps_queue_push(ps, PS_RQ_SYNC, PS_ACT_FORWARD, NULL));
	assert_false(ps->skipping);
	/* errors inside a simple query or at Sync (commit) skip nothing */
	assert_true(ps_queue_push(ps, PS_RQ_QUERY, PS_ACT_FORWARD, NULL));
	feed(ps, "EZE", "FFF");
	assert_false(ps_queue_empty(ps));
	feed(ps, "Z", "F");
	assert_true(ps_queue_empty(ps));
	assert_false(ps->skipping);

	/* the ring wraps and grows with many entries outstanding */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 100; i++)
			assert_true(ps_queue_push(ps, i % 2 ? PS_RQ_SYNC : PS_RQ_PARSE,
						  PS_ACT_FORWARD, i % 2 ? NULL : a));
		assert_int_equal(a->refs, 51);
		for (int i = 0; i < 100; i++)
			feed(ps, i % 2 ? "Z" : "1", "F");
		assert_true(ps_queue_empty(ps));
	}
	/* reset drops references */
	assert_true(ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_SWALLOW, b));
	ps_queue_reset(ps);
	assert_int_equal(b->refs, 1);
	assert_string_equal(ps_reply_kind_name(PS_RQ_DESCRIBE), "describe");
	assert_string_equal(ps_reply_kind_name((PsReplyKind)99), "?");
	ps_server_free(ps);
	ps_stmt_unref(a);
	ps_stmt_unref(b);
	assert_int_equal(ps_stmt_count(), 0);
}

/* 64-bit FNV-1a, the unkeyed hash ps_hash used to be: names are chosen to collide under it. */
static uint64_t fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/*
 * Names that share one bucket of a 4096-bucket table under FNV-1a (what a client flooding the
 * statement map would send) spread over many buckets under ps_hash, which is stable within the
 * process. The unkeyed hash puts all 64 in one bucket.
 */
static void test_hash_is_keyed(void **state)
{
	enum { N = 64, MASK = 4095 };
	static char names[N][32];
	uint64_t buckets[N];
	int found = 0, distinct = 0;

	(void)state;
	for (unsigned i = 0; found < N; i++) {
		snprintf(names[found], sizeof(names[found]), "stmt_%u", i);
		if ((fnv1a(names[found]) & MASK) == 0)
			found++;
	}
	for (int i = 0; i < N; i++) {
		const uint8_t *b = (const uint8_t *)names[i];
		bool seen = false;

		buckets[i] = ps_hash(b, strlen(names[i])) & MASK;
		assert_true(ps_hash(b, strlen(names[i])) == ps_hash(b, strlen(names[i])));
		for (int j = 0; j < i; j++)
			seen |= buckets[j] == buckets[i];
		distinct += !seen;
	}
	/* 64 random picks of 4096 buckets give about 63.5 distinct ones; 32 is far below */
	assert_true(distinct >= 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_parse),
		cmocka_unit_test(test_bind_rewrite),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_registry_sharing),
		cmocka_unit_test(test_server_names_unpredictable),
		cmocka_unit_test(test_client_map),
		cmocka_unit_test(test_server_lru),
		cmocka_unit_test(test_fifo_synth_and_swallow),
		cmocka_unit_test(test_fifo_error_skips_to_sync),
		cmocka_unit_test(test_hash_is_keyed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
