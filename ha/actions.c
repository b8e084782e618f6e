/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The local-node actions (see actions.h) as step lists. A run executes its steps in order: an
 * SQL step through ha_pg_run, a child step (pg_ctl, pg_rewind) forked and exec'd as the owner of
 * pg_data with its output kept for the report, a file step done at once (small writes in
 * pg_data). One run timer bounds the whole action; a failure ends it with the step's message,
 * except where a step says it is tolerated (the fence SQL on a node that no longer answers).
 * Two steps look at /proc instead: the clean-up before every start kills the orphans of a
 * crashed server and removes its stale postmaster.pid; the halt kills every process of the
 * server on pg_data. Both poll every 20 ms until the processes are gone.
 *
 * A rewind keeps the node's own configuration files (read into memory before pg_rewind, written
 * back after it), and failed starts back off per data directory (start_backoff_*): the start
 * step waits out the delay, a failure's outcome carries the server log's reason.
 */
#include "ha/actions.h"
#include "ha/health.h"
#include "ha/member_json.h"

#include <event2/event.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_STEPS 12
#define CHILD_POLL_MS 100
#define OUT_TAIL 400
#define SCAN_POLL_MS 20
#define SCAN_MAX 256
#define KILLED_MAX 64
/* how long the clean-up before a start waits for the killed orphans to exit */
#define CLEANUP_WAIT_MS 500
/* the halt ends once no process was seen for this long (a pg_ctl child may be mid-exec) */
#define HALT_QUIET_MS 100
/* how often a promotion in progress is checked (and the promote signal sent again) */
#define PROMOTE_POLL_MS 100

static const char *const pg_names[] = {"postgres", NULL};
static const char *const halt_names[] = {"postgres", "pg_ctl", NULL};

typedef enum StepKind {
	STEP_FENCE_SQL,         /* read-only + reload + terminate client backends (tolerated) */
	STEP_STOP_FAST,         /* pg_ctl stop -m fast; on failure STOP_IMMEDIATE is put next */
	STEP_STOP_IMMEDIATE,    /* pg_ctl stop -m immediate */
	STEP_CONF_STANDBY,      /* standby.signal + primary_conninfo, read-only setting removed */
	STEP_CONF_STANDBY_NOUP, /* standby.signal, no primary_conninfo (rewind preparation) */
	STEP_START,             /* pg_ctl start -w */
	STEP_PROMOTE_SQL,       /* reset read-only, reload, pg_promote(false) */
	STEP_CONFIRM_PRIMARY,   /* poll pg_is_in_recovery() = false, nudging with pg_promote */
	STEP_REPOINT_SQL,       /* ALTER SYSTEM SET primary_conninfo + reload */
	STEP_REWIND,            /* pg_rewind from the source */
	STEP_CLEANUP, /* before a start: kill the orphans of a dead postmaster, drop its pidfile */
	STEP_HALT,    /* SIGKILL every process of the server on pg_data, wait until all are gone */
	STEP_CONF_SAVE,    /* before pg_rewind: read the node's configuration files into memory */
	STEP_CONF_RESTORE, /* after pg_rewind: write them back */
	STEP_SOURCE_CHECKPOINT, /* CHECKPOINT on the rewind source (tolerated) */
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
	    [STEP_CLEANUP] = "clean-up after the old server",
	    [STEP_HALT] = "halt",
	    [STEP_CONF_SAVE] = "configuration backup",
	    [STEP_CONF_RESTORE] = "configuration restore",
	    [STEP_SOURCE_CHECKPOINT] = "checkpoint on the source",
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
	struct event *scan;  /* the polls of STEP_CLEANUP, STEP_HALT, STEP_CONFIRM_PRIMARY */
	uid_t pg_uid;        /* owner of pg_data: the server's processes run as it */
	int64_t scan_deadline_ms;
	int64_t quiet_since_ms; /* STEP_HALT: since when no process was seen; 0 = one was */
	pid_t killed[KILLED_MAX];
	int nkilled;
	char note[600]; /* what the clean-up, halt or rewind did, added to the outcome */
	bool started;
	bool start_waited;  /* STEP_START: the back-off wait is over, start now */
	bool conf_restored; /* the configuration backup was written back (or not needed) */
	HaConfBackup conf;  /* STEP_CONF_SAVE .. STEP_CONF_RESTORE */
	off_t log_offset;   /* STEP_START: size of pgpilot-postgres.log before pg_ctl start */
	HaActionDone cb;
	void *arg;
	char done_msg[1000];
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

/* Processes of a data directory, as /proc shows them */

const char *ha_pidfile_name(HaPidfile s)
{
	switch (s) {
	case HA_PIDFILE_NONE:
		return "none";
	case HA_PIDFILE_RUNNING:
		return "running";
	case HA_PIDFILE_STALE:
		return "stale";
	}
	return "unknown";
}

/* State letter and command name from /proc/<pid>/stat; false when the process is gone. */
static bool proc_stat(pid_t pid, char *state, char *comm, size_t len)
{
	char path[64], buf[512], *open_p, *close_p;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold spaces and parentheses, the last ')' ends it */
	open_p = strchr(buf, '(');
	close_p = strrchr(buf, ')');
	if (!open_p || !close_p || close_p < open_p || close_p[1] != ' ' || !close_p[2])
		return false;
	snprintf(comm, len, "%.*s", (int)(close_p - open_p - 1), open_p + 1);
	*state = close_p[2];
	return true;
}

static bool name_in(const char *name, const char *const *names)
{
	for (; *names; names++)
		if (strcmp(name, *names) == 0)
			return true;
	return false;
}

/* Read the symlink /proc/<pid>/<what>; false with errno set when it cannot be read. */
static bool proc_link(pid_t pid, const char *what, char *out, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	n = readlink(path, out, len - 1);
	if (n <= 0)
		return false;
	out[n] = '\0';
	return true;
}

/*
 * Is <pid> a live process of <uid> named like one of <names> (its command name or its
 * executable's base name) whose working directory is <dir> (a real path)? A working directory
 * we may not read counts as <dir> only when <unreadable_cwd_matches>.
 */
static bool proc_matches(pid_t pid, uid_t uid, const char *dir, const char *const *names,
			 bool unreadable_cwd_matches)
{
	char path[64], link[PATH_MAX], comm[64], st;
	struct stat sb;

	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	if (stat(path, &sb) != 0 || sb.st_uid != uid)
		return false;
	if (!proc_stat(pid, &st, comm, sizeof(comm)) || st == 'Z' || st == 'X')
		return false;
	if (!name_in(comm, names)) {
		const char *base;

		if (!proc_link(pid, "exe", link, sizeof(link)))
			return false;
		base = strrchr(link, '/');
		if (!name_in(base ? base + 1 : link, names))
			return false;
	}
	if (!proc_link(pid, "cwd", link, sizeof(link)))
		return unreadable_cwd_matches && (errno == EACCES || errno == EPERM);
	return strcmp(link, dir) == 0;
}

int ha_proc_find(const char *dir, uid_t uid, const char *const *names, pid_t *out, int max)
{
	char real[PATH_MAX];
	struct dirent *e;
	pid_t self = getpid();
	int n = 0;
	DIR *d;

	if (!realpath(dir, real) || !(d = opendir("/proc")))
		return -1;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 0 || pid == self ||
		    !proc_matches((pid_t)pid, uid, real, names, false))
			continue;
		if (n < max)
			out[n] = (pid_t)pid;
		n++;
	}
	closedir(d);
	return n;
}

