/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of dns/resolver.c against an in-process fake DNS server (UDP, A queries) with an
 * injected clock: TTL capping, addresses in turn, the last good address kept (and flagged stale)
 * while lookups fail, then dropped after dns_stale_keep; no repeated lookups of a failing name;
 * numeric hosts; cancellation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns/resolver.h"
#include "dns/wire.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static double fake_now = 1000.0;

static double fake_clock(void)
{
	return fake_now;
}

typedef struct Srv {
	struct event_base *base;
	int fd;
	int port;
	struct event *ev;
	bool fail; /* answer SERVFAIL */
	uint32_t ttl;
	int naddrs;
	uint8_t addrs[4][4];
	int queries;
	/* callback results */
	int ncb;
	char last_addr[64];
	int last_port;
	char last_err[128];
} Srv;

static void srv_cb(evutil_socket_t fd, short what, void *arg)
{
	Srv *s = arg;
	uint8_t q[512], out[1024];
	struct sockaddr_in from;
	socklen_t flen = sizeof(from);
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
	DnsReader r;
	size_t qend, o;

	if (n < 12)
		return;
	s->queries++;
	dns_reader_init(&r, q, (size_t)n);
	r.off = 12;
	if (!dns_reader_name(&r, NULL) || dns_reader_bytes(&r, 4) == NULL)
		return;
	qend = r.off;
	memcpy(out, q, qend);
	put_be16(out + 2, (uint16_t)(0x8180 | (s->fail ? 2 : 0)));
	put_be16(out + 6, 0);
	put_be16(out + 8, 0);
	put_be16(out + 10, 0);
	o = qend;
	if (!s->fail && get_be16(q + qend - 4) == DNS_TYPE_A) {
		for (int i = 0; i < s->naddrs; i++) {
			put_be16(out + o, 0xC00C);
			put_be16(out + o + 2, DNS_TYPE_A);
			put_be16(out + o + 4, DNS_CLASS_IN);
			put_be32(out + o + 6, s->ttl);
			put_be16(out + o + 10, 4);
			memcpy(out + o + 12, s->addrs[i], 4);
			o += 16;
		}
		put_be16(out + 6, (uint16_t)s->naddrs);
	}
	sendto(fd, out, o, 0, (struct sockaddr *)&from, flen);
}

static void resolved_cb(void *arg, const char *host, const struct sockaddr *addr,
			const char *errmsg)
{
	Srv *s = arg;

	s->ncb++;
	s->last_addr[0] = '\0';
	s->last_err[0] = '\0';
	if (addr) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;

		inet_ntop(AF_INET, &in->sin_addr, s->last_addr, sizeof(s->last_addr));
		s->last_port = ntohs(in->sin_port);
	} else {
		snprintf(s->last_err, sizeof(s->last_err), "%s", errmsg);
	}
	event_base_loopexit(s->base, NULL);
}

static DnsResolver *srv_start(Srv *s)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char csv[64], err[256];
	DnsResolverOptions o;
	DnsResolver *r;

	memset(s, 0, sizeof(*s));
	s->base = event_base_new();
	s->fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
	s->port = ntohs(sa.sin_port);
	s->ev = event_new(s->base, s->fd, EV_READ | EV_PERSIST, srv_cb, s);
	event_add(s->ev, NULL);
	snprintf(csv, sizeof(csv), "127.0.0.1:%d", s->port);
	memset(&o, 0, sizeof(o));
	o.servers_csv = csv;
	o.max_ttl = 20;
	o.stale_keep = 100;
	o.family = AF_INET;
	o.timeout_ms = 300;
	o.tries = 1;
	o.clock = fake_clock;
	r = dns_resolver_new(s->base, &o, err, sizeof(err));
	assert_non_null(r);
	return r;
}

static void srv_stop(Srv *s, DnsResolver *r)
{
	dns_resolver_free(r);
	event_free(s->ev);
	close(s->fd);
	event_base_free(s->base);
}

static void run(Srv *s)
{
	struct timeval limit = {5, 0};

	event_base_loopexit(s->base, &limit);
	event_base_dispatch(s->base);
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)len);
}

typedef struct Seen {
	int n;
	DnsHostInfo h;
	char addresses[512];
	char err[128];
} Seen;

static void seen_cb(void *arg, const DnsHostInfo *h)
{
	Seen *s = arg;

	s->n++;
	s->h = *h;
	snprintf(s->err, sizeof(s->err), "%s", h->last_error);
}

