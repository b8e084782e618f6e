/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * JSON bodies for etcd's v3 gateway and the parsers of its replies, on top of jansson. Every
 * reader treats a missing field as its proto3 default (0, false, empty) because the gateway omits
 * defaults, and accepts int64 both as a JSON string (what etcd sends) and as a number.
 */
#include "ha/etcd_json.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

struct EtcdTxn {
	json_t *compare;
	json_t *success;
	json_t *failure;
	bool failed;
};

const char *etcd_op_type_name(EtcdOpType t)
{
	switch (t) {
	case ETCD_OP_RANGE:
		return "range";
	case ETCD_OP_PUT:
		return "put";
	case ETCD_OP_DELETE:
		return "delete";
	}
	return "unknown";
}

const char *etcd_event_type_name(EtcdEventType t)
{
	switch (t) {
	case ETCD_EVENT_PUT:
		return "PUT";
	case ETCD_EVENT_DELETE:
		return "DELETE";
	}
	return "unknown";
}

const char *etcd_compare_target_name(EtcdCompareTarget t)
{
	switch (t) {
	case ETCD_CMP_VALUE:
		return "VALUE";
	case ETCD_CMP_LEASE:
		return "LEASE";
	case ETCD_CMP_CREATE:
		return "CREATE";
	case ETCD_CMP_MOD:
		return "MOD";
	case ETCD_CMP_VERSION:
		return "VERSION";
	}
	return "unknown";
}

const char *etcd_compare_result_name(EtcdCompareResult r)
{
	switch (r) {
	case ETCD_CMP_EQUAL:
		return "EQUAL";
	case ETCD_CMP_NOT_EQUAL:
		return "NOT_EQUAL";
	case ETCD_CMP_GREATER:
		return "GREATER";
	case ETCD_CMP_LESS:
		return "LESS";
	}
	return "unknown";
}

const char *etcd_reply_kind_name(EtcdReplyKind k)
{
	switch (k) {
	case ETCD_REPLY_AUTH:
		return "authenticate";
	case ETCD_REPLY_LEASE_GRANT:
		return "lease grant";
	case ETCD_REPLY_LEASE_KEEPALIVE:
		return "lease keepalive";
	case ETCD_REPLY_LEASE_REVOKE:
		return "lease revoke";
	case ETCD_REPLY_LEASE_TIMETOLIVE:
		return "lease timetolive";
	case ETCD_REPLY_RANGE:
		return "range";
	case ETCD_REPLY_PUT:
		return "put";
	case ETCD_REPLY_DELETERANGE:
		return "deleterange";
	case ETCD_REPLY_TXN:
		return "txn";
	}
	return "unknown";
}

/*
 * Base64 and key ranges
 */

