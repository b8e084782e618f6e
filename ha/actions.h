/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * What the agent does to its local PostgreSQL: promote, re-point, fence + demote to a standby,
 * (re)start, rewind from the leader. Each action is a short list of steps (SQL through
 * ha_pg_run, pg_ctl / pg_rewind as child processes, small file edits in pg_data) run one after
 * the other on the event loop, bounded by one timeout, ending in one callback with the outcome.
 * Nothing blocks the loop: children run as the owner of pg_data (setuid when pgpilot is root)
 * and are reaped by a short poll timer.
 */
#ifndef PGPILOT_HA_ACTIONS_H
#define PGPILOT_HA_ACTIONS_H

#include "protocol/bytes.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

/* The local node the actions work on. Strings are copied by each action. */
typedef struct HaNode {
	struct event_base *base;
	const char *pg_conn; /* libpq conninfo, superuser */
	const char *pg_data;
	const char *pg_bin; /* directory of pg_ctl and pg_rewind */
} HaNode;

typedef struct HaActionRun HaActionRun;

/* Outcome of an action: <detail> says what happened or what failed (one line). */
typedef void (*HaActionDone)(void *arg, bool ok, const char *detail);

/*
 * pg_promote(false), then pg_is_in_recovery() polled every 100 ms until false, the promote
 * signal sent again with each poll (it wakes a startup process that sleeps after a lost WAL
 * stream), all within <timeout_ms>; also resets the default_transaction_read_only a fence may
 * have left.
 */
HaActionRun *ha_action_promote(const HaNode *n, int timeout_ms, HaActionDone cb, void *arg);
/* ALTER SYSTEM SET primary_conninfo = <conninfo>; SELECT pg_reload_conf() (PG 13+). */
HaActionRun *ha_action_repoint(const HaNode *n, const char *conninfo, int timeout_ms,
			       HaActionDone cb, void *arg);
/*
 * Fence and demote: default_transaction_read_only = on + reload + terminate client backends
 * (within <fence_ms>; failures there do not stop the rest), pg_ctl stop -m fast (immediate when
 * fast fails), then standby.signal + primary_conninfo (<conninfo>, NULL = none) and pg_ctl start
 * as a standby. The caller stops its own writes first (local_writes(false)).
 */
HaActionRun *ha_action_demote(const HaNode *n, const char *conninfo, int fence_ms, int timeout_ms,
			      HaActionDone cb, void *arg);
/*
 * Start a stopped node: as a standby of <conninfo> (NULL = none) when <standby>, else as it
 * was (a leader's crashed primary restarts as a primary). Every start (here and in demote and
 * rewind) first cleans up after a crashed server: when postmaster.pid does not name a live
 * postmaster, the orphaned processes of the old server (postgres processes of the data dir's
 * owner whose working directory is pg_data) are killed and waited for, and the stale
 * postmaster.pid is removed, so that pg_ctl start does not stop at the old lock file.
 */
HaActionRun *ha_action_start(const HaNode *n, bool standby, const char *conninfo, int timeout_ms,
			     HaActionDone cb, void *arg);
/*
 * Rejoin a diverged former primary: stop it (fast) when running, pg_rewind --target-pgdata
 * --source-server=<source> (needs wal_log_hints = on or data checksums), then start it as a
 * standby of <conninfo>. A target that was not shut down cleanly is first started as a standby
 * without upstream and stopped again, so that pg_rewind accepts it. pg_rewind copies the
 * source's configuration files: the node's own (ha_conf_files) are read into memory before it
 * runs and written back after it, also when the rewind fails.
 */
HaActionRun *ha_action_rewind(const HaNode *n, const char *source, const char *conninfo,
			      int timeout_ms, HaActionDone cb, void *arg);

/*
 * Make sure no server runs on pg_data, whatever it is doing (starting, in crash recovery,
 * running): SIGKILL every postgres and pg_ctl process of the data dir's owner whose working
 * directory is pg_data, until none has been seen for 100 ms. Fails when some survive past
 * <timeout_ms>. A leader whose restart budget is spent runs this before it releases the key,
 * so that a start in flight cannot bring up a second primary.
 */
HaActionRun *ha_action_halt(const HaNode *n, int timeout_ms, HaActionDone cb, void *arg);

/*
 * Abandon an action: no callback; a running child (and its process group) is killed, a SQL
 * task cancelled. A postmaster that pg_ctl already launched runs on: ha_action_halt() stops it.
 */
void ha_action_cancel(HaActionRun *r);

/*
 * For shutdown, before ha_action_cancel(): when the action is running pg_ctl, block up to
 * <max_ms> until pg_ctl has exited or postmaster.pid names a live server, so that a server
 * being started when pgpilot exits has written its lock file and whoever looks after
 * PostgreSQL next finds it. Returns at once when no pg_ctl runs. Never on the event loop.
 */
void ha_action_settle(HaActionRun *r, int max_ms);

/*
 * Failed starts back off. Each start step (pg_ctl start in ha_action_start, demote and rewind)
 * that fails, or that the action's timeout interrupts, counts against its data directory; the
 * next start step on that directory waits ha_backoff_delay_ms(failures) after the failure (the
 * action's timeout is extended by the wait); a start that succeeds clears the count. The
 * failure's outcome names the cause (pg_ctl's output and the lines of
 * <pg_data>/pgpilot-postgres.log that say why, see ha_pg_log_cause) and when the next start may
 * run.
 */
