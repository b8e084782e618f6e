/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/timings: the derived values at the pg_rto of the doc/ha.md table (read from
 * data/ha/timings.txt), the safety inequalities for every pg_rto from 5 to 120 s, the validation
 * of explicit overrides and its messages, and the rank delay.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ha/timings.h"

static HaTimings derive_ok(int rto)
{
	HaTimings t;
	char err[256] = "";

	if (!ha_timings_derive(rto, HA_PG_RPO_DEFAULT, &t, err, sizeof(err)))
		fail_msg("pg_rto %d refused: %s", rto, err);
	return t;
}

/* Derive with overrides and expect a refusal whose message contains <want>. */
static void expect_refused(int rto, const HaTimingOverrides *ov, const char *want)
{
	HaTimings t;
	char err[256] = "";

	if (ha_timings_derive_overrides(rto, HA_PG_RPO_DEFAULT, ov, &t, err, sizeof(err)))
		fail_msg("accepted, expected \"%s\"", want);
	if (!strstr(err, want))
		fail_msg("message \"%s\" lacks \"%s\"", err, want);
}

static void test_table(void **state)
{
	FILE *f = fopen("data/ha/timings.txt", "r");
	char line[256];
	int rows = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		long long rto, L, R, T, F, P, X, S;
		HaTimings t;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		assert_int_equal(sscanf(line, "%lld %lld %lld %lld %lld %lld %lld %lld", &rto, &L,
					&R, &T, &F, &P, &X, &S),
				 8);
		t = derive_ok((int)rto);
		assert_int_equal(t.pg_rto_ms, rto * 1000);
		assert_int_equal(t.lease_ttl_ms, L);
		assert_int_equal(t.renew_ms, R);
		assert_int_equal(t.retry_ms, T);
		assert_int_equal(t.fence_ms, F);
		assert_int_equal(t.probe_ms, P);
		assert_int_equal(t.promote_ms, X);
		assert_int_equal(t.restart_ms, S);
		assert_int_equal(t.rank_step_ms, 200);
		assert_int_equal(t.pg_rpo, HA_PG_RPO_DEFAULT);
		rows++;
	}
	fclose(f);
	assert_int_equal(rows, 5);
}

static void test_all_rto_valid(void **state)
{
	int64_t prev_p = 0, prev_x = 0, prev_l = 0;

	for (int rto = HA_PG_RTO_MIN; rto <= 120; rto++) {
		HaTimings t = derive_ok(rto);
		char err[256];
		int64_t L = t.lease_ttl_ms, R = t.renew_ms, T = t.retry_ms, F = t.fence_ms;

		assert_true(ha_timings_validate(&t, err, sizeof(err)));
		/* the inequalities checked here directly, not only through validate */
		assert_true(R + 2 * T <= L);
		assert_true(R + T + F + 1000 <= L);
		assert_true(R + t.restart_ms <= L);
		/* the fence guard: its stop has landed before the lease can expire, it never fires
		 * while a renewal may still succeed, nor before the agent's own fence had F */
		assert_true(ha_timings_guard_delay(&t) + HA_GUARD_EFFECT_MS <= L);
		assert_true(R + T <= ha_timings_guard_delay(&t));
		assert_true(L - F - 1000 + F <= ha_timings_guard_delay(&t));
		assert_true(L + 500 + t.probe_ms + t.promote_ms <= t.pg_rto_ms);
		assert_int_equal(L % 1000, 0);
		assert_true(L >= 2000);
		assert_true(R > 0 && T > 0 && F > 0 && t.probe_ms > 0 && t.promote_ms >= 1000);
		assert_true(t.restart_ms <= L / 3 && t.restart_ms >= L / 3 - 1);
		/* all of pg_rto is spent: rounding L down hands its slack to the promote budget */
		assert_int_equal(L + 500 + t.probe_ms + t.promote_ms, t.pg_rto_ms);
		/* P and X shrink with pg_rto, never grow when it shrinks; L grows with it */
		assert_true(t.probe_ms >= prev_p);
		assert_true(t.lease_ttl_ms >= prev_l);
		assert_int_equal(ha_timings_lease_ttl_s(&t), L / 1000);
		prev_p = t.probe_ms;
		prev_l = t.lease_ttl_ms;
		(void)prev_x;
	}
	/* far beyond the table still works */
	derive_ok(3600);
	derive_ok(HA_PG_RTO_MAX);
}

