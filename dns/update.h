/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * RFC 2136 UPDATE messages: the encoder (zone section, optional prerequisites, then for each
 * RRset "delete A and/or AAAA RRset, add the new addresses") and the parser of the server's reply
 * (header, echoed zone, TSIG record). No I/O here: bytes in, bytes out, so both are unit-tested
 * against a captured nsupdate/BIND exchange and fuzzed.
 */
#ifndef PGPILOT_DNS_UPDATE_H
#define PGPILOT_DNS_UPDATE_H

#include "dns/tsig.h"

/* RCODEs an UPDATE reply can carry (RFC 1035, 2136) */
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5
#define DNS_RCODE_YXDOMAIN 6
#define DNS_RCODE_YXRRSET 7
#define DNS_RCODE_NXRRSET 8
#define DNS_RCODE_NOTAUTH 9
#define DNS_RCODE_NOTZONE 10
const char *dns_rcode_name(int rcode);

/* An IPv4 or IPv6 address in network order. */
typedef struct DnsAddr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t bytes[16];
} DnsAddr;

/* Numeric address only ("10.0.0.5", "fd00::5"); false for anything else. */
bool dns_addr_parse(const char *text, DnsAddr *out) _MUSTCHECK;
void dns_addr_format(const DnsAddr *addr, char *buf, size_t len);

typedef enum DnsPrereqKind {
	DNS_PREREQ_RRSET_EXISTS,    /* the RRset <name> <type> exists, whatever its value */
	DNS_PREREQ_RRSET_EQUALS,    /* ... and holds exactly <addrs> (compare-and-swap) */
	DNS_PREREQ_RRSET_ABSENT,    /* no RRset <name> <type> */
	DNS_PREREQ_NAME_IN_USE,     /* <name> owns some RR */
	DNS_PREREQ_NAME_NOT_IN_USE, /* <name> owns nothing */
} DnsPrereqKind;

typedef struct DnsPrereq {
	DnsPrereqKind kind;
	const char *name;     /* absolute */
	uint16_t type;        /* DNS_TYPE_A / AAAA for the RRSET kinds */
	const DnsAddr *addrs; /* RRSET_EQUALS only; all of <type>'s family */
	int naddrs;
} DnsPrereq;

#define DNS_REPLACE_A 0x1    /* delete the A RRset before adding */
#define DNS_REPLACE_AAAA 0x2 /* delete the AAAA RRset before adding */

/* Replace the address RRsets of one name: delete (per <replace>), then add every address. */
typedef struct DnsRRsetUpdate {
	const char *name; /* absolute */
	unsigned replace; /* DNS_REPLACE_* */
	uint32_t ttl;
	const DnsAddr *addrs;
	int naddrs; /* 0 with a replace mask just deletes */
} DnsRRsetUpdate;

typedef struct DnsUpdateMsg {
	uint16_t id;
	const char *zone;
	const DnsPrereq *prereqs;
	int nprereqs;
	const DnsRRsetUpdate *updates;
	int nupdates;
} DnsUpdateMsg;

/*
 * Encode <m> unsigned into buf (sign it afterwards with dns_tsig_sign()). Owner names are
 * compressed the way nsupdate does it. False with a message for a bad name or address, or when
 * <cap> is too small.
 */
bool dns_update_encode(const DnsUpdateMsg *m, uint8_t *buf, size_t cap, size_t *len, char *err,
		       size_t errlen) _MUSTCHECK;

/* What an UPDATE reply says; tsig.mac and tsig.other point into the parsed buffer. */
typedef struct DnsReply {
	uint16_t id;
	bool qr;
	int opcode;
	int rcode;
	uint16_t zocount, prcount, upcount, adcount;
	bool has_zone; /* the zone section was echoed */
	DnsName zone;
	bool has_tsig; /* a TSIG record ends the additional section */
	DnsTsigRecord tsig;
} DnsReply;

/*
 * Parse a reply of <len> bytes. Every section is walked with bounds checks; a TSIG record that is
 * not the last record, trailing bytes, or any truncation makes it fail with a message. The opcode
 * and QR bit are reported, not checked (the caller decides).
 */
bool dns_update_parse_reply(const uint8_t *buf, size_t len, DnsReply *out, char *err,
			    size_t errlen) _MUSTCHECK;

/* The result of one UPDATE attempt, as the updater logs it and SHOW DNS shows it. */
typedef enum DnsOutcome {
	DNS_OUTCOME_NONE,          /* nothing sent yet */
	DNS_OUTCOME_PENDING,       /* sent, or waiting to be retried */
	DNS_OUTCOME_OK,            /* NOERROR, reply MAC verified (or no key configured) */
	DNS_OUTCOME_TIMEOUT,       /* no reply from any server after c-ares' tries */
	DNS_OUTCOME_NETWORK,       /* c-ares error other than a timeout (connection refused...) */
	DNS_OUTCOME_FORMERR,       /* the server could not parse the message */
	DNS_OUTCOME_SERVFAIL,      /* server failure: retried */
	DNS_OUTCOME_NOTIMP,        /* the server does not do UPDATE */
	DNS_OUTCOME_REFUSED,       /* update policy refused it (e.g. no allow-update) */
	DNS_OUTCOME_PREREQ_FAILED, /* YXDOMAIN / YXRRSET / NXRRSET / NXDOMAIN */
	DNS_OUTCOME_NOTAUTH,       /* the server is not authoritative for the zone */
	DNS_OUTCOME_NOTZONE,       /* a record name is outside the zone */
	DNS_OUTCOME_BADSIG,        /* TSIG: the server rejected our MAC (wrong secret) */
	DNS_OUTCOME_BADKEY,        /* TSIG: unknown key name or algorithm */
	DNS_OUTCOME_BADTIME,       /* TSIG: clocks differ by more than the fudge */
	DNS_OUTCOME_BAD_MAC,       /* the reply is unsigned or its MAC does not verify */
	DNS_OUTCOME_BAD_REPLY,     /* malformed or unexpected reply */
	DNS_OUTCOME_OTHER_RCODE,   /* any other RCODE */
	DNS_OUTCOME_CANCELLED,     /* superseded by a newer publication, or shut down */
} DnsOutcome;
const char *dns_outcome_name(DnsOutcome o);
/* Worth another attempt after a back-off: timeouts, network errors, SERVFAIL. */
bool dns_outcome_is_retryable(DnsOutcome o);

typedef struct DnsReplyCheck {
	DnsOutcome outcome;
	int rcode;          /* -1 when there was no parsable reply */
	int tsig_error;     /* TSIG Error field, 0 when none */
	bool authenticated; /* the reply MAC verified */
	bool has_skew;
	int64_t skew;     /* BADTIME: server clock minus ours, seconds */
	char detail[192]; /* human-readable explanation, no trailing period */
} DnsReplyCheck;

/*
 * Judge the reply to a request with ID <id>: parse it, check QR/opcode/ID, verify the TSIG
 * (when <key> is not NULL, against the request MAC) and map RCODE and TSIG error to an outcome.
 * A NOERROR that cannot be authenticated is BAD_MAC, never OK. <now> is the local clock in
 * seconds since the epoch.
 */
void dns_update_check_reply(const DnsTsigKey *key, uint16_t id, const uint8_t *req_mac,
			    size_t req_mac_len, const uint8_t *buf, size_t len, uint64_t now,
			    DnsReplyCheck *res);

#endif
