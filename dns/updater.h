/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The update scheduler: publishes the primary's address (and the replica RRset) with one signed
 * RFC 2136 UPDATE each, sent with ares_send() on a dedicated channel to the configured primary
 * master(s). It never blocks, retries with back-off on timeout, network errors and SERVFAIL,
 * tells every outcome apart, logs each once, keeps per-record status for SHOW DNS, and reports
 * final results upward through one callback. It knows nothing of pools (style.md rule 3).
 *
 * Interface: dns_updater_new / _free, dns_publish_primary, dns_publish_replicas,
 * dns_updater_foreach, dns_updater_is_busy.
 */
#ifndef PGPILOT_DNS_UPDATER_H
#define PGPILOT_DNS_UPDATER_H

#include "dns/dns_config.h"
#include "dns/update.h"

#include <time.h>

struct event_base;

typedef enum DnsRecordKind {
	DNS_RECORD_PRIMARY, /* primary_name: the leader's address */
	DNS_RECORD_REPLICA, /* replica_name: every healthy replica's address */
} DnsRecordKind;
#define DNS_RECORD_KINDS 2
const char *dns_record_kind_name(DnsRecordKind kind);

#define DNS_MAX_RRSET_ADDRS 32

/* What SHOW DNS shows for one record; also what the done callback receives. */
typedef struct DnsRecordStatus {
	DnsRecordKind kind;
	char name[DNS_MAX_NAME + 2];          /* absolute, with trailing dot once published */
	char value[DNS_MAX_RRSET_ADDRS * 48]; /* the new addresses, comma-separated */
	time_t requested;   /* wall clock of the dns_publish_*() call; 0 = never */
	time_t time;        /* wall clock of the last outcome */
	DnsOutcome outcome; /* of the last attempt (NONE before the first) */
	int attempts;       /* of this publication */
	bool done;          /* no more attempts will be made */
	int rcode;          /* -1 without a reply */
	int tsig_error;
	bool has_skew;
	int64_t skew; /* BADTIME: server clock minus ours, seconds */
	char detail[192];
} DnsRecordStatus;

/*
 * Called once per publication when it is over: OK, or the final failure after the retries. Not
 * called for a publication superseded by a newer one. Runs on the loop; it must not free the
 * updater synchronously (dns_updater_free() defers itself when called from here).
 */
typedef void (*DnsPublishDoneCb)(void *arg, const DnsRecordStatus *st);

typedef struct DnsUpdater DnsUpdater;

/*
 * Create an updater from a validated, enabled <cfg> (copied: the caller may free it). Loads the
 * TSIG key. NULL with a message when the servers or the key are unusable.
 */
DnsUpdater *dns_updater_new(struct event_base *base, const DnsConfig *cfg, DnsPublishDoneCb cb,
			    void *cb_arg, char *err, size_t errlen);
/* Cancel everything (no done callback) and free. Safe from inside the done callback. */
void dns_updater_free(DnsUpdater *u);

/*
 * Publish <address> (numeric IPv4 or IPv6) as the only address of primary_name: delete its A and
 * AAAA RRsets, add the address. Returns at once; false only for a bad address. A publication in
 * flight for the same record is superseded: the new one is sent when the old attempt ends, so
 * the server never sees them out of order.
 */
bool dns_publish_primary(DnsUpdater *u, const char *address, char *err, size_t errlen) _MUSTCHECK;
/*
 * Publish <n> addresses as the replica RRset (A and AAAA as needed; n = 0 empties it). False when
 * replica_name is not configured or an address is bad.
 */
bool dns_publish_replicas(DnsUpdater *u, const char *const *addresses, int n, char *err,
			  size_t errlen) _MUSTCHECK;

/* Visit the status of each configured record (primary first). */
void dns_updater_foreach(const DnsUpdater *u, void (*fn)(void *arg, const DnsRecordStatus *st),
			 void *arg);
/* Something is in flight or waiting for a retry. */
bool dns_updater_is_busy(const DnsUpdater *u);

#endif
