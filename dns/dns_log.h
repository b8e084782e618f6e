/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The logging hook of dns/. dns/ must not depend on pooler/ (dependencies flow pooler -> dns), so
 * it logs through one function pointer that the pooler sets at start-up with dns_set_log_func().
 * Until then, or when it is set to NULL, lines go to stderr (DEBUG only with PGPILOT_DNS_DEBUG
 * set).
 */
#ifndef PGPILOT_DNS_DNS_LOG_H
#define PGPILOT_DNS_DNS_LOG_H

#include "protocol/bytes.h"

typedef enum DnsLogLevel {
	DNS_LOG_ERROR,   /* a publication failed for good, or a setting is unusable */
	DNS_LOG_WARNING, /* an attempt failed and will be retried, a stale address is in use */
	DNS_LOG_INFO,    /* a record was published */
	DNS_LOG_DEBUG,   /* every step, for troubleshooting */
} DnsLogLevel;

const char *dns_log_level_name(DnsLogLevel lvl);

/* Receives one formatted line without trailing newline; <arg> is what was given to
 * dns_set_log_func(). Called on the event loop thread only. */
typedef void (*DnsLogFunc)(void *arg, DnsLogLevel lvl, const char *msg);

/* Route dns/ log lines to <fn>; NULL restores the stderr default. */
void dns_set_log_func(DnsLogFunc fn, void *arg);

void dns_log(DnsLogLevel lvl, const char *fmt, ...) _PRINTF(2, 3);

#define dns_log_error(...) dns_log(DNS_LOG_ERROR, __VA_ARGS__)
#define dns_log_warning(...) dns_log(DNS_LOG_WARNING, __VA_ARGS__)
#define dns_log_info(...) dns_log(DNS_LOG_INFO, __VA_ARGS__)
#define dns_log_debug(...) dns_log(DNS_LOG_DEBUG, __VA_ARGS__)

#endif
