/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * RFC 2136 UPDATE encoder and reply parser. "Replace" is encoded as delete-RRset (class ANY, TTL 0,
 * no RDATA) followed by adds (class IN): both steps are idempotent, so a retry that reaches the
 * server twice is harmless, and the server applies the whole message atomically.
 */
#include "dns/update.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

const char *dns_rcode_name(int rcode)
{
	static const char *const names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
					    "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
					    "NXRRSET", "NOTAUTH", "NOTZONE"};

	if (rcode >= 0 && rcode < (int)ARRAY_SIZE(names))
		return names[rcode];
	return "UNKNOWN";
}

bool dns_addr_parse(const char *text, DnsAddr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, out->bytes) == 1) {
		out->family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, text, out->bytes) == 1) {
		out->family = AF_INET6;
		return true;
	}
	return false;
}

void dns_addr_format(const DnsAddr *addr, char *buf, size_t len)
{
	if (inet_ntop(addr->family, addr->bytes, buf, (socklen_t)len) == NULL && len > 0)
		buf[0] = '\0';
}

static uint16_t addr_type(const DnsAddr *a)
{
	return a->family == AF_INET6 ? DNS_TYPE_AAAA : DNS_TYPE_A;
}

static size_t addr_len(const DnsAddr *a)
{
	return a->family == AF_INET6 ? 16 : 4;
}

/* One RR: owner, type, class, ttl, then RDATA (an address or nothing). */
static void write_rr(DnsWriter *w, const DnsName *owner, uint16_t type, uint16_t cls, uint32_t ttl,
		     const DnsAddr *addr)
{
	dns_writer_name(w, owner, true);
	dns_writer_u16(w, type);
	dns_writer_u16(w, cls);
	dns_writer_u32(w, ttl);
	if (addr) {
		dns_writer_u16(w, (uint16_t)addr_len(addr));
		dns_writer_bytes(w, addr->bytes, addr_len(addr));
	} else {
		dns_writer_u16(w, 0);
	}
}

static bool parse_name(DnsName *out, const char *text, const char *what, char *err, size_t errlen)
{
	char sub[256];

	if (!dns_name_from_text(out, text, sub, sizeof(sub))) {
		snprintf(err, errlen, "invalid %s: %s", what, sub);
		return false;
	}
	return true;
}

static bool check_addrs(const DnsAddr *addrs, int n, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		if (addrs[i].family != AF_INET && addrs[i].family != AF_INET6) {
			snprintf(err, errlen, "address %d has no address family", i + 1);
			return false;
		}
	}
	return true;
}

