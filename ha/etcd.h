/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Asynchronous etcd v3 client over the JSON gateway: libcurl's multi interface driven by a libevent
 * loop, jansson for JSON (see etcd_json.h). Nothing here blocks; every operation completes through
 * a callback. Endpoint failover, token authentication and watch reconnection are handled inside,
 * and errors are reported in the EtcdResult handed to the callback, never logged directly: the
 * only output is through the optional log hook.
 *
 * Interface:
 *   etcd_client_new/free        one client per etcd cluster, on one event_base
 *   etcd_lease_*, etcd_range, etcd_put, etcd_deleterange, etcd_txn   unary calls
 *   etcd_watch_start/stop       a self-healing streaming watch on a key or prefix
 */
#ifndef PGPILOT_HA_ETCD_H
#define PGPILOT_HA_ETCD_H

#include "ha/etcd_json.h"

struct event_base;

typedef struct EtcdClient EtcdClient;
typedef struct EtcdWatch EtcdWatch;

typedef enum EtcdLogLevel {
	ETCD_LOG_DEBUG,
	ETCD_LOG_INFO,
	ETCD_LOG_WARNING,
} EtcdLogLevel;

const char *etcd_log_level_name(EtcdLogLevel lvl);

/*
 * Receives every message the client wants to say: endpoint switches, watch reconnects, a watch
 * stream ended for exceeding its bounds (ha/etcd_stream.h), and etcd's reachability: a WARNING
 * when no endpoint answers any more, a summary WARNING every 10 s while that lasts, and an INFO
 * line with its duration when etcd answers again (EtcdResult.unreachable marks the failures
 * this covers).
 */
typedef void (*EtcdLogHook)(EtcdLogLevel lvl, const char *msg, void *arg);

/*
 * Client settings. Strings are copied by etcd_client_new(). Zero values take the defaults.
 *   endpoints            comma- or space-separated http(s) URLs, e.g. "http://10.0.0.1:2379"
 *   username, password   token auth when username is set (POST /v3/auth/authenticate)
 *   cacert, cert, key    TLS files for https endpoints (optional)
 *   request_timeout_ms   whole-request bound of each attempt (default 2000)
 *   connect_timeout_ms   TCP/TLS connect bound (default min(1000, request_timeout_ms))
 *   watch_idle_ms        watch silence before the stream is probed (default 10000); the watch
 *                        asks for progress_notify, and when nothing arrives for this long a
 *                        short request to the same endpoint decides whether the stream is dead
 *   backoff_min_ms, backoff_max_ms   watch reconnect back-off, doubling (default 100 .. 2000)
 *   log_hook, log_arg    NULL: warnings and info go to stderr
 */
typedef struct EtcdClientConfig {
	const char *endpoints;
	const char *username;
	const char *password;
	const char *cacert;
	const char *cert;
	const char *key;
	int request_timeout_ms;
	int connect_timeout_ms;
	int watch_idle_ms;
	int backoff_min_ms;
	int backoff_max_ms;
	EtcdLogHook log_hook;
	void *log_arg;
} EtcdClientConfig;

/*
 * Completion of a unary call. res is valid only during the call; copy what must be kept. It is
 * called exactly once per accepted request, from the event loop (never from inside the etcd_*
 * call that started it), or from etcd_client_free() with ok = false and grpc_code
 * ETCD_GRPC_CANCELLED for requests still in flight then. The callback may start new requests,
 * stop watches or free the client.
 */
typedef void (*EtcdCallback)(EtcdClient *client, const EtcdResult *res, void *arg);

/*
 * Create a client on base. Returns NULL and fills err when the configuration is invalid (no
 * endpoint, a URL that is not http:// or https://) or memory/libcurl initialisation fails.
 * curl_global_init() must have been called by the program (the client calls it lazily otherwise,
 * which is not thread-safe but harmless in a single-threaded daemon).
 */
EtcdClient *etcd_client_new(struct event_base *base, const EtcdClientConfig *cfg, char *err,
			    size_t errlen) _MUSTCHECK;

/*
 * Stop every watch (no watch callback fires), cancel every request in flight (each callback is
 * called once with ETCD_GRPC_CANCELLED; new requests are refused from then on) and free the
 * client. Safe inside any etcd callback: the memory is released when that callback returns.
 */
void etcd_client_free(EtcdClient *client);

