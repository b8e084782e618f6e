/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * libFuzzer target: an UPDATE reply from the network goes through the reply parser and the TSIG
 * verifier (dns_update_check_reply), exactly as the updater feeds them, against the request of
 * the captured nsupdate/BIND exchange. Built with clang -fsanitize=fuzzer,address (see Makefile).
 */
#include "dns/update.h"

#include <stdlib.h>
#include <string.h>

static DnsTsigKey key;
static uint8_t req_mac[DNS_TSIG_MAX_MAC];
static size_t req_mac_len;

static void setup(void)
{
	static const char *secret = "3fv81dfSYQyJeustVKq369RMsNVRkowSpm//n0zw2DU=";
	uint8_t buf[512];
	size_t len = 0;
	char err[256];
	DnsAddr addr;
	DnsRRsetUpdate upd = {.name = "primary.pg.test.", .replace = DNS_REPLACE_A, .ttl = 30};
	DnsUpdateMsg msg = {.id = 0x2b2d, .zone = "pg.test", .updates = &upd, .nupdates = 1};

	if (!dns_tsig_key_set(&key, "pgpool-update", NULL, secret, err, sizeof(err)) ||
	    !dns_addr_parse("127.0.0.20", &addr))
		abort();
	upd.addrs = &addr;
	upd.naddrs = 1;
	if (!dns_update_encode(&msg, buf, sizeof(buf), &len, err, sizeof(err)) ||
	    !dns_tsig_sign(&key, buf, &len, sizeof(buf), 1795623339, 300, req_mac, &req_mac_len,
			   err, sizeof(err)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	DnsReplyCheck chk;
	DnsReply rep;
	char err[128];
	uint8_t *copy;

	if (!ready) {
		setup();
		ready = true;
	}
	/* an exact-size heap copy, so ASan catches a read one byte past the end */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	dns_update_check_reply(&key, 0x2b2d, req_mac, req_mac_len, copy, size, 1795623339, &chk);
	/* unsigned path and the bare parser too */
	dns_update_check_reply(NULL, 0x2b2d, NULL, 0, copy, size, 1795623339, &chk);
	if (dns_update_parse_reply(copy, size, &rep, err, sizeof(err)) && rep.has_tsig &&
	    (rep.tsig.rr_offset >= size || rep.tsig.mac_len > size))
		abort(); /* the parser promised offsets inside the buffer */
	free(copy);
	return 0;
}
