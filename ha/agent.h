/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The living HA agent: it keeps the cluster view from etcd (a prefix watch plus a full re-read
 * every renew interval), probes the members' PostgreSQL, and in agent mode holds a lease,
 * publishes its member key, runs the decision rules (rules.h) on every relevant event and
 * carries out their actions (actions.h). The pooler sees it only through this API and the
 * callbacks below; ha/ never touches pool lists. See ha/README and doc/ha.md.
 */
#ifndef PGPILOT_HA_AGENT_H
#define PGPILOT_HA_AGENT_H

#include "ha/ha_config.h"
#include "ha/rules.h"

#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct HaAgent HaAgent;

typedef struct HaAgentCallbacks {
	/* the view changed in a way routing may care about (leader, roles, health, lag, members) */
	void (*view_changed)(void *arg, const HaCluster *view);
	/* writes through this pooler to the LOCAL node must stop (false) or may go on (true).
	 * Called with false BEFORE the agent fences/demotes/stops the local node; the pooler then
	 * closes its servers to the local node that serve primary-role pools (aborting
	 * transactions). */
	void (*local_writes)(void *arg, bool allowed);
	/* this node was promoted and is now the primary (DNS publication hooks in here) */
	void (*promoted)(void *arg, const HaCluster *view);
	/* log hook: ha/ must not depend on pooler/, so lines go through this (level 0 error,
	 * 1 warning, 2 info, 3 debug) */
	void (*log)(void *arg, int level, const char *msg);
} HaAgentCallbacks;

/*
 * A new agent on <base> for a validated <cfg> (copied; ha_config_validate must have passed).
 * Callbacks may be NULL. Returns NULL with a message in <err> on failure. Nothing happens until
 * ha_agent_start().
 */
HaAgent *ha_agent_new(struct event_base *base, const HaConfig *cfg, const HaAgentCallbacks *cb,
		      void *arg, char *err, size_t errlen);
/* Begin: etcd read + watch, lease and member key (agent), health checks, elections. */
bool ha_agent_start(HaAgent *a) _MUSTCHECK;
/*
 * Graceful stop. The leader key is not touched: it expires after lease_ttl unless an agent for
 * the same member comes back before (it then takes the key and the fence guard over, no
 * failover). A leader's fence guard stays armed, so if no agent comes back its PostgreSQL is
 * stopped at L - M after the last renewal, before the others may race (doc/ha.md 2.6). A
 * replica's lease is revoked so its member key goes at once. <done> fires from the loop when
 * finished.
 */
void ha_agent_stop(HaAgent *a, void (*done)(void *arg), void *arg);
void ha_agent_free(HaAgent *a);

const HaCluster *ha_agent_view(const HaAgent *a);
/* routing: the member index in the view to use for a role, or -1 (why says e.g. "no leader") */
int ha_agent_route(const HaAgent *a, HaRouteRole role, int64_t replica_max_lag, const int *busy,
		   char *why, size_t len);
/* admin FAILOVER <member> [FORCE]: writes the failover key (agent mode only) */
bool ha_agent_failover(HaAgent *a, const char *member, bool force, char *err, size_t len);
/* admin MAINTENANCE ON|OFF: sets "pause" in the config key (agent mode only) */
bool ha_agent_maintenance(HaAgent *a, bool on, char *err, size_t len);

typedef void (*HaKvFunc)(void *arg, const char *key, const char *value);
/* SHOW HA rows: mode, member, lease id, every derived timing, last renewal, last decision +
 * reason, etcd endpoint in use, watch state, ... */
void ha_agent_show_ha(const HaAgent *a, HaKvFunc fn, void *arg);
/* leader lease time left as this node estimates it, -1 unknown */
int64_t ha_agent_lease_ttl_left_ms(const HaAgent *a);
/* "no member is eligible ..." or "" */
const char *ha_agent_cluster_note(const HaAgent *a);

/* Additions */

/* The last decision (action NONE before the first one). */
const HaDecision *ha_agent_last_decision(const HaAgent *a);
/* Does this node hold the leader key (agent mode)? */
bool ha_agent_is_leader(const HaAgent *a);

/* What the agent knows before it may act on its node (bootstrap gate). */
typedef struct HaAgentReadiness {
	bool have_snapshot; /* a full read of the prefix arrived */
	bool watching;      /* the watch from that read's revision is established */
	bool have_local;    /* the local PostgreSQL has been probed */
	int64_t lease_id;   /* my lease; 0 = not granted yet */
} HaAgentReadiness;

/*
 * Has an agent everything it needs to act: its lease and a complete first read of the keys
 * (range + watch)? Without them a decision would be taken on a view that may miss the leader
 * key or on a node that cannot race, e.g. demote the only primary before the lease exists.
 * Returns true, or false with what is missing in <why> (may be NULL).
 */
bool ha_agent_ready(const HaAgentReadiness *r, char *why, size_t len);
/* Passive decisions (NONE, FOLLOW, PROBE and the WAITs) never touch the local node or the
 * leader key and may run before the agent is ready. */
bool ha_action_is_passive(HaAction action);

#endif
