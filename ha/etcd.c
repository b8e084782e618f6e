/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The event-driven half of the etcd client: libcurl multi handles driven by libevent through
 * CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION, endpoint failover, token authentication and
 * self-healing watches. User callbacks run only from our own loop entry points, after
 * curl_multi_socket_action() has returned, never inside a libcurl callback: so a callback may
 * remove handles, start requests, stop watches or free the client. Memory that a running callback
 * may still reach is freed when the outermost entry point returns (the busy counter).
 */
#include "ha/etcd.h"
#include "ha/etcd_stream.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MAX_REPLY (64 * 1024 * 1024)
/* While etcd is unreachable, one summary line per this interval (the change itself is logged
 * once, and so is the return). */
#define ETCD_UNREACHABLE_SUMMARY_MS 10000

typedef struct EtcdRequest EtcdRequest;

/* What a request is for, which decides who handles its completion. */
typedef enum EtcdReqRole {
	ROLE_USER,         /* unary call of the owner: result goes to req->cb */
	ROLE_AUTH,         /* internal authenticate */
	ROLE_WATCH_STREAM, /* the long-lived /v3/watch stream of req->watch */
	ROLE_WATCH_RESYNC, /* range of the watched prefix after compaction */
	ROLE_WATCH_PROBE,  /* liveness check of a silent watch stream's endpoint */
} EtcdReqRole;

struct EtcdRequest {
	EtcdClient *client;
	EtcdRequest *prev, *next; /* in client->requests */
	EtcdReqRole role;
	EtcdReplyKind kind;
	const char *path;
	char *body;
	EtcdCallback cb;
	void *arg;
	EtcdWatch *watch;

	bool running;      /* easy handle is in the multi */
	bool retry_safe;   /* may be repeated on another endpoint after a timeout */
	bool pinned;       /* stays on .endpoint, no failover (probes) */
	bool auth_retried; /* one re-authentication per request */
	int endpoint;      /* index of the endpoint of the current attempt */
	int attempts;
	unsigned token_gen; /* client->token_gen when the attempt was sent */

	CURL *easy;
	struct curl_slist *headers;
	char *url;
	char *buf; /* reply body (unary calls) */
	size_t len, cap;
	EtcdStream lines; /* the watch stream's bytes (ROLE_WATCH_STREAM) */
	char errbuf[CURL_ERROR_SIZE];
};

/* Watch states. */
typedef enum EtcdWatchState {
	WATCH_BACKOFF,    /* waiting for retry_ev before the next attempt */
	WATCH_CONNECTING, /* stream request sent, "created" not yet seen */
	WATCH_STREAMING,  /* created: events flowing */
	WATCH_RESYNCING,  /* compaction: range of the prefix in flight */
} EtcdWatchState;

struct EtcdWatch {
	EtcdClient *client;
	EtcdWatch *prev, *next; /* in client->watches, or client->dead_watches once stopped */
	char *key;
	bool prefix;
	int64_t next_rev; /* 0 = from now (until the first "created") */
	EtcdWatchCallback cb;
	EtcdWatchStatusCallback status_cb;
	void *arg;

	EtcdWatchState state;
	EtcdRequest *stream; /* current stream request, or NULL */
	EtcdRequest *aux;    /* resync range or probe in flight, or NULL */
	bool need_resync;    /* next attempt is a range, not a stream */
	bool was_streaming;  /* a stream was up before: the next "created" is a reconnect */
	int backoff_ms;
	int64_t last_data_ms;
	struct event *retry_ev;
	struct event *idle_ev;
	bool stopped;
};

struct EtcdClient {
	struct event_base *base;
	CURLM *multi;
	struct event *timer_ev;
	char *endpoints[ETCD_MAX_ENDPOINTS];
	int n_endpoints;
	int good_ep;
	char *username, *password, *cacert, *cert, *key;
	int request_timeout_ms, connect_timeout_ms, watch_idle_ms, backoff_min_ms, backoff_max_ms;
	EtcdLogHook log_hook;
	void *log_arg;

	char *token;
	unsigned token_gen; /* bumped whenever the token is dropped */
	bool auth_in_flight;

	EtcdRequest *requests;
	EtcdWatch *watches;
	EtcdWatch *dead_watches;
	int busy; /* nesting depth of loop entry points */
	bool freeing;

	/* reachability: no reply from any endpoint since unreachable_since_ms */
	bool unreachable;
	int64_t unreachable_since_ms, unreachable_logged_ms;
	uint64_t unreachable_failures; /* requests and streams that got no reply meanwhile */
};

static void req_start_or_fail(EtcdRequest *req);
static void watch_connect(EtcdWatch *w);
static void watch_broken(EtcdWatch *w, const char *fmt, ...) _PRINTF(2, 3);

const char *etcd_log_level_name(EtcdLogLevel lvl)
{
	switch (lvl) {
	case ETCD_LOG_DEBUG:
		return "DEBUG";
	case ETCD_LOG_INFO:
		return "LOG";
	case ETCD_LOG_WARNING:
		return "WARNING";
	}
	return "unknown";
}

const char *etcd_watch_status_name(EtcdWatchStatus s)
{
	switch (s) {
	case ETCD_WATCH_DISCONNECTED:
		return "disconnected";
	case ETCD_WATCH_RECONNECTED:
		return "reconnected";
	case ETCD_WATCH_COMPACTED:
		return "compacted";
	}
	return "unknown";
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

static void client_log(EtcdClient *c, EtcdLogLevel lvl, const char *fmt, ...) _PRINTF(3, 4);
static void client_log(EtcdClient *c, EtcdLogLevel lvl, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->log_hook)
		c->log_hook(lvl, msg, c->log_arg);
	else if (lvl != ETCD_LOG_DEBUG)
		fprintf(stderr, "etcd %s: %s\n", etcd_log_level_name(lvl), msg);
}

