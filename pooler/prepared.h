/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Protocol-level named prepared statements in transaction and statement pooling (the pure
 * parts): a registry of distinct statements, each named alike on every server; the per-client
 * map from the client's names to them; the per-server set of statements a backend holds (LRU);
 * the FIFO of replies a server link still owes, which tells where a synthesized ParseComplete or
 * CloseComplete goes and which replies to swallow; parsing and rebuilding of Parse, Bind,
 * Describe and Close. The glue to sockets lives in client.c and server.c.
 *
 * Interface: ps_stmt_intern, ps_stmt_ref/unref, ps_client_*, ps_server_*, ps_queue_*,
 * ps_read_*, ps_build_*.
 */
#ifndef PGPILOT_POOLER_PREPARED_H
#define PGPILOT_POOLER_PREPARED_H

#include "protocol/bytes.h"
#include "protocol/pktbuf.h"

#include <stddef.h>

/* Server-side names look like PGPILOT_<id>_<16 hex digits>; NAMEDATALEN is 64 in PostgreSQL. */
#define PS_SERVER_NAME_LEN 48

/* One distinct statement: the Parse body after the name (query, parameter count and types).
 * Shared by every client that parses the same thing; refcounted (client maps, server sets and
 * pending replies each hold a reference). */
typedef struct PsStmt {
	struct PsStmt *hnext;		/* registry hash chain */
	uint64_t hash;
	uint64_t id;
	uint32_t refs;
	uint32_t body_len;
	char server_name[PS_SERVER_NAME_LEN];
	uint8_t body[];
} PsStmt;

/* The statement with this Parse body, created if new; the caller owns one reference. NULL on
 * out of memory. */
PsStmt *ps_stmt_intern(const uint8_t *body, uint32_t len);
void ps_stmt_ref(PsStmt *st);
/* Drop a reference; the statement is freed with the last one. */
void ps_stmt_unref(PsStmt *st);
/* Distinct statements alive (SHOW-style statistics and tests). */
size_t ps_stmt_count(void);
/* The registry's and client maps' hash: SipHash-2-4 under a per-process random key. */
uint64_t ps_hash(const uint8_t *data, size_t len);

/* --- a client's statements: its name -> PsStmt --- */

typedef struct PsClientEntry {
	struct PsClientEntry *next;
	PsStmt *stmt;
	uint32_t hash;
	char name[];
} PsClientEntry;

typedef struct PsClientMap {
	PsClientEntry **tab;
	uint32_t size;	/* buckets, a power of two (0 until the first insert) */
	uint32_t count;
} PsClientMap;

PsStmt *ps_client_lookup(const PsClientMap *m, const char *name);
/* Map <name> to <st> (taking a new reference), replacing an older mapping. False on OOM. */
bool ps_client_set(PsClientMap *m, const char *name, PsStmt *st) _MUSTCHECK;
/* Forget <name>; true if it was known. */
bool ps_client_remove(PsClientMap *m, const char *name);
/* Forget everything (DEALLOCATE ALL, DISCARD ALL, the client leaving). */
void ps_client_clear(PsClientMap *m);

/* --- what a server holds, and what its link still owes --- */

/* Kinds of outstanding replies, one per message sent (or answered) on a link. */
typedef enum PsReplyKind {
	PS_RQ_PARSE,	/* ParseComplete '1' */
	PS_RQ_BIND,	/* BindComplete '2' */
	PS_RQ_DESCRIBE, /* ParameterDescription 't' (statements), then 'T' or NoData 'n' */
	PS_RQ_EXECUTE,	/* rows, COPY, ... up to 'C', EmptyQuery 'I' or PortalSuspended 's' */
	PS_RQ_CLOSE,	/* CloseComplete '3' */
	PS_RQ_SYNC,	/* ReadyForQuery 'Z' */
	PS_RQ_QUERY,	/* simple Query or FunctionCall: everything up to 'Z' */
} PsReplyKind;
const char *ps_reply_kind_name(PsReplyKind k);

typedef enum PsReplyAction {
	PS_ACT_FORWARD, /* the server answers; the client gets the answer */
	PS_ACT_SWALLOW, /* the server answers something the client did not ask for: drop it */
	PS_ACT_SYNTH,	/* the server is not asked: the pooler answers when the entry's turn comes */
} PsReplyAction;

typedef struct PsPending {
	uint8_t kind;	/* PsReplyKind */
	uint8_t action; /* PsReplyAction */
	PsStmt *stmt;	/* a Parse sent to the server: forgotten by the server if it never ran */
} PsPending;

typedef struct PsServerEntry {
	struct PsServerEntry *hnext;		/* hash chain, keyed by stmt id */
	struct PsServerEntry *lru_prev, *lru_next; /* lru_next towards the most recently used */
	PsStmt *stmt;
} PsServerEntry;

