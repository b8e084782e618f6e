/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Log lines to stderr, an optional logfile (reopened on RELOAD so logrotate works) and syslog.
 * The writer escapes control bytes and malformed UTF-8 in every formatted message (log_escape),
 * so that nothing a client sends can start a new line or drive a terminal.
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

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 when the bytes there are not one. */
static size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

size_t log_escape(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)src;
	size_t len = strlen(src), o = 0;

	if (cap == 0)
		return 0;
	for (size_t i = 0; i < len;) {
		char esc[4];
		size_t n = 1, elen = 0;

		/* printable ASCII (nearly every byte: no UTF-8 decoding for it), and UTF-8
		 * characters other than the C1 controls U+0080-U+009F */
		if (p[i] >= 0x80)
			n = utf8_seq_len(p + i, len - i);
		if ((p[i] >= 0x20 && p[i] < 0x7f) ||
		    (p[i] >= 0x80 && n > 0 && !(p[i] == 0xc2 && p[i + 1] < 0xa0))) {
			if (o + n >= cap)
				break;
			memcpy(dst + o, p + i, n);
			o += n;
			i += n;
			continue;
		}
		esc[elen++] = '\\';
		if (p[i] == '\n') {
			esc[elen++] = 'n';
		} else if (p[i] == '\r') {
			esc[elen++] = 'r';
		} else if (p[i] == '\t') {
			esc[elen++] = 't';
		} else {
			esc[elen++] = 'x';
			esc[elen++] = hex[p[i] >> 4];
			esc[elen++] = hex[p[i] & 0xf];
		}
		if (o + elen >= cap)
			break;
		memcpy(dst + o, esc, elen);
		o += elen;
		i++;
	}
	dst[o] = '\0';
	return o;
}

void log_vmsg(LogLevel lvl, const char *fmt, va_list ap)
{
	char raw[2048], msg[4 * sizeof(raw)], stamp[64];
	struct timeval tv;
	struct tm tm;
	int saved = errno;

	if ((int)lvl > log_verbosity)
		return;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	/* client-supplied names and values end up in messages: one line stays one line */
	log_escape(msg, sizeof(msg), raw);
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
