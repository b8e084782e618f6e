/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * TSIG keys, signing and reply verification (RFC 8945). The MAC input is fed to EVP_MAC piece by
 * piece: the message as it was before the TSIG record (with the Original ID and the ARCOUNT that
 * does not count TSIG), then the "TSIG variables" (key name and algorithm in canonical form, class,
 * TTL, time, fudge, error, other data). The layout was checked against a captured nsupdate/BIND
 * exchange (see the unit test).
 */
#include "dns/tsig.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *dns_tsig_error_name(int error)
{
	switch (error) {
	case 0:
		return "NOERROR";
	case DNS_TSIG_BADSIG:
		return "BADSIG";
	case DNS_TSIG_BADKEY:
		return "BADKEY";
	case DNS_TSIG_BADTIME:
		return "BADTIME";
	case DNS_TSIG_BADTRUNC:
		return "BADTRUNC";
	}
	return "UNKNOWN";
}

static const struct {
	DnsTsigAlg alg;
	const char *name;
	const char *digest;
} algs[] = {
    {DNS_TSIG_HMAC_SHA256, "hmac-sha256", "SHA256"},
    {DNS_TSIG_HMAC_SHA384, "hmac-sha384", "SHA384"},
    {DNS_TSIG_HMAC_SHA512, "hmac-sha512", "SHA512"},
};

const char *dns_tsig_alg_name(DnsTsigAlg alg)
{
	for (size_t i = 0; i < ARRAY_SIZE(algs); i++)
		if (algs[i].alg == alg)
			return algs[i].name;
	return "unknown";
}

static const char *alg_digest(DnsTsigAlg alg)
{
	for (size_t i = 0; i < ARRAY_SIZE(algs); i++)
		if (algs[i].alg == alg)
			return algs[i].digest;
	return NULL;
}

bool dns_tsig_alg_from_name(const char *name, DnsTsigAlg *alg)
{
	size_t n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;
	for (size_t i = 0; i < ARRAY_SIZE(algs); i++) {
		if (strlen(algs[i].name) == n && strncasecmp(algs[i].name, name, n) == 0) {
			*alg = algs[i].alg;
			return true;
		}
	}
	return false;
}

static bool alg_wire_name(DnsTsigAlg alg, DnsName *out)
{
	char err[8];

	return dns_name_from_text(out, dns_tsig_alg_name(alg), err, sizeof(err));
}

/* Decode standard base64 (whitespace ignored); false on any invalid input. */
static bool decode_base64(const char *in, uint8_t *out, size_t cap, size_t *outlen)
{
	char clean[DNS_TSIG_MAX_SECRET * 2];
	size_t n = 0, pad = 0;
	int got;
	uint8_t tmp[DNS_TSIG_MAX_SECRET * 2];

	for (const char *p = in; *p; p++) {
		if (isspace((unsigned char)*p))
			continue;
		if (n + 1 >= sizeof(clean))
			return false;
		clean[n++] = *p;
	}
	clean[n] = '\0';
	if (n == 0 || n % 4 != 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = clean[i];

		if (c == '=') {
			/* padding only at the end */
			if (i < n - 2 || (i == n - 2 && clean[n - 1] != '='))
				return false;
			pad++;
		} else if (!isalnum((unsigned char)c) && c != '+' && c != '/') {
			return false;
		}
	}
	got = EVP_DecodeBlock(tmp, (const unsigned char *)clean, (int)n);
	/* EVP_DecodeBlock counts the bytes the '=' padding stands for: remove them */
	if (got < 0 || (size_t)got < pad || (size_t)got - pad > cap) {
		OPENSSL_cleanse(tmp, sizeof(tmp));
		return false;
	}
	*outlen = (size_t)got - pad;
	memcpy(out, tmp, *outlen);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	OPENSSL_cleanse(clean, sizeof(clean));
	return true;
}

