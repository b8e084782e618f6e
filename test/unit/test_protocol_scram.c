/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of protocol/scram.c: the RFC 7677 exchange byte for byte, both sides against each
 * other, pass-through keys, a verifier made by PostgreSQL 15, and every kind of malformed or
 * tampered message each side must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/scram.h"

/*
 * RFC 7677 section 3: user "user", password "pencil". StoredKey and ServerKey were derived with
 * /usr/bin/python3: sp = hashlib.pbkdf2_hmac('sha256', b'pencil', b64decode(salt), 4096);
 * ck = hmac(sp, b'Client Key', sha256); StoredKey = sha256(ck); ServerKey = hmac(sp, b'Server
 * Key', sha256). The same script reproduces the RFC's proof and server signature, which checks
 * it.
 */
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_STORED "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
#define RFC_SERVER_KEY "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define RFC_SECRET "SCRAM-SHA-256$4096:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CNONCE RFC_SNONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096"
/* the RFC's own messages (client sends n=user) */
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/*
 * What our client sends instead: PostgreSQL clients leave the user name empty ("n="), which
 * changes the AuthMessage and so the proof and signature. Same python script, with client-first-
 * bare "n=,r=rOprNGfwEbeRWgbNEkqO".
 */
#define PG_CLIENT_FIRST "n,,n=,r=" RFC_CNONCE
#define PG_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define PG_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="
/* the same with gs2 flag 'y' (client-first "y,,n=,r=...", channel binding "c=eSws") */
#define Y_CLIENT_FIRST "y,,n=,r=" RFC_CNONCE
#define Y_CLIENT_FINAL "c=eSws,r=" RFC_NONCE ",p=VpuC5DGQa5ro9tXE9MnKs69NH1nxnuregZZcclqIGfM="
#define Y_SERVER_FINAL "v=FOmOj9BpTGwvnzwBtWQjBaPmVxT9I8IeHBOhcIPu3us="
/* ClientKey for "pencil" with the RFC salt (python, as above), hex */
static const uint8_t rfc_client_key[SCRAM_KEY_LEN] = {
    0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
    0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
};

/*
 * Made by PostgreSQL 15 itself: initdb in a temp dir, then in `postgres --single`:
 * SET password_encryption='scram-sha-256'; CREATE ROLE vtest PASSWORD 'correct horse';
 * SELECT rolpassword FROM pg_authid WHERE rolname='vtest';
 */
#define PG_VERIFIER                                                                                \
	"SCRAM-SHA-256$4096:yOLSnmJy25FDHuYzWgpJIQ==$PtaJ/"                                        \
	"vxIwxlyG8CQsGvh1SG95VbjbiCwM3pxqzEKSYY=:"                                                 \
	"KUeF7Uu/KcMpVhtzB97BfvkeH6idd/Dw8zOg4mdAzsg="
#define PG_VERIFIER_PASSWORD "correct horse"

static ScramSecret rfc_secret(void)
{
	ScramSecret sec;

	assert_true(scram_parse_secret(RFC_SECRET, &sec));
	return sec;
}

static bool server_first_str(ScramServer *s, const char *msg, char **out)
{
	return scram_server_first(s, msg, strlen(msg), out);
}

static bool server_final_str(ScramServer *s, const char *msg, char **out)
{
	return scram_server_final(s, msg, strlen(msg), out);
}

/*
 * Run a whole exchange between <c> and <s>; returns the step that failed (0 = all good):
 * 1 client-first, 2 server-first, 3 client-final, 4 server-final, 5 client verify.
 */
static int run_exchange(ScramClient *c, ScramServer *s)
{
	char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
	int step = 0;

	if (!scram_client_first(c, &m1))
		step = 1;
	else if (!server_first_str(s, m1, &m2))
		step = 2;
	else if (!scram_client_final(c, m2, strlen(m2), &m3))
		step = 3;
	else if (!server_final_str(s, m3, &m4))
		step = 4;
	else if (!scram_client_verify(c, m4, strlen(m4)))
		step = 5;
	free(m1);
	free(m2);
	free(m3);
	free(m4);
	return step;
}

/* The server fed the RFC 7677 client messages answers exactly the RFC's server messages. */
static void test_rfc7677_server(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramServer s;
	char *out;

	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);
	assert_true(server_first_str(&s, RFC_CLIENT_FIRST, &out));
	assert_string_equal(out, RFC_SERVER_FIRST);
	assert_int_equal(s.state, SCRAM_SENT_FIRST);
	free(out);
	assert_true(server_final_str(&s, RFC_CLIENT_FINAL, &out));
	assert_string_equal(out, RFC_SERVER_FINAL);
	free(out);
	assert_int_equal(s.state, SCRAM_DONE);
	assert_memory_equal(s.client_key, rfc_client_key, SCRAM_KEY_LEN);
	scram_server_cleanup(&s);
}