/*
 * Reachability. Every request that got no reply at all (connect failure, timeout, a transfer
 * cut short) counts as a failure to reach etcd; any HTTP reply proves it reachable. The change
 * is logged once each way and, while it lasts, a summary every ETCD_UNREACHABLE_SUMMARY_MS:
 * during an outage every request fails, and one line per failure would flood the log.
 */

static void client_note_unreachable(EtcdClient *c, const char *what, const char *ep,
				    const char *why)
{
	int64_t now = now_ms();

	if (!c->unreachable) {
		c->unreachable = true;
		c->unreachable_since_ms = now;
		c->unreachable_logged_ms = now;
		c->unreachable_failures = 1;
		client_log(c, ETCD_LOG_WARNING, "etcd is unreachable: %s to \"%s\" failed: %s",
			   what, ep, why);
		return;
	}
	c->unreachable_failures++;
	if (now - c->unreachable_logged_ms >= ETCD_UNREACHABLE_SUMMARY_MS) {
		c->unreachable_logged_ms = now;
		client_log(c, ETCD_LOG_WARNING,
			   "etcd still unreachable after %" PRId64 " s, %" PRIu64
			   " requests failed (last: %s to \"%s\": %s)",
			   (now - c->unreachable_since_ms) / 1000, c->unreachable_failures, what,
			   ep, why);
	}
}

static void client_note_reachable(EtcdClient *c)
{
	int64_t down_ms;

	if (!c->unreachable)
		return;
	c->unreachable = false;
	down_ms = now_ms() - c->unreachable_since_ms;
	client_log(c, ETCD_LOG_INFO,
		   "etcd answers again after %" PRId64 ".%01" PRId64 " s, %" PRIu64
		   " requests failed meanwhile",
		   down_ms / 1000, (down_ms % 1000) / 100, c->unreachable_failures);
}

/*
 * Loop entry bookkeeping
 */

static void watch_free_mem(EtcdWatch *w)
{
	if (w->retry_ev)
		event_free(w->retry_ev);
	if (w->idle_ev)
		event_free(w->idle_ev);
	free(w->key);
	free(w);
}

static void client_destroy(EtcdClient *c)
{
	while (c->dead_watches) {
		EtcdWatch *w = c->dead_watches;
		c->dead_watches = w->next;
		watch_free_mem(w);
	}
	/* curl_multi_cleanup() may still call sock_cb to drop sockets: keep c valid until then. */
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->timer_ev)
		event_free(c->timer_ev);
	for (int i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	free(c->username);
	free(c->password);
	free(c->cacert);
	free(c->cert);
	free(c->key);
	free(c->token);
	free(c);
}

static void client_enter(EtcdClient *c)
{
	c->busy++;
}

/* Leave a loop entry point: release what callbacks may have been holding. */
static void client_leave(EtcdClient *c)
{
	if (--c->busy > 0)
		return;
	while (c->dead_watches) {
		EtcdWatch *w = c->dead_watches;
		c->dead_watches = w->next;
		watch_free_mem(w);
	}
	if (c->freeing)
		client_destroy(c);
}

/*
 * Requests
 */

static void req_unlink(EtcdRequest *req)
{
	EtcdClient *c = req->client;

	if (req->prev)
		req->prev->next = req->next;
	else if (c->requests == req)
		c->requests = req->next;
	if (req->next)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
}

static void req_detach_easy(EtcdRequest *req)
{
	if (req->running) {
		curl_multi_remove_handle(req->client->multi, req->easy);
		req->running = false;
	}
}

static void req_free(EtcdRequest *req)
{
	req_detach_easy(req);
	if (req->easy)
		curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->headers);
	free(req->url);
	free(req->body);
	free(req->buf);
	etcd_stream_cleanup(&req->lines);
	free(req);
}

/* Drop a request without calling anyone. Never call from inside a libcurl callback. */
static void req_cancel(EtcdRequest *req)
{
	req_unlink(req);
	req_free(req);
}

/* Takes ownership of body. */
static EtcdRequest *req_new(EtcdClient *c, EtcdReqRole role, EtcdReplyKind kind, const char *path,
			    char *body)
{
	EtcdRequest *req;

	if (!body)
		return NULL;
	req = calloc(1, sizeof(*req));
	if (!req) {
		free(body);
		return NULL;
	}
	req->client = c;
	req->role = role;
	req->kind = kind;
	req->path = path;
	req->body = body;
	etcd_stream_init(&req->lines, ETCD_WATCH_MAX_LINE, ETCD_WATCH_MAX_HELD);
	req->endpoint = c->good_ep;
	req->next = c->requests;
	if (c->requests)
		c->requests->prev = req;
	c->requests = req;
	return req;
}