static void test_bad_args(void **state)
{
	HaTimings t;
	char err[256];

	assert_false(ha_timings_derive(4, 0, &t, err, sizeof(err)));
	assert_string_equal(err, "pg_rto must be between 5 and 86400 seconds, not 4");
	assert_false(ha_timings_derive(0, 0, &t, err, sizeof(err)));
	assert_false(ha_timings_derive(-30, 0, &t, err, sizeof(err)));
	assert_false(ha_timings_derive(HA_PG_RTO_MAX + 1, 0, &t, err, sizeof(err)));
	assert_false(ha_timings_derive(30, -1, &t, err, sizeof(err)));
	assert_string_equal(err, "pg_rpo must not be negative: -1");
	/* pg_rpo 0 (synchronous) is fine */
	assert_true(ha_timings_derive(30, 0, &t, err, sizeof(err)));
	assert_int_equal(t.pg_rpo, 0);
}

static void test_validate_inequalities(void **state)
{
	HaTimings base = derive_ok(30), t;
	char err[256];

	/* R + 2T <= L: equality passes, one ms over fails with the numbers */
	t = base;
	t.fence_ms = 1000;
	t.retry_ms = (t.lease_ttl_ms - t.renew_ms) / 2; /* 10500: 3000 + 21000 = 24000 */
	assert_true(ha_timings_validate(&t, err, sizeof(err)));
	t.retry_ms++;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "renew_interval + 2 * retry_timeout must not exceed lease_ttl: "
				 "3000 + 2 * 10501 = 24002 ms > 24000 ms");

	/* R + T + F + 1 s <= L */
	t = base;
	t.retry_ms = 5000;
	t.fence_ms = 24000 - 3000 - 5000 - 1000;
	assert_true(ha_timings_validate(&t, err, sizeof(err)));
	t.fence_ms++;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err,
			    "renew_interval + retry_timeout + fence_timeout + 1000 ms must not "
			    "exceed lease_ttl: 3000 + 5000 + 15001 + 1000 = 24001 ms > 24000 ms");

	/* R + S <= L */
	t = base;
	t.restart_ms = 21000;
	assert_true(ha_timings_validate(&t, err, sizeof(err)));
	t.restart_ms = 21001;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "renew_interval + restart_timeout must not exceed lease_ttl: "
				 "3000 + 21001 = 24001 ms > 24000 ms");

	/* L + 0.5 s + P + X <= pg_rto */
	t = base;
	t.promote_ms++;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "lease_ttl + 500 ms etcd expiry tick + probe_timeout + "
				 "promote_timeout must not exceed pg_rto: 24000 + 500 + 2000 + "
				 "3501 = 30001 ms > 30000 ms");
}

static void test_validate_values(void **state)
{
	HaTimings base = derive_ok(30), t;
	char err[256];

	t = base;
	t.lease_ttl_ms = 23500;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err,
			    "lease_ttl must be a whole number of seconds (etcd grants seconds): "
			    "23500 ms");
	t = base;
	t.lease_ttl_ms = 1000;
	t.renew_ms = t.retry_ms = t.fence_ms = t.restart_ms = 100;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "lease_ttl must be at least 2000 ms: 1000 ms");
	t = base;
	t.retry_ms = 0;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "retry_timeout must be positive: 0 ms");
	t = base;
	t.probe_ms = -5;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "probe_timeout must be positive: -5 ms");
	t = base;
	t.rank_step_ms = -1;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "rank_step must not be negative: -1 ms");
	t = base;
	t.rank_step_ms = 0;
	assert_true(ha_timings_validate(&t, err, sizeof(err)));
	t = base;
	t.pg_rpo = -1;
	assert_false(ha_timings_validate(&t, err, sizeof(err)));
	assert_string_equal(err, "pg_rpo must not be negative: -1");
}

