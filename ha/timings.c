/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Derivation and validation of the HA timings (see timings.h, and doc/ha.md for the formulas and
 * the table at common pg_rto values). Integer milliseconds throughout; every division rounds
 * toward zero, which only ever makes a budget smaller, so the inequalities survive rounding.
 */
#include "ha/timings.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* the guard's stop lands before the lease can expire, and after the agent's own fence budget */
_Static_assert(HA_GUARD_EFFECT_MS <= HA_GUARD_MARGIN_MS, "the fence guard acts too late");
_Static_assert(HA_GUARD_MARGIN_MS <= HA_FENCE_MARGIN_MS, "the fence guard preempts the fence");

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	if (v < lo)
		return lo;
	if (v > hi)
		return hi;
	return v;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* P: a dead peer costs a whole probe timeout, so it shrinks with pg_rto (0.5 s .. 2 s). */
static int64_t probe_formula(int64_t rto_ms)
{
	return clamp64(rto_ms / 15, 500, 2000);
}

/* X before the lease TTL is rounded: pg_promote() plus the rank wait (1 s .. 5 s). */
static int64_t promote_formula(int64_t rto_ms)
{
	return clamp64(rto_ms / 10, 1000, 5000);
}

/* R: frequent enough to keep status.optime fresh for the RPO check, at most 5 s. */
static int64_t renew_formula(int64_t lease_ms)
{
	return clamp64(lease_ms / 8, 500, 5000);
}

/* F: stopping writes is instant, demoting PostgreSQL is not; a quarter of what is left. */
static int64_t fence_formula(int64_t lease_ms)
{
	return clamp64((lease_ms - HA_FENCE_MARGIN_MS) / 4, 250, 5000);
}

/* T: the largest retry budget both inequalities allow; a longer T rides out more etcd hiccups. */
static int64_t retry_formula(int64_t lease_ms, int64_t renew_ms, int64_t fence_ms)
{
	return min64((lease_ms - renew_ms) / 2,
		     lease_ms - HA_FENCE_MARGIN_MS - renew_ms - fence_ms);
}

/* S: "about L/3" (design rule 7). */
static int64_t restart_formula(int64_t lease_ms)
{
	return lease_ms / 3;
}

static bool check_args(int pg_rto_s, int64_t pg_rpo, char *err, size_t errlen)
{
	if (pg_rto_s < HA_PG_RTO_MIN || pg_rto_s > HA_PG_RTO_MAX) {
		snprintf(err, errlen, "pg_rto must be between %d and %d seconds, not %d",
			 HA_PG_RTO_MIN, HA_PG_RTO_MAX, pg_rto_s);
		return false;
	}
	if (pg_rpo < 0) {
		snprintf(err, errlen, "pg_rpo must not be negative: %" PRId64, pg_rpo);
		return false;
	}
	return true;
}

static bool check_override(const char *name, int64_t v, char *err, size_t errlen)
{
	if (v < 0) {
		snprintf(err, errlen, "%s must not be negative: %" PRId64 " ms", name, v);
		return false;
	}
	return true;
}