/* ScramClient (fixed nonce) against ScramServer: every message checked byte for byte. */
static void test_rfc7677_client_server(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramClient c;
	ScramServer s;
	char *m;

	scram_client_init_password(&c, "pencil");
	scram_client_set_nonce(&c, RFC_CNONCE);
	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);

	assert_true(scram_client_first(&c, &m));
	assert_string_equal(m, PG_CLIENT_FIRST);
	assert_int_equal(c.state, SCRAM_SENT_FIRST);
	free(m);
	assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
	assert_string_equal(m, RFC_SERVER_FIRST);
	free(m);
	assert_true(scram_client_final(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &m));
	assert_string_equal(m, PG_CLIENT_FINAL);
	assert_int_equal(c.state, SCRAM_SENT_FINAL);
	free(m);
	assert_true(server_final_str(&s, PG_CLIENT_FINAL, &m));
	assert_string_equal(m, PG_SERVER_FINAL);
	free(m);
	assert_true(scram_client_verify(&c, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL)));
	assert_int_equal(c.state, SCRAM_DONE);
	assert_int_equal(s.state, SCRAM_DONE);
	assert_memory_equal(s.client_key, rfc_client_key, SCRAM_KEY_LEN);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/* gs2 flag 'y' is accepted and then requires "c=eSws" in client-final. */
static void test_gs2_flag_y(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramServer s;
	char *m;

	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);
	assert_true(server_first_str(&s, Y_CLIENT_FIRST, &m));
	assert_string_equal(m, RFC_SERVER_FIRST);
	free(m);
	assert_true(server_final_str(&s, Y_CLIENT_FINAL, &m));
	assert_string_equal(m, Y_SERVER_FINAL);
	free(m);
	scram_server_cleanup(&s);

	/* 'y' in client-first but "c=biws" in client-final: the binding data does not match */
	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);
	assert_true(server_first_str(&s, Y_CLIENT_FIRST, &m));
	free(m);
	assert_false(server_final_str(&s, PG_CLIENT_FINAL, &m));
	assert_null(m);
	assert_non_null(strstr(s.err, "channel-binding"));
	scram_server_cleanup(&s);

	/* and the reverse */
	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);
	assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
	free(m);
	assert_false(server_final_str(&s, Y_CLIENT_FINAL, &m));
	assert_non_null(strstr(s.err, "channel-binding"));
	scram_server_cleanup(&s);
}

/* Random nonces: two logins with the same password both succeed and use different nonces. */
static void test_random_nonces(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramClient c1, c2;
	ScramServer s1, s2;

	scram_client_init_password(&c1, "pencil");
	scram_client_init_password(&c2, "pencil");
	scram_server_init(&s1, &sec);
	scram_server_init(&s2, &sec);
	assert_int_equal(run_exchange(&c1, &s1), 0);
	assert_int_equal(run_exchange(&c2, &s2), 0);
	assert_string_not_equal(c1.client_nonce, c2.client_nonce);
	assert_string_not_equal(s1.nonce, s2.nonce);
	/* 18 random bytes in base64 each: 24 + 24 characters */
	assert_int_equal(strlen(c1.client_nonce), 24);
	assert_int_equal(strlen(s1.nonce), 48);
	assert_memory_equal(s1.client_key, rfc_client_key, SCRAM_KEY_LEN);
	scram_client_cleanup(&c1);
	scram_client_cleanup(&c2);
	scram_server_cleanup(&s1);
	scram_server_cleanup(&s2);
}

static void test_wrong_password(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramClient c;
	ScramServer s;
	uint8_t zero[SCRAM_KEY_LEN] = {0};

	scram_client_init_password(&c, "pencil2");
	scram_server_init(&s, &sec);
	assert_int_equal(run_exchange(&c, &s), 4);
	assert_int_equal(s.state, SCRAM_FAILED);
	assert_non_null(strstr(s.err, "password does not match"));
	/* no ClientKey is left behind for pass-through after a failure */
	assert_memory_equal(s.client_key, zero, SCRAM_KEY_LEN);
	/* once failed, the server stays failed */
	assert_false(server_final_str(&s, PG_CLIENT_FINAL, &(char *){NULL}));
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/* A client-final whose nonce or proof was altered is refused. */
static void test_tampered_client_final(void **state)
{
	static const char *const bad[] = {
	    /* one nonce character changed */
	    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,"
	    "p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=",
	    /* only the client part of the nonce */
	    "c=biws,r=" RFC_CNONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=",
	    /* one proof character changed */
	    "c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9j=",
	    /* the proof made for n=user (different AuthMessage) */
	    RFC_CLIENT_FINAL,
	};
	static const char *const why[] = {"nonce mismatch", "nonce mismatch",
					  "password does not match", "password does not match"};
	ScramSecret sec = rfc_secret();

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ScramServer s;
		char *m;

		scram_server_init(&s, &sec);
		scram_server_set_nonce(&s, RFC_SNONCE);
		assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
		free(m);
		assert_false(server_final_str(&s, bad[i], &m));
		assert_null(m);
		assert_int_equal(s.state, SCRAM_FAILED);
		assert_non_null(strstr(s.err, why[i]));
		scram_server_cleanup(&s);
	}
}

