/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of ha/cluster (LSN text, members, history) and ha/rules: lease renewal and fencing,
 * eligibility with its boundaries, ranking, "nobody eligible", rewind detection, every branch of
 * ha_rules_decide() and the routing helper. Each test builds a three-member view (pg-1 primary
 * and leader, pg-2 and pg-3 streaming replicas) and changes what it is about.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ha/rules.h"

#define MB 1048576ULL
#define OPTIME (100 * MB)
#define NOW 1000000 /* an arbitrary monotonic clock value */

static HaTimings T30;

static void assert_contains(const char *s, const char *want)
{
	if (!strstr(s, want))
		fail_msg("\"%s\" lacks \"%s\"", s, want);
}

static HaMember *add(HaCluster *c, const char *name, bool primary, uint64_t lsn, int port)
{
	HaMember *m = ha_cluster_add_member(c, name);

	assert_non_null(m);
	snprintf(m->host, sizeof(m->host), "127.0.0.1");
	m->port = port;
	m->role = primary ? HA_ROLE_PRIMARY : HA_ROLE_REPLICA;
	m->state = HA_PG_RUNNING;
	m->timeline = 2;
	m->in_recovery = !primary;
	if (primary) {
		m->write_lsn = m->flush_lsn = lsn;
	} else {
		m->receive_lsn = lsn;
		m->replay_lsn = lsn;
	}
	m->healthy = true;
	m->last_seen_ms = NOW;
	return m;
}

/* pg-1 leader/primary at OPTIME, pg-2 and pg-3 replicas caught up. */
static void make_cluster(HaCluster *c)
{
	ha_cluster_init(c);
	snprintf(c->name, sizeof(c->name), "pg-test");
	snprintf(c->leader, sizeof(c->leader), "pg-1");
	c->leader_lease = 111;
	c->has_status = true;
	c->status_optime = OPTIME;
	c->status_timeline = 2;
	add(c, "pg-1", true, OPTIME, 5433);
	add(c, "pg-2", false, OPTIME, 5434);
	add(c, "pg-3", false, OPTIME, 5435);
	ha_cluster_add_history(c, 1, 50 * MB);
}

static HaMember *mem(HaCluster *c, const char *name)
{
	HaMember *m = ha_cluster_find_member_mut(c, name);

	assert_non_null(m);
	return m;
}

/* The local state of member <name>, copied from the view; a leader holds a fresh lease. */
static void make_local(HaLocal *me, HaCluster *c, const char *name)
{
	memset(me, 0, sizeof(*me));
	me->mode = HA_MODE_AGENT;
	me->self = *mem(c, name);
	if (strcmp(name, c->leader) == 0) {
		me->lease.id = c->leader_lease;
		me->lease.held = true;
		me->lease.last_ok_sent_ms = NOW - 100;
		me->lease.last_ok_ms = NOW - 90;
		me->lease.last_attempt_ms = NOW - 100;
	} else {
		snprintf(me->upstream_host, sizeof(me->upstream_host), "127.0.0.1");
		me->upstream_port = 5433;
	}
}

/* The leader key is gone (pg-1's lease expired with its node). */
static void drop_leader(HaCluster *c)
{
	HaMember *p = mem(c, "pg-1");

	c->leader[0] = '\0';
	c->leader_lease = 0;
	p->healthy = false;
	p->down_cause = HA_DOWN_NO_KEY;
}

static HaAction run(HaCluster *c, HaLocal *me, int64_t now, HaDecision *d)
{
	HaAction a = ha_rules_decide(c, me, now, &T30, d);

	assert_int_equal(a, d->action);
	assert_true(d->reason[0] != '\0');
	return a;
}

static int setup(void **state)
{
	char err[256];

	if (!ha_timings_derive(30, HA_PG_RPO_DEFAULT, &T30, err, sizeof(err)))
		return -1;
	return 0;
}

/* LSN text */