static size_t req_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	EtcdRequest *req = arg;
	size_t n = size * nmemb;

	/* Only buffering here: parsing and callbacks wait until libcurl has returned. */
	if (req->role == ROLE_WATCH_STREAM) {
		/* a line or backlog above the bounds ends the transfer; req_done() says why */
		if (!etcd_stream_append(&req->lines, data, n))
			return 0;
		req->watch->last_data_ms = now_ms();
		return n;
	}
	if (req->len + n > ETCD_MAX_REPLY)
		return 0;
	if (req->len + n + 1 > req->cap) {
		size_t cap = req->cap ? req->cap : 1024;
		char *nb;

		while (cap < req->len + n + 1)
			cap *= 2;
		nb = realloc(req->buf, cap);
		if (!nb)
			return 0;
		req->buf = nb;
		req->cap = cap;
	}
	memcpy(req->buf + req->len, data, n);
	req->len += n;
	req->buf[req->len] = '\0';
	if (req->watch)
		req->watch->last_data_ms = now_ms();
	return n;
}

/* Configure the easy handle for one attempt on req->endpoint and hand it to the multi. */
static bool req_start_attempt(EtcdRequest *req, char *err, size_t errlen)
{
	EtcdClient *c = req->client;
	const char *ep = c->endpoints[req->endpoint];
	size_t ulen = strlen(ep) + strlen(req->path) + 1;
	bool stream = req->role == ROLE_WATCH_STREAM;
	CURLMcode mrc;

	req_detach_easy(req);
	req->attempts++;
	req->len = 0;
	etcd_stream_reset(&req->lines);
	req->errbuf[0] = '\0';
	req->token_gen = c->token_gen;
	curl_slist_free_all(req->headers);
	req->headers = NULL;
	free(req->url);
	req->url = malloc(ulen);
	if (!req->url) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	snprintf(req->url, ulen, "%s%s", ep, req->path);
	if (!req->easy)
		req->easy = curl_easy_init();
	else
		curl_easy_reset(req->easy);
	if (!req->easy) {
		snprintf(err, errlen, "could not create a libcurl handle");
		return false;
	}
	req->headers = curl_slist_append(NULL, "Content-Type: application/json");
	/* Without this, libcurl waits up to a second for "100 Continue" on larger bodies. */
	if (req->headers)
		req->headers = curl_slist_append(req->headers, "Expect:");
	if (req->headers && c->token && req->role != ROLE_AUTH) {
		/* etcd wants the bare token, no "Bearer" */
		size_t hlen = strlen(c->token) + 32;
		char *h = malloc(hlen);
		struct curl_slist *nl = NULL;

		if (h) {
			snprintf(h, hlen, "Authorization: %s", c->token);
			nl = curl_slist_append(req->headers, h);
			free(h);
		}
		if (!nl) {
			curl_slist_free_all(req->headers);
			req->headers = NULL;
		}
	}
	if (!req->headers) {
		snprintf(err, errlen, "out of memory");
		return false;
	}

	curl_easy_setopt(req->easy, CURLOPT_URL, req->url);
	curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(req->body));
	curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, req_write_cb);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	/* A watch lives as long as it is healthy: silence detection replaces the timeout. */
	if (!stream)
		curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, (long)c->request_timeout_ms);
	curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPINTVL, 5L);
	if (c->cacert)
		curl_easy_setopt(req->easy, CURLOPT_CAINFO, c->cacert);
	if (c->cert)
		curl_easy_setopt(req->easy, CURLOPT_SSLCERT, c->cert);
	if (c->key)
		curl_easy_setopt(req->easy, CURLOPT_SSLKEY, c->key);

	mrc = curl_multi_add_handle(c->multi, req->easy);
	if (mrc != CURLM_OK) {
		snprintf(err, errlen, "could not start etcd request: %s", curl_multi_strerror(mrc));
		return false;
	}
	req->running = true;
	return true;
}

static void auth_start(EtcdClient *c);
static void req_complete(EtcdRequest *req, EtcdResult *res);

/* Send now, or park until a token is there. Returns false (err set) when sending failed. */
static bool req_submit(EtcdRequest *req, char *err, size_t errlen)
{
	EtcdClient *c = req->client;

	if (!req->pinned && req->attempts == 0)
		req->endpoint = c->good_ep;
	if (c->username && !c->token && req->role != ROLE_AUTH) {
		auth_start(c);
		return true;
	}
	return req_start_attempt(req, err, errlen);
}

/* Submit from inside the loop: a failure completes the request at once. */
static void req_start_or_fail(EtcdRequest *req)
{
	EtcdResult res;
	char err[256];

	if (req_submit(req, err, sizeof(err)))
		return;
	etcd_result_init(&res);
	etcd_result_fail(&res, 0, "%s", err);
	req_complete(req, &res);
}

/* Submit from an API call: on failure the request is dropped and the caller told so. */
static bool req_submit_api(EtcdRequest *req)
{
	EtcdClient *c = req->client;
	char err[256];

	if (req_submit(req, err, sizeof(err)))
		return true;
	client_log(c, ETCD_LOG_WARNING, "%s", err);
	req_cancel(req);
	return false;
}

/* Drop a request during etcd_client_free(), telling its owner once. */
static void req_cancel_notify(EtcdRequest *req)
{
	EtcdClient *c = req->client;

	req_unlink(req);
	req_detach_easy(req);
	if (req->role == ROLE_USER && req->cb) {
		EtcdResult res;

		etcd_result_init(&res);
		etcd_result_fail(&res, ETCD_GRPC_CANCELLED, "etcd client is shutting down");
		req->cb(c, &res, req->arg);
	}
	req_free(req);
}

/*
 * Authentication
 */

static void auth_start(EtcdClient *c)
{
	EtcdRequest *req;

	if (c->auth_in_flight)
		return;
	req = req_new(c, ROLE_AUTH, ETCD_REPLY_AUTH, "/v3/auth/authenticate",
		      etcd_json_authenticate(c->username, c->password ? c->password : ""));
	if (!req) {
		client_log(c, ETCD_LOG_WARNING, "out of memory");
		return;
	}
	req->retry_safe = true;
	c->auth_in_flight = true;
	req_start_or_fail(req);
}

