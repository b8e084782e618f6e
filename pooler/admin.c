/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The admin console. admin_parse() cuts a query into verb, object and argument; a table maps
 * them to a handler and says whether admin_users power is needed. SHOW handlers fill a result
 * set (RowDescription, DataRows, CommandComplete, ReadyForQuery) with PgBouncer's column names,
 * order and value formats. PAUSE and WAIT_CLOSE answer only when the pools are quiet: such
 * clients wait on a small list that admin_janitor() checks.
 *
 * Interface: admin_handle_query, admin_janitor, admin_client_gone, admin_set_show_provider,
 * admin_cleanup.
 */
#include "pooler/admin.h"
#include "pooler/routing.h"
#include "pooler/admin_parse.h"
#include "pooler/client.h"
#include "pooler/control.h"
#include "pooler/pool.h"
#include "pooler/slab.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#ifndef PGPILOT_VERSION
#define PGPILOT_VERSION "unknown"
#endif

/* Type OIDs of result columns, as PgBouncer declares them. */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
#define OID_NUMERIC 1700

#define MAX_COLS 32
#define CELL_LEN 48

typedef struct Column {
	const char *name;
	uint32_t oid;
} Column;

/* One DataRow being filled: values point into cells or at strings that outlive the row. */
typedef struct Row {
	int n;
	const char *val[MAX_COLS];
	char cell[MAX_COLS][CELL_LEN];
} Row;

/* A result set being built; sent whole by result_send(). */
typedef struct Result {
	PktBuf pb;
	int ncols;
	int nrows;
	bool bad_row; /* a handler filled a row with the wrong width: a bug, reported as an error */
} Result;

typedef enum ArgRule {
	ARG_NONE,	 /* no argument allowed */
	ARG_DB_OPTIONAL, /* [db]: NULL = every database */
	ARG_DB_REQUIRED, /* db */
	ARG_SET,	 /* SET key = value: checked by the handler */
} ArgRule;

typedef bool (*AdminFn)(Client *c, const AdminCmd *cmd, Database *db);

typedef struct AdminCommand {
	const char *verb;   /* upper case, as admin_parse() returns it */
	const char *object; /* SHOW's object (lower case); NULL for other verbs */
	AdminFn fn;
	bool needs_power;   /* admin_users only (stats_users may only SHOW) */
	ArgRule arg;
} AdminCommand;

typedef enum WaitKind {
	ADMIN_WAIT_PAUSE,
	ADMIN_WAIT_CLOSE,
} WaitKind;

/* An admin client whose PAUSE or WAIT_CLOSE is not answered yet. */
typedef struct Waiter {
	Client *c;
	uint32_t cancel_id; /* with the pointer, tells the same client from a reused slot */
	char *dbname; /* NULL = every database; looked up again at each check */
	WaitKind kind;
} Waiter;

static Waiter *waiters;
static int n_waiters, cap_waiters;

/* SHOW objects that other subsystems fill (cluster, ha, dns, dns_hosts). */
typedef struct Provider {
	const char *object;
	AdminShowProvider fn;
} Provider;

static Provider providers[8];
static int n_providers;

/* ---------------------------------------------------------------- rows and result sets */

static void row_reset(Row *r)
{
	r->n = 0;
}

/* <s> (NULL = SQL NULL) must stay valid until the row is written. */
static void row_str(Row *r, const char *s)
{
	if (r->n < MAX_COLS)
		r->val[r->n] = s;
	r->n++;
}

static void row_fmt(Row *r, const char *fmt, ...) _PRINTF(2, 3);
static void row_fmt(Row *r, const char *fmt, ...)
{
	va_list ap;

	if (r->n < MAX_COLS) {
		va_start(ap, fmt);
		vsnprintf(r->cell[r->n], CELL_LEN, fmt, ap);
		va_end(ap);
		r->val[r->n] = r->cell[r->n];
	}
	r->n++;
}

static void row_int(Row *r, long long v)
{
	row_fmt(r, "%lld", v);
}

static void row_u64(Row *r, uint64_t v)
{
	row_fmt(r, "%llu", (unsigned long long)v);
}

static void row_bool(Row *r, bool v)
{
	row_int(r, v ? 1 : 0);
}

static void result_begin(Result *res, const Column *cols, int ncols)
{
	const char *names[MAX_COLS];
	uint32_t oids[MAX_COLS];

	memset(res, 0, sizeof(*res));
	pktbuf_init(&res->pb, 4096);
	res->ncols = ncols;
	for (int i = 0; i < ncols && i < MAX_COLS; i++) {
		names[i] = cols[i].name;
		oids[i] = cols[i].oid;
	}
	pktbuf_write_row_description(&res->pb, ncols, names, oids);
}

static void result_row(Result *res, const Row *r)
{
	if (r->n != res->ncols) {
		res->bad_row = true;
		return;
	}
	pktbuf_write_data_row(&res->pb, r->n, r->val);
	res->nrows++;
}

static bool send_pktbuf(Client *c, PktBuf *pb)
{
	bool ok = client_send(c, pb->buf, pb->len);

	pktbuf_cleanup(pb);
	return ok;
}

static bool admin_error(Client *c, const char *sqlstate, const char *fmt, ...) _PRINTF(3, 4);

/* Finish with CommandComplete <tag> and ReadyForQuery, send, free. */
static bool result_send(Client *c, Result *res, const char *tag)
{
	if (res->bad_row || res->pb.failed) {
		bool bug = res->bad_row;

		pktbuf_cleanup(&res->pb);
		if (bug)
			return admin_error(c, "XX000",
					   "internal error: result row of the wrong width");
		return admin_error(c, "53200", "out of memory");
	}
	pktbuf_write_command_complete(&res->pb, tag);
	pktbuf_write_ready(&res->pb, 'I');
	c->tx_state = 'I';
	return send_pktbuf(c, &res->pb);
}

/* ---------------------------------------------------------------- replies */

static bool admin_error(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	PktBuf pb;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	slog_client(LOG_LVL_INFO, c, "admin command failed: %s", msg);
	pktbuf_init(&pb, 128 + strlen(msg));
	pktbuf_write_error(&pb, "ERROR", sqlstate, msg);
	pktbuf_write_ready(&pb, 'I');
	c->tx_state = 'I';
	if (pb.failed) {
		pktbuf_cleanup(&pb);
		disconnect_client(c, "53200", "out of memory");
		return false;
	}
	return send_pktbuf(c, &pb);
}

/* An optional NoticeResponse (<notice> NULL = none), CommandComplete <tag>, ReadyForQuery. */
static bool admin_ok(Client *c, const char *tag, const char *notice)
{
	PktBuf pb;

	pktbuf_init(&pb, 64 + strlen(tag) + (notice ? strlen(notice) + 32 : 0));
	if (notice)
		pktbuf_write_notice(&pb, "WARNING", "01000", notice);
	pktbuf_write_command_complete(&pb, tag);
	pktbuf_write_ready(&pb, 'I');
	c->tx_state = 'I';
	if (pb.failed) {
		pktbuf_cleanup(&pb);
		disconnect_client(c, "53200", "out of memory");
		return false;
	}
	return send_pktbuf(c, &pb);
}

/* ---------------------------------------------------------------- value formats */

