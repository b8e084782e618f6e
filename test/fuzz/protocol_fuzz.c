/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * libFuzzer target for what a client controls before it is authenticated: the startup packet
 * framing and parameters, message headers, and the SCRAM messages a server side parses. Any
 * crash, sanitizer report or read past the input is a bug.
 */
#include "protocol/packet.h"
#include "protocol/scram.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_framing(const uint8_t *data, size_t size)
{
	uint32_t total, code, pid, key;
	uint8_t type;
	StartupParams sp;
	char err[256];

	if (pkt_parse_startup_header(data, size, &total, &code) == PKT_OK && total <= size) {
		if (code == PROTO_V3)
			(void)!pkt_parse_startup_params(data + 8, total - 8, &sp, err, sizeof(err));
		else if (code == PROTO_CANCEL)
			(void)!pkt_parse_cancel(data, total, &pid, &key);
	}
	(void)pkt_parse_header(data, size, 8192, &type, &total);
}

static void fuzz_scram(const uint8_t *data, size_t size)
{
	ScramServer s;
	ScramSecret secret;
	char *out = NULL;
	const uint8_t *cut = memchr(data, '\n', size);
	size_t first_len = cut ? (size_t)(cut - data) : size;

	memset(&secret, 0, sizeof(secret));
	secret.iterations = 1;
	secret.salt_len = 16;
	scram_server_init(&s, &secret);
	/* the input is "client-first\nclient-final" */
	if (scram_server_first(&s, (const char *)data, first_len, &out) && cut) {
		free(out);
		out = NULL;
		(void)!scram_server_final(&s, (const char *)cut + 1, size - first_len - 1, &out);
	}
	free(out);
	scram_server_cleanup(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_framing(data, size);
	fuzz_scram(data, size);
	return 0;
}