static void test_lsn_parse(void **state)
{
	uint64_t v;
	char buf[HA_LSN_BUFLEN];
	static const char *const bad[] = {
	    "",     "/",     "0/",  "/1",  "0x1/1",       "123456789/0", "0/1 ",
	    " 0/1", "0/1/2", "g/1", "1-2", "0/123456789", "1",
	};

	assert_true(ha_lsn_parse("0/3000060", &v));
	assert_int_equal(v, 0x3000060);
	assert_true(ha_lsn_parse("16/B374D848", &v));
	assert_int_equal(v, 0x16B374D848ULL);
	assert_true(ha_lsn_parse("16/b374d848", &v));
	assert_int_equal(v, 0x16B374D848ULL);
	assert_true(ha_lsn_parse("FFFFFFFF/FFFFFFFF", &v));
	assert_true(v == UINT64_MAX);
	assert_true(ha_lsn_parse("0/0", &v));
	assert_int_equal(v, 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (ha_lsn_parse(bad[i], &v))
			fail_msg("\"%s\" accepted", bad[i]);
	assert_false(ha_lsn_parse(NULL, &v));

	assert_string_equal(ha_lsn_format(0x3000060, buf, sizeof(buf)), "0/3000060");
	assert_string_equal(ha_lsn_format(0x16B374D848ULL, buf, sizeof(buf)), "16/B374D848");
	assert_string_equal(ha_lsn_format(0, buf, sizeof(buf)), "0/0");
	assert_string_equal(ha_lsn_format(UINT64_MAX, buf, sizeof(buf)), "FFFFFFFF/FFFFFFFF");
	assert_true(ha_lsn_parse(ha_lsn_format(0x1234ABCD5678ULL, buf, sizeof(buf)), &v));
	assert_true(v == 0x1234ABCD5678ULL);
}

/* Cluster view bookkeeping */

static void test_cluster_members(void **state)
{
	static HaCluster c;
	char name[HA_NAME_MAX + 8];
	HaMember *m;

	ha_cluster_init(&c);
	m = ha_cluster_add_member(&c, "pg-1");
	assert_non_null(m);
	assert_int_equal(m->tags.failover_priority, HA_FAILOVER_PRIORITY_DEFAULT);
	assert_ptr_equal(ha_cluster_add_member(&c, "pg-1"), m);
	assert_int_equal(c.n_members, 1);
	assert_ptr_equal(ha_cluster_find_member(&c, "pg-1"), m);
	assert_null(ha_cluster_find_member(&c, "pg-9"));
	assert_null(ha_cluster_find_member(&c, NULL));
	assert_null(ha_cluster_add_member(&c, ""));
	assert_null(ha_cluster_add_member(&c, NULL));
	memset(name, 'x', HA_NAME_MAX);
	name[HA_NAME_MAX] = '\0';
	assert_null(ha_cluster_add_member(&c, name));
	name[HA_NAME_MAX - 1] = '\0';
	assert_non_null(ha_cluster_add_member(&c, name));
	for (int i = c.n_members; i < HA_MAX_MEMBERS; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		assert_non_null(ha_cluster_add_member(&c, name));
	}
	assert_null(ha_cluster_add_member(&c, "one-too-many"));
	assert_int_equal(c.n_members, HA_MAX_MEMBERS);
	assert_false(ha_cluster_has_leader(&c));
}

static void test_cluster_history(void **state)
{
	static HaCluster c;
	uint64_t lsn;

	ha_cluster_init(&c);
	assert_false(ha_cluster_switch_lsn(&c, 1, &lsn));
	ha_cluster_add_history(&c, 3, 300);
	ha_cluster_add_history(&c, 1, 100);
	ha_cluster_add_history(&c, 2, 200);
	assert_int_equal(c.n_history, 3);
	assert_int_equal(c.history[0].timeline, 1);
	assert_int_equal(c.history[2].timeline, 3);
	ha_cluster_add_history(&c, 2, 250); /* an update, not a new entry */
	assert_int_equal(c.n_history, 3);
	assert_true(ha_cluster_switch_lsn(&c, 2, &lsn));
	assert_int_equal(lsn, 250);
	for (uint32_t tl = 4; tl < 4 + HA_MAX_HISTORY; tl++)
		ha_cluster_add_history(&c, tl, tl * 100);
	assert_int_equal(c.n_history, HA_MAX_HISTORY);
	assert_false(ha_cluster_switch_lsn(&c, 1, &lsn)); /* the oldest dropped out */
	assert_true(ha_cluster_switch_lsn(&c, 4 + HA_MAX_HISTORY - 1, &lsn));
}

static void test_member_lsn_and_names(void **state)
{
	HaMember m = {0};

	m.in_recovery = true;
	m.receive_lsn = 10;
	m.replay_lsn = 7;
	assert_int_equal(ha_member_lsn(&m), 10);
	m.receive_lsn = 0; /* e.g. restored from archive, no walreceiver */
	assert_int_equal(ha_member_lsn(&m), 7);
	m.in_recovery = false;
	m.write_lsn = 30;
	m.flush_lsn = 20;
	assert_int_equal(ha_member_lsn(&m), 30);

	assert_int_equal(ha_role_from_name("master"), HA_ROLE_PRIMARY);
	assert_int_equal(ha_role_from_name("primary"), HA_ROLE_PRIMARY);
	assert_int_equal(ha_role_from_name("replica"), HA_ROLE_REPLICA);
	assert_int_equal(ha_role_from_name("standby_leader"), HA_ROLE_REPLICA);
	assert_int_equal(ha_role_from_name("leader?"), HA_ROLE_UNKNOWN);
	assert_int_equal(ha_role_from_name(NULL), HA_ROLE_UNKNOWN);
	assert_string_equal(ha_role_name(HA_ROLE_PRIMARY), "primary");
	assert_string_equal(ha_role_name(HA_ROLE_UNKNOWN), "unknown");
	assert_int_equal(ha_pg_state_from_name("start failed"), HA_PG_START_FAILED);
	assert_int_equal(ha_pg_state_from_name("running"), HA_PG_RUNNING);
	assert_int_equal(ha_pg_state_from_name("bogus"), HA_PG_UNKNOWN);
	assert_int_equal(ha_pg_state_from_name(NULL), HA_PG_UNKNOWN);
	assert_string_equal(ha_pg_state_name(HA_PG_CRASHED), "crashed");
	assert_string_equal(ha_pg_state_name((HaPgState)99), "unknown");
	assert_string_equal(ha_down_cause_name(HA_DOWN_NO_KEY), "member key gone");
	assert_string_equal(ha_mode_name(HA_MODE_FOLLOW), "follow");
	assert_string_equal(ha_action_name(HA_ACT_WAIT_PRIMARY_ALIVE), "wait: primary alive");
	assert_string_equal(ha_action_name((HaAction)99), "unknown");
	assert_string_equal(ha_eligibility_name(HA_ELIG_LAG), "lag exceeds pg_rpo");
	assert_string_equal(ha_eligibility_name((HaEligibility)99), "unknown");
	assert_string_equal(ha_renew_action_name(HA_RENEW_FENCE), "fence");
	assert_string_equal(ha_route_role_name(HA_ROUTE_PREFER_REPLICA), "prefer_replica");
	/* every value of every logged enum has its own name */
	for (int i = 0; i <= HA_ROLE_REPLICA; i++)
		assert_int_equal(ha_role_from_name(ha_role_name((HaRole)i)), i);
	for (int i = 0; i <= HA_PG_REWINDING; i++)
		assert_int_equal(ha_pg_state_from_name(ha_pg_state_name((HaPgState)i)), i);
	for (int i = 0; i <= HA_DOWN_NO_KEY; i++)
		for (int j = 0; j < i; j++)
			assert_string_not_equal(ha_down_cause_name((HaDownCause)i),
						ha_down_cause_name((HaDownCause)j));
	assert_string_equal(ha_down_cause_name((HaDownCause)99), "unknown");
	for (int i = 0; i <= HA_MODE_AGENT; i++)
		assert_string_not_equal(ha_mode_name((HaMode)i), "unknown");
	assert_string_equal(ha_mode_name((HaMode)99), "unknown");
	for (int i = 0; i <= HA_RENEW_RELEASE; i++)
		assert_string_not_equal(ha_renew_action_name((HaRenewAction)i), "unknown");
	assert_string_equal(ha_renew_action_name((HaRenewAction)99), "unknown");
	for (int i = 0; i <= HA_ROUTE_ANY; i++)
		assert_string_not_equal(ha_route_role_name((HaRouteRole)i), "unknown");
	assert_string_equal(ha_route_role_name((HaRouteRole)99), "unknown");
	for (int i = 0; i <= HA_ACT_WAIT; i++)
		assert_string_not_equal(ha_action_name((HaAction)i), "unknown");
	for (int i = 0; i <= HA_ELIG_PEER_AHEAD; i++)
		assert_string_not_equal(ha_eligibility_name((HaEligibility)i), "unknown");
}

/* Rules 1 and 2: renewal */

static HaLease fresh_lease(void)
{
	HaLease l = {.id = 7, .held = true};

	l.last_ok_sent_ms = 0;
	l.last_ok_ms = 10;
	l.last_attempt_ms = 0;
	return l;
}

static void test_renewal_continue(void **state)
{
	HaLease l = fresh_lease();
	HaRenewDecision d;

	assert_int_equal(ha_rules_renewal(&l, 2999, &T30, &d), HA_RENEW_CONTINUE);
	assert_false(d.renew_due);
	assert_int_equal(d.wake_ms, 3000);
	/* renew due exactly R after the last attempt */
	assert_int_equal(ha_rules_renewal(&l, 3000, &T30, &d), HA_RENEW_CONTINUE);
	assert_true(d.renew_due);
	/* R + T = 13500 after the last success; L - F - 1 s = 18000 after its send */
	assert_int_equal(d.fence_at_ms, 13510);
	assert_int_equal(d.wake_ms, 13510);
	assert_string_equal(ha_renew_action_name(d.action), "continue");
}

static void test_renewal_fence_retry(void **state)
{
	HaLease l = fresh_lease();
	HaRenewDecision d;

	l.last_attempt_ms = 12000; /* attempts keep failing */
	assert_int_equal(ha_rules_renewal(&l, 13509, &T30, &d), HA_RENEW_CONTINUE);
	assert_int_equal(ha_rules_renewal(&l, 13510, &T30, &d), HA_RENEW_FENCE);
	assert_string_equal(d.reason, "could not renew the leader lease for 13500 ms "
				      "(renew_interval + retry_timeout = 13500 ms)");
}

static void test_renewal_fence_deadline(void **state)
{
	HaLease l = fresh_lease();
	HaRenewDecision d;

	/* a renewal sent at 0 answered only at 8000: the expiry deadline comes first */
	l.last_ok_ms = 8000;
	l.last_attempt_ms = 17000;
	assert_int_equal(ha_rules_renewal(&l, 17999, &T30, &d), HA_RENEW_CONTINUE);
	assert_int_equal(d.fence_at_ms, 18000);
	assert_int_equal(ha_rules_renewal(&l, 18000, &T30, &d), HA_RENEW_FENCE);
	assert_string_equal(d.reason,
			    "fence deadline reached: 18000 ms since the last successful "
			    "renewal was sent, lease_ttl - fence_timeout - 1 s = 18000 ms");
	/* the rule-2 inequality: the fence completes 1 s before etcd can expire the lease */
	assert_true(d.fence_at_ms + T30.fence_ms + 1000 <= l.last_ok_sent_ms + T30.lease_ttl_ms);
}

static void test_renewal_lost_release(void **state)
{
	HaLease l = fresh_lease();
	HaRenewDecision d;

	l.lost = true;
	assert_int_equal(ha_rules_renewal(&l, 100, &T30, &d), HA_RENEW_FENCE);
	assert_contains(d.reason, "leadership lost");
	l.lost = false;
	l.release_requested = true;
	assert_int_equal(ha_rules_renewal(&l, 100, &T30, &d), HA_RENEW_RELEASE);
	/* fencing wins over a polite release */
	assert_int_equal(ha_rules_renewal(&l, 20000, &T30, &d), HA_RENEW_FENCE);
}

/* Rule 4: eligibility */

static void test_eligible_lag_boundary(void **state)
{
	static HaCluster c;
	HaMember *m;
	char why[256];

	make_cluster(&c);
	m = mem(&c, "pg-2");
	m->receive_lsn = m->replay_lsn = OPTIME - HA_PG_RPO_DEFAULT;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)), HA_ELIG_OK);
	m->receive_lsn = m->replay_lsn = OPTIME - HA_PG_RPO_DEFAULT - 1;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)), HA_ELIG_LAG);
	assert_string_equal(why, "lag 1048577 bytes exceeds pg_rpo 1048576");
	m->receive_lsn = m->replay_lsn = OPTIME - 5 * MB;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)), HA_ELIG_LAG);
	assert_string_equal(why, "lag 5242880 bytes exceeds pg_rpo 1048576");
	/* max(receive, replay): received but not yet replayed WAL counts */
	m->receive_lsn = OPTIME;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, NULL, 0), HA_ELIG_OK);
	/* ahead of the published optime (status is up to R old) */
	m->receive_lsn = m->replay_lsn = OPTIME + MB;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, NULL, 0), HA_ELIG_OK);
	/* FORCE skips the lag check */
	m->receive_lsn = m->replay_lsn = 1;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, HA_ELIG_F_FORCE, NULL, 0),
			 HA_ELIG_OK);
	/* pg_rpo 0: only a caught-up replica */
	{
		HaTimings t0 = T30;

		t0.pg_rpo = 0;
		m->receive_lsn = m->replay_lsn = OPTIME;
		assert_int_equal(ha_rules_member_eligible(&c, m, &t0, 0, NULL, 0), HA_ELIG_OK);
		m->replay_lsn = m->receive_lsn = OPTIME - 1;
		assert_int_equal(ha_rules_member_eligible(&c, m, &t0, 0, why, sizeof(why)),
				 HA_ELIG_LAG);
		assert_string_equal(why, "lag 1 bytes exceeds pg_rpo 0");
	}
}

