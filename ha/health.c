/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Non-blocking libpq tasks driven by libevent, and the health probe built on them. A task is a
 * small state machine: CONNECTING (PQconnectPoll tells which socket event to wait for), then
 * SENDING / READING for each statement; one timer bounds it all and one exit (task_finish)
 * calls the owner back once. The socket may change while connecting (several addresses), so the
 * socket event is re-made at each wait.
 */
#include "ha/health.h"
#include "ha/member_json.h"

#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum TaskState {
	TASK_CONNECTING, /* PQconnectPoll in progress */
	TASK_SENDING,    /* a statement was sent, flushing the output */
	TASK_READING,    /* waiting for its results */
	TASK_DONE,       /* the callback was called (or the task was cancelled) */
} TaskState;

struct HaPgTask {
	struct event_base *base;
	PGconn *conn;
	struct event *sock_ev; /* re-made at each wait: the socket can change while connecting */
	struct event *timer;   /* the task's timeout, and the deferred start/failure */
	TaskState state;
	char **sql;
	int nsql, next;
	PGresult *last;  /* result of the last statement run */
	HaPgError early; /* a failure found while starting, reported from the loop */
	char early_msg[256];
	HaPgDone cb;
	void *arg;
	/* health probe */
	HaHealthDone hcb;
	void *harg;
	bool local;
};

static void task_wait(HaPgTask *t, short what);

int64_t ha_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *ha_pg_error_name(HaPgError e)
{
	static const char *const names[] = {
	    [HA_PGERR_NONE] = "ok",
	    [HA_PGERR_REFUSED] = "refused",
	    [HA_PGERR_TIMEOUT] = "timeout",
	    [HA_PGERR_AUTH] = "authentication failed",
	    [HA_PGERR_STARTING] = "starting or stopping",
	    [HA_PGERR_CONNECT] = "connection failed",
	    [HA_PGERR_QUERY] = "query failed",
	    [HA_PGERR_NOMEM] = "out of memory",
	};

	if ((unsigned)e >= ARRAY_SIZE(names))
		return "unknown";
	return names[e];
}

HaDownCause ha_pg_error_down_cause(HaPgError e)
{
	switch (e) {
	case HA_PGERR_NONE:
		return HA_DOWN_NONE;
	case HA_PGERR_STARTING:
		return HA_DOWN_PG_DOWN;
	case HA_PGERR_QUERY:
	case HA_PGERR_AUTH:
		return HA_DOWN_QUERY;
	default:
		return HA_DOWN_UNREACHABLE;
	}
}

/* The first line of a libpq message, without the trailing newline. */
static void one_line(char *dst, size_t len, const char *msg)
{
	size_t n;

	snprintf(dst, len, "%s", msg ? msg : "");
	n = strcspn(dst, "\n");
	dst[n] = '\0';
	if (n && dst[n - 1] == '\r')
		dst[n - 1] = '\0';
}

static HaPgError classify_connect(const char *msg)
{
	if (!msg)
		return HA_PGERR_CONNECT;
	if (strstr(msg, "Connection refused") || strstr(msg, "No such file or directory") ||
	    strstr(msg, "could not translate host name"))
		return HA_PGERR_REFUSED;
	if (strstr(msg, "authentication failed") || strstr(msg, "pg_hba.conf") ||
	    strstr(msg, "password"))
		return HA_PGERR_AUTH;
	if (strstr(msg, "starting up") || strstr(msg, "shutting down") ||
	    strstr(msg, "recovery mode") || strstr(msg, "not yet accepting"))
		return HA_PGERR_STARTING;
	return HA_PGERR_CONNECT;
}

static void task_free(HaPgTask *t)
{
	if (t->sock_ev)
		event_free(t->sock_ev);
	if (t->timer)
		event_free(t->timer);
	if (t->conn)
		PQfinish(t->conn);
	if (t->last)
		PQclear(t->last);
	for (int i = 0; i < t->nsql; i++)
		free(t->sql[i]);
	free(t->sql);
	free(t);
}

