/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Start-up and shutdown: command line, configuration, daemon mode, pid file, privileges, the
 * event loop, signals (HUP reload, TERM graceful, INT fast, QUIT immediate, USR1 pause, USR2
 * resume), RELOAD, PAUSE/RESUME and SHUTDOWN for the admin console (control.h).
 */
#include "pooler/admin.h"
#include "pooler/client.h"
#include "pooler/control.h"
#include "pooler/janitor.h"
#include "pooler/listener.h"
#include "pooler/log.h"
#include "pooler/pool.h"
#include "pooler/routing.h"
#include "pooler/sections.h"
#include "dns/dns_log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

usec_t pooler_start_time;

static struct event_base *base;
static struct event *sig_events[6];
static ShutdownMode shutdown_mode;
static bool shutdown_requested;
static usec_t shutdown_started;
static char *pidfile_written;

static void usage(FILE *f)
{
	fprintf(f, "pgpilot is a PostgreSQL connection pooler and HA agent.\n\n"
		   "Usage:\n  pgpilot [OPTION]... CONFIG_FILE\n\n"
		   "Options:\n"
		   "  -d, --daemon         run in the background (needs logfile or syslog)\n"
		   "  -q, --quiet          do not log to stderr\n"
		   "  -v, --verbose        more logging (repeat for more)\n"
		   "  -u, --user=USERNAME  run as this user\n"
		   "  -V, --version        show the version and exit\n"
		   "  -h, --help           show this help and exit\n");
}

static void log_config_errors(const ConfigErrors *e, LogLevel lvl)
{
	for (int i = 0; i < e->nwarn; i++)
		log_msg(LOG_LVL_WARNING, "%s", e->warnings[i]);
	for (int i = 0; i < e->n; i++)
		log_msg(lvl, "%s", e->msgs[i]);
}

bool pooler_reload(char *err, size_t errlen)
{
	ConfigErrors errs;
	Config *newcfg, *old = cfg;

	memset(&errs, 0, sizeof(errs));
	newcfg = config_load(old->config_file, &errs);
	if (!newcfg) {
		log_config_errors(&errs, LOG_LVL_ERROR);
		snprintf(err, errlen, "%s", errs.n ? errs.msgs[0] : "invalid configuration");
		log_error("RELOAD failed, keeping the previous configuration: %s", err);
		config_errors_cleanup(&errs);
		return false;
	}
	if (!routing_check_config(newcfg, err, errlen)) {
		log_error("RELOAD failed, keeping the previous configuration: %s", err);
		config_errors_cleanup(&errs);
		config_free(newcfg);
		return false;
	}
	config_apply_reload(newcfg, old, &errs);
	log_config_errors(&errs, LOG_LVL_WARNING);
	config_errors_cleanup(&errs);
	cfg = newcfg;
	pool_apply_config();
	routing_reload();
	if (!log_setup(cfg->logfile, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility))
		log_msg_errno(LOG_LVL_WARNING, "could not reopen logfile \"%s\"", cfg->logfile);
	log_verbosity = LOG_LVL_INFO + cfg->verbose > log_verbosity ? LOG_LVL_INFO + cfg->verbose
								     : log_verbosity;
	config_free(old);
	log_info("configuration reloaded from %s", cfg->config_file);
	return true;
}

void pooler_pause(Database *db)
{
	if (db)
		db->paused = true;
	else
		pooler_paused = true;
	log_info("PAUSE %s", db ? db->name : "(all databases)");
}

void pooler_resume(Database *db)
{
	List *it;

	if (db) {
		db->paused = false;
	} else {
		pooler_paused = false;
		list_for_each(it, &all_databases)
			container_of(it, Database, head)->paused = false;
	}
	log_info("RESUME %s", db ? db->name : "(all databases)");
	list_for_each(it, &all_pools)
		pool_activate(container_of(it, Pool, head));
}