static void test_eligible_member_conditions(void **state)
{
	static HaCluster c;
	HaMember *m;
	char why[256];

	make_cluster(&c);
	m = mem(&c, "pg-2");
	m->healthy = false;
	m->down_cause = HA_DOWN_UNREACHABLE;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_UNHEALTHY);
	assert_string_equal(why, "not healthy (unreachable, PostgreSQL running)");
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, HA_ELIG_F_FORCE, NULL, 0),
			 HA_ELIG_UNHEALTHY);
	m->healthy = true;
	m->state = HA_PG_STARTING;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_UNHEALTHY);
	assert_string_equal(why, "not healthy (reachable, PostgreSQL starting)");
	m->state = HA_PG_RUNNING;

	m->in_recovery = false;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_NOT_IN_RECOVERY);
	assert_string_equal(why, "PostgreSQL is not in recovery");
	m->in_recovery = true;

	m->tags.nofailover = true;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, HA_ELIG_F_FORCE, why, sizeof(why)),
			 HA_ELIG_NOFAILOVER);
	assert_string_equal(why, "tagged nofailover");
	m->tags.nofailover = false;
	m->tags.failover_priority = 0;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_NOFAILOVER);
	assert_string_equal(why, "failover_priority 0");
	m->tags.failover_priority = 1;

	c.sync_mode = true;
	snprintf(c.sync_standby, sizeof(c.sync_standby), "pg-3");
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_NOT_SYNC);
	assert_string_equal(why, "synchronous mode: only the sync standby pg-3 may be promoted");
	assert_int_equal(ha_rules_member_eligible(&c, mem(&c, "pg-3"), &T30, 0, NULL, 0),
			 HA_ELIG_OK);
	c.sync_mode = false;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, NULL, 0), HA_ELIG_OK);

	m->timeline = 1;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_TIMELINE);
	assert_string_equal(why, "timeline 1 is behind the cluster timeline 2");
	m->timeline = 3; /* ahead is fine */
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, NULL, 0), HA_ELIG_OK);

	c.has_status = false;
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, 0, why, sizeof(why)),
			 HA_ELIG_NO_STATUS);
	assert_string_equal(why, "no status.optime published: the lag cannot be checked");
	assert_int_equal(ha_rules_member_eligible(&c, m, &T30, HA_ELIG_F_FORCE, NULL, 0),
			 HA_ELIG_OK);
}

