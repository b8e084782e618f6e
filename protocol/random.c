/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Buffered CSPRNG output. See random.h.
 */
#include "protocol/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#define RANDOM_BLOCK 4096

static uint8_t block[RANDOM_BLOCK];
static size_t used = RANDOM_BLOCK; /* bytes of block already handed out */

bool random_bytes(void *out, size_t len)
{
	uint8_t *p = out;

	/* large requests go straight to OpenSSL */
	if (len > RANDOM_BLOCK / 4)
		return RAND_bytes(out, (int)len) == 1;
	while (len > 0) {
		size_t n;

		if (used == RANDOM_BLOCK) {
			if (RAND_bytes(block, RANDOM_BLOCK) != 1)
				return false;
			used = 0;
		}
		n = RANDOM_BLOCK - used < len ? RANDOM_BLOCK - used : len;
		memcpy(p, block + used, n);
		/* what was handed out does not stay in memory */
		OPENSSL_cleanse(block + used, n);
		used += n;
		p += n;
		len -= n;
	}
	return true;
}
