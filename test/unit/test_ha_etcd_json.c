/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/etcd_json: exact request bodies, reply parsing on replies captured from etcd
 * 3.4 (files in data/etcd, including omitted default fields and error bodies), watch stream lines,
 * base64 edge cases and prefix range_end computation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha/etcd_json.h"

#define LK "L3NlcnZpY2UvcGctdGVzdC9sZWFkZXI="
#define LEADER "/service/pg-test/leader"
#define LEASE 7587862072907252738LL

static char *read_data(const char *name, size_t *len)
{
	char path[256];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "data/etcd/%s", name);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void parse_file(EtcdReplyKind kind, long status, const char *name, EtcdResult *res)
{
	size_t len;
	char *body = read_data(name, &len);

	etcd_result_init(res);
	etcd_json_parse_reply(kind, status, body, len, res);
	free(body);
}

static bool parse_str(EtcdReplyKind kind, long status, const char *body, EtcdResult *res)
{
	return etcd_json_parse_reply(kind, status, body, strlen(body), res);
}

static void assert_body(char *got, const char *want)
{
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

/*
 * Request bodies
 */

static void test_bodies_lease(void **state)
{
	assert_body(etcd_json_lease_grant(30), "{\"TTL\":\"30\"}");
	assert_body(etcd_json_lease_id(LEASE), "{\"ID\":\"7587862072907252738\"}");
	assert_body(etcd_json_lease_timetolive(LEASE, true),
		    "{\"ID\":\"7587862072907252738\",\"keys\":true}");
	assert_body(etcd_json_lease_timetolive(5, false), "{\"ID\":\"5\"}");
	assert_body(etcd_json_authenticate("pg", "s\"ecret"),
		    "{\"name\":\"pg\",\"password\":\"s\\\"ecret\"}");
}

static void test_bodies_kv(void **state)
{
	assert_body(etcd_json_range(LEADER, false, 0, false), "{\"key\":\"" LK "\"}");
	/* "/service/pg-test/" -> range_end "/service/pg-test0" */
	assert_body(
	    etcd_json_range("/service/pg-test/", true, 0, false),
	    "{\"key\":\"L3NlcnZpY2UvcGctdGVzdC8=\",\"range_end\":\"L3NlcnZpY2UvcGctdGVzdDA=\"}");
	assert_body(etcd_json_range("a", false, 1, true),
		    "{\"key\":\"YQ==\",\"limit\":\"1\",\"count_only\":true}");
	assert_body(etcd_json_put(LEADER, "pg-test-1", LEASE),
		    "{\"key\":\"" LK
		    "\",\"value\":\"cGctdGVzdC0x\",\"lease\":\"7587862072907252738\"}");
	assert_body(etcd_json_put("a", "", 0), "{\"key\":\"YQ==\",\"value\":\"\"}");
	assert_body(
	    etcd_json_deleterange("/service/pg-test/", true),
	    "{\"key\":\"L3NlcnZpY2UvcGctdGVzdC8=\",\"range_end\":\"L3NlcnZpY2UvcGctdGVzdDA=\"}");
	assert_body(etcd_json_deleterange("a", false), "{\"key\":\"YQ==\"}");
}

static void test_bodies_watch(void **state)
{
	assert_body(etcd_json_watch_create("/service/pg-test/", true, 42, true, true),
		    "{\"create_request\":{\"key\":\"L3NlcnZpY2UvcGctdGVzdC8=\","
		    "\"range_end\":\"L3NlcnZpY2UvcGctdGVzdDA=\",\"start_revision\":\"42\","
		    "\"prev_kv\":true,\"progress_notify\":true}}");
	assert_body(etcd_json_watch_create("a", false, 0, false, false),
		    "{\"create_request\":{\"key\":\"YQ==\"}}");
}

static void test_bodies_txn(void **state)
{
	EtcdTxn *txn = etcd_txn_new();

	/* create-if-absent, as in the notes */
	etcd_txn_compare_int(txn, LEADER, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0);
	etcd_txn_put(txn, true, LEADER, "pg-test-1", LEASE);
	etcd_txn_range(txn, false, LEADER, false);
	assert_body(etcd_txn_body(txn),
		    "{\"compare\":[{\"key\":\"" LK "\",\"target\":\"CREATE\",\"result\":\"EQUAL\","
		    "\"create_revision\":\"0\"}],"
		    "\"success\":[{\"request_put\":{\"key\":\"" LK "\",\"value\":\"cGctdGVzdC0x\","
		    "\"lease\":\"7587862072907252738\"}}],"
		    "\"failure\":[{\"request_range\":{\"key\":\"" LK "\"}}]}");
	etcd_txn_free(txn);

	/* owner guard: VALUE and LEASE, then a put; and a guarded prefix delete */
	txn = etcd_txn_new();
	etcd_txn_compare_value(txn, LEADER, ETCD_CMP_EQUAL, "pg-test-1");
	etcd_txn_compare_int(txn, LEADER, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, 12);
	etcd_txn_compare_int(txn, "a", ETCD_CMP_MOD, ETCD_CMP_LESS, 4);
	etcd_txn_compare_int(txn, "a", ETCD_CMP_VERSION, ETCD_CMP_GREATER, 1);
	etcd_txn_compare_int(txn, "a", ETCD_CMP_CREATE, ETCD_CMP_NOT_EQUAL, 2);
	etcd_txn_delete(txn, true, "a/", true);
	assert_body(
	    etcd_txn_body(txn),
	    "{\"compare\":[{\"key\":\"" LK "\",\"target\":\"VALUE\",\"result\":\"EQUAL\","
	    "\"value\":\"cGctdGVzdC0x\"},"
	    "{\"key\":\"" LK "\",\"target\":\"LEASE\",\"result\":\"EQUAL\",\"lease\":\"12\"},"
	    "{\"key\":\"YQ==\",\"target\":\"MOD\",\"result\":\"LESS\",\"mod_revision\":\"4\"},"
	    "{\"key\":\"YQ==\",\"target\":\"VERSION\",\"result\":\"GREATER\",\"version\":\"1\"},"
	    "{\"key\":\"YQ==\",\"target\":\"CREATE\",\"result\":\"NOT_EQUAL\","
	    "\"create_revision\":\"2\"}],"
	    "\"success\":[{\"request_delete_range\":{\"key\":\"YS8=\",\"range_end\":\"YTA=\"}}]}");
	etcd_txn_free(txn);
}

static void test_txn_builder_errors(void **state)
{
	EtcdTxn *txn = etcd_txn_new();

	/* VALUE is not an integer target: the builder fails and stays failed */
	etcd_txn_compare_int(txn, "a", ETCD_CMP_VALUE, ETCD_CMP_EQUAL, 1);
	etcd_txn_put(txn, true, "a", "b", 0);
	assert_null(etcd_txn_body(txn));
	etcd_txn_free(txn);
	assert_null(etcd_txn_body(NULL));
	etcd_txn_free(NULL);

	/* an empty txn is valid */
	txn = etcd_txn_new();
	assert_body(etcd_txn_body(txn), "{}");
	etcd_txn_free(txn);
}

/*
 * Base64 and range_end
 */

static void assert_b64_roundtrip(const char *data, size_t len, const char *want)
{
	char *enc = etcd_b64_encode(data, len), *dec;
	size_t dlen = 99;

	assert_non_null(enc);
	assert_string_equal(enc, want);
	dec = etcd_b64_decode(enc, &dlen);
	assert_non_null(dec);
	assert_int_equal(dlen, len);
	assert_memory_equal(dec, data, len);
	assert_int_equal(dec[len], '\0');
	free(enc);
	free(dec);
}

static void assert_b64_decodes(const char *b64, const char *want, size_t wlen)
{
	size_t len = 99;
	char *dec = etcd_b64_decode(b64, &len);

	assert_non_null(dec);
	assert_int_equal(len, wlen);
	assert_memory_equal(dec, want, wlen);
	free(dec);
}

static void test_base64(void **state)
{
	size_t len;

	assert_b64_roundtrip("", 0, "");
	assert_b64_roundtrip("f", 1, "Zg==");
	assert_b64_roundtrip("fo", 2, "Zm8=");
	assert_b64_roundtrip("foo", 3, "Zm9v");
	assert_b64_roundtrip("foob", 4, "Zm9vYg==");
	assert_b64_roundtrip("\0\xff\xfe", 3, "AP/+");
	assert_b64_roundtrip("\xfb\xff", 2, "+/8=");
	assert_b64_roundtrip(LEADER, strlen(LEADER), LK);

	/* unpadded and URL-safe forms are accepted */
	assert_b64_decodes("Zg", "f", 1);
	assert_b64_decodes("Zm8", "fo", 2);
	assert_b64_decodes("-_8", "\xfb\xff", 2);
	assert_b64_decodes("-_8=", "\xfb\xff", 2);

	/* invalid input */
	assert_null(etcd_b64_decode("Z", &len));     /* one char cannot hold a byte */
	assert_null(etcd_b64_decode("Zm9vY", &len)); /* same, after a full quantum */
	assert_null(etcd_b64_decode("Zg=", &len));   /* padding does not complete the quantum */
	assert_null(etcd_b64_decode("Zg===", &len)); /* too much padding */
	assert_null(etcd_b64_decode("Z=g=", &len));  /* padding in the middle */
	assert_null(etcd_b64_decode("Zm 9v", &len));
	assert_null(etcd_b64_decode("Zm9v!A==", &len));
}

static void assert_range_end(const char *key, size_t klen, const char *want, size_t wlen)
{
	uint8_t out[64];
	size_t n = 99;

	memset(out, 0xaa, sizeof(out));
	etcd_prefix_range_end((const uint8_t *)key, klen, out, &n);
	assert_int_equal(n, wlen);
	assert_memory_equal(out, want, wlen);
}

static void test_prefix_range_end(void **state)
{
	assert_range_end("/a/", 3, "/a0", 3);
	assert_range_end("abc", 3, "abd", 3);
	assert_range_end("ab\xfe", 3, "ab\xff", 3);
	/* 0xff carries: drop trailing 0xff bytes, then increment */
	assert_range_end("a\xff", 2, "b", 1);
	assert_range_end("a\xff\xff", 3, "b", 1);
	assert_range_end("\x01\xfe\xff", 3, "\x01\xff", 2);
	/* no upper bound: "\0" means every key >= key */
	assert_range_end("\xff\xff", 2, "\0", 1);
	assert_range_end("", 0, "\0", 1);
}

/*
 * Replies
 */

static void test_parse_lease(void **state)
{
	EtcdResult res;

	parse_file(ETCD_REPLY_LEASE_GRANT, 200, "lease_grant.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.lease_id, LEASE);
	assert_int_equal(res.ttl, 30);
	assert_int_equal(res.revision, 7);
	assert_int_equal(res.http_status, 200);
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_LEASE_KEEPALIVE, 200, "keepalive_ok.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.lease_id, LEASE);
	assert_int_equal(res.ttl, 30);
	assert_int_equal(res.revision, 7);
	etcd_result_cleanup(&res);

	/* dead lease: no TTL -> not ok, NOT_FOUND */
	parse_file(ETCD_REPLY_LEASE_KEEPALIVE, 200, "keepalive_dead.json", &res);
	assert_false(res.ok);
	assert_int_equal(res.grpc_code, ETCD_GRPC_NOT_FOUND);
	assert_int_equal(res.ttl, 0);
	assert_int_equal(res.lease_id, LEASE);
	assert_non_null(strstr(res.error, "expired"));
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_LEASE_TIMETOLIVE, 200, "timetolive.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.ttl, 29);
	assert_int_equal(res.granted_ttl, 30);
	assert_int_equal(res.n_kvs, 1);
	assert_string_equal(res.kvs[0].key, LEADER);
	etcd_result_cleanup(&res);

	/* a grant without an ID is not a grant */
	etcd_result_init(&res);
	assert_false(parse_str(ETCD_REPLY_LEASE_GRANT, 200, "{\"TTL\":\"5\"}", &res));
	etcd_result_cleanup(&res);
}

static void test_parse_range(void **state)
{
	EtcdResult res;

	parse_file(ETCD_REPLY_RANGE, 200, "range_hit.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.count, 1);
	assert_false(res.more);
	assert_int_equal(res.n_kvs, 1);
	assert_string_equal(res.kvs[0].key, LEADER);
	assert_int_equal(res.kvs[0].key_len, strlen(LEADER));
	assert_string_equal(res.kvs[0].value, "pg-test-1");
	assert_int_equal(res.kvs[0].create_revision, 2);
	assert_int_equal(res.kvs[0].mod_revision, 5);
	assert_int_equal(res.kvs[0].version, 3);
	assert_int_equal(res.kvs[0].lease, LEASE);
	etcd_result_cleanup(&res);
	assert_null(res.kvs);

	/* a miss: no kvs, no count */
	parse_file(ETCD_REPLY_RANGE, 200, "range_miss.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.n_kvs, 0);
	assert_null(res.kvs);
	assert_int_equal(res.count, 0);
	assert_int_equal(res.revision, 7);
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_DELETERANGE, 200, "deleterange.json", &res);
	assert_true(res.ok);
	assert_int_equal(res.deleted, 2);
	etcd_result_cleanup(&res);

	/* a kv with only a key (value and numbers omitted) and numeric int64 */
	etcd_result_init(&res);
	{
		const char *b = "{\"kvs\":[{\"key\":\"YQ==\",\"version\":4}],\"more\":true}";
		assert_true(etcd_json_parse_reply(ETCD_REPLY_RANGE, 200, b, strlen(b), &res));
	}
	assert_string_equal(res.kvs[0].key, "a");
	assert_string_equal(res.kvs[0].value, "");
	assert_int_equal(res.kvs[0].value_len, 0);
	assert_int_equal(res.kvs[0].version, 4);
	assert_int_equal(res.kvs[0].lease, 0);
	assert_true(res.more);
	etcd_result_cleanup(&res);
}

static void test_parse_txn(void **state)
{
	EtcdResult res;

	parse_file(ETCD_REPLY_TXN, 200, "txn_won.json", &res);
	assert_true(res.ok);
	assert_true(res.succeeded);
	assert_int_equal(res.n_responses, 1);
	assert_int_equal(res.responses[0].type, ETCD_OP_PUT);
	etcd_result_cleanup(&res);

	/* lost: no "succeeded", the range names the owner */
	parse_file(ETCD_REPLY_TXN, 200, "txn_lost.json", &res);
	assert_true(res.ok);
	assert_false(res.succeeded);
	assert_int_equal(res.n_responses, 1);
	assert_int_equal(res.responses[0].type, ETCD_OP_RANGE);
	assert_int_equal(res.responses[0].count, 1);
	assert_int_equal(res.responses[0].n_kvs, 1);
	assert_string_equal(res.responses[0].kvs[0].value, "pg-test-1");
	assert_int_equal(res.responses[0].kvs[0].lease, LEASE);
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_TXN, 200, "txn_delete.json", &res);
	assert_true(res.ok);
	assert_true(res.succeeded);
	assert_int_equal(res.responses[0].type, ETCD_OP_DELETE);
	assert_int_equal(res.responses[0].deleted, 1);
	etcd_result_cleanup(&res);

	/* a failed txn without any response at all */
	etcd_result_init(&res);
	assert_true(parse_str(ETCD_REPLY_TXN, 200, "{\"header\":{}}", &res));
	assert_false(res.succeeded);
	assert_int_equal(res.n_responses, 0);
	etcd_result_cleanup(&res);
}

static void test_parse_errors(void **state)
{
	EtcdResult res;

	parse_file(ETCD_REPLY_LEASE_KEEPALIVE, 404, "err_lease_not_found.json", &res);
	assert_false(res.ok);
	assert_int_equal(res.http_status, 404);
	assert_int_equal(res.grpc_code, ETCD_GRPC_NOT_FOUND);
	assert_string_equal(res.error, "etcdserver: requested lease not found");
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_RANGE, 401, "err_invalid_token.json", &res);
	assert_false(res.ok);
	assert_int_equal(res.grpc_code, ETCD_GRPC_UNAUTHENTICATED);
	assert_true(etcd_is_auth_error_text(res.error));
	etcd_result_cleanup(&res);

	/* not JSON, with and without an error status */
	etcd_result_init(&res);
	assert_false(parse_str(ETCD_REPLY_PUT, 502, "Bad Gateway", &res));
	assert_int_equal(res.http_status, 502);
	assert_string_equal(res.error, "etcd returned HTTP status 502");
	assert_false(parse_str(ETCD_REPLY_PUT, 200, "{\"header\"", &res));
	assert_non_null(strstr(res.error, "invalid JSON in etcd put reply"));
	assert_false(parse_str(ETCD_REPLY_PUT, 200, "[1]", &res));
	/* 401 with no code still means "authenticate again" */
	assert_false(parse_str(ETCD_REPLY_PUT, 401, "{}", &res));
	assert_int_equal(res.grpc_code, ETCD_GRPC_UNAUTHENTICATED);
	/* malformed fields */
	assert_false(parse_str(ETCD_REPLY_RANGE, 200, "{\"kvs\":[{\"key\":\"!!\"}]}", &res));
	assert_string_equal(res.error, "invalid etcd range reply");
	assert_false(parse_str(ETCD_REPLY_DELETERANGE, 200, "{\"deleted\":\"1x\"}", &res));
	assert_false(parse_str(ETCD_REPLY_AUTH, 200, "{\"token\":\"\"}", &res));
	/* an in-stream error object inside result */
	assert_false(parse_str(
	    ETCD_REPLY_LEASE_KEEPALIVE, 200,
	    "{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}", &res));
	assert_int_equal(res.grpc_code, ETCD_GRPC_UNAVAILABLE);
	assert_string_equal(res.error, "etcdserver: no leader");
	etcd_result_cleanup(&res);

	parse_file(ETCD_REPLY_AUTH, 200, "auth.json", &res);
	assert_true(res.ok);
	assert_string_equal(res.token, "KwvnpRABeLEZsFbv.50");
	etcd_result_cleanup(&res);
}

/*
 * Watch lines
 */

/* Return line number n (0-based) of the watch stream file. */
static char *watch_line(int n, size_t *len)
{
	size_t all;
	char *buf = read_data("watch_stream.txt", &all), *p = buf, *nl, *line;

	for (int i = 0; i < n; i++) {
		p = strchr(p, '\n');
		assert_non_null(p);
		p++;
	}
	nl = strchr(p, '\n');
	assert_non_null(nl);
	*len = (size_t)(nl - p);
	line = strndup(p, *len);
	free(buf);
	return line;
}

static void parse_watch(int n, EtcdWatchResponse *resp)
{
	size_t len;
	char err[128];
	char *line = watch_line(n, &len);

	assert_true(etcd_json_parse_watch_line(line, len, resp, err, sizeof(err)));
	free(line);
}

static bool watch_str(const char *line, EtcdWatchResponse *r, char err[128])
{
	return etcd_json_parse_watch_line(line, strlen(line), r, err, 128);
}

static void test_watch_lines(void **state)
{
	EtcdWatchResponse r;
	char err[128];

	parse_watch(0, &r);
	assert_true(r.created);
	assert_false(r.canceled);
	assert_int_equal(r.revision, 7);
	assert_int_equal(r.n_events, 0);
	etcd_watch_response_cleanup(&r);

	/* a PUT has no "type" */
	parse_watch(1, &r);
	assert_int_equal(r.n_events, 1);
	assert_int_equal(r.events[0].type, ETCD_EVENT_PUT);
	assert_string_equal(r.events[0].kv.key, LEADER);
	assert_string_equal(r.events[0].kv.value, "pg-test-1");
	assert_int_equal(r.events[0].kv.mod_revision, 8);
	assert_false(r.events[0].has_prev_kv);
	etcd_watch_response_cleanup(&r);

	parse_watch(2, &r);
	assert_int_equal(r.revision, 10);
	assert_int_equal(r.n_events, 1);
	assert_int_equal(r.events[0].type, ETCD_EVENT_DELETE);
	assert_string_equal(r.events[0].kv.key, LEADER);
	assert_string_equal(r.events[0].kv.value, "");
	assert_int_equal(r.events[0].kv.mod_revision, 10);
	assert_true(r.events[0].has_prev_kv);
	assert_string_equal(r.events[0].prev_kv.value, "pg-test-1");
	assert_int_equal(r.events[0].prev_kv.lease, LEASE);
	etcd_watch_response_cleanup(&r);

	/* progress notification */
	parse_watch(3, &r);
	assert_int_equal(r.revision, 12);
	assert_false(r.created || r.canceled);
	assert_int_equal(r.n_events, 0);
	etcd_watch_response_cleanup(&r);

	parse_watch(4, &r);
	assert_true(r.canceled);
	assert_int_equal(r.compact_revision, 5);
	assert_false(r.auth_failed);
	etcd_watch_response_cleanup(&r);

	parse_watch(5, &r);
	assert_true(r.canceled);
	assert_true(r.auth_failed);
	assert_int_equal(r.compact_revision, 0);
	assert_non_null(strstr(r.cancel_reason, "user name is empty"));
	etcd_watch_response_cleanup(&r);

	parse_watch(6, &r);
	assert_non_null(r.error);
	assert_int_equal(r.grpc_code, ETCD_GRPC_UNAUTHENTICATED);
	assert_true(r.auth_failed);
	etcd_watch_response_cleanup(&r);

	/* broken lines */
	assert_false(watch_str("{\"result\":", &r, err));
	assert_non_null(strstr(err, "invalid JSON"));
	assert_false(watch_str("{\"foo\":1}", &r, err));
	assert_false(
	    watch_str("{\"result\":{\"events\":[{\"type\":\"BOGUS\",\"kv\":{}}]}}", &r, err));
	assert_false(watch_str("{\"result\":{\"events\":[{\"kv\":{\"key\":\"*\"}}]}}", &r, err));
}

static void test_auth_text_and_names(void **state)
{
	assert_true(etcd_is_auth_error_text("etcdserver: invalid auth token"));
	assert_true(etcd_is_auth_error_text("etcdserver: revision of auth store is old"));
	assert_false(etcd_is_auth_error_text("etcdserver: permission denied"));
	assert_false(etcd_is_auth_error_text(NULL));
	assert_string_equal(etcd_compare_target_name(ETCD_CMP_MOD), "MOD");
	assert_string_equal(etcd_compare_result_name(ETCD_CMP_NOT_EQUAL), "NOT_EQUAL");
	assert_string_equal(etcd_event_type_name(ETCD_EVENT_DELETE), "DELETE");
	assert_string_equal(etcd_op_type_name(ETCD_OP_DELETE), "delete");
	assert_string_equal(etcd_reply_kind_name(ETCD_REPLY_TXN), "txn");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bodies_lease),        cmocka_unit_test(test_bodies_kv),
	    cmocka_unit_test(test_bodies_watch),        cmocka_unit_test(test_bodies_txn),
	    cmocka_unit_test(test_txn_builder_errors),  cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_prefix_range_end),    cmocka_unit_test(test_parse_lease),
	    cmocka_unit_test(test_parse_range),         cmocka_unit_test(test_parse_txn),
	    cmocka_unit_test(test_parse_errors),        cmocka_unit_test(test_watch_lines),
	    cmocka_unit_test(test_auth_text_and_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
