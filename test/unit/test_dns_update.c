/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of dns/update.c, dns/tsig.c signing/verification and dns/wire.c names: the encoder
 * and signer must reproduce the nsupdate request captured against BIND byte for byte, the verifier
 * must accept BIND's reply, and the reply checker must tell every RCODE and TSIG error apart
 * without reading past a truncated buffer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns/update.h"

#include <openssl/hmac.h>
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The exchange of notes/dns.md section 5 (throwaway key). */
static const char *SECRET = "3fv81dfSYQyJeustVKq369RMsNVRkowSpm//n0zw2DU=";
static const uint64_t TIME_SIGNED = 1795623339;
static const char *REQUEST_HEX =
    "2b2d2800000100000002000102706704746573740000060001077072696d617279c00c000100ff0000000000"
    "00c019000100010000001e00047f0000140d7067706f6f6c2d7570646174650000fa00ff00000000003d0b68"
    "6d61632d7368613235360000006b0709ab012c0020edf9b96a112a01fa814be72df08688b03d5a32d23b92fd"
    "184ae0058fe93ad8392b2d00000000";
static const char *REPLY_HEX =
    "2b2da8000001000000000001027067047465737400000600010d7067706f6f6c2d7570646174650000fa00ff"
    "00000000003d0b686d61632d7368613235360000006b0709ab012c002038db83c06d4430c0892eb05a77e8b6"
    "7fd91a1dfe216f531bf5389289f05caa0b2b2d00000000";

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = strlen(hex) / 2;

	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

static void load_key(DnsTsigKey *key)
{
	char err[256];

	assert_true(
	    dns_tsig_key_set(key, "pgpool-update", "hmac-sha256", SECRET, err, sizeof(err)));
	assert_int_equal(key->secret_len, 32);
}

/* Encode + sign the vector's update; returns the length, request MAC in mac. */
static size_t build_vector_request(uint8_t *buf, size_t cap, uint8_t *mac, size_t *maclen)
{
	DnsTsigKey key;
	DnsAddr addr;
	DnsRRsetUpdate upd = {.name = "primary.pg.test.", .replace = DNS_REPLACE_A, .ttl = 30};
	DnsUpdateMsg msg = {.id = 0x2b2d, .zone = "pg.test", .updates = &upd, .nupdates = 1};
	char err[256];
	size_t len = 0;

	load_key(&key);
	assert_true(dns_addr_parse("127.0.0.20", &addr));
	upd.addrs = &addr;
	upd.naddrs = 1;
	assert_true(dns_update_encode(&msg, buf, cap, &len, err, sizeof(err)));
	assert_true(
	    dns_tsig_sign(&key, buf, &len, cap, TIME_SIGNED, 300, mac, maclen, err, sizeof(err)));
	dns_tsig_key_cleanup(&key);
	return len;
}

/* The encoder compresses like nsupdate, so the whole signed request is byte-identical. */
static void test_vector_request_identical(void **state)
{
	uint8_t buf[512], want[512], mac[DNS_TSIG_MAX_MAC];
	size_t maclen = 0, len, wlen;

	len = build_vector_request(buf, sizeof(buf), mac, &maclen);
	wlen = unhex(REQUEST_HEX, want, sizeof(want));
	assert_int_equal(len, 147);
	assert_int_equal(wlen, 147);
	assert_memory_equal(buf, want, wlen);
	assert_int_equal(maclen, 32);
	assert_memory_equal(mac, want + 0x6d, 32);
}

/* The captured reply verifies, and any flipped byte in it breaks verification. */
static void test_vector_reply_verifies(void **state)
{
	uint8_t req[512], rep[512], mac[DNS_TSIG_MAX_MAC];
	size_t maclen = 0, rlen;
	DnsTsigKey key;
	DnsReplyCheck chk;

	(void)build_vector_request(req, sizeof(req), mac, &maclen);
	rlen = unhex(REPLY_HEX, rep, sizeof(rep));
	load_key(&key);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED + 1, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_OK);
	assert_true(chk.authenticated);
	assert_int_equal(chk.rcode, 0);

	/* outside the fudge */
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED + 301, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	assert_non_null(strstr(chk.detail, "fudge"));

	/* a changed byte anywhere before the MAC: flip the zone name */
	rep[0x0d] ^= 0x20; /* 'p' -> 'P': name compare is case-insensitive, MAC is not */
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	assert_false(chk.authenticated);
	rep[0x0d] ^= 0x20;

	/* a different request MAC (not our request) */
	mac[0] ^= 1;
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	mac[0] ^= 1;

	/* another ID than the one we sent */
	dns_update_check_reply(&key, 0x1234, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_REPLY);

	/* unsigned NOERROR to a signed request is never OK */
	put_be16(rep + 10, 0);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, 0x19, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	dns_tsig_key_cleanup(&key);
}

