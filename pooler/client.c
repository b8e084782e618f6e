/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Client connections: startup phase, authentication, and the logged-in data path. The client's
 * messages are only looked at by type: the body of a query is never parsed. A request needs a
 * server; in transaction and statement mode the server goes back to the pool when it reports
 * ReadyForQuery 'I' with nothing outstanding (server.c sees that and releases it).
 *
 * Interface: client_accept, client_finish_login, client_server_lost, client_send,
 * client_send_error.
 */
#include "pooler/client.h"
#include "pooler/admin.h"
#include "pooler/pool.h"
#include "pooler/server.h"
#include "protocol/packet.h"
#include "protocol/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* PostgreSQL authentication request codes */
#define AUTH_REQ_OK 0
#define AUTH_REQ_PASSWORD 3
#define AUTH_REQ_MD5 5
#define AUTH_REQ_SASL 10
#define AUTH_REQ_SASL_CONT 11
#define AUTH_REQ_SASL_FIN 12

static SbufAction client_packet_cb(Sbuf *sb, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail);
static void client_close_cb(Sbuf *sb, const char *reason);
static void client_release_cb(Sbuf *sb);

static const SbufOps client_startup_ops = {
	.on_packet = client_packet_cb,
	.on_close = client_close_cb,
	.on_flushed = NULL,
	.on_release = client_release_cb,
	.startup_framing = true,
};

bool client_send(Client *c, const void *data, size_t len)
{
	if (sbuf_send(&c->sbuf, data, len))
		return true;
	disconnect_client(c, NULL, "could not send to client");
	return false;
}

/* Build one message in a stack buffer and send it. */
#define CLIENT_SEND_BUILT(c, pb) ((pb).failed ? false : client_send((c), (pb).buf, (pb).len))

bool client_send_error(Client *c, const char *sqlstate, const char *msg)
{
	uint8_t tmp[600];
	PktBuf pb;

	pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
	pktbuf_write_error(&pb, "ERROR", sqlstate, msg);
	return CLIENT_SEND_BUILT(c, pb);
}

/* An ERROR plus ReadyForQuery: the client may go on. */
static bool client_send_error_ready(Client *c, const char *sqlstate, const char *msg)
{
	uint8_t tmp[640];
	PktBuf pb;

	pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
	pktbuf_write_error(&pb, "ERROR", sqlstate, msg);
	pktbuf_write_ready(&pb, 'I');
	c->tx_state = 'I';
	return CLIENT_SEND_BUILT(c, pb);
}

void client_accept(int fd, const PgAddr *addr)
{
	Client *c;

	if (n_clients_total >= cfg->max_client_conn || pooler_shutting_down) {
		uint8_t tmp[256];
		PktBuf pb;
		ssize_t n;

		pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
		if (pooler_shutting_down)
			pktbuf_write_error(&pb, "FATAL", "57P01", "pooler is shutting down");
		else
			pktbuf_write_error(&pb, "FATAL", "53300",
					   "no more connections allowed (max_client_conn)");
		n = send(fd, pb.buf, pb.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)n;
		close(fd);
		if (!pooler_shutting_down)
			log_warning("refused a connection: no more connections allowed (max_client_conn %d)",
				    cfg->max_client_conn);
		return;
	}
	c = client_alloc();
	if (!c || !(c->login = calloc(1, sizeof(ClientLogin)))) {
		log_error("out of memory accepting a client");
		if (c)
			client_free_raw(c);
		close(fd);
		return;
	}
	c->addr = *addr;
	c->tx_state = 'I';
	c->connect_time = get_cached_time();
	if (!sbuf_accept(&c->sbuf, fd, &client_startup_ops)) {
		log_error("could not watch a client socket");
		free(c->login);
		client_free_raw(c);
		close(fd);
		return;
	}
	c->sbuf.max_packet = STARTUP_MAX_LEN;
	cancel_register(c);
	if (!random_bytes(&c->cancel_key, sizeof(c->cancel_key)))
		c->cancel_key = (uint32_t)random();
	n_clients_total++;
	change_client_state(c, CL_LOGIN);
}

static void client_close_cb(Sbuf *sb, const char *reason)
{
	Client *c = (Client *)sb;

	if (reason == SBUF_REASON_BAD_LENGTH)
		disconnect_client(c, "08P01", "invalid message length");
	else if (reason == SBUF_REASON_TOO_LARGE)
		disconnect_client(c, "08P01", "message too large: pgpilot holds at most %u bytes of one "
				  "message it must inspect whole", sbuf_hold_limit(&c->sbuf));
	else if (c->state == CL_LOGIN)
		disconnect_client(c, NULL, "client disconnected during login: %s", reason);
	else
		disconnect_client(c, NULL, "client unexpected eof: %s", reason);
}

/* The socket is closed for good: drop the client's prepared statements. */
static void client_release_cb(Sbuf *sb)
{
	Client *c = (Client *)sb;

	ps_client_clear(&c->ps);
}

/* --- startup phase --- */