static void test_eligible_peers(void **state)
{
	static HaCluster c;
	HaMember me, *p3;
	char why[256];

	make_cluster(&c);
	me = *mem(&c, "pg-2");
	/* pg-1 still a reachable primary */
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, why, sizeof(why)),
			 HA_ELIG_PRIMARY_ALIVE);
	assert_string_equal(why, "member pg-1 is reachable and not in recovery");
	/* manual failover does not override a live primary */
	assert_int_equal(
	    ha_rules_eligible(&c, &me, &T30, HA_ELIG_F_MANUAL | HA_ELIG_F_FORCE, NULL, 0),
	    HA_ELIG_PRIMARY_ALIVE);
	drop_leader(&c);
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, NULL, 0), HA_ELIG_OK);

	p3 = mem(&c, "pg-3");
	p3->receive_lsn = OPTIME + 16;
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, why, sizeof(why)), HA_ELIG_PEER_AHEAD);
	assert_string_equal(why, "eligible member pg-3 is ahead (0/6400010 > 0/6400000)");
	/* manual failover: the operator chose, a peer ahead does not block */
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, HA_ELIG_F_MANUAL, NULL, 0), HA_ELIG_OK);
	/* a peer ahead that may not be promoted does not block */
	p3->tags.nofailover = true;
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, NULL, 0), HA_ELIG_OK);
	p3->tags.nofailover = false;
	p3->healthy = false;
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, NULL, 0), HA_ELIG_OK);
	/* my own stale entry in the view is ignored: <me> stands in for it */
	p3->healthy = true;
	p3->receive_lsn = OPTIME;
	mem(&c, "pg-2")->receive_lsn = OPTIME + 999; /* stale copy of me, "ahead" of me */
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, NULL, 0), HA_ELIG_OK);
	/* a member not in the view yet (its key not published) is still judged, and ranked */
	{
		HaMember newcomer = me;

		snprintf(newcomer.name, sizeof(newcomer.name), "pg-0");
		newcomer.tags.nofailover = false;
		newcomer.receive_lsn = OPTIME;
		mem(&c, "pg-2")->receive_lsn = OPTIME;
		assert_int_equal(ha_rules_eligible(&c, &newcomer, &T30, 0, NULL, 0), HA_ELIG_OK);
		assert_int_equal(ha_rules_rank(&c, &newcomer, &T30), 0);
		newcomer.receive_lsn = newcomer.replay_lsn = OPTIME - 1;
		assert_int_equal(ha_rules_eligible(&c, &newcomer, &T30, 0, NULL, 0),
				 HA_ELIG_PEER_AHEAD);
	}
	/* own conditions are checked first */
	me.tags.nofailover = true;
	assert_int_equal(ha_rules_eligible(&c, &me, &T30, 0, NULL, 0), HA_ELIG_NOFAILOVER);
}

/* Rule 5: ranking */

static void test_compare_and_rank(void **state)
{
	static HaCluster c;
	HaMember *a, *b;

	make_cluster(&c);
	drop_leader(&c);
	a = mem(&c, "pg-2");
	b = mem(&c, "pg-3");
	/* all equal: lower name first */
	assert_true(ha_rules_compare(&c, a, b) < 0);
	assert_true(ha_rules_compare(&c, b, a) > 0);
	assert_int_equal(ha_rules_compare(&c, a, a), 0);
	assert_int_equal(ha_rules_rank(&c, a, &T30), 0);
	assert_int_equal(ha_rules_rank(&c, b, &T30), 1);
	/* priority beats name */
	b->tags.failover_priority = 5;
	assert_true(ha_rules_compare(&c, b, a) < 0);
	assert_int_equal(ha_rules_rank(&c, b, &T30), 0);
	assert_int_equal(ha_rules_rank(&c, a, &T30), 1);
	/* sync beats priority */
	snprintf(c.sync_standby, sizeof(c.sync_standby), "pg-2");
	assert_true(ha_rules_compare(&c, a, b) < 0);
	/* LSN beats everything */
	b->receive_lsn = OPTIME + 1;
	assert_true(ha_rules_compare(&c, b, a) < 0);
	assert_int_equal(ha_rules_rank(&c, a, &T30), 1);
	/* a better member that is not eligible does not count */
	b->healthy = false;
	assert_int_equal(ha_rules_rank(&c, a, &T30), 0);
}

static void test_failover_possible(void **state)
{
	static HaCluster c;
	char why[HA_REASON_MAX];

	make_cluster(&c);
	drop_leader(&c);
	assert_true(ha_rules_failover_possible(&c, NULL, &T30, why, sizeof(why)));
	mem(&c, "pg-2")->receive_lsn = mem(&c, "pg-2")->replay_lsn = OPTIME - 5 * MB;
	mem(&c, "pg-3")->tags.nofailover = true;
	assert_false(ha_rules_failover_possible(&c, NULL, &T30, why, sizeof(why)));
	assert_string_equal(why, "no member is eligible for automatic failover: pg-1: not healthy "
				 "(member key gone, PostgreSQL running); pg-2: lag 5242880 bytes "
				 "exceeds pg_rpo 1048576; pg-3: tagged nofailover");
	assert_false(ha_rules_failover_possible(&c, NULL, &T30, NULL, 0));
	/* a fresh self that has caught up makes it possible */
	{
		HaMember me = *mem(&c, "pg-2");

		me.receive_lsn = OPTIME;
		assert_true(ha_rules_failover_possible(&c, &me, &T30, why, sizeof(why)));
	}
	ha_cluster_init(&c);
	assert_false(ha_rules_failover_possible(&c, NULL, &T30, why, sizeof(why)));
	assert_string_equal(why, "no member is eligible for automatic failover (no members)");
}