/* "YYYY-MM-DD HH:MM:SS UTC", as PgBouncer prints connect_time and request_time. */
static const char *format_time(usec_t t, char *buf, size_t len)
{
	time_t secs = (time_t)(t / USEC);
	struct tm tm;

	if (t <= 0 || !gmtime_r(&secs, &tm)) {
		snprintf(buf, len, "%s", "");
		return buf;
	}
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

/* Host part of an address ("unix" for a unix socket, NULL when unknown). */
static const char *addr_host(const PgAddr *a, char *buf, size_t len)
{
	if (a->family == AF_UNIX)
		return "unix";
	if (a->family != AF_INET && a->family != AF_INET6)
		return NULL;
	return inet_ntop(a->family, a->addr, buf, (socklen_t)len);
}

/* Port of an address; unix sockets show the listen port, as PgBouncer does. */
static int addr_port(const PgAddr *a)
{
	return a->family == AF_UNIX ? cfg->listen_port : a->port;
}

/* The local end of a socket, asked from the kernel; family 0 when unknown. */
static void sock_local_addr(const Sbuf *sb, PgAddr *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	/* NEEDS-CORE: a Client.local_addr filled at accept (and Server.local_addr filled after
	 * connect) would save this system call per row. */
	memset(out, 0, sizeof(*out));
	if (sb->closed || sb->fd < 0 || getsockname(sb->fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

		out->family = AF_INET;
		out->port = ntohs(in->sin_port);
		memcpy(out->addr, &in->sin_addr, 4);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

		out->family = AF_INET6;
		out->port = ntohs(in6->sin6_port);
		memcpy(out->addr, &in6->sin6_addr, 16);
	} else if (ss.ss_family == AF_UNIX) {
		out->family = AF_UNIX;
	}
}

static const char *vars_app_name(const VarCache *vc)
{
	int idx = varcache_index("application_name");

	return idx >= 0 && vc->value[idx] ? vc->value[idx] : "";
}

static const char *mode_or_null(int mode)
{
	return mode == POOL_INHERIT ? NULL : pool_mode_name(mode);
}

/* A database known to the core (in use, not removed at RELOAD), or NULL. */
static Database *admin_find_database(const char *name)
{
	List *it;

	list_for_each(it, &all_databases) {
		Database *db = container_of(it, Database, head);

		if (!db->db_dead && strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

/*
 * The database an action names: one in use, or a [databases] entry of exactly that name that no
 * client has used yet (database_lookup() creates it). The "*" fallback never applies: an admin
 * command must not invent databases.
 */
static Database *admin_target_database(const char *name)
{
	Database *db = admin_find_database(name);
	const DatabaseCfg *dc;

	if (db)
		return db;
	dc = config_find_database(cfg, name);
	if (dc && strcmp(dc->name, name) == 0)
		return database_lookup(name);
	return NULL;
}

/* ---------------------------------------------------------------- SHOW HELP, VERSION, STATE */

static const char help_text[] = "\n"
				"\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
				"\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
				"\tSHOW DNS_HOSTS|DNS_ZONES|DNS\n"
				"\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
				"\tSHOW CLUSTER|HA\n"
				"\tSET key = arg\n"
				"\tRELOAD\n"
				"\tPAUSE [<db>]\n"
				"\tRESUME [<db>]\n"
				"\tDISABLE <db>\n"
				"\tENABLE <db>\n"
				"\tRECONNECT [<db>]\n"
				"\tKILL <db>\n"
				"\tSHUTDOWN\n"
				"\tWAIT_CLOSE [<db>]";

static bool show_help(Client *c, const AdminCmd *cmd, Database *db)
{
	PktBuf pb;

	pktbuf_init(&pb, 1024);
	pktbuf_start(&pb, 'N');
	pktbuf_put_u8(&pb, 'S');
	pktbuf_put_string(&pb, "NOTICE");
	pktbuf_put_u8(&pb, 'V');
	pktbuf_put_string(&pb, "NOTICE");
	pktbuf_put_u8(&pb, 'C');
	pktbuf_put_string(&pb, "00000");
	pktbuf_put_u8(&pb, 'M');
	pktbuf_put_string(&pb, "Console usage");
	pktbuf_put_u8(&pb, 'D');
	pktbuf_put_string(&pb, help_text);
	pktbuf_put_u8(&pb, 0);
	pktbuf_finish(&pb);
	pktbuf_write_command_complete(&pb, "SHOW");
	pktbuf_write_ready(&pb, 'I');
	if (pb.failed) {
		pktbuf_cleanup(&pb);
		return admin_error(c, "53200", "out of memory");
	}
	return send_pktbuf(c, &pb);
}

static bool show_version(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "version", OID_TEXT } };
	Result res;
	Row r;

	result_begin(&res, cols, ARRAY_SIZE(cols));
	row_reset(&r);
	row_str(&r, "pgpilot " PGPILOT_VERSION);
	result_row(&res, &r);
	return result_send(c, &res, "SHOW");
}

static void key_value_row(Result *res, const char *key, const char *value)
{
	Row r;

	row_reset(&r);
	row_str(&r, key);
	row_str(&r, value);
	result_row(res, &r);
}

static const Column key_value_cols[] = { { "key", OID_TEXT }, { "value", OID_TEXT } };

static bool show_state(Client *c, const AdminCmd *cmd, Database *db)
{
	Result res;

	result_begin(&res, key_value_cols, ARRAY_SIZE(key_value_cols));
	key_value_row(&res, "active", pooler_paused ? "no" : "yes");
	key_value_row(&res, "paused", pooler_paused ? "yes" : "no");
	key_value_row(&res, "suspended", "no"); /* SUSPEND is not implemented */
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- SHOW POOLS */

static const Column pool_cols[] = {
	{ "database", OID_TEXT },
	{ "user", OID_TEXT },
	{ "cl_active", OID_INT4 },
	{ "cl_waiting", OID_INT4 },
	{ "cl_active_cancel_req", OID_INT4 },
	{ "cl_waiting_cancel_req", OID_INT4 },
	{ "sv_active", OID_INT4 },
	{ "sv_active_cancel", OID_INT4 },
	{ "sv_being_canceled", OID_INT4 },
	{ "sv_idle", OID_INT4 },
	{ "sv_used", OID_INT4 },
	{ "sv_tested", OID_INT4 },
	{ "sv_login", OID_INT4 },
	{ "maxwait", OID_INT4 },
	{ "maxwait_us", OID_INT4 },
	{ "pool_mode", OID_TEXT },
};

/* How long the longest-waiting client of the pool has waited, in usec. */
static usec_t pool_max_wait(const Pool *p, usec_t now)
{
	usec_t maxwait = 0;
	List *it;

	list_for_each(it, &p->waiting_clients) {
		const Client *c = container_of(it, Client, head);

		if (c->state == CL_WAITING && c->request_time && now - c->request_time > maxwait)
			maxwait = now - c->request_time;
	}
	return maxwait;
}

static bool show_pools(Client *c, const AdminCmd *cmd, Database *db)
{
	usec_t now = get_cached_time();
	Result res;
	List *it;
	Row r;

	result_begin(&res, pool_cols, ARRAY_SIZE(pool_cols));
	list_for_each(it, &all_pools) {
		const Pool *p = container_of(it, Pool, head);
		usec_t wait = pool_max_wait(p, now);

		row_reset(&r);
		row_str(&r, p->db->name);
		row_str(&r, p->user->name);
		row_int(&r, p->n_active_clients);
		row_int(&r, p->n_waiting_clients);
		row_int(&r, 0); /* cancel requests are forwarded at once, never queued */
		row_int(&r, 0);
		row_int(&r, p->n_active_servers);
		row_int(&r, 0);
		row_int(&r, 0);
		row_int(&r, p->n_idle_servers);
		row_int(&r, p->n_used_servers);
		row_int(&r, p->n_tested_servers);
		row_int(&r, p->n_new_servers);
		row_int(&r, wait / USEC);
		row_int(&r, wait % USEC);
		row_str(&r, pool_mode_name(pool_effective_mode(p)));
		result_row(&res, &r);
	}
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- SHOW CLIENTS / SOCKETS */

static const Column socket_cols[] = {
	{ "type", OID_TEXT },
	{ "user", OID_TEXT },
	{ "database", OID_TEXT },
	{ "state", OID_TEXT },
	{ "addr", OID_TEXT },
	{ "port", OID_INT4 },
	{ "local_addr", OID_TEXT },
	{ "local_port", OID_INT4 },
	{ "connect_time", OID_TEXT },
	{ "request_time", OID_TEXT },
	{ "wait", OID_INT4 },
	{ "wait_us", OID_INT4 },
	{ "close_needed", OID_INT4 },
	{ "ptr", OID_TEXT },
	{ "link", OID_TEXT },
	{ "remote_pid", OID_INT4 },
	{ "tls", OID_TEXT },
	{ "application_name", OID_TEXT },
	/* SHOW SOCKETS / ACTIVE_SOCKETS only: */
	{ "recv_pos", OID_INT4 },
	{ "pkt_pos", OID_INT4 },
	{ "pkt_remain", OID_INT4 },
	{ "send_pos", OID_INT4 },
	{ "send_remain", OID_INT4 },
	{ "pkt_avail", OID_INT4 },
	{ "send_avail", OID_INT4 },
};
#define N_SOCKET_COLS_SHORT 18

/* What one row of SHOW CLIENTS / SERVERS / SOCKETS says about a connection. */
typedef struct SockInfo {
	char type; /* 'C' or 'S' */
	const char *user, *database, *state;
	const PgAddr *addr;
	PgAddr local;
	usec_t connect_time, request_time, wait;
	bool close_needed;
	const void *ptr, *link;
	uint32_t remote_pid;
	const char *app_name;
	const Sbuf *sbuf;
} SockInfo;

typedef enum SockView {
	VIEW_PLAIN,  /* SHOW CLIENTS / SERVERS */
	VIEW_ALL,    /* SHOW SOCKETS: plus buffer columns, state prefixed cl_ / sv_ */
	VIEW_ACTIVE, /* SHOW ACTIVE_SOCKETS: the same, only sockets holding a buffer */
} SockView;

static void sock_buffer_cells(Row *r, const Sbuf *sb)
{
	const IoBuf *b = sb->buf;
	uint32_t outq = sb->outq ? sb->outq->len - sb->outq->pos : 0;

	row_int(r, b ? b->wpos : 0);		  /* recv_pos: end of received data */
	row_int(r, b ? b->scan : 0);		  /* pkt_pos: end of scanned data */
	row_int(r, sb->pkt_remain);		  /* pkt_remain: message bytes not received */
	row_int(r, b ? b->done : 0);		  /* send_pos: start of data not sent on */
	row_int(r, b ? b->scan - b->done : 0);	  /* send_remain: scanned, to send */
	row_int(r, b ? b->wpos - b->scan : 0);	  /* pkt_avail: received, not scanned */
	row_int(r, outq);			  /* send_avail: generated bytes queued */
}

static void sock_row(Result *res, const SockInfo *si, SockView view)
{
	char host[INET6_ADDRSTRLEN], lhost[INET6_ADDRSTRLEN], t1[40], t2[40], ptr[24], link[24];
	char state[32];
	const char *h;
	Row r;

	if (view == VIEW_ACTIVE && !si->sbuf->buf)
		return;
	if (view == VIEW_PLAIN)
		snprintf(state, sizeof(state), "%s", si->state);
	else
		snprintf(state, sizeof(state), "%s_%s", si->type == 'C' ? "cl" : "sv", si->state);
	snprintf(ptr, sizeof(ptr), "%p", si->ptr);
	if (si->link)
		snprintf(link, sizeof(link), "%p", si->link);
	else
		link[0] = '\0';
	row_reset(&r);
	row_fmt(&r, "%c", si->type);
	row_str(&r, si->user);
	row_str(&r, si->database);
	row_str(&r, state);
	h = addr_host(si->addr, host, sizeof(host));
	row_str(&r, h);
	row_int(&r, addr_port(si->addr));
	h = addr_host(&si->local, lhost, sizeof(lhost));
	row_str(&r, h);
	row_int(&r, si->local.family ? addr_port(&si->local) : 0);
	row_str(&r, format_time(si->connect_time, t1, sizeof(t1)));
	row_str(&r, format_time(si->request_time, t2, sizeof(t2)));
	row_int(&r, si->wait / USEC);
	row_int(&r, si->wait % USEC);
	row_bool(&r, si->close_needed);
	row_str(&r, ptr);
	row_str(&r, link);
	row_int(&r, si->remote_pid);
	row_str(&r, ""); /* tls: no TLS yet */
	row_str(&r, si->app_name);
	if (view != VIEW_PLAIN)
		sock_buffer_cells(&r, si->sbuf);
	result_row(res, &r);
}

static const char *client_state_label(const Client *c)
{
	switch (c->state) {
	case CL_LOGIN:
		return "login";
	case CL_WAITING:
	case CL_WAITING_LOGIN:
		return "waiting";
	case CL_ACTIVE:
		return "active";
	default:
		return client_state_name(c->state);
	}
}

/* PgBouncer calls a server that is still logging in "new". */
static const char *server_state_label(const Server *s)
{
	return s->state == SV_LOGIN ? "new" : server_state_name(s->state);
}

static void client_row(Result *res, const Client *c, SockView view, usec_t now)
{
	SockInfo si = { .type = 'C' };

	/* NEEDS-CORE: the pool's user is the login user of its servers; with a forced user= the
	 * client's own name is lost after login. A Client.user (User *) would let SHOW CLIENTS
	 * report the name the client logged in with, as PgBouncer does. */
	si.user = c->user ? c->user->name : (c->login ? c->login->user : NULL);
	si.database = c->pool ? c->pool->db->name : (c->login ? c->login->database : NULL);
	si.state = client_state_label(c);
	si.addr = &c->addr;
	sock_local_addr(&c->sbuf, &si.local);
	si.connect_time = c->connect_time;
	si.request_time = c->request_time ? c->request_time
			  : c->query_start ? c->query_start
					   : c->connect_time;
	si.wait = c->state == CL_WAITING && c->request_time ? now - c->request_time : 0;
	si.ptr = c;
	si.link = c->link;
	si.app_name = vars_app_name(&c->vars);
	si.sbuf = &c->sbuf;
	sock_row(res, &si, view);
}

static void server_row(Result *res, const Server *s, SockView view)
{
	SockInfo si = { .type = 'S' };

	si.user = s->pool->user->name;
	si.database = s->pool->db->name;
	si.state = server_state_label(s);
	si.addr = &s->addr;
	si.local = s->local_addr;
	if (!si.local.family)
		sock_local_addr(&s->sbuf, &si.local);
	si.connect_time = s->connect_time;
	si.request_time = s->request_time ? s->request_time : s->connect_time;
	si.close_needed = s->close_needed;
	si.ptr = s;
	si.link = s->link;
	si.remote_pid = s->backend_pid;
	si.app_name = vars_app_name(&s->vars);
	si.sbuf = &s->sbuf;
	sock_row(res, &si, view);
}

static void client_list_rows(Result *res, const List *l, SockView view, usec_t now)
{
	List *it;

	list_for_each(it, l)
		client_row(res, container_of(it, Client, head), view, now);
}

static void all_client_rows(Result *res, SockView view)
{
	usec_t now = get_cached_time();
	List *it;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);

		client_list_rows(res, &p->active_clients, view, now);
		client_list_rows(res, &p->waiting_clients, view, now);
	}
	client_list_rows(res, &login_clients, view, now);
}

static void all_server_rows(Result *res, SockView view)
{
	List *it, *sit;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		const List *lists[] = { &p->active_servers, &p->idle_servers, &p->used_servers,
					&p->tested_servers, &p->new_servers };

		for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
			list_for_each(sit, lists[i])
				server_row(res, container_of(sit, Server, head), view);
	}
}

static bool show_clients(Client *c, const AdminCmd *cmd, Database *db)
{
	Result res;

	result_begin(&res, socket_cols, N_SOCKET_COLS_SHORT);
	all_client_rows(&res, VIEW_PLAIN);
	return result_send(c, &res, "SHOW");
}

static bool show_servers(Client *c, const AdminCmd *cmd, Database *db)
{
	Result res;

	result_begin(&res, socket_cols, N_SOCKET_COLS_SHORT);
	all_server_rows(&res, VIEW_PLAIN);
	return result_send(c, &res, "SHOW");
}

static bool show_sockets_view(Client *c, SockView view)
{
	Result res;

	result_begin(&res, socket_cols, ARRAY_SIZE(socket_cols));
	all_client_rows(&res, view);
	all_server_rows(&res, view);
	return result_send(c, &res, "SHOW");
}

static bool show_sockets(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_sockets_view(c, VIEW_ALL);
}

static bool show_active_sockets(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_sockets_view(c, VIEW_ACTIVE);
}

/* ---------------------------------------------------------------- statistics */

/* Totals and averages of a set of pools (one database, or all when db is NULL). */
typedef struct StatSum {
	PoolStats total;
	PoolStats avg;
	int npools;
} StatSum;

/*
 * Counts and bytes add up across pools. The average durations (avg.xact_time, avg.query_time)
 * are per transaction / per query, so they are weighted by each pool's average count; wait time
 * is per second and adds up.
 */
static void stat_sum(const Database *db, StatSum *sum)
{
	uint64_t xact_weighted = 0, query_weighted = 0;
	List *it;

	memset(sum, 0, sizeof(*sum));
	list_for_each(it, &all_pools) {
		const Pool *p = container_of(it, Pool, head);
		const PoolStats *t = &p->stats, *a = &p->avg;

		if (db && p->db != db)
			continue;
		sum->npools++;
		sum->total.xact_count += t->xact_count;
		sum->total.query_count += t->query_count;
		sum->total.bytes_recv += t->bytes_recv;
		sum->total.bytes_sent += t->bytes_sent;
		sum->total.xact_time += t->xact_time;
		sum->total.query_time += t->query_time;
		sum->total.wait_time += t->wait_time;
		sum->avg.xact_count += a->xact_count;
		sum->avg.query_count += a->query_count;
		sum->avg.bytes_recv += a->bytes_recv;
		sum->avg.bytes_sent += a->bytes_sent;
		sum->avg.wait_time += a->wait_time;
		xact_weighted += a->xact_time * a->xact_count;
		query_weighted += a->query_time * a->query_count;
	}
	sum->avg.xact_time = sum->avg.xact_count ? xact_weighted / sum->avg.xact_count : 0;
	sum->avg.query_time = sum->avg.query_count ? query_weighted / sum->avg.query_count : 0;
}

/* The seven counters in PgBouncer's order: xact, query, received, sent, xact/query/wait time. */
static void stat_cells(Row *r, const PoolStats *s)
{
	row_u64(r, s->xact_count);
	row_u64(r, s->query_count);
	row_u64(r, s->bytes_recv);
	row_u64(r, s->bytes_sent);
	row_u64(r, s->xact_time);
	row_u64(r, s->query_time);
	row_u64(r, s->wait_time);
}

typedef enum StatView {
	STAT_BOTH,   /* SHOW STATS */
	STAT_TOTALS, /* SHOW STATS_TOTALS */
	STAT_AVG,    /* SHOW STATS_AVERAGES */
} StatView;

static const Column stats_cols[] = {
	{ "database", OID_TEXT },
	{ "total_xact_count", OID_NUMERIC },
	{ "total_query_count", OID_NUMERIC },
	{ "total_received", OID_NUMERIC },
	{ "total_sent", OID_NUMERIC },
	{ "total_xact_time", OID_NUMERIC },
	{ "total_query_time", OID_NUMERIC },
	{ "total_wait_time", OID_NUMERIC },
	{ "avg_xact_count", OID_NUMERIC },
	{ "avg_query_count", OID_NUMERIC },
	{ "avg_recv", OID_NUMERIC },
	{ "avg_sent", OID_NUMERIC },
	{ "avg_xact_time", OID_NUMERIC },
	{ "avg_query_time", OID_NUMERIC },
	{ "avg_wait_time", OID_NUMERIC },
};

static const Column stats_part_cols[] = {
	{ "database", OID_TEXT },
	{ "xact_count", OID_NUMERIC },
	{ "query_count", OID_NUMERIC },
	{ "bytes_received", OID_NUMERIC },
	{ "bytes_sent", OID_NUMERIC },
	{ "xact_time", OID_NUMERIC },
	{ "query_time", OID_NUMERIC },
	{ "wait_time", OID_NUMERIC },
};

/* One row per database that has at least one pool, as PgBouncer lists them. */
static bool show_stats_view(Client *c, StatView view)
{
	Result res;
	StatSum sum;
	List *it;
	Row r;

	if (view == STAT_BOTH)
		result_begin(&res, stats_cols, ARRAY_SIZE(stats_cols));
	else
		result_begin(&res, stats_part_cols, ARRAY_SIZE(stats_part_cols));
	list_for_each(it, &all_databases) {
		const Database *db = container_of(it, Database, head);

		stat_sum(db, &sum);
		if (sum.npools == 0)
			continue;
		row_reset(&r);
		row_str(&r, db->name);
		if (view != STAT_AVG)
			stat_cells(&r, &sum.total);
		if (view != STAT_TOTALS)
			stat_cells(&r, &sum.avg);
		result_row(&res, &r);
	}
	return result_send(c, &res, "SHOW");
}

static bool show_stats(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_stats_view(c, STAT_BOTH);
}

static bool show_stats_totals(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_stats_view(c, STAT_TOTALS);
}

static bool show_stats_averages(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_stats_view(c, STAT_AVG);
}

static void name_value_u64(Result *res, const char *prefix, const char *name, uint64_t v)
{
	char key[64];
	Row r;

	snprintf(key, sizeof(key), "%s_%s", prefix, name);
	row_reset(&r);
	row_str(&r, key);
	row_u64(&r, v);
	result_row(res, &r);
}

static void totals_rows(Result *res, const char *prefix, const PoolStats *s)
{
	name_value_u64(res, prefix, "xact_count", s->xact_count);
	name_value_u64(res, prefix, "query_count", s->query_count);
	name_value_u64(res, prefix, "client_bytes", s->bytes_recv);
	name_value_u64(res, prefix, "server_bytes", s->bytes_sent);
	name_value_u64(res, prefix, "xact_time", s->xact_time);
	name_value_u64(res, prefix, "query_time", s->query_time);
	name_value_u64(res, prefix, "wait_time", s->wait_time);
}

static bool show_totals(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "name", OID_TEXT }, { "value", OID_NUMERIC } };
	Result res;
	StatSum sum;

	stat_sum(NULL, &sum);
	result_begin(&res, cols, ARRAY_SIZE(cols));
	totals_rows(&res, "total", &sum.total);
	totals_rows(&res, "avg", &sum.avg);
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- SHOW DATABASES / USERS */

static const Column database_cols[] = {
	{ "name", OID_TEXT },
	{ "host", OID_TEXT },
	{ "port", OID_INT4 },
	{ "database", OID_TEXT },
	{ "force_user", OID_TEXT },
	{ "pool_size", OID_INT4 },
	{ "min_pool_size", OID_INT4 },
	{ "reserve_pool", OID_INT4 },
	{ "pool_mode", OID_TEXT },
	{ "max_connections", OID_INT4 },
	{ "current_connections", OID_INT4 },
	{ "paused", OID_INT4 },
	{ "disabled", OID_INT4 },
};

/* A per-database setting, or the global one when the entry leaves it unset (-1). */
static int db_setting(int own, int global)
{
	return own >= 0 ? own : global;
}

/* One row; <db> is NULL for a configured entry that no client has used yet. */
static void database_row(Result *res, const char *name, const DatabaseCfg *dc, const Database *db)
{
	bool admin = db && db->admin;
	Row r;

	row_reset(&r);
	row_str(&r, name);
	row_str(&r, admin ? NULL : dc->host);
	row_int(&r, admin ? cfg->listen_port : dc->port);
	row_str(&r, dc->dbname ? dc->dbname : name);
	row_str(&r, dc->user);
	row_int(&r, admin ? dc->pool_size : db_setting(dc->pool_size, cfg->default_pool_size));
	row_int(&r, admin ? 0 : db_setting(dc->min_pool_size, cfg->min_pool_size));
	row_int(&r, admin ? 0 : db_setting(dc->reserve_pool, cfg->reserve_pool_size));
	row_str(&r, mode_or_null(dc->pool_mode));
	row_int(&r, admin ? 0 : db_setting(dc->max_db_connections, cfg->max_db_connections));
	row_int(&r, db ? db->server_count : 0);
	row_bool(&r, db && db->paused);
	row_bool(&r, db && db->disabled);
	result_row(res, &r);
}

/* Databases in use first, then [databases] entries not used yet (the core creates them at the
 * first login); the "*" fallback entry is not a database. */
static bool show_databases(Client *c, const AdminCmd *cmd, Database *unused)
{
	Result res;
	List *it;

	result_begin(&res, database_cols, ARRAY_SIZE(database_cols));
	list_for_each(it, &all_databases) {
		const Database *db = container_of(it, Database, head);

		if (!db->db_dead)
			database_row(&res, db->name, &db->cfg, db);
	}
	for (int i = 0; i < cfg->n_databases; i++) {
		const DatabaseCfg *dc = &cfg->databases[i];

		if (strcmp(dc->name, "*") != 0 && !admin_find_database(dc->name))
			database_row(&res, dc->name, dc, NULL);
	}
	return result_send(c, &res, "SHOW");
}

static bool show_users(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "name", OID_TEXT }, { "pool_mode", OID_TEXT } };
	Result res;
	List *it;
	Row r;

	result_begin(&res, cols, ARRAY_SIZE(cols));
	list_for_each(it, &all_users) {
		const User *u = container_of(it, User, head);

		row_reset(&r);
		row_str(&r, u->name);
		row_str(&r, mode_or_null(u->pool_mode));
		result_row(&res, &r);
	}
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- SHOW CONFIG */

