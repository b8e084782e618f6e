/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The pure half of the etcd v3 client: building JSON request bodies for etcd's gRPC gateway and
 * parsing its replies into C structs. No I/O and no event loop, so every function here is unit
 * tested on literal bytes. Gateway conventions (see shared notes): keys and values are standard
 * base64, int64 fields travel as strings, and a field at its default value is omitted.
 */
#ifndef PGPILOT_HA_ETCD_JSON_H
#define PGPILOT_HA_ETCD_JSON_H

#include "protocol/bytes.h"

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes that the client acts on. */
#define ETCD_GRPC_OK 0
#define ETCD_GRPC_CANCELLED 1
#define ETCD_GRPC_INVALID_ARGUMENT 3
#define ETCD_GRPC_NOT_FOUND 5
#define ETCD_GRPC_PERMISSION_DENIED 7
#define ETCD_GRPC_FAILED_PRECONDITION 9
#define ETCD_GRPC_UNAVAILABLE 14
#define ETCD_GRPC_UNAUTHENTICATED 16

/* One key-value pair. key and value are decoded from base64 and always NUL-terminated (the
 * terminator is not counted in the length), so text keys can be used as C strings. */
typedef struct EtcdKeyValue {
	char *key;
	size_t key_len;
	char *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
} EtcdKeyValue;

/* Operation kinds inside a txn. */
typedef enum EtcdOpType {
	ETCD_OP_RANGE,  /* request_range / response_range */
	ETCD_OP_PUT,    /* request_put / response_put */
	ETCD_OP_DELETE, /* request_delete_range / response_delete_range */
} EtcdOpType;

/* The reply of one txn operation. */
typedef struct EtcdOpResponse {
	EtcdOpType type;
	EtcdKeyValue *kvs; /* range only */
	size_t n_kvs;
	int64_t count;   /* range only */
	int64_t deleted; /* delete only */
} EtcdOpResponse;

/*
 * Outcome of one request. Which payload fields are set depends on the call:
 *   lease grant/keepalive: lease_id, ttl; timetolive: lease_id, ttl, granted_ttl, and kvs with
 *   only key set (the keys attached to the lease); range: kvs, count, more; deleterange: deleted;
 *   txn: succeeded, responses; authenticate: token.
 * ok is false on any failure (transport, HTTP, gRPC error, bad reply); error then says why.
 * A txn whose compares failed is ok with succeeded = false. A keepalive on a dead lease is not
 * ok: grpc_code = ETCD_GRPC_NOT_FOUND and ttl = 0.
 * unreachable is set when no endpoint answered at all (connect failure, timeout, a transfer
 * cut short): the client logs etcd's reachability itself (once per change, then a summary at
 * intervals), so a caller may log such a failure at debug level only.
 */
typedef struct EtcdResult {
	bool ok;
	bool unreachable;
	char error[256];
	long http_status; /* 0 when no HTTP reply arrived */
	int grpc_code;    /* ETCD_GRPC_*, 0 when none */
	int64_t revision; /* header.revision, 0 when absent */

	int64_t lease_id;
	int64_t ttl;
	int64_t granted_ttl;
	EtcdKeyValue *kvs;
	size_t n_kvs;
	int64_t count;
	bool more;
	int64_t deleted;
	bool succeeded;
	EtcdOpResponse *responses;
	size_t n_responses;
	char *token;
} EtcdResult;

/* Watch events. */
typedef enum EtcdEventType {
	ETCD_EVENT_PUT, /* "type" omitted: PUT is the default */
	ETCD_EVENT_DELETE,
} EtcdEventType;

typedef struct EtcdEvent {
	EtcdEventType type;
	EtcdKeyValue kv;
	bool has_prev_kv;
	EtcdKeyValue prev_kv;
} EtcdEvent;

/* One line of the watch stream. error/grpc_code are set for an in-stream gateway error. */
typedef struct EtcdWatchResponse {
	int64_t revision;
	int64_t watch_id;
	bool created;
	bool canceled;
	int64_t compact_revision;
	bool auth_failed; /* canceled (or errored) because of a missing/invalid token */
	char *cancel_reason;
	EtcdEvent *events;
	size_t n_events;
	int grpc_code;
	char *error;
} EtcdWatchResponse;

/* Compare targets and results of a txn. */
typedef enum EtcdCompareTarget {
	ETCD_CMP_VALUE,
	ETCD_CMP_LEASE,
	ETCD_CMP_CREATE,
	ETCD_CMP_MOD,
	ETCD_CMP_VERSION,
} EtcdCompareTarget;

typedef enum EtcdCompareResult {
	ETCD_CMP_EQUAL,
	ETCD_CMP_NOT_EQUAL,
	ETCD_CMP_GREATER,
	ETCD_CMP_LESS,
} EtcdCompareResult;

const char *etcd_op_type_name(EtcdOpType t);
const char *etcd_event_type_name(EtcdEventType t);
const char *etcd_compare_target_name(EtcdCompareTarget t);
const char *etcd_compare_result_name(EtcdCompareResult r);

/*
 * Transaction builder. Operations accumulate; an allocation failure or bad argument is sticky
 * (etcd_txn_body() then returns NULL), so callers check once at the end, like PktBuf.
 * Keys and values are NUL-terminated strings.
 */
typedef struct EtcdTxn EtcdTxn;

