/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The agent loop (see agent.h, ha/README). Three inputs feed one store of DCS keys and one set
 * of probe results: the etcd watch and re-read, the local health probe, the peer probes. From
 * them compose_view() builds the HaCluster the rules and the pooler read; decide() runs
 * ha_rules_decide() and carries the action out. Every etcd request and action has a flag so it
 * is never doubled; one heartbeat timer (at most every second) drives probes, keepalives and
 * the re-read, and a "tick" timer wakes the rules at the time they asked for.
 */
#include "ha/agent.h"
#include "ha/actions.h"
#include "ha/etcd.h"
#include "ha/fence_guard.h"
#include "ha/health.h"
#include "ha/member_json.h"
#include "ha/watchdog.h"

#include <event2/event.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PGPILOT_VERSION
#define PGPILOT_VERSION "dev"
#endif

#define KEY_MAX 512
#define CONNINFO_MAX 1024
#define HEARTBEAT_MAX_MS 1000
#define STATUS_MIN_MS 1000
#define SETTLE_MS 2000 /* at exit, how long a pg_ctl start in flight may take to show up */

typedef enum AgentLog { LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG } AgentLog;

/*
 * The agent's lease: one state, changed only by lease_set(), which logs old -> new. Who keeps
 * the lease alive follows from the state, and a lease whose leader key was given up is never
 * kept alive again: etcd keeps leases across a restart with a fresh TTL, so a keepalive after
 * an outage would keep the given-up key (and the cluster without a primary) for ever.
 */
typedef enum LeaseState {
	LEASE_NONE,     /* no lease: the heartbeat asks for one */
	LEASE_GRANTING, /* grant in flight */
	LEASE_MEMBER,   /* lease_id carries members/<me>; the heartbeat keeps it alive every R */
	LEASE_LEADER,   /* lease_id carries the leader key too (local.lease.held); renew() keeps it
			 * alive, and only FENCE or RELEASE end it (lease_give_up()) */
	LEASE_REVOKING, /* given up: revoke_id is revoked (which deletes the keys on it), again
			 * at every heartbeat while etcd is unreachable, and never kept alive;
			 * once etcd answered, NONE */
} LeaseState;

/* One member as its key says, plus our own probe of it. */
typedef struct Slot {
	HaAgent *a;
	bool used;
	HaMember pub;     /* from members/<name>; name always set */
	bool key_present; /* the key exists now */
	int64_t gone_ms;  /* when the key vanished */
	HaHealth health;  /* our last probe */
	bool has_health;
	HaPgTask *task; /* probe in flight */
	bool election;  /* the probe in flight counts for the election round */
} Slot;

struct HaAgent {
	struct event_base *base;
	HaConfig cfg;
	HaAgentCallbacks cb;
	void *arg;
	HaNode node;
	EtcdClient *etcd;
	EtcdWatch *watch;
	char prefix[KEY_MAX];
	char k_leader[KEY_MAX], k_status[KEY_MAX], k_history[KEY_MAX], k_config[KEY_MAX],
	    k_failover[KEY_MAX], k_sync[KEY_MAX], k_self[KEY_MAX];

	/* the keys */
	HaCluster keys; /* leader, status, history, flags; members unused (see slots) */
	Slot slots[HA_MAX_MEMBERS];
	char *history_raw, *config_raw;
	bool have_snapshot, read_inflight;
	bool watching; /* the watch is established (its "created" came, or it reconnected) */
	bool ready;    /* latched: lease + first read + watch + local probe were all there once */
	bool initialized; /* the initialize key exists: the cluster was bootstrapped */
	int64_t last_read_ms;
	char watch_state[160];

	/* the local node */
	HaHealth local_health;
	bool have_local;
	HaPgTask *local_task;
	int64_t last_local_probe_ms;
	int election_pending; /* election probes still out */
	int64_t last_peer_probe_ms;

	/* composed */
	HaCluster view;
	HaLocal local;
	HaDecision dec;
	bool have_dec;
	char note[HA_REASON_MAX];
	uint64_t view_digest;

	/* lease and keys we write */
	LeaseState lease_state;
	int64_t lease_id;  /* MEMBER and LEADER only, else 0 */
	int64_t revoke_id; /* REVOKING only, else 0 */
	int64_t stale_revoke_id; /* an earlier run's lease holding the key, revoked (or being) */
	bool grant_inflight, keepalive_inflight, renew_inflight, race_inflight, revoke_inflight,
	    publish_inflight, status_inflight, failover_clear_inflight;
	int64_t last_keepalive_ms, renew_sent_ms, race_sent_ms;
	int64_t lease_fresh_ms; /* send time of the last successful grant or keepalive */
	const char *race_kind;  /* "election", "takeover", "bootstrap" */
	bool in_snapshot;       /* apply_snapshot() reports the leader change itself */
	char *published;
	uint64_t status_lsn;
	int64_t status_ms;

	/* actions */
	HaActionRun *action;
	HaAction action_kind;
	bool action_halt; /* the action is a halt (ha_action_halt) */
	bool release_after_action;
	uint64_t promote_from_lsn;
	uint32_t promote_from_tl;
	bool writes_allowed;
	HaRole last_role;
	char last_leader[HA_NAME_MAX];

	/* logging of decisions */
	HaAction logged_action;
	char logged_target[HA_NAME_MAX];
	bool logged_any;
	int64_t last_decide_ms;

	struct event *heartbeat, *tick, *soon;
	/* the fence guard (ha/fence_guard.h): armed while this node holds the leader key */
	FenceGuard *guard;
	int64_t guard_retry_ms; /* no guard: when to try starting one again */
	HaWatchdog wd;          /* the kernel watchdog ([cluster] watchdog), open while leader */
	bool wd_warned;         /* automatic: "running without it" logged */
	bool wd_probe_ok;       /* required: the last trial activation worked */
	int64_t wd_probe_ms;    /* ... when it ran */
	/* the last leader seen, and when it was last seen writing its key or status (a watch
	 * event; a re-read counts only without a watch): the probe rule's lease estimate */
	char seen_leader[HA_NAME_MAX];
	int64_t seen_leader_renew_ms;
	bool started, stopping, freeing;
	void (*stop_done)(void *);
	void *stop_arg;
	struct event *stop_ev;
};

static void decide(HaAgent *a);
static void decide_soon(HaAgent *a);

static void alog(HaAgent *a, AgentLog lvl, const char *fmt, ...) _PRINTF(3, 4);
static void alog(HaAgent *a, AgentLog lvl, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (a->cb.log)
		a->cb.log(a->arg, (int)lvl, msg);
	else if (lvl <= LOG_INFO)
		fprintf(stderr, "ha: %s\n", msg);
}

static void etcd_log_cb(EtcdLogLevel lvl, const char *msg, void *arg)
{
	HaAgent *a = arg;

	alog(a,
	     lvl == ETCD_LOG_WARNING ? LOG_WARNING
	     : lvl == ETCD_LOG_INFO  ? LOG_INFO
				     : LOG_DEBUG,
	     "etcd: %s", msg);
}

/* A failed etcd request: etcd's unreachability is logged by the client, once per change. */
static AgentLog etcd_fail_level(const EtcdResult *res)
{
	return res->unreachable ? LOG_DEBUG : LOG_WARNING;
}

static bool is_agent(const HaAgent *a)
{
	return a->cfg.ha_mode == HA_MODE_AGENT;
}

static const char *me(const HaAgent *a)
{
	return a->cfg.member ? a->cfg.member : "";
}

static void set_writes(HaAgent *a, bool allowed)
{
	if (a->writes_allowed == allowed)
		return;
	a->writes_allowed = allowed;
	alog(a, LOG_INFO, "writes through this pooler to the local node %s",
	     allowed ? "allowed" : "stopped");
	if (a->cb.local_writes)
		a->cb.local_writes(a->arg, allowed);
}

/*
 * The key store
 */

static Slot *slot_find(HaAgent *a, const char *name, bool create)
{
	Slot *free_slot = NULL;

	for (int i = 0; i < HA_MAX_MEMBERS; i++) {
		Slot *s = &a->slots[i];

		if (s->used && strcmp(s->pub.name, name) == 0)
			return s;
		if (!s->used && !free_slot)
			free_slot = s;
	}
	if (!create || !free_slot || !*name || strlen(name) >= HA_NAME_MAX)
		return NULL;
	memset(free_slot, 0, sizeof(*free_slot));
	free_slot->a = a;
	free_slot->used = true;
	snprintf(free_slot->pub.name, sizeof(free_slot->pub.name), "%s", name);
	free_slot->pub.tags.failover_priority = HA_FAILOVER_PRIORITY_DEFAULT;
	return free_slot;
}

static void slot_drop(Slot *s)
{
	if (s->task)
		ha_pg_cancel(s->task);
	if (s->election && s->a->election_pending > 0)
		s->a->election_pending--;
	memset(s, 0, sizeof(*s));
}

static void leader_changed(HaAgent *a, const char *old)
{
	if (a->in_snapshot || strcmp(old, a->keys.leader) == 0)
		return;
	alog(a, LOG_INFO, "leader changed: %s -> %s", old[0] ? old : "none",
	     a->keys.leader[0] ? a->keys.leader : "none");
	/* every election starts with fresh probes */
	a->local.probes_done_ms = 0;
}

/*
 * The fence guard. It is started (or an old one taken over) when the agent starts, fed with
 * "stop PostgreSQL at last keepalive send + L - M" on every successful renewal while this
 * node holds the key, and disarmed once a demote, fence or release has left PostgreSQL not a
 * primary. A graceful stop leaves it as it is: armed, it fires unless an agent takes it over.
 */
#define GUARD_RETRY_MS 10000

static bool guard_open(HaAgent *a)
{
	FenceGuardState st;
	bool took = false;
	char err[256];

	if (a->guard)
		return true;
	a->guard = fence_guard_open(a->cfg.pg_data, &took, &st, err, sizeof(err));
	if (!a->guard) {
		a->guard_retry_ms = ha_now_ms() + GUARD_RETRY_MS;
		alog(a, LOG_ERROR, "no fence guard: %s", err);
		return false;
	}
	if (took && st.armed)
		alog(a, LOG_INFO,
		     "took over the armed fence guard (PID %d): PostgreSQL is stopped in %" PRId64
		     " ms unless this agent renews the lease",
		     (int)st.pid, st.deadline_ms - ha_now_ms());
	else
		alog(a, LOG_INFO, "%s the fence guard (PID %d)%s%s", took ? "took over" : "started",
		     (int)st.pid, st.last[0] ? "; its last event: " : "", st.last);
	return true;
}