/* Forget the token used by an attempt that etcd rejected (unless a newer one is already here). */
static void auth_invalidate(EtcdClient *c, unsigned gen)
{
	if (gen != c->token_gen || !c->token)
		return;
	free(c->token);
	c->token = NULL;
	c->token_gen++;
}

/* Authentication finished: send or fail everything parked behind it. */
static void auth_done(EtcdClient *c, const EtcdResult *res)
{
	EtcdRequest *parked = NULL, *req, *next;

	c->auth_in_flight = false;
	if (res->ok) {
		free(c->token);
		c->token = strdup(res->token);
		c->token_gen++;
		if (!c->token)
			return;
	}
	/* Move the parked requests aside first: callbacks may queue new ones. */
	for (req = c->requests; req; req = next) {
		next = req->next;
		if (req->running || req->role == ROLE_AUTH)
			continue;
		req_unlink(req);
		req->next = parked;
		parked = req;
	}
	while (parked) {
		req = parked;
		parked = req->next;
		req->next = c->requests;
		req->prev = NULL;
		if (c->requests)
			c->requests->prev = req;
		c->requests = req;
		if (c->freeing) {
			/* a callback freed the client: the rest are handed back as canceled */
			req_cancel_notify(req);
			continue;
		}
		if (res->ok) {
			req_start_or_fail(req);
		} else {
			EtcdResult fail;

			etcd_result_init(&fail);
			etcd_result_fail(&fail, res->grpc_code,
					 "could not authenticate to etcd: %s", res->error);
			fail.http_status = res->http_status;
			fail.unreachable = res->unreachable;
			req_complete(req, &fail);
		}
	}
}

/*
 * Completion
 */

static void watch_stream_done(EtcdWatch *w, EtcdRequest *req, const char *why);
static void watch_aux_done(EtcdWatch *w, EtcdRequest *req, const EtcdResult *res);

/* Hand the final result to whoever owns req, then free req and res. */
static void req_complete(EtcdRequest *req, EtcdResult *res)
{
	EtcdClient *c = req->client;

	req_unlink(req);
	req_detach_easy(req);
	if (res->ok && !req->pinned)
		c->good_ep = req->endpoint;
	switch (req->role) {
	case ROLE_USER:
		if (req->cb)
			req->cb(c, res, req->arg);
		break;
	case ROLE_AUTH:
		auth_done(c, res);
		break;
	case ROLE_WATCH_STREAM:
		watch_stream_done(req->watch, req, res->error);
		break;
	case ROLE_WATCH_RESYNC:
	case ROLE_WATCH_PROBE:
		watch_aux_done(req->watch, req, res);
		break;
	}
	req_free(req);
	etcd_result_cleanup(res);
}

/* Move on to the next endpoint after endpoint idx failed. */
static int next_endpoint(EtcdClient *c, int idx)
{
	int next = (idx + 1) % c->n_endpoints;

	if (c->good_ep == idx && c->n_endpoints > 1) {
		client_log(c, ETCD_LOG_INFO, "switching to etcd endpoint \"%s\"",
			   c->endpoints[next]);
		c->good_ep = next;
	}
	return next;
}

static bool is_connect_failure(CURLcode rc)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
	       rc == CURLE_COULDNT_RESOLVE_PROXY;
}

/* Try the request again on the next endpoint. Returns false when it has run out of them. */
static bool req_retry_elsewhere(EtcdRequest *req)
{
	EtcdClient *c = req->client;
	EtcdResult res;
	char err[256];

	if (req->pinned || req->attempts >= c->n_endpoints)
		return false;
	req->endpoint = next_endpoint(c, req->endpoint);
	if (req_start_attempt(req, err, sizeof(err)))
		return true;
	etcd_result_init(&res);
	etcd_result_fail(&res, 0, "%s", err);
	req_complete(req, &res);
	return true;
}