bool dns_tsig_key_set(DnsTsigKey *key, const char *name, const char *algorithm,
		      const char *secret_b64, char *err, size_t errlen)
{
	char nerr[256];

	memset(key, 0, sizeof(*key));
	if (name == NULL || *name == '\0') {
		snprintf(err, errlen, "TSIG key name is not set");
		return false;
	}
	if (!dns_name_from_text(&key->name, name, nerr, sizeof(nerr))) {
		snprintf(err, errlen, "invalid TSIG key name: %s", nerr);
		return false;
	}
	dns_name_lower(&key->name);
	dns_name_to_text(&key->name, key->name_text, sizeof(key->name_text));
	if (algorithm == NULL || *algorithm == '\0')
		algorithm = "hmac-sha256";
	if (!dns_tsig_alg_from_name(algorithm, &key->alg)) {
		snprintf(
		    err, errlen,
		    "unsupported TSIG algorithm \"%s\" for key \"%s\" (supported: hmac-sha256, "
		    "hmac-sha384, hmac-sha512)",
		    algorithm, key->name_text);
		return false;
	}
	if (secret_b64 == NULL || *secret_b64 == '\0') {
		snprintf(err, errlen, "TSIG key \"%s\" has no secret", key->name_text);
		return false;
	}
	if (!decode_base64(secret_b64, key->secret, sizeof(key->secret), &key->secret_len) ||
	    key->secret_len == 0) {
		dns_tsig_key_cleanup(key);
		snprintf(err, errlen, "TSIG key \"%s\" has an invalid base64 secret", name);
		return false;
	}
	return true;
}

void dns_tsig_key_cleanup(DnsTsigKey *key)
{
	OPENSSL_cleanse(key->secret, sizeof(key->secret));
	key->secret_len = 0;
}

/* Bounded copy; silent truncation is fine for names shown in messages and re-validated later. */
static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* BIND key file tokenizer: words, quoted strings and the punctuation { } ; */
typedef struct KeyLexer {
	const char *p;
	int line;
	char tok[512];
	bool quoted;
} KeyLexer;

/* Next token into lx->tok; false at end of input. Comments: '#', '//' and C style. */
static bool lex_next(KeyLexer *lx)
{
	size_t n = 0;

	lx->quoted = false;
	for (;;) {
		while (*lx->p && isspace((unsigned char)*lx->p)) {
			if (*lx->p == '\n')
				lx->line++;
			lx->p++;
		}
		if (*lx->p == '#' || (lx->p[0] == '/' && lx->p[1] == '/')) {
			while (*lx->p && *lx->p != '\n')
				lx->p++;
			continue;
		}
		if (lx->p[0] == '/' && lx->p[1] == '*') {
			const char *end = strstr(lx->p + 2, "*/");

			for (const char *q = lx->p; *q && (end == NULL || q < end); q++)
				if (*q == '\n')
					lx->line++;
			lx->p = end ? end + 2 : lx->p + strlen(lx->p);
			continue;
		}
		break;
	}
	if (*lx->p == '\0')
		return false;
	if (*lx->p == '{' || *lx->p == '}' || *lx->p == ';') {
		lx->tok[0] = *lx->p++;
		lx->tok[1] = '\0';
		return true;
	}
	if (*lx->p == '"') {
		lx->p++;
		lx->quoted = true;
		while (*lx->p && *lx->p != '"') {
			if (n + 1 < sizeof(lx->tok))
				lx->tok[n++] = *lx->p;
			lx->p++;
		}
		if (*lx->p == '"')
			lx->p++;
		lx->tok[n] = '\0';
		return true;
	}
	while (*lx->p && !isspace((unsigned char)*lx->p) && !strchr("{};\"", *lx->p)) {
		if (n + 1 < sizeof(lx->tok))
			lx->tok[n++] = *lx->p;
		lx->p++;
	}
	lx->tok[n] = '\0';
	return true;
}

