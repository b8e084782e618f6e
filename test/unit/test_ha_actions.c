/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of the /proc side of ha/actions: postmaster.pid checks (none, live server, stale
 * PID, zombie, garbage), the process finder that spots a crashed server's orphans by owner,
 * name and working directory, and the halt action on a real event loop. A copy of sleep(1)
 * named "postgres" stands in for the server processes. The rewind's keeping of the node's
 * configuration files and the back-off of failed starts, with shell scripts standing in for
 * pg_ctl and pg_rewind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha/actions.h"

#include <event2/event.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmp[256];   /* the test's temp dir */
static char data[300];  /* tmp/data: the "data directory" */
static char other[300]; /* tmp/other: somewhere else */
static char fake[300];  /* tmp/postgres: a copy of sleep named postgres */
static const char *sleep_bin;

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out;
	ssize_t n;

	assert_true(in >= 0);
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	assert_true(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

static int setup(void **state)
{
	snprintf(tmp, sizeof(tmp), "/tmp/pgpilot-actions-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(data, sizeof(data), "%s/data", tmp);
	snprintf(other, sizeof(other), "%s/other", tmp);
	snprintf(fake, sizeof(fake), "%s/postgres", tmp);
	if (mkdir(data, 0700) != 0 || mkdir(other, 0700) != 0)
		return -1;
	sleep_bin = access("/bin/sleep", X_OK) == 0 ? "/bin/sleep" : "/usr/bin/sleep";
	copy_file(sleep_bin, fake);
	return 0;
}

static int teardown(void **state)
{
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

/* Run <prog> (argv[0] = <name>) with its working directory in <dir>; sleeps 30 s. */
static pid_t spawn_in(const char *dir, const char *prog, const char *name)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (chdir(dir) != 0)
			_exit(126);
		execl(prog, name, "30", (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Wait until <pid> has exec'd (its command name is <comm>) or is a zombie (comm NULL). */
static void wait_proc(pid_t pid, const char *comm)
{
	char path[64], buf[256];

	for (int i = 0; i < 200; i++) {
		FILE *f;
		size_t n;
		const char *p;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		f = fopen(path, "r");
		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		p = strrchr(buf, ')');
		assert_non_null(p);
		if (comm ? strncmp(strchr(buf, '(') + 1, comm, strlen(comm)) == 0 && p[2] != 'Z'
			 : p[2] == 'Z')
			return;
		sleep_ms(10);
	}
	fail_msg("process %d never reached the expected state", (int)pid);
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void write_pidfile(const char *text)
{
	char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/postmaster.pid", data);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void write_pid(pid_t pid)
{
	char line[400];

	snprintf(line, sizeof(line), "%d\n%s\n1700000000\n5432\n", (int)pid, data);
	write_pidfile(line);
}

static void remove_pidfile(void)
{
	char path[400];

	snprintf(path, sizeof(path), "%s/postmaster.pid", data);
	unlink(path);
}

static void test_pidfile_none_and_garbage(void **state)
{
	pid_t pid = 99;

	remove_pidfile();
	assert_int_equal(ha_pg_pidfile_check(data, &pid), HA_PIDFILE_NONE);
	assert_int_equal(pid, 0);
	assert_false(ha_pg_pidfile_exists(data));
	/* being written, or not ours to judge: hands off */
	write_pidfile("");
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_RUNNING);
	write_pidfile("abc\n");
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_RUNNING);
	write_pidfile("-1234\n");
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_RUNNING);
	write_pidfile("12x\n");
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_RUNNING);
	assert_true(ha_pg_pidfile_exists(data));
	remove_pidfile();
	assert_string_equal(ha_pidfile_name(HA_PIDFILE_STALE), "stale");
	assert_string_equal(ha_pidfile_name(HA_PIDFILE_RUNNING), "running");
	assert_string_equal(ha_pidfile_name(HA_PIDFILE_NONE), "none");
}

static void test_pidfile_live_server(void **state)
{
	pid_t pm = spawn_in(data, fake, "postgres"), got = 0;

	wait_proc(pm, "postgres");
	write_pid(pm);
	assert_int_equal(ha_pg_pidfile_check(data, &got), HA_PIDFILE_RUNNING);
	assert_int_equal(got, pm);
	/* killed but not reaped yet: a zombie is dead, its pidfile stale */
	kill(pm, SIGKILL);
	wait_proc(pm, NULL);
	assert_int_equal(ha_pg_pidfile_check(data, &got), HA_PIDFILE_STALE);
	assert_int_equal(got, pm);
	/* reaped: the PID is gone */
	assert_int_equal(waitpid(pm, NULL, 0), pm);
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_STALE);
	remove_pidfile();
}

static void test_pidfile_pid_reused(void **state)
{
	pid_t elsewhere = spawn_in(other, fake, "postgres");
	pid_t notpg = spawn_in(data, sleep_bin, "postgres");

	wait_proc(elsewhere, "postgres");
	wait_proc(notpg, "sleep"); /* comm and exe say sleep, whatever argv[0] says */
	/* a postgres of another data directory */
	write_pid(elsewhere);
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_STALE);
	/* some other program in the data directory */
	write_pid(notpg);
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_STALE);
	/* this test binary */
	write_pid(getpid());
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_STALE);
	reap(elsewhere);
	reap(notpg);
	remove_pidfile();
}