static void test_overrides_accepted(void **state)
{
	HaTimingOverrides ov = {0};
	HaTimings t;
	char err[256];

	/* an explicit lease TTL: R, T, F, S follow it and X takes what pg_rto leaves */
	ov.lease_ttl_ms = 20000;
	assert_true(ha_timings_derive_overrides(30, 0, &ov, &t, err, sizeof(err)));
	assert_int_equal(t.lease_ttl_ms, 20000);
	assert_int_equal(t.renew_ms, 2500);
	assert_int_equal(t.fence_ms, 4750);
	assert_int_equal(t.retry_ms, 8750); /* min((20000-2500)/2, 20000-1000-2500-4750) */
	assert_int_equal(t.restart_ms, 6666);
	assert_int_equal(t.promote_ms, 30000 - 500 - 2000 - 20000);

	/* an explicit promote budget: L is derived from it, rounded down */
	memset(&ov, 0, sizeof(ov));
	ov.promote_ms = 10000;
	assert_true(ha_timings_derive_overrides(30, 0, &ov, &t, err, sizeof(err)));
	assert_int_equal(t.promote_ms, 10000);
	assert_int_equal(t.lease_ttl_ms, 17000);

	/* everything explicit and consistent */
	ov = (HaTimingOverrides){.lease_ttl_ms = 10000,
				 .renew_ms = 1000,
				 .retry_ms = 3000,
				 .fence_ms = 2000,
				 .probe_ms = 1000,
				 .promote_ms = 2000,
				 .restart_ms = 3000,
				 .rank_step_ms = 100};
	assert_true(ha_timings_derive_overrides(15, 0, &ov, &t, err, sizeof(err)));
	assert_int_equal(t.lease_ttl_ms, 10000);
	assert_int_equal(t.renew_ms, 1000);
	assert_int_equal(t.retry_ms, 3000);
	assert_int_equal(t.fence_ms, 2000);
	assert_int_equal(t.probe_ms, 1000);
	assert_int_equal(t.promote_ms, 2000);
	assert_int_equal(t.restart_ms, 3000);
	assert_int_equal(t.rank_step_ms, 100);

	/* a longer fence budget: the derived retry budget shrinks to keep R + T + F + 1 s <= L */
	ov = (HaTimingOverrides){.fence_ms = 10000};
	assert_true(ha_timings_derive_overrides(30, 0, &ov, &t, err, sizeof(err)));
	assert_int_equal(t.retry_ms, 10000);
	assert_int_equal(t.renew_ms + t.retry_ms + t.fence_ms + 1000, t.lease_ttl_ms);

	/* NULL overrides is the plain derivation */
	assert_true(ha_timings_derive_overrides(30, 7, NULL, &t, err, sizeof(err)));
	assert_int_equal(t.lease_ttl_ms, 24000);
	assert_int_equal(t.pg_rpo, 7);
}