#define HA_START_BACKOFF_MIN_MS 1000
#define HA_START_BACKOFF_MAX_MS 30000

typedef struct HaBackoff {
	int failures;          /* failed starts in a row */
	int64_t not_before_ms; /* monotonic ms before which no start runs (0 = none) */
} HaBackoff;

/* The wait after <failures> failures in a row: 0 for none, then <min_ms> doubling each time,
 * capped at <max_ms> (no overflow whatever <failures> is). */
int64_t ha_backoff_delay_ms(int failures, int64_t min_ms, int64_t max_ms);
/* One more failure at <now_ms>: the next attempt is allowed at now + the delay. */
void ha_backoff_failed(HaBackoff *b, int64_t now_ms, int64_t min_ms, int64_t max_ms);
void ha_backoff_reset(HaBackoff *b);
/* How long an attempt at <now_ms> has to wait (0 = go). */
int64_t ha_backoff_wait_ms(const HaBackoff *b, int64_t now_ms);
/* The start back-off of <pg_data> (a copy; zero when none is recorded), and forgetting it. */
HaBackoff ha_start_backoff(const char *pg_data);
void ha_start_backoff_clear(const char *pg_data);

/*
 * Why a server did not start, from the text its log got during the start (<log>, may be
 * NULL): the last three lines that carry FATAL, PANIC, ERROR, WARNING, HINT or "could not",
 * else the last two lines, joined by " | ", each cut to 200 bytes, into <out> (always
 * terminated). Returns the length written.
 */
size_t ha_pg_log_cause(const char *log, char *out, size_t outlen);

/*
 * The node's own configuration files, kept across a pg_rewind (which copies the source's):
 * postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf, as in Patroni, and the
 * files in pg_data that these configuration files name in include / include_if_exists (a
 * plain file name, no directory: a per-node include such as 'node.conf'), up to
 * HA_CONF_BACKUP_MAX files in all. A backup holds their contents and modes in memory (not in
 * pg_data: pg_rewind would replace or remove a copy kept there), and which of them were absent.
 */
#define HA_CONF_FILES_N 4
#define HA_CONF_BACKUP_MAX 12
#define HA_CONF_NAME_MAX 64
#define HA_CONF_FILE_MAX (4 * 1024 * 1024)
extern const char *const ha_conf_files[HA_CONF_FILES_N];

typedef struct HaConfBackup {
	bool taken;
	int n; /* files in f[] */
	struct {
		char name[HA_CONF_NAME_MAX]; /* relative to pg_data */
		bool present;
		unsigned mode; /* permission bits */
		char *data;    /* owned */
		size_t len;
	} f[HA_CONF_BACKUP_MAX];
} HaConfBackup;

/*
 * The file names <conf> (the text of a postgresql.conf) includes from its own directory:
 * include and include_if_exists directives whose value is a quoted plain file name (no '/',
 * not "." or "..", shorter than HA_CONF_NAME_MAX); commented lines do not count. Calls
 * <fn>(arg, name) for each, in order.
 */
void ha_conf_includes(const char *conf, void (*fn)(void *arg, const char *name), void *arg);

/* Read the files of <pg_data> into <b> (cleaned first). False with <err> when one exists but
 * cannot be read or is larger than HA_CONF_FILE_MAX: then nothing may overwrite them. */
bool ha_conf_backup_take(HaConfBackup *b, const char *pg_data, char *err, size_t errlen) _MUSTCHECK;
/* Write them back atomically (temporary file + rename, owned like pg_data, their old mode);
 * a file that was absent is removed. False with <err> at the first that fails. */
bool ha_conf_backup_restore(const HaConfBackup *b, const char *pg_data, char *err,
			    size_t errlen) _MUSTCHECK;
void ha_conf_backup_cleanup(HaConfBackup *b);

/* The name of the action for logs ("promote", "demote", ...). */
const char *ha_action_run_name(const HaActionRun *r);

/* Is a postmaster.pid present in <pg_data>? (a crashed server leaves it behind) */
bool ha_pg_pidfile_exists(const char *pg_data);

/* What postmaster.pid says about the server on a data directory. */
typedef enum HaPidfile {
	HA_PIDFILE_NONE,    /* no postmaster.pid */
	HA_PIDFILE_RUNNING, /* it names a live postgres of the data dir (or cannot be parsed:
			       a server may be writing it right now) */
	HA_PIDFILE_STALE,   /* its PID is gone, a zombie, or another program: a crash left it */
} HaPidfile;
const char *ha_pidfile_name(HaPidfile s);

/*
 * Check <pg_data>/postmaster.pid. The PID is the postmaster when /proc shows a live (not
 * zombie) process of the data dir's owner, named postgres, whose working directory is pg_data.
 * <pid> (may be NULL) gets the PID read, 0 when none.
 */
HaPidfile ha_pg_pidfile_check(const char *pg_data, pid_t *pid);

/*
 * Live processes (zombies do not count) owned by <uid> whose working directory is <dir> and
 * whose command name or executable's base name is one of <names> (NULL-terminated). Up to
 * <max> PIDs go to <out>; returns how many matched (possibly more than <max>), or -1 when
 * /proc or <dir> cannot be read. The process calling it is never listed.
 */
int ha_proc_find(const char *dir, uid_t uid, const char *const *names, pid_t *out, int max);

#endif
