/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Base64 with strict validation in front of OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock. OpenSSL
 * is lenient (it skips surrounding whitespace) and counts '=' padding in its decoded length, so
 * the text is checked here first and the padding subtracted. See base64.h.
 */
#include "protocol/base64.h"

#include <string.h>

#include <openssl/evp.h>

/* Work in blocks small enough for OpenSSL's int lengths: 48 bytes <-> 64 characters. */
#define ENC_CHUNK 48

size_t base64_encode(const void *src, size_t len, char *dst)
{
	const uint8_t *in = src;
	size_t out = 0;

	while (len > 0) {
		size_t n = len < ENC_CHUNK ? len : ENC_CHUNK;

		out += (size_t)EVP_EncodeBlock((unsigned char *)dst + out, in, (int)n);
		in += n;
		len -= n;
	}
	dst[out] = '\0';
	return out;
}

static bool is_b64_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '+' || ch == '/';
}

bool base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len)
{
	size_t pad = 0, total;

	if (len % 4 != 0)
		return false;
	/* '=' may only be the last one or two characters */
	if (len >= 1 && src[len - 1] == '=')
		pad++;
	if (len >= 2 && src[len - 2] == '=')
		pad++;
	if (pad == 1 && len >= 2 && src[len - 2] == '=')
		return false;
	for (size_t i = 0; i < len - pad; i++) {
		if (!is_b64_char(src[i]))
			return false;
	}
	total = BASE64_DECODED_MAX(len) - pad;
	if (total > cap)
		return false;

	/* decode one quantum at a time so the 3-byte output never overruns <dst> */
	for (size_t i = 0, o = 0; i < len; i += 4) {
		unsigned char block[3];
		size_t take;

		if (EVP_DecodeBlock(block, (const unsigned char *)src + i, 4) != 3)
			return false;
		take = (i + 4 == len) ? 3 - pad : 3;
		memcpy(dst + o, block, take);
		o += take;
	}
	*out_len = total;
	return true;
}
