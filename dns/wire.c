/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * DNS names and bounded wire reading/writing. Everything that parses a reply from the network goes
 * through DnsReader, whose every read is checked against the buffer end, so a truncated or hostile
 * reply can only make a read fail, never reach past the buffer.
 */
#include "dns/wire.h"

#include <stdio.h>
#include <string.h>

static bool is_label_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

bool dns_name_from_text(DnsName *out, const char *text, char *err, size_t errlen)
{
	const char *p = text;
	size_t len = 0;

	out->len = 0;
	if (text == NULL || *text == '\0') {
		snprintf(err, errlen, "empty domain name");
		return false;
	}
	if (strcmp(text, ".") == 0) {
		out->wire[0] = 0;
		out->len = 1;
		return true;
	}
	while (*p) {
		const char *start = p;
		size_t n;

		while (*p && *p != '.') {
			if (!is_label_char((unsigned char)*p)) {
				snprintf(err, errlen,
					 "invalid character 0x%02x in domain name \"%s\"",
					 (unsigned char)*p, text);
				return false;
			}
			p++;
		}
		n = (size_t)(p - start);
		if (n == 0) {
			snprintf(err, errlen, "empty label in domain name \"%s\"", text);
			return false;
		}
		if (n > DNS_MAX_LABEL) {
			snprintf(err, errlen, "label longer than %d bytes in domain name \"%s\"",
				 DNS_MAX_LABEL, text);
			return false;
		}
		/* the label, its length byte and the final root byte must fit */
		if (len + 1 + n + 1 > DNS_MAX_NAME) {
			snprintf(err, errlen, "domain name \"%.40s...\" is longer than %d bytes",
				 text, DNS_MAX_NAME);
			return false;
		}
		out->wire[len++] = (uint8_t)n;
		memcpy(out->wire + len, start, n);
		len += n;
		if (*p == '.')
			p++; /* a trailing dot ends the loop here: the name is absolute anyway */
	}
	out->wire[len++] = 0;
	out->len = len;
	return true;
}

bool dns_name_qualify(char *out, size_t outlen, const char *name, const char *zone)
{
	size_t n = strlen(name);
	int w;

	if (strcmp(name, "@") == 0)
		w = snprintf(out, outlen, "%s", zone);
	else if (n > 0 && name[n - 1] == '.')
		w = snprintf(out, outlen, "%s", name);
	else if (strcmp(zone, ".") == 0)
		w = snprintf(out, outlen, "%s.", name);
	else
		w = snprintf(out, outlen, "%s.%s", name, zone);
	return w >= 0 && (size_t)w < outlen;
}