/* Holding the key: the watchdog is activated (once) and kept alive with the guard. */
static void watchdog_feed(HaAgent *a)
{
	HaWatchdog *w = &a->wd;

	if (w->mode == HA_WATCHDOG_OFF)
		return;
	if (ha_watchdog_is_active(w)) {
		if (!ha_watchdog_keepalive(w))
			alog(a, LOG_WARNING, "%s", w->error);
		return;
	}
	if (ha_watchdog_activate(w)) {
		alog(a, LOG_INFO, "watchdog \"%s\" active, timeout %d s", w->device,
		     w->actual_timeout_s);
		a->wd_warned = false;
		return;
	}
	if (w->mode == HA_WATCHDOG_REQUIRED) {
		alog(a, LOG_ERROR, "watchdog = required, but %s: giving the leader key up",
		     w->error);
		a->local.lease.release_requested = true;
	} else if (!a->wd_warned) {
		alog(a, LOG_WARNING, "watchdog = automatic, but %s: running without it", w->error);
		a->wd_warned = true;
	}
}

/* watchdog = required: may this member become leader? A trial activation, cached for R. */
static bool watchdog_usable(HaAgent *a, char *why, size_t len)
{
	int64_t now = ha_now_ms();

	if (a->wd.mode != HA_WATCHDOG_REQUIRED || ha_watchdog_is_active(&a->wd))
		return true;
	if (!a->wd_probe_ms || now - a->wd_probe_ms >= a->cfg.timings.renew_ms) {
		a->wd_probe_ms = now;
		a->wd_probe_ok = ha_watchdog_activate(&a->wd);
		ha_watchdog_disable(&a->wd);
	}
	if (!a->wd_probe_ok)
		snprintf(why, len, "watchdog = required, but %.400s", a->wd.error);
	return a->wd_probe_ok;
}

static void guard_feed(HaAgent *a, int64_t sent_ms)
{
	int64_t deadline = sent_ms + ha_timings_guard_delay(&a->cfg.timings);

	watchdog_feed(a);

	if (!a->guard && (ha_now_ms() < a->guard_retry_ms || !guard_open(a)))
		return;
	if (fence_guard_arm(a->guard, deadline))
		return;
	/* gone (killed?): start another and arm it */
	fence_guard_close(a->guard);
	a->guard = NULL;
	if (guard_open(a) && fence_guard_arm(a->guard, deadline))
		return;
	alog(a, LOG_ERROR, "could not arm the fence guard");
}

static void guard_disarm(HaAgent *a, const char *why)
{
	if (ha_watchdog_is_active(&a->wd)) {
		ha_watchdog_disable(&a->wd);
		alog(a, LOG_INFO, "watchdog disabled (magic close): %s", why);
	}
	if (!a->guard || !fence_guard_is_armed(a->guard))
		return;
	if (fence_guard_disarm(a->guard))
		alog(a, LOG_INFO, "fence guard disarmed: %s", why);
	else
		alog(a, LOG_WARNING, "could not disarm the fence guard");
}

/* Heartbeat: the guard's events, and a replica's guard disarmed (left armed by a dead agent). */
static void guard_heartbeat(HaAgent *a, int64_t now)
{
	char msg[FENCE_GUARD_MSG_MAX];

	if (!a->guard) {
		if (now >= a->guard_retry_ms)
			guard_open(a);
		return;
	}
	if (!fence_guard_poll(a->guard, msg, sizeof(msg))) {
		fence_guard_close(a->guard);
		a->guard = NULL;
		alog(a, LOG_WARNING, "the fence guard went away: starting another");
		if (guard_open(a) && a->local.lease.held)
			guard_feed(a, a->local.lease.last_ok_sent_ms);
		return;
	}
	if (msg[0])
		alog(a, LOG_ERROR, "the fence guard stopped PostgreSQL: %s", msg);
	if (fence_guard_is_armed(a->guard) && !a->local.lease.held && !a->action &&
	    a->have_local && a->local.self.state == HA_PG_RUNNING && a->local.self.in_recovery)
		guard_disarm(a, "PostgreSQL is in recovery and this node does not hold the key");
}

/* The probe rule's facts (HaLocal.probe_timed_out, last_leader, last_leader_safe_ms). */
static void guard_probe_facts(HaAgent *a)
{
	HaLocal *l = &a->local;
	int64_t fresh = 3 * a->cfg.timings.renew_ms + a->cfg.timings.probe_ms, now = ha_now_ms();

	if (a->keys.leader[0]) {
		/* a leader first seen here renewed its lease at the latest now */
		if (strcmp(a->seen_leader, a->keys.leader) != 0 || !a->seen_leader_renew_ms)
			a->seen_leader_renew_ms = now;
		snprintf(a->seen_leader, sizeof(a->seen_leader), "%s", a->keys.leader);
	}
	snprintf(l->last_leader, sizeof(l->last_leader), "%s", a->seen_leader);
	l->last_leader_safe_ms =
	    a->seen_leader_renew_ms ? a->seen_leader_renew_ms + a->cfg.timings.lease_ttl_ms : 0;
	l->probe_timed_out = 0;
	for (int i = 0; i < a->view.n_members && i < 32; i++) {
		Slot *s = slot_find(a, a->view.members[i].name, false);

		if (s && s->has_health && s->health.error == HA_PGERR_TIMEOUT &&
		    now - s->health.at_ms <= fresh)
			l->probe_timed_out |= UINT32_C(1) << i;
	}
}

static void peer_probe_cb(void *arg, const HaHealth *h);

/* Probe one member now, unless an election probe of it is already running. */
static void probe_member_now(HaAgent *a, Slot *s)
{
	if (!a->cfg.pg_conn || !s->pub.host[0] || (is_agent(a) && strcmp(s->pub.name, me(a)) == 0))
		return;
	if (s->task) {
		if (s->election)
			return;
		ha_pg_cancel(s->task);
		s->task = NULL;
	}
	s->task = ha_health_probe(a->base, a->cfg.pg_conn, s->pub.host, s->pub.port, false,
				  (int)(a->cfg.timings.probe_ms > 1000 ? a->cfg.timings.probe_ms : 1000),
				  peer_probe_cb, s);
}

static void apply_put(HaAgent *a, const EtcdKeyValue *kv)
{
	const char *k = kv->key + strlen(a->prefix);
	const char *v = kv->value ? kv->value : "";
	char old[HA_NAME_MAX], err[256];
	bool role_changed;

	if (strncmp(kv->key, a->prefix, strlen(a->prefix)) != 0)
		return;
	if (strcmp(k, "leader") == 0) {
		memcpy(old, a->keys.leader, sizeof(old));
		snprintf(a->keys.leader, sizeof(a->keys.leader), "%.*s", (int)strcspn(v, " \t\r\n"),
			 v);
		a->keys.leader_lease = kv->lease;
		a->keys.leader_mod_revision = kv->mod_revision;
		a->keys.leader_expiry_ms = ha_now_ms() + a->cfg.timings.lease_ttl_ms;
		if (!a->in_snapshot || !a->watching)
			a->seen_leader_renew_ms = ha_now_ms(); /* a write, not a re-read */
		leader_changed(a, old);
	} else if (strcmp(k, "initialize") == 0) {
		a->initialized = true;
	} else if (strcmp(k, "status") == 0) {
		a->keys.has_status = ha_status_json_parse(v, kv->value_len, &a->keys.status_optime,
							  &a->keys.status_timeline);
		/* the leader writes status at each renewal: its lease was just refreshed */
		if (a->keys.leader[0])
			a->keys.leader_expiry_ms = ha_now_ms() + a->cfg.timings.lease_ttl_ms;
		if (a->keys.leader[0] && (!a->in_snapshot || !a->watching))
			a->seen_leader_renew_ms = ha_now_ms();
	} else if (strcmp(k, "history") == 0) {
		free(a->history_raw);
		a->history_raw = strdup(v);
		if (!ha_history_json_parse(v, kv->value_len, &a->keys))
			alog(a, LOG_WARNING, "could not parse the history key");
	} else if (strcmp(k, "config") == 0) {
		bool pause = false, sync = false, was = a->keys.maintenance;

		free(a->config_raw);
		a->config_raw = strdup(v);
		if (!ha_config_json_parse(v, kv->value_len, &pause, &sync))
			alog(a, LOG_WARNING, "could not parse the config key");
		a->keys.maintenance = pause;
		a->keys.sync_mode = sync;
		if (was != pause)
			alog(a, LOG_INFO, "maintenance mode %s", pause ? "on" : "off");
	} else if (strcmp(k, "failover") == 0) {
		bool was = a->keys.failover.present;

		if (!ha_failover_json_parse(v, kv->value_len, &a->keys.failover))
			alog(a, LOG_WARNING, "ignoring a failover key without a member");
		else if (!was)
			a->keys.failover.requested_ms = ha_now_ms();
	} else if (strcmp(k, "sync") == 0) {
		if (!ha_sync_json_parse(v, kv->value_len, a->keys.sync_standby,
					sizeof(a->keys.sync_standby)))
			a->keys.sync_standby[0] = '\0';
	} else if (strncmp(k, "members/", 8) == 0) {
		Slot *s = slot_find(a, k + 8, true);
		HaMember m;

		if (!s)
			return;
		memset(&m, 0, sizeof(m));
		memcpy(m.name, s->pub.name, sizeof(m.name));
		if (!ha_member_json_parse(v, kv->value_len, &m, err, sizeof(err))) {
			alog(a, LOG_WARNING, "member %s: %s", s->pub.name, err);
			return;
		}
		if (!s->key_present)
			alog(a, LOG_INFO, "member %s joined (%s:%d, %s)", m.name, m.host, m.port,
			     ha_role_name(m.role));
		role_changed = s->key_present && s->pub.role != m.role;
		s->pub = m;
		s->key_present = true;
		s->gone_ms = 0;
		/* a member that says it was promoted (or demoted) is probed at once: routing waits
		 * for a probe that sees it out of recovery, and the next periodic one may be R away */
		if (role_changed)
			probe_member_now(a, s);
	}
}