/* The endpoint URL currently preferred (the last one that answered). */
const char *etcd_client_endpoint(const EtcdClient *client);

/*
 * Unary calls. Each returns false only when the request could not be queued (out of memory,
 * client being freed); the callback is then never called. Otherwise cb fires exactly once.
 * Attempts are bounded by request_timeout_ms each; a connection failure moves to the next
 * endpoint, and so does a timeout or broken reply for calls that are safe to repeat (range,
 * keepalive, timetolive), so the total can reach n_endpoints x request_timeout_ms.
 * A reply saying the token is invalid (gRPC 16) triggers one re-authentication and a retry.
 */
bool etcd_lease_grant(EtcdClient *client, int64_t ttl_s, EtcdCallback cb, void *arg) _MUSTCHECK;
/* res->ok false with grpc_code ETCD_GRPC_NOT_FOUND means the lease is gone. */
bool etcd_lease_keepalive(EtcdClient *client, int64_t lease_id, EtcdCallback cb,
			  void *arg) _MUSTCHECK;
bool etcd_lease_revoke(EtcdClient *client, int64_t lease_id, EtcdCallback cb, void *arg) _MUSTCHECK;
/* res->ttl is -1 for an unknown lease; with keys, res->kvs lists the attached keys. */
bool etcd_lease_timetolive(EtcdClient *client, int64_t lease_id, bool keys, EtcdCallback cb,
			   void *arg) _MUSTCHECK;
/* One key, or every key starting with key when prefix. */
bool etcd_range(EtcdClient *client, const char *key, bool prefix, EtcdCallback cb,
		void *arg) _MUSTCHECK;
/* lease 0: no lease. */
bool etcd_put(EtcdClient *client, const char *key, const char *value, int64_t lease,
	      EtcdCallback cb, void *arg) _MUSTCHECK;
bool etcd_deleterange(EtcdClient *client, const char *key, bool prefix, EtcdCallback cb,
		      void *arg) _MUSTCHECK;
/* The body is built at once: the caller keeps txn and may free it right after the call. */
bool etcd_txn(EtcdClient *client, const EtcdTxn *txn, EtcdCallback cb, void *arg) _MUSTCHECK;

/*
 * Watch
 */

/* Called for each message of the stream: events (with the header revision), "created", and
 * progress notifications (no events, revision = everything up to it was delivered). */
typedef void (*EtcdWatchCallback)(EtcdWatch *watch, const EtcdWatchResponse *resp, void *arg);

typedef enum EtcdWatchStatus {
	ETCD_WATCH_DISCONNECTED, /* the stream broke (detail says why); reconnecting with back-off
				  */
	ETCD_WATCH_RECONNECTED,  /* stream back, resumed at the last seen revision + 1: no events
				  * were lost, but the owner may re-read to be sure (resync hint) */
	ETCD_WATCH_COMPACTED,    /* history needed was compacted: events were lost. snapshot holds
				  * a fresh range of the prefix; watching resumes after its revision.
				  * The owner must rebuild its view from the snapshot. */
} EtcdWatchStatus;

const char *etcd_watch_status_name(EtcdWatchStatus s);

/* Changes of the stream's health and the "resync needed" signal. snapshot is non-NULL only for
 * ETCD_WATCH_COMPACTED; detail is an error text for DISCONNECTED, else NULL. */
typedef void (*EtcdWatchStatusCallback)(EtcdWatch *watch, EtcdWatchStatus status,
					const EtcdResult *snapshot, const char *detail, void *arg);

/*
 * Watch key (every key under it when prefix) from start_revision (0: from now), with prev_kv.
 * status_cb may be NULL. Returns NULL only when out of memory or the client is being freed.
 * The watch runs until etcd_watch_stop() or etcd_client_free(); it never gives up on its own.
 */
EtcdWatch *etcd_watch_start(EtcdClient *client, const char *key, bool prefix,
			    int64_t start_revision, EtcdWatchCallback cb,
			    EtcdWatchStatusCallback status_cb, void *arg) _MUSTCHECK;

/* Stop and free the watch; no callback fires afterwards. Safe inside its own callbacks. */
void etcd_watch_stop(EtcdWatch *watch);

/* The revision the watch would resume from (last seen + 1). */
int64_t etcd_watch_next_revision(const EtcdWatch *watch);

#endif
