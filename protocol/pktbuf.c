/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Building protocol messages into a growable buffer. See pktbuf.h for the contract.
 */
#include "protocol/pktbuf.h"

#include <stdlib.h>
#include <string.h>

void pktbuf_init(PktBuf *pb, size_t initial)
{
	memset(pb, 0, sizeof(*pb));
	if (initial == 0)
		initial = 256;
	pb->buf = malloc(initial);
	if (!pb->buf)
		pb->failed = true;
	else
		pb->cap = initial;
}

void pktbuf_init_fixed(PktBuf *pb, uint8_t *storage, size_t cap)
{
	memset(pb, 0, sizeof(*pb));
	pb->buf = storage;
	pb->cap = cap;
	pb->fixed = true;
}

void pktbuf_init_spill(PktBuf *pb, uint8_t *storage, size_t cap)
{
	memset(pb, 0, sizeof(*pb));
	pb->buf = storage;
	pb->cap = cap;
	pb->borrowed = true;
}

void pktbuf_cleanup(PktBuf *pb)
{
	if (!pb->fixed && !pb->borrowed)
		free(pb->buf);
	pb->buf = NULL;
	pb->cap = pb->len = 0;
}

void pktbuf_reset(PktBuf *pb)
{
	pb->len = 0;
	pb->msg_start = 0;
	pb->failed = pb->buf == NULL;
}

/* Make room for `need` more bytes; false (and `failed` set) when impossible. */
static bool pktbuf_reserve(PktBuf *pb, size_t need)
{
	size_t newcap;
	uint8_t *nb;

	if (pb->failed)
		return false;
	if (pb->len + need <= pb->cap)
		return true;
	if (pb->fixed) {
		pb->failed = true;
		return false;
	}
	newcap = pb->cap ? pb->cap : 256;
	while (newcap < pb->len + need)
		newcap *= 2;
	nb = pb->borrowed ? malloc(newcap) : realloc(pb->buf, newcap);
	if (!nb) {
		pb->failed = true;
		return false;
	}
	if (pb->borrowed) {
		if (pb->len)
			memcpy(nb, pb->buf, pb->len);
		pb->borrowed = false;
	}
	pb->buf = nb;
	pb->cap = newcap;
	return true;
}

void pktbuf_put_bytes(PktBuf *pb, const void *data, size_t len)
{
	if (!pktbuf_reserve(pb, len))
		return;
	if (len)
		memcpy(pb->buf + pb->len, data, len);
	pb->len += len;
}

void pktbuf_put_u8(PktBuf *pb, uint8_t v)
{
	pktbuf_put_bytes(pb, &v, 1);
}

void pktbuf_put_u16(PktBuf *pb, uint16_t v)
{
	uint8_t b[2];
	put_be16(b, v);
	pktbuf_put_bytes(pb, b, 2);
}

void pktbuf_put_u32(PktBuf *pb, uint32_t v)
{
	uint8_t b[4];
	put_be32(b, v);
	pktbuf_put_bytes(pb, b, 4);
}

void pktbuf_put_string(PktBuf *pb, const char *s)
{
	pktbuf_put_bytes(pb, s, strlen(s) + 1);
}

void pktbuf_start(PktBuf *pb, char type)
{
	if (type)
		pktbuf_put_u8(pb, (uint8_t)type);
	pb->msg_start = pb->len;
	pktbuf_put_u32(pb, 0);
}

void pktbuf_finish(PktBuf *pb)
{
	if (pb->failed)
		return;
	/* the length counts itself and the body, not the type byte */
	put_be32(pb->buf + pb->msg_start, (uint32_t)(pb->len - pb->msg_start));
}

static void pktbuf_write_fields(PktBuf *pb, char type, const char *severity, const char *sqlstate,
				const char *msg)
{
	pktbuf_start(pb, type);
	pktbuf_put_u8(pb, 'S');
	pktbuf_put_string(pb, severity);
	pktbuf_put_u8(pb, 'V');
	pktbuf_put_string(pb, severity);
	pktbuf_put_u8(pb, 'C');
	pktbuf_put_string(pb, sqlstate);
	pktbuf_put_u8(pb, 'M');
	pktbuf_put_string(pb, msg);
	pktbuf_put_u8(pb, 0);
	pktbuf_finish(pb);
}

void pktbuf_write_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg)
{
	pktbuf_write_fields(pb, 'E', severity, sqlstate, msg);
}

void pktbuf_write_notice(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg)
{
	pktbuf_write_fields(pb, 'N', severity, sqlstate, msg);
}

void pktbuf_write_ready(PktBuf *pb, char tx_state)
{
	pktbuf_start(pb, 'Z');
	pktbuf_put_u8(pb, (uint8_t)tx_state);
	pktbuf_finish(pb);
}

void pktbuf_write_auth_request(PktBuf *pb, uint32_t code, const void *data, size_t len)
{
	pktbuf_start(pb, 'R');
	pktbuf_put_u32(pb, code);
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish(pb);
}

void pktbuf_write_parameter_status(PktBuf *pb, const char *name, const char *value)
{
	pktbuf_start(pb, 'S');
	pktbuf_put_string(pb, name);
	pktbuf_put_string(pb, value);
	pktbuf_finish(pb);
}

void pktbuf_write_backend_key(PktBuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_start(pb, 'K');
	pktbuf_put_u32(pb, pid);
	pktbuf_put_u32(pb, key);
	pktbuf_finish(pb);
}

void pktbuf_write_query(PktBuf *pb, const char *sql)
{
	pktbuf_start(pb, 'Q');
	pktbuf_put_string(pb, sql);
	pktbuf_finish(pb);
}

void pktbuf_write_command_complete(PktBuf *pb, const char *tag)
{
	pktbuf_start(pb, 'C');
	pktbuf_put_string(pb, tag);
	pktbuf_finish(pb);
}

void pktbuf_write_row_description(PktBuf *pb, int ncols, const char *const *names,
				  const uint32_t *type_oids)
{
	pktbuf_start(pb, 'T');
	pktbuf_put_u16(pb, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		pktbuf_put_string(pb, names[i]);
		pktbuf_put_u32(pb, 0);	/* table oid */
		pktbuf_put_u16(pb, 0);	/* column number */
		pktbuf_put_u32(pb, type_oids ? type_oids[i] : 25);
		pktbuf_put_u16(pb, 0xffff); /* typlen -1 */
		pktbuf_put_u32(pb, 0xffffffffu); /* typmod -1 */
		pktbuf_put_u16(pb, 0);	/* text format */
	}
	pktbuf_finish(pb);
}

void pktbuf_write_data_row(PktBuf *pb, int ncols, const char *const *values)
{
	pktbuf_start(pb, 'D');
	pktbuf_put_u16(pb, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!values[i]) {
			pktbuf_put_u32(pb, 0xffffffffu);
		} else {
			size_t l = strlen(values[i]);
			pktbuf_put_u32(pb, (uint32_t)l);
			pktbuf_put_bytes(pb, values[i], l);
		}
	}
	pktbuf_finish(pb);
}
