/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash for tables whose keys a client
 * chooses (prepared statement names and bodies). With a secret random key a client cannot
 * compute which names share a bucket, so it cannot flood one chain.
 */
#ifndef PGPILOT_PROTOCOL_SIPHASH_H
#define PGPILOT_PROTOCOL_SIPHASH_H

#include "protocol/bytes.h"

#define SIPHASH_KEY_LEN 16

/* SipHash-2-4 of <len> bytes at <data> under the 16-byte <key> (read as two little-endian
 * 64-bit words, as the reference implementation does). */
uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len);

#endif