static int option_cmp(const void *a, const void *b)
{
	const ConfigOption *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* The default as the table gives it; an absent default is the empty string or zero. */
static const char *option_default(const ConfigOption *opt)
{
	if (opt->defval)
		return opt->defval;
	return opt->type == OPT_STRING ? "" : "0";
}

static bool show_config(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "key", OID_TEXT },
				       { "value", OID_TEXT },
				       { "default", OID_TEXT },
				       { "changeable", OID_TEXT } };
	const ConfigOption **opts;
	char value[4096];
	size_t n = 0;
	Result res;
	Row r;

	while (config_options[n].name)
		n++;
	opts = calloc(n ? n : 1, sizeof(*opts));
	if (!opts)
		return admin_error(c, "53200", "out of memory");
	for (size_t i = 0; i < n; i++)
		opts[i] = &config_options[i];
	/* alphabetical, as PgBouncer lists them */
	qsort(opts, n, sizeof(*opts), option_cmp);
	result_begin(&res, cols, ARRAY_SIZE(cols));
	for (size_t i = 0; i < n; i++) {
		row_reset(&r);
		row_str(&r, opts[i]->name);
		row_str(&r, config_format_option(cfg, opts[i], value, sizeof(value)));
		row_str(&r, option_default(opts[i]));
		row_str(&r, opts[i]->reloadable ? "yes" : "no");
		result_row(&res, &r); /* written now: value[] is reused by the next row */
	}
	free(opts);
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- SHOW LISTS / MEM / FDS */

