/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Server connections. Login is a chain of messages on the non-blocking socket: startup packet,
 * authentication (trust, cleartext, md5, SCRAM-SHA-256 with a password or with a ClientKey passed
 * through from a client's SCRAM login), ParameterStatus, BackendKeyData, ReadyForQuery. Queries
 * the pooler runs itself (parameter SETs, reset, check, connect_query) are pipelined ahead of the
 * client's traffic; their replies are swallowed by counting ReadyForQuery messages (skip_z).
 *
 * Interface: server_launch, server_sync_params, server_needs_check, server_start_check,
 * server_start_reset, server_send_cancel.
 */
#include "pooler/server.h"
#include "pooler/client.h"
#include "pooler/pool.h"
#include "pooler/routing.h"
#include "protocol/packet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static SbufAction server_packet_cb(Sbuf *sb, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail);
static void server_close_cb(Sbuf *sb, const char *reason);
static bool server_send_own_query(Server *s, const char *sql);
static void server_flushed_cb(Sbuf *sb);
static void server_release_cb(Sbuf *sb);

static const SbufOps server_ops = {
	.on_packet = server_packet_cb,
	.on_close = server_close_cb,
	.on_flushed = server_flushed_cb,
	.on_release = server_release_cb,
	.startup_framing = false,
};

static uint32_t next_server_id = 1;

/* --- connecting --- */

static void server_login_failed(Pool *p, const char *sqlstate, const char *msg);

typedef enum TargetStatus {
	TARGET_OK,	/* address filled in */
	TARGET_PENDING, /* a name lookup runs; the pool is activated again when it ends */
	TARGET_FAILED,	/* no address; err says why */
	TARGET_NO_ROUTE, /* cluster= database: no member fits now; wait for the view to change */
} TargetStatus;

static void pgaddr_from_sockaddr(PgAddr *pa, const struct sockaddr *sa, int port)
{
	memset(pa, 0, sizeof(*pa));
	pa->family = (uint8_t)sa->sa_family;
	pa->port = (uint16_t)port;
	if (sa->sa_family == AF_INET)
		memcpy(pa->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(pa->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

static void server_resolved_cb(void *arg, const char *host, const struct sockaddr *addr,
			       const char *errmsg)
{
	Pool *p = arg;

	p->resolving = false;
	if (!addr) {
		char msg[300];

		snprintf(msg, sizeof(msg), "could not resolve host \"%s\": %s", host,
			 errmsg ? errmsg : "unknown error");
		p->last_connect_failed_time = get_cached_time();
		server_login_failed(p, "08001", msg);
		return;
	}
	/* the answer is cached now: launching again finds it at once */
	pool_activate(p);
}

/*
 * Where the pool's servers go: host and port from [databases], or from the cluster view for a
 * cluster= database. Fill a sockaddr; names are resolved asynchronously (TARGET_PENDING).
 */
static TargetStatus server_target_addr(Pool *p, struct sockaddr_storage *ss, socklen_t *len,
				       PgAddr *pa, char *member, size_t memberlen, char *err,
				       size_t errlen)
{
	Database *db = p->db;
	const char *host = db->cfg.host;
	int port = db->cfg.port > 0 ? db->cfg.port : 5432;
	char hostbuf[256];
	DnsLookup lk;
	int rc;

	memset(ss, 0, sizeof(*ss));
	memset(pa, 0, sizeof(*pa));
	if (db->cfg.cluster) {
		if (!routing_target(db, hostbuf, sizeof(hostbuf), &port, member, memberlen, err,
				    errlen))
			return TARGET_NO_ROUTE;
		host = hostbuf;
	}
	if (!host || host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;

		un->sun_family = AF_UNIX;
		rc = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d",
			      host ? host : "/tmp", port);
		if (rc < 0 || (size_t)rc >= sizeof(un->sun_path)) {
			snprintf(err, errlen, "unix socket path too long");
			return TARGET_FAILED;
		}
		*len = sizeof(*un);
		pa->family = AF_UNIX;
		pa->port = (uint16_t)port;
		return TARGET_OK;
	}
	if (p->resolving)
		return TARGET_PENDING;
	lk = dns_resolve(pooler_resolver, host, port, ss, len, server_resolved_cb, p);
	if (lk == DNS_LOOKUP_PENDING) {
		p->resolving = true;
		return TARGET_PENDING;
	}
	if (lk == DNS_LOOKUP_FAILED) {
		snprintf(err, errlen, "could not resolve host \"%.100s\": %.100s", host,
			 dns_resolver_last_error(pooler_resolver, host));
		return TARGET_FAILED;
	}
	pgaddr_from_sockaddr(pa, (struct sockaddr *)ss, port);
	return TARGET_OK;
}

/* A sockaddr for the address a server connected to (cancel requests go to the same one). */
static bool server_sockaddr(const Server *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const PgAddr *pa = &s->addr;

	memset(ss, 0, sizeof(*ss));
	if (pa->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(pa->port);
		memcpy(&in->sin_addr, pa->addr, 4);
		*len = sizeof(*in);
		return true;
	}
	if (pa->family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(pa->port);
		memcpy(&in6->sin6_addr, pa->addr, 16);
		*len = sizeof(*in6);
		return true;
	}
	if (pa->family == AF_UNIX) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *dir = s->pool->db->cfg.host;
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", dir ? dir : "/tmp",
			 pa->port);
		*len = sizeof(*un);
		return true;
	}
	return false;
}

static void server_tune_socket(int fd, int family)
{
	int on = 1;

	if (family == AF_UNIX)
		return;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (cfg->tcp_keepalive) {
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
		if (cfg->tcp_keepidle > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->tcp_keepidle, sizeof(int));
		if (cfg->tcp_keepintvl > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->tcp_keepintvl, sizeof(int));
		if (cfg->tcp_keepcnt > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->tcp_keepcnt, sizeof(int));
	}
}

static void server_send_startup(Server *s)
{
	Database *db = s->pool->db;
	PktBuf pb;
	uint8_t tmp[1024];

	pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
	pktbuf_start(&pb, 0);
	pktbuf_put_u32(&pb, PROTO_V3);
	pktbuf_put_string(&pb, "user");
	pktbuf_put_string(&pb, s->pool->user->name);
	pktbuf_put_string(&pb, "database");
	pktbuf_put_string(&pb, db->cfg.dbname ? db->cfg.dbname : db->name);
	if (db->cfg.application_name) {
		pktbuf_put_string(&pb, "application_name");
		pktbuf_put_string(&pb, db->cfg.application_name);
	}
	pktbuf_put_u8(&pb, 0);
	pktbuf_finish(&pb);
	if (pb.failed || !sbuf_send(&s->sbuf, pb.buf, pb.len))
		disconnect_server(s, "could not send startup packet");
}

static void server_connected_cb(Sbuf *sb)
{
	Server *s = (Server *)sb;

	slog_server(LOG_LVL_DEBUG, s, "connected");
	server_send_startup(s);
}

void server_launch(Pool *p)
{
	char member[64];
	struct sockaddr_storage ss;
	socklen_t slen;
	PgAddr pa;
	char err[256];
	Server *s;
	int fd, rc;

	member[0] = 0;
	switch (server_target_addr(p, &ss, &slen, &pa, member, sizeof(member), err, sizeof(err))) {
	case TARGET_OK:
		break;
	case TARGET_PENDING:
		return;
	case TARGET_NO_ROUTE:
		/* clients wait (up to query_wait_timeout); a view change activates the pool */
		if (!p->last_login_error || strcmp(p->last_login_error, err) != 0) {
			log_warning("%s/%s: %s", p->db->name, p->user->name, err);
			free(p->last_login_error);
			p->last_login_error = strdup(err);
		}
		p->last_login_failed = true;
		p->no_route = true;
		return;
	case TARGET_FAILED:
		p->last_connect_failed_time = get_cached_time();
		server_login_failed(p, "08001", err);
		return;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_msg_errno(LOG_LVL_ERROR, "could not create a server socket");
		return;
	}
	server_tune_socket(fd, ss.ss_family);
	rc = connect(fd, (struct sockaddr *)&ss, slen);
	if (rc < 0 && errno != EINPROGRESS) {
		char msg[300];

		snprintf(msg, sizeof(msg), "could not connect to server: %s", strerror(errno));
		close(fd);
		p->last_connect_failed_time = get_cached_time();
		server_login_failed(p, "08001", msg);
		return;
	}
	s = server_alloc();
	if (!s) {
		close(fd);
		log_error("out of memory for a server connection");
		return;
	}
	s->pool = p;
	s->addr = pa;
	p->no_route = false;
	memcpy(s->member, member, sizeof(s->member));
	s->id = next_server_id++;
	s->tx_state = 'I';
	s->connect_time = s->request_time = get_cached_time();
	p->last_connect_time = s->connect_time;
	if (!sbuf_connect(&s->sbuf, fd, &server_ops, server_connected_cb)) {
		close(fd);
		slab_release_server(s);
		return;
	}
	s->sbuf.bytes_in = NULL;
	p->db->server_count++;
	p->user->server_count++;
	n_servers_total++;
	change_server_state(s, SV_LOGIN);
	slog_server(LOG_LVL_DEBUG, s, "new connection to server");
}

/* --- login --- */

/* Tell clients that wait to log in why the server would not have us; others keep waiting. */
static void server_login_failed(Pool *p, const char *sqlstate, const char *msg)
{
	List *it, *tmp;

	free(p->last_login_error);
	p->last_login_error = strdup(msg);
	p->last_login_failed = true;
	log_warning("%s/%s: server login failed: %s", p->db->name, p->user->name, msg);
	/* an error from PostgreSQL itself (bad password, no such database) will not go away by
	 * waiting: the clients still logging in get it; connection failures are retried */
	if (strcmp(sqlstate, "08001") == 0)
		return;
	list_for_each_safe(it, tmp, &p->waiting_clients) {
		Client *c = container_of(it, Client, head);
		if (c->state == CL_WAITING_LOGIN)
			disconnect_client(c, sqlstate, "%s", msg);
	}
}

/* The message field of an ErrorResponse body (type 'M'), or a default. */
static void error_fields(const uint8_t *pkt, uint32_t total, char *sqlstate, char *msg,
			 size_t msglen)
{
	uint32_t off = 5;

	strcpy(sqlstate, "08P01");
	snprintf(msg, msglen, "unknown error");
	while (off < total && pkt[off] != 0) {
		uint8_t f = pkt[off++];
		const uint8_t *start = pkt + off;
		const uint8_t *nul = memchr(start, 0, total - off);

		if (!nul)
			return;
		if (f == 'C' && nul - start == 5)
			memcpy(sqlstate, start, 6);
		else if (f == 'M')
			snprintf(msg, msglen, "%s", (const char *)start);
		off = (uint32_t)(nul - pkt) + 1;
	}
}

/* Does an ErrorResponse carry severity FATAL or PANIC? */
static bool error_is_fatal(const uint8_t *pkt, uint32_t total)
{
	uint32_t off = 5;

	while (off < total && pkt[off] != 0) {
		uint8_t f = pkt[off++];
		const uint8_t *start = pkt + off;
		const uint8_t *nul = memchr(start, 0, total - off);

		if (!nul)
			return false;
		if (f == 'V' || f == 'S')
			return strcmp((const char *)start, "FATAL") == 0 ||
			       strcmp((const char *)start, "PANIC") == 0;
		off = (uint32_t)(nul - pkt) + 1;
	}
	return false;
}

static bool server_send_password_msg(Server *s, const void *data, size_t len, bool add_nul)
{
	PktBuf pb;
	bool ok;

	pktbuf_init(&pb, len + 16);
	pktbuf_start(&pb, 'p');
	pktbuf_put_bytes(&pb, data, len);
	if (add_nul)
		pktbuf_put_u8(&pb, 0);
	pktbuf_finish(&pb);
	ok = !pb.failed && sbuf_send(&s->sbuf, pb.buf, pb.len);
	pktbuf_cleanup(&pb);
	return ok;
}

/* The clear-text password we know for the pool's login user, or NULL. */
static const char *server_plain_password(const User *u)
{
	if (u->kind == SECRET_PLAIN)
		return u->secret;
	return u->passthrough_password;
}

static bool server_auth_sasl(Server *s, const uint8_t *data, uint32_t len)
{
	User *u = s->pool->user;
	const char *pw = server_plain_password(u);
	bool found = false;
	uint32_t off = 0;
	char *first = NULL;
	bool ok;

	while (off < len && data[off]) {
		const char *mech = (const char *)data + off;
		size_t l = strnlen(mech, len - off);

		if (l == len - off)
			break;
		found |= strcmp(mech, SCRAM_MECHANISM) == 0;
		off += (uint32_t)l + 1;
	}
	if (!found) {
		server_login_failed(s->pool, "28000", "server asked for an unsupported SASL mechanism");
		return false;
	}
	s->scram = calloc(1, sizeof(ScramClient));
	if (!s->scram)
		return false;
	if (pw) {
		scram_client_init_password(s->scram, pw);
	} else if (u->have_scram_keys) {
		scram_client_init_keys(s->scram, u->scram_client_key, u->scram_server_key);
	} else {
		server_login_failed(s->pool, "28P01",
				    "no password known to log into the server with SCRAM");
		return false;
	}
	if (!scram_client_first(s->scram, &first))
		return false;
	{
		PktBuf pb;
		pktbuf_init(&pb, 128);
		pktbuf_start(&pb, 'p');
		pktbuf_put_string(&pb, SCRAM_MECHANISM);
		pktbuf_put_u32(&pb, (uint32_t)strlen(first));
		pktbuf_put_bytes(&pb, first, strlen(first));
		pktbuf_finish(&pb);
		ok = !pb.failed && sbuf_send(&s->sbuf, pb.buf, pb.len);
		pktbuf_cleanup(&pb);
	}
	free(first);
	return ok;
}

/* Handle an Authentication* request during login. False: give up on this server. */
static bool server_handle_auth(Server *s, const uint8_t *pkt, uint32_t total)
{
	User *u = s->pool->user;
	uint32_t code;
	const char *pw;

	if (total < 9)
		return false;
	code = get_be32(pkt + 5);
	switch (code) {
	case 0: /* AuthenticationOk */
		return true;
	case 3: /* cleartext */
		pw = server_plain_password(u);
		if (!pw) {
			server_login_failed(s->pool, "28P01",
					    "server asked for a clear-text password and none is known");
			return false;
		}
		return server_send_password_msg(s, pw, strlen(pw), true);
	case 5: { /* md5 */
		char md5secret[MD5_PASSWD_LEN + 1], resp[MD5_PASSWD_LEN + 1];
		const char *sec = NULL;

		if (total < 13)
			return false;
		if (u->kind == SECRET_MD5)
			sec = u->secret;
		else if ((pw = server_plain_password(u)) && md5_password_hash(u->name, pw, md5secret))
			sec = md5secret;
		if (!sec) {
			server_login_failed(s->pool, "28P01",
					    "server asked for an md5 password and none is known");
			return false;
		}
		if (!md5_salted_response(sec, pkt + 9, resp))
			return false;
		return server_send_password_msg(s, resp, MD5_PASSWD_LEN, true);
	}
	case 10: /* SASL */
		return server_auth_sasl(s, pkt + 9, total - 9);
	case 11: { /* SASLContinue */
		char *final = NULL;
		bool ok;

		if (!s->scram || !scram_client_final(s->scram, (const char *)pkt + 9, total - 9, &final)) {
			if (s->scram)
				server_login_failed(s->pool, "28P01", s->scram->err);
			return false;
		}
		ok = server_send_password_msg(s, final, strlen(final), false);
		free(final);
		return ok;
	}
	case 12: /* SASLFinal */
		if (!s->scram || !scram_client_verify(s->scram, (const char *)pkt + 9, total - 9)) {
			server_login_failed(s->pool, "28P01", "could not verify the server's SCRAM signature");
			return false;
		}
		scram_client_cleanup(s->scram);
		free(s->scram);
		s->scram = NULL;
		return true;
	default: {
		char msg[100];
		snprintf(msg, sizeof(msg), "server asked for unsupported authentication method %u", code);
		server_login_failed(s->pool, "28000", msg);
		return false;
	}
	}
}

/* Record a ParameterStatus on the server (and, when linked, on its client). */
static void server_note_parameter(Server *s, const uint8_t *pkt, uint32_t total, bool login)
{
	size_t off = 0;
	const char *name = pkt_get_string(pkt + 5, total - 5, &off);
	const char *value = name ? pkt_get_string(pkt + 5, total - 5, &off) : NULL;
	int idx;

	if (!value)
		return;
	idx = varcache_index(name);
	if (idx >= 0) {
		varcache_set_idx(&s->vars, idx, value);
		if (s->link)
			varcache_set_idx(&s->link->vars, idx, value);
		return;
	}
	if (login) {
		if (!s->login_params) {
			s->login_params = calloc(1, sizeof(PktBuf));
			if (!s->login_params)
				return;
			pktbuf_init(s->login_params, 512);
		}
		pktbuf_put_bytes(s->login_params, pkt, total);
	}
}

/* Login finished: the first server of a pool teaches it what to tell clients. */
static void server_login_done(Server *s)
{
	Pool *p = s->pool;

	s->ready = true;
	/* a fresh server counts as just used: server_check_delay and server_idle_timeout run from
	 * its login, not from the epoch (it was closed as idle, or checked, at once) */
	s->idle_since = get_cached_time();
	p->last_login_failed = false;
	p->last_connect_failed_time = 0;
	if (!p->have_welcome) {
		varcache_copy(&p->welcome, &s->vars);
		if (s->login_params && !s->login_params->failed) {
			p->welcome_msg = s->login_params->buf;
			p->welcome_len = (uint32_t)s->login_params->len;
			s->login_params->buf = NULL;
		}
		p->have_welcome = true;
	}
	if (s->login_params) {
		pktbuf_cleanup(s->login_params);
		free(s->login_params);
		s->login_params = NULL;
	}
	slog_server(LOG_LVL_DEBUG, s, "login done");
	if (p->db->cfg.connect_query && p->db->cfg.connect_query[0]) {
		if (!server_send_own_query(s, p->db->cfg.connect_query)) {
			disconnect_server(s, "could not send connect_query");
			return;
		}
		s->connect_query_pending = true;
		return;
	}
	pool_server_ready(s);
}

static SbufAction server_handle_login(Server *s, uint8_t type, uint32_t total, const uint8_t *pkt,
				      uint32_t avail)
{
	char sqlstate[6], msg[400];

	if (avail < total) {
		if (total > 65536) {
			disconnect_server(s, "login message too large");
			return SB_CLOSED;
		}
		return SB_NEED_FULL;
	}
	switch (type) {
	case 'R':
		if (!server_handle_auth(s, pkt, total)) {
			disconnect_server(s, "authentication failed");
			return SB_CLOSED;
		}
		return SB_CONSUMED;
	case 'S':
		server_note_parameter(s, pkt, total, true);
		return SB_CONSUMED;
	case 'K':
		if (total == 13) {
			s->backend_pid = get_be32(pkt + 5);
			s->backend_key = get_be32(pkt + 9);
		}
		return SB_CONSUMED;
	case 'N':
		return SB_CONSUMED;
	case 'E':
		error_fields(pkt, total, sqlstate, msg, sizeof(msg));
		s->pool->last_connect_failed_time = get_cached_time();
		server_login_failed(s->pool, sqlstate, msg);
		disconnect_server(s, "login failed: %s", msg);
		return SB_CLOSED;
	case 'Z':
		if (total >= 6)
			s->tx_state = pkt[5];
		server_login_done(s);
		return s->state == SV_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
	default:
		disconnect_server(s, "unexpected message '%c' during login", type);
		return SB_CLOSED;
	}
}

/* --- our own queries --- */

/* Queue one of our own queries; its replies are swallowed. False when it could not be built or
 * queued: the caller closes the server. */
static bool server_send_own_query(Server *s, const char *sql)
{
	uint8_t tmp[2048];
	PktBuf pb;
	bool ok;

	pktbuf_init_spill(&pb, tmp, sizeof(tmp));
	pktbuf_write_query(&pb, sql);
	ok = !pb.failed && sbuf_send(&s->sbuf, pb.buf, pb.len);
	pktbuf_cleanup(&pb);
	if (ok)
		s->skip_z++;
	return ok;
}

/* Close the least recently used statements above max_prepared_statements, with one Sync whose
 * replies are swallowed like our own queries'. Done when a link starts, so no portal of the
 * client can depend on them. */
static void server_ps_evict(Server *s)
{
	PsServer *ps = s->ps;
	PktBuf pb;
	uint32_t max = (uint32_t)cfg->max_prepared_statements;

	if (ps->count <= max)
		return;
	pktbuf_init(&pb, 64 * (ps->count - max) + 16);
	while (ps->count > max) {
		PsStmt *st = ps_server_lru(ps);

		ps_build_target(&pb, 'C', 'S', st->server_name);
		ps_server_remove(ps, st);
	}
	pktbuf_start(&pb, 'S');
	pktbuf_finish(&pb);
	if (pb.failed || !sbuf_send(&s->sbuf, pb.buf, pb.len)) {
		pktbuf_cleanup(&pb);
		disconnect_server(s, "could not send prepared statement eviction");
		return;
	}
	pktbuf_cleanup(&pb);
	s->skip_z++;
}

/*
 * Start tracking prepared statements on the link (transaction and statement mode). Tracking
 * costs a reply-queue entry per message, so it only runs for clients that have used a named
 * statement (Client.ps_used); the others keep the plain forwarding path.
 */
bool server_ps_enable(Server *s)
{
	s->ps_on = cfg->max_prepared_statements > 0 && pool_effective_mode(s->pool) != POOL_SESSION;
	if (!s->ps_on)
		return false;
	if (!s->ps && !(s->ps = ps_server_new())) {
		s->ps_on = false;
		return false;
	}
	ps_queue_reset(s->ps);
	server_ps_evict(s);
	return s->ps_on && s->state != SV_JUSTFREE;
}

static void server_ps_link(Server *s)
{
	s->ps_on = false;
	if (s->link && s->link->ps_used)
		(void)server_ps_enable(s);
	else if (s->ps && pool_effective_mode(s->pool) != POOL_SESSION)
		server_ps_evict(s); /* keep the server's statements within the limit all the same */
}

/*
 * Apply the client's tracked parameters to the server before its traffic (at every link, so
 * the SQL is built on the stack unless it is long). varcache_build_sync() records the values in
 * the server's cache as it writes them, so a SET that is not sent must not leave that record
 * behind: on any failure the server is closed, and its cache with it. Values are bounded by the
 * startup packet and by the ParameterStatus messages they come from.
 */
void server_sync_params(Server *s, Client *c)
{
	uint8_t tmp[1024];
	PktBuf sql;

	server_ps_link(s);
	if (s->state == SV_JUSTFREE)
		return;

	pktbuf_init_spill(&sql, tmp, sizeof(tmp));
	if (varcache_build_sync(&c->vars, &s->vars, &sql) == 0)
		return;
	pktbuf_put_u8(&sql, 0);
	if (sql.failed || !server_send_own_query(s, (const char *)sql.buf))
		disconnect_server(s, "could not send the SET of tracked parameters");
	pktbuf_cleanup(&sql);
}

bool server_needs_check(const Server *s)
{
	return cfg->server_check_query && cfg->server_check_query[0] && cfg->server_check_delay >= 0 &&
	       get_cached_time() - s->idle_since > cfg->server_check_delay;
}

void server_start_check(Server *s)
{
	change_server_state(s, SV_TESTED);
	if (!server_send_own_query(s, cfg->server_check_query))
		disconnect_server(s, "could not send check query");
}

void server_start_reset(Server *s)
{
	change_server_state(s, SV_TESTED);
	if (!server_send_own_query(s, cfg->server_reset_query)) {
		disconnect_server(s, "could not send reset query");
		return;
	}
	/* whatever the reset query is, the statements we track must not outlive it unseen */
	if (s->ps && s->ps->count) {
		ps_server_forget_all(s->ps);
		if (!server_send_own_query(s, "DEALLOCATE ALL"))
			disconnect_server(s, "could not send reset query");
	}
}

/* A reply to one of our own queries. */
static SbufAction server_handle_own_reply(Server *s, uint8_t type, uint32_t total,
					  const uint8_t *pkt, uint32_t avail)
{
	if ((type == 'S' || type == 'E' || type == 'Z') && avail < total)
		return total > 65536 ? SB_CONSUMED : SB_NEED_FULL;
	if (type == 'S') {
		server_note_parameter(s, pkt, total, false);
	} else if (type == 'E') {
		char sqlstate[6], msg[300];
		error_fields(pkt, total, sqlstate, msg, sizeof(msg));
		slog_server(LOG_LVL_WARNING, s, "pooler query failed: %s (%s)", msg, sqlstate);
		s->own_query_failed = true;
	} else if (type == 'Z') {
		s->skip_z--;
		s->tx_state = total >= 6 ? pkt[5] : 'I';
		if (s->skip_z == 0) {
			bool failed = s->own_query_failed;

			s->own_query_failed = false;
			if (s->state == SV_TESTED || s->connect_query_pending) {
				s->connect_query_pending = false;
				if (failed || s->tx_state != 'I') {
					disconnect_server(s, "check, reset or connect query failed");
					return SB_CLOSED;
				}
				s->idle_since = get_cached_time();
				pool_server_ready(s);
				return s->state == SV_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
			}
		}
	}
	return SB_CONSUMED;
}

/* --- linked data path --- */

bool server_ps_emit(Server *s)
{
	Client *c = s->link;
	uint8_t type;

	while (c && s->ps_on && (type = ps_queue_head_synth(s->ps)) != 0) {
		uint8_t msg[5] = { type, 0, 0, 0, 4 };

		if (sbuf_has_unflushed(&s->sbuf)) {
			s->sbuf.notify_flushed = true;
			return true;
		}
		ps_queue_pop(s->ps);
		if (!client_send(c, msg, sizeof(msg)))
			return false;
	}
	return true;
}

/*
 * A reply on a link that tracks prepared statements: send the pooler's own answers that are
 * due before it, account for it in the FIFO, swallow it if it answers what the pooler
 * injected. SB_FORWARD lets server_packet_cb go on as usual.
 */
static SbufAction server_ps_reply(Server *s, Client *c, uint8_t type, uint32_t total,
				  const uint8_t *pkt, uint32_t avail)
{
	PsVerdict v;

	if (ps_queue_head_synth(s->ps)) {
		if (sbuf_has_unflushed(&s->sbuf))
			return SB_FLUSH_RETRY;
		if (!server_ps_emit(s))
			return s->state == SV_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
	}
	if ((type == 'C' || type == 'Z') && avail < total)
		return SB_NEED_FULL;
	if (type == 'C' && total > 5 && ps_tag_drops_all((const char *)pkt + 5, total - 5)) {
		/* DEALLOCATE ALL or DISCARD ALL from the client: the backend has no statement left,
		 * and the client expects to have none either */
		ps_server_forget_all(s->ps);
		ps_client_clear(&c->ps);
	}
	v = ps_queue_reply(s->ps, type);
	if (ps_queue_head_synth(s->ps))
		s->sbuf.notify_flushed = true;
	if (v == PS_V_SWALLOW) {
		if (type == '1')
			s->pool->stats.server_parse_count++;
		return SB_CONSUMED;
	}
	return SB_FORWARD;
}

static SbufAction server_handle_ready(Server *s, Client *c, const uint8_t *pkt)
{
	Pool *p = s->pool;
	usec_t now = get_cached_time();
	int mode;

	s->tx_state = c->tx_state = pkt[5];
	if (c->expected_z)
		c->expected_z--;
	p->stats.query_count++;
	if (c->query_start) {
		p->stats.query_time += (uint64_t)(now - c->query_start);
		c->query_start = 0;
	}
	if (s->tx_state != 'I')
		return SB_FORWARD;
	if (c->xact_start) {
		p->stats.xact_count++;
		p->stats.xact_time += (uint64_t)(now - c->xact_start);
		c->xact_start = 0;
	}
	mode = pool_effective_mode(p);
	if (mode == POOL_SESSION || c->expected_z || c->ext_open ||
	    (s->ps_on && !ps_queue_empty(s->ps)))
		return SB_FORWARD;
	return SB_FORWARD_STOP;
}

/* Can clients of this pool reach statements pgpilot prepared on its servers? */
static inline bool server_shares_statements(const Server *s)
{
	return cfg->max_prepared_statements > 0 && pool_effective_mode(s->pool) != POOL_SESSION;
}

/*
 * SQL-level PREPARE or DEALLOCATE on a shared server may have dropped or replaced a statement
 * pgpilot prepared there (its names can be read from pg_prepared_statements), and an error
 * saying a statement is missing or already there means pgpilot's picture of the server is
 * wrong: either way the server must not serve another client, whose statement could run
 * someone else's SQL. It is closed when released.
 */
static void server_distrust_statements(Server *s, const char *why)
{
	if (s->close_needed)
		return;
	s->close_needed = true;
	slog_server(LOG_LVL_INFO, s, "%s: the server will be closed when released", why);
}

static void server_note_command_tag(Server *s, const uint8_t *pkt, uint32_t total)
{
	if (total > 5 && ps_tag_names_statement((const char *)pkt + 5, total - 5))
		server_distrust_statements(s, "SQL PREPARE or DEALLOCATE ran on a shared server");
}

static void server_note_statement_error(Server *s, const uint8_t *pkt, uint32_t total)
{
	char sqlstate[6], msg[300];

	if (!s->ps || !s->ps->count)
		return;
	error_fields(pkt, total, sqlstate, msg, sizeof(msg));
	/* 26000 invalid_sql_statement_name, 42P05 duplicate_prepared_statement */
	if (strcmp(sqlstate, "26000") == 0 || strcmp(sqlstate, "42P05") == 0)
		server_distrust_statements(s, "the server's prepared statements differ from pgpilot's");
}

static SbufAction server_packet_cb(Sbuf *sb, uint8_t type, uint32_t total, const uint8_t *pkt,
				   uint32_t avail)
{
	Server *s = (Server *)sb;
	Client *c = s->link;

	if (unlikely(s->state == SV_LOGIN && !s->ready))
		return server_handle_login(s, type, total, pkt, avail);
	if (unlikely(s->skip_z))
		return server_handle_own_reply(s, type, total, pkt, avail);
	if (unlikely(!c)) {
		/* an idle server speaks: a notice or an error before it goes away */
		if (type == 'E' && avail >= total) {
			char sqlstate[6], msg[300];
			error_fields(pkt, total, sqlstate, msg, sizeof(msg));
			disconnect_server(s, "server error while idle: %s", msg);
			return SB_CLOSED;
		}
		if (type == 'S' && avail < total)
			return SB_NEED_FULL;
		if (type == 'S')
			server_note_parameter(s, pkt, total, false);
		return SB_CONSUMED;
	}
	if (s->ps_on && !ps_queue_empty(s->ps)) {
		SbufAction act = server_ps_reply(s, c, type, total, pkt, avail);

		if (act != SB_FORWARD)
			return act;
	} else if (unlikely(type == 'C' && !s->ps_on && s->ps && s->ps->count > 0)) {
		/* an untracked client may still drop every statement the server holds */
		if (avail < total)
			return SB_NEED_FULL;
		if (total > 5 && ps_tag_drops_all((const char *)pkt + 5, total - 5))
			ps_server_forget_all(s->ps);
	}
	switch (type) {
	case 'Z':
		if (avail < total)
			return SB_NEED_FULL;
		if (total != 6) {
			disconnect_server(s, "invalid ReadyForQuery message");
			return SB_CLOSED;
		}
		if (pool_effective_mode(s->pool) == POOL_STATEMENT && pkt[5] != 'I') {
			disconnect_client(c, "08P01", "transaction blocks not allowed in statement pooling mode");
			return s->state == SV_JUSTFREE ? SB_CLOSED : SB_CONSUMED;
		}
		return server_handle_ready(s, c, pkt);
	case 'S':
		if (avail < total)
			return SB_NEED_FULL;
		server_note_parameter(s, pkt, total, false);
		return SB_FORWARD;
	case 'C':
		if (unlikely(server_shares_statements(s))) {
			if (avail < total)
				return SB_NEED_FULL;
			server_note_command_tag(s, pkt, total);
		}
		return SB_FORWARD;
	case 'E':
		if (avail < total)
			return SB_NEED_FULL;
		server_note_statement_error(s, pkt, total);
		/* a FATAL error ends the server, not the client: keep it for the 08006 message */
		if (error_is_fatal(pkt, total)) {
			char sqlstate[6], msg[300];

			error_fields(pkt, total, sqlstate, msg, sizeof(msg));
			free(s->fatal_msg);
			s->fatal_msg = strdup(msg);
			return SB_CONSUMED;
		}
		return SB_FORWARD;
	case '1':
		s->pool->stats.server_parse_count++;
		return SB_FORWARD;
	default:
		return SB_FORWARD;
	}
}

static void server_flushed_cb(Sbuf *sb)
{
	Server *s = (Server *)sb;
	Client *c = s->link;

	/* pooler answers waiting for the replies before them */
	if (c && s->ps_on && ps_queue_head_synth(s->ps) && !server_ps_emit(s))
		return;
	c = s->link;
	/* the ReadyForQuery that ends the transaction has reached the client */
	if (!c || s->tx_state != 'I' || c->expected_z || c->ext_open || s->skip_z ||
	    (s->ps_on && !ps_queue_empty(s->ps)))
		return;
	pool_release_server(s);
	if (c->state == CL_ACTIVE && sbuf_has_input(&c->sbuf))
		sbuf_continue(&c->sbuf);
}

/* The socket is closed for good: the backend's statements went with it. */
static void server_release_cb(Sbuf *sb)
{
	Server *s = (Server *)sb;

	ps_server_free(s->ps);
	s->ps = NULL;
	s->ps_on = false;
}

static void server_close_cb(Sbuf *sb, const char *reason)
{
	Server *s = (Server *)sb;

	if (!s->ready) {
		char msg[300];

		snprintf(msg, sizeof(msg), "could not connect to server: %s", reason);
		s->pool->last_connect_failed_time = get_cached_time();
		server_login_failed(s->pool, "08001", msg);
		disconnect_server(s, "%s", msg);
		return;
	}
	if (s->fatal_msg)
		disconnect_server(s, "%s", s->fatal_msg);
	else
		disconnect_server(s, "server closed the connection: %s", reason);
}

/* --- cancel --- */

typedef struct CancelReq {
	struct event *ev;
	int fd;
	uint8_t pkt[16];
} CancelReq;

static void cancel_write_cb(evutil_socket_t fd, short what, void *arg)
{
	CancelReq *cr = arg;
	ssize_t n = send(fd, cr->pkt, sizeof(cr->pkt), MSG_NOSIGNAL);

	if (n != (ssize_t)sizeof(cr->pkt))
		log_warning("could not send cancel request: %s", n < 0 ? strerror(errno) : "short write");
	event_free(cr->ev);
	close(cr->fd);
	free(cr);
}

void server_send_cancel(const Server *s)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	CancelReq *cr;

	if (!server_sockaddr(s, &ss, &slen))
		return;
	cr = calloc(1, sizeof(*cr));
	if (!cr)
		return;
	put_be32(cr->pkt, 16);
	put_be32(cr->pkt + 4, PROTO_CANCEL);
	put_be32(cr->pkt + 8, s->backend_pid);
	put_be32(cr->pkt + 12, s->backend_key);
	cr->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cr->fd < 0 || (connect(cr->fd, (struct sockaddr *)&ss, slen) < 0 && errno != EINPROGRESS)) {
		log_warning("could not connect to send a cancel request: %s", strerror(errno));
		if (cr->fd >= 0)
			close(cr->fd);
		free(cr);
		return;
	}
	cr->ev = event_new(pooler_base, cr->fd, EV_WRITE, cancel_write_cb, cr);
	if (!cr->ev || event_add(cr->ev, NULL) < 0) {
		if (cr->ev)
			event_free(cr->ev);
		close(cr->fd);
		free(cr);
	}
}