HaPidfile ha_pg_pidfile_check(const char *pg_data, pid_t *pid)
{
	char path[4096], real[PATH_MAX], line[64], *end;
	struct stat st;
	long v;
	FILE *f;

	if (pid)
		*pid = 0;
	snprintf(path, sizeof(path), "%s/postmaster.pid", pg_data);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? HA_PIDFILE_NONE : HA_PIDFILE_RUNNING;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return HA_PIDFILE_RUNNING; /* empty: a postmaster is writing it right now */
	}
	fclose(f);
	errno = 0;
	v = strtol(line, &end, 10);
	/* a negative PID is a single-user backend; garbage is left for PostgreSQL to judge */
	if (errno || end == line || v <= 0 || v > INT_MAX || (*end != '\n' && *end != '\0'))
		return HA_PIDFILE_RUNNING;
	if (pid)
		*pid = (pid_t)v;
	if (stat(pg_data, &st) != 0 || !realpath(pg_data, real))
		return HA_PIDFILE_RUNNING; /* cannot tell: hands off */
	return proc_matches((pid_t)v, st.st_uid, real, pg_names, true) ? HA_PIDFILE_RUNNING
								       : HA_PIDFILE_STALE;
}

/* Back-off of failed starts */

int64_t ha_backoff_delay_ms(int failures, int64_t min_ms, int64_t max_ms)
{
	int64_t d = min_ms;

	if (failures <= 0)
		return 0;
	/* doubling stops at the cap, so no shift or product can overflow */
	for (int i = 1; i < failures && d < max_ms; i++)
		d = d > max_ms / 2 ? max_ms : d * 2;
	return d < max_ms ? d : max_ms;
}

void ha_backoff_failed(HaBackoff *b, int64_t now_ms, int64_t min_ms, int64_t max_ms)
{
	if (b->failures < INT_MAX)
		b->failures++;
	b->not_before_ms = now_ms + ha_backoff_delay_ms(b->failures, min_ms, max_ms);
}

void ha_backoff_reset(HaBackoff *b)
{
	b->failures = 0;
	b->not_before_ms = 0;
}