/* The one exit: call the owner back once, then free. */
static void task_finish(HaPgTask *t, HaPgError e, const char *msg)
{
	char line[256];

	if (t->state == TASK_DONE)
		return;
	t->state = TASK_DONE;
	one_line(line, sizeof(line), msg);
	if (t->cb)
		t->cb(t->arg, e, e == HA_PGERR_NONE ? t->last : NULL, line);
	task_free(t);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	HaPgTask *t = arg;

	if (t->early != HA_PGERR_NONE) {
		task_finish(t, t->early, t->early_msg);
		return;
	}
	task_finish(t, HA_PGERR_TIMEOUT, "timeout expired");
}

/* Send the next statement, or finish when all ran. */
static void task_send_next(HaPgTask *t)
{
	if (t->next >= t->nsql) {
		task_finish(t, HA_PGERR_NONE, NULL);
		return;
	}
	if (!PQsendQuery(t->conn, t->sql[t->next])) {
		task_finish(t, HA_PGERR_QUERY, PQerrorMessage(t->conn));
		return;
	}
	t->next++;
	t->state = TASK_SENDING;
	task_wait(t, EV_WRITE);
}

static void sock_cb(evutil_socket_t fd, short what, void *arg)
{
	HaPgTask *t = arg;
	PGresult *r;
	int f;

	switch (t->state) {
	case TASK_CONNECTING:
		switch (PQconnectPoll(t->conn)) {
		case PGRES_POLLING_READING:
			task_wait(t, EV_READ);
			return;
		case PGRES_POLLING_WRITING:
			task_wait(t, EV_WRITE);
			return;
		case PGRES_POLLING_OK:
			if (PQsetnonblocking(t->conn, 1) != 0) {
				task_finish(t, HA_PGERR_CONNECT, PQerrorMessage(t->conn));
				return;
			}
			task_send_next(t);
			return;
		default: {
			const char *msg = PQerrorMessage(t->conn);

			task_finish(t, classify_connect(msg), msg);
			return;
		}
		}
	case TASK_SENDING:
		f = PQflush(t->conn);
		if (f < 0) {
			task_finish(t, HA_PGERR_QUERY, PQerrorMessage(t->conn));
			return;
		}
		if (f > 0) {
			task_wait(t, EV_WRITE);
			return;
		}
		t->state = TASK_READING;
		/* the answer may already be buffered */
		/* fall through */
	case TASK_READING:
		if (!PQconsumeInput(t->conn)) {
			task_finish(t, HA_PGERR_QUERY, PQerrorMessage(t->conn));
			return;
		}
		while (!PQisBusy(t->conn)) {
			r = PQgetResult(t->conn);
			if (r == NULL) {
				task_send_next(t);
				return;
			}
			switch (PQresultStatus(r)) {
			case PGRES_TUPLES_OK:
			case PGRES_COMMAND_OK:
			case PGRES_EMPTY_QUERY:
				if (t->last)
					PQclear(t->last);
				t->last = r;
				break;
			default: {
				char msg[256];

				one_line(msg, sizeof(msg), PQresultErrorMessage(r));
				PQclear(r);
				task_finish(t, HA_PGERR_QUERY, msg);
				return;
			}
			}
		}
		task_wait(t, EV_READ);
		return;
	case TASK_DONE:
		return;
	}
}

static void task_wait(HaPgTask *t, short what)
{
	int fd = PQsocket(t->conn);

	if (t->sock_ev) {
		event_free(t->sock_ev);
		t->sock_ev = NULL;
	}
	if (fd >= 0)
		t->sock_ev = event_new(t->base, fd, what, sock_cb, t);
	if (!t->sock_ev || event_add(t->sock_ev, NULL) != 0) {
		/* report from the loop: the caller may still be inside ha_pg_run() */
		t->early = fd < 0 ? HA_PGERR_CONNECT : HA_PGERR_NOMEM;
		snprintf(t->early_msg, sizeof(t->early_msg), "%s",
			 fd < 0 ? "connection has no socket" : "could not add a socket event");
		event_active(t->timer, EV_TIMEOUT, 0);
	}
}