static void client_handle_cancel(Client *c, const uint8_t *pkt, uint32_t total)
{
	uint32_t id, key;
	Client *target;

	if (!pkt_parse_cancel(pkt, total, &id, &key)) {
		disconnect_client(c, NULL, "invalid cancel request");
		return;
	}
	target = cancel_lookup(id, key);
	if (target && target->link)
		server_send_cancel(target->link);
	else if (target)
		log_debug("cancel request for a client with no server: nothing to cancel");
	else
		log_debug("cancel request with an unknown key");
	/* a cancel connection gets no answer, as with PostgreSQL */
	c->cancel_only = true;
	disconnect_client(c, NULL, "cancel request handled");
}

/* Is a startup parameter one we may accept? Tracked ones are kept, ignored ones dropped. */
static bool client_accept_param(Client *c, const char *name, const char *value)
{
	if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0)
		return true;
	if (varcache_set(&c->vars, name, value))
		return true;
	if (config_list_contains(cfg->ignore_startup_parameters, name))
		return true;
	return false;
}

static bool client_is_admin_user(const char *user, bool *power)
{
	*power = config_list_contains(cfg->admin_users, user);
	return *power || config_list_contains(cfg->stats_users, user);
}

/* The secret a client must prove, from auth_file. NULL for an unknown user. */
static const User *client_auth_user(Client *c)
{
	const AuthUser *au = config_find_auth_user(cfg, c->login->user);

	if (!au)
		return NULL;
	return user_lookup_or_create(c->login->user);
}

/*
 * Send an Authentication request whose data (a SCRAM message: its size follows the client's
 * nonce and the verifier's salt) is <len> bytes. False when the client was disconnected: a
 * message that cannot be built or sent ends the login with an error, never silently.
 */
static bool client_send_auth_request(Client *c, uint32_t code, const void *data, size_t len)
{
	uint8_t tmp[256];
	PktBuf pb;
	bool ok;

	if (len > STARTUP_MAX_LEN) {
		disconnect_client(c, "08P01", "authentication message too long");
		return false;
	}
	pktbuf_init_spill(&pb, tmp, sizeof(tmp));
	pktbuf_write_auth_request(&pb, code, data, len);
	if (pb.failed) {
		pktbuf_cleanup(&pb);
		slog_client(LOG_LVL_WARNING, c, "could not build an authentication request");
		disconnect_client(c, "53200", "out of memory");
		return false;
	}
	ok = client_send(c, pb.buf, pb.len);
	pktbuf_cleanup(&pb);
	return ok;
}

/*
 * A SCRAM secret above SCRAM_MAX_ITERATIONS would make every check of it cost the event loop
 * that many PBKDF2 rounds: the user's logins are refused, with a log line that says why. The
 * client sees an ordinary authentication failure.
 */
static bool client_scram_too_costly(Client *c, const User *u)
{
	if (!u || u->kind != SECRET_SCRAM || u->scram.iterations <= SCRAM_MAX_ITERATIONS)
		return false;
	slog_client(LOG_LVL_WARNING, c,
		    "login refused for user \"%s\": its SCRAM secret has %d iterations, more than the "
		    "limit of %d", c->login->user, u->scram.iterations, SCRAM_MAX_ITERATIONS);
	return true;
}

static void client_auth_failed(Client *c)
{
	const char *method = c->login->auth_method == AUTH_SCRAM ? "SCRAM" : "password";

	if (c->login->auth_method == AUTH_SCRAM)
		disconnect_client(c, "28P01", "password authentication failed for user \"%s\"",
				  c->login->user);
	else
		disconnect_client(c, "28P01", "%s authentication failed for user \"%s\"",
				  method, c->login->user);
}

/* The user is known to be who they say: pick the pool and finish or wait. */
static void client_authenticated(Client *c)
{
	Database *db = database_lookup(c->login->database);
	User *u, *login_user;
	Pool *p;

	if (!db) {
		disconnect_client(c, "3D000", "no such database: %s", c->login->database);
		return;
	}
	u = user_lookup_or_create(c->login->user);
	if (!u) {
		disconnect_client(c, "53200", "out of memory");
		return;
	}
	login_user = db->admin ? u : database_login_user(db, u);
	p = pool_lookup_or_create(db, login_user);
	if (!p) {
		disconnect_client(c, "53200", "out of memory");
		return;
	}
	/* keep what lets us log into the server as this user without knowing a password */
	if (c->login->scram_started && c->scram_done && login_user == u && u->kind == SECRET_SCRAM) {
		memcpy(u->scram_client_key, c->login->scram.client_key, SCRAM_KEY_LEN);
		memcpy(u->scram_server_key, u->scram.server_key, SCRAM_KEY_LEN);
		u->have_scram_keys = true;
	}
	if (c->login->password && login_user == u && u->kind != SECRET_PLAIN) {
		free(u->passthrough_password);
		u->passthrough_password = strdup(c->login->password);
	}
	c->pool = p;
	c->user = u;
	c->sbuf.bytes_in = &p->stats.bytes_recv;
	u->client_count++;
	if (db->admin) {
		client_finish_login(c);
		return;
	}
	if (p->have_welcome) {
		client_finish_login(c);
		return;
	}
	/* the welcome (server parameters) comes from the pool's first server */
	c->request_time = get_cached_time();
	change_client_state(c, CL_WAITING_LOGIN);
	pool_activate(p);
}

