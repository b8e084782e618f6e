/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of dns/updater.c (and dns/channel.c) on a real libevent loop against an in-process
 * fake UDP server that follows a script: SERVFAIL then NOERROR is retried to success, a spoofed
 * reply with a bad MAC is refused, a reply with zeroed counts (which c-ares 1.18 silently drops)
 * ends in a timeout, a newer publication never overtakes the one in flight, and the updater may
 * be freed from inside its own callback.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns/updater.h"

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *SECRET = "3fv81dfSYQyJeustVKq369RMsNVRkowSpm//n0zw2DU=";

typedef enum Action {
	ACT_DROP,        /* no reply */
	ACT_NOERROR,     /* signed NOERROR */
	ACT_SERVFAIL,    /* signed SERVFAIL */
	ACT_BAD_MAC,     /* NOERROR with a MAC that does not verify */
	ACT_ZERO_COUNTS, /* NOERROR with all counts 0: c-ares drops it */
} Action;

typedef struct Fake {
	struct event_base *base;
	int fd;
	int port;
	struct event *ev;
	Action script[8];
	int nscript;
	int nreq;
	uint8_t req[8][1024];
	size_t reqlen[8];
	DnsTsigKey key;
	/* results */
	int ndone;
	DnsRecordStatus last;
	DnsUpdater *u;
	bool free_in_cb;
} Fake;

/* Build and send the reply to request <q> as <act> says. */
static void reply(Fake *f, const uint8_t *q, size_t qlen, Action act, struct sockaddr_in *to)
{
	uint8_t out[1024], macin[2048], mac[32], vars[128];
	size_t n, zlen, v = 0, m = 0;
	unsigned maclen = 0;
	DnsReply req;
	char err[128];
	static const uint8_t alg[] = "\x0bhmac-sha256";
	uint64_t now = (uint64_t)time(NULL);

	assert_true(dns_update_parse_reply(q, qlen, &req, err, sizeof(err)));
	assert_true(req.has_tsig);
	zlen = req.zone.len + 4;
	memcpy(out, q, 12);
	put_be16(out + 2, (uint16_t)(0xA800 | (act == ACT_SERVFAIL ? 2 : 0)));
	put_be16(out + 4, act == ACT_ZERO_COUNTS ? 0 : 1);
	put_be16(out + 6, 0);
	put_be16(out + 8, 0);
	put_be16(out + 10, 0);
	n = 12;
	if (act != ACT_ZERO_COUNTS) {
		memcpy(out + n, q + 12, zlen);
		n += zlen;
	}
	/* TSIG variables */
	memcpy(vars, f->key.name.wire, f->key.name.len);
	v = f->key.name.len;
	put_be16(vars + v, 255);
	put_be32(vars + v + 2, 0);
	v += 6;
	memcpy(vars + v, alg, 13);
	v += 13;
	put_be16(vars + v, 0);
	put_be32(vars + v + 2, (uint32_t)now);
	put_be16(vars + v + 6, 300);
	put_be16(vars + v + 8, 0);
	put_be16(vars + v + 10, 0);
	v += 12;
	put_be16(macin, req.tsig.mac_len);
	m = 2;
	memcpy(macin + m, req.tsig.mac, req.tsig.mac_len);
	m += req.tsig.mac_len;
	memcpy(macin + m, out, n);
	m += n;
	memcpy(macin + m, vars, v);
	m += v;
	assert_non_null(
	    HMAC(EVP_sha256(), f->key.secret, (int)f->key.secret_len, macin, m, mac, &maclen));
	if (act == ACT_BAD_MAC)
		mac[5] ^= 0x40;
	if (act != ACT_ZERO_COUNTS) {
		memcpy(out + n, f->key.name.wire, f->key.name.len);
		n += f->key.name.len;
		put_be16(out + n, 250);
		put_be16(out + n + 2, 255);
		put_be32(out + n + 4, 0);
		put_be16(out + n + 8, (uint16_t)(13 + 10 + 32 + 6));
		n += 10;
		memcpy(out + n, alg, 13);
		n += 13;
		put_be16(out + n, 0);
		put_be32(out + n + 2, (uint32_t)now);
		put_be16(out + n + 6, 300);
		put_be16(out + n + 8, 32);
		n += 10;
		memcpy(out + n, mac, 32);
		n += 32;
		memcpy(out + n, q, 2); /* original ID */
		put_be32(out + n + 2, 0);
		n += 6;
		put_be16(out + 10, 1);
	}
	assert_int_equal(sendto(f->fd, out, n, 0, (struct sockaddr *)to, sizeof(*to)), (ssize_t)n);
}

