/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Tracked server parameters (client_encoding, DateStyle, TimeZone, standard_conforming_strings,
 * application_name, plus track_extra_parameters): what each client expects and what each server
 * currently has. Values are interned strings, so comparing a client's and a server's value is a
 * pointer comparison and a thousand clients with the same TimeZone share one copy.
 */
#ifndef PGPILOT_POOLER_VARCACHE_H
#define PGPILOT_POOLER_VARCACHE_H

#include "protocol/bytes.h"
#include "protocol/pktbuf.h"

#define VAR_MAX 8

typedef struct VarCache {
	const char *value[VAR_MAX]; /* interned; NULL = unknown */
} VarCache;

/* Set the tracked names: the fixed five plus a comma list; false if more than VAR_MAX. */
bool varcache_set_tracked(const char *extra_list, char *err, size_t errlen) _MUSTCHECK;
int varcache_count(void);
const char *varcache_name(int idx);
/* Index of a tracked parameter (case-insensitive), or -1. */
int varcache_index(const char *name);

/* Store a value (interned); false if the name is not tracked. */
bool varcache_set(VarCache *vc, const char *name, const char *value);
void varcache_set_idx(VarCache *vc, int idx, const char *value);
void varcache_copy(VarCache *dst, const VarCache *src);
void varcache_clear(VarCache *vc);

/*
 * Append "SET name='value';" for each parameter the client expects and the server differs in
 * ("RESET name;" when the client expects the default of an unreported parameter), and record
 * the new values on the server's cache. Returns the number of statements written.
 */
int varcache_build_sync(const VarCache *client, VarCache *server, PktBuf *sql);

/* Write ParameterStatus messages for every known value (client login). */
void varcache_write_status(const VarCache *vc, PktBuf *pb);

/* Interned strings, reference counted. */
const char *strpool_get(const char *s);
void strpool_put(const char *s);
size_t strpool_count(void);

#endif