bool dns_update_encode(const DnsUpdateMsg *m, uint8_t *buf, size_t cap, size_t *len, char *err,
		       size_t errlen)
{
	DnsWriter *w;
	DnsName zone, name;
	int nprereq_rrs = 0, nupdate_rrs = 0;
	static const uint16_t replace_types[2] = {DNS_TYPE_A, DNS_TYPE_AAAA};
	bool ok = false;

	/* the writer carries its compression table: too large to keep on a small stack */
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	if (!parse_name(&zone, m->zone ? m->zone : "", "zone name", err, errlen))
		goto out;
	dns_writer_init(w, buf, cap);
	dns_writer_u16(w, m->id);
	dns_writer_u16(w, DNS_OPCODE_UPDATE << 11);
	dns_writer_u16(w, 1); /* ZOCOUNT */
	dns_writer_u16(w, 0); /* PRCOUNT, UPCOUNT: filled in at the end */
	dns_writer_u16(w, 0);
	dns_writer_u16(w, 0); /* ADCOUNT: TSIG adds itself */
	dns_writer_name(w, &zone, true);
	dns_writer_u16(w, DNS_TYPE_SOA);
	dns_writer_u16(w, DNS_CLASS_IN);

	for (int i = 0; i < m->nprereqs; i++) {
		const DnsPrereq *p = &m->prereqs[i];

		if (!parse_name(&name, p->name ? p->name : "", "prerequisite name", err, errlen))
			goto out;
		switch (p->kind) {
		case DNS_PREREQ_RRSET_EXISTS:
			write_rr(w, &name, p->type, DNS_CLASS_ANY, 0, NULL);
			nprereq_rrs++;
			break;
		case DNS_PREREQ_RRSET_EQUALS:
			if (p->naddrs <= 0 || !check_addrs(p->addrs, p->naddrs, err, errlen)) {
				if (p->naddrs <= 0)
					snprintf(err, errlen,
						 "value-dependent prerequisite "
						 "without addresses");
				goto out;
			}
			for (int k = 0; k < p->naddrs; k++) {
				if (addr_type(&p->addrs[k]) != p->type) {
					snprintf(err, errlen,
						 "prerequisite address %d does not "
						 "match its RR type",
						 k + 1);
					goto out;
				}
				write_rr(w, &name, p->type, DNS_CLASS_IN, 0, &p->addrs[k]);
				nprereq_rrs++;
			}
			break;
		case DNS_PREREQ_RRSET_ABSENT:
			write_rr(w, &name, p->type, DNS_CLASS_NONE, 0, NULL);
			nprereq_rrs++;
			break;
		case DNS_PREREQ_NAME_IN_USE:
			write_rr(w, &name, DNS_TYPE_ANY, DNS_CLASS_ANY, 0, NULL);
			nprereq_rrs++;
			break;
		case DNS_PREREQ_NAME_NOT_IN_USE:
			write_rr(w, &name, DNS_TYPE_ANY, DNS_CLASS_NONE, 0, NULL);
			nprereq_rrs++;
			break;
		default:
			snprintf(err, errlen, "unknown prerequisite kind %d", (int)p->kind);
			goto out;
		}
	}

	for (int i = 0; i < m->nupdates; i++) {
		const DnsRRsetUpdate *u = &m->updates[i];

		if (!parse_name(&name, u->name ? u->name : "", "record name", err, errlen))
			goto out;
		if (u->naddrs < 0 || (u->naddrs > 0 && u->addrs == NULL) ||
		    !check_addrs(u->addrs, u->naddrs, err, errlen)) {
			if (u->naddrs < 0 || (u->naddrs > 0 && u->addrs == NULL))
				snprintf(err, errlen, "invalid address list");
			goto out;
		}
		if (u->ttl > 0x7FFFFFFF) {
			snprintf(err, errlen, "TTL %u is out of range", u->ttl);
			goto out;
		}
		for (int t = 0; t < 2; t++) {
			if (u->replace & (1u << t)) {
				write_rr(w, &name, replace_types[t], DNS_CLASS_ANY, 0, NULL);
				nupdate_rrs++;
			}
		}
		for (int k = 0; k < u->naddrs; k++) {
			write_rr(w, &name, addr_type(&u->addrs[k]), DNS_CLASS_IN, u->ttl,
				 &u->addrs[k]);
			nupdate_rrs++;
		}
	}
	if (w->overflow || nprereq_rrs > 0xFFFF || nupdate_rrs > 0xFFFF) {
		snprintf(err, errlen, "UPDATE message is larger than %zu bytes", cap);
		goto out;
	}
	put_be16(buf + 6, (uint16_t)nprereq_rrs);
	put_be16(buf + 8, (uint16_t)nupdate_rrs);
	*len = w->len;
	ok = true;
out:
	free(w);
	return ok;
}

