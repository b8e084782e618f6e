/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * TSIG (RFC 8945): keys read from a BIND key file (tsig-keygen output) or from name + secret
 * settings, the request signer, the TSIG record parser and the verifier of a reply's MAC. HMACs
 * are computed with OpenSSL EVP_MAC over the message pieces, never joined into one buffer.
 *
 * Interface: dns_tsig_key_set / _parse / _load / _cleanup, dns_tsig_sign, dns_tsig_parse_rdata,
 * dns_tsig_verify_reply.
 */
#ifndef PGPILOT_DNS_TSIG_H
#define PGPILOT_DNS_TSIG_H

#include "dns/wire.h"

#define DNS_TSIG_FUDGE 300  /* seconds, what BIND and Knot use */
#define DNS_TSIG_MAX_MAC 64 /* SHA-512 */
#define DNS_TSIG_MAX_SECRET 256

/* TSIG error field values (RFC 8945 3) */
#define DNS_TSIG_BADSIG 16
#define DNS_TSIG_BADKEY 17
#define DNS_TSIG_BADTIME 18
#define DNS_TSIG_BADTRUNC 22
const char *dns_tsig_error_name(int error);

typedef enum DnsTsigAlg {
	DNS_TSIG_HMAC_SHA256, /* the default, and what tsig-keygen writes */
	DNS_TSIG_HMAC_SHA384,
	DNS_TSIG_HMAC_SHA512,
} DnsTsigAlg;
const char *dns_tsig_alg_name(DnsTsigAlg alg);
/* "hmac-sha256" (a trailing dot and any case accepted); false for anything unsupported. */
bool dns_tsig_alg_from_name(const char *name, DnsTsigAlg *alg) _MUSTCHECK;

typedef struct DnsTsigKey {
	DnsName name; /* canonical wire form: lower case */
	char name_text[DNS_MAX_NAME + 2];
	DnsTsigAlg alg;
	uint8_t secret[DNS_TSIG_MAX_SECRET];
	size_t secret_len;
} DnsTsigKey;

/* From settings: key name, algorithm (NULL = hmac-sha256) and base64 secret. */
bool dns_tsig_key_set(DnsTsigKey *key, const char *name, const char *algorithm,
		      const char *secret_b64, char *err, size_t errlen) _MUSTCHECK;
/*
 * From the text of a BIND key file ('key "name" { algorithm a; secret "b64"; };', comments
 * allowed, several keys allowed). <want_name> selects a key (NULL = the first one).
 */
bool dns_tsig_key_parse(DnsTsigKey *key, const char *text, const char *want_name, char *err,
			size_t errlen) _MUSTCHECK;
/* dns_tsig_key_parse() on the file at <path>; the message names the file. */
bool dns_tsig_key_load(DnsTsigKey *key, const char *path, const char *want_name, char *err,
		       size_t errlen) _MUSTCHECK;
/* Wipe the secret. */
void dns_tsig_key_cleanup(DnsTsigKey *key);

/*
 * Sign the complete message buf[0..*len): append a TSIG record (Original ID = the message ID,
 * Time Signed = <now>) and add one to ARCOUNT. The MAC is also copied to <mac_out> (room for
 * DNS_TSIG_MAX_MAC bytes) because the reply's MAC is chained to it. False when <cap> is too small
 * or OpenSSL fails.
 */
bool dns_tsig_sign(const DnsTsigKey *key, uint8_t *buf, size_t *len, size_t cap, uint64_t now,
		   uint16_t fudge, uint8_t *mac_out, size_t *mac_len, char *err,
		   size_t errlen) _MUSTCHECK;

/* A parsed TSIG record; the pointers point into the message it was parsed from. */
typedef struct DnsTsigRecord {
	size_t rr_offset; /* first byte of the record (its owner name) */
	DnsName key_name;
	uint16_t rr_class;
	uint32_t rr_ttl;
	DnsName alg_name;
	uint64_t time_signed;
	uint16_t fudge;
	uint16_t mac_len;
	const uint8_t *mac;
	uint16_t orig_id;
	uint16_t error;
	uint16_t other_len;
	const uint8_t *other;
} DnsTsigRecord;

/* Parse TSIG RDATA of <rdlen> bytes at the reader's position; false when malformed. */
bool dns_tsig_parse_rdata(DnsReader *r, size_t rdlen, DnsTsigRecord *out) _MUSTCHECK;

/* The server's clock from a BADTIME reply's Other Data; false when absent. */
bool dns_tsig_server_time(const DnsTsigRecord *rec, uint64_t *server_time);

typedef enum DnsTsigVerify {
	DNS_TSIG_VERIFY_OK,        /* MAC matches and the time is within the fudge */
	DNS_TSIG_VERIFY_WRONG_KEY, /* signed with another key name or algorithm */
	DNS_TSIG_VERIFY_NO_MAC,    /* MAC size 0: BADSIG/BADKEY replies, cannot be authenticated */
	DNS_TSIG_VERIFY_BAD_MAC,   /* MAC does not match */
	DNS_TSIG_VERIFY_BAD_TIME,  /* MAC matches but Time Signed is outside the fudge */
	DNS_TSIG_VERIFY_ERROR,     /* OpenSSL failed */
} DnsTsigVerify;
const char *dns_tsig_verify_name(DnsTsigVerify v);

/*
 * Verify the reply msg[0..len) whose TSIG record <rec> was parsed from it, against the request
 * MAC. MAC = HMAC(u16 len(req_mac) | req_mac | reply without TSIG, ID = Original ID, ARCOUNT - 1
 * | TSIG variables). Compared in constant time.
 */
DnsTsigVerify dns_tsig_verify_reply(const DnsTsigKey *key, const uint8_t *req_mac,
				    size_t req_mac_len, const uint8_t *msg, size_t len,
				    const DnsTsigRecord *rec, uint64_t now);

#endif
