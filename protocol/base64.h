/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Standard base64 (RFC 4648, "+/" alphabet, '=' padding) over OpenSSL's block coder. Decoding is
 * strict: no whitespace, no missing padding, no characters outside the alphabet, because every
 * caller (SCRAM messages and verifiers) must refuse anything a conforming peer would not send.
 */
#ifndef PGPILOT_PROTOCOL_BASE64_H
#define PGPILOT_PROTOCOL_BASE64_H

#include "protocol/bytes.h"

/* Characters needed to encode <n> bytes, without the NUL. */
#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)
/* Upper bound of the bytes <n> characters decode to. */
#define BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/*
 * Encode <len> bytes of <src> into <dst>, which must hold BASE64_ENCODED_LEN(len) + 1 bytes; the
 * result is NUL-terminated. Returns the number of characters written (without the NUL).
 */
size_t base64_encode(const void *src, size_t len, char *dst);

/*
 * Decode <len> characters of <src> (not necessarily NUL-terminated) into <dst> of <cap> bytes.
 * On success *out_len is the number of bytes decoded. False when the text is not canonical
 * padded base64 or the result does not fit in <cap>; <dst> may then hold garbage.
 */
bool base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap,
		   size_t *out_len) _MUSTCHECK;

#endif