/* Malformed client-first-messages, each with a word the error must contain. */
static void test_malformed_client_first(void **state)
{
	static const struct {
		const char *msg;
		const char *why;
	} cases[] = {
	    {"", "channel-binding flag"},
	    {"n", "comma expected"},
	    {"n,", "gs2 header"},
	    {"x,,n=,r=abc", "channel-binding flag"},
	    {"p=tls-server-end-point,,n=,r=abc", "channel binding, which is not supported"},
	    {"n,a=bob,n=,r=abc", "authorization identity"},
	    {"n,,", "user name"},
	    {"n,,r=abc", "user name"},
	    {"n,,n=", "client nonce"},
	    {"n,,n=,", "client nonce"},
	    {"n,,n=,r=", "client nonce"},
	    {"n,,n=,r=ab c", "client nonce"},
	    {"n,,n=,s=abc", "client nonce"},
	    {"n,,n=,r=abc,", "invalid attribute"},
	    {"n,,n=,r=abc,x", "invalid attribute"},
	    {"n,,n=,r=abc,1=2", "invalid attribute"},
	    {"n,,m=foo,n=,r=abc", "unsupported SCRAM extension"},
	    {"n,,n=,r="
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaa",
	     "too long"},
	};
	ScramSecret sec = rfc_secret();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ScramServer s;
		char *m = (char *)1;

		scram_server_init(&s, &sec);
		if (server_first_str(&s, cases[i].msg, &m))
			fail_msg("accepted client-first \"%s\"", cases[i].msg);
		assert_null(m);
		assert_int_equal(s.state, SCRAM_FAILED);
		if (!strstr(s.err, cases[i].why))
			fail_msg("\"%s\": error \"%s\" lacks \"%s\"", cases[i].msg, s.err,
				 cases[i].why);
		scram_server_cleanup(&s);
	}

	/* an embedded NUL byte */
	{
		ScramServer s;
		char *m;

		scram_server_init(&s, &sec);
		assert_false(scram_server_first(&s, "n,,n=\0,r=abc", 12, &m));
		assert_int_equal(s.state, SCRAM_FAILED);
		scram_server_cleanup(&s);
	}
}

/* Variants a conforming client may send are accepted. */
static void test_lenient_client_first(void **state)
{
	static const char *const ok[] = {
	    "n,,n=,r=abc",
	    "y,,n=,r=abc",
	    "n,,n=someone,r=abc",
	    "n,,n=a=2Cb,r=abc",
	    "n,,n=,r=abc,x=extension,y=",
	};
	ScramSecret sec = rfc_secret();

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ScramServer s;
		char *m;

		scram_server_init(&s, &sec);
		if (!server_first_str(&s, ok[i], &m))
			fail_msg("refused client-first \"%s\": %s", ok[i], s.err);
		assert_int_equal(strncmp(m, "r=abc", 5), 0);
		assert_non_null(strstr(m, ",s=" RFC_SALT ",i=4096"));
		free(m);
		scram_server_cleanup(&s);
	}
}

