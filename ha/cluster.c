/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The cluster view's helpers: enum names (and Patroni's spellings of them), member and history
 * bookkeeping, and the LSN text form. See cluster.h.
 */
#include "ha/cluster.h"

#include <stdio.h>
#include <string.h>

const char *ha_role_name(HaRole r)
{
	switch (r) {
	case HA_ROLE_PRIMARY:
		return "primary";
	case HA_ROLE_REPLICA:
		return "replica";
	case HA_ROLE_UNKNOWN:
		break;
	}
	return "unknown";
}

HaRole ha_role_from_name(const char *s)
{
	static const struct {
		const char *name;
		HaRole role;
	} map[] = {
	    {"primary", HA_ROLE_PRIMARY},      {"master", HA_ROLE_PRIMARY},
	    {"replica", HA_ROLE_REPLICA},      {"standby_leader", HA_ROLE_REPLICA},
	    {"sync_standby", HA_ROLE_REPLICA}, {"standby", HA_ROLE_REPLICA},
	};

	if (!s)
		return HA_ROLE_UNKNOWN;
	for (size_t i = 0; i < ARRAY_SIZE(map); i++)
		if (strcmp(s, map[i].name) == 0)
			return map[i].role;
	return HA_ROLE_UNKNOWN;
}

static const char *const pg_state_names[] = {
    [HA_PG_UNKNOWN] = "unknown",           [HA_PG_RUNNING] = "running",
    [HA_PG_STARTING] = "starting",         [HA_PG_STOPPING] = "stopping",
    [HA_PG_STOPPED] = "stopped",           [HA_PG_CRASHED] = "crashed",
    [HA_PG_START_FAILED] = "start failed", [HA_PG_REWINDING] = "rewinding",
};

const char *ha_pg_state_name(HaPgState s)
{
	if ((unsigned)s >= ARRAY_SIZE(pg_state_names))
		return "unknown";
	return pg_state_names[s];
}

HaPgState ha_pg_state_from_name(const char *s)
{
	if (!s)
		return HA_PG_UNKNOWN;
	for (size_t i = 0; i < ARRAY_SIZE(pg_state_names); i++)
		if (strcmp(s, pg_state_names[i]) == 0)
			return (HaPgState)i;
	return HA_PG_UNKNOWN;
}

const char *ha_down_cause_name(HaDownCause c)
{
	switch (c) {
	case HA_DOWN_NONE:
		return "none";
	case HA_DOWN_UNREACHABLE:
		return "unreachable";
	case HA_DOWN_PG_DOWN:
		return "postgresql down";
	case HA_DOWN_QUERY:
		return "health query failed";
	case HA_DOWN_STALE:
		return "not seen recently";
	case HA_DOWN_NO_KEY:
		return "member key gone";
	}
	return "unknown";
}

void ha_cluster_init(HaCluster *c)
{
	memset(c, 0, sizeof(*c));
}

HaMember *ha_cluster_add_member(HaCluster *c, const char *name)
{
	HaMember *m;

	if (!name || !name[0] || strlen(name) >= HA_NAME_MAX)
		return NULL;
	m = ha_cluster_find_member_mut(c, name);
	if (m)
		return m;
	if (c->n_members >= HA_MAX_MEMBERS)
		return NULL;
	m = &c->members[c->n_members++];
	memset(m, 0, sizeof(*m));
	strcpy(m->name, name);
	m->tags.failover_priority = HA_FAILOVER_PRIORITY_DEFAULT;
	return m;
}

HaMember *ha_cluster_find_member_mut(HaCluster *c, const char *name)
{
	if (!name)
		return NULL;
	for (int i = 0; i < c->n_members; i++)
		if (strcmp(c->members[i].name, name) == 0)
			return &c->members[i];
	return NULL;
}

const HaMember *ha_cluster_find_member(const HaCluster *c, const char *name)
{
	return ha_cluster_find_member_mut((HaCluster *)c, name);
}

void ha_cluster_add_history(HaCluster *c, uint32_t timeline, uint64_t switch_lsn)
{
	int i;

	for (i = 0; i < c->n_history; i++) {
		if (c->history[i].timeline == timeline) {
			c->history[i].switch_lsn = switch_lsn;
			return;
		}
	}
	if (c->n_history == HA_MAX_HISTORY) {
		/* only recent switches matter for a rejoin: forget the oldest */
		memmove(&c->history[0], &c->history[1],
			sizeof(c->history[0]) * (HA_MAX_HISTORY - 1));
		c->n_history--;
	}
	for (i = c->n_history; i > 0 && c->history[i - 1].timeline > timeline; i--)
		c->history[i] = c->history[i - 1];
	c->history[i].timeline = timeline;
	c->history[i].switch_lsn = switch_lsn;
	c->n_history++;
}

bool ha_cluster_switch_lsn(const HaCluster *c, uint32_t timeline, uint64_t *lsn)
{
	for (int i = 0; i < c->n_history; i++) {
		if (c->history[i].timeline == timeline) {
			*lsn = c->history[i].switch_lsn;
			return true;
		}
	}
	return false;
}

uint64_t ha_member_lsn(const HaMember *m)
{
	if (m->in_recovery)
		return m->receive_lsn > m->replay_lsn ? m->receive_lsn : m->replay_lsn;
	return m->write_lsn > m->flush_lsn ? m->write_lsn : m->flush_lsn;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Parse 1..8 hex digits at *p, advancing it. */
static bool parse_hex32(const char **p, uint32_t *out)
{
	uint32_t v = 0;
	int n = 0, d;

	while ((d = hexval(**p)) >= 0) {
		if (++n > 8)
			return false;
		v = (v << 4) | (uint32_t)d;
		(*p)++;
	}
	*out = v;
	return n > 0;
}

bool ha_lsn_parse(const char *s, uint64_t *out)
{
	uint32_t hi, lo;

	if (!s)
		return false;
	if (!parse_hex32(&s, &hi) || *s++ != '/')
		return false;
	if (!parse_hex32(&s, &lo) || *s != '\0')
		return false;
	*out = ((uint64_t)hi << 32) | lo;
	return true;
}

const char *ha_lsn_format(uint64_t lsn, char *buf, size_t len)
{
	snprintf(buf, len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
	return buf;
}