static bool names_match(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

bool dns_tsig_key_parse(DnsTsigKey *key, const char *text, const char *want_name, char *err,
			size_t errlen)
{
	KeyLexer lx = {.p = text, .line = 1};
	bool found_any = false;

	memset(key, 0, sizeof(*key));
	while (lex_next(&lx)) {
		char name[512], alg[64] = "", secret[DNS_TSIG_MAX_SECRET * 2] = "";
		bool have_secret = false, ok;

		if (lx.quoted || strcmp(lx.tok, "key") != 0) {
			snprintf(err, errlen, "line %d: expected \"key\", found \"%s\"", lx.line,
				 lx.tok);
			return false;
		}
		if (!lex_next(&lx) || strchr("{};", lx.tok[0]) != NULL) {
			snprintf(err, errlen, "line %d: key name expected", lx.line);
			return false;
		}
		copy_str(name, sizeof(name), lx.tok);
		if (!lex_next(&lx) || strcmp(lx.tok, "{") != 0) {
			snprintf(err, errlen, "line %d: \"{\" expected after key name", lx.line);
			return false;
		}
		for (;;) {
			char stmt[32];

			if (!lex_next(&lx)) {
				snprintf(err, errlen, "line %d: unterminated key \"%s\"", lx.line,
					 name);
				return false;
			}
			if (strcmp(lx.tok, "}") == 0)
				break;
			copy_str(stmt, sizeof(stmt), lx.tok);
			if (!lex_next(&lx) || strchr("{};", lx.tok[0]) != NULL) {
				snprintf(err, errlen, "line %d: value expected after \"%s\"",
					 lx.line, stmt);
				return false;
			}
			if (strcmp(stmt, "algorithm") == 0) {
				copy_str(alg, sizeof(alg), lx.tok);
			} else if (strcmp(stmt, "secret") == 0) {
				copy_str(secret, sizeof(secret), lx.tok);
				have_secret = true;
			} else {
				snprintf(err, errlen, "line %d: unknown key statement \"%s\"",
					 lx.line, stmt);
				return false;
			}
			if (!lex_next(&lx) || strcmp(lx.tok, ";") != 0) {
				snprintf(err, errlen, "line %d: \";\" expected after \"%s\"",
					 lx.line, stmt);
				return false;
			}
		}
		/* the closing "};" */
		if (!lex_next(&lx) || strcmp(lx.tok, ";") != 0) {
			snprintf(err, errlen, "line %d: \";\" expected after \"}\"", lx.line);
			return false;
		}
		found_any = true;
		if (want_name && !names_match(name, want_name)) {
			OPENSSL_cleanse(secret, sizeof(secret));
			continue;
		}
		if (!have_secret) {
			snprintf(err, errlen, "key \"%s\" has no secret", name);
			return false;
		}
		ok = dns_tsig_key_set(key, name, alg, secret, err, errlen);
		OPENSSL_cleanse(secret, sizeof(secret));
		return ok;
	}
	if (want_name && found_any)
		snprintf(err, errlen, "no key named \"%s\"", want_name);
	else
		snprintf(err, errlen, "no key found");
	return false;
}

bool dns_tsig_key_load(DnsTsigKey *key, const char *path, const char *want_name, char *err,
		       size_t errlen)
{
	char text[8192], sub[256];
	FILE *f = fopen(path, "r");
	size_t n;
	bool ok;

	memset(key, 0, sizeof(*key));
	if (f == NULL) {
		snprintf(err, errlen, "could not open TSIG key file \"%s\": %s", path,
			 strerror(errno));
		return false;
	}
	n = fread(text, 1, sizeof(text) - 1, f);
	if (ferror(f) || !feof(f)) {
		bool failed = ferror(f) != 0;

		fclose(f);
		OPENSSL_cleanse(text, sizeof(text));
		snprintf(err, errlen, "could not read TSIG key file \"%s\": %s", path,
			 failed ? "read error" : "file too large");
		return false;
	}
	fclose(f);
	text[n] = '\0';
	ok = dns_tsig_key_parse(key, text, want_name, sub, sizeof(sub));
	OPENSSL_cleanse(text, sizeof(text));
	if (!ok)
		snprintf(err, errlen, "invalid TSIG key file \"%s\": %s", path, sub);
	return ok;
}

/* One piece of MAC input. */
typedef struct MacPiece {
	const uint8_t *p;
	size_t n;
} MacPiece;

static bool compute_mac(const DnsTsigKey *key, const MacPiece *pieces, int npieces, uint8_t *out,
			size_t *outlen)
{
	/* fetched once: a provider lookup per message is costly, and the loop is single-threaded */
	static EVP_MAC *mac;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	bool ok = false;

	if (mac == NULL)
		mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac == NULL)
		return false;
	ctx = EVP_MAC_CTX_new(mac);
	if (ctx == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						     (char *)alg_digest(key->alg), 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, key->secret, key->secret_len, params))
		goto out;
	for (int i = 0; i < npieces; i++)
		if (pieces[i].n && !EVP_MAC_update(ctx, pieces[i].p, pieces[i].n))
			goto out;
	ok = EVP_MAC_final(ctx, out, outlen, DNS_TSIG_MAX_MAC) == 1;