static void apply_delete(HaAgent *a, const char *key)
{
	const char *k = key + strlen(a->prefix);
	char old[HA_NAME_MAX];

	if (strncmp(key, a->prefix, strlen(a->prefix)) != 0)
		return;
	if (strcmp(k, "leader") == 0) {
		memcpy(old, a->keys.leader, sizeof(old));
		a->keys.leader[0] = '\0';
		a->keys.leader_lease = 0;
		a->keys.leader_mod_revision = 0;
		a->keys.leader_expiry_ms = 0;
		leader_changed(a, old);
	} else if (strcmp(k, "failover") == 0) {
		memset(&a->keys.failover, 0, sizeof(a->keys.failover));
	} else if (strcmp(k, "config") == 0) {
		a->keys.maintenance = false;
		a->keys.sync_mode = false;
	} else if (strcmp(k, "initialize") == 0) {
		a->initialized = true;
	} else if (strcmp(k, "status") == 0) {
		a->keys.has_status = false;
	} else if (strcmp(k, "sync") == 0) {
		a->keys.sync_standby[0] = '\0';
	} else if (strncmp(k, "members/", 8) == 0) {
		Slot *s = slot_find(a, k + 8, false);

		if (s && s->key_present) {
			s->key_present = false;
			s->gone_ms = ha_now_ms();
			alog(a, LOG_INFO, "member %s left (its key is gone)", s->pub.name);
		}
	}
}

/* A full read of the prefix replaces the store (rule 3's safety net). */
static void apply_snapshot(HaAgent *a, const EtcdResult *res)
{
	char old[HA_NAME_MAX];
	bool seen[HA_MAX_MEMBERS] = {false};
	bool pause = a->keys.maintenance;

	memcpy(old, a->keys.leader, sizeof(old));
	a->in_snapshot = true;
	a->keys.leader[0] = '\0';
	a->keys.has_status = false;
	a->initialized = false;
	a->keys.maintenance = false;
	a->keys.sync_mode = false;
	a->keys.sync_standby[0] = '\0';
	memset(&a->keys.failover, 0, sizeof(a->keys.failover));
	for (size_t i = 0; i < res->n_kvs; i++) {
		const EtcdKeyValue *kv = &res->kvs[i];
		const char *k = kv->key + strlen(a->prefix);

		if (strncmp(kv->key, a->prefix, strlen(a->prefix)) == 0 &&
		    strncmp(k, "members/", 8) == 0) {
			Slot *s = slot_find(a, k + 8, true);

			if (s)
				seen[s - a->slots] = true;
		}
		apply_put(a, kv);
	}
	a->in_snapshot = false;
	leader_changed(a, old);
	if (pause != a->keys.maintenance)
		alog(a, LOG_INFO, "maintenance mode %s", a->keys.maintenance ? "on" : "off");
	for (int i = 0; i < HA_MAX_MEMBERS; i++) {
		Slot *s = &a->slots[i];

		if (s->used && s->key_present && !seen[i]) {
			s->key_present = false;
			s->gone_ms = ha_now_ms();
			alog(a, LOG_INFO, "member %s left (its key is gone)", s->pub.name);
		}
	}
	a->keys.revision = res->revision;
	a->have_snapshot = true;
}

/*
 * The view
 */

/* The local member as our own checks see it. */
static void build_self(HaAgent *a, HaMember *m)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", me(a));
	snprintf(m->host, sizeof(m->host), "%s", a->cfg.adv_host);
	m->port = a->cfg.adv_port;
	snprintf(m->api_url, sizeof(m->api_url), "%s", a->cfg.api_url ? a->cfg.api_url : "");
	m->tags.nofailover = a->cfg.nofailover;
	m->tags.failover_priority = a->cfg.failover_priority;
	m->state = HA_PG_UNKNOWN;
	if (!a->have_local)
		return;
	ha_health_apply(&a->local_health, m, true);
	if (m->state == HA_PG_STOPPED && a->cfg.pg_data && ha_pg_pidfile_exists(a->cfg.pg_data))
		m->state = HA_PG_CRASHED;
	if (!a->local_health.error)
		m->last_seen_ms = a->local_health.at_ms;
	if (a->action && (a->action_kind == HA_ACT_REWIND))
		m->state = HA_PG_REWINDING;
}

static uint64_t digest_add(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

static void compose_view(HaAgent *a)
{
	HaCluster *v = &a->view;
	int64_t now = ha_now_ms(), fresh = 3 * a->cfg.timings.renew_ms + a->cfg.timings.probe_ms;
	uint64_t h = 1469598103934665603ULL;

	*v = a->keys;
	v->n_members = 0;
	snprintf(v->name, sizeof(v->name), "%s", a->cfg.name ? a->cfg.name : "");
	v->read_ms = a->last_read_ms;
	for (int i = 0; i < HA_MAX_MEMBERS; i++) {
		Slot *s = &a->slots[i];
		HaMember *m;

		if (!s->used)
			continue;
		/* forget a member gone for long (decommissioned) */
		if (!s->key_present && s->gone_ms &&
		    now - s->gone_ms > 10 * a->cfg.timings.lease_ttl_ms &&
		    !(s->has_health && !s->health.error)) {
			slot_drop(s);
			continue;
		}
		if (is_agent(a) && strcmp(s->pub.name, me(a)) == 0)
			continue;
		m = ha_cluster_add_member(v, s->pub.name);
		if (!m)
			break;
		*m = s->pub;
		m->healthy = s->key_present && s->pub.state == HA_PG_RUNNING;
		m->down_cause = !s->key_present ? HA_DOWN_NO_KEY
				: m->healthy    ? HA_DOWN_NONE
						: HA_DOWN_PG_DOWN;
		if (s->has_health && now - s->health.at_ms <= fresh) {
			ha_health_apply(&s->health, m, false);
			if (!m->healthy && !s->key_present)
				m->down_cause = HA_DOWN_NO_KEY;
		}
	}
	if (is_agent(a)) {
		HaMember *m = ha_cluster_add_member(v, me(a));

		if (m)
			*m = a->local.self;
	}
	h = digest_add(h, v->leader, strlen(v->leader));
	for (int i = 0; i < v->n_members; i++) {
		const HaMember *m = &v->members[i];
		uint64_t lsn = ha_member_lsn(m);

		h = digest_add(h, m->name, strlen(m->name));
		h = digest_add(h, m->host, strlen(m->host));
		h = digest_add(h, &m->port, sizeof(m->port));
		h = digest_add(h, &m->healthy, sizeof(m->healthy));
		h = digest_add(h, &m->in_recovery, sizeof(m->in_recovery));
		h = digest_add(h, &m->state, sizeof(m->state));
		h = digest_add(h, &m->tags, sizeof(m->tags));
		h = digest_add(h, &lsn, sizeof(lsn));
	}
	h = digest_add(h, &v->status_optime, sizeof(v->status_optime));
	if (h != a->view_digest) {
		a->view_digest = h;
		if (a->cb.view_changed)
			a->cb.view_changed(a->arg, v);
	}
}

static void update_local(HaAgent *a)
{
	HaLocal *l = &a->local;
	int64_t now = ha_now_ms();

	l->mode = (HaMode)a->cfg.ha_mode;
	build_self(a, &l->self);
	if (l->self.state == HA_PG_RUNNING)
		l->pg_down_since_ms = 0;
	else if (a->have_local && !l->pg_down_since_ms && l->self.state != HA_PG_UNKNOWN)
		l->pg_down_since_ms = now;
	if (a->have_local && a->local_health.error == HA_PGERR_NONE &&
	    a->local_health.has_conninfo) {
		snprintf(l->upstream_host, sizeof(l->upstream_host), "%s",
			 a->local_health.upstream_host);
		l->upstream_port = a->local_health.upstream_port;
	}
	l->lease.id = a->lease_id;
}

/*
 * etcd requests
 */

static void publish_member(HaAgent *a);

static const char *lease_state_name(LeaseState s)
{
	switch (s) {
	case LEASE_NONE:
		return "none";
	case LEASE_GRANTING:
		return "granting";
	case LEASE_MEMBER:
		return "member";
	case LEASE_LEADER:
		return "leader";
	case LEASE_REVOKING:
		return "revoking";
	}
	return "unknown";
}

/*
 * The one transition of the lease state. local.lease.held (what the rules read) is true
 * exactly in LEADER; leaving LEADER clears what belonged to that leadership.
 */
static void lease_set(HaAgent *a, LeaseState to, int64_t id, const char *why)
{
	LeaseState from = a->lease_state;
	bool quiet;

	if (from == to)
		return;
	a->lease_state = to;
	a->local.lease.held = to == LEASE_LEADER;
	if (from == LEASE_LEADER) {
		a->local.lease.lost = false;
		a->local.lease.release_requested = false;
	}
	/* asking for a lease, and failing to get one while etcd is away, repeat every heartbeat */
	quiet = to == LEASE_GRANTING || (from == LEASE_GRANTING && to == LEASE_NONE);
	alog(a, quiet ? LOG_DEBUG : LOG_INFO, "lease %" PRId64 ": %s -> %s (%s)", id,
	     lease_state_name(from), lease_state_name(to), why);
}

static void grant_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->grant_inflight = false;
	if (!res->ok) {
		alog(a, etcd_fail_level(res), "could not grant a lease: %s", res->error);
		lease_set(a, LEASE_NONE, 0, "the grant failed");
		return;
	}
	lease_set(a, LEASE_MEMBER, res->lease_id, "granted");
	a->lease_id = res->lease_id;
	a->lease_fresh_ms = a->last_keepalive_ms;
	free(a->published);
	a->published = NULL;
	alog(a, LOG_INFO, "lease %" PRId64 " granted (ttl %" PRId64 " s)", res->lease_id, res->ttl);
	publish_member(a);
	decide_soon(a);
}