typedef struct SlabInfo {
	char name[32];
	size_t size, used, free_cnt, memtotal;
} SlabInfo;

typedef struct SlabInfoList {
	SlabInfo items[16];
	int n;
} SlabInfoList;

static void slab_collect_cb(void *arg, const char *name, size_t size, size_t used, size_t free_cnt,
			    size_t memtotal)
{
	SlabInfoList *l = arg;
	SlabInfo *si;

	if (l->n >= (int)ARRAY_SIZE(l->items))
		return;
	si = &l->items[l->n++];
	snprintf(si->name, sizeof(si->name), "%s", name);
	si->size = size;
	si->used = used;
	si->free_cnt = free_cnt;
	si->memtotal = memtotal;
}

static const SlabInfo *slab_find(const SlabInfoList *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->items[i].name, name) == 0)
			return &l->items[i];
	return NULL;
}

static int list_count(const List *l)
{
	int n = 0;
	List *it;

	list_for_each(it, l)
		n++;
	return n;
}

static void list_row(Result *res, const char *name, long long items)
{
	Row r;

	row_reset(&r);
	row_str(&r, name);
	row_int(&r, items);
	result_row(res, &r);
}

static bool show_lists(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "list", OID_TEXT }, { "items", OID_INT4 } };
	SlabInfoList slabs = { .n = 0 };
	const SlabInfo *cl, *sv;
	Result res;

	slab_stats(slab_collect_cb, &slabs);
	cl = slab_find(&slabs, "client");
	sv = slab_find(&slabs, "server");
	result_begin(&res, cols, ARRAY_SIZE(cols));
	list_row(&res, "databases", list_count(&all_databases));
	list_row(&res, "users", list_count(&all_users));
	list_row(&res, "pools", list_count(&all_pools));
	list_row(&res, "free_clients", cl ? (long long)cl->free_cnt : 0);
	list_row(&res, "used_clients", n_clients_total);
	list_row(&res, "login_clients", list_count(&login_clients));
	list_row(&res, "free_servers", sv ? (long long)sv->free_cnt : 0);
	list_row(&res, "used_servers", n_servers_total);
	/* NEEDS-CORE: DNS cache counters from dns/ (names, zones, queries, pending); 0 for now */
	list_row(&res, "dns_names", 0);
	list_row(&res, "dns_zones", 0);
	list_row(&res, "dns_queries", 0);
	list_row(&res, "dns_pending", 0);
	return result_send(c, &res, "SHOW");
}

