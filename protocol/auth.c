/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Password secrets and MD5 authentication, computed exactly as PostgreSQL does: the stored form
 * is "md5" || hex(md5(password || user)) and the answer to a salted challenge is
 * "md5" || hex(md5(hex part of the stored form || salt)). SCRAM verifiers are in scram.c.
 */
#include "protocol/auth.h"
#include "protocol/scram.h"

#include <string.h>

#include <openssl/evp.h>

#define MD5_HEX_LEN 32

static bool is_md5_secret(const char *secret)
{
	return strncmp(secret, "md5", 3) == 0 && strlen(secret) == MD5_PASSWD_LEN &&
	       strspn(secret + 3, "0123456789abcdef") == MD5_HEX_LEN;
}

SecretKind auth_secret_kind(const char *secret)
{
	ScramSecret scram;

	if (!secret || !secret[0])
		return SECRET_NONE;
	/* the same tests PostgreSQL's get_password_type() makes, in the same order */
	if (is_md5_secret(secret))
		return SECRET_MD5;
	if (scram_parse_secret(secret, &scram))
		return SECRET_SCRAM;
	return SECRET_PLAIN;
}

const char *secret_kind_name(SecretKind kind)
{
	switch (kind) {
	case SECRET_NONE:
		return "none";
	case SECRET_PLAIN:
		return "plain";
	case SECRET_MD5:
		return "md5";
	case SECRET_SCRAM:
		return "scram-sha-256";
	}
	return "unknown";
}

/* out = "md5" || hex(md5(a || b)), NUL-terminated. */
static bool md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char *out)
{
	static const char hex[] = "0123456789abcdef";
	/*
	 * The algorithm is fetched once and the context reused: with OpenSSL 3 an implicit fetch
	 * per digest (EVP_md5() in EVP_DigestInit_ex) costs more than the digest itself, and a
	 * login computes two or three of them. Single-threaded, so one context serves.
	 */
	static EVP_MD *md5_md;
	static EVP_MD_CTX *ctx;
	uint8_t digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	bool ok;

	if (!md5_md && !(md5_md = EVP_MD_fetch(NULL, "MD5", NULL)))
		return false; /* MD5 can be missing (FIPS provider) */
	if (!ctx && !(ctx = EVP_MD_CTX_new()))
		return false;
	ok = EVP_DigestInit_ex2(ctx, md5_md, NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
	     EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 &&
	     dlen == MD5_HEX_LEN / 2;
	if (!ok)
		return false;
	memcpy(out, "md5", 3);
	for (unsigned int i = 0; i < dlen; i++) {
		out[3 + 2 * i] = hex[digest[i] >> 4];
		out[3 + 2 * i + 1] = hex[digest[i] & 0xf];
	}
	out[MD5_PASSWD_LEN] = '\0';
	return true;
}

bool md5_password_hash(const char *user, const char *password, char *out)
{
	return md5_hex2(password, strlen(password), user, strlen(user), out);
}

bool md5_salted_response(const char *md5secret, const uint8_t salt[4], char *out)
{
	if (!is_md5_secret(md5secret))
		return false;
	return md5_hex2(md5secret + 3, MD5_HEX_LEN, salt, 4, out);
}
