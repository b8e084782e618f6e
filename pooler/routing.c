/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The pooler's side of HA and DNS. See routing.h. The agent reports up through its callbacks
 * only (view changed, local writes, promoted); everything that touches pools happens here.
 */
#include "pooler/routing.h"
#include "pooler/admin.h"
#include "pooler/pool.h"
#include "pooler/sections.h"
#include "dns/updater.h"
#include "ha/agent.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static HaAgent *agent;
static HaConfig hacfg;		/* the validated copy the agent runs with */
static bool hacfg_set;
static DnsUpdater *updater;
static DnsUpdater *old_updater;	/* replaced at RELOAD, freed once idle */
static bool local_writes_ok = true;
static char published_replicas[1024];
/* the leader key's member the pools last knew ("" = none) */
static char known_leader[HA_NAME_MAX];

static HaRouteRole route_role(RouteRole r)
{
	switch (r) {
	case ROLE_REPLICA:
		return HA_ROUTE_REPLICA;
	case ROLE_PREFER_REPLICA:
		return HA_ROUTE_PREFER_REPLICA;
	case ROLE_ANY:
		return HA_ROUTE_ANY;
	default:
		return HA_ROUTE_PRIMARY;
	}
}

/* Can traffic of this role write? Then it must never reach a fenced local node. */
static bool role_may_write(RouteRole r)
{
	return r != ROLE_REPLICA;
}

/* --- routing --- */

/* Servers of this database per member of the view, for "least busy". */
static void count_busy(const Database *db, const HaCluster *v, int *busy)
{
	List *it, *sit;

	memset(busy, 0, sizeof(int) * HA_MAX_MEMBERS);
	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);

		if (p->db != db)
			continue;
		list_for_each(sit, &p->active_servers) {
			Server *s = container_of(sit, Server, head);
			for (int i = 0; i < v->n_members; i++)
				if (strcmp(v->members[i].name, s->member) == 0)
					busy[i]++;
		}
	}
}

bool routing_target(Database *db, char *host, size_t hostlen, int *port, char *member,
		    size_t memberlen, char *err, size_t errlen)
{
	int busy[HA_MAX_MEMBERS];
	const HaCluster *v;
	const HaMember *m;
	char why[256] = "";
	int idx;

	if (!agent) {
		snprintf(err, errlen, "database \"%s\" routes by cluster but ha_mode is off", db->name);
		return false;
	}
	v = ha_agent_view(agent);
	count_busy(db, v, busy);
	idx = ha_agent_route(agent, route_role(db->cfg.role), db->cfg.replica_max_lag, busy, why,
			     sizeof(why));
	if (idx < 0 || idx >= v->n_members) {
		snprintf(err, errlen, "no %s member of cluster \"%s\" to route to: %s",
			 route_role_name(db->cfg.role), db->cfg.cluster, why[0] ? why : "unknown");
		return false;
	}
	m = &v->members[idx];
	if (!local_writes_ok && role_may_write(db->cfg.role) && hacfg.member &&
	    strcmp(m->name, hacfg.member) == 0) {
		snprintf(err, errlen, "writes to the local node \"%s\" are fenced", m->name);
		return false;
	}
	snprintf(host, hostlen, "%s", m->host);
	*port = m->port;
	snprintf(member, memberlen, "%s", m->name);
	return true;
}

/* Does a server's member still fit its database's role in the new view? */
static bool member_fits(const Database *db, const HaCluster *v, const char *member, int routed)
{
	const HaMember *m = ha_cluster_find_member(v, member);

	if (!m || !m->healthy)
		return false;
	switch (db->cfg.role) {
	case ROLE_PRIMARY:
		return routed >= 0 && strcmp(v->members[routed].name, member) == 0;
	case ROLE_REPLICA:
		return m->in_recovery && strcmp(v->leader, member) != 0;
	default:
		return true;
	}
}