static bool show_mem(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = { { "name", OID_TEXT },
				       { "size", OID_INT4 },
				       { "used", OID_INT4 },
				       { "free", OID_INT4 },
				       { "memtotal", OID_INT4 } };
	SlabInfoList slabs = { .n = 0 };
	Result res;
	Row r;

	slab_stats(slab_collect_cb, &slabs);
	result_begin(&res, cols, ARRAY_SIZE(cols));
	for (int i = 0; i < slabs.n; i++) {
		const SlabInfo *si = &slabs.items[i];

		row_reset(&r);
		row_fmt(&r, "%s_cache", si->name); /* PgBouncer's names: client_cache, ... */
		row_u64(&r, si->size);
		row_u64(&r, si->used);
		row_u64(&r, si->free_cnt);
		row_u64(&r, si->memtotal);
		result_row(&res, &r);
	}
	return result_send(c, &res, "SHOW");
}

/* SHOW FDS serves PgBouncer's online restart, which pgpilot does not do: no rows. */
static bool show_fds(Client *c, const AdminCmd *cmd, Database *db)
{
	static const Column cols[] = {
		{ "fd", OID_INT4 },
		{ "task", OID_TEXT },
		{ "user", OID_TEXT },
		{ "database", OID_TEXT },
		{ "addr", OID_TEXT },
		{ "port", OID_INT4 },
		{ "cancel", OID_INT8 },
		{ "link", OID_INT4 },
		{ "client_encoding", OID_TEXT },
		{ "std_strings", OID_TEXT },
		{ "datestyle", OID_TEXT },
		{ "timezone", OID_TEXT },
		{ "password", OID_TEXT },
		{ "scram_client_key", OID_BYTEA },
		{ "scram_server_key", OID_BYTEA },
	};
	Result res;

	result_begin(&res, cols, ARRAY_SIZE(cols));
	return result_send(c, &res, "SHOW");
}

