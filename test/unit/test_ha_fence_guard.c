/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/fence_guard: a real guard process is forked for a fake data directory whose
 * postmaster.pid names a dummy process called "postgres" (a symlink to sleep, run in that
 * directory). Checked: the postmaster check refuses anything else; an armed guard that is not
 * fed stops the dummy with SIGQUIT and reports it; a disarmed or never armed guard never kills
 * and exits once the agent is gone; an agent that dies leaves an armed guard that a new agent
 * takes over (state kept) and keeps alive by feeding it; a guard whose agent died fires, then
 * exits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha/fence_guard.h"

#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct Fixture {
	char dir[256];      /* the fake data directory */
	char postgres[300]; /* symlink "postgres" -> sleep */
	pid_t dummy;        /* the fake postmaster */
} Fixture;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_pidfile(const Fixture *f, long pid)
{
	char path[400];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/postmaster.pid", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "%ld\n%s\n1700000000\n5432\n/tmp\n", pid, f->dir);
	fclose(fp);
}

static pid_t start_dummy(const Fixture *f, const char *cwd)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (chdir(cwd) != 0)
			_exit(126);
		execl(f->postgres, "postgres", "60", (char *)NULL);
		_exit(127);
	}
	usleep(100 * 1000); /* exec'd */
	return pid;
}

static int setup(void **state)
{
	Fixture *f = calloc(1, sizeof(*f));
	const char *sleep_bin =
	    access("/usr/bin/sleep", X_OK) == 0 ? "/usr/bin/sleep" : "/bin/sleep";

	snprintf(f->dir, sizeof(f->dir), "/tmp/pgpilot-guard-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->postgres, sizeof(f->postgres), "%s/postgres", f->dir);
	assert_int_equal(symlink(sleep_bin, f->postgres), 0);
	f->dummy = start_dummy(f, f->dir);
	write_pidfile(f, f->dummy);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	Fixture *f = *state;
	char path[400];

	if (f->dummy > 0) {
		kill(f->dummy, SIGKILL);
		waitpid(f->dummy, NULL, 0);
	}
	snprintf(path, sizeof(path), "%s/postmaster.pid", f->dir);
	unlink(path);
	unlink(f->postgres);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Wait up to <ms> for the dummy to end; returns its wait status or -1 while it runs. */
static int wait_dummy(Fixture *f, int ms)
{
	int64_t until = now_ms() + ms;
	int st;

	while (now_ms() < until) {
		pid_t r = waitpid(f->dummy, &st, WNOHANG);

		if (r == f->dummy) {
			f->dummy = 0;
			return st;
		}
		usleep(10 * 1000);
	}
	return -1;
}

/* Wait up to <ms> for the guard process to be gone. */
static bool guard_exits(pid_t pid, int ms)
{
	int64_t until = now_ms() + ms;

	while (now_ms() < until) {
		char path[64], buf[256], *c;
		FILE *fp;

		if (kill(pid, 0) != 0 && errno == ESRCH)
			return true;
		/* gone but not reaped yet by init */
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		fp = fopen(path, "r");
		if (fp) {
			size_t n = fread(buf, 1, sizeof(buf) - 1, fp);

			fclose(fp);
			buf[n] = '\0';
			c = strrchr(buf, ')');
			if (c && c[1] == ' ' && c[2] == 'Z')
				return true;
		}
		usleep(20 * 1000);
	}
	return false;
}

static FenceGuard *open_guard(Fixture *f, bool *took_over, FenceGuardState *st)
{
	char err[256] = "";
	FenceGuard *g = fence_guard_open(f->dir, took_over, st, err, sizeof(err));

	if (!g)
		fail_msg("fence_guard_open: %s", err);
	return g;
}

static void test_pidfile_target(void **state)
{
	Fixture *f = *state;
	char why[512];
	pid_t other;

	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), f->dummy);
	/* our own PID: not named postgres */
	write_pidfile(f, getpid());
	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "not postgres"));
	/* a "postgres" running in another directory */
	other = start_dummy(f, "/");
	write_pidfile(f, other);
	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "not in the data directory"));
	kill(other, SIGKILL);
	waitpid(other, NULL, 0);
	/* a dead PID, garbage, none */
	write_pidfile(f, other);
	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "is gone"));
	write_pidfile(f, -5);
	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), 0);
	write_pidfile(f, f->dummy);
	assert_int_equal(fence_guard_pidfile_target(f->dir, why, sizeof(why)), f->dummy);
}