static void test_cache_ttl_and_stale(void **state)
{
	Srv s;
	DnsResolver *r = srv_start(&s);
	struct sockaddr_storage ss;
	socklen_t sl;
	char a1[64], a2[64];
	Seen seen;

	s.ttl = 30;
	s.naddrs = 2;
	memcpy(s.addrs[0], "\x0a\x00\x00\x01", 4);
	memcpy(s.addrs[1], "\x0a\x00\x00\x02", 4);

	assert_int_equal(dns_resolve(r, "db.test", 6432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_PENDING);
	assert_int_equal(s.ncb, 0); /* never synchronously */
	run(&s);
	assert_int_equal(s.ncb, 1);
	assert_int_equal(s.last_port, 6432);
	assert_true(strcmp(s.last_addr, "10.0.0.1") == 0 || strcmp(s.last_addr, "10.0.0.2") == 0);

	/* cached: answered at once, the two addresses in turn, one query so far */
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_DONE);
	assert_int_equal(sl, sizeof(struct sockaddr_in));
	addr_text(&ss, a1, sizeof(a1));
	assert_int_equal(dns_resolve(r, "DB.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_DONE);
	addr_text(&ss, a2, sizeof(a2));
	assert_string_not_equal(a1, a2);
	assert_int_equal(s.queries, 1);
	memset(&seen, 0, sizeof(seen));
	dns_resolver_foreach(r, seen_cb, &seen);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.h.ttl_left, 20); /* 30 capped by max_ttl */
	assert_false(seen.h.stale);
	assert_string_equal(seen.h.addresses, "10.0.0.1,10.0.0.2");

	/* expired, and the server now fails: the last good address is used, flagged stale */
	fake_now += 25;
	s.fail = true;
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_PENDING);
	run(&s);
	assert_int_equal(s.ncb, 2);
	assert_true(s.last_addr[0] != '\0');
	dns_resolver_foreach(r, seen_cb, &seen);
	assert_true(seen.h.stale);
	assert_int_equal(seen.h.ttl_left, 0);
	assert_true(seen.err[0] != '\0');
	assert_string_equal(dns_resolver_last_error(r, "db.test"), seen.err);

	/* right after a failure: no new query, the stale address answers at once */
	fake_now += 1;
	int q = s.queries;
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_DONE);
	assert_int_equal(s.queries, q);

	/* past dns_stale_keep: the address is gone */
	fake_now += 200;
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_PENDING);
	run(&s);
	assert_int_equal(s.ncb, 3);
	assert_string_equal(s.last_addr, "");
	assert_true(s.last_err[0] != '\0');
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_FAILED);

	/* the server recovers: a new address */
	fake_now += 3;
	s.fail = false;
	s.naddrs = 1;
	memcpy(s.addrs[0], "\x0a\x00\x00\x03", 4);
	assert_int_equal(dns_resolve(r, "db.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_PENDING);
	run(&s);
	assert_string_equal(s.last_addr, "10.0.0.3");
	dns_resolver_foreach(r, seen_cb, &seen);
	assert_false(seen.h.stale);
	assert_string_equal(seen.err, "");
	srv_stop(&s, r);
}

static void test_numeric_and_cancel(void **state)
{
	Srv s;
	DnsResolver *r = srv_start(&s);
	struct sockaddr_storage ss;
	socklen_t sl;
	char a[64];
	Seen seen = {0};
	struct timeval t = {0, 400000};

	assert_int_equal(dns_resolve(r, "127.0.0.5", 15432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_DONE);
	addr_text(&ss, a, sizeof(a));
	assert_string_equal(a, "127.0.0.5");
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 15432);
	assert_int_equal(dns_resolve(r, "::1", 5432, &ss, &sl, resolved_cb, &s), DNS_LOOKUP_DONE);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(sl, sizeof(struct sockaddr_in6));
	dns_resolver_foreach(r, seen_cb, &seen);
	assert_int_equal(seen.n, 0); /* numeric hosts are not cached */

	s.ttl = 10;
	s.naddrs = 1;
	memcpy(s.addrs[0], "\x0a\x00\x00\x09", 4);
	assert_int_equal(dns_resolve(r, "gone.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_PENDING);
	dns_resolve_cancel(r, resolved_cb, &s);
	event_base_loopexit(s.base, &t);
	event_base_dispatch(s.base);
	assert_int_equal(s.ncb, 0);
	assert_int_equal(s.queries, 1);
	/* the lookup still filled the cache */
	assert_int_equal(dns_resolve(r, "gone.test", 5432, &ss, &sl, resolved_cb, &s),
			 DNS_LOOKUP_DONE);
	assert_string_equal(dns_lookup_name(DNS_LOOKUP_PENDING), "pending");
	srv_stop(&s, r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cache_ttl_and_stale),
	    cmocka_unit_test(test_numeric_and_cancel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