static void req_done(EtcdRequest *req, CURLcode rc)
{
	EtcdClient *c = req->client;
	const char *ep = c->endpoints[req->endpoint];
	EtcdResult res;
	long status = 0;

	etcd_result_init(&res);
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
	if (req->role == ROLE_WATCH_STREAM) {
		req_detach_easy(req);
		if (rc != CURLE_OK && req->lines.error != ETCD_STREAM_OK) {
			etcd_result_fail(&res, 0,
					 "watch stream from \"%s\" ended: %s (limits: %zu bytes a "
					 "line, %zu bytes held)",
					 ep, etcd_stream_error_name(req->lines.error),
					 req->lines.max_line, req->lines.max_held);
			client_log(c, ETCD_LOG_WARNING, "etcd %s, restarting the watch", res.error);
		} else if (rc != CURLE_OK) {
			const char *why = req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc);

			etcd_result_fail(&res, 0, "watch stream to \"%s\" failed: %s", ep, why);
			res.unreachable = true;
			client_note_unreachable(c, "the watch stream", ep, why);
		} else if (status == 401)
			etcd_result_fail(&res, ETCD_GRPC_UNAUTHENTICATED,
					 "watch stream to \"%s\" was refused: invalid token", ep);
		else
			etcd_result_fail(&res, 0, "watch stream to \"%s\" ended (HTTP status %ld)",
					 ep, status);
		res.http_status = status;
		if (res.grpc_code == ETCD_GRPC_UNAUTHENTICATED)
			auth_invalidate(c, req->token_gen);
		/* A stream that never got going points at a bad endpoint. */
		if (rc != CURLE_OK && req->watch->state == WATCH_CONNECTING)
			next_endpoint(c, req->endpoint);
		req_complete(req, &res);
		return;
	}

	if (rc != CURLE_OK) {
		const char *why = req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc);

		client_log(c, ETCD_LOG_DEBUG, "etcd request %s to \"%s\" failed: %s", req->path, ep,
			   why);
		/* After a timeout or a broken reply the request may have been applied: only
		 * idempotent ones are repeated. Nothing was sent when the connect failed. */
		if ((is_connect_failure(rc) || req->retry_safe) && req_retry_elsewhere(req))
			return;
		if (!req->pinned)
			next_endpoint(c, req->endpoint);
		client_note_unreachable(c, req->path, ep, why);
		res.unreachable = true;
		if (rc == CURLE_OPERATION_TIMEDOUT)
			etcd_result_fail(&res, 0, "etcd request %s to \"%s\" timed out", req->path,
					 ep);
		else
			etcd_result_fail(&res, 0, "could not reach etcd at \"%s\": %s", ep, why);
		req_complete(req, &res);
		return;
	}

	client_note_reachable(c);
	etcd_json_parse_reply(req->kind, status, req->buf ? req->buf : "", req->len, &res);
	if (!res.ok && res.grpc_code == ETCD_GRPC_UNAUTHENTICATED && c->username &&
	    req->role != ROLE_AUTH && !req->auth_retried) {
		/* Token expired or unknown: get a new one and send this again. */
		client_log(c, ETCD_LOG_DEBUG, "etcd token rejected (%s), authenticating again",
			   res.error);
		etcd_result_cleanup(&res);
		req->auth_retried = true;
		req_detach_easy(req);
		auth_invalidate(c, req->token_gen);
		req_start_or_fail(req);
		return;
	}
	if (!res.ok && res.grpc_code == ETCD_GRPC_UNAVAILABLE && req->retry_safe) {
		etcd_result_cleanup(&res);
		if (req_retry_elsewhere(req))
			return;
		etcd_json_parse_reply(req->kind, status, req->buf ? req->buf : "", req->len, &res);
	}
	req_complete(req, &res);
}

/*
 * Watches
 */

static void watch_status(EtcdWatch *w, EtcdWatchStatus st, const EtcdResult *snap,
			 const char *detail)
{
	if (w->status_cb && !w->stopped)
		w->status_cb(w, st, snap, detail, w->arg);
}

static void watch_schedule_retry(EtcdWatch *w)
{
	struct timeval tv = ms_tv(w->backoff_ms);
	EtcdClient *c = w->client;

	w->state = WATCH_BACKOFF;
	evtimer_add(w->retry_ev, &tv);
	w->backoff_ms *= 2;
	if (w->backoff_ms > c->backoff_max_ms)
		w->backoff_ms = c->backoff_max_ms;
}

/* Cancel the stream and any probe; the caller decides what comes next. */
static void watch_drop_stream(EtcdWatch *w)
{
	if (w->stream) {
		req_cancel(w->stream);
		w->stream = NULL;
	}
	if (w->aux && w->aux->role == ROLE_WATCH_PROBE) {
		req_cancel(w->aux);
		w->aux = NULL;
	}
	evtimer_del(w->idle_ev);
}

/* The stream is gone (error, end, silence, cancel): tell the owner once, retry with back-off. */
static void watch_broken(EtcdWatch *w, const char *fmt, ...)
{
	EtcdClient *c = w->client;
	char detail[512];
	va_list ap;
	bool was_up = w->state == WATCH_STREAMING;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	watch_drop_stream(w);
	watch_schedule_retry(w);
	if (was_up) {
		w->was_streaming = true;
		client_log(c, ETCD_LOG_INFO, "etcd watch on \"%s\" lost: %s", w->key, detail);
		watch_status(w, ETCD_WATCH_DISCONNECTED, NULL, detail);
	} else {
		client_log(c, ETCD_LOG_DEBUG, "etcd watch on \"%s\" not up: %s", w->key, detail);
	}
}

static void watch_arm_idle(EtcdWatch *w, int64_t delay_ms)
{
	struct timeval tv = ms_tv(delay_ms);

	evtimer_add(w->idle_ev, &tv);
}

static void watch_start_resync(EtcdWatch *w)
{
	EtcdRequest *req;

	req = req_new(w->client, ROLE_WATCH_RESYNC, ETCD_REPLY_RANGE, "/v3/kv/range",
		      etcd_json_range(w->key, w->prefix, 0, false));
	if (!req) {
		watch_schedule_retry(w);
		return;
	}
	req->watch = w;
	req->retry_safe = true;
	w->aux = req;
	w->state = WATCH_RESYNCING;
	req_start_or_fail(req);
}

static void watch_connect(EtcdWatch *w)
{
	EtcdRequest *req;

	if (w->need_resync) {
		watch_start_resync(w);
		return;
	}
	req = req_new(w->client, ROLE_WATCH_STREAM, ETCD_REPLY_RANGE, "/v3/watch",
		      etcd_json_watch_create(w->key, w->prefix, w->next_rev, true, true));
	if (!req) {
		watch_schedule_retry(w);
		return;
	}
	req->watch = w;
	w->stream = req;
	w->state = WATCH_CONNECTING;
	w->last_data_ms = now_ms();
	watch_arm_idle(w, w->client->watch_idle_ms);
	req_start_or_fail(req);
}

