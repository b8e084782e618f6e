/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * PktBuf: a growable byte buffer for building PostgreSQL protocol messages (and any other
 * length-prefixed wire format). Messages are built in place: pktbuf_start() writes the type byte
 * and a length placeholder, pktbuf_finish() fills the length in. Allocation failures are sticky:
 * once a write fails, `failed` stays set and later writes are ignored, so callers check once.
 */
#ifndef PGPILOT_PROTOCOL_PKTBUF_H
#define PGPILOT_PROTOCOL_PKTBUF_H

#include "protocol/bytes.h"

typedef struct PktBuf {
	uint8_t *buf;
	size_t len;	   /* bytes written */
	size_t cap;	   /* bytes allocated */
	size_t msg_start;  /* offset of the length field of the message being built */
	bool failed;	   /* an allocation failed; contents are unusable */
	bool fixed;	   /* buf is caller-owned and must not grow */
	bool borrowed;	   /* buf is caller-owned until it must grow (pktbuf_init_spill) */
} PktBuf;

void pktbuf_init(PktBuf *pb, size_t initial);
/* Use caller-owned storage that never grows; overflow sets `failed`. */
void pktbuf_init_fixed(PktBuf *pb, uint8_t *storage, size_t cap);
/* Start in caller-owned storage (a stack buffer) and move to the heap only if the message
 * outgrows it: no allocation in the common case, no size limit in the rare one. */
void pktbuf_init_spill(PktBuf *pb, uint8_t *storage, size_t cap);
void pktbuf_cleanup(PktBuf *pb);
void pktbuf_reset(PktBuf *pb);

/* Begin a typed message ('Q', 'E', ...); type 0 begins an untyped one (startup packet). */
void pktbuf_start(PktBuf *pb, char type);
/* Fill in the length of the message begun by pktbuf_start(). */
void pktbuf_finish(PktBuf *pb);

void pktbuf_put_u8(PktBuf *pb, uint8_t v);
void pktbuf_put_u16(PktBuf *pb, uint16_t v);
void pktbuf_put_u32(PktBuf *pb, uint32_t v);
void pktbuf_put_bytes(PktBuf *pb, const void *data, size_t len);
/* Writes the string and its terminating NUL. */
void pktbuf_put_string(PktBuf *pb, const char *s);

/* Whole common messages, each started and finished. */
void pktbuf_write_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg);
void pktbuf_write_notice(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg);
void pktbuf_write_ready(PktBuf *pb, char tx_state);
void pktbuf_write_auth_request(PktBuf *pb, uint32_t code, const void *data, size_t len);
void pktbuf_write_parameter_status(PktBuf *pb, const char *name, const char *value);
void pktbuf_write_backend_key(PktBuf *pb, uint32_t pid, uint32_t key);
void pktbuf_write_query(PktBuf *pb, const char *sql);
void pktbuf_write_command_complete(PktBuf *pb, const char *tag);
/* RowDescription of text columns; DataRow of NULL-able text values. */
void pktbuf_write_row_description(PktBuf *pb, int ncols, const char *const *names, const uint32_t *type_oids);
void pktbuf_write_data_row(PktBuf *pb, int ncols, const char *const *values);

#endif
