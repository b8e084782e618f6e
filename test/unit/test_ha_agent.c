/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of the agent's bootstrap gate (ha_agent_ready, ha_action_is_passive): before the
 * lease, a full read of the keys, the watch and a local probe are all there, no decision that
 * acts may run. The case that motivated it is rebuilt with the real rules: a fresh cluster
 * whose only primary the rules would demote because the leader key is not there yet.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ha/agent.h"

static const HaAgentReadiness READY = {
    .have_snapshot = true, .watching = true, .have_local = true, .lease_id = 42};

static void test_ready(void **state)
{
	char why[200] = "untouched";

	assert_true(ha_agent_ready(&READY, why, sizeof(why)));
	assert_string_equal(why, "untouched");
	assert_true(ha_agent_ready(&READY, NULL, 0));
}

static void test_not_ready_one_missing(void **state)
{
	HaAgentReadiness r;
	char why[200];

	r = READY;
	r.lease_id = 0;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_string_equal(why, "the lease");

	r = READY;
	r.watching = false;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_string_equal(why, "the etcd watch");

	r = READY;
	r.have_snapshot = false;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_string_equal(why, "a full read of the keys");

	r = READY;
	r.have_local = false;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_string_equal(why, "a probe of the local PostgreSQL");
}

static void test_not_ready_several_missing(void **state)
{
	HaAgentReadiness r = {0};
	char why[200], small[12];

	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	/* no read yet: the watch is not listed separately (it starts from the read) */
	assert_string_equal(
	    why, "the lease, a full read of the keys and a probe of the local PostgreSQL");
	r.have_snapshot = true;
	r.have_local = true;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_string_equal(why, "the lease and the etcd watch");
	/* a short buffer is cut, never overrun */
	assert_false(ha_agent_ready(&r, small, sizeof(small)));
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_false(ha_agent_ready(&r, NULL, 0));
}

static void test_passive_actions(void **state)
{
	static const HaAction passive[] = {HA_ACT_NONE,
					   HA_ACT_FOLLOW,
					   HA_ACT_PROBE,
					   HA_ACT_WAIT,
					   HA_ACT_WAIT_NOT_ELIGIBLE,
					   HA_ACT_WAIT_PRIMARY_ALIVE,
					   HA_ACT_WAIT_MAINTENANCE,
					   HA_ACT_WAIT_FAILOVER};
	static const HaAction acting[] = {HA_ACT_CONTINUE, HA_ACT_FENCE,         HA_ACT_RELEASE,
					  HA_ACT_RESTART,  HA_ACT_PROMOTE,       HA_ACT_TAKEOVER,
					  HA_ACT_REPOINT,  HA_ACT_START_REPLICA, HA_ACT_DEMOTE,
					  HA_ACT_REWIND,   HA_ACT_RACE};

	for (size_t i = 0; i < ARRAY_SIZE(passive); i++)
		assert_true(ha_action_is_passive(passive[i]));
	for (size_t i = 0; i < ARRAY_SIZE(acting); i++)
		if (ha_action_is_passive(acting[i]))
			fail_msg("%s must not run before the agent is ready",
				 ha_action_name(acting[i]));
}

/*
 * The bootstrap race as it happened: the first read shows no leader and no status, the local
 * PostgreSQL is a primary, the lease is not granted yet. The rules say DEMOTE; the gate must
 * hold it back (the agent's bootstrap takes the key once the lease is there).
 */
static void test_bootstrap_race_is_gated(void **state)
{
	HaTimings t;
	HaCluster c;
	HaLocal me;
	HaDecision d;
	HaAgentReadiness r = READY;
	char err[256], why[200];

	assert_true(ha_timings_derive(10, 1048576, &t, err, sizeof(err)));
	ha_cluster_init(&c);
	snprintf(c.name, sizeof(c.name), "pg-test");
	memset(&me, 0, sizeof(me));
	me.mode = HA_MODE_AGENT;
	snprintf(me.self.name, sizeof(me.self.name), "pg-test-1");
	snprintf(me.self.host, sizeof(me.self.host), "127.0.0.11");
	me.self.port = 5432;
	me.self.healthy = true;
	me.self.state = HA_PG_RUNNING;
	me.self.in_recovery = false;
	me.self.role = HA_ROLE_PRIMARY;
	me.self.timeline = 1;
	me.self.tags.failover_priority = 1;
	*ha_cluster_add_member(&c, "pg-test-1") = me.self;

	assert_int_equal(ha_rules_decide(&c, &me, 1000000, &t, &d), HA_ACT_DEMOTE);
	r.lease_id = 0;
	assert_false(ha_agent_ready(&r, why, sizeof(why)));
	assert_false(ha_action_is_passive(d.action));
	assert_string_equal(why, "the lease");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ready),
	    cmocka_unit_test(test_not_ready_one_missing),
	    cmocka_unit_test(test_not_ready_several_missing),
	    cmocka_unit_test(test_passive_actions),
	    cmocka_unit_test(test_bootstrap_race_is_gated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
