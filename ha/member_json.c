/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * DCS values in Patroni's JSON layouts and the connection-string helpers (see member_json.h).
 * Reading is lenient where Patroni versions differ (role names, LSNs as numbers or text) and
 * strict where a wrong value would mislead routing (conn_url).
 */
#include "ha/member_json.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <libpq-fe.h>

static void set_err(char *err, size_t errlen, const char *msg, const char *detail)
{
	if (err && errlen)
		snprintf(err, errlen, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
}

static char *dump(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(o);
	return s;
}

/* An LSN from a JSON number or "X/Y" text; false when neither. */
static bool json_lsn(const json_t *v, uint64_t *out)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return true;
	}
	if (json_is_string(v))
		return ha_lsn_parse(json_string_value(v), out);
	return false;
}

static bool json_bool_loose(const json_t *v)
{
	if (json_is_boolean(v))
		return json_is_true(v);
	if (json_is_string(v))
		return strcmp(json_string_value(v), "true") == 0 ||
		       strcmp(json_string_value(v), "on") == 0;
	if (json_is_integer(v))
		return json_integer_value(v) != 0;
	return false;
}

static const char *state_name(HaPgState s)
{
	/* Patroni spells "start failed" the same way; "unknown" is not a Patroni state */
	return s == HA_PG_UNKNOWN ? "stopped" : ha_pg_state_name(s);
}

char *ha_member_json_build(const HaMember *m, const char *api_url, const char *version)
{
	json_t *o = json_object(), *tags = json_object();
	char url[HA_HOST_MAX + 32];
	bool v6 = strchr(m->host, ':') != NULL;

	if (!o || !tags) {
		json_decref(o);
		json_decref(tags);
		return NULL;
	}
	snprintf(url, sizeof(url), "postgres://%s%s%s:%d/postgres", v6 ? "[" : "", m->host,
		 v6 ? "]" : "", m->port);
	json_object_set_new(o, "conn_url", json_string(url));
	if (api_url && *api_url)
		json_object_set_new(o, "api_url", json_string(api_url));
	json_object_set_new(o, "state", json_string(state_name(m->state)));
	json_object_set_new(
	    o, "role",
	    json_string(m->in_recovery || m->role == HA_ROLE_REPLICA ? "replica" : "primary"));
	if (version)
		json_object_set_new(o, "version", json_string(version));
	json_object_set_new(o, "xlog_location", json_integer((json_int_t)ha_member_lsn(m)));
	if (m->timeline)
		json_object_set_new(o, "timeline", json_integer(m->timeline));
	if (m->in_recovery) {
		json_object_set_new(o, "receive_lsn", json_integer((json_int_t)m->receive_lsn));
		json_object_set_new(o, "replay_lsn", json_integer((json_int_t)m->replay_lsn));
	}
	if (m->tags.nofailover)
		json_object_set_new(tags, "nofailover", json_true());
	if (m->tags.noloadbalance)
		json_object_set_new(tags, "noloadbalance", json_true());
	json_object_set_new(tags, "failover_priority", json_integer(m->tags.failover_priority));
	json_object_set_new(o, "tags", tags);
	return dump(o);
}