/* Malformed client-final-messages, after a valid client-first. */
static void test_malformed_client_final(void **state)
{
	static const struct {
		const char *msg;
		const char *why;
	} cases[] = {
	    {"", "channel-binding attribute expected"},
	    {"r=" RFC_NONCE ",c=biws,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=",
	     "channel-binding attribute expected"},
	    {"c=biws", "nonce attribute expected"},
	    {"c=biws,", "nonce attribute expected"},
	    {"c=bi", "channel-binding attribute in"},
	    {"c=cD10bHMtdW5pcXVlLCw=,r=" RFC_NONCE
	     ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=",
	     "channel-binding attribute in"},
	    {"c=biws,r=" RFC_NONCE, "proof attribute expected"},
	    {"c=biws,r=" RFC_NONCE ",", "proof attribute expected"},
	    {"c=biws,r=" RFC_NONCE ",x=1", "proof attribute expected"},
	    {"c=biws,r=" RFC_NONCE ",p=", "invalid client proof"},
	    {"c=biws,r=" RFC_NONCE ",p=!!!!", "invalid client proof"},
	    /* truncated: the base64 loses its padding */
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k",
	     "invalid client proof"},
	    /* 31 bytes */
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4nw==",
	     "invalid client proof"},
	    /* 33 bytes */
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9kA",
	     "invalid client proof"},
	    /* 47 characters */
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9kAAAA",
	     "invalid client proof"},
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=,x=1",
	     "garbage at end"},
	    {"c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=,",
	     "garbage at end"},
	};
	ScramSecret sec = rfc_secret();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ScramServer s;
		char *m;

		scram_server_init(&s, &sec);
		scram_server_set_nonce(&s, RFC_SNONCE);
		assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
		free(m);
		m = (char *)1;
		if (server_final_str(&s, cases[i].msg, &m))
			fail_msg("accepted client-final \"%s\"", cases[i].msg);
		assert_null(m);
		if (!strstr(s.err, cases[i].why))
			fail_msg("\"%s\": error \"%s\" lacks \"%s\"", cases[i].msg, s.err,
				 cases[i].why);
		scram_server_cleanup(&s);
	}
}

/* An extension attribute between nonce and proof is part of the AuthMessage and allowed. */
static void test_client_final_extension(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramServer s;
	char *m;

	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, RFC_SNONCE);
	assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
	free(m);
	/* the proof was computed without the extension, so it no longer matches */
	assert_false(server_final_str(
	    &s, "c=biws,r=" RFC_NONCE ",x=1,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=", &m));
	assert_non_null(strstr(s.err, "password does not match"));
	scram_server_cleanup(&s);
}