/* Another key or secret: the captured reply must not verify. */
static void test_vector_reply_wrong_key(void **state)
{
	uint8_t req[512], rep[512], mac[DNS_TSIG_MAX_MAC];
	size_t maclen = 0, rlen;
	DnsTsigKey key;
	DnsReplyCheck chk;
	char err[256];

	(void)build_vector_request(req, sizeof(req), mac, &maclen);
	rlen = unhex(REPLY_HEX, rep, sizeof(rep));
	assert_true(dns_tsig_key_set(&key, "pgpool-update", NULL,
				     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", err,
				     sizeof(err)));
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	assert_true(dns_tsig_key_set(&key, "other-key", NULL, SECRET, err, sizeof(err)));
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BAD_MAC);
	assert_non_null(strstr(chk.detail, "wrong key"));
}

/*
 * Build a reply the way BIND does: header (QR, opcode 5, rcode), the echoed zone, and a TSIG
 * record. mac_mode: 0 = no TSIG, 1 = signed (chained to req_mac), 2 = TSIG with MAC size 0.
 */
static size_t make_reply(uint8_t *out, uint16_t id, int rcode, int mac_mode, uint16_t tsig_error,
			 const uint8_t *other, uint16_t other_len, const uint8_t *req_mac,
			 size_t req_mac_len)
{
	static const uint8_t zone[] = {2, 'p', 'g', 4, 't', 'e', 's', 't', 0, 0, 6, 0, 1};
	static const uint8_t keyname[] = "\x0dpgpool-update";
	static const uint8_t alg[] = "\x0bhmac-sha256";
	uint8_t secret[64], vars[128], macin[1024], mac[32];
	size_t n = 0, v = 0, m = 0;
	unsigned maclen = 0;
	int slen;

	put_be16(out, id);
	put_be16(out + 2, (uint16_t)(0xA800 | rcode));
	put_be16(out + 4, 1);
	put_be16(out + 6, 0);
	put_be16(out + 8, 0);
	put_be16(out + 10, 0);
	n = 12;
	memcpy(out + n, zone, sizeof(zone));
	n += sizeof(zone);
	if (mac_mode == 0)
		return n;

	/* TSIG variables: key name, class ANY, TTL 0, algorithm, time, fudge, error, other */
	memcpy(vars + v, keyname, 15);
	v += 15;
	put_be16(vars + v, 255);
	put_be32(vars + v + 2, 0);
	v += 6;
	memcpy(vars + v, alg, 13);
	v += 13;
	put_be16(vars + v, 0);
	put_be32(vars + v + 2, (uint32_t)TIME_SIGNED);
	put_be16(vars + v + 6, 300);
	put_be16(vars + v + 8, tsig_error);
	put_be16(vars + v + 10, other_len);
	v += 12;
	if (other_len)
		memcpy(vars + v, other, other_len);
	v += other_len;

	if (mac_mode == 1) {
		put_be16(macin, (uint16_t)req_mac_len);
		m = 2;
		memcpy(macin + m, req_mac, req_mac_len);
		m += req_mac_len;
		memcpy(macin + m, out, n);
		m += n;
		memcpy(macin + m, vars, v);
		m += v;
		slen = EVP_DecodeBlock(secret, (const uint8_t *)SECRET, (int)strlen(SECRET));
		assert_int_equal(slen, 33);
		assert_non_null(HMAC(EVP_sha256(), secret, 32, macin, m, mac, &maclen));
		assert_int_equal(maclen, 32);
	}
	/* the record */
	memcpy(out + n, keyname, 15);
	n += 15;
	put_be16(out + n, 250);
	put_be16(out + n + 2, 255);
	put_be32(out + n + 4, 0);
	put_be16(out + n + 8, (uint16_t)(13 + 10 + maclen + 6 + other_len));
	n += 10;
	memcpy(out + n, alg, 13);
	n += 13;
	put_be16(out + n, 0);
	put_be32(out + n + 2, (uint32_t)TIME_SIGNED);
	put_be16(out + n + 6, 300);
	put_be16(out + n + 8, (uint16_t)maclen);
	n += 10;
	memcpy(out + n, mac, maclen);
	n += maclen;
	put_be16(out + n, id);
	put_be16(out + n + 2, tsig_error);
	put_be16(out + n + 4, other_len);
	n += 6;
	if (other_len)
		memcpy(out + n, other, other_len);
	n += other_len;
	put_be16(out + 10, 1);
	return n;
}

