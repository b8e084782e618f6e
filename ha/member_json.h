/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The values of the DCS keys in Patroni's formats (members/<name>, status, history, config,
 * failover, sync), built and parsed with jansson, and the text helpers the actions need to talk
 * about a member: conn_url, host:port, primary_conninfo and its quoting in SQL and in
 * postgresql.auto.conf. Pure functions (no I/O, no clock): unit-tested on literal strings.
 */
#ifndef PGPILOT_HA_MEMBER_JSON_H
#define PGPILOT_HA_MEMBER_JSON_H

#include "ha/cluster.h"

#include <stddef.h>

/*
 * members/<name>: {"conn_url":"postgres://host:port/postgres","api_url":...,"state":"running",
 * "role":"primary"|"replica","version":...,"xlog_location":N,"timeline":T,"receive_lsn":N,
 * "replay_lsn":N,"tags":{"nofailover":false,"failover_priority":1}}. api_url and version may be
 * NULL (omitted). Returns a malloc'd string, NULL when out of memory.
 */
char *ha_member_json_build(const HaMember *m, const char *api_url, const char *version) _MUSTCHECK;

/*
 * Fill <m> (its name is kept; every other published field is reset first) from a members value,
 * ours or Patroni's ("master" is a primary, xlog_location is the only LSN Patroni gives: it
 * becomes write/flush for a primary, receive/replay for a replica). LSNs may be numbers or
 * "X/Y" text. in_recovery follows the role. False with a message on invalid JSON or a conn_url
 * that cannot be read; health fields are left for the caller.
 */
bool ha_member_json_parse(const char *json, size_t len, HaMember *m, char *err,
			  size_t errlen) _MUSTCHECK;

/* status: {"optime":N,"timeline":T}. Parse accepts a missing timeline (0). */
char *ha_status_json_build(uint64_t optime, uint32_t timeline) _MUSTCHECK;
bool ha_status_json_parse(const char *json, size_t len, uint64_t *optime,
			  uint32_t *timeline) _MUSTCHECK;

/*
 * history: [[tl,lsn,"reason","timestamp","new leader"],...] (Patroni's layout). Append returns a
 * new malloc'd array: <old> (NULL or invalid = empty) plus one entry. Parse replaces c->history.
 */
char *ha_history_json_append(const char *old, uint32_t timeline, uint64_t switch_lsn,
			     const char *reason, const char *timestamp,
			     const char *leader) _MUSTCHECK;
bool ha_history_json_parse(const char *json, size_t len, HaCluster *c) _MUSTCHECK;

/* config: Patroni's dynamic configuration; we read "pause" (maintenance) and
 * "synchronous_mode". set_pause keeps every other field of <old> (NULL = {}). */
bool ha_config_json_parse(const char *json, size_t len, bool *pause, bool *sync_mode) _MUSTCHECK;
char *ha_config_json_set_pause(const char *old, bool pause) _MUSTCHECK;

/* failover: {"leader":L,"member":C[,"pgpilot_force":true]}; Patroni's "candidate" is read too. */
char *ha_failover_json_build(const char *leader, const char *member, bool force) _MUSTCHECK;
bool ha_failover_json_parse(const char *json, size_t len, HaFailoverRequest *fo) _MUSTCHECK;

/* sync: {"leader":L,"sync_standby":S}; S may be null or "a,b" (the first is taken). */
bool ha_sync_json_parse(const char *json, size_t len, char *standby, size_t slen) _MUSTCHECK;

/*
 * Text helpers
 */

/* "host:port", "[v6]:port", "host" (port 0). False on an empty host, a bad port or overflow. */
bool ha_split_host_port(const char *s, char *host, size_t hostlen, int *port) _MUSTCHECK;
/* postgres://[user[:pw]@]host[:port][/db][?...] (also postgresql://); port 5432 by default. */
bool ha_conn_url_parse(const char *url, char *host, size_t hostlen, int *port) _MUSTCHECK;
/* The TCP host and port of a libpq conninfo (port 5432 by default). False when it has no host, a
 * socket directory or several hosts, or does not parse. */
bool ha_conninfo_host_port(const char *conninfo, char *host, size_t hostlen, int *port) _MUSTCHECK;

/*
 * primary_conninfo for following host:port: the keywords of <replication_conn> (NULL = none)
 * with host and port replaced, plus application_name=<app_name> unless it is given, each value
 * quoted for libpq when needed ('...' with \' and \\). False when <replication_conn> does not
 * parse or <out> is too small.
 */
bool ha_primary_conninfo(const char *replication_conn, const char *host, int port,
			 const char *app_name, char *out, size_t outlen) _MUSTCHECK;

/* <s> as an SQL string literal ('...' with quotes doubled; standard_conforming_strings on).
 * False when <out> is too small. */
bool ha_quote_sql_literal(const char *s, char *out, size_t outlen) _MUSTCHECK;

/*
 * postgresql.auto.conf with <key> set to <value> (quoted as ALTER SYSTEM does: quotes and
 * backslashes doubled), or removed when <value> is NULL. Every earlier line for <key> is
 * dropped, the new one goes last. Returns a malloc'd string, NULL when out of memory.
 */
char *ha_auto_conf_set(const char *content, const char *key, const char *value) _MUSTCHECK;

#endif