/* Malformed or hostile server-first-messages, seen by the client. */
static void test_malformed_server_first(void **state)
{
	static const struct {
		const char *msg;
		const char *why;
	} cases[] = {
	    {"", "invalid server nonce"},
	    {"r=", "invalid server nonce"},
	    {"s=" RFC_SALT ",r=" RFC_NONCE ",i=4096", "invalid server nonce"},
	    {"m=ext,r=" RFC_NONCE ",s=" RFC_SALT ",i=4096", "unsupported SCRAM extension"},
	    {"r=XOprNGfwEbeRWgbNEkqO" RFC_SNONCE ",s=" RFC_SALT ",i=4096", "nonce mismatch"},
	    {"r=" RFC_CNONCE ",s=" RFC_SALT ",i=4096", "nonce mismatch"},
	    {"r=rOprNG,s=" RFC_SALT ",i=4096", "nonce mismatch"},
	    {"r=" RFC_NONCE, "invalid salt"},
	    {"r=" RFC_NONCE ",i=4096", "invalid salt"},
	    {"r=" RFC_NONCE ",s=,i=4096", "invalid salt"},
	    {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096", "invalid salt"},
	    {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6g*==,i=4096", "invalid salt"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT, "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=0", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=-1", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=+4096", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=4096x", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=2147483648", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=99999999999", "invalid iteration count"},
	    /* absurd for an event loop: refused before running PBKDF2 */
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=1000000000", "invalid iteration count"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=4096,", "garbage at end"},
	    {"r=" RFC_NONCE ",s=" RFC_SALT ",i=4096,x=1", "garbage at end"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ScramClient c;
		char *m;

		scram_client_init_password(&c, "pencil");
		scram_client_set_nonce(&c, RFC_CNONCE);
		assert_true(scram_client_first(&c, &m));
		free(m);
		m = (char *)1;
		if (scram_client_final(&c, cases[i].msg, strlen(cases[i].msg), &m))
			fail_msg("accepted server-first \"%s\"", cases[i].msg);
		assert_null(m);
		assert_int_equal(c.state, SCRAM_FAILED);
		if (!strstr(c.err, cases[i].why))
			fail_msg("\"%s\": error \"%s\" lacks \"%s\"", cases[i].msg, c.err,
				 cases[i].why);
		scram_client_cleanup(&c);
	}
}

/* Malformed, wrong or error server-final-messages, seen by the client. */
static void test_bad_server_final(void **state)
{
	static const struct {
		const char *msg;
		const char *why;
	} cases[] = {
	    {"", "invalid server-final-message"},
	    {"v=", "invalid server signature"},
	    {"v=abc", "invalid server signature"},
	    {"x="
	     "3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=",
	     "invalid server-final-message"},
	    {PG_SERVER_FINAL ",x=1", "invalid server-final-message"},
	    {PG_SERVER_FINAL ",", "invalid server-final-message"},
	    /* the RFC's signature is for another AuthMessage */
	    {RFC_SERVER_FINAL, "incorrect server signature"},
	    {"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOf=", "incorrect server signature"},
	    {"e=invalid-proof", "error received from server in SCRAM exchange: invalid-proof"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ScramClient c;
		char *m;

		scram_client_init_password(&c, "pencil");
		scram_client_set_nonce(&c, RFC_CNONCE);
		assert_true(scram_client_first(&c, &m));
		free(m);
		assert_true(scram_client_final(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &m));
		free(m);
		if (scram_client_verify(&c, cases[i].msg, strlen(cases[i].msg)))
			fail_msg("accepted server-final \"%s\"", cases[i].msg);
		assert_int_equal(c.state, SCRAM_FAILED);
		if (!strstr(c.err, cases[i].why))
			fail_msg("\"%s\": error \"%s\" lacks \"%s\"", cases[i].msg, c.err,
				 cases[i].why);
		scram_client_cleanup(&c);
	}
}

/* Each step refuses to run out of order. */
static void test_state_order(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramClient c;
	ScramServer s;
	char *m;

	scram_server_init(&s, &sec);
	assert_false(server_final_str(&s, PG_CLIENT_FINAL, &m));
	assert_non_null(strstr(s.err, "unexpected"));
	scram_server_cleanup(&s);

	scram_server_init(&s, &sec);
	assert_true(server_first_str(&s, PG_CLIENT_FIRST, &m));
	free(m);
	assert_false(server_first_str(&s, PG_CLIENT_FIRST, &m));
	assert_int_equal(s.state, SCRAM_FAILED);
	scram_server_cleanup(&s);

	scram_client_init_password(&c, "pencil");
	assert_false(scram_client_final(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &m));
	assert_non_null(strstr(c.err, "unexpected"));
	scram_client_cleanup(&c);

	scram_client_init_password(&c, "pencil");
	assert_false(scram_client_verify(&c, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL)));
	scram_client_cleanup(&c);

	scram_client_init_password(&c, "pencil");
	assert_true(scram_client_first(&c, &m));
	free(m);
	assert_false(scram_client_first(&c, &m));
	assert_null(m);
	scram_client_cleanup(&c);

	/* a bad nonce given to the test hooks fails the object */
	scram_client_init_password(&c, "pencil");
	scram_client_set_nonce(&c, "a,b");
	assert_false(scram_client_first(&c, &m));
	scram_client_cleanup(&c);
	scram_server_init(&s, &sec);
	scram_server_set_nonce(&s, "");
	assert_false(server_first_str(&s, PG_CLIENT_FIRST, &m));
	scram_server_cleanup(&s);
}

/*
 * Pass-through: the server recovers the client's ClientKey; a client built from that key and
 * the verifier's ServerKey logs into a second server holding the same verifier.
 */
static void test_pass_through(void **state)
{
	ScramSecret sec;
	ScramClient c, c2;
	ScramServer s, s2;
	uint8_t bad_key[SCRAM_KEY_LEN];

	assert_true(scram_secret_from_password("s3cret pass", &sec));
	scram_client_init_password(&c, "s3cret pass");
	scram_server_init(&s, &sec);
	assert_int_equal(run_exchange(&c, &s), 0);
	assert_int_equal(s.state, SCRAM_DONE);

	scram_client_init_keys(&c2, s.client_key, sec.server_key);
	assert_true(c2.have_keys);
	assert_null(c2.password);
	scram_server_init(&s2, &sec);
	assert_int_equal(run_exchange(&c2, &s2), 0);
	assert_int_equal(c2.state, SCRAM_DONE);
	assert_memory_equal(s2.client_key, s.client_key, SCRAM_KEY_LEN);
	scram_client_cleanup(&c2);
	scram_server_cleanup(&s2);

	/* a wrong ClientKey is refused by the server */
	memcpy(bad_key, s.client_key, SCRAM_KEY_LEN);
	bad_key[0] ^= 1;
	scram_client_init_keys(&c2, bad_key, sec.server_key);
	scram_server_init(&s2, &sec);
	assert_int_equal(run_exchange(&c2, &s2), 4);
	scram_client_cleanup(&c2);
	scram_server_cleanup(&s2);

	/* a wrong ServerKey makes the client refuse the server's signature */
	memcpy(bad_key, sec.server_key, SCRAM_KEY_LEN);
	bad_key[31] ^= 0x80;
	scram_client_init_keys(&c2, s.client_key, bad_key);
	scram_server_init(&s2, &sec);
	assert_int_equal(run_exchange(&c2, &s2), 5);
	assert_non_null(strstr(c2.err, "incorrect server signature"));
	scram_client_cleanup(&c2);
	scram_server_cleanup(&s2);

	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/* Pass-through keys reproduce the RFC exchange exactly, like the password does. */
static void test_pass_through_rfc(void **state)
{
	ScramSecret sec = rfc_secret();
	ScramClient c;
	char *m;

	scram_client_init_keys(&c, rfc_client_key, sec.server_key);
	scram_client_set_nonce(&c, RFC_CNONCE);
	assert_true(scram_client_first(&c, &m));
	free(m);
	assert_true(scram_client_final(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &m));
	assert_string_equal(m, PG_CLIENT_FINAL);
	free(m);
	assert_true(scram_client_verify(&c, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL)));
	scram_client_cleanup(&c);
}

static void test_parse_secret_good(void **state)
{
	static const uint8_t salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
				       0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
	ScramSecret sec;

	assert_true(scram_parse_secret(RFC_SECRET, &sec));
	assert_int_equal(sec.iterations, 4096);
	assert_int_equal(sec.salt_len, 16);
	assert_memory_equal(sec.salt, salt, sizeof(salt));
	/* first and last bytes of StoredKey / ServerKey (python: b64decode(...)) */
	assert_int_equal(sec.stored_key[0], 0x58);
	assert_int_equal(sec.stored_key[31], 0xa6);
	assert_int_equal(sec.server_key[0], 0xc1);
	assert_int_equal(sec.server_key[31], 0xd5);

	/* other iteration counts and a 1-byte salt */
	assert_true(
	    scram_parse_secret("SCRAM-SHA-256$1:AA==$" RFC_STORED ":" RFC_SERVER_KEY, &sec));
	assert_int_equal(sec.iterations, 1);
	assert_int_equal(sec.salt_len, 1);
	assert_true(scram_parse_secret(
	    "SCRAM-SHA-256$2147483647:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY, &sec));
	assert_int_equal(sec.iterations, 2147483647);
	assert_true(scram_parse_secret(PG_VERIFIER, &sec));
}

static void test_parse_secret_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "pencil",
	    "md5d49d5a609d9ad8fd78a3fd4c8a27ce79",
	    "scram-sha-256$4096:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-1$4096:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$",
	    "SCRAM-SHA-256$4096",
	    "SCRAM-SHA-256$4096:" RFC_SALT,
	    "SCRAM-SHA-256$4096:" RFC_SALT "$" RFC_STORED,
	    "SCRAM-SHA-256$4096:" RFC_SALT "$" RFC_STORED ":",
	    "SCRAM-SHA-256$0:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$-1:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$40x6:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$2147483648:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$4096:$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ$" RFC_STORED ":" RFC_SERVER_KEY,
	    "SCRAM-SHA-256$4096:W22ZaJ0SNY7s EsUEjb6gQ==$" RFC_STORED ":" RFC_SERVER_KEY,
	    /* salt longer than SCRAM_MAX_SALT (66 bytes) */
	    "SCRAM-SHA-256$4096:"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AA"
	    "$" RFC_STORED ":" RFC_SERVER_KEY,
	    /* StoredKey of 31 bytes */
	    "SCRAM-SHA-256$4096:" RFC_SALT
	    "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q==:" RFC_SERVER_KEY,
	    /* ServerKey of 33 bytes */
	    "SCRAM-SHA-256$4096:" RFC_SALT "$" RFC_STORED ":" RFC_SERVER_KEY "AAAA",
	    RFC_SECRET "x",
	    RFC_SECRET ":",
	    RFC_SECRET "$",
	    " " RFC_SECRET,
	    "SCRAM-SHA-256$4096:" RFC_SALT "$" RFC_STORED "$" RFC_SERVER_KEY,
	};
	ScramSecret sec;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_parse_secret(bad[i], &sec))
			fail_msg("accepted secret \"%s\"", bad[i]);
	}
	assert_false(scram_parse_secret(NULL, &sec));
}