bool ha_timings_derive_overrides(int pg_rto_s, int64_t pg_rpo, const HaTimingOverrides *ov,
				 HaTimings *out, char *err, size_t errlen)
{
	static const HaTimingOverrides none;
	HaTimings t;
	int64_t rto;

	if (!ov)
		ov = &none;
	if (!check_args(pg_rto_s, pg_rpo, err, errlen))
		return false;
	if (!check_override("lease_ttl", ov->lease_ttl_ms, err, errlen) ||
	    !check_override("renew_interval", ov->renew_ms, err, errlen) ||
	    !check_override("retry_timeout", ov->retry_ms, err, errlen) ||
	    !check_override("fence_timeout", ov->fence_ms, err, errlen) ||
	    !check_override("probe_timeout", ov->probe_ms, err, errlen) ||
	    !check_override("promote_timeout", ov->promote_ms, err, errlen) ||
	    !check_override("restart_timeout", ov->restart_ms, err, errlen) ||
	    !check_override("rank_step", ov->rank_step_ms, err, errlen))
		return false;

	memset(&t, 0, sizeof(t));
	rto = (int64_t)pg_rto_s * 1000;
	t.pg_rto_ms = rto;
	t.pg_rpo = pg_rpo;
	t.rank_step_ms = ov->rank_step_ms ? ov->rank_step_ms : HA_RANK_STEP_MS;
	t.probe_ms = ov->probe_ms ? ov->probe_ms : probe_formula(rto);

	if (ov->lease_ttl_ms) {
		t.lease_ttl_ms = ov->lease_ttl_ms;
	} else {
		int64_t x = ov->promote_ms ? ov->promote_ms : promote_formula(rto);
		int64_t raw = rto - HA_ETCD_TICK_MS - t.probe_ms - x;

		/* etcd grants whole seconds: round down, so the sum stays within pg_rto */
		t.lease_ttl_ms = raw > 0 ? raw / 1000 * 1000 : 0;
		if (t.lease_ttl_ms < HA_LEASE_TTL_MIN_MS) {
			snprintf(err, errlen,
				 "probe_timeout %" PRId64 " ms + promote_timeout %" PRId64
				 " ms + %d ms etcd expiry tick leave a lease_ttl of %" PRId64
				 " ms within pg_rto %" PRId64 " ms, below the %d ms minimum",
				 t.probe_ms, x, HA_ETCD_TICK_MS, t.lease_ttl_ms, rto,
				 HA_LEASE_TTL_MIN_MS);
			return false;
		}
	}

	if (ov->promote_ms) {
		t.promote_ms = ov->promote_ms;
	} else {
		/* what the rounding of L left over goes to the promote budget */
		t.promote_ms = rto - HA_ETCD_TICK_MS - t.probe_ms - t.lease_ttl_ms;
		if (t.promote_ms < HA_PROMOTE_MIN_MS) {
			snprintf(err, errlen,
				 "lease_ttl %" PRId64 " ms + probe_timeout %" PRId64
				 " ms + %d ms etcd expiry tick leave a promote budget of %" PRId64
				 " ms within pg_rto %" PRId64 " ms, below the %d ms minimum",
				 t.lease_ttl_ms, t.probe_ms, HA_ETCD_TICK_MS, t.promote_ms, rto,
				 HA_PROMOTE_MIN_MS);
			return false;
		}
	}

	t.renew_ms = ov->renew_ms ? ov->renew_ms : renew_formula(t.lease_ttl_ms);
	t.fence_ms = ov->fence_ms ? ov->fence_ms : fence_formula(t.lease_ttl_ms);
	if (ov->retry_ms) {
		t.retry_ms = ov->retry_ms;
	} else {
		t.retry_ms = retry_formula(t.lease_ttl_ms, t.renew_ms, t.fence_ms);
		if (t.retry_ms <= 0) {
			snprintf(err, errlen,
				 "renew_interval %" PRId64 " ms and fence_timeout %" PRId64
				 " ms leave no retry budget within lease_ttl %" PRId64 " ms",
				 t.renew_ms, t.fence_ms, t.lease_ttl_ms);
			return false;
		}
	}
	t.restart_ms = ov->restart_ms ? ov->restart_ms : restart_formula(t.lease_ttl_ms);

	if (!ha_timings_validate(&t, err, errlen))
		return false;
	*out = t;
	return true;
}

bool ha_timings_derive(int pg_rto_s, int64_t pg_rpo, HaTimings *out, char *err, size_t errlen)
{
	return ha_timings_derive_overrides(pg_rto_s, pg_rpo, NULL, out, err, errlen);
}

