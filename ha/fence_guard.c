/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The fence guard process and the agent's handle on it (see fence_guard.h). The wire between
 * them is a SOCK_SEQPACKET unix socket in the abstract namespace, one short text message per
 * packet: agent -> guard "arm <deadline_ms>", "disarm", "state"; guard -> agent
 * "state <pid> <armed> <deadline_ms> <fired> <last event>" (on connect and on request) and
 * "fired <text>" when it stopped PostgreSQL. The guard is started with a double fork from the
 * agent; it uses no libevent and no libcurl, only poll(), so it runs whatever the agent does.
 */
#include "ha/fence_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME_PREFIX "pgpilot-fence-guard-"
#define CONNECT_TRIES 20
#define STATE_WAIT_MS 2000
#define FIRST_CONNECT_MS 5000

struct FenceGuard {
	int fd;
	bool armed;
	bool gone;
	pid_t pid;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The socket address of <pg_data>'s guard: a hash of its real path in the abstract namespace. */
static socklen_t guard_addr(const char *pg_data, struct sockaddr_un *sa)
{
	char real[PATH_MAX];
	const char *p = realpath(pg_data, real) ? real : pg_data;
	uint64_t h = 1469598103934665603ULL;
	int n;

	for (; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* sun_path[0] = '\0': abstract, nothing on disk, gone with the last descriptor */
	n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, NAME_PREFIX "%016" PRIx64, h);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Is the process at the other end of <fd> ours (same uid) or root's? */
static bool peer_trusted(int fd, pid_t *pid)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
		return false;
	if (pid)
		*pid = cr.pid;
	return cr.uid == geteuid() || cr.uid == 0;
}

static bool read_file_line(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return true;
}

pid_t fence_guard_pidfile_target(const char *pg_data, char *why, size_t len)
{
	char path[PATH_MAX + 32], real[PATH_MAX], link[PATH_MAX], buf[512], *end, *o, *c;
	struct stat dst, pst;
	ssize_t n;
	long v;

	if (!realpath(pg_data, real) || stat(real, &dst) != 0) {
		snprintf(why, len, "could not resolve the data directory \"%.200s\": %s", pg_data,
			 strerror(errno));
		return 0;
	}
	snprintf(path, sizeof(path), "%s/postmaster.pid", real);
	if (!read_file_line(path, buf, sizeof(buf))) {
		snprintf(why, len, "no readable postmaster.pid in \"%.200s\"", real);
		return 0;
	}
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || end == buf || *end || v <= 0 || v > INT_MAX) {
		snprintf(why, len, "postmaster.pid does not start with a postmaster PID");
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%ld", v);
	if (stat(path, &pst) != 0) {
		snprintf(why, len, "PID %ld of postmaster.pid is gone", v);
		return 0;
	}
	if (pst.st_uid != dst.st_uid) {
		snprintf(why, len,
			 "PID %ld of postmaster.pid is not a process of the data "
			 "directory's owner",
			 v);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%ld/stat", v);
	if (!read_file_line(path, buf, sizeof(buf)) || !(o = strchr(buf, '(')) ||
	    !(c = strrchr(buf, ')')) || c < o || c[1] != ' ' || c[2] == 'Z' || c[2] == 'X') {
		snprintf(why, len, "PID %ld of postmaster.pid is gone", v);
		return 0;
	}
	*c = '\0';
	if (strcmp(o + 1, "postgres") != 0 && strcmp(o + 1, "postmaster") != 0) {
		snprintf(why, len, "PID %ld of postmaster.pid is \"%.64s\", not postgres", v,
			 o + 1);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%ld/cwd", v);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0) {
		snprintf(why, len, "could not read the working directory of PID %ld: %s", v,
			 strerror(errno));
		return 0;
	}
	link[n] = '\0';
	if (strcmp(link, real) != 0) {
		snprintf(why, len,
			 "PID %ld of postmaster.pid runs in \"%.200s\", not in the data "
			 "directory",
			 v, link);
		return 0;
	}
	return (pid_t)v;
}

/*
 * The guard process
 */

typedef struct Guard {
	int lsock, conn;
	bool armed;
	int64_t deadline_ms;
	int fired;
	bool served; /* an agent has connected once */
	char last[FENCE_GUARD_MSG_MAX];
	const char *pg_data;
} Guard;

static void glog(const char *level, const char *fmt, ...) _PRINTF(2, 3);
static void glog(const char *level, const char *fmt, ...)
{
	char msg[768], stamp[64];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = dprintf(2, "%s.%03ld [%d] %s fence guard: %s\n", stamp, ts.tv_nsec / 1000000,
		    (int)getpid(), level, msg);
	(void)n;
}

static void guard_send(Guard *g, const char *msg)
{
	if (g->conn >= 0 && send(g->conn, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
	    errno != EAGAIN)
		glog("WARNING", "could not answer the agent: %s", strerror(errno));
}

static void guard_send_state(Guard *g)
{
	char msg[FENCE_GUARD_MSG_MAX + 96];

	snprintf(msg, sizeof(msg), "state %d %d %" PRId64 " %d %s", (int)getpid(), g->armed ? 1 : 0,
		 g->armed ? g->deadline_ms : 0, g->fired, g->last);
	guard_send(g, msg);
}

static void guard_fire(Guard *g, int64_t now)
{
	char why[512], msg[FENCE_GUARD_MSG_MAX + 16];
	pid_t pid = fence_guard_pidfile_target(g->pg_data, why, sizeof(why));
	int64_t late = now - g->deadline_ms;

	g->armed = false;
	g->fired++;
	if (pid > 0 && kill(pid, SIGQUIT) == 0) {
		snprintf(g->last, sizeof(g->last),
			 "no feed before the deadline (%" PRId64 " ms late): sent SIGQUIT "
			 "(immediate shutdown) to postmaster %d",
			 late, (int)pid);
		glog("LOG", "%s", g->last);
	} else {
		snprintf(g->last, sizeof(g->last),
			 "no feed before the deadline (%" PRId64 " ms late), but no postmaster "
			 "to stop: %.160s",
			 late, pid > 0 ? strerror(errno) : why);
		glog("WARNING", "%s", g->last);
	}
	snprintf(msg, sizeof(msg), "fired %s", g->last);
	guard_send(g, msg);
}

static void guard_command(Guard *g, char *msg)
{
	char *end;
	long long v;

	if (strncmp(msg, "arm ", 4) == 0) {
		errno = 0;
		v = strtoll(msg + 4, &end, 10);
		if (errno || end == msg + 4 || *end || v <= 0) {
			glog("WARNING", "ignoring a malformed arm message");
			return;
		}
		if (!g->armed)
			glog("LOG", "armed: PostgreSQL is stopped in %lld ms unless fed",
			     v - (long long)mono_ms());
		g->armed = true;
		g->deadline_ms = v;
	} else if (strcmp(msg, "disarm") == 0) {
		if (g->armed)
			glog("LOG", "disarmed");
		g->armed = false;
		g->deadline_ms = 0;
	} else if (strcmp(msg, "state") == 0) {
		guard_send_state(g);
	} else {
		glog("WARNING", "ignoring an unknown message");
	}
}

static void guard_accept(Guard *g)
{
	int fd = accept4(g->lsock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	pid_t pid = 0;

	if (fd < 0)
		return;
	if (!peer_trusted(fd, &pid)) {
		glog("WARNING", "refusing a connection from PID %d: not the guard's user",
		     (int)pid);
		close(fd);
		return;
	}
	if (g->conn >= 0) {
		glog("LOG", "agent PID %d replaces the connected agent", (int)pid);
		close(g->conn);
	} else if (g->armed) {
		glog("LOG", "agent PID %d took over the armed guard (%" PRId64 " ms left)",
		     (int)pid, g->deadline_ms - mono_ms());
	}
	g->conn = fd;
	g->served = true;
	guard_send_state(g);
}

static void guard_read(Guard *g)
{
	char buf[FENCE_GUARD_MSG_MAX];
	ssize_t n;

	for (;;) {
		n = recv(g->conn, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			close(g->conn);
			g->conn = -1;
			if (g->armed)
				glog("LOG",
				     "the agent is gone; PostgreSQL is stopped in %" PRId64
				     " ms unless an agent takes over",
				     g->deadline_ms - mono_ms());
			return;
		}
		buf[n] = '\0';
		guard_command(g, buf);
	}
}

static void guard_main(int lsock, const char *pg_data) __attribute__((noreturn));
static void guard_main(int lsock, const char *pg_data)
{
	Guard g = {.lsock = lsock, .conn = -1, .pg_data = pg_data};
	/* the agent that started it connects right after the fork: wait for it that long */
	int64_t first_until = mono_ms() + FIRST_CONNECT_MS;

	glog("LOG", "started for \"%s\"", pg_data);
	for (;;) {
		struct pollfd p[2] = {{.fd = g.lsock, .events = POLLIN},
				      {.fd = g.conn, .events = POLLIN}};
		int64_t now = mono_ms();
		int timeout = -1;

		if (g.armed && now >= g.deadline_ms)
			guard_fire(&g, now);
		if (!g.armed && g.conn < 0 && (g.served || now >= first_until)) {
			glog("LOG", "exiting: disarmed and no agent connected");
			_exit(0);
		}
		if (g.armed)
			timeout =
			    g.deadline_ms - now > INT_MAX ? INT_MAX : (int)(g.deadline_ms - now);
		else if (!g.served)
			timeout = (int)(first_until - now);
		if (poll(p, g.conn >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
			_exit(1);
		if (p[0].revents & POLLIN)
			guard_accept(&g);
		else if (g.conn >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			guard_read(&g);
	}
}

/* In the grandchild of the agent: become the guard, never return. */
static void guard_become(int lsock, const char *pg_data) __attribute__((noreturn));
static void guard_become(int lsock, const char *pg_data)
{
	sigset_t none;
	int null = open("/dev/null", O_RDWR);

	setsid();
	prctl(PR_SET_NAME, "pgpilot-guard", 0, 0, 0); /* what ps and /proc/<pid>/comm show */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
	}
	/* keep stderr (the log) and the listening socket as fd 3; close the pooler's sockets,
	 * the etcd connections and the event loop's descriptors */
	if (lsock != 3) {
		if (dup2(lsock, 3) < 0)
			_exit(1);
	}
	for (int fd = 4; fd < 65536; fd++)
		if (close(fd) != 0 && fd > 1024)
			break;
	if (chdir("/") != 0)
		_exit(1);
	guard_main(3, pg_data);
}

/*
 * The agent's side
 */

static bool read_state(int fd, FenceGuardState *st, int timeout_ms)
{
	int64_t until = mono_ms() + timeout_ms;
	char buf[FENCE_GUARD_MSG_MAX + 96];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = until - mono_ms();
		ssize_t n;
		int pid, armed, fired, off = 0;
		long long dl;

		if (left <= 0)
			return false;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return false;
		if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return false;
		buf[n] = '\0';
		if (strncmp(buf, "state ", 6) != 0)
			continue; /* an event line sent before: skip it */
		if (sscanf(buf, "state %d %d %lld %d %n", &pid, &armed, &dl, &fired, &off) < 4)
			return false;
		if (st) {
			memset(st, 0, sizeof(*st));
			st->pid = pid;
			st->armed = armed != 0;
			st->deadline_ms = dl;
			st->fired = fired;
			if (off > 0)
				snprintf(st->last, sizeof(st->last), "%s", buf + off);
		}
		return true;
	}
}

static int connect_guard(const struct sockaddr_un *sa, socklen_t salen)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)sa, salen) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Bind the guard's socket here, then double-fork the guard with it. */
static bool spawn_guard(const char *pg_data, const struct sockaddr_un *sa, socklen_t salen,
			char *err, size_t errlen)
{
	char real[PATH_MAX];
	int lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	pid_t pid;
	int status;

	if (lsock < 0) {
		snprintf(err, errlen, "could not create the fence guard socket: %s",
			 strerror(errno));
		return false;
	}
	if (bind(lsock, (const struct sockaddr *)sa, salen) != 0 || listen(lsock, 4) != 0) {
		int e = errno;

		close(lsock);
		if (e == EADDRINUSE)
			return true; /* another opener just started one: connect to it */
		snprintf(err, errlen, "could not listen on the fence guard socket: %s",
			 strerror(e));
		return false;
	}
	if (!realpath(pg_data, real))
		snprintf(real, sizeof(real), "%s", pg_data);
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "could not fork the fence guard: %s", strerror(errno));
		close(lsock);
		return false;
	}
	if (pid == 0) {
		/* the middle child: its only job is to leave the guard to init */
		pid_t g = fork();

		if (g == 0)
			guard_become(lsock, real);
		_exit(g < 0 ? 1 : 0);
	}
	close(lsock);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, errlen, "could not fork the fence guard");
		return false;
	}
	return true;
}