/* A verifier PostgreSQL generated authenticates its password, and only that. */
static void test_postgres_verifier(void **state)
{
	ScramSecret sec;
	ScramClient c;
	ScramServer s;

	assert_true(scram_parse_secret(PG_VERIFIER, &sec));
	assert_int_equal(auth_secret_kind(PG_VERIFIER), SECRET_SCRAM);

	scram_client_init_password(&c, PG_VERIFIER_PASSWORD);
	scram_server_init(&s, &sec);
	assert_int_equal(run_exchange(&c, &s), 0);
	assert_int_equal(s.state, SCRAM_DONE);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);

	scram_client_init_password(&c, "correct horsE");
	scram_server_init(&s, &sec);
	assert_int_equal(run_exchange(&c, &s), 4);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/* A fresh verifier: PostgreSQL's defaults, a random salt, and it authenticates the password. */
static void test_secret_from_password(void **state)
{
	ScramSecret a, b;
	ScramClient c;
	ScramServer s;

	assert_true(scram_secret_from_password("hunter2", &a));
	assert_true(scram_secret_from_password("hunter2", &b));
	assert_int_equal(a.iterations, 4096);
	assert_int_equal(a.salt_len, 16);
	assert_memory_not_equal(a.salt, b.salt, 16);
	assert_memory_not_equal(a.stored_key, b.stored_key, SCRAM_KEY_LEN);

	scram_client_init_password(&c, "hunter2");
	scram_server_init(&s, &a);
	assert_int_equal(run_exchange(&c, &s), 0);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);

	/* non-ASCII: the raw UTF-8 bytes are used on both sides, so they agree */
	assert_true(scram_secret_from_password("p\xc3\xa4ssw\xc3\xb6rd", &a));
	scram_client_init_password(&c, "p\xc3\xa4ssw\xc3\xb6rd");
	scram_server_init(&s, &a);
	assert_int_equal(run_exchange(&c, &s), 0);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
	scram_client_init_password(&c, "passw\xc3\xb6rd");
	scram_server_init(&s, &a);
	assert_int_equal(run_exchange(&c, &s), 4);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/*
 * A clear-text secret gives a verifier whose salt is fixed per user and password, so that the
 * second login is served from the key cache: one PBKDF2 run for any number of logins. A new
 * password, another user or a cleared cache derive again.
 */