EtcdTxn *etcd_txn_new(void);
void etcd_txn_free(EtcdTxn *txn);
/* Compare the value of key with value (target VALUE). */
void etcd_txn_compare_value(EtcdTxn *txn, const char *key, EtcdCompareResult result,
			    const char *value);
/* Compare an integer target (LEASE, CREATE, MOD, VERSION) of key with v. A missing key has
 * create_revision 0, which makes CREATE EQUAL 0 the "absent" test. */
void etcd_txn_compare_int(EtcdTxn *txn, const char *key, EtcdCompareTarget target,
			  EtcdCompareResult result, int64_t v);
/* Operations, added to the success branch when on_success is true, else to failure. lease 0
 * means no lease; prefix makes the operation cover every key starting with key. */
void etcd_txn_put(EtcdTxn *txn, bool on_success, const char *key, const char *value, int64_t lease);
void etcd_txn_delete(EtcdTxn *txn, bool on_success, const char *key, bool prefix);
void etcd_txn_range(EtcdTxn *txn, bool on_success, const char *key, bool prefix);
/* The JSON body for /v3/kv/txn, malloc'd (caller frees), or NULL when the builder failed. */
char *etcd_txn_body(const EtcdTxn *txn) _MUSTCHECK;

/*
 * Base64 (standard alphabet, padded). etcd_b64_encode returns a malloc'd NUL-terminated string.
 * etcd_b64_decode accepts padded or unpadded input and the URL-safe alphabet; the output is
 * malloc'd with a NUL after the data, *out_len excludes it. Both return NULL on failure
 * (invalid input or out of memory).
 */
char *etcd_b64_encode(const void *data, size_t len) _MUSTCHECK;
char *etcd_b64_decode(const char *b64, size_t *out_len) _MUSTCHECK;

/*
 * The range_end that makes [key, range_end) cover every key with prefix key: the key with its
 * last byte incremented, dropping trailing 0xff bytes first (they carry). A key of only 0xff
 * bytes, or an empty key, has no upper bound: the result is the single byte "\0", which etcd
 * reads as "every key >= key". Writes at most key_len bytes (at least 1) into out, sets *out_len.
 */
void etcd_prefix_range_end(const uint8_t *key, size_t key_len, uint8_t *out, size_t *out_len);

/* Request bodies; all malloc'd, NULL when out of memory. */
char *etcd_json_authenticate(const char *name, const char *password) _MUSTCHECK;
char *etcd_json_lease_grant(int64_t ttl_s) _MUSTCHECK;
/* Body for keepalive and revoke: {"ID":"n"}. */
char *etcd_json_lease_id(int64_t lease_id) _MUSTCHECK;
char *etcd_json_lease_timetolive(int64_t lease_id, bool keys) _MUSTCHECK;
/* limit 0 means no limit; count_only asks for count and header only. */
char *etcd_json_range(const char *key, bool prefix, int64_t limit, bool count_only) _MUSTCHECK;
char *etcd_json_put(const char *key, const char *value, int64_t lease) _MUSTCHECK;
char *etcd_json_deleterange(const char *key, bool prefix) _MUSTCHECK;
/* Watch create_request; start_revision 0 means "from now". */
char *etcd_json_watch_create(const char *key, bool prefix, int64_t start_revision, bool prev_kv,
			     bool progress_notify) _MUSTCHECK;

/* Which reply shape to expect when parsing a response body. */
typedef enum EtcdReplyKind {
	ETCD_REPLY_AUTH,
	ETCD_REPLY_LEASE_GRANT,
	ETCD_REPLY_LEASE_KEEPALIVE,
	ETCD_REPLY_LEASE_REVOKE,
	ETCD_REPLY_LEASE_TIMETOLIVE,
	ETCD_REPLY_RANGE,
	ETCD_REPLY_PUT,
	ETCD_REPLY_DELETERANGE,
	ETCD_REPLY_TXN,
} EtcdReplyKind;

const char *etcd_reply_kind_name(EtcdReplyKind k);

/*
 * Parse a complete unary reply (body of len bytes, HTTP status http_status) into res, which is
 * first reset. A non-2xx status or a body carrying "error"/"code" yields ok = false with the
 * gRPC code and message. Returns res->ok. Free res with etcd_result_cleanup().
 */
bool etcd_json_parse_reply(EtcdReplyKind kind, long http_status, const char *body, size_t len,
			   EtcdResult *res);

/* Zero a result (no allocation). */
void etcd_result_init(EtcdResult *res);
/* Free what a result owns and zero it. */
void etcd_result_cleanup(EtcdResult *res);
/* Set ok = false and a formatted error message; returns false. */
bool etcd_result_fail(EtcdResult *res, int grpc_code, const char *fmt, ...) _PRINTF(3, 4);

/*
 * Parse one line of the watch stream ({"result":{...}} or {"error":{...}}) into resp, which is
 * first reset. Returns false and fills err on malformed JSON; an in-stream error object is not a
 * parse failure (resp->error is set). Free with etcd_watch_response_cleanup().
 */
bool etcd_json_parse_watch_line(const char *line, size_t len, EtcdWatchResponse *resp, char *err,
				size_t errlen) _MUSTCHECK;
void etcd_watch_response_cleanup(EtcdWatchResponse *resp);

void etcd_kv_cleanup(EtcdKeyValue *kv);

/* True when a gateway error message or watch cancel reason means the token is missing, invalid
 * or expired (a fresh authenticate may fix it). */
bool etcd_is_auth_error_text(const char *msg);

#endif
