/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The local-node actions (see actions.h) as step lists. A run executes its steps in order: an
 * SQL step through ha_pg_run, a child step (pg_ctl, pg_rewind) forked and exec'd as the owner of
 * pg_data with its output kept for the report, a file step done at once (small writes in
 * pg_data). One run timer bounds the whole action; a failure ends it with the step's message,
 * except where a step says it is tolerated (the fence SQL on a node that no longer answers).
 */
#include "ha/actions.h"
#include "ha/health.h"
#include "ha/member_json.h"

#include <event2/event.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_STEPS 12
#define CHILD_POLL_MS 100
#define OUT_TAIL 400

typedef enum StepKind {
	STEP_FENCE_SQL,         /* read-only + reload + terminate client backends (tolerated) */
	STEP_STOP_FAST,         /* pg_ctl stop -m fast; on failure STOP_IMMEDIATE is put next */
	STEP_STOP_IMMEDIATE,    /* pg_ctl stop -m immediate */
	STEP_CONF_STANDBY,      /* standby.signal + primary_conninfo, read-only setting removed */
	STEP_CONF_STANDBY_NOUP, /* standby.signal, no primary_conninfo (rewind preparation) */
	STEP_START,             /* pg_ctl start -w */
	STEP_PROMOTE_SQL,       /* reset read-only, pg_promote(true, n) */
	STEP_CONFIRM_PRIMARY,   /* pg_is_in_recovery() = false */
	STEP_REPOINT_SQL,       /* ALTER SYSTEM SET primary_conninfo + reload */
	STEP_REWIND,            /* pg_rewind from the source */
} StepKind;

static const char *step_name(StepKind k)
{
	static const char *const names[] = {
	    [STEP_FENCE_SQL] = "fence",
	    [STEP_STOP_FAST] = "stop (fast)",
	    [STEP_STOP_IMMEDIATE] = "stop (immediate)",
	    [STEP_CONF_STANDBY] = "standby configuration",
	    [STEP_CONF_STANDBY_NOUP] = "standby configuration",
	    [STEP_START] = "start",
	    [STEP_PROMOTE_SQL] = "promote",
	    [STEP_CONFIRM_PRIMARY] = "confirm promotion",
	    [STEP_REPOINT_SQL] = "re-point",
	    [STEP_REWIND] = "pg_rewind",
	};

	return (unsigned)k < ARRAY_SIZE(names) ? names[k] : "unknown";
}

struct HaActionRun {
	const char *name;
	struct event_base *base;
	char *pg_conn, *pg_data, *pg_bin, *conninfo, *source;
	int timeout_ms, fence_ms;
	int64_t deadline_ms;
	StepKind steps[MAX_STEPS];
	int nsteps, cur;
	bool rewind_retried;
	HaPgTask *task;
	pid_t child;
	int child_fd;
	char out[OUT_TAIL + 1]; /* the tail of the child's output */
	size_t outlen;
	struct event *poll;  /* child reaping */
	struct event *timer; /* the whole action's timeout; also the deferred start */
	bool started;
	HaActionDone cb;
	void *arg;
	char done_msg[512];
};

static void run_step(HaActionRun *r);

const char *ha_action_run_name(const HaActionRun *r)
{
	return r->name;
}

bool ha_pg_pidfile_exists(const char *pg_data)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/postmaster.pid", pg_data);
	return access(path, F_OK) == 0;
}

static void run_free(HaActionRun *r)
{
	if (r->task)
		ha_pg_cancel(r->task);
	if (r->child > 0) {
		kill(r->child, SIGKILL);
		(void)waitpid(r->child, NULL, 0);
	}
	if (r->child_fd >= 0)
		close(r->child_fd);
	if (r->poll)
		event_free(r->poll);
	if (r->timer)
		event_free(r->timer);
	free(r->pg_conn);
	free(r->pg_data);
	free(r->pg_bin);
	free(r->conninfo);
	free(r->source);
	free(r);
}

/* The one exit. */
static void run_finish(HaActionRun *r, bool ok, const char *fmt, ...) _PRINTF(3, 4);
static void run_finish(HaActionRun *r, bool ok, const char *fmt, ...)
{
	va_list ap;
	HaActionDone cb = r->cb;
	void *arg = r->arg;
	char msg[sizeof(r->done_msg)];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	run_free(r);
	cb(arg, ok, msg);
}

