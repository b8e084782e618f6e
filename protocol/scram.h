/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both sides, without channel
 * binding: ScramServer authenticates our clients, ScramClient logs us into PostgreSQL servers.
 * Pure message processing: the caller moves the bytes (SASL / SASLContinue / SASLFinal
 * messages). Errors are stored in the object's `err` and the caller logs them.
 *
 * Pass-through: when a client proves itself with SCRAM against a verifier, the server side
 * recovers its ClientKey; a ScramClient given that ClientKey and the same verifier can then log
 * into a PostgreSQL server that stores the same verifier, without knowing the password (as
 * PgBouncer does).
 */
#ifndef PGPILOT_PROTOCOL_SCRAM_H
#define PGPILOT_PROTOCOL_SCRAM_H

#include "protocol/auth.h"

#define SCRAM_MECHANISM "SCRAM-SHA-256"
#define SCRAM_ERR_LEN 128
/*
 * The highest iteration count a verifier pgpilot checks passwords against may carry. PostgreSQL
 * and PgBouncer default to 4096; each iteration costs the event loop about 0.2 us when pgpilot
 * itself runs PBKDF2 (a clear-text password checked against a verifier), so 100000 is ~20 ms.
 * Callers refuse users whose verifier is above it.
 */
#define SCRAM_MAX_ITERATIONS 100000
/* Derived (ClientKey, ServerKey) pairs kept by the key cache (see scram_key_cache_stats). */
#define SCRAM_KEY_CACHE_SIZE 256

typedef enum ScramState {
	SCRAM_INIT,	  /* nothing exchanged yet */
	SCRAM_SENT_FIRST, /* client-first sent (client) / server-first sent (server) */
	SCRAM_SENT_FINAL, /* client-final sent (client) / server-final sent (server) */
	SCRAM_DONE,	  /* authentication verified */
	SCRAM_FAILED,	  /* see err */
} ScramState;

typedef struct ScramServer {
	ScramState state;
	ScramSecret secret;
	char *client_first_bare;  /* malloc'd */
	char *server_first;	  /* malloc'd */
	char nonce[96];		  /* client nonce + server nonce */
	char cbind_flag;	  /* gs2 flag of client-first ('n' or 'y'), checked in client-final */
	uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from the proof, valid when DONE */
	char err[SCRAM_ERR_LEN];
} ScramServer;

typedef struct ScramClient {
	ScramState state;
	char *password;		/* malloc'd, or NULL when using a pass-through key */
	bool have_keys;		/* client_key/server_key given instead of a password */
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	char client_nonce[32];
	char *client_first_bare;  /* malloc'd */
	char *server_first;	  /* malloc'd */
	uint8_t expected_server_sig[SCRAM_KEY_LEN];
	char err[SCRAM_ERR_LEN];
} ScramClient;

/* --- server side (we authenticate a client) --- */
void scram_server_init(ScramServer *s, const ScramSecret *secret);
void scram_server_cleanup(ScramServer *s);
/*
 * <msg> is the client-first-message from SASLInitialResponse. On success *out is a malloc'd
 * server-first-message (caller frees). False with s->err set on a malformed message.
 */
bool scram_server_first(ScramServer *s, const char *msg, size_t len, char **out) _MUSTCHECK;
/*
 * <msg> is the client-final-message. On a valid proof, *out is the malloc'd server-final-message
 * ("v=...") and s->client_key holds the recovered ClientKey. False on a wrong proof (err says so).
 */
bool scram_server_final(ScramServer *s, const char *msg, size_t len, char **out) _MUSTCHECK;

/* --- client side (we log into a server) --- */
void scram_client_init_password(ScramClient *c, const char *password);
void scram_client_init_keys(ScramClient *c, const uint8_t client_key[SCRAM_KEY_LEN],
			    const uint8_t server_key[SCRAM_KEY_LEN]);
void scram_client_cleanup(ScramClient *c);
/* Malloc'd client-first-message ("n,,n=,r=<nonce>"). */
bool scram_client_first(ScramClient *c, char **out) _MUSTCHECK;
/* Consume server-first-message; *out = malloc'd client-final-message with the proof. */
bool scram_client_final(ScramClient *c, const char *server_first, size_t len, char **out) _MUSTCHECK;
/* Verify the server-final-message (server signature). */
bool scram_client_verify(ScramClient *c, const char *server_final, size_t len) _MUSTCHECK;

/* --- verifiers and the derived key cache --- */

/*
 * A verifier for <user>'s clear-text <password>, for the server side of SCRAM: 4096 iterations
 * and a salt that is fixed for this process, user and password (an HMAC under a random pepper),
 * so that every login after the first is served from the key cache instead of running PBKDF2.
 * A changed password gives a new salt and a fresh derivation.
 */
bool scram_secret_for_user(const char *user, const char *password, ScramSecret *out) _MUSTCHECK;
/*
 * A verifier no password matches, for an exchange that must fail at its end (unknown user, md5
 * secret, refused verifier) without telling the client so early: its salt is fixed per process
 * and user, as a real user's is, and its keys are random.
 */
bool scram_mock_secret(const char *user, ScramSecret *out) _MUSTCHECK;

typedef struct ScramKeyCacheStats {
	uint64_t derivations; /* PBKDF2 runs */
	uint64_t hits;	      /* derivations avoided */
	uint32_t entries;     /* slots in use, at most SCRAM_KEY_CACHE_SIZE */
} ScramKeyCacheStats;
ScramKeyCacheStats scram_key_cache_stats(void);
/* Forget (and wipe) every cached key pair: called when the auth_file is read again. */
void scram_key_cache_clear(void);

/* Test hook: fix the nonce instead of drawing a random one (RFC 7677 test vectors). */
void scram_client_set_nonce(ScramClient *c, const char *nonce);
void scram_server_set_nonce(ScramServer *s, const char *server_nonce_part);

#endif