static void test_proc_find(void **state)
{
	static const char *const pg[] = {"postgres", NULL};
	static const char *const pg_ctl[] = {"pg_ctl", NULL};
	pid_t a = spawn_in(data, fake, "postgres"), b = spawn_in(data, fake, "postgres");
	pid_t c = spawn_in(other, fake, "postgres");
	pid_t d = spawn_in(data, sleep_bin, "postgres"); /* right place, wrong program */
	pid_t out[4] = {0};
	int n;

	wait_proc(a, "postgres");
	wait_proc(b, "postgres");
	wait_proc(c, "postgres");
	wait_proc(d, "sleep");
	n = ha_proc_find(data, getuid(), pg, out, 4);
	assert_int_equal(n, 2);
	assert_true((out[0] == a && out[1] == b) || (out[0] == b && out[1] == a));
	/* more matches than room: the count is still right */
	assert_int_equal(ha_proc_find(data, getuid(), pg, out, 1), 2);
	/* other owner, other names, other directory */
	assert_int_equal(ha_proc_find(data, getuid() + 1, pg, out, 4), 0);
	assert_int_equal(ha_proc_find(data, getuid(), pg_ctl, out, 4), 0);
	assert_int_equal(ha_proc_find(other, getuid(), pg, out, 4), 1);
	assert_int_equal(out[0], c);
	/* a path with a detour names the same directory */
	{
		char detour[400];

		snprintf(detour, sizeof(detour), "%s/../data/", other);
		assert_int_equal(ha_proc_find(detour, getuid(), pg, out, 4), 2);
	}
	/* zombies do not count */
	kill(a, SIGKILL);
	wait_proc(a, NULL);
	assert_int_equal(ha_proc_find(data, getuid(), pg, out, 4), 1);
	assert_int_equal(out[0], b);
	/* no such directory */
	assert_int_equal(ha_proc_find("/nonexistent/pgpilot", getuid(), pg, out, 4), -1);
	reap(a);
	reap(b);
	reap(c);
	reap(d);
}

typedef struct Outcome {
	bool done, ok;
	char detail[512];
	struct event_base *base;
} Outcome;

static void halt_done(void *arg, bool ok, const char *detail)
{
	Outcome *o = arg;

	o->done = true;
	o->ok = ok;
	snprintf(o->detail, sizeof(o->detail), "%s", detail);
	event_base_loopbreak(o->base);
}

