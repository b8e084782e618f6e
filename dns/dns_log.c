/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The logging hook of dns/: formats a line and hands it to the function the pooler installed, or
 * writes it to stderr when none is installed (unit tests, the integration probe; DEBUG lines only
 * when PGPILOT_DNS_DEBUG is set in the environment).
 */
#include "dns/dns_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static DnsLogFunc log_func;
static void *log_arg;

const char *dns_log_level_name(DnsLogLevel lvl)
{
	switch (lvl) {
	case DNS_LOG_ERROR:
		return "ERROR";
	case DNS_LOG_WARNING:
		return "WARNING";
	case DNS_LOG_INFO:
		return "LOG";
	case DNS_LOG_DEBUG:
		return "DEBUG";
	}
	return "UNKNOWN";
}

void dns_set_log_func(DnsLogFunc fn, void *arg)
{
	log_func = fn;
	log_arg = arg;
}

void dns_log(DnsLogLevel lvl, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_func)
		log_func(log_arg, lvl, line);
	else if (lvl != DNS_LOG_DEBUG || getenv("PGPILOT_DNS_DEBUG"))
		fprintf(stderr, "dns %s: %s\n", dns_log_level_name(lvl), line);
}