/* ---------------------------------------------------------------- pgpilot's own SHOWs */

static const Column cluster_cols[] = {
	{ "name", OID_TEXT },
	{ "role", OID_TEXT },
	{ "state", OID_TEXT },
	{ "host", OID_TEXT },
	{ "port", OID_INT4 },
	{ "timeline", OID_INT8 },
	{ "lsn", OID_TEXT },
	{ "lag_bytes", OID_INT8 },
	{ "healthy", OID_TEXT },
	{ "tags", OID_TEXT },
	{ "lease_ttl_left", OID_TEXT },
	{ "note", OID_TEXT }, /* why a member may not be promoted; the cluster's note on row 1 */
};
static const Column dns_cols[] = {
	{ "record", OID_TEXT },
	{ "value", OID_TEXT },
	{ "time", OID_TEXT },
	{ "outcome", OID_TEXT },
	{ "attempts", OID_INT4 },
};
/* PgBouncer's three columns first, then pgpilot's last_error. */
static const Column dns_hosts_cols[] = {
	{ "hostname", OID_TEXT },
	{ "ttl", OID_INT8 },
	{ "addrs", OID_TEXT },
	{ "last_error", OID_TEXT },
};

/* PgBouncer's SHOW DNS_ZONES (zone serial polling), which pgpilot does not do: no rows. */
static const Column dns_zones_cols[] = {
	{ "zonename", OID_TEXT },
	{ "serial", OID_INT8 },
	{ "count", OID_INT4 },
};

static const Provider *provider_find(const char *object)
{
	for (int i = 0; i < n_providers; i++)
		if (strcmp(providers[i].object, object) == 0)
			return &providers[i];
	return NULL;
}

/* The emit function handed to providers: one DataRow per call. */
static void provider_emit(void *rs, int ncols, const char *const *values)
{
	Result *res = rs;
	Row r;

	row_reset(&r);
	for (int i = 0; i < ncols; i++)
		row_str(&r, values[i]);
	result_row(res, &r);
}

/* A SHOW whose rows come from a registered provider; <fallback> fills them when none is. */
static bool show_provided(Client *c, const char *object, const Column *cols, int ncols,
			  void (*fallback)(Result *res))
{
	const Provider *p = provider_find(object);
	Result res;

	result_begin(&res, cols, ncols);
	if (p)
		p->fn(provider_emit, &res, ncols);
	else if (fallback)
		fallback(&res);
	return result_send(c, &res, "SHOW");
}

static void ha_fallback(Result *res)
{
	key_value_row(res, "mode", "off");
}

static bool show_cluster(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_provided(c, "cluster", cluster_cols, ARRAY_SIZE(cluster_cols), NULL);
}

static bool show_ha(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_provided(c, "ha", key_value_cols, ARRAY_SIZE(key_value_cols), ha_fallback);
}

static bool show_dns(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_provided(c, "dns", dns_cols, ARRAY_SIZE(dns_cols), NULL);
}

static bool show_dns_hosts(Client *c, const AdminCmd *cmd, Database *db)
{
	return show_provided(c, "dns_hosts", dns_hosts_cols, ARRAY_SIZE(dns_hosts_cols), NULL);
}

static bool show_dns_zones(Client *c, const AdminCmd *cmd, Database *db)
{
	Result res;

	result_begin(&res, dns_zones_cols, ARRAY_SIZE(dns_zones_cols));
	return result_send(c, &res, "SHOW");
}

bool admin_set_show_provider(const char *object, AdminShowProvider fn)
{
	for (int i = 0; i < n_providers; i++) {
		if (strcmp(providers[i].object, object) == 0) {
			providers[i].fn = fn;
			return true;
		}
	}
	if (n_providers >= (int)ARRAY_SIZE(providers))
		return false;
	providers[n_providers].object = object;
	providers[n_providers].fn = fn;
	n_providers++;
	return true;
}

/* ---------------------------------------------------------------- waiting PAUSE / WAIT_CLOSE */

static bool waiter_add(Client *c, const Database *db, WaitKind kind)
{
	Waiter *w;

	if (n_waiters == cap_waiters) {
		int ncap = cap_waiters ? cap_waiters * 2 : 8;
		Waiter *nw = realloc(waiters, (size_t)ncap * sizeof(*nw));

		if (!nw)
			return false;
		waiters = nw;
		cap_waiters = ncap;
	}
	w = &waiters[n_waiters];
	w->c = c;
	w->cancel_id = c->cancel_id;
	w->kind = kind;
	w->dbname = NULL;
	if (db && !(w->dbname = strdup(db->name)))
		return false;
	n_waiters++;
	return true;
}

/* Is a reply to a PAUSE or WAIT_CLOSE of <c> still owed? */
static bool client_is_waiting(const Client *c)
{
	for (int i = 0; i < n_waiters; i++)
		if (waiters[i].c == c)
			return true;
	return false;
}

static void waiter_remove(int i)
{
	free(waiters[i].dbname);
	waiters[i] = waiters[--n_waiters];
}

/*
 * Is the waiting client still connected? admin_client_gone() normally takes closed clients off
 * the list; this check keeps a stale pointer from ever being used should a path miss it: the
 * client must still be on an admin pool's list, with the same cancel key.
 */
static bool waiter_alive(const Waiter *w)
{
	List *it, *cit;

	list_for_each(it, &all_pools) {
		const Pool *p = container_of(it, Pool, head);

		if (!p->db->admin)
			continue;
		list_for_each(cit, &p->active_clients) {
			const Client *c = container_of(cit, Client, head);

			if (c == w->c)
				return c->cancel_id == w->cancel_id && !c->sbuf.closed;
		}
	}
	return false;
}

static bool waiter_done(const Waiter *w)
{
	const Database *db = NULL;

	if (w->dbname) {
		db = admin_find_database(w->dbname);
		if (!db)
			return true; /* removed at RELOAD meanwhile: nothing left to wait for */
	}
	return w->kind == ADMIN_WAIT_PAUSE ? pools_quiet(db) : pools_wait_close_done(db);
}

/*
 * Answer a waiter that was taken off the list. The client may have queued more commands: they
 * are read again once the reply is out (see NEEDS-CORE in admin_handle_query).
 */
static void waiter_finish(Client *c, WaitKind kind)
{
	const char *tag = kind == ADMIN_WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE";

	if (!admin_ok(c, tag, NULL))
		return;
	if (c->sbuf.paused)
		sbuf_continue(&c->sbuf);
}

void admin_janitor(void)
{
	int i = 0;

	while (i < n_waiters) {
		Client *c;
		WaitKind kind;

		if (!waiter_alive(&waiters[i])) {
			waiter_remove(i);
			continue;
		}
		if (!waiter_done(&waiters[i])) {
			i++;
			continue;
		}
		c = waiters[i].c;
		kind = waiters[i].kind;
		waiter_remove(i);
		/* replying may close the client or run its next command, which both change the
		 * list: start over */
		waiter_finish(c, kind);
		i = 0;
	}
}