static void test_overrides_refused(void **state)
{
	HaTimingOverrides ov;

	ov = (HaTimingOverrides){.lease_ttl_ms = 40000};
	expect_refused(30, &ov,
		       "lease_ttl 40000 ms + probe_timeout 2000 ms + 500 ms etcd expiry "
		       "tick leave a promote budget of -12500 ms within pg_rto 30000 ms, "
		       "below the 1000 ms minimum");
	ov = (HaTimingOverrides){.lease_ttl_ms = 40000, .promote_ms = 1000};
	expect_refused(30, &ov,
		       "must not exceed pg_rto: 40000 + 500 + 2000 + 1000 = 43500 ms > "
		       "30000 ms");
	ov = (HaTimingOverrides){.renew_ms = 18000};
	expect_refused(30, &ov,
		       "renew_interval 18000 ms and fence_timeout 5000 ms leave no retry "
		       "budget within lease_ttl 24000 ms");
	ov = (HaTimingOverrides){.retry_ms = 15000};
	expect_refused(30, &ov,
		       "renew_interval + 2 * retry_timeout must not exceed lease_ttl: "
		       "3000 + 2 * 15000 = 33000 ms > 24000 ms");
	ov = (HaTimingOverrides){.fence_ms = 20000};
	expect_refused(30, &ov,
		       "renew_interval 3000 ms and fence_timeout 20000 ms leave no retry "
		       "budget within lease_ttl 24000 ms");
	/* with T explicit too the fence rule is the one that breaks */
	ov = (HaTimingOverrides){.fence_ms = 10000, .retry_ms = 10500};
	expect_refused(30, &ov, "3000 + 10500 + 10000 + 1000 = 24500 ms > 24000 ms");
	ov = (HaTimingOverrides){.restart_ms = 60000};
	expect_refused(30, &ov, "renew_interval + restart_timeout must not exceed lease_ttl");
	ov = (HaTimingOverrides){.lease_ttl_ms = 2500};
	expect_refused(30, &ov, "lease_ttl must be a whole number of seconds");
	ov = (HaTimingOverrides){.probe_ms = 2000, .promote_ms = 3000};
	expect_refused(5, &ov,
		       "probe_timeout 2000 ms + promote_timeout 3000 ms + 500 ms etcd expiry "
		       "tick leave a lease_ttl of 0 ms within pg_rto 5000 ms, below the "
		       "2000 ms minimum");
	ov = (HaTimingOverrides){.probe_ms = 1000, .promote_ms = 1600};
	expect_refused(5, &ov, "leave a lease_ttl of 1000 ms");
	ov = (HaTimingOverrides){.retry_ms = -1};
	expect_refused(30, &ov, "retry_timeout must not be negative: -1 ms");
	ov = (HaTimingOverrides){.renew_ms = -1};
	expect_refused(30, &ov, "renew_interval must not be negative");
	ov = (HaTimingOverrides){.fence_ms = -1};
	expect_refused(30, &ov, "fence_timeout must not be negative");
	ov = (HaTimingOverrides){.probe_ms = -1};
	expect_refused(30, &ov, "probe_timeout must not be negative");
	ov = (HaTimingOverrides){.promote_ms = -1};
	expect_refused(30, &ov, "promote_timeout must not be negative");
	ov = (HaTimingOverrides){.restart_ms = -1};
	expect_refused(30, &ov, "restart_timeout must not be negative");
	ov = (HaTimingOverrides){.lease_ttl_ms = -1};
	expect_refused(30, &ov, "lease_ttl must not be negative");
	ov = (HaTimingOverrides){.rank_step_ms = -200};
	expect_refused(30, &ov, "rank_step must not be negative");
	ov = (HaTimingOverrides){0};
	expect_refused(4, &ov, "pg_rto must be between 5 and 86400 seconds");
}

static void test_rank_delay(void **state)
{
	HaTimings t = derive_ok(30); /* X = 3500: cap 1750 */

	assert_int_equal(ha_timings_rank_delay(&t, 0), 0);
	assert_int_equal(ha_timings_rank_delay(&t, -1), 0);
	assert_int_equal(ha_timings_rank_delay(&t, 1), 200);
	assert_int_equal(ha_timings_rank_delay(&t, 2), 400);
	assert_int_equal(ha_timings_rank_delay(&t, 8), 1600);
	assert_int_equal(ha_timings_rank_delay(&t, 9), 1750);
	assert_int_equal(ha_timings_rank_delay(&t, 2000000000), 1750);
	t.rank_step_ms = 0;
	assert_int_equal(ha_timings_rank_delay(&t, 5), 0);
	t = derive_ok(5); /* X = 1000: cap 500 */
	assert_int_equal(ha_timings_rank_delay(&t, 2), 400);
	assert_int_equal(ha_timings_rank_delay(&t, 3), 500);
}

static void test_format(void **state)
{
	HaTimings t = derive_ok(30);
	char buf[512];

	assert_string_equal(
	    ha_timings_format(&t, buf, sizeof(buf)),
	    "pg_rto=30000ms pg_rpo=1048576 lease_ttl=24s renew=3000ms retry=10500ms "
	    "fence=5000ms probe=2000ms promote=3500ms restart=8000ms rank_step=200ms");
	assert_int_equal(ha_timings_lease_ttl_s(&t), 24);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_all_rto_valid),
	    cmocka_unit_test(test_bad_args),
	    cmocka_unit_test(test_validate_inequalities),
	    cmocka_unit_test(test_validate_values),
	    cmocka_unit_test(test_overrides_accepted),
	    cmocka_unit_test(test_overrides_refused),
	    cmocka_unit_test(test_rank_delay),
	    cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
