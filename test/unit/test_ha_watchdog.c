/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/watchdog: the mode names, the timeout formula, a regular file and a FIFO as
 * fake devices (the ioctl or the open fails: activation refused, a half-opened device closed
 * with the magic 'V'), and a fake driver through HaWatchdogOps (the timeout set and read back,
 * keepalives, magic close, a driver timeout longer than asked refused).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha/ha_config.h"
#include "ha/watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_modes(void **state)
{
	HaWatchdogMode m = HA_WATCHDOG_REQUIRED;

	assert_true(ha_watchdog_mode_parse("off", &m));
	assert_int_equal(m, HA_WATCHDOG_OFF);
	assert_true(ha_watchdog_mode_parse("Automatic", &m));
	assert_int_equal(m, HA_WATCHDOG_AUTOMATIC);
	assert_true(ha_watchdog_mode_parse("required", &m));
	assert_int_equal(m, HA_WATCHDOG_REQUIRED);
	assert_false(ha_watchdog_mode_parse("on", &m));
	assert_false(ha_watchdog_mode_parse(NULL, &m));
	assert_string_equal(ha_watchdog_mode_name(HA_WATCHDOG_AUTOMATIC), "automatic");
	/* floor(L) - margin, whole seconds */
	assert_int_equal(ha_watchdog_timeout_s(24000, 5), 19);
	assert_int_equal(ha_watchdog_timeout_s(7000, 5), 2);
	assert_int_equal(ha_watchdog_timeout_s(3000, 5), 0);
	assert_int_equal(ha_watchdog_timeout_s(5000, 5), 0);
}

static void test_off(void **state)
{
	HaWatchdog w;

	ha_watchdog_init(&w, HA_WATCHDOG_OFF, "/nonexistent/watchdog", 10, NULL);
	assert_true(ha_watchdog_activate(&w));
	assert_false(ha_watchdog_is_active(&w));
	assert_false(ha_watchdog_keepalive(&w));
	ha_watchdog_disable(&w); /* nothing to do */
}

/* A regular file opens, but the ioctl fails (not a device): refused, and 'V' was written. */
static void test_regular_file(void **state)
{
	char path[] = "/tmp/pgpilot-wd-XXXXXX", buf[8] = "";
	int fd = mkstemp(path);
	HaWatchdog w;

	assert_true(fd >= 0);
	close(fd);
	ha_watchdog_init(&w, HA_WATCHDOG_AUTOMATIC, path, 10, NULL);
	assert_false(ha_watchdog_activate(&w));
	assert_false(ha_watchdog_is_active(&w));
	assert_non_null(strstr(w.error, "could not set the timeout of watchdog device"));
	fd = open(path, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'V');
	close(fd);
	unlink(path);
	/* a missing device */
	ha_watchdog_init(&w, HA_WATCHDOG_REQUIRED, "/nonexistent/watchdog", 10, NULL);
	assert_false(ha_watchdog_activate(&w));
	assert_non_null(
	    strstr(w.error, "could not open watchdog device \"/nonexistent/watchdog\""));
	/* no timeout left after the margin */
	ha_watchdog_init(&w, HA_WATCHDOG_REQUIRED, path, 0, NULL);
	assert_false(ha_watchdog_activate(&w));
	assert_non_null(strstr(w.error, "no watchdog timeout"));
}

/* A FIFO nobody reads: the non-blocking open fails. */
static void test_fifo(void **state)
{
	char dir[] = "/tmp/pgpilot-wd-XXXXXX", path[64];
	HaWatchdog w;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/watchdog", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	ha_watchdog_init(&w, HA_WATCHDOG_AUTOMATIC, path, 10, NULL);
	assert_false(ha_watchdog_activate(&w));
	assert_non_null(strstr(w.error, "could not open watchdog device"));
	unlink(path);
	rmdir(dir);
}

/* A fake driver */
static struct {
	int set_timeout, report_timeout, keepalives, closes, fd_open;
	char written[16];
	size_t nwritten;
} drv;

static int fake_open(const char *path, int flags)
{
	drv.fd_open = 1;
	return 42;
}

static int fake_ioctl(int fd, unsigned long req, int *arg)
{
	assert_int_equal(fd, 42);
	if (req == WDIOC_SETTIMEOUT) {
		drv.set_timeout = *arg;
		return 0;
	}
	if (req == WDIOC_GETTIMEOUT) {
		*arg = drv.report_timeout ? drv.report_timeout : drv.set_timeout;
		return 0;
	}
	if (req == WDIOC_KEEPALIVE) {
		drv.keepalives++;
		return 0;
	}
	errno = ENOTTY;
	return -1;
}