bool admin_is_waiting(const Client *c)
{
	return client_is_waiting(c);
}

void admin_client_gone(Client *c)
{
	for (int i = 0; i < n_waiters;) {
		if (waiters[i].c == c)
			waiter_remove(i);
		else
			i++;
	}
}

void admin_cleanup(void)
{
	while (n_waiters > 0)
		waiter_remove(n_waiters - 1);
	free(waiters);
	waiters = NULL;
	cap_waiters = 0;
}

/* Answer now when the condition holds, else park the client until admin_janitor() sees it. */
static bool reply_or_wait(Client *c, Database *db, WaitKind kind)
{
	bool done = kind == ADMIN_WAIT_PAUSE ? pools_quiet(db) : pools_wait_close_done(db);

	if (done)
		return admin_ok(c, kind == ADMIN_WAIT_PAUSE ? "PAUSE" : "WAIT_CLOSE", NULL);
	if (!waiter_add(c, db, kind))
		return admin_error(c, "53200", "out of memory");
	return true;
}

/* ---------------------------------------------------------------- actions */

static void log_action(Client *c, const char *what, const Database *db)
{
	slog_client(LOG_LVL_INFO, c, "admin command: %s%s%s", what, db ? " " : "",
		    db ? db->name : "");
}

/* Actions that would stop the console itself refuse its own database. */
static bool refuse_admin_db(Client *c, const char *verb, const Database *db)
{
	return admin_error(c, "55000", "%s is not allowed on the admin database \"%s\"", verb,
			   db->name);
}

static bool cmd_reload(Client *c, const AdminCmd *cmd, Database *db)
{
	char err[1024] = "";

	log_action(c, "RELOAD", NULL);
	if (!pooler_reload(err, sizeof(err)))
		return admin_error(c, "F0000", "could not reload the configuration: %s",
				   err[0] ? err : "unknown error");
	return admin_ok(c, "RELOAD", NULL);
}

static bool cmd_pause(Client *c, const AdminCmd *cmd, Database *db)
{
	if (db && db->admin)
		return refuse_admin_db(c, "PAUSE", db);
	if (db ? db->paused : pooler_paused)
		return db ? admin_error(c, "55000", "database \"%s\" is already paused", db->name)
			  : admin_error(c, "55000", "pooler is already paused");
	log_action(c, "PAUSE", db);
	pooler_pause(db);
	return reply_or_wait(c, db, ADMIN_WAIT_PAUSE);
}

/* Is anything paused: the whole pooler or any one database (RESUME without a name undoes all)? */
static bool anything_paused(void)
{
	List *it;

	if (pooler_paused)
		return true;
	list_for_each(it, &all_databases)
		if (container_of(it, Database, head)->paused)
			return true;
	return false;
}

static bool cmd_resume(Client *c, const AdminCmd *cmd, Database *db)
{
	if (db ? !db->paused : !anything_paused())
		return db ? admin_error(c, "55000", "database \"%s\" is not paused", db->name)
			  : admin_error(c, "55000", "pooler is not paused");
	log_action(c, "RESUME", db);
	pooler_resume(db);
	return admin_ok(c, "RESUME", NULL);
}

/* KILL drops every connection of db and leaves it paused until RESUME, like PgBouncer. */
static bool cmd_kill(Client *c, const AdminCmd *cmd, Database *db)
{
	if (db && db->admin)
		return refuse_admin_db(c, "KILL", db);
	log_action(c, "KILL", db);
	if (!db->paused)
		pooler_pause(db);
	pools_kill(db);
	return admin_ok(c, "KILL", NULL);
}

static bool cmd_reconnect(Client *c, const AdminCmd *cmd, Database *db)
{
	log_action(c, "RECONNECT", db);
	pools_reconnect(db);
	return admin_ok(c, "RECONNECT", NULL);
}

static bool cmd_disable(Client *c, const AdminCmd *cmd, Database *db)
{
	if (db && db->admin)
		return refuse_admin_db(c, "DISABLE", db);
	log_action(c, "DISABLE", db);
	db->disabled = true;
	return admin_ok(c, "DISABLE", NULL);
}

static bool cmd_enable(Client *c, const AdminCmd *cmd, Database *db)
{
	log_action(c, "ENABLE", db);
	db->disabled = false;
	return admin_ok(c, "ENABLE", NULL);
}

static bool cmd_wait_close(Client *c, const AdminCmd *cmd, Database *db)
{
	log_action(c, "WAIT_CLOSE", db);
	return reply_or_wait(c, db, ADMIN_WAIT_CLOSE);
}

/* The reply goes out first: a fast shutdown lets queued output drain before the exit. */
static bool cmd_shutdown(Client *c, const AdminCmd *cmd, Database *db)
{
	log_action(c, "SHUTDOWN", NULL);
	if (!admin_ok(c, "SHUTDOWN", NULL))
		return false;
	pooler_shutdown(SHUTDOWN_FAST);
	return !c->sbuf.closed;
}

static bool cmd_suspend(Client *c, const AdminCmd *cmd, Database *db)
{
	return admin_error(c, "0A000", "SUSPEND is not supported (pgpilot has no online restart)");
}

/*
 * SET key = value on the live configuration, for reloadable options only. The reply tag is
 * PgBouncer's "SET key=value", with the value as it now reads back.
 * NEEDS-CORE: options with side effects (logfile, syslog*, verbose, track_extra_parameters,
 * tcp_keep*) take effect only where the core reads cfg again; a pooler_option_changed(opt)
 * hook in main.c, called here, could reopen logs or re-run varcache_set_tracked().
 */
/*
 * Options that decide who gets in, with which powers, and what is logged or encrypted: a change
 * from the console is logged as a WARNING with who made it and the old and new values, so that
 * it stands out in the log (a RELOAD is an operator's act on the file; SET is a live session's).
 */