static void server_cb(evutil_socket_t fd, short what, void *arg)
{
	Fake *f = arg;
	uint8_t buf[1024];
	struct sockaddr_in from;
	socklen_t flen = sizeof(from);
	ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
	Action act;

	if (n <= 0)
		return;
	if (f->nreq < 8) {
		memcpy(f->req[f->nreq], buf, (size_t)n);
		f->reqlen[f->nreq] = (size_t)n;
	}
	act = f->nreq < f->nscript ? f->script[f->nreq] : ACT_NOERROR;
	f->nreq++;
	if (act != ACT_DROP)
		reply(f, buf, (size_t)n, act, &from);
}

static void done_cb(void *arg, const DnsRecordStatus *st)
{
	Fake *f = arg;

	f->ndone++;
	f->last = *st;
	if (f->free_in_cb) {
		dns_updater_free(f->u); /* deferred by the updater itself */
		f->u = NULL;
	}
	event_base_loopexit(f->base, NULL);
}

static void fake_start(Fake *f, const Action *script, int n)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char err[256];

	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	assert_non_null(f->base);
	f->fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(f->fd, (struct sockaddr *)&sa, &len), 0);
	f->port = ntohs(sa.sin_port);
	f->ev = event_new(f->base, f->fd, EV_READ | EV_PERSIST, server_cb, f);
	event_add(f->ev, NULL);
	memcpy(f->script, script, sizeof(Action) * (size_t)n);
	f->nscript = n;
	assert_true(dns_tsig_key_set(&f->key, "pgpool-update", NULL, SECRET, err, sizeof(err)));
}

