/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The update scheduler. Each record (primary, replica RRset) is a job with at most one attempt in
 * flight: a newer publication waits for the attempt in flight to end and is then sent at once, so
 * an old address can never overwrite a newer one at the server. Each attempt gets a fresh random
 * ID and a fresh TSIG time; c-ares itself tries each configured server once per attempt (in
 * order), and the job retries whole attempts with a doubling back-off.
 *
 * The update channel has ARES_FLAG_NOCHECKRESP (else c-ares hides REFUSED/SERVFAIL replies and
 * resends) and never ARES_FLAG_EDNS (else c-ares may strip the TSIG record on FORMERR).
 */
#include "dns/updater.h"
#include "dns/channel.h"
#include "dns/dns_log.h"

#include <event2/event.h>
#include <openssl/rand.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One ares_send() in flight; freed by its callback, which c-ares always calls exactly once. */
typedef struct Attempt {
	DnsUpdater *u;
	DnsRecordKind kind;
	uint64_t generation; /* of the publication it carries */
	uint16_t id;
	uint8_t mac[DNS_TSIG_MAX_MAC];
	size_t mac_len;
} Attempt;

typedef struct Job {
	bool configured; /* the record has a name in the config */
	DnsRecordStatus st;
	DnsAddr addrs[DNS_MAX_RRSET_ADDRS]; /* what the latest publication asks for */
	int naddrs;
	uint64_t generation; /* bumped by every dns_publish_*() */
	bool in_flight;      /* an Attempt is with c-ares */
	uint16_t id;         /* its message ID */
	struct event *retry_timer;
	bool retry_pending;
	DnsOutcome last_logged; /* retries log a failure only when it changes */
} Job;

struct DnsUpdater {
	struct event_base *base;
	DnsConfig cfg;
	char servers[1024]; /* c-ares CSV, for messages */
	DnsChannel *ch;
	DnsTsigKey key;
	bool has_key;
	DnsPublishDoneCb cb;
	void *cb_arg;
	Job jobs[DNS_RECORD_KINDS];
	int depth; /* > 0 while inside our c-ares callback */
	bool free_requested;
	struct event *free_ev; /* deferred dns_updater_free() */
};

static void send_attempt(DnsUpdater *u, DnsRecordKind kind);

/* snprintf into a detail field; truncation of a long server list or name is acceptable there. */
static void _PRINTF(3, 4) set_detail(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, len, fmt, ap);
	va_end(ap);
}

const char *dns_record_kind_name(DnsRecordKind kind)
{
	switch (kind) {
	case DNS_RECORD_PRIMARY:
		return "primary";
	case DNS_RECORD_REPLICA:
		return "replica";
	}
	return "unknown";
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	const Attempt *tag = arg; /* only (updater, kind) are used; owned by the timer */

	tag->u->jobs[tag->kind].retry_pending = false;
	send_attempt(tag->u, tag->kind);
}

static void free_cb(evutil_socket_t fd, short what, void *arg)
{
	DnsUpdater *u = arg;

	u->depth = 0;
	dns_updater_free(u);
}