char *etcd_b64_encode(const void *data, size_t len)
{
	char *out;

	if (len > INT_MAX / 2)
		return NULL;
	out = malloc(4 * ((len + 2) / 3) + 1);
	if (!out)
		return NULL;
	/* EVP_EncodeBlock writes the padded encoding plus a NUL and never inserts newlines. */
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static bool is_b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

char *etcd_b64_decode(const char *b64, size_t *out_len)
{
	size_t len = strlen(b64);
	size_t padded, pad = 0, i;
	char *norm, *out;
	int n;

	if (len > INT_MAX / 2)
		return NULL;
	/* The gateway emits padded standard base64; accept URL-safe and unpadded forms too. */
	norm = malloc(len + 4);
	if (!norm)
		return NULL;
	for (i = 0; i < len; i++) {
		char c = b64[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		norm[i] = c;
	}
	while (len > 0 && norm[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	for (i = 0; i < len; i++) {
		if (!is_b64_char(norm[i])) {
			free(norm);
			return NULL;
		}
	}
	/* A single character left over cannot encode a byte; given padding must match. */
	if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0)) {
		free(norm);
		return NULL;
	}
	pad = (4 - len % 4) % 4;
	padded = len + pad;
	for (i = len; i < padded; i++)
		norm[i] = '=';
	norm[padded] = '\0';

	out = malloc(padded / 4 * 3 + 1);
	if (!out) {
		free(norm);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes: take them off again. */
	n = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)norm, (int)padded);
	free(norm);
	if (n < 0 || (size_t)n < pad) {
		free(out);
		return NULL;
	}
	*out_len = (size_t)n - pad;
	out[*out_len] = '\0';
	return out;
}

void etcd_prefix_range_end(const uint8_t *key, size_t key_len, uint8_t *out, size_t *out_len)
{
	size_t n = key_len;

	while (n > 0 && key[n - 1] == 0xff)
		n--;
	if (n == 0) {
		out[0] = 0;
		*out_len = 1;
		return;
	}
	memcpy(out, key, n);
	out[n - 1]++;
	*out_len = n;
}

/*
 * Building
 */

/* Set o[name] = v (stealing v). A NULL v or o marks *ok false; jansson drops v on failure. */
static void set_new(json_t *o, const char *name, json_t *v, bool *ok)
{
	if (!v || json_object_set_new(o, name, v) != 0)
		*ok = false;
}

static json_t *json_b64(const void *data, size_t len)
{
	char *s = etcd_b64_encode(data, len);
	json_t *v;

	if (!s)
		return NULL;
	v = json_string(s);
	free(s);
	return v;
}

/* int64 as a JSON string: the gateway's own convention, immune to double rounding. */
static json_t *json_i64(int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return json_string(buf);
}

/* key, and range_end when prefix: the common head of range, deleterange and watch requests. */
static void set_key_range(json_t *o, const char *key, bool prefix, bool *ok)
{
	size_t klen = strlen(key);

	set_new(o, "key", json_b64(key, klen), ok);
	if (prefix) {
		uint8_t *end = malloc(klen ? klen : 1);
		size_t elen;

		if (!end) {
			*ok = false;
			return;
		}
		etcd_prefix_range_end((const uint8_t *)key, klen, end, &elen);
		set_new(o, "range_end", json_b64(end, elen), ok);
		free(end);
	}
}

/* Serialise and release o; NULL when building failed. */
static char *finish(json_t *o, bool ok)
{
	char *s = NULL;

	if (o && ok)
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

char *etcd_json_authenticate(const char *name, const char *password)
{
	json_t *o = json_object();
	bool ok = true;

	set_new(o, "name", json_string(name), &ok);
	set_new(o, "password", json_string(password), &ok);
	return finish(o, ok);
}

char *etcd_json_lease_grant(int64_t ttl_s)
{
	json_t *o = json_object();
	bool ok = true;

	set_new(o, "TTL", json_i64(ttl_s), &ok);
	return finish(o, ok);
}

char *etcd_json_lease_id(int64_t lease_id)
{
	json_t *o = json_object();
	bool ok = true;

	set_new(o, "ID", json_i64(lease_id), &ok);
	return finish(o, ok);
}

char *etcd_json_lease_timetolive(int64_t lease_id, bool keys)
{
	json_t *o = json_object();
	bool ok = true;

	set_new(o, "ID", json_i64(lease_id), &ok);
	if (keys)
		set_new(o, "keys", json_true(), &ok);
	return finish(o, ok);
}

char *etcd_json_range(const char *key, bool prefix, int64_t limit, bool count_only)
{
	json_t *o = json_object();
	bool ok = true;

	set_key_range(o, key, prefix, &ok);
	if (limit > 0)
		set_new(o, "limit", json_i64(limit), &ok);
	if (count_only)
		set_new(o, "count_only", json_true(), &ok);
	return finish(o, ok);
}

static json_t *put_object(const char *key, const char *value, int64_t lease)
{
	json_t *o = json_object();
	bool ok = true;

	set_new(o, "key", json_b64(key, strlen(key)), &ok);
	set_new(o, "value", json_b64(value, strlen(value)), &ok);
	if (lease != 0)
		set_new(o, "lease", json_i64(lease), &ok);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

char *etcd_json_put(const char *key, const char *value, int64_t lease)
{
	json_t *o = put_object(key, value, lease);

	return finish(o, o != NULL);
}

char *etcd_json_deleterange(const char *key, bool prefix)
{
	json_t *o = json_object();
	bool ok = true;

	set_key_range(o, key, prefix, &ok);
	return finish(o, ok);
}

char *etcd_json_watch_create(const char *key, bool prefix, int64_t start_revision, bool prev_kv,
			     bool progress_notify)
{
	json_t *o = json_object(), *cr = json_object();
	bool ok = true;

	set_key_range(cr, key, prefix, &ok);
	if (start_revision > 0)
		set_new(cr, "start_revision", json_i64(start_revision), &ok);
	if (prev_kv)
		set_new(cr, "prev_kv", json_true(), &ok);
	if (progress_notify)
		set_new(cr, "progress_notify", json_true(), &ok);
	set_new(o, "create_request", cr, &ok);
	return finish(o, ok);
}

/*
 * Transactions
 */

EtcdTxn *etcd_txn_new(void)
{
	EtcdTxn *txn = calloc(1, sizeof(*txn));

	if (!txn)
		return NULL;
	txn->compare = json_array();
	txn->success = json_array();
	txn->failure = json_array();
	if (!txn->compare || !txn->success || !txn->failure)
		txn->failed = true;
	return txn;
}

void etcd_txn_free(EtcdTxn *txn)
{
	if (!txn)
		return;
	json_decref(txn->compare);
	json_decref(txn->success);
	json_decref(txn->failure);
	free(txn);
}

static void txn_append(EtcdTxn *txn, json_t *arr, json_t *item)
{
	if (!item || json_array_append_new(arr, item) != 0)
		txn->failed = true;
}

static json_t *compare_head(const char *key, EtcdCompareTarget target, EtcdCompareResult result,
			    bool *ok)
{
	json_t *c = json_object();

	set_new(c, "key", json_b64(key, strlen(key)), ok);
	set_new(c, "target", json_string(etcd_compare_target_name(target)), ok);
	set_new(c, "result", json_string(etcd_compare_result_name(result)), ok);
	return c;
}

void etcd_txn_compare_value(EtcdTxn *txn, const char *key, EtcdCompareResult result,
			    const char *value)
{
	bool ok = true;
	json_t *c = compare_head(key, ETCD_CMP_VALUE, result, &ok);

	set_new(c, "value", json_b64(value, strlen(value)), &ok);
	if (!ok) {
		json_decref(c);
		c = NULL;
	}
	txn_append(txn, txn->compare, c);
}

void etcd_txn_compare_int(EtcdTxn *txn, const char *key, EtcdCompareTarget target,
			  EtcdCompareResult result, int64_t v)
{
	const char *field;
	json_t *c;
	bool ok = true;

	switch (target) {
	case ETCD_CMP_LEASE:
		field = "lease";
		break;
	case ETCD_CMP_CREATE:
		field = "create_revision";
		break;
	case ETCD_CMP_MOD:
		field = "mod_revision";
		break;
	case ETCD_CMP_VERSION:
		field = "version";
		break;
	default:
		/* VALUE is not an integer target */
		txn->failed = true;
		return;
	}
	c = compare_head(key, target, result, &ok);
	set_new(c, field, json_i64(v), &ok);
	if (!ok) {
		json_decref(c);
		c = NULL;
	}
	txn_append(txn, txn->compare, c);
}

/* Wrap op as {name: op} and append it to the chosen branch. */
static void txn_op(EtcdTxn *txn, bool on_success, const char *name, json_t *op)
{
	json_t *w = json_object();
	bool ok = true;

	set_new(w, name, op, &ok);
	if (!ok) {
		json_decref(w);
		w = NULL;
	}
	txn_append(txn, on_success ? txn->success : txn->failure, w);
}

void etcd_txn_put(EtcdTxn *txn, bool on_success, const char *key, const char *value, int64_t lease)
{
	txn_op(txn, on_success, "request_put", put_object(key, value, lease));
}

void etcd_txn_delete(EtcdTxn *txn, bool on_success, const char *key, bool prefix)
{
	json_t *o = json_object();
	bool ok = true;

	set_key_range(o, key, prefix, &ok);
	if (!ok) {
		json_decref(o);
		o = NULL;
	}
	txn_op(txn, on_success, "request_delete_range", o);
}

void etcd_txn_range(EtcdTxn *txn, bool on_success, const char *key, bool prefix)
{
	json_t *o = json_object();
	bool ok = true;

	set_key_range(o, key, prefix, &ok);
	if (!ok) {
		json_decref(o);
		o = NULL;
	}
	txn_op(txn, on_success, "request_range", o);
}

char *etcd_txn_body(const EtcdTxn *txn)
{
	json_t *o;
	bool ok = true;

	if (!txn || txn->failed)
		return NULL;
	o = json_object();
	/* Empty branches are left out, as the gateway itself would do. */
	if (json_array_size(txn->compare) > 0)
		set_new(o, "compare", json_incref(txn->compare), &ok);
	if (json_array_size(txn->success) > 0)
		set_new(o, "success", json_incref(txn->success), &ok);
	if (json_array_size(txn->failure) > 0)
		set_new(o, "failure", json_incref(txn->failure), &ok);
	return finish(o, ok);
}

/*
 * Parsing
 */

void etcd_result_init(EtcdResult *res)
{
	memset(res, 0, sizeof(*res));
}

void etcd_kv_cleanup(EtcdKeyValue *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

static void free_kvs(EtcdKeyValue *kvs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		etcd_kv_cleanup(&kvs[i]);
	free(kvs);
}

void etcd_result_cleanup(EtcdResult *res)
{
	free_kvs(res->kvs, res->n_kvs);
	for (size_t i = 0; i < res->n_responses; i++)
		free_kvs(res->responses[i].kvs, res->responses[i].n_kvs);
	free(res->responses);
	free(res->token);
	etcd_result_init(res);
}

bool etcd_result_fail(EtcdResult *res, int grpc_code, const char *fmt, ...)
{
	va_list ap;

	res->ok = false;
	res->grpc_code = grpc_code;
	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
	return false;
}

/* o[name] as int64: missing or null is 0; strings and integers are accepted. */
static bool get_i64(json_t *o, const char *name, int64_t *out)
{
	json_t *v = json_object_get(o, name);
	const char *s;
	char *end;
	long long n;

	*out = 0;
	if (!v || json_is_null(v))
		return true;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return true;
	}
	if (!json_is_string(v))
		return false;
	s = json_string_value(v);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return false;
	*out = n;
	return true;
}

static bool get_bool(json_t *o, const char *name)
{
	return json_is_true(json_object_get(o, name));
}

/* o[name] decoded from base64 into a NUL-terminated buffer; missing means empty. */
static bool get_bytes(json_t *o, const char *name, char **out, size_t *out_len)
{
	json_t *v = json_object_get(o, name);

	*out = NULL;
	*out_len = 0;
	if (!v || json_is_null(v)) {
		*out = strdup("");
		return *out != NULL;
	}
	if (!json_is_string(v))
		return false;
	*out = etcd_b64_decode(json_string_value(v), out_len);
	return *out != NULL;
}

static bool parse_kv(json_t *o, EtcdKeyValue *kv)
{
	memset(kv, 0, sizeof(*kv));
	if (!json_is_object(o))
		return false;
	if (!get_bytes(o, "key", &kv->key, &kv->key_len) ||
	    !get_bytes(o, "value", &kv->value, &kv->value_len) ||
	    !get_i64(o, "create_revision", &kv->create_revision) ||
	    !get_i64(o, "mod_revision", &kv->mod_revision) ||
	    !get_i64(o, "version", &kv->version) || !get_i64(o, "lease", &kv->lease)) {
		etcd_kv_cleanup(kv);
		return false;
	}
	return true;
}

/* o["kvs"] (missing = none) into a fresh array. */
/*
 * An optional array field: etcd omits fields at their default, so a missing or null <key> is an
 * empty array. False when the field is there but is not an array; *n = 0 when it is empty.
 */
static bool get_array(json_t *o, const char *key, json_t **arr, size_t *n)
{
	*arr = json_object_get(o, key);
	*n = 0;
	if (!*arr || json_is_null(*arr))
		return true;
	if (!json_is_array(*arr))
		return false;
	*n = json_array_size(*arr);
	return true;
}

static bool parse_kvs(json_t *o, EtcdKeyValue **out, size_t *n_out)
{
	json_t *arr;
	EtcdKeyValue *kvs;
	size_t n;

	*out = NULL;
	*n_out = 0;
	if (!get_array(o, "kvs", &arr, &n))
		return false;
	if (n == 0)
		return true;
	kvs = calloc(n, sizeof(*kvs));
	if (!kvs)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!parse_kv(json_array_get(arr, i), &kvs[i])) {
			free_kvs(kvs, i);
			return false;
		}
	}
	*out = kvs;
	*n_out = n;
	return true;
}

static bool get_header_revision(json_t *o, int64_t *rev)
{
	json_t *h = json_object_get(o, "header");

	*rev = 0;
	if (!h || json_is_null(h))
		return true;
	if (!json_is_object(h))
		return false;
	return get_i64(h, "revision", rev);
}

bool etcd_is_auth_error_text(const char *msg)
{
	static const char *const needles[] = {
	    "invalid auth token",
	    "user name is empty",
	    "revision of auth store is old",
	    "auth token is expired",
	};

	if (!msg)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(needles); i++) {
		if (strstr(msg, needles[i]))
			return true;
	}
	return false;
}