void pooler_shutdown(ShutdownMode mode)
{
	if (mode == SHUTDOWN_IMMEDIATE) {
		log_info("immediate shutdown");
		event_base_loopbreak(base);
		return;
	}
	if (!shutdown_requested || mode < shutdown_mode) {
		shutdown_mode = mode;
	}
	if (!shutdown_requested)
		shutdown_started = get_cached_time();
	shutdown_requested = true;
	pooler_shutting_down = true;
	listener_stop();
	if (mode == SHUTDOWN_FAST) {
		pooler_paused = true;
		log_info("fast shutdown: waiting for servers to be released");
	} else {
		log_info("graceful shutdown: waiting for clients to disconnect");
	}
	main_check_shutdown();
}

/* Called by the janitor: is the shutdown in progress finished? */
void main_check_shutdown(void)
{
	bool done;

	if (!shutdown_requested)
		return;
	if (shutdown_mode == SHUTDOWN_FAST) {
		done = pools_quiet(NULL);
	} else {
		done = n_clients_total == 0;
		if (cfg->shutdown_wait_timeout > 0 &&
		    get_cached_time() - shutdown_started > cfg->shutdown_wait_timeout)
			done = true;
	}
	if (done) {
		log_info("shutdown complete");
		event_base_loopbreak(base);
	}
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	char err[256];

	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP, reloading configuration");
		if (!pooler_reload(err, sizeof(err)))
			log_error("reload failed: %s", err);
		break;
	case SIGTERM:
		log_info("got SIGTERM");
		pooler_shutdown(SHUTDOWN_GRACEFUL);
		break;
	case SIGINT:
		log_info("got SIGINT");
		pooler_shutdown(SHUTDOWN_FAST);
		break;
	case SIGQUIT:
		log_info("got SIGQUIT");
		pooler_shutdown(SHUTDOWN_IMMEDIATE);
		break;
	case SIGUSR1:
		pooler_pause(NULL);
		break;
	case SIGUSR2:
		pooler_resume(NULL);
		break;
	}
}

static bool setup_signals(void)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		sig_events[i] = evsignal_new(base, sigs[i], signal_cb, NULL);
		if (!sig_events[i] || event_add(sig_events[i], NULL) < 0)
			return false;
	}
	return true;
}

/* Allow as many sockets as the hard limit does: 10,000 clients need more than 1024. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg->max_client_conn + 1000;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want && geteuid() == 0)
		rl.rlim_max = want;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
		log_warning("open file limit %llu is below max_client_conn + 1000",
			    (unsigned long long)rl.rlim_cur);
}

/* dns/ and ha/ log through hooks (they do not depend on the pooler). */
static void dns_log_hook(void *arg, DnsLogLevel lvl, const char *msg)
{
	static const LogLevel map[] = { LOG_LVL_ERROR, LOG_LVL_WARNING, LOG_LVL_INFO, LOG_LVL_DEBUG };

	log_msg(map[lvl <= DNS_LOG_DEBUG ? lvl : DNS_LOG_DEBUG], "dns: %s", msg);
}

/* The asynchronous resolver of backend host names, with the [dns] cache settings. */
static bool resolver_start(char *err, size_t errlen)
{
	const DnsConfig *dc = sections_dns(cfg);
	DnsResolverOptions opts;

	dns_set_log_func(dns_log_hook, NULL);
	memset(&opts, 0, sizeof(opts));
	opts.max_ttl = dc ? dc->dns_max_ttl : 60;
	opts.stale_keep = dc ? dc->dns_stale_keep : 300;
	pooler_resolver = dns_resolver_new(base, &opts, err, errlen);
	return pooler_resolver != NULL;
}

static bool drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		log_error("unknown user \"%s\"", user);
		return false;
	}
	if (getuid() == pw->pw_uid)
		return true;
	if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_msg_errno(LOG_LVL_ERROR, "could not switch to user \"%s\"", user);
		return false;
	}
	return true;
}

static bool write_pidfile(const char *path)
{
	char buf[32];
	int fd;
	FILE *f;

	f = fopen(path, "r");
	if (f) {
		long pid = 0;
		if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0) {
			fclose(f);
			log_error("pidfile \"%s\" names a running process %ld: is pgpilot already running?",
				  path, pid);
			return false;
		}
		fclose(f);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_msg_errno(LOG_LVL_ERROR, "could not write pidfile \"%s\"", path);
		return false;
	}
	snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf)) {
		close(fd);
		return false;
	}
	close(fd);
	pidfile_written = strdup(path);
	return true;
}