out:
	EVP_MAC_CTX_free(ctx);
	return ok;
}

/* The TSIG variables of RFC 8945 4.3.3 in canonical form, up to Other Len: the Other Data bytes
 * (up to 64 KiB) are fed to the MAC as a piece of their own rather than copied. */
static size_t write_variables(uint8_t *buf, size_t cap, const DnsName *key_name, uint16_t rr_class,
			      uint32_t ttl, const DnsName *alg_name, uint64_t time_signed,
			      uint16_t fudge, uint16_t error, uint16_t other_len)
{
	DnsWriter w;
	DnsName kn = *key_name, an = *alg_name;

	dns_name_lower(&kn);
	dns_name_lower(&an);
	dns_writer_init(&w, buf, cap);
	dns_writer_name(&w, &kn, false);
	dns_writer_u16(&w, rr_class);
	dns_writer_u32(&w, ttl);
	dns_writer_name(&w, &an, false);
	dns_writer_u48(&w, time_signed);
	dns_writer_u16(&w, fudge);
	dns_writer_u16(&w, error);
	dns_writer_u16(&w, other_len);
	return w.overflow ? 0 : w.len;
}

bool dns_tsig_sign(const DnsTsigKey *key, uint8_t *buf, size_t *len, size_t cap, uint64_t now,
		   uint16_t fudge, uint8_t *mac_out, size_t *mac_len, char *err, size_t errlen)
{
	uint8_t vars[2 * DNS_MAX_NAME + 32];
	size_t nvars, maclen = 0;
	DnsName alg;
	DnsWriter w;
	MacPiece pieces[2];
	size_t rdlen_at;

	if (*len < DNS_HEADER_SIZE || !alg_wire_name(key->alg, &alg)) {
		snprintf(err, errlen, "cannot sign a malformed message");
		return false;
	}
	nvars = write_variables(vars, sizeof(vars), &key->name, DNS_CLASS_ANY, 0, &alg, now, fudge,
				0, 0);
	pieces[0] = (MacPiece){buf, *len};
	pieces[1] = (MacPiece){vars, nvars};
	if (nvars == 0 || !compute_mac(key, pieces, 2, mac_out, &maclen)) {
		snprintf(err, errlen, "could not compute the TSIG MAC");
		return false;
	}
	dns_writer_init(&w, buf, cap);
	w.len = *len;
	dns_writer_name(&w, &key->name, false);
	dns_writer_u16(&w, DNS_TYPE_TSIG);
	dns_writer_u16(&w, DNS_CLASS_ANY);
	dns_writer_u32(&w, 0);
	rdlen_at = w.len;
	dns_writer_u16(&w, 0); /* RDLENGTH, filled below */
	dns_writer_name(&w, &alg, false);
	dns_writer_u48(&w, now);
	dns_writer_u16(&w, fudge);
	dns_writer_u16(&w, (uint16_t)maclen);
	dns_writer_bytes(&w, mac_out, maclen);
	dns_writer_u16(&w, get_be16(buf)); /* Original ID */
	dns_writer_u16(&w, 0);             /* Error */
	dns_writer_u16(&w, 0);             /* Other Len */
	if (w.overflow) {
		snprintf(err, errlen, "message too large for its TSIG record");
		return false;
	}
	put_be16(buf + rdlen_at, (uint16_t)(w.len - rdlen_at - 2));
	put_be16(buf + 10, (uint16_t)(get_be16(buf + 10) + 1));
	*len = w.len;
	*mac_len = maclen;
	return true;
}

