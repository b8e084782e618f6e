/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The HA timings derived from the two promises an operator makes: pg_rto (seconds of write
 * unavailability after the primary's node dies) and pg_rpo (bytes of WAL a failover may lose).
 * Every value is in milliseconds; the formulas and the safety inequalities they keep are in
 * doc/ha.md. Pure arithmetic: no I/O, no clock.
 */
#ifndef PGPILOT_HA_TIMINGS_H
#define PGPILOT_HA_TIMINGS_H

#include "protocol/bytes.h"

#include <stdint.h>

#define HA_PG_RTO_DEFAULT 30      /* seconds */
#define HA_PG_RTO_MIN 5           /* seconds: below this no safe set exists */
#define HA_PG_RTO_MAX 86400       /* seconds: a day; more is a typo */
#define HA_PG_RPO_DEFAULT 1048576 /* bytes */
#define HA_ETCD_TICK_MS 500       /* etcd checks lease expiry every 500 ms */
#define HA_FENCE_MARGIN_MS 1000   /* the "1 s" of rule 2: fence this long before expiry */
#define HA_LEASE_TTL_MIN_MS 2000  /* etcd raises a TTL of 1 s to 2 s */
#define HA_RANK_STEP_MS 200       /* rule 5: rank k waits k x 200 ms */
#define HA_PROMOTE_MIN_MS 1000    /* a derived promote budget is at least this */
/* The fence guard (ha/fence_guard.h) stops the local PostgreSQL at last_ok_sent + L - M. */
#define HA_GUARD_MARGIN_MS 1000 /* M: the guard's safety margin before the lease expires */
#define HA_GUARD_EFFECT_MS 500  /* guard wake-up + SIGQUIT + backends gone, allowed within M */

/* A complete set of HA timings, all in milliseconds except pg_rpo (bytes). */
typedef struct HaTimings {
	int64_t pg_rto_ms;    /* the promise: writes unavailable at most this long */
	int64_t lease_ttl_ms; /* L: TTL of the leader lease, whole seconds (etcd grants seconds) */
	int64_t renew_ms;     /* R: the leader sends keepalive + owner txn every R */
	int64_t retry_ms;     /* T: how long a failing renewal is retried before fencing */
	int64_t fence_ms;     /* F: time allowed to fence (stop writes, terminate, demote) */
	int64_t probe_ms;     /* P: timeout of a peer probe during an election */
	int64_t promote_ms;   /* X: race won to writable primary, rank wait included */
	int64_t restart_ms;   /* S: how long a leader tries to restart its crashed PostgreSQL */
	int64_t rank_step_ms; /* rank k waits k x rank_step before racing */
	int64_t pg_rpo;       /* bytes a replica may lag status.optime and still be promoted */
} HaTimings;

/*
 * Explicit operator settings. A field of 0 means "derive it"; a negative field is refused. pg_rto
 * and pg_rpo are not here: they are the arguments of ha_timings_derive_overrides().
 */
typedef struct HaTimingOverrides {
	int64_t lease_ttl_ms;
	int64_t renew_ms;
	int64_t retry_ms;
	int64_t fence_ms;
	int64_t probe_ms;
	int64_t promote_ms;
	int64_t restart_ms;
	int64_t rank_step_ms;
} HaTimingOverrides;

/*
 * Derive the whole set from <pg_rto_s> (>= HA_PG_RTO_MIN) and <pg_rpo> (>= 0 bytes) into *out.
 * Returns false with a message in <err> when an argument is out of range; the result of a true
 * return always passes ha_timings_validate().
 */
bool ha_timings_derive(int pg_rto_s, int64_t pg_rpo, HaTimings *out, char *err,
		       size_t errlen) _MUSTCHECK;

/*
 * Like ha_timings_derive(), but the non-zero fields of <ov> (may be NULL) replace the derived
 * values, and the values still derived are computed from them (R, T, F, S from the given lease
 * TTL; the promote budget takes what pg_rto leaves). The result is validated: false with a message
 * naming the setting, or the inequality and its numbers, when the set is refused.
 */
bool ha_timings_derive_overrides(int pg_rto_s, int64_t pg_rpo, const HaTimingOverrides *ov,
				 HaTimings *out, char *err, size_t errlen) _MUSTCHECK;

/*
 * Check a complete set: every value positive, the lease TTL whole seconds and >= 2 s, and
 *   R + 2T <= L,  R + T + F + 1 s <= L,  R + S <= L,  L + 0.5 s + P + X <= pg_rto,
 *   R + T + M <= L (the fence guard never fires while a renewal may still succeed).
 * Returns false with a message naming the first broken rule and its numbers.
 */
bool ha_timings_validate(const HaTimings *t, char *err, size_t errlen) _MUSTCHECK;

/*
 * The fence guard's delay: it stops PostgreSQL this long after the send time of the last
 * successful keepalive (L - M), so that the stop has taken effect (HA_GUARD_EFFECT_MS) before
 * the lease can expire, and no earlier than the agent's own fence has had its budget F.
 */
int64_t ha_timings_guard_delay(const HaTimings *t);

/* The TTL to ask etcd for, in whole seconds. */
int64_t ha_timings_lease_ttl_s(const HaTimings *t);

/*
 * How long the member of rank <rank> (0 = best) waits before racing for the leader key:
 * rank x rank_step, capped at half the promote budget so a long tail of candidates cannot eat
 * into pg_rto (those beyond the cap race together; the etcd txn still decides).
 */
int64_t ha_timings_rank_delay(const HaTimings *t, int rank);

/* One line for SHOW HA and the log: "pg_rto=30s lease_ttl=24s renew=3000ms ...". Returns buf. */
const char *ha_timings_format(const HaTimings *t, char *buf, size_t len);

#endif