static void run_halt(const char *pg_data, Outcome *o)
{
	struct event_base *base = event_base_new();
	HaNode n = {base, "", pg_data, "/nonexistent"};
	HaActionRun *r;

	assert_non_null(base);
	memset(o, 0, sizeof(*o));
	o->base = base;
	r = ha_action_halt(&n, 3000, halt_done, o);
	assert_non_null(r);
	assert_string_equal(ha_action_run_name(r), "halt");
	assert_false(o->done); /* never from inside the constructor */
	event_base_dispatch(base);
	event_base_free(base);
	assert_true(o->done);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A restart whose pg_ctl cannot even run: only the clean-up before it does something. */
static void run_restart(Outcome *o)
{
	struct event_base *base = event_base_new();
	HaNode n = {base, "", data, "/nonexistent"};

	assert_non_null(base);
	memset(o, 0, sizeof(*o));
	o->base = base;
	ha_start_backoff_clear(data); /* each restart here is a first attempt */
	assert_non_null(ha_action_start(&n, false, NULL, 3000, halt_done, o));
	event_base_dispatch(base);
	event_base_free(base);
	assert_true(o->done);
	assert_false(o->ok);
	assert_non_null(strstr(o->detail, "restart failed in step start"));
}

static void test_start_cleanup(void **state)
{
	char sockdir[400], lock[500], text[1200], pidfile[400];
	pid_t pm = spawn_in(data, fake, "postgres"), orphan = spawn_in(data, fake, "postgres");
	pid_t live;
	int status;
	Outcome o;

	snprintf(sockdir, sizeof(sockdir), "%s/sock", tmp);
	snprintf(lock, sizeof(lock), "%s/.s.PGSQL.5432.lock", sockdir);
	snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", data);
	assert_int_equal(mkdir(sockdir, 0700), 0);
	wait_proc(pm, "postgres");
	wait_proc(orphan, "postgres");
	/* the postmaster died and is a zombie nobody reaped; a backend of it lives on */
	kill(pm, SIGKILL);
	wait_proc(pm, NULL);
	snprintf(text, sizeof(text),
		 "%d\n%s\n1700000000\n5432\n%s\n127.0.0.1\n  5432001  1\nready\n", (int)pm, data,
		 sockdir);
	write_pidfile(text);
	snprintf(text, sizeof(text), "%d\n%s\n1700000000\n5432\n", (int)pm, data);
	write_file(lock, text);
	run_restart(&o);
	assert_int_equal(waitpid(orphan, &status, 0), orphan);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_NONE);
	assert_int_equal(access(lock, F_OK), -1);
	assert_int_equal(waitpid(pm, NULL, 0), pm);

	/* a socket lock file of another server is not ours to remove */
	snprintf(text, sizeof(text), "%d\n%s\n1700000000\n5432\n%s\n", (int)pm, data, sockdir);
	write_pidfile(text);
	write_file(lock, "1\n/elsewhere\n");
	run_restart(&o);
	assert_int_equal(access(pidfile, F_OK), -1);
	assert_int_equal(access(lock, F_OK), 0);
	unlink(lock);

	/* a live postmaster is no orphan: nothing is killed, nothing removed */
	live = spawn_in(data, fake, "postgres");
	wait_proc(live, "postgres");
	write_pid(live);
	run_restart(&o);
	assert_int_equal(waitpid(live, &status, WNOHANG), 0);
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_RUNNING);
	reap(live);
	remove_pidfile();
	rmdir(sockdir);
}