static void grant_lease(HaAgent *a)
{
	if (a->grant_inflight || a->stopping || a->lease_state != LEASE_NONE)
		return;
	a->last_keepalive_ms = ha_now_ms();
	a->grant_inflight =
	    etcd_lease_grant(a->etcd, ha_timings_lease_ttl_s(&a->cfg.timings), grant_cb, a);
	if (a->grant_inflight)
		lease_set(a, LEASE_GRANTING, 0, "asking etcd for a lease");
}

/*
 * etcd says the lease does not exist. A member lease is replaced at once; the leader's stays
 * LEADER, marked lost, so that the rules fence (which gives it up).
 */
static void lease_dead(HaAgent *a)
{
	alog(a, LOG_WARNING, "lease %" PRId64 " is gone", a->lease_id);
	if (a->lease_state == LEASE_LEADER) {
		a->local.lease.lost = true;
		return;
	}
	lease_set(a, LEASE_NONE, a->lease_id, "etcd does not know it");
	a->lease_id = 0;
	grant_lease(a);
}

static void lease_revoke_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;
	int64_t id = a->revoke_id;

	if (a->freeing)
		return;
	a->revoke_inflight = false;
	if (a->lease_state != LEASE_REVOKING || a->stopping)
		return;
	if (res->unreachable || (!res->ok && res->grpc_code == ETCD_GRPC_UNAVAILABLE)) {
		/* the heartbeat sends it again; the lease is not kept alive meanwhile */
		alog(a, LOG_DEBUG, "could not revoke lease %" PRId64 " yet: %s", id, res->error);
		return;
	}
	if (!res->ok && res->grpc_code != ETCD_GRPC_NOT_FOUND)
		alog(a, LOG_WARNING,
		     "could not revoke lease %" PRId64 ": %s; it expires unless kept alive", id,
		     res->error);
	a->revoke_id = 0;
	lease_set(a, LEASE_NONE, id,
		  res->ok ? "revoked, with the keys on it" : "etcd no longer keeps it");
	grant_lease(a);
	decide_soon(a);
}

static void stale_revoke_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	if (res->ok)
		alog(a, LOG_INFO, "lease %" PRId64 " of an earlier run revoked, with the leader key",
		     a->stale_revoke_id);
	else if (res->unreachable || res->grpc_code == ETCD_GRPC_UNAVAILABLE)
		a->stale_revoke_id = 0; /* the next decision asks again */
	else if (res->grpc_code != ETCD_GRPC_NOT_FOUND)
		alog(a, LOG_WARNING, "could not revoke lease %" PRId64 " of an earlier run: %s",
		     a->stale_revoke_id, res->error);
	decide_soon(a);
}

static void lease_give_up(HaAgent *a, const char *why);

/*
 * The leader key names me on a lease this agent does not hold, and the rules wait for it to
 * expire (PostgreSQL is not a running primary). On the lease this agent keeps alive (a race
 * txn whose reply was lost) it would never expire: the lease is given up. On a lease of an
 * earlier run of this member it is revoked once (best effort): the key goes now rather than
 * within L, and an etcd restart, which gives every lease a fresh TTL, cannot prolong the wait.
 */
static void revoke_stale_key(HaAgent *a)
{
	int64_t id = a->keys.leader_lease;

	if (a->lease_state != LEASE_MEMBER || a->race_inflight || !id ||
	    strcmp(a->keys.leader, me(a)) != 0)
		return;
	if (id == a->lease_id) {
		lease_give_up(a, "the leader key is on this lease, which does not hold it");
		return;
	}
	if (id == a->stale_revoke_id)
		return;
	a->stale_revoke_id = id;
	alog(a, LOG_INFO, "revoking lease %" PRId64 " of an earlier run, which holds the leader key",
	     id);
	if (!etcd_lease_revoke(a->etcd, id, stale_revoke_cb, a))
		a->stale_revoke_id = 0;
}

static void send_revoke(HaAgent *a)
{
	if (a->lease_state != LEASE_REVOKING || a->revoke_inflight)
		return;
	a->revoke_inflight = etcd_lease_revoke(a->etcd, a->revoke_id, lease_revoke_cb, a);
}

/*
 * Give the lease up (fence, release after a demote or halt, a leader key of mine on a lease I
 * do not hold): from now on it is never kept alive, and it is revoked, which deletes the
 * leader key if it is still on it (and my member key, which the next lease carries again).
 * A revoke that cannot reach etcd is repeated at every heartbeat; meanwhile the lease can
 * only expire.
 */
static void lease_give_up(HaAgent *a, const char *why)
{
	if (a->lease_state != LEASE_MEMBER && a->lease_state != LEASE_LEADER)
		return;
	a->revoke_id = a->lease_id;
	a->lease_id = 0;
	lease_set(a, LEASE_REVOKING, a->revoke_id, why);
	send_revoke(a);
}

static void keepalive_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->keepalive_inflight = false;
	if (a->lease_state != LEASE_MEMBER)
		return; /* the lease it was for has been given up or replaced */
	if (res->ok && res->ttl > 0) {
		a->lease_fresh_ms = a->last_keepalive_ms;
		return;
	}
	if (res->grpc_code == ETCD_GRPC_NOT_FOUND || res->ok)
		lease_dead(a);
	else
		alog(a, etcd_fail_level(res), "lease keepalive failed: %s", res->error);
}

static void publish_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->publish_inflight = false;
	if (!res->ok) {
		alog(a, etcd_fail_level(res), "could not publish member %s: %s", me(a), res->error);
		free(a->published);
		a->published = NULL;
		if (res->grpc_code == ETCD_GRPC_NOT_FOUND)
			lease_dead(a);
	}
}

static void publish_member(HaAgent *a)
{
	char *json;

	if (!is_agent(a) || !a->lease_id || a->publish_inflight || a->stopping || !a->have_local)
		return;
	json = ha_member_json_build(&a->local.self, a->cfg.api_url, "pgpilot " PGPILOT_VERSION);
	if (!json)
		return;
	if (a->published && strcmp(a->published, json) == 0) {
		free(json);
		return;
	}
	if (etcd_put(a->etcd, a->k_self, json, a->lease_id, publish_cb, a)) {
		a->publish_inflight = true;
		free(a->published);
		a->published = json;
	} else {
		free(json);
	}
}

/* Renewal (rule 1): keepalive, then the owner-guarded txn that also writes status. */
static void renew_txn_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;
	HaLease *l = &a->local.lease;

	if (a->freeing)
		return;
	a->renew_inflight = false;
	if (!res->ok) {
		alog(a, etcd_fail_level(res), "leader renewal txn failed: %s", res->error);
	} else if (!res->succeeded) {
		alog(a, LOG_WARNING, "leader renewal: the leader key is no longer ours");
		l->lost = true;
	} else if (l->held) {
		l->last_ok_sent_ms = a->renew_sent_ms;
		l->last_ok_ms = ha_now_ms();
		/* fed after the txn, not the keepalive alone: the others have seen this renewal's
		 * status write (the probe rule's estimate) before they can see the key go */
		guard_feed(a, l->last_ok_sent_ms);
		a->status_ms = l->last_ok_ms;
	}
	decide_soon(a);
}

static EtcdTxn *owner_txn(HaAgent *a)
{
	EtcdTxn *t = etcd_txn_new();

	if (!t)
		return NULL;
	etcd_txn_compare_value(t, a->k_leader, ETCD_CMP_EQUAL, me(a));
	etcd_txn_compare_int(t, a->k_leader, ETCD_CMP_LEASE, ETCD_CMP_EQUAL, a->lease_id);
	return t;
}

static bool send_status_txn(HaAgent *a, EtcdCallback cb)
{
	uint64_t lsn = ha_member_lsn(&a->local.self);
	char *status = ha_status_json_build(lsn, a->local.self.timeline);
	EtcdTxn *t = owner_txn(a);
	bool ok = false;

	if (status && t) {
		etcd_txn_put(t, true, a->k_status, status, 0);
		etcd_txn_range(t, false, a->k_leader, false);
		ok = etcd_txn(a->etcd, t, cb, a);
		if (ok)
			a->status_lsn = lsn;
	}
	etcd_txn_free(t);
	free(status);
	return ok;
}

static void renew_ka_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	if (a->lease_state != LEASE_LEADER) {
		a->renew_inflight = false; /* given up while the keepalive was out */
		return;
	}
	if (!res->ok || res->ttl <= 0) {
		a->renew_inflight = false;
		if (res->grpc_code == ETCD_GRPC_NOT_FOUND || (res->ok && res->ttl <= 0))
			lease_dead(a);
		else
			alog(a, etcd_fail_level(res), "leader keepalive failed: %s", res->error);
		decide_soon(a);
		return;
	}
	a->lease_fresh_ms = a->renew_sent_ms;
	a->last_keepalive_ms = ha_now_ms();
	if (!send_status_txn(a, renew_txn_cb))
		a->renew_inflight = false;
}

static void renew(HaAgent *a)
{
	if (a->renew_inflight || !a->lease_id)
		return;
	a->renew_sent_ms = ha_now_ms();
	a->local.lease.last_attempt_ms = a->renew_sent_ms;
	a->renew_inflight = etcd_lease_keepalive(a->etcd, a->lease_id, renew_ka_cb, a);
}

static void status_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->status_inflight = false;
	if (res->ok && res->succeeded)
		a->status_ms = ha_now_ms();
	else if (res->ok)
		a->local.lease.lost = true;
}

/*
 * The key is on my lease (race, takeover or bootstrap txn, or its watch event came first).
 * The txn does not refresh the lease: etcd keeps it from the last keepalive (or grant), so
 * that send time, not the txn's, starts the fence deadline.
 */