static HaPgTask *task_new(struct event_base *base, const char *conninfo, const char *host, int port,
			  const char *const *sql, int nsql, int timeout_ms, HaPgDone cb, void *arg)
{
	HaPgTask *t = calloc(1, sizeof(*t));
	const char *kw[6], *val[6];
	char portbuf[16], tmo[16];
	struct timeval tv;
	int n = 0;

	if (!t)
		return NULL;
	t->base = base;
	t->cb = cb;
	t->arg = arg;
	t->sql = calloc((size_t)(nsql > 0 ? nsql : 1), sizeof(char *));
	t->timer = evtimer_new(base, timeout_cb, t);
	if (!t->sql || !t->timer)
		goto fail;
	for (int i = 0; i < nsql; i++) {
		if (!(t->sql[i] = strdup(sql[i])))
			goto fail;
		t->nsql++;
	}
	/* later keywords win over the expanded conninfo (libpq: "the last value is used") */
	kw[n] = "dbname";
	val[n++] = conninfo ? conninfo : "";
	if (host && *host) {
		kw[n] = "host";
		val[n++] = host;
	}
	if (port > 0) {
		snprintf(portbuf, sizeof(portbuf), "%d", port);
		kw[n] = "port";
		val[n++] = portbuf;
	}
	snprintf(tmo, sizeof(tmo), "%d", timeout_ms / 1000 > 2 ? timeout_ms / 1000 : 2);
	kw[n] = "connect_timeout";
	val[n++] = tmo;
	kw[n] = NULL;
	val[n] = NULL;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	if (evtimer_add(t->timer, &tv) != 0)
		goto fail;
	t->conn = PQconnectStartParams(kw, val, 1);
	if (!t->conn || PQstatus(t->conn) == CONNECTION_BAD) {
		const char *msg = t->conn ? PQerrorMessage(t->conn) : "out of memory";

		t->early = t->conn ? classify_connect(msg) : HA_PGERR_NOMEM;
		one_line(t->early_msg, sizeof(t->early_msg), msg);
		event_active(t->timer, EV_TIMEOUT, 0);
		return t;
	}
	t->state = TASK_CONNECTING;
	task_wait(t, EV_WRITE);
	return t;
fail:
	task_free(t);
	return NULL;
}

HaPgTask *ha_pg_run(struct event_base *base, const char *conninfo, const char *host, int port,
		    const char *const *sql, int nsql, int timeout_ms, HaPgDone cb, void *arg)
{
	return task_new(base, conninfo, host, port, sql, nsql, timeout_ms, cb, arg);
}

void ha_pg_cancel(HaPgTask *t)
{
	if (!t || t->state == TASK_DONE)
		return;
	t->state = TASK_DONE;
	task_free(t);
}

/* Health probe */

static const char health_sql[] =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn() END,"
    " pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(),"
    " CASE WHEN pg_is_in_recovery()"
    "  THEN coalesce(r.received_tli, (SELECT timeline_id FROM pg_control_checkpoint()))"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " r.status, r.sender_host, r.sender_port,"
    " (SELECT system_identifier FROM pg_control_system())";
static const char health_from[] =
    " FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver r ON true";

static uint64_t col_lsn(const PGresult *r, int col)
{
	uint64_t v = 0;

	if (!PQgetisnull(r, 0, col) && !ha_lsn_parse(PQgetvalue(r, 0, col), &v))
		v = 0;
	return v;
}