static void client_start_auth(Client *c)
{
	ClientLogin *lg = c->login;
	const User *u;
	int method = cfg->auth_type;
	bool refused;

	if (c->admin && (method == AUTH_TRUST || method == AUTH_ANY)) {
		client_authenticated(c);
		return;
	}
	if (method == AUTH_ANY) {
		client_authenticated(c);
		return;
	}
	u = client_auth_user(c);
	if (method == AUTH_TRUST) {
		if (!u && cfg->auth_file) {
			disconnect_client(c, "28000", "authentication failed for user \"%s\": not in auth_file",
					  lg->user);
			return;
		}
		client_authenticated(c);
		return;
	}
	/* md5 with a SCRAM verifier must use SCRAM, as PostgreSQL does */
	if (method == AUTH_MD5 && u && u->kind == SECRET_SCRAM)
		method = AUTH_SCRAM;
	/* logged here; SCRAM then runs against a mock secret, a password check fails */
	refused = client_scram_too_costly(c, u);
	lg->auth_method = method;
	if (method == AUTH_PLAIN) {
		client_send_auth_request(c, AUTH_REQ_PASSWORD, NULL, 0);
	} else if (method == AUTH_MD5) {
		if (!random_bytes(lg->md5_salt, 4)) {
			disconnect_client(c, "58000", "could not generate random salt");
			return;
		}
		client_send_auth_request(c, AUTH_REQ_MD5, lg->md5_salt, 4);
	} else {
		static const char mech[] = SCRAM_MECHANISM "\0";
		ScramSecret secret;

		if (u && u->kind == SECRET_SCRAM && !refused) {
			secret = u->scram;
		} else if (u && u->kind == SECRET_PLAIN) {
			/* derived once per user and password, then served from the key cache */
			if (!scram_secret_for_user(lg->user, u->secret, &secret)) {
				disconnect_client(c, "58000", "could not derive a SCRAM secret");
				return;
			}
		} else if (!scram_mock_secret(lg->user, &secret)) {
			/* unknown user, an md5 secret or a refused one: the exchange runs and fails at
			 * the end, so that a client cannot tell which users exist */
			disconnect_client(c, "58000", "could not generate random data");
			return;
		}
		scram_server_init(&lg->scram, &secret);
		lg->scram_started = true;
		client_send_auth_request(c, AUTH_REQ_SASL, mech, sizeof(mech));
	}
}

/* Check a clear-text password against the user's secret. */
static bool client_check_plain(const User *u, const char *user, const char *password)
{
	char md5[MD5_PASSWD_LEN + 1];

	if (!u || !u->secret)
		return false;
	switch (u->kind) {
	case SECRET_PLAIN:
		return strlen(u->secret) == strlen(password) &&
		       CRYPTO_memcmp(u->secret, password, strlen(password)) == 0;
	case SECRET_MD5:
		return md5_password_hash(user, password, md5) &&
		       CRYPTO_memcmp(md5, u->secret, MD5_PASSWD_LEN) == 0;
	case SECRET_SCRAM: {
		ScramServer probe;
		ScramClient cl;
		char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
		bool ok;

		/* refused (and logged) in client_start_auth: no PBKDF2 of that cost on the loop */
		if (u->scram.iterations > SCRAM_MAX_ITERATIONS)
			return false;
		/* run both sides of SCRAM in memory: the password is right if the proof verifies */
		scram_server_init(&probe, &u->scram);
		scram_client_init_password(&cl, password);
		ok = scram_client_first(&cl, &m1) && scram_server_first(&probe, m1, strlen(m1), &m2) &&
		     scram_client_final(&cl, m2, strlen(m2), &m3) &&
		     scram_server_final(&probe, m3, strlen(m3), &m4);
		free(m1);
		free(m2);
		free(m3);
		free(m4);
		scram_server_cleanup(&probe);
		scram_client_cleanup(&cl);
		return ok;
	}
	default:
		return false;
	}
}