DnsUpdater *dns_updater_new(struct event_base *base, const DnsConfig *cfg, DnsPublishDoneCb cb,
			    void *cb_arg, char *err, size_t errlen)
{
	DnsUpdater *u;
	DnsChannelOptions co;
	char name[DNS_MAX_NAME + 8];

	if (!dns_config_is_enabled(cfg)) {
		snprintf(err, errlen, "DNS publication is not configured (update_servers, zone)");
		return NULL;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	u->base = base;
	u->cb = cb;
	u->cb_arg = cb_arg;
	if (!dns_config_copy(&u->cfg, cfg)) {
		free(u);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!dns_config_servers_csv(&u->cfg, u->servers, sizeof(u->servers), err, errlen) ||
	    !dns_config_load_key(&u->cfg, &u->key, &u->has_key, err, errlen))
		goto fail;
	if (!u->has_key)
		dns_log_warning(
		    "no TSIG key configured: DNS updates to zone \"%s\" are sent unsigned",
		    u->cfg.zone);

	memset(&co, 0, sizeof(co));
	co.servers_csv = u->servers;
	co.flags = ARES_FLAG_NOCHECKRESP | (u->cfg.use_tcp ? ARES_FLAG_USEVC : 0);
	co.timeout_ms = u->cfg.update_timeout_ms;
	co.tries = 1; /* one try per server per attempt: the job retries whole attempts */
	co.no_rotate = true;
	u->ch = dns_channel_new(base, &co, err, errlen);
	if (u->ch == NULL)
		goto fail;
	u->free_ev = event_new(base, -1, 0, free_cb, u);
	if (u->free_ev == NULL) {
		snprintf(err, errlen, "could not create an event");
		goto fail;
	}
	for (int k = 0; k < DNS_RECORD_KINDS; k++) {
		Job *job = &u->jobs[k];
		bool have = k == DNS_RECORD_PRIMARY
				? dns_config_primary_fqdn(&u->cfg, name, sizeof(name))
				: dns_config_replica_fqdn(&u->cfg, name, sizeof(name));

		job->st.kind = (DnsRecordKind)k;
		job->st.rcode = -1;
		job->configured = have;
		if (have) {
			DnsName n;
			char nerr[256];

			if (!dns_name_from_text(&n, name, nerr, sizeof(nerr))) {
				snprintf(err, errlen, "invalid %s record name: %s",
					 dns_record_kind_name((DnsRecordKind)k), nerr);
				goto fail;
			}
			dns_name_to_text(&n, job->st.name, sizeof(job->st.name));
		}
	}
	return u;
fail:
	u->free_requested = false;
	dns_updater_free(u);
	return NULL;
}

void dns_updater_free(DnsUpdater *u)
{
	if (u == NULL)
		return;
	if (u->depth > 0) {
		/* inside our c-ares callback: ares_destroy() now would pull the rug out */
		if (!u->free_requested) {
			u->free_requested = true;
			event_active(u->free_ev, 0, 0);
		}
		return;
	}
	/* pending attempts get ARES_EDESTRUCTION and free themselves */
	dns_channel_free(u->ch);
	u->ch = NULL;
	for (int k = 0; k < DNS_RECORD_KINDS; k++) {
		Job *job = &u->jobs[k];

		if (job->retry_timer) {
			free(event_get_callback_arg(job->retry_timer));
			event_free(job->retry_timer);
		}
	}
	if (u->free_ev)
		event_free(u->free_ev);
	dns_tsig_key_cleanup(&u->key);
	dns_config_cleanup(&u->cfg);
	free(u);
}

static void format_addrs(const DnsAddr *addrs, int n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && used + 1 < len; i++) {
		char a[64];

		dns_addr_format(&addrs[i], a, sizeof(a));
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "", a);
	}
}

/* Start a new publication of <addrs> for <kind>. */
static bool publish(DnsUpdater *u, DnsRecordKind kind, const DnsAddr *addrs, int n)
{
	Job *job = &u->jobs[kind];

	memcpy(job->addrs, addrs, sizeof(DnsAddr) * (size_t)n);
	job->naddrs = n;
	job->generation++;
	job->st.requested = time(NULL);
	job->st.attempts = 0;
	job->st.done = false;
	job->st.outcome = DNS_OUTCOME_PENDING;
	job->st.rcode = -1;
	job->st.tsig_error = 0;
	job->st.has_skew = false;
	job->st.skew = 0;
	job->st.detail[0] = '\0';
	job->last_logged = DNS_OUTCOME_NONE;
	format_addrs(addrs, n, job->st.value, sizeof(job->st.value));
	if (job->in_flight) {
		/* sent when the attempt in flight ends, never overtaking it */
		dns_log_debug("DNS update of \"%s\" queued behind the attempt in flight",
			      job->st.name);
		return true;
	}
	if (job->retry_pending) {
		event_del(job->retry_timer);
		job->retry_pending = false;
	}
	send_attempt(u, kind);
	return true;
}

bool dns_publish_primary(DnsUpdater *u, const char *address, char *err, size_t errlen)
{
	DnsAddr a;

	if (address == NULL || !dns_addr_parse(address, &a)) {
		snprintf(err, errlen,
			 "invalid primary address \"%s\": a numeric IP address is expected",
			 address ? address : "");
		return false;
	}
	return publish(u, DNS_RECORD_PRIMARY, &a, 1);
}