static void probe_done(void *arg, HaPgError e, const PGresult *r, const char *error)
{
	HaPgTask *t = arg;
	HaHealth h;

	memset(&h, 0, sizeof(h));
	h.at_ms = ha_now_ms();
	h.error = e;
	snprintf(h.detail, sizeof(h.detail), "%s", error ? error : "");
	if (e == HA_PGERR_NONE && (!r || PQntuples(r) != 1 || PQnfields(r) < 10)) {
		h.error = HA_PGERR_QUERY;
		snprintf(h.detail, sizeof(h.detail), "unexpected health query result");
	}
	if (h.error == HA_PGERR_NONE) {
		h.in_recovery = PQgetvalue(r, 0, 0)[0] == 't';
		h.write_lsn = col_lsn(r, 1);
		h.flush_lsn = col_lsn(r, 2);
		h.receive_lsn = col_lsn(r, 3);
		h.replay_lsn = col_lsn(r, 4);
		if (!PQgetisnull(r, 0, 5))
			h.timeline = (uint32_t)strtoul(PQgetvalue(r, 0, 5), NULL, 10);
		snprintf(h.wal_status, sizeof(h.wal_status), "%s", PQgetvalue(r, 0, 6));
		snprintf(h.sender_host, sizeof(h.sender_host), "%s", PQgetvalue(r, 0, 7));
		h.sender_port = atoi(PQgetvalue(r, 0, 8));
		snprintf(h.system_id, sizeof(h.system_id), "%s", PQgetvalue(r, 0, 9));
		if (t->local && PQnfields(r) >= 11 && !PQgetisnull(r, 0, 10)) {
			const char *ci = PQgetvalue(r, 0, 10);

			h.has_conninfo = true;
			if (!*ci ||
			    !ha_conninfo_host_port(ci, h.upstream_host, sizeof(h.upstream_host),
						   &h.upstream_port)) {
				h.upstream_host[0] = '\0';
				h.upstream_port = 0;
			}
		}
	}
	t->hcb(t->harg, &h);
}

HaPgTask *ha_health_probe(struct event_base *base, const char *conninfo, const char *host, int port,
			  bool local, int timeout_ms, HaHealthDone cb, void *arg)
{
	char sql[1024];
	const char *one[1] = {sql};
	HaPgTask *t;

	snprintf(sql, sizeof(sql), "%s%s%s", health_sql,
		 local ? ", current_setting('primary_conninfo')" : "", health_from);
	t = task_new(base, conninfo, host, port, one, 1, timeout_ms, probe_done, NULL);
	if (!t)
		return NULL;
	t->arg = t; /* the first callback fires from the loop, after this */
	t->hcb = cb;
	t->harg = arg;
	t->local = local;
	return t;
}

void ha_health_apply(const HaHealth *h, HaMember *m, bool local)
{
	if (h->error == HA_PGERR_NONE) {
		m->healthy = true;
		m->down_cause = HA_DOWN_NONE;
		m->state = HA_PG_RUNNING;
		m->in_recovery = h->in_recovery;
		m->role = h->in_recovery ? HA_ROLE_REPLICA : HA_ROLE_PRIMARY;
		if (h->timeline)
			m->timeline = h->timeline;
		m->write_lsn = h->write_lsn;
		m->flush_lsn = h->flush_lsn;
		m->receive_lsn = h->receive_lsn;
		m->replay_lsn = h->replay_lsn;
		m->last_seen_ms = h->at_ms;
		return;
	}
	m->healthy = false;
	m->down_cause = ha_pg_error_down_cause(h->error);
	if (!local)
		return;
	/* the local node: the state the rules act on */
	switch (h->error) {
	case HA_PGERR_REFUSED:
		m->state =
		    HA_PG_STOPPED; /* the agent tells crashed from stopped by postmaster.pid */
		m->down_cause = HA_DOWN_PG_DOWN;
		break;
	case HA_PGERR_STARTING:
		m->state = HA_PG_STARTING;
		break;
	default:
		m->state = HA_PG_UNKNOWN;
		break;
	}
}