static void became_holder(HaAgent *a, int64_t sent_ms)
{
	HaLease *l = &a->local.lease;
	const HaMember *self = &a->local.self;
	char old[HA_NAME_MAX];

	if (l->held || a->lease_state != LEASE_MEMBER)
		return;
	if (a->lease_fresh_ms && a->lease_fresh_ms < sent_ms)
		sent_ms = a->lease_fresh_ms;
	alog(a, LOG_INFO, "holding the leader key on lease %" PRId64 " (%s)", a->lease_id,
	     a->race_kind ? a->race_kind : "election");
	lease_set(a, LEASE_LEADER, a->lease_id, a->race_kind ? a->race_kind : "election");
	l->lost = false;
	l->release_requested = false;
	l->last_ok_sent_ms = sent_ms;
	l->last_attempt_ms = sent_ms;
	l->last_ok_ms = ha_now_ms();
	guard_feed(a, sent_ms);
	memcpy(old, a->keys.leader, sizeof(old));
	snprintf(a->keys.leader, sizeof(a->keys.leader), "%s", me(a));
	a->keys.leader_lease = a->lease_id;
	leader_changed(a, old);
	/* bootstrap or takeover: the local node already is the primary */
	if (self->state == HA_PG_RUNNING && !self->in_recovery) {
		set_writes(a, true);
		compose_view(a);
		if (a->cb.promoted)
			a->cb.promoted(a->arg, &a->view);
	}
}

static void race_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->race_inflight = false;
	if (!res->ok) {
		alog(a, etcd_fail_level(res), "%s txn failed: %s", a->race_kind, res->error);
	} else if (res->succeeded) {
		became_holder(a, a->race_sent_ms);
	} else {
		alog(a, LOG_INFO, "%s lost: the leader key is held by another member",
		     a->race_kind);
		if (res->n_responses == 1 && res->responses[0].n_kvs == 1)
			apply_put(a, &res->responses[0].kvs[0]);
	}
	decide_soon(a);
}

static void race(HaAgent *a, bool takeover)
{
	EtcdTxn *t;

	if (a->race_inflight || !a->lease_id || a->action)
		return;
	t = etcd_txn_new();
	if (!t)
		return;
	if (takeover)
		etcd_txn_compare_value(t, a->k_leader, ETCD_CMP_EQUAL, me(a));
	else
		etcd_txn_compare_int(t, a->k_leader, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0);
	etcd_txn_put(t, true, a->k_leader, me(a), a->lease_id);
	etcd_txn_range(t, false, a->k_leader, false);
	a->race_sent_ms = ha_now_ms();
	a->race_kind = takeover ? "takeover" : "election";
	a->race_inflight = etcd_txn(a->etcd, t, race_cb, a);
	etcd_txn_free(t);
}

/*
 * Bootstrap: a cluster nobody initialized (no initialize key, no leader, no status) whose only
 * primary is ours. The rules would demote it and then find nobody eligible (no status to check
 * the lag against), so, like Patroni's initialize race, the running primary takes the key:
 * initialize = its system identifier and leader = me, both only if absent.
 */
static bool bootstrap_possible(const HaAgent *a)
{
	const HaMember *self = &a->local.self;

	return is_agent(a) && !a->initialized && !a->keys.leader[0] && !a->keys.has_status &&
	       !a->keys.maintenance && !a->keys.failover.present && self->state == HA_PG_RUNNING &&
	       !self->in_recovery && a->lease_id && !a->action;
}

static void bootstrap(HaAgent *a)
{
	char key[KEY_MAX + 16];
	EtcdTxn *t;

	if (a->race_inflight)
		return;
	t = etcd_txn_new();
	if (!t)
		return;
	snprintf(key, sizeof(key), "%sinitialize", a->prefix);
	etcd_txn_compare_int(t, key, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0);
	etcd_txn_compare_int(t, a->k_leader, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0);
	etcd_txn_put(t, true, key, a->local_health.system_id, 0);
	etcd_txn_put(t, true, a->k_leader, me(a), a->lease_id);
	etcd_txn_range(t, false, a->k_leader, false);
	a->race_sent_ms = ha_now_ms();
	a->race_kind = "bootstrap";
	a->race_inflight = etcd_txn(a->etcd, t, race_cb, a);
	etcd_txn_free(t);
}

/*
 * Release the leader key: revoke the lease it is on (lease_give_up()). The revoke deletes the
 * key only while it is on my lease, as a guarded delete would, and works when the lease is
 * already dead; from the call on the key is not ours, whatever arrives first.
 */
static void release_key(HaAgent *a, const char *why)
{
	if (a->lease_state == LEASE_LEADER)
		lease_give_up(a, why);
}

static void simple_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->failover_clear_inflight = false;
	if (!res->ok)
		alog(a, etcd_fail_level(res), "etcd write failed: %s", res->error);
}

static void read_cb(EtcdClient *c, const EtcdResult *res, void *arg);

static void watch_cb(EtcdWatch *w, const EtcdWatchResponse *resp, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	if (resp->canceled) {
		snprintf(a->watch_state, sizeof(a->watch_state), "canceled: %s",
			 resp->cancel_reason ? resp->cancel_reason : "");
		return;
	}
	if (resp->created) {
		snprintf(a->watch_state, sizeof(a->watch_state), "watching");
		a->watching = true;
		decide_soon(a);
	}
	for (size_t i = 0; i < resp->n_events; i++) {
		const EtcdEvent *e = &resp->events[i];

		if (e->type == ETCD_EVENT_DELETE)
			apply_delete(a, e->kv.key);
		else
			apply_put(a, &e->kv);
	}
	if (resp->revision > a->keys.revision)
		a->keys.revision = resp->revision;
	if (resp->n_events)
		decide_soon(a);
}

static void watch_status_cb(EtcdWatch *w, EtcdWatchStatus st, const EtcdResult *snap,
			    const char *detail, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	switch (st) {
	case ETCD_WATCH_DISCONNECTED:
		snprintf(a->watch_state, sizeof(a->watch_state), "disconnected: %s",
			 detail ? detail : "");
		alog(a, LOG_WARNING, "etcd watch disconnected: %s", detail ? detail : "");
		a->watching = false;
		break;
	case ETCD_WATCH_RECONNECTED:
		snprintf(a->watch_state, sizeof(a->watch_state), "watching");
		a->watching = true;
		alog(a, LOG_INFO, "etcd watch reconnected");
		break;
	case ETCD_WATCH_COMPACTED:
		snprintf(a->watch_state, sizeof(a->watch_state), "watching (resynced)");
		a->watching = true;
		if (snap)
			apply_snapshot(a, snap);
		decide_soon(a);
		break;
	}
}

static void read_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	a->read_inflight = false;
	if (!res->ok) {
		alog(a, etcd_fail_level(res), "could not read %s: %s", a->prefix, res->error);
		return;
	}
	/* an older snapshot than what the watch already delivered is ignored */
	if (a->have_snapshot && res->revision < a->keys.revision)
		return;
	apply_snapshot(a, res);
	a->last_read_ms = ha_now_ms();
	if (!a->watch && !a->stopping) {
		a->watch = etcd_watch_start(a->etcd, a->prefix, true, res->revision + 1, watch_cb,
					    watch_status_cb, a);
		snprintf(a->watch_state, sizeof(a->watch_state), "%s",
			 a->watch ? "starting" : "could not start");
	}
	decide_soon(a);
}

static void read_all(HaAgent *a)
{
	if (a->read_inflight)
		return;
	a->read_inflight = etcd_range(a->etcd, a->prefix, true, read_cb, a);
}

/*
 * Probes
 */

static void local_probe_cb(void *arg, const HaHealth *h)
{
	HaAgent *a = arg;
	bool was_ok = a->have_local && a->local_health.error == HA_PGERR_NONE;

	a->local_task = NULL;
	if (h->error != HA_PGERR_NONE && (was_ok || !a->have_local))
		alog(a, LOG_WARNING, "local PostgreSQL %s: %s", ha_pg_error_name(h->error),
		     h->detail);
	else if (h->error == HA_PGERR_NONE && !was_ok)
		alog(a, LOG_INFO, "local PostgreSQL is up (%s, timeline %u)",
		     h->in_recovery ? "in recovery" : "primary", h->timeline);
	a->local_health = *h;
	a->have_local = true;
	decide_soon(a);
}

static void peer_probe_cb(void *arg, const HaHealth *h)
{
	Slot *s = arg;
	HaAgent *a = s->a;

	s->task = NULL;
	s->health = *h;
	s->has_health = true;
	if (s->election) {
		s->election = false;
		if (--a->election_pending == 0) {
			a->local.probes_done_ms = ha_now_ms();
			alog(a, LOG_INFO, "election probes finished");
		}
	}
	decide_soon(a);
}

static void probe_peers(HaAgent *a, bool election, int timeout_ms)
{
	if (!a->cfg.pg_conn)
		return;
	a->last_peer_probe_ms = ha_now_ms();
	for (int i = 0; i < HA_MAX_MEMBERS; i++) {
		Slot *s = &a->slots[i];

		if (!s->used || !s->pub.host[0] || (is_agent(a) && strcmp(s->pub.name, me(a)) == 0))
			continue;
		if (s->task) {
			if (!election || s->election)
				continue;
			ha_pg_cancel(s->task); /* an election needs a probe bounded by P */
			s->task = NULL;
		}
		s->task = ha_health_probe(a->base, a->cfg.pg_conn, s->pub.host, s->pub.port, false,
					  timeout_ms, peer_probe_cb, s);
		if (s->task && election) {
			s->election = true;
			a->election_pending++;
		}
	}
}

static void start_election_probes(HaAgent *a)
{
	if (a->election_pending)
		return;
	probe_peers(a, true, (int)a->cfg.timings.probe_ms);
	if (a->election_pending == 0) /* nobody to probe */
		a->local.probes_done_ms = ha_now_ms();
}

/*
 * Actions
 */

static bool leader_conninfo(HaAgent *a, const HaMember *leader, bool for_rewind, char *out,
			    size_t len)
{
	if (!leader || !leader->host[0])
		return false;
	return ha_primary_conninfo(for_rewind ? a->cfg.pg_conn : a->cfg.replication_conn,
				   leader->host, leader->port, for_rewind ? NULL : me(a), out, len);
}

static void write_history(HaAgent *a)
{
	char ts[64], reason[128];
	time_t now = time(NULL);
	struct tm tm;
	char *json;

	if (!a->promote_from_tl)
		return;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
	snprintf(reason, sizeof(reason), "promoted by pgpilot");
	json = ha_history_json_append(a->history_raw, a->promote_from_tl, a->promote_from_lsn,
				      reason, ts, me(a));
	if (json && etcd_put(a->etcd, a->k_history, json, 0, simple_cb, a)) {
		free(a->history_raw);
		a->history_raw = json;
		ha_cluster_add_history(&a->keys, a->promote_from_tl, a->promote_from_lsn);
		return;
	}
	free(json);
}