bool dns_publish_replicas(DnsUpdater *u, const char *const *addresses, int n, char *err,
			  size_t errlen)
{
	DnsAddr a[DNS_MAX_RRSET_ADDRS];

	if (!u->jobs[DNS_RECORD_REPLICA].configured) {
		snprintf(err, errlen, "replica_name is not configured");
		return false;
	}
	if (n < 0 || n > DNS_MAX_RRSET_ADDRS) {
		snprintf(err, errlen, "%d replica addresses given, at most %d are published", n,
			 DNS_MAX_RRSET_ADDRS);
		return false;
	}
	for (int i = 0; i < n; i++) {
		if (addresses[i] == NULL || !dns_addr_parse(addresses[i], &a[i])) {
			snprintf(err, errlen,
				 "invalid replica address \"%s\": a numeric IP address is expected",
				 addresses[i] ? addresses[i] : "");
			return false;
		}
	}
	return publish(u, DNS_RECORD_REPLICA, a, n);
}

/* An attempt is over for good: record, log once, tell the caller. */
static void finish(DnsUpdater *u, Job *job)
{
	job->st.done = true;
	if (job->st.outcome == DNS_OUTCOME_OK)
		dns_log_info("DNS record \"%s\" set to %s (%d attempt%s)", job->st.name,
			     job->st.value[0] ? job->st.value : "no address", job->st.attempts,
			     job->st.attempts == 1 ? "" : "s");
	else
		dns_log_error("could not update DNS record \"%s\" to %s: %s: %s (%d attempt%s)",
			      job->st.name, job->st.value[0] ? job->st.value : "no address",
			      dns_outcome_name(job->st.outcome), job->st.detail, job->st.attempts,
			      job->st.attempts == 1 ? "" : "s");
	if (u->cb)
		u->cb(u->cb_arg, &job->st);
}

static int backoff_ms(const DnsUpdater *u, int attempts)
{
	long ms = u->cfg.update_retry_delay_ms;

	for (int i = 1; i < attempts && ms < u->cfg.update_retry_max_ms; i++)
		ms *= 2;
	return (int)(ms > u->cfg.update_retry_max_ms ? u->cfg.update_retry_max_ms : ms);
}

static void schedule_retry(DnsUpdater *u, Job *job)
{
	int ms = backoff_ms(u, job->st.attempts);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	size_t used = strlen(job->st.detail);

	if (job->st.outcome != job->last_logged)
		dns_log_warning("DNS update of \"%s\" failed: %s: %s; retrying in %g s (attempt %d "
				"of %d)",
				job->st.name, dns_outcome_name(job->st.outcome), job->st.detail,
				ms / 1000.0, job->st.attempts, u->cfg.update_tries);
	job->last_logged = job->st.outcome;
	snprintf(job->st.detail + used, sizeof(job->st.detail) - used, "; retrying in %g s",
		 ms / 1000.0);
	if (evtimer_add(job->retry_timer, &tv) == 0) {
		job->retry_pending = true;
	} else {
		finish(u, job);
	}
}

static void reply_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	Attempt *a = arg;
	DnsUpdater *u = a->u;
	Job *job;
	DnsReplyCheck chk;

	if (status == ARES_EDESTRUCTION) {
		/* the updater is being freed: nobody is waiting for this */
		free(a);
		return;
	}
	job = &u->jobs[a->kind];
	job->in_flight = false;
	u->depth++;

	if (status == ARES_SUCCESS && abuf != NULL && alen > 0) {
		dns_update_check_reply(u->has_key ? &u->key : NULL, a->id, a->mac, a->mac_len, abuf,
				       (size_t)alen, (uint64_t)time(NULL), &chk);
	} else {
		memset(&chk, 0, sizeof(chk));
		chk.rcode = -1;
		if (status == ARES_ETIMEOUT) {
			chk.outcome = DNS_OUTCOME_TIMEOUT;
			set_detail(chk.detail, sizeof(chk.detail),
				   "no reply from %s within %g s per server", u->servers,
				   u->cfg.update_timeout_ms / 1000.0);
		} else if (status == ARES_ECANCELLED) {
			chk.outcome = DNS_OUTCOME_CANCELLED;
			snprintf(chk.detail, sizeof(chk.detail), "cancelled");
		} else {
			chk.outcome = DNS_OUTCOME_NETWORK;
			set_detail(chk.detail, sizeof(chk.detail), "%s (servers %s)",
				   ares_strerror(status), u->servers);
		}
	}

	if (a->generation != job->generation) {
		/* a newer publication arrived meanwhile: this result no longer matters */
		dns_log_debug("DNS update of \"%s\" superseded (%s)", job->st.name,
			      dns_outcome_name(chk.outcome));
		send_attempt(u, a->kind);
		goto out;
	}
	job->st.time = time(NULL);
	job->st.outcome = chk.outcome;
	job->st.rcode = chk.rcode;
	job->st.tsig_error = chk.tsig_error;
	job->st.has_skew = chk.has_skew;
	job->st.skew = chk.skew;
	snprintf(job->st.detail, sizeof(job->st.detail), "%s", chk.detail);
	if (dns_outcome_is_retryable(chk.outcome) && job->st.attempts < u->cfg.update_tries)
		schedule_retry(u, job);
	else
		finish(u, job);