/* Every RCODE 0..10, signed by the server, maps to its own outcome. */
static void test_every_rcode(void **state)
{
	static const DnsOutcome want[] = {
	    DNS_OUTCOME_OK,
	    DNS_OUTCOME_FORMERR,
	    DNS_OUTCOME_SERVFAIL,
	    DNS_OUTCOME_PREREQ_FAILED,
	    DNS_OUTCOME_NOTIMP,
	    DNS_OUTCOME_REFUSED,
	    DNS_OUTCOME_PREREQ_FAILED,
	    DNS_OUTCOME_PREREQ_FAILED,
	    DNS_OUTCOME_PREREQ_FAILED,
	    DNS_OUTCOME_NOTAUTH,
	    DNS_OUTCOME_NOTZONE,
	};
	uint8_t req[512], rep[512], mac[DNS_TSIG_MAX_MAC];
	size_t maclen = 0, rlen;
	DnsTsigKey key;
	DnsReplyCheck chk;

	(void)build_vector_request(req, sizeof(req), mac, &maclen);
	load_key(&key);
	for (int rc = 0; rc <= 10; rc++) {
		rlen = make_reply(rep, 0x2b2d, rc, 1, 0, NULL, 0, mac, maclen);
		dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
		assert_int_equal(chk.rcode, rc);
		assert_int_equal(chk.outcome, want[rc]);
		assert_true(chk.authenticated);
		if (rc != 0)
			assert_non_null(strstr(chk.detail, dns_rcode_name(rc)));
		/* the same rcode unsigned: reported, but never authenticated */
		rlen = make_reply(rep, 0x2b2d, rc, 0, 0, NULL, 0, mac, maclen);
		dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
		assert_false(chk.authenticated);
		assert_int_equal(chk.outcome, rc == 0 ? DNS_OUTCOME_BAD_MAC : want[rc]);
		/* without a key (unsigned updates) the rcode alone decides */
		dns_update_check_reply(NULL, 0x2b2d, NULL, 0, rep, rlen, TIME_SIGNED, &chk);
		assert_int_equal(chk.outcome, want[rc]);
	}
	assert_true(dns_outcome_is_retryable(DNS_OUTCOME_SERVFAIL));
	assert_true(dns_outcome_is_retryable(DNS_OUTCOME_TIMEOUT));
	assert_false(dns_outcome_is_retryable(DNS_OUTCOME_REFUSED));
	assert_false(dns_outcome_is_retryable(DNS_OUTCOME_BADSIG));
	assert_string_equal(dns_rcode_name(11), "UNKNOWN");
	dns_tsig_key_cleanup(&key);
}

/* NOTAUTH + BADSIG / BADKEY (MAC size 0) and BADTIME (signed, server clock in other data). */
static void test_tsig_errors(void **state)
{
	uint8_t req[512], rep[512], mac[DNS_TSIG_MAX_MAC], other[6];
	size_t maclen = 0, rlen;
	DnsTsigKey key;
	DnsReplyCheck chk;

	(void)build_vector_request(req, sizeof(req), mac, &maclen);
	load_key(&key);

	rlen = make_reply(rep, 0x2b2d, DNS_RCODE_NOTAUTH, 2, DNS_TSIG_BADSIG, NULL, 0, mac, maclen);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BADSIG);
	assert_int_equal(chk.tsig_error, 16);
	assert_false(chk.authenticated);

	rlen = make_reply(rep, 0x2b2d, DNS_RCODE_NOTAUTH, 2, DNS_TSIG_BADKEY, NULL, 0, mac, maclen);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BADKEY);
	assert_int_equal(chk.tsig_error, 17);

	/* server clock 1000 s ahead */
	put_be16(other, 0);
	put_be32(other + 2, (uint32_t)(TIME_SIGNED + 1000));
	rlen =
	    make_reply(rep, 0x2b2d, DNS_RCODE_NOTAUTH, 1, DNS_TSIG_BADTIME, other, 6, mac, maclen);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BADTIME);
	assert_true(chk.authenticated);
	assert_true(chk.has_skew);
	assert_int_equal(chk.skew, 1000);
	assert_non_null(strstr(chk.detail, "1000 s"));

	/* server clock behind */
	put_be32(other + 2, (uint32_t)(TIME_SIGNED - 400));
	rlen =
	    make_reply(rep, 0x2b2d, DNS_RCODE_NOTAUTH, 1, DNS_TSIG_BADTIME, other, 6, mac, maclen);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BADTIME);
	assert_int_equal(chk.skew, -400);

	/* BADTIME without other data: still BADTIME, no skew */
	rlen =
	    make_reply(rep, 0x2b2d, DNS_RCODE_NOTAUTH, 1, DNS_TSIG_BADTIME, NULL, 0, mac, maclen);
	dns_update_check_reply(&key, 0x2b2d, mac, maclen, rep, rlen, TIME_SIGNED, &chk);
	assert_int_equal(chk.outcome, DNS_OUTCOME_BADTIME);
	assert_false(chk.has_skew);
	assert_string_equal(dns_tsig_error_name(18), "BADTIME");
	dns_tsig_key_cleanup(&key);
}