static void client_handle_password(Client *c, const uint8_t *pkt, uint32_t total)
{
	ClientLogin *lg = c->login;
	const uint8_t *body = pkt + 5;
	size_t blen = total - 5;
	const User *u = client_auth_user(c);

	if (lg->auth_method == AUTH_PLAIN || lg->auth_method == AUTH_MD5) {
		size_t off = 0;
		const char *pw = pkt_get_string(body, blen, &off);
		char expect[MD5_PASSWD_LEN + 1];
		bool ok = false;

		if (!pw || off != blen) {
			disconnect_client(c, "08P01", "invalid password packet");
			return;
		}
		if (lg->auth_method == AUTH_PLAIN) {
			ok = client_check_plain(u, lg->user, pw);
			if (ok && u->kind == SECRET_PLAIN) {
				; /* the server can use the stored password */
			} else if (ok && !(lg->password = strdup(pw))) {
				disconnect_client(c, "53200", "out of memory");
				return;
			}
		} else if (u && (u->kind == SECRET_PLAIN || u->kind == SECRET_MD5)) {
			char md5secret[MD5_PASSWD_LEN + 1];
			const char *sec = u->secret;

			if (u->kind == SECRET_PLAIN) {
				if (!md5_password_hash(lg->user, u->secret, md5secret))
					goto fail;
				sec = md5secret;
			}
			ok = md5_salted_response(sec, lg->md5_salt, expect) &&
			     strlen(pw) == MD5_PASSWD_LEN &&
			     CRYPTO_memcmp(expect, pw, MD5_PASSWD_LEN) == 0;
		}
		if (!ok)
			goto fail;
		client_authenticated(c);
		return;
	}
	/* SCRAM: SASLInitialResponse, then SASLResponse */
	if (lg->scram.state == SCRAM_INIT) {
		size_t off = 0;
		const char *mech = pkt_get_string(body, blen, &off);
		uint32_t dlen;
		char *out = NULL;

		if (!mech || off + 4 > blen) {
			disconnect_client(c, "08P01", "malformed SASLInitialResponse message");
			return;
		}
		if (strcmp(mech, SCRAM_MECHANISM) != 0) {
			disconnect_client(c, "28000",
					  "client selected an invalid SASL authentication mechanism");
			return;
		}
		dlen = get_be32(body + off);
		off += 4;
		if (dlen == 0xffffffffu || dlen != blen - off) {
			disconnect_client(c, "08P01", "malformed SASLInitialResponse message");
			return;
		}
		if (!scram_server_first(&lg->scram, (const char *)body + off, dlen, &out)) {
			slog_client(LOG_LVL_WARNING, c, "SCRAM: %s", lg->scram.err);
			disconnect_client(c, "08P01", "malformed SCRAM message");
			return;
		}
		client_send_auth_request(c, AUTH_REQ_SASL_CONT, out, strlen(out));
		free(out);
		return;
	} else {
		char *out = NULL;

		if (!u || u->kind == SECRET_MD5 || u->kind == SECRET_NONE ||
		    !scram_server_final(&lg->scram, (const char *)body, blen, &out)) {
			free(out);
			goto fail;
		}
		c->scram_done = true;
		client_send_auth_request(c, AUTH_REQ_SASL_FIN, out, strlen(out));
		free(out);
		if (c->state == CL_JUSTFREE)
			return;
		client_authenticated(c);
		return;
	}
fail:
	client_auth_failed(c);
}