static void action_done(void *arg, bool ok, const char *detail)
{
	HaAgent *a = arg;
	HaAction kind = a->action_kind;
	bool halt = a->action_halt;

	a->action = NULL;
	a->action_kind = HA_ACT_NONE;
	a->action_halt = false;
	alog(a, ok ? LOG_INFO : LOG_ERROR, "%s", detail);
	if (ok && (kind == HA_ACT_DEMOTE || kind == HA_ACT_FENCE || kind == HA_ACT_RELEASE))
		guard_disarm(a, "PostgreSQL is no longer a primary");
	if (a->stopping)
		return;
	/* the next decision waits for fresh local facts: a probe from before the action lies */
	if (a->local_task)
		ha_pg_cancel(a->local_task);
	a->local_task = NULL;
	a->have_local = false;
	a->local_task =
	    ha_health_probe(a->base, a->cfg.pg_conn, NULL, 0, true,
			    (int)(a->cfg.timings.probe_ms > 1000 ? a->cfg.timings.probe_ms : 1000),
			    local_probe_cb, a);
	if (kind == HA_ACT_PROMOTE) {
		if (ok) {
			write_history(a);
			set_writes(a, true);
			if (!a->renew_inflight)
				renew(a); /* publishes status on the new timeline at once */
			if (a->cb.promoted)
				a->cb.promoted(a->arg, &a->view);
		} else {
			/* could not become a writable primary: hand the key to someone who can */
			a->local.lease.release_requested = true;
		}
	}
	if (a->release_after_action) {
		a->release_after_action = false;
		/* a failed halt may leave a server that comes up as a primary: keep the key, the
		 * next decision halts again */
		if (ok || !halt)
			release_key(a, "released after the local action");
	}
	decide_soon(a);
}

static void start_action(HaAgent *a, HaAction kind, HaActionRun *r)
{
	if (!r) {
		alog(a, LOG_ERROR, "could not start action %s: out of memory",
		     ha_action_name(kind));
		return;
	}
	a->action = r;
	a->action_kind = kind;
	a->action_halt = false;
	alog(a, LOG_INFO, "starting %s", ha_action_run_name(r));
}

/* FENCE, RELEASE with a running PostgreSQL, DEMOTE: stop writes first, then demote. */
static void demote_local(HaAgent *a, HaAction kind, const HaMember *leader)
{
	char ci[CONNINFO_MAX];
	bool has = leader && strcmp(leader->name, me(a)) != 0 &&
		   leader_conninfo(a, leader, false, ci, sizeof(ci));
	const HaTimings *t = &a->cfg.timings;

	set_writes(a, false);
	if (a->action) {
		if (a->action_kind == HA_ACT_DEMOTE || a->action_kind == HA_ACT_FENCE)
			return;
		ha_action_cancel(a->action);
		a->action = NULL;
	}
	start_action(a, kind,
		     ha_action_demote(&a->node, has ? ci : NULL, (int)t->fence_ms,
				      (int)(t->fence_ms + t->lease_ttl_ms), action_done, a));
}

/*
 * A leader giving up the key while its PostgreSQL is not a running primary (restart budget
 * spent, or fenced during a restart): a pg_ctl start in flight could still bring the server up
 * as a primary after another member was promoted. So the start is cancelled and every process
 * of the server is killed (ha_action_halt) before the key goes; <release> deletes the key once
 * the halt has succeeded.
 */
static void halt_local(HaAgent *a, HaAction kind, bool release)
{
	const HaTimings *t = &a->cfg.timings;
	int timeout = (int)(t->fence_ms > 1000 ? t->fence_ms : 1000);

	set_writes(a, false);
	if (a->action) {
		if (a->action_kind == HA_ACT_RELEASE || a->action_kind == HA_ACT_FENCE)
			return; /* a halt (or demote) that ends the leadership is already running */
		alog(a, LOG_WARNING, "abandoning %s: the leader key is being given up",
		     ha_action_run_name(a->action));
		ha_action_cancel(a->action);
		a->action = NULL;
	}
	a->release_after_action = release;
	start_action(a, kind, ha_action_halt(&a->node, timeout, action_done, a));
	if (a->action)
		a->action_halt = true;
	else
		a->release_after_action = false;
}

static void execute(HaAgent *a, const HaDecision *d)
{
	const HaTimings *t = &a->cfg.timings;
	const HaMember *self = &a->local.self;
	char ci[CONNINFO_MAX];

	switch (d->action) {
	case HA_ACT_NONE:
	case HA_ACT_FOLLOW:
	case HA_ACT_WAIT:
	case HA_ACT_WAIT_NOT_ELIGIBLE:
	case HA_ACT_WAIT_PRIMARY_ALIVE:
	case HA_ACT_WAIT_MAINTENANCE:
	case HA_ACT_WAIT_FAILOVER:
		return;
	case HA_ACT_CONTINUE:
		if (!a->action)
			set_writes(a, true);
		return;
	case HA_ACT_FENCE:
		alog(a, LOG_WARNING, "fencing: %s", d->reason);
		/* give the lease up (and the key with it when it is still ours): replicas need
		 * not wait, and a lease never kept alive again expires even after an etcd restart */
		release_key(a, "fenced");
		if (self->state == HA_PG_RUNNING && !self->in_recovery)
			demote_local(a, HA_ACT_FENCE, d->target_member);
		else if (a->action && a->action_kind == HA_ACT_RESTART)
			halt_local(a, HA_ACT_FENCE, false); /* it would come up as a primary */
		else
			set_writes(a, false);
		return;
	case HA_ACT_RELEASE:
		if (a->lease_state != LEASE_LEADER || a->release_after_action)
			return;
		if (self->state == HA_PG_RUNNING && !self->in_recovery) {
			a->release_after_action = true;
			demote_local(a, HA_ACT_RELEASE, d->target_member);
		} else if (self->state == HA_PG_RUNNING && !a->action) {
			/* a replica (failed promotion): nothing can come up as a primary */
			set_writes(a, false);
			release_key(a, "released: PostgreSQL is a replica");
		} else {
			/* down, starting or restarting: make sure it stays down, then release */
			halt_local(a, HA_ACT_RELEASE, true);
		}
		return;
	case HA_ACT_DEMOTE:
		demote_local(a, HA_ACT_DEMOTE, d->target_member);
		return;
	default:
		break;
	}
	if (a->action)
		return; /* one local action at a time */
	switch (d->action) {
	case HA_ACT_RESTART:
		start_action(
		    a, d->action,
		    ha_action_start(&a->node, false, NULL, (int)t->restart_ms, action_done, a));
		return;
	case HA_ACT_PROMOTE:
		a->promote_from_tl = self->timeline;
		a->promote_from_lsn = ha_member_lsn(self);
		start_action(a, d->action,
			     ha_action_promote(&a->node, (int)t->promote_ms, action_done, a));
		return;
	case HA_ACT_TAKEOVER:
		race(a, true);
		return;
	case HA_ACT_REPOINT:
		if (!leader_conninfo(a, d->target_member, false, ci, sizeof(ci))) {
			alog(a, LOG_ERROR, "cannot build primary_conninfo for %s", d->target);
			return;
		}
		start_action(
		    a, d->action,
		    ha_action_repoint(&a->node, ci, (int)t->renew_ms + 2000, action_done, a));
		return;
	case HA_ACT_START_REPLICA: {
		bool has = leader_conninfo(a, d->target_member, false, ci, sizeof(ci));

		start_action(a, d->action,
			     ha_action_start(&a->node, true, has ? ci : NULL,
					     (int)t->lease_ttl_ms * 2, action_done, a));
		return;
	}
	case HA_ACT_REWIND: {
		char src[CONNINFO_MAX], up[CONNINFO_MAX];

		if (!leader_conninfo(a, d->target_member, true, src, sizeof(src)) ||
		    !leader_conninfo(a, d->target_member, false, up, sizeof(up))) {
			alog(a, LOG_ERROR, "cannot rewind: leader %s has no address", d->target);
			return;
		}
		start_action(
		    a, d->action,
		    ha_action_rewind(&a->node, src, up, (int)t->lease_ttl_ms * 10, action_done, a));
		return;
	}
	case HA_ACT_PROBE:
		start_election_probes(a);
		return;
	case HA_ACT_RACE:
		if (d->delay_ms == 0)
			race(a, false);
		return;
	default:
		return;
	}
}

/* Log a decision once, when its action or target changes. */
static void log_decision(HaAgent *a, const HaDecision *d)
{
	HaRole role;

	if (!a->logged_any || d->action != a->logged_action ||
	    strcmp(d->target, a->logged_target) != 0) {
		a->logged_any = true;
		a->logged_action = d->action;
		memcpy(a->logged_target, d->target, sizeof(a->logged_target));
		alog(a,
		     d->action == HA_ACT_FENCE || d->action == HA_ACT_WAIT_NOT_ELIGIBLE
			 ? LOG_WARNING
			 : LOG_INFO,
		     "decision: %s: %s", ha_action_name(d->action), d->reason);
	}
	if (d->cluster_note[0] && strcmp(d->cluster_note, a->note) != 0)
		alog(a, LOG_WARNING, "%s", d->cluster_note);
	memcpy(a->note, d->cluster_note, sizeof(a->note));
	role = a->local.self.state != HA_PG_RUNNING ? HA_ROLE_UNKNOWN
	       : a->local.self.in_recovery          ? HA_ROLE_REPLICA
						    : HA_ROLE_PRIMARY;
	if (is_agent(a) && a->have_local && role != a->last_role) {
		alog(a, LOG_INFO, "role changed: %s -> %s", ha_role_name(a->last_role),
		     ha_role_name(role));
		a->last_role = role;
	}
}

bool ha_action_is_passive(HaAction action)
{
	switch (action) {
	case HA_ACT_NONE:
	case HA_ACT_FOLLOW:
	case HA_ACT_PROBE:
	case HA_ACT_WAIT:
	case HA_ACT_WAIT_NOT_ELIGIBLE:
	case HA_ACT_WAIT_PRIMARY_ALIVE:
	case HA_ACT_WAIT_MAINTENANCE:
	case HA_ACT_WAIT_FAILOVER:
		return true;
	default:
		return false;
	}
}