int64_t ha_backoff_wait_ms(const HaBackoff *b, int64_t now_ms)
{
	return b->failures > 0 && b->not_before_ms > now_ms ? b->not_before_ms - now_ms : 0;
}

/* The failed starts per data directory: one agent per process, a few in tests. The slot of a
 * directory whose starts succeed again is reused. */
#define BACKOFF_SLOTS 8
static struct {
	char pg_data[PATH_MAX];
	HaBackoff b;
} start_backoffs[BACKOFF_SLOTS];

static HaBackoff *start_backoff_slot(const char *pg_data, bool create)
{
	int free_slot = -1;

	if (strlen(pg_data) >= PATH_MAX)
		return NULL;
	for (int i = 0; i < BACKOFF_SLOTS; i++) {
		if (start_backoffs[i].pg_data[0] && strcmp(start_backoffs[i].pg_data, pg_data) == 0)
			return &start_backoffs[i].b;
		if (free_slot < 0 && start_backoffs[i].b.failures == 0)
			free_slot = i;
	}
	if (!create || free_slot < 0)
		return NULL;
	snprintf(start_backoffs[free_slot].pg_data, PATH_MAX, "%s", pg_data);
	ha_backoff_reset(&start_backoffs[free_slot].b);
	return &start_backoffs[free_slot].b;
}

HaBackoff ha_start_backoff(const char *pg_data)
{
	HaBackoff *b = start_backoff_slot(pg_data, false), none = {0, 0};

	return b ? *b : none;
}

void ha_start_backoff_clear(const char *pg_data)
{
	HaBackoff *b = start_backoff_slot(pg_data, false);

	if (b)
		ha_backoff_reset(b);
}

/* Why a start failed: the telling lines of the server log */

static bool line_tells(const char *p, size_t n)
{
	static const char *const marks[] = {
	    "FATAL:", "PANIC:", "ERROR:", "WARNING:", "HINT:", "could not"};

	for (size_t i = 0; i < ARRAY_SIZE(marks); i++) {
		size_t m = strlen(marks[i]);

		for (size_t j = 0; j + m <= n; j++)
			if (memcmp(p + j, marks[i], m) == 0)
				return true;
	}
	return false;
}

size_t ha_pg_log_cause(const char *log, char *out, size_t outlen)
{
	const char *starts[3];
	size_t lens[3], len = 0;
	int found = 0;

	if (!outlen)
		return 0;
	out[0] = '\0';
	if (!log)
		return 0;
	/* two passes from the end: lines that tell (up to 3), else the last 2 lines */
	for (int pass = 0; pass < 2 && found == 0; pass++) {
		const char *end = log + strlen(log);

		while (end > log && found < (pass == 0 ? 3 : 2)) {
			const char *e = end, *b;

			while (e > log && (e[-1] == '\n' || e[-1] == '\r'))
				e--;
			b = e;
			while (b > log && b[-1] != '\n')
				b--;
			if (e > b && (pass == 1 || line_tells(b, (size_t)(e - b)))) {
				starts[found] = b;
				lens[found] = (size_t)(e - b) > 200 ? 200 : (size_t)(e - b);
				found++;
			}
			end = b;
		}
	}
	for (int i = found - 1; i >= 0; i--) {
		int n = snprintf(out + len, outlen - len, "%s%.*s", len ? " | " : "", (int)lens[i],
				 starts[i]);

		if (n < 0 || (size_t)n >= outlen - len) {
			len = strlen(out);
			break;
		}
		len += (size_t)n;
	}
	return len;
}

/* The node's configuration files across a rewind */

const char *const ha_conf_files[HA_CONF_FILES_N] = {"postgresql.conf", "postgresql.auto.conf",
						    "pg_hba.conf", "pg_ident.conf"};

void ha_conf_backup_cleanup(HaConfBackup *b)
{
	for (int i = 0; i < HA_CONF_BACKUP_MAX; i++) {
		free(b->f[i].data);
		b->f[i].data = NULL;
		b->f[i].len = 0;
		b->f[i].present = false;
		b->f[i].name[0] = '\0';
	}
	b->n = 0;
	b->taken = false;
}