FenceGuard *fence_guard_open(const char *pg_data, bool *took_over, FenceGuardState *state,
			     char *err, size_t errlen)
{
	struct sockaddr_un sa;
	socklen_t salen = guard_addr(pg_data, &sa);
	FenceGuardState st;
	FenceGuard *g;
	bool spawned = false;
	int fd = -1;

	for (int i = 0; i < CONNECT_TRIES && fd < 0; i++) {
		fd = connect_guard(&sa, salen);
		if (fd >= 0)
			break;
		if (errno != ECONNREFUSED && errno != ENOENT && errno != EAGAIN) {
			snprintf(err, errlen, "could not connect to the fence guard: %s",
				 strerror(errno));
			return NULL;
		}
		if (!spawned) {
			if (!spawn_guard(pg_data, &sa, salen, err, errlen))
				return NULL;
			spawned = true;
		} else {
			usleep(50 * 1000);
		}
	}
	if (fd < 0) {
		snprintf(err, errlen, "could not connect to the fence guard it started");
		return NULL;
	}
	if (!peer_trusted(fd, NULL)) {
		close(fd);
		snprintf(err, errlen,
			 "the fence guard socket of this data directory is held by a process of "
			 "another user");
		return NULL;
	}
	if (!read_state(fd, &st, STATE_WAIT_MS)) {
		close(fd);
		snprintf(err, errlen, "the fence guard did not report its state");
		return NULL;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
	    !(g = calloc(1, sizeof(*g)))) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	g->fd = fd;
	g->armed = st.armed;
	g->pid = st.pid;
	if (took_over)
		*took_over = !spawned;
	if (state)
		*state = st;
	return g;
}