/* Armed and not fed: the dummy gets SIGQUIT shortly after the deadline, and the agent hears. */
static void test_fires_when_not_fed(void **state)
{
	Fixture *f = *state;
	FenceGuardState st;
	bool took = true;
	FenceGuard *g = open_guard(f, &took, &st);
	int64_t deadline, t0;
	char msg[FENCE_GUARD_MSG_MAX];
	pid_t gpid = fence_guard_pid(g);
	int ws;

	assert_false(took);
	assert_false(st.armed);
	assert_int_equal(st.fired, 0);
	deadline = now_ms() + 300;
	assert_true(fence_guard_arm(g, deadline));
	/* still fed: pushed out twice, no kill */
	for (int i = 0; i < 3; i++) {
		usleep(200 * 1000);
		deadline = now_ms() + 300;
		assert_true(fence_guard_arm(g, deadline));
	}
	assert_int_equal(wait_dummy(f, 100), -1);
	/* feeding stops */
	ws = wait_dummy(f, 5000);
	t0 = now_ms();
	assert_true(ws != -1);
	assert_true(WIFSIGNALED(ws));
	assert_int_equal(WTERMSIG(ws), SIGQUIT);
	assert_true(t0 >= deadline);
	print_message("guard fired %lld ms after the deadline\n", (long long)(t0 - deadline));
	usleep(50 * 1000);
	assert_true(fence_guard_poll(g, msg, sizeof(msg)));
	assert_non_null(strstr(msg, "SIGQUIT"));
	assert_false(fence_guard_is_armed(g));
	assert_true(fence_guard_query(g, &st, 2000));
	assert_false(st.armed);
	assert_int_equal(st.fired, 1);
	/* fired and disarmed: it exits once the agent is gone */
	fence_guard_close(g);
	assert_true(guard_exits(gpid, 3000));
}

/* Disarmed in time: never kills, and exits when the agent closes. */
static void test_disarm(void **state)
{
	Fixture *f = *state;
	FenceGuard *g = open_guard(f, NULL, NULL);
	pid_t gpid = fence_guard_pid(g);
	FenceGuardState st;

	assert_true(fence_guard_arm(g, now_ms() + 300));
	assert_true(fence_guard_disarm(g));
	assert_int_equal(wait_dummy(f, 800), -1);
	assert_true(fence_guard_query(g, &st, 2000));
	assert_false(st.armed);
	assert_int_equal(st.fired, 0);
	assert_true(kill(gpid, 0) == 0); /* alive while an agent is connected */
	fence_guard_close(g);
	assert_true(guard_exits(gpid, 3000));
	assert_int_equal(wait_dummy(f, 200), -1);
}

/* Never armed (a replica's agent): closing leaves nothing behind and nothing is killed. */
static void test_never_armed(void **state)
{
	Fixture *f = *state;
	FenceGuard *g = open_guard(f, NULL, NULL);
	pid_t gpid = fence_guard_pid(g);

	fence_guard_close(g);
	assert_true(guard_exits(gpid, 3000));
	assert_int_equal(wait_dummy(f, 300), -1);
}

/* The agent goes, armed; a new one comes before the deadline, finds the guard and feeds it. */
static void test_takeover(void **state)
{
	Fixture *f = *state;
	FenceGuardState st;
	bool took = false;
	FenceGuard *g = open_guard(f, &took, NULL);
	pid_t gpid = fence_guard_pid(g);
	int64_t deadline = now_ms() + 1500;

	assert_true(fence_guard_arm(g, deadline));
	fence_guard_close(g); /* the agent died */
	usleep(300 * 1000);
	assert_true(kill(gpid, 0) == 0); /* armed: the guard stays */
	g = open_guard(f, &took, &st);
	assert_true(took);
	assert_int_equal(fence_guard_pid(g), gpid);
	assert_true(st.armed);
	assert_true(st.deadline_ms == deadline);
	assert_true(fence_guard_is_armed(g));
	/* the new agent holds the lease again and feeds */
	for (int i = 0; i < 8; i++) {
		assert_true(fence_guard_arm(g, now_ms() + 1000));
		usleep(250 * 1000);
	}
	assert_int_equal(wait_dummy(f, 10), -1); /* its primary survived */
	assert_true(fence_guard_disarm(g));
	fence_guard_close(g);
	assert_true(guard_exits(gpid, 3000));
	assert_int_equal(wait_dummy(f, 200), -1);
}

/* kill -9 of the agent while armed: the guard fires at the deadline, then exits. */
static void test_agent_killed(void **state)
{
	Fixture *f = *state;
	int fds[2];
	pid_t agent, gpid = 0;
	int ws;

	assert_int_equal(pipe(fds), 0);
	agent = fork();
	assert_true(agent >= 0);
	if (agent == 0) {
		char err[256];
		FenceGuard *g = fence_guard_open(f->dir, NULL, NULL, err, sizeof(err));

		if (!g || !fence_guard_arm(g, now_ms() + 500))
			_exit(1);
		gpid = fence_guard_pid(g);
		if (write(fds[1], &gpid, sizeof(gpid)) != sizeof(gpid))
			_exit(1);
		pause();
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &gpid, sizeof(gpid)), (int)sizeof(gpid));
	close(fds[0]);
	kill(agent, SIGKILL);
	waitpid(agent, NULL, 0);
	ws = wait_dummy(f, 5000);
	assert_true(ws != -1);
	assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGQUIT);
	assert_true(guard_exits(gpid, 3000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pidfile_target, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fires_when_not_fed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disarm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_never_armed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_takeover, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_killed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