typedef struct PsServer {
	/* statements the backend holds */
	PsServerEntry **tab;
	uint32_t size, count;
	PsServerEntry *lru_head, *lru_tail; /* head = least recently used */
	/* FIFO of replies owed on the current link (a ring) */
	PsPending *q;
	uint32_t q_head, q_len, q_cap;
	bool skipping;	/* an extended-protocol error: the server ignores everything up to Sync */
} PsServer;

PsServer *ps_server_new(void);
void ps_server_free(PsServer *ps);
bool ps_server_has(const PsServer *ps, const PsStmt *st);
/* Record that the backend holds <st> (most recently used). False on OOM. */
bool ps_server_add(PsServer *ps, PsStmt *st) _MUSTCHECK;
void ps_server_remove(PsServer *ps, const PsStmt *st);
/* Mark <st> most recently used. */
void ps_server_touch(PsServer *ps, const PsStmt *st);
/* The least recently used statement, or NULL. */
PsStmt *ps_server_lru(const PsServer *ps);
/* The backend dropped everything (DEALLOCATE ALL, DISCARD ALL). */
void ps_server_forget_all(PsServer *ps);

/* Append an outstanding reply; <stmt> gets a reference of the queue's own. False on OOM. */
bool ps_queue_push(PsServer *ps, PsReplyKind kind, PsReplyAction action, PsStmt *stmt) _MUSTCHECK;
static inline bool ps_queue_empty(const PsServer *ps)
{
	return ps->q_len == 0;
}
/* The type of the message to synthesize now ('1' or '3') if the head entry is a synthesized
 * one, else 0. */
uint8_t ps_queue_head_synth(const PsServer *ps);
/* Remove the head entry (after its synthesized reply was sent). */
void ps_queue_pop(PsServer *ps);
/* Drop every entry (a new link starts, or the link broke). */
void ps_queue_reset(PsServer *ps);

typedef enum PsVerdict {
	PS_V_FORWARD, /* pass the message on */
	PS_V_SWALLOW, /* the reply to something the pooler injected: drop it */
} PsVerdict;

/*
 * Account for one message from the server. An ErrorResponse to an extended-protocol message
 * drops the entries up to the next Sync, as the server skips those messages (a Parse among them
 * is forgotten by the server set); if no Sync is queued yet, <skipping> is set until the client
 * sends one. Asynchronous messages (NoticeResponse, ParameterStatus, NotificationResponse) and
 * anything unexpected pass without changing the FIFO.
 */
PsVerdict ps_queue_reply(PsServer *ps, uint8_t type);

/* --- messages --- */

typedef enum PsReadStatus {
	PS_READ_OK,
	PS_READ_INCOMPLETE, /* more bytes of the message are needed */
	PS_READ_BAD,	    /* malformed */
} PsReadStatus;

/* A Parse message: pkt points at its type byte, total bytes. The body is what follows the
 * statement name (query, parameter count, types). */
typedef struct PsParseMsg {
	const char *name;
	const char *query;
	const uint8_t *body;
	uint32_t body_len;
	uint16_t nparams;
} PsParseMsg;
PsReadStatus ps_read_parse(const uint8_t *pkt, uint32_t total, PsParseMsg *out);

/* The portal and statement names at the start of a Bind, from the <avail> bytes present.
 * <rest> is the offset of what follows the statement name. */
PsReadStatus ps_read_bind(const uint8_t *pkt, uint32_t avail, const char **portal,
			  const char **stmt, uint32_t *rest);

/* Describe or Close: the kind ('S' or 'P') and the name. */
PsReadStatus ps_read_target(const uint8_t *pkt, uint32_t total, uint8_t *kind, const char **name);

/* Parse <st> under its server name. */
void ps_build_parse(PktBuf *pb, const PsStmt *st);
/* The Bind <pkt> (complete, <total> bytes) with its statement name replaced by <name>. */
bool ps_build_bind(PktBuf *pb, const uint8_t *pkt, uint32_t total, const char *name) _MUSTCHECK;
/* Describe or Close (<type> 'D' or 'C') of statement or portal <kind> <name>. */
void ps_build_target(PktBuf *pb, uint8_t type, uint8_t kind, const char *name);
/* A message of type <type> with an empty body (ParseComplete, CloseComplete). */
void ps_build_empty(PktBuf *pb, uint8_t type);

/* Does a CommandComplete tag say the session's prepared statements are gone? */
bool ps_tag_drops_all(const char *tag, size_t len);
/* Is a CommandComplete tag "PREPARE" or "DEALLOCATE": SQL that created or dropped one named
 * statement, which may be one of pgpilot's? */
bool ps_tag_names_statement(const char *tag, size_t len);

#endif