void ha_conf_includes(const char *conf, void (*fn)(void *arg, const char *name), void *arg)
{
	const char *p = conf;

	while (p && *p) {
		const char *eol = strchr(p, '\n'), *q = p, *v;
		size_t kw;

		if (!eol)
			eol = p + strlen(p);
		while (q < eol && (*q == ' ' || *q == '\t'))
			q++;
		if ((size_t)(eol - q) > 17 && strncmp(q, "include_if_exists", 17) == 0)
			kw = 17;
		else if ((size_t)(eol - q) > 7 && strncmp(q, "include", 7) == 0)
			kw = 7;
		else
			kw = 0;
		if (kw && (q[kw] == ' ' || q[kw] == '\t' || q[kw] == '=' || q[kw] == '\'')) {
			q += kw;
			while (q < eol && (*q == ' ' || *q == '\t'))
				q++;
			if (q < eol && *q == '=')
				q++;
			while (q < eol && (*q == ' ' || *q == '\t'))
				q++;
			if (q < eol && *q == '\'') {
				char name[HA_CONF_NAME_MAX];
				size_t n;

				v = ++q;
				while (q < eol && *q != '\'' && *q != '/')
					q++;
				n = (size_t)(q - v);
				if (q < eol && *q == '\'' && n > 0 && n < sizeof(name) &&
				    !(n == 1 && v[0] == '.') &&
				    !(n == 2 && v[0] == '.' && v[1] == '.')) {
					memcpy(name, v, n);
					name[n] = '\0';
					fn(arg, name);
				}
			}
		}
		p = *eol ? eol + 1 : eol;
	}
}

/* Add <name> to the backup's list unless it is there or the list is full. */
static void conf_add_name(void *arg, const char *name)
{
	HaConfBackup *b = arg;

	for (int i = 0; i < b->n; i++)
		if (strcmp(b->f[i].name, name) == 0)
			return;
	if (b->n < HA_CONF_BACKUP_MAX)
		snprintf(b->f[b->n++].name, HA_CONF_NAME_MAX, "%s", name);
}

/* Read file <i> of the backup from <pg_data>; an absent file is noted, not an error. */
static bool conf_read_one(HaConfBackup *b, int i, const char *pg_data, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	size_t got = 0;
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", pg_data, b->f[i].name) >= (int)sizeof(path)) {
		snprintf(err, errlen, "data directory path too long");
		return false;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return true;
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "could not read \"%.300s\": %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > HA_CONF_FILE_MAX) {
		snprintf(err, errlen, "\"%.300s\" is %s", path,
			 S_ISREG(st.st_mode) ? "larger than 4 MB" : "not a regular file");
		close(fd);
		return false;
	}
	b->f[i].data = malloc((size_t)st.st_size + 1);
	if (!b->f[i].data) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		return false;
	}
	errno = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b->f[i].data + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		snprintf(err, errlen, "could not read \"%.300s\": %s", path,
			 errno ? strerror(errno) : "short read");
		return false;
	}
	b->f[i].data[got] = '\0';
	b->f[i].len = got;
	b->f[i].mode = (unsigned)(st.st_mode & 07777);
	b->f[i].present = true;
	return true;
}

bool ha_conf_backup_take(HaConfBackup *b, const char *pg_data, char *err, size_t errlen)
{
	ha_conf_backup_cleanup(b);
	for (int i = 0; i < HA_CONF_FILES_N; i++)
		conf_add_name(b, ha_conf_files[i]);
	/* the list grows with what the configuration files read so far include */
	for (int i = 0; i < b->n; i++) {
		if (!conf_read_one(b, i, pg_data, err, errlen)) {
			ha_conf_backup_cleanup(b);
			return false;
		}
		if (b->f[i].present && strcmp(b->f[i].name, "pg_hba.conf") != 0 &&
		    strcmp(b->f[i].name, "pg_ident.conf") != 0)
			ha_conf_includes(b->f[i].data, conf_add_name, b);
	}
	b->taken = true;
	return true;
}