static void test_key_cache_server_side(void **state)
{
	ScramKeyCacheStats st0, st;
	ScramSecret a, b, c2;
	ScramClient c;
	ScramServer s;

	scram_key_cache_clear();
	st0 = scram_key_cache_stats();
	assert_int_equal(st0.entries, 0);
	assert_true(scram_secret_for_user("alice", "hunter2", &a));
	st = scram_key_cache_stats();
	assert_true(st.derivations == st0.derivations + 1);
	for (int i = 0; i < 50; i++) {
		assert_true(scram_secret_for_user("alice", "hunter2", &b));
		assert_memory_equal(&a, &b, sizeof(a));
	}
	st = scram_key_cache_stats();
	assert_true(st.derivations == st0.derivations + 1);
	assert_true(st.hits >= st0.hits + 50);
	assert_int_equal(a.iterations, 4096);
	assert_int_equal(a.salt_len, 16);

	/* the verifier works with a client that knows the password */
	scram_client_init_password(&c, "hunter2");
	scram_server_init(&s, &a);
	assert_int_equal(run_exchange(&c, &s), 0);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);

	/* another password or another user: another salt, another derivation */
	assert_true(scram_secret_for_user("alice", "hunter3", &b));
	assert_memory_not_equal(a.salt, b.salt, a.salt_len);
	assert_true(scram_secret_for_user("bob", "hunter2", &c2));
	assert_memory_not_equal(a.salt, c2.salt, a.salt_len);
	st = scram_key_cache_stats();
	assert_true(st.derivations == st0.derivations + 3);

	scram_key_cache_clear();
	assert_int_equal(scram_key_cache_stats().entries, 0);
	assert_true(scram_secret_for_user("alice", "hunter2", &b));
	assert_memory_equal(&a, &b, sizeof(a));
	assert_true(scram_key_cache_stats().derivations == st0.derivations + 4);
}

/* Logging into a server with a password derives once per server verifier (salt, count). */
static void test_key_cache_client_side(void **state)
{
	ScramSecret sec = rfc_secret();
	uint64_t before;

	scram_key_cache_clear();
	before = scram_key_cache_stats().derivations;
	for (int i = 0; i < 20; i++) {
		ScramClient c;
		ScramServer s;

		scram_client_init_password(&c, "pencil");
		scram_server_init(&s, &sec);
		assert_int_equal(run_exchange(&c, &s), 0);
		scram_client_cleanup(&c);
		scram_server_cleanup(&s);
	}
	assert_true(scram_key_cache_stats().derivations == before + 1);
}

/* The cache never holds more than SCRAM_KEY_CACHE_SIZE pairs; the oldest make room. */
static void test_key_cache_bounded(void **state)
{
	ScramSecret sec;
	uint64_t before;
	char pw[32];

	scram_key_cache_clear();
	for (int i = 0; i < SCRAM_KEY_CACHE_SIZE + 8; i++) {
		snprintf(pw, sizeof(pw), "password-%d", i);
		assert_true(scram_secret_for_user("u", pw, &sec));
	}
	assert_int_equal(scram_key_cache_stats().entries, SCRAM_KEY_CACHE_SIZE);
	/* the newest is still there, the first was evicted */
	before = scram_key_cache_stats().derivations;
	assert_true(scram_secret_for_user("u", pw, &sec));
	assert_true(scram_key_cache_stats().derivations == before);
	assert_true(scram_secret_for_user("u", "password-0", &sec));
	assert_true(scram_key_cache_stats().derivations == before + 1);
	scram_key_cache_clear();
}

