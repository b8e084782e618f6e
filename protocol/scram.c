/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * SCRAM-SHA-256 message processing for both sides of the exchange, and the verifier format
 * PostgreSQL keeps in pg_authid ("SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>").
 * Parsing is strict: a message that deviates from RFC 5802 as PostgreSQL and libpq speak it is
 * refused with a message in `err`. Secrets are compared with CRYPTO_memcmp. PBKDF2 results are
 * cached (bounded, keyed by a peppered HMAC) so a password is derived once per salt. See scram.h.
 */
#include "protocol/scram.h"
#include "protocol/base64.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SECRET_PREFIX "SCRAM-SHA-256$"
#define NONCE_RAW_LEN 18        /* random bytes in a nonce, as libpq and PostgreSQL draw */
#define DEFAULT_ITERATIONS 4096 /* PostgreSQL's scram_iterations default */
#define DEFAULT_SALT_LEN 16     /* PostgreSQL's SCRAM_DEFAULT_SALT_LEN */
/*
 * The client runs PBKDF2 with the count the server sends, in the event loop: cap it so a hostile
 * or misconfigured server cannot stall us for minutes. Ten million is about two seconds of CPU
 * and far above any sane scram_iterations; the key cache makes it once per password, salt and
 * count, not once per server connection.
 */
#define CLIENT_MAX_ITERATIONS 10000000
/* channel-binding attribute of client-final, base64 of the gs2 header "n,," or "y,," */
#define CBIND_N "biws"
#define CBIND_Y "eSws"

/* --- crypto primitives --- */

static bool sha256(const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	return EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL) == 1 && olen == SCRAM_KEY_LEN;
}

static bool hmac256(const uint8_t *key, size_t keylen, const void *data, size_t len,
		    uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &olen))
		return false;
	return olen == SCRAM_KEY_LEN;
}

/* --- derived key cache ---
 *
 * PBKDF2 runs in the event loop, so each (password, salt, iteration count) is derived once and
 * its ClientKey and ServerKey kept in a small table. An entry is found by an HMAC of those three
 * under a random per-process pepper: the table holds no password, and nothing in it can be
 * tested against a guess without the pepper. Least recently used entries make room.
 */
