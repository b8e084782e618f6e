/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Asynchronous libpq on the libevent loop: a task connects (PQconnectStartParams/PQconnectPoll),
 * runs a list of SQL statements one after the other (PQsendQuery, PQconsumeInput/PQisBusy on
 * socket events) under one timeout, and ends in exactly one callback. On top of it, the health
 * probe: one query giving a node's role, timeline, WAL positions and upstream, time-stamped,
 * with a coded cause when the node is down.
 *
 * Interface: ha_pg_run / ha_pg_cancel (any SQL), ha_health_probe (the health query).
 */
#ifndef PGPILOT_HA_HEALTH_H
#define PGPILOT_HA_HEALTH_H

#include "ha/cluster.h"

#include <libpq-fe.h>

struct event_base;

/* Why a task failed, by layer (HAProxy's HCHK_STATUS idea). */
typedef enum HaPgError {
	HA_PGERR_NONE,     /* success */
	HA_PGERR_REFUSED,  /* connection refused / no such host: nothing listens */
	HA_PGERR_TIMEOUT,  /* the task's timeout fired */
	HA_PGERR_AUTH,     /* authentication or pg_hba refused us */
	HA_PGERR_STARTING, /* the server is starting up, shutting down or in crash recovery */
	HA_PGERR_CONNECT,  /* another connection failure */
	HA_PGERR_QUERY,    /* connected, a statement failed */
	HA_PGERR_NOMEM,    /* could not even start */
} HaPgError;
const char *ha_pg_error_name(HaPgError e);
/* The HaDownCause a failed probe of a member amounts to. */
HaDownCause ha_pg_error_down_cause(HaPgError e);

typedef struct HaPgTask HaPgTask;

/*
 * Completion of a task: <res> is the result of the last statement (NULL on failure), owned by
 * the task and freed after the callback returns; <error> is a one-line message when <e> is not
 * HA_PGERR_NONE. The task is gone once the callback has returned.
 */
typedef void (*HaPgDone)(void *arg, HaPgError e, const PGresult *res, const char *error);

/*
 * Connect with <conninfo> (a libpq conninfo or URI) overridden by <host>/<port> when they are
 * set (port 0 = keep), and run <sql>[0..nsql-1] in turn (each its own implicit transaction, so
 * ALTER SYSTEM works), stopping at the first failure. The whole task is bounded by <timeout_ms>.
 * The callback always fires from the loop, never from inside this call. Returns NULL only when
 * out of memory (no callback then).
 */
HaPgTask *ha_pg_run(struct event_base *base, const char *conninfo, const char *host, int port,
		    const char *const *sql, int nsql, int timeout_ms, HaPgDone cb, void *arg);
/* Abandon a task before its callback (no callback fires). */
void ha_pg_cancel(HaPgTask *t);

/* What the health query saw on one node. */
typedef struct HaHealth {
	HaPgError error;  /* HA_PGERR_NONE when the node answered */
	char detail[256]; /* the libpq or server message when it did not */
	int64_t at_ms;    /* monotonic ms when the answer (or failure) came */
	bool in_recovery;
	uint32_t timeline;  /* primary: current insert timeline; replica: received (or replayed) */
	uint64_t write_lsn; /* primary: pg_current_wal_lsn() */
	uint64_t flush_lsn; /* primary: pg_current_wal_flush_lsn() */
	uint64_t receive_lsn;          /* replica: pg_last_wal_receive_lsn() */
	uint64_t replay_lsn;           /* replica: pg_last_wal_replay_lsn() */
	char wal_status[32];           /* pg_stat_wal_receiver.status, "" when no receiver */
	char sender_host[HA_HOST_MAX]; /* whom the WAL receiver streams from, "" when unknown */
	int sender_port;
	char system_id[32];              /* pg_control_system().system_identifier */
	bool has_conninfo;               /* primary_conninfo was readable (local probe) */
	char upstream_host[HA_HOST_MAX]; /* host/port in primary_conninfo, "" = none */
	int upstream_port;
} HaHealth;

typedef void (*HaHealthDone)(void *arg, const HaHealth *h);

/*
 * Probe a node: connect (conninfo overridden by host/port as for ha_pg_run) and run the health
 * query. <local> adds primary_conninfo, which needs a superuser. Returns NULL only when out of
 * memory.
 */
HaPgTask *ha_health_probe(struct event_base *base, const char *conninfo, const char *host, int port,
			  bool local, int timeout_ms, HaHealthDone cb, void *arg);

/* Copy a probe result into a member of the view (healthy, state, role, LSNs, down cause). */
void ha_health_apply(const HaHealth *h, HaMember *m, bool local);

/* Monotonic clock in milliseconds. */
int64_t ha_now_ms(void);

#endif
