/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Cryptographically random bytes for hot paths (cancel keys, md5 salts at every login). OpenSSL
 * 3's RAND_bytes() costs thousands of instructions per call whatever the size, so bytes are
 * drawn from it in 4 KiB blocks and handed out in order; no byte is ever handed out twice.
 */
#ifndef PGPILOT_PROTOCOL_RANDOM_H
#define PGPILOT_PROTOCOL_RANDOM_H

#include "protocol/bytes.h"

/* Fill <out> with <len> random bytes; false when OpenSSL's generator fails. Not thread-safe:
 * the pooler is single-threaded. */
bool random_bytes(void *out, size_t len) _MUSTCHECK;

#endif