/* Close servers whose member no longer fits: idle ones now, busy ones when released. */
static void retire_servers(Pool *p, bool (*keep)(const Pool *p, const Server *s, void *arg),
			   void *arg, const char *why)
{
	List *lists[] = { &p->active_servers, &p->used_servers, &p->tested_servers,
			  &p->new_servers };
	List *it, *tmp;

	list_for_each_safe(it, tmp, &p->idle_servers) {
		Server *s = container_of(it, Server, head);
		if (!keep(p, s, arg))
			disconnect_server(s, "%s", why);
	}
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		list_for_each(it, lists[i]) {
			Server *s = container_of(it, Server, head);
			if (!keep(p, s, arg))
				s->close_needed = true;
		}
	}
}

typedef struct FitArg {
	const HaCluster *view;
	int routed;
} FitArg;

static bool keep_fitting(const Pool *p, const Server *s, void *arg)
{
	FitArg *fa = arg;

	return member_fits(p->db, fa->view, s->member, fa->routed);
}

/* Publish the healthy replicas' addresses when they changed (the leader does it). */
static void publish_replicas(const HaCluster *v)
{
	const char *addrs[HA_MAX_MEMBERS];
	char joined[1024] = "", err[256];
	int n = 0;

	if (!updater || !ha_agent_is_leader(agent))
		return;
	for (int i = 0; i < v->n_members; i++) {
		const HaMember *m = &v->members[i];
		struct in6_addr tmp;

		if (!m->healthy || !m->in_recovery || strcmp(m->name, v->leader) == 0)
			continue;
		if (inet_pton(AF_INET, m->host, &tmp) != 1 && inet_pton(AF_INET6, m->host, &tmp) != 1)
			continue;
		addrs[n++] = m->host;
		strncat(joined, m->host, sizeof(joined) - strlen(joined) - 2);
		strcat(joined, ",");
	}
	if (strcmp(joined, published_replicas) == 0)
		return;
	if (!dns_publish_replicas(updater, addrs, n, err, sizeof(err))) {
		if (err[0])
			log_warning("dns: could not publish the replica set: %s", err);
		return;
	}
	snprintf(published_replicas, sizeof(published_replicas), "%s", joined);
}

/*
 * The leader changed: the old primary is deposed. Its servers are closed at once, busy ones
 * included, in every pool: a request in flight there may still commit when a paused node wakes,
 * and that result must never be relayed (its client gets 08007, the outcome is unknown). A
 * member is deposed when it held the leader key and no longer does (another member holds it, or
 * nobody). role=primary routes by the leader key alone (ha_rules_route), so this also covers
 * the routing layer learning a new primary.
 */
static void close_deposed(const HaCluster *v)
{
	char deposed[HA_NAME_MAX];
	const char *now = v->leader[0] ? v->leader : "none";
	int closed;

	if (!known_leader[0] || strcmp(known_leader, v->leader) == 0) {
		snprintf(known_leader, sizeof(known_leader), "%s", v->leader);
		return;
	}
	snprintf(deposed, sizeof(deposed), "%s", known_leader);
	snprintf(known_leader, sizeof(known_leader), "%s", v->leader);
	closed = pool_close_servers_of_member(
	    deposed, "08007",
	    "primary \"%s\" was deposed (leader now: %s) while the request was in flight: its "
	    "outcome is unknown",
	    deposed, now);
	log_msg(closed ? LOG_LVL_WARNING : LOG_LVL_INFO,
		"the primary \"%s\" was deposed (leader now: %s): closed its %d server connection%s",
		deposed, now, closed, closed == 1 ? "" : "s");
}

static void view_changed_cb(void *arg, const HaCluster *v)
{
	List *it;

	close_deposed(v);
	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		FitArg fa = { v, -1 };

		if (!p->db->cfg.cluster)
			continue;
		if (p->db->cfg.role == ROLE_PRIMARY)
			fa.routed = ha_agent_route(agent, HA_ROUTE_PRIMARY, -1, NULL, NULL, 0);
		retire_servers(p, keep_fitting, &fa, "its member no longer fits the database's role");
		/* a member may fit now: try at once, not after server_login_retry */
		p->last_connect_failed_time = 0;
		if (p->n_waiting_clients)
			pool_activate(p);
	}
	publish_replicas(v);
}