typedef struct KeyCacheEntry {
	uint8_t id[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	uint64_t last_used; /* 0: free slot */
} KeyCacheEntry;

static KeyCacheEntry key_cache[SCRAM_KEY_CACHE_SIZE];
static uint64_t key_cache_clock;
static uint8_t pepper[SCRAM_KEY_LEN];
static bool have_pepper;
static ScramKeyCacheStats key_cache_stats;

static bool get_pepper(void)
{
	if (!have_pepper)
		have_pepper = RAND_bytes(pepper, sizeof(pepper)) == 1;
	return have_pepper;
}

/* HMAC(pepper, <tag> NUL len(a) a len(b) b n), lengths as 4 bytes: no two inputs meet. */
static bool peppered_id(const char *tag, const void *a, size_t alen, const void *b, size_t blen,
			uint32_t n, uint8_t out[SCRAM_KEY_LEN])
{
	size_t tlen = strlen(tag) + 1, len;
	uint8_t *buf, *p;
	bool ok;

	if (!get_pepper() || alen > UINT32_MAX || blen > UINT32_MAX || alen > SIZE_MAX / 2 ||
	    blen > SIZE_MAX / 2 - alen - tlen - 12)
		return false;
	len = tlen + 12 + alen + blen;
	p = buf = malloc(len);
	if (!buf)
		return false;
	memcpy(p, tag, tlen);
	p += tlen;
	put_be32(p, (uint32_t)alen);
	memcpy(p + 4, a, alen);
	p += 4 + alen;
	put_be32(p, (uint32_t)blen);
	memcpy(p + 4, b, blen);
	p += 4 + blen;
	put_be32(p, n);
	ok = hmac256(pepper, sizeof(pepper), buf, len, out);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return ok;
}

void scram_key_cache_clear(void)
{
	OPENSSL_cleanse(key_cache, sizeof(key_cache));
	key_cache_stats.entries = 0;
}

ScramKeyCacheStats scram_key_cache_stats(void)
{
	return key_cache_stats;
}

/*
 * ClientKey and ServerKey from a password. SASLprep: PostgreSQL (both server and libpq) leaves a
 * pure-ASCII password unchanged and uses the raw bytes whenever SASLprep fails. We always use
 * the raw bytes, so ASCII passwords (and non-ASCII ones already in normalised form without
 * characters SASLprep maps or prohibits) match PostgreSQL; a non-ASCII password that NFKC would
 * change derives different keys than PostgreSQL would. Served from the key cache when the same
 * inputs were derived before; a failure to compute the cache id only skips the cache.
 */
static bool keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
			       int iterations, uint8_t client_key[SCRAM_KEY_LEN],
			       uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN], id[SCRAM_KEY_LEN];
	bool have_id, ok;
	KeyCacheEntry *victim = &key_cache[0];

	have_id = peppered_id("keys", password, strlen(password), salt, salt_len,
			      (uint32_t)iterations, id);
	for (size_t i = 0; have_id && i < SCRAM_KEY_CACHE_SIZE; i++) {
		KeyCacheEntry *e = &key_cache[i];

		if (e->last_used && CRYPTO_memcmp(e->id, id, SCRAM_KEY_LEN) == 0) {
			e->last_used = ++key_cache_clock;
			memcpy(client_key, e->client_key, SCRAM_KEY_LEN);
			memcpy(server_key, e->server_key, SCRAM_KEY_LEN);
			key_cache_stats.hits++;
			return true;
		}
		if (e->last_used < victim->last_used)
			victim = e;
	}
	key_cache_stats.derivations++;
	ok = PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
			       EVP_sha256(), SCRAM_KEY_LEN, salted) == 1 &&
	     hmac256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) &&
	     hmac256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	if (ok && have_id) {
		if (!victim->last_used)
			key_cache_stats.entries++;
		memcpy(victim->id, id, SCRAM_KEY_LEN);
		memcpy(victim->client_key, client_key, SCRAM_KEY_LEN);
		memcpy(victim->server_key, server_key, SCRAM_KEY_LEN);
		victim->last_used = ++key_cache_clock;
	}
	return ok;
}

/* A fresh printable nonce: NONCE_RAW_LEN random bytes in base64 (never contains ','). */
static bool make_nonce(char *out, size_t cap)
{
	uint8_t raw[NONCE_RAW_LEN];

	if (cap < BASE64_ENCODED_LEN(NONCE_RAW_LEN) + 1 || RAND_bytes(raw, sizeof(raw)) != 1)
		return false;
	base64_encode(raw, sizeof(raw), out);
	return true;
}

/* printf into a fresh malloc'd string; NULL when out of memory. */
static char *str_printf(const char *fmt, ...) _PRINTF(1, 2);
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

/* A NUL-terminated copy of a wire message; NULL when it holds a NUL byte or memory is short. */
static char *copy_message(const char *msg, size_t len)
{
	char *s;

	if (memchr(msg, '\0', len))
		return NULL;
	s = malloc(len + 1);
	if (!s)
		return NULL;
	memcpy(s, msg, len);
	s[len] = '\0';
	return s;
}

/* --- attribute parsing --- */

/*
 * Read "<attr>=<value>" at *cur. The value ends at ',' or at the end of the string and is
 * NUL-terminated in place. *cur then points after the comma, or is NULL when the message ended
 * (so a trailing comma leaves an empty attribute that the next read refuses). <want> 0 accepts any
 * attribute letter, returned in *found. Returns the value, or NULL when *cur holds no such
 * attribute.
 */
static char *read_attr(char **cur, char want, char *found)
{
	char *p = *cur, *comma;

	if (!p || !((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) || p[1] != '=')
		return NULL;
	if (want && p[0] != want)
		return NULL;
	if (found)
		*found = p[0];
	comma = strchr(p + 2, ',');
	if (comma) {
		*comma = '\0';
		*cur = comma + 1;
	} else {
		*cur = NULL;
	}
	return p + 2;
}

/* RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII but ','. Empty is not valid. */
static bool is_valid_nonce(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < 0x21 || *s > 0x7e || *s == ',')
			return false;
	}
	return true;
}