bool dns_tsig_parse_rdata(DnsReader *r, size_t rdlen, DnsTsigRecord *out)
{
	size_t end = r->off + rdlen;

	if (r->failed || rdlen > r->len - r->off)
		return false;
	if (!dns_reader_name(r, &out->alg_name))
		return false;
	out->time_signed = dns_reader_u48(r);
	out->fudge = dns_reader_u16(r);
	out->mac_len = dns_reader_u16(r);
	out->mac = dns_reader_bytes(r, out->mac_len);
	out->orig_id = dns_reader_u16(r);
	out->error = dns_reader_u16(r);
	out->other_len = dns_reader_u16(r);
	out->other = dns_reader_bytes(r, out->other_len);
	/* the fields must fill RDLENGTH exactly */
	return !r->failed && r->off == end;
}

bool dns_tsig_server_time(const DnsTsigRecord *rec, uint64_t *server_time)
{
	if (rec->other_len != 6 || rec->other == NULL)
		return false;
	*server_time = ((uint64_t)get_be16(rec->other) << 32) | get_be32(rec->other + 2);
	return true;
}

const char *dns_tsig_verify_name(DnsTsigVerify v)
{
	switch (v) {
	case DNS_TSIG_VERIFY_OK:
		return "ok";
	case DNS_TSIG_VERIFY_WRONG_KEY:
		return "wrong key";
	case DNS_TSIG_VERIFY_NO_MAC:
		return "no MAC";
	case DNS_TSIG_VERIFY_BAD_MAC:
		return "bad MAC";
	case DNS_TSIG_VERIFY_BAD_TIME:
		return "time outside fudge";
	case DNS_TSIG_VERIFY_ERROR:
		return "internal error";
	}
	return "unknown";
}

DnsTsigVerify dns_tsig_verify_reply(const DnsTsigKey *key, const uint8_t *req_mac,
				    size_t req_mac_len, const uint8_t *msg, size_t len,
				    const DnsTsigRecord *rec, uint64_t now)
{
	uint8_t prefix[2], header[DNS_HEADER_SIZE], vars[2 * DNS_MAX_NAME + 32];
	uint8_t mac[DNS_TSIG_MAX_MAC];
	size_t maclen = 0, nvars;
	DnsName alg;
	MacPiece pieces[6];
	uint64_t skew;

	if (!alg_wire_name(key->alg, &alg))
		return DNS_TSIG_VERIFY_ERROR;
	if (!dns_name_equal(&rec->key_name, &key->name) || !dns_name_equal(&rec->alg_name, &alg))
		return DNS_TSIG_VERIFY_WRONG_KEY;
	if (rec->mac_len == 0)
		return DNS_TSIG_VERIFY_NO_MAC;
	if (rec->rr_offset < DNS_HEADER_SIZE || rec->rr_offset > len || len < DNS_HEADER_SIZE ||
	    get_be16(msg + 10) == 0)
		return DNS_TSIG_VERIFY_BAD_MAC;
	nvars = write_variables(vars, sizeof(vars), &rec->key_name, rec->rr_class, rec->rr_ttl,
				&rec->alg_name, rec->time_signed, rec->fudge, rec->error,
				rec->other_len);
	if (nvars == 0)
		return DNS_TSIG_VERIFY_ERROR;
	put_be16(prefix, (uint16_t)req_mac_len);
	memcpy(header, msg, DNS_HEADER_SIZE);
	put_be16(header, rec->orig_id);
	put_be16(header + 10, (uint16_t)(get_be16(msg + 10) - 1));
	pieces[0] = (MacPiece){prefix, 2};
	pieces[1] = (MacPiece){req_mac, req_mac_len};
	pieces[2] = (MacPiece){header, DNS_HEADER_SIZE};
	pieces[3] = (MacPiece){msg + DNS_HEADER_SIZE, rec->rr_offset - DNS_HEADER_SIZE};
	pieces[4] = (MacPiece){vars, nvars};
	pieces[5] = (MacPiece){rec->other, rec->other_len};
	if (!compute_mac(key, pieces, 6, mac, &maclen))
		return DNS_TSIG_VERIFY_ERROR;
	if (maclen != rec->mac_len || CRYPTO_memcmp(mac, rec->mac, maclen) != 0)
		return DNS_TSIG_VERIFY_BAD_MAC;
	skew = now > rec->time_signed ? now - rec->time_signed : rec->time_signed - now;
	if (skew > rec->fudge)
		return DNS_TSIG_VERIFY_BAD_TIME;
	return DNS_TSIG_VERIFY_OK;
}