bool ha_conf_backup_restore(const HaConfBackup *b, const char *pg_data, char *err, size_t errlen)
{
	struct stat dir;

	if (!b->taken)
		return true;
	if (stat(pg_data, &dir) != 0) {
		snprintf(err, errlen, "could not stat \"%.300s\": %s", pg_data, strerror(errno));
		return false;
	}
	for (int i = 0; i < b->n; i++) {
		char path[PATH_MAX], tmp[PATH_MAX + 16];
		size_t done = 0;
		int fd;

		snprintf(path, sizeof(path), "%s/%s", pg_data, b->f[i].name);
		if (!b->f[i].present) {
			if (unlink(path) != 0 && errno != ENOENT) {
				snprintf(err, errlen, "could not remove \"%.300s\": %s", path,
					 strerror(errno));
				return false;
			}
			continue;
		}
		snprintf(tmp, sizeof(tmp), "%s.pgpilot-tmp", path);
		errno = 0;
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			goto write_failed;
		while (done < b->f[i].len) {
			ssize_t n = write(fd, b->f[i].data + done, b->f[i].len - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			done += (size_t)n;
		}
		if (done != b->f[i].len || fchmod(fd, (mode_t)b->f[i].mode) != 0 ||
		    (geteuid() == 0 && fchown(fd, dir.st_uid, dir.st_gid) != 0)) {
			close(fd);
			goto write_failed;
		}
		if (close(fd) != 0)
			goto write_failed;
		if (rename(tmp, path) != 0) {
			snprintf(err, errlen, "could not rename \"%.300s\": %s", tmp,
				 strerror(errno));
			unlink(tmp);
			return false;
		}
		continue;
	write_failed:
		snprintf(err, errlen, "could not write \"%.300s\": %s", tmp,
			 errno ? strerror(errno) : "short write");
		unlink(tmp);
		return false;
	}
	return true;
}

static void run_free(HaActionRun *r)
{
	if (r->task)
		ha_pg_cancel(r->task);
	if (r->child > 0) {
		/* the child is a session leader (setsid): its group goes too, but not a postmaster
		 * pg_ctl launched, which has its own session (ha_action_halt is for that) */
		kill(-r->child, SIGKILL);
		kill(r->child, SIGKILL);
		(void)waitpid(r->child, NULL, 0);
	}
	if (r->child_fd >= 0)
		close(r->child_fd);
	if (r->poll)
		event_free(r->poll);
	if (r->timer)
		event_free(r->timer);
	if (r->scan)
		event_free(r->scan);
	free(r->pg_conn);
	free(r->pg_data);
	free(r->pg_bin);
	free(r->conninfo);
	free(r->source);
	ha_conf_backup_cleanup(&r->conf);
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
	if (r->conf.taken && !r->conf_restored) {
		/* a rewind that ended early: the node keeps its own configuration all the same */
		char err[300];
		size_t len = strlen(msg);

		if (!ha_conf_backup_restore(&r->conf, r->pg_data, err, sizeof(err)))
			snprintf(msg + len, sizeof(msg) - len, "; %s", err);
	}
	if (!ok && r->cur < r->nsteps && r->steps[r->cur] == STEP_START) {
		HaBackoff *b = start_backoff_slot(r->pg_data, true);
		size_t len = strlen(msg);

		if (b) {
			ha_backoff_failed(b, ha_now_ms(), HA_START_BACKOFF_MIN_MS,
					  HA_START_BACKOFF_MAX_MS);
			snprintf(msg + len, sizeof(msg) - len,
				 " (%d failed start%s in a row: the next start waits %.0f s)",
				 b->failures, b->failures == 1 ? "" : "s",
				 (double)ha_backoff_wait_ms(b, ha_now_ms()) / 1000.0);
		}
	}
	run_free(r);
	cb(arg, ok, msg);
}

static int64_t left_ms(const HaActionRun *r)
{
	int64_t left = r->deadline_ms - ha_now_ms();

	return left > 0 ? left : 1;
}

/* Move the action's deadline (and its timer) <ms> later: a start's back-off wait. */
static void extend_deadline(HaActionRun *r, int64_t ms)
{
	int64_t left;
	struct timeval tv;

	r->deadline_ms += ms;
	r->timeout_ms = r->timeout_ms > INT_MAX - (int)ms ? INT_MAX : r->timeout_ms + (int)ms;
	left = left_ms(r);
	tv.tv_sec = (time_t)(left / 1000);
	tv.tv_usec = (suseconds_t)((left % 1000) * 1000);
	evtimer_del(r->timer);
	evtimer_add(r->timer, &tv);
}

/* After step <cur> succeeded (or failed in a tolerated way). */
static void run_next(HaActionRun *r)
{
	r->cur++;
	if (r->cur >= r->nsteps) {
		run_finish(r, true, "%s done%s%s%s", r->name, r->note[0] ? " (" : "", r->note,
			   r->note[0] ? ")" : "");
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

/* Path of the log pg_ctl start writes. */
static void start_log_path(const HaActionRun *r, char *path, size_t len)
{
	snprintf(path, len, "%s/pgpilot-postgres.log", r->pg_data);
}

/* What the server logged since this start began (r->log_offset), read back to explain why it
 * did not start: the last 8 kB at most. */
static void start_failed_cause(HaActionRun *r, char *out, size_t len)
{
	char path[4096], buf[8193];
	struct stat st;
	off_t from = r->log_offset;
	ssize_t n;
	int fd;

	out[0] = '\0';
	start_log_path(r, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return;
	}
	if (st.st_size < from)
		from = 0; /* replaced (a rewind copies the source's) */
	if (st.st_size - from > (off_t)(sizeof(buf) - 1))
		from = st.st_size - (off_t)(sizeof(buf) - 1);
	n = pread(fd, buf, sizeof(buf) - 1, from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* a NUL in the log ends the text there */
	(void)ha_pg_log_cause(buf, out, len);
}

static void child_done(HaActionRun *r, int status)
{
	StepKind k = r->steps[r->cur];
	bool ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	const char *out = out_text(r);
	char cause[500] = "";

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
			static const StepKind again[] = {STEP_CONF_STANDBY_NOUP,
							 STEP_CLEANUP,
							 STEP_START,
							 STEP_STOP_FAST,
							 STEP_SOURCE_CHECKPOINT,
							 STEP_REWIND,
							 STEP_CONF_RESTORE,
							 STEP_CONF_STANDBY,
							 STEP_CLEANUP,
							 STEP_START};

			r->rewind_retried = true;
			memcpy(r->steps, again, sizeof(again));
			r->nsteps = (int)ARRAY_SIZE(again);
			r->cur = 0;
			run_step(r);
			return;
		}
		if (ok && out[0]) {
			/* what pg_rewind did ("servers diverged at ...", "no rewind required") */
			size_t len = strlen(r->note);

			snprintf(r->note + len, sizeof(r->note) - len, "%s%s", len ? ", " : "",
				 out);
		}
		break;
	case STEP_START:
		if (ok) {
			ha_start_backoff_clear(r->pg_data);
			break;
		}
		start_failed_cause(r, cause, sizeof(cause));
		break;
	default:
		break;
	}
	if (ok) {
		run_next(r);
		return;
	}
	run_finish(r, false, "%s failed in step %s (%s): %s%s%s", r->name, step_name(k),
		   status < 0          ? "lost the child"
		   : WIFEXITED(status) ? "exit code"
				       : "killed by a signal",
		   out[0] ? out : "no output", cause[0] ? "; server log: " : "", cause);
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

/* The clean-up before a start and the halt: /proc polls */

static void scan_round(HaActionRun *r);

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
	HaActionRun *r = arg;

	if (r->steps[r->cur] == STEP_CONFIRM_PRIMARY || r->steps[r->cur] == STEP_START)
		run_step(r); /* check the promotion again; the start's back-off is over */
	else
		scan_round(r);
}

/* Run the current step again after <ms> (the poll steps). */
static void poll_again(HaActionRun *r, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (!r->scan)
		r->scan = evtimer_new(r->base, scan_cb, r);
	if (!r->scan || evtimer_add(r->scan, &tv) != 0)
		run_finish(r, false, "%s: out of memory", r->name);
}

static void remember_killed(HaActionRun *r, pid_t pid)
{
	for (int i = 0; i < r->nkilled; i++)
		if (r->killed[i] == pid)
			return;
	if (r->nkilled < KILLED_MAX)
		r->killed[r->nkilled++] = pid;
}

/*
 * Remove the lock files a dead postmaster left: postmaster.pid and the lock file of its first
 * socket directory (lines 4 and 5 of postmaster.pid), the latter only when it names the same
 * PID. PostgreSQL would remove them itself if that PID were gone, but a zombie (an orphaned
 * postmaster that init has not reaped yet) still answers kill(pid, 0). Only called when
 * ha_pg_pidfile_check() said STALE.
 */
static void remove_stale_locks(HaActionRun *r)
{
	char path[4096], sock[4096], line[1024], pidline[64] = "", sockdir[1024] = "";
	int port = 0, n = 0;
	size_t len = strlen(r->note);
	FILE *f;

	snprintf(path, sizeof(path), "%s/postmaster.pid", r->pg_data);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f) && ++n <= 5) {
		line[strcspn(line, "\n")] = '\0';
		if (n == 1)
			snprintf(pidline, sizeof(pidline), "%.63s", line);
		else if (n == 4)
			port = atoi(line);
		else if (n == 5)
			snprintf(sockdir, sizeof(sockdir), "%.1023s", line);
	}
	fclose(f);
	if (unlink(path) != 0)
		return;
	snprintf(r->note + len, sizeof(r->note) - len, "%sremoved a stale postmaster.pid",
		 len ? ", " : "");
	if (!sockdir[0] || port <= 0 || !pidline[0])
		return;
	snprintf(sock, sizeof(sock), "%s%s%s/.s.PGSQL.%d.lock", sockdir[0] == '/' ? "" : r->pg_data,
		 sockdir[0] == '/' ? "" : "/", sockdir, port);
	f = fopen(sock, "re");
	if (!f)
		return;
	n = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	if (n && strcmp(line, pidline) == 0 && unlink(sock) == 0) {
		len = strlen(r->note);
		snprintf(r->note + len, sizeof(r->note) - len, " and its socket lock file");
	}
}