static SbufAction client_handle_startup(Client *c, const uint8_t *pkt, uint32_t total,
					uint32_t avail)
{
	uint32_t code = get_be32(pkt + 4);
	StartupParams sp;
	char err[256];
	bool power;

	if ((code == PROTO_SSL && !c->ssl_requested) || (code == PROTO_GSSENC && !c->gss_requested)) {
		/* no TLS yet: 'N' tells the client to go on in clear text. As PostgreSQL, one of
		 * each per connection: a second one falls through to the version check below, so
		 * a flood of them costs two bytes of output, not an unbounded queue. */
		if (total != 8) {
			disconnect_client(c, "08P01", "invalid length of startup packet");
			return SB_CLOSED;
		}
		if (code == PROTO_SSL)
			c->ssl_requested = true;
		else
			c->gss_requested = true;
		if (!client_send(c, "N", 1))
			return SB_CLOSED;
		return SB_CONSUMED;
	}
	if (avail < total)
		return SB_NEED_FULL;
	if (code == PROTO_CANCEL) {
		client_handle_cancel(c, pkt, total);
		return SB_CLOSED;
	}
	if (code >> 16 != 3) {
		disconnect_client(c, "0A000",
				  "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
				  code >> 16, code & 0xffff);
		return SB_CLOSED;
	}
	if (!pkt_parse_startup_params(pkt + 8, total - 8, &sp, err, sizeof(err))) {
		disconnect_client(c, "08P01", "%s", err);
		return SB_CLOSED;
	}
	c->login->user = strdup(sp.user);
	c->login->database = strdup(sp.database);
	if (!c->login->user || !c->login->database) {
		disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	if (sp.replication) {
		disconnect_client(c, "08P01", "replication connections are not supported");
		return SB_CLOSED;
	}
	for (int i = 0; i < sp.nparams; i++) {
		if (!client_accept_param(c, sp.params[i].name, sp.params[i].value)) {
			disconnect_client(c, "08P01", "unsupported startup parameter: %s",
					  sp.params[i].name);
			return SB_CLOSED;
		}
	}
	c->sbuf.startup = false;
	c->sbuf.max_packet = (uint32_t)cfg->max_packet_size;
	{
		bool known;
		Database *db = database_peek(sp.database, &known);

		if (!known) {
			disconnect_client(c, "3D000", "no such database: %s", sp.database);
			return SB_CLOSED;
		}
		if (db && db->disabled) {
			disconnect_client(c, "55000", "database \"%s\" does not allow connections",
					  sp.database);
			return SB_CLOSED;
		}
		if (db && db->admin) {
			if (!client_is_admin_user(sp.user, &power)) {
				disconnect_client(c, "28000", "not allowed to connect to the admin console");
				return SB_CLOSED;
			}
			c->admin = true;
			c->admin_power = power;
		}
	}
	client_start_auth(c);
	return c->state == CL_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
}

void client_finish_login(Client *c)
{
	Pool *p = c->pool;
	PktBuf pb;
	ClientLogin *lg = c->login;

	pktbuf_init(&pb, 512);
	pktbuf_write_auth_request(&pb, AUTH_REQ_OK, NULL, 0);
	if (c->admin) {
		static const char *const admin_params[][2] = {
			{ "server_version", "15.0 (pgpilot " PGPILOT_VERSION ")" },
			{ "server_encoding", "UTF8" }, { "client_encoding", "UTF8" },
			{ "DateStyle", "ISO, MDY" }, { "integer_datetimes", "on" },
			{ "standard_conforming_strings", "on" }, { "TimeZone", "UTC" } };
		for (size_t i = 0; i < ARRAY_SIZE(admin_params); i++)
			pktbuf_write_parameter_status(&pb, admin_params[i][0], admin_params[i][1]);
	} else {
		/* tracked values the client did not choose are the server's */
		for (int i = 0; i < varcache_count(); i++)
			if (!c->vars.value[i] && p->welcome.value[i])
				varcache_set_idx(&c->vars, i, p->welcome.value[i]);
		pktbuf_put_bytes(&pb, p->welcome_msg, p->welcome_len);
		varcache_write_status(&c->vars, &pb);
	}
	pktbuf_write_backend_key(&pb, c->cancel_id, c->cancel_key);
	pktbuf_write_ready(&pb, 'I');
	if (pb.failed || !sbuf_send(&c->sbuf, pb.buf, pb.len)) {
		pktbuf_cleanup(&pb);
		disconnect_client(c, NULL, "could not send login reply");
		return;
	}
	pktbuf_cleanup(&pb);
	if (cfg->log_connections)
		slog_client(LOG_LVL_INFO, c, "login attempt: db=%s user=%s tls=no", lg->database,
			    lg->user);
	c->login = NULL;
	scram_server_cleanup(&lg->scram);
	free(lg->database);
	free(lg->user);
	free(lg->password);
	free(lg);
	c->request_time = 0;
	change_client_state(c, CL_ACTIVE);
	sbuf_continue(&c->sbuf);
}

/* --- logged-in data path --- */

/* Reply to a request that cannot run because the transaction was lost with its server. */
static SbufAction client_handle_lost(Client *c, uint8_t type)
{
	static const char msg[] = "server connection was lost; the current transaction was rolled back";

	switch (type) {
	case 'Q':
	case 'F':
		c->xact_lost = false;
		if (!client_send_error_ready(c, "08006", msg))
			return SB_CLOSED;
		return SB_CONSUMED;
	case 'S':
		c->xact_lost = false;
		c->discard_until_sync = false;
		if (!client_send_error_ready(c, "08006", msg))
			return SB_CLOSED;
		return SB_CONSUMED;
	default:
		/* part of an extended-protocol batch: swallowed up to its Sync */
		if (c->xact_lost) {
			c->xact_lost = false;
			c->discard_until_sync = true;
		}
		return SB_CONSUMED;
	}
}

/* Message types a client may send after login (PostgreSQL protocol v3). */
static inline bool is_frontend_type(uint8_t type)
{
	switch (type) {
	case 'Q': case 'P': case 'B': case 'E': case 'D': case 'C': case 'S': case 'H':
	case 'F': case 'd': case 'c': case 'f': case 'X': case 'p':
		return true;
	default:
		return false;
	}
}

/* Bookkeeping of what the server owes the client, per forwarded message. */
static inline void client_count_request(Client *c, uint8_t type)
{
	usec_t now = get_cached_time();

	switch (type) {
	case 'Q':
	case 'F':
		c->expected_z++;
		c->query_start = now;
		break;
	case 'S':
		c->expected_z++;
		c->ext_open = false;
		break;
	case 'P':
	case 'B':
	case 'E':
	case 'D':
	case 'C':
		if (!c->ext_open)
			c->query_start = now;
		c->ext_open = true;
		if (type == 'P')
			c->pool->stats.client_parse_count++;
		else if (type == 'B')
			c->pool->stats.bind_count++;
		break;
	default:
		break;
	}
	if (!c->xact_start)
		c->xact_start = now;
	c->active_time = now;
}

/* --- named prepared statements on a pooled link (see prepared.h) ---
 *
 * Every message sent on the link gets an entry in the server's reply FIFO. A Parse, Bind or
 * Describe that names a client statement is rewritten to the statement's server name and sent
 * through the server's output queue (after the bytes scanned before it were flushed, so the
 * order holds), preceded by a Parse if the server lacks the statement. A Parse of a statement
 * the server holds, and a Close of a client statement, are answered by the pooler when their
 * turn comes in the reply stream; the statement stays on the server.
 */

static bool client_ps_push(Client *c, PsReplyKind kind, PsReplyAction act, PsStmt *st)
{
	if (ps_queue_push(c->link->ps, kind, act, st))
		return true;
	disconnect_client(c, "53200", "out of memory");
	return false;
}

/* Pass a message on untouched, with its FIFO entry. */
static SbufAction client_ps_forward(Client *c, uint8_t type, PsReplyKind kind)
{
	if (!client_ps_push(c, kind, PS_ACT_FORWARD, NULL))
		return SB_CLOSED;
	client_count_request(c, type);
	return SB_FORWARD;
}

/* Send rebuilt bytes to the linked server. On failure the client or the server is closed: the
 * result says which action the handler returns. */
static SbufAction client_ps_send(Client *c, PktBuf *pb)
{
	Server *s = c->link;

	if (pb->failed) {
		pktbuf_cleanup(pb);
		disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	if (!sbuf_send(&s->sbuf, pb->buf, pb->len)) {
		pktbuf_cleanup(pb);
		disconnect_server(s, "could not send to server");
		return c->state == CL_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
	}
	pktbuf_cleanup(pb);
	return SB_CONSUMED;
}

/* Before a Bind or Describe uses <st>: add a Parse to <pb> if the server lacks it (its
 * ParseComplete is swallowed). False on out of memory. */
static bool client_ps_ensure(Client *c, PsStmt *st, PktBuf *pb)
{
	PsServer *ps = c->link->ps;

	if (ps_server_has(ps, st)) {
		ps_server_touch(ps, st);
		return true;
	}
	ps_build_parse(pb, st);
	return ps_server_add(ps, st) && ps_queue_push(ps, PS_RQ_PARSE, PS_ACT_SWALLOW, st);
}

/* A buffer for a rebuilt message: on the stack when it is small. */
static void client_ps_buf(PktBuf *pb, uint8_t *tmp, size_t tmplen, size_t need)
{
	if (need <= tmplen)
		pktbuf_init_fixed(pb, tmp, tmplen);
	else
		pktbuf_init(pb, need);
}

static SbufAction client_ps_parse(Client *c, uint32_t total, const uint8_t *pkt, uint32_t avail)
{
	Server *s = c->link;
	PsParseMsg m;
	PsStmt *st;
	uint8_t tmp[1024];
	PktBuf pb;
	bool have;

	if (avail < 6)
		return SB_NEED_FULL;
	if (pkt[5] == 0)
		return client_ps_forward(c, 'P', PS_RQ_PARSE); /* the unnamed statement */
	if (avail < total)
		return SB_NEED_FULL;
	if (sbuf_has_unflushed(&c->sbuf))
		return SB_FLUSH_RETRY;
	if (ps_read_parse(pkt, total, &m) != PS_READ_OK)
		return client_ps_forward(c, 'P', PS_RQ_PARSE); /* the server will say what is wrong */
	st = ps_stmt_intern(m.body, m.body_len);
	if (!st || !ps_client_set(&c->ps, m.name, st)) {
		ps_stmt_unref(st);
		disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	client_count_request(c, 'P');
	have = ps_server_has(s->ps, st);
	if (have) {
		/* the server has it already: answer ParseComplete in its turn */
		ps_server_touch(s->ps, st);
		ps_stmt_unref(st);
		if (!client_ps_push(c, PS_RQ_PARSE, PS_ACT_SYNTH, NULL))
			return SB_CLOSED;
		return server_ps_emit(s) ? SB_CONSUMED : SB_CLOSED;
	}
	client_ps_buf(&pb, tmp, sizeof(tmp), st->body_len + PS_SERVER_NAME_LEN + 8);
	ps_build_parse(&pb, st);
	if (!ps_server_add(s->ps, st) || !ps_queue_push(s->ps, PS_RQ_PARSE, PS_ACT_FORWARD, st)) {
		ps_stmt_unref(st);
		pktbuf_cleanup(&pb);
		disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	ps_stmt_unref(st);
	return client_ps_send(c, &pb);
}

static SbufAction client_ps_bind(Client *c, uint32_t total, const uint8_t *pkt, uint32_t avail)
{
	const char *portal, *name;
	uint32_t rest;
	PsReadStatus rs = ps_read_bind(pkt, avail, &portal, &name, &rest);
	PsStmt *st;
	uint8_t tmp[2048];
	PktBuf pb;

	if (rs == PS_READ_INCOMPLETE && avail < total)
		return SB_NEED_FULL;
	if (rs != PS_READ_OK || !name[0] || !(st = ps_client_lookup(&c->ps, name)))
		return client_ps_forward(c, 'B', PS_RQ_BIND);
	if (avail < total)
		return SB_NEED_FULL;
	if (sbuf_has_unflushed(&c->sbuf))
		return SB_FLUSH_RETRY;
	client_count_request(c, 'B');
	client_ps_buf(&pb, tmp, sizeof(tmp), total + st->body_len + 2 * PS_SERVER_NAME_LEN + 16);
	if (!client_ps_ensure(c, st, &pb) || !ps_build_bind(&pb, pkt, total, st->server_name) ||
	    !client_ps_push(c, PS_RQ_BIND, PS_ACT_FORWARD, NULL)) {
		pktbuf_cleanup(&pb);
		if (c->state != CL_JUSTFREE)
			disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	return client_ps_send(c, &pb);
}

/* Describe or Close. */
static SbufAction client_ps_target(Client *c, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail)
{
	PsReplyKind kind = type == 'D' ? PS_RQ_DESCRIBE : PS_RQ_CLOSE;
	const char *name;
	uint8_t what;
	PsStmt *st;
	uint8_t tmp[1024];
	PktBuf pb;

	if (avail < total)
		return SB_NEED_FULL;
	if (ps_read_target(pkt, total, &what, &name) != PS_READ_OK || what != 'S' || !name[0] ||
	    !(st = ps_client_lookup(&c->ps, name)))
		return client_ps_forward(c, type, kind);
	if (type == 'C') {
		/* the statement stays on the server for whoever parses it next */
		ps_client_remove(&c->ps, name);
		client_count_request(c, type);
		if (!client_ps_push(c, PS_RQ_CLOSE, PS_ACT_SYNTH, NULL))
			return SB_CLOSED;
		return server_ps_emit(c->link) ? SB_CONSUMED : SB_CLOSED;
	}
	if (sbuf_has_unflushed(&c->sbuf))
		return SB_FLUSH_RETRY;
	client_count_request(c, type);
	client_ps_buf(&pb, tmp, sizeof(tmp), st->body_len + 2 * PS_SERVER_NAME_LEN + 16);
	if (!client_ps_ensure(c, st, &pb) ||
	    !client_ps_push(c, PS_RQ_DESCRIBE, PS_ACT_FORWARD, NULL)) {
		pktbuf_cleanup(&pb);
		if (c->state != CL_JUSTFREE)
			disconnect_client(c, "53200", "out of memory");
		return SB_CLOSED;
	}
	ps_build_target(&pb, 'D', 'S', st->server_name);
	return client_ps_send(c, &pb);
}

static SbufAction client_ps_packet(Client *c, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail);

/*
 * The client's first named Parse: its links track prepared statements from now on. Tracking
 * starts on this link too when nothing is in flight; otherwise the replies already owed were not
 * counted, so this link passes the name through and the statement is remembered for the next
 * links.
 */
static SbufAction client_first_named_parse(Client *c, uint32_t total, const uint8_t *pkt,
					   uint32_t avail)
{
	PsParseMsg m;
	PsStmt *st;

	if (avail < total)
		return SB_NEED_FULL;
	c->ps_used = true;
	if (!c->expected_z && !c->ext_open && server_ps_enable(c->link))
		return client_ps_packet(c, 'P', total, pkt, avail);
	if (c->state == CL_JUSTFREE || !c->link)
		return SB_CLOSED;
	if (ps_read_parse(pkt, total, &m) == PS_READ_OK && (st = ps_stmt_intern(m.body, m.body_len))) {
		if (!ps_client_set(&c->ps, m.name, st))
			slog_client(LOG_LVL_WARNING, c, "could not remember prepared statement \"%s\"",
				    m.name);
		ps_stmt_unref(st);
	}
	client_count_request(c, 'P');
	return SB_FORWARD;
}

/* A message on a link that tracks prepared statements. */
static SbufAction client_ps_packet(Client *c, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail)
{
	/* after an error the server ignores everything up to Sync: pass it untouched */
	if (c->link->ps->skipping && type != 'S') {
		client_count_request(c, type);
		return SB_FORWARD;
	}
	switch (type) {
	case 'P':
		return client_ps_parse(c, total, pkt, avail);
	case 'B':
		return client_ps_bind(c, total, pkt, avail);
	case 'D':
	case 'C':
		return client_ps_target(c, type, total, pkt, avail);
	case 'E':
		return client_ps_forward(c, type, PS_RQ_EXECUTE);
	case 'S':
		return client_ps_forward(c, type, PS_RQ_SYNC);
	case 'Q':
	case 'F':
		return client_ps_forward(c, type, PS_RQ_QUERY);
	default:
		client_count_request(c, type);
		return SB_FORWARD;
	}
}

static SbufAction client_handle_admin(Client *c, uint8_t type, uint32_t total, const uint8_t *pkt,
				      uint32_t avail)
{
	if (type == 'X') {
		disconnect_client(c, NULL, "client close request");
		return SB_CLOSED;
	}
	if (type != 'Q') {
		disconnect_client(c, "08P01", "the admin console supports only the simple query protocol");
		return SB_CLOSED;
	}
	if (avail < total)
		return SB_NEED_FULL;
	/* PAUSE and WAIT_CLOSE answer later: the next command waits for that answer */
	if (admin_is_waiting(c))
		return SB_PAUSE;
	if (total < 6 || pkt[total - 1] != 0) {
		disconnect_client(c, "08P01", "invalid query message");
		return SB_CLOSED;
	}
	if (!admin_handle_query(c, (const char *)pkt + 5, total - 6))
		return SB_CLOSED;
	return SB_CONSUMED;
}

static SbufAction client_packet_cb(Sbuf *sb, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail)
{
	Client *c = (Client *)sb;

	if (unlikely(sb->startup))
		return client_handle_startup(c, pkt, total, avail);
	if (unlikely(c->state == CL_LOGIN || c->state == CL_WAITING_LOGIN)) {
		if (c->state == CL_WAITING_LOGIN || !c->login->auth_method)
			return SB_PAUSE; /* nothing is expected from it now */
		if (type != 'p') {
			disconnect_client(c, "08P01", "expected password response, got message type %d",
					  type);
			return SB_CLOSED;
		}
		if (total > 8192) {
			disconnect_client(c, "08P01", "password message too long");
			return SB_CLOSED;
		}
		if (avail < total)
			return SB_NEED_FULL;
		client_handle_password(c, pkt, total);
		return c->state == CL_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
	}
	if (unlikely(!is_frontend_type(type))) {
		/* never forward garbage to a shared server */
		disconnect_client(c, "08P01", "invalid frontend message type %d", type);
		return SB_CLOSED;
	}
	if (unlikely(c->admin))
		return client_handle_admin(c, type, total, pkt, avail);
	if (unlikely(type == 'X')) {
		disconnect_client(c, NULL, "client close request");
		return SB_CLOSED;
	}
	if (unlikely(c->xact_lost || c->discard_until_sync))
		return client_handle_lost(c, type);
	if (!c->link) {
		if (c->state == CL_WAITING)
			return SB_PAUSE;
		/* a Sync, Flush or CopyDone on its own needs no server when nothing is open */
		if (!pool_assign_server(c))
			return c->state == CL_JUSTFREE ? SB_CLOSED : SB_PAUSE;
	}
	if (c->link->ps_on)
		return client_ps_packet(c, type, total, pkt, avail);
	if (unlikely(type == 'P') && avail > 5 && pkt[5] != 0 && !c->ps_used &&
	    cfg->max_prepared_statements > 0)
		return client_first_named_parse(c, total, pkt, avail);
	client_count_request(c, type);
	return SB_FORWARD;
}

void client_server_lost(Client *c, Server *s, const char *reason)
{
	char msg[400];
	bool mid_message = s->sbuf.pkt_remain || (s->sbuf.buf && s->sbuf.buf->done < s->sbuf.buf->scan);
	int mode = pool_effective_mode(c->pool);
	bool fatal = mode == POOL_SESSION || mid_message;
	/* a closing reason of our own (08007: a deposed primary) says it all in <reason> */
	const char *code = s->lost_sqlstate ? s->lost_sqlstate : "08006";
	const char *what = s->lost_sqlstate ? ""
			   : fatal	    ? "server connection crashed: "
					    : "server closed the connection unexpectedly: ";

	snprintf(msg, sizeof(msg), "%s%s", what, reason);
	/* bytes scanned for the dead server must not reach the next one */
	sbuf_drop_unflushed(&c->sbuf);
	sbuf_unlink(&c->sbuf);
	if (fatal) {
		disconnect_client(c, code, "%s", msg);
		return;
	}
	/* in transaction mode only the transaction is lost: an ERROR, not a FATAL */
	if (c->expected_z) {
		uint8_t tmp[700];
		PktBuf pb;

		pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
		pktbuf_write_error(&pb, "ERROR", code, msg);
		while (c->expected_z > 0 && !pb.failed) {
			pktbuf_write_ready(&pb, 'I');
			c->expected_z--;
		}
		c->tx_state = 'I';
		if (c->ext_open)
			c->discard_until_sync = true;
		if (!CLIENT_SEND_BUILT(c, pb))
			return;
	} else if (c->ext_open) {
		c->discard_until_sync = true;
	} else if (c->tx_state != 'I') {
		c->xact_lost = true;
	}
	c->expected_z = 0;
	c->ext_open = false;
	c->xact_start = 0;
	c->query_start = 0;
	if (c->pool->db->cfg.host || !c->pool->db->cfg.cluster)
		slog_client(LOG_LVL_WARNING, c, "server connection lost mid-transaction; client kept");
	/* what the client sends next starts afresh */
	if (sbuf_has_input(&c->sbuf))
		sbuf_continue(&c->sbuf);
}
