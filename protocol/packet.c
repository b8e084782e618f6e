/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Framing of PostgreSQL v3 messages: headers and startup packets, validated before anything
 * trusts a length. See packet.h.
 */
#include "protocol/packet.h"

#include <stdio.h>
#include <string.h>

PktStatus pkt_parse_header(const uint8_t *buf, size_t avail, uint32_t max_len, uint8_t *type,
			   uint32_t *total)
{
	uint32_t len;

	if (avail < PKT_HDR_LEN)
		return PKT_INCOMPLETE;
	len = get_be32(buf + 1);
	/* the length counts itself; anything above max_len (and 2^31) is refused */
	if (len < 4 || len > max_len || len > 0x7fffffffu - 1)
		return PKT_BAD;
	*type = buf[0];
	*total = len + 1;
	return PKT_OK;
}

PktStatus pkt_parse_startup_header(const uint8_t *buf, size_t avail, uint32_t *total,
				   uint32_t *code)
{
	uint32_t len;

	if (avail < 4)
		return PKT_INCOMPLETE;
	len = get_be32(buf);
	if (len < 8 || len > STARTUP_MAX_LEN)
		return PKT_BAD;
	if (avail < 8)
		return PKT_INCOMPLETE;
	*total = len;
	*code = get_be32(buf + 4);
	return PKT_OK;
}

const char *pkt_get_string(const uint8_t *body, size_t len, size_t *off)
{
	const uint8_t *start, *nul;

	if (*off >= len)
		return NULL;
	start = body + *off;
	nul = memchr(start, 0, len - *off);
	if (!nul)
		return NULL;
	*off = (size_t)(nul - body) + 1;
	return (const char *)start;
}

bool pkt_parse_startup_params(const uint8_t *body, size_t len, StartupParams *out, char *err,
			      size_t errlen)
{
	size_t off = 0;

	memset(out, 0, sizeof(*out));
	for (;;) {
		const char *name, *value;

		if (off < len && body[off] == 0)
			break; /* the terminating empty name */
		name = pkt_get_string(body, len, &off);
		value = name ? pkt_get_string(body, len, &off) : NULL;
		if (!name || !value) {
			snprintf(err, errlen, "invalid startup packet layout: expected terminator as last byte");
			return false;
		}
		if (out->nparams >= STARTUP_MAX_PARAMS) {
			snprintf(err, errlen, "too many parameters in startup packet");
			return false;
		}
		out->params[out->nparams].name = name;
		out->params[out->nparams].value = value;
		out->nparams++;
		if (strcmp(name, "user") == 0)
			out->user = value;
		else if (strcmp(name, "database") == 0)
			out->database = value;
		else if (strcmp(name, "application_name") == 0)
			out->application_name = value;
		else if (strcmp(name, "options") == 0)
			out->options = value;
		else if (strcmp(name, "replication") == 0)
			out->replication = value;
	}
	if (off + 1 != len) {
		snprintf(err, errlen, "invalid startup packet layout: expected terminator as last byte");
		return false;
	}
	if (!out->user || !out->user[0]) {
		snprintf(err, errlen, "no PostgreSQL user name specified in startup packet");
		return false;
	}
	if (!out->database || !out->database[0])
		out->database = out->user;
	return true;
}

bool pkt_parse_cancel(const uint8_t *pkt, size_t len, uint32_t *pid, uint32_t *key)
{
	if (len != 16)
		return false;
	*pid = get_be32(pkt + 8);
	*key = get_be32(pkt + 12);
	return true;
}
