/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The HA decision rules of design section 4 as pure functions: a cluster view, the local node's
 * state and the clock go in, an action and its reason come out. No I/O, no clock reads, no
 * allocation, so every branch is unit-tested. The agent loop carries the actions out;
 * the pooler calls the routing helper. doc/ha.md states the rules with their formulas.
 *
 * Interface: ha_rules_renewal (rule 1-2), ha_rules_member_eligible / ha_rules_eligible (rule 4),
 * ha_rules_compare / ha_rules_rank (rule 5), ha_rules_failover_possible (rule 4, "nobody
 * eligible"), ha_rules_needs_rewind (rule 6), ha_rules_decide (all of them), ha_rules_route.
 */
#ifndef PGPILOT_HA_RULES_H
#define PGPILOT_HA_RULES_H

#include "ha/cluster.h"
#include "ha/timings.h"

#define HA_REASON_MAX 512

/* ha_mode in the ini. */
typedef enum HaMode {
	HA_MODE_OFF,    /* plain pooler: no DCS at all */
	HA_MODE_FOLLOW, /* reads the DCS and routes, never acts */
	HA_MODE_AGENT,  /* follow + owns the local PostgreSQL and takes part in elections */
} HaMode;
const char *ha_mode_name(HaMode m);

/*
 * The local agent's view of its own lease (filled by the etcd side, read by the rules). The
 * create txn that wins an election counts as the first successful renewal: set all three times
 * to its send/reply time together with held.
 */
typedef struct HaLease {
	int64_t id; /* my lease id; 0 = none granted */
	bool held;  /* I own the leader key on this lease (my txn won / my renew confirmed) */
	bool lost;  /* a keepalive found the lease dead or the owner compare failed */
	bool release_requested;  /* shutdown or switchover: give the key up */
	int64_t last_ok_sent_ms; /* when the last successful keepalive + txn was sent */
	int64_t last_ok_ms;      /* when its reply arrived */
	int64_t last_attempt_ms; /* when the last renewal (successful or not) was sent */
} HaLease;

typedef enum HaRenewAction {
	HA_RENEW_CONTINUE, /* keep the lease; renew when renew_due */
	HA_RENEW_FENCE,    /* stop writes now, demote: the lease is lost or about to be */
	HA_RENEW_RELEASE,  /* give the key up on purpose (stop writes first) */
} HaRenewAction;
const char *ha_renew_action_name(HaRenewAction a);

typedef struct HaRenewDecision {
	HaRenewAction action;
	bool renew_due;      /* CONTINUE: a keepalive + owner txn is due now */
	int64_t fence_at_ms; /* when the leader fences at the latest without a successful renew */
	int64_t wake_ms;     /* check again no later than this */
	char reason[HA_REASON_MAX];
} HaRenewDecision;

/*
 * Rules 1 and 2 for the leader. FENCE when the lease is known lost, when no renewal has
 * succeeded for R + T (now - last_ok_ms >= R + T), or when now >= last_ok_sent_ms + L - F - 1 s
 * (both limits inclusive); else RELEASE when asked; else CONTINUE, with renew_due set once R has
 * passed since the last attempt. Returns out->action.
 */
HaRenewAction ha_rules_renewal(const HaLease *l, int64_t now_ms, const HaTimings *t,
			       HaRenewDecision *out);

/* Why a member may not race (rule 4). */
typedef enum HaEligibility {
	HA_ELIG_OK,              /* eligible */
	HA_ELIG_UNHEALTHY,       /* not healthy or PostgreSQL not running */
	HA_ELIG_NOT_IN_RECOVERY, /* a primary cannot race; it is demoted first */
	HA_ELIG_NOFAILOVER,      /* nofailover tag or failover_priority <= 0 */
	HA_ELIG_NOT_SYNC,        /* sync mode and not the sync standby */
	HA_ELIG_TIMELINE,        /* timeline behind the cluster's */
	HA_ELIG_NO_STATUS,       /* no status.optime: the lag cannot be checked */
	HA_ELIG_LAG,             /* status.optime - max(receive, replay) > pg_rpo */
	HA_ELIG_PRIMARY_ALIVE,   /* a probe reached a member that is not in recovery */
	HA_ELIG_PEER_AHEAD,      /* an eligible peer has a higher LSN */
} HaEligibility;
const char *ha_eligibility_name(HaEligibility e);

/* Flags for the eligibility checks. */
#define HA_ELIG_F_MANUAL 0x01 /* manual FAILOVER: the operator chose; skip the peer-ahead check */
#define HA_ELIG_F_FORCE 0x02  /* FAILOVER ... FORCE: also skip the lag (and status) check */

/*
 * The member's own conditions of rule 4: healthy and running, in recovery, no nofailover, the
 * sync standby in sync mode, timeline >= status timeline, status.optime - LSN <= pg_rpo (lag
 * exactly pg_rpo is allowed). On refusal <why> (may be NULL) gets the text, e.g.
 * "lag 5242880 bytes exceeds pg_rpo 1048576".
 */
HaEligibility ha_rules_member_eligible(const HaCluster *c, const HaMember *m, const HaTimings *t,
				       int flags, char *why, size_t len);

/*
 * All of rule 4 for <m>: its own conditions, then the probe results held in c->members (every
 * member but the one named like <m>): none reachable and out of recovery, none member-eligible
 * with a higher LSN. The caller keeps last-known members in the view after their keys vanished
 * (down_cause HA_DOWN_NO_KEY) and refreshes them by probes (timeout P) before asking.
 */
HaEligibility ha_rules_eligible(const HaCluster *c, const HaMember *m, const HaTimings *t,
				int flags, char *why, size_t len);

/* Rule 5 order: < 0 when <a> ranks before <b> (higher LSN, sync, higher priority, lower name). */
int ha_rules_compare(const HaCluster *c, const HaMember *a, const HaMember *b);

/*
 * Rank of <m> (0 = best) among the member-eligible members of <c>, <m> standing in for the
 * member of the same name. It waits ha_timings_rank_delay(t, rank) before racing.
 */
int ha_rules_rank(const HaCluster *c, const HaMember *m, const HaTimings *t);

/*
 * "Nobody eligible": true when at least one member (with <self>, may be NULL, standing in for
 * its namesake) passes ha_rules_eligible(). Otherwise false and <why> says so loudly, member by
 * member: "no member is eligible for automatic failover: pg-2: lag ...; pg-3: not healthy ...".
 */
bool ha_rules_failover_possible(const HaCluster *c, const HaMember *self, const HaTimings *t,
				char *why, size_t len);

/*
 * Rule 6 rejoin: does <m> need pg_rewind before following the leader? Yes when its timeline is
 * ahead of the leader's, or behind it with its WAL past the switch point of its own timeline (or
 * that switch point is unknown: pg_rewind then finds out itself). No when a timeline is unknown.
 */
bool ha_rules_needs_rewind(const HaCluster *c, const HaMember *m);

/* What the local agent should do next. */
typedef enum HaAction {
	HA_ACT_NONE,              /* nothing (follow mode, off) */
	HA_ACT_CONTINUE,          /* leader: keep the lease, route writes here */
	HA_ACT_FENCE,             /* leader losing its lease: stop writes, abort, demote */
	HA_ACT_RELEASE,           /* leader: stop writes, demote, delete the leader key */
	HA_ACT_RESTART,           /* leader: restart the crashed local PostgreSQL (within S) */
	HA_ACT_PROMOTE,           /* I hold the key and PostgreSQL is in recovery: promote it */
	HA_ACT_TAKEOVER,          /* the key names me on an old lease: move it to my lease */
	HA_ACT_FOLLOW,            /* replica already streaming from the leader: nothing to change */
	HA_ACT_REPOINT,           /* replica: point primary_conninfo at the leader, reload */
	HA_ACT_START_REPLICA,     /* start the stopped local PostgreSQL as a standby */
	HA_ACT_DEMOTE,            /* local PostgreSQL is a primary without the key: demote it */
	HA_ACT_REWIND,            /* diverged former primary: pg_rewind from the leader, follow */
	HA_ACT_PROBE,             /* no leader: probe the last-known members (timeout P) first */
	HA_ACT_RACE,              /* no leader: create the key if absent, after delay_ms */
	HA_ACT_WAIT_NOT_ELIGIBLE, /* no leader, and I may not race (elig says why) */
	HA_ACT_WAIT_PRIMARY_ALIVE, /* no leader, but a probe reached a primary */
	HA_ACT_WAIT_MAINTENANCE,   /* no leader, maintenance mode: no automatic failover */
	HA_ACT_WAIT_FAILOVER,      /* no leader, a manual failover names someone else */
	HA_ACT_WAIT,               /* wait for something in progress (see reason) */
} HaAction;
const char *ha_action_name(HaAction a);

/* The local node as its own agent sees it. */
typedef struct HaLocal {
	HaMode mode;
	HaMember self;            /* my member, fresh from local checks (name, conn, tags, LSNs) */
	int64_t pg_down_since_ms; /* first seen not running; 0 = running */
	char upstream_host[HA_HOST_MAX]; /* current primary_conninfo target; "" = none */
	int upstream_port;
	HaLease lease;
	int64_t probes_done_ms; /* no leader: when the probes finished; 0 = not yet */
	/*
	 * A probe that times out is not proof that a primary is gone while its fence guard cannot
	 * have fired yet. Bit i: my last probe of c->members[i] timed out (no answer at all, as
	 * opposed to a refusal or an error). Such a member, when it was the last leader or says it
	 * is a primary, counts as a live primary until last_leader_safe_ms.
	 */
	uint32_t probe_timed_out;
	char last_leader[HA_NAME_MAX]; /* who held the leader key last; "" = none seen */
	int64_t last_leader_safe_ms;   /* when its lease has expired and its fence guard has fired
					* at the latest (its last renewal seen + L); 0 = unknown */
} HaLocal;

typedef struct HaDecision {
	HaAction action;
	char reason[HA_REASON_MAX];       /* logged once by the caller, shown in SHOW HA */
	char target[HA_NAME_MAX];         /* the member to follow / rewind from / hand over to */
	const HaMember *target_member;    /* its entry in the view, when there is one */
	int64_t delay_ms;                 /* RACE: wait this long before the txn */
	int rank;                         /* RACE: my rank */
	bool renew_due;                   /* leader: send keepalive + owner txn now */
	bool clear_failover;              /* delete the failover key (done or refused) */
	HaEligibility elig;               /* WAIT_NOT_ELIGIBLE / WAIT_PRIMARY_ALIVE: why */
	int64_t wake_ms;                  /* decide again no later than this */
	char cluster_note[HA_REASON_MAX]; /* "no member is eligible ..." for SHOW CLUSTER, or "" */
} HaDecision;

/*
 * The agent's decision, from the view <c>, the local state <me>, the clock <now_ms> (monotonic
 * ms) and the timings. Fills *out (reason always set) and returns out->action. The caller keeps
 * renewing whenever renew_due is set, whatever the action, unless it is FENCE or RELEASE; and it
 * updates <c> with the results of its own txns before asking again.
 */
HaAction ha_rules_decide(const HaCluster *c, const HaLocal *me, int64_t now_ms, const HaTimings *t,
			 HaDecision *out);

/* Routing roles of a [databases] entry with cluster=. */
typedef enum HaRouteRole {
	HA_ROUTE_PRIMARY,        /* the lease holder, out of recovery */
	HA_ROUTE_REPLICA,        /* a healthy replica within replica_max_lag; wait when none */
	HA_ROUTE_PREFER_REPLICA, /* a replica, else the primary */
	HA_ROUTE_ANY,            /* least busy of the primary and the replicas */
} HaRouteRole;
const char *ha_route_role_name(HaRouteRole r);

/*
 * Choose the member to route to. <busy> (NULL = all idle) holds one count per c->members entry;
 * <replica_max_lag> is in bytes, -1 for unlimited; a replica's lag is measured from its replay
 * LSN to the newest position known (status.optime or a healthy member's LSN). Among the members
 * that qualify the least busy wins, then the lower name. Returns an index into c->members, or -1
 * with the reason in <why> (may be NULL): the pool then waits.
 */
int ha_rules_route(const HaCluster *c, HaRouteRole role, int64_t replica_max_lag, const int *busy,
		   char *why, size_t len);

#endif