/* Strict decimal iteration count in 1..max. */
static bool parse_iterations(const char *s, size_t len, int max, int *out)
{
	long v = 0;

	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > max)
		return false;
	*out = (int)v;
	return true;
}

static bool decode_key(const char *s, size_t len, uint8_t key[SCRAM_KEY_LEN])
{
	size_t n;

	return base64_decode(s, len, key, SCRAM_KEY_LEN, &n) && n == SCRAM_KEY_LEN;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
static char *auth_message(const char *client_first_bare, const char *server_first,
			  const char *final_wo_proof, size_t final_len)
{
	return str_printf("%s,%s,%.*s", client_first_bare, server_first, (int)final_len,
			  final_wo_proof);
}

/* --- verifiers --- */

bool scram_parse_secret(const char *secret, ScramSecret *out)
{
	const char *p, *colon, *dollar, *colon2;
	ScramSecret s;
	size_t n;

	memset(&s, 0, sizeof(s));
	if (!secret || strncmp(secret, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
		return false;
	p = secret + strlen(SECRET_PREFIX);
	colon = strchr(p, ':');
	if (!colon || !parse_iterations(p, (size_t)(colon - p), INT_MAX, &s.iterations))
		return false;
	p = colon + 1;
	dollar = strchr(p, '$');
	if (!dollar || !base64_decode(p, (size_t)(dollar - p), s.salt, sizeof(s.salt), &n) ||
	    n == 0)
		return false;
	s.salt_len = n;
	p = dollar + 1;
	colon2 = strchr(p, ':');
	if (!colon2 || !decode_key(p, (size_t)(colon2 - p), s.stored_key))
		return false;
	p = colon2 + 1;
	if (!decode_key(p, strlen(p), s.server_key))
		return false;
	*out = s;
	return true;
}

/* A verifier for <password> under <salt> (DEFAULT_SALT_LEN bytes), with the default count. */
static bool secret_from_salted_password(const char *password, const uint8_t *salt,
					ScramSecret *out)
{
	uint8_t client_key[SCRAM_KEY_LEN];
	ScramSecret s;
	bool ok;

	memset(&s, 0, sizeof(s));
	s.iterations = DEFAULT_ITERATIONS;
	s.salt_len = DEFAULT_SALT_LEN;
	memcpy(s.salt, salt, s.salt_len);
	ok = keys_from_password(password, s.salt, s.salt_len, s.iterations, client_key,
				s.server_key) &&
	     sha256(client_key, SCRAM_KEY_LEN, s.stored_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (ok)
		*out = s;
	return ok;
}

bool scram_secret_from_password(const char *password, ScramSecret *out)
{
	uint8_t salt[DEFAULT_SALT_LEN];

	if (RAND_bytes(salt, (int)sizeof(salt)) != 1)
		return false;
	return secret_from_salted_password(password, salt, out);
}

bool scram_secret_for_user(const char *user, const char *password, ScramSecret *out)
{
	uint8_t salt[SCRAM_KEY_LEN];

	/* a salt fixed for this process, user and password: repeated logins hit the key cache */
	if (!peppered_id("salt", user, strlen(user), password, strlen(password), 0, salt))
		return false;
	return secret_from_salted_password(password, salt, out);
}

bool scram_mock_secret(const char *user, ScramSecret *out)
{
	uint8_t salt[SCRAM_KEY_LEN];
	ScramSecret s;

	memset(&s, 0, sizeof(s));
	s.iterations = DEFAULT_ITERATIONS;
	s.salt_len = DEFAULT_SALT_LEN;
	if (!peppered_id("mock", user, strlen(user), "", 0, 0, salt) ||
	    RAND_bytes(s.stored_key, SCRAM_KEY_LEN) != 1 ||
	    RAND_bytes(s.server_key, SCRAM_KEY_LEN) != 1)
		return false;
	memcpy(s.salt, salt, s.salt_len);
	*out = s;
	return true;
}

/* --- server side --- */

static bool server_fail(ScramServer *s, const char *fmt, ...) _PRINTF(2, 3);
static bool server_fail(ScramServer *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	s->state = SCRAM_FAILED;
	return false;
}

void scram_server_init(ScramServer *s, const ScramSecret *secret)
{
	memset(s, 0, sizeof(*s));
	s->secret = *secret;
}

void scram_server_cleanup(ScramServer *s)
{
	free(s->client_first_bare);
	free(s->server_first);
	OPENSSL_cleanse(s, sizeof(*s));
}

void scram_server_set_nonce(ScramServer *s, const char *server_nonce_part)
{
	/* kept in s->nonce until scram_server_first() prefixes the client's part */
	if (strlen(server_nonce_part) >= sizeof(s->nonce) || !is_valid_nonce(server_nonce_part)) {
		server_fail(s, "invalid server nonce");
		return;
	}
	strcpy(s->nonce, server_nonce_part);
}

bool scram_server_first(ScramServer *s, const char *msg, size_t len, char **out)
{
	char salt_b64[BASE64_ENCODED_LEN(SCRAM_MAX_SALT) + 1];
	char server_part[sizeof(s->nonce)];
	char *buf, *cur, *bare, *cnonce;
	size_t cn_len, sp_len;
	char found;
	bool ok = false;

	*out = NULL;
	if (s->state == SCRAM_FAILED)
		return false;
	if (s->state != SCRAM_INIT)
		return server_fail(s, "unexpected SCRAM client-first-message");
	buf = copy_message(msg, len);
	if (!buf)
		return server_fail(s, "malformed SCRAM message (invalid client-first-message)");

	/* gs2-header: cbind-flag "," [authzid] "," */
	switch (buf[0]) {
	case 'n':
	case 'y':
		/* 'y': the client could bind but thinks we cannot; true, we offer no -PLUS */
		s->cbind_flag = buf[0];
		break;
	case 'p':
		server_fail(s, "client requested SCRAM channel binding, which is not supported");
		goto out;
	default:
		server_fail(s, "malformed SCRAM message (unexpected channel-binding flag)");
		goto out;
	}
	if (buf[1] != ',') {
		server_fail(s,
			    "malformed SCRAM message (comma expected after channel-binding flag)");
		goto out;
	}
	if (buf[2] == 'a' && buf[3] == '=') {
		server_fail(s, "client uses authorization identity, but it is not supported");
		goto out;
	}
	if (buf[2] != ',') {
		server_fail(s, "malformed SCRAM message (unexpected attribute in gs2 header)");
		goto out;
	}
	bare = buf + 3;
	s->client_first_bare = strdup(bare); /* copied before read_attr cuts it up */
	if (!s->client_first_bare) {
		server_fail(s, "out of memory");
		goto out;
	}

	/* client-first-bare: [reserved-mext ","] username "," nonce ["," extensions] */
	cur = bare;
	if (cur[0] == 'm' && cur[1] == '=') {
		server_fail(s, "client requires an unsupported SCRAM extension");
		goto out;
	}
	/* PostgreSQL clients send "n=" and the startup packet names the user: any value goes */
	if (!read_attr(&cur, 'n', NULL)) {
		server_fail(s, "malformed SCRAM message (user name attribute expected)");
		goto out;
	}
	cnonce = read_attr(&cur, 'r', NULL);
	if (!cnonce || !is_valid_nonce(cnonce)) {
		server_fail(s, "malformed SCRAM message (invalid client nonce)");
		goto out;
	}
	while (cur) {
		if (!read_attr(&cur, 0, &found)) {
			server_fail(s, "malformed SCRAM message (invalid attribute in "
				       "client-first-message)");
			goto out;
		}
	}

	/* server nonce: fixed by the test hook, or fresh */
	if (s->nonce[0]) {
		strcpy(server_part, s->nonce);
	} else if (!make_nonce(server_part, sizeof(server_part))) {
		server_fail(s, "could not generate random SCRAM nonce");
		goto out;
	}
	cn_len = strlen(cnonce);
	sp_len = strlen(server_part);
	if (cn_len + sp_len >= sizeof(s->nonce)) {
		server_fail(s, "malformed SCRAM message (client nonce too long)");
		goto out;
	}
	memcpy(s->nonce, cnonce, cn_len);
	memcpy(s->nonce + cn_len, server_part, sp_len + 1);
	base64_encode(s->secret.salt, s->secret.salt_len, salt_b64);

	s->server_first = str_printf("r=%s,s=%s,i=%d", s->nonce, salt_b64, s->secret.iterations);
	*out = s->server_first ? strdup(s->server_first) : NULL;
	if (!*out) {
		server_fail(s, "out of memory");
		goto out;
	}
	s->state = SCRAM_SENT_FIRST;
	ok = true;
out:
	free(buf);
	return ok;
}

bool scram_server_final(ScramServer *s, const char *msg, size_t len, char **out)
{
	char sig_b64[BASE64_ENCODED_LEN(SCRAM_KEY_LEN) + 1];
	uint8_t proof[SCRAM_KEY_LEN], client_sig[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	uint8_t server_sig[SCRAM_KEY_LEN];
	char *buf, *cur, *cbind, *nonce, *proof_b64 = NULL, *am = NULL;
	size_t proof_off = 0;
	char found = 0;
	bool ok = false;

	*out = NULL;
	if (s->state == SCRAM_FAILED)
		return false;
	if (s->state != SCRAM_SENT_FIRST)
		return server_fail(s, "unexpected SCRAM client-final-message");
	buf = copy_message(msg, len);
	if (!buf)
		return server_fail(s, "malformed SCRAM message (invalid client-final-message)");

	/* channel-binding "," nonce ["," extensions] "," proof */
	cur = buf;
	cbind = read_attr(&cur, 'c', NULL);
	if (!cbind) {
		server_fail(s, "malformed SCRAM message (channel-binding attribute expected)");
		goto out;
	}
	if (strcmp(cbind, s->cbind_flag == 'y' ? CBIND_Y : CBIND_N) != 0) {
		server_fail(s,
			    "unexpected SCRAM channel-binding attribute in client-final-message");
		goto out;
	}
	nonce = read_attr(&cur, 'r', NULL);
	if (!nonce) {
		server_fail(s, "malformed SCRAM message (nonce attribute expected)");
		goto out;
	}
	if (strcmp(nonce, s->nonce) != 0) {
		server_fail(s, "SCRAM nonce mismatch");
		goto out;
	}
	while (cur) {
		proof_off = (size_t)(cur - buf);
		proof_b64 = read_attr(&cur, 0, &found);
		if (!proof_b64 || found == 'p')
			break;
	}
	if (!proof_b64 || found != 'p') {
		server_fail(s, "malformed SCRAM message (proof attribute expected)");
		goto out;
	}
	if (cur) {
		server_fail(s, "malformed SCRAM message (garbage at end of client-final-message)");
		goto out;
	}
	if (!decode_key(proof_b64, strlen(proof_b64), proof)) {
		server_fail(s, "malformed SCRAM message (invalid client proof)");
		goto out;
	}

	/* the original bytes up to the comma before "p=" are client-final-without-proof */
	am = auth_message(s->client_first_bare, s->server_first, msg, proof_off - 1);
	if (!am) {
		server_fail(s, "out of memory");
		goto out;
	}
	if (!hmac256(s->secret.stored_key, SCRAM_KEY_LEN, am, strlen(am), client_sig)) {
		server_fail(s, "could not compute SCRAM client signature");
		goto out;
	}
	/* ClientProof = ClientKey XOR ClientSignature, so XOR again recovers the ClientKey */
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		s->client_key[i] = proof[i] ^ client_sig[i];
	if (!sha256(s->client_key, SCRAM_KEY_LEN, stored)) {
		server_fail(s, "could not compute SCRAM stored key");
		goto out;
	}
	if (CRYPTO_memcmp(stored, s->secret.stored_key, SCRAM_KEY_LEN) != 0) {
		OPENSSL_cleanse(s->client_key, SCRAM_KEY_LEN);
		server_fail(s, "password does not match (invalid SCRAM client proof)");
		goto out;
	}
	if (!hmac256(s->secret.server_key, SCRAM_KEY_LEN, am, strlen(am), server_sig)) {
		server_fail(s, "could not compute SCRAM server signature");
		goto out;
	}
	base64_encode(server_sig, SCRAM_KEY_LEN, sig_b64);
	*out = str_printf("v=%s", sig_b64);
	if (!*out) {
		server_fail(s, "out of memory");
		goto out;
	}
	s->state = SCRAM_DONE;
	ok = true;
out:
	free(am);
	free(buf);
	return ok;
}

/* --- client side --- */

static bool client_fail(ScramClient *c, const char *fmt, ...) _PRINTF(2, 3);
static bool client_fail(ScramClient *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	c->state = SCRAM_FAILED;
	return false;
}

void scram_client_init_password(ScramClient *c, const char *password)
{
	memset(c, 0, sizeof(*c));
	c->password = strdup(password);
	if (!c->password)
		client_fail(c, "out of memory");
}

void scram_client_init_keys(ScramClient *c, const uint8_t client_key[SCRAM_KEY_LEN],
			    const uint8_t server_key[SCRAM_KEY_LEN])
{
	memset(c, 0, sizeof(*c));
	c->have_keys = true;
	memcpy(c->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(c->server_key, server_key, SCRAM_KEY_LEN);
}

void scram_client_cleanup(ScramClient *c)
{
	if (c->password)
		OPENSSL_cleanse(c->password, strlen(c->password));
	free(c->password);
	free(c->client_first_bare);
	free(c->server_first);
	OPENSSL_cleanse(c, sizeof(*c));
}

void scram_client_set_nonce(ScramClient *c, const char *nonce)
{
	if (strlen(nonce) >= sizeof(c->client_nonce) || !is_valid_nonce(nonce)) {
		client_fail(c, "invalid client nonce");
		return;
	}
	strcpy(c->client_nonce, nonce);
}

bool scram_client_first(ScramClient *c, char **out)
{
	*out = NULL;
	if (c->state == SCRAM_FAILED)
		return false;
	if (c->state != SCRAM_INIT)
		return client_fail(c, "SCRAM exchange already started");
	if (!c->client_nonce[0] && !make_nonce(c->client_nonce, sizeof(c->client_nonce)))
		return client_fail(c, "could not generate random SCRAM nonce");
	/* as libpq: no user name (the startup packet has it), no channel binding */
	c->client_first_bare = str_printf("n=,r=%s", c->client_nonce);
	if (!c->client_first_bare)
		return client_fail(c, "out of memory");
	*out = str_printf("n,,%s", c->client_first_bare);
	if (!*out)
		return client_fail(c, "out of memory");
	c->state = SCRAM_SENT_FIRST;
	return true;
}

bool scram_client_final(ScramClient *c, const char *server_first, size_t len, char **out)
{
	char proof_b64[BASE64_ENCODED_LEN(SCRAM_KEY_LEN) + 1];
	uint8_t salt[SCRAM_MAX_SALT], stored[SCRAM_KEY_LEN], client_sig[SCRAM_KEY_LEN];
	uint8_t proof[SCRAM_KEY_LEN];
	char *buf, *cur, *nonce, *salt_b64, *iter, *wo_proof = NULL, *am = NULL;
	size_t salt_len = 0, cn_len;
	int iterations = 0;
	bool ok = false;

	*out = NULL;
	if (c->state == SCRAM_FAILED)
		return false;
	if (c->state != SCRAM_SENT_FIRST)
		return client_fail(c, "unexpected SCRAM server-first-message");
	buf = copy_message(server_first, len);
	if (!buf)
		return client_fail(c, "malformed SCRAM message (invalid server-first-message)");

	/* [reserved-mext ","] nonce "," salt "," iteration-count */
	cur = buf;
	if (cur[0] == 'm' && cur[1] == '=') {
		client_fail(c, "server requires an unsupported SCRAM extension");
		goto out;
	}
	nonce = read_attr(&cur, 'r', NULL);
	cn_len = strlen(c->client_nonce);
	if (!nonce || !is_valid_nonce(nonce)) {
		client_fail(c, "malformed SCRAM message (invalid server nonce)");
		goto out;
	}
	if (strlen(nonce) <= cn_len || memcmp(nonce, c->client_nonce, cn_len) != 0) {
		client_fail(c, "invalid SCRAM response (nonce mismatch)");
		goto out;
	}
	salt_b64 = read_attr(&cur, 's', NULL);
	if (!salt_b64 ||
	    !base64_decode(salt_b64, strlen(salt_b64), salt, sizeof(salt), &salt_len) ||
	    salt_len == 0) {
		client_fail(c, "malformed SCRAM message (invalid salt)");
		goto out;
	}
	iter = read_attr(&cur, 'i', NULL);
	if (!iter || !parse_iterations(iter, strlen(iter), INT_MAX, &iterations)) {
		client_fail(c, "malformed SCRAM message (invalid iteration count)");
		goto out;
	}
	if (iterations > CLIENT_MAX_ITERATIONS) {
		client_fail(c, "server asks for %d SCRAM iterations, more than the limit of %d "
			       "(invalid iteration count)", iterations, CLIENT_MAX_ITERATIONS);
		goto out;
	}
	if (cur) {
		client_fail(c, "malformed SCRAM message (garbage at end of server-first-message)");
		goto out;
	}

	/* with pass-through keys, salt and count only had to be well-formed */
	if (!c->have_keys && !keys_from_password(c->password, salt, salt_len, iterations,
						 c->client_key, c->server_key)) {
		client_fail(c, "could not compute SCRAM keys");
		goto out;
	}
	c->server_first = copy_message(server_first, len);
	wo_proof = str_printf("c=" CBIND_N ",r=%s", nonce);
	if (!c->server_first || !wo_proof) {
		client_fail(c, "out of memory");
		goto out;
	}
	am = auth_message(c->client_first_bare, c->server_first, wo_proof, strlen(wo_proof));
	if (!am) {
		client_fail(c, "out of memory");
		goto out;
	}
	if (!sha256(c->client_key, SCRAM_KEY_LEN, stored) ||
	    !hmac256(stored, SCRAM_KEY_LEN, am, strlen(am), client_sig) ||
	    !hmac256(c->server_key, SCRAM_KEY_LEN, am, strlen(am), c->expected_server_sig)) {
		client_fail(c, "could not compute SCRAM proof");
		goto out;
	}
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = c->client_key[i] ^ client_sig[i];
	base64_encode(proof, SCRAM_KEY_LEN, proof_b64);
	*out = str_printf("%s,p=%s", wo_proof, proof_b64);
	if (!*out) {
		client_fail(c, "out of memory");
		goto out;
	}
	c->state = SCRAM_SENT_FINAL;
	ok = true;
out:
	free(am);
	free(wo_proof);
	free(buf);
	return ok;
}

bool scram_client_verify(ScramClient *c, const char *server_final, size_t len)
{
	uint8_t sig[SCRAM_KEY_LEN];
	char *buf, *cur, *val;
	bool ok = false;

	if (c->state == SCRAM_FAILED)
		return false;
	if (c->state != SCRAM_SENT_FINAL)
		return client_fail(c, "unexpected SCRAM server-final-message");
	buf = copy_message(server_final, len);
	if (!buf)
		return client_fail(c, "malformed SCRAM message (invalid server-final-message)");
	cur = buf;
	if (buf[0] == 'e' && buf[1] == '=') {
		client_fail(c, "error received from server in SCRAM exchange: %s", buf + 2);
		goto out;
	}
	val = read_attr(&cur, 'v', NULL);
	if (!val || cur) {
		client_fail(c, "malformed SCRAM message (invalid server-final-message)");
		goto out;
	}
	if (!decode_key(val, strlen(val), sig)) {
		client_fail(c, "malformed SCRAM message (invalid server signature)");
		goto out;
	}
	if (CRYPTO_memcmp(sig, c->expected_server_sig, SCRAM_KEY_LEN) != 0) {
		client_fail(c, "incorrect server signature");
		goto out;
	}
	c->state = SCRAM_DONE;
	ok = true;
out:
	free(buf);
	return ok;
}