out:
	free(a);
	u->depth--;
}

/* A random message ID that differs from the other record's ID in flight. */
static uint16_t new_id(const DnsUpdater *u, DnsRecordKind kind)
{
	const Job *other =
	    &u->jobs[kind == DNS_RECORD_PRIMARY ? DNS_RECORD_REPLICA : DNS_RECORD_PRIMARY];
	uint8_t b[2];
	uint16_t id;

	do {
		if (RAND_bytes(b, 2) != 1)
			b[0] ^= (uint8_t)rand(), b[1] ^= (uint8_t)rand();
		id = get_be16(b);
	} while (other->in_flight && other->id == id);
	return id;
}

static void send_attempt(DnsUpdater *u, DnsRecordKind kind)
{
	Job *job = &u->jobs[kind];
	uint8_t *buf;
	size_t len = 0;
	Attempt *a;
	DnsRRsetUpdate upd;
	DnsUpdateMsg msg;
	char err[256];

	if (job->retry_timer == NULL) {
		/* the callback argument carries (updater, kind); freed with the timer */
		Attempt *tag = calloc(1, sizeof(*tag));

		if (tag) {
			tag->u = u;
			tag->kind = kind;
			job->retry_timer = evtimer_new(u->base, retry_cb, tag);
			if (job->retry_timer == NULL)
				free(tag);
		}
	}
	buf = malloc(DNS_MAX_MSG);
	a = calloc(1, sizeof(*a));
	job->st.attempts++;
	if (buf == NULL || a == NULL || job->retry_timer == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	a->u = u;
	a->kind = kind;
	a->generation = job->generation;
	a->id = new_id(u, kind);

	memset(&upd, 0, sizeof(upd));
	upd.name = job->st.name;
	upd.replace = DNS_REPLACE_A | DNS_REPLACE_AAAA;
	upd.ttl = (uint32_t)u->cfg.ttl;
	upd.addrs = job->addrs;
	upd.naddrs = job->naddrs;
	memset(&msg, 0, sizeof(msg));
	msg.id = a->id;
	msg.zone = u->cfg.zone;
	msg.updates = &upd;
	msg.nupdates = 1;
	if (!dns_update_encode(&msg, buf, DNS_MAX_MSG, &len, err, sizeof(err)))
		goto fail;
	if (u->has_key && !dns_tsig_sign(&u->key, buf, &len, DNS_MAX_MSG, (uint64_t)time(NULL),
					 DNS_TSIG_FUDGE, a->mac, &a->mac_len, err, sizeof(err)))
		goto fail;

	dns_log_debug("sending DNS update %04x for \"%s\" -> %s (%zu bytes, attempt %d)", a->id,
		      job->st.name, job->st.value, len, job->st.attempts);
	job->in_flight = true;
	job->id = a->id;
	/* may call reply_cb synchronously (no servers, socket failure): state is ready for it */
	ares_send(dns_channel_ares(u->ch), buf, (int)len, reply_cb, a);
	dns_channel_rearm(u->ch);
	free(buf);
	return;
fail:
	free(buf);
	free(a);
	job->st.time = time(NULL);
	job->st.outcome = DNS_OUTCOME_NETWORK;
	set_detail(job->st.detail, sizeof(job->st.detail), "could not build the update: %s", err);
	u->depth++;
	finish(u, job);
	u->depth--;
}

void dns_updater_foreach(const DnsUpdater *u, void (*fn)(void *arg, const DnsRecordStatus *st),
			 void *arg)
{
	for (int k = 0; k < DNS_RECORD_KINDS; k++)
		if (u->jobs[k].configured)
			fn(arg, &u->jobs[k].st);
}

bool dns_updater_is_busy(const DnsUpdater *u)
{
	for (int k = 0; k < DNS_RECORD_KINDS; k++)
		if (u->jobs[k].in_flight || u->jobs[k].retry_pending)
			return true;
	return false;
}