bool ha_member_json_parse(const char *json, size_t len, HaMember *m, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, 0, &je), *v, *tags;
	char name[HA_NAME_MAX];
	const char *state;
	uint64_t lsn = 0;

	if (!json_is_object(o)) {
		set_err(err, errlen, "invalid member value", o ? "not an object" : je.text);
		json_decref(o);
		return false;
	}
	v = json_object_get(o, "conn_url");
	if (!json_is_string(v) ||
	    !ha_conn_url_parse(json_string_value(v), m->host, sizeof(m->host), &m->port)) {
		set_err(err, errlen, "invalid member value", "conn_url missing or unreadable");
		json_decref(o);
		return false;
	}
	snprintf(name, sizeof(name), "%s", m->name);
	{
		char host[HA_HOST_MAX];
		int port = m->port;

		memcpy(host, m->host, sizeof(host));
		memset(m, 0, sizeof(*m));
		memcpy(m->name, name, sizeof(m->name));
		memcpy(m->host, host, sizeof(m->host));
		m->port = port;
	}
	m->tags.failover_priority = HA_FAILOVER_PRIORITY_DEFAULT;
	v = json_object_get(o, "api_url");
	if (json_is_string(v))
		snprintf(m->api_url, sizeof(m->api_url), "%s", json_string_value(v));
	m->role = ha_role_from_name(json_string_value(json_object_get(o, "role")));
	m->in_recovery = m->role == HA_ROLE_REPLICA;
	state = json_string_value(json_object_get(o, "state"));
	m->state = ha_pg_state_from_name(state);
	if (state && m->state == HA_PG_UNKNOWN && strncmp(state, "restarting", 10) == 0)
		m->state = HA_PG_STARTING;
	v = json_object_get(o, "timeline");
	if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= UINT32_MAX)
		m->timeline = (uint32_t)json_integer_value(v);
	(void)json_lsn(json_object_get(o, "xlog_location"), &lsn);
	if (m->in_recovery) {
		m->receive_lsn = m->replay_lsn = lsn;
		(void)json_lsn(json_object_get(o, "receive_lsn"), &m->receive_lsn);
		(void)json_lsn(json_object_get(o, "replay_lsn"), &m->replay_lsn);
	} else {
		m->write_lsn = m->flush_lsn = lsn;
	}
	tags = json_object_get(o, "tags");
	if (json_is_object(tags)) {
		m->tags.nofailover = json_bool_loose(json_object_get(tags, "nofailover"));
		m->tags.noloadbalance = json_bool_loose(json_object_get(tags, "noloadbalance"));
		v = json_object_get(tags, "failover_priority");
		if (json_is_integer(v))
			m->tags.failover_priority = (int)json_integer_value(v);
	}
	json_decref(o);
	return true;
}

char *ha_status_json_build(uint64_t optime, uint32_t timeline)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "optime", json_integer((json_int_t)optime));
	if (timeline)
		json_object_set_new(o, "timeline", json_integer(timeline));
	return dump(o);
}

bool ha_status_json_parse(const char *json, size_t len, uint64_t *optime, uint32_t *timeline)
{
	json_t *o = json_loadb(json, len, 0, NULL), *v;
	bool ok;

	*timeline = 0;
	ok = json_is_object(o) && json_lsn(json_object_get(o, "optime"), optime);
	v = json_object_get(o, "timeline");
	if (ok && json_is_integer(v) && json_integer_value(v) > 0 &&
	    json_integer_value(v) <= UINT32_MAX)
		*timeline = (uint32_t)json_integer_value(v);
	json_decref(o);
	return ok;
}

char *ha_history_json_append(const char *old, uint32_t timeline, uint64_t switch_lsn,
			     const char *reason, const char *timestamp, const char *leader)
{
	json_t *a = old ? json_loads(old, 0, NULL) : NULL, *e = json_array();

	if (!json_is_array(a)) {
		json_decref(a);
		a = json_array();
	}
	if (!a || !e) {
		json_decref(a);
		json_decref(e);
		return NULL;
	}
	json_array_append_new(e, json_integer(timeline));
	json_array_append_new(e, json_integer((json_int_t)switch_lsn));
	json_array_append_new(e, json_string(reason ? reason : ""));
	json_array_append_new(e, json_string(timestamp ? timestamp : ""));
	json_array_append_new(e, json_string(leader ? leader : ""));
	json_array_append_new(a, e);
	return dump(a);
}

bool ha_history_json_parse(const char *json, size_t len, HaCluster *c)
{
	json_t *a = json_loadb(json, len, 0, NULL);
	size_t i;
	json_t *e;

	if (!json_is_array(a)) {
		json_decref(a);
		return false;
	}
	c->n_history = 0;
	json_array_foreach(a, i, e)
	{
		json_t *tl = json_array_get(e, 0);
		uint64_t lsn;

		if (!json_is_array(e) || !json_is_integer(tl) || json_integer_value(tl) <= 0 ||
		    !json_lsn(json_array_get(e, 1), &lsn))
			continue;
		ha_cluster_add_history(c, (uint32_t)json_integer_value(tl), lsn);
	}
	json_decref(a);
	return true;
}

bool ha_config_json_parse(const char *json, size_t len, bool *pause, bool *sync_mode)
{
	json_t *o = json_loadb(json, len, 0, NULL);

	*pause = *sync_mode = false;
	if (!json_is_object(o)) {
		json_decref(o);
		return false;
	}
	*pause = json_bool_loose(json_object_get(o, "pause"));
	*sync_mode = json_bool_loose(json_object_get(o, "synchronous_mode"));
	json_decref(o);
	return true;
}