/*
 * Error replies come in two shapes: unary calls give {"error":"..","message":"..","code":N},
 * streaming ones {"error":{"grpc_code":N,"http_code":M,"message":".."}}. Returns false when o is
 * not an error reply.
 */
static bool parse_error_object(json_t *o, int *code, const char **msg)
{
	json_t *e = json_object_get(o, "error");
	json_t *c = json_object_get(o, "code");
	int64_t n = 0;

	*code = 0;
	*msg = NULL;
	if (json_is_object(e)) {
		if (get_i64(e, "grpc_code", &n))
			*code = (int)n;
		*msg = json_string_value(json_object_get(e, "message"));
		return true;
	}
	/* An empty "error" string is the proto default (LeaseGrantResponse carries one). */
	if (json_is_string(e) && json_string_length(e) == 0 && !c)
		return false;
	if (!e && !c)
		return false;
	if (get_i64(o, "code", &n))
		*code = (int)n;
	*msg = json_string_value(json_object_get(o, "message"));
	if (!*msg || !**msg)
		*msg = json_string_value(e);
	return true;
}

static bool parse_txn_responses(json_t *o, EtcdResult *res)
{
	json_t *arr;
	size_t n;

	if (!get_array(o, "responses", &arr, &n))
		return false;
	if (n == 0)
		return true;
	res->responses = calloc(n, sizeof(*res->responses));
	if (!res->responses)
		return false;
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(arr, i), *r;
		EtcdOpResponse *op = &res->responses[i];

		res->n_responses = i + 1;
		if ((r = json_object_get(item, "response_range")) != NULL) {
			op->type = ETCD_OP_RANGE;
			if (!parse_kvs(r, &op->kvs, &op->n_kvs) || !get_i64(r, "count", &op->count))
				return false;
		} else if ((r = json_object_get(item, "response_put")) != NULL) {
			op->type = ETCD_OP_PUT;
		} else if ((r = json_object_get(item, "response_delete_range")) != NULL) {
			op->type = ETCD_OP_DELETE;
			if (!get_i64(r, "deleted", &op->deleted))
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* The kind-specific part of a successful reply. */
static bool parse_payload(EtcdReplyKind kind, json_t *o, EtcdResult *res)
{
	json_t *keys;

	switch (kind) {
	case ETCD_REPLY_AUTH: {
		const char *t = json_string_value(json_object_get(o, "token"));
		if (!t || !*t)
			return false;
		res->token = strdup(t);
		return res->token != NULL;
	}
	case ETCD_REPLY_LEASE_GRANT:
		return get_i64(o, "ID", &res->lease_id) && get_i64(o, "TTL", &res->ttl) &&
		       res->lease_id != 0;
	case ETCD_REPLY_LEASE_KEEPALIVE:
		return get_i64(o, "ID", &res->lease_id) && get_i64(o, "TTL", &res->ttl);
	case ETCD_REPLY_LEASE_REVOKE:
	case ETCD_REPLY_PUT:
		return true;
	case ETCD_REPLY_LEASE_TIMETOLIVE:
		if (!get_i64(o, "ID", &res->lease_id) || !get_i64(o, "TTL", &res->ttl) ||
		    !get_i64(o, "grantedTTL", &res->granted_ttl))
			return false;
		keys = json_object_get(o, "keys");
		if (!keys || json_is_null(keys))
			return true;
		if (!json_is_array(keys))
			return false;
		if (json_array_size(keys) == 0)
			return true;
		res->kvs = calloc(json_array_size(keys), sizeof(*res->kvs));
		if (!res->kvs)
			return false;
		for (size_t i = 0; i < json_array_size(keys); i++) {
			json_t *k = json_array_get(keys, i);
			EtcdKeyValue *kv = &res->kvs[i];

			if (!json_is_string(k))
				return false;
			kv->key = etcd_b64_decode(json_string_value(k), &kv->key_len);
			kv->value = strdup("");
			res->n_kvs = i + 1;
			if (!kv->key || !kv->value)
				return false;
		}
		return true;
	case ETCD_REPLY_RANGE:
		res->more = get_bool(o, "more");
		return parse_kvs(o, &res->kvs, &res->n_kvs) && get_i64(o, "count", &res->count);
	case ETCD_REPLY_DELETERANGE:
		return get_i64(o, "deleted", &res->deleted);
	case ETCD_REPLY_TXN:
		res->succeeded = get_bool(o, "succeeded");
		return parse_txn_responses(o, res);
	}
	return false;
}

bool etcd_json_parse_reply(EtcdReplyKind kind, long http_status, const char *body, size_t len,
			   EtcdResult *res)
{
	json_error_t jerr;
	json_t *root, *o;
	const char *msg;
	int code;
	bool http_ok = http_status >= 200 && http_status < 300;

	etcd_result_cleanup(res);
	res->http_status = http_status;
	root = json_loadb(body, len, 0, &jerr);
	if (!root || !json_is_object(root)) {
		json_decref(root);
		if (!http_ok)
			return etcd_result_fail(res, 0, "etcd returned HTTP status %ld",
						http_status);
		return etcd_result_fail(res, 0, "invalid JSON in etcd %s reply: %s",
					etcd_reply_kind_name(kind),
					root ? "not an object" : jerr.text);
	}
	if (parse_error_object(root, &code, &msg) || !http_ok) {
		if (!msg || !*msg)
			etcd_result_fail(res, code, "etcd returned HTTP status %ld", http_status);
		else
			etcd_result_fail(res, code, "%s", msg);
		if (code == 0 && http_status == 401)
			res->grpc_code = ETCD_GRPC_UNAUTHENTICATED;
		json_decref(root);
		return false;
	}
	/* Streaming RPCs (keepalive) wrap each message in "result", which may hold an error. */
	o = root;
	if (json_is_object(json_object_get(root, "result")))
		o = json_object_get(root, "result");
	if (o != root && parse_error_object(o, &code, &msg)) {
		etcd_result_fail(res, code, "%s", msg ? msg : "etcd returned an error");
		json_decref(root);
		return false;
	}
	if (!get_header_revision(o, &res->revision) || !parse_payload(kind, o, res)) {
		etcd_result_cleanup(res);
		res->http_status = http_status;
		json_decref(root);
		return etcd_result_fail(res, 0, "invalid etcd %s reply",
					etcd_reply_kind_name(kind));
	}
	json_decref(root);
	if (kind == ETCD_REPLY_LEASE_KEEPALIVE && res->ttl <= 0) {
		/* A dead lease answers with its ID and no TTL. */
		res->ttl = 0;
		return etcd_result_fail(res, ETCD_GRPC_NOT_FOUND,
					"lease %" PRId64 " has expired or was revoked",
					res->lease_id);
	}
	res->ok = true;
	return true;
}

/*
 * Watch stream
 */

void etcd_watch_response_cleanup(EtcdWatchResponse *resp)
{
	for (size_t i = 0; i < resp->n_events; i++) {
		etcd_kv_cleanup(&resp->events[i].kv);
		etcd_kv_cleanup(&resp->events[i].prev_kv);
	}
	free(resp->events);
	free(resp->cancel_reason);
	free(resp->error);
	memset(resp, 0, sizeof(*resp));
}

static bool parse_events(json_t *r, EtcdWatchResponse *resp)
{
	json_t *arr;
	size_t n;

	if (!get_array(r, "events", &arr, &n))
		return false;
	if (n == 0)
		return true;
	resp->events = calloc(n, sizeof(*resp->events));
	if (!resp->events)
		return false;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(arr, i), *prev;
		EtcdEvent *ev = &resp->events[i];
		const char *type = json_string_value(json_object_get(e, "type"));

		if (!json_is_object(e))
			return false;
		if (!type || strcmp(type, "PUT") == 0)
			ev->type = ETCD_EVENT_PUT;
		else if (strcmp(type, "DELETE") == 0)
			ev->type = ETCD_EVENT_DELETE;
		else
			return false;
		resp->n_events = i + 1;
		if (!parse_kv(json_object_get(e, "kv"), &ev->kv))
			return false;
		prev = json_object_get(e, "prev_kv");
		if (prev && !json_is_null(prev)) {
			if (!parse_kv(prev, &ev->prev_kv))
				return false;
			ev->has_prev_kv = true;
		}
	}
	return true;
}

bool etcd_json_parse_watch_line(const char *line, size_t len, EtcdWatchResponse *resp, char *err,
				size_t errlen)
{
	json_error_t jerr;
	json_t *root, *r;
	const char *msg, *reason;
	int code;

	memset(resp, 0, sizeof(*resp));
	root = json_loadb(line, len, 0, &jerr);
	if (!root || !json_is_object(root)) {
		snprintf(err, errlen, "invalid JSON in etcd watch stream: %s",
			 root ? "not an object" : jerr.text);
		json_decref(root);
		return false;
	}
	r = json_object_get(root, "result");
	if (!json_is_object(r)) {
		if (!parse_error_object(root, &code, &msg)) {
			snprintf(err, errlen, "unexpected message in etcd watch stream");
			json_decref(root);
			return false;
		}
		resp->grpc_code = code;
		resp->error = strdup(msg ? msg : "etcd watch failed");
		resp->auth_failed =
		    code == ETCD_GRPC_UNAUTHENTICATED || etcd_is_auth_error_text(msg);
		json_decref(root);
		if (!resp->error) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		return true;
	}
	if (!get_header_revision(r, &resp->revision) || !get_i64(r, "watch_id", &resp->watch_id) ||
	    !get_i64(r, "compact_revision", &resp->compact_revision) || !parse_events(r, resp)) {
		etcd_watch_response_cleanup(resp);
		json_decref(root);
		snprintf(err, errlen, "invalid etcd watch response");
		return false;
	}
	resp->created = get_bool(r, "created");
	resp->canceled = get_bool(r, "canceled");
	reason = json_string_value(json_object_get(r, "cancel_reason"));
	if (reason && *reason) {
		resp->cancel_reason = strdup(reason);
		if (!resp->cancel_reason) {
			etcd_watch_response_cleanup(resp);
			json_decref(root);
			snprintf(err, errlen, "out of memory");
			return false;
		}
	}
	resp->auth_failed = resp->canceled && etcd_is_auth_error_text(reason);
	json_decref(root);
	return true;
}