static bool guard_send_msg(FenceGuard *g, const char *msg)
{
	if (g->gone)
		return false;
	if (send(g->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
		return true;
	if (errno != EAGAIN && errno != EINTR)
		g->gone = true;
	return false;
}

bool fence_guard_arm(FenceGuard *g, int64_t deadline_ms)
{
	char msg[64];

	snprintf(msg, sizeof(msg), "arm %" PRId64, deadline_ms);
	if (!guard_send_msg(g, msg))
		return false;
	g->armed = true;
	return true;
}

bool fence_guard_disarm(FenceGuard *g)
{
	if (!guard_send_msg(g, "disarm"))
		return false;
	g->armed = false;
	return true;
}

bool fence_guard_is_armed(const FenceGuard *g)
{
	return g->armed;
}

bool fence_guard_poll(FenceGuard *g, char *msg, size_t len)
{
	char buf[FENCE_GUARD_MSG_MAX + 96];

	if (len)
		msg[0] = '\0';
	while (!g->gone) {
		ssize_t n = recv(g->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			g->gone = true;
			break;
		}
		buf[n] = '\0';
		if (strncmp(buf, "fired ", 6) == 0) {
			g->armed = false;
			snprintf(msg, len, "%s", buf + 6);
		}
	}
	return !g->gone;
}

bool fence_guard_query(FenceGuard *g, FenceGuardState *st, int timeout_ms)
{
	if (!guard_send_msg(g, "state"))
		return false;
	if (!read_state(g->fd, st, timeout_ms))
		return false;
	g->armed = st->armed;
	return true;
}

pid_t fence_guard_pid(const FenceGuard *g)
{
	return g->pid;
}

void fence_guard_close(FenceGuard *g)
{
	if (!g)
		return;
	close(g->fd);
	free(g);
}
