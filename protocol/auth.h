/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Password secrets and MD5 authentication (pure functions over OpenSSL). A secret comes from
 * userlist.txt or from a [databases] password: plain text, "md5<32 hex>" (md5(password || user)),
 * or "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
 */
#ifndef PGPILOT_PROTOCOL_AUTH_H
#define PGPILOT_PROTOCOL_AUTH_H

#include "protocol/bytes.h"

#define MD5_PASSWD_LEN 35 /* "md5" + 32 hex digits, without the NUL */
#define SCRAM_KEY_LEN 32  /* SHA-256 */
#define SCRAM_MAX_SALT 64

typedef enum SecretKind {
	SECRET_NONE,  /* no secret known for the user */
	SECRET_PLAIN, /* clear-text password */
	SECRET_MD5,   /* md5(password || user), as "md5..." */
	SECRET_SCRAM, /* SCRAM-SHA-256 verifier */
} SecretKind;

typedef struct ScramSecret {
	int iterations;
	uint8_t salt[SCRAM_MAX_SALT];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
} ScramSecret;

/* Which kind of secret a userlist/config password string is. */
SecretKind auth_secret_kind(const char *secret);
const char *secret_kind_name(SecretKind kind);

/* "md5" || hex(md5(password || user)) into out (MD5_PASSWD_LEN + 1 bytes). */
bool md5_password_hash(const char *user, const char *password, char *out) _MUSTCHECK;

/*
 * The answer to AuthenticationMD5Password: "md5" || hex(md5(hex_part_of(md5secret) || salt)).
 * <md5secret> is an "md5..." secret (from md5_password_hash or userlist). out as above.
 */
bool md5_salted_response(const char *md5secret, const uint8_t salt[4], char *out) _MUSTCHECK;

/* Parse "SCRAM-SHA-256$iter:salt$stored:server"; false when malformed. */
bool scram_parse_secret(const char *secret, ScramSecret *out) _MUSTCHECK;

/* Derive a verifier from a clear-text password (SASLprep applied where ASCII; fresh random salt). */
bool scram_secret_from_password(const char *password, ScramSecret *out) _MUSTCHECK;

#endif