bool ha_agent_ready(const HaAgentReadiness *r, char *why, size_t len)
{
	const char *missing[4];
	int n = 0;
	size_t used = 0;

	if (!r->lease_id)
		missing[n++] = "the lease";
	if (!r->have_snapshot)
		missing[n++] = "a full read of the keys";
	else if (!r->watching)
		missing[n++] = "the etcd watch";
	if (!r->have_local)
		missing[n++] = "a probe of the local PostgreSQL";
	if (n == 0)
		return true;
	if (why && len) {
		why[0] = '\0';
		for (int i = 0; i < n && used < len; i++) {
			snprintf(why + used, len - used, "%s%s",
				 i == 0       ? ""
				 : i == n - 1 ? " and "
					      : ", ",
				 missing[i]);
			used = strlen(why);
		}
	}
	return false;
}

/*
 * The bootstrap gate: before the agent has its lease and a complete first read of the keys
 * (range + watch), a decision that acts (demote, race, promote, start, ...) becomes WAIT. The
 * rules would otherwise act on a view that may not show the leader yet, or demote the only
 * primary before it can take the key (it could then never be elected: no status). Latched:
 * once ready, a lost lease or watch is the rules' business (fence, re-read).
 */
static void gate(HaAgent *a, HaDecision *d)
{
	HaAgentReadiness r = {a->have_snapshot, a->watching, a->have_local, a->lease_id};
	char why[200];

	if (a->ready)
		return;
	if (ha_agent_ready(&r, why, sizeof(why))) {
		a->ready = true;
		alog(a, LOG_INFO,
		     "ready to act: lease %" PRId64 ", keys read at revision %" PRId64
		     " and watched",
		     a->lease_id, a->keys.revision);
		return;
	}
	if (ha_action_is_passive(d->action))
		return;
	snprintf(d->reason, sizeof(d->reason), "waiting for %s before acting (the rules say %s)",
		 why, ha_action_name(d->action));
	d->action = HA_ACT_WAIT;
	d->renew_due = false;
	d->clear_failover = false;
	d->delay_ms = 0;
}

static void arm(struct event *ev, int64_t ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(ev, &tv);
}

static void decide(HaAgent *a)
{
	int64_t now = ha_now_ms(), wake;
	HaDecision d;

	if (a->stopping || !a->have_snapshot || (is_agent(a) && !a->have_local))
		return;
	update_local(a);
	/*
	 * My race txn is out and the watch already shows the key on my lease: it won, the reply
	 * is just late. Only then: a stale store naming me must not make me the holder again.
	 */
	if (is_agent(a) && a->race_inflight && a->lease_id && !a->local.lease.held &&
	    !a->local.lease.lost && strcmp(a->keys.leader, me(a)) == 0 &&
	    a->keys.leader_lease == a->lease_id)
		became_holder(a, a->race_sent_ms);
	compose_view(a);
	guard_probe_facts(a);
	ha_rules_decide(&a->view, &a->local, now, &a->cfg.timings, &d);
	a->last_decide_ms = now;
	a->dec = d;
	a->have_dec = true;
	if (is_agent(a)) {
		gate(a, &d);
		if (a->lease_state == LEASE_REVOKING && d.action == HA_ACT_TAKEOVER) {
			/* fenced or releasing: the key on my lease is on its way out, not mine */
			d.action = HA_ACT_WAIT;
			snprintf(d.reason, sizeof(d.reason),
				 "giving the leader key up: waiting for the revoke to complete or "
				 "the lease to expire");
		}
		if (a->dec.action == HA_ACT_WAIT && d.action == HA_ACT_WAIT)
			revoke_stale_key(a);
		if (d.action == HA_ACT_DEMOTE && bootstrap_possible(a)) {
			d.action = HA_ACT_RACE;
			d.delay_ms = 1; /* not a plain race: bootstrap() below */
			snprintf(d.reason, sizeof(d.reason),
				 "no leader and the cluster was never initialized: bootstrapping "
				 "with the local primary");
			a->dec = d;
			log_decision(a, &d);
			bootstrap(a);
			arm(a->tick, a->cfg.timings.renew_ms);
			return;
		}
		if ((d.action == HA_ACT_RACE || d.action == HA_ACT_TAKEOVER) &&
		    !watchdog_usable(a, d.reason, sizeof(d.reason))) {
			d.action = HA_ACT_WAIT_NOT_ELIGIBLE;
			d.delay_ms = 0;
		}
		a->dec = d;
		log_decision(a, &d);
		if (d.renew_due && d.action != HA_ACT_FENCE && d.action != HA_ACT_RELEASE)
			renew(a);
		if (d.clear_failover && !a->failover_clear_inflight)
			a->failover_clear_inflight =
			    etcd_deleterange(a->etcd, a->k_failover, false, simple_cb, a);
		execute(a, &d);
	}
	wake = d.wake_ms - now;
	if (wake > a->cfg.timings.renew_ms)
		wake = a->cfg.timings.renew_ms;
	if (wake < 20)
		wake = 20;
	arm(a->tick, wake);
}

static void soon_cb(evutil_socket_t fd, short what, void *arg)
{
	decide(arg);
}

static void decide_soon(HaAgent *a)
{
	if (!a->stopping && !evtimer_pending(a->soon, NULL))
		arm(a->soon, 0);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	decide(arg);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	HaAgent *a = arg;
	const HaTimings *t = &a->cfg.timings;
	int64_t now = ha_now_ms();
	int64_t every = t->renew_ms < HEARTBEAT_MAX_MS ? t->renew_ms : HEARTBEAT_MAX_MS;

	if (a->stopping)
		return;
	arm(a->heartbeat, every);
	if (now - a->last_read_ms >= t->renew_ms)
		read_all(a);
	if (now - a->last_peer_probe_ms >= t->renew_ms && !a->election_pending)
		probe_peers(a, false, (int)(t->probe_ms > 1000 ? t->probe_ms : 1000));
	if (!is_agent(a))
		return;
	guard_heartbeat(a, now);
	if (!a->local_task) {
		a->last_local_probe_ms = now;
		a->local_task = ha_health_probe(a->base, a->cfg.pg_conn, NULL, 0, true,
						(int)(t->probe_ms > 1000 ? t->probe_ms : 1000),
						local_probe_cb, a);
	}
	if (a->lease_state == LEASE_REVOKING) {
		send_revoke(a);
	} else if (!a->lease_id) {
		grant_lease(a);
	} else if (a->lease_state == LEASE_MEMBER && !a->keepalive_inflight &&
		   now - a->last_keepalive_ms >= t->renew_ms) {
		a->last_keepalive_ms = now;
		a->keepalive_inflight = etcd_lease_keepalive(a->etcd, a->lease_id, keepalive_cb, a);
	}
	publish_member(a);
	/* status at least once a second while the LSN moves */
	if (a->local.lease.held && !a->renew_inflight && !a->status_inflight &&
	    ha_member_lsn(&a->local.self) != a->status_lsn && now - a->status_ms >= STATUS_MIN_MS &&
	    a->local.self.state == HA_PG_RUNNING && !a->local.self.in_recovery)
		a->status_inflight = send_status_txn(a, status_cb);
}

/*
 * API
 */

