/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The optional kernel watchdog, as Patroni's: while this node holds the leader key the device
 * (/dev/watchdog by default) is open with a timeout of lease_ttl - watchdog_safety_margin and is
 * kept alive on every successful renewal; when the agent hangs or dies the kernel resets the
 * machine. A clean give-up (demote, fence, release) closes it with the magic 'V', which stops it.
 * Modes: off; automatic (use it when it works, else warn and go on without); required (a member
 * whose watchdog cannot be activated does not become leader). The system calls go through
 * HaWatchdogOps so that unit tests can use a fake device.
 */
#ifndef PGPILOT_HA_WATCHDOG_H
#define PGPILOT_HA_WATCHDOG_H

#include "protocol/bytes.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HA_WATCHDOG_DEVICE_DEFAULT "/dev/watchdog"
#define HA_WATCHDOG_MARGIN_DEFAULT 5 /* seconds */

typedef enum HaWatchdogMode {
	HA_WATCHDOG_OFF,       /* never opened */
	HA_WATCHDOG_AUTOMATIC, /* used when it can be activated, else a warning */
	HA_WATCHDOG_REQUIRED,  /* no leadership without an active watchdog */
} HaWatchdogMode;
const char *ha_watchdog_mode_name(HaWatchdogMode m);
bool ha_watchdog_mode_parse(const char *s, HaWatchdogMode *m) _MUSTCHECK;

/* The system calls used; NULL members (or NULL ops) mean the real ones. */
typedef struct HaWatchdogOps {
	int (*open)(const char *path, int flags);
	int (*ioctl)(int fd, unsigned long request, int *arg);
	ssize_t (*write)(int fd, const void *buf, size_t len);
	int (*close)(int fd);
} HaWatchdogOps;

typedef struct HaWatchdog {
	HaWatchdogMode mode;
	char device[256];
	int timeout_s;        /* asked for */
	int actual_timeout_s; /* what the driver reported after setting it */
	int fd;               /* -1 when closed */
	HaWatchdogOps ops;
	char error[512]; /* why the last activation or keepalive failed, "" when it did not */
} HaWatchdog;

/*
 * The watchdog timeout for a lease of <lease_ttl_ms> and a margin of <margin_s> seconds:
 * whole seconds, floor(L / 1000) - margin; <= 0 means no usable timeout.
 */
int ha_watchdog_timeout_s(int64_t lease_ttl_ms, int margin_s);

void ha_watchdog_init(HaWatchdog *w, HaWatchdogMode mode, const char *device, int timeout_s,
		      const HaWatchdogOps *ops);
/*
 * Open the device and set its timeout (WDIOC_SETTIMEOUT, then WDIOC_GETTIMEOUT). True when
 * active (or already active, or mode off: nothing to do). False with w->error set when the
 * device cannot be used: it cannot be opened, the ioctl fails (e.g. not a watchdog device), or
 * the driver's timeout is longer than the one asked for (unsafe); the device is then closed with
 * the magic 'V' so that a half-opened watchdog does not reset the machine.
 */
bool ha_watchdog_activate(HaWatchdog *w) _MUSTCHECK;
bool ha_watchdog_is_active(const HaWatchdog *w);
/* WDIOC_KEEPALIVE; false with w->error when it fails (or when not active). */
bool ha_watchdog_keepalive(HaWatchdog *w) _MUSTCHECK;
/* Magic close: write 'V', close. Nothing when not active. */
void ha_watchdog_disable(HaWatchdog *w);

#endif
