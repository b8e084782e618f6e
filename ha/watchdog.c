/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The Linux watchdog device driver API (linux/watchdog.h): WDIOC_SETTIMEOUT, WDIOC_GETTIMEOUT,
 * WDIOC_KEEPALIVE, and the magic close (write 'V' before close) that stops a driver which
 * supports it. See watchdog.h for the modes.
 */
#include "ha/watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int real_open(const char *path, int flags)
{
	return open(path, flags);
}

static int real_ioctl(int fd, unsigned long request, int *arg)
{
	return ioctl(fd, request, arg);
}

const char *ha_watchdog_mode_name(HaWatchdogMode m)
{
	switch (m) {
	case HA_WATCHDOG_OFF:
		return "off";
	case HA_WATCHDOG_AUTOMATIC:
		return "automatic";
	case HA_WATCHDOG_REQUIRED:
		return "required";
	}
	return "unknown";
}

bool ha_watchdog_mode_parse(const char *s, HaWatchdogMode *m)
{
	static const HaWatchdogMode all[] = {HA_WATCHDOG_OFF, HA_WATCHDOG_AUTOMATIC,
					     HA_WATCHDOG_REQUIRED};

	for (size_t i = 0; s && i < ARRAY_SIZE(all); i++) {
		if (strcasecmp(s, ha_watchdog_mode_name(all[i])) == 0) {
			*m = all[i];
			return true;
		}
	}
	return false;
}

int ha_watchdog_timeout_s(int64_t lease_ttl_ms, int margin_s)
{
	int64_t t = lease_ttl_ms / 1000 - margin_s;

	if (t <= 0)
		return 0;
	return t > 86400 ? 86400 : (int)t;
}

void ha_watchdog_init(HaWatchdog *w, HaWatchdogMode mode, const char *device, int timeout_s,
		      const HaWatchdogOps *ops)
{
	memset(w, 0, sizeof(*w));
	w->mode = mode;
	snprintf(w->device, sizeof(w->device), "%s",
		 device && device[0] ? device : HA_WATCHDOG_DEVICE_DEFAULT);
	w->timeout_s = timeout_s;
	w->fd = -1;
	if (ops)
		w->ops = *ops;
	if (!w->ops.open)
		w->ops.open = real_open;
	if (!w->ops.ioctl)
		w->ops.ioctl = real_ioctl;
	if (!w->ops.write)
		w->ops.write = write;
	if (!w->ops.close)
		w->ops.close = close;
}

bool ha_watchdog_is_active(const HaWatchdog *w)
{
	return w->fd >= 0;
}

void ha_watchdog_disable(HaWatchdog *w)
{
	if (w->fd < 0)
		return;
	/* the magic close: a driver that supports it stops counting */
	if (w->ops.write(w->fd, "V", 1) != 1)
		snprintf(w->error, sizeof(w->error),
			 "could not write the magic close to watchdog device \"%.200s\": %s",
			 w->device, strerror(errno));
	w->ops.close(w->fd);
	w->fd = -1;
}

bool ha_watchdog_activate(HaWatchdog *w)
{
	int t;

	if (w->mode == HA_WATCHDOG_OFF || w->fd >= 0)
		return true;
	w->error[0] = '\0';
	if (w->timeout_s <= 0) {
		snprintf(w->error, sizeof(w->error),
			 "no watchdog timeout is left within the lease after the safety margin");
		return false;
	}
	w->fd = w->ops.open(w->device, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
	if (w->fd < 0) {
		snprintf(w->error, sizeof(w->error),
			 "could not open watchdog device \"%.200s\": %s", w->device,
			 strerror(errno));
		return false;
	}
	t = w->timeout_s;
	if (w->ops.ioctl(w->fd, WDIOC_SETTIMEOUT, &t) != 0) {
		snprintf(w->error, sizeof(w->error),
			 "could not set the timeout of watchdog device \"%.200s\": %s", w->device,
			 strerror(errno));
		ha_watchdog_disable(w);
		return false;
	}
	t = 0;
	if (w->ops.ioctl(w->fd, WDIOC_GETTIMEOUT, &t) != 0)
		t = w->timeout_s; /* not every driver reports it: trust the set */
	w->actual_timeout_s = t;
	if (t > w->timeout_s) {
		snprintf(w->error, sizeof(w->error),
			 "watchdog device \"%.200s\" has a timeout of %d s, longer than the %d s "
			 "asked for: the lease could expire before it resets the machine",
			 w->device, t, w->timeout_s);
		ha_watchdog_disable(w);
		return false;
	}
	return true;
}

bool ha_watchdog_keepalive(HaWatchdog *w)
{
	int dummy = 0;

	if (w->fd < 0) {
		snprintf(w->error, sizeof(w->error), "the watchdog is not active");
		return false;
	}
	if (w->ops.ioctl(w->fd, WDIOC_KEEPALIVE, &dummy) != 0) {
		snprintf(w->error, sizeof(w->error),
			 "could not keep watchdog device \"%.200s\" alive: %s", w->device,
			 strerror(errno));
		return false;
	}
	return true;
}