/* The processes are gone (or the clean-up gave up waiting): finish the step. */
static void scan_finished(HaActionRun *r, int left)
{
	if (r->nkilled)
		snprintf(r->note, sizeof(r->note), "killed %d server process%s", r->nkilled,
			 r->nkilled == 1 ? "" : "es");
	if (left)
		snprintf(r->note + strlen(r->note), sizeof(r->note) - strlen(r->note),
			 "%s%d still there after %d ms", r->note[0] ? ", " : "", left,
			 CLEANUP_WAIT_MS);
	if (r->steps[r->cur] == STEP_CLEANUP &&
	    ha_pg_pidfile_check(r->pg_data, NULL) == HA_PIDFILE_STALE)
		remove_stale_locks(r);
	run_next(r);
}

/* One round: SIGKILL what is left; done when nothing is (for the halt: for HALT_QUIET_MS). */
static void scan_round(HaActionRun *r)
{
	StepKind k = r->steps[r->cur];
	pid_t pids[SCAN_MAX];
	int64_t now = ha_now_ms();
	int n = ha_proc_find(r->pg_data, r->pg_uid, k == STEP_HALT ? halt_names : pg_names, pids,
			     SCAN_MAX);

	if (n < 0) {
		if (k == STEP_CLEANUP) {
			run_next(r); /* no /proc: pg_ctl start reports what is in the way */
			return;
		}
		run_finish(r, false,
			   "%s failed in step %s: could not list the processes of "
			   "\"%s\": %s",
			   r->name, step_name(k), r->pg_data, strerror(errno));
		return;
	}
	for (int i = 0; i < n && i < SCAN_MAX; i++)
		if (kill(pids[i], SIGKILL) == 0)
			remember_killed(r, pids[i]);
	if (n > 0)
		r->quiet_since_ms = 0;
	else if (!r->quiet_since_ms)
		r->quiet_since_ms = now;
	if (n == 0 && (k == STEP_CLEANUP || now - r->quiet_since_ms >= HALT_QUIET_MS)) {
		scan_finished(r, 0);
		return;
	}
	if (k == STEP_CLEANUP && now >= r->scan_deadline_ms) {
		scan_finished(r, n); /* pg_ctl start says what still holds the data dir */
		return;
	}
	poll_again(r, SCAN_POLL_MS);
}

