/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * DNS wire format basics shared by the UPDATE encoder, the TSIG code and the reply parser: domain
 * names (text <-> wire, RFC 1035 limits), a bounded writer with nsupdate-style name compression,
 * and a bounded reader that never reads past its buffer, whatever the bytes say.
 */
#ifndef PGPILOT_DNS_WIRE_H
#define PGPILOT_DNS_WIRE_H

#include "protocol/bytes.h"

#define DNS_MAX_NAME 255 /* wire length, root label included (RFC 1035 3.1) */
#define DNS_MAX_LABEL 63
#define DNS_HEADER_SIZE 12
#define DNS_MAX_MSG 65535
#define DNS_UDP_MAX 512 /* no EDNS is sent, so larger messages go over TCP */

#define DNS_TYPE_A 1
#define DNS_TYPE_SOA 6
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_TSIG 250
#define DNS_TYPE_ANY 255
#define DNS_CLASS_IN 1
#define DNS_CLASS_NONE 254
#define DNS_CLASS_ANY 255
#define DNS_OPCODE_UPDATE 5

/* A name in uncompressed wire form: length-prefixed labels ending with the root label. */
typedef struct DnsName {
	uint8_t wire[DNS_MAX_NAME];
	size_t len; /* 1 for the root name */
} DnsName;

/*
 * Parse a host-style name ("primary.pg.test" or "primary.pg.test.", "." for the root) into wire
 * form. The name is taken as absolute either way. Accepted label characters: letters, digits,
 * '-' and '_'. Rejected with a message in <err>: empty labels, labels over 63 bytes, names over
 * 255 wire bytes, any other character.
 */
bool dns_name_from_text(DnsName *out, const char *text, char *err, size_t errlen) _MUSTCHECK;

/*
 * Make <name> absolute: a name ending with '.' is kept, any other gets ".<zone>" appended ("@"
 * means the zone itself). Returns false when <out> is too small.
 */
bool dns_name_qualify(char *out, size_t outlen, const char *name, const char *zone) _MUSTCHECK;

/* Text form with a trailing dot ("." for the root); truncated to <len>. */
void dns_name_to_text(const DnsName *name, char *buf, size_t len);
/* Lower-case in place (the canonical form RFC 8945 MACs). */
void dns_name_lower(DnsName *name);
bool dns_name_equal(const DnsName *a, const DnsName *b); /* ASCII case-insensitive */

/* Writes into caller storage; an overrun sets `overflow` and later writes are dropped. */
typedef struct DnsWriter {
	uint8_t *buf;
	size_t len;
	size_t cap;
	bool overflow;
	int ncomp; /* names (and their suffixes) already written, for compression */
	struct {
		uint16_t off;
		DnsName name;
	} comp[16];
} DnsWriter;

void dns_writer_init(DnsWriter *w, uint8_t *buf, size_t cap);
void dns_writer_u8(DnsWriter *w, uint8_t v);
void dns_writer_u16(DnsWriter *w, uint16_t v);
void dns_writer_u32(DnsWriter *w, uint32_t v);
void dns_writer_u48(DnsWriter *w, uint64_t v);
void dns_writer_bytes(DnsWriter *w, const void *p, size_t n);
/*
 * Write <name>. With <compress>, the longest suffix already written is replaced by a pointer to
 * it (as nsupdate does) and the new suffixes are remembered; without it (TSIG owner and algorithm,
 * RFC 8945 4.2) the name is written whole and not remembered.
 */
void dns_writer_name(DnsWriter *w, const DnsName *name, bool compress);

/* Reads from a bounded buffer; an overrun sets `failed`, returns zeros, and later reads fail. */
typedef struct DnsReader {
	const uint8_t *buf;
	size_t len;
	size_t off;
	bool failed;
} DnsReader;

void dns_reader_init(DnsReader *r, const uint8_t *buf, size_t len);
uint8_t dns_reader_u8(DnsReader *r);
uint16_t dns_reader_u16(DnsReader *r);
uint32_t dns_reader_u32(DnsReader *r);
uint64_t dns_reader_u48(DnsReader *r);
/* Point at the next <n> bytes and skip them; NULL (and failed) when fewer remain. */
const uint8_t *dns_reader_bytes(DnsReader *r, size_t n);
/*
 * Read a possibly compressed name into <out> (may be NULL to skip it). Pointers must point
 * strictly backwards, so loops are impossible; the expanded name must respect the 63/255 limits.
 * Returns false (and sets failed) on any violation.
 */
bool dns_reader_name(DnsReader *r, DnsName *out) _MUSTCHECK;

#endif