static void test_halt(void **state)
{
	pid_t pm = spawn_in(data, fake, "postgres"), kid = spawn_in(data, fake, "postgres");
	pid_t bystander = spawn_in(other, fake, "postgres");
	int status;
	Outcome o;

	wait_proc(pm, "postgres");
	wait_proc(kid, "postgres");
	wait_proc(bystander, "postgres");
	write_pid(pm);
	run_halt(data, &o);
	assert_true(o.ok);
	assert_non_null(strstr(o.detail, "halt done (killed 2 server processes)"));
	assert_int_equal(waitpid(pm, &status, 0), pm);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_int_equal(waitpid(kid, &status, 0), kid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* the server of another data directory lives on */
	assert_int_equal(waitpid(bystander, &status, WNOHANG), 0);
	reap(bystander);
	/* the halt leaves postmaster.pid for the next start's clean-up */
	assert_int_equal(ha_pg_pidfile_check(data, NULL), HA_PIDFILE_STALE);
	remove_pidfile();

	/* nothing running: done at once, nothing killed */
	run_halt(data, &o);
	assert_true(o.ok);
	assert_string_equal(o.detail, "halt done");

	/* no data directory: it cannot promise anything */
	run_halt("/nonexistent/pgpilot", &o);
	assert_false(o.ok);
	assert_non_null(strstr(o.detail, "halt failed in step halt: could not stat"));
}

/* --- back-off of failed starts --- */

static void test_backoff_delays(void **state)
{
	static const int64_t want[] = {0, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
	HaBackoff b = {0, 0};

	for (int i = 0; i < (int)(sizeof(want) / sizeof(want[0])); i++)
		assert_int_equal(ha_backoff_delay_ms(i, 1000, 30000), want[i]);
	assert_int_equal(ha_backoff_delay_ms(-3, 1000, 30000), 0);
	assert_int_equal(ha_backoff_delay_ms(INT32_MAX, 1000, 30000), 30000);
	assert_int_equal(ha_backoff_delay_ms(62, 1, INT64_MAX), (int64_t)1 << 61);
	assert_int_equal(ha_backoff_delay_ms(100, 1, INT64_MAX), INT64_MAX);

	assert_int_equal(ha_backoff_wait_ms(&b, 5000), 0);
	ha_backoff_failed(&b, 10000, 1000, 30000);
	assert_int_equal(b.failures, 1);
	assert_int_equal(ha_backoff_wait_ms(&b, 10000), 1000);
	assert_int_equal(ha_backoff_wait_ms(&b, 10600), 400);
	assert_int_equal(ha_backoff_wait_ms(&b, 11000), 0);
	ha_backoff_failed(&b, 11000, 1000, 30000);
	assert_int_equal(ha_backoff_wait_ms(&b, 11000), 2000);
	for (int i = 0; i < 10; i++)
		ha_backoff_failed(&b, 20000, 1000, 30000);
	assert_int_equal(b.failures, 12);
	assert_int_equal(ha_backoff_wait_ms(&b, 20000), 30000);
	ha_backoff_reset(&b);
	assert_int_equal(ha_backoff_wait_ms(&b, 20000), 0);
	b.failures = INT32_MAX;
	ha_backoff_failed(&b, 0, 1000, 30000); /* no wrap to a negative count */
	assert_int_equal(b.failures, INT32_MAX);
	assert_int_equal(ha_backoff_wait_ms(&b, 0), 30000);
}

static void test_log_cause(void **state)
{
	static const char bind_fail[] =
	    "2026-01-01 10:00:00.000 UTC [10] LOG:  starting PostgreSQL 15.8\n"
	    "2026-01-01 10:00:00.001 UTC [10] LOG:  could not bind IPv4 address "
	    "\"127.0.0.12\": Address already in use\n"
	    "2026-01-01 10:00:00.001 UTC [10] HINT:  Is another postmaster already running on "
	    "port 5433? If not, wait a few seconds and retry.\n"
	    "2026-01-01 10:00:00.002 UTC [10] WARNING:  could not create listen socket for "
	    "\"127.0.0.12\"\n"
	    "2026-01-01 10:00:00.002 UTC [10] FATAL:  could not create any TCP/IP sockets\n"
	    "2026-01-01 10:00:00.003 UTC [10] LOG:  database system is shut down\n";
	char out[600], small[40];
	size_t n;

	n = ha_pg_log_cause(bind_fail, out, sizeof(out));
	assert_int_equal(n, strlen(out));
	assert_string_equal(out,
			    "2026-01-01 10:00:00.001 UTC [10] HINT:  Is another postmaster "
			    "already running on port 5433? If not, wait a few seconds and "
			    "retry. | 2026-01-01 10:00:00.002 UTC [10] WARNING:  could not "
			    "create listen socket for \"127.0.0.12\" | 2026-01-01 "
			    "10:00:00.002 UTC [10] FATAL:  could not create any TCP/IP sockets");
	/* nothing that tells: the last two lines */
	ha_pg_log_cause("a\n\nb\r\nc\n\n", out, sizeof(out));
	assert_string_equal(out, "b | c");
	ha_pg_log_cause("only line", out, sizeof(out));
	assert_string_equal(out, "only line");
	assert_int_equal(ha_pg_log_cause("", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(ha_pg_log_cause(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* a small buffer is filled and terminated, never overrun */
	memset(small, 'x', sizeof(small));
	n = ha_pg_log_cause(bind_fail, small, sizeof(small));
	assert_true(n < sizeof(small));
	assert_int_equal(strlen(small), n);
	assert_int_equal(ha_pg_log_cause(bind_fail, small, 0), 0);
}

/* --- the node's configuration files across a rewind --- */

static char *slurp(const char *dir, const char *name)
{
	char path[600], *buf;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_int_equal(fseek(f, 0, SEEK_SET), 0);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void put(const char *dir, const char *name, const char *text, mode_t mode)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	write_file(path, text);
	assert_int_equal(chmod(path, mode), 0);
}

static void assert_file(const char *dir, const char *name, const char *want)
{
	char *got = slurp(dir, name);

	if (!want) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static mode_t mode_of(const char *dir, const char *name)
{
	char path[600];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void remove_in(const char *dir, const char *name)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
}

/* The node's own files, no pg_ident.conf (it may live elsewhere). */
static void own_conf(const char *dir)
{
	put(dir, "postgresql.conf", "listen_addresses = '127.0.0.11'\nport = 5501\n", 0600);
	put(dir, "postgresql.auto.conf", "work_mem = '8MB'\n", 0600);
	put(dir, "pg_hba.conf", "local all all trust\n", 0640);
	remove_in(dir, "pg_ident.conf");
}

static void collect_name(void *arg, const char *name)
{
	char *out = arg;

	strcat(out, name);
	strcat(out, ";");
}

static void test_conf_includes(void **state)
{
	char got[400] = "";

	ha_conf_includes("port = 1\n"
			 "include_if_exists = 'pgpilot_node.conf'\n"
			 "  include 'b.conf' # trailing comment\n"
			 "include='c.conf'\n"
			 "#include 'commented.conf'\n"
			 "include_dir 'conf.d'\n"
			 "include '/etc/postgresql/abs.conf'\n"
			 "include 'sub/dir.conf'\n"
			 "include '..'\n"
			 "include ''\n"
			 "include 'unterminated\n"
			 "includes = 'x'\n"
			 "include_if_exists 'last.conf'",
			 collect_name, got);
	assert_string_equal(got, "pgpilot_node.conf;b.conf;c.conf;last.conf;");
	got[0] = '\0';
	ha_conf_includes("", collect_name, got);
	ha_conf_includes(NULL, collect_name, got);
	assert_string_equal(got, "");
}

static void test_conf_backup_restore(void **state)
{
	char err[400], sub[400];
	HaConfBackup b;

	memset(&b, 0, sizeof(b));
	own_conf(data);
	assert_true(ha_conf_backup_take(&b, data, err, sizeof(err)));
	assert_true(b.taken);
	/* what pg_rewind does: the source's files replace them, one more appears */
	put(data, "postgresql.conf", "listen_addresses = '127.0.0.12'\nport = 5502\n", 0644);
	put(data, "postgresql.auto.conf", "primary_conninfo = 'host=x'\n", 0600);
	put(data, "pg_hba.conf", "host all all 0.0.0.0/0 trust\n", 0600);
	put(data, "pg_ident.conf", "map a b\n", 0600);
	assert_true(ha_conf_backup_restore(&b, data, err, sizeof(err)));
	assert_file(data, "postgresql.conf", "listen_addresses = '127.0.0.11'\nport = 5501\n");
	assert_file(data, "postgresql.auto.conf", "work_mem = '8MB'\n");
	assert_file(data, "pg_hba.conf", "local all all trust\n");
	assert_file(data, "pg_ident.conf", NULL);
	assert_int_equal(mode_of(data, "postgresql.conf"), 0600);
	assert_int_equal(mode_of(data, "pg_hba.conf"), 0640);
	/* twice is the same (a restore after a failed step, then at the end) */
	assert_true(ha_conf_backup_restore(&b, data, err, sizeof(err)));
	assert_file(data, "pg_hba.conf", "local all all trust\n");
	ha_conf_backup_cleanup(&b);
	assert_false(b.taken);
	/* nothing taken: nothing written */
	put(data, "pg_hba.conf", "changed\n", 0600);
	assert_true(ha_conf_backup_restore(&b, data, err, sizeof(err)));
	assert_file(data, "pg_hba.conf", "changed\n");

	/* a file that cannot be read stops the backup: nothing may overwrite it then */
	snprintf(sub, sizeof(sub), "%s/pg_ident.conf", data);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_false(ha_conf_backup_take(&b, data, err, sizeof(err)));
	assert_non_null(strstr(err, "pg_ident.conf\" is not a regular file"));
	assert_false(b.taken);
	rmdir(sub);
	assert_int_equal(symlink("/etc/passwd", sub), 0);
	assert_false(ha_conf_backup_take(&b, data, err, sizeof(err)));
	assert_non_null(strstr(err, "could not read"));
	unlink(sub);
	/* no data directory: the restore says so */
	assert_true(ha_conf_backup_take(&b, data, err, sizeof(err)));
	assert_false(ha_conf_backup_restore(&b, "/nonexistent/pgpilot", err, sizeof(err)));
	assert_non_null(strstr(err, "could not stat"));
	ha_conf_backup_cleanup(&b);

	/* a per-node file postgresql.conf includes is kept too; an absent one is removed */
	put(data, "postgresql.conf",
	    "include_if_exists = 'node.conf'\ninclude_if_exists = 'absent.conf'\n", 0600);
	put(data, "node.conf", "port = 5501\ninclude 'nested.conf'\n", 0600);
	put(data, "nested.conf", "cluster_name = 'n1'\n", 0600);
	assert_true(ha_conf_backup_take(&b, data, err, sizeof(err)));
	assert_int_equal(b.n, 7);
	put(data, "node.conf", "port = 5502\n", 0600);
	put(data, "nested.conf", "cluster_name = 'n2'\n", 0600);
	put(data, "absent.conf", "port = 1\n", 0600);
	assert_true(ha_conf_backup_restore(&b, data, err, sizeof(err)));
	assert_file(data, "node.conf", "port = 5501\ninclude 'nested.conf'\n");
	assert_file(data, "nested.conf", "cluster_name = 'n1'\n");
	assert_file(data, "absent.conf", NULL);
	ha_conf_backup_cleanup(&b);
	remove_in(data, "node.conf");
	remove_in(data, "nested.conf");
}

/* Shell scripts as pg_ctl and pg_rewind in tmp/bin. pg_ctl start appends to its -l log the
 * lines of a start that cannot bind and fails when FAKE_START_FAIL is set; pg_rewind writes
 * the "source's" configuration files and exits with FAKE_REWIND_EXIT. */
static void fake_bin(char *bin, size_t len)
{
	static const char pg_ctl[] =
	    "#!/bin/sh\n"
	    "op=$1; log=/dev/null\n"
	    "while [ $# -gt 0 ]; do [ \"$1\" = -l ] && log=$2; shift; done\n"
	    "[ \"$op\" = start ] || exit 0\n"
	    "echo started >> \"$PWD/fake-starts\"\n"
	    "[ -n \"$FAKE_START_FAIL\" ] || exit 0\n"
	    "echo 'LOG:  could not bind IPv4 address \"127.0.0.12\": Address already in use' "
	    ">> \"$log\"\n"
	    "echo 'FATAL:  could not create any TCP/IP sockets' >> \"$log\"\n"
	    "echo 'LOG:  database system is shut down' >> \"$log\"\n"
	    "echo 'pg_ctl: could not start server'\n"
	    "exit 1\n";
	static const char pg_rewind[] =
	    "#!/bin/sh\n"
	    "printf \"port = 5502\\n\" > postgresql.conf\n"
	    "printf \"host all all 0.0.0.0/0 trust\\n\" > pg_hba.conf\n"
	    "printf \"map a b\\n\" > pg_ident.conf\n"
	    "printf \"primary_conninfo = 'host=source'\\n\" > postgresql.auto.conf\n"
	    "echo 'pg_rewind: Done!'\n"
	    "exit ${FAKE_REWIND_EXIT:-0}\n";
	char path[600];

	snprintf(bin, len, "%s/bin", tmp);
	if (access(bin, F_OK) != 0)
		assert_int_equal(mkdir(bin, 0755), 0);
	snprintf(path, sizeof(path), "%s/pg_ctl", bin);
	write_file(path, pg_ctl);
	assert_int_equal(chmod(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/pg_rewind", bin);
	write_file(path, pg_rewind);
	assert_int_equal(chmod(path, 0755), 0);
}

static void run_action(Outcome *o, bool rewind, const char *bin)
{
	struct event_base *base = event_base_new();
	HaNode n = {base, "", data, bin};

	assert_non_null(base);
	memset(o, 0, sizeof(*o));
	o->base = base;
	if (rewind)
		assert_non_null(ha_action_rewind(&n, "host=source", "host=new-primary port=5502",
						 10000, halt_done, o));
	else
		assert_non_null(ha_action_start(&n, true, "host=new-primary", 10000, halt_done, o));
	event_base_dispatch(base);
	event_base_free(base);
	assert_true(o->done);
}

static void test_rewind_keeps_conf(void **state)
{
	char bin[400], *auto_conf;
	Outcome o;

	fake_bin(bin, sizeof(bin));
	unsetenv("FAKE_START_FAIL");
	ha_start_backoff_clear(data);
	own_conf(data);
	setenv("FAKE_REWIND_EXIT", "0", 1);
	run_action(&o, true, bin);
	assert_true(o.ok);
	assert_non_null(strstr(o.detail, "kept the node's own configuration files"));
	assert_non_null(strstr(o.detail, "pg_rewind: Done!")); /* what pg_rewind said */
	assert_file(data, "postgresql.conf", "listen_addresses = '127.0.0.11'\nport = 5501\n");
	assert_file(data, "pg_hba.conf", "local all all trust\n");
	assert_file(data, "pg_ident.conf", NULL);
	assert_int_equal(mode_of(data, "pg_hba.conf"), 0640);
	/* the node's own auto.conf, then pointed at the new primary */
	auto_conf = slurp(data, "postgresql.auto.conf");
	assert_non_null(auto_conf);
	assert_non_null(strstr(auto_conf, "work_mem = '8MB'"));
	assert_non_null(strstr(auto_conf, "host=new-primary port=5502"));
	assert_null(strstr(auto_conf, "host=source"));
	free(auto_conf);
	assert_int_equal(access(strcat(strcpy(bin, data), "/standby.signal"), F_OK), 0);

	/* a pg_rewind that fails after copying: the files are put back all the same */
	fake_bin(bin, sizeof(bin));
	own_conf(data);
	setenv("FAKE_REWIND_EXIT", "1", 1);
	run_action(&o, true, bin);
	assert_false(o.ok);
	assert_non_null(strstr(o.detail, "rewind failed in step pg_rewind (exit code)"));
	assert_file(data, "postgresql.conf", "listen_addresses = '127.0.0.11'\nport = 5501\n");
	assert_file(data, "pg_hba.conf", "local all all trust\n");
	assert_file(data, "postgresql.auto.conf", "work_mem = '8MB'\n");
	assert_file(data, "pg_ident.conf", NULL);
	unsetenv("FAKE_REWIND_EXIT");
	remove_in(data, "standby.signal");
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_starts(void)
{
	char *t = slurp(data, "fake-starts");
	int n = 0;

	for (char *p = t; p && (p = strstr(p, "started")); p++)
		n++;
	free(t);
	return n;
}

static void test_start_backoff(void **state)
{
	char bin[400];
	int64_t t0, waited;
	HaBackoff b;
	Outcome o;

	fake_bin(bin, sizeof(bin));
	ha_start_backoff_clear(data);
	remove_in(data, "fake-starts");
	remove_in(data, "pgpilot-postgres.log");
	setenv("FAKE_START_FAIL", "1", 1);

	/* the first failure: at once, with the server log's reason and the next wait */
	t0 = mono_ms();
	run_action(&o, false, bin);
	assert_false(o.ok);
	assert_non_null(strstr(o.detail, "start as standby failed in step start (exit code): "
					 "pg_ctl: could not start server; server log: "));
	assert_non_null(strstr(o.detail, "could not bind IPv4 address \"127.0.0.12\": Address "
					 "already in use | FATAL:  could not create any TCP/IP "
					 "sockets"));
	assert_non_null(strstr(o.detail, "(1 failed start in a row: the next start waits 1 s)"));
	b = ha_start_backoff(data);
	assert_int_equal(b.failures, 1);

	/* the second waits out the back-off before pg_ctl runs; its log lines only */
	run_action(&o, false, bin);
	waited = mono_ms() - t0;
	assert_false(o.ok);
	assert_true(waited >= 950);
	assert_non_null(strstr(o.detail, "(2 failed starts in a row: the next start waits 2 s)"));
	assert_null(strstr(strstr(o.detail, "FATAL") + 1, "FATAL"));
	assert_int_equal(count_starts(), 2);

	/* a fence while waiting: cancelled, pg_ctl never runs */
	{
		struct event_base *base = event_base_new();
		HaNode n = {base, "", data, bin};
		struct timeval tv = {0, 200 * 1000};
		HaActionRun *r;

		memset(&o, 0, sizeof(o));
		o.base = base;
		r = ha_action_start(&n, true, NULL, 10000, halt_done, &o);
		assert_non_null(r);
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
		assert_false(o.done);
		ha_action_cancel(r);
		event_base_free(base);
		assert_int_equal(count_starts(), 2);
	}

	/* a start that works clears the count */
	unsetenv("FAKE_START_FAIL");
	run_action(&o, false, bin);
	assert_true(o.ok);
	b = ha_start_backoff(data);
	assert_int_equal(b.failures, 0);
	assert_int_equal(count_starts(), 3);
	t0 = mono_ms();
	run_action(&o, false, bin);
	assert_true(o.ok);
	assert_true(mono_ms() - t0 < 900);
	remove_in(data, "standby.signal");
	remove_in(data, "fake-starts");
	remove_in(data, "postgresql.auto.conf");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pidfile_none_and_garbage),
	    cmocka_unit_test(test_pidfile_live_server),
	    cmocka_unit_test(test_pidfile_pid_reused),
	    cmocka_unit_test(test_proc_find),
	    cmocka_unit_test(test_start_cleanup),
	    cmocka_unit_test(test_halt),
	    cmocka_unit_test(test_backoff_delays),
	    cmocka_unit_test(test_log_cause),
	    cmocka_unit_test(test_conf_includes),
	    cmocka_unit_test(test_conf_backup_restore),
	    cmocka_unit_test(test_rewind_keeps_conf),
	    cmocka_unit_test(test_start_backoff),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