static int64_t left_ms(const HaActionRun *r)
{
	int64_t left = r->deadline_ms - ha_now_ms();

	return left > 0 ? left : 1;
}

/* After step <cur> succeeded (or failed in a tolerated way). */
static void run_next(HaActionRun *r)
{
	r->cur++;
	if (r->cur >= r->nsteps) {
		run_finish(r, true, "%s done", r->name);
		return;
	}
	run_step(r);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	HaActionRun *r = arg;

	if (!r->started) {
		r->started = true;
		{
			struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};

			evtimer_add(r->timer, &tv);
		}
		run_step(r);
		return;
	}
	run_finish(r, false, "%s timed out after %d ms in step %s", r->name, r->timeout_ms,
		   step_name(r->steps[r->cur]));
}

/* Child processes */

static const char *out_text(HaActionRun *r)
{
	char *p;

	r->out[r->outlen] = '\0';
	/* one line for the log: newlines become "; " */
	while ((p = strchr(r->out, '\n')) != NULL) {
		if (p[1] == '\0')
			*p = '\0';
		else
			*p = ' ';
	}
	return r->out;
}

static void child_read(HaActionRun *r)
{
	char buf[512];
	ssize_t n;

	while (r->child_fd >= 0 && (n = read(r->child_fd, buf, sizeof(buf))) > 0) {
		size_t k = (size_t)n;

		if (k >= OUT_TAIL) {
			memcpy(r->out, buf + k - OUT_TAIL, OUT_TAIL);
			r->outlen = OUT_TAIL;
			continue;
		}
		if (r->outlen + k > OUT_TAIL) {
			size_t drop = r->outlen + k - OUT_TAIL;

			memmove(r->out, r->out + drop, r->outlen - drop);
			r->outlen -= drop;
		}
		memcpy(r->out + r->outlen, buf, k);
		r->outlen += k;
	}
}

static void child_done(HaActionRun *r, int status);

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	HaActionRun *r = arg;
	int status;
	pid_t p;

	child_read(r);
	p = waitpid(r->child, &status, WNOHANG);
	if (p == 0 || (p < 0 && errno == EINTR)) {
		struct timeval tv = {0, CHILD_POLL_MS * 1000};

		evtimer_add(r->poll, &tv);
		return;
	}
	r->child = 0;
	child_read(r);
	close(r->child_fd);
	r->child_fd = -1;
	child_done(r, p < 0 ? -1 : status);
}