bool ha_timings_validate(const HaTimings *t, char *err, size_t errlen)
{
	const struct {
		const char *name;
		int64_t v;
	} pos[] = {
	    {"pg_rto", t->pg_rto_ms},           {"lease_ttl", t->lease_ttl_ms},
	    {"renew_interval", t->renew_ms},    {"retry_timeout", t->retry_ms},
	    {"fence_timeout", t->fence_ms},     {"probe_timeout", t->probe_ms},
	    {"promote_timeout", t->promote_ms}, {"restart_timeout", t->restart_ms},
	};
	int64_t L = t->lease_ttl_ms, R = t->renew_ms, T = t->retry_ms, F = t->fence_ms;
	int64_t sum;

	for (size_t i = 0; i < ARRAY_SIZE(pos); i++) {
		if (pos[i].v <= 0) {
			snprintf(err, errlen, "%s must be positive: %" PRId64 " ms", pos[i].name,
				 pos[i].v);
			return false;
		}
	}
	if (t->rank_step_ms < 0) {
		snprintf(err, errlen, "rank_step must not be negative: %" PRId64 " ms",
			 t->rank_step_ms);
		return false;
	}
	if (t->pg_rpo < 0) {
		snprintf(err, errlen, "pg_rpo must not be negative: %" PRId64, t->pg_rpo);
		return false;
	}
	if (L % 1000 != 0) {
		snprintf(
		    err, errlen,
		    "lease_ttl must be a whole number of seconds (etcd grants seconds): %" PRId64
		    " ms",
		    L);
		return false;
	}
	if (L < HA_LEASE_TTL_MIN_MS) {
		snprintf(err, errlen, "lease_ttl must be at least %d ms: %" PRId64 " ms",
			 HA_LEASE_TTL_MIN_MS, L);
		return false;
	}
	if (R + 2 * T > L) {
		snprintf(err, errlen,
			 "renew_interval + 2 * retry_timeout must not exceed lease_ttl: %" PRId64
			 " + 2 * %" PRId64 " = %" PRId64 " ms > %" PRId64 " ms",
			 R, T, R + 2 * T, L);
		return false;
	}
	if (R + T + F + HA_FENCE_MARGIN_MS > L) {
		snprintf(err, errlen,
			 "renew_interval + retry_timeout + fence_timeout + %d ms must not exceed "
			 "lease_ttl: %" PRId64 " + %" PRId64 " + %" PRId64 " + %d = %" PRId64
			 " ms > %" PRId64 " ms",
			 HA_FENCE_MARGIN_MS, R, T, F, HA_FENCE_MARGIN_MS,
			 R + T + F + HA_FENCE_MARGIN_MS, L);
		return false;
	}
	if (R + T + HA_GUARD_MARGIN_MS > L) {
		snprintf(err, errlen,
			 "renew_interval + retry_timeout + the fence guard margin %d ms must not "
			 "exceed lease_ttl: %" PRId64 " + %" PRId64 " + %d = %" PRId64 " ms > %" PRId64
			 " ms",
			 HA_GUARD_MARGIN_MS, R, T, HA_GUARD_MARGIN_MS, R + T + HA_GUARD_MARGIN_MS, L);
		return false;
	}
	if (R + t->restart_ms > L) {
		snprintf(err, errlen,
			 "renew_interval + restart_timeout must not exceed lease_ttl: %" PRId64
			 " + %" PRId64 " = %" PRId64 " ms > %" PRId64 " ms",
			 R, t->restart_ms, R + t->restart_ms, L);
		return false;
	}
	sum = L + HA_ETCD_TICK_MS + t->probe_ms + t->promote_ms;
	if (sum > t->pg_rto_ms) {
		snprintf(
		    err, errlen,
		    "lease_ttl + %d ms etcd expiry tick + probe_timeout + promote_timeout must "
		    "not exceed pg_rto: %" PRId64 " + %d + %" PRId64 " + %" PRId64 " = %" PRId64
		    " ms > %" PRId64 " ms",
		    HA_ETCD_TICK_MS, L, HA_ETCD_TICK_MS, t->probe_ms, t->promote_ms, sum,
		    t->pg_rto_ms);
		return false;
	}
	return true;
}

int64_t ha_timings_guard_delay(const HaTimings *t)
{
	return t->lease_ttl_ms - HA_GUARD_MARGIN_MS;
}

int64_t ha_timings_lease_ttl_s(const HaTimings *t)
{
	return t->lease_ttl_ms / 1000;
}

int64_t ha_timings_rank_delay(const HaTimings *t, int rank)
{
	int64_t cap = t->promote_ms / 2;

	if (rank <= 0)
		return 0;
	/* compare before multiplying: a huge rank must not overflow */
	if (t->rank_step_ms > 0 && rank > cap / t->rank_step_ms)
		return cap;
	return min64((int64_t)rank * t->rank_step_ms, cap);
}

const char *ha_timings_format(const HaTimings *t, char *buf, size_t len)
{
	snprintf(buf, len,
		 "pg_rto=%" PRId64 "ms pg_rpo=%" PRId64 " lease_ttl=%" PRId64 "s renew=%" PRId64
		 "ms retry=%" PRId64 "ms fence=%" PRId64 "ms probe=%" PRId64 "ms promote=%" PRId64
		 "ms restart=%" PRId64 "ms rank_step=%" PRId64 "ms",
		 t->pg_rto_ms, t->pg_rpo, t->lease_ttl_ms / 1000, t->renew_ms, t->retry_ms,
		 t->fence_ms, t->probe_ms, t->promote_ms, t->restart_ms, t->rank_step_ms);
	return buf;
}