static bool keep_not_local(const Pool *p, const Server *s, void *arg)
{
	return !role_may_write(p->db->cfg.role) || strcmp(s->member, (const char *)arg) != 0;
}

/* A server the fence must close: one that may write to the local node. */
static bool server_writes_locally(const Pool *p, const Server *s, const void *arg)
{
	return !keep_not_local(p, s, (void *)arg);
}

static void local_writes_cb(void *arg, bool allowed)
{
	local_writes_ok = allowed;
	if (allowed) {
		log_info("writes to the local node are allowed again");
		return;
	}
	log_warning("fencing: closing every write connection to the local node \"%s\"", hacfg.member);
	/* not at release: a transaction still running there must not commit */
	pool_close_cluster_servers(server_writes_locally, hacfg.member, NULL, "local node fenced");
}

static void promoted_cb(void *arg, const HaCluster *v)
{
	char err[256];
	const char *addr = hacfg.dns_address && hacfg.dns_address[0] ? hacfg.dns_address
								    : hacfg.adv_host;

	log_info("this node is the primary of cluster \"%s\" now", hacfg.name);
	if (!updater)
		return;
	if (!dns_publish_primary(updater, addr, err, sizeof(err)))
		log_warning("dns: could not publish the primary address \"%s\": %s", addr, err);
	published_replicas[0] = 0;
	publish_replicas(v);
}

static void ha_log_cb(void *arg, int level, const char *msg)
{
	static const LogLevel map[] = { LOG_LVL_ERROR, LOG_LVL_WARNING, LOG_LVL_INFO, LOG_LVL_DEBUG };

	log_msg(map[level < 0 ? 0 : level > 3 ? 3 : level], "ha: %s", msg);
}

static void dns_done_cb(void *arg, const DnsRecordStatus *st)
{
	/* dns/ logs every outcome itself; SHOW DNS reads the status */
}

/* --- SHOW providers --- */

static void show_cluster_rows(AdminRowFn emit, void *rs, int ncols)
{
	const HaCluster *v;
	const char *note;

	if (!agent)
		return;
	v = ha_agent_view(agent);
	note = ha_agent_cluster_note(agent);
	for (int i = 0; i < v->n_members; i++) {
		const HaMember *m = &v->members[i];
		char port[16], tl[16], lsn[HA_LSN_BUFLEN], lag[32], tags[96], ttl[32], why[256] = "";
		const char *vals[12];
		bool leader = strcmp(m->name, v->leader) == 0;
		uint64_t pos = ha_member_lsn(m);

		snprintf(port, sizeof(port), "%d", m->port);
		snprintf(tl, sizeof(tl), "%u", m->timeline);
		ha_lsn_format(pos, lsn, sizeof(lsn));
		if (!leader && v->has_status && v->status_optime >= pos)
			snprintf(lag, sizeof(lag), "%llu", (unsigned long long)(v->status_optime - pos));
		else
			snprintf(lag, sizeof(lag), "0");
		snprintf(tags, sizeof(tags), "nofailover=%s failover_priority=%d%s",
			 m->tags.nofailover ? "true" : "false", m->tags.failover_priority,
			 m->tags.noloadbalance ? " noloadbalance=true" : "");
		if (leader && ha_agent_lease_ttl_left_ms(agent) >= 0)
			snprintf(ttl, sizeof(ttl), "%.1f s", ha_agent_lease_ttl_left_ms(agent) / 1000.0);
		else
			ttl[0] = 0;
		if (!leader && hacfg_set)
			(void)ha_rules_member_eligible(v, m, &hacfg.timings, 0, why, sizeof(why));
		vals[0] = m->name;
		vals[1] = leader ? "leader" : ha_role_name(m->role);
		vals[2] = ha_pg_state_name(m->state);
		vals[3] = m->host;
		vals[4] = port;
		vals[5] = tl;
		vals[6] = lsn;
		vals[7] = lag;
		vals[8] = m->healthy ? "yes" : ha_down_cause_name(m->down_cause);
		vals[9] = tags;
		vals[10] = ttl[0] ? ttl : NULL;
		vals[11] = why[0] ? why : (i == 0 && note && note[0] ? note : NULL);
		emit(rs, ncols < 12 ? ncols : 12, vals);
	}
}

