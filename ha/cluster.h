/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The cluster view: what one pgpilot knows about its cluster, read from the DCS keys (leader,
 * members/<name>, status, sync, failover, history) and refreshed by its health probes. Plain
 * fixed-size structs with no pointers, so a view can be copied, compared and built in unit tests;
 * the decision rules (rules.h) take it as their input. Also the LSN text helpers.
 */
#ifndef PGPILOT_HA_CLUSTER_H
#define PGPILOT_HA_CLUSTER_H

#include "protocol/bytes.h"

#include <stdint.h>

#define HA_NAME_MAX 64    /* member and cluster names, NUL included */
#define HA_HOST_MAX 256   /* host names, NUL included */
#define HA_URL_MAX 256    /* api_url, NUL included */
#define HA_MAX_MEMBERS 32 /* members kept in a view; more are refused by ha_cluster_add_member */
#define HA_MAX_HISTORY 16 /* most recent timeline switches kept */
#define HA_LSN_BUFLEN 20  /* "FFFFFFFF/FFFFFFFF" + NUL, rounded up */
#define HA_FAILOVER_PRIORITY_DEFAULT 1

/* The role a member reports (Patroni's "role" field). */
typedef enum HaRole {
	HA_ROLE_UNKNOWN, /* not reported or not understood */
	HA_ROLE_PRIMARY, /* "primary" ("master" from older Patroni) */
	HA_ROLE_REPLICA, /* "replica" (also "standby_leader", "sync_standby") */
} HaRole;
const char *ha_role_name(HaRole r);
/* Patroni's spellings are accepted; anything else is HA_ROLE_UNKNOWN. */
HaRole ha_role_from_name(const char *s);

/* The state of a member's PostgreSQL (Patroni's "state" field). */
typedef enum HaPgState {
	HA_PG_UNKNOWN,      /* not reported yet */
	HA_PG_RUNNING,      /* accepting connections */
	HA_PG_STARTING,     /* postmaster up, not yet accepting connections */
	HA_PG_STOPPING,     /* shutdown in progress */
	HA_PG_STOPPED,      /* cleanly stopped (or never started) */
	HA_PG_CRASHED,      /* postmaster gone without a clean shutdown */
	HA_PG_START_FAILED, /* the last start attempt failed */
	HA_PG_REWINDING,    /* pg_rewind in progress */
} HaPgState;
const char *ha_pg_state_name(HaPgState s);
HaPgState ha_pg_state_from_name(const char *s);

/* Why a member is not healthy (HA_DOWN_NONE when it is). */
typedef enum HaDownCause {
	HA_DOWN_NONE,        /* healthy */
	HA_DOWN_UNREACHABLE, /* connect or probe timed out / refused */
	HA_DOWN_PG_DOWN,     /* its agent answers, its PostgreSQL does not run */
	HA_DOWN_QUERY,       /* connected, the health query failed */
	HA_DOWN_STALE,       /* not seen for too long */
	HA_DOWN_NO_KEY,      /* its members/<name> key is gone (its lease expired) */
} HaDownCause;
const char *ha_down_cause_name(HaDownCause c);

/* Member tags (Patroni's "tags" object). */
typedef struct HaTags {
	bool nofailover;       /* never promoted automatically */
	bool noloadbalance;    /* never given read-only traffic */
	int failover_priority; /* higher wins ties; <= 0 means never promoted (like nofailover) */
} HaTags;

typedef struct HaMember {
	char name[HA_NAME_MAX];
	char host[HA_HOST_MAX]; /* PostgreSQL host (from conn_url) */
	int port;               /* PostgreSQL port */
	char api_url[HA_URL_MAX];
	HaRole role;
	HaPgState state;
	uint32_t timeline;    /* 0 = unknown */
	uint64_t receive_lsn; /* replica: last WAL received (pg_last_wal_receive_lsn) */
	uint64_t replay_lsn;  /* replica: last WAL replayed (pg_last_wal_replay_lsn) */
	uint64_t write_lsn;   /* primary: pg_current_wal_lsn */
	uint64_t flush_lsn;   /* primary: pg_current_wal_flush_lsn */
	HaTags tags;
	bool in_recovery;     /* pg_is_in_recovery() as last seen */
	bool healthy;         /* last check or probe succeeded */
	int64_t last_seen_ms; /* when it was last seen healthy (monotonic ms; 0 = never) */
	HaDownCause down_cause;
} HaMember;