/* fork + exec argv as the owner of pg_data; the output goes to a pipe we read. */
static bool child_spawn(HaActionRun *r, char *const argv[])
{
	struct stat st;
	struct timeval tv = {0, CHILD_POLL_MS * 1000};
	int fds[2];
	pid_t pid;

	r->outlen = 0;
	if (stat(r->pg_data, &st) != 0) {
		snprintf(r->out, sizeof(r->out), "could not stat \"%.300s\": %s", r->pg_data,
			 strerror(errno));
		r->outlen = strlen(r->out);
		return false;
	}
	if (pipe2(fds, O_CLOEXEC) != 0)
		return false;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return false;
	}
	if (pid == 0) {
		sigset_t none;
		int null = open("/dev/null", O_RDONLY);

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		if (null >= 0)
			dup2(null, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		/* the pooler's sockets must not leak into the postmaster */
		for (int fd = 3; fd < 65536; fd++)
			if (close(fd) != 0 && fd > 1024)
				break;
		setsid();
		if (geteuid() == 0) {
			if (setgroups(0, NULL) != 0 || setgid(st.st_gid) != 0 ||
			    setuid(st.st_uid) != 0)
				_exit(126);
		}
		if (chdir(r->pg_data) != 0 && chdir("/") != 0)
			_exit(126);
		execv(argv[0], argv);
		fprintf(stderr, "could not execute \"%s\": %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	r->child = pid;
	r->child_fd = fds[0];
	if (!r->poll)
		r->poll = evtimer_new(r->base, poll_cb, r);
	if (!r->poll || evtimer_add(r->poll, &tv) != 0) {
		kill(pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		r->child = 0;
		return false;
	}
	return true;
}

static void child_done(HaActionRun *r, int status)
{
	StepKind k = r->steps[r->cur];
	bool ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	const char *out = out_text(r);

	switch (k) {
	case STEP_STOP_FAST:
	case STEP_STOP_IMMEDIATE:
		/* "not running" is what a stop wants */
		if (ok || !ha_pg_pidfile_exists(r->pg_data)) {
			run_next(r);
			return;
		}
		if (k == STEP_STOP_FAST && r->nsteps < MAX_STEPS) {
			memmove(&r->steps[r->cur + 2], &r->steps[r->cur + 1],
				(size_t)(r->nsteps - r->cur - 1) * sizeof(StepKind));
			r->steps[r->cur + 1] = STEP_STOP_IMMEDIATE;
			r->nsteps++;
			run_next(r);
			return;
		}
		break;
	case STEP_REWIND:
		if (!ok && !r->rewind_retried && strstr(out, "shut down cleanly")) {
			/* crash-recover it as a standby without upstream, stop, rewind again */
			static const StepKind again[] = {STEP_CONF_STANDBY_NOUP, STEP_START,
							 STEP_STOP_FAST,         STEP_REWIND,
							 STEP_CONF_STANDBY,      STEP_START};

			r->rewind_retried = true;
			memcpy(r->steps, again, sizeof(again));
			r->nsteps = (int)ARRAY_SIZE(again);
			r->cur = 0;
			run_step(r);
			return;
		}
		break;
	default:
		break;
	}
	if (ok) {
		run_next(r);
		return;
	}
	run_finish(r, false, "%s failed in step %s (%s): %s", r->name, step_name(k),
		   status < 0          ? "lost the child"
		   : WIFEXITED(status) ? "exit code"
				       : "killed by a signal",
		   out[0] ? out : "no output");
}

static void run_pg_ctl(HaActionRun *r, const char *op, const char *mode)
{
	char bin[4096], secs[16], logf[4096];
	char *argv[12];
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/pg_ctl", r->pg_bin);
	snprintf(secs, sizeof(secs), "%d",
		 (int)(left_ms(r) / 1000) > 1 ? (int)(left_ms(r) / 1000) : 1);
	argv[n++] = bin;
	argv[n++] = (char *)op;
	argv[n++] = "-D";
	argv[n++] = r->pg_data;
	argv[n++] = "-w";
	argv[n++] = "-t";
	argv[n++] = secs;
	if (mode) {
		argv[n++] = "-m";
		argv[n++] = (char *)mode;
	}
	if (strcmp(op, "start") == 0) {
		snprintf(logf, sizeof(logf), "%s/pgpilot-postgres.log", r->pg_data);
		argv[n++] = "-l";
		argv[n++] = logf;
	}
	argv[n] = NULL;
	if (!child_spawn(r, argv))
		run_finish(r, false, "%s: could not run pg_ctl %s: %s", r->name, op,
			   r->outlen ? out_text(r) : strerror(errno));
}

static void run_rewind(HaActionRun *r)
{
	char bin[4096], target[4096], source[4096];
	char *argv[] = {bin, target, source, NULL};

	snprintf(bin, sizeof(bin), "%s/pg_rewind", r->pg_bin);
	snprintf(target, sizeof(target), "--target-pgdata=%s", r->pg_data);
	snprintf(source, sizeof(source), "--source-server=%s", r->source);
	if (!child_spawn(r, argv))
		run_finish(r, false, "%s: could not run pg_rewind: %s", r->name,
			   r->outlen ? out_text(r) : strerror(errno));
}

/* Files in pg_data */

/* Write <data> to pg_data/<name> atomically, owned like pg_data. */
static bool write_pg_file(HaActionRun *r, const char *name, const char *data, char *err,
			  size_t errlen)
{
	char path[4096], tmp[4200];
	struct stat st;
	size_t len = strlen(data);
	int fd;

	snprintf(path, sizeof(path), "%s/%s", r->pg_data, name);
	snprintf(tmp, sizeof(tmp), "%s.pgpilot-tmp", path);
	if (stat(r->pg_data, &st) != 0) {
		snprintf(err, errlen, "could not stat \"%.300s\": %s", r->pg_data, strerror(errno));
		return false;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len ||
	    (geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) != 0) || close(fd) != 0) {
		snprintf(err, errlen, "could not write \"%.300s\": %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		return false;
	}
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "could not rename \"%.300s\": %s", tmp, strerror(errno));
		unlink(tmp);
		return false;
	}
	return true;
}

static char *read_pg_file(HaActionRun *r, const char *name)
{
	char path[4096];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", r->pg_data, name);
	f = fopen(path, "re");
	if (!f)
		return strdup("");
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    !(buf = malloc((size_t)n + 1))) {
		fclose(f);
		return NULL;
	}
	n = (long)fread(buf, 1, (size_t)n, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool conf_standby(HaActionRun *r, const char *conninfo, char *err, size_t errlen)
{
	char *conf = read_pg_file(r, "postgresql.auto.conf"), *a = NULL, *b = NULL;
	bool ok = false;

	if (conf && (a = ha_auto_conf_set(conf, "primary_conninfo", conninfo)) &&
	    (b = ha_auto_conf_set(a, "default_transaction_read_only", NULL)))
		ok = write_pg_file(r, "postgresql.auto.conf", b, err, errlen) &&
		     write_pg_file(r, "standby.signal", "", err, errlen);
	else
		snprintf(err, errlen, "out of memory");
	free(conf);
	free(a);
	free(b);
	return ok;
}

/* SQL steps */

static void sql_done(void *arg, HaPgError e, const PGresult *res, const char *error)
{
	HaActionRun *r = arg;
	StepKind k = r->steps[r->cur];

	r->task = NULL;
	if (k == STEP_FENCE_SQL) {
		run_next(r); /* tolerated: the node may already be unreachable; the stop follows */
		return;
	}
	if (k == STEP_PROMOTE_SQL && e == HA_PGERR_QUERY &&
	    strstr(error, "recovery is not in progress")) {
		run_next(r); /* promoted already (an earlier attempt): the confirmation decides */
		return;
	}
	if (e != HA_PGERR_NONE) {
		run_finish(r, false, "%s failed in step %s: %s: %s", r->name, step_name(k),
			   ha_pg_error_name(e), error);
		return;
	}
	if (k == STEP_PROMOTE_SQL &&
	    (!res || PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't')) {
		run_finish(r, false, "%s: pg_promote() did not finish in time", r->name);
		return;
	}
	if (k == STEP_CONFIRM_PRIMARY &&
	    (!res || PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 'f')) {
		run_finish(r, false, "%s: the node is still in recovery after pg_promote()",
			   r->name);
		return;
	}
	run_next(r);
}

static void run_sql(HaActionRun *r, const char *const *sql, int n, int64_t timeout)
{
	r->task = ha_pg_run(r->base, r->pg_conn, NULL, 0, sql, n, (int)timeout, sql_done, r);
	if (!r->task)
		run_finish(r, false, "%s: out of memory", r->name);
}

static void run_step(HaActionRun *r)
{
	StepKind k = r->steps[r->cur];
	char sql[2048], lit[1800], err[512];

	switch (k) {
	case STEP_FENCE_SQL: {
		static const char *const fence[] = {
		    "ALTER SYSTEM SET default_transaction_read_only = on",
		    "SELECT pg_reload_conf()",
		    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
		    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
		};
		int64_t t = r->fence_ms < left_ms(r) ? r->fence_ms : left_ms(r);

		run_sql(r, fence, (int)ARRAY_SIZE(fence), t);
		return;
	}
	case STEP_STOP_FAST:
		run_pg_ctl(r, "stop", "fast");
		return;
	case STEP_STOP_IMMEDIATE:
		run_pg_ctl(r, "stop", "immediate");
		return;
	case STEP_CONF_STANDBY:
	case STEP_CONF_STANDBY_NOUP:
		if (!conf_standby(r, k == STEP_CONF_STANDBY ? r->conninfo : NULL, err,
				  sizeof(err))) {
			run_finish(r, false, "%s failed in step %s: %s", r->name, step_name(k),
				   err);
			return;
		}
		run_next(r);
		return;
	case STEP_START:
		run_pg_ctl(r, "start", NULL);
		return;
	case STEP_PROMOTE_SQL: {
		const char *promote[3] = {"ALTER SYSTEM RESET default_transaction_read_only",
					  "SELECT pg_reload_conf()", sql};
		int secs = (int)(left_ms(r) / 1000);

		snprintf(sql, sizeof(sql), "SELECT pg_promote(true, %d)", secs > 1 ? secs : 1);
		run_sql(r, promote, 3, left_ms(r));
		return;
	}
	case STEP_CONFIRM_PRIMARY: {
		const char *q[1] = {"SELECT pg_is_in_recovery()"};

		run_sql(r, q, 1, left_ms(r));
		return;
	}
	case STEP_REPOINT_SQL: {
		const char *q[2] = {sql, "SELECT pg_reload_conf()"};

		if (!ha_quote_sql_literal(r->conninfo ? r->conninfo : "", lit, sizeof(lit))) {
			run_finish(r, false, "%s: primary_conninfo too long", r->name);
			return;
		}
		snprintf(sql, sizeof(sql), "ALTER SYSTEM SET primary_conninfo = %s", lit);
		run_sql(r, q, 2, left_ms(r));
		return;
	}
	case STEP_REWIND:
		run_rewind(r);
		return;
	}
}

static HaActionRun *run_new(const char *name, const HaNode *n, const char *conninfo,
			    const char *source, int timeout_ms, HaActionDone cb, void *arg,
			    const StepKind *steps, int nsteps)
{
	HaActionRun *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->name = name;
	r->base = n->base;
	r->child_fd = -1;
	r->cb = cb;
	r->arg = arg;
	r->timeout_ms = timeout_ms;
	r->fence_ms = timeout_ms;
	r->deadline_ms = ha_now_ms() + timeout_ms;
	r->pg_conn = strdup(n->pg_conn ? n->pg_conn : "");
	r->pg_data = strdup(n->pg_data ? n->pg_data : "");
	r->pg_bin = strdup(n->pg_bin ? n->pg_bin : "");
	r->conninfo = conninfo ? strdup(conninfo) : NULL;
	r->source = source ? strdup(source) : NULL;
	r->timer = evtimer_new(n->base, timer_cb, r);
	memcpy(r->steps, steps, (size_t)nsteps * sizeof(StepKind));
	r->nsteps = nsteps;
	if (!r->pg_conn || !r->pg_data || !r->pg_bin || (conninfo && !r->conninfo) ||
	    (source && !r->source) || !r->timer) {
		run_free(r);
		return NULL;
	}
	/* start from the loop, so the callback never fires inside the constructor */
	event_active(r->timer, EV_TIMEOUT, 0);
	return r;
}

HaActionRun *ha_action_promote(const HaNode *n, int timeout_ms, HaActionDone cb, void *arg)
{
	static const StepKind steps[] = {STEP_PROMOTE_SQL, STEP_CONFIRM_PRIMARY};

	return run_new("promote", n, NULL, NULL, timeout_ms, cb, arg, steps, 2);
}

HaActionRun *ha_action_repoint(const HaNode *n, const char *conninfo, int timeout_ms,
			       HaActionDone cb, void *arg)
{
	static const StepKind steps[] = {STEP_REPOINT_SQL};

	return run_new("re-point", n, conninfo, NULL, timeout_ms, cb, arg, steps, 1);
}

HaActionRun *ha_action_demote(const HaNode *n, const char *conninfo, int fence_ms, int timeout_ms,
			      HaActionDone cb, void *arg)
{
	static const StepKind steps[] = {STEP_FENCE_SQL, STEP_STOP_FAST, STEP_CONF_STANDBY,
					 STEP_START};
	HaActionRun *r = run_new("demote", n, conninfo, NULL, timeout_ms, cb, arg, steps, 4);

	if (r)
		r->fence_ms = fence_ms;
	return r;
}

HaActionRun *ha_action_start(const HaNode *n, bool standby, const char *conninfo, int timeout_ms,
			     HaActionDone cb, void *arg)
{
	static const StepKind as_standby[] = {STEP_CONF_STANDBY, STEP_START};
	static const StepKind as_is[] = {STEP_START};

	if (standby)
		return run_new("start as standby", n, conninfo, NULL, timeout_ms, cb, arg,
			       as_standby, 2);
	return run_new("restart", n, conninfo, NULL, timeout_ms, cb, arg, as_is, 1);
}

HaActionRun *ha_action_rewind(const HaNode *n, const char *source, const char *conninfo,
			      int timeout_ms, HaActionDone cb, void *arg)
{
	static const StepKind steps[] = {STEP_STOP_FAST, STEP_REWIND, STEP_CONF_STANDBY,
					 STEP_START};

	return run_new("rewind", n, conninfo, source, timeout_ms, cb, arg, steps, 4);
}

void ha_action_cancel(HaActionRun *r)
{
	if (r)
		run_free(r);
}