typedef struct KvEmit {
	AdminRowFn emit;
	void *rs;
} KvEmit;

static void kv_row(void *arg, const char *key, const char *value)
{
	KvEmit *ke = arg;
	const char *vals[2] = { key, value };

	ke->emit(ke->rs, 2, vals);
}

static void show_ha_rows(AdminRowFn emit, void *rs, int ncols)
{
	KvEmit ke = { emit, rs };

	if (!agent) {
		kv_row(&ke, "mode", "off");
		return;
	}
	ha_agent_show_ha(agent, kv_row, &ke);
}

static void format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (!t) {
		buf[0] = 0;
		return;
	}
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void dns_status_row(void *arg, const DnsRecordStatus *st)
{
	KvEmit *ke = arg;
	char when[40], attempts[16], outcome[256];
	const char *vals[5];

	format_time(st->time ? st->time : st->requested, when, sizeof(when));
	snprintf(attempts, sizeof(attempts), "%d", st->attempts);
	snprintf(outcome, sizeof(outcome), "%s%s%s", dns_outcome_name(st->outcome),
		 st->detail[0] ? ": " : "", st->detail);
	vals[0] = st->name;
	vals[1] = st->value;
	vals[2] = when;
	vals[3] = outcome;
	vals[4] = attempts;
	ke->emit(ke->rs, 5, vals);
}

static void show_dns_rows(AdminRowFn emit, void *rs, int ncols)
{
	KvEmit ke = { emit, rs };

	if (updater)
		dns_updater_foreach(updater, dns_status_row, &ke);
}

static void dns_host_row(void *arg, const DnsHostInfo *h)
{
	KvEmit *ke = arg;
	char ttl[16];
	const char *vals[4];

	snprintf(ttl, sizeof(ttl), "%d", h->ttl_left);
	vals[0] = h->name;
	vals[1] = ttl;
	vals[2] = h->addresses;
	vals[3] = h->last_error && h->last_error[0] ? h->last_error : (h->stale ? "stale" : NULL);
	ke->emit(ke->rs, 4, vals);
}

static void show_dns_hosts_rows(AdminRowFn emit, void *rs, int ncols)
{
	KvEmit ke = { emit, rs };

	if (pooler_resolver)
		dns_resolver_foreach(pooler_resolver, dns_host_row, &ke);
}

/* --- life cycle --- */

/* Every cluster= database must name the [cluster] this pgpilot follows. */
static bool check_databases(const Config *c, HaMode mode, const HaConfig *hc, char *err,
			    size_t errlen)
{
	for (int i = 0; i < c->n_databases; i++) {
		const DatabaseCfg *d = &c->databases[i];

		if (!d->cluster)
			continue;
		if (mode == HA_MODE_OFF) {
			snprintf(err, errlen, "database \"%s\" routes by cluster \"%s\" but ha_mode is off",
				 d->name, d->cluster);
			return false;
		}
		if (!hc->name || strcmp(hc->name, d->cluster) != 0) {
			snprintf(err, errlen,
				 "database \"%s\" routes by cluster \"%s\" but [cluster] name is \"%s\"",
				 d->name, d->cluster, hc->name ? hc->name : "");
			return false;
		}
	}
	return true;
}

static bool updater_start(struct event_base *base, char *err, size_t errlen)
{
	const DnsConfig *dc = sections_dns(cfg);

	if (!dc || !dns_config_is_enabled(dc))
		return true;
	updater = dns_updater_new(base, dc, dns_done_cb, NULL, err, errlen);
	return updater != NULL;
}