static bool is_security_option(const char *name)
{
	static const char *const names[] = {
		"auth_type",	      "auth_file",	   "admin_users",	 "stats_users",
		"logfile",	      "syslog",		   "syslog_ident",	 "syslog_facility",
		"log_connections",    "log_disconnections", "log_pooler_errors", "client_tls_sslmode",
		"server_tls_sslmode",
	};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static bool cmd_set(Client *c, const AdminCmd *cmd, Database *db)
{
	const ConfigOption *opt = config_find_option(cmd->object);
	char err[512] = "", value[1024], old[1024], tag[1200], abuf[64];

	if (!opt)
		return admin_error(c, "42704", "unrecognized configuration parameter \"%s\"",
				   cmd->object);
	if (!opt->reloadable)
		return admin_error(c, "55P02",
				   "parameter \"%s\" cannot be changed without restarting pgpilot",
				   opt->name);
	config_format_option(cfg, opt, old, sizeof(old));
	if (!config_set_option(cfg, opt, cmd->arg, err, sizeof(err)))
		return admin_error(c, "22023", "%s",
				   err[0] ? err : "invalid value for the parameter");
	config_format_option(cfg, opt, value, sizeof(value));
	slog_client(LOG_LVL_INFO, c, "admin command: SET %s = '%s'", opt->name, value);
	if (is_security_option(opt->name))
		log_warning("security setting %s changed from '%s' to '%s' by admin user \"%s\" from "
			    "%s on the admin console",
			    opt->name, old, value, c->user ? c->user->name : "?",
			    pgaddr_str(&c->addr, abuf, sizeof(abuf)));
	snprintf(tag, sizeof(tag), "SET %s=%s", opt->name, value);
	return admin_ok(c, tag, err[0] ? err : NULL);
}

/* FAILOVER <member> [FORCE]: promote a member by hand (FORCE skips the lag check). */
static bool cmd_failover(Client *c, const AdminCmd *cmd, Database *db)
{
	char err[512] = "";
	bool force = false;

	if (!cmd->has_arg)
		return admin_error(c, "42601", "FAILOVER needs a member name");
	if (cmd->has_arg2) {
		if (strcmp(cmd->arg2, "FORCE") != 0)
			return admin_error(c, "42601", "unknown FAILOVER option \"%s\" (FORCE expected)",
					   cmd->arg2);
		force = true;
	}
	slog_client(LOG_LVL_INFO, c, "admin command: FAILOVER %s%s", cmd->arg, force ? " FORCE" : "");
	if (!routing_failover(cmd->arg, force, err, sizeof(err)))
		return admin_error(c, "55000", "%s", err);
	return admin_ok(c, "FAILOVER", NULL);
}

/* MAINTENANCE ON|OFF: automatic failover off or on, cluster-wide. */
static bool cmd_maintenance(Client *c, const AdminCmd *cmd, Database *db)
{
	char err[512] = "";
	bool on;

	if (!cmd->has_arg)
		return admin_error(c, "42601", "MAINTENANCE needs ON or OFF");
	if (strcasecmp(cmd->arg, "on") == 0)
		on = true;
	else if (strcasecmp(cmd->arg, "off") == 0)
		on = false;
	else
		return admin_error(c, "42601", "MAINTENANCE needs ON or OFF, not \"%s\"", cmd->arg);
	slog_client(LOG_LVL_INFO, c, "admin command: MAINTENANCE %s", on ? "ON" : "OFF");
	if (!routing_maintenance(on, err, sizeof(err)))
		return admin_error(c, "55000", "%s", err);
	return admin_ok(c, "MAINTENANCE", NULL);
}

/* ---------------------------------------------------------------- dispatch */

static const AdminCommand commands[] = {
	{ "SHOW", "help", show_help, false, ARG_NONE },
	{ "SHOW", "pools", show_pools, false, ARG_NONE },
	{ "SHOW", "clients", show_clients, false, ARG_NONE },
	{ "SHOW", "servers", show_servers, false, ARG_NONE },
	{ "SHOW", "sockets", show_sockets, false, ARG_NONE },
	{ "SHOW", "active_sockets", show_active_sockets, false, ARG_NONE },
	{ "SHOW", "stats", show_stats, false, ARG_NONE },
	{ "SHOW", "stats_totals", show_stats_totals, false, ARG_NONE },
	{ "SHOW", "stats_averages", show_stats_averages, false, ARG_NONE },
	{ "SHOW", "totals", show_totals, false, ARG_NONE },
	{ "SHOW", "databases", show_databases, false, ARG_NONE },
	{ "SHOW", "users", show_users, false, ARG_NONE },
	{ "SHOW", "config", show_config, false, ARG_NONE },
	{ "SHOW", "lists", show_lists, false, ARG_NONE },
	{ "SHOW", "mem", show_mem, false, ARG_NONE },
	{ "SHOW", "state", show_state, false, ARG_NONE },
	{ "SHOW", "version", show_version, false, ARG_NONE },
	{ "SHOW", "fds", show_fds, false, ARG_NONE },
	{ "SHOW", "cluster", show_cluster, false, ARG_NONE },
	{ "SHOW", "ha", show_ha, false, ARG_NONE },
	{ "SHOW", "dns", show_dns, false, ARG_NONE },
	{ "SHOW", "dns_hosts", show_dns_hosts, false, ARG_NONE },
	{ "SHOW", "dns_zones", show_dns_zones, false, ARG_NONE },
	{ "SET", NULL, cmd_set, true, ARG_SET },
	{ "RELOAD", NULL, cmd_reload, true, ARG_NONE },
	{ "PAUSE", NULL, cmd_pause, true, ARG_DB_OPTIONAL },
	{ "RESUME", NULL, cmd_resume, true, ARG_DB_OPTIONAL },
	{ "KILL", NULL, cmd_kill, true, ARG_DB_REQUIRED },
	{ "RECONNECT", NULL, cmd_reconnect, true, ARG_DB_OPTIONAL },
	{ "DISABLE", NULL, cmd_disable, true, ARG_DB_REQUIRED },
	{ "ENABLE", NULL, cmd_enable, true, ARG_DB_REQUIRED },
	{ "WAIT_CLOSE", NULL, cmd_wait_close, true, ARG_DB_OPTIONAL },
	{ "SHUTDOWN", NULL, cmd_shutdown, true, ARG_NONE },
	{ "SUSPEND", NULL, cmd_suspend, true, ARG_NONE },
	{ "FAILOVER", NULL, cmd_failover, true, ARG_SET },
	{ "MAINTENANCE", NULL, cmd_maintenance, true, ARG_SET },
};

static const AdminCommand *command_find(const AdminCmd *cmd)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const AdminCommand *ac = &commands[i];

		if (strcmp(ac->verb, cmd->verb) != 0)
			continue;
		if (!ac->object || strcmp(ac->object, cmd->object) == 0)
			return ac;
	}
	return NULL;
}

static bool invalid_command(Client *c, const char *sql, size_t len)
{
	int shown = len > 200 ? 200 : (int)len;

	return admin_error(c, "42601", "invalid command '%.*s%s', use SHOW HELP;", shown, sql,
			   len > 200 ? "..." : "");
}

/* A query of nothing but blanks and ';' gets EmptyQueryResponse, as from PostgreSQL. */
static bool is_empty_query(const char *sql, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!strchr(" \t\r\n;", sql[i]) || sql[i] == '\0')
			return false;
	return true;
}

static bool empty_query(Client *c)
{
	PktBuf pb;

	pktbuf_init(&pb, 16);
	pktbuf_start(&pb, 'I');
	pktbuf_finish(&pb);
	pktbuf_write_ready(&pb, 'I');
	if (pb.failed) {
		pktbuf_cleanup(&pb);
		return admin_error(c, "53200", "out of memory");
	}
	return send_pktbuf(c, &pb);
}

bool admin_handle_query(Client *c, const char *sql, size_t len)
{
	const AdminCommand *ac;
	Database *db = NULL;
	AdminCmd cmd;

	/*
	 * NEEDS-CORE: while a PAUSE or WAIT_CLOSE reply is owed (admin_is_waiting(c)), the
	 * client's packet handler should stop scanning (return SB_PAUSE_CONSUMED for the 'Q');
	 * admin_janitor() calls sbuf_continue() once it has answered. A client that pipelines
	 * anyway is closed rather than answered out of order.
	 */
	if (client_is_waiting(c)) {
		disconnect_client(c, "08P01", "command sent before the previous one was answered");
		return false;
	}
	if (is_empty_query(sql, len))
		return empty_query(c);
	if (!admin_parse(sql, len, &cmd) || !(ac = command_find(&cmd)))
		return invalid_command(c, sql, len);
	if (ac->needs_power && !c->admin_power)
		return admin_error(c, "42501", "admin access needed");
	switch (ac->arg) {
	case ARG_NONE:
		if (cmd.has_arg)
			return invalid_command(c, sql, len);
		break;
	case ARG_DB_REQUIRED:
		if (!cmd.has_arg)
			return admin_error(c, "42601", "a database is required");
		/* fall through */
	case ARG_DB_OPTIONAL:
		if (cmd.has_arg && !(db = admin_target_database(cmd.arg)))
			return admin_error(c, "3D000", "no such database: %s", cmd.arg);
		break;
	case ARG_SET:
		break;
	}
	return ac->fn(c, &cmd, db);
}