static bool daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return false;
	pid = fork();
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	log_quiet = true;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "daemon", no_argument, NULL, 'd' }, { "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' }, { "user", required_argument, NULL, 'u' },
		{ "version", no_argument, NULL, 'V' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	bool daemon_mode = false;
	const char *run_as = NULL;
	ConfigErrors errs;
	char err[256];
	int opt, verbose = 0;

	while ((opt = getopt_long(argc, argv, "dqvu:Vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			daemon_mode = true;
			break;
		case 'q':
			log_quiet = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'u':
			run_as = optarg;
			break;
		case 'V':
			printf("pgpilot %s\n", PGPILOT_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 1;
	}
	if (!sections_register()) {
		log_msg(LOG_LVL_FATAL, "could not register the configuration sections");
		return 1;
	}
	memset(&errs, 0, sizeof(errs));
	cfg = config_load(argv[optind], &errs);
	log_config_errors(&errs, LOG_LVL_FATAL);
	config_errors_cleanup(&errs);
	if (!cfg) {
		log_msg(LOG_LVL_FATAL, "could not load configuration file \"%s\"", argv[optind]);
		return 1;
	}
	log_verbosity = LOG_LVL_INFO + verbose + cfg->verbose;
	if (log_verbosity > LOG_LVL_NOISE)
		log_verbosity = LOG_LVL_NOISE;
	if (daemon_mode && !cfg->logfile && !cfg->syslog) {
		log_msg(LOG_LVL_FATAL, "daemon mode needs logfile or syslog in the configuration");
		return 1;
	}
	if (!varcache_set_tracked(cfg->track_extra_parameters, err, sizeof(err))) {
		log_msg(LOG_LVL_FATAL, "track_extra_parameters: %s", err);
		return 1;
	}
	raise_fd_limit();
	if (run_as && !drop_privileges(run_as))
		return 1;
	if (!log_setup(cfg->logfile, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility)) {
		log_msg_errno(LOG_LVL_FATAL, "could not open logfile \"%s\"", cfg->logfile);
		return 1;
	}
	if (daemon_mode && !daemonize()) {
		log_msg_errno(LOG_LVL_FATAL, "could not become a daemon");
		return 1;
	}
	if (cfg->pidfile && cfg->pidfile[0] && !write_pidfile(cfg->pidfile))
		return 1;
	base = event_base_new();
	if (!base || event_base_priority_init(base, 3) < 0)
		fatal("could not create the event loop");
	if (!pool_global_init(base) || !sbuf_global_init(base, cfg->pkt_buf))
		fatal("out of memory at start-up");
	if (!resolver_start(err, sizeof(err)))
		fatal("could not start the DNS resolver: %s", err);
	pool_apply_config();
	pooler_start_time = get_cached_time();
	if (!routing_start(base, err, sizeof(err))) {
		log_msg(LOG_LVL_FATAL, "%s", err);
		return 1;
	}
	if (!setup_signals())
		fatal("could not install signal handlers");
	if (!listener_start()) {
		log_msg(LOG_LVL_FATAL, "could not open the listening sockets");
		return 1;
	}
	if (!janitor_start())
		fatal("could not start the janitor timer");
	log_info("pgpilot %s started (pid %d)", PGPILOT_VERSION, (int)getpid());
	event_base_dispatch(base);

	listener_stop();
	janitor_stop();
	admin_cleanup();
	pools_kill(NULL);
	routing_stop();
	pool_global_cleanup();
	if (pooler_resolver)
		dns_resolver_free(pooler_resolver);
	for (size_t i = 0; i < ARRAY_SIZE(sig_events); i++)
		if (sig_events[i])
			event_free(sig_events[i]);
	if (pidfile_written) {
		unlink(pidfile_written);
		free(pidfile_written);
	}
	log_info("pgpilot stopped");
	config_free(cfg);
	event_base_free(base);
	return 0;
}