char *ha_config_json_set_pause(const char *old, bool pause)
{
	json_t *o = old ? json_loads(old, 0, NULL) : NULL;

	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	if (!o)
		return NULL;
	if (pause)
		json_object_set_new(o, "pause", json_true());
	else
		json_object_del(o, "pause");
	return dump(o);
}

char *ha_failover_json_build(const char *leader, const char *member, bool force)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	if (leader && *leader)
		json_object_set_new(o, "leader", json_string(leader));
	json_object_set_new(o, "member", json_string(member));
	if (force)
		json_object_set_new(o, "pgpilot_force", json_true());
	return dump(o);
}

bool ha_failover_json_parse(const char *json, size_t len, HaFailoverRequest *fo)
{
	json_t *o = json_loadb(json, len, 0, NULL);
	const char *cand;

	memset(fo, 0, sizeof(*fo));
	if (!json_is_object(o)) {
		json_decref(o);
		return false;
	}
	cand = json_string_value(json_object_get(o, "member"));
	if (!cand)
		cand = json_string_value(json_object_get(o, "candidate"));
	if (cand && *cand && strlen(cand) < sizeof(fo->candidate)) {
		fo->present = true;
		snprintf(fo->candidate, sizeof(fo->candidate), "%s", cand);
		fo->force = json_bool_loose(json_object_get(o, "pgpilot_force"));
	}
	json_decref(o);
	return fo->present;
}

bool ha_sync_json_parse(const char *json, size_t len, char *standby, size_t slen)
{
	json_t *o = json_loadb(json, len, 0, NULL);
	const char *s;
	size_t n;

	standby[0] = '\0';
	if (!json_is_object(o)) {
		json_decref(o);
		return false;
	}
	s = json_string_value(json_object_get(o, "sync_standby"));
	if (s) {
		n = strcspn(s, ",");
		if (n < slen) {
			memcpy(standby, s, n);
			standby[n] = '\0';
		}
	}
	json_decref(o);
	return true;
}

/* Text helpers */

bool ha_split_host_port(const char *s, char *host, size_t hostlen, int *port)
{
	const char *h = s, *colon;
	size_t hl;
	char *end;
	long p = 0;

	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return false;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close[1] == ':' ? close + 1 : NULL;
		if (close[1] && !colon)
			return false;
	} else {
		colon = strrchr(s, ':');
		if (colon && strchr(s, ':') != colon)
			colon = NULL; /* a bare IPv6 address: no port */
		hl = colon ? (size_t)(colon - s) : strlen(s);
	}
	if (hl == 0 || hl >= hostlen)
		return false;
	if (colon) {
		p = strtol(colon + 1, &end, 10);
		if (end == colon + 1 || *end || p <= 0 || p > 65535)
			return false;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return true;
}

bool ha_conn_url_parse(const char *url, char *host, size_t hostlen, int *port)
{
	const char *p, *at, *end;
	char hp[HA_HOST_MAX + 8];
	size_t n;

	if (strncmp(url, "postgres://", 11) == 0)
		p = url + 11;
	else if (strncmp(url, "postgresql://", 13) == 0)
		p = url + 13;
	else
		return false;
	end = p + strcspn(p, "/?");
	at = memchr(p, '@', (size_t)(end - p));
	if (at)
		p = at + 1;
	n = (size_t)(end - p);
	if (n == 0 || n >= sizeof(hp))
		return false;
	memcpy(hp, p, n);
	hp[n] = '\0';
	if (!ha_split_host_port(hp, host, hostlen, port))
		return false;
	if (*port == 0)
		*port = 5432;
	return true;
}

bool ha_conninfo_host_port(const char *conninfo, char *host, size_t hostlen, int *port)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	bool ok = false;

	*port = 5432;
	if (!opts)
		return false;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !*o->val)
			continue;
		if (strcmp(o->keyword, "host") == 0 && o->val[0] != '/' && !strchr(o->val, ',') &&
		    strlen(o->val) < hostlen) {
			snprintf(host, hostlen, "%s", o->val);
			ok = true;
		} else if (strcmp(o->keyword, "hostaddr") == 0 && !ok && strlen(o->val) < hostlen) {
			snprintf(host, hostlen, "%s", o->val);
			ok = true;
		} else if (strcmp(o->keyword, "port") == 0) {
			*port = atoi(o->val);
		}
	}
	PQconninfoFree(opts);
	return ok && *port > 0 && *port <= 65535;
}