static void fake_updater(Fake *f, bool with_replica)
{
	DnsConfig cfg;
	char err[512], servers[64];

	dns_config_init(&cfg);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", f->port);
	assert_true(dns_config_set(&cfg, "update_servers", servers, err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "zone", "pg.test", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "tsig_key_name", "pgpool-update", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "tsig_secret", SECRET, err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_timeout", "0.2", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "update_retry_delay", "0.05", err, sizeof(err)));
	if (with_replica)
		assert_true(dns_config_set(&cfg, "replica_name", "replicas", err, sizeof(err)));
	assert_true(dns_config_validate(&cfg, err, sizeof(err)));
	f->u = dns_updater_new(f->base, &cfg, done_cb, f, err, sizeof(err));
	assert_non_null(f->u);
	dns_config_cleanup(&cfg);
}

static void fake_run(Fake *f)
{
	struct timeval limit = {10, 0};

	event_base_loopexit(f->base, &limit); /* a hung test fails instead of hanging */
	event_base_dispatch(f->base);
}

static void fake_stop(Fake *f)
{
	dns_updater_free(f->u);
	event_free(f->ev);
	close(f->fd);
	event_base_free(f->base);
	dns_tsig_key_cleanup(&f->key);
}

/* The address a request adds (the last A RR before TSIG), as text. */
static void request_addr(const uint8_t *q, size_t len, char *out, size_t outlen)
{
	DnsReply r;
	char err[128];

	assert_true(dns_update_parse_reply(q, len, &r, err, sizeof(err)));
	/* the added A record's 4 bytes sit right before the TSIG record */
	inet_ntop(AF_INET, q + r.tsig.rr_offset - 4, out, (socklen_t)outlen);
}

static void test_servfail_then_ok(void **state)
{
	static const Action script[] = {ACT_SERVFAIL, ACT_NOERROR};
	Fake f;
	char err[128];

	fake_start(&f, script, 2);
	fake_updater(&f, false);
	assert_false(dns_updater_is_busy(f.u));
	assert_true(dns_publish_primary(f.u, "10.1.2.3", err, sizeof(err)));
	assert_true(dns_updater_is_busy(f.u));
	fake_run(&f);
	assert_int_equal(f.ndone, 1);
	assert_int_equal(f.last.outcome, DNS_OUTCOME_OK);
	assert_int_equal(f.last.attempts, 2);
	assert_true(f.last.done);
	assert_string_equal(f.last.name, "primary.pg.test.");
	assert_string_equal(f.last.value, "10.1.2.3");
	assert_int_equal(f.nreq, 2);
	/* a fresh ID per attempt */
	assert_int_not_equal(get_be16(f.req[0]), get_be16(f.req[1]));
	/* pin the c-ares 1.18 behaviour we rely on: ares_send() puts our bytes on the wire
	 * unchanged (1.22+ replace the ID, 1.28+ re-encode): the header ID is the TSIG Original ID
	 * and the MAC still verifies over what the server received */
	for (int i = 0; i < 2; i++) {
		DnsReply r;
		uint8_t copy[1024], mac[DNS_TSIG_MAX_MAC];
		size_t len, maclen = 0;

		assert_true(dns_update_parse_reply(f.req[i], f.reqlen[i], &r, err, sizeof(err)));
		assert_int_equal(get_be16(f.req[i]), r.tsig.orig_id);
		len = r.tsig.rr_offset;
		memcpy(copy, f.req[i], len);
		put_be16(copy + 10, (uint16_t)(get_be16(copy + 10) - 1));
		assert_true(dns_tsig_sign(&f.key, copy, &len, sizeof(copy), r.tsig.time_signed,
					  r.tsig.fudge, mac, &maclen, err, sizeof(err)));
		assert_int_equal(len, f.reqlen[i]);
		assert_memory_equal(copy, f.req[i], len);
	}
	assert_false(dns_updater_is_busy(f.u));
	fake_stop(&f);
}

static void test_bad_mac_not_retried(void **state)
{
	static const Action script[] = {ACT_BAD_MAC};
	Fake f;
	char err[128];

	fake_start(&f, script, 1);
	fake_updater(&f, false);
	assert_true(dns_publish_primary(f.u, "10.1.2.4", err, sizeof(err)));
	fake_run(&f);
	assert_int_equal(f.ndone, 1);
	assert_int_equal(f.last.outcome, DNS_OUTCOME_BAD_MAC);
	assert_int_equal(f.last.attempts, 1);
	assert_non_null(strstr(f.last.detail, "bad MAC"));
	fake_stop(&f);
}

/* c-ares 1.18 drops a reply whose zone section is not echoed: we see a timeout, per attempt. */
static void test_zero_count_reply_times_out(void **state)
{
	static const Action script[] = {ACT_ZERO_COUNTS, ACT_ZERO_COUNTS, ACT_ZERO_COUNTS};
	Fake f;
	char err[128];

	fake_start(&f, script, 3);
	fake_updater(&f, false);
	assert_true(dns_publish_primary(f.u, "10.1.2.5", err, sizeof(err)));
	fake_run(&f);
	assert_int_equal(f.ndone, 1);
	assert_int_equal(f.last.outcome, DNS_OUTCOME_TIMEOUT);
	assert_int_equal(f.last.attempts, 3);
	assert_int_equal(f.last.rcode, -1);
	assert_int_equal(f.nreq, 3);
	fake_stop(&f);
}

/* A newer publication waits for the attempt in flight, then goes out; one callback, newest value.
 */
static void test_supersede_in_order(void **state)
{
	static const Action script[] = {ACT_DROP, ACT_NOERROR};
	Fake f;
	char err[128], a0[32], a1[32];

	fake_start(&f, script, 2);
	fake_updater(&f, false);
	assert_true(dns_publish_primary(f.u, "10.0.0.1", err, sizeof(err)));
	assert_true(dns_publish_primary(f.u, "10.0.0.2", err, sizeof(err)));
	fake_run(&f);
	assert_int_equal(f.ndone, 1);
	assert_int_equal(f.last.outcome, DNS_OUTCOME_OK);
	assert_string_equal(f.last.value, "10.0.0.2");
	assert_int_equal(f.last.attempts, 1);
	assert_int_equal(f.nreq, 2);
	request_addr(f.req[0], f.reqlen[0], a0, sizeof(a0));
	request_addr(f.req[1], f.reqlen[1], a1, sizeof(a1));
	assert_string_equal(a0, "10.0.0.1");
	assert_string_equal(a1, "10.0.0.2");
	fake_stop(&f);
}

static void collect(void *arg, const DnsRecordStatus *st)
{
	int *n = arg;

	(*n)++;
}

static void test_replicas_status_and_errors(void **state)
{
	static const Action script[] = {ACT_NOERROR};
	const char *addrs[] = {"10.0.0.5", "fd00::6", "10.0.0.7"};
	const char *bad[] = {"10.0.0.5", "replica-host"};
	Fake f;
	char err[256];
	int n = 0;

	fake_start(&f, script, 1);
	fake_updater(&f, false);
	assert_false(dns_publish_replicas(f.u, addrs, 3, err, sizeof(err)));
	assert_string_equal(err, "replica_name is not configured");
	assert_false(dns_publish_primary(f.u, "primary.example", err, sizeof(err)));
	assert_non_null(strstr(err, "numeric IP address"));
	dns_updater_foreach(f.u, collect, &n);
	assert_int_equal(n, 1);
	dns_updater_free(f.u);

	fake_updater(&f, true);
	n = 0;
	dns_updater_foreach(f.u, collect, &n);
	assert_int_equal(n, 2);
	assert_false(dns_publish_replicas(f.u, bad, 2, err, sizeof(err)));
	assert_non_null(strstr(err, "replica-host"));
	assert_true(dns_publish_replicas(f.u, addrs, 3, err, sizeof(err)));
	fake_run(&f);
	assert_int_equal(f.last.outcome, DNS_OUTCOME_OK);
	assert_int_equal(f.last.kind, DNS_RECORD_REPLICA);
	assert_string_equal(f.last.name, "replicas.pg.test.");
	assert_string_equal(f.last.value, "10.0.0.5,fd00::6,10.0.0.7");
	assert_string_equal(dns_record_kind_name(f.last.kind), "replica");
	fake_stop(&f);
}

static void test_free_inside_callback(void **state)
{
	static const Action script[] = {ACT_NOERROR};
	Fake f;
	char err[128];

	fake_start(&f, script, 1);
	fake_updater(&f, false);
	f.free_in_cb = true;
	assert_true(dns_publish_primary(f.u, "10.0.0.9", err, sizeof(err)));
	fake_run(&f);
	assert_int_equal(f.ndone, 1);
	assert_null(f.u);
	/* the deferred free runs on the next loop pass */
	event_base_loop(f.base, EVLOOP_NONBLOCK);
	fake_stop(&f);
}

static void test_new_rejects_bad_config(void **state)
{
	struct event_base *base = event_base_new();
	DnsConfig cfg;
	char err[512];

	dns_config_init(&cfg);
	assert_null(dns_updater_new(base, &cfg, done_cb, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "not configured"));
	assert_true(dns_config_set(&cfg, "update_servers", "127.0.0.1:53", err, sizeof(err)));
	assert_true(dns_config_set(&cfg, "zone", "pg.test", err, sizeof(err)));
	assert_true(
	    dns_config_set(&cfg, "tsig_key_file", "data/dns/missing_secret.key", err, sizeof(err)));
	assert_null(dns_updater_new(base, &cfg, done_cb, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "no secret"));
	dns_config_cleanup(&cfg);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_servfail_then_ok),
	    cmocka_unit_test(test_bad_mac_not_retried),
	    cmocka_unit_test(test_zero_count_reply_times_out),
	    cmocka_unit_test(test_supersede_in_order),
	    cmocka_unit_test(test_replicas_status_and_errors),
	    cmocka_unit_test(test_free_inside_callback),
	    cmocka_unit_test(test_new_rejects_bad_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