/* Stream request completed (from req_complete; req is freed by the caller). */
static void watch_stream_done(EtcdWatch *w, EtcdRequest *req, const char *why)
{
	if (w->stream != req)
		return;
	w->stream = NULL;
	watch_broken(w, "%s", why);
}

static void watch_aux_done(EtcdWatch *w, EtcdRequest *req, const EtcdResult *res)
{
	EtcdClient *c = w->client;

	if (w->aux != req)
		return;
	w->aux = NULL;
	if (req->role == ROLE_WATCH_PROBE) {
		if (res->ok) {
			/* The member answers: the stream is just quiet. */
			w->last_data_ms = now_ms();
			watch_arm_idle(w, c->watch_idle_ms);
		} else {
			next_endpoint(c, req->endpoint);
			watch_broken(w, "no data for %d ms and the endpoint did not answer: %s",
				     c->watch_idle_ms, res->error);
		}
		return;
	}
	/* ROLE_WATCH_RESYNC */
	if (!res->ok) {
		client_log(c, ETCD_LOG_DEBUG, "etcd watch resync of \"%s\" failed: %s", w->key,
			   res->error);
		watch_schedule_retry(w);
		return;
	}
	w->need_resync = false;
	w->next_rev = res->revision + 1;
	watch_status(w, ETCD_WATCH_COMPACTED, res, NULL);
	if (!w->stopped && !c->freeing)
		watch_connect(w);
}

static void watch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	EtcdWatch *w = arg;
	EtcdClient *c = w->client;

	client_enter(c);
	if (!w->stopped && !c->freeing)
		watch_connect(w);
	client_leave(c);
}

static void watch_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	EtcdWatch *w = arg;
	EtcdClient *c = w->client;
	int64_t silent = now_ms() - w->last_data_ms;
	EtcdRequest *req;

	if (w->stopped || c->freeing || !w->stream)
		return;
	if (silent < c->watch_idle_ms) {
		watch_arm_idle(w, c->watch_idle_ms - silent);
		return;
	}
	if (w->aux)
		return;
	client_enter(c);
	/* Probe the very endpoint the stream is on, with the normal request timeout. */
	req = req_new(c, ROLE_WATCH_PROBE, ETCD_REPLY_RANGE, "/v3/kv/range",
		      etcd_json_range(w->key, false, 1, true));
	if (!req) {
		watch_broken(w, "out of memory");
	} else {
		req->watch = w;
		req->pinned = true;
		req->endpoint = w->stream->endpoint;
		w->aux = req;
		req_start_or_fail(req);
	}
	client_leave(c);
}

/* Act on one parsed stream message; returns false when the stream was dropped. */
static bool watch_handle(EtcdWatch *w, const EtcdWatchResponse *resp)
{
	EtcdClient *c = w->client;
	unsigned gen = w->stream->token_gen;

	if (resp->error) {
		if (resp->auth_failed)
			auth_invalidate(c, gen);
		watch_broken(w, "etcd watch error: %s", resp->error);
		return false;
	}
	if (resp->canceled) {
		if (resp->compact_revision > 0) {
			client_log(c, ETCD_LOG_INFO,
				   "etcd watch on \"%s\" from revision %" PRId64
				   " hit compaction at %" PRId64 ", resyncing",
				   w->key, w->next_rev, resp->compact_revision);
			watch_drop_stream(w);
			w->need_resync = true;
			watch_start_resync(w);
			return false;
		}
		if (resp->auth_failed)
			auth_invalidate(c, gen);
		watch_broken(w, "etcd canceled the watch: %s",
			     resp->cancel_reason ? resp->cancel_reason : "no reason given");
		return false;
	}
	if (resp->created) {
		bool reconnected = w->was_streaming;

		client_note_reachable(c);
		w->state = WATCH_STREAMING;
		w->backoff_ms = c->backoff_min_ms;
		c->good_ep = w->stream->endpoint;
		if (w->next_rev == 0)
			w->next_rev = resp->revision + 1;
		w->cb(w, resp, w->arg);
		if (reconnected && !w->stopped && !c->freeing) {
			client_log(c, ETCD_LOG_INFO,
				   "etcd watch on \"%s\" re-established at revision %" PRId64,
				   w->key, w->next_rev);
			watch_status(w, ETCD_WATCH_RECONNECTED, NULL, NULL);
		}
		return true;
	}
	for (size_t i = 0; i < resp->n_events; i++) {
		if (resp->events[i].kv.mod_revision >= w->next_rev)
			w->next_rev = resp->events[i].kv.mod_revision + 1;
	}
	/* A progress notification: everything up to its revision has been sent. */
	if (resp->n_events == 0 && resp->revision >= w->next_rev)
		w->next_rev = resp->revision + 1;
	w->cb(w, resp, w->arg);
	return true;
}

/* Parse and deliver one complete line of w's stream. Returns false when there was none. */
static bool watch_deliver_one(EtcdWatch *w)
{
	EtcdRequest *req = w->stream;
	EtcdWatchResponse resp;
	char err[256];
	const char *line;
	size_t linelen;
	bool parsed, blank;

	/* Taking the line consumes it before any callback (the callback may free the stream);
	 * the line itself stays readable until the next append, which cannot happen here. */
	if (!req || !etcd_stream_next(&req->lines, &line, &linelen))
		return false;
	/* The gateway separates messages with "\n"; tolerate blank lines and "\r\n". */
	blank = linelen == 0;
	parsed = blank || etcd_json_parse_watch_line(line, linelen, &resp, err, sizeof(err));
	if (!parsed) {
		watch_broken(w, "%s", err);
		return true;
	}
	if (!blank) {
		watch_handle(w, &resp);
		etcd_watch_response_cleanup(&resp);
	}
	return true;
}