bool routing_start(struct event_base *base, char *err, size_t errlen)
{
	static const HaAgentCallbacks cbs = {
		.view_changed = view_changed_cb,
		.local_writes = local_writes_cb,
		.promoted = promoted_cb,
		.log = ha_log_cb,
	};
	const HaConfig *sc = sections_cluster(cfg);
	HaMode mode;

	if (!admin_set_show_provider("cluster", show_cluster_rows) ||
	    !admin_set_show_provider("ha", show_ha_rows) ||
	    !admin_set_show_provider("dns", show_dns_rows) ||
	    !admin_set_show_provider("dns_hosts", show_dns_hosts_rows)) {
		snprintf(err, errlen, "could not register the SHOW providers");
		return false;
	}
	if (!ha_mode_parse(cfg->ha_mode ? cfg->ha_mode : "off", &mode)) {
		snprintf(err, errlen, "invalid ha_mode \"%s\"", cfg->ha_mode);
		return false;
	}
	/* ha_mode belongs in [pgpilot]; [cluster] may carry it too */
	if (mode == HA_MODE_OFF && sc && sc->ha_mode != HA_MODE_OFF)
		mode = sc->ha_mode;
	if (!sc || !check_databases(cfg, mode, sc, err, errlen))
		return false;
	if (!updater_start(base, err, errlen))
		return false;
	if (mode == HA_MODE_OFF)
		return true;
	if (!ha_config_copy(&hacfg, sc)) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	hacfg_set = true;
	hacfg.ha_mode = mode;
	if (!ha_config_validate(&hacfg, err, errlen))
		return false;
	agent = ha_agent_new(base, &hacfg, &cbs, NULL, err, errlen);
	if (!agent)
		return false;
	if (!ha_agent_start(agent)) {
		snprintf(err, errlen, "could not start the HA agent");
		return false;
	}
	log_info("ha: %s mode for cluster \"%s\"%s%s", ha_mode_name(mode), hacfg.name,
		 hacfg.member ? " as member " : "", hacfg.member ? hacfg.member : "");
	return true;
}

bool routing_check_config(const Config *c, char *err, size_t errlen)
{
	const HaConfig *sc = sections_cluster(c);
	HaMode mode;

	if (!ha_mode_parse(c->ha_mode ? c->ha_mode : "off", &mode)) {
		snprintf(err, errlen, "invalid ha_mode \"%s\"", c->ha_mode);
		return false;
	}
	/* ha_mode and [cluster] take effect at restart: check against the running ones */
	if (hacfg_set)
		return check_databases(c, hacfg.ha_mode, &hacfg, err, errlen);
	return sc && check_databases(c, HA_MODE_OFF, sc, err, errlen);
}

void routing_reload(void)
{
	char err[256];
	DnsUpdater *prev = updater;

	if (old_updater && !dns_updater_is_busy(old_updater)) {
		dns_updater_free(old_updater);
		old_updater = NULL;
	}
	updater = NULL;
	if (!updater_start(pooler_base, err, sizeof(err))) {
		log_error("dns: could not start the updater after RELOAD: %s", err);
		updater = prev;
		return;
	}
	if (prev) {
		if (dns_updater_is_busy(prev) && !old_updater)
			old_updater = prev;
		else
			dns_updater_free(prev);
	}
}

void routing_stop(void)
{
	if (agent) {
		ha_agent_free(agent);
		agent = NULL;
	}
	if (updater)
		dns_updater_free(updater);
	if (old_updater)
		dns_updater_free(old_updater);
	updater = old_updater = NULL;
	if (hacfg_set)
		ha_config_cleanup(&hacfg);
	hacfg_set = false;
}

bool routing_failover(const char *member, bool force, char *err, size_t errlen)
{
	if (!agent) {
		snprintf(err, errlen, "FAILOVER needs ha_mode = agent");
		return false;
	}
	return ha_agent_failover(agent, member, force, err, errlen);
}

bool routing_maintenance(bool on, char *err, size_t errlen)
{
	if (!agent) {
		snprintf(err, errlen, "MAINTENANCE needs ha_mode = agent");
		return false;
	}
	return ha_agent_maintenance(agent, on, err, errlen);
}