/* Every truncation of a valid reply is rejected (ASan proves no read goes past the copy). */
static void test_truncated_replies(void **state)
{
	uint8_t full[512], mac[DNS_TSIG_MAX_MAC], req[512];
	size_t flen, maclen = 0;
	DnsTsigKey key;
	DnsReplyCheck chk;
	DnsReply rep;
	char err[128];

	(void)build_vector_request(req, sizeof(req), mac, &maclen);
	flen = unhex(REPLY_HEX, full, sizeof(full));
	load_key(&key);
	for (size_t n = 0; n < flen; n++) {
		uint8_t *copy = malloc(n ? n : 1);

		memcpy(copy, full, n);
		dns_update_check_reply(&key, 0x2b2d, mac, maclen, copy, n, TIME_SIGNED, &chk);
		assert_int_not_equal(chk.outcome, DNS_OUTCOME_OK);
		free(copy);
	}
	/* a trailing byte is rejected too */
	full[flen] = 0;
	assert_false(dns_update_parse_reply(full, flen + 1, &rep, err, sizeof(err)));
	assert_true(dns_update_parse_reply(full, flen, &rep, err, sizeof(err)));
	assert_true(rep.has_tsig);
	assert_true(rep.has_zone);
	assert_int_equal(rep.tsig.rr_offset, 0x19);
	dns_tsig_key_cleanup(&key);
}