/* Deliver buffered stream lines of every watch, restarting the scan after each callback. */
static void client_deliver_streams(EtcdClient *c)
{
	EtcdWatch *w;
again:
	for (w = c->watches; w; w = w->next) {
		if (watch_deliver_one(w)) {
			if (c->freeing)
				return;
			goto again;
		}
	}
}

/* After libcurl has run: deliver stream data, then finished transfers. */
static void client_process(EtcdClient *c)
{
	CURLMsg *msg;
	int left;

	client_deliver_streams(c);
	while (!c->freeing && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		EtcdRequest *req = NULL;
		CURLcode rc;

		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
		if (!req)
			continue;
		/* Lines that arrived with the end of the stream come first. */
		if (req->role == ROLE_WATCH_STREAM) {
			EtcdWatch *w = req->watch;

			while (w->stream == req && watch_deliver_one(w)) {
				if (c->freeing)
					return;
			}
			if (w->stream != req)
				continue; /* dropped while delivering */
		}
		req_done(req, rc);
	}
}

/*
 * libcurl <-> libevent glue
 */

static void sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
	EtcdClient *c = arg;
	int flags = 0, running;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	client_enter(c);
	curl_multi_socket_action(c->multi, fd, flags, &running);
	client_process(c);
	client_leave(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	EtcdClient *c = arg;
	int running;

	client_enter(c);
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	client_process(c);
	client_leave(c);
}

/* CURLMOPT_SOCKETFUNCTION: keep one persistent event per socket libcurl uses. */
static int curl_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	EtcdClient *c = userp;
	struct event *ev = socketp;
	short kind = EV_PERSIST;

	if (what == CURL_POLL_REMOVE) {
		if (ev) {
			event_free(ev);
			curl_multi_assign(c->multi, s, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (ev) {
		event_del(ev);
		event_assign(ev, c->base, s, kind, sock_event_cb, c);
	} else {
		ev = event_new(c->base, s, kind, sock_event_cb, c);
		if (!ev)
			return -1;
		curl_multi_assign(c->multi, s, ev);
	}
	event_add(ev, NULL);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: libcurl wants socket_action(TIMEOUT) after timeout_ms (-1: never). */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	EtcdClient *c = userp;

	if (timeout_ms < 0) {
		evtimer_del(c->timer_ev);
	} else {
		struct timeval tv = ms_tv(timeout_ms);
		evtimer_add(c->timer_ev, &tv);
	}
	return 0;
}

/*
 * Client
 */

static char *dup_opt(const char *s, bool *ok)
{
	char *d;

	if (!s || !*s)
		return NULL;
	d = strdup(s);
	if (!d)
		*ok = false;
	return d;
}

static bool parse_endpoints(EtcdClient *c, const char *list, char *err, size_t errlen)
{
	const char *p = list ? list : "";

	while (*p) {
		size_t n;
		char *ep;

		p += strspn(p, ", \t");
		n = strcspn(p, ", \t");
		if (n == 0)
			break;
		if (c->n_endpoints == ETCD_MAX_ENDPOINTS) {
			snprintf(err, errlen, "too many etcd endpoints (at most %d)",
				 ETCD_MAX_ENDPOINTS);
			return false;
		}
		ep = strndup(p, n);
		if (!ep) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		while (n > 0 && ep[n - 1] == '/')
			ep[--n] = '\0';
		c->endpoints[c->n_endpoints++] = ep;
		if ((strncmp(ep, "http://", 7) != 0 || n <= 7) &&
		    (strncmp(ep, "https://", 8) != 0 || n <= 8)) {
			snprintf(err, errlen,
				 "invalid etcd endpoint \"%s\": expected http:// or https:// URL",
				 ep);
			return false;
		}
		p += n;
	}
	if (c->n_endpoints == 0) {
		snprintf(err, errlen, "no etcd endpoint given");
		return false;
	}
	return true;
}

EtcdClient *etcd_client_new(struct event_base *base, const EtcdClientConfig *cfg, char *err,
			    size_t errlen)
{
	static bool curl_ready;
	EtcdClient *c;
	bool ok = true;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "could not initialise libcurl");
			return NULL;
		}
		curl_ready = true;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->base = base;
	if (!parse_endpoints(c, cfg->endpoints, err, errlen)) {
		client_destroy(c);
		return NULL;
	}
	c->username = dup_opt(cfg->username, &ok);
	c->password = dup_opt(cfg->password, &ok);
	c->cacert = dup_opt(cfg->cacert, &ok);
	c->cert = dup_opt(cfg->cert, &ok);
	c->key = dup_opt(cfg->key, &ok);
	c->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 2000;
	c->connect_timeout_ms = cfg->connect_timeout_ms > 0    ? cfg->connect_timeout_ms
				: c->request_timeout_ms < 1000 ? c->request_timeout_ms
							       : 1000;
	c->watch_idle_ms = cfg->watch_idle_ms > 0 ? cfg->watch_idle_ms : 10000;
	c->backoff_min_ms = cfg->backoff_min_ms > 0 ? cfg->backoff_min_ms : 100;
	c->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 2000;
	if (c->backoff_max_ms < c->backoff_min_ms)
		c->backoff_max_ms = c->backoff_min_ms;
	c->log_hook = cfg->log_hook;
	c->log_arg = cfg->log_arg;
	c->multi = curl_multi_init();
	c->timer_ev = evtimer_new(base, timer_cb, c);
	if (!ok || !c->multi || !c->timer_ev) {
		snprintf(err, errlen, "out of memory");
		client_destroy(c);
		return NULL;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_sock_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	return c;
}

/* Unlink w from the live list, cancel its traffic and park it for freeing. */
static void watch_retire(EtcdWatch *w)
{
	EtcdClient *c = w->client;

	w->stopped = true;
	watch_drop_stream(w);
	if (w->aux) {
		req_cancel(w->aux);
		w->aux = NULL;
	}
	evtimer_del(w->retry_ev);
	if (w->prev)
		w->prev->next = w->next;
	else if (c->watches == w)
		c->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = NULL;
	w->next = c->dead_watches;
	c->dead_watches = w;
}

void etcd_client_free(EtcdClient *c)
{
	if (!c || c->freeing)
		return;
	c->freeing = true;
	while (c->watches)
		watch_retire(c->watches);
	/* Owners get every accepted request back exactly once, even now: they may have an
	 * allocation riding on arg. New requests from these callbacks are refused (freeing). */
	while (c->requests)
		req_cancel_notify(c->requests);
	if (c->busy == 0)
		client_destroy(c);
}

const char *etcd_client_endpoint(const EtcdClient *c)
{
	return c->endpoints[c->good_ep];
}

/*
 * Unary API
 */

static bool call(EtcdClient *c, EtcdReplyKind kind, const char *path, char *body, bool retry_safe,
		 EtcdCallback cb, void *arg)
{
	EtcdRequest *req;

	if (c->freeing) {
		free(body);
		return false;
	}
	req = req_new(c, ROLE_USER, kind, path, body);
	if (!req)
		return false;
	req->cb = cb;
	req->arg = arg;
	req->retry_safe = retry_safe;
	return req_submit_api(req);
}

bool etcd_lease_grant(EtcdClient *c, int64_t ttl_s, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_LEASE_GRANT, "/v3/lease/grant", etcd_json_lease_grant(ttl_s),
		    false, cb, arg);
}

