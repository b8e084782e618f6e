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
 * pg_promote(true, <timeout>) and then pg_is_in_recovery() = false; also resets the
 * default_transaction_read_only a fence may have left.
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
/* Start a stopped node: as a standby of <conninfo> (NULL = none) when <standby>, else as it
 * was (a leader's crashed primary restarts as a primary). */
HaActionRun *ha_action_start(const HaNode *n, bool standby, const char *conninfo, int timeout_ms,
			     HaActionDone cb, void *arg);
/*
 * Rejoin a diverged former primary: stop it (fast) when running, pg_rewind --target-pgdata
 * --source-server=<source> (needs wal_log_hints = on or data checksums), then start it as a
 * standby of <conninfo>. A target that was not shut down cleanly is first started as a standby
 * without upstream and stopped again, so that pg_rewind accepts it.
 */
HaActionRun *ha_action_rewind(const HaNode *n, const char *source, const char *conninfo,
			      int timeout_ms, HaActionDone cb, void *arg);

/* Abandon an action: no callback; a running child is killed, a SQL task cancelled. */
void ha_action_cancel(HaActionRun *r);

/* The name of the action for logs ("promote", "demote", ...). */
const char *ha_action_run_name(const HaActionRun *r);

/* Is a postmaster.pid present in <pg_data>? (a crashed server leaves it behind) */
bool ha_pg_pidfile_exists(const char *pg_data);

#endif