/* Rule 6: rewind */

static void test_needs_rewind(void **state)
{
	static HaCluster c;
	HaMember m;

	make_cluster(&c);
	m = *mem(&c, "pg-1");
	assert_false(ha_rules_needs_rewind(&c, &m)); /* same timeline */
	m.timeline = 0;
	assert_false(ha_rules_needs_rewind(&c, &m)); /* unknown */
	m.timeline = 3;
	assert_true(ha_rules_needs_rewind(&c, &m)); /* promoted on its own */
	/* old primary on timeline 1, which ended at 50 MB */
	m.timeline = 1;
	m.in_recovery = false;
	m.write_lsn = m.flush_lsn = 50 * MB;
	assert_false(ha_rules_needs_rewind(&c, &m));
	m.write_lsn = m.flush_lsn = 50 * MB + 1;
	assert_true(ha_rules_needs_rewind(&c, &m));
	/* a switch point the history does not know: let pg_rewind decide */
	ha_cluster_init(&c);
	make_cluster(&c);
	c.n_history = 0;
	m.write_lsn = m.flush_lsn = 1;
	assert_true(ha_rules_needs_rewind(&c, &m));
	/* the leader member's timeline counts when status is older */
	make_cluster(&c);
	c.has_status = false;
	m = *mem(&c, "pg-2");
	mem(&c, "pg-1")->timeline = 3;
	ha_cluster_add_history(&c, 2, OPTIME);
	assert_false(ha_rules_needs_rewind(&c, &m));
	m.receive_lsn = OPTIME + 1;
	assert_true(ha_rules_needs_rewind(&c, &m));
}

/* The decision: modes and leader */

static void test_decide_modes(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	me.mode = HA_MODE_FOLLOW;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_NONE);
	assert_string_equal(d.reason, "follow mode: never acts");
	drop_leader(&c);
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_NONE);
	me.mode = HA_MODE_OFF;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_NONE);
	assert_string_equal(d.reason, "ha_mode off");
}

static void test_decide_leader_continue(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_CONTINUE);
	assert_false(d.renew_due);
	assert_int_equal(d.wake_ms, NOW - 100 + T30.renew_ms);
	assert_int_equal(run(&c, &me, NOW - 100 + T30.renew_ms, &d), HA_ACT_CONTINUE);
	assert_true(d.renew_due);
	assert_false(d.clear_failover);
}

static void test_decide_leader_fence(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	/* renewals failing for R + T */
	assert_int_equal(run(&c, &me, NOW - 90 + 13500, &d), HA_ACT_FENCE);
	assert_contains(d.reason, "could not renew the leader lease");
	/* a keepalive found the lease dead */
	me.lease.lost = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_FENCE);
	me.lease.lost = false;
	/* the view shows the key gone or owned by another */
	snprintf(c.leader, sizeof(c.leader), "pg-2");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_FENCE);
	assert_string_equal(d.reason, "the leader key is held by pg-2");
	assert_string_equal(d.target, "pg-2");
	c.leader[0] = '\0';
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_FENCE);
	assert_string_equal(d.reason, "the leader key is gone: leadership lost");
	/* asked to release */
	make_cluster(&c);
	me.lease.release_requested = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RELEASE);
}

static void test_decide_leader_promote(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	snprintf(c.leader, sizeof(c.leader), "pg-2"); /* pg-2 just won the race */
	make_local(&me, &c, "pg-2");
	assert_true(me.self.in_recovery);
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_PROMOTE);
	assert_contains(d.reason, "promoting (budget 3500 ms)");
}

static void test_decide_leader_crash(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	me.self.state = HA_PG_CRASHED;
	me.pg_down_since_ms = NOW - 1000;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RESTART);
	assert_string_equal(d.reason, "leader's PostgreSQL crashed: restarting (1000 ms of "
				      "restart_timeout 8000 ms used)");
	assert_int_equal(d.wake_ms, NOW - 100 + T30.renew_ms); /* the next renewal comes first */
	me.lease.last_attempt_ms = me.lease.last_ok_sent_ms = NOW + 5000;
	me.lease.last_ok_ms = NOW + 5000;
	assert_int_equal(run(&c, &me, NOW + 5000, &d), HA_ACT_RESTART);
	assert_int_equal(d.wake_ms, NOW - 1000 + T30.restart_ms); /* then the end of the budget */
	/* starting: wait, still within the budget */
	me.self.state = HA_PG_STARTING;
	assert_int_equal(run(&c, &me, NOW + 6999 - 1000, &d), HA_ACT_WAIT);
	assert_contains(d.reason, "leader waiting for PostgreSQL (starting)");
	/* exactly S after the crash: release */
	assert_int_equal(run(&c, &me, NOW - 1000 + T30.restart_ms, &d), HA_ACT_RELEASE);
	assert_string_equal(d.reason, "PostgreSQL starting for 8000 ms, restart_timeout 8000 ms "
				      "used up: releasing the leader key");
	/* maintenance: keep the key and keep restarting */
	c.maintenance = true;
	me.self.state = HA_PG_START_FAILED;
	me.lease.last_attempt_ms = me.lease.last_ok_sent_ms = me.lease.last_ok_ms = NOW + 19000;
	assert_int_equal(run(&c, &me, NOW + 20000, &d), HA_ACT_RESTART);
	assert_contains(d.reason, "no release in maintenance mode");
	/* but fencing still applies */
	assert_int_equal(run(&c, &me, NOW + 19000 + 13500, &d), HA_ACT_FENCE);
}

static void test_decide_leader_manual_failover(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	c.failover.present = true;
	snprintf(c.failover.candidate, sizeof(c.failover.candidate), "pg-3");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RELEASE);
	assert_string_equal(d.reason, "manual failover to pg-3: handing over");
	assert_string_equal(d.target, "pg-3");
	assert_ptr_equal(d.target_member, mem(&c, "pg-3"));
	assert_false(d.clear_failover);

	mem(&c, "pg-3")->receive_lsn = mem(&c, "pg-3")->replay_lsn = OPTIME - 2 * MB;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_CONTINUE);
	assert_string_equal(d.reason, "manual failover to pg-3 refused: lag 2097152 bytes exceeds "
				      "pg_rpo 1048576");
	assert_true(d.clear_failover);
	c.failover.force = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RELEASE);
	assert_string_equal(d.reason, "manual failover to pg-3 (force): handing over");
	mem(&c, "pg-3")->tags.nofailover = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_CONTINUE);
	assert_contains(d.reason, "tagged nofailover");

	snprintf(c.failover.candidate, sizeof(c.failover.candidate), "pg-9");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_CONTINUE);
	assert_string_equal(d.reason, "manual failover to pg-9 refused: no such member");
	assert_true(d.clear_failover);

	snprintf(c.failover.candidate, sizeof(c.failover.candidate), "pg-1");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_CONTINUE);
	assert_true(d.clear_failover);
	assert_contains(d.reason, "manual failover to the leader itself ignored");
}

