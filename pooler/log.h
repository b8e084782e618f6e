/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Logging: one line per event, "YYYY-MM-DD HH:MM:SS.mmm UTC [pid] LEVEL message", to stderr,
 * a logfile and/or syslog. log_* for plain messages; log_*_errno appends strerror(errno)
 * (style.md rule 20). Connection-stamped variants live with the connection objects.
 * Every message goes through log_escape() in the line writer, so a client-supplied name or value
 * holding a newline or other control byte cannot forge or break a log line.
 */
#ifndef PGPILOT_POOLER_LOG_H
#define PGPILOT_POOLER_LOG_H

#include "protocol/bytes.h"

#include <stdarg.h>

typedef enum LogLevel {
	LOG_LVL_FATAL,
	LOG_LVL_ERROR,
	LOG_LVL_WARNING,
	LOG_LVL_INFO,	/* LOG in PgBouncer's words */
	LOG_LVL_DEBUG,
	LOG_LVL_NOISE,
} LogLevel;

/* Current verbosity: INFO by default, -v raises, -q silences stderr. */
extern int log_verbosity;
extern bool log_quiet;

/* Reopen the log destinations (start-up and RELOAD). Returns false when the logfile cannot be
 * opened; the previous destination is kept. */
bool log_setup(const char *logfile, bool use_syslog, const char *ident, const char *facility) _MUSTCHECK;
void log_close(void);

/*
 * Copy <src> into <dst> (<cap> bytes, always NUL-terminated) with control characters made
 * visible: LF, CR and TAB as \n \r \t, other bytes below 0x20, DEL, the C1 controls U+0080-U+009F
 * and bytes that are not well-formed UTF-8 as \xNN. Printable ASCII and other UTF-8 characters
 * are kept. Stops at a whole escape when <dst> is full. Returns the length written.
 */
size_t log_escape(char *dst, size_t cap, const char *src);

void log_msg(LogLevel lvl, const char *fmt, ...) _PRINTF(2, 3);
void log_msg_errno(LogLevel lvl, const char *fmt, ...) _PRINTF(2, 3);
void log_vmsg(LogLevel lvl, const char *fmt, va_list ap) _PRINTF(2, 0);
__attribute__((noreturn)) void fatal(const char *fmt, ...) _PRINTF(1, 2);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                   \
	do {                                             \
		if (unlikely(log_verbosity >= LOG_LVL_DEBUG)) \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
	} while (0)
#define log_noise(...)                                   \
	do {                                             \
		if (unlikely(log_verbosity >= LOG_LVL_NOISE)) \
			log_msg(LOG_LVL_NOISE, __VA_ARGS__); \
	} while (0)

#endif
