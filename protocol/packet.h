/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Pure parsing of PostgreSQL v3 protocol framing: the 5-byte header of a regular message, the
 * untyped startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and the
 * name/value list of a StartupMessage. No I/O, no allocation: everything works on caller buffers.
 */
#ifndef PGPILOT_PROTOCOL_PACKET_H
#define PGPILOT_PROTOCOL_PACKET_H

#include "protocol/bytes.h"

#define PKT_HDR_LEN 5
#define PROTO_V3 0x00030000u
#define PROTO_CANCEL 80877102u
#define PROTO_SSL 80877103u
#define PROTO_GSSENC 80877104u
/* a startup packet larger than this is refused (PostgreSQL's MAX_STARTUP_PACKET_LENGTH) */
#define STARTUP_MAX_LEN 10000u
#define STARTUP_MAX_PARAMS 64

typedef enum PktStatus {
	PKT_OK,		/* a complete header is present and valid */
	PKT_INCOMPLETE, /* need more bytes */
	PKT_BAD,	/* invalid length: the peer is broken or hostile */
} PktStatus;

/*
 * Parse a regular message header. <avail> bytes are at <buf>; <max_len> is max_packet_size.
 * On PKT_OK, *type is the message type and *total the whole message size (type byte included).
 */
PktStatus pkt_parse_header(const uint8_t *buf, size_t avail, uint32_t max_len, uint8_t *type,
			   uint32_t *total);

/*
 * Parse a startup-phase packet header (length + code, no type byte). On PKT_OK, *total is the
 * whole packet length and *code the protocol code (PROTO_V3, PROTO_SSL, ...). Lengths below 8 or
 * above STARTUP_MAX_LEN are PKT_BAD.
 */
PktStatus pkt_parse_startup_header(const uint8_t *buf, size_t avail, uint32_t *total,
				   uint32_t *code);

typedef struct StartupParam {
	const char *name;
	const char *value;
} StartupParam;

typedef struct StartupParams {
	const char *user;
	const char *database;	/* defaults to user when absent, as PostgreSQL does */
	const char *application_name;
	const char *options;
	const char *replication;
	int nparams;
	StartupParam params[STARTUP_MAX_PARAMS]; /* every pair, user and database included */
} StartupParams;

/*
 * Parse the name/value body of a v3 StartupMessage: <body> points just after the protocol code,
 * <len> bytes long, and must stay alive while <out> is used (strings point into it). Returns false
 * with a PostgreSQL-style message in <err> when the list is malformed or has no user.
 */
bool pkt_parse_startup_params(const uint8_t *body, size_t len, StartupParams *out, char *err,
			      size_t errlen) _MUSTCHECK;

/* CancelRequest body: pid and key after the code. */
bool pkt_parse_cancel(const uint8_t *pkt, size_t len, uint32_t *pid, uint32_t *key) _MUSTCHECK;

/* Find a NUL-terminated string at <off> inside a message body; NULL if it runs past <len>. */
const char *pkt_get_string(const uint8_t *body, size_t len, size_t *off);

#endif