bool dns_update_parse_reply(const uint8_t *buf, size_t len, DnsReply *out, char *err, size_t errlen)
{
	DnsReader r;
	uint16_t flags;
	unsigned total;

	memset(out, 0, sizeof(*out));
	if (len < DNS_HEADER_SIZE) {
		snprintf(err, errlen, "reply of %zu bytes is shorter than a DNS header", len);
		return false;
	}
	dns_reader_init(&r, buf, len);
	out->id = dns_reader_u16(&r);
	flags = dns_reader_u16(&r);
	out->qr = (flags & 0x8000) != 0;
	out->opcode = (flags >> 11) & 0xF;
	out->rcode = flags & 0xF;
	out->zocount = dns_reader_u16(&r);
	out->prcount = dns_reader_u16(&r);
	out->upcount = dns_reader_u16(&r);
	out->adcount = dns_reader_u16(&r);

	for (unsigned i = 0; i < out->zocount; i++) {
		DnsName zname;

		if (!dns_reader_name(&r, &zname) || dns_reader_bytes(&r, 4) == NULL) {
			snprintf(err, errlen, "truncated zone section");
			return false;
		}
		if (i == 0) {
			out->zone = zname;
			out->has_zone = true;
		}
	}
	total = (unsigned)out->prcount + out->upcount + out->adcount;
	for (unsigned i = 0; i < total; i++) {
		size_t start = r.off;
		DnsName owner;
		uint16_t type, cls, rdlen;
		uint32_t ttl;

		if (!dns_reader_name(&r, &owner)) {
			snprintf(err, errlen, "truncated or invalid owner name in record %u",
				 i + 1);
			return false;
		}
		type = dns_reader_u16(&r);
		cls = dns_reader_u16(&r);
		ttl = dns_reader_u32(&r);
		rdlen = dns_reader_u16(&r);
		if (r.failed || rdlen > r.len - r.off) {
			snprintf(err, errlen, "truncated record %u", i + 1);
			return false;
		}
		if (type != DNS_TYPE_TSIG) {
			(void)dns_reader_bytes(&r, rdlen);
			continue;
		}
		/* RFC 8945 5.2: TSIG must be the last record of the additional section */
		if (i != total - 1 || out->adcount == 0) {
			snprintf(err, errlen, "TSIG record is not the last record");
			return false;
		}
		out->tsig.rr_offset = start;
		out->tsig.key_name = owner;
		out->tsig.rr_class = cls;
		out->tsig.rr_ttl = ttl;
		if (!dns_tsig_parse_rdata(&r, rdlen, &out->tsig)) {
			snprintf(err, errlen, "malformed TSIG record");
			return false;
		}
		out->has_tsig = true;
	}
	if (r.off != len) {
		snprintf(err, errlen, "%zu unexpected bytes after the last record", len - r.off);
		return false;
	}
	return true;
}