bool etcd_lease_keepalive(EtcdClient *c, int64_t lease_id, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_LEASE_KEEPALIVE, "/v3/lease/keepalive",
		    etcd_json_lease_id(lease_id), true, cb, arg);
}

bool etcd_lease_revoke(EtcdClient *c, int64_t lease_id, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_LEASE_REVOKE, "/v3/lease/revoke", etcd_json_lease_id(lease_id),
		    false, cb, arg);
}

bool etcd_lease_timetolive(EtcdClient *c, int64_t lease_id, bool keys, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_LEASE_TIMETOLIVE, "/v3/lease/timetolive",
		    etcd_json_lease_timetolive(lease_id, keys), true, cb, arg);
}

bool etcd_range(EtcdClient *c, const char *key, bool prefix, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_RANGE, "/v3/kv/range", etcd_json_range(key, prefix, 0, false),
		    true, cb, arg);
}

bool etcd_put(EtcdClient *c, const char *key, const char *value, int64_t lease, EtcdCallback cb,
	      void *arg)
{
	return call(c, ETCD_REPLY_PUT, "/v3/kv/put", etcd_json_put(key, value, lease), false, cb,
		    arg);
}

bool etcd_deleterange(EtcdClient *c, const char *key, bool prefix, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_DELETERANGE, "/v3/kv/deleterange",
		    etcd_json_deleterange(key, prefix), false, cb, arg);
}

bool etcd_txn(EtcdClient *c, const EtcdTxn *txn, EtcdCallback cb, void *arg)
{
	return call(c, ETCD_REPLY_TXN, "/v3/kv/txn", etcd_txn_body(txn), false, cb, arg);
}

/*
 * Watch API
 */

EtcdWatch *etcd_watch_start(EtcdClient *c, const char *key, bool prefix, int64_t start_revision,
			    EtcdWatchCallback cb, EtcdWatchStatusCallback status_cb, void *arg)
{
	EtcdWatch *w;

	if (c->freeing || !cb)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->client = c;
	w->key = strdup(key);
	w->retry_ev = evtimer_new(c->base, watch_retry_cb, w);
	w->idle_ev = evtimer_new(c->base, watch_idle_cb, w);
	if (!w->key || !w->retry_ev || !w->idle_ev) {
		watch_free_mem(w);
		return NULL;
	}
	w->prefix = prefix;
	w->next_rev = start_revision > 0 ? start_revision : 0;
	w->cb = cb;
	w->status_cb = status_cb;
	w->arg = arg;
	w->backoff_ms = c->backoff_min_ms;
	w->next = c->watches;
	if (c->watches)
		c->watches->prev = w;
	c->watches = w;
	/* Connect from the loop, so that no callback can run inside this call. */
	w->state = WATCH_BACKOFF;
	{
		struct timeval tv = ms_tv(0);
		evtimer_add(w->retry_ev, &tv);
	}
	return w;
}

void etcd_watch_stop(EtcdWatch *w)
{
	EtcdClient *c;

	if (!w || w->stopped)
		return;
	c = w->client;
	watch_retire(w);
	if (c->busy == 0) {
		c->dead_watches = w->next;
		watch_free_mem(w);
	}
}

int64_t etcd_watch_next_revision(const EtcdWatch *w)
{
	return w->next_rev;
}
