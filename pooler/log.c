/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Log lines to stderr, an optional logfile (reopened on RELOAD so logrotate works) and syslog.
 */
#include "pooler/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

int log_verbosity = LOG_LVL_INFO;
bool log_quiet;

static FILE *log_file;
static bool log_syslog;

static const char *const level_names[] = { "FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };
static const int syslog_prio[] = { LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };

static int facility_code(const char *name)
{
	static const struct {
		const char *name;
		int code;
	} map[] = { { "daemon", LOG_DAEMON }, { "user", LOG_USER }, { "local0", LOG_LOCAL0 },
		    { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
		    { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },
		    { "local7", LOG_LOCAL7 } };
	for (size_t i = 0; name && i < ARRAY_SIZE(map); i++)
		if (strcmp(map[i].name, name) == 0)
			return map[i].code;
	return LOG_DAEMON;
}

bool log_setup(const char *logfile, bool use_syslog, const char *ident, const char *facility)
{
	FILE *f = NULL;

	if (logfile && logfile[0]) {
		f = fopen(logfile, "a");
		if (!f)
			return false;
		setvbuf(f, NULL, _IOLBF, 0);
	}
	if (log_file)
		fclose(log_file);
	log_file = f;
	if (log_syslog)
		closelog();
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident ? ident : "pgpilot", LOG_PID, facility_code(facility));
	return true;
}

void log_close(void)
{
	if (log_file)
		fclose(log_file);
	log_file = NULL;
	if (log_syslog)
		closelog();
	log_syslog = false;
}

void log_vmsg(LogLevel lvl, const char *fmt, va_list ap)
{
	char msg[2048], stamp[64];
	struct timeval tv;
	struct tm tm;
	int saved = errno;

	if ((int)lvl > log_verbosity)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	if (!log_quiet)
		fprintf(stderr, "%s.%03d UTC [%d] %s %s\n", stamp, (int)(tv.tv_usec / 1000),
			(int)getpid(), level_names[lvl], msg);
	if (log_file)
		fprintf(log_file, "%s.%03d UTC [%d] %s %s\n", stamp, (int)(tv.tv_usec / 1000),
			(int)getpid(), level_names[lvl], msg);
	if (log_syslog)
		syslog(syslog_prio[lvl], "%s %s", level_names[lvl], msg);
	errno = saved;
}

void log_msg(LogLevel lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

void log_msg_errno(LogLevel lvl, const char *fmt, ...)
{
	char buf[1536];
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(lvl, "%s: %s", buf, strerror(saved));
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LVL_FATAL, fmt, ap);
	va_end(ap);
	exit(1);
}