static ssize_t fake_write(int fd, const void *buf, size_t len)
{
	if (drv.nwritten + len < sizeof(drv.written)) {
		memcpy(drv.written + drv.nwritten, buf, len);
		drv.nwritten += len;
	}
	return (ssize_t)len;
}

static int fake_close(int fd)
{
	assert_int_equal(fd, 42);
	drv.closes++;
	drv.fd_open = 0;
	return 0;
}

static const HaWatchdogOps fake = {fake_open, fake_ioctl, fake_write, fake_close};

static void test_fake_driver(void **state)
{
	HaWatchdog w;

	memset(&drv, 0, sizeof(drv));
	ha_watchdog_init(&w, HA_WATCHDOG_REQUIRED, NULL, 19, &fake);
	assert_string_equal(w.device, HA_WATCHDOG_DEVICE_DEFAULT);
	assert_true(ha_watchdog_activate(&w));
	assert_true(ha_watchdog_is_active(&w));
	assert_int_equal(drv.set_timeout, 19);
	assert_int_equal(w.actual_timeout_s, 19);
	assert_true(ha_watchdog_activate(&w)); /* already active: no second open */
	for (int i = 0; i < 3; i++)
		assert_true(ha_watchdog_keepalive(&w));
	assert_int_equal(drv.keepalives, 3);
	ha_watchdog_disable(&w);
	assert_false(ha_watchdog_is_active(&w));
	assert_int_equal(drv.closes, 1);
	assert_int_equal(drv.nwritten, 1);
	assert_int_equal(drv.written[0], 'V');

	/* the driver rounds the timeout up past what was asked: unsafe, refused and stopped */
	memset(&drv, 0, sizeof(drv));
	drv.report_timeout = 30;
	ha_watchdog_init(&w, HA_WATCHDOG_AUTOMATIC, "/dev/fake", 19, &fake);
	assert_false(ha_watchdog_activate(&w));
	assert_non_null(strstr(w.error, "has a timeout of 30 s, longer than the 19 s asked for"));
	assert_int_equal(drv.closes, 1);
	assert_int_equal(drv.written[0], 'V');
	/* rounded down is fine */
	memset(&drv, 0, sizeof(drv));
	drv.report_timeout = 16;
	assert_true(ha_watchdog_activate(&w));
	assert_int_equal(w.actual_timeout_s, 16);
	ha_watchdog_disable(&w);
}

/* The [cluster] options: parsed, and a margin leaving no timeout above R refused. */
static void test_config(void **state)
{
	static const char *const base[][2] = {
	    {"ha_mode", "agent"},
	    {"name", "pg-test"},
	    {"etcd_endpoints", "http://127.0.0.1:2379"},
	    {"member", "pg-1"},
	    {"pg_conn", "host=127.0.0.1 port=5432 user=postgres"},
	    {"pg_data", "/tmp/nodata"},
	    {"pg_rto", "10"},
	};
	char err[1024];
	HaConfig cfg;

	ha_config_init(&cfg);
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		assert_true(ha_config_set(&cfg, base[i][0], base[i][1], err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_int_equal(cfg.watchdog_mode, HA_WATCHDOG_OFF);
	assert_string_equal(cfg.watchdog_device, HA_WATCHDOG_DEVICE_DEFAULT);
	assert_int_equal(cfg.watchdog_safety_margin, HA_WATCHDOG_MARGIN_DEFAULT);
	assert_int_equal(cfg.watchdog_timeout_s, 2); /* L = 7 s at pg_rto 10 */
	assert_true(ha_config_set(&cfg, "watchdog", "required", err, sizeof(err)));
	assert_true(ha_config_validate(&cfg, err, sizeof(err)));
	assert_int_equal(cfg.watchdog_mode, HA_WATCHDOG_REQUIRED);
	assert_true(ha_config_set(&cfg, "watchdog_safety_margin", "7", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "watchdog_safety_margin 7 s leaves a watchdog timeout of 0 s"));
	assert_true(ha_config_set(&cfg, "watchdog", "sometimes", err, sizeof(err)));
	assert_true(ha_config_set(&cfg, "watchdog_safety_margin", "5", err, sizeof(err)));
	assert_false(ha_config_validate(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "invalid watchdog \"sometimes\""));
	ha_config_cleanup(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_modes),        cmocka_unit_test(test_off),
	    cmocka_unit_test(test_regular_file), cmocka_unit_test(test_fifo),
	    cmocka_unit_test(test_fake_driver),  cmocka_unit_test(test_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
