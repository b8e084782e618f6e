/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * A c-ares channel driven by the libevent loop: c-ares tells us which sockets to watch through its
 * socket-state callback, we turn that into persistent events, and one timer, re-armed after every
 * c-ares call from ares_timeout(), drives retransmissions and timeouts. Nothing ever blocks.
 */
#ifndef PGPILOT_DNS_CHANNEL_H
#define PGPILOT_DNS_CHANNEL_H

#include "protocol/bytes.h"

#include <ares.h>

struct event_base;

typedef struct DnsChannelOptions {
	const char *servers_csv; /* "ip:port,[ip6]:port"; NULL = the system resolver */
	int flags;               /* ARES_FLAG_* */
	int timeout_ms;          /* first timeout per server; 0 = c-ares' default */
	int tries;               /* passes over the server list; 0 = c-ares' default */
	bool no_rotate;          /* always start with the first server */
} DnsChannelOptions;

typedef struct DnsChannel DnsChannel;

/* A new channel on <base>; NULL with a message in <err>. */
DnsChannel *dns_channel_new(struct event_base *base, const DnsChannelOptions *opts, char *err,
			    size_t errlen);
/*
 * Destroy the channel. c-ares calls every pending callback with ARES_EDESTRUCTION first. Must not
 * be called from inside a c-ares callback of this channel (defer it to the loop instead).
 */
void dns_channel_free(DnsChannel *ch);
ares_channel dns_channel_ares(DnsChannel *ch);
/* Re-arm the timeout timer: call after every ares_* call that may start a query. */
void dns_channel_rearm(DnsChannel *ch);

#endif