/* One timeline switch: timeline <timeline> ended at <switch_lsn> (history key / .history file). */
typedef struct HaHistoryEntry {
	uint32_t timeline;
	uint64_t switch_lsn;
} HaHistoryEntry;

/* A manual FAILOVER request (the failover key). */
typedef struct HaFailoverRequest {
	bool present;
	char candidate[HA_NAME_MAX]; /* the member to promote */
	bool force;                  /* FORCE: skip the lag check */
	int64_t requested_ms;        /* when it was seen first */
} HaFailoverRequest;

typedef struct HaCluster {
	char name[HA_NAME_MAX];
	/* the leader key; leader[0] == '\0' when there is none */
	char leader[HA_NAME_MAX];
	int64_t leader_lease;        /* etcd lease id the key is attached to */
	int64_t leader_mod_revision; /* for the guarded delete */
	int64_t
	    leader_expiry_ms; /* estimate: when the lease runs out unless renewed; 0 = unknown */
	/* the status key, written by the leader after each renewal */
	bool has_status;
	uint64_t status_optime; /* the leader's last published WAL position */
	uint32_t status_timeline;
	HaMember members[HA_MAX_MEMBERS];
	int n_members;
	HaHistoryEntry history[HA_MAX_HISTORY]; /* oldest first */
	int n_history;
	bool maintenance; /* MAINTENANCE ON: no automatic failover */
	HaFailoverRequest failover;
	bool sync_mode;                 /* synchronous_mode on (rule 8; not used yet) */
	char sync_standby[HA_NAME_MAX]; /* the sync key's standby, "" = none */
	int64_t revision;               /* etcd revision the view was read at */
	int64_t read_ms;                /* when it was read */
} HaCluster;

/* Zero the view; tags of members added later default to failover_priority 1. */
void ha_cluster_init(HaCluster *c);

/*
 * Add a member called <name>, zeroed but for its name and default tags. Returns the new entry,
 * the existing one when <name> is already there, or NULL when the view is full or the name is
 * empty or too long.
 */
HaMember *ha_cluster_add_member(HaCluster *c, const char *name);
/* The member called <name>, or NULL. */
const HaMember *ha_cluster_find_member(const HaCluster *c, const char *name);
HaMember *ha_cluster_find_member_mut(HaCluster *c, const char *name);
/* Record a timeline switch (kept sorted by timeline; the oldest drops out when full). */
void ha_cluster_add_history(HaCluster *c, uint32_t timeline, uint64_t switch_lsn);
/* The switch point of <timeline>, false when the history does not know it. */
bool ha_cluster_switch_lsn(const HaCluster *c, uint32_t timeline, uint64_t *lsn) _MUSTCHECK;

static inline bool ha_cluster_has_leader(const HaCluster *c)
{
	return c->leader[0] != '\0';
}

/* The member's WAL position: max(receive, replay) in recovery, max(write, flush) otherwise. */
uint64_t ha_member_lsn(const HaMember *m);

/*
 * Parse PostgreSQL's LSN text "X/Y" (each 1..8 hex digits, either case) into *out. Returns false
 * on anything else (empty, missing slash, too many digits, trailing characters).
 */
bool ha_lsn_parse(const char *s, uint64_t *out) _MUSTCHECK;
/* Format as PostgreSQL does ("%X/%X", upper case); buf needs HA_LSN_BUFLEN bytes. Returns buf. */
const char *ha_lsn_format(uint64_t lsn, char *buf, size_t len);

#endif