void dns_name_to_text(const DnsName *name, char *buf, size_t len)
{
	size_t i = 0, o = 0;

	if (len == 0)
		return;
	if (name->len <= 1) {
		snprintf(buf, len, ".");
		return;
	}
	while (i < name->len && name->wire[i] != 0) {
		size_t n = name->wire[i++];

		for (size_t k = 0; k < n && i < name->len; k++, i++)
			if (o + 1 < len)
				buf[o++] = (char)name->wire[i];
		if (o + 1 < len)
			buf[o++] = '.';
	}
	buf[o] = '\0';
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

void dns_name_lower(DnsName *name)
{
	size_t i = 0;

	/* length bytes are <= 63, below 'A', so only label bytes can change, but walk labels anyway
	 * to make that independent of the byte values */
	while (i < name->len && name->wire[i] != 0) {
		size_t n = name->wire[i++];

		for (size_t k = 0; k < n && i < name->len; k++, i++)
			name->wire[i] = lower(name->wire[i]);
	}
}

static bool wire_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

bool dns_name_equal(const DnsName *a, const DnsName *b)
{
	return wire_equal(a->wire, a->len, b->wire, b->len);
}

void dns_writer_init(DnsWriter *w, uint8_t *buf, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->buf = buf;
	w->cap = cap;
}

static uint8_t *writer_reserve(DnsWriter *w, size_t n)
{
	uint8_t *p;

	if (w->overflow || w->cap - w->len < n) {
		w->overflow = true;
		return NULL;
	}
	p = w->buf + w->len;
	w->len += n;
	return p;
}

void dns_writer_u8(DnsWriter *w, uint8_t v)
{
	uint8_t *p = writer_reserve(w, 1);

	if (p)
		*p = v;
}

void dns_writer_u16(DnsWriter *w, uint16_t v)
{
	uint8_t *p = writer_reserve(w, 2);

	if (p)
		put_be16(p, v);
}

void dns_writer_u32(DnsWriter *w, uint32_t v)
{
	uint8_t *p = writer_reserve(w, 4);

	if (p)
		put_be32(p, v);
}

void dns_writer_u48(DnsWriter *w, uint64_t v)
{
	uint8_t *p = writer_reserve(w, 6);

	if (p) {
		put_be16(p, (uint16_t)(v >> 32));
		put_be32(p + 2, (uint32_t)v);
	}
}

void dns_writer_bytes(DnsWriter *w, const void *data, size_t n)
{
	uint8_t *p = writer_reserve(w, n);

	if (p && n)
		memcpy(p, data, n);
}

/* Offset of an earlier copy of the suffix wire[0..n), or -1. */
static int writer_find(const DnsWriter *w, const uint8_t *wire, size_t n)
{
	for (int i = 0; i < w->ncomp; i++)
		if (wire_equal(w->comp[i].name.wire, w->comp[i].name.len, wire, n))
			return w->comp[i].off;
	return -1;
}

void dns_writer_name(DnsWriter *w, const DnsName *name, bool compress)
{
	size_t start = w->len, i = 0, cut = name->len;
	int ptr = -1;

	if (!compress || name->len <= 1) {
		dns_writer_bytes(w, name->wire, name->len);
		return;
	}
	/* the longest suffix already in the message: walk label starts from the left */
	while (i < name->len && name->wire[i] != 0) {
		ptr = writer_find(w, name->wire + i, name->len - i);
		if (ptr >= 0) {
			cut = i;
			break;
		}
		i += 1 + name->wire[i];
	}
	if (ptr < 0)
		cut = name->len - 1; /* everything but the root byte */
	dns_writer_bytes(w, name->wire, cut);
	if (ptr >= 0)
		dns_writer_u16(w, (uint16_t)(0xC000 | ptr));
	else
		dns_writer_u8(w, 0);
	if (w->overflow)
		return;
	/* remember the suffixes just written in full; pointers only reach 14 bits */
	for (i = 0; i < cut && w->ncomp < (int)ARRAY_SIZE(w->comp); i += 1 + name->wire[i]) {
		if (start + i >= 0x4000)
			break;
		w->comp[w->ncomp].off = (uint16_t)(start + i);
		memcpy(w->comp[w->ncomp].name.wire, name->wire + i, name->len - i);
		w->comp[w->ncomp].name.len = name->len - i;
		w->ncomp++;
	}
}

void dns_reader_init(DnsReader *r, const uint8_t *buf, size_t len)
{
	r->buf = buf;
	r->len = len;
	r->off = 0;
	r->failed = false;
}

const uint8_t *dns_reader_bytes(DnsReader *r, size_t n)
{
	const uint8_t *p;

	if (r->failed || r->off > r->len || r->len - r->off < n) {
		r->failed = true;
		return NULL;
	}
	p = r->buf + r->off;
	r->off += n;
	return p;
}

uint8_t dns_reader_u8(DnsReader *r)
{
	const uint8_t *p = dns_reader_bytes(r, 1);

	return p ? p[0] : 0;
}

uint16_t dns_reader_u16(DnsReader *r)
{
	const uint8_t *p = dns_reader_bytes(r, 2);

	return p ? get_be16(p) : 0;
}

uint32_t dns_reader_u32(DnsReader *r)
{
	const uint8_t *p = dns_reader_bytes(r, 4);

	return p ? get_be32(p) : 0;
}

uint64_t dns_reader_u48(DnsReader *r)
{
	const uint8_t *p = dns_reader_bytes(r, 6);

	return p ? ((uint64_t)get_be16(p) << 32) | get_be32(p + 2) : 0;
}

bool dns_reader_name(DnsReader *r, DnsName *out)
{
	size_t pos = r->off, min_seen = r->off, olen = 0, resume = 0;
	bool jumped = false;
	DnsName scratch;

	if (out == NULL)
		out = &scratch;
	if (r->failed)
		return false;
	for (;;) {
		uint8_t c;

		if (pos >= r->len)
			goto bad;
		c = r->buf[pos];
		if ((c & 0xC0) == 0xC0) {
			size_t target;

			if (pos + 1 >= r->len)
				goto bad;
			target = ((size_t)(c & 0x3F) << 8) | r->buf[pos + 1];
			/* strictly before anything visited so far: guarantees termination */
			if (target >= min_seen)
				goto bad;
			if (!jumped)
				resume = pos + 2;
			jumped = true;
			min_seen = target;
			pos = target;
			continue;
		}
		if ((c & 0xC0) != 0)
			goto bad; /* 0x40/0x80: extended label types, not used by UPDATE */
		if (c == 0) {
			if (olen + 1 > DNS_MAX_NAME)
				goto bad;
			out->wire[olen++] = 0;
			pos++;
			break;
		}
		if (pos + 1 + c > r->len || olen + 1 + c + 1 > DNS_MAX_NAME)
			goto bad;
		memcpy(out->wire + olen, r->buf + pos, 1 + (size_t)c);
		olen += 1 + (size_t)c;
		pos += 1 + (size_t)c;
	}
	out->len = olen;
	r->off = jumped ? resume : pos;
	return true;
bad:
	out->len = 0;
	r->failed = true;
	return false;
}