/* Garbage: pointer loops, forward pointers, huge counts, TSIG not last. */
static void test_garbage_replies(void **state)
{
	DnsReply rep;
	char err[128];
	/* zone name is a pointer to itself */
	static const uint8_t loop1[] = {0x2b, 0x2d, 0xa8, 0,    0,    1, 0, 0, 0,
					0,    0,    0,    0xc0, 0x0c, 0, 6, 0, 1};
	/* a pointer forward */
	static const uint8_t fwd[] = {0x2b, 0x2d, 0xa8, 0, 0,   1, 0, 0, 0, 0, 0,
				      0,    0xc0, 0x0e, 1, 'a', 0, 0, 6, 0, 1};
	/* label "a" then a pointer back to the label: would loop */
	static const uint8_t loop2[] = {0x2b, 0x2d, 0xa8, 0,   0,    1,    0, 0, 0, 0,
					0,    0,    1,    'a', 0xc0, 0x0c, 0, 6, 0, 1};
	/* 65535 records announced, none present */
	static const uint8_t counts[] = {0x2b, 0x2d, 0xa8, 0,    0xff, 0xff,
					 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	/* label with the reserved 0x40 type */
	static const uint8_t ext[] = {0x2b, 0x2d, 0xa8, 0,   0, 1, 0, 0, 0, 0,
				      0,    0,    0x41, 'a', 0, 0, 6, 0, 1};
	/* a TSIG record in the update section, followed by another record */
	static const uint8_t early[] = {0x2b, 0x2d, 0xa8, 0, 0,   0, 0, 0, 0, 1, 0, 1,
					0,    0,    250,  0, 255, 0, 0, 0, 0, 0, 0, 0,
					0,    1,    0,    1, 0,   0, 0, 0, 0, 0};

	assert_false(dns_update_parse_reply(loop1, sizeof(loop1), &rep, err, sizeof(err)));
	assert_false(dns_update_parse_reply(fwd, sizeof(fwd), &rep, err, sizeof(err)));
	assert_false(dns_update_parse_reply(loop2, sizeof(loop2), &rep, err, sizeof(err)));
	assert_false(dns_update_parse_reply(counts, sizeof(counts), &rep, err, sizeof(err)));
	assert_false(dns_update_parse_reply(ext, sizeof(ext), &rep, err, sizeof(err)));
	assert_false(dns_update_parse_reply(early, sizeof(early), &rep, err, sizeof(err)));
	assert_non_null(strstr(err, "TSIG"));
	assert_false(dns_update_parse_reply(counts, 5, &rep, err, sizeof(err)));
	assert_non_null(strstr(err, "header"));
}

static void test_name_edge_cases(void **state)
{
	DnsName n;
	char err[256], text[300], big[400];

	assert_true(dns_name_from_text(&n, "pg.test", err, sizeof(err)));
	assert_int_equal(n.len, 9);
	assert_true(dns_name_from_text(&n, "pg.test.", err, sizeof(err)));
	assert_int_equal(n.len, 9); /* trailing dot: same name */
	dns_name_to_text(&n, text, sizeof(text));
	assert_string_equal(text, "pg.test.");
	assert_true(dns_name_from_text(&n, ".", err, sizeof(err)));
	assert_int_equal(n.len, 1);

	/* 63-byte label ok, 64 rejected */
	memset(big, 'a', 63);
	strcpy(big + 63, ".test");
	assert_true(dns_name_from_text(&n, big, err, sizeof(err)));
	memset(big, 'a', 64);
	strcpy(big + 64, ".test");
	assert_false(dns_name_from_text(&n, big, err, sizeof(err)));
	assert_non_null(strstr(err, "63"));

	/* 255 wire bytes ok: 3 x (1+63) + (1+61) + root = 255; one more byte rejected */
	memset(big, 0, sizeof(big));
	for (int i = 0; i < 3; i++) {
		memset(big + i * 64, 'b', 63);
		big[i * 64 + 63] = '.';
	}
	memset(big + 192, 'c', 61);
	assert_true(dns_name_from_text(&n, big, err, sizeof(err)));
	assert_int_equal(n.len, 255);
	big[192 + 61] = 'c';
	assert_false(dns_name_from_text(&n, big, err, sizeof(err)));
	assert_non_null(strstr(err, "255"));

	/* empty labels */
	assert_false(dns_name_from_text(&n, "pg..test", err, sizeof(err)));
	assert_non_null(strstr(err, "empty label"));
	assert_false(dns_name_from_text(&n, ".pg.test", err, sizeof(err)));
	assert_false(dns_name_from_text(&n, "pg.test..", err, sizeof(err)));
	assert_false(dns_name_from_text(&n, "", err, sizeof(err)));
	/* bad characters */
	assert_false(dns_name_from_text(&n, "pg test", err, sizeof(err)));
	assert_non_null(strstr(err, "invalid character"));
	assert_false(dns_name_from_text(&n, "pg\\.test", err, sizeof(err)));
	assert_false(dns_name_from_text(&n, "p\xc3\xa9.test", err, sizeof(err)));
	assert_false(dns_name_from_text(&n, "a@b.test", err, sizeof(err)));
	assert_true(dns_name_from_text(&n, "_srv-1.Pg.test", err, sizeof(err)));

	/* qualification relative to the zone */
	assert_true(dns_name_qualify(text, sizeof(text), "primary", "pg.test."));
	assert_string_equal(text, "primary.pg.test.");
	assert_true(dns_name_qualify(text, sizeof(text), "db.example.", "pg.test."));
	assert_string_equal(text, "db.example.");
	assert_true(dns_name_qualify(text, sizeof(text), "@", "pg.test."));
	assert_string_equal(text, "pg.test.");
	assert_false(dns_name_qualify(text, 8, "primary", "pg.test."));
}

/* Several addresses in one RRset, both families, prerequisites, and the counts. */
static void test_encode_replica_rrset(void **state)
{
	DnsAddr addrs[3];
	DnsPrereq pre = {
	    .kind = DNS_PREREQ_RRSET_EQUALS, .name = "replica.pg.test", .type = DNS_TYPE_A};
	DnsRRsetUpdate upd = {.name = "replica.pg.test.",
			      .replace = DNS_REPLACE_A | DNS_REPLACE_AAAA,
			      .ttl = 5,
			      .addrs = addrs,
			      .naddrs = 3};
	DnsUpdateMsg msg = {.id = 7,
			    .zone = "pg.test.",
			    .prereqs = &pre,
			    .nprereqs = 1,
			    .updates = &upd,
			    .nupdates = 1};
	uint8_t buf[512];
	size_t len = 0;
	char err[256];
	DnsReader r;
	int seen_a = 0, seen_aaaa = 0, deletes = 0;

	assert_true(dns_addr_parse("10.0.0.1", &addrs[0]));
	assert_true(dns_addr_parse("10.0.0.2", &addrs[1]));
	assert_true(dns_addr_parse("fd00::2", &addrs[2]));
	pre.addrs = addrs;
	pre.naddrs = 2;
	assert_true(dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)));
	assert_int_equal(get_be16(buf + 2), 0x2800);
	assert_int_equal(get_be16(buf + 4), 1);
	assert_int_equal(get_be16(buf + 6), 2); /* prereq RRs */
	assert_int_equal(get_be16(buf + 8), 5); /* 2 deletes + 3 adds */
	assert_int_equal(get_be16(buf + 10), 0);

	/* walk it back with the reader: every name decompresses, every RR is well formed */
	dns_reader_init(&r, buf, len);
	r.off = 12;
	assert_true(dns_reader_name(&r, NULL));
	(void)dns_reader_u32(&r);
	for (int i = 0; i < 7; i++) {
		DnsName owner;
		char text[300];
		uint16_t type, cls, rdlen;

		assert_true(dns_reader_name(&r, &owner));
		dns_name_to_text(&owner, text, sizeof(text));
		assert_string_equal(text, "replica.pg.test.");
		type = dns_reader_u16(&r);
		cls = dns_reader_u16(&r);
		(void)dns_reader_u32(&r);
		rdlen = dns_reader_u16(&r);
		assert_non_null(dns_reader_bytes(&r, rdlen));
		if (i >= 2 && cls == DNS_CLASS_ANY && rdlen == 0)
			deletes++;
		if (i >= 2 && cls == DNS_CLASS_IN && type == DNS_TYPE_A && rdlen == 4)
			seen_a++;
		if (i >= 2 && cls == DNS_CLASS_IN && type == DNS_TYPE_AAAA && rdlen == 16)
			seen_aaaa++;
	}
	assert_int_equal(r.off, len);
	assert_int_equal(deletes, 2);
	assert_int_equal(seen_a, 2);
	assert_int_equal(seen_aaaa, 1);

	/* errors: bad zone, bad record name, too small a buffer, prereq of the wrong family */
	msg.zone = "pg..test";
	assert_false(dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)));
	assert_non_null(strstr(err, "zone"));
	msg.zone = "pg.test";
	assert_false(dns_update_encode(&msg, buf, 40, &len, err, sizeof(err)));
	pre.naddrs = 3;
	assert_false(dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)));
	pre.naddrs = 2;
	upd.name = "bad name";
	assert_false(dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)));
	assert_false(dns_addr_parse("primary.pg.test", &addrs[0]));
}

/* Signing needs room for the TSIG record. */
static void test_sign_no_room(void **state)
{
	DnsTsigKey key;
	uint8_t buf[64], mac[DNS_TSIG_MAX_MAC];
	DnsUpdateMsg msg = {.id = 1, .zone = "pg.test"};
	size_t len = 0, maclen = 0;
	char err[256];

	load_key(&key);
	assert_true(dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)));
	assert_false(dns_tsig_sign(&key, buf, &len, sizeof(buf), TIME_SIGNED, 300, mac, &maclen,
				   err, sizeof(err)));
	assert_int_equal(get_be16(buf + 10), 0);
	dns_tsig_key_cleanup(&key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vector_request_identical),
	    cmocka_unit_test(test_vector_reply_verifies),
	    cmocka_unit_test(test_vector_reply_wrong_key),
	    cmocka_unit_test(test_every_rcode),
	    cmocka_unit_test(test_tsig_errors),
	    cmocka_unit_test(test_truncated_replies),
	    cmocka_unit_test(test_garbage_replies),
	    cmocka_unit_test(test_name_edge_cases),
	    cmocka_unit_test(test_encode_replica_rrset),
	    cmocka_unit_test(test_sign_no_room),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
