/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of the /proc side of ha/actions: postmaster.pid checks (none, live server, stale
 * PID, zombie, garbage), the process finder that spots a crashed server's orphans by owner,
 * name and working directory, and the halt action on a real event loop. A copy of sleep(1)
 * named "postgres" stands in for the server processes.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pidfile_none_and_garbage),
	    cmocka_unit_test(test_pidfile_live_server),
	    cmocka_unit_test(test_pidfile_pid_reused),
	    cmocka_unit_test(test_proc_find),
	    cmocka_unit_test(test_start_cleanup),
	    cmocka_unit_test(test_halt),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
