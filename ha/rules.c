/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The HA decision rules (design section 4, doc/ha.md) as pure functions over a cluster view. The
 * order of the checks in ha_rules_decide() is the priority of the rules: safety first (fence a
 * leader that is losing its lease, demote a primary without the key), then the leader's own
 * duties, then following, then the election.
 */
#include "ha/rules.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Format into a reason buffer; <buf> may be NULL. */
static void say(char *buf, size_t len, const char *fmt, ...) _PRINTF(3, 4);
static void say(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!buf || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

const char *ha_mode_name(HaMode m)
{
	switch (m) {
	case HA_MODE_OFF:
		return "off";
	case HA_MODE_FOLLOW:
		return "follow";
	case HA_MODE_AGENT:
		return "agent";
	}
	return "unknown";
}

const char *ha_renew_action_name(HaRenewAction a)
{
	switch (a) {
	case HA_RENEW_CONTINUE:
		return "continue";
	case HA_RENEW_FENCE:
		return "fence";
	case HA_RENEW_RELEASE:
		return "release";
	}
	return "unknown";
}

const char *ha_eligibility_name(HaEligibility e)
{
	static const char *const names[] = {
	    [HA_ELIG_OK] = "eligible",
	    [HA_ELIG_UNHEALTHY] = "unhealthy",
	    [HA_ELIG_NOT_IN_RECOVERY] = "not in recovery",
	    [HA_ELIG_NOFAILOVER] = "nofailover",
	    [HA_ELIG_NOT_SYNC] = "not the sync standby",
	    [HA_ELIG_TIMELINE] = "timeline behind",
	    [HA_ELIG_NO_STATUS] = "no status",
	    [HA_ELIG_LAG] = "lag exceeds pg_rpo",
	    [HA_ELIG_PRIMARY_ALIVE] = "primary alive",
	    [HA_ELIG_PEER_AHEAD] = "peer ahead",
	};

	if ((unsigned)e >= ARRAY_SIZE(names))
		return "unknown";
	return names[e];
}

const char *ha_action_name(HaAction a)
{
	static const char *const names[] = {
	    [HA_ACT_NONE] = "none",
	    [HA_ACT_CONTINUE] = "continue",
	    [HA_ACT_FENCE] = "fence",
	    [HA_ACT_RELEASE] = "release",
	    [HA_ACT_RESTART] = "restart",
	    [HA_ACT_PROMOTE] = "promote",
	    [HA_ACT_TAKEOVER] = "takeover",
	    [HA_ACT_FOLLOW] = "follow",
	    [HA_ACT_REPOINT] = "repoint",
	    [HA_ACT_START_REPLICA] = "start replica",
	    [HA_ACT_DEMOTE] = "demote",
	    [HA_ACT_REWIND] = "rewind",
	    [HA_ACT_PROBE] = "probe",
	    [HA_ACT_RACE] = "race",
	    [HA_ACT_WAIT_NOT_ELIGIBLE] = "wait: not eligible",
	    [HA_ACT_WAIT_PRIMARY_ALIVE] = "wait: primary alive",
	    [HA_ACT_WAIT_MAINTENANCE] = "wait: maintenance",
	    [HA_ACT_WAIT_FAILOVER] = "wait: manual failover",
	    [HA_ACT_WAIT] = "wait",
	};

	if ((unsigned)a >= ARRAY_SIZE(names))
		return "unknown";
	return names[a];
}

const char *ha_route_role_name(HaRouteRole r)
{
	switch (r) {
	case HA_ROUTE_PRIMARY:
		return "primary";
	case HA_ROUTE_REPLICA:
		return "replica";
	case HA_ROUTE_PREFER_REPLICA:
		return "prefer_replica";
	case HA_ROUTE_ANY:
		return "any";
	}
	return "unknown";
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Rules 1 and 2 */

HaRenewAction ha_rules_renewal(const HaLease *l, int64_t now_ms, const HaTimings *t,
			       HaRenewDecision *out)
{
	int64_t by_retry = l->last_ok_ms + t->renew_ms + t->retry_ms;
	int64_t by_expiry = l->last_ok_sent_ms + t->lease_ttl_ms - t->fence_ms - HA_FENCE_MARGIN_MS;
	int64_t next_renew = l->last_attempt_ms + t->renew_ms;

	memset(out, 0, sizeof(*out));
	out->fence_at_ms = min64(by_retry, by_expiry);
	if (l->lost) {
		out->action = HA_RENEW_FENCE;
		say(out->reason, sizeof(out->reason),
		    "leadership lost: the lease is gone or the leader key has another owner");
	} else if (now_ms >= by_retry) {
		out->action = HA_RENEW_FENCE;
		say(out->reason, sizeof(out->reason),
		    "could not renew the leader lease for %" PRId64
		    " ms (renew_interval + retry_timeout = %" PRId64 " ms)",
		    now_ms - l->last_ok_ms, t->renew_ms + t->retry_ms);
	} else if (now_ms >= by_expiry) {
		out->action = HA_RENEW_FENCE;
		say(out->reason, sizeof(out->reason),
		    "fence deadline reached: %" PRId64 " ms since the last successful renewal was "
		    "sent, lease_ttl - fence_timeout - 1 s = %" PRId64 " ms",
		    now_ms - l->last_ok_sent_ms, by_expiry - l->last_ok_sent_ms);
	} else if (l->release_requested) {
		out->action = HA_RENEW_RELEASE;
		say(out->reason, sizeof(out->reason), "releasing the leader key on request");
	} else {
		out->action = HA_RENEW_CONTINUE;
		out->renew_due = now_ms >= next_renew;
		say(out->reason, sizeof(out->reason), "holding the leader lease");
	}
	out->wake_ms = out->fence_at_ms;
	if (out->action == HA_RENEW_CONTINUE && !out->renew_due)
		out->wake_ms = min64(out->wake_ms, next_renew);
	return out->action;
}

/* Rule 4 */

/* The members of <c> with <m> standing in for its namesake; returns the count. */
static int view_members(const HaCluster *c, const HaMember *m, const HaMember **v)
{
	int n = 0;
	bool placed = false;

	for (int i = 0; i < c->n_members; i++) {
		if (m && strcmp(c->members[i].name, m->name) == 0) {
			v[n++] = m;
			placed = true;
		} else {
			v[n++] = &c->members[i];
		}
	}
	if (m && !placed)
		v[n++] = m;
	return n;
}

static bool is_sync_standby(const HaCluster *c, const HaMember *m)
{
	return c->sync_standby[0] && strcmp(c->sync_standby, m->name) == 0;
}

HaEligibility ha_rules_member_eligible(const HaCluster *c, const HaMember *m, const HaTimings *t,
				       int flags, char *why, size_t len)
{
	uint64_t lsn = ha_member_lsn(m);

	if (!m->healthy || m->state != HA_PG_RUNNING) {
		say(why, len, "not healthy (%s, PostgreSQL %s)",
		    m->healthy ? "reachable" : ha_down_cause_name(m->down_cause),
		    ha_pg_state_name(m->state));
		return HA_ELIG_UNHEALTHY;
	}
	if (!m->in_recovery) {
		say(why, len, "PostgreSQL is not in recovery");
		return HA_ELIG_NOT_IN_RECOVERY;
	}
	if (m->tags.nofailover || m->tags.failover_priority <= 0) {
		say(why, len, m->tags.nofailover ? "tagged nofailover" : "failover_priority %d",
		    m->tags.failover_priority);
		return HA_ELIG_NOFAILOVER;
	}
	if (c->sync_mode && c->sync_standby[0] && !is_sync_standby(c, m)) {
		say(why, len, "synchronous mode: only the sync standby %s may be promoted",
		    c->sync_standby);
		return HA_ELIG_NOT_SYNC;
	}
	if (c->has_status && m->timeline < c->status_timeline) {
		say(why, len, "timeline %u is behind the cluster timeline %u", m->timeline,
		    c->status_timeline);
		return HA_ELIG_TIMELINE;
	}
	if (flags & HA_ELIG_F_FORCE)
		return HA_ELIG_OK;
	if (!c->has_status) {
		say(why, len, "no status.optime published: the lag cannot be checked");
		return HA_ELIG_NO_STATUS;
	}
	if (c->status_optime > lsn && c->status_optime - lsn > (uint64_t)t->pg_rpo) {
		say(why, len, "lag %" PRIu64 " bytes exceeds pg_rpo %" PRId64,
		    c->status_optime - lsn, t->pg_rpo);
		return HA_ELIG_LAG;
	}
	return HA_ELIG_OK;
}

/* ha_rules_eligible() over an explicit member list. */
static HaEligibility eligible_in(const HaCluster *c, const HaMember *const *v, int n,
				 const HaMember *m, const HaTimings *t, int flags, char *why,
				 size_t len)
{
	HaEligibility e = ha_rules_member_eligible(c, m, t, flags, why, len);
	uint64_t lsn = ha_member_lsn(m);
	char a[HA_LSN_BUFLEN], b[HA_LSN_BUFLEN];

	if (e != HA_ELIG_OK)
		return e;
	for (int i = 0; i < n; i++) {
		const HaMember *p = v[i];

		if (p == m || strcmp(p->name, m->name) == 0)
			continue;
		if (p->healthy && !p->in_recovery && p->state == HA_PG_RUNNING) {
			say(why, len, "member %s is reachable and not in recovery", p->name);
			return HA_ELIG_PRIMARY_ALIVE;
		}
	}
	if (flags & HA_ELIG_F_MANUAL)
		return HA_ELIG_OK;
	for (int i = 0; i < n; i++) {
		const HaMember *p = v[i];

		if (p == m || strcmp(p->name, m->name) == 0)
			continue;
		if (ha_member_lsn(p) > lsn &&
		    ha_rules_member_eligible(c, p, t, 0, NULL, 0) == HA_ELIG_OK) {
			say(why, len, "eligible member %s is ahead (%s > %s)", p->name,
			    ha_lsn_format(ha_member_lsn(p), a, sizeof(a)),
			    ha_lsn_format(lsn, b, sizeof(b)));
			return HA_ELIG_PEER_AHEAD;
		}
	}
	return HA_ELIG_OK;
}

HaEligibility ha_rules_eligible(const HaCluster *c, const HaMember *m, const HaTimings *t,
				int flags, char *why, size_t len)
{
	const HaMember *v[HA_MAX_MEMBERS + 1];
	int n = view_members(c, m, v);

	return eligible_in(c, v, n, m, t, flags, why, len);
}

/* Rule 5 */

int ha_rules_compare(const HaCluster *c, const HaMember *a, const HaMember *b)
{
	uint64_t la = ha_member_lsn(a), lb = ha_member_lsn(b);
	bool sa = is_sync_standby(c, a), sb = is_sync_standby(c, b);

	if (la != lb)
		return la > lb ? -1 : 1;
	if (sa != sb)
		return sa ? -1 : 1;
	if (a->tags.failover_priority != b->tags.failover_priority)
		return a->tags.failover_priority > b->tags.failover_priority ? -1 : 1;
	return strcmp(a->name, b->name);
}

int ha_rules_rank(const HaCluster *c, const HaMember *m, const HaTimings *t)
{
	const HaMember *v[HA_MAX_MEMBERS + 1];
	int n = view_members(c, m, v), rank = 0;

	for (int i = 0; i < n; i++) {
		if (v[i] == m)
			continue;
		if (ha_rules_member_eligible(c, v[i], t, 0, NULL, 0) == HA_ELIG_OK &&
		    ha_rules_compare(c, v[i], m) < 0)
			rank++;
	}
	return rank;
}

bool ha_rules_failover_possible(const HaCluster *c, const HaMember *self, const HaTimings *t,
				char *why, size_t len)
{
	const HaMember *v[HA_MAX_MEMBERS + 1];
	int n = view_members(c, self, v);
	size_t used;
	char one[HA_REASON_MAX];

	for (int i = 0; i < n; i++)
		if (eligible_in(c, v, n, v[i], t, 0, NULL, 0) == HA_ELIG_OK)
			return true;
	if (!why || len == 0)
		return false;
	say(why, len, "no member is eligible for automatic failover%s", n ? ":" : " (no members)");
	for (int i = 0; i < n; i++) {
		eligible_in(c, v, n, v[i], t, 0, one, sizeof(one));
		used = strlen(why);
		say(why + used, len - used, "%s %s: %s", i ? ";" : "", v[i]->name, one);
	}
	return false;
}

/* Rule 6 */

static uint32_t leader_timeline(const HaCluster *c)
{
	const HaMember *lm = ha_cluster_find_member(c, c->leader);
	uint32_t tl = c->has_status ? c->status_timeline : 0;

	if (lm && lm->timeline > tl)
		tl = lm->timeline;
	return tl;
}

bool ha_rules_needs_rewind(const HaCluster *c, const HaMember *m)
{
	uint32_t ltl = leader_timeline(c);
	uint64_t sw;

	if (m->timeline == 0 || ltl == 0 || m->timeline == ltl)
		return false;
	if (m->timeline > ltl)
		return true;
	if (!ha_cluster_switch_lsn(c, m->timeline, &sw))
		return true;
	return ha_member_lsn(m) > sw;
}

/* The decision */

static HaAction decide(HaDecision *out, HaAction a, const char *fmt, ...) _PRINTF(3, 4);
static HaAction decide(HaDecision *out, HaAction a, const char *fmt, ...)
{
	va_list ap;

	out->action = a;
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
	return a;
}

static void set_target(HaDecision *out, const HaCluster *c, const char *name)
{
	snprintf(out->target, sizeof(out->target), "%s", name);
	out->target_member = ha_cluster_find_member(c, name);
}

static bool pg_running(const HaMember *m)
{
	return m->state == HA_PG_RUNNING;
}

/* Stopped for good (not in a transition the agent itself is driving). */
static bool pg_stopped(const HaMember *m)
{
	return m->state == HA_PG_STOPPED || m->state == HA_PG_CRASHED ||
	       m->state == HA_PG_START_FAILED;
}

/* I hold the leader key (rules 1, 2, 6, 7 and the leader side of FAILOVER). */
static HaAction decide_leader(const HaCluster *c, const HaLocal *me, int64_t now,
			      const HaTimings *t, HaDecision *out)
{
	const HaMember *self = &me->self;
	const HaFailoverRequest *fo = &c->failover;
	HaRenewDecision rd;
	char why[HA_REASON_MAX];
	int64_t down_for;

	switch (ha_rules_renewal(&me->lease, now, t, &rd)) {
	case HA_RENEW_FENCE:
		out->wake_ms = now;
		return decide(out, HA_ACT_FENCE, "%s", rd.reason);
	case HA_RENEW_RELEASE:
		return decide(out, HA_ACT_RELEASE, "%s", rd.reason);
	case HA_RENEW_CONTINUE:
		break;
	}
	out->renew_due = rd.renew_due;
	out->wake_ms = rd.wake_ms;

	if (fo->present && strcmp(fo->candidate, self->name) != 0) {
		const HaMember *cand = ha_cluster_find_member(c, fo->candidate);
		int flags = HA_ELIG_F_MANUAL | (fo->force ? HA_ELIG_F_FORCE : 0);

		if (!cand) {
			out->clear_failover = true;
			return decide(out, HA_ACT_CONTINUE,
				      "manual failover to %s refused: no such member",
				      fo->candidate);
		}
		if (ha_rules_member_eligible(c, cand, t, flags, why, sizeof(why)) != HA_ELIG_OK) {
			out->clear_failover = true;
			return decide(out, HA_ACT_CONTINUE, "manual failover to %s refused: %s",
				      fo->candidate, why);
		}
		set_target(out, c, fo->candidate);
		return decide(out, HA_ACT_RELEASE, "manual failover to %s%s: handing over",
			      fo->candidate, fo->force ? " (force)" : "");
	}
	if (fo->present)
		out->clear_failover = true;

	if (pg_running(self)) {
		if (self->in_recovery)
			return decide(
			    out, HA_ACT_PROMOTE,
			    "holding the leader key with PostgreSQL in recovery: promoting "
			    "(budget %" PRId64 " ms)",
			    t->promote_ms);
		return decide(out, HA_ACT_CONTINUE, "leader%s",
			      fo->present ? "; manual failover to the leader itself ignored" : "");
	}

	/* rule 7: the local PostgreSQL is down while I hold the key */
	down_for = me->pg_down_since_ms ? now - me->pg_down_since_ms : 0;
	if (down_for >= t->restart_ms && !c->maintenance) {
		out->wake_ms = now;
		return decide(out, HA_ACT_RELEASE,
			      "PostgreSQL %s for %" PRId64 " ms, restart_timeout %" PRId64
			      " ms used up: releasing the leader key",
			      ha_pg_state_name(self->state), down_for, t->restart_ms);
	}
	if (me->pg_down_since_ms && !c->maintenance)
		out->wake_ms = min64(out->wake_ms, me->pg_down_since_ms + t->restart_ms);
	if (!pg_stopped(self))
		return decide(out, HA_ACT_WAIT,
			      "leader waiting for PostgreSQL (%s) for %" PRId64 " ms of %" PRId64,
			      ha_pg_state_name(self->state), down_for, t->restart_ms);
	return decide(out, HA_ACT_RESTART,
		      "leader's PostgreSQL %s: restarting (%" PRId64
		      " ms of restart_timeout %" PRId64 " ms used%s)",
		      ha_pg_state_name(self->state), down_for, t->restart_ms,
		      c->maintenance ? ", no release in maintenance mode" : "");
}

/* Someone else holds the leader key (rule 6 for replicas, demotion of a stray primary). */
static HaAction decide_follower(const HaCluster *c, const HaLocal *me, HaDecision *out)
{
	const HaMember *self = &me->self;
	const HaMember *lm = ha_cluster_find_member(c, c->leader);

	set_target(out, c, c->leader);
	if (pg_running(self) && !self->in_recovery)
		return decide(out, HA_ACT_DEMOTE,
			      "PostgreSQL is a primary but %s holds the leader key: demoting",
			      c->leader);
	if (pg_stopped(self)) {
		if (ha_rules_needs_rewind(c, self))
			return decide(out, HA_ACT_REWIND,
				      "timeline %u diverged from leader %s: rewinding before "
				      "starting as a replica",
				      self->timeline, c->leader);
		return decide(out, HA_ACT_START_REPLICA,
			      "PostgreSQL %s: starting it as a replica of %s",
			      ha_pg_state_name(self->state), c->leader);
	}
	if (!pg_running(self))
		return decide(out, HA_ACT_WAIT, "waiting for PostgreSQL (%s)",
			      ha_pg_state_name(self->state));
	if (ha_rules_needs_rewind(c, self))
		return decide(out, HA_ACT_REWIND, "timeline %u diverged from leader %s: rewinding",
			      self->timeline, c->leader);
	if (!lm || !lm->host[0])
		return decide(out, HA_ACT_WAIT,
			      "leader %s has no member key: cannot point a replica at it",
			      c->leader);
	if (strcmp(me->upstream_host, lm->host) != 0 || me->upstream_port != lm->port)
		return decide(
		    out, HA_ACT_REPOINT,
		    "primary_conninfo points at %s:%d, leader %s is at %s:%d: re-pointing",
		    me->upstream_host[0] ? me->upstream_host : "nothing", me->upstream_port,
		    c->leader, lm->host, lm->port);
	return decide(out, HA_ACT_FOLLOW, "replica of %s", c->leader);
}

_Static_assert(HA_MAX_MEMBERS <= 32, "HaLocal.probe_timed_out has one bit per member");

/*
 * A probe that timed out is not proof that a primary is gone: under load a live primary may
 * not answer within P, and when its agent hangs nothing else stops it but its fence guard,
 * which has fired at the latest when the lease has expired. So a member whose last probe timed
 * out, and that was the last leader or says it is a primary, is taken for a live primary until
 * me->last_leader_safe_ms. Returns it, or NULL, with the reason in <why>.
 */
static const HaMember *timed_out_primary(const HaCluster *c, const HaLocal *me, int64_t now,
					 char *why, size_t len)
{
	if (!me->probe_timed_out || !me->last_leader_safe_ms || now >= me->last_leader_safe_ms)
		return NULL;
	for (int i = 0; i < c->n_members && i < 32; i++) {
		const HaMember *m = &c->members[i];

		if (!(me->probe_timed_out & (UINT32_C(1) << i)) ||
		    strcmp(m->name, me->self.name) == 0)
			continue;
		if (strcmp(m->name, me->last_leader) != 0 && m->role != HA_ROLE_PRIMARY)
			continue;
		say(why, len,
		    "the probe of %s timed out: it may still be a writable primary until its lease "
		    "has expired and its fence guard has fired (%" PRId64 " ms)",
		    m->name, me->last_leader_safe_ms - now);
		return m;
	}
	return NULL;
}

/* No leader key (rules 3, 4, 5 and manual FAILOVER without a leader). */
static HaAction decide_election(const HaCluster *c, const HaLocal *me, int64_t now,
				const HaTimings *t, HaDecision *out)
{
	const HaMember *self = &me->self;
	const HaFailoverRequest *fo = &c->failover;
	bool manual = fo->present && strcmp(fo->candidate, self->name) == 0;
	int flags = 0;
	char why[HA_REASON_MAX];
	HaEligibility e;
	int64_t race_at;

	/* nobody eligible and nothing manual pending: SHOW CLUSTER says so loudly */
	if (fo->present || c->maintenance ||
	    ha_rules_failover_possible(c, self, t, out->cluster_note, sizeof(out->cluster_note)))
		out->cluster_note[0] = '\0';

	if (fo->present && !manual) {
		set_target(out, c, fo->candidate);
		return decide(out, HA_ACT_WAIT_FAILOVER, "manual failover to %s: standing aside",
			      fo->candidate);
	}
	if (c->maintenance && !manual)
		return decide(out, HA_ACT_WAIT_MAINTENANCE,
			      "no leader, maintenance mode: automatic failover is off");
	if (pg_running(self) && !self->in_recovery)
		return decide(out, HA_ACT_DEMOTE,
			      "PostgreSQL is a primary without the leader key: demoting it to a "
			      "standby before the election");
	if (pg_stopped(self))
		return decide(out, HA_ACT_START_REPLICA,
			      "no leader and PostgreSQL %s: starting it as a standby",
			      ha_pg_state_name(self->state));
	if (!me->probes_done_ms)
		return decide(out, HA_ACT_PROBE,
			      "no leader: probing the last-known members (probe_timeout %" PRId64
			      " ms)",
			      t->probe_ms);

	if (timed_out_primary(c, me, now, why, sizeof(why))) {
		out->elig = HA_ELIG_PRIMARY_ALIVE;
		out->wake_ms = min64(out->wake_ms, me->last_leader_safe_ms);
		return decide(out, HA_ACT_WAIT_PRIMARY_ALIVE, "no leader, but %s", why);
	}
	if (manual)
		flags = HA_ELIG_F_MANUAL | (fo->force ? HA_ELIG_F_FORCE : 0);
	e = ha_rules_eligible(c, self, t, flags, why, sizeof(why));
	out->elig = e;
	if (e == HA_ELIG_PRIMARY_ALIVE)
		return decide(out, HA_ACT_WAIT_PRIMARY_ALIVE, "no leader, but %s", why);
	if (e != HA_ELIG_OK)
		return decide(out, HA_ACT_WAIT_NOT_ELIGIBLE, "%snot eligible: %s",
			      manual ? "manual failover to this member refused, " : "", why);

	out->rank = manual ? 0 : ha_rules_rank(c, self, t);
	race_at = me->probes_done_ms + ha_timings_rank_delay(t, out->rank);
	out->delay_ms = race_at > now ? race_at - now : 0;
	out->wake_ms = now + out->delay_ms;
	if (manual)
		return decide(out, HA_ACT_RACE, "manual failover%s to this member: racing",
			      fo->force ? " (force)" : "");
	return decide(out, HA_ACT_RACE, "no leader: racing at rank %d after %" PRId64 " ms",
		      out->rank, out->delay_ms);
}

HaAction ha_rules_decide(const HaCluster *c, const HaLocal *me, int64_t now_ms, const HaTimings *t,
			 HaDecision *out)
{
	const HaMember *self = &me->self;
	bool leader_is_me = ha_cluster_has_leader(c) && strcmp(c->leader, self->name) == 0;

	memset(out, 0, sizeof(*out));
	out->wake_ms = now_ms + t->renew_ms; /* the full re-read of rule 3 */
	if (me->mode == HA_MODE_OFF)
		return decide(out, HA_ACT_NONE, "ha_mode off");
	if (me->mode == HA_MODE_FOLLOW)
		return decide(out, HA_ACT_NONE, "follow mode: never acts");

	if (me->lease.held) {
		if (!ha_cluster_has_leader(c)) {
			out->wake_ms = now_ms;
			return decide(out, HA_ACT_FENCE, "the leader key is gone: leadership lost");
		}
		if (!leader_is_me) {
			out->wake_ms = now_ms;
			set_target(out, c, c->leader);
			return decide(out, HA_ACT_FENCE, "the leader key is held by %s", c->leader);
		}
		return decide_leader(c, me, now_ms, t, out);
	}
	if (leader_is_me) {
		/* a key from an earlier run of this agent, on a lease it no longer has */
		if (pg_running(self) && !self->in_recovery &&
		    (!c->has_status || self->timeline >= c->status_timeline))
			return decide(out, HA_ACT_TAKEOVER,
				      "the leader key names this member on lease %" PRId64
				      " from an earlier run: taking it over",
				      c->leader_lease);
		if (c->leader_expiry_ms > now_ms)
			out->wake_ms = min64(out->wake_ms, c->leader_expiry_ms);
		return decide(out, HA_ACT_WAIT,
			      "the leader key names this member on lease %" PRId64
			      " from an earlier run, PostgreSQL is not a running primary: waiting "
			      "for it to expire",
			      c->leader_lease);
	}
	if (ha_cluster_has_leader(c))
		return decide_follower(c, me, out);
	return decide_election(c, me, now_ms, t, out);
}

/* Routing */

static bool replica_usable(const HaMember *m, const HaCluster *c, uint64_t ref, int64_t max_lag)
{
	if (!m->healthy || !pg_running(m) || !m->in_recovery || m->tags.noloadbalance)
		return false;
	/* a member in recovery that holds the key is being promoted */
	if (ha_cluster_has_leader(c) && strcmp(m->name, c->leader) == 0)
		return false;
	if (max_lag >= 0 && ref > m->replay_lsn && ref - m->replay_lsn > (uint64_t)max_lag)
		return false;
	return true;
}

static int primary_index(const HaCluster *c, char *why, size_t len)
{
	if (!ha_cluster_has_leader(c)) {
		say(why, len, "no leader");
		return -1;
	}
	for (int i = 0; i < c->n_members; i++) {
		const HaMember *m = &c->members[i];

		if (strcmp(m->name, c->leader) != 0)
			continue;
		if (!m->healthy || !pg_running(m)) {
			say(why, len, "leader %s is not healthy", m->name);
			return -1;
		}
		if (m->in_recovery) {
			say(why, len, "leader %s is still in recovery", m->name);
			return -1;
		}
		return i;
	}
	say(why, len, "leader %s has no member entry", c->leader);
	return -1;
}

/* Is candidate <i> better than <best> (least busy, then lower name)? */
static bool less_busy(const HaCluster *c, const int *busy, int i, int best)
{
	int bi = busy ? busy[i] : 0, bb;

	if (best < 0)
		return true;
	bb = busy ? busy[best] : 0;
	if (bi != bb)
		return bi < bb;
	return strcmp(c->members[i].name, c->members[best].name) < 0;
}

int ha_rules_route(const HaCluster *c, HaRouteRole role, int64_t replica_max_lag, const int *busy,
		   char *why, size_t len)
{
	uint64_t ref = c->has_status ? c->status_optime : 0;
	int primary, best = -1;
	char pwhy[HA_REASON_MAX];

	primary = primary_index(c, pwhy, sizeof(pwhy));
	if (role == HA_ROUTE_PRIMARY) {
		if (primary < 0)
			say(why, len, "%s", pwhy);
		return primary;
	}
	for (int i = 0; i < c->n_members; i++) {
		const HaMember *m = &c->members[i];

		if (m->healthy && pg_running(m) && ha_member_lsn(m) > ref)
			ref = ha_member_lsn(m);
	}
	for (int i = 0; i < c->n_members; i++)
		if (replica_usable(&c->members[i], c, ref, replica_max_lag) &&
		    less_busy(c, busy, i, best))
			best = i;
	if (role == HA_ROUTE_ANY && primary >= 0 && less_busy(c, busy, primary, best))
		best = primary;
	if (best < 0 && role == HA_ROUTE_PREFER_REPLICA)
		best = primary;
	if (best < 0) {
		if (role == HA_ROUTE_REPLICA && replica_max_lag >= 0)
			say(why, len, "no healthy replica with lag within %" PRId64 " bytes",
			    replica_max_lag);
		else if (role == HA_ROUTE_REPLICA)
			say(why, len, "no healthy replica");
		else
			say(why, len, "no healthy replica and %s", pwhy);
	}
	return best;
}