const char *dns_outcome_name(DnsOutcome o)
{
	switch (o) {
	case DNS_OUTCOME_NONE:
		return "none";
	case DNS_OUTCOME_PENDING:
		return "pending";
	case DNS_OUTCOME_OK:
		return "ok";
	case DNS_OUTCOME_TIMEOUT:
		return "timeout";
	case DNS_OUTCOME_NETWORK:
		return "network error";
	case DNS_OUTCOME_FORMERR:
		return "FORMERR";
	case DNS_OUTCOME_SERVFAIL:
		return "SERVFAIL";
	case DNS_OUTCOME_NOTIMP:
		return "NOTIMP";
	case DNS_OUTCOME_REFUSED:
		return "REFUSED";
	case DNS_OUTCOME_PREREQ_FAILED:
		return "prerequisite failed";
	case DNS_OUTCOME_NOTAUTH:
		return "NOTAUTH";
	case DNS_OUTCOME_NOTZONE:
		return "NOTZONE";
	case DNS_OUTCOME_BADSIG:
		return "BADSIG";
	case DNS_OUTCOME_BADKEY:
		return "BADKEY";
	case DNS_OUTCOME_BADTIME:
		return "BADTIME";
	case DNS_OUTCOME_BAD_MAC:
		return "reply MAC invalid";
	case DNS_OUTCOME_BAD_REPLY:
		return "bad reply";
	case DNS_OUTCOME_OTHER_RCODE:
		return "other rcode";
	case DNS_OUTCOME_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

bool dns_outcome_is_retryable(DnsOutcome o)
{
	return o == DNS_OUTCOME_TIMEOUT || o == DNS_OUTCOME_NETWORK || o == DNS_OUTCOME_SERVFAIL;
}

static DnsOutcome rcode_outcome(int rcode)
{
	switch (rcode) {
	case DNS_RCODE_NOERROR:
		return DNS_OUTCOME_OK;
	case DNS_RCODE_FORMERR:
		return DNS_OUTCOME_FORMERR;
	case DNS_RCODE_SERVFAIL:
		return DNS_OUTCOME_SERVFAIL;
	case DNS_RCODE_NOTIMP:
		return DNS_OUTCOME_NOTIMP;
	case DNS_RCODE_REFUSED:
		return DNS_OUTCOME_REFUSED;
	case DNS_RCODE_NXDOMAIN:
	case DNS_RCODE_YXDOMAIN:
	case DNS_RCODE_YXRRSET:
	case DNS_RCODE_NXRRSET:
		return DNS_OUTCOME_PREREQ_FAILED;
	case DNS_RCODE_NOTAUTH:
		return DNS_OUTCOME_NOTAUTH;
	case DNS_RCODE_NOTZONE:
		return DNS_OUTCOME_NOTZONE;
	}
	return DNS_OUTCOME_OTHER_RCODE;
}

void dns_update_check_reply(const DnsTsigKey *key, uint16_t id, const uint8_t *req_mac,
			    size_t req_mac_len, const uint8_t *buf, size_t len, uint64_t now,
			    DnsReplyCheck *res)
{
	DnsReply rep;
	char perr[128];
	DnsTsigVerify v;

	memset(res, 0, sizeof(*res));
	res->rcode = -1;
	if (!dns_update_parse_reply(buf, len, &rep, perr, sizeof(perr))) {
		res->outcome = DNS_OUTCOME_BAD_REPLY;
		snprintf(res->detail, sizeof(res->detail), "malformed reply: %s", perr);
		return;
	}
	if (!rep.qr || rep.opcode != DNS_OPCODE_UPDATE || rep.id != id) {
		res->outcome = DNS_OUTCOME_BAD_REPLY;
		snprintf(res->detail, sizeof(res->detail),
			 "unexpected reply (QR %d, opcode %d, ID 0x%04x, expected 0x%04x)", rep.qr,
			 rep.opcode, rep.id, id);
		return;
	}
	res->rcode = rep.rcode;
	res->outcome = rcode_outcome(rep.rcode);

	if (key == NULL) {
		/* unsigned request: the rcode is all there is */
		if (res->outcome != DNS_OUTCOME_OK)
			snprintf(res->detail, sizeof(res->detail), "server answered %s",
				 dns_rcode_name(rep.rcode));
		return;
	}
	if (!rep.has_tsig) {
		if (res->outcome == DNS_OUTCOME_OK) {
			res->outcome = DNS_OUTCOME_BAD_MAC;
			snprintf(res->detail, sizeof(res->detail),
				 "NOERROR reply is not signed: cannot trust it");
		} else {
			snprintf(res->detail, sizeof(res->detail),
				 "server answered %s (unsigned reply)", dns_rcode_name(rep.rcode));
		}
		return;
	}
	res->tsig_error = rep.tsig.error;
	v = dns_tsig_verify_reply(key, req_mac, req_mac_len, buf, len, &rep.tsig, now);
	res->authenticated = v == DNS_TSIG_VERIFY_OK;

	if (rep.tsig.error == DNS_TSIG_BADSIG || rep.tsig.error == DNS_TSIG_BADKEY) {
		/* these carry no MAC (RFC 8945 5.3.2): report them, unauthenticated */
		res->outcome =
		    rep.tsig.error == DNS_TSIG_BADSIG ? DNS_OUTCOME_BADSIG : DNS_OUTCOME_BADKEY;
		snprintf(res->detail, sizeof(res->detail),
			 rep.tsig.error == DNS_TSIG_BADSIG
			     ? "server rejected the TSIG signature of key \"%s\" (wrong secret?)"
			     : "server does not know TSIG key \"%s\" or its algorithm",
			 key->name_text);
		return;
	}
	if (rep.tsig.error == DNS_TSIG_BADTIME) {
		uint64_t server_time;

		res->outcome = DNS_OUTCOME_BADTIME;
		if (dns_tsig_server_time(&rep.tsig, &server_time)) {
			res->has_skew = true;
			res->skew = (int64_t)server_time - (int64_t)rep.tsig.time_signed;
			snprintf(res->detail, sizeof(res->detail),
				 "server clock differs from ours by %lld s (fudge %u s)%s",
				 (long long)res->skew, rep.tsig.fudge,
				 res->authenticated ? "" : ", reply not authenticated");
		} else {
			snprintf(res->detail, sizeof(res->detail),
				 "server reports a clock skew beyond the fudge%s",
				 res->authenticated ? "" : ", reply not authenticated");
		}
		return;
	}
	if (rep.tsig.error != 0) {
		res->outcome = DNS_OUTCOME_NOTAUTH;
		snprintf(res->detail, sizeof(res->detail), "server answered TSIG error %u",
			 rep.tsig.error);
		return;
	}
	if (v != DNS_TSIG_VERIFY_OK) {
		res->outcome = DNS_OUTCOME_BAD_MAC;
		snprintf(res->detail, sizeof(res->detail),
			 "reply (%s) failed TSIG verification: %s", dns_rcode_name(rep.rcode),
			 dns_tsig_verify_name(v));
		return;
	}
	if (res->outcome != DNS_OUTCOME_OK)
		snprintf(res->detail, sizeof(res->detail), "server answered %s",
			 dns_rcode_name(rep.rcode));
}