static void run_scan(HaActionRun *r)
{
	StepKind k = r->steps[r->cur];
	struct stat st;

	if (stat(r->pg_data, &st) != 0) {
		if (k == STEP_CLEANUP)
			run_next(r); /* pg_ctl start reports it */
		else
			run_finish(r, false, "%s failed in step %s: could not stat \"%s\": %s",
				   r->name, step_name(k), r->pg_data, strerror(errno));
		return;
	}
	r->pg_uid = st.st_uid;
	r->quiet_since_ms = 0;
	r->scan_deadline_ms = ha_now_ms() + CLEANUP_WAIT_MS;
	/* a live postmaster is not an orphan: leave it, pg_ctl start will say it runs */
	if (k == STEP_CLEANUP && ha_pg_pidfile_check(r->pg_data, NULL) == HA_PIDFILE_RUNNING) {
		run_next(r);
		return;
	}
	scan_round(r);
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
	if (k == STEP_SOURCE_CHECKPOINT) {
		if (e != HA_PGERR_NONE) {
			size_t len = strlen(r->note);

			/* pg_rewind runs all the same; it may find "no rewind required" */
			snprintf(r->note + len, sizeof(r->note) - len,
				 "%scould not checkpoint the source: %s: %.200s", len ? ", " : "",
				 ha_pg_error_name(e), error ? error : "");
		}
		run_next(r);
		return;
	}
	if (k == STEP_FENCE_SQL) {
		run_next(r); /* tolerated: the node may already be unreachable; the stop follows */
		return;
	}
	if ((k == STEP_PROMOTE_SQL || k == STEP_CONFIRM_PRIMARY) && e == HA_PGERR_QUERY &&
	    strstr(error, "recovery is not in progress")) {
		/* promoted already (an earlier attempt, or just now): the confirmation decides */
		if (k == STEP_PROMOTE_SQL)
			run_next(r);
		else
			run_step(r);
		return;
	}
	if (e != HA_PGERR_NONE) {
		run_finish(r, false, "%s failed in step %s: %s: %s", r->name, step_name(k),
			   ha_pg_error_name(e), error);
		return;
	}
	if (k == STEP_PROMOTE_SQL &&
	    (!res || PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't')) {
		run_finish(r, false, "%s: pg_promote() could not signal the postmaster", r->name);
		return;
	}
	if (k == STEP_CONFIRM_PRIMARY &&
	    (!res || PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 'f')) {
		poll_again(r, PROMOTE_POLL_MS); /* still in recovery: the signal went again */
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
	case STEP_START: {
		HaBackoff b = ha_start_backoff(r->pg_data);
		int64_t wait = r->start_waited ? 0 : ha_backoff_wait_ms(&b, ha_now_ms());
		struct stat st;

		if (wait > 0) {
			/* earlier starts failed: wait, then give the start its full time */
			r->start_waited = true;
			extend_deadline(r, wait);
			poll_again(r, (int)wait);
			return;
		}
		r->start_waited = false;
		start_log_path(r, err, sizeof(err));
		r->log_offset = stat(err, &st) == 0 ? st.st_size : 0;
		run_pg_ctl(r, "start", NULL);
		return;
	}
	case STEP_CONF_SAVE:
		r->conf_restored = false;
		if (!ha_conf_backup_take(&r->conf, r->pg_data, err, sizeof(err))) {
			run_finish(r, false, "%s failed in step %s: %s", r->name, step_name(k),
				   err);
			return;
		}
		run_next(r);
		return;
	case STEP_CONF_RESTORE:
		r->conf_restored = true;
		if (!ha_conf_backup_restore(&r->conf, r->pg_data, err, sizeof(err))) {
			run_finish(r, false, "%s failed in step %s: %s", r->name, step_name(k),
				   err);
			return;
		}
		if (r->conf.taken) {
			size_t len = strlen(r->note);

			snprintf(r->note + len, sizeof(r->note) - len,
				 "%skept the node's own configuration files", len ? ", " : "");
		}
		run_next(r);
		return;
	case STEP_PROMOTE_SQL: {
		static const char *const promote[] = {
		    "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()",
		    "SELECT pg_promote(false)"};

		run_sql(r, promote, (int)ARRAY_SIZE(promote), left_ms(r));
		return;
	}
	case STEP_CONFIRM_PRIMARY: {
		/*
		 * Not pg_promote(true): PostgreSQL 15's startup process, when its WAL stream was
		 * lost moments before, may sleep up to wal_retrieve_retry_interval (5 s) after it
		 * has seen the request. Each poll sends the signal again, which wakes it.
		 */
		static const char *const q[] = {
		    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_promote(false) ELSE false END"};

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
	case STEP_SOURCE_CHECKPOINT: {
		/*
		 * A freshly promoted source's control file names its new timeline only after the
		 * checkpoint that ends recovery; before that pg_rewind compares the old timeline
		 * and says "no rewind required" (Patroni waits for that checkpoint too).
		 */
		static const char *const q[] = {"CHECKPOINT"};

		r->task = ha_pg_run(r->base, r->source ? r->source : "", NULL, 0, q, 1,
				    (int)left_ms(r), sql_done, r);
		if (!r->task)
			run_finish(r, false, "%s: out of memory", r->name);
		return;
	}
	case STEP_CLEANUP:
	case STEP_HALT:
		run_scan(r);
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
					 STEP_CLEANUP, STEP_START};
	HaActionRun *r = run_new("demote", n, conninfo, NULL, timeout_ms, cb, arg, steps,
				 (int)ARRAY_SIZE(steps));

	if (r)
		r->fence_ms = fence_ms;
	return r;
}

HaActionRun *ha_action_start(const HaNode *n, bool standby, const char *conninfo, int timeout_ms,
			     HaActionDone cb, void *arg)
{
	static const StepKind as_standby[] = {STEP_CONF_STANDBY, STEP_CLEANUP, STEP_START};
	static const StepKind as_is[] = {STEP_CLEANUP, STEP_START};

	if (standby)
		return run_new("start as standby", n, conninfo, NULL, timeout_ms, cb, arg,
			       as_standby, (int)ARRAY_SIZE(as_standby));
	return run_new("restart", n, conninfo, NULL, timeout_ms, cb, arg, as_is,
		       (int)ARRAY_SIZE(as_is));
}

HaActionRun *ha_action_rewind(const HaNode *n, const char *source, const char *conninfo,
			      int timeout_ms, HaActionDone cb, void *arg)
{
	/* the clean-up first: pg_ctl stop would wait on a stale postmaster.pid */
	static const StepKind steps[] = {STEP_CLEANUP,           STEP_STOP_FAST, STEP_CONF_SAVE,
					 STEP_SOURCE_CHECKPOINT, STEP_REWIND,    STEP_CONF_RESTORE,
					 STEP_CONF_STANDBY,      STEP_CLEANUP,   STEP_START};

	return run_new("rewind", n, conninfo, source, timeout_ms, cb, arg, steps,
		       (int)ARRAY_SIZE(steps));
}

HaActionRun *ha_action_halt(const HaNode *n, int timeout_ms, HaActionDone cb, void *arg)
{
	static const StepKind steps[] = {STEP_HALT};

	return run_new("halt", n, NULL, NULL, timeout_ms, cb, arg, steps, 1);
}

void ha_action_settle(HaActionRun *r, int max_ms)
{
	int64_t until = ha_now_ms() + max_ms;
	StepKind k;

	if (!r || r->child <= 0)
		return;
	k = r->steps[r->cur];
	if (k != STEP_START && k != STEP_STOP_FAST && k != STEP_STOP_IMMEDIATE)
		return;
	while (ha_now_ms() < until) {
		struct timespec ts = {0, 10 * 1000000L};
		pid_t p = waitpid(r->child, NULL, WNOHANG);

		if (p == r->child || (p < 0 && errno != EINTR)) {
			r->child = 0; /* reaped: run_free must not wait for it again */
			return;
		}
		if (k == STEP_START && ha_pg_pidfile_check(r->pg_data, NULL) == HA_PIDFILE_RUNNING)
			return;
		nanosleep(&ts, NULL);
	}
}

void ha_action_cancel(HaActionRun *r)
{
	if (r)
		run_free(r);
}