static void test_decide_takeover(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-1");
	me.lease = (HaLease){.id = 999}; /* restarted agent, new lease, key on the old one */
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_TAKEOVER);
	assert_contains(d.reason, "lease 111 from an earlier run: taking it over");
	c.has_status = false;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_TAKEOVER);
	c.has_status = true;
	/* not a running primary, or behind the cluster timeline: wait for expiry */
	c.leader_expiry_ms = NOW + 1000;
	me.self.timeline = 1;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_int_equal(d.wake_ms, NOW + 1000);
	c.leader_expiry_ms = NOW + 5000; /* the periodic re-read comes first */
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_int_equal(d.wake_ms, NOW + T30.renew_ms);
	me.self.timeline = 2;
	me.self.in_recovery = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_contains(d.reason, "waiting for it to expire");
}

/* The decision: following */

static void test_decide_follow(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-2");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_FOLLOW);
	assert_string_equal(d.reason, "replica of pg-1");
	assert_string_equal(d.target, "pg-1");
	assert_ptr_equal(d.target_member, mem(&c, "pg-1"));
	assert_int_equal(d.wake_ms, NOW + T30.renew_ms);

	me.upstream_port = 5435;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_REPOINT);
	assert_string_equal(d.reason,
			    "primary_conninfo points at 127.0.0.1:5435, leader pg-1 is at "
			    "127.0.0.1:5433: re-pointing");
	me.upstream_port = 5433;
	snprintf(me.upstream_host, sizeof(me.upstream_host), "10.0.0.9");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_REPOINT);
	me.upstream_host[0] = '\0';
	me.upstream_port = 0;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_REPOINT);
	assert_contains(d.reason, "points at nothing:0");

	/* the leader's member key is gone: nothing to point at */
	snprintf(c.leader, sizeof(c.leader), "pg-7");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_string_equal(d.reason,
			    "leader pg-7 has no member key: cannot point a replica at it");
	assert_null(d.target_member);

	/* a leader member entry without a host (conn_url not parsed) */
	snprintf(c.leader, sizeof(c.leader), "pg-1");
	mem(&c, "pg-1")->host[0] = '\0';
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_string_equal(d.reason,
			    "leader pg-1 has no member key: cannot point a replica at it");

	/* follow holds in maintenance too */
	make_cluster(&c);
	make_local(&me, &c, "pg-2");
	c.maintenance = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_FOLLOW);
}

static void test_decide_follower_pg_states(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	make_cluster(&c);
	make_local(&me, &c, "pg-2");
	me.self.state = HA_PG_STOPPED;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_START_REPLICA);
	assert_string_equal(d.reason, "PostgreSQL stopped: starting it as a replica of pg-1");
	me.self.state = HA_PG_CRASHED;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_START_REPLICA);
	me.self.state = HA_PG_STARTING;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
	assert_string_equal(d.reason, "waiting for PostgreSQL (starting)");
	me.self.state = HA_PG_REWINDING;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT);
}

static void test_decide_demote_and_rewind(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	/* pg-2 became leader on timeline 3; pg-1 returns as a primary on timeline 2 */
	make_cluster(&c);
	snprintf(c.leader, sizeof(c.leader), "pg-2");
	c.status_timeline = 3;
	mem(&c, "pg-2")->timeline = 3;
	mem(&c, "pg-2")->in_recovery = false;
	ha_cluster_add_history(&c, 2, OPTIME - MB);
	make_local(&me, &c, "pg-1");
	me.lease = (HaLease){0};
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_DEMOTE);
	assert_string_equal(d.reason, "PostgreSQL is a primary but pg-2 holds the leader key: "
				      "demoting");
	/* after the demotion it is stopped: its WAL went past the switch point -> rewind */
	me.self.state = HA_PG_STOPPED;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_REWIND);
	assert_string_equal(d.reason, "timeline 2 diverged from leader pg-2: rewinding before "
				      "starting as a replica");
	assert_string_equal(d.target, "pg-2");
	/* running as a standby still on the diverged timeline -> rewind */
	me.self.state = HA_PG_RUNNING;
	me.self.in_recovery = true;
	me.self.receive_lsn = me.self.replay_lsn = OPTIME;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_REWIND);
	/* not diverged (stopped exactly at the switch point): just start as a replica */
	me.self.state = HA_PG_STOPPED;
	me.self.in_recovery = false;
	me.self.write_lsn = me.self.flush_lsn = OPTIME - MB;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_START_REPLICA);
	/* a stray primary is demoted even in maintenance mode */
	me.self.state = HA_PG_RUNNING;
	c.maintenance = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_DEMOTE);
}

/* The decision: election */

static void election_setup(HaCluster *c, HaLocal *me, const char *name)
{
	make_cluster(c);
	drop_leader(c);
	make_local(me, c, name);
	me->probes_done_ms = NOW;
}

static void test_decide_election_race(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	election_setup(&c, &me, "pg-2");
	me.probes_done_ms = 0;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_PROBE);
	assert_string_equal(d.reason, "no leader: probing the last-known members (probe_timeout "
				      "2000 ms)");
	me.probes_done_ms = NOW;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	assert_int_equal(d.rank, 0);
	assert_int_equal(d.delay_ms, 0);
	assert_string_equal(d.reason, "no leader: racing at rank 0 after 0 ms");
	assert_string_equal(d.cluster_note, "");

	/* pg-3 ranks 1: waits 200 ms from the end of the probes */
	make_local(&me, &c, "pg-3");
	me.probes_done_ms = NOW;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	assert_int_equal(d.rank, 1);
	assert_int_equal(d.delay_ms, 200);
	assert_int_equal(d.wake_ms, NOW + 200);
	assert_int_equal(run(&c, &me, NOW + 150, &d), HA_ACT_RACE);
	assert_int_equal(d.delay_ms, 50);
	assert_int_equal(run(&c, &me, NOW + 500, &d), HA_ACT_RACE);
	assert_int_equal(d.delay_ms, 0);
}