/* The mock verifier: a stable salt per user (as a real user's is), and no password matches. */
static void test_mock_secret(void **state)
{
	ScramSecret a, b, c2;
	ScramClient c;
	ScramServer s;

	assert_true(scram_mock_secret("nobody", &a));
	assert_true(scram_mock_secret("nobody", &b));
	assert_true(scram_mock_secret("someone", &c2));
	assert_int_equal(a.iterations, 4096);
	assert_memory_equal(a.salt, b.salt, a.salt_len);
	assert_memory_not_equal(a.salt, c2.salt, a.salt_len);
	assert_memory_not_equal(a.stored_key, b.stored_key, SCRAM_KEY_LEN);
	scram_client_init_password(&c, "");
	scram_server_init(&s, &a);
	assert_int_equal(run_exchange(&c, &s), 4);
	scram_client_cleanup(&c);
	scram_server_cleanup(&s);
}

/*
 * A verifier with any count parses (the caller refuses it above SCRAM_MAX_ITERATIONS and names
 * the count in its log line); the cap stays far above PostgreSQL's and PgBouncer's 4096.
 */
static void test_iteration_cap(void **state)
{
	ScramSecret sec;

	assert_true(scram_parse_secret("SCRAM-SHA-256$2147483647:" RFC_SALT "$" RFC_STORED
				       ":" RFC_SERVER_KEY, &sec));
	assert_int_equal(sec.iterations, 2147483647);
	assert_true(sec.iterations > SCRAM_MAX_ITERATIONS);
	assert_true(SCRAM_MAX_ITERATIONS >= 10 * 4096);
}

/*
 * A client nonce of 60+ characters with a 64-byte salt makes a server-first-message longer than
 * 128 bytes (the login reply buffer used to be 128 bytes): it is built whole. The longest nonce
 * that fits the 96-byte combined nonce is accepted, one more is refused with a clear error.
 */
static void test_long_nonce_and_salt(void **state)
{
	char nonce[80], first[128], *out = NULL;
	ScramSecret sec = rfc_secret();
	ScramServer s;
	size_t max_cn;

	for (size_t i = 0; i < SCRAM_MAX_SALT; i++)
		sec.salt[i] = (uint8_t)(i * 7);
	sec.salt_len = SCRAM_MAX_SALT;
	max_cn = sizeof(s.nonce) - 1 - 24; /* the server's part is 24 base64 characters */
	memset(nonce, 'x', max_cn);
	nonce[max_cn] = '\0';
	snprintf(first, sizeof(first), "n,,n=,r=%s", nonce);
	scram_server_init(&s, &sec);
	assert_true(server_first_str(&s, first, &out));
	assert_true(strlen(out) > 128);
	assert_non_null(strstr(out, ",i=4096"));
	free(out);
	scram_server_cleanup(&s);

	nonce[max_cn] = 'x';
	nonce[max_cn + 1] = '\0';
	snprintf(first, sizeof(first), "n,,n=,r=%s", nonce);
	scram_server_init(&s, &sec);
	assert_false(server_first_str(&s, first, &out));
	assert_null(out);
	assert_non_null(strstr(s.err, "client nonce too long"));
	scram_server_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc7677_server),
	    cmocka_unit_test(test_rfc7677_client_server),
	    cmocka_unit_test(test_gs2_flag_y),
	    cmocka_unit_test(test_random_nonces),
	    cmocka_unit_test(test_wrong_password),
	    cmocka_unit_test(test_tampered_client_final),
	    cmocka_unit_test(test_malformed_client_first),
	    cmocka_unit_test(test_lenient_client_first),
	    cmocka_unit_test(test_malformed_client_final),
	    cmocka_unit_test(test_client_final_extension),
	    cmocka_unit_test(test_malformed_server_first),
	    cmocka_unit_test(test_bad_server_final),
	    cmocka_unit_test(test_state_order),
	    cmocka_unit_test(test_pass_through),
	    cmocka_unit_test(test_pass_through_rfc),
	    cmocka_unit_test(test_parse_secret_good),
	    cmocka_unit_test(test_parse_secret_bad),
	    cmocka_unit_test(test_postgres_verifier),
	    cmocka_unit_test(test_secret_from_password),
	    cmocka_unit_test(test_key_cache_server_side),
	    cmocka_unit_test(test_key_cache_client_side),
	    cmocka_unit_test(test_key_cache_bounded),
	    cmocka_unit_test(test_mock_secret),
	    cmocka_unit_test(test_iteration_cap),
	    cmocka_unit_test(test_long_nonce_and_salt),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