HaAgent *ha_agent_new(struct event_base *base, const HaConfig *cfg, const HaAgentCallbacks *cb,
		      void *arg, char *err, size_t errlen)
{
	HaAgent *a = calloc(1, sizeof(*a));
	EtcdClientConfig ec;

	if (!a || !ha_config_copy(&a->cfg, cfg)) {
		free(a);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->base = base;
	if (cb)
		a->cb = *cb;
	a->arg = arg;
	a->writes_allowed = true;
	ha_watchdog_init(&a->wd, (HaWatchdogMode)a->cfg.watchdog_mode, a->cfg.watchdog_device,
			 a->cfg.watchdog_timeout_s, NULL);
	a->node.base = base;
	a->node.pg_conn = a->cfg.pg_conn;
	a->node.pg_data = a->cfg.pg_data;
	a->node.pg_bin = a->cfg.pg_bin ? a->cfg.pg_bin : HA_PG_BIN_DEFAULT;
	snprintf(a->watch_state, sizeof(a->watch_state), "not started");
	ha_cluster_init(&a->keys);
	ha_cluster_init(&a->view);
	if (cfg->ha_mode == HA_MODE_OFF || !cfg->name || !cfg->etcd_endpoints ||
	    !cfg->timings.renew_ms) {
		snprintf(err, errlen,
			 "the HA agent needs a validated [cluster] configuration with "
			 "ha_mode follow or agent");
		ha_agent_free(a);
		return NULL;
	}
	snprintf(a->prefix, sizeof(a->prefix), "%s/%s/",
		 strcmp(cfg->namespace, "/") == 0 ? "" : cfg->namespace, cfg->name);
	if (strlen(a->prefix) > 400 || strlen(me(a)) > 64) {
		snprintf(err, errlen, "namespace and cluster name are too long");
		ha_agent_free(a);
		return NULL;
	}
	snprintf(a->k_leader, KEY_MAX, "%.400sleader", a->prefix);
	snprintf(a->k_status, KEY_MAX, "%.400sstatus", a->prefix);
	snprintf(a->k_history, KEY_MAX, "%.400shistory", a->prefix);
	snprintf(a->k_config, KEY_MAX, "%.400sconfig", a->prefix);
	snprintf(a->k_failover, KEY_MAX, "%.400sfailover", a->prefix);
	snprintf(a->k_sync, KEY_MAX, "%.400ssync", a->prefix);
	snprintf(a->k_self, KEY_MAX, "%.400smembers/%s", a->prefix, me(a));
	memset(&ec, 0, sizeof(ec));
	ec.endpoints = a->cfg.etcd_endpoints;
	ec.username = a->cfg.etcd_user;
	ec.password = a->cfg.etcd_password;
	ec.request_timeout_ms = a->cfg.etcd_timeout_ms;
	ec.log_hook = etcd_log_cb;
	ec.log_arg = a;
	a->etcd = etcd_client_new(base, &ec, err, errlen);
	a->heartbeat = evtimer_new(base, heartbeat_cb, a);
	a->tick = evtimer_new(base, tick_cb, a);
	a->soon = evtimer_new(base, soon_cb, a);
	if (!a->etcd || !a->heartbeat || !a->tick || !a->soon) {
		if (a->etcd)
			snprintf(err, errlen, "out of memory");
		ha_agent_free(a);
		return NULL;
	}
	return a;
}

bool ha_agent_start(HaAgent *a)
{
	char buf[512];

	if (a->started)
		return true;
	a->started = true;
	alog(a, LOG_INFO, "HA %s mode for cluster %s%s%s, keys under %s; %s",
	     ha_mode_name((HaMode)a->cfg.ha_mode), a->cfg.name, is_agent(a) ? " as member " : "",
	     is_agent(a) ? me(a) : "", a->prefix,
	     ha_timings_format(&a->cfg.timings, buf, sizeof(buf)));
	/* before the first etcd request: no resolver thread exists yet when the guard forks */
	if (is_agent(a))
		guard_open(a);
	read_all(a);
	arm(a->heartbeat, 0);
	return true;
}

static void stop_finish_cb(evutil_socket_t fd, short what, void *arg)
{
	HaAgent *a = arg;

	if (a->stop_done)
		a->stop_done(a->stop_arg);
}

static void revoke_cb(EtcdClient *c, const EtcdResult *res, void *arg)
{
	HaAgent *a = arg;

	if (a->freeing)
		return;
	if (!res->ok)
		alog(a, LOG_WARNING, "could not revoke lease %" PRId64 ": %s",
		     a->lease_id ? a->lease_id : a->revoke_id, res->error);
	lease_set(a, LEASE_NONE, a->lease_id ? a->lease_id : a->revoke_id, "stopping");
	a->lease_id = 0;
	a->revoke_id = 0;
	event_active(a->stop_ev, EV_TIMEOUT, 0);
}

void ha_agent_stop(HaAgent *a, void (*done)(void *arg), void *arg)
{
	a->stopping = true;
	a->stop_done = done;
	a->stop_arg = arg;
	evtimer_del(a->heartbeat);
	evtimer_del(a->tick);
	evtimer_del(a->soon);
	if (a->watch) {
		etcd_watch_stop(a->watch);
		a->watch = NULL;
	}
	if (a->local_task) {
		ha_pg_cancel(a->local_task);
		a->local_task = NULL;
	}
	for (int i = 0; i < HA_MAX_MEMBERS; i++)
		if (a->slots[i].task) {
			ha_pg_cancel(a->slots[i].task);
			a->slots[i].task = NULL;
			a->slots[i].election = false;
		}
	a->election_pending = 0;
	if (!a->stop_ev)
		a->stop_ev = evtimer_new(a->base, stop_finish_cb, a);
	if (!a->stop_ev)
		return;
	alog(a, LOG_INFO, "stopping the HA agent%s",
	     a->local.lease.held ? ": the leader key stays until its lease expires" : "");
	/* a replica's lease only carries its member key, a given-up one nothing of ours: drop it
	 * at once */
	if (is_agent(a) && (a->lease_state == LEASE_MEMBER || a->lease_state == LEASE_REVOKING) &&
	    etcd_lease_revoke(a->etcd, a->lease_id ? a->lease_id : a->revoke_id, revoke_cb, a))
		return;
	event_active(a->stop_ev, EV_TIMEOUT, 0);
}

void ha_agent_free(HaAgent *a)
{
	if (!a)
		return;
	a->freeing = true;
	if (a->watch)
		etcd_watch_stop(a->watch);
	if (a->etcd)
		etcd_client_free(a->etcd);
	if (a->action) {
		/* a server being started must have its postmaster.pid when pgpilot is gone */
		ha_action_settle(a->action, SETTLE_MS);
		ha_action_cancel(a->action);
	}
	if (a->local_task)
		ha_pg_cancel(a->local_task);
	for (int i = 0; i < HA_MAX_MEMBERS; i++)
		if (a->slots[i].task)
			ha_pg_cancel(a->slots[i].task);
	if (a->heartbeat)
		event_free(a->heartbeat);
	if (a->tick)
		event_free(a->tick);
	if (a->soon)
		event_free(a->soon);
	if (a->stop_ev)
		event_free(a->stop_ev);
	free(a->published);
	free(a->history_raw);
	free(a->config_raw);
	fence_guard_close(a->guard); /* the guard lives on: armed, it fires unless taken over */
	ha_watchdog_disable(&a->wd); /* a graceful exit; kill -9 leaves it to reset the machine */
	ha_config_cleanup(&a->cfg);
	free(a);
}

const HaCluster *ha_agent_view(const HaAgent *a)
{
	return &a->view;
}

int ha_agent_route(const HaAgent *a, HaRouteRole role, int64_t replica_max_lag, const int *busy,
		   char *why, size_t len)
{
	if (!a->have_snapshot) {
		if (why && len)
			snprintf(why, len, "the cluster view has not been read from etcd yet");
		return -1;
	}
	return ha_rules_route(&a->view, role, replica_max_lag, busy, why, len);
}

bool ha_agent_failover(HaAgent *a, const char *member, bool force, char *err, size_t len)
{
	char *json;
	bool ok;

	if (!is_agent(a)) {
		snprintf(err, len,
			 "FAILOVER needs ha_mode = agent: follow mode never writes to etcd");
		return false;
	}
	if (!ha_cluster_find_member(&a->view, member)) {
		snprintf(err, len, "no member \"%s\" in cluster %s", member, a->cfg.name);
		return false;
	}
	if (a->view.leader[0] && strcmp(a->view.leader, member) == 0) {
		snprintf(err, len, "member \"%s\" is already the leader", member);
		return false;
	}
	json = ha_failover_json_build(a->view.leader, member, force);
	ok = json && etcd_put(a->etcd, a->k_failover, json, 0, simple_cb, a);
	free(json);
	if (!ok)
		snprintf(err, len, "could not write the failover key: out of memory");
	else
		alog(a, LOG_INFO, "manual failover to %s%s requested", member,
		     force ? " (force)" : "");
	return ok;
}

bool ha_agent_maintenance(HaAgent *a, bool on, char *err, size_t len)
{
	char *json;
	bool ok;

	if (!is_agent(a)) {
		snprintf(err, len,
			 "MAINTENANCE needs ha_mode = agent: follow mode never writes to etcd");
		return false;
	}
	json = ha_config_json_set_pause(a->config_raw, on);
	ok = json && etcd_put(a->etcd, a->k_config, json, 0, simple_cb, a);
	free(json);
	if (!ok)
		snprintf(err, len, "could not write the config key: out of memory");
	else
		alog(a, LOG_INFO, "maintenance mode %s requested", on ? "on" : "off");
	return ok;
}

int64_t ha_agent_lease_ttl_left_ms(const HaAgent *a)
{
	int64_t now = ha_now_ms();

	if (a->local.lease.held)
		return a->local.lease.last_ok_sent_ms + a->cfg.timings.lease_ttl_ms - now;
	if (a->view.leader[0] && a->view.leader_expiry_ms)
		return a->view.leader_expiry_ms > now ? a->view.leader_expiry_ms - now : 0;
	return -1;
}

const char *ha_agent_cluster_note(const HaAgent *a)
{
	return a->note;
}

const HaDecision *ha_agent_last_decision(const HaAgent *a)
{
	return &a->dec;
}

bool ha_agent_is_leader(const HaAgent *a)
{
	return a->local.lease.held;
}

void ha_agent_show_ha(const HaAgent *a, HaKvFunc fn, void *arg)
{
	const HaTimings *t = &a->cfg.timings;
	int64_t now = ha_now_ms();
	char buf[HA_REASON_MAX + 64];
	const struct {
		const char *name;
		int64_t v;
	} timings[] = {
	    {"pg_rto_ms", t->pg_rto_ms},           {"pg_rpo", t->pg_rpo},
	    {"lease_ttl_ms", t->lease_ttl_ms},     {"renew_interval_ms", t->renew_ms},
	    {"retry_timeout_ms", t->retry_ms},     {"fence_timeout_ms", t->fence_ms},
	    {"probe_timeout_ms", t->probe_ms},     {"promote_timeout_ms", t->promote_ms},
	    {"restart_timeout_ms", t->restart_ms}, {"rank_step_ms", t->rank_step_ms},
	};

	fn(arg, "mode", ha_mode_name((HaMode)a->cfg.ha_mode));
	fn(arg, "cluster", a->cfg.name ? a->cfg.name : "");
	fn(arg, "member", me(a));
	fn(arg, "leader", a->view.leader);
	fn(arg, "is_leader", a->local.lease.held ? "yes" : "no");
	snprintf(buf, sizeof(buf), "%" PRId64, a->lease_id);
	fn(arg, "lease_id", buf);
	fn(arg, "lease_state", lease_state_name(a->lease_state));
	for (size_t i = 0; i < ARRAY_SIZE(timings); i++) {
		snprintf(buf, sizeof(buf), "%" PRId64, timings[i].v);
		fn(arg, timings[i].name, buf);
	}
	if (a->local.lease.last_ok_ms)
		snprintf(buf, sizeof(buf), "%" PRId64 " ms ago", now - a->local.lease.last_ok_ms);
	else
		snprintf(buf, sizeof(buf), "never");
	fn(arg, "last_renewal", buf);
	snprintf(buf, sizeof(buf), "%" PRId64, ha_agent_lease_ttl_left_ms(a));
	fn(arg, "lease_ttl_left_ms", buf);
	fn(arg, "last_decision", a->have_dec ? ha_action_name(a->dec.action) : "none");
	fn(arg, "last_reason", a->have_dec ? a->dec.reason : "");
	fn(arg, "action_in_progress", a->action ? ha_action_run_name(a->action) : "");
	fn(arg, "local_writes", a->writes_allowed ? "allowed" : "stopped");
	fn(arg, "maintenance", a->view.maintenance ? "on" : "off");
	fn(arg, "etcd_endpoint", a->etcd ? etcd_client_endpoint(a->etcd) : "");
	fn(arg, "watch_state", a->watch_state);
	fn(arg, "cluster_note", a->note);
}