/* Append "key=value" to out (at *used), quoting the value for libpq when needed. */
static bool conninfo_add(char *out, size_t outlen, size_t *used, const char *key, const char *val)
{
	bool quote = *val == '\0';
	size_t n = *used;

	for (const char *s = val; *s && !quote; s++)
		quote = isspace((unsigned char)*s) || *s == '\'' || *s == '\\';
#define PUT(ch)                                                                                    \
	do {                                                                                       \
		if (n + 1 >= outlen)                                                               \
			return false;                                                              \
		out[n++] = (ch);                                                                   \
	} while (0)
	if (n)
		PUT(' ');
	for (const char *s = key; *s; s++)
		PUT(*s);
	PUT('=');
	if (quote)
		PUT('\'');
	for (const char *s = val; *s; s++) {
		if (quote && (*s == '\'' || *s == '\\'))
			PUT('\\');
		PUT(*s);
	}
	if (quote)
		PUT('\'');
#undef PUT
	out[n] = '\0';
	*used = n;
	return true;
}

bool ha_primary_conninfo(const char *replication_conn, const char *host, int port,
			 const char *app_name, char *out, size_t outlen)
{
	PQconninfoOption *opts = NULL;
	size_t used = 0;
	bool has_app = false, ok = true;
	char portbuf[16];

	if (outlen == 0)
		return false;
	out[0] = '\0';
	if (replication_conn && *replication_conn) {
		opts = PQconninfoParse(replication_conn, NULL);
		if (!opts)
			return false;
		for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
			if (!o->val || !*o->val || strcmp(o->keyword, "host") == 0 ||
			    strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0)
				continue;
			if (strcmp(o->keyword, "application_name") == 0)
				has_app = true;
			ok = conninfo_add(out, outlen, &used, o->keyword, o->val);
		}
		PQconninfoFree(opts);
	}
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	ok = ok && conninfo_add(out, outlen, &used, "host", host) &&
	     conninfo_add(out, outlen, &used, "port", portbuf);
	if (ok && !has_app && app_name && *app_name)
		ok = conninfo_add(out, outlen, &used, "application_name", app_name);
	return ok;
}

bool ha_quote_sql_literal(const char *s, char *out, size_t outlen)
{
	size_t n = 0;

	if (outlen < 3)
		return false;
	out[n++] = '\'';
	for (; *s; s++) {
		if (n + (*s == '\'' ? 2 : 1) + 2 > outlen)
			return false;
		if (*s == '\'')
			out[n++] = '\'';
		out[n++] = *s;
	}
	out[n++] = '\'';
	out[n] = '\0';
	return true;
}

/* The name a postgresql.auto.conf line sets, in <name>; false for comments and blank lines. */
static bool conf_line_key(const char *line, size_t len, char *name, size_t namelen)
{
	size_t i = 0, k = 0;

	while (i < len && isspace((unsigned char)line[i]))
		i++;
	if (i == len || line[i] == '#')
		return false;
	while (i < len && (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == '.')) {
		if (k + 1 < namelen)
			name[k++] = (char)tolower((unsigned char)line[i]);
		i++;
	}
	name[k] = '\0';
	return k > 0;
}

char *ha_auto_conf_set(const char *content, const char *key, const char *value)
{
	size_t cap =
	    (content ? strlen(content) : 0) + (value ? 2 * strlen(value) : 0) + strlen(key) + 16;
	char *out = malloc(cap), name[128];
	size_t n = 0;
	const char *p = content ? content : "";

	if (!out)
		return NULL;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (!(conf_line_key(p, len, name, sizeof(name)) && strcasecmp(name, key) == 0)) {
			memcpy(out + n, p, len);
			n += len;
			out[n++] = '\n';
		}
		p += len + (nl ? 1 : 0);
	}
	if (value) {
		n += (size_t)sprintf(out + n, "%s = '", key);
		for (const char *s = value; *s; s++) {
			if (*s == '\'' || *s == '\\')
				out[n++] = *s;
			out[n++] = *s;
		}
		out[n++] = '\'';
		out[n++] = '\n';
	}
	out[n] = '\0';
	return out;
}