static int member_index(const HaCluster *c, const char *name)
{
	for (int i = 0; i < c->n_members; i++)
		if (strcmp(c->members[i].name, name) == 0)
			return i;
	fail_msg("no member %s", name);
	return -1;
}

/*
 * A probe that timed out is not proof that the old primary is gone: it counts as alive until
 * the old leader's lease has expired and its fence guard has fired (last_leader_safe_ms);
 * a refused probe, or a replica whose probe timed out, does not hold the election up.
 */
static void test_decide_election_probe_timeout(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;
	int i;

	election_setup(&c, &me, "pg-2");
	i = member_index(&c, "pg-1");
	mem(&c, "pg-1")->down_cause = HA_DOWN_UNREACHABLE;
	snprintf(me.last_leader, sizeof(me.last_leader), "pg-1");
	me.last_leader_safe_ms = NOW + 2000;
	/* refused (no timeout bit): the old primary is gone, race at once */
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	/* timed out: wait until the guard must have fired, and wake up then */
	me.probe_timed_out = UINT32_C(1) << i;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_PRIMARY_ALIVE);
	assert_int_equal(d.elig, HA_ELIG_PRIMARY_ALIVE);
	assert_int_equal(d.wake_ms, NOW + 2000);
	assert_string_equal(d.reason,
			    "no leader, but the probe of pg-1 timed out: it may still be a writable "
			    "primary until its lease has expired and its fence guard has fired "
			    "(2000 ms)");
	assert_int_equal(run(&c, &me, NOW + 1999, &d), HA_ACT_WAIT_PRIMARY_ALIVE);
	/* from the safe time on, the timeout counts as down (inclusive) */
	assert_int_equal(run(&c, &me, NOW + 2000, &d), HA_ACT_RACE);
	/* unknown safe time: the old rule */
	me.last_leader_safe_ms = 0;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	/* a member that was not the leader and says it is a replica: its timeout is no primary */
	me.last_leader_safe_ms = NOW + 2000;
	snprintf(me.last_leader, sizeof(me.last_leader), "pg-9");
	mem(&c, "pg-1")->role = HA_ROLE_REPLICA;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	/* ... but one that says it is a primary is */
	mem(&c, "pg-1")->role = HA_ROLE_PRIMARY;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_PRIMARY_ALIVE);
	/* my own bit is never a reason */
	mem(&c, "pg-1")->role = HA_ROLE_REPLICA;
	snprintf(me.last_leader, sizeof(me.last_leader), "pg-2");
	me.probe_timed_out = UINT32_C(1) << member_index(&c, "pg-2");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
}

static void test_decide_election_wait(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	/* the old primary answers probes: no failover */
	election_setup(&c, &me, "pg-2");
	mem(&c, "pg-1")->healthy = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_PRIMARY_ALIVE);
	assert_int_equal(d.elig, HA_ELIG_PRIMARY_ALIVE);
	assert_string_equal(d.reason,
			    "no leader, but member pg-1 is reachable and not in recovery");

	/* lagging beyond pg_rpo, and so is everyone: loud note for SHOW CLUSTER */
	election_setup(&c, &me, "pg-2");
	me.self.receive_lsn = me.self.replay_lsn = OPTIME - 5 * MB;
	mem(&c, "pg-3")->receive_lsn = mem(&c, "pg-3")->replay_lsn = OPTIME - 3 * MB;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_NOT_ELIGIBLE);
	assert_int_equal(d.elig, HA_ELIG_LAG);
	assert_string_equal(d.reason, "not eligible: lag 5242880 bytes exceeds pg_rpo 1048576");
	assert_contains(d.cluster_note, "no member is eligible for automatic failover: ");
	assert_contains(d.cluster_note, "pg-2: lag 5242880 bytes exceeds pg_rpo 1048576");
	assert_contains(d.cluster_note, "pg-3: lag 3145728 bytes exceeds pg_rpo 1048576");

	/* lagging, but pg-3 can take over: no note */
	mem(&c, "pg-3")->receive_lsn = OPTIME;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_NOT_ELIGIBLE);
	assert_string_equal(d.cluster_note, "");

	/* a peer ahead */
	election_setup(&c, &me, "pg-2");
	mem(&c, "pg-3")->receive_lsn = OPTIME + 8;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_NOT_ELIGIBLE);
	assert_int_equal(d.elig, HA_ELIG_PEER_AHEAD);

	/* maintenance: no automatic failover */
	election_setup(&c, &me, "pg-2");
	c.maintenance = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_MAINTENANCE);
	assert_string_equal(d.reason, "no leader, maintenance mode: automatic failover is off");
	assert_string_equal(d.cluster_note, "");
	/* even a stray primary is left alone in maintenance without a leader */
	me.self.in_recovery = false;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_MAINTENANCE);
}

static void test_decide_election_local_pg(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	/* the old primary, cut off and back, key gone: demote before racing */
	election_setup(&c, &me, "pg-1");
	me.lease = (HaLease){.id = 5};
	me.self = *mem(&c, "pg-1");
	me.self.healthy = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_DEMOTE);
	assert_contains(d.reason, "a primary without the leader key");
	/* stopped: start as a standby first */
	election_setup(&c, &me, "pg-2");
	me.self.state = HA_PG_STOPPED;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_START_REPLICA);
	assert_string_equal(d.reason, "no leader and PostgreSQL stopped: starting it as a standby");
	/* starting: not eligible yet */
	me.self.state = HA_PG_STARTING;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_NOT_ELIGIBLE);
	assert_int_equal(d.elig, HA_ELIG_UNHEALTHY);
}

static void test_decide_election_manual(void **state)
{
	static HaCluster c;
	HaLocal me;
	HaDecision d;

	election_setup(&c, &me, "pg-2");
	c.failover.present = true;
	snprintf(c.failover.candidate, sizeof(c.failover.candidate), "pg-3");
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_FAILOVER);
	assert_string_equal(d.reason, "manual failover to pg-3: standing aside");
	assert_string_equal(d.target, "pg-3");

	/* the candidate races at once, rank 0, even behind a peer and in maintenance */
	make_local(&me, &c, "pg-3");
	me.probes_done_ms = NOW;
	c.maintenance = true;
	mem(&c, "pg-2")->receive_lsn = OPTIME + 100;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	assert_int_equal(d.rank, 0);
	assert_int_equal(d.delay_ms, 0);
	assert_string_equal(d.reason, "manual failover to this member: racing");
	/* lag refused without FORCE, accepted with it */
	me.self.receive_lsn = me.self.replay_lsn = OPTIME - 10 * MB;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_NOT_ELIGIBLE);
	assert_string_equal(d.reason, "manual failover to this member refused, not eligible: lag "
				      "10485760 bytes exceeds pg_rpo 1048576");
	c.failover.force = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_RACE);
	assert_string_equal(d.reason, "manual failover (force) to this member: racing");
	/* probes first */
	me.probes_done_ms = 0;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_PROBE);
	/* a live primary still blocks it */
	me.probes_done_ms = NOW;
	mem(&c, "pg-1")->healthy = true;
	assert_int_equal(run(&c, &me, NOW, &d), HA_ACT_WAIT_PRIMARY_ALIVE);
}

/* Routing */

static void test_route_primary(void **state)
{
	static HaCluster c;
	char why[256];

	make_cluster(&c);
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PRIMARY, -1, NULL, why, sizeof(why)), 0);
	mem(&c, "pg-1")->in_recovery = true; /* won the race, not promoted yet */
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PRIMARY, -1, NULL, why, sizeof(why)), -1);
	assert_string_equal(why, "leader pg-1 is still in recovery");
	mem(&c, "pg-1")->in_recovery = false;
	mem(&c, "pg-1")->healthy = false;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PRIMARY, -1, NULL, why, sizeof(why)), -1);
	assert_string_equal(why, "leader pg-1 is not healthy");
	/* another member out of recovery without the key is never the primary */
	drop_leader(&c);
	mem(&c, "pg-3")->in_recovery = false;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PRIMARY, -1, NULL, why, sizeof(why)), -1);
	assert_string_equal(why, "no leader");
	snprintf(c.leader, sizeof(c.leader), "pg-9");
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PRIMARY, -1, NULL, why, sizeof(why)), -1);
	assert_string_equal(why, "leader pg-9 has no member entry");
}

static void test_route_replica(void **state)
{
	static HaCluster c;
	char why[256];
	int busy[3] = {0, 5, 2};

	make_cluster(&c);
	/* least busy */
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, busy, why, sizeof(why)), 2);
	/* tie: lower name */
	busy[2] = 5;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, busy, why, sizeof(why)), 1);
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, NULL, why, sizeof(why)), 1);
	/* lag: exactly the limit is fine, one byte more is not */
	mem(&c, "pg-2")->replay_lsn = OPTIME - MB;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, MB, busy, why, sizeof(why)), 1);
	mem(&c, "pg-2")->replay_lsn = OPTIME - MB - 1;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, MB, busy, why, sizeof(why)), 2);
	/* the reference is the newest position known, here the leader beyond status */
	mem(&c, "pg-1")->write_lsn = OPTIME + 2 * MB;
	mem(&c, "pg-2")->replay_lsn = OPTIME;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, MB, busy, why, sizeof(why)), -1);
	assert_string_equal(why, "no healthy replica with lag within 1048576 bytes");
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, busy, why, sizeof(why)), 1);
	/* unhealthy, noloadbalance and the promoting leader are skipped */
	make_cluster(&c);
	mem(&c, "pg-2")->healthy = false;
	mem(&c, "pg-3")->tags.noloadbalance = true;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, NULL, why, sizeof(why)), -1);
	assert_string_equal(why, "no healthy replica");
	mem(&c, "pg-3")->tags.noloadbalance = false;
	snprintf(c.leader, sizeof(c.leader), "pg-3");
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, NULL, why, sizeof(why)), -1);
	/* a stopped replica is skipped */
	make_cluster(&c);
	mem(&c, "pg-2")->state = HA_PG_STOPPED;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_REPLICA, -1, NULL, why, sizeof(why)), 2);
}

static void test_route_prefer_and_any(void **state)
{
	static HaCluster c;
	char why[256];
	int busy[3] = {1, 4, 3};

	make_cluster(&c);
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PREFER_REPLICA, -1, busy, why, sizeof(why)),
			 2);
	/* any: the primary when it is the least busy */
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_ANY, -1, busy, why, sizeof(why)), 0);
	busy[0] = 9;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_ANY, -1, busy, why, sizeof(why)), 2);
	/* no replica: prefer_replica and any fall back to the primary */
	mem(&c, "pg-2")->healthy = false;
	mem(&c, "pg-3")->healthy = false;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PREFER_REPLICA, -1, busy, why, sizeof(why)),
			 0);
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_ANY, -1, busy, why, sizeof(why)), 0);
	/* and nothing at all: wait */
	mem(&c, "pg-1")->healthy = false;
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_PREFER_REPLICA, -1, busy, why, sizeof(why)),
			 -1);
	assert_string_equal(why, "no healthy replica and leader pg-1 is not healthy");
	assert_int_equal(ha_rules_route(&c, HA_ROUTE_ANY, -1, busy, NULL, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lsn_parse),
	    cmocka_unit_test(test_cluster_members),
	    cmocka_unit_test(test_cluster_history),
	    cmocka_unit_test(test_member_lsn_and_names),
	    cmocka_unit_test(test_renewal_continue),
	    cmocka_unit_test(test_renewal_fence_retry),
	    cmocka_unit_test(test_renewal_fence_deadline),
	    cmocka_unit_test(test_renewal_lost_release),
	    cmocka_unit_test(test_eligible_lag_boundary),
	    cmocka_unit_test(test_eligible_member_conditions),
	    cmocka_unit_test(test_eligible_peers),
	    cmocka_unit_test(test_compare_and_rank),
	    cmocka_unit_test(test_failover_possible),
	    cmocka_unit_test(test_needs_rewind),
	    cmocka_unit_test(test_decide_modes),
	    cmocka_unit_test(test_decide_leader_continue),
	    cmocka_unit_test(test_decide_leader_fence),
	    cmocka_unit_test(test_decide_leader_promote),
	    cmocka_unit_test(test_decide_leader_crash),
	    cmocka_unit_test(test_decide_leader_manual_failover),
	    cmocka_unit_test(test_decide_takeover),
	    cmocka_unit_test(test_decide_follow),
	    cmocka_unit_test(test_decide_follower_pg_states),
	    cmocka_unit_test(test_decide_demote_and_rewind),
	    cmocka_unit_test(test_decide_election_race),
	    cmocka_unit_test(test_decide_election_wait),
	    cmocka_unit_test(test_decide_election_probe_timeout),
	    cmocka_unit_test(test_decide_election_local_pg),
	    cmocka_unit_test(test_decide_election_manual),
	    cmocka_unit_test(test_route_primary),
	    cmocka_unit_test(test_route_replica),
	    cmocka_unit_test(test_route_prefer_and_any),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
